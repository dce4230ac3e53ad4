"""Run a darknet-py ONNX export with onnxruntime (CPU) and get Darknet's detections from it.

>>> model = OnnxModel("yolov4-tiny.onnx")
>>> outputs = model(x)              # (B, 3, H, W) -> one tensor per head, like Network.forward
>>> det = detector_from_onnx("yolov4-tiny.onnx", names="coco.names")
>>> dets = det.detect("dog.jpg")    # ImageDetections, equal to ``darknet detector test``

:class:`OnnxModel` reads the metadata :mod:`darknet_py.export.exporter` stores in the file and exposes
duck-typed head objects (:class:`OnnxHead`: ``classes``, ``mask``, ``anchors``, ``n``, ``total``,
``scale_x_y``, ``new_coords``, ``nms_kind``, ``beta_nms``, ``w``, ``h``) so that
:func:`darknet_py.infer.decode.get_network_boxes` and :mod:`darknet_py.infer.nms` work on its outputs
exactly as on :class:`~darknet_py.model.network.Network`'s.

:class:`OnnxDetector` is ``detector test`` on an ONNX file: Darknet's ``resize_image`` (or
``letterbox_image`` when the cfg or the caller asks for it), the model, ``get_network_boxes``
(``thresh``, candidates with objectness ``> thresh``), then **Darknet's own NMS**: ``do_nms_sort``
or ``diounms_sort`` with the last head's ``nms_kind``/``beta_nms``, threshold 0.45. For files
exported ``--with-decode`` the decoded rows are thresholded and corrected the same way; for files
exported ``--with-nms`` the ONNX ``selected_indices`` are ignored (ONNX's NMS is not Darknet's).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ...structures.detections import DetectionSet, ImageDetections
from ...errors import DataError, UsageError
from ...export.exporter import DETECTIONS_NAME, METADATA_KEY, SELECTED_NAME

PathLike = Union[str, os.PathLike]

__all__ = ["OnnxModel", "OnnxHead", "OnnxDetector", "detector_from_onnx", "read_onnx_metadata"]


class OnnxHead:
    """A detection head described by an export's metadata (duck-types the layer objects that
    :mod:`darknet_py.infer.decode` and :mod:`darknet_py.infer.nms` read)."""

    def __init__(self, spec: Dict[str, Any]):
        self.spec = dict(spec)
        self.kind: str = spec["type"]
        self.type = self.kind
        self.section_types = ({"gaussian_yolo": "Gaussian_yolo"}.get(self.kind, self.kind),)
        self.index: int = int(spec["index"])
        self.classes: int = int(spec["classes"])
        self.n: int = int(spec["n"])
        self.total: int = int(spec.get("total", self.n))
        self.mask: List[int] = [int(m) for m in spec.get("mask", range(self.n))]
        self.anchors: List[float] = [float(a) for a in spec.get("anchors", [])]
        self.scale_x_y: float = float(spec.get("scale_x_y", 1.0))
        self.new_coords: int = int(spec.get("new_coords", 0))
        self.nms_kind: str = str(spec.get("nms_kind", "default"))
        self.beta_nms: float = float(spec.get("beta_nms", 0.6))
        self.w: int = int(spec["w"])
        self.h: int = int(spec["h"])
        self.coords: int = int(spec.get("coords", 4))
        self.yolo_point: str = str(spec.get("yolo_point", "center"))
        self.output_name: str = spec.get("output", f"{self.kind}_{self.index}")
        self.rows: Tuple[int, int] = tuple(spec.get("rows", (0, self.w * self.h * self.n)))
        self.out_shape = tuple(spec.get("out_shape", (self.n * spec.get("entries", 0),
                                                      self.h, self.w)))

    def __repr__(self) -> str:
        return (f"OnnxHead({self.kind} layer {self.index}: {self.w}x{self.h}, n={self.n}, "
                f"classes={self.classes})")


def read_onnx_metadata(path: PathLike) -> Dict[str, Any]:
    """The ``darknet_py`` metadata of an exported ONNX file (without building a session)."""
    import onnx
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise DataError("ONNX file not found", file=p)
    try:
        model = onnx.load(p, load_external_data=False)
    except Exception as e:
        raise DataError(f"not a readable ONNX file ({type(e).__name__})", file=p) from None
    return _metadata_from_props({m.key: m.value for m in model.metadata_props}, p)


def _metadata_from_props(props: Dict[str, str], path: str) -> Dict[str, Any]:
    raw = props.get(METADATA_KEY)
    if raw is None:
        raise DataError(f"the ONNX file has no '{METADATA_KEY}' metadata: it was not exported by "
                        f"darknet-py (darknet-py export cfg weights -o model.onnx)", file=path)
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise DataError(f"bad '{METADATA_KEY}' metadata: {e}", file=path) from None
    if not isinstance(meta, dict) or "heads" not in meta:
        raise DataError(f"bad '{METADATA_KEY}' metadata: no head description", file=path)
    return meta


class OnnxModel:
    """An exported network run by onnxruntime on the CPU.

    ``model(x)`` takes a ``(B, C, H, W)`` float tensor or array (RGB in [0, 1]) and returns what
    the file outputs as torch tensors: for a ``heads`` export a list with one ``l.output`` tensor
    per head (like :meth:`Network.forward`); for a decoded export the ``(B, N, 4+1+C)``
    ``detections`` tensor. A file exported with a fixed batch size runs any batch by splitting
    (and zero-padding) it into chunks of that size.
    """

    def __init__(self, path: PathLike, threads: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None):
        import onnxruntime as ort
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise DataError("ONNX file not found", file=self.path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(self.path, sess_options=opts,
                                                providers=list(providers or
                                                               ["CPUExecutionProvider"]))
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(f"onnxruntime cannot load the file: {first}", file=self.path) from None
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        self.metadata: Dict[str, Any] = _metadata_from_props(props, self.path)
        m = self.metadata
        self.heads: List[OnnxHead] = [OnnxHead(h) for h in m["heads"]]
        self.width: int = int(m["input_width"])
        self.height: int = int(m["input_height"])
        self.channels: int = int(m.get("input_channels", 3))
        self.letter_box: int = int(m.get("letter_box", 0))
        self.outputs_kind: str = m.get("outputs", "heads")
        self.names: Optional[List[str]] = m.get("names")
        self.cfg_name: str = m.get("cfg", "")
        self.fixed_batch: Optional[int] = None if m.get("batch") == "dynamic" else int(m["batch"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.float16 if "float16" in inp.type else np.float32
        self.output_names = [o.name for o in self.session.get_outputs()]

    # ------------------------------------------------------------------ properties
    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def classes(self) -> int:
        return self.heads[-1].classes if self.heads else 0

    @property
    def decoded(self) -> bool:
        return self.outputs_kind != "heads"

    # ------------------------------------------------------------------ Network look-alike
    @property
    def config(self) -> Any:
        """The ``[net]`` values a detector reads (``letter_box``, input size)."""
        from types import SimpleNamespace
        return SimpleNamespace(letter_box=self.letter_box, width=self.width, height=self.height,
                               channels=self.channels)

    def fuse(self) -> "OnnxModel":
        """No-op: exports are already BN-fused (for code written for :class:`Network`)."""
        return self

    def eval(self) -> "OnnxModel":
        return self

    def to(self, device: Any = None, dtype: Any = None) -> "OnnxModel":
        """Only the CPU: onnxruntime runs the file as exported (its dtype is fixed there, inputs
        are cast to it)."""
        if device is not None and torch.device(device).type != "cpu":
            raise UsageError("an ONNX export runs on the CPU with onnxruntime; use device='cpu' "
                             "(or the cfg + weights for another device)")
        return self

    def detection_sets(self, detections: torch.Tensor, image_sizes: Sequence[Tuple[int, int]],
                       thresh: float = 0.25, letter_box: bool = False) -> List[DetectionSet]:
        """``get_network_boxes`` on a decoded export's ``detections`` output (before NMS)."""
        return _decoded_to_sets(self, detections, image_sizes, thresh, letter_box)

    # ------------------------------------------------------------------ running
    def run(self, x: Union[torch.Tensor, np.ndarray]) -> List[np.ndarray]:
        """All of the file's outputs as numpy arrays (``selected_indices`` included)."""
        arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or tuple(arr.shape[1:]) != self.input_shape:
            c, h, w = self.input_shape
            raise UsageError(f"ONNX model input must be (B, {c}, {h}, {w}), got "
                             f"{tuple(arr.shape)}")
        arr = np.ascontiguousarray(arr, dtype=self.input_dtype)
        fb = self.fixed_batch
        if fb is None or arr.shape[0] == fb:
            return self.session.run(None, {self.input_name: arr})
        return self._run_chunks(arr, fb)

    def _run_chunks(self, arr: np.ndarray, fb: int) -> List[np.ndarray]:
        b = arr.shape[0]
        pad = (-b) % fb
        if pad:
            arr = np.concatenate([arr, np.zeros((pad,) + arr.shape[1:], arr.dtype)])
        chunks = [self.session.run(None, {self.input_name: arr[i:i + fb]})
                  for i in range(0, arr.shape[0], fb)]
        outs = []
        for k, name in enumerate(self.output_names):
            if name == SELECTED_NAME:  # re-base the batch index of each chunk
                parts = []
                for ci, ch in enumerate(chunks):
                    sel = ch[k].copy()
                    sel[:, 0] += ci * fb
                    parts.append(sel[sel[:, 0] < b])
                outs.append(np.concatenate(parts))
            else:
                outs.append(np.concatenate([ch[k] for ch in chunks])[:b])
        return outs

    def __call__(self, x: Union[torch.Tensor, np.ndarray]) -> Union[List[torch.Tensor],
                                                                      torch.Tensor]:
        outs = self.run(x)
        if self.decoded:
            return torch.from_numpy(outs[self.output_names.index(DETECTIONS_NAME)])
        by_name = dict(zip(self.output_names, outs))
        return [torch.from_numpy(by_name[h.output_name]) for h in self.heads]

    def __repr__(self) -> str:
        return (f"OnnxModel({self.path!r}, cfg={self.cfg_name!r}, input={self.width}x"
                f"{self.height}, outputs={self.outputs_kind}, heads={len(self.heads)})")


