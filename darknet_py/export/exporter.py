"""Export a Darknet network for deployment: ONNX (standard ops only) and TorchScript.

>>> from darknet_py.export.exporter import export_model
>>> export_model("yolov4-tiny.cfg", "yolov4-tiny.weights", "yolov4-tiny.onnx")

What is exported is the inference graph ``detector test`` runs: batch norm folded into the
convolutions (Darknet's ``fuse_conv_batchnorm``), then one of

* ``outputs="heads"`` (default): one output per detection head, named ``<type>_<layer index>``
  (``yolo_30``, ``yolo_37``), each exactly Darknet's ``l.output`` of that head in its layout
  ``(B, n*(4+1+classes), h, w)`` (x, y after ``logistic*scale_x_y - 0.5*(scale_x_y-1)``, w, h raw,
  objectness and classes logistic). The head options needed to decode them (anchors, masks,
  scale_x_y, new_coords, nms_kind, beta_nms, ...) are stored in the file's metadata.
* ``outputs="decoded"`` (``with_decode``): one output ``detections`` of shape ``(B, N, 4+1+C)``:
  ``x, y, w, h`` relative to the network input (Darknet's ``get_yolo_box``: ``bx = (i + x)/l.w``,
  ``by = (j + y)/l.h``, ``bw = exp(w)*anchor_w/net_w``, ``bh = exp(h)*anchor_h/net_h``, or
  ``w*w*4*anchor/net`` with ``new_coords=1``), the objectness, then the ``C`` class probabilities
  ``objectness * class score`` (Darknet's ``dets[].prob`` before the ``> thresh`` zeroing).
  Rows are the heads in layer order, inside a head cells row-major and the anchors of a cell
  together: Darknet's candidate order. ``exp`` is evaluated in double like Darknet's C code.
* ``outputs="decoded+nms"`` (``with_nms``, ONNX only): ``detections`` plus ``selected_indices``
  ``(K, 3)`` = ``[batch, class, row]`` from the standard ONNX ``NonMaxSuppression`` op (per-class
  IoU suppression of rows whose probability exceeds ``score_threshold``). **This is not Darknet's
  NMS**: Darknet runs ``do_nms_sort`` (per class, IoU, sorted greedy) or ``diounms_sort``
  (``nms_kind=greedynms``: DIoU with exponent 0.6; ``diounms``: DIoU with ``beta_nms``), and keeps
  suppressed boxes with zeroed probabilities. The darknet-py runtime
  (:mod:`darknet_py.infer.backends.onnxruntime`) ignores ``selected_indices`` and always applies Darknet's own
  NMS to ``detections`` (or to the head outputs), so its results equal Darknet's.

Metadata: ONNX ``metadata_props`` hold ``darknet_py`` (the whole description as JSON, see
:func:`export_metadata`) and one key per item (``cfg``, ``classes``, ``anchors``, ``masks``,
``input_width``, ``input_height``, ``scale_x_y``, ``new_coords``, ``nms_kind``, ``beta_nms``,
``letter_box``, ...; non-string values JSON-encoded). TorchScript files carry the same JSON as
the extra file ``darknet_py.json``. A sidecar ``<out>.json`` holds the same plus class names.

Both files are written through temporary files in the output folder and renamed at the end, so a
failed export leaves nothing behind.

Deliberate choices: ONNX goes through PyTorch's TorchScript-based exporter (``dynamo=False``: it
needs no extra package and produces plain opset-11..20 graphs); ``--half`` exports float16
weights, input and head outputs, while decoding (if any) runs in float32.
"""
from __future__ import annotations

import copy
import io
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..data.datacfg import read_data_cfg, read_names
from ..errors import DarknetError, UsageError
from ..files import PathLike, atomic_write_files
from ..model.decode import HeadDecoder
from ..model.network import Network

__all__ = ["ExportError", "ExportOptions", "export_model", "export_network", "export_metadata",
           "ExportedGraph", "head_metadata", "FORMATS", "MIN_OPSET", "MAX_OPSET",
           "INPUT_NAME", "DETECTIONS_NAME", "SELECTED_NAME", "METADATA_KEY", "TORCHSCRIPT_EXTRA",
           "sidecar_path", "read_names_option"]

