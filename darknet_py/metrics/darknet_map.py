"""Darknet's detection metric: ``detector map`` (``validate_detector_map`` in AlexeyAB's detector.c).

:func:`darknet_map` takes, per image, the detections that ``get_network_boxes`` (objectness
threshold 0.005) + NMS (0.45) produced and the ground truth read from the image's YOLO label file,
and computes exactly what Darknet computes:

* **Collection.** For every detection row and every class with ``prob > 0`` (after NMS, so
  suppressed classes are skipped) one entry ``(prob, class, image, box)`` is made, row-major
  (row, then class), images in list order. Its truth is the label of the *same class* with the
  highest IoU that is strictly greater than ``iou_thresh`` (and than 0; the first one wins a tie);
  the index of that truth is global over the whole list (``unique_truth_count + j``).
* **Statistics at ``thresh``** (Darknet's own loop, done while collecting, *not* from the sorted
  list): an entry with ``prob > thresh`` is a TP if it has a truth and no earlier entry *of the
  same image* (any probability, in collection order) has the same truth; otherwise it is an FP.
  The average IoU is the float32 sum of the TPs' IoUs divided by ``TP + FP``.
* **Ranking.** Entries are sorted by probability, descending, with C's ``qsort``. glibc's qsort is
  a merge sort (stable) for arrays that fit in memory, so equal probabilities keep collection
  order: image order, then row order, then class order. We use a stable sort, which makes the
  order of ties deterministic and the same as on the Darknet build that made the oracle.
* **TP/FP per rank**: an entry that has a truth is a TP the first time that truth is hit in rank
  order, otherwise an FP (a duplicate); an entry without a truth is an FP.
* **AP** per class from the precision/recall at every rank: ``map_points=0`` is the area under the
  monotone (running-maximum) precision curve at every recall change; ``map_points=N`` averages the
  best precision at recall >= ``i * (1/(N-1))`` for ``i = 0..N-1`` (11: VOC2007, 101: COCO).
  Darknet's source writes ``i * 1.0 / (N-1)``, but its ``-Ofast`` build (the default Makefile and
  the oracle) turns the loop-invariant division into a multiplication by the reciprocal, so e.g.
  point 3 of 11 is 0.30000000000000004 and a recall of exactly 3/10 does not reach it. The
  oracle's 11- and 101-point numbers agree only with the reciprocal form, which we use.
  Classes without any truth get AP 0. mAP is the mean over *all* classes of the data file.

Floating point follows Darknet's types: IoUs, probabilities and the thresh statistics are float32,
precision/recall/AP are float64, and sums are done sequentially in Darknet's order (numpy
``cumsum``), so the printed digits come out the same. One deliberate difference: Darknet reads past
its arrays when there are no detections at all; we report AP 0 for every class then.

Row order matters only for ties and for the duplicate rule of the thresh statistics. Darknet's
rows are in the order ``do_nms_sort`` / ``diounms_sort`` leave them (sorted per class in place);
:func:`darknet_map` uses the rows in the order they are given (``darknet_py.infer.nms`` returns them in
Darknet's order).

Label files are read by :mod:`darknet_py.data` (``label_path`` + ``read_labels(...).rows``, i.e.
``replace_image_to_label`` + ``read_boxes``); see :mod:`darknet_py.infer.evaluate`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Union

import numpy as np
import torch

from ..errors import DataError
from ..structures.boxes import pairwise_iou

ArrayLike = Union[np.ndarray, "torch.Tensor", Sequence]  # noqa: F821 (torch only as a type name)


# ---------------------------------------------------------------------------------------------
# IoU (box.c: overlap / box_intersection / box_union / box_iou), float32, vectorised
# ---------------------------------------------------------------------------------------------

def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), cx/cy/w/h, float32:
    Darknet's ``box_iou`` from :mod:`darknet_py.structures.boxes` (the one IoU family), on
    numpy arrays."""

    ta = torch.from_numpy(np.ascontiguousarray(a, np.float32)).reshape(-1, 4)
    tb = torch.from_numpy(np.ascontiguousarray(b, np.float32)).reshape(-1, 4)
    return pairwise_iou(ta, tb).numpy()


