"""Darknet's non-maximum suppression (``box.c``): ``do_nms_sort``, ``do_nms_obj``, ``diounms_sort``.

All of them work like Darknet on a :class:`~darknet_py.structures.detections.DetectionSet` of one image:
suppressed probabilities are set to 0 (rows are not removed) and the rows come back in the order
Darknet leaves its ``dets`` array in, which is the order ``-out`` JSON and ``-save_labels`` write.

Darknet's procedure, reproduced exactly:

1. Candidates with ``objectness == 0`` are moved to the end by swapping with the last unprocessed
   element and are left out of the rest.
2. For each class ``k`` in turn the whole array is ``qsort``-ed by ``prob[k]`` descending, then
   for every ``i`` whose ``prob[k]`` is non-zero every later ``j`` with ``criterion(i, j) > thresh``
   gets ``prob[k] = 0`` (a box suppressed earlier no longer suppresses others; ``>`` not ``>=``).
   The criterion is the IoU (``do_nms_sort``, ``cornersnms``), Darknet's DIoU with exponent 0.6
   (``greedynms``) or DIoU with exponent ``beta_nms`` (``diounms``).
3. ``do_nms_obj`` does one pass sorted by objectness and zeroes objectness and all probabilities
   of suppressed boxes.

The oracle's glibc ``qsort`` is a stable merge sort, so each class's order is "``prob[k]``
descending, ties in the order left by the previous class's sort"; this is reproduced with stable
sorts. The greedy pass is computed without a loop over box pairs: the greedy keep-set is the
fixed point of ``keep[i] = not any(keep[j] and S[j, i] for j < i)`` (unique, reached after at most
"longest suppression chain" iterations). With a positive threshold (every real one) the pairs
``S`` holds are found once per image, for all classes (the criterion depends on the boxes only),
and the keep-sets of all classes come from one fixed point over them
(:func:`_nms_per_class_sparse`); otherwise each class's criterion matrix is built
(:func:`_nms_per_class_dense`).
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, Tuple

import numpy as np
import torch

from ..structures.boxes import (box_diounms, box_iou, pairwise_diounms, pairwise_iou,
                                xywh_to_xyxy)
from ..structures.detections import DetectionSet
from ..errors import UsageError
from ..structures.heads import NMS_KINDS, nms_params  # noqa: F401  (re-exported)

__all__ = ["do_nms_sort", "do_nms_obj", "diounms_sort", "apply_nms", "greedy_keep",
           "nms_params", "NMS_KINDS"]


def _move_zero_objectness(objectness: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """Darknet's swap loop: returns the permutation and the count of non-zero rows."""
    n = int(objectness.shape[0])
    zero = (objectness == 0)
    if not bool(zero.any()):
        return torch.arange(n), n
    order = list(range(n))
    z = zero.tolist()
    k = n - 1
    i = 0
    while i <= k:  # only when some objectness is exactly 0 (never for yolo heads with thresh >= 0)
        if z[order[i]]:
            order[i], order[k] = order[k], order[i]
            k -= 1
        else:
            i += 1
    return torch.tensor(order, dtype=torch.long), k + 1


