"""Darknet ``.cfg`` reader.

Follows ``read_cfg``/``read_option`` of AlexeyAB's ``parser.c``/``option_list.c``: every
whitespace character of a line is removed, lines starting with ``#`` or ``;`` are comments,
``[name]`` opens a section, ``key=value`` adds an option. Darknet reads numbers with
``atoi``/``atof`` so a trailing inline comment (``layers = -1, 271 ###S4``) is ignored; we strip
everything after ``#`` in a value for the same effect, and reject values that are not numbers at
all (Darknet would silently read 0) with the file and line.

Options remember whether a layer read them, so :meth:`Section.unused` reproduces Darknet's
``Unused field: 'key = value'`` warning.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import List, Optional

from ..errors import CfgError
from ..files import PathLike, read_bounded

_MISSING = object()


@dataclass
class Option:
    key: str
    value: str
    line: int
    used: bool = False


@dataclass
class Section:
    """One ``[type]`` block of a cfg with its options, in file order."""

    type: str
    line: int
    file: str = "<cfg>"
    options: List[Option] = field(default_factory=list)

    # ------------------------------------------------------------------ raw access
    def _find(self, key: str) -> Optional[Option]:
        for opt in self.options:
            if opt.key == key:
                opt.used = True
                return opt
        return None

    def has(self, key: str) -> bool:
        return any(o.key == key for o in self.options)

    def set(self, key: str, value: object) -> None:
        """Set (or add) an option, as a command-line override would."""
        for opt in self.options:
            if opt.key == key:
                opt.value = str(value)
                return
        self.options.append(Option(key, str(value), self.line))

    def error(self, message: str, opt: Optional[Option] = None, value: object = None) -> CfgError:
        line = opt.line if opt is not None else self.line
        return CfgError(f"[{self.type}] {message}", file=self.file, line=line, value=value)

    # ------------------------------------------------------------------ typed access
    def _lookup(self, key: str, default: object) -> Optional[Option]:
        """The option ``key`` (marked used), or ``None`` when it is absent and ``default`` is
        given; an absent option without a default is an error."""
        opt = self._find(key)
        if opt is None and default is _MISSING:
            raise self.error(f"missing required option '{key}'")
        return opt

    def str(self, key: str, default: object = _MISSING) -> str:
        opt = self._lookup(key, default)
        return default if opt is None else opt.value  # type: ignore[return-value]

    def int(self, key: str, default: object = _MISSING) -> int:
        opt = self._lookup(key, default)
        return default if opt is None else _to_int(opt.value, self, opt, key)  # type: ignore

    def float(self, key: str, default: object = _MISSING) -> float:
        opt = self._lookup(key, default)
        return default if opt is None else _to_float(opt.value, self, opt, key)  # type: ignore

    def int_list(self, key: str, default: object = _MISSING) -> List[int]:
        opt = self._lookup(key, default)
        if opt is None:
            return default  # type: ignore[return-value]
        return [_to_int(v, self, opt, key) for v in _split_list(opt.value)]

    def float_list(self, key: str, default: object = _MISSING) -> List[float]:
        opt = self._lookup(key, default)
        if opt is None:
            return default  # type: ignore[return-value]
        return [_to_float(v, self, opt, key) for v in _split_list(opt.value)]

    def unused(self) -> List[Option]:
        return [o for o in self.options if not o.used]

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Section([{self.type}] line {self.line}, {len(self.options)} options)"


def _clean_value(value: str) -> str:
    return value.split("#", 1)[0]


def _split_list(value: str) -> List[str]:
    parts = [p for p in _clean_value(value).split(",")]
    # Darknet tolerates a trailing comma ("anchors = 10,13, 16,30,")
    if parts and parts[-1] == "":
        parts = parts[:-1]
    return parts


def _to_float(text: str, section: Section, opt: Option, key: str) -> float:
    t = _clean_value(text)
    try:
        v = float(t)
    except ValueError:
        raise section.error(f"option '{key}' expects a number, got '{text}'", opt, text) from None
    if math.isnan(v):
        raise section.error(f"option '{key}' is not a number: '{text}'", opt, text)
    return v


#: Darknet reads integers with ``atoi`` into a C ``int``
INT_MIN, INT_MAX = -(2 ** 31), 2 ** 31 - 1


def _to_int(text: str, section: Section, opt: Option, key: str) -> int:
    t = _clean_value(text)
    try:
        v = int(t)
    except ValueError:
        # atoi("1.0") == 1: accept an integral float written with a decimal point
        try:
            f = float(t)
        except ValueError:
            raise section.error(f"option '{key}' expects an integer, got '{text}'", opt,
                                text) from None
        if not math.isfinite(f) or f != int(f):
            raise section.error(f"option '{key}' expects an integer, got '{text}'", opt, text)
        v = int(f)
    if not INT_MIN <= v <= INT_MAX:
        # atoi overflows here (undefined behaviour in C); no Darknet option needs such a value
        raise section.error(f"option '{key}' = {t} is out of range for a 32-bit integer", opt, text)
    return v


def parse_cfg_text(text: str, file: str = "<cfg>") -> List[Section]:
    """Parse cfg text into sections (no semantic checks)."""
    sections: List[Section] = []
    current: Optional[Section] = None
    for nu, raw in enumerate(text.splitlines(), start=1):
        line = "".join(ch for ch in raw if ch not in " \t\r\n")
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if not line.endswith("]") or len(line) < 3:
                raise CfgError(f"malformed section header '{raw.strip()}'", file=file, line=nu,
                               value=raw)
            current = Section(type=line[1:-1], line=nu, file=file)
            sections.append(current)
            continue
        if current is None:
            raise CfgError(f"option '{line}' appears before any [section]", file=file, line=nu,
                           value=line)
        if "=" not in line:
            raise CfgError(f"cannot parse line '{raw.strip()}' (expected key=value)", file=file,
                           line=nu, value=raw)
        key, value = line.split("=", 1)
        if not key or value == "":
            raise CfgError(f"cannot parse line '{raw.strip()}' (expected key=value)", file=file,
                           line=nu, value=raw)
        current.options.append(Option(key=key, value=value, line=nu))
    return sections


#: the largest cfg read (Darknet's biggest are about 50 KiB)
MAX_CFG_BYTES = 64 << 20


def read_cfg(path: PathLike) -> List[Section]:
    """Read and parse a cfg file; errors name the file (and line)."""
    path = os.fspath(path)
    data = read_bounded(path, MAX_CFG_BYTES, CfgError, "cfg file")
    if data.startswith(b"PK\x03\x04"):
        # a TorchScript / torch.save file is a zip archive; people pass `export --format
        # torchscript` output where a model is expected, and only .onnx exports run as models
        raise CfgError("a TorchScript or PyTorch file (zip archive), not a Darknet cfg: commands "
                       "run a .cfg with its .weights, or an ONNX export (darknet-py export cfg "
                       "weights -o model.onnx); a TorchScript export is for torch.jit.load",
                       file=path)
    if b"\x00" in data:
        raise CfgError("not a text cfg file (contains NUL bytes)", file=path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        # Darknet reads bytes; a cfg is ASCII in practice. Non-UTF-8 bytes are reported.
        line = data[: e.start].count(b"\n") + 1
        raise CfgError(f"cfg file is not valid UTF-8 text (byte {e.start})", file=path,
                       line=line) from None
    if text.startswith("\ufeff"):
        # a byte-order mark written by Windows editors: not part of the text (Darknet would
        # read it as the start of the first line and refuse the file)
        text = text[1:]
    sections = parse_cfg_text(text, file=path)
    if not sections:
        raise CfgError("cfg file has no sections", file=path)
    return sections

