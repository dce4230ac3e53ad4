"""``darknet-py detector calc_anchors obj.data -num_of_clusters 9 -width 416 -height 416 [-show]``

Darknet's ``calc_anchors`` (``detector.c``): reads every label of the ``train`` list, clusters the
box sizes in network pixels with IoU k-means (:mod:`darknet_py.data.anchors`), prints the same
lines as Darknet and writes ``anchors.txt`` and ``counters_per_class.txt`` to the current
directory in Darknet's format; ``-show`` also writes ``cloud.png`` (headless: nothing is shown).

Exact reproduction: Darknet seeds ``rand()`` with ``time(0)``; so do we (glibc ``rand`` emulated),
and ``-seed N`` fixes it: with the start second of a Darknet run the anchors, the number of
k-means iterations and the average IoU are Darknet's.

Differences: the per-box progress lines (``\\r loaded image: i box: n``) are written only on a
terminal; when stdout is not one (a log, a notebook, ``| tee``) only the last of them is written,
on its own line (Darknet always writes all of them, with ``\\r``); extra positional arguments
(Darknet ignores ``argv[4..]``, e.g. a cfg) are ignored with a warning; Darknet's side files ``bad.list``/``bad_label.list`` are not written; rows with
NaN/inf, a negative class id or ``w <= 0``/``h <= 0`` are reported and left out (Darknet would
use them and crash or produce NaN); when no label is found we raise a DataError that says where
the labels were looked for (Darknet crashes with SIGSEGV); blank lines of the image list are
skipped (Darknet counts them as images); ``-width``/``-height`` missing is a usage error
(exit code 2; Darknet prints the usage and exits 0).
"""
from __future__ import annotations

import sys
from typing import Callable, List, Optional

import click
import cv2
import numpy as np

from ..data.anchors import KMeansResult, kmeans_anchors
from ..data.datacfg import read_data_cfg, read_list
from ..data.labels import read_labels
from ..data.paths import label_path
from ..errors import DataError, UsageError
from ..files import refuse_output_onto_inputs

GROUP = "detector"


def _fmt_f(v: float) -> str:
    """C ``%f``."""
    return "%f" % v


def calc_anchors(datacfg: str, num_of_clusters: int = 5, width: int = -1, height: int = -1,
                 show: bool = False, seed: Optional[int] = None,
                 write: Optional[Callable[[str], None]] = None,
                 progress_sep: Optional[str] = None, out_dir: str = ".") -> KMeansResult:
    """Run Darknet's calc_anchors; returns the k-means result (centres in output order)."""
    if write is None:
        def write(s: str) -> None:
            sys.stdout.write(s)
    # progress_sep None: every progress line on a terminal ("\r"), else only the last one
    only_last = progress_sep is None and not sys.stdout.isatty()
    if progress_sep is None:
        progress_sep = "\n" if only_last else "\r"
    last_progress = ""
    write(f"\n num_of_clusters = {num_of_clusters}, width = {width}, height = {height} \n")
    if width < 0 or height < 0:
        raise UsageError("set -width and -height (usage: darknet-py detector calc_anchors "
                         "data/voc.data -num_of_clusters 9 -width 416 -height 416)")
    if num_of_clusters < 1:
        raise UsageError(f"-num_of_clusters must be >= 1, got {num_of_clusters}")
    data = read_data_cfg(datacfg)
    train_list = data.train_or_default("data/train.list")
    paths = read_list(train_list)
    classes = data.classes_or_default(1)
    write(f" read labels from {len(paths)} images \n")

    sizes: List[np.ndarray] = []
    class_ids: List[np.ndarray] = []
    number_of_boxes = 0
    missing = 0
    first_label = None
    for i, image_path in enumerate(paths):
        lpath = label_path(image_path)
        if first_label is None:
            first_label = lpath
        lf = read_labels(lpath)
        if lf.missing:
            missing += 1
            write(f"Can't open label file. (This can be normal only if you use MSCOCO): {lpath} \n")
            continue
        rows = lf.rows
        if rows is None or rows.shape[0] == 0:
            continue
        cls, x, y, w, h = rows.T
        with np.errstate(invalid="ignore"):
            wrong = (x > 1) | (x <= 0) | (y > 1) | (y <= 0) | (w > 1) | (w <= 0) | (h > 1) \
                | (h <= 0)
            unusable = ~np.isfinite(rows).all(axis=1) | (cls < 0) | (w <= 0) | (h <= 0)
        out = []
        for j in range(rows.shape[0]):
            if wrong[j] or unusable[j]:
                out.append(f"\n\nWrong label: {lpath} - j = {j}, x = {_fmt_f(x[j])}, "
                           f"y = {_fmt_f(y[j])}, width = {_fmt_f(w[j])}, "
                           f"height = {_fmt_f(h[j])} \n")
            if unusable[j]:
                out.append(f"  (line {int(lf.linenos[j])} left out: NaN/inf, negative class id "
                           f"or non-positive size)\n")
                continue
            number_of_boxes += 1
            last_progress = f"{progress_sep} loaded \t image: {i + 1} \t box: {number_of_boxes}"
            if not only_last:
                out.append(last_progress)
        write("".join(out))
        keep = ~unusable
        sizes.append(np.stack([w[keep] * np.float32(width), h[keep] * np.float32(height)], 1))
        class_ids.append(cls[keep].astype(np.int64))
    if only_last:
        write(last_progress)
    write("\n all loaded. \n")
    write("\n calculating k-means++ ...")
    write("\n")
    if number_of_boxes == 0:
        where = first_label if first_label is not None else "(no images)"
        raise DataError(
            f"no labels found for the {len(paths)} images of {train_list} ({missing} label files "
            f"missing; the first was looked for at {where}). Darknet reads labels from the image "
            f"path with .txt as extension, in the same folder, except that /images/train2017/, "
            f"/images/val2017/, /images/train2014/, /images/val2014/ and /JPEGImages/ map to the "
            f"corresponding labels folder (a plain /images/ folder does not)",
            file=datacfg)
    points = np.concatenate(sizes).astype(np.float32)
    ids = np.concatenate(class_ids)
    counts = np.bincount(ids, minlength=classes)
    result = kmeans_anchors(points, num_of_clusters, seed=seed)
    write(f"\n iterations = {result.iterations} \n")
    write("\n")
    bad_iou = np.nonzero(~((result.best_iou >= 0) & (result.best_iou <= 1)))[0]
    for i in bad_iou:   # Darknet: "Wrong label: i = ..." for an IoU outside [0,1]
        aw, ah = result.centers[result.best_cluster[i]]
        write(f" Wrong label: i = {i}, box_w = {_fmt_f(points[i, 0])}, box_h = "
              f"{_fmt_f(points[i, 1])}, anchor_w = {_fmt_f(aw)}, anchor_h = {_fmt_f(ah)}, "
              f"iou = {_fmt_f(result.best_iou[i])} \n")

    counters = ", ".join(str(int(c)) for c in counts)
    with open(f"{out_dir}/counters_per_class.txt", "wb") as fh:
        fh.write(("counters_per_class = " + counters).encode())
    write("\ncounters_per_class = " + counters + "\n")
    write(f"\n avg IoU = {result.avg_iou:2.2f} % \n")

    if width > 32:
        parts = ["%3.0f,%3.0f" % (float(a), float(b)) for a, b in result.centers]
    else:
        parts = ["%2.4f,%2.4f" % (float(a), float(b)) for a, b in result.centers]
    anchors = ", ".join(parts)
    with open(f"{out_dir}/anchors.txt", "wb") as fh:
        fh.write(anchors.encode())
    write("\nSaving anchors to the file: anchors.txt \n")
    write("anchors = " + anchors + "\n")
    if show:
        draw_cloud(points, result, width, height, f"{out_dir}/cloud.png")
    return result


