"""The detections as data, for programs rather than eyes: the Detector's list, ``-out`` JSON and
``-save_labels`` files (the printout and the drawn image are :mod:`darknet_py.infer.draw`).

* :func:`to_detections` = one :class:`~darknet_py.structures.detections.Detection` per line of the
  ``detector test`` printout (:func:`~darknet_py.infer.draw.detection_lines`), in its order, with
  its pixel box: what :class:`~darknet_py.infer.detector.Detector` returns.
* :func:`detection_to_json` / :class:`JsonOutWriter` = ``detection_to_json`` and the ``-out`` file
  framing of ``test_detector`` (byte-identical text).
* :func:`label_lines` / :func:`write_labels` = ``-save_labels`` lines
  (``%d %2.4f %2.4f %2.4f %2.4f``) and their file.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

import numpy as np
import torch

from ..errors import DataError
from ..files import AtomicTextWriter, PathLike, atomic_write_bytes
from ..structures.detections import Detection, DetectionSet, ImageDetections
from .draw import _class_name, _pixel_boxes, _printout_order, _shown, actual_detections

__all__ = ["to_detections", "detection_to_json", "JsonOutWriter", "label_lines", "write_labels"]


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
        thr = np.float32(thresh)
        pixels = _pixel_boxes(boxes, im_w, im_h)
        for o in _printout_order(boxes, selected):
            i, best = selected[o]
            l, t, w, h = pixels[i]
            others = [int(j) for j in np.nonzero(probs[i] > thr)[0] if j != best]
            for j in [best] + others:
                out.append(Detection(j, _class_name(names, j), float(probs[i, j]),
                                     tuple(float(v) for v in boxes[i]),
                                     int(l), int(t), int(w), int(h)))
    return ImageDetections(path, out, dets)


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

    def __init__(self, path: PathLike):
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


def write_labels(path: PathLike, dets: DetectionSet, thresh: float = 0.25) -> None:
    """Write ``-save_labels`` lines to ``path`` (the label path of the image), atomically."""
    text = "".join(line + "\n" for line in label_lines(dets, thresh))
    try:
        atomic_write_bytes(os.fspath(path), text.encode())
    except OSError as e:
        raise DataError(f"cannot write the label file: {e.strerror}", file=os.fspath(path)) \
            from None
