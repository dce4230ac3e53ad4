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
(:func:`~darknet_py.infer.nms.apply_nms`).

Lists and streams overlap the stages (:meth:`Pipeline.process`, under :meth:`iterate`/:meth:`run`
and every command that runs a list or a video): ``loader_threads`` threads read and prepare the
next batches (decode, resize: OpenCV and numpy release the GIL) at most
:data:`READ_AHEAD_BATCHES` batches ahead, one thread runs the backend on the batch after the one
the calling thread decodes, suppresses and hands out (and that the caller prints or draws), and
bounded queues between them keep memory bounded whatever the list's length
(:mod:`~darknet_py.infer.prefetch`). Results come out in input order and are the ones the
sequential path (``loader_threads=0``, or a list of one batch) gives, bit for bit: each batch
goes through the same functions, only on other threads. The network keeps the threads its
backend runs with (``-threads``, or the backend's own choice); :meth:`Pipeline.describe_threads`
says who runs what.

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
from dataclasses import dataclass
from typing import (Any, Callable, Iterable, Iterator, List, Optional, Sequence, Sized, Tuple,
                    Union)

import numpy as np
import torch

from ..devices import usable_cpus
from ..errors import DataError, UsageError
from ..files import PathLike
from ..structures.detections import DetectionSet, scale_to_pixels
from ..structures.heads import nms_params
from .backends.base import Backend
from ..model.decode import decoded_candidates, get_network_boxes
from ..imaging.image import (DecodedImage, VideoFrame, as_image_tensor, image_from_array, image_size,
                    load_decoded, load_image, prepare_input)
from .nms import apply_nms
from .prefetch import Prefetcher

__all__ = ["Pipeline", "ImageInput", "Result", "Outcome", "READ_AHEAD_BATCHES",
           "ONE_THREAD_NETWORK_RATIO", "default_loader_threads"]

ImageInput = Union[PathLike, torch.Tensor, np.ndarray]
#: (name, original image (C, H, W) float RGB, or None when not kept, detections after NMS)
Result = Tuple[str, Optional[torch.Tensor], DetectionSet]
#: a loaded image before the network input is made: a float tensor, or a decoded file's bytes
Source = Union[torch.Tensor, DecodedImage]

#: batches the reader threads prepare ahead of the network (the network stage holds as many
#: outputs for the calling thread): with 2 the network never waits for a batch as long as
#: reading one is faster than running it, and memory is a few batches whatever the list's length
READ_AHEAD_BATCHES = 2
#: most reader threads a list gets by default (Darknet's ``validate_detector`` loads with 4)
MAX_DEFAULT_LOADERS = 4
#: an overlapped list runs the network on one thread when the readers leave it one CPU and its
#: one-thread time per image is at most this many times the reading time per image
ONE_THREAD_NETWORK_RATIO = 2.0


def _nothing() -> None:
    pass


def default_loader_threads() -> int:
    """Reader threads of a pipeline by default: one per usable CPU beyond the first, at most
    :data:`MAX_DEFAULT_LOADERS`, at least one. On 2 CPUs that is one reader: reading and
    resizing an image costs a fraction of the network (the backend keeps its own threads, and
    decoding + NMS run in the calling thread), and more readers would only compete with the
    network for the same two CPUs."""
    return max(1, min(MAX_DEFAULT_LOADERS, usable_cpus() - 1))


@dataclass
class Outcome:
    """One item of :meth:`Pipeline.process`, in input order: the caller's ``tag``, the image's
    name, the original image (when kept), the detections after NMS, and ``error`` instead of
    detections when the image could not be loaded and errors are reported per image. An item
    given without an image has neither (``name`` None): it only keeps its place in the order."""

    tag: Any
    name: Optional[str] = None
    image: Optional[torch.Tensor] = None
    detections: Optional[DetectionSet] = None
    error: Optional[DataError] = None
    #: milliseconds of the backend call per image of this item's batch (``Predicted in``)
    forward_ms: float = 0.0


@dataclass
class _Batch:
    """A batch on its way through the stages: made by the reader, run by the network thread,
    finished by the calling thread."""

    tags: List[Any]
    #: per item: (name, loaded source), the load error, or None (no image)
    loaded: List[Any]
    prepared: Any = None
    outputs: Any = None
    forward_ms: float = 0.0
    #: milliseconds the reader spent per image of this batch (load + prepare)
    read_ms: float = 0.0

    @property
    def originals(self) -> List[Source]:
        return [x[1] for x in self.loaded if isinstance(x, tuple)]


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
        loader_threads: threads that read and prepare images ahead of the network for lists and
            streams (:meth:`process`); None = :func:`default_loader_threads`; 0 runs everything
            in the calling thread, one batch after the other (the sequential path; the results
            are the same).
    """

    def __init__(self, backend: Backend, *, thresh: float = 0.25, hier_thresh: float = 0.5,
                 nms: float = 0.45, letter_box: Optional[bool] = None, batch_size: int = 8,
                 pixel_boxes: bool = False, loader_threads: Optional[int] = None):
        self.backend = backend
        self.thresh = float(thresh)
        self.hier_thresh = float(hier_thresh)
        self.nms = float(nms)
        self.letter_box = backend.letter_box if letter_box is None else bool(letter_box)
        self.batch_size = max(1, int(batch_size))
        self.pixel_boxes = bool(pixel_boxes)
        self.loader_threads = default_loader_threads() if loader_threads is None else \
            max(0, int(loader_threads))
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
        outs, ms = self._timed_forward(x)
        self.last_forward_ms = [ms] * int(x.shape[0])
        return outs

    def _timed_forward(self, x: torch.Tensor) -> Tuple[Any, float]:
        """(backend outputs, milliseconds per image); touches no state of the pipeline, so the
        network thread can run it while the calling thread finishes the previous batch."""
        t0 = time.perf_counter()
        with torch.no_grad():           # grad mode is per thread: say it on this one
            outs = self.backend(x)
        return outs, (time.perf_counter() - t0) * 1000.0 / max(1, x.shape[0])

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

    # ------------------------------------------------------------------ the stages of a batch
    # Each batch goes through these three, on the reader thread, the network thread and the
    # calling thread when overlapped, one after the other otherwise (TiledPipeline overrides the
    # three hooks with its tiles).
    def _prepare_sources(self, originals: Sequence[Source]) -> Any:
        """Reader stage: the network input(s) of a batch of loaded images."""
        return self.prepare(originals)

    def _forward_prepared(self, prepared: Any, count: int) -> Tuple[Any, float]:
        """Network stage: (outputs, milliseconds per image) of :meth:`_prepare_sources`'s
        result for ``count`` images."""
        return self._timed_forward(prepared)

    def _after_forward(self, prepared: Any) -> Any:
        """What :meth:`_finish_outputs` needs of the prepared batch (the network inputs can
        go: a batch waiting for the calling thread holds only its outputs)."""
        return None

    def _finish_outputs(self, originals: Sequence[Source], prepared: Any,
                        outputs: Any) -> List[DetectionSet]:
        """Calling thread: decoding and NMS of a batch."""
        return self.suppress(self.decode(outputs, [image_size(im) for im in originals]))

    def _load_batch(self, chunk: Sequence[Tuple[Any, Optional[ImageInput]]], frames: bool,
                    errors_per_image: bool) -> _Batch:
        load = self.frame_source if frames else self.source
        t0 = time.perf_counter()
        loaded: List[Any] = []
        for _, image in chunk:
            if image is None:
                loaded.append(None)
                continue
            try:
                loaded.append(load(image))
            except DataError as e:
                if not errors_per_image:
                    raise
                loaded.append(e)
        batch = _Batch([tag for tag, _ in chunk], loaded)
        originals = batch.originals
        if originals:
            batch.prepared = self._prepare_sources(originals)
            batch.read_ms = (time.perf_counter() - t0) * 1000.0 / len(originals)
        return batch

    def _forward_batch(self, batch: _Batch) -> _Batch:
        originals = batch.originals
        if originals:
            batch.outputs, batch.forward_ms = self._forward_prepared(batch.prepared,
                                                                     len(originals))
        batch.prepared = self._after_forward(batch.prepared)   # inputs are not kept
        return batch

    def _finish_batch(self, batch: _Batch, keep_images: bool) -> List[Outcome]:
        originals = batch.originals
        sets = self._finish_outputs(originals, batch.prepared, batch.outputs) if originals \
            else []
        if originals:
            self.last_forward_ms = [batch.forward_ms] * len(originals)
        out: List[Outcome] = []
        found = iter(sets)
        for tag, item in zip(batch.tags, batch.loaded):
            if item is None:
                out.append(Outcome(tag))
            elif isinstance(item, DataError):
                out.append(Outcome(tag, error=item))
            else:
                name, im = item
                out.append(Outcome(tag, name, as_image_tensor(im) if keep_images else None,
                                   next(found), None, batch.forward_ms))
        return out

    def _run_loaded(self, loaded: Sequence[Tuple[str, Source]],
                    keep_images: bool = True) -> List[Result]:
        """One batch of loaded images through the stages, in the calling thread."""
        batch = _Batch([None] * len(loaded), list(loaded))
        batch.prepared = self._prepare_sources([im for _, im in loaded])
        done = self._finish_batch(self._forward_batch(batch), keep_images)
        return [(o.name, o.image, o.detections) for o in done]  # type: ignore[misc]

    # ------------------------------------------------------------------ whole runs
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
        """:meth:`run` as a generator: results come out batch by batch, in input order, the
        stages overlapped (:meth:`process`). An image that cannot be loaded raises its
        :class:`~darknet_py.errors.DataError` after the results of the batches before it."""
        for o in self.process(((None, im) for im in images), keep_images,
                              overlap=not _one_batch(images, self.batch_size)):
            yield o.name, o.image, o.detections  # type: ignore[misc]

    def process(self, items: Iterable[Tuple[Any, Optional[ImageInput]]],
                keep_images: bool = True, *, frames: bool = False,
                errors_per_image: bool = False, ahead: Optional[int] = None,
                overlap: bool = True) -> Iterator[Outcome]:
        """``(tag, image)`` items -> one :class:`Outcome` per item, in input order,
        :attr:`batch_size` images per backend call, the stages overlapped (see the module text).

        ``frames``: the images are video frames (:meth:`frame_source`: the demo's rule), else
        still images (:meth:`source`). ``errors_per_image``: an image that cannot be loaded
        gives an outcome with ``error`` set and the others go on (``detector test`` on a list);
        otherwise its error is raised in order. An item whose image is None keeps its place and
        runs nothing. ``ahead``: batches read ahead (default :data:`READ_AHEAD_BATCHES`; each
        reader thread gets one more). Stopping early (``close()``, ``break``, an exception in
        the caller's loop, Ctrl-C) stops the threads and closes ``items`` if it is a generator.
        ``overlap=False`` or ``loader_threads=0`` runs every stage in the calling thread."""
        chunks = _chunks(iter(items), self.batch_size)

        def load(chunk):
            return self._load_batch(chunk, frames, errors_per_image)

        if not overlap or not self.loader_threads:
            try:
                for chunk in chunks:
                    yield from self._finish_batch(self._forward_batch(load(chunk)), keep_images)
            finally:
                chunks.close()
            return
        depth = max(1, READ_AHEAD_BATCHES if ahead is None else int(ahead))
        workers = self.loader_threads
        restore: List[Callable[[], None]] = []

        def forward(batch: _Batch) -> _Batch:
            if not restore and batch.originals:
                restore.append(self._overlap_network_threads(batch.read_ms) or _nothing)
            return self._forward_batch(batch)

        reader = Prefetcher(chunks, load, depth=depth + workers - 1, workers=workers,
                            name="darknet-py-read")
        network = Prefetcher(reader, forward, depth=READ_AHEAD_BATCHES,
                             name="darknet-py-network")
        try:
            for batch in network:
                yield from self._finish_batch(batch, keep_images)
        finally:
            network.close()
            for undo in restore:
                undo()

    def _overlap_network_threads(self, read_ms: float) -> Optional[Callable[[], None]]:
        """On the first overlapped batch: when the readers leave the network one CPU and the
        network's one-thread time is within :data:`ONE_THREAD_NETWORK_RATIO` times the reading
        time per image, the network runs on one thread for the rest of the run (the restore
        function undoes it). A network that small gains less from a second intra-op thread
        than the reader, which needs that CPU, loses: yolo-fastest's list ran at 65 img/s with
        one network thread against 56 with two (``tools/bench_throughput.py``, 2 CPUs)."""
        one = self.backend.one_thread_ms()
        if one is None or usable_cpus() - self.loader_threads > 1:
            return None
        if one > ONE_THREAD_NETWORK_RATIO * read_ms:
            return None
        return self.backend.use_one_thread()

    def describe_threads(self, ahead: Optional[int] = None) -> str:
        """Who runs what when a list or a stream goes through :meth:`process` with ``ahead``
        (list commands print it on stderr after ``overlap:``)."""
        net = _network_threads(self.backend)
        if not self.loader_threads:
            return f"none: reading, the network ({net}), decoding and NMS in one thread"
        n = self.loader_threads
        ahead = max(1, READ_AHEAD_BATCHES if ahead is None else int(ahead)) + n - 1
        one = "" if self.backend.one_thread_ms() is None or usable_cpus() - n > 1 else \
            (f"; 1 if its one-thread time is within {ONE_THREAD_NETWORK_RATIO:g}x the reading "
             "time per image, decided on the first batch")
        return (f"{n} reader thread{'s' if n != 1 else ''} (read + resize, up to {ahead} "
                f"batch{'es' if ahead != 1 else ''} of {self.batch_size} ahead), the network on "
                f"its own thread ({net}{one}), decoding + NMS + output on the main thread")

    def __repr__(self) -> str:
        return (f"Pipeline({self.backend.describe()}, thresh={self.thresh}, nms={self.nms}, "
                f"letter_box={self.letter_box})")


def _results(loaded: Sequence[Tuple[str, Source]], sets: Sequence[DetectionSet],
             keep_images: bool) -> List[Result]:
    """(name, float image or None, detections) per image: the whole image becomes float only
    when the caller keeps it (to draw on it), after its network input was made."""
    return [(name, as_image_tensor(im) if keep_images else None, dets)
            for (name, im), dets in zip(loaded, sets)]


def _network_threads(backend: Backend) -> str:
    """``2 intra-op threads`` (CPU) or the device a backend runs on."""
    if backend.device.type != "cpu":
        return f"on {backend.device}"
    n = getattr(backend, "run_threads", None) or getattr(backend, "threads", None) or \
        torch.get_num_threads()
    return f"{n} intra-op thread{'s' if n != 1 else ''}"


def _one_batch(images: Any, size: int) -> bool:
    """Whether ``images`` is a sized collection of at most one batch (nothing to overlap)."""
    return isinstance(images, Sized) and not isinstance(images, (str, bytes)) and \
        len(images) <= size


def _chunks(items: Iterator[Any], size: int) -> Iterator[List[Any]]:
    chunk: List[Any] = []
    try:
        for item in items:
            chunk.append(item)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
    finally:
        close: Optional[Callable[[], None]] = getattr(items, "close", None)
        if close is not None:       # a generator of frames or lines ends with the pipeline
            close()
