#!/usr/bin/env python
"""Benchmark darknet-py against ONNX Runtime, OpenVINO, OpenCV DNN (and Darknet, if on PATH).

One model (same options as ``darknet-py bench``)::

    python tools/benchmark.py cfg/yolov4-tiny.cfg yolov4-tiny.weights --json out.json

The standard suite (yolov4-tiny 416, yolov3-tiny 416, yolo-fastest-1.1 320 and yolov4 416 with
random weights, at batch 1 and 8, from the reference-data folder) as a Markdown table, as in
``docs/benchmarks.md``::

    python tools/benchmark.py --suite [--refdata ../shared] [--runs 30] [--threads 1] [--json-dir results/]

Throughput of ``detector map`` / ``detector valid`` (the Pipeline with their thresholds, batch 1
as Darknet runs them) over coco128 val2017, in images per second, per backend::

    python tools/benchmark.py --coco128 [--threads 1] [--models yolo-fastest-1.1] [--backends auto,fast]

int8 against fp32 (``-precision int8``): network-only latency of the int8 model and of fp32 ONNX
Runtime, interleaved, and Darknet's mAP@0.5 of both on coco128 val2017, per model; the int8 models
are calibrated on coco128 train2017 (``--calib LIST`` for another list), once, then cached::

    python tools/benchmark.py --int8 [--threads 1] [--runs 30] [--models yolov4-tiny,yolov3-tiny]

The suite's and ``--coco128``'s int8 runners (``openvino-int8``, ``openvino:int8``) calibrate on
coco128 train2017 too.

The script imports ``darknet_py`` before PyTorch, as every user's program does, so
``OMP_WAIT_POLICY=PASSIVE`` is in force unless the environment sets a policy: with the default
policy PyTorch's OpenMP threads spin-wait between operations, which on a machine whose CPUs are
shared with other processes makes multi-threaded inference many times slower. A policy set in the
environment also decides ONNX Runtime's spinning (unset, its thread race tries both). The
policy in force is printed with the results.
"""
from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import darknet_py  # noqa: E402,F401  (OMP_WAIT_POLICY before torch, the user's policy on record)

#: (name, cfg, weights, size) relative to the reference-data folder
SUITE = [
    ("yolov4-tiny", "cfg/darknet/yolov4-tiny.cfg", "weights/yolov4-tiny.weights", 416),
    ("yolov3-tiny", "cfg/darknet/yolov3-tiny.cfg", "weights/yolov3-tiny.weights", 416),
    ("yolo-fastest-1.1", "weights/yolo-fastest/yolo-fastest-1.1.cfg",
     "weights/yolo-fastest/yolo-fastest-1.1.weights", 320),
    # no real weights in the reference data: random ones (timing does not depend on the values)
    ("yolov4", "cfg/darknet/yolov4.cfg", None, 416),
]
DEFAULT_SUITE_MODELS = "yolov4-tiny,yolov3-tiny,yolo-fastest-1.1,yolov4"
DEFAULT_VARIANTS = ("auto,exact,fast,fast-bf16,onnxruntime,openvino,openvino-bf16,openvino-int8,"
                    "opencv,darknet,cuda-fp32,cuda-fp16,cuda-bf16,opencv-cuda,opencv-cuda-fp16")


def coco128_images(refdata: str, split: str):
    """The coco128 images of ``split`` (train2017: what the int8 runners calibrate on)."""
    folder = os.path.join(refdata, "datasets", "coco128", "images", split)
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".jpg"))


def random_weights(cfg: str, size: int, folder: str) -> str:
    """A .weights file of random values for ``cfg`` (made once per folder)."""
    path = os.path.join(folder, os.path.basename(cfg) + f".random{size}.weights")
    if not os.path.exists(path):
        import torch

        from darknet_py.model.network import Network
        torch.manual_seed(0)
        net = Network.from_cfg(cfg, width=size, height=size)
        with torch.no_grad():
            for prm in net.parameters():
                prm.uniform_(-0.05, 0.05)
            for name, buf in net.named_buffers():
                if "running_var" in name:
                    buf.uniform_(0.5, 1.5)
        net.save_weights(path)
    return path


