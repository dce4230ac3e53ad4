"""Detections of one image, in Darknet's ``detection`` form and as typed objects for users.

:class:`DetectionSet` is what ``get_network_boxes`` + NMS give for one image: one row per candidate
box with its objectness and per-class probabilities (probabilities at or below the threshold are
zero, and NMS zeroes the probabilities of suppressed boxes rather than removing rows, as Darknet
does). Metrics (``darknet_map``), drawing, the JSON writer and the ``detector test`` printout all
read this one structure.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import List, Optional, Sequence

import torch

from ..errors import UsageError


@dataclass
class DetectionSet:
    #: (N, 4) float32 boxes as Darknet's ``dets[i].bbox``: centre x, centre y, width, height,
    #: relative to the original image (0..1, may exceed the range slightly)
    boxes: torch.Tensor
    #: (N,) objectness (``dets[i].objectness``)
    objectness: torch.Tensor
    #: (N, C) class probabilities (``dets[i].prob``), 0 where <= thresh or suppressed by NMS
    probs: torch.Tensor
    #: (N, 4) Gaussian-yolo uncertainties (``dets[i].uc``) when the head is [Gaussian_yolo]
    uncertainty: Optional[torch.Tensor] = None
    #: size of the original image (width, height) in pixels
    image_size: tuple = (0, 0)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def __repr__(self) -> str:
        kept = int((self.probs > 0).any(dim=1).sum()) if len(self) else 0
        w, h = self.image_size
        return (f"DetectionSet({len(self)} boxes, {kept} with a class probability > 0, "
                f"{int(self.probs.shape[1]) if self.probs.dim() == 2 else 0} classes, "
                f"image {w}x{h})")

    @classmethod
    def empty(cls, classes: int, image_size: tuple = (0, 0)) -> "DetectionSet":
        return cls(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, classes), None, image_size)

    @classmethod
    def concat(cls, parts: Sequence["DetectionSet"], classes: int,
               image_size: tuple) -> "DetectionSet":
        """The rows of several sets of one image, in order (heads of a network, tiles of an
        image); uncertainties are kept when any part has them (zeros for the others)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty(classes, image_size)
        if len(parts) == 1:
            return parts[0]
        unc = None
        if any(p.uncertainty is not None for p in parts):
            unc = torch.cat([p.uncertainty if p.uncertainty is not None else torch.zeros(len(p), 4)
                             for p in parts])
        return cls(torch.cat([p.boxes for p in parts]), torch.cat([p.objectness for p in parts]),
                   torch.cat([p.probs for p in parts]), unc, image_size)


@dataclass
class Detection:
    """One labelled box, as a user sees it (one per class above threshold, like Darknet prints)."""

    class_id: int
    name: str
    confidence: float
    #: centre x, centre y, width, height relative to the image
    relative: tuple
    #: left, top, width, height in pixels (Darknet's -ext_output numbers)
    left: int = 0
    top: int = 0
    width: int = 0
    height: int = 0
    #: the object's track across frames (``Detector.track``); None when not tracking
    track_id: Optional[int] = None

    @property
    def box(self) -> tuple:
        return (self.left, self.top, self.width, self.height)

    def __str__(self) -> str:
        tid = "" if self.track_id is None else f"#{self.track_id} "
        return (f"{tid}{self.name}: {self.confidence:.0%} (left {self.left}, top {self.top}, "
                f"width {self.width}, height {self.height})")


@dataclass
class ImageDetections:
    """The labelled boxes of one image (``detections``) and Darknet's raw set behind them."""

    path: str
    detections: List[Detection] = field(default_factory=list)
    raw: Optional[DetectionSet] = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.detections)

    def __iter__(self):
        return iter(self.detections)

    def __str__(self) -> str:
        lines = [f"{self.path}: {len(self.detections)} detections"]
        lines += [f"  {d}" for d in self.detections]
        return "\n".join(lines)


def scale_to_pixels(detections, image_width: Optional[int] = None,
                    image_height: Optional[int] = None):
    """A copy of a DetectionSet with boxes in pixels of the original image (float32 ``x*w``,
    ``y*h``, ``w*w``, ``h*h``), as ``get_network_boxes(..., relative=0)`` gives them.

    ``detector valid`` runs NMS on these pixel boxes. That matters for ``greedynms`` /
    ``diounms``: their centre-distance term is not invariant under the image's aspect ratio, so
    NMS on relative boxes keeps a few boxes that Darknet's ``valid`` suppresses.
    """
    if image_width is None or image_height is None:
        image_width, image_height = (int(v) for v in detections.image_size)
    if image_width <= 0 or image_height <= 0:
        raise UsageError(f"image size unknown: {image_width}x{image_height}")
    scale = torch.tensor([image_width, image_height, image_width, image_height],
                         dtype=torch.float32)
    boxes = detections.boxes.to(torch.float32) * scale
    return replace(detections, boxes=boxes, image_size=(image_width, image_height))
