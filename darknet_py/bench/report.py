"""The benchmark report: the human-readable table, and the JSON file for tracking."""
from __future__ import annotations

import json
import os
from typing import Any, Dict

from .config import PEERS


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
    if mach.get("resize"):
        lines.append(f"darknet-py's exact resize: {mach['resize']}")
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
    """The whole report as JSON (``--json``), its folder made if needed."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=False)
        f.write("\n")
