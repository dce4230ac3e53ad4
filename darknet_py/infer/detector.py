"""``Detector``: Darknet's ``detector test`` as a Python object, over the one pipeline.

>>> det = Detector("yolov4-tiny.cfg", "yolov4-tiny.weights", names="coco.names")
>>> [d.name for d in det("dog.jpg")[0].detections]
['bicycle', 'dog', 'truck', 'car']

Per image it does what ``test_detector`` (``detector.c``) does, through
:class:`~darknet_py.infer.pipeline.Pipeline`: ``load_image``, ``resize_image`` or
``letterbox_image``, the backend's forward pass, ``get_network_boxes`` (thresh, hier_thresh,
relative boxes), then ``do_nms_sort`` or, when the last head has ``nms_kind`` set,
``diounms_sort`` with its ``beta_nms``. Several images go through the backend as one batch.

Video frames (:meth:`Detector.detect_frames`, :meth:`Detector.stream`, ``detector demo``) go
through the same pipeline with Darknet's ``demo`` input rule instead (``cv::resize`` of the uint8
frame, :func:`~darknet_py.imaging.image.prepare_frame`); a numpy image given to ``det(image)`` is a
still image, as ``detector test`` would load it.

Deliberate difference: ``letter_box=False`` switches letterboxing off even if the cfg's ``[net]``
says ``letter_box=1`` (Darknet can only switch it on); the default ``None`` follows the cfg.
"""
from __future__ import annotations

import os
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..data.datacfg import read_names
from ..files import PathLike
from ..imaging.image import image_from_array, image_to_bgr_uint8
from ..structures.detections import DetectionSet, ImageDetections
from .backends.base import Backend
from .backends.factory import make_backend
from .draw import draw_detections, image_stdout
from .pipeline import ImageInput, Pipeline, _is_path
from .results import to_detections
from .stream import stream
from .tiling import TiledPipeline, parse_tiles
from .tracking import track

__all__ = ["Detector"]