# ----------------------------------------------------------------------------- detection
def _decoded_to_sets(model: OnnxModel, rows: torch.Tensor, image_sizes: Sequence[Tuple[int, int]],
                     thresh: float, letter_box: bool) -> List[DetectionSet]:
    """``get_network_boxes`` on a ``detections`` output: per head, keep rows with objectness
    ``> thresh`` (every row for ``[region]``, whose objectness Darknet sets to 1), zero
    probabilities ``<= thresh``, then ``correct_yolo_boxes``."""
    from ..decode import correct_boxes
    rows = rows.to(torch.float32)
    thr = torch.tensor(thresh, dtype=torch.float32)
    results = []
    for b, (im_w, im_h) in enumerate(image_sizes):
        boxes, objs, probs = [], [], []
        for head in model.heads:
            start, count = head.rows
            r = rows[b, start:start + count]
            if head.kind == "region":
                obj = torch.ones(r.shape[0], dtype=torch.float32)
            else:
                keep = r[:, 4] > thr
                r = r[keep]
                obj = r[:, 4]
            p = r[:, 5:]
            p = torch.where(p > thr, p, torch.zeros_like(p))
            bx = correct_boxes(r[:, :4], im_w, im_h, model.width, model.height, letter_box,
                               gaussian=(head.kind == "gaussian_yolo"))
            boxes.append(bx)
            objs.append(obj)
            probs.append(p)
        results.append(DetectionSet(torch.cat(boxes).contiguous(), torch.cat(objs).contiguous(),
                                    torch.cat(probs).contiguous(), None, (im_w, im_h)))
    return results


