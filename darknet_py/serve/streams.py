"""What ``detector demo`` and ``detector train`` do with ``-mjpeg_port`` / ``-json_port``.

:class:`DemoStreams`: each drawn frame to the MJPEG stream, each frame's ``-out``-style JSON
object to the JSON stream, with Darknet's `` MJPEG-stream sent.`` / `` JSON-stream sent.`` lines.
:class:`TrainStreams`: ``chart.png`` each time it is redrawn (and every image of a ``plots/``
folder in the backup folder, when it exists and changes) to the MJPEG stream, and the latest loss,
learning rate, mAP and time left to ``/status`` (shown as text on the page at ``/``).
"""
from __future__ import annotations

import os
import sys
from typing import Dict, Optional, Sequence, TextIO

from ..errors import UsageError
from .server import DEFAULT_HOST, JsonServer, MjpegServer, check_port

#: at most this many images of the plots folder are streamed
MAX_PLOTS = 16
_IMAGE_EXT = (".png", ".jpg", ".jpeg")


class DemoStreams:
    """The demo's servers (either may be off); use as a context manager."""

    def __init__(self, mjpeg_port: Optional[int], json_port: Optional[int],
                 host: Optional[str] = None, title: str = "darknet-py detector demo",
                 out: Optional[TextIO] = None):
        mjpeg_port = check_port(mjpeg_port, "mjpeg_port")
        json_port = check_port(json_port, "json_port")
        if mjpeg_port and mjpeg_port == json_port:
            raise UsageError(f"-mjpeg_port and -json_port must differ (both {mjpeg_port})")
        self.out = out or sys.stdout
        host = host or DEFAULT_HOST
        self.mjpeg = MjpegServer(mjpeg_port, host, title=title) if mjpeg_port else None
        self.json = JsonServer(json_port, host) if json_port else None
        try:
            for s in (self.mjpeg, self.json):
                if s is not None:
                    s.start()
        except BaseException:
            self.close()
            raise

    @property
    def wants_frames(self) -> bool:
        return self.mjpeg is not None

    def detections(self, json_object: str) -> None:
        if self.json is not None:
            self.json.publish(json_object)
            print(" JSON-stream sent. ", file=self.out)

    def frame(self, bgr, **status) -> None:
        if self.mjpeg is not None:
            self.mjpeg.publish_image(bgr)
            if status:
                self.mjpeg.set_status(**status)
            print(" MJPEG-stream sent. ", file=self.out)

    def close(self) -> None:
        for s in (self.mjpeg, self.json):
            if s is not None:
                s.close()

    def __enter__(self) -> "DemoStreams":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TrainStreams:
    """Training's MJPEG server: the chart, the plots folder's images, and the status text."""

    def __init__(self, port: int, host: Optional[str] = None, plots_dir: Optional[str] = None,
                 title: str = "darknet-py detector train", out: Optional[TextIO] = None):
        self.out = out or sys.stdout
        self.plots_dir = plots_dir
        self._plot_mtimes: Dict[str, float] = {}
        self.server = MjpegServer(check_port(port, "mjpeg_port"), host or DEFAULT_HOST,
                                  title=title).start()

    @classmethod
    def open(cls, port: Optional[int], host: Optional[str], backup: str,
             out: Optional[TextIO] = None, main_process: bool = True) -> Optional["TrainStreams"]:
        """The server for ``-mjpeg_port`` (plots from ``<backup>/plots``), or None when off or
        not the main (rank 0) process."""
        if not port or not main_process:
            return None
        return cls(port, host, os.path.join(backup, "plots"), out=out)

    def update(self, chart_paths: Sequence[str], iteration: int, max_batches: int, loss: float,
               avg_loss: float, rate: float, last_map: float, best_map: float,
               hours_left: float) -> None:
        """Called after ``chart.png`` was (re)written: stream it, changed plots, and the numbers."""
        import cv2
        self.server.set_status(**train_status(iteration, max_batches, loss, avg_loss, rate,
                                              last_map, best_map, hours_left))
        img = cv2.imread(chart_paths[0]) if chart_paths else None
        if img is not None:
            self.server.publish_image(img)
            print(" MJPEG-stream sent. ", file=self.out)
        self._publish_plots()

    def status(self, iteration: int, max_batches: int, loss: float, avg_loss: float, rate: float,
               last_map: float, best_map: float, hours_left: float) -> None:
        """Only the numbers of ``/status`` (each iteration, before a possibly long mAP)."""
        self.server.set_status(**train_status(iteration, max_batches, loss, avg_loss, rate,
                                              last_map, best_map, hours_left))

    def _publish_plots(self) -> None:
        import cv2
        if not self.plots_dir or not os.path.isdir(self.plots_dir):
            return
        names = sorted(n for n in os.listdir(self.plots_dir)
                       if n.lower().endswith(_IMAGE_EXT))[:MAX_PLOTS]
        for n in names:
            path = os.path.join(self.plots_dir, n)
            try:
                mtime = os.stat(path).st_mtime
            except OSError:
                continue
            if self._plot_mtimes.get(n) == mtime:
                continue
            img = cv2.imread(path)
            if img is not None:
                self._plot_mtimes[n] = mtime
                self.server.publish_image(img, os.path.splitext(n)[0])

    def close(self) -> None:
        self.server.close()


def train_status(iteration: int, max_batches: int, loss: float, avg_loss: float, rate: float,
                 last_map: float, best_map: float, hours_left: float) -> Dict[str, object]:
    """The training numbers shown on the page (mAP in percent, '-' before the first one); the
    losses and the rate to 6 significant digits (a float32 rate during burn-in printed as
    8.100000569366203e-14)."""
    return {
        "iteration": f"{iteration} / {max_batches}",
        "loss": float(f"{float(loss):.6g}"),
        "avg loss": float(f"{float(avg_loss):.6g}"),
        "learning rate": float(f"{float(rate):.6g}"),
        "mAP": f"{last_map * 100:.2f} %" if last_map >= 0 else "-",
        "best mAP": f"{best_map * 100:.2f} %" if best_map >= 0 else "-",
        "time left": f"{hours_left:.2f} hours" if hours_left >= 0 else "-",
    }
