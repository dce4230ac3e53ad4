"""Torch ``Dataset``/``DataLoader`` for detector training, and Darknet's multi-scale schedule.

:class:`DetectionDataset` returns ``(image (C,h,w) float32 in [0,1], truth (max_boxes,5) float32
(x,y,w,h,class))`` made by :func:`darknet_py.data.augment.load_detection_sample`. An item is an
index, or ``(index, w, h)`` to produce the sample at another network size (multi-scale).

:func:`make_loader` builds the ``DataLoader``: mini-batches of ``batch/subdivisions`` images,
reproducible worker seeding from one ``seed``, pinned memory, persistent workers, and (with
``[yolo] random=``) the size changes of Darknet's ``train_detector`` through
:class:`DetectionBatchSampler` + :class:`MultiScaleSchedule`.

Randomness: items from :class:`DetectionBatchSampler` are ``(index, w, h, iteration,
subdivision)``; with a dataset ``seed`` the augmentation of such an item draws from
``numpy.random.default_rng([seed, iteration, subdivision, index])``, so a sample is the same
whatever process, DataLoader worker or torchrun rank loads it (what makes a sharded DDP batch
the single-process batch). Plain ``index`` / ``(index, w, h)`` items, or no seed, draw from the
process's own generator (in a worker seeded from the worker's torch seed, which the loader
derives from ``seed``; with ``num_workers=0`` from the dataset's ``seed``).

With ``[net] track=1`` (:class:`SequenceBatchSampler`, :func:`make_sequence_loader`) a mini-batch
is made of sequences of consecutive list lines instead, with one set of augmentation draws per
loader chunk, as Darknet's tracking loader does.

Deliberate differences from Darknet: samples come from a shuffled pass over the list (epochs)
instead of independent random picks with replacement; images that cannot be loaded (exactly those
that inference refuses: :func:`darknet_py.imaging.image.load_image`) are reported once and replaced
by another random image (Darknet prints an error and leaves a hole that crashes later).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Set, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..distributed import shard, shard_bounds
from ..errors import DataError
from .augment import (AugmentConfig, draw_augmentation, load_detection_sample, load_image_hwc_uint8,
                      rand_scale)
from .labels import read_labels, report_once
from .paths import label_path

log = logging.getLogger("darknet_py.data")



class SequenceItem(NamedTuple):
    """One image of a ``track=1`` mini-batch (made by :class:`SequenceBatchSampler`)."""

    #: list line of the image in each of the sample's passes (1; 2 with mixup; 4 with mosaic):
    #: the same place in the pass's own sequences
    indices: Tuple[int, ...]
    w: int
    h: int
    #: random key of the loader chunk: every image of the chunk derives the same augmentation
    #: draws from it
    key: int
    #: the image's place in its chunk: its own draws (box order, noise, mosaic cut)
    position: int
    #: 0, or the cfg's mixup code (1 mixup, 3 mosaic) when the chunk applies it
    use_mixup: int


Item = Union[int, Tuple[int, int, int], Tuple[int, int, int, int, int], SequenceItem]

_bad_images: Set[str] = set()


class DetectionDataset(Dataset):
    """Darknet-style augmented detection samples from a list of image paths.

    ``cache_images``: keep decoded images in RAM (per process: each worker holds its own copy of
    what it has loaded, so memory is up to ``num_workers`` x the decoded dataset).
    ``augment=False`` gives the plain resized image (stretch, or letter_box) with its boxes.
    """

    def __init__(self, paths: Sequence[str], cfg: AugmentConfig, seed: Optional[int] = None,
                 cache_images: bool = False, augment: bool = True, max_load_retries: int = 10):
        if len(paths) == 0:
            raise DataError("the image list is empty")
        self.paths = list(paths)
        self.cfg = cfg if augment else cfg.without_augmentation()
        self.seed = seed
        self.cache_images = cache_images
        self.max_load_retries = max_load_retries
        self.label_paths = [label_path(p) for p in self.paths]   # fails early on bad extensions
        self._rng: Optional[np.random.Generator] = None
        self._rng_key: Optional[Tuple[int, int]] = None
        self._images: Dict[int, np.ndarray] = {}
        self._labels: Dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.paths)

    # ------------------------------------------------------------------ per-process RNG
    def rng(self) -> np.random.Generator:
        info = torch.utils.data.get_worker_info()
        key = (os.getpid(), -1 if info is None else info.id)
        if self._rng is None or self._rng_key != key:
            if info is None:
                seed = self.seed if self.seed is not None else None
                self._rng = np.random.default_rng(seed)
            else:
                self._rng = np.random.default_rng([info.seed & 0xFFFFFFFFFFFF, info.id])
            self._rng_key = key
        return self._rng

    def sample_rng(self, index: int, iteration: int, subdivision: int) -> np.random.Generator:
        """The generator of one sampled item: a function of (seed, iteration, subdivision,
        image index) only."""
        key = [int(self.seed) & 0xFFFFFFFFFFFFFFFF, int(iteration), int(subdivision), int(index)]
        return np.random.default_rng(key)

    def reseed(self, seed: Optional[int]) -> None:
        """Restart the main-process random stream (``num_workers=0``)."""
        self.seed = seed
        self._rng = None

    # ------------------------------------------------------------------ loading
    def boxes(self, index: int) -> np.ndarray:
        """Validated label boxes (M,5) (class,x,y,w,h) of image ``index`` (cached)."""
        b = self._labels.get(index)
        if b is None:
            lf = read_labels(self.label_paths[index], self.cfg.classes)
            report_once(lf)
            b = lf.boxes
            self._labels[index] = b
        return b

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` as ``(H, W, C)`` uint8 RGB; raises :class:`DataError` for a file that
        inference would refuse too (see :func:`darknet_py.data.augment.load_image_hwc_uint8`)."""
        img = self._images.get(index)
        if img is None:
            img = load_image_hwc_uint8(self.paths[index], self.cfg.channels)
            if self.cache_images:
                self._images[index] = img
        return img

    def load(self, index: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """Image + boxes of ``index``; an image that cannot be loaded is reported once and replaced
        by a random other one."""
        for _ in range(self.max_load_retries + 1):
            try:
                img = self.image(index)
            except DataError as err:
                path = self.paths[index]
                if path not in _bad_images:
                    _bad_images.add(path)
                    log.warning("%s; using another image instead", err)
                index = int(rng.integers(len(self.paths)))
                continue
            return img, self.boxes(index)
        raise DataError(f"could not load any image after {self.max_load_retries + 1} tries "
                        f"(last: {self.paths[index]})")

    def __getitem__(self, item: Item) -> Tuple[torch.Tensor, torch.Tensor]:
        if isinstance(item, SequenceItem):
            return self._sequence_sample(item)
        key = None
        if isinstance(item, (tuple, list)):
            index, w, h = (int(v) for v in item[:3])
            if len(item) == 5:
                key = (int(item[3]), int(item[4]))
        else:
            index, w, h = int(item), self.cfg.width, self.cfg.height
        rng = self.rng() if key is None or self.seed is None else \
            self.sample_rng(index, *key)

        def fetch(k: int) -> Tuple[np.ndarray, np.ndarray]:
            i = index if k == 0 else int(rng.integers(len(self.paths)))
            return self.load(i, rng)

        image, truth = load_detection_sample(fetch, self.cfg, rng, w, h)
        return torch.from_numpy(image), torch.from_numpy(truth)

    def _sequence_sample(self, item: SequenceItem) -> Tuple[torch.Tensor, torch.Tensor]:
        """A ``track=1`` sample: the chunk's shared draws for each pass (what Darknet computes
        once per chunk and pass), this image's own generator for the rest."""
        draws = [draw_augmentation(np.random.default_rng([item.key, 0, k]), self.cfg)
                 for k in range(len(item.indices))]
        rng = np.random.default_rng([item.key, 1, item.position])

        def fetch(k: int) -> Tuple[np.ndarray, np.ndarray]:
            return self.load(item.indices[k], rng)

        image, truth = load_detection_sample(fetch, self.cfg, rng, item.w, item.h,
                                             apply_mixup=bool(item.use_mixup), draws=draws)
        return torch.from_numpy(image), torch.from_numpy(truth)


# ----------------------------------------------------------------------------- multi-scale
def _roundl(v: float) -> int:
    """C ``roundl``: half away from zero."""
    return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)


