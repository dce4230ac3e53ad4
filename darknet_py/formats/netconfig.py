"""Typed ``[net]`` options with Darknet's defaults (``parse_net_options`` in ``parser.c``)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import List

from .cfg import Section
from ..errors import CfgError

POLICIES = ("constant", "step", "exp", "poly", "steps", "sigmoid", "random", "sgdr")


@dataclass
class NetConfig:
    batch: int = 1                 # as written in the cfg (images per iteration / time_steps)
    subdivisions: int = 1
    time_steps: int = 1
    width: int = 0
    height: int = 0
    channels: int = 0
    inputs: int = 0
    max_batches: int = 0
    learning_rate: float = 0.001
    learning_rate_min: float = 0.00001
    sgdr_cycle: int = 0
    sgdr_mult: int = 2
    momentum: float = 0.9
    decay: float = 0.0001
    policy: str = "constant"
    burn_in: int = 0
    power: float = 4.0
    step: int = 1
    scale: float = 1.0
    steps: List[int] = field(default_factory=list)
    scales: List[float] = field(default_factory=list)
    seq_scales: List[float] = field(default_factory=list)
    gamma: float = 1.0
    adam: int = 0
    B1: float = 0.9
    B2: float = 0.999
    eps: float = 0.000001
    track: int = 0
    augment_speed: int = 2
    sequential_subdivisions: int = 1
    try_fix_nan: int = 0
    weights_reject_freq: int = 0
    equidistant_point: int = 0
    badlabels_rejection_percentage: float = 0.0
    num_sigmas_reject_badlabels: float = 0.0
    ema_alpha: float = 0.0
    use_cuda_graph: int = 0
    loss_scale: float = 1.0
    dynamic_minibatch: int = 0
    optimized_memory: int = 0
    workspace_size_limit_MB: float = 1024.0
    max_crop: int = 0
    min_crop: int = 0
    flip: int = 1
    blur: int = 0
    gaussian_noise: int = 0
    mixup: int = 0                 # Darknet's combined code: 1 mixup, 2 cutmix, 3 mosaic, 4 both
    cutmix: int = 0
    mosaic: int = 0
    letter_box: int = 0
    mosaic_bound: int = 0
    contrastive: int = 0
    contrastive_jit_flip: int = 0
    contrastive_color: int = 0
    unsupervised: int = 0
    label_smooth_eps: float = 0.0
    resize_step: float = 32.0
    attention: int = 0
    adversarial_lr: float = 0.0
    max_chart_loss: float = 20.0
    angle: float = 0.0
    aspect: float = 1.0
    saturation: float = 1.0
    exposure: float = 1.0
    hue: float = 0.0
    line: int = 0
    file: str = "<cfg>"

    @property
    def mini_batch(self) -> int:
        """``batch / subdivisions`` (at least 1): images per forward pass, or with
        ``time_steps`` > 1 the sequences (images per time step) of one forward pass."""
        return max(1, self.batch // max(1, self.subdivisions))

    @property
    def net_batch(self) -> int:
        """Darknet's training ``net.batch``: ``mini_batch * time_steps`` images per forward pass
        (``parse_net_options`` multiplies by ``time_steps``; ``parse_network_cfg_custom`` raises
        a zero to ``time_steps``, hence ``mini_batch`` >= 1)."""
        return self.mini_batch * max(1, self.time_steps)

    @classmethod
    def from_section(cls, s: Section) -> "NetConfig":
        c = cls(line=s.line, file=s.file)
        c.max_batches = s.int("max_batches", 0)
        c.batch = s.int("batch", 1)
        c.learning_rate = s.float("learning_rate", 0.001)
        c.learning_rate_min = s.float("learning_rate_min", 0.00001)
        c.sgdr_cycle = s.int("sgdr_cycle", c.max_batches)
        c.sgdr_mult = s.int("sgdr_mult", 2)
        c.momentum = s.float("momentum", 0.9)
        c.decay = s.float("decay", 0.0001)
        c.subdivisions = s.int("subdivisions", 1)
        if c.subdivisions < 1:
            raise s.error(f"subdivisions must be >= 1, got {c.subdivisions}")
        if c.batch < 1:
            raise s.error(f"batch must be >= 1, got {c.batch}")
        c.time_steps = s.int("time_steps", 1)
        c.track = s.int("track", 0)
        c.augment_speed = s.int("augment_speed", 2)
        c.sequential_subdivisions = min(s.int("sequential_subdivisions", c.subdivisions),
                                        c.subdivisions)
        c.try_fix_nan = s.int("try_fix_nan", 0)
        c.weights_reject_freq = s.int("weights_reject_freq", 0)
        c.equidistant_point = s.int("equidistant_point", 0)
        c.badlabels_rejection_percentage = s.float("badlabels_rejection_percentage", 0.0)
        c.num_sigmas_reject_badlabels = s.float("num_sigmas_reject_badlabels", 0.0)
        c.ema_alpha = s.float("ema_alpha", 0.0)
        c.use_cuda_graph = s.int("use_cuda_graph", 0)
        c.loss_scale = s.float("loss_scale", 1.0)
        c.dynamic_minibatch = s.int("dynamic_minibatch", 0)
        c.optimized_memory = s.int("optimized_memory", 0)
        c.workspace_size_limit_MB = s.float("workspace_size_limit_MB", 1024.0)
        c.adam = s.int("adam", 0)
        if c.adam:
            c.B1 = s.float("B1", 0.9)
            c.B2 = s.float("B2", 0.999)
            c.eps = s.float("eps", 0.000001)
        c.height = s.int("height", 0)
        c.width = s.int("width", 0)
        c.channels = s.int("channels", 0)
        c.inputs = s.int("inputs", c.height * c.width * c.channels)
        c.max_crop = s.int("max_crop", c.width * 2)
        c.min_crop = s.int("min_crop", c.width)
        c.flip = s.int("flip", 1)
        c.blur = s.int("blur", 0)
        c.gaussian_noise = s.int("gaussian_noise", 0)
        c.mixup = s.int("mixup", 0)
        c.cutmix = s.int("cutmix", 0)
        c.mosaic = s.int("mosaic", 0)
        if c.mosaic and c.cutmix:
            c.mixup = 4
        elif c.cutmix:
            c.mixup = 2
        elif c.mosaic:
            c.mixup = 3
        c.letter_box = s.int("letter_box", 0)
        c.mosaic_bound = s.int("mosaic_bound", 0)
        c.contrastive = s.int("contrastive", 0)
        c.contrastive_jit_flip = s.int("contrastive_jit_flip", 0)
        c.contrastive_color = s.int("contrastive_color", 0)
        c.unsupervised = s.int("unsupervised", 0)
        c.label_smooth_eps = s.float("label_smooth_eps", 0.0)
        c.resize_step = s.float("resize_step", 32.0)
        c.attention = s.int("attention", 0)
        c.adversarial_lr = s.float("adversarial_lr", 0.0)
        c.max_chart_loss = s.float("max_chart_loss", 20.0)
        c.angle = s.float("angle", 0.0)
        c.aspect = s.float("aspect", 1.0)
        c.saturation = s.float("saturation", 1.0)
        c.exposure = s.float("exposure", 1.0)
        c.hue = s.float("hue", 0.0)
        c.power = s.float("power", 4.0)
        if not c.inputs and not (c.height and c.width and c.channels):
            raise s.error("no input size given (width, height, channels)")
        for key, v in (("width", c.width), ("height", c.height), ("channels", c.channels)):
            if v < 0:
                raise s.error(f"{key} must be positive, got {v}")
        if c.width > 16384 or c.height > 16384:
            raise s.error(f"input size {c.width}x{c.height} is too large (max 16384)")
        c.policy = s.str("policy", "constant")
        if c.policy not in POLICIES:
            raise s.error(f"unknown learning-rate policy '{c.policy}' (one of {', '.join(POLICIES)})")
        c.burn_in = s.int("burn_in", 0)
        if c.policy == "step":
            c.step = s.int("step", 1)
            c.scale = s.float("scale", 1.0)
        elif c.policy in ("steps", "sgdr"):
            if c.policy == "steps" and not (s.has("steps") and s.has("scales")):
                raise s.error("policy=steps needs both steps= and scales=")
            if s.has("steps"):
                c.steps = s.int_list("steps")
                n = len(c.steps)
                sc = s.float_list("scales", [])
                sq = s.float_list("seq_scales", [])
                c.scales = (sc + [1.0] * n)[:n]
                c.seq_scales = (sq + [1.0] * n)[:n]
        elif c.policy == "exp":
            c.gamma = s.float("gamma", 1.0)
        elif c.policy == "sigmoid":
            c.gamma = s.float("gamma", 1.0)
            c.step = s.int("step", 1)
        return c

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def find_net_section(sections: List[Section], file: str) -> Section:
    if not sections or sections[0].type not in ("net", "network"):
        first = sections[0] if sections else None
        raise CfgError("first section must be [net] or [network]", file=file,
                       line=first.line if first else None)
    for s in sections[1:]:
        if s.type in ("net", "network"):
            raise CfgError(f"duplicate [{s.type}] section (only the first section may be [net])",
                           file=file, line=s.line)
    return sections[0]
