"""Which Darknet training options darknet-py implements: one table, and what a cfg sets of them.

:data:`TRAINING_OPTIONS` classifies every option Darknet's detector training reads (``[net]`` in
``parse_net_options``, the per-layer flags of ``parse_network_cfg``, the training side of
``[convolutional]``, ``[dropout]``, ``[yolo]``, ``[region]``, ``[Gaussian_yolo]``,
``[contrastive]``) as

* ``implemented``: darknet-py trains with it as Darknet's GPU build does;
* ``ignored``: darknet-py does not do what Darknet does with it; training still runs, and
  :func:`unimplemented_training_options` reports it (``detector train`` warns once at start);
* ``unused``: nothing to do: Darknet's *detector* training does not use it either (a classifier
  option, a field no code reads) or it only tunes the CUDA build's speed or memory.

:data:`MODEL_OPTIONS` lists the other options of Darknet's detection cfgs: the architecture and
inference settings the layer builders read, the same in training and inference. Between them the
two tables cover every option of the 54 detection cfgs of AlexeyAB's cfg folder (a test checks
it), so a new option cannot go unclassified. ``darknet-py cfg options`` prints them per cfg.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

from ..formats.cfg import Section, _clean_value
from ..layers.contrastive import ContrastiveLayer
from ..layers.registry import LAYER_TYPES
from .freeze import reaching

IMPLEMENTED = "implemented"
IGNORED = "ignored"
UNUSED = "unused"
STATUSES = (IMPLEMENTED, IGNORED, UNUSED)

#: the key of the per-layer options every section may carry (``parse_network_cfg``'s loop)
ANY_LAYER = "*"
#: the [net] section (``[network]`` is its alias)
NET = "net"


@dataclass(frozen=True)
class TrainingOption:
    status: str
    #: what darknet-py does with it, or why it is ignored / unused
    what: str
    #: Darknet's default, as cfg text: setting an ignored option to it changes nothing, so it is
    #: not reported (``None``: any value matters)
    default: Optional[str] = None


def _opts(section: str, status: str, what: str, *keys: str,
          default: Optional[str] = None) -> Dict[Tuple[str, str], TrainingOption]:
    return {(section, k): TrainingOption(status, what, default) for k in keys}


_NO_CONTRASTIVE = ("the [contrastive] loss is not implemented: the layers that feed only it are "
                   "not trained")
_HEAD_AUGMENT = ("data loading: the last detection layer's value, as train_detector passes it "
                 "to the loader")

#: (section, key) -> classification; ``section`` is ``"net"``, a canonical layer type, or ``"*"``
TRAINING_OPTIONS: Dict[Tuple[str, str], TrainingOption] = {
    # ----------------------------------------------------------------- [net]: batch, schedule
    **_opts(NET, IMPLEMENTED, "images per iteration (the global batch; DDP shards it)", "batch"),
    **_opts(NET, IMPLEMENTED, "mini-batches per iteration, gradients accumulated",
            "subdivisions"),
    **_opts(NET, IMPLEMENTED, "iterations to train; also places the EMA and multi-scale points",
            "max_batches"),
    **_opts(NET, IMPLEMENTED, "Darknet's SGD update (train/optim.py)", "learning_rate",
            "momentum", "decay"),
    **_opts(NET, IMPLEMENTED, "adam_update_gpu (train/optim.py)", "adam", "B1", "B2", "eps"),
    **_opts(NET, IMPLEMENTED, "get_current_rate, every policy and the burn_in warm-up "
            "(train/schedule.py)", "policy", "burn_in", "power", "step", "scale", "steps",
            "scales", "gamma", "learning_rate_min", "sgdr_cycle", "sgdr_mult"),
    **_opts(NET, IMPLEMENTED, "the GPU build's update batch (times subdivisions / "
            "sequential_subdivisions); with track=1 the passes that share one augmentation",
            "sequential_subdivisions"),
    **_opts(NET, IMPLEMENTED, "track=1: sequential_subdivisions scaled at each of steps= "
            "(get_current_seq_subdivisions)", "seq_scales"),
    **_opts(NET, IMPLEMENTED, "a forward pass takes batch/subdivisions x time_steps images; "
            "they count in the printed images, seen and the loss divisor", "time_steps"),
    **_opts(NET, IMPLEMENTED, "sequences of consecutive train-list lines, time-step-major, "
            "one augmentation per chunk (data/dataset.py)", "track"),
    **_opts(NET, IMPLEMENTED, "track=1: a sequence steps 1..augment_speed lines at a time",
            "augment_speed"),
    **_opts(NET, IMPLEMENTED, "weights average from max_batches/2, applied at "
            "max_batches-1000, <cfg>_ema.weights (train/ema.py)", "ema_alpha"),
    **_opts(NET, IMPLEMENTED, "loss-axis limit of chart.png", "max_chart_loss"),
    # ----------------------------------------------------------------- [net]: augmentation
    **_opts(NET, IMPLEMENTED, "load_data_detection's augmentation (data/augment.py)", "flip",
            "blur", "gaussian_noise", "mixup", "mosaic", "letter_box", "mosaic_bound", "hue",
            "saturation", "exposure"),
    **_opts(NET, IMPLEMENTED, "as Darknet: not for detectors (a warning, then off; with mosaic "
            "it is mosaic)", "cutmix"),
    **_opts(NET, IMPLEMENTED, "multi-scale sizes are multiples of it", "resize_step"),
    # ----------------------------------------------------------------- [net]: not implemented
    **_opts(NET, IGNORED, "self-adversarial training (a first pass that perturbs the input "
            "image with an adversarial mode of the yolo loss) is not implemented",
            "adversarial_lr", default="0"),
    **_opts(NET, IGNORED, "contrastive training (pairs of differently augmented views for the "
            "[contrastive] loss) is not implemented", "contrastive", "contrastive_jit_flip",
            "contrastive_color", default="0"),
    **_opts(NET, IGNORED, "the GPU build's clipping of conv deltas to [-1, 1] and NaN repair in "
            "batch norm is not implemented", "try_fix_nan", default="0"),
    **_opts(NET, IGNORED, "reject_similar_weights every N iterations is not implemented",
            "weights_reject_freq", default="0"),
    **_opts(NET, IGNORED, "the yolo loss's bad-label rejection is not implemented",
            "equidistant_point", "badlabels_rejection_percentage",
            "num_sigmas_reject_badlabels", default="0"),
    **_opts(NET, IGNORED, "the mini-batch is not resized with random= (batch/subdivisions "
            "images at every size)", "dynamic_minibatch", default="0"),
    # ----------------------------------------------------------------- [net]: nothing to do
    **_opts(NET, UNUSED, "read only by Darknet's classifier loader, not by detector training",
            "angle", "aspect", "max_crop", "min_crop", "label_smooth_eps", "unsupervised"),
    **_opts(NET, UNUSED, "only shows attention images during adversarial training",
            "attention"),
    **_opts(NET, UNUSED, "speed/memory setting of Darknet's CUDA build; the result does not "
            "depend on it", "use_cuda_graph", "optimized_memory", "workspace_size_limit_MB"),
    **_opts(NET, UNUSED, "Darknet's static fp16 loss scale (it divides the rate by the same "
            "factor); darknet-py's fp16 uses a dynamic GradScaler", "loss_scale"),
    **_opts(NET, UNUSED, "Darknet does not read it", "max_epochs"),
    # ----------------------------------------------------------------- every layer
    **_opts(ANY_LAYER, IMPLEMENTED, "per-layer rate multiplier (learning_rate_scale)",
            "learning_rate"),
    **_opts(ANY_LAYER, IMPLEMENTED, "update_network_gpu's layer flags (train/optim.py)",
            "dont_update", "burnin_update", "train_only_bn"),
    **_opts(ANY_LAYER, IMPLEMENTED, "weights constrained to [-clip, clip] after the update",
            "clip"),
    **_opts(ANY_LAYER, IMPLEMENTED, "load_weights skips the layer / its BN values",
            "dontload", "dontloadscales"),
    **_opts(ANY_LAYER, IMPLEMENTED, "no gradient to this layer and those below it (for ever "
            "with 1, the layers below then in inference mode and not updated; for iterations "
            "1..N with N), as the GPU build (train/freeze.py)", "stopbackward"),
    **_opts(ANY_LAYER, IMPLEMENTED, "the gradient does not flow back through this layer "
            "(train/freeze.py)", "onlyforward"),
    # ----------------------------------------------------------------- [convolutional]
    **_opts("convolutional", IMPLEMENTED, "binary weights and inputs, straight-through "
            "gradients of the GPU build", "xnor"),
    **_opts("convolutional", IGNORED, "gradient centralization of the weight updates is not "
            "implemented", "grad_centr", default="0"),
    **_opts("convolutional", UNUSED, "Darknet's code that used it is commented out", "dot",
            "reverse"),
    **_opts("convolutional", UNUSED, "CUDA stream scheduling of Darknet's GPU build", "stream",
            "wait_stream"),
    **_opts("route", UNUSED, "CUDA stream scheduling of Darknet's GPU build", "stream",
            "wait_stream"),
    # ----------------------------------------------------------------- [dropout]
    **_opts("dropout", IMPLEMENTED, "dropout / DropBlock in training mode (DropBlock without "
            "the GPU build's ramp of the probability)", "probability", "dropblock",
            "dropblock_size_rel", "dropblock_size_abs"),
    # ----------------------------------------------------------------- [yolo]
    **_opts("yolo", IMPLEMENTED, _HEAD_AUGMENT, "jitter", "resize"),
    **_opts("yolo", IMPLEMENTED, "multi-scale training every 10 iterations (the last detection "
            "layer's value)", "random"),
    **_opts("yolo", IMPLEMENTED, "truth boxes per image (loader and loss)", "max"),
    **_opts("yolo", IMPLEMENTED, "forward_yolo_layer's deltas (layers/yolo.py)", "ignore_thresh",
            "truth_thresh", "iou_thresh", "iou_thresh_kind", "iou_loss", "iou_normalizer",
            "cls_normalizer", "obj_normalizer", "delta_normalizer", "max_delta",
            "label_smooth_eps", "focal_loss", "objectness_smooth", "counters_per_class"),
    **_opts("yolo", IMPLEMENTED, "the per-layer training printout", "show_details"),
    **_opts("yolo", IMPLEMENTED, "label ids mapped to classes in the loss (read_map)", "map"),
    **_opts("yolo", UNUSED, "Darknet's parse_yolo does not read it", "beta1", "uc_normalizer"),
    # ----------------------------------------------------------------- [region]
    **_opts("region", IMPLEMENTED, _HEAD_AUGMENT, "jitter", "resize"),
    **_opts("region", IMPLEMENTED, "multi-scale training every 10 iterations", "random"),
    **_opts("region", IMPLEMENTED, "truth boxes per image read by the loader", "max"),
    **_opts("region", IMPLEMENTED, "forward_region_layer's deltas (layers/region.py)", "thresh",
            "coord_scale", "object_scale", "noobject_scale", "class_scale", "rescore",
            "bias_match", "classfix", "focal_loss"),
    **_opts("region", UNUSED, "Darknet reads it but its region layer never uses it", "absolute",
            "log", "sqrt", "mask_scale"),
    # ----------------------------------------------------------------- [Gaussian_yolo]
    **_opts("Gaussian_yolo", IMPLEMENTED, _HEAD_AUGMENT, "jitter", "resize"),
    **_opts("Gaussian_yolo", IMPLEMENTED, "multi-scale training every 10 iterations", "random"),
    **_opts("Gaussian_yolo", IMPLEMENTED, "truth boxes per image read by the loader", "max"),
    **_opts("Gaussian_yolo", IMPLEMENTED, "forward_gaussian_yolo_layer's deltas "
            "(layers/gaussian_yolo.py)", "ignore_thresh", "truth_thresh", "iou_thresh",
            "iou_thresh_kind", "iou_loss", "iou_normalizer", "uc_normalizer", "cls_normalizer",
            "obj_normalizer", "delta_normalizer", "max_delta", "label_smooth_eps",
            "objectness_smooth", "counters_per_class"),
    **_opts("Gaussian_yolo", IMPLEMENTED, "label ids mapped to classes in the loss (read_map)",
            "map"),
    # ----------------------------------------------------------------- [contrastive]
    **_opts("contrastive", IGNORED, _NO_CONTRASTIVE, "classes", "yolo_layer", "temperature",
            "cls_normalizer", "max_delta", "contrastive_neg_max"),
}

#: the other options of the detection cfgs: architecture and inference settings (NMS, decoding,
#: tracking) that the layer builders read, the same in training and inference
MODEL_OPTIONS: Dict[str, FrozenSet[str]] = {k: frozenset(v.split()) for k, v in {
    NET: "width height channels inputs",
    "convolutional": "filters size stride stride_x stride_y pad padding dilation groups "
                     "batch_normalize activation share_index binary bin_output flipped",
    "crnn": "size stride dilation pad padding output hidden groups activation batch_normalize "
            "xnor shortcut",
    "maxpool": "size stride stride_x stride_y padding maxpool_depth out_channels antialiasing "
               "maxpool_zero_nonmax",
    "local_avgpool": "size stride stride_x stride_y padding",
    "avgpool": "",
    "reorg": "stride reverse",
    "reorg3d": "stride reverse",
    "route": "layers groups group_id",
    "shortcut": "from activation weights_type weights_normalization",
    "sam": "from activation",
    "scale_channels": "from activation scale_wh",
    "upsample": "stride scale",
    "dropout": "",
    "yolo": "classes num mask anchors scale_x_y new_coords beta_nms nms_kind track_history_size "
            "sim_thresh dets_for_track dets_for_show track_ciou_norm embedding_layer",
    "region": "classes coords num anchors softmax tree map",
    "Gaussian_yolo": "classes num mask anchors scale_x_y beta_nms nms_kind yolo_point",
    "contrastive": "",
}.items()}


def lookup(section_type: str, key: str) -> Optional[TrainingOption]:
    """The classification of ``key`` in a ``[section_type]`` (canonical name), else ``None``."""
    if section_type == NET:
        return TRAINING_OPTIONS.get((NET, key))
    return TRAINING_OPTIONS.get((section_type, key)) or TRAINING_OPTIONS.get((ANY_LAYER, key))


def is_model_option(section_type: str, key: str) -> bool:
    return key in MODEL_OPTIONS.get(section_type, frozenset())


def canonical_type(section: Section) -> str:
    """``net`` for [net]/[network], else the layer class's first section name ([conv] ->
    convolutional); an unknown section keeps its name."""
    if section.type in ("net", "network"):
        return NET
    cls = LAYER_TYPES.get(section.type)
    return cls.section_types[0] if cls is not None else section.type


@dataclass(frozen=True)
class SetOption:
    """One training option a cfg sets: where, its value and its classification."""

    section: str          # canonical section type
    key: str
    value: str            # as written (comment stripped)
    line: int
    option: TrainingOption

    @property
    def is_default(self) -> bool:
        return self.option.default is not None and _same_value(self.value, self.option.default)


def _same_value(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


def training_options(sections: Sequence[Section]) -> List[SetOption]:
    """Every training option the cfg's sections set (``sections[0]`` is [net]), in file order.

    Reads the raw options, so Darknet's ``Unused field`` bookkeeping is left alone."""
    out: List[SetOption] = []
    for s in sections:
        kind = canonical_type(s)
        for o in s.options:
            opt = lookup(kind, o.key)
            if opt is not None:
                out.append(SetOption(kind, o.key, _clean_value(o.value), o.line, opt))
    return out


