"""Training logs: ``<backup>/<cfg>_log.csv``, TensorBoard scalars, and an honest ETA.

:class:`TrainLog` appends one CSV row per iteration (``kind=iter``: iteration, loss, avg loss,
learning rate, images/s, seconds of the iteration, seconds since the start, wall-clock time) and
one per ``-map`` evaluation (``kind=map``: mAP and best mAP). The file is opened in append mode
(a resumed run continues it; the header is written only to a new or empty file) and flushed after
every row, so a killed run loses at most the row being written. A run resumed from a checkpoint
of iteration N first drops the rows after N (logged by the killed run after its last checkpoint,
and trained again now), so no iteration appears twice; the file is rewritten atomically.

:class:`TensorBoardLog` writes the same scalars with ``torch.utils.tensorboard.SummaryWriter``
(``-tensorboard DIR``); without the ``tensorboard`` package it is a one-line usage error.

:class:`IterationTimer` gives the hours left from a moving average of the iteration time, so the
estimate falls to 0 at ``max_batches`` (Darknet smooths the *remaining time* with weight 0.01,
which hardly moves on a short run).

:class:`TrainLogs` writes to both (rank 0; nothing on the other ranks). :class:`LossAverage` and
:func:`iteration_line` are Darknet's ``avg_loss`` and its per-iteration line on stdout.
"""
from __future__ import annotations

import csv
import os
import time
from typing import List, Optional

from ..errors import DataError, UsageError

CSV_COLUMNS = ("kind", "iteration", "loss", "avg_loss", "lr", "images_per_s", "iter_seconds",
               "elapsed_s", "time", "map", "best_map")


class TrainLog:
    """``<backup>/<cfg>_log.csv``, one row per write, flushed."""

    def __init__(self, path: str, resume_from: Optional[int] = None):
        self.path = path
        self.resume_from = resume_from
        self.start = time.time()
        self._f = None
        folder = os.path.dirname(os.path.abspath(path))
        if not os.access(folder, os.W_OK | os.X_OK):
            raise DataError("cannot write the training log: the folder is not writable",
                            file=path)

    def _open(self) -> None:
        # opened at the first row: a run that fails before its first iteration leaves no file
        try:
            if self.resume_from is not None and os.path.isfile(self.path):
                drop_rows_after(self.path, self.resume_from)
            new = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
            self._f = open(self.path, "a", newline="")
        except OSError as e:
            raise DataError(f"cannot open the training log: {e.strerror}", file=self.path) from e
        self._w = csv.writer(self._f)
        if new:
            self._w.writerow(CSV_COLUMNS)

    def _write(self, row) -> None:
        if self._f is None:
            self._open()
        self._w.writerow(row)
        self._f.flush()

    def _now(self):
        now = time.time()
        return f"{now - self.start:.3f}", time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))

    def iteration(self, iteration: int, loss: float, avg_loss: float, lr: float,
                  images_per_s: float, seconds: float) -> None:
        elapsed, stamp = self._now()
        self._write(["iter", iteration, f"{loss:.6f}", f"{avg_loss:.6f}", f"{lr:.8g}",
                     f"{images_per_s:.3f}", f"{seconds:.4f}", elapsed, stamp, "", ""])

    def map(self, iteration: int, value: float, best: float) -> None:
        elapsed, stamp = self._now()
        self._write(["map", iteration, "", "", "", "", "", elapsed, stamp, f"{value:.6f}",
                     f"{best:.6f}"])

    def close(self) -> None:
        try:
            if self._f is not None:
                self._f.close()
        except OSError:
            pass