FORMATS = ("onnx", "torchscript")
#: NonMaxSuppression needs opset 10, the exporter's nearest-upsample and Pad forms opset 11
MIN_OPSET = 11
MAX_OPSET = 20
INPUT_NAME = "input"
DETECTIONS_NAME = "detections"
SELECTED_NAME = "selected_indices"
METADATA_KEY = "darknet_py"
TORCHSCRIPT_EXTRA = "darknet_py.json"
FORMAT_VERSION = 1


class ExportError(DarknetError):
    """The network (or the requested options) cannot be exported."""
    kind = "export error"


# ----------------------------------------------------------------------------- head description
def head_metadata(net: Any) -> List[Dict[str, Any]]:
    """What a decoder needs to know about each head, in layer order (JSON-ready): each head's
    :class:`~darknet_py.structures.heads.HeadSpec` plus its output name."""
    return [dict(spec.to_dict(), output=f"{spec.kind}_{spec.index}") for spec in net.head_specs]


class ExportedGraph(nn.Module):
    """The traced module: the network's head outputs, optionally decoded.

    The network is kept as a plain attribute, not a submodule: the exporters then store only the
    tensors the fused forward really uses (the folded conv weights, as constants) instead of
    every parameter of the network as well (which doubles the file and breaks the 2 GiB protobuf
    limit for the largest cfgs).
    """

    def __init__(self, net: nn.Module, decode: bool = False):
        super().__init__()
        object.__setattr__(self, "net", net)
        # the folded weights as buffers: the exporters store them once, as named initializers
        # ("layer12_weight"), rather than as graph constants; every other tensor of the network
        # (shortcut weights, unfused layers) is registered as it is
        replaced = set()
        for layer in net.modules():
            fused = getattr(layer, "_fused", None)
            index = getattr(layer, "index", None)
            if isinstance(fused, tuple) and index is not None and \
                    f"layer{index}_weight" not in self._buffers:
                self.register_buffer(f"layer{index}_weight", fused[0])
                self.register_buffer(f"layer{index}_bias", fused[1])
                replaced.update(id(t) for t in layer.parameters(recurse=False))
                replaced.update(id(t) for t in layer.buffers(recurse=False))
        for name, param in net.named_parameters():
            if id(param) not in replaced:
                self.register_parameter("net_" + name.replace(".", "_"), param)
        for name, buf in net.named_buffers():
            if id(buf) not in replaced:
                self.register_buffer("net_" + name.replace(".", "_"), buf)
        self.decode = None
        if decode:
            try:
                self.decode = HeadDecoder(net.head_specs, net.width, net.height)
            except UsageError as e:
                raise ExportError(f"{e.message}; export without --with-decode") from None

    def forward(self, x: torch.Tensor):
        outs = self.net(x)
        if self.decode is not None:
            return self.decode(outs)
        return tuple(outs)


# ----------------------------------------------------------------------------- options & metadata
@dataclass
class ExportOptions:
    """Everything ``darknet-py export`` can set (see :func:`export_network`)."""

    format: str = "onnx"
    batch: int = 1
    dynamic_batch: bool = False
    half: bool = False
    with_decode: bool = False
    with_nms: bool = False
    opset: int = 17
    #: ONNX NonMaxSuppression settings (only with ``with_nms``)
    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_output_boxes_per_class: int = 100
    names: Optional[List[str]] = None
    weights_name: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got '{self.format}'")
        if self.batch < 1:
            raise UsageError(f"--batch must be >= 1, got {self.batch}")
        if self.dynamic_batch and self.batch != 1:
            raise UsageError("use either --batch N or --dynamic-batch, not both")
        if self.with_nms:
            self.with_decode = True
            if self.format != "onnx":
                raise UsageError("--with-nms adds the ONNX NonMaxSuppression op: only with "
                                 "--format onnx")
        if self.format == "onnx" and not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise UsageError(f"--opset must be between {MIN_OPSET} and {MAX_OPSET}, "
                             f"got {self.opset}")
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise UsageError(f"the NMS IoU threshold must be in [0, 1], got {self.iou_threshold}")
        if self.max_output_boxes_per_class < 1:
            raise UsageError("the NMS max boxes per class must be >= 1")

    @property
    def outputs_kind(self) -> str:
        if self.with_nms:
            return "decoded+nms"
        return "decoded" if self.with_decode else "heads"


