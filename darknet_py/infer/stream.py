"""Video and frame streams: ``Detector.stream(source)`` and the decoding thread behind it.

>>> for frame in det.stream("traffic.mp4"):          # or a camera index, or any iterator
...     print(frame.frame_id, [d.name for d in frame.detections])

:class:`FrameReader` reads the frames of a source: an OpenCV ``VideoCapture`` of a video file or
camera index, or any iterable of frames (BGR ``uint8`` arrays as OpenCV gives them,
``(C, H, W)`` float tensors, or image paths). :func:`stream` sends them through the detector's
:class:`~darknet_py.infer.pipeline.Pipeline` (:meth:`~darknet_py.infer.pipeline.Pipeline.process`)
``batch_size`` frames per forward pass, in order, exactly as ``detector demo`` does: the
pipeline's reader thread reads and prepares the next frames (a bounded queue: a slow consumer
holds at most about ``queue_size`` frames ahead in memory) while the network runs and the
calling thread handles the previous ones. Every frame gets what ``detector.detect_frames([frame])``
gives it (Darknet's ``demo`` rule for video frames, :func:`~darknet_py.imaging.image.prepare_frame`,
then the same decoding and NMS; tiling too when the detector tiles). An image path or a float
tensor in an iterable is a still image and gets what ``detector(image)`` gives it.

A batch is filled before it runs (deterministic results); with a live camera and ``batch_size``
above 1 that delays each result by up to ``batch_size - 1`` frames.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Tuple, Union

import cv2
import numpy as np
import torch

from ..errors import DataError, UsageError
from ..files import PathLike
from ..imaging.image_header import check_pixels
from ..structures.detections import DetectionSet, ImageDetections
from .prefetch import Prefetcher
from .results import to_detections

__all__ = ["FrameReader", "FrameResult", "frame_reader", "stream"]


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
        try:
            check_pixels(w, h, where)
        except DataError as e:
            cap.release()
            raise DataError(e.message.replace("cannot load image: it is",
                                              "cannot read the video: its frames are"),
                            file=where) from None
    return cap


class FrameReader:
    """The frames of ``source`` (a video file, a camera index or an iterable of frames).

    Iterate it to get ``(frame_id, frame, image)``, ``image`` being what ``load(frame)`` makes
    of it, read and loaded on a background thread up to ``queue_size`` frames ahead
    (:class:`~darknet_py.infer.prefetch.Prefetcher`); :func:`stream` instead reads
    :meth:`frames` on the pipeline's own reader thread. :func:`frame_reader` gives the
    pipeline's :meth:`~darknet_py.infer.pipeline.Pipeline.frame_source` as ``load``; ``fps`` is
    the video's frame rate (25 when unknown or for iterators)."""

    def __init__(self, source, load, queue_size: int = 8):
        if queue_size < 1:
            raise UsageError(f"queue_size must be >= 1, got {queue_size}")
        self.load = load
        self.queue_size = int(queue_size)
        self.fps = 25.0
        self._cap = None
        self._cap_lock = threading.Lock()       # a capture is released only between reads
        if isinstance(source, (str, os.PathLike, int)) and not isinstance(source, bool):
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
        self._used = False
        self._prefetch = None

    def _read_capture(self) -> Iterator[np.ndarray]:
        try:
            while True:
                with self._cap_lock:
                    if self._cap is None:
                        return
                    ok, frame = self._cap.read()
                if not ok:
                    return
                yield frame
        finally:
            self._release()

    def frames(self) -> Iterator[Tuple[int, Any]]:
        """``(frame_id, frame)`` from 1, read in the calling thread (once: a FrameReader is a
        single pass over its source); the capture is released at the end or when the
        generator is closed."""
        if self._used:
            raise UsageError("a FrameReader can be iterated once")
        self._used = True
        return self._numbered()

    def _numbered(self) -> Iterator[Tuple[int, Any]]:
        try:
            yield from enumerate(self._frames, 1)
        finally:
            close = getattr(self._frames, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[tuple]:
        load = self.load
        self._prefetch = Prefetcher(self.frames(), lambda kf: (kf[0], kf[1], load(kf[1])),
                                    depth=self.queue_size, name="darknet-py-frames")
        try:
            yield from self._prefetch
        finally:
            self.close()

    def _release(self) -> None:
        # not while another thread is inside read(); that thread releases it when it returns
        if self._cap_lock.acquire(timeout=1.0):
            try:
                if self._cap is not None:
                    self._cap.release()
                    self._cap = None
            finally:
                self._cap_lock.release()

    def close(self) -> None:
        """Stop reading and release the capture."""
        if self._prefetch is not None:
            self._prefetch.close()
        self._release()


def frame_reader(detector, source, queue_size: int = 8) -> FrameReader:
    """A :class:`FrameReader` of ``source`` whose items are the sources ``detector``'s pipeline
    runs: :meth:`~darknet_py.infer.pipeline.Pipeline.frame_source` (a uint8 frame becomes a
    :class:`~darknet_py.imaging.image.VideoFrame`)."""
    pipeline = detector.pipeline
    return FrameReader(source, lambda f: pipeline.frame_source(f)[1], queue_size=queue_size)


def stream(detector, source, queue_size: int = 8) -> Iterator[FrameResult]:
    """Per-frame results of ``detector`` on ``source`` (see the module text; a
    :class:`FrameReader` is used as it is: its frames and its ``load``); frames go through the
    network ``detector.batch_size`` at a time."""
    pipeline = detector.pipeline
    reader = source if isinstance(source, FrameReader) else \
        frame_reader(detector, source, queue_size=queue_size)
    results = pipeline.process(_loaded_frames(reader), keep_images=False, frames=True,
                               ahead=read_ahead(pipeline, reader.queue_size))
    try:
        for o in results:
            frame_id, frame = o.tag
            yield FrameResult(frame_id, frame,
                              to_detections(f"frame {frame_id}", o.detections, detector.names,
                                            detector.thresh))
    finally:
        results.close()
        reader.close()


def read_ahead(pipeline, queue_size: int) -> int:
    """Batches a stream reads ahead: about ``queue_size`` frames."""
    return max(1, queue_size // pipeline.batch_size)


def _loaded_frames(reader: FrameReader) -> Iterator[Tuple[Tuple[int, Any], Any]]:
    """``((frame_id, frame), reader.load(frame))``: run by the pipeline's reader thread."""
    frames = reader.frames()
    try:
        for frame_id, frame in frames:
            yield (frame_id, frame), reader.load(frame)
    finally:
        frames.close()
