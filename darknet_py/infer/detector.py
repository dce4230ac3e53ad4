"""High-level inference: ``Detector`` = Darknet's ``detector test`` as a Python object.

>>> det = Detector("yolov4-tiny.cfg", "yolov4-tiny.weights", names="coco.names")
>>> [d.name for d in det("dog.jpg")[0].detections]
['bicycle', 'dog', 'truck', 'car']

Per image it does what ``test_detector`` (``detector.c``) does: ``load_image`` (OpenCV),
``resize_image`` or ``letterbox_image`` to the network size, the forward pass of the BN-fused
network, ``get_network_boxes`` (thresh, hier_thresh, relative boxes), then ``do_nms_sort`` or, when
the last head has ``nms_kind`` set, ``diounms_sort`` with its ``beta_nms``. Several images are
pushed through the network as one batch.

Deliberate difference: ``letter_box=False`` switches letterboxing off even if the cfg's ``[net]``
says ``letter_box=1`` (Darknet can only switch it on); the default ``None`` follows the cfg.
"""
from __future__ import annotations

import os
import time
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..structures.detections import DetectionSet, ImageDetections
from .draw import draw_detections, image_stdout, to_detections
from ..errors import UsageError
from .image import load_image, prepare_input, image_size
from .nms import apply_nms, nms_params
from .decode import get_network_boxes

PathLike = Union[str, "os.PathLike[str]"]
ImageInput = Union[PathLike, torch.Tensor, np.ndarray]

__all__ = ["Detector"]


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


