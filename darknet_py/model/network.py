"""The Darknet network: builds layers from cfg sections and runs the graph.

>>> net = Network.from_cfg("yolov4-tiny.cfg", width=416, height=416)
>>> net.load_weights("yolov4-tiny.weights")
>>> outputs = net(x)          # one tensor per [yolo]/[region] head, Darknet's l.output layout

``forward`` keeps each layer's output only until the last layer that reads it, so memory stays
close to Darknet's. ``forward(x, raw_heads=True)`` returns the heads' raw inputs instead (what the
training loss differentiates through); ``forward_all`` returns every layer's output.
"""
from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional, TextIO

import torch
from torch import nn

from ..errors import CfgError, WeightsError
from ..files import PathLike, atomic_write_bytes
from ..formats.cfg import Section, read_cfg
from ..formats.netconfig import NetConfig, find_net_section
from ..formats.weights import (LoadReport, WeightsHeader, count_weight_floats, load_weights,
                               save_weights, weights_bytes)
from ..layers.base import BuildContext, Layer, max_alloc_floats
from ..layers.head import DetectionHead
from ..layers.registry import layer_class
from ..structures.heads import HeadSpec

#: per-layer options every section may carry (read by Darknet's parse_network_cfg loop)
COMMON_LAYER_OPTIONS = ("clip", "onlyforward", "dont_update", "burnin_update", "stopbackward",
                        "train_only_bn", "dontload", "dontloadscales", "learning_rate")


