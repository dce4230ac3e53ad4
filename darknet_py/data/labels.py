"""YOLO label files: ``<class> <x_center> <y_center> <width> <height>`` per line, relative to the
image size (Darknet's ``read_boxes`` in ``data.c``).

:func:`read_labels` returns the boxes Darknet could use as an ``(M, 5)`` float32 array
``(class, x, y, w, h)`` and a list of warnings, each naming the file and line, for the rows
Darknet's ``fill_truth_detection``/``correct_boxes`` would reject or change ("Wrong annotation").

Rows dropped (with a warning):

* a line that is not 5 numbers (Darknet's ``fscanf`` loop silently stops at the first such line
  and misreads the rest of the file; we skip the line and go on), or whose class is not an integer;
* NaN / inf in any field (Darknet would put the NaN box into the truth and the loss);
* class id outside ``[0, classes-1]`` (Darknet: ``Wrong annotation: class_id = ...``; a negative
  id is not checked by Darknet and would index out of bounds);
* ``w <= 0`` or ``h <= 0`` (Darknet drops them silently as smaller than one pixel);
* ``x == 0 and y == 0`` and boxes lying entirely outside ``[0,1]`` (``correct_boxes`` marks them
  999999 and ``fill_truth_detection`` drops them with
  ``Wrong annotation: x = 0, y = 0, < 0 or > 1``).

Rows kept with a warning: boxes that stick out of ``[0,1]`` (centre outside, ``w > 1``, ``h > 1``,
or an edge more than :data:`EDGE_TOLERANCE` outside); like Darknet the augmentation clips them to
the image.

A missing label file means no boxes (Darknet: ``Can't open label file. (This can be normal only if
you use MSCOCO)``); an empty file is a background image without a warning.
Extra columns after the fifth are ignored with a warning.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import List, Optional, Set

import numpy as np

from ..errors import DataError
from ..structures.boxes import xywh_to_xyxy

log = logging.getLogger("darknet_py.data")

_reported: Set[str] = set()

# Box edges may stick out of [0,1] by this much without a warning (label converters that work in
# whole pixels are often 1 px off at the border; Darknet clips silently either way).
EDGE_TOLERANCE = 0.01


@dataclass(frozen=True)
class LabelIssue:
    """One problem of a label file: its line, a stable ``kind`` (``malformed``, ``extra-columns``,
    ``class-not-integer``, ``nan``, ``class-out-of-range``, ``nonpositive-size``, ``zero-xy``,
    ``outside-image``, ``extends-outside``), the message, and whether the row was dropped."""

    line: int
    kind: str
    message: str
    dropped: bool


@dataclass
class LabelFile:
    """What :func:`read_labels` found: usable boxes ``(M, 5)`` float32 ``(class, x, y, w, h)``."""

    path: str
    boxes: np.ndarray
    warnings: List[str] = field(default_factory=list)
    missing: bool = False
    rows: Optional[np.ndarray] = None   # (N, 5) float32: every parsable row before validation
    #                                    (what Darknet's read_boxes returns; calc_anchors uses it)
    linenos: Optional[np.ndarray] = None  # (N,) line number of each row of ``rows``
    issues: List[LabelIssue] = field(default_factory=list)  # what ``warnings`` says, typed

    @property
    def rows_read(self) -> int:
        return 0 if self.rows is None else int(self.rows.shape[0])

    @property
    def num_boxes(self) -> int:
        return int(self.boxes.shape[0])


def _empty() -> np.ndarray:
    return np.zeros((0, 5), np.float32)


def _parse_rows(text: str, issues: List[LabelIssue]) -> tuple:
    """Parse text into (rows float32 (N,5), line numbers (N,)). Fast path for clean files."""
    tokens = text.split()
    if not tokens:
        return _empty(), np.zeros(0, np.int64)
    lines = text.splitlines()
    if len(tokens) == 5 * sum(1 for ln in lines if ln.strip()):
        try:
            arr = np.array(tokens, dtype=np.float64).reshape(-1, 5)
        except ValueError:
            arr = None
        if arr is not None and np.all(np.floor(arr[:, 0]) == arr[:, 0]) and all(
                len(ln.split()) == 5 for ln in lines if ln.strip()):
            linenos = np.array([i + 1 for i, ln in enumerate(lines) if ln.strip()], np.int64)
            return arr, linenos
    rows, linenos = [], []
    for i, ln in enumerate(lines, start=1):
        parts = ln.split()
        if not parts:
            continue
        if len(parts) < 5:
            issues.append(LabelIssue(i, "malformed", f"expected 'class x y w h', got "
                                                     f"'{ln.strip()}' (line skipped)", True))
            continue
        try:
            vals = [float(p) for p in parts[:5]]
        except ValueError:
            issues.append(LabelIssue(i, "malformed", f"not numbers: '{ln.strip()}' (line skipped)",
                                     True))
            continue
        if not (math.isfinite(vals[0]) and float(vals[0]).is_integer()):
            issues.append(LabelIssue(i, "class-not-integer", f"class id '{parts[0]}' is not an "
                                     f"integer (line skipped)", True))
            continue
        if len(parts) > 5:
            issues.append(LabelIssue(i, "extra-columns", f"{len(parts) - 5} extra column(s) ignored",
                                     False))
        rows.append(vals)
        linenos.append(i)
    if not rows:
        return _empty(), np.zeros(0, np.int64)
    return np.array(rows, np.float64), np.array(linenos, np.int64)


def validate_boxes(arr: np.ndarray, linenos: np.ndarray, classes: Optional[int],
                   issues: List[LabelIssue]) -> np.ndarray:
    """Drop / flag rows as described in the module docstring; returns the kept rows (float32)."""
    if arr.shape[0] == 0:
        return _empty()
    with np.errstate(over="ignore"):     # 1e300 becomes inf, as C's (float)atof gives it,
        b = arr.astype(np.float32)       # and is reported below as one label line
    cls, x, y, w, h = b.T
    finite = np.isfinite(b).all(axis=1)
    with np.errstate(invalid="ignore"):
        left, top, right, bottom = xywh_to_xyxy(b[:, 1:5]).T   # float32, as Darknet's float
        bad_cls = (cls < 0) if classes is None else ((cls < 0) | (cls >= classes))
        nonpos = (w <= 0) | (h <= 0)
        zero_xy = (x == 0) & (y == 0)
        outside = (right < 0) | (bottom < 0) | (left > 1) | (top > 1)
        tol = EDGE_TOLERANCE
        sticks_out = (left < -tol) | (top < -tol) | (right > 1 + tol) | (bottom > 1 + tol) \
            | (x <= 0) | (x > 1) | (y <= 0) | (y > 1) | (w > 1) | (h > 1)
    drop = ~finite | bad_cls | nonpos | zero_xy | outside
    flagged = np.nonzero(drop | sticks_out)[0]
    for r in flagged:   # only rows with problems: reporting, not the hot path
        ln = int(linenos[r])
        vals = (f"class={arr[r, 0]:g} x={arr[r, 1]:g} y={arr[r, 2]:g} w={arr[r, 3]:g} "
                f"h={arr[r, 4]:g}")
        if not finite[r]:
            kind, why = "nan", "NaN or inf"
        elif bad_cls[r]:
            rng = "must be >= 0" if classes is None else f"should be [from 0 to {classes - 1}]"
            kind, why = "class-out-of-range", f"class_id = {int(arr[r, 0])} {rng}"
        elif nonpos[r]:
            kind, why = "nonpositive-size", "width or height <= 0"
        elif zero_xy[r]:
            kind, why = "zero-xy", "x = 0, y = 0"
        elif outside[r]:
            kind, why = "outside-image", "box lies entirely outside the image [0,1]"
        else:
            issues.append(LabelIssue(ln, "extends-outside", f"Wrong annotation: box extends "
                                     f"outside [0,1] ({vals}); clipped to the image", False))
            continue
        issues.append(LabelIssue(ln, kind, f"Wrong annotation: {why} ({vals}); box skipped", True))
    return np.ascontiguousarray(b[~drop])


def read_labels(path: str, classes: Optional[int] = None) -> LabelFile:
    """Read and validate one YOLO label file (see the module docstring)."""
    path = os.fspath(path)
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except FileNotFoundError:
        return LabelFile(path, _empty(), [f"{path}: Can't open label file (no boxes: image used "
                                          f"as background)"], missing=True, rows=_empty(),
                         linenos=np.zeros(0, np.int64))
    except IsADirectoryError:
        raise DataError("label path is a directory", file=path) from None
    except OSError as e:
        raise DataError(f"cannot read label file: {e.strerror}", file=path) from None
    issues: List[LabelIssue] = []
    arr, linenos = _parse_rows(text, issues)
    boxes = validate_boxes(arr, linenos, classes, issues)
    warnings = [f"{path}:{i.line}: {i.message}" for i in issues]
    with np.errstate(over="ignore"):     # values beyond float range: inf, reported above
        rows = arr.astype(np.float32)
    return LabelFile(path, boxes, warnings, missing=False, rows=rows,
                     linenos=linenos, issues=issues)


def report_once(label: LabelFile, logger: Optional[logging.Logger] = None) -> None:
    """Log a label file's warnings the first time this process sees the file."""
    if not label.warnings or label.path in _reported:
        return
    _reported.add(label.path)
    lg = logger or log
    for w in label.warnings:
        lg.warning(w)
