#!/usr/bin/env python
"""Training throughput of darknet-py against Darknet's CPU build, side by side in one run.

Darknet runs on one core (``taskset -c 0``, ``OMP_NUM_THREADS=1``) for the whole measurement
while the darknet-py variants (fp32, bf16) run one after the other on another core, so every
process shares the machine (memory bandwidth, caches) with the same kind of neighbour. Each
process trains the same cfg from the same start weights for ``--iterations`` iterations; the
seconds per iteration are read from the iteration lines both print
(`` 2: 207.98, 206.93 avg loss, 0.000000 rate, 14.57 seconds, 32 images, ...``) and the first
``--warmup`` iterations are dropped. Printed: median seconds per iteration, images per second
and the ratio to Darknet::

    python tools/bench_train.py --data obj.data --cfg yolov4-tiny-facemask3-320.cfg \\
        --weights yolov4-tiny.conv.29 --darknet ../darknet/darknet --mosaic 0

``--mosaic 0``: a Darknet built without OpenCV refuses ``mosaic=1``; the copy of the cfg that
both implementations train then has ``mosaic=0`` (the loader runs beside the network in both, so
this changes little). Without ``--darknet`` (and no ``darknet`` on PATH) only the darknet-py
variants run, with ratios to the first one. Nothing is written next to the inputs: the cfg copy,
the .data copy (``backup=`` replaced), the logs and the checkpoints go to
``<folder>/<run>/`` in a temporary folder (``--keep DIR`` to keep them).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_curve import data_with  # noqa: E402  (one .data copier for the tools)

ITERATION_LINE = re.compile(r"^\s*(\d+): [-\d.naif]+, [-\d.naif]+ avg loss, [-\d.e]+ rate, "
                            r"([\d.]+) seconds, (\d+) images")

#: darknet-py variant -> extra detector-train flags
VARIANTS = {"fp32": ["-no_bf16"], "bf16": ["-bf16"]}


@dataclass
class Run:
    name: str
    seconds: List[float]
    images_per_iteration: int

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def images_per_s(self) -> float:
        return self.images_per_iteration / self.median_s


def parse_iterations(text: str, warmup: int) -> Run:
    """Seconds per iteration (after ``warmup``) and images per iteration from a train log."""
    seconds, images = [], []
    for line in text.splitlines():
        m = ITERATION_LINE.match(line)
        if m:
            seconds.append(float(m.group(2)))
            images.append(int(m.group(3)))
    if len(seconds) <= warmup:
        raise ValueError(f"only {len(seconds)} iteration lines (need more than --warmup {warmup})")
    per_iteration = images[1] - images[0] if len(images) > 1 else images[0]
    return Run("", seconds[warmup:], per_iteration)


def prepared_inputs(data: Path, cfg: Path, iterations: int, mosaic: Optional[int],
                    folder: Path, name: str) -> Tuple[Path, Path]:
    """``<folder>/<name>/``: a copy of ``cfg`` (``max_batches`` and ``mosaic`` replaced, the rest
    kept) and of ``data`` (train_curve's copy: paths made absolute, ``backup=`` its own folder)."""
    run_dir = folder / name
    run_dir.mkdir()
    cfg_lines = []
    for line in cfg.read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if key == "max_batches":
            line = f"max_batches={iterations}"
        elif key == "mosaic" and mosaic is not None:
            line = f"mosaic={mosaic}"
        cfg_lines.append(line)
    out_cfg = run_dir / f"{name}.cfg"
    out_cfg.write_text("\n".join(cfg_lines) + "\n")
    (run_dir / "backup").mkdir()
    return data_with(data, run_dir, saveweights=None, backup=None), out_cfg


def cores() -> List[int]:
    """The cores this process may use: Darknet gets the first, darknet-py the second."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]


def pinned(slot: int, argv: Sequence[str]) -> List[str]:
    available = cores()
    core = available[min(slot, len(available) - 1)]
    return (["taskset", "-c", str(core)] if shutil.which("taskset") else []) + list(argv)


def one_thread_env() -> Dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def darknet_py_argv(data: Path, cfg: Path, weights: Path, flags: Sequence[str],
                    workers: int, seed: int) -> List[str]:
    return [sys.executable, "-c", "from darknet_py.cli import main; main()",
            "detector", "train", str(data), str(cfg), str(weights), "-dont_show",
            "-workers", str(workers), "-seed", str(seed), *flags]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="obj.data (train= is used)")
    p.add_argument("--cfg", type=Path, required=True)
    p.add_argument("--weights", type=Path, required=True, help="start weights, e.g. conv.29")
    p.add_argument("--darknet", default=None,
                   help="Darknet binary (default: darknet on PATH; none: darknet-py only)")
    p.add_argument("--variants", default="fp32,bf16",
                   help=f"darknet-py variants, from {','.join(VARIANTS)} (default fp32,bf16)")
    p.add_argument("--iterations", type=int, default=12, help="per darknet-py variant")
    p.add_argument("--warmup", type=int, default=2, help="iterations dropped from each run")
    p.add_argument("--mosaic", type=int, choices=(0, 1), default=None,
                   help="override [net] mosaic in the copies (0 for a Darknet without OpenCV)")
    p.add_argument("--workers", type=int, default=1, help="darknet-py loader processes")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", type=Path, default=None, help="use and keep this folder")
    args = p.parse_args(argv)

    for path in (args.data, args.cfg, args.weights):
        if not path.is_file():
            p.error(f"{path}: no such file")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        p.error(f"--variants: unknown {unknown or variants}; choose from {', '.join(VARIANTS)}")
    darknet = args.darknet or shutil.which("darknet")
    if darknet and not os.access(darknet, os.X_OK):
        p.error(f"--darknet {darknet}: not an executable file")

    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_train_"))
    folder.mkdir(parents=True, exist_ok=True)
    env = one_thread_env()
    dn_proc = dn_log = None
    dn_log_path = folder / "darknet" / "train.log"
    try:
        if darknet:
            # Darknet trains until it is stopped: enough iterations to outlast the variants
            dn_data, dn_cfg = prepared_inputs(args.data, args.cfg, 100000, args.mosaic,
                                              folder, "darknet")
            dn_log = open(dn_log_path, "w")
            dn_proc = subprocess.Popen(
                pinned(0, [darknet, "detector", "train", str(dn_data), str(dn_cfg),
                           str(args.weights), "-dont_show"]),
                stdout=dn_log, stderr=subprocess.STDOUT, env=env)
        runs: List[Run] = []
        for v in variants:
            data, cfg = prepared_inputs(args.data, args.cfg, args.iterations, args.mosaic,
                                        folder, f"darknet-py-{v}")
            log = folder / f"darknet-py-{v}" / "train.log"
            print(f"darknet-py {v}: {args.iterations} iterations ...", flush=True)
            with open(log, "w") as fh:
                rc = subprocess.call(pinned(1 if darknet else 0, darknet_py_argv(
                    data, cfg, args.weights, VARIANTS[v], args.workers, args.seed)),
                    stdout=fh, stderr=subprocess.STDOUT, env=env)
            text = log.read_text()
            if rc != 0:
                print(text[-2000:], file=sys.stderr)
                print(f"darknet-py {v} failed (exit {rc})", file=sys.stderr)
                return 1
            run = parse_iterations(text, args.warmup)
            run.name = f"darknet-py {v}"
            runs.append(run)
        reference = runs[0]
        if dn_proc is not None:
            time.sleep(0.5)
            if dn_proc.poll() is not None:
                print(dn_log_path.read_text()[-2000:], file=sys.stderr)
                print(f"Darknet exited early (exit {dn_proc.returncode})", file=sys.stderr)
                return 1
            dn_proc.terminate()
            dn_proc.wait()
            dn_log.close()
            reference = parse_iterations(dn_log_path.read_text(), args.warmup)
            reference.name = f"Darknet ({darknet})"
            runs.insert(0, reference)
    finally:
        if dn_proc is not None and dn_proc.poll() is None:
            dn_proc.kill()
            dn_proc.wait()
        if dn_log is not None and not dn_log.closed:
            dn_log.close()
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)

    print(f"\n{args.cfg.name}, {reference.images_per_iteration} images per iteration, "
          f"one core and one thread per process{', mosaic=%d' % args.mosaic if args.mosaic is not None else ''}")
    print(f"| implementation | iterations timed | s/iteration (median) | images/s | ratio |")
    print(f"|---|---|---|---|---|")
    for run in runs:
        if len(run.seconds) < 5:
            print(f"note: only {len(run.seconds)} timed iterations of {run.name}: raise "
                  f"--iterations for a steadier median", file=sys.stderr)
    for run in runs:
        print(f"| {run.name} | {len(run.seconds)} | {run.median_s:.2f} | {run.images_per_s:.2f} "
              f"| {reference.median_s / run.median_s:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
