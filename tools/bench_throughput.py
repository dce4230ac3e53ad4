#!/usr/bin/env python
"""Images per second on a list: the pipeline one image after the other, the pipeline with its
stages overlapped, and OpenCV DNN's usual loop, at 1 and 2 threads.

    python tools/bench_throughput.py [--refdata ../shared] [--limit 128] [--repeats 3]
        [--models yolov4-tiny,yolov3-tiny,yolo-fastest-1.1] [--threads 1,2] [--mode map]

For each model (cfg + weights from the reference-data folder) and each thread count ``T``,
over the first ``--limit`` images of coco128 val2017, every runner goes through the whole list
once per repeat, the runners interleaved (round-robin, the order reversed every other round, so
background load hits them alike):

* ``sequential/T``: the :class:`~darknet_py.infer.pipeline.Pipeline` with ``loader_threads=0``
  and batch 1 (read, resize, network, decode, NMS of one image, then the next: Darknet's loop);
* ``overlap/T``: the same pipeline with its stages overlapped (:meth:`Pipeline.process`: a reader
  thread, the network on its own thread, decoding and NMS in the calling thread), batch 1;
* ``opencv/T``: ``cv2.imread`` + ``cv2.dnn.blobFromImage`` + ``net.forward`` + the usual numpy
  decoding + ``cv2.dnn.NMSBoxes``, with ``cv2.setNumThreads(T)``.

A thread count ``T`` is a budget of ``T`` CPUs: the runners and the backends they use are made
and run with the process pinned to the first ``T`` usable CPUs (threads made there stay there),
the network gets ``T`` intra-op threads (``make_backend(threads=T)``; the backend may run fewer
where it measured that faster, as every command does: its line is printed) and OpenCV
``setNumThreads(T)``. ``--mode`` picks the thresholds of the command measured: ``map``
(objectness 0.005, NMS 0.45; the default), ``valid`` (0.001, NMS 0.6 on pixel boxes) or ``test``
(0.25, 0.45); OpenCV keeps the boxes whose class confidence passes the same threshold.

``--split 1`` adds ``overlap/T,net1`` for the largest ``T``: the overlapped pipeline on ``T``
CPUs with the network held to one thread (ONNX Runtime or the fast plan built with one thread,
no calibration), i.e. one CPU left to reading, decoding and NMS: the other way to split 2 CPUs.

Printed: per runner the median images/s over the repeats (min-max), the process CPU time per
image, the ratios the goals are stated in (overlap at 2 threads against sequential at 1 and at
2 threads, and against OpenCV at the same thread count), the boxes each runner found (for the
pipelines: boxes with a class probability above the threshold, which the two must agree on;
for OpenCV: the boxes ``NMSBoxes`` kept, another count), and ``uptime`` before and after: with
other work on the machine the figures are "under load" and the ratios, measured interleaved,
are the steadier part.
"""
from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import darknet_py  # noqa: E402,F401  (OMP_WAIT_POLICY before torch, the user's policy on record)
from darknet_py.devices import cpu_model  # noqa: E402

import argparse  # noqa: E402
import contextlib  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from typing import Callable, Dict, List, Sequence  # noqa: E402

import numpy as np  # noqa: E402

