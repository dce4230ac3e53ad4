"""What a decoder needs to know about one detection head: :class:`HeadSpec`.

Each head layer (a :class:`~darknet_py.layers.head.DetectionHead`: ``[yolo]``,
``[Gaussian_yolo]``, ``[region]``) builds its own spec (``layer.head_spec()``), stating its kind,
Darknet's type number and its entries per anchor; :class:`~darknet_py.model.network.Network`
lists them as
``net.head_specs``. Decoding (:mod:`darknet_py.model.decode`), NMS parameters, the
``Detection layer`` printout, ONNX metadata and the ONNX/OpenVINO backends all read this one
description, so a backend that is not a :class:`Network` (an exported file) decodes exactly as the
network that produced it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Sequence, Tuple

from ..errors import UsageError

__all__ = ["HeadSpec", "nms_params"]

#: NMS kinds Darknet distinguishes (anything else is ``default`` = do_nms_sort)
NMS_KINDS = ("default", "greedynms", "diounms", "cornersnms")


@dataclass(frozen=True)
class HeadSpec:
    """One detection head, as Darknet's ``layer`` struct describes it for decoding.

    ``anchors`` holds all ``2*total`` values of ``l.biases``; ``mask`` selects this head's ``n``
    anchors (``[region]``: the first ``n``). ``w``/``h`` are the head's grid size, ``entries``
    the values per anchor (``4+1+classes``, ``[Gaussian_yolo]``: ``8+1+classes``) and
    ``type_code`` Darknet's LAYER_TYPE number, both given by the head class.
    """

    index: int
    kind: str
    type_code: int
    entries: int
    classes: int
    n: int
    total: int
    mask: Tuple[int, ...]
    anchors: Tuple[float, ...]
    w: int
    h: int
    scale_x_y: float = 1.0
    new_coords: int = 0
    nms_kind: str = "default"
    beta_nms: float = 0.6
    coords: int = 4
    yolo_point: str = "center"
    tree: bool = False

    def __post_init__(self):
        if self.entries <= self.classes or self.n < 0:
            raise UsageError(f"{self.kind} head {self.index}: {self.entries} entries per anchor "
                             f"cannot hold {self.classes} classes")

    @property
    def rows(self) -> int:
        """Candidates this head gives per image (``w*h*n``)."""
        return self.w * self.h * self.n

    @property
    def out_shape(self) -> Tuple[int, int, int]:
        return (self.n * self.entries, self.h, self.w)

    def masked_anchors(self) -> Tuple[List[float], List[float]]:
        """Widths and heights of this head's anchors (``l.biases[2*mask[k]]``, in network pixels
        for yolo heads, grid cells for region heads). Missing values are Darknet's 0.5."""
        idx = list(self.mask)
        need = 2 * (max(idx) + 1) if idx else 0
        a = list(self.anchors) + [0.5] * max(0, need - len(self.anchors))
        return [a[2 * i] for i in idx], [a[2 * i + 1] for i in idx]

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready; ``type`` is the kind (the key ONNX metadata has always used)."""
        d = asdict(self)
        d["type"] = d.pop("kind")
        d["mask"], d["anchors"] = list(self.mask), list(self.anchors)
        d["out_shape"] = list(self.out_shape)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "HeadSpec":
        n = int(d["n"])
        return cls(index=int(d["index"]), kind=str(d.get("type", d.get("kind"))),
                   type_code=int(d["type_code"]), entries=int(d["entries"]),
                   classes=int(d["classes"]), n=n, total=int(d.get("total", n)),
                   mask=tuple(int(m) for m in d.get("mask", range(n))),
                   anchors=tuple(float(a) for a in d.get("anchors", ())),
                   w=int(d["w"]), h=int(d["h"]), scale_x_y=float(d.get("scale_x_y", 1.0)),
                   new_coords=int(d.get("new_coords", 0)),
                   nms_kind=str(d.get("nms_kind", "default") or "default"),
                   beta_nms=float(d.get("beta_nms", 0.6)), coords=int(d.get("coords", 4)),
                   yolo_point=str(d.get("yolo_point", "center")), tree=bool(d.get("tree", False)))


def nms_params(heads: Sequence[Any]) -> Tuple[str, float]:
    """``(nms_kind, beta_nms)`` Darknet uses: those of the network's *last* detection head (a
    :class:`HeadSpec` or a head layer)."""
    if not heads:
        return "default", 0.6
    last = heads[-1]
    kind = str(getattr(last, "nms_kind", "default") or "default")
    return (kind if kind in NMS_KINDS else "default"), float(getattr(last, "beta_nms", 0.6))
