"""``detector map -plots DIR``: curves, confusion matrix and tables of one mAP evaluation.

Everything is drawn from a :class:`~darknet_py.metrics.darknet_map.MapResult`, i.e. from the
matches Darknet's ``validate_detector_map`` makes (nothing is re-matched here):

* ``pr_curve.png``: precision against recall per class (its ranked entries, the running-maximum
  precision Darknet integrates) and the mean over the classes with labelled boxes, AP in the
  legend, at the run's ``-iou_thresh``;
* ``f1_curve.png``: F1, precision and recall of all classes together against the confidence
  threshold, the best F1 marked (entries ranked as for AP: a duplicate of a truth is an FP);
* ``confusion_matrix.png`` / ``.csv``: classes + background, rows = ground truth, columns =
  prediction, at ``-thresh`` and ``-iou_thresh`` (a truth row sums to the class's labelled boxes);
* ``per_class.csv``: class, labelled boxes, TP, FP, FN, precision, recall, AP (thresh numbers as
  printed by Darknet);
* ``summary.json``: every number of the printout (plus the COCO summary with ``-coco``).

Matplotlib with the headless Agg backend.
"""
from __future__ import annotations

import csv
import json
import math
import os
from typing import Dict, List, Optional

import numpy as np

from ..errors import DataError
from .darknet_map import MapResult

#: classes named in a legend / labelled on the confusion matrix axes before it gets unreadable
MAX_LEGEND_CLASSES = 10
MAX_MATRIX_CLASSES = 30


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _nan_to_none(v: float):
    v = float(v)
    return None if math.isnan(v) or math.isinf(v) else v


def map_summary(result: MapResult, coco: Optional[Dict[str, float]] = None) -> dict:
    """Every number of Darknet's printout as a JSON-ready dict (NaN -> null)."""
    classes = []
    for c in range(result.classes):
        classes.append({"class_id": c, "name": result.names[c], "ap": float(result.ap[c]),
                        "tp": int(result.tp_per_class[c]), "fp": int(result.fp_per_class[c]),
                        "truths": int(result.truth_count_per_class[c]),
                        "detections": int(result.detection_count_per_class[c])})
    out = {
        "detections_count": int(result.detections_count),
        "unique_truth_count": int(result.unique_truth_count),
        "classes": classes,
        "conf_thresh": float(np.float32(result.thresh)),
        "precision": _nan_to_none(result.precision), "recall": _nan_to_none(result.recall),
        "f1": _nan_to_none(result.f1),
        "tp": int(result.tp), "fp": int(result.fp), "fn": int(result.fn),
        "average_iou": _nan_to_none(result.average_iou),
        "iou_thresh": float(np.float32(result.iou_thresh)),
        "map_points": int(result.map_points),
        "map": float(result.mean_ap),
    }
    if coco is not None:
        out["coco"] = {k: float(v) for k, v in coco.items()}
    return out


def per_class_rows(result: MapResult) -> List[list]:
    """Rows of ``per_class.csv`` (header first)."""
    rows = [["class_id", "name", "labelled_boxes", "tp", "fp", "fn", "precision", "recall",
             "ap"]]
    for c in range(result.classes):
        n = int(result.truth_count_per_class[c])
        tp, fp = int(result.tp_per_class[c]), int(result.fp_per_class[c])
        prec = tp / (tp + fp) if tp + fp else float("nan")
        rec = tp / n if n else float("nan")
        rows.append([c, result.names[c], n, tp, fp, n - tp, f"{prec:.6f}", f"{rec:.6f}",
                     f"{float(result.ap[c]):.6f}"])
    return rows


