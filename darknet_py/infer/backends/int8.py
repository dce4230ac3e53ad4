"""``-precision int8``: a model quantized to int8 (static, per-channel weights, calibrated
activations) on the user's own images, run by OpenVINO on the CPU.

The toolkit is OpenVINO with NNCF (``nncf.quantize``, preset ``MIXED``: symmetric weights,
asymmetric activations, which suits the leaky ReLU outputs of Darknet models). It was picked by
measurement against ONNX Runtime's ``quantize_static`` (QDQ, the settings its documentation gives
for each CPU kind) on an AVX2 CPU without VNNI, network only at 1 thread, calibrated on the 100
first coco128 train2017 images, mAP@0.5 on coco128 val2017 (fp32: 44.24 % yolov4-tiny): NNCF
MIXED 1.86x faster than fp32 ONNX Runtime at 44.05 %; ONNX Runtime u8s8 per-channel 1.71x at
34.19 % (the 8-bit products saturate without VNNI), with ``reduce_range`` 1.66x at 41.59 %, u8u8
1.08x. Only NNCF stays within a point of fp32 there.

What is done, in order (:func:`int8_backend`):

1. the calibration images: a Darknet list file or, from Python, a list of paths
   (:func:`read_calibration_images`); the commands default to the ``train=`` list of the .data
   file. A seeded, order-independent sample (:func:`sample_calibration`) holds out 20 % of the
   distinct images (at most :data:`MAX_HELD_OUT_IMAGES`) for the report and calibrates on at most
   :data:`MAX_CALIBRATION_IMAGES` of the others;
2. the cache: ``<weights>.<key>.int8.xml`` (+ ``.bin``) in the export cache folder
   (:func:`~darknet_py.files.cache_folder`), keyed by the model (cfg text and
   weights bytes, or the ONNX file's bytes), the input size, the calibration set (the list's
   distinct paths and the bytes of the sampled images), the OpenVINO and NNCF versions and this
   recipe. A cached model is used as it is: no calibration, no report beyond one line;
3. otherwise the fp32 ONNX export (the same cached file ``-backend onnxruntime`` runs), max-pool
   padding made int8-friendly (:func:`edge_pad_max_pools`), ``nncf.quantize`` on the calibration
   images prepared exactly as the pipeline prepares them, then Darknet's mAP@0.5 (``detector map``
   on the held-out images: objectness 0.005, NMS 0.45, ``-points 0``) of the fp32 export and of the
   int8 model, printed and stored in the cached model with the lists of both image sets
   (``.calibration.txt``, ``.heldout.txt`` beside it).

int8 is never a default: ``-backend auto`` stays fp32 (Darknet's detections) unless
``-precision int8`` is asked for.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ...console import eprint
from ...data.datacfg import read_list
from ...errors import DataError, UsageError
from ...export.exporter import METADATA_KEY
from ...files import PathLike, atomic_write_bytes, cache_folder
from ...imaging.image import prepare_input
from ...metrics import darknet_map
from ..evaluate import collect_map_inputs
from .onnxruntime import _cache_key, cached_export, read_onnx_metadata, require_module
from .openvino import REPORT_RT_KEY, OpenVinoBackend

__all__ = ["CalibrationSet", "read_calibration_images", "sample_calibration", "int8_backend",
           "check_request", "edge_pad_max_pools", "toolkit_versions", "report_summary",
           "MAX_CALIBRATION_IMAGES", "MAX_HELD_OUT_IMAGES"]

Calibration = Union[PathLike, Sequence[PathLike]]

#: images calibrated on, at most (NNCF's own default subset size)
MAX_CALIBRATION_IMAGES = 300
#: images held out for the fp32 / int8 mAP report: this fraction of the list, at most the cap
HELD_OUT_FRACTION = 0.2
MAX_HELD_OUT_IMAGES = 100
#: the sample's seed: part of every image's sort key (see :func:`sample_calibration`)
SAMPLE_SEED = 0
#: what makes a cached int8 model; a change here recalibrates
RECIPE = "nncf-mixed/edge-pad-maxpool/v1"


# ----------------------------------------------------------------------------- calibration set
@dataclass
class CalibrationSet:
    """The sampled images: ``images`` are calibrated on, ``held_out`` only measured."""

    #: where the images came from: the list file, or ``"N paths"``
    source: str
    images: List[str]
    held_out: List[str]
    #: distinct images the source names
    listed: int


def read_calibration_images(calibration: Calibration) -> Tuple[str, List[str]]:
    """(description, paths) of a calibration argument: a Darknet list file (one image path a
    line, relative paths relative to the working directory as in Darknet) or a list of paths."""
    if isinstance(calibration, (str, os.PathLike)):
        path = os.fspath(calibration)
        if not os.path.isfile(path):
            raise DataError("calibration list not found", file=path)
        paths = read_list(path)
        if not paths:
            raise DataError("the calibration list is empty", file=path)
        return path, paths
    try:
        paths = [os.fspath(p) for p in calibration]
    except TypeError:
        raise UsageError("calibration= takes a list file or a list of image paths, got "
                         f"{type(calibration).__name__}") from None
    if not paths:
        raise UsageError("calibration= is an empty list of images")
    return f"{len(paths)} paths", paths


def _sort_key(path: str, seed: int) -> Tuple[str, str]:
    # the file name, not the path: the same files give the same sample wherever their folder
    # is and however the list spells it (../data/x.jpg, /home/me/data/x.jpg)
    name = os.path.basename(path)
    return hashlib.sha256(f"{seed}\0{name}".encode("utf-8", "surrogateescape")).hexdigest(), path


def sample_calibration(source: str, paths: Sequence[str], *,
                       max_images: int = MAX_CALIBRATION_IMAGES,
                       max_held_out: int = MAX_HELD_OUT_IMAGES,
                       seed: int = SAMPLE_SEED) -> CalibrationSet:
    """The held-out and calibration images of a list.

    The distinct paths are ordered by a hash of (seed, file name), then by path: the same list
    gives the same sample on every machine and version, in any line order and wherever its
    folder is, and adding images to a list moves few of the chosen ones. The first ``round(20 %)`` (at least 1 of 2 or more images, at most
    ``max_held_out``) are held out, the next ``max_images`` calibrated on.
    """
    distinct = list(dict.fromkeys(paths))
    ordered = sorted(distinct, key=lambda p: _sort_key(p, seed))
    n = len(ordered)
    held = 0 if n < 2 else min(max_held_out, max(1, round(n * HELD_OUT_FRACTION)))
    return CalibrationSet(source, ordered[held:held + max_images], ordered[:held], n)


def _check_images(cs: CalibrationSet) -> None:
    for p in cs.images + cs.held_out:
        if not os.path.isfile(p):
            raise DataError(f"calibration image not found (listed in {cs.source})", file=p)


def _calibration_digest(cs: CalibrationSet, paths: Sequence[str]) -> str:
    h = hashlib.sha256()
    for p in dict.fromkeys(paths):
        h.update(p.encode("utf-8", "surrogateescape") + b"\n")
    for p in cs.images + cs.held_out:
        h.update(b"\0" + p.encode("utf-8", "surrogateescape") + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- toolkit
def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def toolkit_versions() -> str:
    """``openvino X, nncf Y`` (a key of the cache), or the one-line error naming the extra."""
    from importlib.metadata import PackageNotFoundError, version
    for module in ("onnx", "openvino", "nncf"):
        if not _installed(module):
            raise UsageError(f"-precision int8 needs the '{module}' package (int8 is OpenVINO "
                             f"with NNCF): pip install 'darknet-py[int8]'")
    try:
        return f"openvino {version('openvino')}, nncf {version('nncf')}"
    except PackageNotFoundError as e:
        raise UsageError(f"-precision int8 needs the '{e.name}' package: pip install "
                         f"'darknet-py[int8]'") from None


def edge_pad_max_pools(model: Any) -> int:
    """Replace each constant ``Pad`` that pads with the lowest float in front of max pools only
    by an ``edge`` (replicate) ``Pad``; returns how many were replaced.

    The same values: a max-pool window that reaches past the input also covers the input's edge
    row or column next to it, which is what edge padding repeats, as long as no window lies in
    the padding alone (each pad is smaller than the pool's kernel on its axis, checked here).
    OpenVINO cannot run int8 through a pad value far outside any quantization range, so without
    this a max pool with padding (yolov3-tiny's ``size=2 stride=1``) and the convolution after it
    stay fp32 (measured: yolov3-tiny's largest convolution ran fp32, 1.3x instead of 1.7x).
    """
    import openvino.opset12 as ops
    from openvino.passes import ConstantFolding, Manager
    manager = Manager()
    manager.register_pass(ConstantFolding())
    manager.run_passes(model)
    replaced = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Pad" or op.get_attributes().get("pad_mode") != "constant" \
                or op.get_input_size() != 4:
            continue
        inputs = [op.input_value(i).get_node() for i in range(1, 4)]
        if any(n.get_type_name() != "Constant" for n in inputs):
            continue
        begin, end, value = (np.asarray(n.get_data()) for n in inputs)
        if value.size != 1 or not float(value.reshape(-1)[0]) <= -3.0e38 or len(begin) != 4 \
                or begin[:2].any() or end[:2].any():
            continue
        users = [t.get_node() for t in op.output(0).get_target_inputs()]
        if not users or not all(_pads_inside_kernel(u, begin, end) for u in users):
            continue
        edge = ops.pad(op.input_value(0), op.input_value(1), op.input_value(2), "edge")
        edge.set_friendly_name(op.get_friendly_name())
        op.output(0).replace(edge.output(0))
        replaced += 1
    if replaced:
        model.validate_nodes_and_infer_types()
    return replaced


def _pads_inside_kernel(node: Any, begin, end) -> bool:
    if node.get_type_name() != "MaxPool":
        return False
    attrs = node.get_attributes()
    kernel = list(attrs.get("kernel", []))
    if len(kernel) != 2 or any(attrs.get("pads_begin", [0])) or any(attrs.get("pads_end", [0])):
        return False
    return all(int(begin[2 + i]) < kernel[i] and int(end[2 + i]) < kernel[i] for i in range(2))


# ----------------------------------------------------------------------------- the model
def check_request(backend: str = "auto", device: Any = None) -> str:
    """The one-line error for an int8 request that cannot run (another backend, a GPU, the
    toolkit not installed), before anything is loaded; returns :func:`toolkit_versions`."""
    if backend not in ("auto", "openvino"):
        raise UsageError(f"-precision int8 runs on -backend openvino (OpenVINO with NNCF), not "
                         f"'{backend}'", value=backend)
    if device is not None:
        if torch.device(device).type != "cpu":
            raise UsageError("-precision int8 runs on the CPU (OpenVINO); give no GPU for it",
                             value=str(device))
    return toolkit_versions()


def int8_backend(model: PathLike, weights: Optional[PathLike] = None, *,
                 calibration: Optional[Calibration], backend: str = "auto",
                 device: Any = None, width: Optional[int] = None, height: Optional[int] = None,
                 threads: Optional[int] = None, network: Any = None,
                 log: Optional[Callable[[str], None]] = None):
    """The OpenVINO backend of the int8 model of ``model`` (cfg + weights, or a ``darknet-py
    export`` ONNX file with head outputs), calibrated on ``calibration`` (made once, then taken
    from the cache; see the module docstring). ``log`` gets the report lines (default: stderr)."""
    log = log or eprint
    versions = check_request(backend, device)
    if calibration is None:
        raise UsageError("-precision int8 needs images to calibrate on: -calib LIST (Python: "
                         "calibration=LIST_FILE_OR_PATHS)")
    model = os.fspath(model)
    onnx_file = model.lower().endswith(".onnx")
    if onnx_file and (weights is not None or width or height):
        raise UsageError("an ONNX export already holds its weights and input size: give no "
                         "weights, width or height", value=model)
    source, paths = read_calibration_images(calibration)
    cs = sample_calibration(source, paths)
    _check_images(cs)
    if onnx_file:
        if not os.path.isfile(model):
            raise DataError("ONNX file not found", file=model)
        model_key = _file_digest(model)
    else:
        for path, what in ((model, "cfg file"), (weights, "weights file")):
            if path is not None and not os.path.isfile(os.fspath(path)):
                raise DataError(f"{what} not found", file=os.fspath(path))
        model_key = _cache_key(model, None if weights is None else os.fspath(weights), width,
                               height)
    # the model key holds the input size (and darknet-py's version) already
    key = hashlib.sha256("|".join((model_key, _calibration_digest(cs, paths), versions, RECIPE,
                                   str(MAX_CALIBRATION_IMAGES), str(MAX_HELD_OUT_IMAGES),
                                   str(SAMPLE_SEED))).encode()).hexdigest()[:16]
    folder = cache_folder()
    stem = os.path.join(folder, f"{os.path.basename(os.fspath(weights) if weights else model)}"
                                f".{key}.int8")
    xml = stem + ".xml"
    if os.path.isfile(xml) and os.path.isfile(stem + ".bin"):
        try:
            be = _open(xml, threads)
        except DataError:
            pass            # a damaged cache entry (cut short, edited): made again below
        else:
            log(f"int8: {xml} from the cache ({report_summary(be.calibration_report)})")
            return be
    if onnx_file:
        onnx_path = model
    else:
        onnx_path = cached_export(model, weights, width=width, height=height, network=network)
        try:
            read_onnx_metadata(onnx_path)
        except DataError:   # a cached export cut short or damaged: ours to make again, once
            onnx_path = cached_export(model, weights, width=width, height=height,
                                      network=network, rebuild=True)
    _calibrate(onnx_path, cs, stem, versions, threads, log)
    return _open(xml, threads)


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _open(xml: str, threads: Optional[int]):
    return OpenVinoBackend(xml, "int8", threads)


def _calibrate(onnx_path: str, cs: CalibrationSet, stem: str, versions: str,
               threads: Optional[int], log: Callable[[str], None]) -> None:
    """Quantize, measure, and write ``stem.xml/.bin`` and the two image lists atomically."""
    import openvino as ov
    meta = read_onnx_metadata(onnx_path)
    if meta.get("outputs", "heads") != "heads" or meta.get("dtype") == "float16":
        raise UsageError("-precision int8 quantizes an fp32 export with head outputs: export "
                         "without --with-decode, --with-nms and --half (or give the cfg and "
                         "weights)", value=onnx_path)
    held = f"{len(cs.held_out)} held out" if cs.held_out else "none held out"
    log(f"int8: calibrating on {len(cs.images)} of the {cs.listed} images of {cs.source} "
        f"(seeded sample, {held}) with {versions}; this takes a while, once")
    nncf = require_module("nncf", "int8")
    start = time.time()
    core = ov.Core()
    try:
        model = core.read_model(onnx_path)
    except Exception as e:
        raise DataError(f"OpenVINO cannot read the export: {_first_line(e)}",
                        file=onnx_path) from None
    edge_pad_max_pools(model)
    w, h = int(meta["input_width"]), int(meta["input_height"])
    channels, letter_box = int(meta.get("input_channels", 3)), bool(int(meta.get("letter_box", 0)))

    def prepared(path: str):
        return prepare_input(path, w, h, letter_box, channels).numpy()[None]

    try:
        with _quiet_nncf(nncf):
            quantized = nncf.quantize(model, nncf.Dataset(cs.images, prepared),
                                      subset_size=len(cs.images),
                                      preset=nncf.QuantizationPreset.MIXED)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"int8 quantization failed: {type(e).__name__}: {_first_line(e)}",
                        file=onnx_path) from None
    quantized.set_rt_info(json.dumps(meta), METADATA_KEY)
    folder = os.path.dirname(stem)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the cache folder: {e.strerror} (set DARKNET_PY_CACHE to "
                        "a writable folder)", file=folder) from None
    tmp = f"{stem}.tmp{os.getpid()}"
    report: Dict[str, Any] = {
        "source": cs.source, "listed": cs.listed, "calibration_images": len(cs.images),
        "held_out_images": len(cs.held_out), "seed": SAMPLE_SEED, "toolkit": versions,
        "recipe": RECIPE, "calibration_list": stem + ".calibration.txt",
        "held_out_list": stem + ".heldout.txt", "map_fp32": None, "map_int8": None,
        "held_out_labeled": 0}
    try:
        _write_list(stem + ".calibration.txt", cs.images)
        _write_list(stem + ".heldout.txt", cs.held_out)
        ov.save_model(quantized, tmp + ".xml", compress_to_fp16=False)
        if cs.held_out:
            fp32 = OpenVinoBackend(onnx_path, "fp32", threads)
            int8 = OpenVinoBackend(tmp + ".xml", "int8", threads)
            report.update(_held_out_map(fp32, int8, cs.held_out))
        report["seconds"] = round(time.time() - start, 1)
        quantized.set_rt_info(json.dumps(report), REPORT_RT_KEY)
        ov.save_model(quantized, tmp + ".xml", compress_to_fp16=False)
        os.replace(tmp + ".bin", stem + ".bin")
        os.replace(tmp + ".xml", stem + ".xml")
    finally:
        for ext in (".xml", ".bin"):
            if os.path.exists(tmp + ext):
                os.unlink(tmp + ext)
    log(f"int8: {report_summary(report)}")
    log(f"int8: calibrated in {report['seconds']:.0f} s, cached as {stem}.xml")


def _held_out_map(fp32, int8, images: List[str]) -> Dict[str, Any]:
    """Darknet's mAP@0.5 (``detector map`` defaults) of both backends on the held-out images."""
    out: Dict[str, Any] = {}
    for key, backend in (("map_fp32", fp32), ("map_int8", int8)):
        inputs = collect_map_inputs(backend, images=images, batch_size=1)
        out["held_out_labeled"] = len(images) - len(inputs.missing_labels)
        if out["held_out_labeled"] == 0:
            return out
        names = [str(c) for c in range(inputs.classes)]
        result = darknet_map(inputs.detections, inputs.truths, inputs.classes, names,
                             iou_thresh=0.5, thresh=0.25, map_points=0)
        out[key] = round(100.0 * float(result.mean_ap), 2)
    return out


def report_summary(report: Optional[Dict[str, Any]]) -> str:
    """One line: what was calibrated on and what int8 costs on the held-out images."""
    if not report:
        return "no calibration report"
    text = f"calibrated on {report['calibration_images']} images of {report['source']}"
    held = report.get("held_out_images", 0)
    if not held:
        text += "; no image left to hold out, no mAP"
    elif report.get("map_fp32") is None:
        text += f"; the {held} held-out images have no label files, no mAP"
    else:
        diff = report["map_int8"] - report["map_fp32"]
        text += (f"; detector map on the {held} held-out images: mAP@0.5 fp32 "
                 f"{report['map_fp32']:.2f} %, int8 {report['map_int8']:.2f} % "
                 f"({diff:+.2f} points)")
    stem = report["calibration_list"][:-len("calibration.txt")]
    return text + f"; image lists: {stem}{{calibration,heldout}}.txt"


def _write_list(path: str, images: Sequence[str]) -> None:
    atomic_write_bytes(path, "".join(os.path.abspath(p) + "\n" for p in images).encode())


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class _quiet_nncf:
    """NNCF logs to stdout and draws progress bars there: inside, its log is kept to errors and
    what it prints goes to stderr (stdout is the command's output: detections, mAP)."""

    def __init__(self, nncf):
        self.nncf = nncf

    def __enter__(self):
        import contextlib
        import logging

        from nncf.common.logging import nncf_logger
        self.level = nncf_logger.level
        self.nncf.set_log_level(logging.ERROR)
        self.redirect = contextlib.redirect_stdout(sys.stderr)
        self.redirect.__enter__()
        return self

    def __exit__(self, *exc):
        self.redirect.__exit__(*exc)
        self.nncf.set_log_level(self.level)
        return False
