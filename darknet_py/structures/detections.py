"""Detections of one image, in Darknet's ``detection`` form and as typed objects for users.

:class:`DetectionSet` is what ``get_network_boxes`` + NMS give for one image: one row per candidate
box with its objectness and per-class probabilities (probabilities at or below the threshold are
zero, and NMS zeroes the probabilities of suppressed boxes rather than removing rows, as Darknet
does). Metrics (``darknet_map``), drawing, the JSON writer and the ``detector test`` printout all
read this one structure.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch


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

    @classmethod
    def empty(cls, classes: int, image_size: tuple = (0, 0)) -> "DetectionSet":
        return cls(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, classes), None, image_size)


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

    @property
    def box(self) -> tuple:
        return (self.left, self.top, self.width, self.height)


@dataclass
class ImageDetections:
    path: str
    detections: List[Detection] = field(default_factory=list)
    raw: Optional[DetectionSet] = None
