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
* with ``stopbackward`` (a layer index): ``stopbackward=1`` in that layer, Darknet's way of
  training only the layers after it (:mod:`darknet_py.train.freeze`); the README's quick trial
  stops at yolov4-tiny's first maxpool (layer 9), which saves about a fifth of each iteration.

Why the learning-rate cap: ``yolov4-tiny-custom.cfg`` ships ``learning_rate=0.00261``, which is
safe with its ``batch=64`` and ``burn_in=1000``, but a CPU fine-tune shrinks both: with
``batch=16`` and ``burn_in=40`` Darknet's loss turned to NaN at iteration 40 (the first at the
full rate) and darknet-py ended at 0.05% mAP after 200 iterations (reference data
``oracle/train_curve``), while ``learning_rate=0.001`` with ``burn_in=100`` learned (42.6% after
400 iterations), and so did 0.002 with ``burn_in=150`` (the README's CPU recipe) and with
``burn_in=100`` (the README's quick trial: 43.7% after 350 iterations, the loss finite
throughout). A cfg that
keeps the template's batch and burn_in (the README's ``batch=64`` and the template's 1000) keeps
its rate. ``yolov4-custom.cfg`` already has 0.001. A rate above 0.001 with ``burn_in`` below
:data:`SAFE_BURN_IN` gives a warning.

The cfg is read and edited through :class:`darknet_py.formats.cfg.EditableCfg`: the network's
own reader (Darknet's ``read_cfg`` rules and errors), keeping the user's text. If an option
appears twice in a section every occurrence is edited, so the value Darknet reads is the new one
whichever occurrence it takes.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from ..errors import CfgError, UsageError
from ..files import PathLike, atomic_write_bytes, refuse_output_onto_inputs
from ..formats.cfg import EditableCfg, Section

#: Head sections whose ``classes`` is set, and how ``filters`` of the conv before them is computed.
YOLO_HEADS = ("yolo", "Gaussian_yolo")
REGION_HEADS = ("region",)
CONV_SECTIONS = ("convolutional", "conv")

#: the learning rate ``cfg custom`` writes unless told otherwise (yolov4-custom.cfg's value)
SAFE_LEARNING_RATE = 0.001
#: below this burn_in, a learning rate above SAFE_LEARNING_RATE is warned about
SAFE_BURN_IN = 100
LEARNING_RATE_COMMENT = ("# learning_rate: 0.001, not yolov4-tiny-custom.cfg's 0.00261, which "
                         "diverges when batch and burn_in are made small (batch=16, burn_in=40: "
                         "NaN); a higher rate needs burn_in>=100 (README, quick trial)")


def custom_max_batches(classes: int, train_images: int = 0) -> int:
    """The README's rule: ``classes*2000``, but not less than the number of training images and
    not less than 6000."""
    return max(2000 * int(classes), int(train_images), 6000)


def custom_steps(max_batches: int) -> Tuple[int, int]:
    """The README's ``steps``: 80% and 90% of ``max_batches`` (integer arithmetic, rounded down)."""
    return (max_batches * 8 // 10, max_batches * 9 // 10)


def _line_of(change: str) -> int:
    return int(change.split(":", 1)[0].split()[1])


def _list_len(sec: Section, key: str) -> Optional[int]:
    """How many comma-separated values ``key`` has (``None`` when absent)."""
    return len(sec.float_list(key)) if sec.has(key) else None


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
    stopbackward: Optional[int] = None,
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
    result then reports the source's values). ``stopbackward`` is a layer index (0-based, as
    ``cfg show`` numbers the layers): that layer gets ``stopbackward=1``. Raises :class:`UsageError` for impossible
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

    cfg = EditableCfg(text, source)
    net = cfg.net()
    changes: List[str] = []
    warnings: List[str] = []
    layers = cfg.sections[1:]
    if stopbackward is not None and not 0 <= int(stopbackward) < len(layers) - 1:
        raise UsageError(f"--stopbackward must be a layer index from 0 to {len(layers) - 2} "
                         f"(the cfg has {len(layers)} layers; cfg show numbers them), got "
                         f"{stopbackward}", value=stopbackward)

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
    scales_n = None if keep_schedule else _list_len(net, "scales")
    if net.str("policy", "steps").split("#", 1)[0] == "steps" and scales_n is not None \
            and scales_n != len(step_values):
        raise net.error(f"steps would have {len(step_values)} values but 'scales' has "
                        f"{scales_n}; Darknet needs one scale per step", net.first("scales"))

    # plan the head edits first, so that errors name lines of the source
    plan: List[Tuple[Section, Section, int]] = []
    for pos, sec in enumerate(cfg.sections):
        if sec.type not in YOLO_HEADS + REGION_HEADS:
            continue
        if sec.type in YOLO_HEADS:
            masks = sec.int_list("mask", None)
            n = len(masks) if masks is not None else (
                n_anchors if n_anchors is not None else sec.int("num", 1))
            if n_anchors is not None and masks is not None:
                bad = [m for m in masks if not 0 <= m < n_anchors]
                if bad:
                    raise UsageError(f"--anchors gives {n_anchors} anchors but [{sec.type}] at "
                                     f"{source}:{sec.line} has mask index {bad[0]}: "
                                     f"give at least {max(bad) + 1} anchors", value=n_anchors)
            per_anchor = classes + (9 if sec.type == "Gaussian_yolo" else 5)
            if sec.has("counters_per_class"):
                cpc = sec.first("counters_per_class")
                warnings.append(f"{source}:{cpc.line}: [{sec.type}] has counters_per_class, "
                                "which must list one count per class: update or remove it")
        else:
            if anchors is not None:
                raise UsageError(f"--anchors: [{sec.type}] at {source}:{sec.line} takes "
                                 "anchors in grid cells, not network pixels; edit it by hand",
                                 value=f"[{sec.type}]")
            n = sec.int("num", 1)
            per_anchor = classes + sec.int("coords", 4) + 1
        prev = cfg.sections[pos - 1] if pos > 0 else None
        if prev is None or prev.type not in CONV_SECTIONS:
            raise CfgError(f"[{sec.type}] must follow a [convolutional] whose filters give its "
                           f"inputs, but it follows {f'[{prev.type}]' if prev else 'nothing'}",
                           file=source, line=sec.line)
        plan.append((sec, prev, per_anchor * n))
    if not plan:
        raise CfgError("no [yolo], [Gaussian_yolo] or [region] section: not a detection cfg",
                       file=source)

    # [net]; the rate first: its comment line moves the lines after it
    if not keep_schedule:
        _set_rate(cfg, net, learning_rate, burn_in, batch, changes, warnings)
    for key, value in (("batch", batch), ("subdivisions", subdivisions), ("width", width),
                       ("height", height)):
        if value is not None:
            changes += cfg.set(net, key, int(value))
    if keep_schedule:
        mb = net.int("max_batches", 0)
        step_values = tuple(net.int_list("steps", []))
    else:
        changes += cfg.set(net, "max_batches", mb)
        changes += cfg.set(net, "steps", ",".join(str(s) for s in step_values))
    if mosaic is not None:
        changes += cfg.set(net, "mosaic", int(mosaic))
    if stopbackward is not None:
        changes += cfg.set(layers[int(stopbackward)], "stopbackward", 1)

    for key in ("width", "height"):
        v = net.int(key, 0)
        if v % 32:
            warnings.append(f"[net] {key}={v} is not a multiple of 32")

    # heads and the conv before each: edit the sections planned above (their line numbers
    # follow any insertion), report lines of the written cfg
    heads: List[Tuple[str, int, int]] = []
    for sec, conv, filters in plan:
        changes += cfg.set(sec, "classes", classes)
        if anchors_text is not None:
            changes += cfg.set(sec, "anchors", anchors_text)
            changes += cfg.set(sec, "num", n_anchors)
        changes += cfg.set(conv, "filters", filters)
        heads.append((f"[{sec.type}]", sec.line, filters))
    return CustomCfgResult(text=cfg.text(), classes=classes, max_batches=mb, steps=step_values,
                           heads=heads, changes=sorted(changes, key=_line_of), warnings=warnings)


def _set_rate(cfg: EditableCfg, net: Section, learning_rate: Optional[float],
              burn_in: Optional[int], batch: Optional[int], changes: List[str],
              warnings: List[str]) -> None:
    """``learning_rate`` / ``burn_in`` of [net] (see the module docstring)."""
    old_rate = net.float("learning_rate", 0.001)     # Darknet's default
    # the source's rate is tuned for its own batch and burn_in: only a smaller one makes it unsafe
    shrunk = (batch is not None and int(batch) < net.float("batch", 1)) or \
        (burn_in is not None and int(burn_in) < net.float("burn_in", 0))
    rate = float(learning_rate) if learning_rate is not None else \
        min(old_rate, SAFE_LEARNING_RATE) if shrunk else old_rate
    if burn_in is not None:
        changes += cfg.set(net, "burn_in", int(burn_in))
    if rate != old_rate:
        at = net.first("learning_rate")
        if learning_rate is None and at is not None:     # the comment first: lines move
            cfg.insert_after(at.line - 1, LEARNING_RATE_COMMENT)
            changes.append(f"line {at.line - 1}: [net] added a comment on learning_rate")
        changes += cfg.set(net, "learning_rate", f"{rate:g}")
    bi = net.float("burn_in", 0)
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