def draw_cloud(points: np.ndarray, result: KMeansResult, width: int, height: int,
               path: str, img_size: int = 700) -> None:
    """``show_acnhors`` of image_opencv.cpp, headless: box sizes coloured by cluster and one
    rectangle per anchor from the origin, saved as a PNG."""
    img = np.zeros((img_size, img_size, 3), np.uint8)
    px = (points[:, 0] * img_size / width).astype(np.int64)
    py = (points[:, 1] * img_size / height).astype(np.int64)
    idx = result.assignments.astype(np.int64)
    red, green, blue = (idx * 123 + 55) % 255, (idx * 321 + 33) % 255, (idx * 11 + 99) % 255
    inside = (px >= 0) & (px < img_size) & (py >= 0) & (py < img_size)
    for dy in (-1, 0, 1):           # a filled circle of radius 1 is a 3x3 plus
        for dx in (-1, 0, 1):
            if dx and dy:
                continue
            xx, yy = px + dx, py + dy
            ok = inside & (xx >= 0) & (xx < img_size) & (yy >= 0) & (yy < img_size)
            img[yy[ok], xx[ok]] = np.stack([blue[ok], green[ok], red[ok]], 1)
    for cw, ch in result.centers:
        cv2.rectangle(img, (0, 0), (int(cw * img_size / width), int(ch * img_size / height)),
                      (255, 255, 255), 1, cv2.LINE_8)
    if not cv2.imwrite(path, img):
        raise DataError("cannot write image", file=path)


@click.command("calc_anchors", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("datacfg", type=click.Path(dir_okay=False))
@click.option("-num_of_clusters", "num_of_clusters", type=int, default=5, show_default=True,
              help="Number of anchors.")
@click.option("-width", "width", type=int, default=-1, help="Network width in pixels.")
@click.option("-height", "height", type=int, default=-1, help="Network height in pixels.")
@click.option("-show", "show", is_flag=True, help="Also write cloud.png (clusters).")
@click.option("-dont_show", "dont_show", is_flag=True, help="Accepted for Darknet compatibility.")
@click.option("-seed", "seed", type=int, default=None,
              help="srand() seed (default: time(0), as Darknet).")
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
def COMMAND(datacfg: str, num_of_clusters: int, width: int, height: int, show: bool,
            dont_show: bool, seed: Optional[int], extra) -> None:
    """Cluster the training labels into anchors (as `darknet detector calc_anchors`)."""
    if extra:
        click.echo(f"darknet-py: warning: ignored: extra arguments {' '.join(extra)} "
                   f"(calc_anchors reads only the data file)", err=True)
    data = read_data_cfg(datacfg)
    for name in ("anchors.txt", "counters_per_class.txt", "cloud.png"):
        refuse_output_onto_inputs(name, "the output", [("data file", datacfg),
                                                       ("train list", data.train)])
    calc_anchors(datacfg, num_of_clusters, width, height, show=show, seed=seed)
    sys.stdout.flush()
