"""``detector train``: Darknet's ``train_detector`` loop on CPU, one GPU, or several via DDP.

One iteration = ``subdivisions`` mini-batches of ``batch/subdivisions`` images (times
``time_steps``: Darknet's ``net.batch``; with ``track=1`` sequences of consecutive list lines,
see :class:`~darknet_py.data.dataset.SequenceBatchSampler`) whose gradients accumulate (Darknet's
``train_network``), then one Darknet SGD update with the learning rate of the policy at the new
iteration. The printed loss is Darknet's: the mean over yolo layers of
``l.cost``, averaged over the mini-batches and divided by the images of one (``net.batch``).

Several processes (torchrun, or ``-gpus 0,1``) train with torch DDP on the *global* batch of the
cfg: each rank loads its shard of the same mini-batches a single process would load and the
update is the single-process one (see :mod:`darknet_py.distributed` for the details and for what
differs: per-rank BN statistics). Rank 0 prints, evaluates and writes checkpoints and the chart.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from ..errors import DarknetError, DataError, UsageError
from ..metrics.evaluate import EvaluationStopped
from .. import distributed as dist
from ..model.network import Network
from ..serve.streams import TrainStreams
from .chart import TrainChart
from .checkpoints import CheckpointPolicy, basecfg, next_map_iteration
from .lock import open_backup_folder
from .log import IterationTimer, TensorBoardLog, TrainLog


@dataclass
class TrainOptions:
    data: str
    cfg: str
    weights: Optional[str] = None
    clear: bool = False
    dont_show: bool = True
    calc_map: bool = False
    thresh: float = 0.25
    iou_thresh: float = 0.5
    map_epochs: int = 4
    gpus: List[int] = field(default_factory=list)
    gpu_index: Optional[int] = None      # Darknet's -i N (-gpus wins); negative = CPU
    nogpu: bool = False                  # Darknet's -nogpu: the CPU even when CUDA is there
    amp: Optional[bool] = None          # CUDA fp16 autocast; default: on
    bf16: Optional[bool] = None         # CPU bf16 autocast; None: where the CPU has native bf16
    channels_last: Optional[bool] = None
    workers: int = 2
    seed: Optional[int] = None
    verbose: bool = False                # Darknet's per-layer "v3 (...)" lines
    nan_policy: str = "stop"             # stop | skip
    max_batches: Optional[int] = None    # override [net] max_batches (tests, quick runs)
    chart: bool = True
    mjpeg_port: int = 0                  # -mjpeg_port: stream chart.png and status over HTTP
    http_host: Optional[str] = None      # -http_host (default 127.0.0.1)
    show_imgs: bool = False
    cache_images: bool = False
    #: with nan_policy="skip": stop after this many NaN/inf batches in a row (the weights have
    #: diverged and every later batch would be skipped too)
    max_nan_skips: int = 100
    #: -tensorboard DIR: the logged scalars also through TensorBoard's SummaryWriter
    tensorboard: Optional[str] = None


class TrainingStopped(DarknetError):
    kind = "training stopped"


class Trainer:
    #: rank 0's lock on ``<backup>/<cfg>.lock`` (:mod:`darknet_py.train.lock`), from setup to the
    #: end of :meth:`run`
    backup_lock = None

    def __init__(self, opts: TrainOptions, out=None):
        self.opts = opts
        self.out = out or sys.stdout
        d = dist.info()
        self.rank, self.world = d.rank, d.world
        self.is_main = self.rank == 0
        self.device = self._pick_device()
        dist.init(self.device)
        self._stop_requested = False
        # a second signal raises KeyboardInterrupt, except while the weights are being updated
        # or saved: then it is held (_interrupt_pending) until they are whole
        self._stepping = self._saving = self._interrupt_pending = False
        #: the last checkpoint written (what a NaN stop points the user at)
        self.last_good: Optional[str] = None

    # ------------------------------------------------------------------ setup
    def _pick_device(self) -> torch.device:
        """:func:`darknet_py.devices.select_device`: CUDA when available, else the CPU; ``-gpus``
        / ``-i`` choose the GPU (a DDP process takes its ``LOCAL_RANK`` entry of ``-gpus``)."""
        from ..devices import describe, select_device
        device = select_device(self.opts.gpus, self.opts.gpu_index, nogpu=self.opts.nogpu)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if self.is_main:
            print(describe(device), file=sys.stderr, flush=True)
        return device

    def log(self, text: str = "", end: str = "\n") -> None:
        if self.is_main:
            print(text, end=end, file=self.out)
            self.out.flush()

    def setup(self) -> None:
        from ..data.datacfg import read_data_cfg, read_list, read_names
        o = self.opts
        self.data_cfg = read_data_cfg(o.data)
        self.train_list = self.data_cfg.train_or_default()
        if self.data_cfg.train is None and not os.path.exists(self.train_list):
            raise DataError(f"no train= line, and Darknet's default list {self.train_list} does "
                            "not exist: add train=<file listing the training images>",
                            file=o.data)
        self.train_paths = read_list(self.train_list)
        if not self.train_paths:
            raise DataError("the train list has no images", file=self.train_list)
        if o.seed is not None:       # -seed also fixes the initialisation of untrained layers
            torch.manual_seed(o.seed)
        self.net = Network.from_cfg(o.cfg)
        cfgc = self.net.config
        if o.max_batches is not None:
            cfgc.max_batches = o.max_batches
        from .schedule import check_sequences
        check_sequences(cfgc)       # track=1: sequences that would straddle forward passes
        if cfgc.batch * cfgc.subdivisions == 1 and cfgc.batch == 1:
            raise UsageError("batch=1 cannot train: set batch=64 subdivisions=16 (or similar) in "
                             f"{o.cfg}")
        if not self.net.heads:
            raise UsageError(f"{o.cfg} has no detection layer ([yolo], [Gaussian_yolo] or "
                             "[region]) to train")
        classes = self.net.heads[-1].classes
        data_classes = self.data_cfg.classes_or_default(classes)
        if data_classes != classes:
            raise DataError(f"classes={data_classes} in {o.data} but classes={classes} in the "
                            f"last detection layer of {o.cfg}", file=o.data)
        self.classes = classes
        from .options import training_warning
        warning = training_warning(self.net) if self.is_main else None
        if warning:    # once, at start: what of this cfg darknet-py will not train as Darknet
            warnings.warn(warning, stacklevel=2)
        names_path = self.data_cfg.names_or_default()
        self.names = read_names(names_path) if os.path.exists(names_path) else \
            [str(i) for i in range(classes)]
        self.base = basecfg(o.cfg)
        self.backup = self.data_cfg.backup_or_default()
        if self.is_main:
            # made (one-line errors) and locked against a second training before any file in
            # it is touched (darknet_py.train.lock)
            self.backup_lock = open_backup_folder(self.backup, self.base, self.log)
            self._remove_stale_temp_files()
        self.log(self.base)
        if o.weights:
            rep = self.net.load_weights(o.weights, cutoff=_partial_cutoff(self.net, o.weights))
            self.log(f"Loaded {rep.layers_loaded} layers from weights-file {o.weights}, "
                     f"seen {rep.header.seen}")
        if o.clear:
            self.net.seen = 0
        self.net.to(self.device)
        from .precision import choose_precision
        self.precision = choose_precision(self.device, o.amp, o.bf16, o.channels_last)
        if self.is_main:
            print(f"precision: {self.precision.describe()}", file=sys.stderr, flush=True)
        # BN rolling statistics move like the Darknet build for this device: 0.1 in its CPU
        # path, 0.01 (cuDNN's exponentialAverageFactor) on GPU
        from ..layers.convolutional import BN_MOMENTUM_CPU, BN_MOMENTUM_GPU
        for layer in self.net.layers:
            if hasattr(layer, "bn_momentum"):
                layer.bn_momentum = BN_MOMENTUM_GPU if self.device.type == "cuda" \
                    else BN_MOMENTUM_CPU
        self.precision.prepare(self.net)
        from .schedule import images_per_iteration
        # Darknet's imgs = net.batch * net.subdivisions, net.batch counting time_steps
        self.images_per_iter = images_per_iteration(cfgc)
        self.iteration = int(self.net.seen) // max(1, self.images_per_iter)
        self.save_policy = CheckpointPolicy(
            self.backup, self.base,
            save_every=self.data_cfg.saveweights_or_default(cfgc.max_batches),
            save_last_every=self.data_cfg.savelast_or_default(),
            iter_save=self.iteration, iter_save_last=self.iteration)
        self.log(f"Weights are saved after: {self.save_policy.save_every} iterations. Last weights "
                 f"(*_last.weight) are stored every {self.save_policy.save_last_every} iterations. ")
        from .optim import DarknetSGD
        lr_scale = 1  # batch= is the global batch: no Darknet learning_rate *= ngpus
        self.optimizer = DarknetSGD(self.net, cfgc, lr_multiplier=lr_scale)
        self.log(f"Learning Rate: {cfgc.learning_rate * lr_scale:g}, Momentum: {cfgc.momentum:g}, "
                 f"Decay: {cfgc.decay:g}")
        if self.is_main and 0 < self.iteration + 1 <= cfgc.max_batches < cfgc.burn_in:
            # a short trial on a cfg made for a long run: the warm-up never ends, so the weights
            # barely move; said once, with the highest rate the run will reach
            warnings.warn(f"max_batches={cfgc.max_batches} ends before burn_in={cfgc.burn_in} "
                          f"does: the learning rate stays below "
                          f"{self.optimizer.rate(cfgc.max_batches):.6g} for the whole run "
                          f"(learning_rate={cfgc.learning_rate:g}); lower burn_in in {o.cfg} "
                          "for a short run", stacklevel=2)
        for h in self.net.heads:
            self.log(f" Detection layer: {h.index} - type = {h.type_code} ")
        from .freeze import BackwardStops
        #: stopbackward / onlyforward: where Darknet's backward stops (None without them)
        self.stops = BackwardStops.for_network(self.net)
        self.model = self.net
        if self.world > 1:
            # layers cut off by stopbackward get no gradient: DDP must not wait for theirs
            self.model = torch.nn.parallel.DistributedDataParallel(
                _RawHeads(self.net), device_ids=[self.device.index] if self.device.type == "cuda"
                else None, find_unused_parameters=self.stops is not None)
        self.use_amp = self.precision.enabled
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision.needs_grad_scaler)
        self.chart = TrainChart(cfgc.max_batches, cfgc.max_chart_loss)
        from .ema import WeightsEMA
        #: [net] ema_alpha: Darknet's average of the conv weights (None without it)
        self.ema = WeightsEMA.for_network(
            self.net, train0_below=self.stops.train0_below if self.stops is not None else 0)
        self.source = self._make_source()

    def _remove_stale_temp_files(self) -> None:
        """Delete the hidden temp files a killed run left mid-save (``.<cfg>_last.weights.*.tmp``,
        written by :func:`darknet_py.files.atomic_write_bytes`): never a checkpoint itself."""
        import glob
        pattern = os.path.join(glob.escape(self.backup),
                               f".{glob.escape(self.base)}_*.weights.*.tmp")
        for path in glob.glob(pattern):
            try:
                os.unlink(path)
                self.log(f"removed {path} (a save interrupted by a crash)")
            except OSError:
                pass

    def _channels_last(self) -> bool:
        return self.precision.channels_last

    def _make_source(self) -> "_BatchSource":
        from ..data.augment import AugmentConfig
        from ..data.dataset import DetectionDataset, MultiScaleSchedule, make_loader
        cfgc = self.net.config
        aug = AugmentConfig.from_network(self.net)
        seed = dist.shared_seed(self.opts.seed)   # one seed: every rank shards the same batches
        dataset = DetectionDataset(self.train_paths, aug, seed=seed,
                                   cache_images=self.opts.cache_images)
        schedule = None
        if aug.random:
            schedule = MultiScaleSchedule(cfgc.width, cfgc.height, aug.random, aug.resize_step,
                                          cfgc.max_batches, cfgc.net_batch)
        common = dict(num_workers=self.opts.workers, seed=seed, multiscale=schedule,
                      max_batches=cfgc.max_batches, start_iteration=self.iteration,
                      rank=self.rank, world=self.world)
        if cfgc.track:
            import functools
            from ..data.dataset import make_sequence_loader
            from .schedule import loader_seq_subdivisions
            self.log(f"\n Tracking! batch = {cfgc.net_batch}, subdiv = {cfgc.subdivisions}, "
                     f"time_steps = {cfgc.time_steps}, mini_batch = {cfgc.mini_batch} ")
            loader = make_sequence_loader(
                dataset, cfgc.mini_batch, cfgc.time_steps, cfgc.subdivisions,
                augment_speed=cfgc.augment_speed,
                seq_subdivisions=functools.partial(loader_seq_subdivisions, cfgc), **common)
        else:
            # with time_steps > 1 (and no track) Darknet's forward pass still takes
            # net.batch = batch/subdivisions * time_steps random images
            loader = make_loader(dataset, self.images_per_iter, cfgc.subdivisions, **common)
        return _BatchSource(loader)

    # ------------------------------------------------------------------ one iteration
    def _forward_loss(self, x: torch.Tensor, truth: torch.Tensor, seen: int):
        """The heads' losses on one mini-batch; ``seen`` is Darknet's ``*net.seen`` during this
        forward (``train_network_datum`` adds the mini-batch before it)."""
        from .loss import heads_loss
        w, h = x.shape[3], x.shape[2]
        with self.precision.autocast():
            raw = self.model(x, raw_heads=True) if self.world == 1 else self.model(x)
        return heads_loss(self.net.heads, raw, truth, w, h, seen)

    def train_iteration(self) -> float:
        cfgc = self.net.config
        subdiv = cfgc.subdivisions
        # loss and finiteness stay tensors until the end of the iteration: one host sync per
        # iteration instead of two per mini-batch
        net_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        self.optimizer.zero_grad()
        if self.stops is not None:
            self.stops.begin_iteration(self.iteration)
        seen = 0
        # Darknet's net.batch (time_steps included), global: the ranks' shards add up to it
        mini_batch = cfgc.net_batch
        for _ in range(subdiv):
            if self._stop_requested and self.world == 1:
                # a signal: drop this iteration's partial gradients, the weights stay those of
                # the last whole iteration (what _last.weights gets); DDP ranks must all run
                # the same backward passes, so they finish the iteration instead
                self.optimizer.zero_grad()
                return None
            x, truth = self.source.next_minibatch()
            x = x.to(self.device, non_blocking=True)
            if self._channels_last():
                x = x.contiguous(memory_format=torch.channels_last)
            truth = truth.to(self.device)
            total, costs, stats = self._forward_loss(
                x, truth, int(self.net.seen) + (seen + x.shape[0]) * self.world)
            finite &= torch.isfinite(total.detach())
            # x world: DDP averages the ranks' gradients, the global batch needs their sum
            self.scaler.scale(total * self.world).backward()
            seen += x.shape[0]
            net_loss += torch.stack([c.detach() for c in costs]).double().mean()
            if self.opts.verbose:
                for idx, st in stats:
                    self.log(st.line(idx))
        loss = float(net_loss) / (subdiv * mini_batch)
        bad = not bool(finite)
        if self.world > 1:
            loss, nbad, seen = dist.all_reduce_sum([loss, float(bad), seen], self.device)
            bad = nbad > 0
        self.net.seen += int(seen)
        if bad or not math.isfinite(loss):
            return float("nan")
        self._stepping = True            # a second signal waits for the update to finish
        try:
            self.iteration += 1
            if self.stops is not None:
                self.stops.before_step()
            self.optimizer.step(self.iteration, scaler=self.scaler)
            if self.ema is not None:
                for line in self.ema.after_update(self.iteration):
                    # Darknet prints the update line every iteration of the second half; only
                    # -verbose repeats it, the initialisation and the apply always show
                    if self.opts.verbose or not line.startswith(" ema_update()"):
                        self.log(line)
        finally:
            self._stepping = False
        if self._interrupt_pending:
            raise KeyboardInterrupt
        return loss

    # ------------------------------------------------------------------ evaluation
    def evaluate_map(self) -> float:
        """mAP on valid=; the full result (curves, confusion) stays in ``last_map_result``."""
        from ..metrics.evaluate import evaluate_network_map
        valid = self.data_cfg.valid_or_default(self.train_list)
        was_training = self.net.training
        self.net.eval()
        try:
            result = evaluate_network_map(self.net, valid, self.names, self.classes,
                                          thresh=self.opts.thresh,
                                          iou_thresh=self.opts.iou_thresh,
                                          difficult=self.data_cfg.difficult, out=self.out,
                                          should_stop=lambda: self._stop_requested)
        finally:
            self.net.train(was_training)
        self.last_map_result = result
        return float(result.map)

    def _write_best_plots(self) -> None:
        """``-plots`` of ``detector map`` for the new best mAP, into ``<backup>/plots/``."""
        from ..metrics.plots import write_map_plots
        try:
            write_map_plots(self.last_map_result, os.path.join(self.backup, "plots"))
        except DarknetError as e:     # pictures must not stop training
            self.log(f" plots not written: {e}")

    # ------------------------------------------------------------------ logs
    def _open_logs(self) -> list:
        if not self.is_main:
            return []
        # a resumed run drops the rows its killed predecessor logged after the checkpoint it
        # resumes from (they are trained again); a run from iteration 0 appends
        logs = [TrainLog(os.path.join(self.backup, f"{self.base}_log.csv"),
                         resume_from=self.iteration or None)]
        if self.opts.tensorboard:
            logs.append(TensorBoardLog(self.opts.tensorboard))
        return logs

    # ------------------------------------------------------------------ saving
    def save(self, path: str) -> None:
        """Write a checkpoint atomically; never one with NaN/inf weights (that would replace a
        good file with a useless one), then the run stops naming the last good checkpoint."""
        bad = _first_nonfinite_layer(self.net)    # the same weights on every rank (DDP)
        if bad is not None:
            raise TrainingStopped(
                f"the weights of layer {bad} became NaN/inf at iteration {self.iteration}; "
                f"{path} was not written; {self._last_good_hint()} (lower learning_rate or "
                "check the labels)")
        if not self.is_main:
            self.last_good = path                # what rank 0 wrote
            return
        self.log(f"Saving weights to {path}")
        self.net.seen = self.iteration * self.images_per_iter
        self._saving = True
        try:
            self.net.save_weights(path)
        finally:
            self._saving = False
        self.last_good = path

    def save_last(self) -> None:
        """``<cfg>_last.weights``, then, once the weights average has started, the averaged
        ``<cfg>_ema.weights`` (Darknet writes both at the same point of ``train_detector``)."""
        self.save(self.save_policy.path("last"))
        if self.ema is None or not self.ema.initialized or not self.is_main:
            return
        path = self.save_policy.path("ema")
        bad = self.ema.first_nonfinite_layer()
        if bad is not None:       # keep the last good average rather than a useless one
            self.log(f" EMA weights not saved: the average of layer {bad} is NaN/inf")
            return
        self.log(f"Saving weights to {path}")
        self.ema.save(path)
        self.log(f" EMA weights are saved to the file: {path} ")

    def _last_good_hint(self) -> str:
        if self.last_good:
            return f"the last good weights are {self.last_good}"
        return "no checkpoint was written yet"

    # ------------------------------------------------------------------ loop
    def run(self) -> None:
        try:
            self.setup()
        except BaseException:
            if self.backup_lock is not None:     # a failed start leaves no lock file behind
                self.backup_lock.release()
            raise
        o, cfgc = self.opts, self.net.config
        self.net.train()
        avg_loss = -1.0
        best_map = -1.0
        last_map = -1.0
        iter_map = self.iteration
        avg_time = -1.0
        timer = IterationTimer()
        logs = self._open_logs()
        old_handlers = self._install_signal_handlers()
        nan_in_a_row = 0
        self.http = None
        t_end = time.time()
        try:
            self.http = TrainStreams.open(o.mjpeg_port, o.http_host, self.backup, self.out,
                                          self.is_main)
            while self.iteration < cfgc.max_batches:
                if self.world > 1:   # a signal seen by any rank stops every rank here
                    self._stop_requested = dist.any_rank(self._stop_requested, self.device)
                if self._stop_requested:
                    break
                t0 = time.time()
                loss = self.train_iteration()
                if loss is None:         # stopped by a signal between mini-batches
                    break
                if not math.isfinite(loss):
                    msg = (f"loss is {loss} at iteration {self.iteration + 1}")
                    nan_in_a_row += 1
                    if o.nan_policy == "skip":
                        self.log(f" {msg}: batch skipped")
                        self.optimizer.zero_grad()
                        if nan_in_a_row < max(1, o.max_nan_skips):
                            continue
                        raise TrainingStopped(
                            f"{msg}, {nan_in_a_row} batches in a row: the weights have diverged; "
                            f"{self._last_good_hint()} (lower learning_rate, check labels)")
                    raise TrainingStopped(f"{msg}; {self._last_good_hint()} (lower learning_rate, "
                                          "check labels, or pass -nan_skip to skip such batches)")
                nan_in_a_row = 0
                if avg_loss < 0 or avg_loss != avg_loss:
                    avg_loss = loss
                avg_loss = avg_loss * 0.9 + loss * 0.1
                it = self.iteration
                elapsed = time.time() - t0
                # hours left from a moving average of the whole loop's time per iteration
                # (mAP and saves included); Darknet's 0.01-smoothed remaining time barely moves
                now = time.time()
                timer.add(now - t_end)
                t_end = now
                avg_time = timer.hours_left(it, cfgc.max_batches)
                if o.calc_map:
                    nxt = next_map_iteration(iter_map, o.map_epochs, len(self.train_paths),
                                             self.images_per_iter, cfgc.burn_in)
                    # the last iteration always evaluates: say so on short runs
                    nxt = min(nxt, cfgc.max_batches)
                    self.log(f"\n (next mAP calculation at {nxt} iterations) ", end="")
                    if last_map > 0:
                        self.log(f"\n Last accuracy mAP@{o.iou_thresh:0.2f} = {last_map * 100:2.2f} "
                                 f"%, best = {best_map * 100:2.2f} % ", end="")
                self.log(f"\n {it}: {loss:f}, {avg_loss:f} avg loss, {self.optimizer.rate(it):f} "
                         f"rate, {elapsed:f} seconds, {it * self.images_per_iter} "
                         f"images, {avg_time:f} hours left")
                self.chart.add_loss(it, avg_loss)
                for lg in logs:
                    lg.iteration(it, loss, avg_loss, self.optimizer.rate(it),
                                 self.images_per_iter * self.world / max(elapsed, 1e-9), elapsed)
                shown = (it, loss, avg_loss, last_map, best_map, avg_time)
                self._show(*shown, chart=False)     # /status says this iteration from now on
                if o.calc_map and (it >= next_map_iteration(
                        iter_map, o.map_epochs, len(self.train_paths),
                        self.images_per_iter, cfgc.burn_in) or it == cfgc.max_batches):
                    iter_map = it
                    # the page's chart before a possibly long evaluation, not after it
                    self._show(*shown)
                    try:
                        map_now = self.evaluate_map() if self.is_main else None
                    except EvaluationStopped:
                        self.log("\n mAP calculation stopped by the signal")
                        map_now = None
                    if map_now is not None:
                        last_map = map_now
                        self.log(f"\n mean_average_precision (mAP@{o.iou_thresh:0.2f}) = "
                                 f"{last_map:f} ")
                        self.chart.add_map(it, last_map)
                        new_best = last_map >= best_map
                        best_map = max(best_map, last_map)
                        for lg in logs:
                            lg.map(it, last_map, best_map)
                        if new_best:
                            self.log("New best mAP!")
                            self.save(self.save_policy.path("best"))
                            self._write_best_plots()
                    dist.barrier()
                    if self._stop_requested:
                        continue         # the loop's top stops every rank, then _last
                if self.save_policy.numbered_due(it):
                    self.save(self.save_policy.path(str(it)))
                if self.save_policy.last_due(it):
                    self.save_last()
                self._show(it, loss, avg_loss, last_map, best_map, avg_time)
            if self._stop_requested:
                self._save_last_on_stop()
                return
            self.save(self.save_policy.path("final"))
            self.log("If you want to train from the beginning, then use flag in the end of "
                     "training command: -clear ")
        except KeyboardInterrupt:
            # the second signal: stop now, but the weights of the last whole iteration are
            # still what the user needs (the cluster's SIGKILL may follow)
            if self.world > 1:
                raise
            self._save_last_on_stop()
        finally:
            for lg in logs:
                lg.close()
            if self.backup_lock is not None:
                self.backup_lock.release()
            self._restore_signal_handlers(old_handlers)
            self.source.close()
            if self.http is not None:
                self.http.close()

    def _show(self, it: int, loss: float, avg_loss: float, last_map: float, best_map: float,
              hours_left: float, chart: bool = True) -> None:
        """Redraw chart.png and send it to -mjpeg_port with the numbers (``chart=False``: only
        the numbers of /status)."""
        if not self.is_main:
            return
        rate = self.optimizer.rate(it)
        if chart and self.opts.chart:
            paths = self.chart.save(self.backup if not self.opts.dont_show else ".", self.base,
                                    hours_left)
            if self.http is not None:
                self.http.update(paths, it, self.net.config.max_batches, loss, avg_loss, rate,
                                 last_map, best_map, hours_left)
        elif self.http is not None:
            self.http.status(it, self.net.config.max_batches, loss, avg_loss, rate, last_map,
                             best_map, hours_left)

    # ------------------------------------------------------------------ signals
    def _save_last_on_stop(self) -> None:
        self._stop_requested = True          # a signal during this save is held, not raised
        self.save_last()
        self.log("Interrupted: last weights saved; resume with the same command and "
                 f"{self.save_policy.path('last')}")

    def _install_signal_handlers(self):
        def handler(signum, frame):
            # second Ctrl-C: stop now; not under torchrun, whose launcher passes the signal it
            # got on to the ranks (a second one) and kills them itself after its grace period
            if self._stop_requested and self.world == 1:
                if self._saving or self._stepping:
                    self._interrupt_pending = not self._saving
                    _write_fd(2, f"\n signal {signum}: "
                                 f"{'saving' if self._saving else 'updating'} the weights, "
                                 "then stopping\n")
                    return
                raise KeyboardInterrupt
            self._stop_requested = True
            # os.write, not print: the signal may arrive in the middle of a print to the same
            # stream, and a buffered write re-entered from a handler raises RuntimeError
            _write_fd(2, f"\n signal {signum}: stopping after this mini-batch (or the mAP "
                         "calculation), then saving _last.weights\n")
        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                old[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass
        return old

    @staticmethod
    def _restore_signal_handlers(old):
        for sig, h in (old or {}).items():
            signal.signal(sig, h)


class _BatchSource:
    """Endless mini-batches from the DataLoader (a new pass over the list when one ends)."""

    def __init__(self, loader):
        self.loader = loader
        self._it = iter(loader)

    def next_minibatch(self):
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            return next(self._it)

    def close(self) -> None:
        from ..data.dataset import shutdown_loader_iterator
        it, self._it = self._it, None
        shutdown_loader_iterator(it)


class _RawHeads(torch.nn.Module):
    """Wraps the network so DDP's forward returns the raw head inputs."""

    def __init__(self, net: Network):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x, raw_heads=True)


def _partial_cutoff(net: Network, path: str) -> Optional[int]:
    """Darknet loads a partial file (yolov4.conv.137) silently; find how many layers it holds."""
    from ..formats.weights import WeightsHeader
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header = WeightsHeader.unpack(f.read(24), path)
    floats = (size - header.nbytes) // 4
    total = 0
    for layer in net.layers:
        if floats == total:
            return layer.index
        total += layer.num_weight_floats()
    return None


def _write_fd(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode())
    except OSError:
        pass


def _first_nonfinite_layer(net: Network) -> Optional[int]:
    """Index of the first layer whose parameters or buffers hold NaN/inf, else ``None``."""
    for layer in net.layers:
        for t in list(layer.parameters(recurse=True)) + list(layer.buffers(recurse=True)):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return layer.index
    return None

