"""Section name -> layer class: the one table, like Darknet's ``string_to_layer_type``.

Importing the layer modules registers them (``@register`` in :mod:`darknet_py.layers.base`).
"""
from __future__ import annotations

from typing import Type

from ..model.cfg import Section
from ..errors import CfgError
from . import LAYER_MODULES  # noqa: F401  (imports every layer module)
from .base import LAYER_TYPES, Layer


def layer_class(section: Section) -> Type[Layer]:
    try:
        return LAYER_TYPES[section.type]
    except KeyError:
        known = ", ".join(f"[{k}]" for k in sorted(LAYER_TYPES))
        raise CfgError(f"unsupported section [{section.type}] (darknet-py supports: {known})",
                       file=section.file, line=section.line, value=section.type) from None
