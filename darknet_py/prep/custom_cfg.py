"""Write a custom ``yolo-obj.cfg`` for N classes, as AlexeyAB's README ("How to train (to detect
your custom objects)") tells users to edit ``yolov4-custom.cfg`` / ``yolov4-tiny-custom.cfg``.

The edits, all in place (comments, blank lines, spacing and line endings of the source are kept;
only the value of an edited line changes, and an option the source lacks is added as a new line
at the end of its section):

* ``[net]``: ``batch=64``, ``subdivisions=16`` (the README's values, overridable), ``width`` and
  ``height`` when given (multiples of 32), ``max_batches`` = ``classes*2000`` but not less than the
  number of training images and not less than 6000 (or the value given), ``steps`` = 80% and 90%
  of ``max_batches`` (or the values given), ``mosaic`` when given, ``burn_in`` when given, and
  ``learning_rate``: the value given, else the source's; lowered to :data:`SAFE_LEARNING_RATE`
  (0.001) when it is higher and ``batch`` or ``burn_in`` is made smaller than the source's, with a
  ``#`` comment line above it saying why (see below).
* every ``[yolo]`` / ``[Gaussian_yolo]`` / ``[region]``: ``classes=N`` (``[contrastive]`` is left
  alone: its ``classes`` is the size of its own embedding task, not the detector's classes).
* the ``[convolutional]`` right before each of those heads: ``filters`` =
  ``(classes + 5) * masks`` for ``[yolo]`` (masks = number of ``mask`` indices, ``num`` without
  a mask), ``(classes + 9) * masks`` for ``[Gaussian_yolo]`` and ``(classes + coords + 1) * num``
  for ``[region]``, as the README gives them.
* with ``anchors`` (e.g. what ``detector calc_anchors`` wrote to ``anchors.txt``): ``anchors=``
  and ``num=`` of every ``[yolo]`` / ``[Gaussian_yolo]``, as the README says to do after
  ``calc_anchors`` (the ``mask`` indices are kept and must stay below the number of anchors).

Why the learning-rate cap: ``yolov4-tiny-custom.cfg`` ships ``learning_rate=0.00261``, which is
safe with its ``batch=64`` and ``burn_in=1000``, but a CPU fine-tune shrinks both: with
``batch=16`` and ``burn_in=40`` Darknet's loss turned to NaN at iteration 40 (the first at the
full rate) and darknet-py ended at 0.05% mAP after 200 iterations (reference data
``oracle/train_curve``), while ``learning_rate=0.001`` with ``burn_in=100`` learned (42.6% after
400 iterations), and so did 0.002 with ``burn_in=150`` (the README's CPU recipe). A cfg that
keeps the template's batch and burn_in (the README's ``batch=64`` and the template's 1000) keeps
its rate. ``yolov4-custom.cfg`` already has 0.001. A rate above 0.001 with ``burn_in`` below
:data:`SAFE_BURN_IN` gives a warning.

The section and option reading follows Darknet's ``read_cfg`` (all whitespace of a line is
ignored; ``#`` and ``;`` start comment lines; ``[type]`` opens a section; an option is found by
its first occurrence). If an option appears twice in a section every occurrence is edited, so the
value Darknet reads is the new one whichever occurrence it takes.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import CfgError, UsageError
from ..files import PathLike, atomic_write_bytes, refuse_output_onto_inputs

#: Head sections whose ``classes`` is set, and how ``filters`` of the conv before them is computed.
YOLO_HEADS = ("[yolo]", "[Gaussian_yolo]")
REGION_HEADS = ("[region]",)
NET_SECTIONS = ("[net]", "[network]")
CONV_SECTIONS = ("[convolutional]", "[conv]")

_WS = re.compile(r"\s")

#: the learning rate ``cfg custom`` writes unless told otherwise (yolov4-custom.cfg's value)
SAFE_LEARNING_RATE = 0.001
#: below this burn_in, a learning rate above SAFE_LEARNING_RATE is warned about
SAFE_BURN_IN = 150
LEARNING_RATE_COMMENT = ("# learning_rate: 0.001, not yolov4-tiny-custom.cfg's 0.00261, which "
                         "diverges when batch and burn_in are made small (batch=16, burn_in=40: "
                         "NaN); a higher rate needs burn_in>=150 (README, CPU recipe)")


def custom_max_batches(classes: int, train_images: int = 0) -> int:
    """The README's rule: ``classes*2000``, but not less than the number of training images and
    not less than 6000."""
    return max(2000 * int(classes), int(train_images), 6000)


def custom_steps(max_batches: int) -> Tuple[int, int]:
    """The README's ``steps``: 80% and 90% of ``max_batches`` (integer arithmetic, rounded down)."""
    return (max_batches * 8 // 10, max_batches * 9 // 10)


@dataclass
class _Section:
    type: str                      # "[net]", as Darknet sees it (whitespace removed)
    header: int                    # line index of the [type] line
    options: Dict[str, List[int]] = field(default_factory=dict)  # key -> line indexes
    last: int = -1                 # index of the last option line (header if none)

    def first(self, key: str) -> Optional[int]:
        idx = self.options.get(key)
        return idx[0] if idx else None


class _CfgLines:
    """A cfg as lines that can be edited in place and written back byte for byte."""

    def __init__(self, text: str, source: str):
        self.source = source
        self.lines: List[str] = text.splitlines(keepends=True)
        self.sections: List[_Section] = []
        for i, line in enumerate(self.lines):
            s = _WS.sub("", line)
            if not s:
                continue
            if s[0] == "[":
                self.sections.append(_Section(s, i, last=i))
            elif s[0] in "#;":
                continue
            else:
                if not self.sections:
                    raise CfgError("option before the first [section]", file=source, line=i + 1,
                                   value=line.rstrip("\r\n"))
                if "=" not in s:
                    raise CfgError(f"line is neither '[section]' nor 'key=value': '{line.strip()}'",
                                   file=source, line=i + 1, value=line.strip())
                key = s.split("=", 1)[0]
                sec = self.sections[-1]
                sec.options.setdefault(key, []).append(i)
                sec.last = i

    # -------------------------------------------------------------- reading
    def value(self, idx: int) -> str:
        """The option value of line ``idx`` as Darknet reads it (whitespace removed)."""
        return _WS.sub("", self.lines[idx]).split("=", 1)[1]

    def get(self, sec: _Section, key: str) -> Optional[str]:
        idx = sec.first(key)
        return None if idx is None else self.value(idx)

    def get_int(self, sec: _Section, key: str, default: int) -> int:
        idx = sec.first(key)
        if idx is None:
            return default
        text = self.value(idx).split("#", 1)[0]
        try:
            return int(float(text))
        except ValueError:
            raise CfgError(f"{sec.type} option '{key}' expects an integer, got '{text}'",
                           file=self.source, line=idx + 1, value=text) from None

    def count_list(self, sec: _Section, key: str) -> Optional[int]:
        val = self.get(sec, key)
        if val is None:
            return None
        items = [v for v in val.split("#", 1)[0].split(",")]
        if items and items[-1] == "":
            items = items[:-1]
        return len(items)

    # -------------------------------------------------------------- editing
    def set(self, sec: _Section, key: str, value: str, changes: List[str]) -> None:
        """Set ``key=value`` in a section, in place on every line holding the key, or as a new
        line after the section's last option."""
        idxs = sec.options.get(key)
        if not idxs:
            at = sec.last
            self.insert_after(at, f"{key}={value}")
            sec.options[key] = [at + 1]
            sec.last = max(sec.last, at + 1)
            changes.append(f"line {at + 2}: {sec.type} added {key}={value}")
            return
        for idx in idxs:
            old = self.lines[idx]
            new = _replace_value(old, value)
            if new != old:
                self.lines[idx] = new
                changes.append(f"line {idx + 1}: {sec.type} {old.strip()} -> {new.strip()}")

    def insert_after(self, at: int, text: str) -> None:
        """Insert the line ``text`` after line ``at`` (its line ending), moving the indexes of
        every later line."""
        eol = _eol(self.lines[at]) or "\n"
        if not self.lines[at].endswith(("\n", "\r")):
            self.lines[at] += eol
        self.lines.insert(at + 1, f"{text}{eol}")
        for other in self.sections:
            other.header += other.header > at
            other.last += other.last > at
            for k, lst in other.options.items():
                other.options[k] = [j + (j > at) for j in lst]

    def text(self) -> str:
        return "".join(self.lines)


def _line_of(change: str) -> int:
    return int(change.split(":", 1)[0].split()[1])


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


@dataclass
class CustomCfgResult:
    """The custom cfg text and what was changed."""

    text: str
    classes: int
    max_batches: int
    steps: Tuple[int, ...]
    heads: List[Tuple[str, int, int]]    # (section type, line of the head, filters set)
    changes: List[str]
    warnings: List[str]


def _positive(name: str, value: Optional[int]) -> None:
    if value is not None and int(value) <= 0:
        raise UsageError(f"--{name} must be a positive integer, got {value}", value=value)


def make_custom_cfg(
    text: str,
    classes: int,
    *,
    width: Optional[int] = None,
    height: Optional[int] = None,
    batch: Optional[int] = 64,
    subdivisions: Optional[int] = 16,
    max_batches: Optional[int] = None,
    steps: Optional[Sequence[int]] = None,
    train_images: int = 0,
    mosaic: Optional[int] = None,
    learning_rate: Optional[float] = None,
    burn_in: Optional[int] = None,
    keep_schedule: bool = False,
    anchors: Optional[Sequence[float]] = None,
    source: str = "<cfg>",
) -> CustomCfgResult:
    """Edit cfg ``text`` for ``classes`` classes the README's way; see the module docstring.

    ``batch`` / ``subdivisions`` default to the README's 64 / 16 (None keeps the source's).
    ``max_batches`` defaults to :func:`custom_max_batches` (``classes``, ``train_images``);
    ``steps`` to :func:`custom_steps` of it. ``width`` / ``height`` / ``mosaic`` are changed only
    when given. ``learning_rate`` defaults to the source's, capped at :data:`SAFE_LEARNING_RATE`
    (a comment line above it says why) when ``batch`` or ``burn_in`` is below the source's;
    ``burn_in`` defaults to the source's. ``keep_schedule`` leaves
    ``max_batches``, ``steps``, ``learning_rate`` and ``burn_in`` as the source has them (the
    result then reports the source's values). Raises :class:`UsageError` for impossible
    values and :class:`CfgError` when the cfg has no detection head, no ``[net]``, or a head not
    preceded by a ``[convolutional]``. Line numbers in ``changes`` and ``heads`` are those of the
    written cfg; error line numbers are those of the source.
    """
    if int(classes) <= 0:
        raise UsageError(f"--classes must be at least 1, got {classes}", value=classes)
    classes = int(classes)
    for name, v in (("width", width), ("height", height), ("batch", batch),
                    ("subdivisions", subdivisions), ("max-batches", max_batches)):
        _positive(name, v)
    for name, v in (("width", width), ("height", height)):
        if v is not None and int(v) % 32:
            raise UsageError(f"--{name} must be a multiple of 32 (README: network size "
                             f"divisible by 32), got {v}", value=v)
    if batch is not None and subdivisions is not None and int(batch) % int(subdivisions):
        raise UsageError(f"--batch {batch} is not a multiple of --subdivisions {subdivisions} "
                         "(Darknet's mini-batch is batch/subdivisions)", value=subdivisions)
    anchors_text = None if anchors is None else format_anchors(anchors)
    n_anchors = None if anchors is None else len(anchors) // 2
    _positive("burn-in", burn_in)
    if learning_rate is not None and not 0 < float(learning_rate) < float("inf"):
        raise UsageError(f"--learning-rate must be a positive number, got {learning_rate}",
                         value=learning_rate)
    if keep_schedule and (learning_rate is not None or burn_in is not None):
        raise UsageError("--keep-schedule cannot be combined with --learning-rate or --burn-in")
    if mosaic is not None and int(mosaic) not in (0, 1):
        raise UsageError(f"--mosaic must be 0 or 1, got {mosaic}", value=mosaic)

    cfg = _CfgLines(text, source)
    nets = [s for s in cfg.sections if s.type in NET_SECTIONS]
    if not nets or cfg.sections[0] not in nets:
        raise CfgError("the cfg must start with a [net] section", file=source,
                       line=cfg.sections[0].header + 1 if cfg.sections else None)
    net = nets[0]
    changes: List[str] = []
    warnings: List[str] = []

    mb = int(max_batches) if max_batches is not None else custom_max_batches(classes, train_images)
    if steps is None:
        step_values: Tuple[int, ...] = custom_steps(mb)
    else:
        step_values = tuple(int(s) for s in steps)
        if not step_values or any(s <= 0 for s in step_values) or \
                any(b <= a for a, b in zip(step_values, step_values[1:])):
            raise UsageError(f"--steps must be increasing positive integers, got "
                             f"{','.join(map(str, step_values))}", value=steps)
        if step_values[-1] >= mb:
            warnings.append(f"steps {step_values} reach max_batches {mb}: the last learning-rate "
                            "step never happens")
    if keep_schedule and (max_batches is not None or steps is not None):
        raise UsageError("--keep-schedule cannot be combined with --max-batches or --steps")
    if max_batches is not None and max_batches < custom_max_batches(classes, train_images):
        warnings.append(f"max_batches {max_batches} is below the README's rule "
                        f"(classes*2000, >= training images, >= 6000 = "
                        f"{custom_max_batches(classes, train_images)})")
    scales_n = None if keep_schedule else cfg.count_list(net, "scales")
    policy = cfg.get(net, "policy")
    if policy is not None and policy.split("#", 1)[0] == "steps" and scales_n is not None \
            and scales_n != len(step_values):
        raise CfgError(f"steps would have {len(step_values)} values but 'scales' has {scales_n}; "
                       "Darknet needs one scale per step", file=source,
                       line=net.first("scales") + 1)  # type: ignore[operator]

    # plan the head edits first, so that errors name lines of the source
    plan: List[Tuple[_Section, _Section, int]] = []
    for pos, sec in enumerate(cfg.sections):
        if sec.type not in YOLO_HEADS + REGION_HEADS:
            continue
        if sec.type in YOLO_HEADS:
            masks = cfg.count_list(sec, "mask")
            n = masks if masks is not None else (
                n_anchors if n_anchors is not None else cfg.get_int(sec, "num", 1))
            if n_anchors is not None and masks is not None:
                mask_text = (cfg.get(sec, "mask") or "").split("#", 1)[0]
                bad = [int(v) for v in mask_text.split(",") if v.strip().lstrip("-").isdigit()
                       and not 0 <= int(v) < n_anchors]
                if bad:
                    raise UsageError(f"--anchors gives {n_anchors} anchors but {sec.type} at "
                                     f"{source}:{sec.header + 1} has mask index {bad[0]}: "
                                     f"give at least {max(bad) + 1} anchors", value=n_anchors)
            per_anchor = classes + (9 if sec.type == "[Gaussian_yolo]" else 5)
            cpc = sec.first("counters_per_class")
            if cpc is not None:
                warnings.append(f"{source}:{cpc + 1}: {sec.type} has counters_per_class, which "
                                "must list one count per class: update or remove it")
        else:
            if anchors is not None:
                raise UsageError(f"--anchors: {sec.type} at {source}:{sec.header + 1} takes "
                                 "anchors in grid cells, not network pixels; edit it by hand",
                                 value=sec.type)
            n = cfg.get_int(sec, "num", 1)
            per_anchor = classes + cfg.get_int(sec, "coords", 4) + 1
        prev = cfg.sections[pos - 1] if pos > 0 else None
        if prev is None or prev.type not in CONV_SECTIONS:
            raise CfgError(f"{sec.type} must follow a [convolutional] whose filters give its "
                           f"inputs, but it follows {prev.type if prev else 'nothing'}",
                           file=source, line=sec.header + 1)
        plan.append((sec, prev, per_anchor * n))
    if not plan:
        raise CfgError("no [yolo], [Gaussian_yolo] or [region] section: not a detection cfg",
                       file=source)

    # [net]; the rate first: its comment line moves the lines after it
    if not keep_schedule:
        _set_rate(cfg, net, learning_rate, burn_in, batch, changes, warnings)
    if batch is not None:
        cfg.set(net, "batch", str(int(batch)), changes)
    if subdivisions is not None:
        cfg.set(net, "subdivisions", str(int(subdivisions)), changes)
    if width is not None:
        cfg.set(net, "width", str(int(width)), changes)
    if height is not None:
        cfg.set(net, "height", str(int(height)), changes)
    if keep_schedule:
        mb = cfg.get_int(net, "max_batches", 0)
        steps_text = cfg.get(net, "steps")
        step_values = tuple(int(float(v)) for v in steps_text.split("#", 1)[0].split(",")
                            if v) if steps_text else ()
    else:
        cfg.set(net, "max_batches", str(mb), changes)
        cfg.set(net, "steps", ",".join(str(s) for s in step_values), changes)
    if mosaic is not None:
        cfg.set(net, "mosaic", str(int(mosaic)), changes)

    for key in ("width", "height"):
        v = cfg.get_int(net, key, 0)
        if v % 32:
            warnings.append(f"[net] {key}={v} is not a multiple of 32")

    # heads and the conv before each: edit the sections planned above (their line indexes
    # follow any insertion), report lines of the written cfg
    heads: List[Tuple[str, int, int]] = []
    for sec, conv, filters in plan:
        cfg.set(sec, "classes", str(classes), changes)
        if anchors_text is not None:
            cfg.set(sec, "anchors", anchors_text, changes)
            cfg.set(sec, "num", str(n_anchors), changes)
        cfg.set(conv, "filters", str(filters), changes)
        heads.append((sec.type, sec.header + 1, filters))
    return CustomCfgResult(text=cfg.text(), classes=classes, max_batches=mb, steps=step_values,
                           heads=heads, changes=sorted(changes, key=_line_of), warnings=warnings)


def _set_rate(cfg: _CfgLines, net: _Section, learning_rate: Optional[float],
              burn_in: Optional[int], batch: Optional[int], changes: List[str],
              warnings: List[str]) -> None:
    """``learning_rate`` / ``burn_in`` of [net] (see the module docstring)."""
    def number(key: str, default: float) -> float:
        text = (cfg.get(net, key) or "").split("#", 1)[0]
        try:
            return float(text) if text else default
        except ValueError:
            raise CfgError(f"[net] option '{key}' expects a number, got '{text}'",
                           file=cfg.source, line=net.first(key) + 1, value=text) from None
    old_rate = number("learning_rate", 0.001)     # Darknet's default
    # the source's rate is tuned for its own batch and burn_in: only a smaller one makes it unsafe
    shrunk = (batch is not None and int(batch) < number("batch", 1)) or \
        (burn_in is not None and int(burn_in) < number("burn_in", 0))
    rate = float(learning_rate) if learning_rate is not None else \
        min(old_rate, SAFE_LEARNING_RATE) if shrunk else old_rate
    if burn_in is not None:
        cfg.set(net, "burn_in", str(int(burn_in)), changes)
    if rate != old_rate:
        at = net.first("learning_rate")
        if learning_rate is None and at is not None:     # the comment first: lines move
            cfg.insert_after(at - 1, LEARNING_RATE_COMMENT)
            changes.append(f"line {at + 1}: [net] added a comment on learning_rate")
        cfg.set(net, "learning_rate", f"{rate:g}", changes)
    bi = number("burn_in", 0)
    if rate > SAFE_LEARNING_RATE and bi < SAFE_BURN_IN:
        warnings.append(f"learning_rate={rate:g} with burn_in={bi:g} can diverge in a short "
                        f"fine-tune; use burn_in>={SAFE_BURN_IN} or learning_rate<="
                        f"{SAFE_LEARNING_RATE:g}")


def parse_anchors(text: str, source: str = "--anchors") -> List[float]:
    """``"10,14, 23,27, 37,58"`` (Darknet's ``anchors.txt`` / cfg format) -> ``[10, 14, 23, ...]``;
    a UsageError naming ``source`` for a value that is not a positive number or an odd count."""
    parts = [p for p in re.split(r"[\s,]+", text.strip()) if p]
    values: List[float] = []
    for p in parts:
        try:
            v = float(p)
        except ValueError:
            raise UsageError(f"{source}: '{p}' is not a number (expected 'w1,h1, w2,h2, ...')",
                             value=p) from None
        if not v > 0 or v == float("inf"):
            raise UsageError(f"{source}: anchor sizes must be positive, got {p}", value=p)
        values.append(v)
    if not values or len(values) % 2:
        raise UsageError(f"{source}: expected width,height pairs, got {len(values)} values",
                         value=len(values))
    return values


def format_anchors(values: Sequence[float]) -> str:
    """``[10, 14, 23, 27]`` -> ``"10,14, 23,27"`` (the cfg's layout, as calc_anchors prints)."""
    pairs = zip(values[0::2], values[1::2])
    return ", ".join(f"{w:g},{h:g}" for w, h in pairs)


def write_custom_cfg(src: PathLike, dst: PathLike, classes: int, **options) -> CustomCfgResult:
    """Read ``src``, apply :func:`make_custom_cfg` and write ``dst`` (same line endings)."""
    try:
        with open(src, encoding="utf-8", errors="surrogateescape", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        raise CfgError("cfg file not found", file=os.fspath(src)) from None
    except OSError as e:
        raise CfgError(f"cannot read cfg: {e.strerror}", file=os.fspath(src)) from None
    result = make_custom_cfg(text, classes, source=os.fspath(src), **options)
    refuse_output_onto_inputs(os.fspath(dst), "-o", [("source cfg", os.fspath(src))])
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(dst))), exist_ok=True)
    atomic_write_bytes(os.fspath(dst), result.text.encode("utf-8", "surrogateescape"))
    return result