@dataclass
class MultiScaleSchedule:
    """The ``random=`` resizing of ``train_detector`` (detector.c).

    Every 10 loop iterations (counted from the start of this run) the network size becomes
    ``round(r * init / step + 1) * step`` with ``r = rand_scale(coef)`` (coef = 1.4 for
    ``random=1``, else the ``random`` value), falling back to the initial size when ``r < 1`` gave
    a larger one; the first resize and the last 100 iterations use the largest size
    ``round(coef * init / step + 1) * step``; sizes are at least ``step``.
    ``batch_for`` gives the ``dynamic_minibatch`` batch size for a size.
    """

    init_w: int
    init_h: int
    random: float
    resize_step: float = 32.0
    max_batches: int = 0
    init_batch: int = 1

    @property
    def coef(self) -> float:
        return 1.4 if self.random == 1.0 else float(self.random)

    @property
    def enabled(self) -> bool:
        return bool(self.random)

    def max_dims(self) -> Tuple[int, int]:
        step = self.resize_step
        return (int(_roundl(self.coef * self.init_w / step + 1) * step),
                int(_roundl(self.coef * self.init_h / step + 1) * step))

    def dims(self, rng: np.random.Generator, iteration: int, first: bool) -> Tuple[int, int]:
        """Size for a resize at global ``iteration``; ``first``: the first resize of the run
        (Darknet: ``avg_loss < 0``)."""
        coef = self.coef
        step = self.resize_step
        random_val = rand_scale(rng, coef)    # *x or /x
        dim_w = int(_roundl(random_val * self.init_w / step + 1) * step)
        dim_h = int(_roundl(random_val * self.init_h / step + 1) * step)
        if random_val < 1 and (dim_w > self.init_w or dim_h > self.init_h):
            dim_w, dim_h = self.init_w, self.init_h
        if first or iteration > self.max_batches - 100:
            dim_w, dim_h = self.max_dims()
        step_i = int(step)
        return max(dim_w, step_i), max(dim_h, step_i)

    def batch_for(self, dim_w: int, dim_h: int) -> int:
        """``dynamic_minibatch``: batch scaled by the pixel count relative to the largest size."""
        mw, mh = self.max_dims()
        dim_b = (self.init_batch * mw * mh) // (dim_w * dim_h)
        new_dim_b = int(dim_b * 0.8)
        return new_dim_b if new_dim_b > self.init_batch else dim_b


