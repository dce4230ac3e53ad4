"""Video and frame streams: ``Detector.stream(source)`` and the decoding thread behind it.

>>> for frame in det.stream("traffic.mp4"):          # or a camera index, or any iterator
...     print(frame.frame_id, [d.name for d in frame.detections])

:class:`FrameReader` decodes frames on a background thread into a bounded queue (so a slow
consumer holds at most ``queue_size`` decoded frames in memory): an OpenCV ``VideoCapture`` of a
video file or camera index, or any iterable of frames (BGR ``uint8`` arrays as OpenCV gives
them, ``(C, H, W)`` float tensors, or image paths). :func:`stream` then sends the frames through
the detector's :class:`~darknet_py.infer.pipeline.Pipeline` ``batch_size`` frames per forward
pass, in order, exactly as ``detector demo`` does: every frame gets what
``detector.detect_frames([frame])`` gives it (Darknet's ``demo`` rule for video frames,
:func:`~darknet_py.imaging.image.prepare_frame`, then the same decoding and NMS; tiling too when the
detector tiles). An image path or a float tensor in an iterable is a still image and gets what
``detector(image)`` gives it.

A batch is filled before it runs (deterministic results); with a live camera and ``batch_size``
above 1 that delays each result by up to ``batch_size - 1`` frames.
"""
from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional, Union

import numpy as np
import torch

from ..errors import DataError, UsageError
from ..files import PathLike
from ..structures.detections import DetectionSet, ImageDetections

__all__ = ["FrameReader", "FrameResult", "frame_reader", "stream"]

_END = object()


@dataclass
class FrameResult:
    """One frame of a stream: its number (from 1, Darknet's ``frame_id``), the frame as the source
    gave it, and its detections (``detections.raw`` is the NMS'ed :class:`DetectionSet`)."""

    frame_id: int
    frame: Any
    detections: ImageDetections

    @property
    def raw(self) -> DetectionSet:
        return self.detections.raw  # type: ignore[return-value]


def open_capture(source: Union[PathLike, int]):
    """An opened ``cv2.VideoCapture`` of a video file or camera index (DataError otherwise)."""
    import cv2
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise DataError("video file not found", file=path)
        cap = cv2.VideoCapture(path)
        where = path
    else:
        cap = cv2.VideoCapture(int(source))
        where = f"camera {int(source)}"
    if not cap.isOpened():
        raise DataError("cannot open the video stream", file=where)
    # a container can announce frames of any size: hold them to the image pixel cap before the
    # first frame is decoded (each frame is decoded, converted and drawn at full size)
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    if w > 0 and h > 0:
        from ..imaging.image_header import check_pixels
        try:
            check_pixels(w, h, where)
        except DataError as e:
            cap.release()
            raise DataError(e.message.replace("cannot load image: it is",
                                              "cannot read the video: its frames are"),
                            file=where) from None
    return cap


class FrameReader:
    """Frames of ``source`` decoded on a background thread: iterate to get
    ``(frame_id, frame, image)`` with ``image`` what ``load(frame)`` makes of it.

    ``load`` is run on the reader thread (:func:`frame_reader` gives the pipeline's
    :meth:`~darknet_py.infer.pipeline.Pipeline.frame_source`); ``fps`` is the video's frame rate
    (25 when unknown or for iterators)."""

    def __init__(self, source, load, queue_size: int = 8):
        if queue_size < 1:
            raise UsageError(f"queue_size must be >= 1, got {queue_size}")
        self.load = load
        self.fps = 25.0
        self._cap = None
        if isinstance(source, (str, os.PathLike, int)) and not isinstance(source, bool):
            import cv2
            self._cap = open_capture(source)
            self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 25.0)
            self._frames: Iterable[Any] = self._read_capture()
        elif isinstance(source, (np.ndarray, torch.Tensor)):
            raise UsageError("stream() takes a video file, a camera index or an iterable of "
                             "frames, not a single image (use detector(image))")
        else:
            try:
                self._frames = iter(source)
            except TypeError:
                raise UsageError(f"cannot stream from {type(source).__name__} (a video file, a "
                                 "camera index or an iterable of frames)") from None
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _read_capture(self) -> Iterator[np.ndarray]:
        while True:
            ok, frame = self._cap.read()
            if not ok:
                return
            yield frame

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            for k, frame in enumerate(self._frames, 1):
                if self._stop.is_set() or not self._put((k, frame, self.load(frame))):
                    return
            self._put(_END)
        except BaseException as e:  # handed to the consumer, raised there
            self._put(e)

    def __iter__(self) -> Iterator[tuple]:
        if self._thread is not None:
            raise UsageError("a FrameReader can be iterated once")
        self._thread = threading.Thread(target=self._work, name="darknet-py-frames", daemon=True)
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def frame_reader(detector, source, queue_size: int = 8) -> FrameReader:
    """A :class:`FrameReader` of ``source`` whose items are the sources ``detector``'s pipeline
    runs: :meth:`~darknet_py.infer.pipeline.Pipeline.frame_source` (a uint8 frame becomes a
    :class:`~darknet_py.imaging.image.VideoFrame`)."""
    pipeline = detector.pipeline
    return FrameReader(source, lambda f: pipeline.frame_source(f)[1], queue_size=queue_size)


def stream(detector, source, queue_size: int = 8) -> Iterator[FrameResult]:
    """Per-frame results of ``detector`` on ``source`` (see the module text; a
    :class:`FrameReader` is used as it is); frames go through the network
    ``detector.batch_size`` at a time."""
    from .results import to_detections
    pipeline = detector.pipeline
    reader = source if isinstance(source, FrameReader) else \
        frame_reader(detector, source, queue_size=queue_size)
    size = pipeline.batch_size

    def run(batch):
        results = pipeline.run([image for _, _, image in batch], keep_images=False)
        for (frame_id, frame, _), (_, _, dets) in zip(batch, results):
            yield FrameResult(frame_id, frame,
                              to_detections(f"frame {frame_id}", dets, detector.names,
                                            detector.thresh))

    batch: list = []
    try:
        for item in reader:
            batch.append(item)
            if len(batch) == size:
                yield from run(batch)
                batch = []
        if batch:
            yield from run(batch)
    finally:
        reader.close()