#: (name, cfg, weights) relative to the reference-data folder
MODELS = [
    ("yolov4-tiny", "cfg/darknet/yolov4-tiny.cfg", "weights/yolov4-tiny.weights"),
    ("yolov3-tiny", "cfg/darknet/yolov3-tiny.cfg", "weights/yolov3-tiny.weights"),
    ("yolo-fastest-1.1", "weights/yolo-fastest/yolo-fastest-1.1.cfg",
     "weights/yolo-fastest/yolo-fastest-1.1.weights"),
]
#: --mode -> (objectness threshold, NMS threshold, NMS on pixel boxes)
MODES = {"map": (0.005, 0.45, False), "valid": (0.001, 0.6, True), "test": (0.25, 0.45, False)}


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True,
                              timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def usable_cpus() -> List[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


@contextlib.contextmanager
def pinned(threads: int):
    """The calling thread (and every thread it makes meanwhile) on the first ``threads`` usable
    CPUs: a budget of ``threads`` CPUs, whatever the runner does with it."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(sorted(before)[:max(1, threads)]))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ----------------------------------------------------------------------------- runners
def pipeline_runner(backend, mode: str, overlap: bool) -> Callable[[Sequence[str]], int]:
    from darknet_py.infer.pipeline import Pipeline
    thresh, nms, pixel = MODES[mode]
    pipe = Pipeline(backend, thresh=thresh, hier_thresh=0.5, nms=nms, batch_size=1,
                    pixel_boxes=pixel, loader_threads=1 if overlap else 0)

    def run(images: Sequence[str]) -> int:
        found = 0
        for _, _, dets in pipe.iterate(list(images), keep_images=False):
            found += int((dets.probs > 0).any(1).sum())
        return found
    return run


def opencv_runner(cfg: str, weights: str, width: int, height: int, mode: str
                  ) -> Callable[[Sequence[str]], int]:
    """OpenCV DNN's usual detection loop (the tutorials' and OpenCV's own sample's)."""
    import cv2
    thresh, nms, _ = MODES[mode]
    net = cv2.dnn.readNetFromDarknet(cfg, weights)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    names = net.getUnconnectedOutLayersNames()

    def run(images: Sequence[str]) -> int:
        found = 0
        for path in images:
            img = cv2.imread(path)
            h, w = img.shape[:2]
            blob = cv2.dnn.blobFromImage(img, 1 / 255.0, (width, height), swapRB=True,
                                         crop=False)
            net.setInput(blob)
            out = np.concatenate([o.reshape(-1, o.shape[-1]) for o in net.forward(names)])
            scores = out[:, 5:]
            cls = scores.argmax(1)
            conf = scores[np.arange(len(cls)), cls]
            keep = conf > thresh
            b = out[keep, :4] * np.array([w, h, w, h], np.float32)
            boxes = np.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 2], b[:, 3]], 1)
            idx = cv2.dnn.NMSBoxes(boxes.tolist(), conf[keep].tolist(), thresh, nms)
            found += len(idx)
        return found
    return run


def fixed_threads_backend(cfg: str, weights: str, backend: str, threads: int):
    """The backend ``make_backend`` would pick, with exactly ``threads`` network threads (no
    calibration)."""
    import torch

    from darknet_py.infer.backends.factory import auto_backend
    from darknet_py.model.network import Network
    name = auto_backend(cfg, torch.device("cpu"))[0] if backend == "auto" else backend
    if name == "onnxruntime":
        from darknet_py.infer.backends.onnxruntime import OnnxRuntimeBackend, cached_export
        return OnnxRuntimeBackend(cached_export(cfg, weights), threads=threads,
                                  calibrate_threads=False)
    if name == "fast":
        from darknet_py.infer.backends.fast import FastBackend
        return FastBackend(Network.from_files(cfg, weights), "fp32", threads, calibrate_threads=False)
    raise SystemExit(f"--split: backend {name} has no fixed thread count here")


# ----------------------------------------------------------------------------- measuring
def measure(runners: Dict[str, tuple], images: Sequence[str], repeats: int) -> Dict[str, dict]:
    """Every runner over the whole list ``repeats`` times, interleaved; per runner the images/s
    of each pass, the CPU seconds per image and the detections found."""
    out = {k: {"rates": [], "cpu": [], "found": None} for k in runners}
    keys = list(runners)
    for r in range(repeats):
        for key in (keys if r % 2 == 0 else keys[::-1]):
            threads, run = runners[key]
            with pinned(threads):
                c0, t0 = cpu_seconds(), time.perf_counter()
                found = run(images)
                wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
            out[key]["rates"].append(len(images) / wall)
            out[key]["cpu"].append(cpu / len(images))
            out[key]["found"] = found
            print(f"  round {r + 1}: {key:14s} {len(images) / wall:7.1f} img/s  "
                  f"(load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    return out


def ratio(results: Dict[str, dict], a: str, b: str) -> str:
    if a not in results or b not in results:
        return "-"
    return f"{statistics.median(results[a]['rates']) / statistics.median(results[b]['rates']):.2f}x"


def report(name: str, results: Dict[str, dict], described: Dict[str, str],
           thread_counts: Sequence[int]) -> str:
    lines = [f"### {name}", "", "| runner | what runs the network | img/s median (min-max) | "
             "CPU ms/img | boxes found |", "|---|---|---|---|---|"]
    for key, r in results.items():
        rates = r["rates"]
        lines.append(f"| {key} | {described.get(key, '')} | {statistics.median(rates):.1f} "
                     f"({min(rates):.1f}-{max(rates):.1f}) | "
                     f"{1000 * statistics.median(r['cpu']):.1f} | {r['found']} |")
    lines.append("")
    top = max(thread_counts)
    lines.append(f"overlap/{top} vs sequential/1: "
                 f"{ratio(results, f'overlap/{top}', 'sequential/1')} (goal >= 1.5x); "
                 f"vs sequential/{top}: "
                 f"{ratio(results, f'overlap/{top}', f'sequential/{top}')}; vs opencv/{top}: "
                 f"{ratio(results, f'overlap/{top}', f'opencv/{top}')} (goal >= 1.3x)")
    for t in thread_counts:
        lines.append(f"at {t} thread{'s' if t > 1 else ''}: overlap / sequential "
                     f"{ratio(results, f'overlap/{t}', f'sequential/{t}')}, overlap / opencv "
                     f"{ratio(results, f'overlap/{t}', f'opencv/{t}')}, sequential / opencv "
                     f"{ratio(results, f'sequential/{t}', f'opencv/{t}')}")
    seq = {results[k]["found"] for k in results if not k.startswith("opencv")}
    if len(seq) > 1:
        lines.append(f"WARNING: the pipelines found different detections: {seq}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--refdata", default=os.environ.get("DARKNET_PY_REFDATA",
                                                       os.path.join(REPO, "..", "shared")))
    p.add_argument("--models", default=",".join(m for m, _, _ in MODELS))
    p.add_argument("--limit", type=int, default=128, help="images of coco128 val2017 (max 128)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", default="1,2", help="thread counts (CPU budgets) to measure")
    p.add_argument("--mode", choices=sorted(MODES), default="map")
    p.add_argument("--backend", default="auto", help="the pipelines' backend (default auto)")
    p.add_argument("--no-opencv", action="store_true")
    p.add_argument("--split", default="", help="network thread counts to add as "
                   "overlap/T,netN runners at the largest T (e.g. 1)")
    args = p.parse_args(argv)

    import cv2
    import torch

    from darknet_py.imaging.resize_kernel import compiled_resize, kernel_state
    from darknet_py.infer.backends.factory import make_backend

    compiled_resize(wait=True)          # built before anything is timed, not beside it
    folder = os.path.join(args.refdata, "datasets", "coco128", "images", "val2017")
    images = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                    if f.endswith(".jpg"))[:args.limit]
    thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]
    cpus = usable_cpus()
    print(f"Machine: {cpu_model()}, {len(cpus)} usable CPUs; torch {torch.__version__}, OpenCV "
          f"{cv2.__version__}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    print(f"List: {len(images)} images of coco128 val2017; mode {args.mode} (thresh, NMS, pixel "
          f"boxes = {MODES[args.mode]}); batch 1; {args.repeats} interleaved passes per runner")
    print(f"darknet-py's exact resize: {kernel_state()}")
    print(f"uptime at start: {uptime()}")
    if max(thread_counts) > len(cpus):
        print(f"note: {len(cpus)} usable CPUs: thread counts above it are not CPU budgets")
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    for name, cfg, weights in MODELS:
        if name not in wanted:
            continue
        cfg, weights = os.path.join(args.refdata, cfg), os.path.join(args.refdata, weights)
        runners: Dict[str, tuple] = {}
        described: Dict[str, str] = {}
        for t in thread_counts:
            with pinned(t):
                cv2.setNumThreads(t)
                be = make_backend(cfg, weights, backend=args.backend, device="cpu", threads=t)
                for kind in ("sequential", "overlap"):
                    runners[f"{kind}/{t}"] = (t, pipeline_runner(be, args.mode,
                                                                 kind == "overlap"))
                    described[f"{kind}/{t}"] = be.describe()
                if not args.no_opencv:
                    cv_run = opencv_runner(cfg, weights, be.width, be.height, args.mode)

                    def with_threads(images, run=cv_run, t=t):
                        cv2.setNumThreads(t)
                        return run(images)
                    runners[f"opencv/{t}"] = (t, with_threads)
                    described[f"opencv/{t}"] = f"OpenCV DNN (cpu, setNumThreads({t}))"
                if t == max(thread_counts):
                    for n in (int(v) for v in args.split.split(",") if v.strip()):
                        fixed = fixed_threads_backend(cfg, weights, args.backend, n)
                        runners[f"overlap/{t},net{n}"] = (t, pipeline_runner(fixed, args.mode,
                                                                             True))
                        described[f"overlap/{t},net{n}"] = fixed.describe()
                for key in [k for k in runners if k.split(",")[0].endswith(f"/{t}")]:
                    runners[key][1](images[:4])                      # warm up
        print(f"\n{name}: measuring ({uptime()})", file=sys.stderr, flush=True)
        results = measure(runners, images, args.repeats)
        print()
        print(report(name, results, described, thread_counts))
    print(f"\nuptime at the end: {uptime()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