def drop_rows_after(path: str, iteration: int) -> int:
    """Remove the rows of ``path`` whose iteration is above ``iteration`` (streamed: the log of a
    long run is never held in memory; rewritten through a temp file and a rename only when a row
    goes). Returns the number of rows removed. Rows that are not ours (no number) stay."""
    import tempfile
    drop = 0
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if _row_iteration(row) > iteration:
                drop += 1
    if not drop:
        return 0
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=folder)
    try:
        with open(path, newline="") as src, os.fdopen(fd, "w", newline="") as dst:
            writer = csv.writer(dst)
            for row in csv.reader(src):
                if _row_iteration(row) <= iteration:
                    writer.writerow(row)
            dst.flush()
            os.fchmod(dst.fileno(), os.stat(path).st_mode & 0o777)
            os.fsync(dst.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return drop


def _row_iteration(row) -> float:
    """The iteration of a log row; -inf for the header and rows without one (kept)."""
    try:
        return int(row[1]) if len(row) > 1 and row[0] in ("iter", "map") else float("-inf")
    except ValueError:
        return float("-inf")


def summary_writer_class():
    """``torch.utils.tensorboard.SummaryWriter``, or a one-line usage error without the
    ``tensorboard`` package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError("-tensorboard needs the tensorboard package: pip install tensorboard "
                         "(or pip install darknet-py[tensorboard])") from None
    return SummaryWriter


class TensorBoardLog:
    """The same scalars through TensorBoard's own ``SummaryWriter``."""

    def __init__(self, folder: str):
        self.writer = summary_writer_class()(log_dir=folder)

    def iteration(self, iteration: int, loss: float, avg_loss: float, lr: float,
                  images_per_s: float, seconds: float) -> None:
        w = self.writer
        w.add_scalar("train/loss", loss, iteration)
        w.add_scalar("train/avg_loss", avg_loss, iteration)
        w.add_scalar("train/lr", lr, iteration)
        w.add_scalar("train/images_per_s", images_per_s, iteration)
        w.add_scalar("train/iter_seconds", seconds, iteration)

    def map(self, iteration: int, value: float, best: float) -> None:
        self.writer.add_scalar("val/mAP", value, iteration)
        self.writer.add_scalar("val/best_mAP", best, iteration)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class IterationTimer:
    """Hours left = iterations left x a moving average of the seconds per iteration.

    The average is the plain mean over the first ``1/alpha`` iterations, then an exponential
    moving average with weight ``alpha`` (so a slow first iteration, warm-up or a mAP
    evaluation fades out within a few dozen iterations).
    """

    def __init__(self, alpha: float = 0.05):
        self.alpha = alpha
        self.count = 0
        self.seconds: Optional[float] = None

    def add(self, seconds: float) -> None:
        self.count += 1
        w = max(self.alpha, 1.0 / self.count)
        self.seconds = seconds if self.seconds is None else \
            (1 - w) * self.seconds + w * seconds

    def hours_left(self, iteration: int, max_batches: int) -> float:
        if self.seconds is None:
            return 0.0
        return max(0, max_batches - iteration) * self.seconds / 3600.0


class TrainLogs:
    """The logs of one run, written together."""

    def __init__(self, logs: List):
        self.logs = list(logs)

    @classmethod
    def open(cls, backup: str, base: str, iteration: int, tensorboard: Optional[str] = None,
             main_process: bool = True) -> "TrainLogs":
        """``<backup>/<base>_log.csv`` and, with ``tensorboard``, TensorBoard's scalars, for a
        run that starts after ``iteration``."""
        if not main_process:
            return cls([])
        # a resumed run drops the rows its killed predecessor logged after the checkpoint it
        # resumes from (they are trained again); a run from iteration 0 appends
        logs = [TrainLog(os.path.join(backup, f"{base}_log.csv"), resume_from=iteration or None)]
        if tensorboard:
            logs.append(TensorBoardLog(tensorboard))
        return cls(logs)

    def iteration(self, iteration: int, loss: float, avg_loss: float, lr: float,
                  images_per_s: float, seconds: float) -> None:
        for log in self.logs:
            log.iteration(iteration, loss, avg_loss, lr, images_per_s, seconds)

    def map(self, iteration: int, value: float, best: float) -> None:
        for log in self.logs:
            log.map(iteration, value, best)

    def close(self) -> None:
        for log in self.logs:
            log.close()


class LossAverage:
    """Darknet's ``avg_loss``: the first loss (or the first after a NaN average), then
    ``0.9 * avg + 0.1 * loss`` each iteration."""

    def __init__(self):
        self.value = -1.0

    def add(self, loss: float) -> float:
        if self.value < 0 or self.value != self.value:
            self.value = loss
        self.value = self.value * 0.9 + loss * 0.1
        return self.value


def iteration_line(iteration: int, loss: float, avg_loss: float, rate: float, seconds: float,
                   images: int, hours_left: float) -> str:
    """Darknet's line after each iteration (``train_detector``), with a leading newline."""
    return (f"\n {iteration}: {loss:f}, {avg_loss:f} avg loss, {rate:f} rate, {seconds:f} "
            f"seconds, {images} images, {hours_left:f} hours left")