class Detector:
    """A loaded detection network with Darknet's ``detector test`` pre- and post-processing.

    Args:
        cfg: the ``.cfg`` file, or a ``.onnx`` file made by ``darknet-py export`` (run with
            onnxruntime on the CPU; then ``weights``, ``width`` and ``height`` stay ``None``,
            ``names`` defaults to the names stored at export, and Darknet's own NMS is applied
            whether or not the file has the ONNX NMS op).
        weights: a Darknet ``.weights`` file (or ``None`` for random weights).
        names: class names: a list, a ``.names`` file, or ``None`` (class numbers as names).
        device: torch device for the forward pass.
        half: run the network in float16 (decoding stays float32).
        letter_box: ``None`` = the cfg's ``[net] letter_box``; ``True``/``False`` force it.
        thresh, hier_thresh, nms: as ``-thresh``, ``-hier``, and Darknet's fixed ``nms=.45``.
        batch_size: images per forward pass.
        width, height: override the network input size (like editing ``[net]``).
    """

    def __init__(self, cfg: PathLike, weights: Optional[PathLike] = None,
                 names: Union[None, PathLike, Sequence[str]] = None, device: Union[str, torch.device] = "cpu",
                 half: bool = False, letter_box: Optional[bool] = None, thresh: float = 0.25,
                 hier_thresh: float = 0.5, nms: float = 0.45, batch_size: int = 8,
                 width: Optional[int] = None, height: Optional[int] = None):
        from ..model.network import Network

        if os.fspath(cfg).lower().endswith(".onnx"):  # a `darknet-py export` file
            from .backends.onnxruntime import OnnxModel

            if weights is not None or width or height:
                raise UsageError("an ONNX export already holds its weights and input size: "
                                 "give no weights, width or height", value=os.fspath(cfg))
            self.net = OnnxModel(cfg)
            if names is None:
                names = self.net.names
        else:
            self.net = Network.from_cfg(cfg, batch=1, width=width, height=height)
            if weights is not None:
                self.net.load_weights(weights)
        if not self.net.heads:
            raise UsageError("this cfg has no detection head ([yolo], [region] or [Gaussian_yolo])",
                             value=os.fspath(cfg))
        self.device = torch.device(device)
        self.dtype = torch.float16 if half else torch.float32
        self.net.fuse()
        self.net.eval()
        self.net.to(device=self.device, dtype=self.dtype)
        self.letter_box = bool(self.net.config.letter_box) if letter_box is None else bool(letter_box)
        self.thresh = float(thresh)
        self.hier_thresh = float(hier_thresh)
        self.nms = float(nms)
        self.batch_size = max(1, int(batch_size))
        self.nms_kind, self.beta_nms = nms_params(self.net.heads)
        self.classes = int(self.net.heads[-1].classes)
        self.names = self._names(names)
        #: milliseconds of the last forward pass per image (for the "Predicted in" line)
        self.last_forward_ms: List[float] = []

    def _names(self, names: Union[None, PathLike, Sequence[str]]) -> List[str]:
        if names is None:
            return [str(i) for i in range(self.classes)]
        if _is_path(names):
            from ..data.datacfg import read_names

            return read_names(names)  # type: ignore[arg-type]
        return [str(n) for n in names]  # type: ignore[union-attr]

    # ------------------------------------------------------------------ inputs
    def _load(self, image: ImageInput) -> Tuple[str, torch.Tensor]:
        """(name, Darknet image (C, H, W) float RGB in [0, 1])."""
        if _is_path(image):
            return os.fspath(image), load_image(image, self.net.channels)  # type: ignore[arg-type]
        if isinstance(image, np.ndarray):
            # an OpenCV image: HWC BGR uint8 (mat_to_image)
            arr = image if image.ndim == 3 else image[:, :, None]
            if arr.shape[2] == 3:
                arr = arr[:, :, ::-1]
            t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).to(torch.float32)
            if image.dtype == np.uint8:
                t = t * np.float32(1.0 / 255.0)
            return "<array>", t
        if isinstance(image, torch.Tensor):
            if image.dim() != 3:
                raise UsageError(f"an image tensor must be (C, H, W), got {tuple(image.shape)}")
            return "<tensor>", image.detach().to("cpu", torch.float32)
        raise UsageError(f"cannot use {type(image).__name__} as an image (path, tensor or array)")

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def detect_sets(self, images: Sequence[ImageInput]) -> List[Tuple[str, torch.Tensor, DetectionSet]]:
        """(name, original image, NMS'ed :class:`DetectionSet`) for every image."""
        loaded = [self._load(im) for im in images]
        results: List[Tuple[str, torch.Tensor, DetectionSet]] = []
        self.last_forward_ms = []
        w, h = self.net.width, self.net.height
        for start in range(0, len(loaded), self.batch_size):
            chunk = loaded[start:start + self.batch_size]
            x = torch.stack([prepare_input(im, w, h, self.letter_box) for _, im in chunk])
            sets = self.detect_batch(x, [image_size(im) for _, im in chunk])
            for (name, im), dets in zip(chunk, sets):
                results.append((name, im, dets))
        return results

    @torch.no_grad()
    def detect_batch(self, x: torch.Tensor, image_sizes: Sequence[Tuple[int, int]]
                     ) -> List[DetectionSet]:
        """Network inputs already prepared (B, C, H, W) -> NMS'ed detections per image.

        ``image_sizes`` are the original (width, height) that boxes are corrected to.
        """
        w, h = self.net.width, self.net.height
        t0 = time.perf_counter()
        outs = self.net(x.to(self.device, self.dtype))
        ms = (time.perf_counter() - t0) * 1000.0 / max(1, x.shape[0])
        self.last_forward_ms += [ms] * x.shape[0]
        if getattr(self.net, "decoded", False):  # an ONNX export made with --with-decode
            sets = self.net.detection_sets(outs, list(image_sizes), self.thresh, self.letter_box)
        else:
            heads = [(layer, out.to("cpu", torch.float32))
                     for layer, out in zip(self.net.heads, outs)]
            sets = get_network_boxes(heads, w, h, list(image_sizes), self.thresh,
                                     self.hier_thresh, self.letter_box)
        if self.nms:
            sets = [apply_nms(d, self.nms, self.nms_kind, self.beta_nms) for d in sets]
        return sets

    def __call__(self, images: Union[ImageInput, Sequence[ImageInput]]) -> List[ImageDetections]:
        """Detect objects in one image or a list; always returns one entry per image."""
        if _is_path(images) or isinstance(images, (torch.Tensor, np.ndarray)):
            images = [images]  # type: ignore[list-item]
        return [to_detections(name, dets, self.names, self.thresh)
                for name, _, dets in self.detect_sets(list(images))]  # type: ignore[arg-type]

    detect = __call__

    def stdout(self, name: str, dets: DetectionSet, milliseconds: float = 0.0,
               ext_output: bool = True) -> str:
        """The image's ``detector test`` stdout block."""
        return image_stdout(name, self.net.heads, dets, self.names, self.thresh, ext_output,
                            milliseconds)

    def draw(self, image: torch.Tensor, dets: DetectionSet) -> torch.Tensor:
        """``draw_detections_v3`` on a copy of the original image."""
        return draw_detections(image, dets, self.names, self.thresh, self.classes)
