"""The runners: one way each of running the same cfg + weights on the same input.

:class:`BenchContext` holds what they all share (the network loaded once, the prepared input,
the image for the end-to-end figures). :func:`runtime_runners` and :func:`torch_runners` build
darknet-py's own: its backends, made as the commands make them, each with the end-to-end
:class:`~darknet_py.infer.pipeline.Pipeline` over it. The peers are in :mod:`.opencv` and
:mod:`.darknet`.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch

from ..errors import DataError, UsageError
from ..formats.cfg import with_network_size
from ..imaging.image import image_size, load_image, prepare_input
from ..infer.backends.cuda import CudaBackend
from ..infer.backends.exact import ExactBackend
from ..infer.backends.factory import make_backend
from ..infer.backends.fast import FastBackend
from ..infer.pipeline import Pipeline
from ..model.network import Network
from .config import NMS_THRESH, RUNTIME_VARIANTS, THRESH, BenchConfig


@dataclass
class Runner:
    """One way of running the network. ``network``/``end_to_end`` do one timed call."""

    key: str
    label: str
    device: str
    network: Callable[[], Any]
    end_to_end: Optional[Callable[[], Any]] = None
    sync: Callable[[], None] = lambda: None
    info: Dict[str, Any] = field(default_factory=dict)


class BenchContext:
    """Everything the runners share: the loaded network, the prepared input, the image."""

    def __init__(self, config: BenchConfig, workdir: str):

        self.config = config
        self.workdir = workdir
        self.net = Network.from_files(config.cfg, config.weights, batch=1, width=config.width,
                                      height=config.height)
        if not self.net.heads:
            raise UsageError("bench needs a detection cfg (with [yolo] or [region] heads)",
                             file=config.cfg)
        self.net.eval().fuse()
        self.width, self.height = self.net.width, self.net.height
        self.image = config.image or synthetic_image(workdir)
        self.synthetic_image = config.image is None
        if not os.path.exists(self.image):
            raise DataError("image not found", file=self.image)
        original = load_image(self.image, self.net.channels)
        self.image_size = image_size(original)
        one = prepare_input(original, self.width, self.height)
        self.x = one.unsqueeze(0).repeat(config.batch, 1, 1, 1).contiguous()
        self.x_numpy = self.x.numpy()

    def sized_cfg(self) -> str:
        """The cfg for the peers that read it themselves (OpenCV, Darknet): the user's file, or
        a copy at ``--width``/``--height``."""
        if self.config.width or self.config.height:
            return cfg_with_size(self.config.cfg, self.width, self.height, self.workdir)
        return self.config.cfg

    def ours_end_to_end(self, backend) -> Callable[[], Any]:
        """darknet-py end to end, as ``Detector(paths)`` runs it: the pipeline (load + resize +
        backend + decode + NMS), detections out; the whole image is not made float (only
        drawing needs that, and OpenCV's loop it is compared with does not do it either)."""
        pipeline = Pipeline(backend, thresh=THRESH, nms=NMS_THRESH, letter_box=False,
                            batch_size=self.config.batch)
        paths = [self.image] * self.config.batch
        return lambda: pipeline.run(paths, keep_images=False)


def synthetic_image(folder: str, w: int = 640, h: int = 480) -> str:
    """A reproducible noisy gradient JPEG (when no --image is given)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1),
                     (xx + yy) * 255 // max(1, w + h - 2)], axis=-1)
    img = np.clip(base + rng.integers(-40, 40, size=base.shape), 0, 255).astype(np.uint8)
    path = os.path.join(folder, "synthetic.jpg")
    cv2.imwrite(path, img)
    return path


def cfg_with_size(cfg: str, width: int, height: int, folder: str) -> str:
    """A copy of ``cfg`` whose ``[net]`` width/height are replaced (for OpenCV and Darknet),
    written into ``folder``; returns its path. Edited through the one cfg reader
    (:func:`~darknet_py.formats.cfg.with_network_size`), so the rest of the text is kept."""
    with open(cfg, encoding="utf-8", errors="surrogateescape", newline="") as f:
        text = with_network_size(f.read(), width, height, cfg)
    path = os.path.join(folder, f"sized_{width}x{height}_" + os.path.basename(cfg))
    with open(path, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
        f.write(text)
    return path


def runtime_runners(ctx: BenchContext, variants: Sequence[str], skipped: List[Dict[str, str]],
                    build: Dict[str, Any], threads: int) -> List[Runner]:
    """``auto`` and the ONNX runtimes, built by ``make_backend`` exactly as the commands do
    (our own ONNX export of the same Network; ``auto`` is what ``Detector`` runs by default)."""
    runners: List[Runner] = []
    x = ctx.x
    for key in variants:
        if key not in RUNTIME_VARIANTS:
            continue
        backend, precision, label = RUNTIME_VARIANTS[key]
        calibration = ctx.config.calibration if precision == "int8" else None
        if precision == "int8" and calibration is None:
            skipped.append({"runner": key, "reason": "no calibration images (--calib LIST)"})
            continue
        t0 = time.perf_counter()
        try:
            be = make_backend(ctx.config.cfg, ctx.config.weights, backend=backend, device="cpu",
                              precision=precision, width=ctx.config.width,
                              height=ctx.config.height, threads=threads, network=ctx.net,
                              calibration=calibration)
            be(x)
        except Exception as e:  # a runtime that is not installed (or cannot run) is skipped
            skipped.append({"runner": key, "reason": f"{type(e).__name__}: {e}"})
            continue
        spent = round(time.perf_counter() - t0, 3)
        build[key] = {"build_s": spent, "first_call_s": spent, "plan": be.describe()}
        if key == "auto":
            label = f"{label}: {be.name} {be.precision}"
        runners.append(Runner(key, label, "cpu", (lambda b=be: b(x)), ctx.ours_end_to_end(be),
                              info={"plan": be.describe()}))
    return runners


def torch_runners(ctx: BenchContext, variants: Sequence[str], notes: List[str],
                  skipped: List[Dict[str, str]], build: Dict[str, Any]) -> List[Runner]:
    """darknet-py's own backends: exact, the fast plan (and its bf16 / torch.compile variants)
    and, when CUDA exists, the CUDA plan in fp32/fp16/bf16."""

    runners: List[Runner] = []
    net, x = ctx.net, ctx.x

    if "exact" in variants:
        exact = ExactBackend(net, torch.device("cpu"))
        runners.append(Runner("exact", "darknet-py exact (cpu fp32)", "cpu",
                              lambda: exact(x), ctx.ours_end_to_end(exact)))
    cpu_fast = [("fast", {}, "darknet-py fast (cpu fp32)"),
                ("fast-bf16", {"precision": "bf16"}, "darknet-py fast (cpu bf16)"),
                ("fast-compile", {"compile": True}, "darknet-py fast + torch.compile (cpu fp32)")]
    for key, kw, label in cpu_fast:
        if key not in variants:
            continue
        t0 = time.perf_counter()
        try:
            fast = FastBackend(net, **kw)
            fast(x)  # first call (compiles, if asked)
        except Exception as e:  # a variant that cannot run here is skipped, not fatal
            skipped.append({"runner": key, "reason": f"{type(e).__name__}: {e}"})
            continue
        plan = fast.plan
        build[key] = {"build_s": round(plan.timing.build_seconds, 3),
                      "first_call_s": round(time.perf_counter() - t0, 3),
                      "plan": plan.describe()}
        if plan.timing.compile_seconds is not None:
            build[key]["compile_s"] = round(plan.timing.compile_seconds, 3)
            if not plan.compiled:
                notes.append(f"{key}: torch.compile failed, measured eagerly")
        runners.append(Runner(key, label, "cpu", (lambda f=fast: f(x)),
                              ctx.ours_end_to_end(fast), info={"plan": plan.describe()}))

    cuda_keys = [k for k in variants if k.startswith("cuda-")]
    if cuda_keys and not torch.cuda.is_available():
        for k in cuda_keys:
            skipped.append({"runner": k, "reason": "torch.cuda.is_available() is False"})
        cuda_keys = []
    if cuda_keys:
        gpu_net = copy.deepcopy(net).to("cuda")
        for key in cuda_keys:
            precision = {"cuda-fp32": "fp32", "cuda-fp16": "fp16", "cuda-bf16": "bf16"}.get(key)
            if precision is None:
                skipped.append({"runner": key, "reason": "unknown variant"})
                continue
            if precision == "bf16" and not torch.cuda.is_bf16_supported():
                skipped.append({"runner": key, "reason": "this GPU has no bf16 support"})
                continue
            t0 = time.perf_counter()
            cuda = CudaBackend(gpu_net, torch.device("cuda"), precision)
            cuda(x)
            torch.cuda.synchronize()
            build[key] = {"build_s": round(cuda.plan.timing.build_seconds, 3),
                          "first_call_s": round(time.perf_counter() - t0, 3),
                          "plan": cuda.plan.describe()}
            runners.append(Runner(key, f"darknet-py fast (cuda {precision})", "cuda",
                                  (lambda f=cuda: f(x)), ctx.ours_end_to_end(cuda),
                                  sync=torch.cuda.synchronize))
    return runners
