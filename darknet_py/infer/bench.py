"""Benchmark darknet-py's forward pass against OpenCV DNN (and Darknet) in one process.

>>> report = run_benchmark(BenchConfig(cfg="yolov4-tiny.cfg", weights="yolov4-tiny.weights"))
>>> print(format_report(report))

What is measured, per *runner* (one way of running the same cfg + weights on the same input):

* ``network``: one forward pass on an already prepared ``(B, 3, H, W)`` float input (the same
  array for every runner), outputs materialised (CUDA synchronised);
* ``end_to_end``: decode the image file, resize it to the network size, forward, decode the boxes
  and run NMS (thresh 0.25, NMS 0.45). darknet-py uses :mod:`darknet_py.infer.image`,
  :mod:`darknet_py.infer.decode` and :mod:`darknet_py.infer.nms` (Darknet-exact); OpenCV uses its usual
  pipeline (``imread`` + ``blobFromImage`` + ``forward`` + ``NMSBoxesBatched``).

Runners: darknet-py exact path (``net(x)``, BN folded), darknet-py fast path
(:func:`darknet_py.infer.backends.fast.optimize_for_inference`), optionally its bf16 / ``torch.compile``
variants, the CUDA variants (fp32/fp16/bf16) when CUDA exists, OpenCV DNN 4.x on CPU
(``DNN_BACKEND_OPENCV``) and on CUDA when the cv2 build has it, and Darknet's own
``darknet detector test`` ("Predicted in X milli-seconds", network only) when a ``darknet`` binary
is on ``PATH``.

Fairness: all in-process runners are timed *interleaved* (round-robin, one call each per round),
so background load hits them alike; medians are reported together with the 10th/90th percentiles
and the process CPU time per call. PyTorch and OpenCV get the same thread count
(``torch.set_num_threads`` / ``cv2.setNumThreads``). Darknet runs in its own process afterwards
(``OMP_NUM_THREADS`` = the same count), so its figure is not interleaved.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..devices import usable_cpus
from ..errors import DataError, UsageError
from ..timing import interleave

#: runner keys, in the order they are reported
CPU_VARIANTS = ("auto", "exact", "fast", "fast-bf16", "fast-compile", "onnxruntime", "openvino",
                "openvino-bf16", "opencv", "darknet")
CUDA_VARIANTS = ("cuda-fp32", "cuda-fp16", "cuda-bf16", "opencv-cuda", "opencv-cuda-fp16")
DEFAULT_VARIANTS = ("auto", "exact", "fast", "fast-bf16", "onnxruntime", "openvino",
                    "openvino-bf16", "opencv", "darknet", "cuda-fp32", "cuda-fp16", "cuda-bf16",
                    "opencv-cuda", "opencv-cuda-fp16")
#: runners other figures are compared with
PEERS = ("opencv", "onnxruntime", "openvino-bf16", "opencv-cuda", "opencv-cuda-fp16", "darknet")
#: ``make_backend`` runners: key -> (backend, precision, label)
RUNTIME_VARIANTS = {
    "auto": ("auto", "fp32", "darknet-py default (-backend auto)"),
    "onnxruntime": ("onnxruntime", "fp32", "ONNX Runtime (our export, cpu fp32)"),
    "openvino": ("openvino", "fp32", "OpenVINO (our export, cpu fp32)"),
    "openvino-bf16": ("openvino", "bf16", "OpenVINO (our export, cpu bf16)"),
}

THRESH = 0.25
NMS_THRESH = 0.45


@dataclass
class BenchConfig:
    """What to benchmark (the ``darknet-py bench`` options)."""

    cfg: str
    weights: str
    width: Optional[int] = None
    height: Optional[int] = None
    batch: int = 1
    runs: int = 20
    warmup: int = 3
    threads: Optional[int] = None
    image: Optional[str] = None
    variants: Sequence[str] = DEFAULT_VARIANTS
    end_to_end: bool = True
    darknet_binary: Optional[str] = None  # default: ``darknet`` on PATH


@dataclass
class Measurement:
    runner: str
    label: str
    device: str
    mode: str  # "network" | "end_to_end"
    batch: int
    runs: int
    median_ms: float
    mean_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    img_per_s: float
    cpu_ms: Optional[float] = None
    interleaved: bool = True
    ratios: Dict[str, float] = field(default_factory=dict)


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


# ----------------------------------------------------------------------------- machine
def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo``, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> Dict[str, Any]:
    """CPU, core count, load, library versions and thread settings (for the report)."""
    import torch

    info: Dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
    }
    try:
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    try:
        import cv2
        info["opencv"] = cv2.__version__
        info["opencv_threads"] = cv2.getNumThreads()
    except ImportError:
        info["opencv"] = None
    from .backends.fast import runtime_info
    rt = runtime_info()
    for k in ("mkldnn", "cpu_capability", "nnpack_winograd", "cuda", "cuda_device", "cudnn"):
        if k in rt:
            info[k] = rt[k]
    return info


# ----------------------------------------------------------------------------- inputs
def _synthetic_image(folder: str, w: int = 640, h: int = 480) -> str:
    """A reproducible noisy gradient JPEG (when no --image is given)."""
    import cv2
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1),
                     (xx + yy) * 255 // max(1, w + h - 2)], axis=-1)
    img = np.clip(base + rng.integers(-40, 40, size=base.shape), 0, 255).astype(np.uint8)
    path = os.path.join(folder, "synthetic.jpg")
    cv2.imwrite(path, img)
    return path


def _percentile(sorted_values: List[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q
    lo, hi = int(np.floor(k)), int(np.ceil(k))
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def _summarise(runner: Runner, mode: str, batch: int, wall: List[float], cpu: List[float],
               interleaved: bool = True) -> Measurement:
    ws = sorted(wall)
    med = statistics.median(ws)
    return Measurement(
        runner=runner.key, label=runner.label, device=runner.device, mode=mode, batch=batch,
        runs=len(ws), median_ms=med * 1e3, mean_ms=statistics.fmean(ws) * 1e3,
        p10_ms=_percentile(ws, 0.1) * 1e3, p90_ms=_percentile(ws, 0.9) * 1e3,
        min_ms=ws[0] * 1e3, img_per_s=batch / med if med > 0 else float("inf"),
        cpu_ms=(statistics.median(cpu) * 1e3) if cpu else None, interleaved=interleaved)


# ----------------------------------------------------------------------------- runners
class _Context:
    """Everything the runners share: the loaded network, the prepared input, the image."""

    def __init__(self, config: BenchConfig, workdir: str):
        import torch
        self.workdir = workdir

        from ..model.network import Network
        self.config = config
        self.net = Network.from_files(config.cfg, config.weights, batch=1, width=config.width,
                                      height=config.height)
        if not self.net.heads:
            raise UsageError("bench needs a detection cfg (with [yolo] or [region] heads)",
                             file=config.cfg)
        self.net.eval().fuse()
        self.width, self.height = self.net.width, self.net.height
        self.image = config.image or _synthetic_image(workdir)
        self.synthetic_image = config.image is None
        if not os.path.exists(self.image):
            raise DataError("image not found", file=self.image)
        from .image import image_size, load_image, prepare_input
        original = load_image(self.image, self.net.channels)
        self.image_size = image_size(original)
        one = prepare_input(original, self.width, self.height)
        self.x = one.unsqueeze(0).repeat(config.batch, 1, 1, 1).contiguous()
        self.x_numpy = self.x.numpy()
        self.torch = torch

    # darknet-py end-to-end: what users run (the pipeline: load + resize + backend + decode + NMS)
    def ours_end_to_end(self, backend) -> Callable[[], Any]:
        from .pipeline import Pipeline
        pipeline = Pipeline(backend, thresh=THRESH, nms=NMS_THRESH, letter_box=False,
                            batch_size=self.config.batch)
        paths = [self.image] * self.config.batch
        return lambda: pipeline.run(paths)


def _runtime_runners(ctx: _Context, variants: Sequence[str], skipped: List[Dict[str, str]],
                     build: Dict[str, Any], threads: int) -> List[Runner]:
    """``auto`` and the ONNX runtimes, built by ``make_backend`` exactly as the commands do
    (our own ONNX export of the same Network; ``auto`` is what ``Detector`` runs by default)."""
    from .backends.base import make_backend
    runners: List[Runner] = []
    x = ctx.x
    for key in variants:
        if key not in RUNTIME_VARIANTS:
            continue
        backend, precision, label = RUNTIME_VARIANTS[key]
        t0 = time.perf_counter()
        try:
            be = make_backend(ctx.config.cfg, ctx.config.weights, backend=backend, device="cpu",
                              precision=precision, width=ctx.config.width,
                              height=ctx.config.height, threads=threads, network=ctx.net)
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


def _torch_runners(ctx: _Context, variants: Sequence[str], notes: List[str],
                   skipped: List[Dict[str, str]], build: Dict[str, Any]) -> List[Runner]:
    import torch

    from .backends.cuda import CudaBackend
    from .backends.exact import ExactBackend
    from .backends.fast import FastBackend
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
        import copy
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


def _opencv_decode(outs: Sequence[np.ndarray], batch: int, img_w: int, img_h: int):
    """Boxes + NMS from OpenCV's Region-layer rows ``(cx, cy, w, h, obj, obj*cls...)``."""
    import cv2
    results = []
    per_image = [o.reshape(batch, -1, o.shape[-1]) for o in outs]
    for b in range(batch):
        rows = np.concatenate([p[b] for p in per_image], axis=0)
        scores = rows[:, 5:]
        cls = scores.argmax(axis=1)
        conf = scores[np.arange(len(rows)), cls]
        keep = conf > THRESH
        rows, cls, conf = rows[keep], cls[keep], conf[keep]
        boxes = np.stack([(rows[:, 0] - rows[:, 2] / 2) * img_w,
                          (rows[:, 1] - rows[:, 3] / 2) * img_h,
                          rows[:, 2] * img_w, rows[:, 3] * img_h], axis=1) if len(rows) else \
            np.zeros((0, 4), np.float32)
        idx = cv2.dnn.NMSBoxesBatched(boxes.tolist(), conf.tolist(), cls.tolist(), THRESH,
                                      NMS_THRESH) if len(rows) else []
        results.append((boxes[np.asarray(idx, dtype=int).reshape(-1)], conf, cls))
    return results


