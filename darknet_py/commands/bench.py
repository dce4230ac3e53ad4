"""``darknet-py bench cfg weights``: time darknet-py against OpenCV DNN (and Darknet) in one run.

Prints median latency, images/s and the ratio to each peer, network-only and end-to-end, with the
machine description; ``--json`` writes the full report for tracking. See :mod:`darknet_py.bench`.
"""
from __future__ import annotations

import click

from ..bench import BenchConfig, format_report, parse_variants, run_benchmark, write_json
from ..errors import UsageError
from ._common import eprint

GROUP = None


@click.command("bench")
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.argument("weights", type=click.Path(dir_okay=False))
@click.option("--width", type=int, default=None, help="Network input width (default: the cfg's).")
@click.option("--height", type=int, default=None, help="Network input height (default: the cfg's).")
@click.option("--batch", type=int, default=1, show_default=True, help="Images per forward pass.")
@click.option("--runs", type=int, default=None, help="Timed runs per runner [20; --quick: 3].")
@click.option("--warmup", type=int, default=None, help="Untimed warm-up runs [3; --quick: 1].")
@click.option("--threads", type=int, default=None,
              help="CPU threads for PyTorch and OpenCV alike [usable CPUs].")
@click.option("--image", type=click.Path(dir_okay=False), default=None,
              help="Image for the end-to-end figures [a synthetic 640x480 JPEG].")
@click.option("--variants", default=None,
              help="Comma-separated runners: auto (the default backend), exact, fast, "
                   "fast-bf16, fast-compile, onnxruntime, openvino, openvino-bf16, "
                   "openvino-int8 (needs --calib), opencv, darknet, cuda-fp32, cuda-fp16, "
                   "cuda-bf16, opencv-cuda, opencv-cuda-fp16 [all but fast-compile].")
@click.option("--calib", "calibration", type=click.Path(dir_okay=False), default=None,
              help="Image list the openvino-int8 runner is calibrated on (as -precision int8 "
                   "-calib; made once, cached).")
@click.option("--no-end-to-end", is_flag=True, help="Time the forward pass only.")
@click.option("--quick", is_flag=True,
              help="Few runs (3 + 1 warm-up): a smoke test, not a measurement.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the report as JSON to this file.")
@click.option("--darknet", "darknet_binary", type=click.Path(dir_okay=False), default=None,
              help="Darknet binary to time [`darknet` on PATH].")
def COMMAND(cfg, weights, width, height, batch, runs, warmup, threads, image, variants,
            calibration, no_end_to_end, quick, json_path, darknet_binary):
    """Benchmark CFG + WEIGHTS: darknet-py (exact and fast paths) vs OpenCV DNN vs Darknet."""
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    for name, v in (("--width", width), ("--height", height)):
        if v is not None and (v < 1 or v % 32):
            raise UsageError(f"{name} must be a positive multiple of 32, got {v}")
    config = BenchConfig(
        cfg=cfg, weights=weights, width=width, height=height, batch=batch,
        runs=runs if runs is not None else (3 if quick else 20),
        warmup=warmup if warmup is not None else (1 if quick else 3),
        threads=threads, image=image, variants=parse_variants(variants),
        end_to_end=not no_end_to_end, darknet_binary=darknet_binary, calibration=calibration)
    report = run_benchmark(config, log=eprint)
    click.echo(format_report(report))
    if json_path:
        write_json(report, json_path)
        eprint(f"report written to {json_path}")
