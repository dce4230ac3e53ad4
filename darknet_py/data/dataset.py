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

Deliberate differences from Darknet: samples come from a shuffled pass over the list (epochs)
instead of independent random picks with replacement; images that cannot be loaded (exactly those
that inference refuses: :func:`darknet_py.infer.image.load_image`) are reported once and replaced
by another random image (Darknet prints an error and leaves a hole that crashes later).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import DataError
from .augment import AugmentConfig, load_detection_sample, load_image, rand_scale
from .labels import read_labels, report_once
from .paths import label_path

log = logging.getLogger("darknet_py.data")

Item = Union[int, Tuple[int, int, int], Tuple[int, int, int, int, int]]

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
        inference would refuse too (see :func:`darknet_py.data.augment.load_image`)."""
        img = self._images.get(index)
        if img is None:
            img = load_image(self.paths[index], self.cfg.channels)
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
                from ..distributed import shard
                mb = shard(mb, self.rank, self.world)
            yield [(int(i), w, h, it, sub) for i in mb]
            self._sub += 1
            if self._sub == self.subdivisions:
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
