"""Darknet ``.weights`` files: header, per-layer float streams, partial cut-offs.

Layout (``load_weights_upto`` / ``save_weights_upto`` in ``parser.c``)::

    int32 major, int32 minor, int32 revision
    seen: uint64 if major*10 + minor >= 2 else uint32
    float32 parameters of every layer with weights, in layer order, each layer in its own order
    (conv: biases, [scales, rolling_mean, rolling_variance if batch_normalize], weights)

Connected layers are stored transposed when ``major > 1000 or minor > 1000``.

Unlike Darknet, which silently stops when the file ends early, reading a file that is too short for
the layers asked for is an error naming the layer; a file longer than needed loads with a warning
giving the number of bytes left over. Either way, when the file was made for another cfg (another
classes=, the usual case), the message names the first layer that disagrees and the ``partial``
command that keeps the layers before it (:func:`other_cfg_diagnosis`). Saving writes the header that was loaded (so a load/save round
trip is byte-identical) or Darknet's current 0.2.5 for a new file.
"""
from __future__ import annotations

import os
import stat
import struct
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Union

import numpy as np

from ..errors import WeightsError
from ..files import atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover
    from .network import Network

#: the version Darknet (AlexeyAB @59596d7) writes
DARKNET_VERSION = (0, 2, 5)


@dataclass
class WeightsHeader:
    major: int = DARKNET_VERSION[0]
    minor: int = DARKNET_VERSION[1]
    revision: int = DARKNET_VERSION[2]
    seen: int = 0

    @property
    def seen_is_64bit(self) -> bool:
        return self.major * 10 + self.minor >= 2

    @property
    def transpose(self) -> bool:
        return self.major > 1000 or self.minor > 1000

    @property
    def nbytes(self) -> int:
        return 12 + (8 if self.seen_is_64bit else 4)

    def pack(self) -> bytes:
        head = struct.pack("<iii", self.major, self.minor, self.revision)
        if self.seen_is_64bit:
            return head + struct.pack("<Q", self.seen)
        return head + struct.pack("<I", self.seen)

    @classmethod
    def unpack(cls, data: bytes, path: str) -> "WeightsHeader":
        if data.startswith(b"version https://git-lfs"):
            raise WeightsError("this is a Git LFS pointer, not the weights: fetch the real file "
                               "(git lfs pull) or download it directly", file=path)
        if data[:15].lower().startswith((b"<!doctype", b"<html")):
            raise WeightsError("this is an HTML page, not a weights file (a failed download?)",
                               file=path)
        if len(data) >= 12 and all(32 <= b < 127 or b in (9, 10, 13) for b in data[:12]):
            raise WeightsError("this is a text file, not a Darknet weights file (its header is "
                               f"readable text: {data[:12].decode('ascii')!r})", file=path)
        if len(data) < 12:
            raise WeightsError(f"file is {len(data)} bytes, too short for a Darknet weights header "
                               "(at least 16 bytes)", file=path)
        major, minor, revision = struct.unpack_from("<iii", data, 0)
        if not (0 <= major <= 1 or major > 1000) or not (0 <= minor < 100 or minor > 1000) \
                or revision < 0:
            raise WeightsError(
                f"not a Darknet weights file: header version {major}.{minor}.{revision} "
                "is not one Darknet writes", file=path, value=(major, minor, revision))
        h = cls(major, minor, revision)
        need = h.nbytes
        if len(data) < need:
            raise WeightsError(f"file is {len(data)} bytes, too short for its header "
                               f"({need} bytes for version {major}.{minor}.{revision})", file=path)
        if h.seen_is_64bit:
            (h.seen,) = struct.unpack_from("<Q", data, 12)
        else:
            (h.seen,) = struct.unpack_from("<I", data, 12)
        return h