class DetectionBatchSampler(Sampler):
    """Yields mini-batches of ``(index, w, h, iteration, subdivision)``: ``mini_batch`` images
    each, ``subdivisions`` mini-batches per iteration, network size from
    :class:`MultiScaleSchedule` every 10 iterations. The iteration counter carries over between
    epochs (the loader is re-iterated), so the schedule follows training iterations, not
    epochs. Deterministic given ``seed``.

    ``rank``/``world`` (torchrun): every rank draws the same order and sizes and yields only its
    :func:`darknet_py.distributed.shard` of each mini-batch (``mini_batch`` is the global one).
    """

    def __init__(self, num_images: int, mini_batch: int, subdivisions: int,
                 schedule: Optional[MultiScaleSchedule], width: int, height: int,
                 seed: Optional[int] = None, shuffle: bool = True, start_iteration: int = 0,
                 rank: int = 0, world: int = 1):
        if mini_batch < 1:
            raise DataError(f"mini-batch must be >= 1, got {mini_batch}")
        if mini_batch < world:
            raise DataError(f"the mini-batch (batch/subdivisions = {mini_batch} images) is "
                            f"smaller than the {world} processes that share it: raise batch or "
                            "lower subdivisions")
        self.rank, self.world = rank, world
        self.num_images = num_images
        self.mini_batch = mini_batch
        self.subdivisions = max(1, subdivisions)
        self.schedule = schedule
        self.size = (width, height)
        self.shuffle = shuffle
        self.iteration = start_iteration
        self._count = 0                  # loop iterations of this run (Darknet's `count`)
        self._sub = 0                    # mini-batches done in the current iteration
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.num_images // self.mini_batch

    def _maybe_resize(self) -> None:
        if self._sub != 0 or self.schedule is None or not self.schedule.enabled:
            return
        if self._count % 10 == 0:
            self.size = self.schedule.dims(self._rng, self.iteration, first=self._count == 0)
            log.info("Resizing, random_coef = %.2f: %d x %d", self.schedule.coef, *self.size)

    def __iter__(self) -> Iterator[List[Tuple[int, int, int]]]:
        order = self._rng.permutation(self.num_images) if self.shuffle \
            else np.arange(self.num_images)
        for start in range(0, len(self) * self.mini_batch, self.mini_batch):
            self._maybe_resize()
            w, h = self.size
            it, sub = self.iteration, self._sub
            mb = order[start:start + self.mini_batch]
            if self.world > 1:
                mb = shard(mb, self.rank, self.world)
            yield [(int(i), w, h, it, sub) for i in mb]
            self._sub += 1
            if self._sub == self.subdivisions:
                self._sub = 0
                self._count += 1
                self.iteration += 1