def run_suite(argv) -> int:
    import argparse
    import json

    from darknet_py.bench import BenchConfig, format_report, parse_variants, run_benchmark

    p = argparse.ArgumentParser(description="darknet-py vs OpenCV DNN on the standard models")
    p.add_argument("--suite", action="store_true")
    p.add_argument("--refdata", default=os.environ.get("DARKNET_PY_REFDATA",
                                                       os.path.join(REPO, "..", "shared")))
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--variants", default=DEFAULT_VARIANTS)
    p.add_argument("--models", default=DEFAULT_SUITE_MODELS)
    p.add_argument("--no-end-to-end", action="store_true")
    p.add_argument("--image", default=None, help="default: <refdata>/images/dog.jpg")
    p.add_argument("--calib", default=None,
                   help="image list of the int8 runner (default: coco128 train2017)")
    p.add_argument("--json-dir", default=None)
    args = p.parse_args(argv)
    image = args.image or os.path.join(args.refdata, "images", "dog.jpg")
    calibration = args.calib or coco128_images(args.refdata, "train2017")
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    reports = []
    import tempfile
    scratch = os.path.join(tempfile.gettempdir(), "darknet_py_bench_weights")
    os.makedirs(scratch, exist_ok=True)
    for name, cfg, weights, size in SUITE:
        if name not in wanted:
            continue
        cfg_path = os.path.join(args.refdata, cfg)
        weights_path = os.path.join(args.refdata, weights) if weights else \
            random_weights(cfg_path, size, scratch)
        for batch in (int(b) for b in args.batches.split(",")):
            config = BenchConfig(cfg=cfg_path, weights=weights_path, width=size,
                                 height=size, batch=batch, runs=args.runs, warmup=args.warmup,
                                 threads=args.threads, image=image if os.path.exists(image)
                                 else None, variants=parse_variants(args.variants),
                                 end_to_end=not args.no_end_to_end, calibration=calibration)
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


PEER_COLUMNS = (("opencv", "vs OpenCV"), ("onnxruntime", "vs ORT fp32"),
                ("openvino-bf16", "vs OpenVINO bf16"))


def markdown_table(reports) -> str:
    """One row per (model, batch, mode, runner): median ms, img/s, CPU ms, ratios to the peers."""
    if not reports:
        return "(no results)"
    mach = reports[0]["machine"]
    out = [f"Machine: {mach.get('cpu')}, {mach.get('usable_cpus')} usable CPUs, threads "
           f"{mach.get('threads')}, torch {mach.get('torch')}, OpenCV "
           f"{mach.get('opencv')}, OMP_WAIT_POLICY={mach.get('omp_wait_policy')}; load average "
           f"(1/5/15 min) at the end of each run: "
           + ", ".join(str(r["machine"].get("load_average")) for r in reports), "",
           "| model | batch | mode | runner | median ms | p10-p90 ms | img/s | CPU ms/call | "
           + " | ".join(t for _, t in PEER_COLUMNS) + " |",
           "|---|---|---|---|---|---|---|---|" + "---|" * len(PEER_COLUMNS)]
    for rep in reports:
        m = rep["model"]
        for r in rep["results"]:
            ratios = []
            for key, _ in PEER_COLUMNS:
                ratio = r["ratios"].get(key)
                ratios.append(f"{ratio:.2f}x" if ratio is not None
                              else ("1.00x" if r["runner"] == key else "-"))
            cpu = f"{r['cpu_ms']:.1f}" if r.get("cpu_ms") else "-"
            out.append(f"| {rep.get('name', os.path.basename(m['cfg']))}-{m['width']} | "
                       f"{m['batch']} | {r['mode'].replace('_', '-')} | {r['label']} | "
                       f"{r['median_ms']:.1f} | {r['p10_ms']:.1f}-{r['p90_ms']:.1f} | "
                       f"{r['img_per_s']:.1f} | {cpu} | " + " | ".join(ratios) + " |")
    return "\n".join(out)