def export_metadata(net: Any, options: ExportOptions) -> Dict[str, Any]:
    """The description stored with an export (ONNX metadata, TorchScript extra file, sidecar)."""
    heads = head_metadata(net)
    rows = 0
    for h in heads:
        h["rows"] = [rows, h["w"] * h["h"] * h["n"]]  # offset and count in ``detections``
        rows += h["rows"][1]
    if options.outputs_kind == "heads":
        output_names = [h["output"] for h in heads]
    else:
        output_names = [DETECTIONS_NAME] + ([SELECTED_NAME] if options.with_nms else [])
    last = heads[-1] if heads else {}
    meta: Dict[str, Any] = {
        "format": "darknet-py export",
        "format_version": FORMAT_VERSION,
        "darknet_py_version": __version__,
        "export_format": options.format,
        "cfg": os.path.basename(getattr(net, "cfg_path", "") or ""),
        "weights": options.weights_name,
        "input_name": INPUT_NAME,
        "input_width": int(net.width),
        "input_height": int(net.height),
        "input_channels": int(net.channels),
        "input_layout": "NCHW, RGB, float in [0, 1] (Darknet's resize_image/letterbox_image)",
        "batch": "dynamic" if options.dynamic_batch else int(options.batch),
        "dtype": "float16" if options.half else "float32",
        "letter_box": int(getattr(net.config, "letter_box", 0)),
        "classes": int(heads[0]["classes"]) if heads else 0,
        "outputs": options.outputs_kind,
        "output_names": output_names,
        "bn_fused": True,
        "anchors": last.get("anchors", []),
        "masks": [h["mask"] for h in heads],
        "scale_x_y": [h["scale_x_y"] for h in heads],
        "new_coords": [h["new_coords"] for h in heads],
        # Darknet's detector applies the *last* head's NMS settings
        "nms_kind": last.get("nms_kind", "default"),
        "beta_nms": last.get("beta_nms", 0.6),
        "heads": heads,
    }
    if options.format == "onnx":
        meta["opset"] = int(options.opset)
    if options.with_nms:
        darknet_nms = "do_nms_sort" if meta["nms_kind"] == "default" else "diounms_sort"
        meta["onnx_nms"] = {
            "op": "NonMaxSuppression", "center_point_box": 1,
            "iou_threshold": float(options.iou_threshold),
            "score_threshold": float(options.score_threshold),
            "max_output_boxes_per_class": int(options.max_output_boxes_per_class),
            "note": f"standard ONNX NMS (per-class IoU); Darknet's own NMS is {darknet_nms} "
                    f"(nms_kind={meta['nms_kind']}) and differs",
        }
    if options.names is not None:
        meta["names"] = list(options.names)
    meta.update(options.extra)
    return meta


# ----------------------------------------------------------------------------- writing
def sidecar_path(out: PathLike) -> str:
    return os.fspath(out) + ".json"


def _check_output_path(out: str) -> None:
    if not out:
        raise UsageError("the output path is empty")
    if os.path.isdir(out):
        raise ExportError("the output path is a directory", file=out)
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise ExportError("cannot write the export: the output folder does not exist", file=out)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ExportError("cannot write the export: the output folder is not writable", file=out)
    if os.path.exists(out) and not os.access(out, os.W_OK):
        raise ExportError("cannot write the export: the output file is not writable", file=out)


def _write_files(files: Sequence[Tuple[str, bytes]]) -> None:
    """All files or none (see :func:`darknet_py.files.atomic_write_files`)."""
    try:
        atomic_write_files(files)
    except OSError as e:
        raise ExportError(f"cannot write the export: {e.strerror or e}",
                          file=files[0][0] if files else None) from None


# ----------------------------------------------------------------------------- ONNX
def _trace_input(net: Any, options: ExportOptions) -> torch.Tensor:
    c, h, w = net.input_shape
    batch = 2 if options.dynamic_batch else options.batch
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, c, h, w, generator=gen)
    return x.half() if options.half else x


