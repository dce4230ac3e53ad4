"""Darknet's ``draw_detections_v3`` (``image.c``), its two halves: the ``detector test`` printout
and the drawn image. The detections as data (the Detector's list, ``-out`` JSON, ``-save_labels``
files) are :mod:`darknet_py.infer.results`.

* :func:`detection_lines` = the text part of ``draw_detections_v3``: detections whose
  best probability is above ``thresh`` (names starting with ``dont_show`` skipped), sorted by left
  edge, ``name: NN%`` for the best class then for every other class above ``thresh``, with
  ``-ext_output`` the tab and ``(left_x: %4.0f   top_y: %4.0f   width: %4.0f   height: %4.0f)``
  in pixels of the original image (C ``round``, so -0 prints as ``-0`` like Darknet).
* :func:`demo_detection_lines` = the text part of ``draw_detections_cv_v3``
  (``image_opencv.cpp``), what ``detector demo`` prints per frame: detections in array order,
  one line each, ``name: NN% `` for the first class above ``thresh`` then ``, other: NN% `` for
  the next ones, with ``-ext_output`` the same tab and box text, the corners truncated to ints
  and clamped to the frame, the width and height unrounded floats.
* :func:`image_stdout` = one image's whole stdout block of ``detector test`` (the
  ``Detection layer`` lines, ``<path>: Predicted in ... milli-seconds.`` and the lines above).
* :func:`draw_detections` = the drawing part of ``draw_detections_v3`` on a Darknet image
  (``(3, H, W)`` float RGB): boxes pixel-exact (``draw_box_width``: colour from ``get_color`` of
  ``class*123457 % classes``, width ``max(1, (int)(h*0.002))``, lowest probability drawn first).
  Darknet renders the label with its bitmap font (``data/labels``); here OpenCV's Hershey font draws
  the same text (``name: 0.84[, other]``) on a white strip blended with the box colour at 0.7 as
  ``draw_weighted_label`` does, so label pixels are similar, not identical.
"""
from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from ..model.decode import as_spec
from ..structures.boxes import xywh_to_ltwh, xywh_to_xyxy
from ..structures.detections import DetectionSet

__all__ = [
    "get_color", "class_color", "actual_detections", "detection_lines", "demo_detection_lines",
    "detection_layer_lines", "predicted_line", "image_stdout", "draw_detections",
]

_COLORS = np.array([[1, 0, 1], [0, 0, 1], [0, 1, 1], [0, 1, 0], [1, 1, 0], [1, 0, 0]],
                   dtype=np.float32)


def get_color(c: int, x: int, max_value: int) -> float:
    """Darknet's ``get_color(c, x, max)`` (``image.c``), float32 arithmetic."""
    ratio = np.float32(np.float32(x) / np.float32(max_value)) * np.float32(5)
    i = int(math.floor(ratio))
    j = int(math.ceil(ratio))
    ratio = np.float32(ratio - np.float32(i))
    return float((np.float32(1) - ratio) * _COLORS[i][c] + ratio * _COLORS[j][c])


def class_color(class_id: int, classes: int) -> Tuple[float, float, float]:
    """(red, green, blue) in [0, 1] Darknet uses for a class's boxes."""
    offset = class_id * 123457 % classes
    return get_color(2, offset, classes), get_color(1, offset, classes), get_color(0, offset, classes)


def _shown(names: Sequence[str]) -> np.ndarray:
    return np.array([not str(n).startswith("dont_show") for n in names], dtype=bool)


def _class_name(names: Sequence[str], j: int) -> str:
    return str(names[j]) if j < len(names) else str(j)


def actual_detections(dets: DetectionSet, thresh: float, names: Sequence[str]
                      ) -> List[Tuple[int, int]]:
    """``get_actual_detections``: ``(row, best_class)`` for rows whose best shown class is above
    ``thresh`` (the first class wins ties), in array order."""
    if len(dets) == 0:
        return []
    probs = dets.probs.detach().to(torch.float32).cpu().numpy()
    classes = probs.shape[1]
    shown = _shown(names)
    if shown.size < classes:
        shown = np.concatenate([shown, np.ones(classes - shown.size, dtype=bool)])
    masked = np.where(shown[None, :classes] & (probs > np.float32(thresh)), probs, -np.inf)
    best = masked.argmax(axis=1)
    ok = np.isfinite(masked[np.arange(len(best)), best])
    return [(int(i), int(best[i])) for i in np.nonzero(ok)[0]]


def _pixel_boxes(boxes: np.ndarray, im_w: int, im_h: int) -> np.ndarray:
    """``-ext_output``'s ``round((b.x - b.w/2)*im.w)``, ... of float32 boxes ``(n, 4)`` ->
    ``(n, 4)`` float64 (left, top, width, height): float32 arithmetic as in Darknet, then C
    ``round`` (half away from zero, keeping the sign of zero) on the value as a double."""
    size = np.array([im_w, im_h, im_w, im_h], np.float32)
    v = (xywh_to_ltwh(boxes.astype(np.float32)) * size).astype(np.float64)
    return np.copysign(np.floor(np.abs(v) + 0.5), v)


