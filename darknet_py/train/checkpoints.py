"""When and where ``detector train`` writes weights, as Darknet's ``train_detector`` does.

* ``<backup>/<cfg>_<N>.weights`` every ``saveweights`` iterations (obj.data key; default 1000
  when max_batches < 10000 else 10000);
* ``<backup>/<cfg>_last.weights`` every ``savelast`` iterations (default 100);
* ``<backup>/<cfg>_best.weights`` when a ``-map`` evaluation reaches a new best;
* ``<backup>/<cfg>_final.weights`` at the end.

Every file is written atomically (temp file, fsync, rename): a crash or a full disk never leaves a
half-written weights file, and the previous file of that name survives a failed write.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


def basecfg(cfg_path: str) -> str:
    """Darknet's ``basecfg``: the cfg file name without folder and extension."""
    name = os.path.basename(cfg_path)
    return name.rsplit(".", 1)[0] if "." in name else name


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


def next_map_iteration(iter_map: int, map_epochs: int, train_images: int, images_per_iter: int,
                       burn_in: int) -> int:
    """Darknet: mAP every max(100, map_epochs epochs) iterations, never before burn_in."""
    every = max(int(map_epochs * train_images / max(1, images_per_iter)), 100)
    return max(iter_map + every, burn_in)
