"""``darknet-py export cfg weights [-o model.onnx] [--format onnx|torchscript] ...``.

Exports the inference network (batch norm folded, as ``detector test`` runs it) to ONNX (standard
ops only) or TorchScript; see :mod:`darknet_py.export.exporter` for the outputs and the metadata.
"""
from __future__ import annotations

import os
from typing import Optional

import click
import torch

from ..errors import UsageError, WeightsError
from ..export.exporter import (ExportedGraph, ExportOptions, export_model, read_names_option,
                               sidecar_path)
from ..files import refuse_output_onto_inputs
from ..infer.backends.onnxruntime import OnnxRuntimeBackend
from ..model.network import Network
from ._common import eprint

GROUP = None

_EXTENSIONS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}


def _default_format(out: Optional[str]) -> str:
    if out and (out.endswith(".pt") or out.endswith(".pth") or out.endswith(".torchscript")):
        return "torchscript"
    return "onnx"


@click.command("export", context_settings={"help_option_names": ["-h", "--help"],
                                           "max_content_width": 100})
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.argument("weights", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), default=None,
              help="Output file (default: <cfg name>.onnx, or .torchscript.pt). A JSON sidecar "
                   "<output>.json is written next to it.")
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript"]), default=None,
              help="Export format (default: from the output extension, .pt -> torchscript, "
                   "else onnx).")
@click.option("--width", type=int, default=None, help="Network input width (default: the cfg's).")
@click.option("--height", type=int, default=None,
              help="Network input height (default: the cfg's).")
@click.option("--batch", type=int, default=1, show_default=True, help="Fixed batch size.")
@click.option("--dynamic-batch", is_flag=True, help="Make the batch dimension dynamic.")
@click.option("--half", is_flag=True,
              help="float16 weights, input and head outputs (decoding, if any, stays float32).")
@click.option("--with-decode", is_flag=True,
              help="Output one (B, N, 4+1+C) 'detections' tensor: x, y, w, h relative to the "
                   "network input (Darknet's get_yolo_box), objectness, objectness*class.")
@click.option("--with-nms", is_flag=True,
              help="ONNX only; implies --with-decode. Append the standard ONNX NonMaxSuppression "
                   "op, output 'selected_indices' [batch, class, row]. NOTE: ONNX's NMS (per-class "
                   "IoU) is NOT Darknet's: Darknet uses do_nms_sort, or diounms_sort with the "
                   "cfg's nms_kind=greedynms|diounms (DIoU) and beta_nms, and its results "
                   "differ. darknet-py's Python runtime for ONNX files (Detector('model.onnx'), "
                   "darknet_py.infer.backends.onnxruntime) ignores those indices and always applies "
                   "Darknet's own NMS (the cfg's kind, 0.45) to the outputs, with or without this "
                   "flag, so its detections equal Darknet's.")
@click.option("--thresh", type=float, default=0.25, show_default=True,
              help="--with-nms: score threshold of the ONNX NMS.")
@click.option("--nms-thresh", type=float, default=0.45, show_default=True,
              help="--with-nms: IoU threshold of the ONNX NMS.")
@click.option("--max-boxes", type=int, default=100, show_default=True,
              help="--with-nms: max_output_boxes_per_class of the ONNX NMS.")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (11..20).")
@click.option("--names", type=click.Path(dir_okay=False), default=None,
              help="Class names file to store in the metadata and sidecar.")
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="obj.data whose names= file gives the class names.")
@click.option("--verify", is_flag=True,
              help="Run the export (onnxruntime or torch.jit.load) on a random input and print "
                   "the largest difference to the PyTorch network.")
def COMMAND(cfg, weights, output, fmt, width, height, batch, dynamic_batch, half, with_decode,
            with_nms, thresh, nms_thresh, max_boxes, opset, names, data, verify):
    """Export a Darknet network (BN fused) to ONNX or TorchScript.

    By default the outputs are the detection heads' l.output tensors in Darknet's layout, one
    per [yolo] layer; the file's metadata (and the sidecar JSON) hold the anchors, masks,
    scale_x_y, new_coords, nms_kind, beta_nms, letter_box and input size needed to decode them.
    """
    fmt = fmt or _default_format(output)
    if output is None:
        stem = os.path.splitext(os.path.basename(cfg))[0]
        output = stem + _EXTENSIONS[fmt]
    if with_nms and fmt != "onnx":
        raise UsageError("--with-nms adds the ONNX NonMaxSuppression op: only with --format onnx")
    if dynamic_batch and batch != 1:
        raise UsageError("use either --batch N or --dynamic-batch, not both")
    for key, value in (("--width", width), ("--height", height)):
        if value is not None and value < 1:
            raise UsageError(f"{key} must be positive, got {value}")
    if not os.path.isfile(weights):
        raise WeightsError("weights file not found", file=weights)
    inputs = [("cfg file", cfg), ("weights file", weights), ("names file", names),
              ("data file", data)]
    refuse_output_onto_inputs(output, "-o", inputs)
    refuse_output_onto_inputs(sidecar_path(output), "the metadata sidecar of -o", inputs)
    class_names = read_names_option(names, data)
    options = ExportOptions(format=fmt, batch=batch, dynamic_batch=dynamic_batch, half=half,
                            with_decode=with_decode or with_nms, with_nms=with_nms, opset=opset,
                            score_threshold=thresh, iou_threshold=nms_thresh,
                            max_output_boxes_per_class=max_boxes, names=class_names)
    meta = export_model(cfg, weights, output, options, width=width, height=height)
    if class_names is not None and len(class_names) != meta["classes"]:
        eprint(f"Warning: {len(class_names)} class names for {meta['classes']} classes")
    eprint(f"Exported {meta['cfg']} ({meta['input_width']}x{meta['input_height']}, "
           f"batch {meta['batch']}, {meta['dtype']}, outputs: {', '.join(meta['output_names'])}) "
           f"to {output} ({fmt}); metadata in {sidecar_path(output)}")
    if verify:
        diff = verify_export(cfg, weights, output, fmt, width, height, meta)
        eprint(f"Verified: largest |difference| to the PyTorch network = {diff:.3g} "
               f"(relative to the output scale)")


def verify_export(cfg, weights, output, fmt, width, height, meta) -> float:
    """Run the exported file and the PyTorch network on one random input; the max difference."""

    net = Network.from_files(cfg, weights, width=width, height=height).eval().fuse()
    batch = 2 if meta["batch"] == "dynamic" else int(meta["batch"])
    x = torch.rand(batch, *net.input_shape, generator=torch.Generator().manual_seed(0))
    half = meta["dtype"] == "float16"
    graph = ExportedGraph(net, decode=meta["outputs"] != "heads").eval()
    with torch.no_grad():
        ref = graph(x)
    refs = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    if fmt == "onnx":
        got = OnnxRuntimeBackend(output)(x)
        outs = [got] if isinstance(got, torch.Tensor) else list(got)
    else:
        module = torch.jit.load(output, map_location="cpu")
        with torch.no_grad():
            got = module(x.half() if half else x)
        outs = [got] if isinstance(got, torch.Tensor) else list(got)
    worst = 0.0
    for a, b in zip(outs, refs):
        scale = max(1.0, float(b.abs().max()))
        worst = max(worst, float((a.float() - b.float()).abs().max()) / scale)
    return worst