def _printout_order(boxes: np.ndarray, selected: List[Tuple[int, int]]) -> np.ndarray:
    """Indices into ``selected`` in ``qsort(compare_by_lefts)`` order: by the float32 left edge,
    ties in array order (glibc's qsort is a merge sort)."""
    rows = [i for i, _ in selected]
    lefts = xywh_to_ltwh(boxes[rows].astype(np.float32))[:, 0]
    return np.argsort(lefts, kind="stable")


def _percent(p: float) -> str:
    return "%.0f%%" % float(np.float32(p) * np.float32(100))


def detection_lines(dets: DetectionSet, names: Sequence[str], thresh: float = 0.25,
                    ext_output: bool = True, image_size: Optional[Tuple[int, int]] = None
                    ) -> List[str]:
    """The per-detection stdout lines of ``draw_detections_v3`` (without newlines)."""
    im_w, im_h = image_size if image_size is not None else dets.image_size
    selected = actual_detections(dets, thresh, names)
    if not selected:
        return []
    boxes = dets.boxes.detach().to(torch.float32).cpu().numpy()
    probs = dets.probs.detach().to(torch.float32).cpu().numpy()
    thr = np.float32(thresh)
    lines: List[str] = []
    pixels = _pixel_boxes(boxes, im_w, im_h) if ext_output else None
    for o in _printout_order(boxes, selected):
        i, best = selected[o]
        tail = ""
        if pixels is not None:
            l, t, w, h = pixels[i]
            tail = "\t(left_x: %4.0f   top_y: %4.0f   width: %4.0f   height: %4.0f)" % (l, t, w, h)
        lines.append(f"{_class_name(names, best)}: {_percent(probs[i, best])}{tail}")
        for j in np.nonzero(probs[i] > thr)[0]:
            if j != best:
                lines.append(f"{_class_name(names, int(j))}: {_percent(probs[i, j])}{tail}")
    return lines


def demo_detection_lines(dets: DetectionSet, names: Sequence[str], thresh: float = 0.25,
                         ext_output: bool = True, frame_size: Optional[Tuple[int, int]] = None
                         ) -> List[str]:
    """The per-detection stdout lines of ``draw_detections_cv_v3`` (``image_opencv.cpp``), which
    ``detector demo`` prints for every frame (without newlines).

    Unlike ``detector test``'s :func:`detection_lines`: rows in the array order NMS left them in
    (not sorted by left edge), one line per row with every class above ``thresh`` in class order
    (``name: NN% `` for the first, ``, name: NN% `` for the others; each with its trailing
    space); the box from the relative box clamped to at most 1 (NaN/inf -> 0.5), ``left`` and
    ``top`` computed in double, truncated to int and clamped at 0, ``width``/``height`` the
    float32 ``w * cols`` and ``h * rows``, all printed ``%4.0f``."""
    frame_w, frame_h = frame_size if frame_size is not None else dets.image_size
    if len(dets) == 0:
        return []
    boxes = dets.boxes.detach().to(torch.float32).cpu().numpy()
    probs = dets.probs.detach().to(torch.float32).cpu().numpy()
    shown = _shown(names)
    if shown.size < probs.shape[1]:
        shown = np.concatenate([shown, np.ones(probs.shape[1] - shown.size, dtype=bool)])
    above = (probs > np.float32(thresh)) & shown[None, :probs.shape[1]]
    # Darknet clamps the relative box to at most 1 (NaN/inf -> 0.5), then (b.x - b.w / 2.) in double
    clamped = np.minimum(np.where(np.isfinite(boxes), boxes, np.float32(0.5)), np.float32(1))
    corners = xywh_to_ltwh(clamped.astype(np.float64))
    lines: List[str] = []
    for i in np.nonzero(above.any(axis=1))[0]:
        text = ", ".join(f"{_class_name(names, int(j))}: {_percent(probs[i, j])} "
                         for j in np.nonzero(above[i])[0])
        if ext_output:
            left = max(0, int(corners[i, 0] * frame_w))
            top = max(0, int(corners[i, 1] * frame_h))
            w, h = clamped[i, 2], clamped[i, 3]
            text += "\t(left_x: %4.0f   top_y: %4.0f   width: %4.0f   height: %4.0f)" % (
                left, top, float(w * np.float32(frame_w)), float(h * np.float32(frame_h)))
        lines.append(text)
    return lines


def detection_layer_lines(heads: Sequence[Any]) -> List[str]:
    """`` Detection layer: <index> - type = <LAYER_TYPE> `` for every head (``test_detector``)."""

    specs = [as_spec(h[0] if isinstance(h, tuple) else h) for h in heads]
    return [f" Detection layer: {s.index} - type = {s.type_code} " for s in specs]


def predicted_line(path: str, milliseconds: float) -> str:
    """``<path>: Predicted in %lf milli-seconds.``"""
    return f"{path}: Predicted in {milliseconds:f} milli-seconds."