def _check_layer_size(layer: Layer, section: Section, limit: int) -> None:
    """A layer's output (per image) must be a positive shape within the size limit (checked at
    build time, before any forward pass allocates it)."""
    shape = tuple(int(v) for v in layer.out_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise section.error(f"this layer's output would be {shape[2]}x{shape[1]}x{shape[0]} "
                            "(width x height x channels): check its options", value=shape)
    oc, oh, ow = shape
    gib = oc * oh * ow * 4 / (1 << 30)
    if oc * oh * ow > limit:
        raise section.error(f"this layer's output {ow}x{oh}x{oc} is too large ({gib:.1f} GiB per "
                            "image; raise the limit with DARKNET_PY_MAX_ALLOC_GIB)", value=shape)


def _as_layer_input(layer: Layer, out: torch.Tensor) -> torch.Tensor:
    """A head's output as later layers read it: Darknet hands them the same memory as
    ``(B, c, h, w)`` ([region] keeps its records in ``(B, h, w, num, size)`` order)."""
    if out.dim() == 4:
        return out
    # [region]'s records (B, h, w, num, size) at whatever size this forward runs (random=1
    # training and other input sizes resize the grid, as Darknet's resize_network does)
    b, h, w = out.shape[0], out.shape[1], out.shape[2]
    return out.reshape(b, -1, h, w)


class Network(nn.Module):
    """A Darknet network built from a .cfg: Darknet's layers, in Darknet's order, as a torch module.

    Build one with :meth:`from_files` (cfg + weights: the loader of the commands, the backends
    and the benchmark) or :meth:`from_cfg` (cfg only), load Darknet ``.weights`` into a built
    network with :meth:`load_weights` (what training does after its checks), write them back
    with :meth:`save_weights`, print Darknet's layer table with :meth:`print_table`; ``net(x)``
    runs the graph (:meth:`forward`).

    >>> net = Network.from_cfg("yolov4-tiny.cfg", width=416, height=416)
    >>> net.load_weights("yolov4-tiny.weights")
    >>> heads = net.eval().fuse()(torch.rand(1, 3, 416, 416))

    Attributes: ``layers`` (``nn.ModuleList``, index = Darknet's layer number), ``heads`` (the
    [yolo]/[region]/[Gaussian_yolo] layers), ``config`` (the [net] options), ``batch``,
    ``width``/``height``/``channels``/``input_shape``, ``classes``, ``seen`` (images trained on,
    from the weights header), ``weights_header`` and ``load_report`` (what the last
    :meth:`load_weights` read, None before one). Every problem with the cfg raises
    :class:`~darknet_py.errors.CfgError` naming the file and line. For detection on images (file
    paths or numpy arrays, names, NMS, drawing) use :class:`darknet_py.infer.detector.Detector`.
    """

    def __init__(self, sections: List[Section], cfg_path: str = "<cfg>",
                 batch: Optional[int] = None, width: Optional[int] = None,
                 height: Optional[int] = None, channels: Optional[int] = None):
        super().__init__()
        self.cfg_path = cfg_path
        net_section = find_net_section(sections, cfg_path)
        for key, value in (("width", width), ("height", height), ("channels", channels)):
            if value is not None:
                if value < 1:
                    raise CfgError(f"{key} must be positive, got {value}", file=cfg_path)
                net_section.set(key, value)
        self.config = NetConfig.from_section(net_section)
        if not (self.config.width and self.config.height and self.config.channels):
            raise CfgError("[net] needs width, height and channels for a detection network",
                           file=cfg_path, line=net_section.line)
        self.batch = batch if batch is not None and batch > 0 else self.config.mini_batch
        self.net_section = net_section
        self.sections = sections[1:]
        if not self.sections:
            raise CfgError("cfg has a [net] section but no layers", file=cfg_path)
        ctx = BuildContext(net=self.config, cfg_path=cfg_path, batch=self.batch)
        layers: List[Layer] = []
        limit = max_alloc_floats()
        c, h, w = self.input_shape
        if c * h * w > limit:
            raise CfgError(f"[net] input {w}x{h}x{c} is too large ({c * h * w * 4 / (1 << 30):.1f} "
                           "GiB per image; raise the limit with DARKNET_PY_MAX_ALLOC_GIB)",
                           file=cfg_path, line=net_section.line, value=(w, h, c))
        total_weights = 0
        for index, section in enumerate(self.sections):
            cls = layer_class(section)
            layer = cls(index, section, ctx)
            _check_layer_size(layer, section, limit)
            total_weights += layer.num_weight_floats()
            if total_weights > limit:
                gib = total_weights * 4 / (1 << 30)
                raise section.error(f"the network's weights reach {gib:.1f} GiB at this layer, "
                                    "more than the limit (raise it with DARKNET_PY_MAX_ALLOC_GIB)",
                                    value=total_weights)
            for key in COMMON_LAYER_OPTIONS:
                section.str(key, None)
            layer.learning_rate_scale = section.float("learning_rate", 1.0)
            layer.dontload = section.int("dontload", 0)
            layer.train_only_bn = section.int("train_only_bn", 0)
            layers.append(layer)
            ctx.layers.append(layer)
            ctx.shapes.append(layer.out_shape)
        self.layers = nn.ModuleList(layers)
        self.heads: List[DetectionHead] = [l for l in layers if isinstance(l, DetectionHead)]
        self.seen = 0
        self.weights_header: Optional[WeightsHeader] = None
        #: what the last :meth:`load_weights` read (Darknet prints it as "Loaded N layers")
        self.load_report: Optional[LoadReport] = None
        self._plan_memory()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_cfg(cls, cfg: PathLike, batch: Optional[int] = None, width: Optional[int] = None,
                 height: Optional[int] = None, channels: Optional[int] = None) -> "Network":
        """Build the network a Darknet .cfg describes (weights randomly initialised).

        ``batch`` overrides the [net] mini-batch (``batch / subdivisions``; default: as Darknet
        computes it), ``width``/``height``/``channels`` override [net] (``detector calc_anchors``
        style sizes: positive; Darknet's yolo layers want multiples of 32). Raises
        :class:`~darknet_py.errors.CfgError` (file and line) for a missing or unreadable file,
        an unknown section or option value, a bad layer reference or a network too large for
        memory.
        """
        path = os.fspath(cfg)
        return cls(read_cfg(path), path, batch=batch, width=width, height=height,
                   channels=channels)

    @classmethod
    def from_files(cls, cfg: PathLike, weights: Optional[PathLike] = None, *,
                   batch: Optional[int] = None, width: Optional[int] = None,
                   height: Optional[int] = None, cutoff: Optional[int] = None) -> "Network":
        """Build the network of a cfg and load its weights: Darknet's ``load_network`` (parse
        the cfg, then ``load_weights_upto``). The one loader of the commands, the backends and
        the benchmark; only ``detector train`` builds first and loads after its checks.

        ``batch``/``width``/``height`` are :meth:`from_cfg`'s overrides; ``weights`` None keeps
        the random initialisation, ``cutoff`` loads layers ``0..cutoff-1`` only (a partial file
        such as ``yolov4-tiny.conv.29``). The network comes back in training mode, unfused;
        :attr:`load_report` says what was read (None without weights). Raises
        :class:`~darknet_py.errors.CfgError` or :class:`~darknet_py.errors.WeightsError` naming
        the file (and line or layer).
        """
        net = cls.from_cfg(cfg, batch=batch, width=width, height=height)
        if weights is not None:
            net.load_weights(weights, cutoff=cutoff)
        return net

    def _plan_memory(self) -> None:
        n = len(self.layers)
        last_use = list(range(n))
        for layer in self.layers:
            for i in layer.inputs:
                last_use[i] = max(last_use[i], layer.index)
            if layer.uses_previous and layer.index > 0:
                last_use[layer.index - 1] = max(last_use[layer.index - 1], layer.index)
        self._free_after: Dict[int, List[int]] = {}
        for i, j in enumerate(last_use):
            self._free_after.setdefault(j, []).append(i)

    def release_plan(self) -> Dict[int, List[int]]:
        """Layer index -> earlier outputs no later layer reads once it has run (excluding its
        own output): what ``forward`` frees, for other executors of the graph."""
        return {j: [i for i in lst if i != j] for j, lst in self._free_after.items()
                if any(i != j for i in lst)}

    # ------------------------------------------------------------------ properties
    @property
    def width(self) -> int:
        return self.config.width

    @property
    def height(self) -> int:
        return self.config.height

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def input_shape(self):
        return (self.config.channels, self.config.height, self.config.width)

    @property
    def classes(self) -> int:
        return self.heads[-1].classes if self.heads else 0

    @property
    def head_specs(self) -> List["HeadSpec"]:
        """The detection heads as :class:`~darknet_py.structures.heads.HeadSpec` (layer order)."""
        return [layer.head_spec() for layer in self.heads]

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, raw_heads: bool = False) -> List[torch.Tensor]:
        """Run the graph; one output tensor per detection head, in layer order.

        ``x``: a float tensor ``(B, channels, H, W)``, RGB in ``[0, 1]`` as Darknet's
        ``load_image`` gives (``darknet_py.imaging.image.prepare_input`` letterboxes or stretches
        an image to the cfg size); ``H, W`` are normally the cfg's ``height, width`` (other
        multiples of the total stride work, as Darknet's ``random=1`` resizing does), on the
        network's device and dtype. Returns a list with each head's ``l.output`` in Darknet's
        layout: ``(B, n*(4+1+classes), h, w)`` for [yolo] (x, y, objectness and class scores
        already through the layer's activation, w and h raw), ``(B, h, w, n, 4+1+classes)``
        for [region]. With ``raw_heads=True`` the heads' *inputs* are returned instead (what
        the training loss differentiates). Raises ``ValueError`` for a tensor that is not 4-D
        or has the wrong number of channels.
        """
        self._check_input(x)
        outputs: List[Optional[torch.Tensor]] = [None] * len(self.layers)
        heads: List[torch.Tensor] = []
        prev = x
        for layer in self.layers:
            out = layer(prev, outputs)
            if layer.is_head:
                heads.append(prev if raw_heads else out)
                out = _as_layer_input(layer, out)
            outputs[layer.index] = out
            prev = out
            for i in self._free_after.get(layer.index, ()):
                if i != layer.index:
                    outputs[i] = None
        return heads

    def forward_all(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Every layer's output (for layer-by-layer comparisons)."""
        self._check_input(x)
        outputs: List[Optional[torch.Tensor]] = [None] * len(self.layers)
        inputs: List[Optional[torch.Tensor]] = [None] * len(self.layers)
        prev = x
        for layer in self.layers:
            outputs[layer.index] = layer(prev, inputs)
            prev = inputs[layer.index] = _as_layer_input(layer, outputs[layer.index])
        return outputs  # type: ignore[return-value]

    def _check_input(self, x: torch.Tensor) -> None:
        """(B, C, H, W) with the cfg's channels. Any H, W the layers can take is accepted (Darknet's
        ``random=1`` training resizes the network); the cfg size is what inference uses."""
        if x.dim() != 4 or x.shape[1] != self.config.channels:
            c, h, w = self.input_shape
            raise ValueError(f"network input must be (B, {c}, H, W) (cfg size {h}x{w}), "
                             f"got {tuple(x.shape)}")

    # ------------------------------------------------------------------ inference helpers
    def fuse(self) -> "Network":
        """Fold batch norm into the conv weights and biases, in place, for inference (as
        ``detector test`` does); returns ``self``. Call it after :meth:`load_weights` and in eval
        mode: the folded network no longer trains batch norm and saves the folded weights."""
        for layer in self.layers:
            if hasattr(layer, "fuse"):
                layer.fuse()
        return self

    def unfuse(self) -> "Network":
        for layer in self.layers:
            if hasattr(layer, "unfuse"):
                layer.unfuse()
        return self

    def _apply(self, fn, *args, **kwargs):
        # moving or casting the network invalidates fused copies
        out = super()._apply(fn, *args, **kwargs)
        for layer in self.layers:
            if getattr(layer, "_fused", None) is not None:
                layer.fuse()
        return out

    # ------------------------------------------------------------------ weights
    def load_weights(self, path: PathLike, cutoff: Optional[int] = None,
                     strict_tail: bool = False) -> LoadReport:
        """Load a Darknet ``.weights`` file (any header version; ``seen`` is 32-bit before 0.2,
        64-bit from 0.2) into layers ``0..cutoff-1`` (all by default), as Darknet's ``load_weights``.

        Sets ``seen``, ``weights_header`` and ``load_report``; returns that
        :class:`~darknet_py.formats.weights.LoadReport` (layers loaded, floats read, bytes left).
        Raises :class:`~darknet_py.errors.WeightsError` naming the file (and the layer) for a
        missing file, a bad header or a file too short for these layers; more data than the
        layers need warns (``strict_tail=True``: raises) unless ``cutoff`` was given.
        """
        self.load_report = load_weights(self, path, cutoff=cutoff, strict_tail=strict_tail)
        return self.load_report

    def save_weights(self, path: PathLike, cutoff: Optional[int] = None,
                     header: Optional[WeightsHeader] = None) -> None:
        """Write layers ``0..cutoff-1`` (all by default) as a Darknet ``.weights`` file, byte for
        byte what Darknet's ``save_weights`` writes, with the loaded file's header version (0.2.5
        for a network that loaded none) and this network's ``seen``, unless ``header`` is given. The file is written atomically (a temporary file renamed:
        an error leaves no half-written file); raises
        :class:`~darknet_py.errors.WeightsError` if it cannot be written."""
        if header is None:
            header = self.weights_header_for_save()
        save_weights(self, path, cutoff=cutoff, header=header)

    def weights_bytes(self, cutoff: Optional[int] = None,
                      header: Optional[WeightsHeader] = None) -> bytes:
        return weights_bytes(self, cutoff, header or self.weights_header_for_save())

    def weights_header_for_save(self) -> WeightsHeader:
        """The loaded file's version (so a round trip is byte-identical) with the current seen."""
        h = self.weights_header
        if h is None:
            return WeightsHeader(seen=int(self.seen))
        return WeightsHeader(h.major, h.minor, h.revision, int(self.seen))

    def num_weight_floats(self, cutoff: Optional[int] = None) -> int:
        return count_weight_floats(self, cutoff)

    def save_state_dict(self, path: PathLike) -> None:
        """Save a PyTorch state_dict (plus ``seen``) with torch.save, atomically."""
        import io

        buf = io.BytesIO()
        torch.save({"state_dict": self.state_dict(), "seen": int(self.seen),
                    "cfg": os.path.basename(self.cfg_path)}, buf)
        atomic_write_bytes(os.fspath(path), buf.getvalue())

    def load_state_dict_file(self, path: PathLike) -> None:
        """Load a state_dict saved by :meth:`save_state_dict` (never unpickles objects)."""
        p = os.fspath(path)
        try:
            blob = torch.load(p, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise WeightsError("state-dict file not found", file=p) from None
        except Exception as e:  # corrupted archive or a pickle with objects
            raise WeightsError(f"not a loadable state-dict file ({type(e).__name__}: {e})"
                               .split("\n")[0], file=p) from None
        state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
        if not isinstance(state, dict):
            raise WeightsError("file does not hold a state_dict", file=p)
        try:
            self.load_state_dict(state)
        except RuntimeError as e:
            raise WeightsError(f"state_dict does not fit this cfg: {str(e).splitlines()[0]}",
                               file=p) from None
        self.seen = int(blob.get("seen", 0)) if isinstance(blob, dict) else 0
        self.unfuse()

    # ------------------------------------------------------------------ printing
    @property
    def total_bflops(self) -> float:
        return sum(l.bflops for l in self.layers if l.bflops > 0)

    def avg_outputs(self) -> int:
        total, count = 0, 0
        for l in self.layers:
            c, h, w = getattr(l, "darknet_in_shape", l.in_shape)
            if w > 1 and h > 1:
                oc, oh, ow = l.out_shape
                total += oc * oh * ow
                count += 1
        return total // count if count else 0

    def table(self) -> str:
        """Darknet's layer table as one string, line for line as ``parse_network_cfg`` prints
        it (:meth:`print_table` prints it with the ``mini_batch`` line and unused fields)."""
        lines = ["   layer   filters  size/strd(dil)      input                output"]
        for layer in self.layers:
            lines.append(f"{layer.index:4d} {layer.table_line()}")
            extra = getattr(layer, "params_line", None)
            if extra is not None:
                lines.append(extra())
        lines.append(f"Total BFLOPS {self.total_bflops:5.3f} ")
        lines.append(f"avg_outputs = {self.avg_outputs()} ")
        return "\n".join(lines)

    def unused_fields(self) -> List[str]:
        """Darknet's ``Unused field: 'key = value'`` warnings for every section."""
        out = []
        for s in [self.net_section] + self.sections:
            for o in s.unused():
                out.append(f"{s.file}:{o.line}: Unused field: '{o.key} = {o.value}'")
        return out

    def print_table(self, file: Optional[TextIO] = None) -> None:
        """Print Darknet's start-up text for this cfg to ``file`` (default stderr, as Darknet):
        the ``mini_batch = …`` line, the layer table (:meth:`table`: filters, sizes, input and
        output shapes, BFLOPs per layer, total BFLOPS, avg_outputs) and Darknet's ``Unused
        field`` warnings, line for line as ``parse_network_cfg`` prints them."""
        f = file or sys.stderr
        print(f"mini_batch = {self.batch}, batch = {self.batch * self.config.subdivisions}, "
              f"time_steps = {self.config.time_steps}, train = {int(self.training)} ", file=f)
        print(self.table(), file=f)
        for w in self.unused_fields():
            print(w, file=f)