def _passes(use_mixup: int) -> int:
    """Images per sample: 4 for mosaic, 2 for mixup, else 1."""
    return 4 if use_mixup == 3 else (2 if use_mixup == 1 else 1)


class SequenceBatchSampler(DetectionBatchSampler):
    """``[net] track=1``: Darknet's tracking loader (``train_detector`` with ``net.track``,
    ``load_threads``, ``load_data_detection``, ``get_sequential_paths`` in ``data.c``).

    One iteration holds ``sequences * time_steps * subdivisions`` images (Darknet's ``imgs =
    net.batch * net.subdivisions``, where ``net.batch = batch/subdivisions * time_steps`` and
    ``sequences = batch/subdivisions`` is its ``mini_batch``). Darknet splits them among
    ``sequential_subdivisions`` loader threads (``seq_subdivisions(iteration)``; normally
    ``subdivisions``); each thread's chunk of ``n`` images is ``sequences`` runs of consecutive
    list lines: image ``i`` of the chunk is line ``(start[i % sequences] + (i // sequences) *
    speed) % len(list)``, with a random start line per sequence and one ``speed`` per chunk drawn
    from ``1..augment_speed`` (so a sequence may skip frames). The chunks follow each other and
    each forward pass takes the next ``sequences * time_steps`` images: *step-major*, time step
    ``t`` of sequence ``s`` at position ``t * sequences + s``, the layout of ``[crnn]``. With
    fewer chunks than ``subdivisions`` a sequence goes on through ``subdivisions /
    sequential_subdivisions`` forward passes (the recurrent state still starts at zero in each).

    Within a chunk every image uses the same augmentation draws (crop fractions, flip, hue,
    saturation, exposure, blur and noise choices: :class:`~darknet_py.data.augment.AugmentDraws`):
    Darknet's ``augmentation_calculated``. The crop offsets are those fractions of each image's
    own size, as in Darknet. Mosaic/mixup is decided per chunk (50 %); the other images of a
    mosaic/mixup come from their own sequences of consecutive lines (a new
    ``get_sequential_paths``) with their own draws, and the mosaic cut point is drawn per image,
    as in Darknet.

    Yields lists of :class:`SequenceItem`. ``rank``/``world``: each process gets the whole
    sequences of its :func:`darknet_py.distributed.shard_bounds` block (still step-major).

    Deliberate differences: the random streams (numpy, from ``seed``) are not Darknet's
    ``rand()``; Darknet lowers the shared ``blur`` for small objects and the lowered value then
    holds for the rest of its chunk, here it is lowered for that image only; ``contrastive=1``
    (which pairs sequences in Darknet's loader) is not supported by the loader.
    """

    def __init__(self, num_images: int, sequences: int, time_steps: int, subdivisions: int,
                 schedule: Optional[MultiScaleSchedule], width: int, height: int, *,
                 augment_speed: int = 2, mixup: int = 0,
                 seq_subdivisions: Optional[Callable[[int], int]] = None,
                 seed: Optional[int] = None, start_iteration: int = 0, rank: int = 0,
                 world: int = 1):
        if sequences < world:
            raise DataError(f"the mini-batch (batch/subdivisions = {sequences} sequences) is "
                            f"smaller than the {world} processes that share it: raise batch or "
                            "lower subdivisions")
        self.sequences = max(1, int(sequences))
        self.time_steps = max(1, int(time_steps))
        super().__init__(num_images, self.sequences * self.time_steps, subdivisions, schedule,
                         width, height, seed=seed, shuffle=False,
                         start_iteration=start_iteration, rank=rank, world=world)
        self.augment_speed = int(augment_speed)
        self.mixup = int(mixup)
        self.seq_subdivisions = seq_subdivisions

    @property
    def images_per_iteration(self) -> int:
        return self.mini_batch * self.subdivisions

    def __len__(self) -> int:
        # no epochs in Darknet's loader: one "pass" is enough iterations to cover the list once
        iterations = max(1, math.ceil(self.num_images / self.images_per_iteration))
        return iterations * self.subdivisions

    def sequential_lines(self, n: int) -> List[int]:
        """``get_sequential_paths``: ``n`` list indices, ``sequences`` interleaved runs."""
        lo, hi = sorted((1, self.augment_speed))
        speed = max(1, int(self._rng.integers(lo, hi + 1)))    # rand_int(1, augment_speed)
        starts = self._rng.integers(0, self.num_images, size=self.sequences)
        i = np.arange(n)
        return ((starts[i % self.sequences] + (i // self.sequences) * speed)
                % self.num_images).tolist()

    def chunk(self, n: int, w: int, h: int) -> List[SequenceItem]:
        """One loader thread's ``n`` images (one ``load_data_detection`` call)."""
        use_mixup = self.mixup if self.mixup and self._rng.integers(2) else 0
        lines = [self.sequential_lines(n) for _ in range(_passes(use_mixup))]
        key = int(self._rng.integers(2 ** 63))
        return [SequenceItem(tuple(run[i] for run in lines), w, h, key, i, use_mixup)
                for i in range(n)]

    def iteration_items(self, w: int, h: int) -> List[SequenceItem]:
        """All images of the next iteration, in Darknet's order (chunk after chunk)."""
        total = self.images_per_iteration
        threads = self.subdivisions if self.seq_subdivisions is None else \
            int(self.seq_subdivisions(self.iteration))
        if threads < 1 or self.subdivisions % threads:
            raise DataError(f"sequential_subdivisions={threads} at iteration "
                            f"{self.iteration + 1} does not divide subdivisions="
                            f"{self.subdivisions}: the sequences would straddle forward passes")
        items: List[SequenceItem] = []
        for t in range(threads):
            items += self.chunk((t + 1) * total // threads - t * total // threads, w, h)
        return items

    def __iter__(self) -> Iterator[List[SequenceItem]]:
        mine = shard_bounds(self.sequences, self.rank, self.world)
        for _ in range(len(self) // self.subdivisions):
            self._maybe_resize()
            w, h = self.size
            items = self.iteration_items(w, h)
            for sub in range(self.subdivisions):
                forward = items[sub * self.mini_batch:(sub + 1) * self.mini_batch]
                yield [forward[t * self.sequences + s] for t in range(self.time_steps)
                       for s in mine]
                self._sub += 1
            self._sub = 0
            self._count += 1
            self.iteration += 1


def collate_detection(batch: List[Tuple[torch.Tensor, torch.Tensor]]
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    images, truths = zip(*batch)
    return torch.stack(images, 0), torch.stack(truths, 0)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """``worker_init_fn`` of the training loader: a worker ignores SIGINT and SIGTERM.

    Ctrl-C in a terminal, ``timeout``, SLURM, Kubernetes and ``kill -- -PGID`` signal the whole
    process group. A worker that died of it would make the main process fail with torch's
    "DataLoader worker ... is killed by signal" before it could save ``_last.weights``; instead
    the main process handles the signal, finishes the iteration, saves, and shuts the workers
    down itself (they also exit on their own when the main process is gone).
    """
    import signal
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def shutdown_loader_iterator(it) -> None:
    """Stop the worker processes of a DataLoader iterator now (not whenever it is collected):
    tell them to exit, wait a little, then kill any that are still running (they ignore SIGTERM,
    see :func:`ignore_stop_signals`)."""
    if it is None:
        return
    shutdown = getattr(it, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
    for w in getattr(it, "_workers", None) or []:
        if w.is_alive():
            w.kill()
            w.join(timeout=5)


def make_loader(dataset: DetectionDataset, batch: int, subdivisions: int = 1, *,
                num_workers: int = 2, seed: Optional[int] = None, shuffle: bool = True,
                multiscale: Optional[MultiScaleSchedule] = None, max_batches: int = 0,
                pin_memory: Optional[bool] = None, persistent_workers: bool = True,
                prefetch_factor: int = 2, start_iteration: int = 0, rank: int = 0,
                world: int = 1) -> DataLoader:
    """DataLoader of mini-batches (``batch // subdivisions`` images, Darknet's ``net->batch``).

    ``multiscale``: a :class:`MultiScaleSchedule` (``random=`` of the last yolo layer); without
    it every batch has the cfg size. ``pin_memory`` defaults to ``torch.cuda.is_available()``.
    ``rank``/``world``: this process's shard of every mini-batch (see
    :class:`DetectionBatchSampler`; give every rank the same ``seed``).

    Workers ignore SIGINT/SIGTERM (:func:`ignore_stop_signals`): the main process handles a
    signal sent to the whole process group and shuts them down.

    Workers are forked and OpenCV's thread settings are left alone in them: calling
    ``cv2.setNumThreads(n>0)`` in a forked child whose parent had used OpenCV's thread pool
    hangs forever (seen with opencv-python 4.14), while plain OpenCV calls work.
    """
    mini_batch = max(1, batch // max(1, subdivisions))
    cfg = dataset.cfg
    if multiscale is not None and max_batches and not multiscale.max_batches:
        multiscale.max_batches = max_batches
    sampler = DetectionBatchSampler(len(dataset), mini_batch, subdivisions, multiscale,
                                    cfg.width, cfg.height, seed=seed, shuffle=shuffle,
                                    start_iteration=start_iteration, rank=rank, world=world)
    if len(sampler) == 0:
        raise DataError(f"the image list has {len(dataset)} images, fewer than one mini-batch "
                        f"({mini_batch})")
    return _data_loader(dataset, sampler, num_workers, seed, pin_memory, persistent_workers,
                        prefetch_factor)


def make_sequence_loader(dataset: DetectionDataset, sequences: int, time_steps: int,
                         subdivisions: int = 1, *, augment_speed: int = 2,
                         seq_subdivisions: Optional[Callable[[int], int]] = None,
                         num_workers: int = 2, seed: Optional[int] = None,
                         multiscale: Optional[MultiScaleSchedule] = None, max_batches: int = 0,
                         pin_memory: Optional[bool] = None, persistent_workers: bool = True,
                         prefetch_factor: int = 2, start_iteration: int = 0, rank: int = 0,
                         world: int = 1) -> DataLoader:
    """DataLoader of ``track=1`` mini-batches: ``sequences`` (``batch/subdivisions``) runs of
    ``time_steps`` consecutive list lines, step-major (:class:`SequenceBatchSampler`).
    ``seq_subdivisions(iteration)``: the loader chunks of the iteration after ``iteration``
    finished ones (:func:`darknet_py.train.schedule.loader_seq_subdivisions`; default
    ``subdivisions``). The other arguments are :func:`make_loader`'s."""
    cfg = dataset.cfg
    if multiscale is not None and max_batches and not multiscale.max_batches:
        multiscale.max_batches = max_batches
    sampler = SequenceBatchSampler(len(dataset), sequences, time_steps, subdivisions, multiscale,
                                   cfg.width, cfg.height, augment_speed=augment_speed,
                                   mixup=cfg.mixup, seq_subdivisions=seq_subdivisions, seed=seed,
                                   start_iteration=start_iteration, rank=rank, world=world)
    return _data_loader(dataset, sampler, num_workers, seed, pin_memory, persistent_workers,
                        prefetch_factor)


def _data_loader(dataset: DetectionDataset, sampler: Sampler, num_workers: int,
                 seed: Optional[int], pin_memory: Optional[bool], persistent_workers: bool,
                 prefetch_factor: int) -> DataLoader:
    if seed is not None and dataset.seed is None:
        dataset.reseed(seed)
    generator = torch.Generator()
    generator.manual_seed(0 if seed is None else int(seed))
    if seed is None:
        generator.seed()
    kwargs = {}
    if num_workers > 0:
        kwargs.update(persistent_workers=persistent_workers, prefetch_factor=prefetch_factor,
                      worker_init_fn=ignore_stop_signals)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                      collate_fn=collate_detection,
                      pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                      generator=generator, **kwargs)
