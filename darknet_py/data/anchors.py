"""Anchor clustering of ``darknet detector calc_anchors`` (``calc_anchors`` in ``detector.c``,
``do_kmeans`` and helpers in ``matrix.c``).

Darknet clusters the label sizes in network pixels ``(w*width, h*height)`` with k-means whose
distance is ``1 - IoU`` of two boxes sharing a corner (not Euclidean), starting from ``k``
boxes picked by a Fisher-Yates shuffle driven by C ``rand()`` after ``srand(time(0))``:

* expectation: each box goes to the centre with the smallest distance (first one on ties);
* maximisation: each centre becomes the **mean** of its boxes (a coordinate that comes out as
  exactly 0, e.g. an empty cluster, keeps its old value);
* stop when no assignment changes (at most 1000 rounds); ``k == 1`` does one extra
  maximisation first.

The centres are then sorted by area, and the average IoU of every box with its best centre is
reported. To reproduce Darknet run for run we emulate glibc's ``rand()`` (:class:`GlibcRand`,
the TYPE_3 additive feedback generator behind ``srand``/``rand``), accumulate sums sequentially
in float32 as the C loops do, and use the same seed: ``time(0)`` by default, or an explicit
``seed``. With the seed of an oracle run (its start time) this gives Darknet's anchors,
iteration count and average IoU exactly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from ..errors import DataError

_M31 = 2147483647


class GlibcRand:
    """glibc's ``srand(seed)`` / ``rand()`` (random_r.c, TYPE_3: x[i] = x[i-3] + x[i-31]).

    ``take(n)`` returns the next ``n`` values of ``rand()`` (0 .. 2**31-1) as int64 array.
    """

    def __init__(self, seed: int):
        seed &= 0xFFFFFFFF
        word = seed - (1 << 32) if seed >= (1 << 31) else seed   # srandom_r stores an int32
        if word == 0:
            word = 1
        r = [0] * 34
        r[0] = word
        for i in range(1, 31):
            # 16807 * word % (2**31 - 1) without overflow (Schrage), C truncating division
            hi = int(word / 127773)
            lo = word - hi * 127773
            word = 16807 * lo - 2836 * hi
            if word < 0:
                word += _M31
            r[i] = word
        for i in range(31, 34):
            r[i] = r[i - 31]
        self._r = [v & 0xFFFFFFFF for v in r]
        self._discard(310)   # srandom_r throws away the first 10*31 outputs

    def _discard(self, n: int) -> None:
        self._next_raw(n)

    def _next_raw(self, n: int) -> List[int]:
        r = self._r
        out = []
        for _ in range(n):
            v = (r[-31] + r[-3]) & 0xFFFFFFFF
            r.append(v)
            out.append(v)
        del r[:-34]
        return out

    def take(self, n: int) -> np.ndarray:
        return np.array(self._next_raw(n), dtype=np.int64) >> 1

    def rand(self) -> int:
        return int(self.take(1)[0])


def shuffled_indices(n: int, rng: GlibcRand) -> np.ndarray:
    """Darknet's ``sample(n)``: Fisher-Yates shuffle of 0..n-1 from the end, ``rand() % (i+1)``."""
    s = list(range(n))
    draws = rng.take(n)
    for j, i in enumerate(range(n - 1, -1, -1)):
        k = int(draws[j] % (i + 1))
        s[i], s[k] = s[k], s[i]
    return np.array(s, dtype=np.int64)


def wh_iou(pw: np.ndarray, ph: np.ndarray, cw: np.ndarray, ch: np.ndarray) -> np.ndarray:
    """IoU of (w, h) boxes sharing a corner, broadcast (``dist()`` of matrix.c and
    ``calc_anchors``: ``inter / union`` with ``union = pw*ph + cw*ch - inter``)."""
    inter = np.minimum(pw, cw) * np.minimum(ph, ch)
    union = (pw * ph + cw * ch) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union


def iou_distance(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """``dist()`` of matrix.c for all pairs: 1 - IoU of (w,h) boxes sharing a corner, float32."""
    return np.float32(1) - wh_iou(points[:, 0:1], points[:, 1:2], centers[None, :, 0],
                                  centers[None, :, 1])


@dataclass
class KMeansResult:
    centers: np.ndarray        # (k, 2) float32, in Darknet's output order (sorted by area)
    assignments: np.ndarray    # (n,) cluster of each box *before* sorting (as Darknet's model)
    iterations: int
    avg_iou: float             # percent, float32 arithmetic as Darknet
    best_iou: np.ndarray       # (n,) IoU of each box with its closest (sorted) centre
    best_cluster: np.ndarray   # (n,) index of that centre in ``centers``


def kmeans_anchors(points: np.ndarray, k: int, seed: Optional[int] = None) -> KMeansResult:
    """Darknet's ``do_kmeans`` + the sorting and average IoU of ``calc_anchors``.

    ``points``: (n, 2) box sizes in pixels. ``seed``: glibc ``srand`` seed (``time(0)`` if None).
    """
    pts = np.ascontiguousarray(points, dtype=np.float32)
    n = pts.shape[0]
    if n == 0:
        raise DataError("no boxes to cluster")
    if k < 1:
        raise DataError(f"num_of_clusters must be >= 1, got {k}", value=k)
    if k > n:
        raise DataError(f"num_of_clusters = {k} but only {n} boxes were found: need at least one "
                        f"box per cluster", value=k)
    rng = GlibcRand(int(time.time()) if seed is None else seed)
    centers = pts[shuffled_indices(n, rng)[:k]].copy()
    assignments = np.zeros(n, dtype=np.int64)

    def maximize(centers: np.ndarray, assignments: np.ndarray) -> np.ndarray:
        sums = np.zeros_like(centers)
        np.add.at(sums, assignments, pts)           # sequential float32 sums, like the C loop
        counts = np.bincount(assignments, minlength=k).astype(np.float32)
        new = sums.copy()
        has = counts > 0
        new[has] = sums[has] / counts[has, None]
        keep_old = new == 0
        new[keep_old] = centers[keep_old]
        return new

    if k == 1:
        centers = maximize(centers, assignments)
    iterations = 0
    while iterations < 1000:
        closest = np.argmin(iou_distance(pts, centers), axis=1)
        converged = bool(np.array_equal(closest, assignments))
        assignments = closest
        if converged:
            break
        centers = maximize(centers, assignments)
        iterations += 1
    # qsort by area, ascending (Darknet's comparator; qsort is not stable but equal areas are rare)
    order = np.argsort(centers[:, 0] * centers[:, 1], kind="stable")
    centers = centers[order]
    dist = iou_distance(pts, centers)
    best = np.argmin(dist, axis=1)
    # the IoU of the closest centre, computed as inter/union like calc_anchors does
    best_iou = wh_iou(pts[:, 0], pts[:, 1], centers[best, 0], centers[best, 1]).astype(np.float32)
    ok = (best_iou >= 0) & (best_iou <= 1)
    total = np.cumsum(np.where(ok, best_iou, np.float32(0)), dtype=np.float32)[-1]
    avg = np.float32(np.float32(100) * total) / np.float32(n)
    return KMeansResult(centers, assignments, iterations, float(avg), best_iou, best)
