"""The one inference pipeline: load -> prepare -> backend -> decode -> NMS.

>>> pipe = Pipeline(make_backend("yolov4-tiny.cfg", "yolov4-tiny.weights"))
>>> (name, image, dets), = pipe.run(["dog.jpg"])      # DetectionSet after NMS
>>> dets, = pipe.detect_frames([frame])              # a BGR uint8 video frame (demo's rule)

Every user of inference goes through it: :class:`~darknet_py.infer.detector.Detector` (and
``Detector.stream``/``track``), ``detector test``/``demo``/``map``/``valid``, ``train -map``,
tiling (:class:`~darknet_py.infer.tiling.TiledPipeline` is a ``Pipeline``), the benchmark. What
differs between them is only Darknet's settings, given as arguments:

================ ====== ======= ====== ====================================================
caller           thresh hier    nms    boxes NMS runs on
================ ====== ======= ====== ====================================================
``test``/``demo`` -thresh -hier  0.45   relative (``get_network_boxes(..., relative=1)``)
``map``          0.005  -       0.45   relative
``valid``        0.001  0.5     0.6    pixels (``relative=0``; matters for DIoU-NMS kinds)
================ ====== ======= ====== ====================================================

Stages: :func:`~darknet_py.imaging.image.load_image` (OpenCV decode, Darknet's float RGB),
``resize_image`` or ``letterbox_image`` (the model's ``letter_box`` unless overridden), the
backend, :mod:`~darknet_py.model.decode` (thresholding and ``correct_yolo_boxes``), then
``do_nms_sort``/``diounms_sort`` with the last head's ``nms_kind``/``beta_nms``
(:func:`~darknet_py.infer.nms.apply_nms`). Lists of images are decoded ahead on a thread pool
(OpenCV releases the GIL) while the backend runs the previous batch.

Two rules make the network input, chosen by what the source is, never by the caller:

* still images (files, and arrays or tensors given as images): ``detector test``'s
  ``load_image`` + ``resize_image``/``letterbox_image``;
* video frames (:class:`~darknet_py.imaging.image.VideoFrame`: what :meth:`frame_source` makes of a
  BGR uint8 frame; ``detector demo``, :meth:`detect_frames`, ``Detector.stream``): ``demo``'s
  ``cv::resize`` rule, :func:`~darknet_py.imaging.image.prepare_frame`. A tile of a frame is a
  frame, so tiled video gets the same rule.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import UsageError
from ..files import PathLike
from ..structures.detections import DetectionSet, scale_to_pixels
from ..structures.heads import nms_params
from .backends.base import Backend
from ..model.decode import decoded_candidates, get_network_boxes
from ..imaging.image import (DecodedImage, VideoFrame, as_image_tensor, image_from_array, image_size,
                    load_decoded, load_image, prepare_input)
from .nms import apply_nms

__all__ = ["Pipeline", "ImageInput", "Result"]

ImageInput = Union[PathLike, torch.Tensor, np.ndarray]
#: (name, original image (C, H, W) float RGB, or None when not kept, detections after NMS)
Result = Tuple[str, Optional[torch.Tensor], DetectionSet]
#: a loaded image before the network input is made: a float tensor, or a decoded file's bytes
Source = Union[torch.Tensor, DecodedImage]


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


class Pipeline:
    """Darknet's detection steps around a :class:`~darknet_py.infer.backends.base.Backend`.

    Args:
        backend: what runs the network.
        thresh: candidates need objectness ``> thresh``; class probabilities ``<= thresh`` are 0.
        hier_thresh: Darknet's ``-hier``: no effect, as in Darknet (see
            :func:`~darknet_py.model.decode.get_network_boxes`).
        nms: NMS threshold; 0 switches NMS off (Darknet's ``if (nms)``).
        letter_box: None = the model's ``[net] letter_box``; True/False force it.
        batch_size: images per backend call.
        pixel_boxes: scale boxes to pixels of the original image *before* NMS (``detector valid``).
        loader_threads: image-decoding threads for lists (0 = decode in the calling thread).
    """

    def __init__(self, backend: Backend, *, thresh: float = 0.25, hier_thresh: float = 0.5,
                 nms: float = 0.45, letter_box: Optional[bool] = None, batch_size: int = 8,
                 pixel_boxes: bool = False, loader_threads: int = 0):
        self.backend = backend
        self.thresh = float(thresh)
        self.hier_thresh = float(hier_thresh)
        self.nms = float(nms)
        self.letter_box = backend.letter_box if letter_box is None else bool(letter_box)
        self.batch_size = max(1, int(batch_size))
        self.pixel_boxes = bool(pixel_boxes)
        self.loader_threads = max(0, int(loader_threads))
        self.nms_kind, self.beta_nms = nms_params(backend.heads)
        #: milliseconds of the backend call per image of the last batch (``Predicted in``)
        self.last_forward_ms: List[float] = []

    @property
    def width(self) -> int:
        return self.backend.width

    @property
    def height(self) -> int:
        return self.backend.height

    # ------------------------------------------------------------------ stages
    def load(self, image: ImageInput) -> Tuple[str, torch.Tensor]:
        """(name, Darknet image ``(C, H, W)`` float RGB in [0, 1]) from a path, a BGR/grey numpy
        image as OpenCV gives it, or a ``(C, H, W)`` tensor."""
        if _is_path(image):
            return os.fspath(image), load_image(image, self.backend.channels)  # type: ignore[arg-type]
        if isinstance(image, np.ndarray):
            return "<array>", image_from_array(image)
        if isinstance(image, torch.Tensor):
            if image.dim() != 3:
                raise UsageError(f"an image tensor must be (C, H, W), got {tuple(image.shape)}")
            return "<tensor>", image.detach().to("cpu", torch.float32)
        raise UsageError(f"cannot use {type(image).__name__} as an image (path, tensor or array)")

    def source(self, image: ImageInput) -> Tuple[str, Source]:
        """:meth:`load` without converting a decoded file to float: an image file or a uint8
        array stays a :class:`~darknet_py.imaging.image.DecodedImage` (1 byte per value), which
        :meth:`prepare` resizes directly (the float image of a large photo is 4 times its
        bytes, and only the network-sized input is needed)."""
        if _is_path(image):
            return os.fspath(image), load_decoded(image, self.backend.channels)  # type: ignore[arg-type]
        if isinstance(image, VideoFrame):
            return "<frame>", image
        if isinstance(image, DecodedImage):
            return "<array>", image
        if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim in (2, 3):
            return "<array>", DecodedImage(np.ascontiguousarray(image))
        return self.load(image)

    def frame_source(self, frame: ImageInput) -> Tuple[str, Source]:
        """A video frame as a source: a uint8 array (BGR as ``VideoCapture`` reads it; grey and
        BGRA are made BGR) becomes a :class:`~darknet_py.imaging.image.VideoFrame`, prepared by
        the demo rule. Anything else an iterable of frames may hold (an image path, a float
        tensor or array) is a still image (:meth:`source`)."""
        if isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim in (2, 3):
            try:
                return "<frame>", VideoFrame(frame)
            except ValueError as e:
                raise UsageError(str(e)) from None
        return self.source(frame)

    def prepare(self, originals: Sequence[Source]) -> torch.Tensor:
        """The network input ``(B, C, h, w)`` for loaded images and frames (each by its rule:
        :func:`~darknet_py.imaging.image.prepare_input`)."""
        if not originals:
            return torch.zeros(0, self.backend.channels, self.height, self.width)
        return torch.stack([prepare_input(im, self.width, self.height, self.letter_box)
                            for im in originals])

    def forward(self, x: torch.Tensor):
        t0 = time.perf_counter()
        outs = self.backend(x)
        ms = (time.perf_counter() - t0) * 1000.0 / max(1, x.shape[0])
        self.last_forward_ms = [ms] * int(x.shape[0])
        return outs

    def decode(self, outputs, image_sizes: Sequence[Tuple[int, int]]) -> List[DetectionSet]:
        """Candidates (before NMS) of each image, boxes relative to the original image."""
        b = self.backend
        if b.decoded:
            return decoded_candidates(b.heads, outputs, b.width, b.height, list(image_sizes),
                                      self.thresh, self.letter_box)
        return get_network_boxes(list(zip(b.heads, outputs)), b.width, b.height,
                                 list(image_sizes), self.thresh, self.hier_thresh,
                                 self.letter_box)

    def suppress(self, sets: Sequence[DetectionSet]) -> List[DetectionSet]:
        """Darknet's NMS on each image (after scaling to pixels when ``pixel_boxes``)."""
        if self.pixel_boxes:
            sets = [scale_to_pixels(s) for s in sets]
        return [apply_nms(s, self.nms, self.nms_kind, self.beta_nms) for s in sets]

    # ------------------------------------------------------------------ whole runs
    @torch.no_grad()
    def detect_batch(self, x: torch.Tensor, image_sizes: Sequence[Tuple[int, int]]
                     ) -> List[DetectionSet]:
        """Prepared inputs ``(B, C, h, w)`` -> detections after NMS, boxes corrected to the
        original ``(width, height)`` of each image."""
        return self.suppress(self.decode(self.forward(x), image_sizes))

    def _run_loaded(self, loaded: Sequence[Tuple[str, Source]],
                    keep_images: bool = True) -> List[Result]:
        originals = [im for _, im in loaded]
        sets = self.detect_batch(self.prepare(originals), [image_size(im) for im in originals])
        return _results(loaded, sets, keep_images)

    def detect_frames(self, frames: Sequence[ImageInput]) -> List[DetectionSet]:
        """Video frames (BGR uint8 arrays as ``VideoCapture`` reads them) -> detections after
        NMS, boxes relative to each frame, all frames in one backend call: what ``detector demo``
        runs per batch. Each frame's input is made by the demo rule (:meth:`frame_source`)."""
        loaded = [self.frame_source(f) for f in frames]
        return [dets for _, _, dets in self._run_loaded(loaded, keep_images=False)]

    def run(self, images: Sequence[ImageInput], keep_images: bool = True) -> List[Result]:
        """Every image through the pipeline, :attr:`batch_size` at a time. ``keep_images``
        False gives ``None`` instead of each original image (never converted to float)."""
        return list(self.iterate(images, keep_images))

    def iterate(self, images: Iterable[ImageInput], keep_images: bool = True) -> Iterator[Result]:
        """:meth:`run` as a generator: results come out batch by batch, in input order, while
        the next batch's images are decoded on :attr:`loader_threads` threads."""
        batches = _chunks(iter(images), self.batch_size)
        if not self.loader_threads:
            for chunk in batches:
                yield from self._run_loaded([self.source(im) for im in chunk], keep_images)
            return
        with ThreadPoolExecutor(max_workers=self.loader_threads) as pool:
            pending = None
            for chunk in batches:
                loading = [pool.submit(self.source, im) for im in chunk]
                if pending is not None:
                    yield from self._run_loaded([f.result() for f in pending], keep_images)
                pending = loading
            if pending is not None:
                yield from self._run_loaded([f.result() for f in pending], keep_images)

    def __repr__(self) -> str:
        return (f"Pipeline({self.backend.describe()}, thresh={self.thresh}, nms={self.nms}, "
                f"letter_box={self.letter_box})")


def _results(loaded: Sequence[Tuple[str, Source]], sets: Sequence[DetectionSet],
             keep_images: bool) -> List[Result]:
    """(name, float image or None, detections) per image: the whole image becomes float only
    when the caller keeps it (to draw on it), after its network input was made."""
    return [(name, as_image_tensor(im) if keep_images else None, dets)
            for (name, im), dets in zip(loaded, sets)]


def _chunks(items: Iterator[Any], size: int) -> Iterator[List[Any]]:
    chunk: List[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