# ---------------------------------------------------------------------------------------------
# the metric
# ---------------------------------------------------------------------------------------------

@dataclass
class ClassCurve:
    """One class's ranked entries (the ones Darknet's AP is computed from), in rank order."""

    #: float32 probability of each entry, descending
    confidence: np.ndarray
    #: TP flag in rank order (first hit of a truth)
    tp: np.ndarray
    #: float64 precision and recall after each entry (Darknet's ``pr[class][rank]``)
    precision: np.ndarray
    recall: np.ndarray
    #: labelled boxes of the class
    truth_count: int


@dataclass
class MapResult:
    """Everything ``validate_detector_map`` prints, and the per-class numbers behind it."""

    classes: int
    names: List[str]
    iou_thresh: float
    thresh: float
    map_points: int
    #: (C,) float64 average precision per class (0..1)
    ap: np.ndarray
    #: (C,) int: TP / FP among entries with prob > thresh (Darknet's ``tp_for_thresh_per_class``)
    tp_per_class: np.ndarray
    fp_per_class: np.ndarray
    #: (C,) int: number of truths per class, and of ranked entries per class
    truth_count_per_class: np.ndarray
    detection_count_per_class: np.ndarray
    #: (C,) float32: average IoU of the TPs at thresh per class (Darknet's avg_iou_per_class)
    avg_iou_per_class: np.ndarray
    detections_count: int
    unique_truth_count: int
    #: global statistics at ``thresh``
    tp: int
    fp: int
    fn: int
    #: float32 values as Darknet computes them (NaN where Darknet divides 0 by 0)
    precision: float
    recall: float
    f1: float
    average_iou: float
    #: mean of ``ap`` over all classes (float64), Darknet's return value
    mean_ap: float
    per_image_truth_count: List[int] = field(default_factory=list)
    #: per class the ranked entries with precision/recall (what the PR and F1 plots draw)
    curves: List[ClassCurve] = field(default_factory=list)
    #: (C+1, C+1) int confusion matrix at ``thresh``/``iou_thresh``, rows = truth, columns =
    #: prediction, index C = background (see :func:`_image_confusion`)
    confusion: Optional[np.ndarray] = None

    @property
    def map(self) -> float:
        return self.mean_ap


def _as_numpy(x, dtype) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _truth_array(truth, image_index: int, classes: int) -> np.ndarray:
    if truth is None:
        return np.zeros((0, 5), np.float32)
    arr = _as_numpy(truth, np.float32)
    if arr.size == 0:
        return np.zeros((0, 5), np.float32)
    if arr.ndim != 2 or arr.shape[1] < 5:
        raise DataError(f"truths of image {image_index} must be an (M, 5) array "
                        f"class, cx, cy, w, h; got shape {tuple(arr.shape)}")
    ids = arr[:, 0]
    bad = (ids < 0) | (ids >= classes) | (ids != np.floor(ids))
    if bad.any():
        raise DataError(f"truth class id {ids[bad][0]:g} of image {image_index} is outside "
                        f"0..{classes - 1}", value=float(ids[bad][0]))
    return arr[:, :5]


def _sequential_sum(values: np.ndarray) -> float:
    """Left-to-right float64 sum (as a C loop), not numpy's pairwise sum."""
    if values.size == 0:
        return 0.0
    return float(np.cumsum(values, dtype=np.float64)[-1])