def image_stdout(path: str, heads: Sequence[Any], dets: DetectionSet, names: Sequence[str],
                 thresh: float = 0.25, ext_output: bool = True, milliseconds: float = 0.0) -> str:
    """One image's stdout block of ``darknet detector test`` (newline-terminated lines)."""
    lines = detection_layer_lines(heads) + [predicted_line(path, milliseconds)]
    lines += detection_lines(dets, names, thresh, ext_output)
    return "".join(line + "\n" for line in lines)


# ---------------------------------------------------------------------------------------- drawing
def _draw_box(img: torch.Tensor, x1: int, y1: int, x2: int, y2: int, rgb: Sequence[float]) -> None:
    """``draw_box``: clamp the corners into the image, then paint the 4 one-pixel edges."""
    _, h, w = img.shape
    x1 = min(max(x1, 0), w - 1)
    x2 = min(max(x2, 0), w - 1)
    y1 = min(max(y1, 0), h - 1)
    y2 = min(max(y2, 0), h - 1)
    colour = torch.tensor(rgb[: img.shape[0]], dtype=img.dtype).view(-1, 1)
    if x1 <= x2:
        img[:, y1, x1:x2 + 1] = colour
        img[:, y2, x1:x2 + 1] = colour
    if y1 <= y2:
        img[:, y1:y2 + 1, x1] = colour
        img[:, y1:y2 + 1, x2] = colour


def _label_patch(text: str, size: int) -> np.ndarray:
    """A white label with black text, about as tall as Darknet's size-``size`` bitmap font."""

    target_h = 11 + 10.5 * size
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), base = cv2.getTextSize(text, font, 1.0, 1)
    scale = max(0.3, 0.8 * target_h / float(th + base))
    thickness = max(1, int(round(scale * 1.5)))
    (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    border = int(target_h * 0.05)
    h = th + base + 2 * border
    w = tw + 2 * border
    patch = np.full((h, w), 255, np.uint8)
    cv2.putText(patch, text, (border, border + th), font, scale, 0, thickness, cv2.LINE_AA)
    return patch.astype(np.float32) / 255.0


def draw_detections(image: torch.Tensor, dets: DetectionSet, names: Sequence[str],
                    thresh: float = 0.25, classes: Optional[int] = None,
                    labels: bool = True, row_labels: Optional[Sequence[str]] = None
                    ) -> torch.Tensor:
    """``draw_detections_v3``'s drawing on a copy of a Darknet image ``(C, H, W)`` in [0, 1];
    ``row_labels[i]`` (e.g. a track id ``#3``) is put before the label of row ``i``."""
    img = image.detach().to(torch.float32).clone()
    c, im_h, im_w = img.shape
    selected = actual_detections(dets, thresh, names)
    if not selected:
        return img
    classes = int(classes if classes is not None else dets.probs.shape[1])
    boxes = dets.boxes.detach().to(torch.float32).cpu().numpy()
    probs = dets.probs.detach().to(torch.float32).cpu().numpy()
    best_probs = np.array([probs[i, b] for i, b in selected], dtype=np.float32)
    width = max(1, int(im_h * 0.002))
    thr = np.float32(thresh)
    corners = xywh_to_xyxy(boxes.astype(np.float64))  # Darknet: (b.x - b.w / 2.)*im.w, double
    for o in np.argsort(best_probs, kind="stable"):  # qsort(compare_by_probs): ascending
        i, best = selected[o]
        red, green, blue = class_color(best, classes)
        left = int(corners[i, 0] * im_w)
        right = int(corners[i, 2] * im_w)
        top = int(corners[i, 1] * im_h)
        bot = int(corners[i, 3] * im_h)
        left = max(left, 0)
        right = min(right, im_w - 1)
        top = max(top, 0)
        bot = min(bot, im_h - 1)
        if c == 1:
            for k in range(width):
                tone = 0.8 if width % 2 else 0.2
                _draw_box(img, left + k, top + k, right - k, bot - k, (tone,))
        else:
            for k in range(width):
                _draw_box(img, left + k, top + k, right - k, bot - k, (red, green, blue))
        if labels:
            text = "%s: %.2f" % (_class_name(names, best), float(probs[i, best]))
            if row_labels is not None and row_labels[i]:
                text = f"{row_labels[i]} {text}"
            for j in np.nonzero(probs[i] > thr)[0]:
                if j != best:
                    text += ", " + _class_name(names, int(j))
            size = min(int(im_h * 0.02) // 10, 7)
            patch = torch.from_numpy(_label_patch(text, size))
            ph, pw = patch.shape
            r = top + width
            if r - ph >= 0:
                r -= ph
            ph2 = min(ph, im_h - r)
            pw2 = min(pw, im_w - left)
            if ph2 > 0 and pw2 > 0:
                rgb = torch.tensor([red, green, blue][:c], dtype=torch.float32).view(-1, 1, 1)
                region = img[:, r:r + ph2, left:left + pw2]
                img[:, r:r + ph2, left:left + pw2] = patch[:ph2, :pw2] * rgb * 0.7 + region * 0.3
    return img
