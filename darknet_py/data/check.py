"""``darknet-py data check``: a dataset doctor for Darknet's file layout, run before training.

:func:`check_dataset` reads the ``train=``/``valid=`` lists of an ``obj.data`` the way Darknet
does (:mod:`~darknet_py.data.datacfg`, the label-path rule of :mod:`~darknet_py.data.paths`, the
label parser of :mod:`~darknet_py.data.labels`) and returns a :class:`CheckReport`: one
:class:`Finding` (file, line, kind, severity, message) per problem, each reported once, and
per-split :class:`SplitStats` (images, boxes, boxes and images per class, box sizes).

Severity: ``error`` for what training would skip or choke on (a missing, empty, unreadable or
truncated image; a label line Darknet drops or misreads); ``warning`` for the rest (a missing label
file, a box sticking out of the image, sub-pixel or sub-stride boxes, duplicate boxes, duplicate
images within a list or leaking from train into valid, repeated list entries). An empty label
file is a background image on purpose and is counted, not reported.

Images are checked from their headers (size, and for JPEG/PNG the end marker that a truncated
file lacks) unless ``decode=True``; duplicate images are found by content hash, hashing only
files whose byte size collides, so the check runs at metadata speed.

:func:`write_fixed_copy` writes a cleaned copy (``-fix-into``) into a new or empty folder: images
symlinked, lists without bad entries, labels without dropped lines and duplicates, boxes clamped
to the image, and an ``obj.data`` pointing at them. The originals are never opened for writing.
"""
from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..errors import DataError, UsageError
from ..imaging.image import decode_image, read_image_size
from ..imaging.image_header import check_pixels
from ..model.network import Network
from ..structures.boxes import xywh_to_xyxy, xyxy_to_xywh
from .anchors import kmeans_anchors
from .datacfg import DataConfig, read_data_cfg, read_list_lines, read_names
from .labels import LabelFile, read_labels
from .paths import label_path

ERROR, WARNING = "error", "warning"

#: kind -> severity. Label kinds come from :class:`~darknet_py.data.labels.LabelIssue`.
SEVERITY: Dict[str, str] = {
    # images and list entries
    "missing-image": ERROR, "empty-image": ERROR, "unreadable-image": ERROR,
    "truncated-image": ERROR, "bad-image-name": ERROR,
    "duplicate-entry": WARNING, "duplicate-image": WARNING, "leaked-image": WARNING,
    # label files and lines
    "unreadable-label": ERROR, "missing-label": WARNING,
    "malformed": ERROR, "class-not-integer": ERROR, "nan": ERROR, "class-out-of-range": ERROR,
    "nonpositive-size": ERROR, "zero-xy": ERROR, "outside-image": ERROR,
    "extra-columns": WARNING, "extends-outside": WARNING,
    "duplicate-box": WARNING, "sub-pixel": WARNING, "sub-stride": WARNING,
    # configuration
    "classes-mismatch": ERROR, "names-count": WARNING, "same-list": WARNING,
}

#: finding kinds that remove the list entry in a fixed copy
_BAD_ENTRY = ("missing-image", "empty-image", "unreadable-image", "truncated-image",
              "bad-image-name", "duplicate-entry", "duplicate-image", "leaked-image")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TAIL = 1024
_ONE_PX = 0.999     # a 1-pixel box written with 6 decimals may read back as 0.9999 px


@dataclass
class Finding:
    """One problem: where (``file``, 1-based ``line`` or None), what (``kind``), how bad."""

    kind: str
    file: str
    line: Optional[int]
    message: str
    severity: str = ""
    split: Optional[str] = None
    image: Optional[str] = None      # the list entry (image path) the problem belongs to

    def __post_init__(self):
        if not self.severity:
            self.severity = SEVERITY[self.kind]

    def format(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.severity}: {self.kind}: {self.message}"


