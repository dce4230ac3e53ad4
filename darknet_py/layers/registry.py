"""Section name -> layer class: the one table, like Darknet's ``string_to_layer_type``
(``parser.c``). A new layer type is one module under :mod:`darknet_py.layers` and one line here;
a new detection head kind too (a :class:`~darknet_py.layers.head.DetectionHead` subclass: decoding,
export and training find it through :func:`head_class`)."""
from __future__ import annotations

from typing import Dict, Type

from ..errors import CfgError, UsageError
from ..formats.cfg import Section
from .activation_layer import ActivationLayer
from .avgpool import AvgpoolLayer
from .base import Layer
from .batchnorm_layer import BatchnormLayer
from .connected import ConnectedLayer
from .contrastive import ContrastiveLayer
from .convolutional import ConvolutionalLayer
from .cost import CostLayer
from .crnn import CrnnLayer
from .crop import CropLayer
from .dropout import DropoutLayer
from .empty import EmptyLayer
from .gaussian_yolo import GaussianYoloLayer
from .head import DetectionHead
from .implicit import ImplicitLayer
from .maxpool import LocalAvgpoolLayer, MaxpoolLayer
from .region import RegionLayer
from .reorg import ReorgOldLayer
from .reorg3d import Reorg3dLayer
from .route import RouteLayer
from .sam import SamLayer
from .scale_channels import ScaleChannelsLayer
from .shortcut import ShortcutLayer
from .softmax import SoftmaxLayer
from .upsample import UpsampleLayer
from .yolo import YoloLayer

#: every section name Darknet's parser accepts for the detection cfgs, with its aliases
LAYER_TYPES: Dict[str, Type[Layer]] = {
    "convolutional": ConvolutionalLayer, "conv": ConvolutionalLayer,
    "route": RouteLayer,
    "shortcut": ShortcutLayer,
    "maxpool": MaxpoolLayer, "max": MaxpoolLayer,
    "local_avgpool": LocalAvgpoolLayer, "local_avg": LocalAvgpoolLayer,
    "avgpool": AvgpoolLayer, "avg": AvgpoolLayer,
    "upsample": UpsampleLayer,
    "yolo": YoloLayer,
    "Gaussian_yolo": GaussianYoloLayer,
    "region": RegionLayer,
    "reorg": ReorgOldLayer,
    "reorg3d": Reorg3dLayer,
    "dropout": DropoutLayer,
    "sam": SamLayer,
    "scale_channels": ScaleChannelsLayer,
    "crnn": CrnnLayer,
    "contrastive": ContrastiveLayer,
    "connected": ConnectedLayer, "conn": ConnectedLayer,
    "softmax": SoftmaxLayer, "soft": SoftmaxLayer,
    "cost": CostLayer,
    "crop": CropLayer,
    "empty": EmptyLayer, "silence": EmptyLayer,
    "implicit": ImplicitLayer,
    "activation": ActivationLayer,
    "batchnorm": BatchnormLayer,
}


def _section_names() -> None:
    # each class knows its names (first = canonical) for messages and the layer table
    for name, cls in LAYER_TYPES.items():
        if name not in cls.__dict__.get("section_types", ()):
            cls.section_types = tuple(cls.__dict__.get("section_types", ())) + (name,)


_section_names()


def layer_class(section: Section) -> Type[Layer]:
    """The layer class for a cfg section; an unknown section is a :class:`CfgError` at its line."""
    try:
        return LAYER_TYPES[section.type]
    except KeyError:
        known = ", ".join(f"[{k}]" for k in sorted(LAYER_TYPES))
        raise CfgError(f"unsupported section [{section.type}] (darknet-py supports: {known})",
                       file=section.file, line=section.line, value=section.type) from None


#: head kind (``HeadSpec.kind``) -> its layer class, derived from the table above
HEAD_TYPES: Dict[str, Type[DetectionHead]] = {
    cls.kind: cls for cls in LAYER_TYPES.values() if issubclass(cls, DetectionHead)}


def head_class(kind: str) -> Type[DetectionHead]:
    """The head class of a :class:`~darknet_py.structures.heads.HeadSpec` kind (``"yolo"``,
    ``"gaussian_yolo"``, ``"region"``); an unknown kind is a :class:`UsageError`."""
    try:
        return HEAD_TYPES[kind]
    except KeyError:
        raise UsageError(f"unknown detection head kind '{kind}' (known: "
                         f"{', '.join(sorted(HEAD_TYPES))})") from None
