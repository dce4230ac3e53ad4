"""Darknet ``.cfg`` reader.

Follows ``read_cfg``/``read_option`` of AlexeyAB's ``parser.c``/``option_list.c``: every
whitespace character of a line is removed, lines starting with ``#`` or ``;`` are comments,
``[name]`` opens a section, ``key=value`` adds an option. Darknet reads numbers with
``atoi``/``atof`` so a trailing inline comment (``layers = -1, 271 ###S4``) is ignored; we strip
everything after ``#`` in a value for the same effect, and reject values that are not numbers at
all (Darknet would silently read 0) with the file and line.

Options remember whether a layer read them, so :meth:`Section.unused` reproduces Darknet's
``Unused field: 'key = value'`` warning.

One tokenizer (:func:`tokenize_cfg`) classifies the lines for everything that reads a cfg: the
network (:func:`read_cfg`), and :class:`EditableCfg`, which edits a user's cfg in place keeping
their text (``cfg custom``, a cfg resized for a benchmark peer: :func:`with_network_size`).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import List, Optional, Union

from ..errors import CfgError
from ..files import read_bounded

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

    def first(self, key: str) -> Optional[Option]:
        """The first ``key`` option (the one Darknet reads), or ``None``."""
        return self._find(key)

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


#: what Darknet's ``strip`` (utils.c) removes from a cfg line
_WHITESPACE = " \t\r\n"


@dataclass(frozen=True)
class CfgLine:
    """One line of a cfg as ``read_cfg`` sees it: ``kind`` is ``"blank"``, ``"comment"``,
    ``"section"`` (``name`` is the type without brackets) or ``"option"`` (``name`` = ``value``);
    ``number`` counts from 1. ``name``/``value`` have every whitespace character removed."""

    number: int
    kind: str
    name: str = ""
    value: str = ""


def tokenize_cfg(text: str, file: str = "<cfg>") -> List[CfgLine]:
    """Classify every line of cfg ``text`` (Darknet's ``read_cfg`` line rules); a line that is
    none of the four kinds is a :class:`CfgError` naming ``file`` and the line. The one
    tokenizer: :func:`parse_cfg_text` and :class:`EditableCfg` both read through it."""
    out: List[CfgLine] = []
    in_section = False
    for nu, raw in enumerate(text.splitlines(), start=1):
        line = "".join(ch for ch in raw if ch not in _WHITESPACE)
        if not line:
            out.append(CfgLine(nu, "blank"))
        elif line[0] in "#;":
            out.append(CfgLine(nu, "comment"))
        elif line[0] == "[":
            if not line.endswith("]") or len(line) < 3:
                raise CfgError(f"malformed section header '{raw.strip()}'", file=file, line=nu,
                               value=raw)
            out.append(CfgLine(nu, "section", line[1:-1]))
            in_section = True
        elif not in_section:
            raise CfgError(f"option '{line}' appears before any [section]", file=file, line=nu,
                           value=line)
        else:
            key, eq, value = line.partition("=")
            if not eq or not key or value == "":
                raise CfgError(f"cannot parse line '{raw.strip()}' (expected key=value)",
                               file=file, line=nu, value=raw)
            out.append(CfgLine(nu, "option", key, value))
    return out


def parse_cfg_text(text: str, file: str = "<cfg>") -> List[Section]:
    """Parse cfg text into sections (no semantic checks)."""
    sections: List[Section] = []
    for tok in tokenize_cfg(text, file):
        if tok.kind == "section":
            sections.append(Section(type=tok.name, line=tok.number, file=file))
        elif tok.kind == "option":
            sections[-1].options.append(Option(key=tok.name, value=tok.value, line=tok.number))
    return sections


class EditableCfg:
    """A cfg that can be edited in place and written back byte for byte: comments, blank
    lines, spacing and line endings stay as the user wrote them; only the value of an edited
    line changes, and an option a section lacks is added as a new line after its last option.

    Read through :func:`tokenize_cfg` (same rules, same errors as :func:`read_cfg`);
    :attr:`sections` are ordinary :class:`Section` objects, so typed reads (``sec.int(...)``)
    behave and fail as they do for a network. Line numbers follow the edits: after an insertion
    they are those of the text :meth:`text` returns.
    """

    def __init__(self, text: str, file: str = "<cfg>"):
        self.file = file
        self.lines: List[str] = text.splitlines(keepends=True)
        self.sections = parse_cfg_text(text, file)

    def net(self) -> Section:
        """The leading ``[net]``/``[network]`` section (a CfgError when the cfg has none)."""
        if not self.sections or self.sections[0].type not in ("net", "network"):
            raise CfgError("the cfg must start with a [net] section", file=self.file,
                           line=self.sections[0].line if self.sections else None)
        return self.sections[0]

    def set(self, sec: Section, key: str, value: object) -> List[str]:
        """Set ``key=value`` in ``sec``: in place on every line holding the key (whichever
        occurrence Darknet reads, it reads the new value), or as a new line after the
        section's last option. Returns the changes as ``"line N: [type] old -> new"``."""
        value = str(value)
        changes: List[str] = []
        found = [o for o in sec.options if o.key == key]
        if not found:
            at = max([sec.line] + [o.line for o in sec.options])
            self.insert_after(at, f"{key}={value}")
            sec.options.append(Option(key, value, at + 1))
            return [f"line {at + 1}: [{sec.type}] added {key}={value}"]
        for opt in found:
            old = self.lines[opt.line - 1]
            new = _replace_value(old, value)
            if new != old:
                self.lines[opt.line - 1] = new
                opt.value = "".join(ch for ch in value if ch not in _WHITESPACE)
                changes.append(f"line {opt.line}: [{sec.type}] {old.strip()} -> {new.strip()}")
        return changes

    def insert_after(self, line: int, text: str) -> None:
        """Insert the line ``text`` after line ``line`` (1-based; 0 = at the top), with the
        file's line ending, moving the numbers of every later line."""
        ref = self.lines[line - 1] if line > 0 else (self.lines[0] if self.lines else "\n")
        eol = _eol(ref) or "\n"
        if line > 0 and not self.lines[line - 1].endswith(("\n", "\r")):
            self.lines[line - 1] += eol
        self.lines.insert(line, f"{text}{eol}")
        for sec in self.sections:
            sec.line += sec.line > line
            for opt in sec.options:
                opt.line += opt.line > line

    def text(self) -> str:
        return "".join(self.lines)


def _eol(line: str) -> str:
    body = line.rstrip("\r\n")
    return line[len(body):]


def _replace_value(line: str, value: str) -> str:
    """Swap the value of a ``key = value  # comment`` line, keeping spacing and the comment."""
    eol = _eol(line)
    body = line[: len(line) - len(eol)]
    eq = body.index("=")
    after = body[eq + 1:]
    lead = after[: len(after) - len(after.lstrip(" \t"))]
    rest = after[len(lead):]
    hash_at = rest.find("#")
    val_part, comment = (rest, "") if hash_at < 0 else (rest[:hash_at], rest[hash_at:])
    trail = val_part[len(val_part.rstrip(" \t")):]
    return body[: eq + 1] + lead + value + trail + comment + eol


def with_network_size(text: str, width: int, height: int, file: str = "<cfg>") -> str:
    """``text`` with ``[net]`` ``width``/``height`` set (everything else as written): how a
    cfg is resized for a peer (OpenCV DNN, Darknet) that reads the size from the file."""
    cfg = EditableCfg(text, file)
    net = cfg.net()
    cfg.set(net, "width", int(width))
    cfg.set(net, "height", int(height))
    return cfg.text()


#: the largest cfg read (Darknet's biggest are about 50 KiB)
MAX_CFG_BYTES = 64 << 20


def read_cfg(path: Union[str, os.PathLike]) -> List[Section]:
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

