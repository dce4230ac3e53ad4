"""Darknet's detection outputs: the ``detector test`` printout, the drawn image, ``-out`` JSON and
``-save_labels`` files.

* :func:`detection_lines` = the text part of ``draw_detections_v3`` (``image.c``): detections whose
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
* :func:`detection_to_json` / :class:`JsonOutWriter` = ``detection_to_json`` and the ``-out`` file
  framing of ``test_detector`` (byte-identical text).
* :func:`label_lines` = ``-save_labels`` lines (``%d %2.4f %2.4f %2.4f %2.4f``).
"""
from __future__ import annotations

import math
import os
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import DataError
from ..structures.detections import Detection, DetectionSet, ImageDetections

__all__ = [
    "get_color", "class_color", "actual_detections", "detection_lines", "demo_detection_lines",
    "detection_layer_lines",
    "predicted_line", "image_stdout", "draw_detections", "detection_to_json", "JsonOutWriter",
    "label_lines", "write_labels", "to_detections",
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


def _c_round(v: float) -> float:
    """C ``round()``: half away from zero, keeps the sign of zero."""
    return math.copysign(math.floor(abs(v) + 0.5), v)


def _pixel_box(box: np.ndarray, im_w: int, im_h: int) -> Tuple[float, float, float, float]:
    x, y, w, h = (np.float32(v) for v in box)
    two = np.float32(2)
    left = np.float32((x - w / two) * np.float32(im_w))
    top = np.float32((y - h / two) * np.float32(im_h))
    return (_c_round(float(left)), _c_round(float(top)),
            _c_round(float(np.float32(w * np.float32(im_w)))),
            _c_round(float(np.float32(h * np.float32(im_h)))))


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
    lefts = np.array([np.float32(boxes[i, 0] - boxes[i, 2] / np.float32(2)) for i, _ in selected],
                     dtype=np.float32)
    order = np.argsort(lefts, kind="stable")  # qsort(compare_by_lefts); glibc's is a merge sort
    thr = np.float32(thresh)
    lines: List[str] = []
    for o in order:
        i, best = selected[o]
        tail = ""
        if ext_output:
            l, t, w, h = _pixel_box(boxes[i], im_w, im_h)
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
    lines: List[str] = []
    for i in np.nonzero(above.any(axis=1))[0]:
        text = ", ".join(f"{_class_name(names, int(j))}: {_percent(probs[i, j])} "
                         for j in np.nonzero(above[i])[0])
        if ext_output:
            x, y, w, h = (np.float32(v) if math.isfinite(v) else np.float32(0.5)
                          for v in boxes[i])
            x, y, w, h = (min(v, np.float32(1)) for v in (x, y, w, h))
            left = max(0, int((float(x) - float(w) / 2.0) * frame_w))
            top = max(0, int((float(y) - float(h) / 2.0) * frame_h))
            text += "\t(left_x: %4.0f   top_y: %4.0f   width: %4.0f   height: %4.0f)" % (
                left, top, float(w * np.float32(frame_w)), float(h * np.float32(frame_h)))
        lines.append(text)
    return lines


def detection_layer_lines(heads: Sequence[Any]) -> List[str]:
    """`` Detection layer: <index> - type = <LAYER_TYPE> `` for every head (``test_detector``)."""
    from ..model.decode import as_spec

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


def to_detections(path: str, dets: DetectionSet, names: Sequence[str], thresh: float = 0.25
                  ) -> ImageDetections:
    """The user-facing list: one :class:`Detection` per (box, class above ``thresh``), in the
    printout order (left to right, best class first), pixel box as ``-ext_output`` prints it."""
    out: List[Detection] = []
    im_w, im_h = dets.image_size
    selected = actual_detections(dets, thresh, names)
    if selected:
        boxes = dets.boxes.detach().to(torch.float32).cpu().numpy()
        probs = dets.probs.detach().to(torch.float32).cpu().numpy()
        lefts = np.array([np.float32(boxes[i, 0] - boxes[i, 2] / np.float32(2)) for i, _ in selected],
                         dtype=np.float32)
        thr = np.float32(thresh)
        for o in np.argsort(lefts, kind="stable"):
            i, best = selected[o]
            l, t, w, h = _pixel_box(boxes[i], im_w, im_h)
            others = [int(j) for j in np.nonzero(probs[i] > thr)[0] if j != best]
            for j in [best] + others:
                out.append(Detection(j, _class_name(names, j), float(probs[i, j]),
                                     tuple(float(v) for v in boxes[i]),
                                     int(l), int(t), int(w), int(h)))
    return ImageDetections(path, out, dets)


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
    import cv2

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
    for o in np.argsort(best_probs, kind="stable"):  # qsort(compare_by_probs): ascending
        i, best = selected[o]
        red, green, blue = class_color(best, classes)
        x, y, w, h = (float(v) for v in boxes[i])
        left = int((x - w / 2.0) * im_w)
        right = int((x + w / 2.0) * im_w)
        top = int((y - h / 2.0) * im_h)
        bot = int((y + h / 2.0) * im_h)
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


# ------------------------------------------------------------------------------- -out and labels
def _json_string(text: str) -> str:
    """A JSON string literal. Darknet prints names and file names raw between quotes, so a name
    with ``"`` or ``\\`` (or a control character) makes its output invalid JSON; darknet-py
    escapes them (deliberately), and prints every other name exactly as Darknet does (non-ASCII
    characters stay as they are)."""
    import json
    return json.dumps(str(text), ensure_ascii=False)


def detection_to_json(dets: DetectionSet, names: Sequence[str], frame_id: int,
                      filename: Optional[str] = None,
                      track_ids: Optional[Sequence[int]] = None) -> str:
    """Darknet's ``detection_to_json``: every (row, class) with probability above 0.005 (the
    detections are already thresholded), names starting with ``dont_show`` skipped; names and
    the file name are escaped as JSON strings (:func:`_json_string`).
    ``track_ids`` (one per row, from tracking) adds ``"track_id":N`` to each object."""
    if filename is not None:
        text = '{\n "frame_id":%d, \n "filename":%s, \n "objects": [ \n' % (frame_id,
                                                                          _json_string(filename))
    else:
        text = '{\n "frame_id":%d, \n "objects": [ \n' % frame_id
    probs = dets.probs.detach().to(torch.float32).cpu().numpy()
    boxes = dets.boxes.detach().to(torch.float32).cpu().numpy()
    shown = _shown(names)
    objects: List[str] = []
    rows, cols = np.nonzero(probs > np.float32(0.005))  # row-major: Darknet's i then j loops
    for i, j in zip(rows.tolist(), cols.tolist()):
        if j < shown.size and not shown[j]:
            continue
        x, y, w, h = (float(v) for v in boxes[i])
        objects.append(
            '  {"class_id":%d, "name":%s, "relative_coordinates":{"center_x":%f, "center_y":%f, '
            '"width":%f, "height":%f}, "confidence":%f%s}'
            % (j, _json_string(_class_name(names, j)), x, y, w, h, float(probs[i, j]),
               "" if track_ids is None else ', "track_id":%d' % int(track_ids[i])))
    return text + ", \n".join(objects) + "\n ] \n}"


class JsonOutWriter:
    """The ``-out result.json`` file of ``detector test``: ``[``, entries separated by ``, ``, ``]``.

    Written into a temp file next to ``path`` and renamed over it by :meth:`close` (a run
    that fails calls :meth:`abort` instead, or leaves the ``with`` block with an exception): an
    existing result file is replaced only by a whole new one, never emptied by a failed run.
    :meth:`add` numbers frames from 1 like Darknet's ``json_image_id``.
    """

    def __init__(self, path: Union[str, os.PathLike]):
        from ..files import AtomicTextWriter
        self.path = os.fspath(path)
        self._out = AtomicTextWriter(self.path)
        self.frame_id = 0

    def _write(self, data: bytes) -> None:
        try:
            if self._out._f is None and not self._out.done:
                self._out.write(b"[\n")
            self._out.write(data)
        except OSError as e:
            self._out.abort()
            raise DataError(f"cannot write the -out file: {e.strerror}", file=self.path) from None

    def add(self, dets: DetectionSet, names: Sequence[str], filename: Optional[str],
            track_ids: Optional[Sequence[int]] = None) -> None:
        self._write((b", \n" if self.frame_id else b"") + detection_to_json(
            dets, names, self.frame_id + 1, filename, track_ids).encode("utf-8"))
        self.frame_id += 1

    def close(self) -> None:
        """Finish the file (``]``) and put it in place."""
        if self._out.done:
            return
        self._write(b"\n]")
        try:
            self._out.commit()
        except OSError as e:
            raise DataError(f"cannot write the -out file: {e.strerror}", file=self.path) from None

    def abort(self) -> None:
        """Drop what was written; ``path`` stays as it was."""
        self._out.abort()

    def __enter__(self) -> "JsonOutWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def label_lines(dets: DetectionSet, thresh: float = 0.25) -> List[str]:
    """``-save_labels`` lines: ``class x y w h`` (``%d %2.4f %2.4f %2.4f %2.4f``) of the best class
    above ``thresh`` of every row, in array order (no ``dont_show`` filter, as in Darknet)."""
    if len(dets) == 0:
        return []
    probs = dets.probs.detach().to(torch.float32).cpu().numpy()
    boxes = dets.boxes.detach().to(torch.float32).cpu().numpy()
    masked = np.where(probs > np.float32(thresh), probs, -np.inf)
    best = masked.argmax(axis=1)
    lines = []
    for i in range(len(best)):
        if np.isfinite(masked[i, best[i]]):
            x, y, w, h = (float(v) for v in boxes[i])
            lines.append("%d %2.4f %2.4f %2.4f %2.4f" % (int(best[i]), x, y, w, h))
    return lines


def write_labels(path: Union[str, os.PathLike], dets: DetectionSet, thresh: float = 0.25) -> None:
    """Write ``-save_labels`` lines to ``path`` (the label path of the image), atomically."""
    from ..files import atomic_write_bytes
    text = "".join(line + "\n" for line in label_lines(dets, thresh))
    try:
        atomic_write_bytes(os.fspath(path), text.encode())
    except OSError as e:
        raise DataError(f"cannot write the label file: {e.strerror}", file=os.fspath(path)) \
            from None