def _add_onnx_nms(model: Any, options: ExportOptions, classes: int) -> None:
    """Append a standard ``NonMaxSuppression`` on the ``detections`` output."""
    from onnx import TensorProto, helper, numpy_helper
    g = model.graph

    def const(name: str, value: np.ndarray) -> str:
        g.initializer.append(numpy_helper.from_array(value, name))
        return name

    starts_box = const("nms_box_starts", np.array([0], np.int64))
    ends_box = const("nms_box_ends", np.array([4], np.int64))
    starts_cls = const("nms_cls_starts", np.array([5], np.int64))
    ends_cls = const("nms_cls_ends", np.array([5 + classes], np.int64))
    axes = const("nms_axes", np.array([2], np.int64))
    max_out = const("nms_max_output_boxes_per_class",
                    np.array([options.max_output_boxes_per_class], np.int64))
    iou = const("nms_iou_threshold", np.array([options.iou_threshold], np.float32))
    score = const("nms_score_threshold", np.array([options.score_threshold], np.float32))
    g.node.extend([
        helper.make_node("Slice", [DETECTIONS_NAME, starts_box, ends_box, axes], ["nms_boxes"],
                         name="nms_slice_boxes"),
        helper.make_node("Slice", [DETECTIONS_NAME, starts_cls, ends_cls, axes], ["nms_probs"],
                         name="nms_slice_probs"),
        helper.make_node("Transpose", ["nms_probs"], ["nms_scores"], perm=[0, 2, 1],
                         name="nms_transpose_scores"),
        helper.make_node("NonMaxSuppression", ["nms_boxes", "nms_scores", max_out, iou, score],
                         [SELECTED_NAME], center_point_box=1, name="nms"),
    ])
    g.output.append(helper.make_tensor_value_info(SELECTED_NAME, TensorProto.INT64,
                                                  ["num_selected", 3]))


def _onnx_bytes(graph: ExportedGraph, x: torch.Tensor, options: ExportOptions,
                meta: Dict[str, Any]) -> bytes:
    import onnx
    output_names = meta["output_names"][:1] if options.with_nms else meta["output_names"]
    dynamic_axes = None
    if options.dynamic_batch:
        dynamic_axes = {INPUT_NAME: {0: "batch"}}
        for name in output_names:
            dynamic_axes[name] = {0: "batch"}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings and the exporter's deprecation notice
        torch.onnx.export(graph, (x,), buf, dynamo=False, opset_version=options.opset,
                          input_names=[INPUT_NAME], output_names=output_names,
                          dynamic_axes=dynamic_axes, do_constant_folding=True)
    data = buf.getvalue()
    del buf  # large models: keep as few copies of the weights alive as possible
    model = onnx.load_from_string(data)
    del data
    if options.with_nms:
        _add_onnx_nms(model, options, meta["classes"])
    _check_standard_ops(model)
    model.producer_name = "darknet-py"
    model.doc_string = (f"Darknet network {meta['cfg']} exported by darknet-py; outputs: "
                        f"{meta['outputs']}. See metadata_props['{METADATA_KEY}'].")
    for key, value in metadata_props(meta).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model.SerializeToString()


def metadata_props(meta: Dict[str, Any]) -> Dict[str, str]:
    """ONNX metadata_props: the whole JSON under ``darknet_py`` plus one key per item."""
    props = {METADATA_KEY: json.dumps(meta, separators=(",", ":"))}
    for key, value in meta.items():
        if key == "heads":
            continue
        props[key] = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return props


def _check_standard_ops(model: Any) -> None:
    bad = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node
                  if n.domain not in ("", "ai.onnx")})
    if bad:
        raise ExportError(f"the exported graph uses non-standard ONNX ops: {', '.join(bad)}")


# ----------------------------------------------------------------------------- TorchScript
def _torchscript_bytes(graph: ExportedGraph, x: torch.Tensor, meta: Dict[str, Any]) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(graph, (x,), check_trace=False, strict=False)
    buf = io.BytesIO()
    torch.jit.save(traced, buf, _extra_files={TORCHSCRIPT_EXTRA: json.dumps(meta, indent=1)})
    return buf.getvalue()


