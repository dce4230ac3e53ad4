"""The contract every Darknet layer module follows.

A layer class is listed for its section names in :mod:`darknet_py.layers.registry` and is
built from its :class:`~darknet_py.formats.cfg.Section` and a :class:`BuildContext` that knows the shapes of
every earlier layer. It owns:

* its cfg options (read in ``__init__`` through the typed ``Section`` accessors, so unknown keys
  are reported as unused like Darknet does),
* its output shape ``out_shape = (c, h, w)`` and cost ``bflops``,
* its forward ``forward(x, outputs)``: ``x`` is the previous layer's output, ``outputs`` the list of
  all earlier outputs (``None`` where the network freed one no later layer needs),
* its weight layout: ``read_weights(reader)`` / ``write_weights(writer)`` in Darknet's order,
* its line of Darknet's layer table, ``table_line()``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..formats.cfg import Section
from ..errors import CfgError

if TYPE_CHECKING:  # pragma: no cover
    from ..formats.netconfig import NetConfig
    from ..formats.weights import WeightsReader, WeightsWriter

Shape = Tuple[int, int, int]  # (channels, height, width)

#: Sanity limit against hostile or mistyped cfgs (``filters=100000000``, ``size=100001``): the
#: most float32 values a network may hold, as GiB (env ``DARKNET_PY_MAX_ALLOC_GIB``, default 2).
#: One layer may hold half of it, one layer's output per image all of it. The largest cfgs of
#: Darknet's cfg/ folder need 1.1 GiB of weights (cspx-p7-mish) and 0.4 GiB for one layer's
#: weights (vgg-16's connected layer). Checked before anything is allocated; Darknet has no such
#: limit (it calls calloc and dies or swaps).
DEFAULT_MAX_ALLOC_GIB = 2.0


def max_alloc_floats() -> int:
    """The size limit above in float32 values."""
    import os
    try:
        gib = float(os.environ.get("DARKNET_PY_MAX_ALLOC_GIB", DEFAULT_MAX_ALLOC_GIB))
    except ValueError:
        gib = DEFAULT_MAX_ALLOC_GIB
    return int(gib * (1 << 30)) // 4


#: C's FLT_MAX (float.h): Darknet's "no limit" default of max_delta and its max-pool padding
FLT_MAX = 3.4028234663852886e38

#: Bounds for counts that size Python lists or training buffers (Darknet's cfgs use num <= 20
#: anchors and max <= 200 boxes; these are far above any real use)
MAX_ANCHORS = 65536
MAX_BOXES = 1_000_000


def check_range(section: Section, key: str, value: int, low: int, high: int) -> int:
    """Raise :class:`CfgError` naming ``key``'s line unless ``low <= value <= high``."""
    if not low <= value <= high:
        line = next((o.line for o in section.options if o.key == key), section.line)
        raise CfgError(f"[{section.type}] {key}={value} is out of range ({low}..{high})",
                       file=section.file, line=line, value=value)
    return value


def check_weights_size(section: Section, count: int, what: str = "weights") -> None:
    """Raise :class:`CfgError` (naming the section) before a layer allocates ``count`` floats
    when that is more than one layer may hold (see :data:`DEFAULT_MAX_ALLOC_GIB`)."""
    limit = max_alloc_floats() // 2
    if count > limit:
        raise section.error(
            f"this layer would hold {count} {what} ({count * 4 / (1 << 30):.1f} GiB), more than "
            f"the {limit * 4 / (1 << 30):.1f} GiB allowed for one layer: check filters/size/"
            "output (raise the limit with DARKNET_PY_MAX_ALLOC_GIB)", value=count)


@dataclass
class BuildContext:
    """What a layer may look at while it is built: the [net] options and earlier layers."""

    net: "NetConfig"
    shapes: List[Shape] = field(default_factory=list)
    layers: List["Layer"] = field(default_factory=list)
    cfg_path: str = "<cfg>"
    #: images per forward pass (Network's batch); 0 when unknown (some tables print it)
    batch: int = 0

    @property
    def index(self) -> int:
        return len(self.shapes)

    @property
    def in_shape(self) -> Shape:
        if self.shapes:
            return self.shapes[-1]
        return (self.net.channels, self.net.height, self.net.width)

    def resolve(self, section: Section, key: str, value: int) -> int:
        """Turn a (possibly negative, relative) layer reference into an absolute index."""
        idx = self.index + value if value < 0 else value
        if not 0 <= idx < self.index:
            raise CfgError(
                f"[{section.type}] {key}={value} refers to layer {idx}, but only layers "
                f"0..{self.index - 1} exist before layer {self.index}",
                file=section.file, line=_line_of(section, key), value=value)
        return idx


def _line_of(section: Section, key: str) -> int:
    for o in section.options:
        if o.key == key:
            return o.line
    return section.line


class Layer(nn.Module):
    """Base class of all Darknet layers."""

    #: section names this class handles (first one is the canonical name)
    section_types: ClassVar[Tuple[str, ...]] = ()
    #: short name printed in the layer table ("conv", "max", "route"...)
    table_name: ClassVar[str] = "?"
    #: True for detection heads ([yolo], [region], [Gaussian_yolo])
    is_head: ClassVar[bool] = False

    def __init__(self, index: int, section: Section, ctx: BuildContext):
        super().__init__()
        self.index = index
        self.section = section
        self.in_shape: Shape = ctx.in_shape
        self.out_shape: Shape = self.in_shape
        #: indices of earlier layers (other than index-1) whose outputs forward() reads
        self.inputs: List[int] = []
        #: whether forward() reads x (the previous layer's output)
        self.uses_previous = True
        self.bflops = 0.0
        #: Darknet's stopbackward / train flags (training only)
        self.stopbackward = section.int("stopbackward", 0) if section is not None else 0
        self.dont_update = section.int("dont_update", 0) if section is not None else 0

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, outputs: Sequence[Optional[torch.Tensor]]) -> torch.Tensor:
        raise NotImplementedError

    # ---------------------------------------------------------------- weights
    def read_weights(self, reader: "WeightsReader") -> None:
        """Read this layer's parameters in Darknet's order (no-op for parameterless layers)."""

    def write_weights(self, writer: "WeightsWriter") -> None:
        """Write this layer's parameters in Darknet's order."""

    def num_weight_floats(self) -> int:
        """How many float32 values this layer stores in a .weights file."""
        return 0

    # ---------------------------------------------------------------- printing
    def table_line(self) -> str:
        """This layer's line of Darknet's layer table, without the leading index."""
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        return f"{self.table_name:<6s}{'':26s}{w:4d} x{h:4d} x{c:4d} -> {ow:4d} x{oh:4d} x{oc:4d}"

    def extra_repr(self) -> str:
        return f"index={self.index}, out={self.out_shape}"
