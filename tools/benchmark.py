#!/usr/bin/env python
"""Benchmark darknet-py against OpenCV DNN (and Darknet, if on PATH).

One model (same options as ``darknet-py bench``)::

    python tools/benchmark.py cfg/yolov4-tiny.cfg yolov4-tiny.weights --json out.json

The standard suite (yolov4-tiny 416, yolov3-tiny 416, yolo-fastest-1.1 320 at batch 1 and 4,
from the reference-data folder) as a Markdown table, as in ``docs/benchmarks.md``::

    python tools/benchmark.py --suite [--refdata ../shared] [--runs 30] [--json-dir results/]

Unlike the ``darknet-py bench`` command, this script sets ``OMP_WAIT_POLICY=PASSIVE`` (unless the
environment already sets it) *before* PyTorch is imported: with the default policy PyTorch's
OpenMP threads spin-wait between operations, which on a machine whose CPUs are shared with other
processes makes multi-threaded inference many times slower (OpenCV's own thread pool does not
spin that way). The policy in force is printed with the results.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

#: (name, cfg, weights, size) relative to the reference-data folder
SUITE = [
    ("yolov4-tiny", "cfg/darknet/yolov4-tiny.cfg", "weights/yolov4-tiny.weights", 416),
    ("yolov3-tiny", "cfg/darknet/yolov3-tiny.cfg", "weights/yolov3-tiny.weights", 416),
    ("yolo-fastest-1.1", "weights/yolo-fastest/yolo-fastest-1.1.cfg",
     "weights/yolo-fastest/yolo-fastest-1.1.weights", 320),
]


def run_suite(argv) -> int:
    import argparse
    import json

    from darknet_py.infer.bench import BenchConfig, format_report, parse_variants, run_benchmark

    p = argparse.ArgumentParser(description="darknet-py vs OpenCV DNN on the standard models")
    p.add_argument("--suite", action="store_true")
    p.add_argument("--refdata", default=os.environ.get("DARKNET_PY_REFDATA",
                                                       os.path.join(REPO, "..", "shared")))
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--batches", default="1,4")
    p.add_argument("--variants", default="exact,fast,opencv,darknet,cuda-fp32,cuda-fp16,"
                                          "cuda-bf16,opencv-cuda,opencv-cuda-fp16")
    p.add_argument("--models", default=",".join(name for name, *_ in SUITE))
    p.add_argument("--image", default=None, help="default: <refdata>/images/dog.jpg")
    p.add_argument("--json-dir", default=None)
    args = p.parse_args(argv)
    image = args.image or os.path.join(args.refdata, "images", "dog.jpg")
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    reports = []
    for name, cfg, weights, size in SUITE:
        if name not in wanted:
            continue
        for batch in (int(b) for b in args.batches.split(",")):
            config = BenchConfig(cfg=os.path.join(args.refdata, cfg),
                                 weights=os.path.join(args.refdata, weights), width=size,
                                 height=size, batch=batch, runs=args.runs, warmup=args.warmup,
                                 threads=args.threads, image=image if os.path.exists(image)
                                 else None, variants=parse_variants(args.variants))
            report = run_benchmark(config, log=lambda s: print(s, file=sys.stderr))
            report["name"] = name
            print(format_report(report), file=sys.stderr)
            print(file=sys.stderr)
            reports.append(report)
            if args.json_dir:
                os.makedirs(args.json_dir, exist_ok=True)
                with open(os.path.join(args.json_dir, f"{name}_{size}_b{batch}.json"), "w") as f:
                    json.dump(report, f, indent=2)
    print(markdown_table(reports))
    return 0


def markdown_table(reports) -> str:
    """One row per (model, batch, mode, runner): median ms, img/s, CPU ms, ratio to OpenCV."""
    if not reports:
        return "(no results)"
    mach = reports[0]["machine"]
    out = [f"Machine: {mach.get('cpu')}, {mach.get('usable_cpus')} usable CPUs, threads "
           f"{mach.get('threads')} (torch and OpenCV), torch {mach.get('torch')}, OpenCV "
           f"{mach.get('opencv')}, OMP_WAIT_POLICY={mach.get('omp_wait_policy')}, load average "
           f"(1/5/15 min) when the last run ended {mach.get('load_average')}", "",
           "| model | batch | mode | runner | median ms | p10-p90 ms | img/s | CPU ms/call | "
           "vs OpenCV |", "|---|---|---|---|---|---|---|---|---|"]
    for rep in reports:
        m = rep["model"]
        for r in rep["results"]:
            ratio = r["ratios"].get("opencv")
            ratio_s = f"{ratio:.2f}x" if ratio is not None else ("1.00x" if r["runner"] == "opencv"
                                                                  else "-")
            cpu = f"{r['cpu_ms']:.1f}" if r.get("cpu_ms") else "-"
            out.append(f"| {rep.get('name', os.path.basename(m['cfg']))}-{m['width']} | "
                       f"{m['batch']} | {r['mode'].replace('_', '-')} | {r['label']} | "
                       f"{r['median_ms']:.1f} | {r['p10_ms']:.1f}-{r['p90_ms']:.1f} | "
                       f"{r['img_per_s']:.1f} | {cpu} | {ratio_s} |")
    return "\n".join(out)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--suite" in argv:
        return run_suite(argv)
    from darknet_py.cli import main as cli_main
    return cli_main(["bench"] + argv, prog_name="benchmark.py", standalone_mode=True) or 0


if __name__ == "__main__":
    sys.exit(main())