def _class_ap(prec: np.ndarray, rec: np.ndarray, map_points: int) -> float:
    """AP of one class from its precision/recall after each of its ranked entries.

    ``prec``/``rec`` are float64, in rank order, only at this class's ranks: Darknet's arrays
    carry the same values across other classes' ranks, which changes none of the sums below.
    """
    k = prec.size
    if k == 0:
        return 0.0
    # best precision at this rank or any later one (Darknet's running max while walking back)
    suffix_max = np.maximum.accumulate(prec[::-1])[::-1]
    if map_points == 0:
        # walking ranks from last to first: recall step into rank i times best precision from i-1
        steps = np.empty(k, np.float64)
        steps[1:] = rec[1:] - rec[:-1]
        steps[0] = rec[0] - 0.0
        best = np.empty(k, np.float64)
        best[1:] = suffix_max[:-1]
        best[0] = suffix_max[0]
        terms = steps * best
        return _sequential_sum(terms[::-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        # -Ofast's reciprocal math (see the module docstring), not point / (N-1)
        cur_recall = np.arange(map_points, dtype=np.float64) * (1.0 / np.float64(map_points - 1))
    # recall is non-decreasing: the ranks with recall >= r form a suffix
    start = np.searchsorted(rec, cur_recall, side="left")
    valid = (start < k) & ~np.isnan(cur_recall)
    best = np.where(valid, suffix_max[np.minimum(start, k - 1)], 0.0)
    best = np.maximum(best, 0.0)
    return _sequential_sum(best) / map_points


def darknet_map(detections: Sequence, truths: Sequence[Optional[ArrayLike]], classes: int,
                names: Optional[Sequence[str]] = None, iou_thresh: float = 0.5,
                thresh: float = 0.25, map_points: int = 0,
                difficult_truths: Optional[Sequence[Optional[ArrayLike]]] = None,
                progress: Optional[Callable[[int, int], None]] = None) -> MapResult:
    """Darknet's ``validate_detector_map`` on precomputed detections.

    Args:
        detections: per image a :class:`~darknet_py.structures.detections.DetectionSet` (``boxes`` (N, 4)
            relative cx, cy, w, h; ``probs`` (N, C) after thresholding and NMS), in the order of
            the valid list. Any object with ``boxes`` and ``probs`` works.
        truths: per image an (M, 5) array ``class, cx, cy, w, h`` (relative), or ``None`` /
            empty for an image without labels.
        classes: number of classes (the last detection layer's ``classes``).
        names: class names (for the report); defaults to ``"0".."C-1"``.
        iou_thresh: ``-iou_thresh`` (a match needs IoU strictly greater).
        thresh: ``-thresh``, the confidence for the TP/FP/FN/precision/recall/F1/IoU line.
        map_points: ``-points``: 0 = area under the curve, 11 = VOC2007, 101 = COCO.
        difficult_truths: per image the ``difficult=`` list's truths: an entry that matches no
            truth but a difficult one (same class, IoU > iou_thresh) is dropped from the ranking
            (Darknet still counts it as an FP at ``thresh``).
        progress: called with (images done, images) while the images are matched; it may raise
            to stop the computation (the trainer does on a signal).

    Returns:
        a :class:`MapResult`; :func:`format_map_report` prints it like Darknet. Besides the
        printed numbers it carries the per-class ranked curves (:class:`ClassCurve`) and the
        confusion matrix at ``thresh`` (:func:`_image_confusion`) that ``-plots`` draws.
    """
    if len(detections) != len(truths):
        raise DataError(f"{len(detections)} detection sets but {len(truths)} truth sets")
    if difficult_truths is not None and len(difficult_truths) != len(truths):
        raise DataError(f"{len(difficult_truths)} difficult truth sets for {len(truths)} images")
    if map_points < 0:
        map_points = 0
    names = [str(i) for i in range(classes)] if names is None else [str(n) for n in names]
    iou_thresh32 = np.float32(iou_thresh)
    thresh32 = np.float32(thresh)

    col = _collect(detections, truths, classes, iou_thresh32, thresh32, difficult_truths,
                   progress)
    stats = _thresh_statistics(col, classes)
    ranked = _rank(col)
    ap, curves, detection_count_per_class = _class_curves(ranked, col.truth_classes_count,
                                                          classes, map_points)
    mean_ap = _sequential_sum(ap) / classes if classes else 0.0
    tp, fp = stats["tp"], stats["fp"]
    return MapResult(
        classes=classes, names=names, iou_thresh=float(iou_thresh32), thresh=float(thresh32),
        map_points=int(map_points), ap=ap, tp_per_class=col.tp_per_class,
        fp_per_class=col.fp_per_class, truth_count_per_class=col.truth_classes_count,
        detection_count_per_class=detection_count_per_class.astype(np.int64),
        avg_iou_per_class=stats["avg_iou_per_class"], detections_count=int(ranked.prob.size),
        unique_truth_count=col.unique_truth_count, tp=tp, fp=fp,
        fn=col.unique_truth_count - tp, precision=stats["precision"], recall=stats["recall"],
        f1=stats["f1"], average_iou=stats["average_iou"], mean_ap=float(mean_ap),
        per_image_truth_count=col.per_image_truths, curves=curves, confusion=col.confusion)


@dataclass
class _Collected:
    """The entries of all images in collection order (only those kept for the ranking), and the
    accumulators of the statistics at ``thresh``."""

    prob: np.ndarray
    cls: np.ndarray
    truth: np.ndarray            # global truth index or -1
    truth_classes_count: np.ndarray
    unique_truth_count: int
    per_image_truths: List[int]
    tp_per_class: np.ndarray
    fp_per_class: np.ndarray
    tp_iou: np.ndarray           # IoUs of the TPs at thresh, collection order
    tp_iou_class: np.ndarray     # their classes
    confusion: np.ndarray        # (C+1, C+1) at thresh, rows truth, columns prediction


@dataclass
class _Ranked:
    """Entries sorted by probability (descending, stable) with their TP flag in rank order."""

    prob: np.ndarray
    cls: np.ndarray
    is_tp: np.ndarray


def _concat(parts: List[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def _collect(detections: Sequence, truths: Sequence, classes: int, iou_thresh32: np.float32,
             thresh32: np.float32, difficult_truths: Optional[Sequence],
             progress: Optional[Callable[[int, int], None]] = None) -> _Collected:
    """Darknet's collection loop over the images (matching, thresh statistics, difficult)."""
    truth_classes_count = np.zeros(classes, np.int64)
    unique_truth_count = 0
    per_image_truths: List[int] = []
    entry_prob: List[np.ndarray] = []
    entry_class: List[np.ndarray] = []
    entry_truth: List[np.ndarray] = []
    tp_iou_parts: List[np.ndarray] = []
    tp_iou_ids: List[np.ndarray] = []
    tp_per_class = np.zeros(classes, np.int64)
    fp_per_class = np.zeros(classes, np.int64)
    confusion = np.zeros((classes + 1, classes + 1), np.int64)

    for image_index, (dets, truth) in enumerate(zip(detections, truths)):
        if progress is not None and image_index:
            progress(image_index, len(truths))
        truth_arr = _truth_array(truth, image_index, classes)
        truth_cls = truth_arr[:, 0].astype(np.int64)
        truth_boxes = truth_arr[:, 1:5]
        n_truth = truth_arr.shape[0]
        truth_classes_count += np.bincount(truth_cls, minlength=classes)[:classes]

        probs = _as_numpy(dets.probs, np.float32)
        boxes = _as_numpy(dets.boxes, np.float32)
        if probs.ndim != 2 or probs.shape[0] != boxes.shape[0]:
            raise DataError(f"detections of image {image_index}: probs {probs.shape} do not "
                            f"match boxes {boxes.shape}")
        if probs.shape[0] and probs.shape[1] != classes:
            raise DataError(f"detections of image {image_index} have {probs.shape[1]} classes, "
                            f"expected {classes}")
        rows, cls = np.nonzero(probs > 0)          # row-major: row, then class (Darknet's loops)
        prob = probs[rows, cls]
        n_entries = rows.size

        # matching: the same-class truth with the highest IoU > iou_thresh (first of ties)
        truth_local = np.full(n_entries, -1, np.int64)
        max_iou = np.zeros(n_entries, np.float32)
        keep = np.ones(n_entries, bool)
        iou = np.zeros((n_entries, n_truth), np.float32)
        if n_entries and n_truth:
            iou = box_iou_matrix(boxes, truth_boxes)[rows]            # (E, M)
            ok = (iou > iou_thresh32) & (iou > 0) & (cls[:, None] == truth_cls[None, :])
            masked = np.where(ok, iou, np.float32(-1))
            best = np.argmax(masked, axis=1)                          # first of equal maxima
            matched = ok.any(axis=1)
            truth_local = np.where(matched, best, -1)
            max_iou = np.where(matched, iou[np.arange(n_entries), best], np.float32(0))
            max_iou = max_iou.astype(np.float32)
        truth_index = np.where(truth_local >= 0, unique_truth_count + truth_local, -1)
        if difficult_truths is not None and n_entries:
            dif = _truth_array(difficult_truths[image_index], image_index, classes)
            if dif.shape[0]:
                dif_iou = box_iou_matrix(boxes, dif[:, 1:5])[rows]
                dif_hit = ((dif_iou > iou_thresh32)
                           & (cls[:, None] == dif[None, :, 0].astype(np.int64))).any(axis=1)
                keep = ~((truth_index < 0) & dif_hit)

        # statistics at thresh: first entry (collection order, any prob) of its truth is the TP
        above = prob > thresh32
        first_of_truth = np.zeros(n_entries, bool)
        matched_pos = np.flatnonzero(truth_index >= 0)
        if matched_pos.size:
            _, first = np.unique(truth_index[matched_pos], return_index=True)
            first_of_truth[matched_pos[first]] = True
        tp_mask = above & first_of_truth
        fp_mask = above & ~first_of_truth
        tp_per_class += np.bincount(cls[tp_mask], minlength=classes)[:classes]
        fp_per_class += np.bincount(cls[fp_mask], minlength=classes)[:classes]
        tp_iou_parts.append(max_iou[tp_mask])
        tp_iou_ids.append(cls[tp_mask])
        confusion += _image_confusion(classes, cls, prob, truth_local, tp_mask, fp_mask, iou,
                                      truth_cls, iou_thresh32)

        entry_prob.append(prob[keep])
        entry_class.append(cls[keep])
        entry_truth.append(truth_index[keep])
        unique_truth_count += n_truth
        per_image_truths.append(n_truth)
    if progress is not None and len(truths):
        progress(len(truths), len(truths))

    return _Collected(
        prob=_concat(entry_prob, np.float32), cls=_concat(entry_class, np.int64),
        truth=_concat(entry_truth, np.int64), truth_classes_count=truth_classes_count,
        unique_truth_count=unique_truth_count, per_image_truths=per_image_truths,
        tp_per_class=tp_per_class, fp_per_class=fp_per_class,
        tp_iou=_concat(tp_iou_parts, np.float32), tp_iou_class=_concat(tp_iou_ids, np.int64),
        confusion=confusion)


def _image_confusion(classes: int, cls: np.ndarray, prob: np.ndarray, truth_local: np.ndarray,
                     tp_mask: np.ndarray, fp_mask: np.ndarray, iou: np.ndarray,
                     truth_cls: np.ndarray, iou_thresh32: np.float32) -> np.ndarray:
    """One image's confusion matrix at ``thresh`` (index ``classes`` = background).

    Built on Darknet's own decisions: every TP at thresh is a diagonal cell of its truth. Each
    FP at thresh (highest probability first) takes the not yet taken truth of *another* class
    with the highest IoU > ``iou_thresh`` (a class confusion), else it counts as predicted on
    background. Truths left over are missed (predicted background). So a truth row sums to the
    class's labelled boxes and a prediction column to the class's TP + FP at thresh.
    """
    conf = np.zeros((classes + 1, classes + 1), np.int64)
    n_truth = truth_cls.size
    taken = np.zeros(n_truth, bool)
    tp_truths = truth_local[tp_mask]
    taken[tp_truths] = True
    np.add.at(conf, (truth_cls[tp_truths], truth_cls[tp_truths]), 1)
    fp_pos = np.flatnonzero(fp_mask)
    if n_truth and fp_pos.size:
        # only an FP with another class's truth above iou_thresh can take one: the rest (with
        # an untrained model, hundreds of thousands) are background without the loop below
        could = ((truth_cls[None, :] != cls[fp_pos, None])
                 & (iou[fp_pos] > iou_thresh32)).any(axis=1)
        np.add.at(conf, (classes, cls[fp_pos[~could]]), 1)
        fp_pos = fp_pos[could]
    else:
        np.add.at(conf, (classes, cls[fp_pos]), 1)
        fp_pos = fp_pos[:0]
    fp_pos = fp_pos[np.argsort(-prob[fp_pos], kind="stable")]
    for e in fp_pos:
        p = int(cls[e])
        g = -1
        if n_truth:
            cand = (~taken) & (truth_cls != p) & (iou[e] > iou_thresh32)
            if cand.any():
                g = int(np.argmax(np.where(cand, iou[e], np.float32(-1))))
        if g >= 0:
            taken[g] = True
            conf[truth_cls[g], p] += 1
        else:
            conf[classes, p] += 1
    np.add.at(conf, (truth_cls[~taken], classes), 1)
    return conf


def _thresh_statistics(col: _Collected, classes: int) -> dict:
    """TP/FP, precision, recall, F1 and average IoU at thresh (float32, sequential sums like
    Darknet's accumulators)."""
    tp = int(col.tp_per_class.sum())
    fp = int(col.fp_per_class.sum())
    tp_ious = col.tp_iou
    avg_iou = np.float32(np.cumsum(tp_ious, dtype=np.float32)[-1]) if tp_ious.size else \
        np.float32(0)
    if tp + fp > 0:
        avg_iou = np.float32(avg_iou / np.float32(tp + fp))
    avg_iou_per_class = np.zeros(classes, np.float32)
    for c in np.unique(col.tp_iou_class):
        s = np.cumsum(tp_ious[col.tp_iou_class == c], dtype=np.float32)[-1]
        avg_iou_per_class[c] = np.float32(s / np.float32(col.tp_per_class[c]
                                                         + col.fp_per_class[c]))
    with np.errstate(divide="ignore", invalid="ignore"):
        tp32, fp32 = np.float32(tp), np.float32(fp)
        precision = np.float32(tp32 / (tp32 + fp32))
        recall = np.float32(tp32 / (tp32 + np.float32(col.unique_truth_count - tp)))
        f1 = np.float32(np.float32(np.float32(2) * precision) * recall / (precision + recall))
    return {"tp": tp, "fp": fp, "average_iou": float(avg_iou),
            "avg_iou_per_class": avg_iou_per_class, "precision": float(precision),
            "recall": float(recall), "f1": float(f1)}


def _rank(col: _Collected) -> _Ranked:
    """Descending probability, stable like glibc's merge-sort qsort; an entry is a TP the first
    time its truth is hit in rank order."""
    order = np.argsort(-col.prob, kind="stable")
    truth_sorted = col.truth[order]
    is_tp = np.zeros(order.size, bool)
    flagged = np.flatnonzero(truth_sorted >= 0)
    if flagged.size:
        _, first = np.unique(truth_sorted[flagged], return_index=True)
        is_tp[flagged[first]] = True
    return _Ranked(prob=col.prob[order], cls=col.cls[order], is_tp=is_tp)


def _class_curves(ranked: _Ranked, truth_classes_count: np.ndarray, classes: int,
                  map_points: int):
    """Per class precision/recall at each of its ranks, and its AP."""
    ap = np.zeros(classes, np.float64)
    curves: List[ClassCurve] = []
    detection_count_per_class = np.bincount(ranked.cls, minlength=classes)[:classes]
    by_class = np.argsort(ranked.cls, kind="stable")        # rank order kept inside a class
    bounds = np.concatenate([[0], np.cumsum(detection_count_per_class)])
    for c in range(classes):
        idx = by_class[bounds[c]:bounds[c + 1]]
        count = int(truth_classes_count[c])
        tp_flags = ranked.is_tp[idx]
        tp_cum = np.cumsum(tp_flags, dtype=np.int64)
        fp_cum = np.arange(1, idx.size + 1, dtype=np.int64) - tp_cum
        with np.errstate(divide="ignore", invalid="ignore"):
            prec = tp_cum.astype(np.float64) / (tp_cum + fp_cum).astype(np.float64)
        rec = tp_cum.astype(np.float64) / float(count) if count > 0 else \
            np.zeros(idx.size, np.float64)
        if idx.size:
            ap[c] = _class_ap(prec, rec, map_points)
        curves.append(ClassCurve(confidence=ranked.prob[idx], tp=tp_flags, precision=prec,
                                 recall=rec, truth_count=count))
    return ap, curves, detection_count_per_class


# ---------------------------------------------------------------------------------------------
# the printout
# ---------------------------------------------------------------------------------------------

def _c_float(value: float, fmt: str) -> str:
    """printf-style %f formatting with glibc's spelling of NaN/inf (x86's 0/0 NaN is negative)."""
    if math.isnan(value):
        return "-nan" if math.copysign(1.0, value) < 0 else "nan"
    if math.isinf(value):
        return "-inf" if value < 0 else "inf"
    return fmt % value


def format_map_report(result: MapResult, progress: bool = True, footer: bool = True) -> str:
    """Darknet's stdout of ``detector map`` from ``detections_count = ...`` to the end.

    Includes the `` rank = N of ranks = M \\r`` progress (every 100 ranks, carriage returns and
    no newline, as Darknet prints it) when ``progress`` is true, and the ``Set -points flag``
    help at the end when ``footer`` is true. The lines before (`` calculation mAP...``,
    `` Detection layer: ...``) are printed by the command.
    """
    n = result.detections_count
    out: List[str] = [f"\n detections_count = {n}, unique_truth_count = "
                      f"{result.unique_truth_count}  \n"]
    if progress:
        out.extend(f" rank = {r} of ranks = {n} \r" for r in range(0, n, 100))
    for c in range(result.classes):
        name = result.names[c] if c < len(result.names) else str(c)
        out.append("class_id = %d, name = %s, ap = %s%%   \t (TP = %d, FP = %d) \n" % (
            c, name, _c_float(result.ap[c] * 100, "%2.2f"), result.tp_per_class[c],
            result.fp_per_class[c]))
    t32 = np.float32(result.thresh)
    out.append("\n for conf_thresh = %1.2f, precision = %s, recall = %s, F1-score = %s \n" % (
        t32, _c_float(result.precision, "%1.2f"), _c_float(result.recall, "%1.2f"),
        _c_float(result.f1, "%1.2f")))
    avg_iou_pct = float(np.float32(result.average_iou) * np.float32(100))
    out.append(" for conf_thresh = %0.2f, TP = %d, FP = %d, FN = %d, average IoU = %s %% \n" % (
        t32, result.tp, result.fp, result.fn, _c_float(avg_iou_pct, "%2.2f")))
    iou32 = np.float32(result.iou_thresh)
    out.append("\n IoU threshold = %s %%, " % _c_float(float(iou32 * np.float32(100)), "%2.0f"))
    if result.map_points:
        out.append("used %d Recall-points \n" % result.map_points)
    else:
        out.append("used Area-Under-Curve for each unique Recall \n")
    out.append(" mean average precision (mAP@%0.2f) = %s, or %s %% \n" % (
        iou32, _c_float(result.mean_ap, "%f"), _c_float(result.mean_ap * 100, "%2.2f")))
    if footer:
        out.append("\nSet -points flag:\n"
                   " `-points 101` for MS COCO \n"
                   " `-points 11` for PascalVOC 2007 (uncomment `difficult` in voc.data) \n"
                   " `-points 0` (AUC) for ImageNet, PascalVOC 2010-2012, your custom dataset\n")
    return "".join(out)