def _write_csv(path: str, rows: List[list]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def _envelope(precision: np.ndarray) -> np.ndarray:
    """Best precision at this rank or any later one (what Darknet integrates)."""
    if precision.size == 0:
        return precision
    return np.maximum.accumulate(precision[::-1])[::-1]


def _classes_phrase(result: MapResult) -> str:
    """How many classes the curves cover, in one wording for every plot: the PR mean averages
    the classes with boxes, the F1 curve pools all classes, the mAP divides by all of them."""
    with_truth = sum(1 for c in range(result.classes) if result.curves[c].truth_count > 0)
    return f"{result.classes} classes, {with_truth} with labelled boxes"


def _pr_plot(result: MapResult, path: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 7), dpi=100)
    grid = np.linspace(0.0, 1.0, 101)
    with_truth = [c for c in range(result.classes) if result.curves[c].truth_count > 0]
    # the legend names the classes with the most labelled boxes
    named = set(sorted(with_truth, key=lambda c: -result.curves[c].truth_count)
                [:MAX_LEGEND_CLASSES])
    sampled = []
    for c in with_truth:
        cur = result.curves[c]
        env = _envelope(cur.precision)
        rec = np.concatenate([[0.0], cur.recall])
        prec = np.concatenate([[env[0] if env.size else 0.0], env])
        # precision reachable at each recall of the grid (0 beyond the class's last recall)
        start = np.searchsorted(cur.recall, grid, side="left")
        if env.size:
            sampled.append(np.where(start < env.size, env[np.minimum(start, env.size - 1)], 0.0))
        else:
            sampled.append(np.zeros_like(grid))
        label = f"{result.names[c]} {result.ap[c]:.3f}" if c in named else None
        ax.plot(rec, prec, drawstyle="steps-post", linewidth=1.0 if c in named else 0.5,
                alpha=0.9 if c in named else 0.35, color=None if c in named else "grey",
                label=label)
    if sampled:
        # the curve averages the classes that have boxes; the mAP, as Darknet's, all classes
        mean = np.mean(sampled, axis=0)
        ax.plot(grid, mean, color="blue", linewidth=3,
                label=f"mean (mAP@{result.iou_thresh:.2f} {result.mean_ap:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    shown = "" if len(with_truth) <= MAX_LEGEND_CLASSES else \
        f" (legend: {MAX_LEGEND_CLASSES} most labelled of {len(with_truth)} classes)"
    ax.set_title(f"Precision-Recall curve, IoU > {result.iou_thresh:.2f}; "
                 f"{_classes_phrase(result)}{shown}")
    ax.grid(True, alpha=0.3)
    if with_truth:
        ax.legend(loc="lower left", fontsize=8, bbox_to_anchor=(1.01, 0.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def f1_curve_data(result: MapResult, points: int = 1001):
    """Confidence grid and the pooled precision, recall and F1 of entries with prob > each."""
    conf = np.concatenate([c.confidence for c in result.curves]) if result.curves else \
        np.zeros(0, np.float32)
    tp = np.concatenate([c.tp for c in result.curves]) if result.curves else np.zeros(0, bool)
    order = np.argsort(-conf, kind="stable")
    conf, tp = conf[order].astype(np.float64), tp[order]
    grid = np.linspace(0.0, 1.0, points)
    # entries strictly above t: count of conf > t in a descending array
    above = np.searchsorted(-conf, -grid, side="left")
    tp_cum = np.concatenate([[0], np.cumsum(tp)])
    tps = tp_cum[above].astype(np.float64)
    dets = above.astype(np.float64)
    n = float(result.unique_truth_count)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(dets > 0, tps / dets, np.nan)
        rec = tps / n if n > 0 else np.zeros_like(tps)
        f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
    f1 = np.nan_to_num(f1)
    return grid, prec, rec, f1


def _f1_plot(result: MapResult, path: str) -> None:
    plt = _pyplot()
    grid, prec, rec, f1 = f1_curve_data(result)
    best = int(np.argmax(f1))
    fig, ax = plt.subplots(figsize=(9, 6), dpi=100)
    ax.plot(grid, f1, color="blue", linewidth=2.5, label="F1")
    ax.plot(grid, prec, color="green", linewidth=1.5, label="precision")
    ax.plot(grid, rec, color="red", linewidth=1.5, label="recall")
    ax.axvline(grid[best], color="black", linestyle="--", linewidth=1)
    ax.plot([grid[best]], [f1[best]], "ko")
    ax.annotate(f"best F1 {f1[best]:.3f} at conf {grid[best]:.3f}", (grid[best], f1[best]),
                textcoords="offset points", xytext=(8, 8))
    ax.axvline(result.thresh, color="grey", linestyle=":", linewidth=1,
               label=f"-thresh {result.thresh:.2f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Confidence threshold")
    ax.set_ylabel("F1 / precision / recall")
    ax.set_title(f"F1, precision and recall against confidence, IoU > {result.iou_thresh:.2f}; "
                 f"{_classes_phrase(result)}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def confusion_rows(result: MapResult) -> List[list]:
    """Rows of ``confusion_matrix.csv``: header ``truth\\prediction, <names>, background``."""
    labels = list(result.names[:result.classes]) + ["background"]
    rows = [["truth\\prediction"] + labels]
    for i, lab in enumerate(labels):
        rows.append([lab] + [int(v) for v in result.confusion[i]])
    return rows


def _confusion_plot(result: MapResult, path: str) -> None:
    plt = _pyplot()
    m = result.confusion
    labels = list(result.names[:result.classes]) + ["background"]
    keep = np.arange(m.shape[0])
    note = ""
    if result.classes > MAX_MATRIX_CLASSES:
        # the classes that occur in the data or the predictions (background always)
        used = (m.sum(axis=0) + m.sum(axis=1)) > 0
        used[-1] = True
        keep = np.flatnonzero(used)
        if keep.size > MAX_MATRIX_CLASSES + 1:
            busiest = np.argsort(-(m.sum(axis=0) + m.sum(axis=1))[keep[:-1]], kind="stable")
            keep = np.sort(np.concatenate([keep[:-1][busiest[:MAX_MATRIX_CLASSES]],
                                           [m.shape[0] - 1]]))
        note = f" ({keep.size - 1} of {result.classes} classes shown)"
    sub = m[np.ix_(keep, keep)].astype(np.float64)
    row_sum = m[keep].sum(axis=1, keepdims=True).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(row_sum > 0, sub / row_sum, 0.0)
    n = keep.size
    size = max(6.0, 0.38 * n + 3)
    fig, ax = plt.subplots(figsize=(size + 1.5, size), dpi=100)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the truth row")
    names = [labels[i] for i in keep]
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(names, rotation=90, fontsize=8)
    ax.set_yticklabels(names, fontsize=8)
    if n <= MAX_MATRIX_CLASSES + 1:
        for i in range(n):
            for j in range(n):
                if sub[i, j]:
                    ax.text(j, i, str(int(sub[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("Predicted")
    ax.set_ylabel("Ground truth")
    ax.set_title(f"Confusion matrix at conf > {result.thresh:.2f}, IoU > "
                 f"{result.iou_thresh:.2f}{note}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_map_plots(result: MapResult, folder: str,
                    coco: Optional[Dict[str, float]] = None) -> List[str]:
    """Write the ``-plots`` files into ``folder`` (created); returns their paths."""
    if result.confusion is None or len(result.curves) != result.classes:
        raise DataError("this mAP result has no curves (made by darknet_map of an older version)")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the plots folder: {e.strerror}", file=folder) from e
    paths = {name: os.path.join(folder, name) for name in (
        "pr_curve.png", "f1_curve.png", "confusion_matrix.png", "confusion_matrix.csv",
        "per_class.csv", "summary.json")}
    try:
        _write_csv(paths["per_class.csv"], per_class_rows(result))
        _write_csv(paths["confusion_matrix.csv"], confusion_rows(result))
        with open(paths["summary.json"], "w") as f:
            json.dump(map_summary(result, coco), f, indent=1)
            f.write("\n")
        _pr_plot(result, paths["pr_curve.png"])
        _f1_plot(result, paths["f1_curve.png"])
        _confusion_plot(result, paths["confusion_matrix.png"])
    except OSError as e:
        raise DataError(f"cannot write the plots: {e.strerror or e}", file=folder) from e
    return list(paths.values())
