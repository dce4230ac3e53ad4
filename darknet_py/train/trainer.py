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

:class:`Trainer` coordinates; each piece lives in its own module and is tested alone:
the images (:mod:`.batches`), the network and its device (:mod:`.model`, :mod:`.precision`), the
learning rate (:mod:`.schedule`, :mod:`.optim`), checkpoints (:mod:`.checkpoints`), ``-map``
(:mod:`.evaluation`), the chart and ``-mjpeg_port`` (:mod:`.chart`), logs (:mod:`.log`) and
Ctrl-C/SIGTERM (:mod:`.signals`).
"""
from __future__ import annotations

import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from .. import distributed as dist
from ..data.datacfg import read_data_cfg
from ..devices import describe, select_device
from ..errors import TrainingStopped
from ..infer.evaluate import EvaluationStopped
from ..serve.streams import TrainStreams
from .batches import BatchSource, read_train_list
from .chart import TrainChart, TrainDisplay
from .checkpoints import CheckpointPolicy, CheckpointWriter, basecfg, remove_stale_temp_files
from .ema import WeightsEMA
from .evaluation import BestMap, MapSchedule, TrainEvaluation, class_names
from .freeze import BackwardStops
from .lock import open_backup_folder
from .log import IterationTimer, LossAverage, TrainLogs, iteration_line
from .loss import heads_loss
from .model import build_network, distributed_model, load_start_weights, place_network
from .optim import DarknetSGD
from .precision import choose_precision
from .schedule import images_per_iteration, short_run_warning
from .signals import StopSignals

__all__ = ["TrainOptions", "Trainer", "TrainingStopped"]


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


class Trainer:
    """Darknet's ``train_detector``: :meth:`setup` builds the pieces, :meth:`run` trains,
    :meth:`train_iteration` is one iteration (``subdivisions`` mini-batches, one update)."""

    #: rank 0's lock on ``<backup>/<cfg>.lock`` (:mod:`darknet_py.train.lock`), from setup to the
    #: end of :meth:`run`
    backup_lock = None
    #: the chart files and the -mjpeg_port streams (from the start of :meth:`run`)
    display: Optional[TrainDisplay] = None

    def __init__(self, opts: TrainOptions, out=None):
        self.opts = opts
        self.out = out or sys.stdout
        d = dist.info()
        self.rank, self.world = d.rank, d.world
        self.is_main = self.rank == 0
        self.device = self._pick_device()
        dist.init(self.device)
        self.signals = StopSignals(self.world)

    def _pick_device(self) -> torch.device:
        """:func:`darknet_py.devices.select_device`: CUDA when available, else the CPU; ``-gpus``
        / ``-i`` choose the GPU (a DDP process takes its ``LOCAL_RANK`` entry of ``-gpus``)."""
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

    def request_stop(self) -> None:
        """Stop as the first Ctrl-C does: after this mini-batch, saving ``_last.weights``."""
        self.signals.request()

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Everything :meth:`run` needs, checked and printed in Darknet's order; a user error
        is raised before the backup folder is touched where it can be."""
        o = self.opts
        self.data_cfg = read_data_cfg(o.data)
        self.train_list, self.train_paths = read_train_list(self.data_cfg, o.data)
        if o.seed is not None:       # -seed also fixes the initialisation of untrained layers
            torch.manual_seed(o.seed)
        self.net = build_network(o.cfg, self.data_cfg, o.data, o.max_batches, warn=self.is_main)
        cfgc = self.net.config
        self.classes = self.net.heads[-1].classes
        names = class_names(self.data_cfg, self.classes)
        self.base = basecfg(o.cfg)
        self.backup = self.data_cfg.backup_or_default()
        if self.is_main:
            # made (one-line errors) and locked against a second training before any file in
            # it is touched (darknet_py.train.lock)
            self.backup_lock = open_backup_folder(self.backup, self.base, self.log)
            remove_stale_temp_files(self.backup, self.base, self.log)
        self.log(self.base)
        if o.weights:
            load_start_weights(self.net, o.weights, self.log)
        if o.clear:
            self.net.seen = 0
        self._place_network()
        # Darknet's imgs = net.batch * net.subdivisions, net.batch counting time_steps
        self.images_per_iter = images_per_iteration(cfgc)
        self.iteration = int(self.net.seen) // max(1, self.images_per_iter)
        policy = CheckpointPolicy(
            self.backup, self.base,
            save_every=self.data_cfg.saveweights_or_default(cfgc.max_batches),
            save_last_every=self.data_cfg.savelast_or_default(),
            iter_save=self.iteration, iter_save_last=self.iteration)
        self.log(f"Weights are saved after: {policy.save_every} iterations. Last weights "
                 f"(*_last.weight) are stored every {policy.save_last_every} iterations. ")
        # batch= is the global batch: no Darknet learning_rate *= ngpus
        self.optimizer = DarknetSGD(self.net, cfgc)
        self.log(f"Learning Rate: {cfgc.learning_rate:g}, Momentum: {cfgc.momentum:g}, "
                 f"Decay: {cfgc.decay:g}")
        warning = short_run_warning(cfgc, self.iteration, o.cfg) if self.is_main else None
        if warning:     # said once, at start
            warnings.warn(warning, stacklevel=2)
        for h in self.net.heads:
            self.log(f" Detection layer: {h.index} - type = {h.type_code} ")
        #: stopbackward / onlyforward: where Darknet's backward stops (None without them)
        self.stops = BackwardStops.for_network(self.net)
        self.model = self.net
        if self.world > 1:
            self.model = distributed_model(self.net, self.device, self.stops)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision.needs_grad_scaler)
        self.chart = TrainChart(cfgc.max_batches, cfgc.max_chart_loss)
        #: [net] ema_alpha: Darknet's average of the conv weights (None without it)
        self.ema = WeightsEMA.for_network(
            self.net, train0_below=self.stops.train0_below if self.stops is not None else 0)
        self.checkpoints = CheckpointWriter(policy, self.net, self.images_per_iter, self.ema,
                                            self.is_main, self.log, self.signals.saving)
        self.map_schedule = MapSchedule(o.map_epochs, len(self.train_paths),
                                        self.images_per_iter, cfgc.burn_in, cfgc.max_batches,
                                        last=self.iteration)
        self.maps = BestMap()
        self.evaluation = TrainEvaluation(
            self.net, self.data_cfg, self.train_list, names, self.classes, o.thresh,
            o.iou_thresh, os.path.join(self.backup, "plots"), self.out, self.log,
            should_stop=lambda: self.signals.requested)
        self.source = BatchSource.for_network(
            self.net, self.train_paths, self.iteration, workers=o.workers, seed=o.seed,
            cache_images=o.cache_images, rank=self.rank, world=self.world, log=self.log)

    def _place_network(self) -> None:
        """The precision of ``-amp``/``-bf16``/``-channels_last`` on this device, and the
        network moved there."""
        o = self.opts
        self.precision = choose_precision(self.device, o.amp, o.bf16, o.channels_last)
        if self.is_main:
            print(f"precision: {self.precision.describe()}", file=sys.stderr, flush=True)
        place_network(self.net, self.device, self.precision)

    # ------------------------------------------------------------------ one iteration
    def _forward_loss(self, x: torch.Tensor, truth: torch.Tensor, seen: int):
        """The heads' losses on one mini-batch; ``seen`` is Darknet's ``*net.seen`` during this
        forward (``train_network_datum`` adds the mini-batch before it)."""
        w, h = x.shape[3], x.shape[2]
        with self.precision.autocast():
            raw = self.model(x, raw_heads=True) if self.world == 1 else self.model(x)
        return heads_loss(self.net.heads, raw, truth, w, h, seen)

    def train_iteration(self) -> Optional[float]:
        """One iteration: the loss Darknet prints, NaN when it is not finite (the weights are
        not updated), ``None`` when a signal stopped it between mini-batches."""
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
            if self.signals.requested and self.world == 1:
                # a signal: drop this iteration's partial gradients, the weights stay those of
                # the last whole iteration (what _last.weights gets); DDP ranks must all run
                # the same backward passes, so they finish the iteration instead
                self.optimizer.zero_grad()
                return None
            x, truth = self.source.next_minibatch()
            x = x.to(self.device, non_blocking=True)
            if self.precision.channels_last:
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
        with self.signals.updating():    # a second signal waits for the update to finish
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
        return loss

    # ------------------------------------------------------------------ loop
    def run(self) -> None:
        """Set up, then train to ``max_batches`` (or a signal), evaluating and saving as
        Darknet's ``train_detector`` does."""
        try:
            self.setup()
        except BaseException:
            if self.backup_lock is not None:     # a failed start leaves no lock file behind
                self.backup_lock.release()
            raise
        o, cfgc = self.opts, self.net.config
        self.net.train()
        avg_loss = LossAverage()
        timer = IterationTimer()
        self.logs = TrainLogs.open(self.backup, self.base, self.iteration, o.tensorboard,
                                   self.is_main)
        self.signals.install()
        self._nan_in_a_row = 0
        t_end = time.time()
        try:
            self.display = TrainDisplay(
                self.chart, self.backup if not o.dont_show else ".", self.base, o.chart,
                TrainStreams.open(o.mjpeg_port, o.http_host, self.backup, self.out,
                                  self.is_main))
            while self.iteration < cfgc.max_batches:
                if self.world > 1:   # a signal seen by any rank stops every rank here
                    self.signals.requested = dist.any_rank(self.signals.requested, self.device)
                if self.signals.requested:
                    break
                t0 = time.time()
                loss = self.train_iteration()
                if loss is None:         # stopped by a signal between mini-batches
                    break
                if not math.isfinite(loss):
                    self._skip_nonfinite_loss(loss)
                    continue
                self._nan_in_a_row = 0
                it = self.iteration
                elapsed = time.time() - t0
                # hours left from a moving average of the whole loop's time per iteration
                # (mAP and saves included); Darknet's 0.01-smoothed remaining time barely moves
                now = time.time()
                timer.add(now - t_end)
                t_end = now
                shown = (it, loss, avg_loss.add(loss), timer.hours_left(it, cfgc.max_batches))
                self._report(*shown, elapsed)
                if o.calc_map and self.map_schedule.due(it):
                    self._evaluate(*shown)
                    if self.signals.requested:
                        continue         # the loop's top stops every rank, then _last
                self.checkpoints.save_due(it)
                self._show(*shown)
            if self.signals.requested:
                self.checkpoints.save_on_stop(self.iteration)
                return
            self.checkpoints.save(self.checkpoints.policy.path("final"), self.iteration)
            self.log("If you want to train from the beginning, then use flag in the end of "
                     "training command: -clear ")
        except KeyboardInterrupt:
            # the second signal: stop now, but the weights of the last whole iteration are
            # still what the user needs (the cluster's SIGKILL may follow)
            if self.world > 1:
                raise
            self.signals.request()           # a signal during this save is held, not raised
            self.checkpoints.save_on_stop(self.iteration)
        finally:
            self.logs.close()
            if self.backup_lock is not None:
                self.backup_lock.release()
            self.signals.restore()
            self.source.close()
            if self.display is not None:
                self.display.close()

    def _skip_nonfinite_loss(self, loss: float) -> None:
        """``-nan_skip``: drop the batch, until ``max_nan_skips`` in a row; else stop naming
        the last good checkpoint."""
        o = self.opts
        msg = f"loss is {loss} at iteration {self.iteration + 1}"
        hint = self.checkpoints.last_good_hint()
        self._nan_in_a_row += 1
        if o.nan_policy != "skip":
            raise TrainingStopped(f"{msg}; {hint} (lower learning_rate, check labels, or pass "
                                  "-nan_skip to skip such batches)")
        self.log(f" {msg}: batch skipped")
        self.optimizer.zero_grad()
        if self._nan_in_a_row >= max(1, o.max_nan_skips):
            raise TrainingStopped(f"{msg}, {self._nan_in_a_row} batches in a row: the weights "
                                  f"have diverged; {hint} (lower learning_rate, check labels)")

    def _report(self, it: int, loss: float, avg_loss: float, hours_left: float,
                seconds: float) -> None:
        """After iteration ``it``: Darknet's lines, the chart's point, the logs' row, the
        ``/status`` numbers."""
        if self.opts.calc_map:
            self.log(f"\n (next mAP calculation at {self.map_schedule.announced} iterations) ",
                     end="")
            if self.maps.last > 0:
                self.log(f"\n Last accuracy mAP@{self.opts.iou_thresh:0.2f} = "
                         f"{self.maps.last * 100:2.2f} %, best = {self.maps.best * 100:2.2f} % ",
                         end="")
        rate = self.optimizer.rate(it)
        self.log(iteration_line(it, loss, avg_loss, rate, seconds, it * self.images_per_iter,
                                hours_left))
        self.chart.add_loss(it, avg_loss)
        self.logs.iteration(it, loss, avg_loss, rate,
                            self.images_per_iter * self.world / max(seconds, 1e-9), seconds)
        self._show(it, loss, avg_loss, hours_left, chart=False)  # /status says this iteration

    def _evaluate(self, it: int, loss: float, avg_loss: float, hours_left: float) -> None:
        """The ``-map`` evaluation after iteration ``it`` (rank 0; the ranks wait), and what
        a new best writes."""
        o = self.opts
        self.map_schedule.evaluated(it)
        # the page's chart before a possibly long evaluation, not after it
        self._show(it, loss, avg_loss, hours_left)
        try:
            value = self.evaluation.evaluate() if self.is_main else None
        except EvaluationStopped:
            self.log("\n mAP calculation stopped by the signal")
            value = None
        if value is not None:
            new_best = self.maps.add(value)
            self.log(f"\n mean_average_precision (mAP@{o.iou_thresh:0.2f}) = {value:f} ")
            self.chart.add_map(it, value)
            self.logs.map(it, value, self.maps.best)
            if new_best:
                self.log("New best mAP!")
                self.checkpoints.save(self.checkpoints.policy.path("best"), it)
                self.evaluation.write_plots()
        dist.barrier()

    def _show(self, it: int, loss: float, avg_loss: float, hours_left: float,
              chart: bool = True) -> None:
        """Rank 0's chart and streams (:class:`~darknet_py.train.chart.TrainDisplay`)."""
        if not self.is_main:
            return
        self.display.show(it, loss, avg_loss, self.optimizer.rate(it), self.maps.last,
                          self.maps.best, hours_left, chart=chart)
