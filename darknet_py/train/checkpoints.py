"""When and where ``detector train`` writes weights, as Darknet's ``train_detector`` does.

* ``<backup>/<cfg>_<N>.weights`` every ``saveweights`` iterations (obj.data key; default 1000
  when max_batches < 10000 else 10000);
* ``<backup>/<cfg>_last.weights`` every ``savelast`` iterations (default 100);
* ``<backup>/<cfg>_best.weights`` when a ``-map`` evaluation reaches a new best;
* ``<backup>/<cfg>_final.weights`` at the end;
* ``<backup>/<cfg>_ema.weights`` next to ``_last`` once a ``[net] ema_alpha`` average started.

Every file is written atomically (temp file, fsync, rename): a crash or a full disk never leaves a
half-written weights file, and the previous file of that name survives a failed write. The
hidden temp file a killed run leaves behind is removed when the next run starts
(:func:`remove_stale_temp_files`). Weights that became NaN/inf are never written: they would
replace a good file with a useless one (:class:`CheckpointWriter`).
"""
from __future__ import annotations

import contextlib
import glob
import os
from dataclasses import dataclass
from typing import Callable, ContextManager, Optional

import torch

from ..errors import TrainingStopped
from ..metrics.coco import darknet_basecfg


def basecfg(cfg_path: str) -> str:
    """Darknet's ``basecfg``, the ``<cfg>`` of the file names: the name after the folders, cut
    at its first ``.`` (``yolov4-tiny.custom.cfg`` trains into ``yolov4-tiny_last.weights``)."""
    return darknet_basecfg(cfg_path)


@dataclass
class CheckpointPolicy:
    backup: str
    base: str
    save_every: int          # Darknet's save_after_iterations
    save_last_every: int     # Darknet's save_last_weights_after
    iter_save: int = 0
    iter_save_last: int = 0

    def path(self, suffix: str) -> str:
        return os.path.join(self.backup, f"{self.base}_{suffix}.weights")

    def numbered_due(self, iteration: int) -> bool:
        if iteration >= self.iter_save + self.save_every or iteration % self.save_every == 0:
            self.iter_save = iteration
            return True
        return False

    def last_due(self, iteration: int) -> bool:
        if self.save_every > self.save_last_every and (
                iteration >= self.iter_save_last + self.save_last_every
                or (iteration % self.save_last_every == 0 and iteration > 1)):
            self.iter_save_last = iteration
            return True
        return False



def remove_stale_temp_files(backup: str, base: str, log: Callable[[str], None]) -> None:
    """Delete the hidden temp files a killed run left mid-save (``.<cfg>_last.weights.*.tmp``,
    written by :func:`darknet_py.files.atomic_write_bytes`): never a checkpoint itself."""
    pattern = os.path.join(glob.escape(backup), f".{glob.escape(base)}_*.weights.*.tmp")
    for path in glob.glob(pattern):
        try:
            os.unlink(path)
            log(f"removed {path} (a save interrupted by a crash)")
        except OSError:
            pass


class CheckpointWriter:
    """Writes the checkpoints of a :class:`CheckpointPolicy` (rank 0 writes, every rank checks).

    ``net.seen`` of a file is its iteration times ``images_per_iter``, as Darknet saves it.
    ``saving``: a context manager around each weights write (the trainer's
    :meth:`~darknet_py.train.signals.StopSignals.saving`).
    """

    def __init__(self, policy: CheckpointPolicy, net, images_per_iter: int, ema=None,
                 is_main: bool = True, log: Callable[[str], None] = print,
                 saving: Optional[Callable[[], ContextManager]] = None):
        self.policy = policy
        self.net = net
        self.images_per_iter = images_per_iter
        self.ema = ema
        self.is_main = is_main
        self.log = log
        self._saving = saving or contextlib.nullcontext
        #: the last checkpoint written (what a NaN stop points the user at)
        self.last_good: Optional[str] = None

    def last_good_hint(self) -> str:
        if self.last_good:
            return f"the last good weights are {self.last_good}"
        return "no checkpoint was written yet"

    def save(self, path: str, iteration: int) -> None:
        """Write the weights to ``path`` atomically; NaN/inf weights raise
        :class:`~darknet_py.errors.TrainingStopped` naming the last good checkpoint instead."""
        bad = first_nonfinite_layer(self.net)     # the same weights on every rank (DDP)
        if bad is not None:
            raise TrainingStopped(
                f"the weights of layer {bad} became NaN/inf at iteration {iteration}; "
                f"{path} was not written; {self.last_good_hint()} (lower learning_rate or "
                "check the labels)")
        if not self.is_main:
            self.last_good = path                 # what rank 0 wrote
            return
        self.log(f"Saving weights to {path}")
        self.net.seen = iteration * self.images_per_iter
        with self._saving():
            self.net.save_weights(path)
        self.last_good = path

    def save_last(self, iteration: int) -> None:
        """``<cfg>_last.weights``, then, once the weights average has started, the averaged
        ``<cfg>_ema.weights`` (Darknet writes both at the same point of ``train_detector``)."""
        self.save(self.policy.path("last"), iteration)
        if self.ema is None or not self.ema.initialized or not self.is_main:
            return
        path = self.policy.path("ema")
        bad = self.ema.first_nonfinite_layer()
        if bad is not None:       # keep the last good average rather than a useless one
            self.log(f" EMA weights not saved: the average of layer {bad} is NaN/inf")
            return
        self.log(f"Saving weights to {path}")
        self.ema.save(path)
        self.log(f" EMA weights are saved to the file: {path} ")

    def save_due(self, iteration: int) -> None:
        """After iteration ``iteration``: ``<cfg>_<N>.weights`` and ``_last`` when due."""
        if self.policy.numbered_due(iteration):
            self.save(self.policy.path(str(iteration)), iteration)
        if self.policy.last_due(iteration):
            self.save_last(iteration)

    def save_on_stop(self, iteration: int) -> None:
        """A run stopped by a signal: ``_last`` (and ``_ema``), and how to resume."""
        self.save_last(iteration)
        self.log("Interrupted: last weights saved; resume with the same command and "
                 f"{self.policy.path('last')}")


def first_nonfinite_layer(net) -> Optional[int]:
    """Index of the first layer whose parameters or buffers hold NaN/inf, else ``None``."""
    for layer in net.layers:
        for t in list(layer.parameters(recurse=True)) + list(layer.buffers(recurse=True)):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return layer.index
    return None