@dataclass
class SplitStats:
    """What one list holds (only readable images count as images; only usable boxes as boxes)."""

    name: str
    list_path: str
    entries: int = 0                 # non-blank lines of the list
    images: int = 0                  # distinct, readable images
    labelled: int = 0                # images with at least one usable box
    background: int = 0              # label file present but empty (on purpose)
    missing_labels: int = 0          # no label file (forgotten, or background the MSCOCO way)
    boxes: int = 0
    boxes_per_class: List[int] = field(default_factory=list)
    images_per_class: List[int] = field(default_factory=list)
    # (N, 2) usable box sizes in network pixels (with a cfg) or image pixels, and (N,) w/h in
    # image pixels; not in the JSON report (only their percentiles)
    sizes: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32), repr=False)
    aspect: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)

    @property
    def imbalance(self) -> Optional[float]:
        """max/min boxes per class (inf when a class has none; None without boxes)."""
        if not self.boxes_per_class or max(self.boxes_per_class) == 0:
            return None
        lo = min(self.boxes_per_class)
        return math.inf if lo == 0 else max(self.boxes_per_class) / lo


@dataclass
class NetworkInfo:
    """What the cfg says about sizes: input, strides of the heads, anchors per head."""

    cfg: str
    width: int
    height: int
    strides: List[int]
    num_anchors: int
    classes: int


@dataclass
class CheckReport:
    data: str
    classes: int
    names: List[str]
    splits: List[SplitStats]
    findings: List[Finding]
    network: Optional[NetworkInfo] = None
    counters_per_class: Optional[List[int]] = None
    anchors: Optional[List[Tuple[float, float]]] = None
    anchors_avg_iou: Optional[float] = None
    size_advice: Optional[str] = None
    decoded: bool = False
    seconds: float = 0.0
    #: valid= names the same file as train= (checked once, as the train list)
    same_list: bool = False

    @property
    def errors(self) -> int:
        return sum(f.severity == ERROR for f in self.findings)

    @property
    def warnings(self) -> int:
        return sum(f.severity == WARNING for f in self.findings)

    def counts(self) -> Dict[str, int]:
        return dict(Counter(f.kind for f in self.findings))

    def exit_code(self, strict: bool = False) -> int:
        """0: no errors (warnings allowed unless ``strict``); 1: errors found."""
        return 1 if self.errors or (strict and self.warnings) else 0

    def as_dict(self) -> dict:
        splits = []
        for s in self.splits:
            d = {k: v for k, v in asdict(s).items() if k not in ("sizes", "aspect")}
            d["imbalance"] = s.imbalance if s.imbalance is None or math.isfinite(s.imbalance) \
                else "inf"
            d["box_size_percentiles"] = _percentiles(s.sizes)
            d["aspect_percentiles"] = _percentiles(s.aspect[:, None]) if s.aspect.size else None
            splits.append(d)
        return {
            "data": self.data, "classes": self.classes, "names": self.names,
            "network": None if self.network is None else asdict(self.network),
            "decoded": self.decoded, "seconds": round(self.seconds, 3),
            "errors": self.errors, "warnings": self.warnings, "counts": self.counts(),
            "splits": splits,
            "suggestions": {"counters_per_class": self.counters_per_class,
                            "anchors": self.anchors, "anchors_avg_iou": self.anchors_avg_iou,
                            "network_size": self.size_advice},
            "findings": [asdict(f) for f in self.findings],
        }


PERCENTILES = (0, 5, 50, 95, 100)


def _percentiles(a: np.ndarray) -> Optional[Dict[str, List[float]]]:
    if a.shape[0] == 0:
        return None
    q = np.percentile(a, PERCENTILES, axis=0)
    return {f"p{p}": [round(float(v), 2) for v in np.atleast_1d(q[i])]
            for i, p in enumerate(PERCENTILES)}


# --------------------------------------------------------------------------- network
def network_info(cfg: str) -> NetworkInfo:
    """Input size, head strides and anchors per head from a cfg (builds the network once)."""
    net = Network.from_cfg(cfg, batch=1)
    if not net.heads:
        raise DataError("the cfg has no [yolo]/[region] layer: no strides to check against",
                        file=cfg)
    strides = sorted({max(1, round(net.width / h.w)) for h in net.heads})
    head = net.heads[0]
    return NetworkInfo(cfg, net.width, net.height, strides,
                       int(getattr(head, "total", getattr(head, "n", 0))), net.classes)


# --------------------------------------------------------------------------- images
@dataclass
class _Image:
    ok: bool                          # usable by training (size known)
    size: Optional[Tuple[int, int]]
    nbytes: int