def run_coco128(argv) -> int:
    """img/s of ``detector map`` (thresh 0.005, NMS 0.45) and ``detector valid`` (thresh 0.001,
    NMS 0.6, pixel boxes) over coco128 val2017: the Pipeline those commands run, batch 1."""
    import argparse
    import time

    import torch

    from darknet_py.infer.backends.factory import make_backend
    from darknet_py.infer.pipeline import Pipeline

    p = argparse.ArgumentParser(description="detector map/valid throughput on coco128")
    p.add_argument("--coco128", action="store_true")
    p.add_argument("--refdata", default=os.environ.get("DARKNET_PY_REFDATA",
                                                       os.path.join(REPO, "..", "shared")))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--models", default="yolov4-tiny,yolov3-tiny,yolo-fastest-1.1")
    p.add_argument("--backends", default="auto,exact,fast,fast:bf16,onnxruntime,openvino,"
                                         "openvino:bf16,openvino:int8")
    p.add_argument("--limit", type=int, default=128, help="images (of the 128)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    images = coco128_images(args.refdata, "val2017")[:args.limit]
    print(f"| model | backend | map img/s | valid img/s |  (coco128 val2017, {len(images)} images, "
          f"threads {args.threads or torch.get_num_threads()}, load {os.getloadavg()})")
    print("|---|---|---|---|")
    for name, cfg, weights, size in SUITE:
        if name not in args.models.split(",") or weights is None:
            continue
        for spec in args.backends.split(","):
            backend, _, precision = spec.partition(":")
            try:
                be = make_backend(os.path.join(args.refdata, cfg),
                                  os.path.join(args.refdata, weights), backend=backend,
                                  device="cpu", precision=precision or "fp32",
                                  threads=args.threads, calibration=coco128_images(
                                      args.refdata, "train2017") if precision == "int8" else None)
            except Exception as e:  # a runtime that is not installed here
                print(f"| {name} | {spec} | skipped: {type(e).__name__} | |")
                continue
            rates = []
            for thresh, nms, pixel in ((0.005, 0.45, False), (0.001, 0.6, True)):
                pipe = Pipeline(be, thresh=thresh, hier_thresh=0.5, nms=nms, batch_size=1,
                                pixel_boxes=pixel)
                pipe.run(images[:2])
                t0 = time.perf_counter()
                for _ in pipe.iterate(images):
                    pass
                rates.append(len(images) / (time.perf_counter() - t0))
            label = f"{spec} ({be.name} {be.precision})" if backend == "auto" else spec
            print(f"| {name} | {label} | {rates[0]:.1f} | {rates[1]:.1f} |", flush=True)
    return 0


def run_int8(argv) -> int:
    """Per model: network-only median latency of ``onnxruntime`` (fp32) and ``openvino-int8``
    timed interleaved by the bench runners, and Darknet's mAP@0.5 (``detector map``: objectness
    0.005, NMS 0.45, IoU 0.5, ``-points 0``) of both on coco128 val2017."""
    import argparse

    from darknet_py.bench import BenchConfig, run_benchmark
    from darknet_py.data.datacfg import read_names
    from darknet_py.infer.backends.factory import make_backend
    from darknet_py.infer.evaluate import collect_map_inputs
    from darknet_py.metrics import darknet_map

    p = argparse.ArgumentParser(description="int8 against fp32 ONNX Runtime: speed and mAP")
    p.add_argument("--int8", action="store_true")
    p.add_argument("--refdata", default=os.environ.get("DARKNET_PY_REFDATA",
                                                       os.path.join(REPO, "..", "shared")))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--models", default="yolov4-tiny,yolov3-tiny")
    p.add_argument("--calib", default=None, help="image list (default: coco128 train2017)")
    p.add_argument("--no-map", action="store_true", help="time only")
    args = p.parse_args(argv)
    calibration = args.calib or coco128_images(args.refdata, "train2017")
    valid = coco128_images(args.refdata, "val2017")
    names = read_names(os.path.join(args.refdata, "cfg", "darknet", "coco.names"))
    rows = []
    for name, cfg, weights, size in SUITE:
        if name not in args.models.split(",") or weights is None:
            continue
        cfg, weights = os.path.join(args.refdata, cfg), os.path.join(args.refdata, weights)
        report = run_benchmark(BenchConfig(
            cfg=cfg, weights=weights, width=size, height=size, runs=args.runs,
            threads=args.threads, variants=("onnxruntime", "openvino-int8"), end_to_end=False,
            calibration=calibration), log=lambda s: print(s, file=sys.stderr))
        ms = {r["runner"]: r["median_ms"] for r in report["results"]}
        if len(ms) < 2:
            print(f"{name}: not measured: {report['skipped']}", file=sys.stderr)
            continue
        maps = {}
        for precision, backend in (("fp32", "onnxruntime"), ("int8", "openvino")):
            if args.no_map:
                break
            be = make_backend(cfg, weights, backend=backend, device="cpu", width=size,
                              height=size, precision=precision, calibration=calibration
                              if precision == "int8" else None)
            inputs = collect_map_inputs(be, images=valid, batch_size=4)
            maps[precision] = 100 * darknet_map(inputs.detections, inputs.truths, be.classes,
                                                names, iou_thresh=0.5).mean_ap
        rows.append((name, size, ms["onnxruntime"], ms["openvino-int8"], maps,
                     report["machine"].get("load_average")))
    print(f"network only, batch 1, {args.threads} thread(s), {args.runs} interleaved runs, "
          f"medians; mAP@0.5: coco128 val2017 ({len(valid)} images); int8 calibrated on "
          f"{args.calib or 'coco128 train2017'}")
    print("| model | fp32 ORT ms | int8 ms | speed-up | mAP fp32 | mAP int8 | difference | "
          "load average |")
    print("|---|---|---|---|---|---|---|---|")
    for name, size, fp32, int8, maps, load in rows:
        m = [f"{maps[k]:.2f} %" if k in maps else "-" for k in ("fp32", "int8")]
        d = f"{maps['int8'] - maps['fp32']:+.2f}" if len(maps) == 2 else "-"
        print(f"| {name}-{size} | {fp32:.1f} | {int8:.1f} | {fp32 / int8:.2f}x | {m[0]} | "
              f"{m[1]} | {d} | {load} |")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--suite" in argv:
        return run_suite(argv)
    if "--int8" in argv:
        return run_int8(argv)
    if "--coco128" in argv:
        return run_coco128(argv)
    from darknet_py.cli import main as cli_main
    return cli_main(["bench"] + argv, prog_name="benchmark.py", standalone_mode=True) or 0


if __name__ == "__main__":
    sys.exit(main())