def _opencv_runners(ctx: _Context, variants: Sequence[str],
                    skipped: List[Dict[str, str]]) -> List[Runner]:
    wanted = [k for k in variants if k.startswith("opencv")]
    if not wanted:
        return []
    try:
        import cv2
    except ImportError:
        for k in wanted:
            skipped.append({"runner": k, "reason": "OpenCV (cv2) is not installed"})
        return []
    cfg, weights = ctx.config.cfg, ctx.config.weights
    if ctx.config.width or ctx.config.height:
        cfg = _cfg_with_size(cfg, ctx.width, ctx.height, ctx.workdir)
    targets = {
        "opencv": (cv2.dnn.DNN_BACKEND_OPENCV, cv2.dnn.DNN_TARGET_CPU, "cpu", "OpenCV DNN (cpu)"),
        "opencv-cuda": (cv2.dnn.DNN_BACKEND_CUDA, cv2.dnn.DNN_TARGET_CUDA, "cuda",
                        "OpenCV DNN (cuda fp32)"),
        "opencv-cuda-fp16": (cv2.dnn.DNN_BACKEND_CUDA, cv2.dnn.DNN_TARGET_CUDA_FP16, "cuda",
                             "OpenCV DNN (cuda fp16)"),
    }
    try:
        cuda_devices = cv2.cuda.getCudaEnabledDeviceCount()
    except (AttributeError, cv2.error):
        cuda_devices = 0
    runners = []
    for key in wanted:
        if key not in targets:
            skipped.append({"runner": key, "reason": "unknown variant"})
            continue
        backend, target, device, label = targets[key]
        if device == "cuda" and cuda_devices == 0:
            skipped.append({"runner": key, "reason": "this cv2 build has no CUDA device/backend "
                                                     "(cv2.cuda.getCudaEnabledDeviceCount() == 0)"})
            continue
        try:
            cvnet = cv2.dnn.readNetFromDarknet(cfg, weights)
            cvnet.setPreferableBackend(backend)
            cvnet.setPreferableTarget(target)
            names = cvnet.getUnconnectedOutLayersNames()
            cvnet.setInput(ctx.x_numpy)
            cvnet.forward(names)
        except cv2.error as e:
            skipped.append({"runner": key, "reason": f"OpenCV cannot run this cfg: "
                                                     f"{str(e).strip().splitlines()[-1]}"})
            continue

        def network(n=cvnet, names=names):
            n.setInput(ctx.x_numpy)
            return n.forward(names)

        def end_to_end(n=cvnet, names=names):
            imgs = [cv2.imread(ctx.image) for _ in range(ctx.config.batch)]
            blob = cv2.dnn.blobFromImages(imgs, 1 / 255.0, (ctx.width, ctx.height), swapRB=True,
                                          crop=False)
            n.setInput(blob)
            outs = n.forward(names)
            h, w = imgs[0].shape[:2]
            return _opencv_decode(outs, len(imgs), w, h)

        runners.append(Runner(key, label, device, network, end_to_end,
                              info={"opencv": cv2.__version__}))
    return runners