def _check_image(path: str, decode: bool, report: Callable[[str, str], None]) -> _Image:
    """Header (and end marker) check, or a full decode; problems go to ``report(kind, msg)``."""

    try:
        st = os.stat(path)
    except FileNotFoundError:
        report("missing-image", f"image not found: {path}")
        return _Image(False, None, 0)
    except OSError as e:
        report("unreadable-image", f"cannot stat image {path}: {e.strerror}")
        return _Image(False, None, 0)
    if not os.path.isfile(path):
        report("unreadable-image", f"not a file: {path}")
        return _Image(False, None, 0)
    if st.st_size == 0:
        report("empty-image", f"image file is empty (0 bytes): {path}")
        return _Image(False, None, 0)
    try:
        size = read_image_size(path)
        check_pixels(size[0], size[1], path)    # training would refuse it before decoding
    except DataError as e:
        report("unreadable-image", f"{e.message}: {path}")
        return _Image(False, None, st.st_size)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(max(0, st.st_size - _TAIL))
            tail = f.read()
    except OSError as e:
        report("unreadable-image", f"cannot read image {path}: {e.strerror}")
        return _Image(False, None, st.st_size)
    if head[:2] == b"\xff\xd8" and b"\xff\xd9" not in tail:
        report("truncated-image", f"JPEG has no end marker (truncated, {st.st_size} bytes): "
                                  f"{path}")
    elif head == _PNG_MAGIC and b"IEND" not in tail:
        report("truncated-image", f"PNG has no IEND chunk (truncated, {st.st_size} bytes): {path}")
    if decode:
        try:
            img = decode_image(path, 3)          # the decoder training uses, with its checks
        except DataError as e:
            report("unreadable-image", f"{e.message}: {path}")
            return _Image(False, size, st.st_size)
        size = (int(img.shape[1]), int(img.shape[0]))
    return _Image(True, size, st.st_size)


