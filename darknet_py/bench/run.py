"""The benchmark run: every runner built, timed interleaved network-only then end to end, the
Darknet binary afterwards, and the report put together."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict
from typing import Any, Callable, Dict, List

from ..devices import usable_cpus
from ..errors import DataError, UsageError
from ..imaging.resize_kernel import compiled_resize
from .config import NMS_THRESH, THRESH, BenchConfig
from .darknet import darknet_measurement
from .machine import machine_info
from .measure import add_ratios, measure_interleaved
from .opencv import opencv_runners
from .runners import BenchContext, runtime_runners, torch_runners


def run_benchmark(config: BenchConfig, log: Callable[[str], None] = lambda s: None
                  ) -> Dict[str, Any]:
    """Run the whole benchmark; returns the JSON-able report (see
    :func:`~darknet_py.bench.report.format_report`)."""
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
    # the compiled resize (when installed) is built before anything is timed, not beside it
    compiled_resize(wait=True)
    variants = list(config.variants)
    notes: List[str] = []
    skipped: List[Dict[str, str]] = []
    build: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="darknet_py_bench_") as workdir:
        ctx = BenchContext(config, workdir)
        log(f"benchmark: {os.path.basename(config.cfg)} {ctx.width}x{ctx.height} batch "
            f"{config.batch}, {threads} threads, {config.runs} runs")
        runners = runtime_runners(ctx, [v for v in variants if v == "auto"], skipped, build,
                                  threads)
        runners += torch_runners(ctx, variants, notes, skipped, build)
        runners += runtime_runners(ctx, [v for v in variants if v != "auto"], skipped, build,
                                   threads)
        runners += opencv_runners(ctx, variants, skipped)
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
                m = darknet_measurement(ctx, binary, config.runs, config.warmup, threads,
                                        skipped, notes)
                if m is not None:
                    measurements.append(m)
        if ctx.synthetic_image:
            notes.append("end-to-end input: a synthetic 640x480 JPEG (no --image given)")
        machine = machine_info()
    machine["threads"] = threads
    add_ratios(measurements)
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
