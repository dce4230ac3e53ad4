"""The images ``detector train`` learns from: the ``train=`` list and the endless mini-batches.

Each iteration takes ``subdivisions`` mini-batches of Darknet's ``net.batch`` images
(``batch/subdivisions`` times ``time_steps``); with ``track=1`` they are sequences of consecutive
list lines (:func:`~darknet_py.data.dataset.make_sequence_loader`). Under DDP every rank loads its
shard of the mini-batches one process would load, from one seed shared by the ranks.
"""
from __future__ import annotations

import os
from typing import Callable, List, Optional, Tuple

from .. import distributed as dist
from ..data.augment import AugmentConfig
from ..data.datacfg import read_list
from ..data.dataset import (DetectionDataset, MultiScaleSchedule, make_loader, make_sequence_loader,
                            shutdown_loader_iterator)
from ..errors import DataError
from .schedule import images_per_iteration, loader_seq_subdivisions

__all__ = ["read_train_list", "BatchSource"]


def read_train_list(data_cfg, data_path: str) -> Tuple[str, List[str]]:
    """The ``train=`` list of obj.data (Darknet's default ``data/train.txt`` without one) and
    its image paths; a missing default or an empty list is a one-line data error."""
    train_list = data_cfg.train_or_default()
    if data_cfg.train is None and not os.path.exists(train_list):
        raise DataError(f"no train= line, and Darknet's default list {train_list} does "
                        "not exist: add train=<file listing the training images>",
                        file=data_path)
    paths = read_list(train_list)
    if not paths:
        raise DataError("the train list has no images", file=train_list)
    return train_list, paths


class BatchSource:
    """Endless mini-batches from the DataLoader (a new pass over the list when one ends)."""

    def __init__(self, loader):
        self.loader = loader
        self._it = iter(loader)

    @classmethod
    def for_network(cls, net, paths: List[str], start_iteration: int, *, workers: int,
                    seed: Optional[int], cache_images: bool = False, rank: int = 0,
                    world: int = 1, log: Callable[[str], None] = print) -> "BatchSource":
        """The mini-batches ``net`` trains on from iteration ``start_iteration`` on, with the
        cfg's augmentation and multi-scale schedule (``random=``)."""
        cfgc = net.config
        aug = AugmentConfig.from_network(net)
        seed = dist.shared_seed(seed)   # one seed: every rank shards the same batches
        dataset = DetectionDataset(paths, aug, seed=seed, cache_images=cache_images)
        schedule = None
        if aug.random:
            schedule = MultiScaleSchedule(cfgc.width, cfgc.height, aug.random, aug.resize_step,
                                          cfgc.max_batches, cfgc.net_batch)
        common = dict(num_workers=workers, seed=seed, multiscale=schedule,
                      max_batches=cfgc.max_batches, start_iteration=start_iteration,
                      rank=rank, world=world)
        if cfgc.track:
            import functools
            log(f"\n Tracking! batch = {cfgc.net_batch}, subdiv = {cfgc.subdivisions}, "
                f"time_steps = {cfgc.time_steps}, mini_batch = {cfgc.mini_batch} ")
            loader = make_sequence_loader(
                dataset, cfgc.mini_batch, cfgc.time_steps, cfgc.subdivisions,
                augment_speed=cfgc.augment_speed,
                seq_subdivisions=functools.partial(loader_seq_subdivisions, cfgc), **common)
        else:
            # with time_steps > 1 (and no track) Darknet's forward pass still takes
            # net.batch = batch/subdivisions * time_steps random images
            loader = make_loader(dataset, images_per_iteration(cfgc), cfgc.subdivisions,
                                 **common)
        return cls(loader)

    def next_minibatch(self):
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            return next(self._it)

    def close(self) -> None:
        it, self._it = self._it, None
        shutdown_loader_iterator(it)
