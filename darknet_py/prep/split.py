"""Split a labelled image set into Darknet's train/valid/test list files and write ``obj.data``.

Darknet itself has no split tool: AlexeyAB's README asks for ``train.txt`` (and ``valid.txt``),
one image path per line, an ``obj.names`` and an ``obj.data`` with ``classes``, ``train``,
``valid``, ``names`` and ``backup``. This module makes those from a folder of images (or an
existing list), with a seeded, reproducible shuffle and optional stratification so that rare
classes land in every split.

Paths are written absolute but **not resolved**: symlinked images stay symlinks, because Darknet
derives the label path from the listed path string (``replace_image_to_label``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import DataError, UsageError
from ..files import PathLike
from .voc import DARKNET_IMAGE_EXTENSIONS, label_path_for_image, read_class_names

SPLIT_NAMES: Tuple[str, str, str] = ("train", "valid", "test")
_RATIO_TOLERANCE = 1e-6


def parse_ratios(text: Union[str, Sequence[float]]) -> Tuple[float, ...]:
    """``"0.7,0.15,0.15"`` -> ``(0.7, 0.15, 0.15)``: 2 (train, valid) or 3 (train, valid, test)
    non-negative numbers that sum to 1 (a :class:`UsageError` otherwise)."""
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            ratios = tuple(float(p) for p in parts)
        except ValueError:
            raise UsageError(f"--ratios expects numbers separated by commas, got '{text}'",
                             value=text) from None
    else:
        ratios = tuple(float(r) for r in text)
    if len(ratios) not in (2, 3):
        raise UsageError(f"--ratios needs 2 (train,valid) or 3 (train,valid,test) values, got "
                         f"{len(ratios)}", value=text)
    if any(not np.isfinite(r) or r < 0 for r in ratios):
        raise UsageError(f"--ratios must be non-negative numbers, got {text}", value=text)
    total = sum(ratios)
    if abs(total - 1.0) > _RATIO_TOLERANCE:
        raise UsageError(f"--ratios must sum to 1, but {' + '.join(f'{r:g}' for r in ratios)} = "
                         f"{total:g}", value=text)
    if ratios[0] <= 0:
        raise UsageError("--ratios: the train share must be above 0", value=text)
    return ratios


def split_counts(n: int, ratios: Sequence[float]) -> List[int]:
    """Images per split: ``floor(n * ratio)``, the remainder going to the largest fractions
    (ties to the earlier split). Always sums to ``n``."""
    exact = np.asarray(ratios, dtype=np.float64) * n
    counts = np.floor(exact + 1e-9).astype(np.int64)
    rest = n - int(counts.sum())
    if rest > 0:
        frac = exact - counts
        order = sorted(range(len(ratios)), key=lambda k: (-frac[k], k))
        for k in order[:rest]:
            counts[k] += 1
    return [int(c) for c in counts]


def _list_dir_images(folder: Path) -> Tuple[List[str], List[str]]:
    images, odd = [], []
    for name in sorted(os.listdir(folder)):
        full = folder / name
        if not full.is_file():
            continue
        if name.endswith(DARKNET_IMAGE_EXTENSIONS):
            images.append(os.path.abspath(os.fspath(full)))
        elif os.path.splitext(name)[1].lower() in {e.lower() for e in DARKNET_IMAGE_EXTENSIONS}:
            odd.append(name)
    return images, odd


def read_image_list(source: PathLike,
                    root: Optional[PathLike] = None) -> Tuple[List[str], List[str]]:
    """Images of a folder (sorted, not recursive) or of a list file (in file order).

    Relative entries of a list file are taken relative to ``root`` (default: the list file's
    folder). Returns ``(absolute paths, skipped names)``: folder files whose extension Darknet
    cannot map to a label (``.Jpg``, ``.tif``...) are skipped and reported.
    """
    src = Path(source)
    if src.is_dir():
        images, odd = _list_dir_images(src)
        if not images:
            raise DataError("no images (.jpg .jpeg .png .bmp .ppm .tiff) in this folder", file=src)
        return images, odd
    if not src.is_file():
        raise DataError("image folder or list file not found", file=src)
    base = Path(root) if root is not None else src.parent
    images: List[str] = []
    seen: Dict[str, int] = {}
    with open(src, encoding="utf-8", errors="replace") as f:
        for lineno, raw in enumerate(f, 1):
            entry = raw.strip()
            if not entry or entry.startswith("#"):
                continue
            path = entry if os.path.isabs(entry) else os.path.join(os.fspath(base), entry)
            path = os.path.abspath(path)
            if not os.path.isfile(path):
                hint = "" if root is not None else " (relative entries are read from the list's " \
                                                   "folder; pass --root)"
                raise DataError(f"image not found: {path}{hint}", file=src, line=lineno,
                                value=entry)
            if path in seen:
                raise DataError(f"image listed twice (also line {seen[path]}): {entry}", file=src,
                                line=lineno, value=entry)
            seen[path] = lineno
            images.append(path)
    if not images:
        raise DataError("the list file names no images", file=src)
    return images, []


def read_label_classes(image_path: str, classes: int) -> Optional[np.ndarray]:
    """Class ids of an image's Darknet label file (None when the file does not exist).

    Each line must be ``<id> <cx> <cy> <w> <h>`` with ``0 <= id < classes``; anything else is a
    :class:`DataError` with the label file and line (Darknet would skip such a box with
    "Wrong annotation", or stop reading the file).
    """
    label = label_path_for_image(image_path)
    if not label.endswith(".txt") or not os.path.isfile(label):
        return None
    ids: List[int] = []
    with open(label, encoding="utf-8", errors="replace") as f:
        for lineno, raw in enumerate(f, 1):
            parts = raw.split()
            if not parts:
                continue
            if len(parts) != 5:
                raise DataError(f"label line needs 5 values '<class> <cx> <cy> <w> <h>', got "
                                f"{len(parts)}", file=label, line=lineno, value=raw.strip())
            try:
                cid = int(parts[0])
                [float(p) for p in parts[1:]]
            except ValueError:
                raise DataError("label line is not '<int class> <4 numbers>'", file=label,
                                line=lineno, value=raw.strip()) from None
            if not 0 <= cid < classes:
                raise DataError(f"class id {cid} is outside 0..{classes - 1} (the names file has "
                                f"{classes} classes)", file=label, line=lineno, value=cid)
            ids.append(cid)
    return np.asarray(ids, dtype=np.int64)


def _assign(keys: np.ndarray, targets: Sequence[int], seed: int, stratify: bool) -> np.ndarray:
    """Split index (0 train, 1 valid, 2 test) for every image.

    A seeded permutation of the images; without stratification the first ``targets[0]`` go to
    train, the next ``targets[1]`` to valid, the rest to test. With it, images are grouped by
    ``keys`` (groups in ascending key order, each in permuted order) and dealt out one at a time to
    the split furthest behind its share, so every group is divided in the split ratios (to within
    one image) and the totals are exactly ``targets``.
    """
    n = len(keys)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    out = np.empty(n, dtype=np.int64)
    if not stratify:
        bounds = np.cumsum(targets)
        out[perm] = np.searchsorted(bounds, np.arange(n), side="right")
        return out
    order = perm[np.argsort(keys[perm], kind="stable")]
    target = np.asarray(targets, dtype=np.float64)
    assigned = np.zeros(len(targets), dtype=np.int64)
    for t, idx in enumerate(order, 1):
        deficit = target * (t / n) - assigned
        deficit[assigned >= target] = -np.inf
        k = int(np.argmax(deficit))
        assigned[k] += 1
        out[idx] = k
    return out


@dataclass
class SplitResult:
    """The lists written by :func:`split_dataset` and per-split statistics."""

    names: List[str]
    out_dir: str
    ratios: Tuple[float, ...]
    seed: int
    stratified: bool
    splits: Dict[str, List[str]] = field(default_factory=dict)      # split -> image paths
    files: Dict[str, str] = field(default_factory=dict)             # what -> written file
    boxes_per_class: Dict[str, np.ndarray] = field(default_factory=dict)
    images_per_class: Dict[str, np.ndarray] = field(default_factory=dict)
    background: Dict[str, int] = field(default_factory=dict)        # images with an empty label
    missing_labels: Dict[str, int] = field(default_factory=dict)    # images with no label file
    skipped_files: List[str] = field(default_factory=list)


def _write_lines(path: str, lines: Sequence[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(line + "\n" for line in lines))


def split_dataset(
    source: PathLike,
    out_dir: PathLike,
    names: PathLike,
    ratios: Union[str, Sequence[float]] = (0.7, 0.15, 0.15),
    seed: int = 0,
    stratify: bool = False,
    root: Optional[PathLike] = None,
    backup: Optional[PathLike] = None,
) -> SplitResult:
    """Split the images of ``source`` (folder or list file) and write Darknet's dataset files.

    Writes into ``out_dir``: ``train.txt``, ``valid.txt`` (and ``test.txt`` with 3 ratios), one
    absolute image path per line in source order; ``obj.names`` (a copy of ``names``);
    ``obj.data`` with ``classes``, ``train``, ``valid`` (= valid.txt), ``names``, ``backup``; and,
    with a test split, ``obj-test.data`` whose ``valid`` is test.txt (for the final
    ``detector map``). The ``backup`` folder (default ``out_dir/backup``) is created.

    The shuffle is ``numpy.random.default_rng(seed).permutation``: the same inputs and seed give
    the same lists on every machine. ``stratify`` groups images by the rarest class they contain
    (rarity by images per class; background images form their own group) and divides each group in
    the split ratios; counts per split stay exactly those of :func:`split_counts`.
    """
    ratio_values = parse_ratios(ratios)
    class_names = read_class_names(names)
    nclass = len(class_names)
    images, skipped = read_image_list(source, root)
    n = len(images)

    # labels: class presence per image (for stratification and the report)
    presence = np.zeros((n, nclass), dtype=bool)
    box_counts = np.zeros((n, nclass), dtype=np.int64)
    has_label = np.zeros(n, dtype=bool)
    for i, img in enumerate(images):
        ids = read_label_classes(img, nclass)
        if ids is None:
            continue
        has_label[i] = True
        counts = np.bincount(ids, minlength=nclass)
        box_counts[i] = counts
        presence[i] = counts > 0
    if stratify:
        freq = presence.sum(axis=0)
        rank = np.empty(nclass, dtype=np.int64)  # 0 = rarest class
        rank[np.argsort(freq, kind="stable")] = np.arange(nclass)
        ranked = np.where(presence, rank[None, :], nclass)
        keys = ranked.min(axis=1) if nclass else np.zeros(n, dtype=np.int64)  # nclass = background
    else:
        keys = np.zeros(n, dtype=np.int64)
    targets = split_counts(n, ratio_values)
    which = _assign(keys, targets, seed, stratify)

    out = os.path.abspath(os.fspath(out_dir))
    os.makedirs(out, exist_ok=True)
    backup_dir = (os.path.abspath(os.fspath(backup)) if backup is not None
                  else os.path.join(out, "backup"))
    os.makedirs(backup_dir, exist_ok=True)
    result = SplitResult(names=class_names, out_dir=out, ratios=ratio_values, seed=seed,
                         stratified=stratify, skipped_files=skipped)
    for k, ratio in enumerate(ratio_values):
        split = SPLIT_NAMES[k]
        members = np.flatnonzero(which == k)
        result.splits[split] = [images[i] for i in members]
        path = os.path.join(out, f"{split}.txt")
        _write_lines(path, result.splits[split])
        result.files[split] = path
        result.boxes_per_class[split] = box_counts[members].sum(axis=0)
        result.images_per_class[split] = presence[members].sum(axis=0)
        result.background[split] = int(np.count_nonzero(has_label[members]
                                                        & ~presence[members].any(axis=1)))
        result.missing_labels[split] = int(np.count_nonzero(~has_label[members]))

    names_path = os.path.join(out, "obj.names")
    _write_lines(names_path, class_names)
    result.files["names"] = names_path
    backup_text = backup_dir.rstrip("/") + "/"

    def data_text(valid: str) -> str:
        return (f"classes = {nclass}\ntrain = {result.files['train']}\nvalid = {valid}\n"
                f"names = {names_path}\nbackup = {backup_text}\n")

    data_path = os.path.join(out, "obj.data")
    with open(data_path, "w", encoding="utf-8", newline="\n") as f:
        f.write(data_text(result.files["valid"]))
    result.files["data"] = data_path
    if "test" in result.files:
        test_data = os.path.join(out, "obj-test.data")
        with open(test_data, "w", encoding="utf-8", newline="\n") as f:
            f.write(data_text(result.files["test"]))
        result.files["test_data"] = test_data
    return result


def format_split_report(result: SplitResult) -> str:
    """Per-split image counts and boxes per class."""
    total = sum(len(v) for v in result.splits.values())
    mode = "stratified by rarest class" if result.stratified else "random"
    lines = [f"split {total} images {mode}, seed {result.seed}, ratios "
             + ",".join(f"{r:g}" for r in result.ratios) + f" -> {result.out_dir}"]
    width = max([len(n) for n in result.names] + [11])
    header = f"  {'split':<6} {'images':>7} " + " ".join(f"{n:>{width}}" for n in result.names)
    lines.append(header + "  (boxes/images per class)")
    for split, paths in result.splits.items():
        counts = " ".join(f"{f'{int(b)}/{int(i)}':>{width}}" for b, i in
                          zip(result.boxes_per_class[split], result.images_per_class[split]))
        extra = []
        if result.background[split]:
            extra.append(f"{result.background[split]} background")
        if result.missing_labels[split]:
            extra.append(f"{result.missing_labels[split]} without label file")
        note = f"  ({', '.join(extra)})" if extra else ""
        lines.append(f"  {split:<6} {len(paths):>7} {counts}{note}")
        if not paths:
            lines.append(f"  warning: the {split} split is empty")
    if result.skipped_files:
        lines.append(f"skipped {len(result.skipped_files)} files whose extension Darknet cannot "
                     "map to a label file: " + ", ".join(result.skipped_files[:5]))
    written = ", ".join(os.path.basename(p) for p in result.files.values())
    lines.append(f"wrote {written}")
    return "\n".join(lines)
