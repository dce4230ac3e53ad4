"""Pieces shared by the command modules: Darknet-style flags, start-up text, messages
(:func:`~darknet_py.console.eprint`, imported here for them)."""
from __future__ import annotations

import os
from typing import Optional, Tuple

import click

from .. import distributed as dist
from ..console import eprint
from ..data.datacfg import read_data_cfg
from ..devices import select_device
from ..errors import CfgError, DataError, UsageError, WeightsError
from ..formats.weights import format_load_report
from ..infer.backends.base import BACKENDS, PRECISIONS
from ..infer.backends.factory import AUTO_BACKEND_RULE, make_backend
from ..infer.backends.int8 import check_request
from ..model.network import Network


def flag(name: str, dest: Optional[str] = None, **kw):
    """A Darknet single-dash option (``-thresh``) that also accepts ``--thresh``."""
    return click.option(f"-{name}", f"--{name}", dest or name.replace("-", "_"), **kw)


def print_startup(net) -> None:
    """Darknet's start-up text on stderr: the layer table, then what the weights load read."""
    net.print_table()
    if net.load_report is not None:
        eprint(format_load_report(net.load_report))


def check_file(path: str, what: str) -> str:
    if not os.path.exists(path):
        raise DataError(f"{what} not found", file=path)
    return path


def preflight(data: Optional[str] = None, cfg: Optional[str] = None,
              weights: Optional[str] = None, image: Optional[str] = None,
              video: Optional[str] = None, names: bool = False, lists: Tuple[str, ...] = ()):
    """Check the user's files before the layer table is printed and the weights are loaded.

    ``data`` (parsed: a bad line is reported now), ``cfg``, ``weights``, ``image`` and ``video``
    (a URL is not checked) must exist; ``names``: the data file's ``names=`` file too; ``lists``:
    the ``train``/``valid`` lists the data file names (Darknet's defaults for a missing line are
    left to the command, which explains them). Each error is the one the command would raise
    later, only sooner. Returns the parsed data file (or None).
    """
    parsed = None
    if data is not None:
        check_file(data, "data file")
        parsed = read_data_cfg(data)
    if cfg is not None and not os.path.exists(cfg):
        raise CfgError("cfg file not found", file=cfg)
    if weights is not None and not os.path.exists(weights):
        raise WeightsError("weights file not found", file=weights)
    if parsed is not None and names:
        names_path = parsed.names_or_default()
        if not os.path.exists(names_path):
            raise DataError(f"names file '{names_path}' (names= in {data}) not found",
                            file=names_path)
    for key in lists:
        path = getattr(parsed, key, None) if parsed is not None else None
        if path is not None and not os.path.exists(path):
            raise DataError(f"{'image' if key == 'train' else key} list not found", file=path)
    if image is not None and not os.path.exists(image):
        raise DataError("cannot load image: file not found", file=image)
    if video is not None and "://" not in video:
        check_file(video, "video file")
    return parsed


def parse_gpus(text: Optional[str]):
    if not text:
        return []
    try:
        return [int(t) for t in text.split(",") if t.strip() != ""]
    except ValueError:
        raise UsageError(f"-gpus expects a comma-separated list of GPU indices, got '{text}'") \
            from None


def backend_flags(fn):
    """``-backend``, ``-precision``, ``-calib``, ``-threads``, ``-i`` (and Darknet's ``-half``)
    for the commands that run a model."""
    decorators = [
        flag("backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
             help=f"What runs the network: auto = {AUTO_BACKEND_RULE} (the choice and why are "
                  "printed); exact = the Darknet-exact reference; onnxruntime / openvino run an "
                  "ONNX export (made once, cached in ~/.cache/darknet_py or $DARKNET_PY_CACHE)."),
        flag("precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
             help="fp16 (CUDA) and bf16 are fast paths, not Darknet-exact; int8 runs a model "
                  "quantized on your images (OpenVINO + NNCF on the CPU: calibrated once, "
                  "cached, with fp32 and int8 mAP@0.5 on held-out images printed)."),
        flag("calib", "calibration", type=click.Path(dir_okay=False), default=None,
             help="-precision int8: the list of images to calibrate on (a Darknet list file; "
                  "default: the train= list of the .data file). A seeded sample: 20% held out "
                  "(at most 100) for the mAP report, at most 300 of the rest calibrated on."),
        flag("half", is_flag=True, help="Same as -precision fp16."),
        flag("threads", type=int, default=None, help="CPU threads for the backend."),
        flag("i", "gpu_index", type=int, default=None,
             help="GPU index (default: GPU 0 when CUDA is available, else the CPU; without CUDA "
                  "ignored with a warning, as by Darknet's CPU build)."),
    ]
    for deco in reversed(decorators):
        fn = deco(fn)
    return fn


def calibration_list(data: Optional[str], calibration: Optional[str], precision: str,
                     backend: str = "auto") -> Optional[str]:
    """The image list ``-precision int8`` calibrates on: ``-calib``, else the ``train=`` list
    of the .data file; None for the other precisions (where ``-calib`` is an error). An int8
    request that cannot run is refused here, before the network is loaded."""
    if precision != "int8":
        if calibration is not None:
            raise UsageError("-calib is for -precision int8")
        return None
    check_request(backend)
    if calibration is not None:
        return check_file(calibration, "calibration list (-calib)")
    if data is None:
        raise UsageError("-precision int8 needs images to calibrate on: -calib LIST")
    train = read_data_cfg(data).train
    if train is None:
        raise UsageError(f"-precision int8 calibrates on the train= list of {data}, which has "
                         "none: give -calib LIST")
    return check_file(train, f"calibration list (train= in {data}; -calib names another)")


def open_backend(cfg: str, weights: Optional[str], *, backend: str = "auto",
                 precision: str = "fp32", half: bool = False, threads: Optional[int] = None,
                 gpu_index: Optional[int] = None, quiet: bool = False, batch: int = 1,
                 calibration: Optional[str] = None, data: Optional[str] = None):
    """The backend a command runs: Darknet's layer table and weights report first (stderr),
    then one line naming the backend and device (and, for ``-backend auto``, why).
    ``-precision int8`` calibrates on ``calibration`` or the ``train=`` list of the .data file
    ``data`` (once: then cached)."""
    if threads is not None and threads < 1:
        raise UsageError(f"-threads must be >= 1, got {threads}")
    precision = "fp16" if half else precision
    calibration = calibration_list(data, calibration, precision, backend)
    device = None if gpu_index is None else select_device(index=gpu_index)
    network = None
    if not cfg.lower().endswith(".onnx"):
        network = Network.from_files(cfg, weights, batch=batch)
        if not quiet:
            print_startup(network)

    def make():
        return make_backend(cfg, weights, backend=backend, device=device, precision=precision,
                            threads=threads, network=network, calibration=calibration)

    if calibration is not None and dist.is_distributed():
        # under torchrun rank 0 calibrates, the other ranks then find the model in the cache
        result = None
        try:
            if dist.is_main():
                result = make()
        finally:
            dist.barrier()
        if result is None:
            result = make()
    else:
        result = make()
    why = f" (-backend auto: {result.auto_reason})" if result.auto_reason else ""
    eprint(f"Using {result.describe()}{why}")
    return result