def _cfg_with_size(cfg: str, width: int, height: int, folder: str) -> str:
    """A copy of ``cfg`` whose ``[net]`` width/height are replaced (for OpenCV and Darknet)."""
    with open(cfg, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    out, in_net, done = [], False, set()
    for line in lines:
        s = line.strip()
        if s.startswith("["):
            if in_net:
                for key, val in (("width", width), ("height", height)):
                    if key not in done:
                        out.append(f"{key}={val}")
            in_net = s.lower() in ("[net]", "[network]")
        elif in_net:
            key = s.split("=", 1)[0].strip().lower()
            if key in ("width", "height"):
                out.append(f"{key}={width if key == 'width' else height}")
                done.add(key)
                continue
        out.append(line)
    path = os.path.join(folder, f"sized_{width}x{height}_" + os.path.basename(cfg))
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    return path


# ----------------------------------------------------------------------------- darknet binary
_PREDICTED = re.compile(r"Predicted in ([0-9.]+) milli-seconds")


def _darknet_measurement(ctx: _Context, binary: str, runs: int, warmup: int, threads: int,
                         skipped: List[Dict[str, str]], notes: List[str]
                         ) -> Optional[Measurement]:
    """Run ``darknet detector test`` on the image ``warmup+runs`` times (stdin) and parse its
    "Predicted in X milli-seconds" lines (network_predict only: the network-only figure)."""
    if ctx.config.batch != 1:
        skipped.append({"runner": "darknet", "reason": "darknet detector test runs batch 1 only"})
        return None
    folder = ctx.workdir
    names = os.path.join(folder, "bench.names")
    with open(names, "w", encoding="utf-8") as f:
        f.write("\n".join(f"class{i}" for i in range(ctx.net.classes)) + "\n")
    data = os.path.join(folder, "bench.data")
    with open(data, "w", encoding="utf-8") as f:
        f.write(f"classes={ctx.net.classes}\nnames={names}\n")
    cfg = ctx.config.cfg
    if ctx.config.width or ctx.config.height:
        cfg = _cfg_with_size(cfg, ctx.width, ctx.height, folder)
    stdin = "\n".join([os.path.abspath(ctx.image)] * (warmup + runs)) + "\n"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [binary, "detector", "test", data, cfg, ctx.config.weights, "-dont_show",
           "-thresh", str(THRESH)]
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, cwd=folder,
                              env=env, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        skipped.append({"runner": "darknet", "reason": f"{binary} failed to run: {e}"})
        return None
    times = [float(m.group(1)) / 1e3 for m in _PREDICTED.finditer(proc.stdout + proc.stderr)]
    if len(times) <= warmup:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        skipped.append({"runner": "darknet", "reason": f"no 'Predicted in' timings from {binary} "
                                                       f"(exit {proc.returncode}: {tail[0]})"})
        return None
    notes.append(f"darknet: `{' '.join(os.path.basename(c) for c in cmd[:3])} ...` in its own "
                 f"process (OMP_NUM_THREADS={threads}), not interleaved; network_predict only")
    runner = Runner("darknet", f"Darknet ({os.path.basename(binary)} detector test)", "cpu",
                    lambda: None)
    return _summarise(runner, "network", 1, times[warmup:], [], interleaved=False)


# ----------------------------------------------------------------------------- main loop
def measure_interleaved(runners: Sequence[Runner], mode: str, runs: int, warmup: int,
                        batch: int) -> List[Measurement]:
    """Time every runner ``runs`` times, round-robin (one call each per round), after
    ``warmup`` rounds; the CPU time is reported for the CPU runners only."""
    calls = {r.key: (r, r.network if mode == "network" else r.end_to_end) for r in runners}
    calls = {k: (r, fn) for k, (r, fn) in calls.items() if fn is not None}
    samples = interleave({k: fn for k, (_, fn) in calls.items()}, runs, warmup,
                         sync={k: r.sync for k, (r, _) in calls.items()})
    return [_summarise(r, mode, batch, samples[k].wall, samples[k].cpu if r.device == "cpu" else [])
            for k, (r, _) in calls.items()]


def _add_ratios(measurements: List[Measurement]) -> None:
    for mode in ("network", "end_to_end"):
        group = [m for m in measurements if m.mode == mode]
        peers = {m.runner: m for m in group if m.runner in PEERS}
        for m in group:
            for key, p in peers.items():
                if key != m.runner and p.median_ms > 0:
                    m.ratios[key] = m.median_ms / p.median_ms


def run_benchmark(config: BenchConfig, log: Callable[[str], None] = lambda s: None
                  ) -> Dict[str, Any]:
    """Run the whole benchmark; returns the JSON-able report (see :func:`format_report`)."""
    import torch

    if config.batch < 1 or config.runs < 1 or config.warmup < 0:
        raise UsageError("--batch and --runs must be >= 1 and --warmup >= 0")
    for path, what in ((config.cfg, "cfg file"), (config.weights, "weights file")):
        if not os.path.exists(path):
            raise DataError(f"{what} not found", file=path)
    cpus = usable_cpus()
    threads = config.threads or min(cpus, torch.get_num_threads() or cpus)
    torch.set_num_threads(threads)
    try:
        import cv2
        cv2.setNumThreads(threads)
    except ImportError:
        pass
    variants = list(config.variants)
    notes: List[str] = []
    skipped: List[Dict[str, str]] = []
    build: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="darknet_py_bench_") as workdir:
        ctx = _Context(config, workdir)
        log(f"benchmark: {os.path.basename(config.cfg)} {ctx.width}x{ctx.height} batch "
            f"{config.batch}, {threads} threads, {config.runs} runs")
        runners = _runtime_runners(ctx, [v for v in variants if v == "auto"], skipped, build,
                                   threads)
        runners += _torch_runners(ctx, variants, notes, skipped, build)
        runners += _runtime_runners(ctx, [v for v in variants if v != "auto"], skipped, build,
                                    threads)
        runners += _opencv_runners(ctx, variants, skipped)
        measurements = measure_interleaved(runners, "network", config.runs, config.warmup,
                                           config.batch)
        if config.end_to_end:
            measurements += measure_interleaved(runners, "end_to_end", config.runs,
                                                config.warmup, config.batch)
        if "darknet" in variants:
            binary = config.darknet_binary or shutil.which("darknet")
            if binary is None:
                skipped.append({"runner": "darknet",
                                "reason": "no `darknet` binary on PATH (Darknet not measured)"})
            else:
                m = _darknet_measurement(ctx, binary, config.runs, config.warmup, threads,
                                         skipped, notes)
                if m is not None:
                    measurements.append(m)
        if ctx.synthetic_image:
            notes.append("end-to-end input: a synthetic 640x480 JPEG (no --image given)")
        machine = machine_info()
    machine["threads"] = threads
    _add_ratios(measurements)
    if machine.get("omp_wait_policy") != "PASSIVE" and threads > 1:
        notes.append("OMP_WAIT_POLICY is not PASSIVE: when other processes share the CPUs, "
                      "PyTorch's OpenMP threads spin-wait and multi-threaded latency can be many "
                      "times worse (set OMP_WAIT_POLICY=PASSIVE before Python starts)")
    return {
        "model": {"cfg": os.path.abspath(config.cfg), "weights": os.path.abspath(config.weights),
                  "width": ctx.width, "height": ctx.height, "batch": config.batch,
                  "bflops": round(ctx.net.total_bflops, 3)},
        "config": {"runs": config.runs, "warmup": config.warmup, "threads": threads,
                   "image": config.image or "(synthetic)", "variants": variants,
                   "thresh": THRESH, "nms": NMS_THRESH},
        "machine": machine,
        "results": [asdict(m) for m in measurements],
        "build": build,
        "skipped": skipped,
        "notes": notes,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# ----------------------------------------------------------------------------- output
def format_report(report: Dict[str, Any]) -> str:
    """The human-readable table: median latency, img/s and ratios to each peer."""
    m, mach, cfg = report["model"], report["machine"], report["config"]
    lines = [
        f"model: {os.path.basename(m['cfg'])} {m['width']}x{m['height']} batch {m['batch']} "
        f"({m['bflops']} BFLOPS)",
        f"machine: {mach.get('cpu')} ({mach.get('usable_cpus')} usable CPUs), load "
        f"{mach.get('load_average', '?')}",
        f"threads: torch {mach.get('torch_threads')}, opencv {mach.get('opencv_threads')}, "
        f"OMP_WAIT_POLICY={mach.get('omp_wait_policy')}; torch {mach.get('torch')}, "
        f"opencv {mach.get('opencv')}, numpy {mach.get('numpy')}"
        + (f", cuda {mach.get('cuda_device')}" if mach.get("cuda") else ", no CUDA"),
        f"runs: {cfg['runs']} interleaved (+{cfg['warmup']} warm-up) per runner",
    ]
    peers = [p for p in PEERS if any(r["runner"] == p for r in report["results"])]
    for mode, title in (("network", "network only (forward pass)"),
                        ("end_to_end", "end to end (decode + resize + forward + boxes + NMS)")):
        rows = [r for r in report["results"] if r["mode"] == mode]
        if not rows:
            continue
        lines.append("")
        lines.append(title)
        head = f"  {'runner':<44s} {'median ms':>10s} {'p10-p90 ms':>15s} {'img/s':>8s} " \
               f"{'cpu ms':>8s}" + "".join(f" {('vs ' + p):>18s}" for p in peers)
        lines.append(head)
        for r in rows:
            spread = f"{r['p10_ms']:.1f}-{r['p90_ms']:.1f}"
            cpu = f"{r['cpu_ms']:.1f}" if r.get("cpu_ms") else "-"
            ratios = "".join(f" {_ratio_text(r, p):>18s}" for p in peers)
            lines.append(f"  {r['label']:<44s} {r['median_ms']:10.2f} {spread:>15s} "
                         f"{r['img_per_s']:8.1f} {cpu:>8s}{ratios}")
    if report.get("build"):
        lines.append("")
        for key, b in report["build"].items():
            extra = f", torch.compile {b['compile_s']:.1f} s" if "compile_s" in b else ""
            lines.append(f"build {key}: {b['build_s']:.2f} s (first call {b['first_call_s']:.2f} s"
                         f"{extra}); {b['plan']}")
    for s in report.get("skipped", []):
        lines.append(f"skipped {s['runner']}: {s['reason']}")
    for n in report.get("notes", []):
        lines.append(f"note: {n}")
    lines.append("ratio = median latency / the peer's median latency (< 1: faster than the peer)")
    return "\n".join(lines)


def _ratio_text(row: Dict[str, Any], peer: str) -> str:
    if peer in row["ratios"]:
        return "%.2fx" % row["ratios"][peer]
    return "1.00x" if peer == row["runner"] else "-"


def write_json(report: Dict[str, Any], path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=False)
        f.write("\n")


def parse_variants(text: Optional[str]) -> Tuple[str, ...]:
    """``"exact,fast,opencv"`` -> the runner keys (validated)."""
    if not text:
        return DEFAULT_VARIANTS
    keys = tuple(t.strip() for t in text.split(",") if t.strip())
    known = set(CPU_VARIANTS) | set(CUDA_VARIANTS)
    bad = [k for k in keys if k not in known]
    if bad:
        raise UsageError(f"unknown benchmark variant(s) {', '.join(bad)}; choose from "
                         f"{', '.join(CPU_VARIANTS + CUDA_VARIANTS)}")
    return keys