def _file_hash(path: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- labels
def _box_findings(lf: LabelFile, size: Optional[Tuple[int, int]], net: Optional[NetworkInfo],
                  emit: Callable[..., None]) -> None:
    """Duplicate, sub-pixel and sub-stride boxes among the rows Darknet keeps."""
    rows, linenos = lf.rows, lf.linenos
    if rows is None or rows.shape[0] == 0:
        return
    dropped = {i.line for i in lf.issues if i.dropped}
    first: Dict[bytes, int] = {}
    for r in range(rows.shape[0]):
        ln = int(linenos[r])
        if ln in dropped:
            continue
        key = rows[r].tobytes()
        if key in first:
            emit("duplicate-box", lf.path, ln, f"same box as line {first[key]}")
            continue
        first[key] = ln
        w, h = float(rows[r, 3]), float(rows[r, 4])
        tiny = []
        if size is not None and (w * size[0] < _ONE_PX or h * size[1] < _ONE_PX):
            tiny.append(f"{w * size[0]:.2f}x{h * size[1]:.2f} image px")
        if net is not None and (w * net.width < _ONE_PX or h * net.height < _ONE_PX):
            tiny.append(f"{w * net.width:.2f}x{h * net.height:.2f} network px at "
                        f"{net.width}x{net.height} (Darknet drops it)")
        if tiny:
            emit("sub-pixel", lf.path, ln, "box smaller than a pixel: " + ", ".join(tiny))
        elif net is not None and max(w * net.width, h * net.height) < net.strides[0]:
            emit("sub-stride", lf.path, ln,
                 f"box {w * net.width:.1f}x{h * net.height:.1f} network px at "
                 f"{net.width}x{net.height} is smaller than the finest stride "
                 f"{net.strides[0]}")


# --------------------------------------------------------------------------- the check
class _Progress:
    """``\\r checked N/M images`` on stderr, only on a terminal, at most 4 times a second."""

    def __init__(self, total: int, enabled: Optional[bool] = None):
        self.total = total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.last = 0.0
        self.done = 0

    def step(self, what: str) -> None:
        self.done += 1
        now = time.monotonic()
        if self.enabled and (now - self.last > 0.25 or self.done == self.total):
            self.last = now
            sys.stderr.write(f"\r {what}: checked {self.done}/{self.total} images")
            if self.done == self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def _select_splits(data: DataConfig, which: str) -> List[Tuple[str, str]]:
    if which not in ("train", "valid", "all"):
        raise UsageError(f"which='{which}': expected train, valid or all", value=which)
    out = []
    if which in ("train", "all"):
        out.append(("train", data.train_or_default("data/train.txt")))
    if which == "valid" or (which == "all" and data.valid is not None):
        if data.valid is None:
            raise DataError("-valid: the data file has no valid= line", file=data.path)
        out.append(("valid", data.valid))
    return out


def check_dataset(datacfg: str, which: str = "all", cfg: Optional[str] = None,
                  decode: bool = False, anchors_seed: int = 0,
                  progress: Optional[bool] = None) -> CheckReport:
    """Check the lists, images and labels of ``datacfg`` (see the module docstring).

    ``which``: ``train``, ``valid`` or ``all`` (train and, when set, valid). ``cfg``: a network
    cfg for sizes in network pixels, sub-stride boxes and the anchor suggestion (k-means of
    ``calc_anchors`` with glibc ``srand(anchors_seed)``, on the train boxes).
    """
    t0 = time.monotonic()
    data = read_data_cfg(datacfg)
    classes = data.classes_or_default(1)
    findings: List[Finding] = []

    def emit(kind: str, file: str, line: Optional[int], message: str, split: Optional[str] = None,
             image: Optional[str] = None) -> None:
        findings.append(Finding(kind, file, line, message, split=split, image=image))

    names: List[str] = []
    names_path = data.names_or_default()
    if data.names is not None or data.labels is not None:
        names = read_names(names_path)
        if len(names) != classes:
            emit("names-count", names_path, None, f"{len(names)} names but classes = {classes} "
                 f"in {datacfg}")
    net = network_info(cfg) if cfg is not None else None
    if net is not None and net.classes != classes:
        emit("classes-mismatch", cfg, None, f"the cfg's [yolo] layers have classes = "
             f"{net.classes} but {datacfg} says classes = {classes}")

    splits = _select_splits(data, which)
    same_list = len(splits) == 2 and _same_file(splits[0][1], splits[1][1])
    if same_list:
        # one finding, not one leaked-image per line (a 128-image list gave 128 of them)
        emit("same-list", data.path, data.line_of("valid"), f"valid= and train= are the same "
             f"file ({splits[1][1]}): mAP on it measures the training images; checked once, "
             f"as the train list")
        splits = splits[:1]
    seen_images: Dict[str, Tuple[str, str, int]] = {}      # abs path -> (split, list, line)
    results: Dict[str, Tuple[_Image, Optional[LabelFile]]] = {}
    by_size: Dict[int, List[Tuple[str, str, str, int]]] = defaultdict(list)
    stats: List[SplitStats] = []
    for split, list_path in splits:
        entries = read_list_lines(list_path)
        st = SplitStats(split, list_path, entries=len(entries),
                        boxes_per_class=[0] * classes, images_per_class=[0] * classes)
        prog = _Progress(len(entries), progress)
        in_this: Dict[str, int] = {}
        sizes, aspects = [], []
        for line, image in entries:
            prog.step(split)
            key = os.path.abspath(image)
            where = dict(split=split, image=image)
            if key in in_this:
                emit("duplicate-entry", list_path, line, f"repeats line {in_this[key]}: {image}",
                     **where)
                continue
            in_this[key] = line
            if key in seen_images:      # same path in train and valid
                s0, l0, ln0 = seen_images[key]
                emit("leaked-image", list_path, line, f"{image} is also in the {s0} list "
                     f"({l0}:{ln0})", **where)
                continue
            seen_images[key] = (split, list_path, line)

            def report(kind: str, msg: str) -> None:
                emit(kind, list_path, line, msg, **where)

            lpath = label_path(image, strict=False)
            if lpath is None:
                report("bad-image-name", f"Darknet cannot infer the label file of {image}: "
                       f"the extension is not one Darknet maps to .txt")
                continue
            img = _check_image(image, decode, report)
            if not img.ok:
                continue
            by_size[img.nbytes].append((key, split, list_path, line))
            st.images += 1
            try:
                lf = read_labels(lpath, classes)
            except DataError as e:
                report("unreadable-label", e.format())
                continue
            results[key] = (img, lf)
            if lf.missing:
                st.missing_labels += 1
                report("missing-label", f"no label file {lpath} (trained as background)")
                continue
            if lf.rows_read == 0 and not lf.issues:
                st.background += 1
            for issue in lf.issues:
                emit(issue.kind, lpath, issue.line, issue.message, **where)
            _box_findings(lf, img.size, net, lambda k, f, ln, m: emit(k, f, ln, m, **where))
            b = lf.boxes
            if b.shape[0]:
                st.labelled += 1
                ids = b[:, 0].astype(np.int64)
                counts = np.bincount(ids, minlength=classes)
                for c in np.nonzero(counts)[0]:
                    st.boxes_per_class[c] += int(counts[c])
                    st.images_per_class[c] += 1
                st.boxes += b.shape[0]
                scale = (net.width, net.height) if net is not None else img.size
                sizes.append(b[:, 3:5] * np.array(scale, np.float32))
                aspects.append((b[:, 3] * img.size[0]) / (b[:, 4] * img.size[1]))
        if sizes:
            st.sizes = np.concatenate(sizes).astype(np.float32)
            st.aspect = np.concatenate(aspects).astype(np.float32)
        stats.append(st)

    _duplicate_images(by_size, emit)
    rep = CheckReport(datacfg, classes, names, stats, findings, network=net, decoded=decode,
                      same_list=same_list)
    train = next((s for s in stats if s.name == "train"), None)
    if train is not None:
        rep.counters_per_class = list(train.boxes_per_class)
    if net is not None and train is not None and train.boxes >= max(1, net.num_anchors) \
            and net.num_anchors > 0:
        km = kmeans_anchors(train.sizes, net.num_anchors, seed=anchors_seed)
        rep.anchors = [(round(float(w)), round(float(h))) for w, h in km.centers]
        rep.anchors_avg_iou = km.avg_iou
    if net is not None and train is not None and train.boxes:
        rep.size_advice = _size_advice(train.sizes, net)
    rep.seconds = time.monotonic() - t0
    return rep


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:          # a missing list is reported when it is read
        return os.path.abspath(a) == os.path.abspath(b)


def _duplicate_images(by_size: Dict[int, List[Tuple[str, str, str, int]]],
                      emit: Callable[..., None]) -> None:
    """Same bytes under different paths: hash only the files whose sizes collide."""
    for nbytes, group in by_size.items():
        if len(group) < 2:
            continue
        first: Dict[str, Tuple[str, str, str, int]] = {}
        for entry in group:
            key, split, list_path, line = entry
            digest = _file_hash(key)
            if digest not in first:
                first[digest] = entry
                continue
            k0, s0, l0, ln0 = first[digest]
            kind = "duplicate-image" if s0 == split else "leaked-image"
            what = "same content as" if s0 == split else f"same content as the {s0} image"
            emit(kind, list_path, line, f"{what} {l0}:{ln0} ({k0})", split=split, image=key)


def _size_advice(sizes: np.ndarray, net: NetworkInfo) -> str:
    side = sizes.max(axis=1)
    below = float(np.mean(side < net.strides[0]))
    p5 = float(np.percentile(side, 5))
    msg = (f"{below * 100:.1f}% of the train boxes are smaller than the finest stride "
           f"({net.strides[0]} px) at {net.width}x{net.height}; 5th percentile of the larger "
           f"side: {p5:.1f} px")
    if below > 0.05 and p5 > 0:
        factor = net.strides[0] / p5
        w = int(math.ceil(net.width * factor / 32) * 32)
        h = int(math.ceil(net.height * factor / 32) * 32)
        return msg + f": the network size is small for the smallest objects; consider " \
                     f"width={w} height={h}"
    return msg + ": the network size is large enough for the smallest objects"


# --------------------------------------------------------------------------- report text
def _fmt_ratio(v: Optional[float]) -> str:
    if v is None:
        return "-"
    return "inf" if math.isinf(v) else f"{v:.1f}"


def format_report(rep: CheckReport, limit: int = 20) -> str:
    """Findings grouped by kind (errors first, ``limit`` lines per kind, 0 = all), then the
    summary table and the suggestions."""
    out = [f"data check: {rep.data} (classes = {rep.classes}"
           + (f", cfg {rep.network.cfg} at {rep.network.width}x{rep.network.height}, strides "
              f"{','.join(map(str, rep.network.strides))}" if rep.network else "") + ")"]
    groups: Dict[str, List[Finding]] = defaultdict(list)
    for f in rep.findings:
        groups[f.kind].append(f)
    order = sorted(groups, key=lambda k: (SEVERITY[k] != ERROR, list(SEVERITY).index(k)))
    for kind in order:
        items = groups[kind]
        out.append(f"\n{SEVERITY[kind]} {kind}: {len(items)}")
        shown = items if limit <= 0 else items[:limit]
        out += [" " + f.format() for f in shown]
        if len(items) > len(shown):
            out.append(f"  ... and {len(items) - len(shown)} more (all in -json)")
    names = rep.names if len(rep.names) == rep.classes else [str(i) for i in range(rep.classes)]
    cols = [s.name for s in rep.splits]
    rows: List[Tuple[str, List[str]]] = [
        ("list entries", [str(s.entries) for s in rep.splits]),
        ("images", [str(s.images) for s in rep.splits]),
        ("  with boxes", [str(s.labelled) for s in rep.splits]),
        ("  background (empty label)", [str(s.background) for s in rep.splits]),
        ("  label file missing", [str(s.missing_labels) for s in rep.splits]),
        ("boxes", [str(s.boxes) for s in rep.splits]),
    ]
    for c, name in enumerate(names):
        rows.append((f"  boxes {name}", [str(s.boxes_per_class[c]) for s in rep.splits]))
    for c, name in enumerate(names):
        rows.append((f"  images with {name}", [str(s.images_per_class[c]) for s in rep.splits]))
    rows.append(("class imbalance (max/min)", [_fmt_ratio(s.imbalance) for s in rep.splits]))
    unit = "network px" if rep.network else "image px"
    for p in PERCENTILES:
        label = {0: "min", 50: "median", 100: "max"}.get(p, f"p{p}")
        rows.append((f"box w x h ({unit}) {label}", [
            "-" if not s.boxes else "%.0fx%.0f" % tuple(np.percentile(s.sizes, p, axis=0))
            for s in rep.splits]))
    for p in (5, 50, 95):
        rows.append((f"aspect w/h p{p}", ["-" if not s.boxes else
                                          f"{np.percentile(s.aspect, p):.2f}"
                                          for s in rep.splits]))
    width = max(len(r[0]) for r in rows) + 2
    colw = max([len(c) for c in cols] + [len(v) for r in rows for v in r[1]]) + 2
    out.append("\n" + "summary".ljust(width) + "".join(c.rjust(colw) for c in cols))
    out += [name.ljust(width) + "".join(v.rjust(colw) for v in vals) for name, vals in rows]
    out.append("\nsuggestions:")
    if rep.counters_per_class is not None:
        out.append(" counters_per_class = " + ", ".join(map(str, rep.counters_per_class))
                   + "   (for the [yolo] layers, with class-balanced training)")
    if rep.anchors:
        out.append(" anchors = " + ", ".join(f"{w:.0f},{h:.0f}" for w, h in rep.anchors)
                   + f"   (calc_anchors k-means, {len(rep.anchors)} clusters, avg IoU "
                   f"{rep.anchors_avg_iou:.2f} %)")
    if rep.size_advice:
        out.append(" network size: " + rep.size_advice)
    out.append(f"\n{rep.errors} errors, {rep.warnings} warnings in {rep.seconds:.2f} s"
               + (" (images decoded)" if rep.decoded else " (image headers only; -decode "
                                                           "decodes every image)"))
    return "\n".join(out)


# --------------------------------------------------------------------------- fixed copy
def _clean_label_text(lf: LabelFile, drop_lines: set) -> str:
    rows, linenos = lf.rows, lf.linenos
    if rows is None or rows.shape[0] == 0:
        return ""
    # each box clipped to the image: left/top at least 0, right/bottom at most 1
    corners = xywh_to_xyxy(rows[:, 1:5].astype(np.float64))
    corners[:, :2] = np.fmax(corners[:, :2], 0.0)
    corners[:, 2:] = np.fmin(corners[:, 2:], 1.0)
    clipped = xyxy_to_xywh(corners)
    out = []
    for r in range(rows.shape[0]):
        if int(linenos[r]) in drop_lines:
            continue
        x, y, w, h = clipped[r]
        out.append(f"{int(rows[r, 0])} {x:.6f} {y:.6f} {w:.6f} {h:.6f}")
    return "".join(s + "\n" for s in out)


@dataclass
class FixResult:
    folder: str
    data: str
    lists: Dict[str, str]
    entries_kept: Dict[str, int]
    entries_dropped: Dict[str, int]
    lines_dropped: int
    boxes_clamped: int


def write_fixed_copy(rep: CheckReport, out_dir: str) -> FixResult:
    """Write the cleaned copy of a checked dataset into ``out_dir`` (new or empty)."""
    out = os.path.abspath(out_dir)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise UsageError(f"-fix-into must be a new or empty folder, and {out_dir} is not "
                         f"(the cleaned copy never overwrites files)", value=out_dir)
    data = read_data_cfg(rep.data)
    bad_entries = {(f.split, f.file, f.line) for f in rep.findings if f.kind in _BAD_ENTRY}
    duplicate_boxes: Dict[str, set] = defaultdict(set)
    for f in rep.findings:
        if f.kind == "duplicate-box":
            duplicate_boxes[f.file].add(f.line)
    kept: Dict[str, List[str]] = {}
    dropped: Dict[str, int] = {}
    for s in rep.splits:
        entries = read_list_lines(s.list_path)
        kept[s.name] = [os.path.abspath(p) for ln, p in entries
                        if (s.name, s.list_path, ln) not in bad_entries]
        dropped[s.name] = len(entries) - len(kept[s.name])
        if not kept[s.name]:
            # an empty list trains or evaluates on nothing, and Darknet fails on it later
            why = Counter(f.kind for f in rep.findings
                          if f.split == s.name and f.kind in _BAD_ENTRY)
            reasons = ", ".join(f"{k} {n}" for k, n in why.most_common()) or "it has none"
            raise DataError(f"-fix-into: no entry of the {s.name} list would be kept "
                            f"({reasons}); nothing written", file=s.list_path)
    all_images = [p for ps in kept.values() for p in ps]
    root = os.path.commonpath([os.path.dirname(p) for p in all_images]) if all_images else out
    os.makedirs(out, exist_ok=True)
    lines_dropped = clamped = 0
    lists: Dict[str, str] = {}
    for s in rep.splits:
        new_paths = []
        for src in kept[s.name]:
            dst = os.path.join(out, os.path.relpath(src, root))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.symlink(os.path.realpath(src), dst)
            new_paths.append(dst)
            lsrc = label_path(src)
            if not os.path.isfile(lsrc):
                continue                    # missing label stays missing (background)
            lf = read_labels(lsrc, rep.classes)
            drop = {i.line for i in lf.issues if i.dropped} | duplicate_boxes.get(lsrc, set())
            lines_dropped += len(drop)
            clamped += sum(i.kind == "extends-outside" for i in lf.issues)
            ldst = label_path(dst)
            os.makedirs(os.path.dirname(ldst), exist_ok=True)
            with open(ldst, "x") as fh:
                fh.write(_clean_label_text(lf, drop))
        lists[s.name] = os.path.join(out, f"{s.name}.txt")
        with open(lists[s.name], "x") as fh:
            fh.write("".join(p + "\n" for p in new_paths))
    data_path = os.path.join(out, "obj.data")
    lines = [f"classes = {rep.classes}"]
    for s in rep.splits:
        lines.append(f"{s.name} = {lists[s.name]}")
    if rep.same_list and len(rep.splits) == 1:   # keep the user's choice: valid= is train=
        lines.append(f"{'valid' if rep.splits[0].name == 'train' else 'train'} = "
                     f"{lists[rep.splits[0].name]}")
    for key, opt in data.options.items():
        if key in ("classes", "train", "valid"):
            continue
        value = opt.value
        if key in ("names", "labels") and not os.path.isabs(value):
            value = os.path.abspath(value)
        lines.append(f"{key} = {value}")
    with open(data_path, "x") as fh:
        fh.write("\n".join(lines) + "\n")
    return FixResult(out, data_path, lists, {k: len(v) for k, v in kept.items()}, dropped,
                     lines_dropped, clamped)