def unclassified_options(sections: Sequence[Section]) -> List[Tuple[str, str, int]]:
    """``(section, key, line)`` of the options in neither table (what the inventory test keeps
    empty for Darknet's detection cfgs)."""
    out = []
    for s in sections:
        kind = canonical_type(s)
        for o in s.options:
            if lookup(kind, o.key) is None and not is_model_option(kind, o.key):
                out.append((kind, o.key, o.line))
    return out


def unimplemented_training_options(net) -> List[SetOption]:
    """The options a built :class:`~darknet_py.model.network.Network`'s cfg sets for training that
    darknet-py ignores (status ``ignored``, value other than Darknet's default), in file order.
    ``[contrastive]``'s own options are left out: :func:`untrained_branches` says what matters."""
    return [o for o in training_options([net.net_section] + list(net.sections))
            if o.option.status == IGNORED and not o.is_default and o.section != "contrastive"]


def untrained_branches(net) -> List[Tuple[object, List[int]]]:
    """For each loss-only ``[contrastive]`` layer: the layers with parameters whose output
    reaches it but no detection head. darknet-py has no contrastive loss: they get no gradient."""
    layers = list(net.layers)
    heads = reaching(net, [int(l.index) for l in layers if l.is_head])
    out = []
    for layer in layers:
        if isinstance(layer, ContrastiveLayer):
            feeds = reaching(net, [int(layer.index)])
            branch = [i for i in range(layer.index) if feeds[i] and not heads[i]
                      and any(True for _ in layers[i].parameters())]
            out.append((layer, branch))
    return out