# ----------------------------------------------------------------------------- entry points
def _half_copy(net: Any) -> Any:
    """A float16 copy of a fused network whose folded weights were computed in float32.

    (``Network.half()`` re-folds batch norm from the float16 parameters, where
    ``rolling_variance + 1e-5`` and small variances lose most of their precision.)
    """
    half = copy.deepcopy(net).half()
    for src, dst in zip(net.layers, half.layers):
        fused = getattr(src, "_fused", None)
        if fused is not None:
            dst._fused = tuple(t.detach().to(torch.float16) for t in fused)
    return half.eval()


def export_network(net: Any, out: PathLike, options: Optional[ExportOptions] = None,
                   sidecar: bool = True) -> Dict[str, Any]:
    """Export a built :class:`~darknet_py.model.network.Network` (weights loaded) to ``out``.

    The network is put in eval mode and fused (Darknet's ``fuse_conv_batchnorm``); ``half``
    converts it to float16. Returns the metadata written.
    """
    options = options or ExportOptions()
    options.validate()
    out = os.fspath(out)
    _check_output_path(out)
    if sidecar:
        _check_output_path(sidecar_path(out))
    if not getattr(net, "heads", None):
        raise ExportError("the network has no detection head ([yolo], [region], "
                          "[Gaussian_yolo]); darknet-py exports detection networks only",
                          file=getattr(net, "cfg_path", None))
    for layer in net.layers:
        if hasattr(layer, "reset_state"):
            raise ExportError(f"[{layer.section.type}] layer {layer.index} keeps a hidden state "
                              f"between calls (Darknet carries it from frame to frame); an "
                              f"exported graph cannot carry it, so it cannot reproduce Darknet",
                              file=getattr(net, "cfg_path", None), line=layer.section.line)
    was_training = net.training
    net.eval()
    net.fuse()
    try:
        model = _half_copy(net) if options.half else net
        meta = export_metadata(model, options)
        graph = ExportedGraph(model, decode=options.with_decode).eval()
        x = _trace_input(model, options)
        try:
            with torch.no_grad():
                # the heads' real output shapes ([region] gives 5-D records)
                for h, o in zip(meta["heads"], model(x)):
                    h["output_shape"] = [int(v) for v in o.shape[1:]]
                if options.format == "onnx":
                    data = _onnx_bytes(graph, x, options, meta)
                else:
                    data = _torchscript_bytes(graph, x, meta)
        except DarknetError:
            raise
        except Exception as e:  # an op the exporter cannot handle, a size limit, ...
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportError(f"{options.format} export failed: {type(e).__name__}: {first}",
                              file=getattr(net, "cfg_path", None)) from e
    finally:
        if was_training:
            net.train()
    files = [(out, data)]
    if sidecar:
        files.append((sidecar_path(out), json.dumps(meta, indent=1).encode("utf-8")))
    _write_files(files)
    return meta


def read_names_option(names: Optional[PathLike] = None,
                      data: Optional[PathLike] = None) -> Optional[List[str]]:
    """Class names from a ``.names`` file, or from the ``names=`` of an ``obj.data`` file."""
    if names is not None:
        return read_names(names)
    if data is not None:
        cfg = read_data_cfg(data)
        path = cfg.names or cfg.labels
        if path is None:
            raise UsageError("the data file has no names= line", file=os.fspath(data))
        return read_names(path)
    return None


def export_model(cfg: PathLike, weights: Optional[PathLike], out: PathLike,
                 options: Optional[ExportOptions] = None, width: Optional[int] = None,
                 height: Optional[int] = None, sidecar: bool = True) -> Dict[str, Any]:
    """Build ``cfg`` (optionally at ``width`` x ``height``), load ``weights`` and export it.

    ``weights=None`` exports Darknet's random initialisation (for testing a cfg).
    """
    options = options or ExportOptions()
    options.validate()
    out = os.fspath(out)
    _check_output_path(out)  # before the slow part
    cfg_path = os.fspath(cfg)
    if not os.path.isfile(cfg_path):
        raise ExportError("cfg file not found", file=cfg_path)
    net = Network.from_files(cfg_path, weights, batch=options.batch, width=width, height=height)
    if weights is not None:
        if options.weights_name is None:
            options.weights_name = os.path.basename(os.fspath(weights))
    return export_network(net, out, options, sidecar=sidecar)
