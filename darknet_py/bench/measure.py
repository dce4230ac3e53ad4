"""Measurements: every runner timed interleaved (:func:`darknet_py.timing.interleave`), summed up
as median, spread and CPU time per call, and compared with the peers."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import numpy as np

from ..timing import interleave
from .config import PEERS

if TYPE_CHECKING:
    from .runners import Runner


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


def _percentile(sorted_values: List[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q
    lo, hi = int(np.floor(k)), int(np.ceil(k))
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def summarise(runner: "Runner", mode: str, batch: int, wall: List[float], cpu: List[float],
              interleaved: bool = True) -> Measurement:
    """One runner's wall (and process CPU) seconds per call -> its :class:`Measurement`."""
    ws = sorted(wall)
    med = statistics.median(ws)
    return Measurement(
        runner=runner.key, label=runner.label, device=runner.device, mode=mode, batch=batch,
        runs=len(ws), median_ms=med * 1e3, mean_ms=statistics.fmean(ws) * 1e3,
        p10_ms=_percentile(ws, 0.1) * 1e3, p90_ms=_percentile(ws, 0.9) * 1e3,
        min_ms=ws[0] * 1e3, img_per_s=batch / med if med > 0 else float("inf"),
        cpu_ms=(statistics.median(cpu) * 1e3) if cpu else None, interleaved=interleaved)


def measure_interleaved(runners: Sequence["Runner"], mode: str, runs: int, warmup: int,
                        batch: int) -> List[Measurement]:
    """Time every runner ``runs`` times, round-robin (one call each per round), after
    ``warmup`` rounds; the CPU time is reported for the CPU runners only."""
    calls = {r.key: (r, r.network if mode == "network" else r.end_to_end) for r in runners}
    calls = {k: (r, fn) for k, (r, fn) in calls.items() if fn is not None}
    samples = interleave({k: fn for k, (_, fn) in calls.items()}, runs, warmup,
                         sync={k: r.sync for k, (r, _) in calls.items()})
    return [summarise(r, mode, batch, samples[k].wall, samples[k].cpu if r.device == "cpu" else [])
            for k, (r, _) in calls.items()]


def add_ratios(measurements: List[Measurement]) -> None:
    """Each measurement's median over each peer's (same mode), in ``ratios``."""
    for mode in ("network", "end_to_end"):
        group = [m for m in measurements if m.mode == mode]
        peers = {m.runner: m for m in group if m.runner in PEERS}
        for m in group:
            for key, p in peers.items():
                if key != m.runner and p.median_ms > 0:
                    m.ratios[key] = m.median_ms / p.median_ms