class OnnxDetector:
    """``darknet detector test`` with an ONNX export (see the module docstring)."""

    def __init__(self, model: OnnxModel, names: Optional[Sequence[str]] = None):
        self.model = model
        if names is None:
            names = model.names
        self.names: List[str] = list(names) if names is not None else \
            [str(i) for i in range(model.classes)]
        self.heads = model.heads

    @property
    def width(self) -> int:
        return self.model.width

    @property
    def height(self) -> int:
        return self.model.height

    def detection_sets(self, images: Sequence[Any], thresh: float = 0.25, nms: float = 0.45,
                       letter_box: Optional[bool] = None) -> List[DetectionSet]:
        """Darknet's ``dets`` (after NMS) for each image (paths or ``(3, H, W)`` float tensors)."""
        from ..image import prepare_batch
        from ..nms import apply_nms, nms_params
        from ..decode import get_network_boxes
        lb = bool(self.model.letter_box) if letter_box is None else bool(letter_box or
                                                                           self.model.letter_box)
        x, sizes, _ = prepare_batch(list(images), self.width, self.height, lb,
                                    self.model.channels)
        if len(sizes) == 0:
            return []
        out = self.model(x)
        if self.model.decoded:
            sets = _decoded_to_sets(self.model, out, sizes, thresh, lb)
        else:
            # [region] heads give (B, h, w, n, entries) records: postprocess reads them flat
            pairs = [(h, (o.reshape(o.shape[0], -1) if o.dim() == 5 else o).to(torch.float32))
                     for h, o in zip(self.model.heads, out)]
            sets = get_network_boxes(pairs, self.width, self.height, sizes, thresh, 0.5, lb)
        kind, beta = nms_params(self.model.heads)
        return [apply_nms(s, nms, kind, beta) for s in sets]

    def detect(self, image: Any, thresh: float = 0.25, nms: float = 0.45,
               letter_box: Optional[bool] = None) -> ImageDetections:
        """One image: the labelled boxes ``detector test`` prints (``-ext_output`` order)."""
        from ..draw import to_detections
        dets = self.detection_sets([image], thresh, nms, letter_box)[0]
        path = os.fspath(image) if isinstance(image, (str, os.PathLike)) else "<image>"
        return to_detections(path, dets, self.names, thresh)

    def json_objects(self, image: Any, thresh: float = 0.25, nms: float = 0.45,
                     letter_box: Optional[bool] = None) -> List[Dict[str, Any]]:
        """The ``objects`` list Darknet's ``-out`` JSON writes for one image."""
        from ..draw import detection_to_json
        dets = self.detection_sets([image], thresh, nms, letter_box)[0]
        return json.loads(detection_to_json(dets, self.names, 1))["objects"]


def detector_from_onnx(path: PathLike, names: Union[None, PathLike, Sequence[str]] = None,
                       threads: Optional[int] = None) -> OnnxDetector:
    """An :class:`OnnxDetector` for an exported file; ``names`` is a ``.names`` path, a list, or
    ``None`` (the names stored at export time, else the class numbers)."""
    from ...data.datacfg import read_names
    if isinstance(names, (str, os.PathLike)):
        names = read_names(names)
    return OnnxDetector(OnnxModel(path, threads=threads), names)