def greedy_keep(suppress: torch.Tensor, active: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Greedy NMS keep-mask for candidates already in priority order.

    ``suppress[j, i]`` (``j < i`` matters only) says candidate ``j`` would suppress ``i``.
    Returns ``keep`` with ``keep[i] = active[i] and not any(keep[j] and suppress[j, i], j < i)``,
    exactly what Darknet's sequential double loop gives.
    """
    m = int(suppress.shape[0])
    if active is None:
        active = torch.ones(m, dtype=torch.bool, device=suppress.device)
    if m == 0:
        return active.clone()
    idx = torch.arange(m, device=suppress.device)
    upper = suppress & (idx[:, None] < idx[None, :]) & active[:, None]
    sup_f = upper.to(torch.float32)
    keep = active.clone()
    for _ in range(m + 1):
        hit = (keep.to(torch.float32) @ sup_f) > 0
        new_keep = active & ~hit
        if torch.equal(new_keep, keep):
            return keep
        keep = new_keep
    return keep  # pragma: no cover - the iteration converges within m steps


#: the most candidate pairs one class's suppression matrix may hold (4M: 4 MiB as bools, 16 MiB
#: as the float criterion); above it the greedy pass runs row by row in O(candidates) memory, as
#: Darknet's own double loop (an untrained head can give tens of thousands of candidates)
MAX_NMS_PAIRS = 1 << 22


def _greedy_keep_sorted(boxes: torch.Tensor, kind: str, beta: float,
                        thr: torch.Tensor) -> torch.Tensor:
    """:func:`greedy_keep` of ``boxes`` in priority order under ``criterion > thr``; the pairwise
    matrix only while it stays within :data:`MAX_NMS_PAIRS`."""
    m = int(boxes.shape[0])
    if m * m <= MAX_NMS_PAIRS:
        return greedy_keep(_criterion(kind, beta)(boxes) > thr)
    crit = _elementwise_criterion(kind, beta)
    keep = np.ones(m, dtype=bool)
    for i in range(m - 1):
        if keep[i]:       # a suppressed box suppresses nothing
            rest = boxes[i + 1:]
            hit = crit(boxes[i:i + 1].expand_as(rest), rest) > thr
            keep[i + 1:] &= ~hit.numpy()
    return torch.from_numpy(keep)


def _criterion(kind: str, beta: float) -> Callable[[torch.Tensor], torch.Tensor]:
    if kind in ("default", "cornersnms"):
        return lambda b: pairwise_iou(b, b)
    if kind == "greedynms":
        return lambda b: pairwise_diounms(b, b, 0.6)
    if kind == "diounms":
        return lambda b: pairwise_diounms(b, b, beta)
    raise UsageError(f"unknown nms_kind '{kind}' (expected one of {', '.join(NMS_KINDS)})")


def _elementwise_criterion(kind: str, beta: float) -> Callable[[torch.Tensor, torch.Tensor],
                                                                  torch.Tensor]:
    if kind in ("default", "cornersnms"):
        return box_iou
    if kind == "greedynms":
        return lambda a, b: box_diounms(a, b, 0.6)
    if kind == "diounms":
        return lambda a, b: box_diounms(a, b, beta)
    raise UsageError(f"unknown nms_kind '{kind}' (expected one of {', '.join(NMS_KINDS)})")


def _nms_per_class_chain(dets: DetectionSet, thresh: float, kind: str, beta: float) -> DetectionSet:
    """Darknet's class loop, one class after the other (used when probabilities tie)."""
    n = len(dets)
    if n == 0:
        return DetectionSet(dets.boxes.clone(), dets.objectness.clone(), dets.probs.clone(),
                            None if dets.uncertainty is None else dets.uncertainty.clone(),
                            dets.image_size)
    perm, total = _move_zero_objectness(dets.objectness)
    boxes = dets.boxes[perm]
    probs_in = dets.probs[perm]
    probs_out = probs_in.clone()
    thr = torch.tensor(thresh, dtype=boxes.dtype)
    order = torch.arange(total)                       # current arrangement of the first `total` rows
    nonzero_cols = (probs_in[:total] != 0).any(dim=0)
    for k in torch.nonzero(nonzero_cols).flatten().tolist():
        # stable sort of the current arrangement by prob[k] descending (Darknet's qsort, glibc msort);
        # a class whose probabilities are all 0 leaves a stable sort unchanged, so it is skipped
        key = probs_in[order, k]
        order = order[torch.sort(-key, stable=True).indices]
        cand = order[probs_in[order, k] != 0]
        if cand.numel() < 2:
            continue
        keep = _greedy_keep_sorted(boxes[cand], kind, beta, thr)
        probs_out[cand[~keep], k] = 0
    return _arranged(dets, perm, probs_out, order, total, n)


#: up to this many candidates every pair of them is examined (fewer operations than the pair
#: search of :func:`_candidate_pairs`, which pays off on the hundreds that ``detector map`` sees)
ALL_PAIRS_MAX_CANDIDATES = 64


def _nms_per_class(dets: DetectionSet, thresh: float, kind: str, beta: float) -> DetectionSet:
    """Darknet's class loop, through :func:`_nms_per_class_sparse` when the threshold is
    positive (every real NMS threshold) and the probabilities are finite and not negative, else
    :func:`_nms_per_class_dense` (both give Darknet's result)."""
    if 0 < thresh and torch.isfinite(dets.probs).all() and not bool((dets.probs < 0).any()):
        return _nms_per_class_sparse(dets, thresh, kind, beta)
    return _nms_per_class_dense(dets, thresh, kind, beta)


#: candidate pairs examined at once (bounds the memory of one image's pair search)
_PAIR_CHUNK = 1 << 21
#: relative slack of the float64 pre-filters below against Darknet's float32 values (their
#: rounding is about 1e-7 of a coordinate: this leaves room for boxes down to 1e-5 wide)
_SLACK = 1e-2


def _candidate_pairs(boxes: torch.Tensor, thresh: float,
                     limit: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Index pairs ``(a, b)``, each listed once, that may have an IoU above ``thresh``
    (``0 < thresh < 1``); every pair left out has a float32 IoU <= ``thresh``, so its IoU or
    DIoU (which is at most the IoU) never suppresses.

    An IoU above t needs the widths within a factor t of each other, an x overlap above t times
    either width and a y overlap above t times either height (the intersection is at most the
    narrower width times a height, the union at least the larger area). So boxes are binned by
    log width in bins of ratio 1/t and only a bin and the next are paired; within them a sweep
    over the boxes sorted by left edge pairs each box with the boxes that start before its right
    edge less t times its width; a pair is kept when its y overlap and its float64 IoU pass,
    with a small slack for Darknet's float32 rounding. Chunked; ``None`` once more than
    ``limit`` pairs pass (boxes that nearly all overlap: the caller then takes the row-by-row
    path, whose memory does not grow with the pairs)."""
    xywh = boxes.numpy().astype(np.float64)
    x, y, w, h = xywh.T
    left, top, right, bottom = xywh_to_xyxy(xywh).T
    area = w * h
    # a box of no width overlaps nothing; a NaN/inf box gives a NaN criterion, never above
    usable = np.flatnonzero((w > 0) & (h > 0) & np.isfinite(x) & np.isfinite(y)
                            & np.isfinite(w) & np.isfinite(h))
    t = thresh * (1 - _SLACK)
    found = 0
    bins = np.floor(np.log(w[usable]) / np.log(1 / t)).astype(np.int64)
    firsts, seconds = [], []
    for b in np.unique(bins):
        members = usable[(bins == b) | (bins == b + 1)]
        low = bins[(bins == b) | (bins == b + 1)] == b  # pairs inside bin b+1 are its own turn
        order = np.argsort(left[members], kind="stable")
        members, low = members[order], low[order]
        ls, rs = left[members], right[members]
        m = members.size
        # IoU > t needs an x overlap above t times either width (and a y overlap above t times
        # either height): a later box must start before this one's right edge less t*width
        counts = np.maximum(np.searchsorted(ls, rs - t * w[members], side="left")
                            - np.arange(m) - 1, 0)
        start = 0
        while start < m:
            cum = np.cumsum(counts[start:])
            stop = start + max(1, int(np.searchsorted(cum, _PAIR_CHUNK, side="right")))
            c = counts[start:stop]
            total = int(c.sum())
            if total:
                i = np.repeat(np.arange(start, stop), c)
                j = i + 1 + np.arange(total) - np.repeat(np.cumsum(c) - c, c)
                oa, ob = members[i], members[j]
                # cheapest test first: overlap in y (x overlap is what the sweep gave)
                oh = np.minimum(bottom[oa], bottom[ob]) - np.maximum(top[oa], top[ob])
                keep = (low[i] | low[j]) & (oh > t * np.maximum(h[oa], h[ob]))
                i, j, oa, ob, oh = i[keep], j[keep], oa[keep], ob[keep], oh[keep]
                ow = np.minimum(rs[i], rs[j]) - ls[j]
                inter = ow * oh
                ok = (ow > 0) & (inter > t * (area[oa] + area[ob] - inter))
                firsts.append(oa[ok])
                seconds.append(ob[ok])
                found += int(ok.sum())
                if found > limit:
                    return None
            start = stop
    if not firsts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(firsts), np.concatenate(seconds)


def _nms_per_class_sparse(dets: DetectionSet, thresh: float, kind: str,
                          beta: float) -> DetectionSet:
    """Darknet's class loop with the suppression pairs found once for all classes.

    Whether box ``i`` suppresses box ``j`` depends on the two boxes only (the criterion is
    symmetric, even in float32), not on the class, and with a positive threshold only boxes
    whose IoU exceeds it can suppress each other (Darknet's DIoU is the IoU less a square).
    So the pairs above the threshold are found once per image among the few pairs that can
    reach it (:func:`_candidate_pairs`; every pair up to :data:`ALL_PAIRS_MAX_CANDIDATES`
    candidates), where the dense path computed every pair of candidates once per class: an
    untrained model's 2500 candidates per image made that minutes per ``detector map``. Then
    the greedy keep-set of every class over those pairs, the fixed point of ``keep[i] = not
    any(keep[j], j earlier and paired with i)``, reached after "longest suppression chain"
    passes: for all classes at once (:func:`_sparse_drops_all_classes`), or, when paired
    candidates tie, class by class in Darknet's order (the chain of stable sorts settles ties).
    """
    n = len(dets)
    perm, total = _move_zero_objectness(dets.objectness)
    probs_in = dets.probs[perm]
    probs_out = probs_in.clone()
    p = probs_in[:total].numpy()
    boxes = dets.boxes[perm][:total]
    live = np.flatnonzero((p != 0).any(axis=1))           # candidates of at least one class
    a = b = np.zeros(0, np.int64)
    if live.size >= 2 and thresh < 1:                      # an IoU never exceeds 1
        # a few dozen candidates: every pair (the search costs more than the pairs it skips)
        pairs = _all_pairs(live.size) if live.size <= ALL_PAIRS_MAX_CANDIDATES else \
            _candidate_pairs(boxes[torch.from_numpy(live)], thresh, MAX_NMS_PAIRS)
        if pairs is None:
            return _nms_per_class_dense(dets, thresh, kind, beta)
        pa, pb = pairs
        if pa.size:
            pa, pb = live[pa], live[pb]
            hit = _elementwise_criterion(kind, beta)(
                boxes[torch.from_numpy(pa)], boxes[torch.from_numpy(pb)]) > \
                torch.tensor(thresh, dtype=boxes.dtype)
            hit = hit.numpy()
            a, b = pa[hit], pb[hit]
    classes = np.flatnonzero((p != 0).any(axis=0))
    drops = _sparse_drops_all_classes(p, classes, a, b)
    if drops is not None:
        rows, cols = drops
        if rows.size:
            probs_out[torch.from_numpy(rows), torch.from_numpy(cols)] = 0
        # the chain of stable sorts, class after class, ends in this lexicographic order
        keys = [np.arange(total)] + [-p[:, k] for k in classes]
        return _arranged(dets, perm, probs_out, torch.from_numpy(np.lexsort(keys)), total, n)
    order = np.arange(total)
    drop_rows, drop_cols = [], []
    for k in classes:
        # Darknet's qsort of the current arrangement by prob[k] (stable: glibc's merge sort)
        order = order[np.argsort(-p[order, k], kind="stable")]
        if not a.size:
            continue
        cand = order[p[order, k] != 0]
        if cand.size < 2:
            continue
        rank = np.full(total, -1, np.int64)
        rank[cand] = np.arange(cand.size)
        ra, rb = rank[a], rank[b]
        both = (ra >= 0) & (rb >= 0)
        if not both.any():
            continue
        src = np.where(ra < rb, a, b)[both]                 # the earlier of each pair
        dst = np.where(ra < rb, b, a)[both]
        is_cand = rank >= 0
        gone = np.flatnonzero(is_cand & ~_greedy_keep_edges(is_cand, src, dst))
        drop_rows.append(gone)
        drop_cols.append(np.full(gone.size, k))
    if drop_rows:
        rows = torch.from_numpy(np.concatenate(drop_rows))
        cols = torch.from_numpy(np.concatenate(drop_cols).astype(np.int64))
        probs_out[rows, cols] = 0
    return _arranged(dets, perm, probs_out, torch.from_numpy(order), total, n)


#: most (pair, class) entries :func:`_sparse_drops_all_classes` works on at once (beyond it the
#: class loop runs, in O(pairs) memory)
MAX_PAIR_CLASSES = 1 << 22


def _sparse_drops_all_classes(p: np.ndarray, classes: np.ndarray, a: np.ndarray, b: np.ndarray
                              ) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The greedy pass of every class at once over the suppression pairs ``(a, b)``: the
    ``(rows, classes)`` whose probability Darknet's class loop zeroes, or None when that needs
    the loop (two paired candidates of a class with the same non-zero probability, whose order
    the earlier classes' sorts decide; or too many entries).

    Within class ``k`` only the order of two paired candidates matters to the greedy pass
    (``keep[j]`` = no kept earlier candidate paired with ``j``), and without ties that order is
    ``prob[k]`` descending whatever the classes before did. So each (pair, class) with both
    probabilities non-zero gives one edge from the higher to the lower, and the keep-sets of all
    classes are one fixed point over the edges, reached after "longest chain" passes."""
    total = p.shape[0]
    if not a.size or not classes.size:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if a.size * classes.size > MAX_PAIR_CLASSES:
        return None
    pa, pb = p[a][:, classes], p[b][:, classes]            # (pairs, classes)
    both = (pa != 0) & (pb != 0)
    if (both & (pa == pb)).any():
        return None
    pair, cls = np.nonzero(both)
    a_first = pa[pair, cls] > pb[pair, cls]
    src = np.where(a_first, a[pair], b[pair]) + cls * total   # flat (class, row) indices
    dst = np.where(a_first, b[pair], a[pair]) + cls * total
    cand = (p[:, classes] != 0).T.ravel()                   # (classes * total,)
    gone = np.flatnonzero(cand & ~_greedy_keep_edges(cand, src, dst))
    return gone % total, classes[gone // total].astype(np.int64)


def _greedy_keep_edges(cand: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The greedy keep-set over suppression edges ``src -> dst`` (``src`` earlier): the fixed
    point of ``keep[j] = cand[j] and no kept src with an edge to j``, reached after "longest
    chain" passes (at most one per edge)."""
    keep = cand.copy()
    for _ in range(src.size + 1):
        suppressed = np.zeros(cand.size, bool)
        suppressed[dst[keep[src]]] = True
        new_keep = cand & ~suppressed
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return keep


def _arranged(dets: DetectionSet, perm: torch.Tensor, probs_out: torch.Tensor,
              order: torch.Tensor, total: int, n: int) -> DetectionSet:
    """The result of a class loop: rows in Darknet's final arrangement (``order`` of the
    ``total`` non-zero-objectness rows of ``perm``, then the rest), with ``probs_out``."""
    final = torch.cat([order, torch.arange(total, n)])
    idx = perm[final]
    return DetectionSet(dets.boxes[idx], dets.objectness[idx], probs_out[final],
                        None if dets.uncertainty is None else dets.uncertainty[idx],
                        dets.image_size)


def _nms_per_class_dense(dets: DetectionSet, thresh: float, kind: str,
                         beta: float) -> DetectionSet:
    """Per-class greedy NMS for all classes at once (same result as Darknet's class loop).

    Darknet's chain of stable sorts (class ``k`` sorted on the arrangement the previous class
    left) ends in the lexicographic order "last class descending, then the class before, ...,
    then the original position", which ``np.lexsort`` gives in one call. Within one class the
    order of its non-zero candidates is just ``prob[k]`` descending unless two of them tie, so
    each class's candidates come from one column-wise stable ``argsort`` and the greedy keep-sets
    of every class are one batched fixed point (``greedy_keep`` on a ``(classes, m, m)`` stack).
    Ties between non-zero probabilities of a class (or negative probabilities) take the literal
    class loop instead, where the earlier classes' arrangement decides.
    """
    n = len(dets)
    if n == 0 or not torch.isfinite(dets.probs).all():
        return _nms_per_class_chain(dets, thresh, kind, beta)
    perm, total = _move_zero_objectness(dets.objectness)
    probs_in = dets.probs[perm]
    p_all = probs_in[:total].numpy()
    cols = np.flatnonzero((p_all != 0).any(axis=0))
    if cols.size == 0:
        return DetectionSet(dets.boxes[perm], dets.objectness[perm], probs_in.clone(),
                            None if dets.uncertainty is None else dets.uncertainty[perm],
                            dets.image_size)
    p = p_all[:, cols]
    if (p < 0).any():
        return _nms_per_class_chain(dets, thresh, kind, beta)
    neg = -p
    order_k = np.argsort(neg, axis=0, kind="stable")               # (total, K) per class
    sorted_p = np.take_along_axis(p, order_k, axis=0)
    if ((sorted_p[1:] == sorted_p[:-1]) & (sorted_p[1:] != 0)).any():
        return _nms_per_class_chain(dets, thresh, kind, beta)
    counts = (p != 0).sum(axis=0)
    probs_out = probs_in.clone()
    sel = np.flatnonzero(counts >= 2)
    c = counts[sel].astype(np.int64)
    if sel.size and (int((c * (c - 1) // 2).sum()) > MAX_NMS_PAIRS
                     or sel.size * int(c.max()) ** 2 > 4 * MAX_NMS_PAIRS):
        # too many candidates for the batched matrices: class by class, bounded memory
        boxes = dets.boxes[perm][:total]
        thr = torch.tensor(thresh, dtype=boxes.dtype)
        for j, k in zip(sel.tolist(), c.tolist()):
            cand = torch.from_numpy(order_k[:k, j].copy())
            keep = _greedy_keep_sorted(boxes[cand], kind, beta, thr)
            probs_out[cand[~keep], int(cols[j])] = 0
        sel = sel[:0]
    if sel.size:
        m = int(counts[sel].max())
        cand = np.ascontiguousarray(order_k[:m, sel].T)            # (K2, m) rows, prob order
        valid = np.arange(m)[None, :] < counts[sel][:, None]
        boxes = dets.boxes[perm][:total]
        # the criterion of every (earlier, later) pair inside a class, computed once as a flat
        # list of pairs (elementwise: the same values as the class's pairwise matrix)
        lens = c * (c - 1) // 2
        kk = np.repeat(np.arange(sel.size), lens)
        within = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        later, earlier = _pairs_by_later(m)
        ia, ib = earlier[within], later[within]
        boxes = dets.boxes[perm][:total]
        first = boxes[torch.from_numpy(cand[kk, ia])]
        second = boxes[torch.from_numpy(cand[kk, ib])]
        hit = _elementwise_criterion(kind, beta)(first, second) > \
            torch.tensor(thresh, dtype=boxes.dtype)
        sup_np = np.zeros((sel.size, m, m), bool)
        sup_np[kk, ia, ib] = hit.numpy()
        sup = torch.from_numpy(sup_np)
        valid_t = torch.from_numpy(valid)
        keep = _greedy_keep_batched(sup, valid_t)
        drop = (valid_t & ~keep).numpy()
        if drop.any():
            rows = cand[drop]
            classes = np.broadcast_to(cols[sel][:, None], cand.shape)[drop]
            probs_out[torch.from_numpy(rows), torch.from_numpy(classes)] = 0
    keys = [np.arange(total)] + [neg[:, j] for j in range(neg.shape[1])]
    order = torch.from_numpy(np.lexsort(keys))
    return _arranged(dets, perm, probs_out, order, total, n)


@functools.lru_cache(maxsize=ALL_PAIRS_MAX_CANDIDATES + 1)
def _all_pairs(m: int) -> Tuple[np.ndarray, np.ndarray]:
    """Every pair ``a < b < m``, once."""
    a, b = np.triu_indices(m, 1)
    a.setflags(write=False)
    b.setflags(write=False)
    return a, b


@functools.lru_cache(maxsize=32)
def _pairs_by_later(m: int) -> Tuple[np.ndarray, np.ndarray]:
    """All pairs ``earlier < later < m`` ordered by ``later`` (then ``earlier``): the pairs of a
    class with ``c`` candidates are the first ``c*(c-1)/2``."""
    later = np.repeat(np.arange(m), np.arange(m))
    earlier = np.arange(later.size) - np.repeat(np.cumsum(np.arange(m)) - np.arange(m), np.arange(m))
    return later, earlier


def _greedy_keep_batched(suppress: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """:func:`greedy_keep` for a stack ``(K, m, m)`` of independent candidate lists."""
    m = int(suppress.shape[-1])
    upper = suppress & torch.ones(m, m, dtype=torch.bool).triu(1) & active[:, :, None]
    sup_f = upper.to(torch.float32)
    keep = active.clone()
    for _ in range(m + 1):
        hit = torch.bmm(keep.to(torch.float32).unsqueeze(1), sup_f).squeeze(1) > 0
        new_keep = active & ~hit
        if torch.equal(new_keep, keep):
            return keep
        keep = new_keep
    return keep  # pragma: no cover - the iteration converges within m steps


def do_nms_sort(dets: DetectionSet, thresh: float) -> DetectionSet:
    """Darknet's default ``do_nms_sort``: per class, IoU greedy suppression in prob order."""
    return _nms_per_class(dets, thresh, "default", 0.6)


def diounms_sort(dets: DetectionSet, thresh: float, nms_kind: str = "greedynms",
                 beta_nms: float = 0.6) -> DetectionSet:
    """Darknet's ``diounms_sort``: ``greedynms`` (DIoU, exponent 0.6), ``diounms`` (exponent
    ``beta_nms``) or ``cornersnms`` (IoU; the box merging is commented out in Darknet too)."""
    if nms_kind == "default":
        # Darknet's diounms_sort with DEFAULT_NMS suppresses nothing
        return _nms_per_class(dets, float("inf"), "default", beta_nms)
    return _nms_per_class(dets, thresh, nms_kind, beta_nms)


def do_nms_obj(dets: DetectionSet, thresh: float) -> DetectionSet:
    """Darknet's ``do_nms_obj``: one greedy pass in objectness order; suppressed boxes get
    objectness 0 and all probabilities 0."""
    n = len(dets)
    perm, total = _move_zero_objectness(dets.objectness)
    boxes = dets.boxes[perm]
    obj = dets.objectness[perm].clone()
    probs = dets.probs[perm].clone()
    order = torch.sort(-obj[:total], stable=True).indices
    if total > 1:
        keep = _greedy_keep_sorted(boxes[order], "default", 0.6,
                                   torch.tensor(thresh, dtype=boxes.dtype))
        drop = order[~keep]
        obj[drop] = 0
        probs[drop] = 0
    final = torch.cat([order, torch.arange(total, n)])
    idx = perm[final]
    return DetectionSet(dets.boxes[idx], obj[final], probs[final],
                        None if dets.uncertainty is None else dets.uncertainty[idx], dets.image_size)


def apply_nms(dets: DetectionSet, thresh: float = 0.45, nms_kind: str = "default",
              beta_nms: float = 0.6) -> DetectionSet:
    """What ``detector test``/``map`` do: ``do_nms_sort`` for the default kind, otherwise
    ``diounms_sort`` with the head's kind and ``beta_nms``. ``thresh == 0`` disables NMS
    (Darknet's ``if (nms)``)."""
    if not thresh:
        return dets
    if nms_kind == "default":
        return do_nms_sort(dets, thresh)
    return diounms_sort(dets, thresh, nms_kind, beta_nms)
