"""The Darknet peer: a ``darknet`` binary's own ``detector test`` timing, in its own process."""
from __future__ import annotations

import os
import re
import subprocess
from typing import Dict, List, Optional

from .config import THRESH
from .measure import Measurement, summarise
from .runners import BenchContext, Runner

_PREDICTED = re.compile(r"Predicted in ([0-9.]+) milli-seconds")


def darknet_measurement(ctx: BenchContext, binary: str, runs: int, warmup: int, threads: int,
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
    cfg = ctx.sized_cfg()
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
    return summarise(runner, "network", 1, times[warmup:], [], interleaved=False)