class WeightsReader:
    """Sequential float32 reader that knows which layer is reading, for error messages.

    ``max_floats`` (what the layers to load can need at most) bounds what is read into memory: a
    huge or endless file (``/dev/zero``) costs no more than the network's own weights. The size
    of the rest is taken from the file system (``body_bytes``; ``None`` for a pipe).
    """

    def __init__(self, path: Union[str, os.PathLike], max_floats: Optional[int] = None):
        self.path = os.fspath(path)
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                regular = stat.S_ISREG(st.st_mode)
                head = f.read(64)  # the header, and enough to recognise LFS pointers, HTML
                self.header = WeightsHeader.unpack(head, self.path)
                rest = head[self.header.nbytes:]
                if max_floats is None:
                    if not regular:
                        raise WeightsError("weights path is not a regular file", file=self.path)
                    rest += f.read()
                else:
                    want = max(0, 4 * max_floats - len(rest))
                    rest += _read_upto(f, want)
                    rest = rest[:4 * max_floats]
                body_bytes = st.st_size - self.header.nbytes if regular else None
        except FileNotFoundError:
            raise WeightsError("weights file not found", file=self.path) from None
        except IsADirectoryError:
            raise WeightsError("weights path is a directory, not a file", file=self.path) from None
        except OSError as e:
            raise WeightsError(f"cannot read weights file: {e.strerror}", file=self.path) from None
        #: bytes after the header in the whole file (None when unknown: a pipe or device)
        self.body_bytes: Optional[int] = body_bytes
        self.trailing_bytes = len(rest) % 4
        self.floats = np.frombuffer(rest, dtype="<f4", count=len(rest) // 4)
        self.pos = 0
        self.layer_index: Optional[int] = None

    @property
    def remaining(self) -> int:
        return self.floats.size - self.pos

    @property
    def bytes_left(self) -> int:
        """Bytes of the file not consumed by the layers read so far."""
        if self.body_bytes is None:
            return self.remaining * 4 + self.trailing_bytes
        return self.body_bytes - 4 * self.pos

    def read(self, n: int, what: str = "weights") -> np.ndarray:
        """Return the next ``n`` floats (a copy); raise if the file ends first."""
        if n > self.remaining:
            where = f"layer {self.layer_index} " if self.layer_index is not None else ""
            hint = "is this the right cfg for these weights, or a truncated download?"
            if self.floats.tobytes().count(b"\xef\xbf\xbd") > 16:
                hint = ("the file is full of UTF-8 replacement bytes (EF BF BD): it was saved "
                        "as text somewhere; download it again in binary mode")
            total = self.floats.size if self.body_bytes is None else self.body_bytes // 4
            raise WeightsError(
                f"file ends early: {where}needs {n} floats for its {what} but only "
                f"{self.remaining} remain (file has {total} floats after the header); "
                f"{hint}", file=self.path, value=n)
        out = self.floats[self.pos:self.pos + n].astype(np.float32, copy=True)
        self.pos += n
        return out


class WeightsWriter:
    """Collects float32 arrays in order and writes them atomically."""

    def __init__(self, header: WeightsHeader):
        self.header = header
        self.chunks: List[bytes] = []

    def write(self, arr) -> None:
        a = np.ascontiguousarray(np.asarray(arr, dtype="<f4")).reshape(-1)
        self.chunks.append(a.tobytes())

    def getvalue(self) -> bytes:
        return self.header.pack() + b"".join(self.chunks)

    def save(self, path: Union[str, os.PathLike]) -> None:
        atomic_write_bytes(os.fspath(path), self.getvalue())


def _read_upto(f, n: int) -> bytes:
    """Read at most ``n`` bytes (fewer only at the end of the file)."""
    chunks, got = [], 0
    while got < n:
        b = f.read(min(n - got, 1 << 24))
        if not b:
            break
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


@dataclass
class LoadReport:
    """What one load of a ``.weights`` file read (:func:`format_load_report` prints it as
    Darknet's ``load_weights_upto`` does); kept as ``Network.load_report``."""

    path: str               # the weights file, as given
    header: WeightsHeader   # its version and ``seen`` (images trained on)
    layers_loaded: int      # Darknet's "Loaded N layers" (layer index reached; < all: partial)
    floats_read: int        # parameters read after the header
    bytes_left: int         # data after the last loaded layer (a partial load leaves the rest)


def load_weights(net: "Network", path: Union[str, os.PathLike], cutoff: Optional[int] = None,
                 strict_tail: bool = False) -> LoadReport:
    """Load a Darknet weights file into ``net`` up to layer ``cutoff`` (exclusive).

    Raises :class:`WeightsError` if the file is too short for the layers asked for. When the file
    has more data than those layers need, warns (or raises with ``strict_tail``), unless a
    ``cutoff`` was given (then the rest of the file is expected to hold later layers).
    """
    n = len(net.layers) if cutoff is None else min(cutoff, len(net.layers))
    # never read more than these layers can use (a huge file costs no more memory than the net)
    reader = WeightsReader(path, max_floats=count_weight_floats(net, n))
    import torch
    with torch.no_grad():
        for layer in net.layers[:n]:
            reader.layer_index = layer.index
            if getattr(layer, "dontload", 0):
                continue
            try:
                layer.read_weights(reader)
            except WeightsError as e:
                why = other_cfg_diagnosis(net, reader.body_bytes, reader.path) \
                    if cutoff is None else None
                if why is None:
                    raise
                raise WeightsError(f"{e.message.split('; ')[0]}; {why}", file=e.file,
                                   value=e.value) from None
    left = reader.bytes_left
    if left and cutoff is None:
        msg = (f"{reader.path}: {left} bytes left over after loading all {len(net.layers)} "
               "layers; the weights file is longer than the cfg needs")
        why = other_cfg_diagnosis(net, reader.body_bytes, reader.path)
        if why is not None:
            msg = f"{reader.path}: {left} bytes left over: {why}"
        if strict_tail:
            raise WeightsError(msg)
        warnings.warn(msg, stacklevel=2)
    _warn_nonfinite(net, n, reader.path)
    net.seen = reader.header.seen
    net.weights_header = reader.header
    return LoadReport(os.fspath(path), reader.header, n, reader.pos, left)


def _warn_nonfinite(net: "Network", n: int, path: str) -> None:
    """One warning naming the first of the loaded layers that holds NaN or inf (Darknet loads
    them silently and detects nothing, or garbage). Once per load, over tensors already in
    memory: no cost per image."""
    import torch
    bad = []
    for layer in net.layers[:n]:
        count = sum(int((~torch.isfinite(t)).sum()) for t in
                    list(layer.parameters()) + list(layer.buffers())
                    if t.is_floating_point())
        if count:
            bad.append((layer, count))
    if not bad:
        return
    layer, count = bad[0]
    section = getattr(getattr(layer, "section", None), "type", type(layer).__name__)
    more = f" (and {len(bad) - 1} later layers)" if len(bad) > 1 else ""
    warnings.warn(f"{path}: layer {layer.index} [{section}] has {count} NaN/inf weight values"
                  f"{more}; its outputs will be NaN (a damaged file, or weights saved from a "
                  "diverged training)", stacklevel=3)


def _yolo_head_convs(net: "Network"):
    """(head conv layer, its [yolo]/[region] layer) for every detection layer fed directly by a
    convolutional layer: the layers whose size depends on classes=."""
    out = []
    for head in getattr(net, "heads", []):
        if head.index == 0:
            continue
        conv = net.layers[head.index - 1]
        if getattr(conv, "table_name", "") == "conv" and getattr(conv, "share_layer", None) is None:
            out.append((conv, head))
    return out


def _floats_per_filter(conv) -> int:
    return (4 if conv.batch_normalize else 1) + conv.nweights // max(1, conv.n)


def _first_bad_bn_layer(net: "Network") -> Optional[int]:
    """The first batch-normalised conv whose loaded rolling variance is negative or not finite:
    values read from the wrong place (a real Darknet file never has those)."""
    import torch
    for layer in net.layers:
        var = getattr(layer, "rolling_variance", None)
        if getattr(layer, "batch_normalize", 0) and isinstance(var, torch.Tensor) and \
                var.numel() and not bool(((var >= 0) & torch.isfinite(var)).all()):
            return layer.index
    return None


def other_cfg_diagnosis(net: "Network", body_bytes: Optional[int],
                        weights_path: str = "<weights>") -> Optional[str]:
    """Why a weights file of ``body_bytes`` (after the header) does not fit ``net``, when it was
    made for another cfg: which layer first disagrees, and how to use it anyway (``partial``).

    The usual case is another classes= (80-class COCO weights into a 3-class cfg): only the
    convolutional layer in front of each [yolo] changes size (filters = (classes+5) x masks), so
    the classes= of the file can be solved for from its size. Otherwise, when the values read
    show it (a negative batch-norm variance), that layer is named. ``None``: no diagnosis.
    """
    if body_bytes is None or body_bytes % 4:
        return None
    have = body_bytes // 4
    need = count_weight_floats(net)
    if have == need:
        return None
    cfg = getattr(net, "cfg_path", "<cfg>")
    heads = _yolo_head_convs(net)
    per_class = sum(len(getattr(h, "mask", None) or range(h.n)) * _floats_per_filter(c)
                    for c, h in heads)
    if heads and per_class:
        base = need - sum(c.n * _floats_per_filter(c) for c, _ in heads)
        classes, rem = divmod(have - base, per_class)
        classes -= 5
        if rem == 0 and classes >= 1 and all(
                c.n % len(getattr(h, "mask", None) or range(h.n)) == 0 for c, h in heads):
            conv, head = heads[0]
            masks = len(getattr(head, "mask", None) or range(head.n))
            first = min(c.index for c, _ in heads)
            return (f"the file was made for a cfg with classes={classes}: layer {conv.index} "
                    f"(convolutional before [{head.table_name}] layer {head.index}) has "
                    f"filters={conv.n} here but filters={(classes + 5) * masks} in the file, so "
                    f"it and the layers after it would get misaligned values; to fine-tune from "
                    f"it, keep the layers before it: darknet-py partial {cfg} {weights_path} "
                    f"<out>.conv.{first} {first}")
    bad = _first_bad_bn_layer(net)
    if bad is not None:
        layer = net.layers[bad]
        return (f"the file was made for another cfg: it holds {have} floats, this cfg needs "
                f"{need}, and layer {bad} ({layer.table_name}, filters={layer.n}) is the first "
                "whose loaded values cannot be its own (negative batch-norm variance), so the "
                "file disagrees with this cfg there or earlier; use the cfg the weights were "
                "made with, or cut the layers both cfgs share with darknet-py partial "
                f"<its cfg> {weights_path} <out> <layers>")
    return None


def weights_bytes(net: "Network", cutoff: Optional[int] = None,
                  header: Optional[WeightsHeader] = None) -> bytes:
    n = len(net.layers) if cutoff is None else min(cutoff, len(net.layers))
    if header is None:
        header = WeightsHeader(*DARKNET_VERSION, seen=int(getattr(net, "seen", 0)))
    writer = WeightsWriter(header)
    import torch
    with torch.no_grad():
        for layer in net.layers[:n]:
            layer.write_weights(writer)
    return writer.getvalue()


def save_weights(net: "Network", path: Union[str, os.PathLike], cutoff: Optional[int] = None,
                 header: Optional[WeightsHeader] = None) -> None:
    """Write ``net`` (layers ``0..cutoff-1``) as a Darknet weights file, atomically."""
    data = weights_bytes(net, cutoff, header)
    try:
        atomic_write_bytes(os.fspath(path), data)
    except OSError as e:
        raise WeightsError(f"cannot write weights file: {e.strerror or e}", file=os.fspath(path)) \
            from None


def count_weight_floats(net: "Network", cutoff: Optional[int] = None) -> int:
    n = len(net.layers) if cutoff is None else min(cutoff, len(net.layers))
    return sum(layer.num_weight_floats() for layer in net.layers[:n])


def format_load_report(report: LoadReport) -> str:
    """Darknet's ``load_weights_upto`` messages for a finished load."""
    h = report.header
    bits = 64 if h.seen_is_64bit else 32
    return (f"Loading weights from {report.path}...\n"
            f" seen {bits}, trained: {h.seen // 1000} K-images ({h.seen // 64000} Kilo-batches_64) \n"
            f"Done! Loaded {report.layers_loaded} layers from weights-file ")
