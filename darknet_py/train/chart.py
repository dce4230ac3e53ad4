"""The training chart Darknet draws (``draw_train_chart`` / ``draw_train_loss``), headless.

A 1000x1000 white canvas with a grid, the average loss as blue dots (y axis 0..``max_chart_loss``),
mAP points joined by a red line with their percentage, and the iteration axis up to
``max_batches``. Darknet accumulates drawing on one image; here the chart is redrawn from the
recorded history each time it is saved, so it can also be rebuilt after a resume. Written
atomically to ``chart.png`` and ``chart_<cfg>.png`` like Darknet.

:class:`TrainDisplay` is what a watcher of the run sees: the chart files and, with
``-mjpeg_port``, the page of :class:`~darknet_py.serve.streams.TrainStreams` (the chart, the
plots and the numbers of ``/status``).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import cv2
import numpy as np

from ..files import atomic_write_bytes

IMG_SIZE = 1000
OFFSET = 60
LINES = 100
FONT = cv2.FONT_HERSHEY_COMPLEX_SMALL


@dataclass
class TrainChart:
    max_batches: int
    max_loss: float = 20.0
    losses: List[Tuple[int, float]] = field(default_factory=list)
    maps: List[Tuple[int, float]] = field(default_factory=list)
    accuracy_name: str = "mAP%"
    _write_failed: bool = field(default=False, repr=False)

    def add_loss(self, iteration: int, avg_loss: float) -> None:
        self.losses.append((iteration, float(avg_loss)))

    def add_map(self, iteration: int, value: float) -> None:
        self.maps.append((iteration, float(value)))

    def y_max(self) -> float:
        """Top of the loss axis: ``max_chart_loss``, or a round value above the largest loss
        when a loss exceeds it (Darknet clips it to the top edge)."""
        finite = [v for _, v in self.losses if np.isfinite(v)]
        top = max(finite, default=0.0)
        if top <= self.max_loss:
            return self.max_loss
        step = 10 ** np.floor(np.log10(top))
        for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):     # round tenths stay readable
            if m * step >= top * 1.05:
                return float(m * step)
        return float(10 * step)

    def _x(self, it: int) -> int:
        draw = IMG_SIZE - OFFSET
        return int(OFFSET + draw * it / max(1, self.max_batches))

    def render(self, hours_left: Optional[float] = None) -> np.ndarray:
        draw = IMG_SIZE - OFFSET
        img = np.full((IMG_SIZE, IMG_SIZE, 3), 255, np.uint8)
        y_max = self.y_max()
        grey, dark, black = (224, 224, 224), (128, 128, 128), (0, 0, 0)
        for i in range(1, LINES + 1):            # horizontal grid, loss labels
            y = int(i * draw / LINES)
            cv2.line(img, (OFFSET, y), (IMG_SIZE, y), grey, 1)
            if i % 10 == 0:
                cv2.putText(img, _axis_label(y_max * (LINES - i) / LINES), (30, y + 3), FONT,
                            0.7, black, 1, cv2.LINE_AA)
                cv2.line(img, (OFFSET, y), (IMG_SIZE, y), dark, 1)
        for i in range(0, LINES + 1):            # vertical grid, iteration labels
            x = int(OFFSET + i * draw / LINES)
            cv2.line(img, (x, draw), (x, 0), grey, 1)
            if i % 10 == 0:
                cv2.putText(img, str(self.max_batches * i // LINES), (x - 20, draw + 15), FONT,
                            0.7, black, 1, cv2.LINE_AA)
                cv2.line(img, (x, draw), (x, 0), dark, 1)
        cv2.putText(img, "Loss", (10, 60), FONT, 0.7, (255, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, "Iteration number", (draw // 2, IMG_SIZE - 10), FONT, 0.7, black, 1,
                    cv2.LINE_AA)
        cv2.putText(img, f"in cfg max_batches={self.max_batches}", (draw - 195, IMG_SIZE - 10),
                    FONT, 0.7, black, 1, cv2.LINE_AA)
        for it, loss in self.losses:
            y = int(draw * (1 - loss / y_max))
            cv2.circle(img, (self._x(it), max(y, 1)), 1, (255, 0, 0), -1)
        if self.maps:
            cv2.putText(img, self.accuracy_name, (10, 12), FONT, 0.7, (0, 0, 255), 1, cv2.LINE_AA)
            pts = [(self._x(it), int(draw * (1 - v))) for it, v in self.maps]
            for a, b in zip(pts, pts[1:]):
                cv2.line(img, a, b, (0, 0, 255), 1)
            for (it, v), p in zip(self.maps, pts):
                cv2.putText(img, f"{v * 100:2.0f}%", (p[0] - 30, max(p[1] - 10, 12)), FONT, 0.7,
                            (0, 0, 200), 1, cv2.LINE_AA)
            last = self.maps[-1][1]
            cv2.putText(img, f"{last * 100:2.1f}% ", (10, 28), FONT, 0.7, (0, 0, 200), 1,
                        cv2.LINE_AA)
        if self.losses:
            it, loss = self.losses[-1]
            txt = f"current avg loss = {loss:2.4f}    iteration = {it}"
            if hours_left is not None:
                txt += f"    approx. time left = {hours_left:2.2f} hours"
            cv2.rectangle(img, (OFFSET, draw + 18), (IMG_SIZE, draw + 35), (255, 255, 255), -1)
            cv2.putText(img, txt, (OFFSET + 5, draw + 32), FONT, 0.7, black, 1, cv2.LINE_AA)
        return img

    def save(self, folder: str, base: str, hours_left: Optional[float] = None) -> List[str]:
        ok, buf = cv2.imencode(".png", self.render(hours_left))
        paths = []
        if ok:
            for name in ("chart.png", f"chart_{base}.png"):
                p = os.path.join(folder, name)
                try:
                    atomic_write_bytes(p, buf.tobytes())
                except OSError as e:
                    # the chart is a picture: a full disk or a read-only folder must not stop
                    # training (the next checkpoint save reports a real problem)
                    if not self._write_failed:
                        warnings.warn(f"{p}: cannot write the chart ({e.strerror or e}); "
                                      "training goes on", stacklevel=2)
                    self._write_failed = True
                    continue
                paths.append(p)
        return paths


class TrainDisplay:
    """The chart files (in ``folder``; none with ``draw=False``) and the ``-mjpeg_port``
    streams (``streams``, None without it)."""

    def __init__(self, chart: TrainChart, folder: str, base: str, draw: bool = True,
                 streams=None):
        self.chart = chart
        self.folder = folder
        self.base = base
        self.draw = draw
        self.streams = streams

    def show(self, iteration: int, loss: float, avg_loss: float, rate: float, last_map: float,
             best_map: float, hours_left: float, chart: bool = True) -> None:
        """Redraw the chart and send it to the streams with the numbers (``chart=False``: only
        the numbers of ``/status``)."""
        max_batches = self.chart.max_batches
        if chart and self.draw:
            paths = self.chart.save(self.folder, self.base, hours_left)
            if self.streams is not None:
                self.streams.update(paths, iteration, max_batches, loss, avg_loss, rate,
                                    last_map, best_map, hours_left)
        elif self.streams is not None:
            self.streams.status(iteration, max_batches, loss, avg_loss, rate, last_map,
                                best_map, hours_left)

    def close(self) -> None:
        if self.streams is not None:
            self.streams.close()


def _axis_label(value: float) -> str:
    return f"{value:2.1f}" if value < 1000 else f"{value:.0f}"
