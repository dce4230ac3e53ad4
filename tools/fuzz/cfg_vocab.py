"""The words a fuzzer needs to write Darknet cfgs that get past the parser.

Shared by ``tests/test_fuzz.py`` (hypothesis) and the atheris harnesses in this folder: real
section names, the options each layer reads (with the kind of value it expects), good values that
build real networks, and hostile values (overflowing integers, NaN, empty list items, huge sizes,
text where a number goes) that must end in a :class:`darknet_py.errors.CfgError`, never in another
exception.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

#: option kinds: "int", "float", "str:<choice>|<choice>", "ints" (comma list), "floats"
NET_OPTIONS: Dict[str, str] = {
    "width": "size", "height": "size", "channels": "chan", "batch": "int", "subdivisions": "int",
    "learning_rate": "float", "max_batches": "int", "burn_in": "int", "momentum": "float",
    "decay": "float", "policy": "str:constant|steps|step|exp|poly|sigmoid|sgdr|random|bogus",
    "steps": "ints", "scales": "floats", "mosaic": "bool", "letter_box": "bool", "flip": "bool",
    "hue": "float", "saturation": "float", "exposure": "float", "inputs": "int",
    "time_steps": "int", "adam": "bool", "resize_step": "float", "mixup": "bool",
    "cutmix": "bool", "blur": "bool", "gaussian_noise": "bool", "sequential_subdivisions": "int",
}

ACTIVATIONS = ("linear|leaky|logistic|relu|mish|swish|tanh|relu6|hard_mish|elu|selu|gelu|"
               "normalize_channels|normalize_channels_softmax|ramp|plse|lhtan|loggy|stair|"
               "hardtan|relie|revleaky|softplus|bogus")

LAYER_OPTIONS: Dict[str, Dict[str, str]] = {
    "convolutional": {"filters": "chan", "size": "ksize", "stride": "stride", "stride_x": "stride",
                      "stride_y": "stride", "pad": "bool", "padding": "small", "dilation": "small",
                      "groups": "small", "batch_normalize": "bool",
                      "activation": "str:" + ACTIVATIONS, "share_index": "rel", "xnor": "bool",
                      "binary": "bool", "flipped": "bool", "dontload": "bool"},
    "maxpool": {"size": "ksize", "stride": "stride", "stride_x": "stride", "stride_y": "stride",
                "padding": "small", "maxpool_depth": "bool", "out_channels": "chan"},
    "local_avgpool": {"size": "ksize", "stride": "stride", "padding": "small"},
    "avgpool": {},
    "route": {"layers": "rels", "groups": "small", "group_id": "small"},
    "shortcut": {"from": "rels", "activation": "str:" + ACTIVATIONS,
                 "weights_type": "str:none|per_feature|per_channel|bogus",
                 "weights_normalization": "str:none|relu|softmax|bogus"},
    "upsample": {"stride": "stride", "scale": "float"},
    "yolo": {"mask": "ints", "anchors": "floats", "classes": "small", "num": "small",
             "jitter": "float", "scale_x_y": "float", "new_coords": "bool",
             "iou_loss": "str:mse|iou|giou|diou|ciou|bogus",
             "nms_kind": "str:greedynms|diounms|default|bogus", "max": "int",
             "counters_per_class": "ints", "embedding_layer": "rel", "random": "float",
             "ignore_thresh": "float", "truth_thresh": "float", "beta_nms": "float"},
    "Gaussian_yolo": {"mask": "ints", "anchors": "floats", "classes": "small", "num": "small",
                      "scale_x_y": "float", "iou_loss": "str:mse|iou|giou|bogus",
                      "nms_kind": "str:greedynms|diounms|bogus", "yolo_point": "str:center|"
                      "left_top|right_bottom|bogus"},
    "region": {"anchors": "floats", "classes": "small", "coords": "small", "num": "small",
               "softmax": "bool", "bias_match": "bool", "max": "int", "jitter": "float"},
    "reorg": {"stride": "stride", "reverse": "bool"},
    "reorg3d": {"stride": "stride", "reverse": "bool"},
    "sam": {"from": "rel", "activation": "str:" + ACTIVATIONS},
    "scale_channels": {"from": "rel", "scale_wh": "bool", "activation": "str:" + ACTIVATIONS},
    "dropout": {"probability": "float", "dropblock": "bool", "dropblock_size_abs": "float",
                "dropblock_size_rel": "float"},
    "connected": {"output": "chan", "activation": "str:" + ACTIVATIONS, "batch_normalize": "bool"},
    "softmax": {"groups": "small", "temperature": "float", "spatial": "float"},
    "crop": {"crop_height": "size", "crop_width": "size", "flip": "bool", "angle": "float",
             "saturation": "float", "exposure": "float", "shift": "float"},
    "cost": {"type": "str:sse|masked|smooth|bogus", "scale": "float", "ratio": "float"},
    "batchnorm": {},
    "activation": {"activation": "str:" + ACTIVATIONS},
    "implicit": {"filters": "chan", "atoms": "small", "mean": "float", "std": "float"},
    "crnn": {"size": "ksize", "stride": "stride", "hidden": "chan", "output": "chan",
             "batch_normalize": "bool", "activation": "str:" + ACTIVATIONS, "pad": "bool",
             "groups": "small"},
    "empty": {}, "silence": {},
    "contrastive": {"classes": "small", "yolo_layer": "rel", "temperature": "float"},
}

#: good values per kind (they build real networks most of the time)
GOOD: Dict[str, Tuple[str, ...]] = {
    "size": ("8", "16", "24", "32", "13", "1"),
    "chan": ("1", "2", "3", "4", "6", "8", "12", "16", "18", "24"),
    "int": ("0", "1", "2", "4", "8", "64", "100"),
    "float": ("0", "0.5", "1", "1.2", "0.001", "-1", "2"),
    "bool": ("0", "1"),
    "small": ("0", "1", "2", "3", "4"),
    "ksize": ("1", "2", "3", "5"),
    "stride": ("1", "2"),
    "rel": ("-1", "-2", "-3", "0", "1"),
    "rels": ("-1", "-2", "-1,-2", "-1,-3", "0", "-1,0"),
    "ints": ("0", "0,1,2", "1,2", "0,1", "3"),
    "floats": ("10,13,16,30,33,23", "1,1", "1.5,2,3,4,5,6,7,8", "10,14, 23,27, 37,58,"),
}

#: hostile values: every one of them must give a CfgError or a network that works
HOSTILE: Tuple[str, ...] = (
    "", "-1", "-0", "0", "-2147483648", "2147483647", "2147483648", "-2147483649",
    "99999999999999999999999", "1e9", "1e30", "1e400", "-1e400", "nan", "NaN", "inf", "-inf",
    "abc", "1,", ",", ",,", "1,,2", "0x10", "1.5", "1e-45", "100000", "65536", "16385", "-65536",
    "#", "1#c", "[", "]", "=", "==", "1=2", "\u00e9", "\u200b", "1 2", "0,-1,-100", "-1000000000",
    "3,1e30", "1e30,1e30",
)


#: options a section cannot do without (the generators always write them)
REQUIRED: Dict[str, Tuple[str, ...]] = {
    "route": ("layers",), "shortcut": ("from",), "sam": ("from",), "scale_channels": ("from",),
}

#: heads and the number of input channels they need per anchor besides ``classes``
HEAD_EXTRA_CHANNELS = {"yolo": 5, "Gaussian_yolo": 9, "region": 5}


def head_with_matching_conv(kind: str, classes: int, anchors: int) -> List[str]:
    """Lines of a 1x1 ``[convolutional]`` giving exactly the channels a head needs, and the head
    (``mask``/``num`` for ``anchors`` anchors, ``classes`` classes)."""
    filters = anchors * (classes + HEAD_EXTRA_CHANNELS[kind])
    conv = ["[convolutional]", "size=1", "stride=1", f"filters={filters}", "activation=linear"]
    head = [f"[{kind}]", f"classes={classes}", f"num={anchors}"]
    if kind != "region":
        head.append("mask=" + ",".join(str(i) for i in range(anchors)))
    head.append("anchors=" + ",".join(["10,14"] * anchors))
    return conv + [""] + head


def section_types() -> List[str]:
    return list(LAYER_OPTIONS)


def good_values(kind: str) -> Tuple[str, ...]:
    if kind.startswith("str:"):
        return tuple(kind[4:].split("|"))
    return GOOD[kind]
