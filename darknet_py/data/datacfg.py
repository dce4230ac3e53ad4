"""The ``obj.data`` file, the ``.names`` file and image lists.

Mirrors ``read_data_cfg``/``read_option``/``option_find_*`` (``option_list.c``), ``get_paths`` and
``get_labels_custom`` (``data.c``) of AlexeyAB's Darknet.

``obj.data`` is a list of ``key = value`` lines; ``#`` and ``;`` start comment lines. Darknet
reads the first occurrence of a key, and each command supplies its own default when a key is
missing (``detector train`` uses ``train=data/train.txt``, ``calc_anchors`` uses
``train=data/train.list``, ...); :class:`DataConfig` keeps the values it found (``None`` when a
key is absent) and its ``*_or_default`` helpers apply the default the named Darknet command uses.

Deliberate differences from Darknet:

* Darknet removes *every* whitespace character of a line, so ``train = my data/x.txt`` becomes
  ``mydata/x.txt``. We strip whitespace around the key and the value only.
* A line without ``=`` or with an empty value is a :class:`~darknet_py.errors.DataError` naming
  the file and line (Darknet prints ``Config file error`` for an empty value, silently ignores a
  line without ``=``, and a typo then silently falls back to a default).
* Integers are read like ``atoi`` (a leading integer, trailing junk such as an inline comment is
  ignored) but a value with no leading integer is an error instead of 0.
* Image lists: blank lines are skipped and surrounding whitespace is removed from each path
  (Darknet keeps blank lines in the list and skips them only when sampling).
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..errors import DataError
from ..files import PathLike, read_bounded

_LEADING_INT = re.compile(r"^[+-]?\d+")

# keys detector.c / option_list.c read from a .data file (and which are integers)
KNOWN_KEYS = ("classes", "train", "valid", "names", "labels", "backup", "results", "eval", "map",
              "difficult", "saveweights", "savelast")
INT_KEYS = ("classes", "saveweights", "savelast")


@dataclass
class DataOption:
    """One ``key=value`` line of a ``.data`` file (first occurrence of the key)."""

    key: str
    value: str
    line: int


@dataclass
class DataConfig:
    """Typed ``obj.data``: each field is ``None`` when the file does not set it.

    ``options`` holds every key of the file (including ones darknet-py does not know), first
    occurrence, with its line number; ``duplicates`` the later occurrences that Darknet ignores.
    """

    path: str
    classes: Optional[int] = None
    train: Optional[str] = None
    valid: Optional[str] = None
    names: Optional[str] = None
    labels: Optional[str] = None      # get_metadata's fallback for ``names``
    backup: Optional[str] = None
    results: Optional[str] = None
    eval: Optional[str] = None
    map: Optional[str] = None
    difficult: Optional[str] = None
    saveweights: Optional[int] = None
    savelast: Optional[int] = None
    options: Dict[str, DataOption] = field(default_factory=dict)
    duplicates: List[DataOption] = field(default_factory=list)
    _warned_valid: bool = field(default=False, init=False, repr=False, compare=False)

    # ----------------------------------------------------------- Darknet's per-command defaults
    def line_of(self, key: str) -> Optional[int]:
        opt = self.options.get(key)
        return opt.line if opt else None

    def classes_or_default(self, default: int) -> int:
        """``option_find_int(options, "classes", default)``: calc_anchors uses 1, demo 20,
        get_metadata 2."""
        return default if self.classes is None else self.classes

    def train_or_default(self, default: str = "data/train.txt") -> str:
        """``train``: ``detector train`` defaults to data/train.txt, calc_anchors to
        data/train.list."""
        return default if self.train is None else self.train

    def valid_or_default(self, default: Optional[str] = "data/train.txt",
                         fallback_to_train: bool = False) -> str:
        """``valid``: ``map``/``recall`` default to data/train.txt, ``valid`` to data/train.list;
        during training (``-map``) a missing ``valid`` falls back to ``train``. A fallback is
        announced once per data file, in one line on stderr."""
        if self.valid is not None:
            return self.valid
        used = self.train_or_default() if fallback_to_train else default
        if not self._warned_valid:
            self._warned_valid = True
            sys.stderr.write(f"darknet-py: warning: {self.path}: no valid= line: evaluating "
                             f"{used} instead (Darknet's fallback)\n")
            sys.stderr.flush()
        return used

    def names_or_default(self, default: str = "data/names.list") -> str:
        """``names`` (``labels`` is get_metadata's alias), default data/names.list."""
        if self.names is not None:
            return self.names
        if self.labels is not None:
            return self.labels
        return default

    def backup_or_default(self) -> str:
        return "/backup/" if self.backup is None else self.backup

    def results_or_default(self) -> str:
        return "results" if self.results is None else self.results

    def eval_or_default(self) -> str:
        return "voc" if self.eval is None else self.eval

    def saveweights_or_default(self, max_batches: int) -> int:
        """Weights are saved every ``saveweights`` iterations (1000, or 10000 when
        max_batches >= 10000)."""
        if self.saveweights is not None:
            return self._positive_period("saveweights")
        return 1000 if max_batches < 10000 else 10000

    def savelast_or_default(self) -> int:
        return 100 if self.savelast is None else self._positive_period("savelast")

    def _positive_period(self, key: str) -> int:
        """``saveweights``/``savelast``: a positive number of iterations. Darknet divides by it
        (``iteration % savelast``: 0 kills it with SIGFPE) and a negative one saves at every
        iteration; darknet-py refuses both in one line."""
        value = getattr(self, key)
        if value < 1:
            raise DataError(f"{key}={value}: weights are saved every {key} iterations, which "
                            "must be 1 or more", file=self.path, line=self.line_of(key),
                            value=value)
        return value


def _parse_int(value: str, key: str, file: str, line: int) -> int:
    m = _LEADING_INT.match(value)
    if not m:
        raise DataError(f"'{key}' must be an integer, got '{value}'", file=file, line=line,
                        value=value)
    return int(m.group(0))


#: the largest .data file read (real ones are a few hundred bytes)
MAX_DATA_CFG_CHARS = 16 << 20


def read_data_cfg(path: PathLike) -> DataConfig:
    """Read an ``obj.data`` file (``read_data_cfg`` in ``option_list.c``)."""
    file = os.fspath(path)
    text = _strip_bom(read_bounded(file, MAX_DATA_CFG_CHARS, DataError, "data file").decode(
        "utf-8", errors="replace"))
    cfg = DataConfig(path=file)
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if "=" not in line:
            raise DataError(f"expected 'key = value', got '{line}'", file=file, line=lineno,
                            value=line)
        key, value = line.split("=", 1)
        key, value = key.strip(), value.strip()
        if not key:
            raise DataError(f"missing key before '=' in '{line}'", file=file, line=lineno)
        if not value:
            raise DataError(f"'{key}' has no value", file=file, line=lineno)
        opt = DataOption(key, value, lineno)
        if key in cfg.options:
            cfg.duplicates.append(opt)      # Darknet's option_find returns the first one
            continue
        cfg.options[key] = opt
        if key in INT_KEYS:
            setattr(cfg, key, _parse_int(value, key, file, lineno))
        elif key in KNOWN_KEYS:
            setattr(cfg, key, value)
    if cfg.classes is not None and cfg.classes < 1:
        raise DataError(f"classes must be >= 1, got {cfg.classes}", file=file,
                        line=cfg.line_of("classes"), value=cfg.classes)
    return cfg


#: a list file larger than this is not one (a mistaken path, /dev/zero)
MAX_LIST_BYTES = 1 << 30
#: a names file larger than this is not one: 9418 ImageNet-9k names take 160 KB
MAX_NAMES_BYTES = 16 << 20


def _strip_bom(text: str) -> str:
    """Text without the byte-order mark some Windows editors put first (it would become part
    of the first key, path or class name)."""
    return text[1:] if text.startswith("\ufeff") else text


def _read_lines(path: PathLike, what: str, limit: int = MAX_LIST_BYTES) -> List[str]:
    data = read_bounded(os.fspath(path), limit, DataError, what)
    return _strip_bom(data.decode("utf-8", errors="replace")).splitlines()


def read_names(path: PathLike) -> List[str]:
    """Class names, one per line (``get_labels_custom``): a blank line in the middle is a name
    (as in Darknet), trailing blank lines are not. At most :data:`MAX_NAMES_BYTES` are read."""
    names = _read_lines(path, "names file", MAX_NAMES_BYTES)
    while names and not names[-1].strip():
        names.pop()
    return names


def read_list(path: PathLike) -> List[str]:
    """Image paths, one per line (``get_paths``), blank lines skipped.

    Relative paths are returned unchanged: like Darknet they are opened relative to the current
    working directory, not to the list file.
    """
    return [p for _, p in read_list_lines(path)]


def read_list_lines(path: PathLike) -> List[Tuple[int, str]]:
    """:func:`read_list` with the (1-based) line number of each path, for messages."""
    return [(i, p.strip()) for i, p in enumerate(_read_lines(path, "image list"), start=1)
            if p.strip()]