def _ranges(indices: Sequence[int]) -> str:
    parts, start = [], None
    for k, i in enumerate(indices):
        if start is None:
            start = i
        if k + 1 == len(indices) or indices[k + 1] != i + 1:
            parts.append(str(start) if start == i else f"{start}-{i}")
            start = None
    return ", ".join(parts)


def describe_set_options(options: Sequence[SetOption]) -> str:
    """``key=value (line N), …`` for [net] options, then ``[section] key=value (lines a, b), …``
    per layer type; one item per (section, key, value), sections separated by ``; ``."""
    groups: Dict[Tuple[str, str, str], List[int]] = {}
    for o in options:
        groups.setdefault((o.section, o.key, o.value), []).append(o.line)
    by_section: Dict[str, List[str]] = {}
    for (section, key, value), lines in groups.items():
        where = f"line {lines[0]}" if len(lines) == 1 else \
            "lines " + ", ".join(str(n) for n in lines)
        by_section.setdefault(section, []).append(f"{key}={value} ({where})")
    return "; ".join(("" if section == NET else f"[{section}] ") + ", ".join(items)
                     for section, items in by_section.items())


def training_warning(net) -> Optional[str]:
    """The one line ``detector train`` prints at start when the cfg sets training options
    darknet-py does not implement or has a ``[contrastive]`` branch it cannot train; else
    ``None``."""
    parts = []
    ignored = unimplemented_training_options(net)
    if ignored:
        parts.append("training options darknet-py does not implement (ignored): "
                     + describe_set_options(ignored))
    for layer, branch in untrained_branches(net):
        text = (f"[contrastive] (line {layer.section.line}) has no loss in darknet-py: ")
        text += (f"layers {_ranges(branch)}, which feed only it, are not trained" if branch else
                 "nothing is trained through it")
        parts.append(text)
    if not parts:
        return None
    return f"{net.cfg_path}: " + "; ".join(parts)
