"""``detector train -map``: when to evaluate, the evaluation on ``valid=``, the best mAP.

Darknet's rule (``train_detector``): evaluate every ``calc_map_for_each = mAP_epochs *
train_images / (net.batch * net.subdivisions)`` iterations (integer division), at least 100,
counted from the last evaluation (from the start iteration at first), never before ``burn_in``,
and at ``max_batches`` whatever the count says (:class:`MapSchedule`). A result at least as good
as the best so far is a new best (Darknet's ``>=``): ``<cfg>_best.weights`` and, here, the
``detector map -plots`` pictures in ``<backup>/plots/`` (:class:`TrainEvaluation`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, List, TextIO

from ..data.datacfg import read_names
from ..errors import DarknetError
from ..infer.evaluate import evaluate_network_map
from ..metrics.plots import write_map_plots

__all__ = ["next_map_iteration", "MapSchedule", "BestMap", "TrainEvaluation", "class_names"]


def next_map_iteration(iter_map: int, map_epochs: int, train_images: int, images_per_iter: int,
                       burn_in: int) -> int:
    """Darknet's ``next_map_calc``: mAP every max(100, map_epochs epochs) iterations after
    ``iter_map``, never before burn_in."""
    every = max(int(map_epochs * train_images / max(1, images_per_iter)), 100)
    return max(iter_map + every, burn_in)


@dataclass
class MapSchedule:
    """The iterations of ``-map`` evaluations, from the last one (``last``)."""
    map_epochs: int
    train_images: int
    images_per_iter: int
    burn_in: int
    max_batches: int
    last: int = 0            # Darknet's iter_map
    #: Darknet's next_map_calc (may lie past max_batches; see :attr:`announced`)
    next_at: int = field(init=False)

    def __post_init__(self) -> None:
        self.evaluated(self.last)

    def evaluated(self, iteration: int) -> None:
        """An evaluation ran after ``iteration``: the next one counts from there."""
        self.last = iteration
        self.next_at = next_map_iteration(iteration, self.map_epochs, self.train_images,
                                          self.images_per_iter, self.burn_in)

    @property
    def announced(self) -> int:
        """The iteration printed as the next mAP calculation: the last iteration always
        evaluates, so a short run names it (Darknet prints ``next_at`` unclipped)."""
        return min(self.next_at, self.max_batches)

    def due(self, iteration: int) -> bool:
        """Evaluate after ``iteration``?"""
        return iteration >= self.next_at or iteration == self.max_batches


@dataclass
class BestMap:
    """The last and the best mAP of the run (-1 before the first evaluation, as Darknet)."""
    last: float = -1.0
    best: float = -1.0

    def add(self, value: float) -> bool:
        """Record an evaluation; True when it is a new best (ties included: Darknet's ``>=``
        keeps the newer weights)."""
        self.last = value
        new_best = value >= self.best
        self.best = max(self.best, value)
        return new_best


def class_names(data_cfg, classes: int) -> List[str]:
    """The names= file of obj.data, or the class numbers when it does not exist."""
    path = data_cfg.names_or_default()
    return read_names(path) if os.path.exists(path) else [str(i) for i in range(classes)]


class TrainEvaluation:
    """mAP of the training network on ``valid=`` (``detector map``'s numbers; without a
    ``valid=`` line, on the train list), and the plots of a new best."""

    def __init__(self, net, data_cfg, train_list: str, names: List[str], classes: int,
                 thresh: float, iou_thresh: float, plots_dir: str, out: TextIO,
                 log: Callable[[str], None], should_stop: Callable[[], bool] = lambda: False):
        self.net = net
        self.data_cfg = data_cfg
        self.train_list = train_list       # the images evaluated without a valid= line
        self.names = names
        self.classes = classes
        self.thresh = thresh
        self.iou_thresh = iou_thresh
        self.plots_dir = plots_dir
        self.out = out
        self.log = log
        self.should_stop = should_stop
        #: the last full result (curves, confusion), for the plots
        self.result = None

    def evaluate(self) -> float:
        """mAP on ``valid=`` in eval mode (the training mode is restored); raises
        :class:`~darknet_py.infer.evaluate.EvaluationStopped` when ``should_stop`` turns
        true."""
        # asked at the first evaluation: without valid= that is when the fallback is announced
        valid = self.data_cfg.valid_or_default(self.train_list)
        was_training = self.net.training
        self.net.eval()
        try:
            result = evaluate_network_map(self.net, valid, self.names, self.classes,
                                          thresh=self.thresh, iou_thresh=self.iou_thresh,
                                          difficult=self.data_cfg.difficult, out=self.out,
                                          should_stop=self.should_stop)
        finally:
            self.net.train(was_training)
        self.result = result
        return float(result.map)

    def write_plots(self) -> None:
        """``-plots`` of ``detector map`` for the last result, into ``plots_dir``."""
        try:
            write_map_plots(self.result, self.plots_dir)
        except DarknetError as e:     # pictures must not stop training
            self.log(f" plots not written: {e}")