class Detector:
    """A loaded detection model with Darknet's ``detector test`` pre- and post-processing.

    Args:
        cfg: the ``.cfg`` file, or a ``.onnx`` file made by ``darknet-py export`` (then
            ``weights``, ``width`` and ``height`` stay ``None`` and ``names`` defaults to the names
            stored at export).
        weights: a Darknet ``.weights`` file (or ``None`` for random weights).
        names: class names: a list, a ``.names`` file, or ``None`` (class numbers as names).
        backend: ``auto`` (default: the rule of
            :func:`~darknet_py.infer.backends.factory.auto_backend`; ``self.backend.auto_reason``
            says why it chose what it did), ``exact``, ``fast``, ``cuda``, ``onnxruntime`` or
            ``openvino`` (see :mod:`darknet_py.infer.backends.base`).
        device: ``None`` = a CUDA GPU when available, else the CPU; or ``"cpu"``, ``"cuda:1"``.
        precision: ``fp32`` (default), ``fp16`` (CUDA), ``bf16`` or ``int8``; ``half=True`` means
            ``fp16``. ``int8`` quantizes the model on ``calibration`` images (OpenVINO + NNCF on
            the CPU; once, then cached) and prints the fp32 and int8 mAP@0.5 of held-out images
            on stderr (:mod:`darknet_py.infer.backends.int8`).
        calibration: with ``precision="int8"``, a Darknet list file or a list of image paths.
        letter_box: ``None`` = the model's ``[net] letter_box``; ``True``/``False`` force it.
        thresh, hier_thresh, nms: as ``-thresh``, ``-hier`` (no effect, as in Darknet: see
            :func:`~darknet_py.model.decode.get_network_boxes`), and Darknet's fixed ``nms=.45``.
        batch_size: images per forward pass.
        width, height: override the network input size (like editing ``[net]``).
        threads: CPU threads for the backend (``None``: torch's / the runtime's default).
        network: an already built and loaded :class:`~darknet_py.model.network.Network` for
            ``cfg`` (saves building it twice).
        tiles: ``(columns, rows)`` or ``"CxR"``: detect on overlapping tiles of each image and
            merge them with the cfg's NMS (:mod:`darknet_py.infer.tiling`); ``None`` = off.
        tile_overlap: fraction of a tile its neighbours share (default 0.2).
        tiles_full: with ``tiles``, also detect on the whole image and merge that in.
    """

    def __init__(self, cfg: PathLike, weights: Optional[PathLike] = None,
                 names: Union[None, PathLike, Sequence[str]] = None, *,
                 backend: Union[str, Backend] = "auto",
                 device: Union[None, str, torch.device] = None, precision: str = "fp32",
                 half: bool = False, letter_box: Optional[bool] = None, thresh: float = 0.25,
                 hier_thresh: float = 0.5, nms: float = 0.45, batch_size: int = 8,
                 width: Optional[int] = None, height: Optional[int] = None,
                 threads: Optional[int] = None, network: Any = None,
                 tiles: Union[None, str, Tuple[int, int]] = None, tile_overlap: float = 0.2,
                 tiles_full: bool = False, calibration: Any = None):
        if isinstance(backend, Backend):
            self.backend = backend
        else:
            self.backend = make_backend(cfg, weights, backend=backend, device=device,
                                        precision="fp16" if half else precision, width=width,
                                        height=height, threads=threads, network=network,
                                        calibration=calibration)
        options = dict(thresh=thresh, hier_thresh=hier_thresh, nms=nms, letter_box=letter_box,
                       batch_size=batch_size)
        tiles = parse_tiles(tiles)
        if tiles is None:
            self.pipeline: Pipeline = Pipeline(self.backend, **options)
        else:
            self.pipeline = TiledPipeline(self.backend, tiles=tiles, tile_overlap=tile_overlap,
                                          tiles_full=tiles_full, **options)
        self.classes = self.backend.classes
        if names is None and self.backend.names is not None:
            names = self.backend.names
        self.names = self._names(names)

    def _names(self, names: Union[None, PathLike, Sequence[str]]) -> List[str]:
        if names is None:
            return [str(i) for i in range(self.classes)]
        if _is_path(names):
            return read_names(names)  # type: ignore[arg-type]
        return [str(n) for n in names]  # type: ignore[union-attr]

    # ------------------------------------------------------------------ settings
    @property
    def net(self):
        """The :class:`~darknet_py.model.network.Network` behind the backend (None for an ONNX
        file)."""
        return self.backend.network

    @property
    def heads(self):
        return self.backend.heads

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def input_size(self) -> Tuple[int, int]:
        """The network input (width, height)."""
        return self.backend.width, self.backend.height

    thresh = property(lambda self: self.pipeline.thresh,
                      lambda self, v: setattr(self.pipeline, "thresh", float(v)))
    hier_thresh = property(lambda self: self.pipeline.hier_thresh,
                           lambda self, v: setattr(self.pipeline, "hier_thresh", float(v)))
    nms = property(lambda self: self.pipeline.nms,
                   lambda self, v: setattr(self.pipeline, "nms", float(v)))
    letter_box = property(lambda self: self.pipeline.letter_box,
                          lambda self, v: setattr(self.pipeline, "letter_box", bool(v)))
    nms_kind = property(lambda self: self.pipeline.nms_kind)
    beta_nms = property(lambda self: self.pipeline.beta_nms)
    batch_size = property(lambda self: self.pipeline.batch_size,
                          lambda self, v: setattr(self.pipeline, "batch_size", max(1, int(v))))
    last_forward_ms = property(lambda self: self.pipeline.last_forward_ms)

    def describe(self) -> str:
        """``backend fast on cpu (fp32, 2 threads)``: what runs the network."""
        return self.backend.describe()

    # ------------------------------------------------------------------ inference
    def detect_sets(self, images: Sequence[ImageInput]) -> List[Tuple[str, torch.Tensor,
                                                                     DetectionSet]]:
        """(name, original image, NMS'ed :class:`DetectionSet`) for every image."""
        return self.pipeline.run(list(images))

    def detect_batch(self, x: torch.Tensor, image_sizes: Sequence[Tuple[int, int]]
                     ) -> List[DetectionSet]:
        """Network inputs already prepared (B, C, H, W) -> NMS'ed detections per image;
        ``image_sizes`` are the original (width, height) that boxes are corrected to."""
        return self.pipeline.detect_batch(x, image_sizes)

    def detect_frames(self, frames: Sequence[np.ndarray]) -> List[DetectionSet]:
        """BGR uint8 video frames (as ``cv2.VideoCapture`` reads them) -> NMS'ed detections per
        frame, all in one forward pass (tiled when the detector tiles). Each frame's input is made
        by Darknet's ``demo`` rule (:func:`~darknet_py.imaging.image.prepare_frame`), not
        ``detector test``'s: what ``detector demo`` and :meth:`stream` run."""
        return self.pipeline.detect_frames(list(frames))

    def __call__(self, images: Union[ImageInput, Sequence[ImageInput]]) -> List[ImageDetections]:
        """Detect objects in one image or a list (still images, ``detector test``'s rule; video
        frames: :meth:`detect_frames`); always returns one entry per image."""
        if _is_path(images) or isinstance(images, (torch.Tensor, np.ndarray)):
            images = [images]  # type: ignore[list-item]
        # the original images are not kept: a file is resized from its decoded bytes and never
        # converted to float as a whole
        return [to_detections(name, dets, self.names, self.thresh)
                for name, _, dets in self.pipeline.run(list(images), keep_images=False)]  # type: ignore[arg-type]

    detect = __call__

    def stream(self, source, queue_size: int = 8):
        """Per-frame results (:class:`~darknet_py.infer.stream.FrameResult`: ``frame_id``,
        ``frame``, ``detections``) of a video file, a camera index or an iterable of frames;
        frames are read and prepared on the pipeline's reader thread (about ``queue_size``
        frames ahead) and go through the network, on its own thread, :attr:`batch_size` at a
        time while the caller's loop handles the frames before
        (:meth:`~darknet_py.infer.pipeline.Pipeline.process`). Each frame gets what
        ``self.detect_frames([frame])`` gives (Darknet's ``demo`` rule)."""
        return stream(self, source, queue_size=queue_size)

    def track(self, video_or_frames, **tracker_options):
        """:meth:`stream` plus ByteTrack (supervision): per frame a
        :class:`~darknet_py.infer.tracking.TrackedFrame` whose detections carry a persistent
        ``track_id``. Options go to :class:`~darknet_py.infer.tracking.ByteTracker`
        (``frame_rate`` defaults to the video's, ``lost_track_buffer`` …)."""
        return track(self, video_or_frames, **tracker_options)

    def stdout(self, name: str, dets: DetectionSet, milliseconds: float = 0.0,
               ext_output: bool = True) -> str:
        """The image's ``detector test`` stdout block."""
        return image_stdout(name, self.heads, dets, self.names, self.thresh, ext_output,
                            milliseconds)

    def draw(self, image: Union[torch.Tensor, np.ndarray],
             dets: Union[DetectionSet, ImageDetections]) -> Union[torch.Tensor, np.ndarray]:
        """``draw_detections_v3`` on a copy of the image; a BGR numpy image (as OpenCV reads
        it) gives a BGR numpy image back, a ``(C, H, W)`` tensor a tensor."""
        raw = dets.raw if isinstance(dets, ImageDetections) else dets
        if raw is None:
            raise TypeError("these ImageDetections carry no raw DetectionSet to draw")
        if isinstance(image, np.ndarray):
            drawn = draw_detections(image_from_array(image), raw, self.names, self.thresh,
                                    self.classes)
            return image_to_bgr_uint8(drawn)
        return draw_detections(image, raw, self.names, self.thresh, self.classes)

    def __repr__(self) -> str:
        return (f"Detector({os.path.basename(self.backend.source)}, {self.describe()}, "
                f"{self.classes} classes, input {self.backend.width}x{self.backend.height}, "
                f"thresh={self.thresh})")
