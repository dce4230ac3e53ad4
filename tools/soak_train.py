#!/usr/bin/env python
"""Long-running reliability checks of ``darknet-py detector train`` (outside CI).

Two modes, both on a synthetic "shapes" dataset (rectangles, ellipses and triangles on noise,
three classes, YOLO labels) and the repository's ``cfg/yolov4-tiny-obj.cfg`` shrunk to a small
input size, trained from scratch on the CPU:

``kill``  -- SIGKILL loop. Each trial starts training (resuming from ``<cfg>_last.weights`` when
            there is one, as a user would after a crash), waits for a random number of iteration
            lines plus a random delay, and kills the process with SIGKILL (or SIGTERM/SIGINT for
            some trials with ``--signals``). After every trial each ``*.weights`` file in the
            backup folder must load completely into the cfg (no byte missing or left over) with
            finite values, a checkpoint that was good before the trial must still be good (or
            replaced by a newer good one), and a resumed run must continue from the saved
            ``seen``. Reports trials, kills that landed while a checkpoint was being written,
            files lost or corrupt (must be 0) and stale temporary files.

``soak``  -- trains for ``--minutes`` and samples the resident memory (RSS of the trainer and its
            data-loader workers) and the iteration times. After a warm-up, memory must not grow
            (linear trend below ``--max-rss-growth-mb`` per hour) and throughput must not decay
            (median iteration time of the last fifth within ``--max-slowdown`` of the first
            fifth). Prints a summary; exit code 1 when a check fails.

    python tools/soak_train.py kill --trials 20
    python tools/soak_train.py soak --minutes 10 --workers 2
    python tools/soak_train.py kill --trials 50 --size 128 --keep /tmp/killwork

Everything happens in a temporary folder (``--keep DIR`` to use and keep a folder).
"""
from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ITER_LINE = re.compile(r"^ (\d+): ([-\d.naif]+), ([-\d.naif]+) avg loss, [-\d.e+]+ rate, "
                       r"([\d.]+) seconds")


# ----------------------------------------------------------------------------- data
def make_shapes_dataset(root: Path, n_images: int = 64, size: int = 160, seed: int = 0) -> Path:
    """Images with 1-4 filled shapes on a noisy background; class 0 rectangle, 1 ellipse,
    2 triangle. Returns the ``obj.data`` path (train=valid=the list, backup=backup)."""
    import cv2
    import numpy as np
    rng = np.random.default_rng(seed)
    img_dir = root / "shapes"
    img_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_images):
        img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        img = cv2.GaussianBlur(img, (5, 5), 0)
        rows = []
        for _ in range(int(rng.integers(1, 5))):
            cls = int(rng.integers(0, 3))
            w, h = (int(v) for v in rng.integers(size // 8, size // 2, 2))
            x0 = int(rng.integers(0, size - w))
            y0 = int(rng.integers(0, size - h))
            color = tuple(int(c) for c in rng.integers(120, 256, 3))
            if cls == 0:
                cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), color, -1)
            elif cls == 1:
                cv2.ellipse(img, (x0 + w // 2, y0 + h // 2), (w // 2, h // 2), 0, 0, 360, color,
                            -1)
            else:
                pts = np.array([[x0 + w // 2, y0], [x0, y0 + h], [x0 + w, y0 + h]], np.int32)
                cv2.fillPoly(img, [pts], color)
            rows.append(f"{cls} {(x0 + w / 2) / size:.6f} {(y0 + h / 2) / size:.6f} "
                        f"{w / size:.6f} {h / size:.6f}")
        p = img_dir / f"shape_{i:04d}.jpg"
        cv2.imwrite(str(p), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        (img_dir / f"shape_{i:04d}.txt").write_text("\n".join(rows) + "\n")
        paths.append(str(p))
    (root / "train.txt").write_text("\n".join(paths) + "\n")
    (root / "obj.names").write_text("rectangle\nellipse\ntriangle\n")
    data = root / "obj.data"
    data.write_text("classes=3\ntrain=train.txt\nvalid=train.txt\nnames=obj.names\n"
                    "backup=backup\nsavelast=1\nsaveweights=5\n")
    return data


def make_cfg(root: Path, size: int, batch: int, subdivisions: int, max_batches: int) -> Path:
    """``cfg/yolov4-tiny-obj.cfg`` (3 classes) at ``size`` x ``size``, small batch, no mosaic."""
    text = (REPO / "cfg" / "yolov4-tiny-obj.cfg").read_text()
    subs = {"batch": batch, "subdivisions": subdivisions, "width": size, "height": size,
            "max_batches": max_batches, "burn_in": 10, "learning_rate": 0.001,
            "steps": f"{max_batches * 8},{max_batches * 9}", "mosaic": 0}
    for key, value in subs.items():
        text = re.sub(rf"(?m)^\s*{key}\s*=.*$", f"{key}={value}", text)
    cfg = root / "shapes.cfg"
    cfg.write_text(text)
    return cfg


def train_command(data: Path, cfg: Path, weights: Optional[Path], workers: int,
                  max_batches: int, seed: Optional[int] = None) -> List[str]:
    cmd = [sys.executable, "-u", "-m", "darknet_py.cli", "detector", "train", str(data),
           str(cfg)]
    if weights is not None:
        cmd.append(str(weights))
    cmd += ["-dont_show", "-workers", str(workers), "-max_batches", str(max_batches)]
    if seed is not None:
        cmd += ["-seed", str(seed)]
    return cmd


# ----------------------------------------------------------------------------- checks
def check_weights_file(path: Path, cfg: Path) -> Tuple[bool, str, int]:
    """(whole and finite, why not, seen)."""
    import torch
    from darknet_py.errors import DarknetError
    from darknet_py.model.network import Network
    try:
        net = Network.from_cfg(cfg)
        rep = net.load_weights(path, strict_tail=True)
    except DarknetError as e:
        return False, str(e), -1
    if rep.bytes_left:
        return False, f"{rep.bytes_left} bytes left over", -1
    for name, t in net.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return False, f"non-finite values in {name}", -1
    return True, "", int(net.seen)


@dataclass
class KillReport:
    trials: int = 0
    killed_while_saving: int = 0
    files_checked: int = 0
    files_corrupt: List[str] = field(default_factory=list)
    files_lost: List[str] = field(default_factory=list)
    resume_errors: List[str] = field(default_factory=list)
    stale_temp_files: int = 0
    signals: Dict[str, int] = field(default_factory=dict)


def run_kill_loop(work: Path, trials: int, size: int, workers: int, seed: int,
                  use_signals: bool, verbose: bool) -> KillReport:
    data = make_shapes_dataset(work, seed=seed)
    cfg = make_cfg(work, size, batch=4, subdivisions=2, max_batches=100000)
    backup = work / "backup"
    rng = random.Random(seed)
    report = KillReport()
    good: Dict[str, int] = {}                 # file -> seen of its last good version
    for trial in range(trials):
        last = backup / "shapes_last.weights"
        resume_from = last if last.exists() else None
        cmd = train_command(data, cfg, resume_from, workers, 100000)
        p = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
        wanted = rng.randint(1, 4)
        # odd trials aim at the checkpoint write: kill a few ms after "Saving weights to"
        aim_at_save = trial % 2 == 1
        seen_lines, first_iter = 0, None
        temps_before = set(backup.glob(".*.tmp")) if backup.exists() else set()
        deadline = time.time() + 600
        while time.time() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            m = ITER_LINE.match(line)
            if m:
                seen_lines += 1
                first_iter = first_iter if first_iter is not None else int(m.group(1))
            if seen_lines >= wanted and (not aim_at_save or line.startswith("Saving weights")):
                break
        time.sleep(rng.uniform(0.0, 0.08) if aim_at_save else rng.uniform(0.0, 0.6))
        sig = signal.SIGKILL
        if use_signals and trial % 5 == 4:
            sig = rng.choice([signal.SIGTERM, signal.SIGINT])
        report.signals[sig.name] = report.signals.get(sig.name, 0) + 1
        if p.poll() is None:
            p.send_signal(sig)
        try:
            out, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        report.trials += 1
        if p.returncode not in (-signal.SIGKILL, 0, 1, 130, -signal.SIGTERM, -signal.SIGINT):
            report.resume_errors.append(f"trial {trial}: exit {p.returncode}: {err[-300:]}")
        if "Traceback" in err:
            report.resume_errors.append(f"trial {trial}: traceback: {err[-500:]}")
        # resuming continues the iteration count
        if resume_from is not None and first_iter is not None:
            expect = good.get("shapes_last.weights", -1) // 4 + 1
            if first_iter != expect:
                report.resume_errors.append(f"trial {trial}: resumed at iteration {first_iter}, "
                                            f"expected {expect}")
        present = {f.name: f for f in backup.glob("*.weights")} if backup.exists() else {}
        for name in sorted(good):
            if name not in present:
                report.files_lost.append(f"trial {trial}: {name} disappeared")
        for name, f in sorted(present.items()):
            ok, why, seen = check_weights_file(f, cfg)
            report.files_checked += 1
            if not ok:
                report.files_corrupt.append(f"trial {trial}: {name}: {why}")
                good.pop(name, None)
                continue
            if name in good and seen < good[name]:
                report.files_lost.append(f"trial {trial}: {name} went back from seen "
                                         f"{good[name]} to {seen}")
            good[name] = seen
        stale = set(backup.glob(".*.tmp")) if backup.exists() else set()
        mid_write = bool(stale - temps_before)   # a temp file left: the kill hit a write
        report.killed_while_saving += mid_write
        report.stale_temp_files = len(stale)
        if verbose:
            print(f"trial {trial + 1}/{trials}: {sig.name} after {seen_lines} iteration lines"
                  f"{' during a checkpoint write' if mid_write else ''}; whole weights files: "
                  f"{sorted(good.items())}", flush=True)
    return report


# ----------------------------------------------------------------------------- soak
def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants (MiB), from /proc."""
    children: Dict[int, List[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    total, stack = 0.0, [pid]
    while stack:
        q = stack.pop()
        stack.extend(children.get(q, []))
        try:
            for line in Path(f"/proc/{q}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def linear_slope(xs: List[float], ys: List[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def run_soak(work: Path, minutes: float, size: int, workers: int, seed: int, warmup: float,
             max_growth: float, max_slowdown: float) -> bool:
    data = make_shapes_dataset(work, n_images=128, seed=seed)
    cfg = make_cfg(work, size, batch=8, subdivisions=2, max_batches=10 ** 7)
    cmd = train_command(data, cfg, None, workers, 10 ** 7, seed=seed)
    p = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    os.set_blocking(p.stdout.fileno(), False)
    t0 = time.time()
    samples: List[Tuple[float, float]] = []
    iters: List[Tuple[float, int, float, float]] = []     # (t, iteration, seconds, loss)
    buf = ""
    next_sample = t0
    while time.time() - t0 < minutes * 60 and p.poll() is None:
        try:
            chunk = p.stdout.read()
        except (BlockingIOError, TypeError):
            chunk = None
        if chunk:
            buf += chunk
            *lines, buf = buf.split("\n")
            for line in lines:
                m = ITER_LINE.match(line)
                if m:
                    iters.append((time.time() - t0, int(m.group(1)), float(m.group(4)),
                                  float(m.group(2))))
        if time.time() >= next_sample:
            samples.append((time.time() - t0, tree_rss_mb(p.pid)))
            next_sample += 5.0
        time.sleep(0.2)
    alive = p.poll() is None
    if alive:
        p.send_signal(signal.SIGINT)                      # ends with a clean _last save
    try:
        _, err = p.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
    ok = True
    print(f"soak: {minutes:g} min, {size}x{size}, batch 8/2, workers {workers}, "
          f"{len(iters)} iterations, exit {p.returncode}")
    if not alive:
        print(f"FAIL: training ended early (exit {p.returncode}): {err[-1000:]}")
        return False
    after = [(t, r) for t, r in samples if t >= warmup * 60]
    if len(after) >= 3:
        slope_h = linear_slope([t for t, _ in after], [r for _, r in after]) * 3600
        print(f"RSS (trainer + workers): start {after[0][1]:.0f} MiB after warm-up, end "
              f"{after[-1][1]:.0f} MiB, max {max(r for _, r in after):.0f} MiB, trend "
              f"{slope_h:+.1f} MiB/hour")
        if slope_h > max_growth:
            print(f"FAIL: memory grows by {slope_h:.1f} MiB/hour (limit {max_growth})")
            ok = False
    else:
        print("FAIL: too few memory samples after the warm-up (run longer)")
        ok = False
    its = [(t, s) for t, _, s, _ in iters if t >= warmup * 60]
    if len(its) >= 10:
        k = max(1, len(its) // 5)
        first = statistics.median(s for _, s in its[:k])
        last = statistics.median(s for _, s in its[-k:])
        print(f"iteration time: median {first:.3f} s (first fifth) -> {last:.3f} s (last fifth), "
              f"{len(its) / max(1e-9, its[-1][0] - its[0][0]) * 60:.1f} iterations/min")
        if last > first * (1 + max_slowdown):
            print(f"FAIL: iterations got {100 * (last / first - 1):.0f}% slower "
                  f"(limit {100 * max_slowdown:.0f}%)")
            ok = False
    else:
        print("FAIL: too few iterations after the warm-up (run longer)")
        ok = False
    losses = [l for _, _, _, l in iters]
    if losses:
        print(f"loss: first {losses[0]:.3f}, last {losses[-1]:.3f}")
    last = work / "backup" / "shapes_last.weights"
    if last.exists():
        good, why, seen = check_weights_file(last, cfg)
        print(f"{last.name}: {'whole' if good else 'BROKEN: ' + why}, seen {seen}")
        ok &= good
    print("soak:", "PASS" if ok else "FAIL")
    return ok


# ----------------------------------------------------------------------------- main
def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    k = sub.add_parser("kill", help="SIGKILL loop: no checkpoint may ever be lost or corrupt")
    k.add_argument("--trials", type=int, default=20)
    k.add_argument("--signals", action="store_true",
                   help="every 5th trial sends SIGTERM or SIGINT instead of SIGKILL")
    s = sub.add_parser("soak", help="long run: memory and throughput must stay flat")
    s.add_argument("--minutes", type=float, default=10.0)
    s.add_argument("--warmup", type=float, default=1.0, help="minutes ignored at the start")
    s.add_argument("--max-rss-growth-mb", type=float, default=100.0,
                   help="allowed RSS trend after warm-up, MiB per hour")
    s.add_argument("--max-slowdown", type=float, default=0.25,
                   help="allowed increase of the median iteration time (0.25 = 25%%)")
    for p in (k, s):
        p.add_argument("--size", type=int, default=96, help="network input size")
        p.add_argument("--workers", type=int, default=0, help="data-loader workers")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--keep", type=Path, default=None, help="work in (and keep) this folder")
        p.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args(argv)
    work = a.keep if a.keep else Path(tempfile.mkdtemp(prefix=f"soak_{a.mode}_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if a.mode == "kill":
            t0 = time.time()
            r = run_kill_loop(work, a.trials, a.size, a.workers, a.seed, a.signals, not a.quiet)
            print(f"kill loop: {r.trials} trials in {time.time() - t0:.0f} s, signals {r.signals}, "
                  f"{r.killed_while_saving} kills during a checkpoint write, "
                  f"{r.files_checked} weights-file checks, files lost {len(r.files_lost)}, "
                  f"files corrupt {len(r.files_corrupt)}, resume problems "
                  f"{len(r.resume_errors)}, stale temp files {r.stale_temp_files}")
            for line in r.files_lost + r.files_corrupt + r.resume_errors:
                print("  ", line)
            ok = not (r.files_lost or r.files_corrupt or r.resume_errors)
            print("kill loop:", "PASS" if ok else "FAIL")
        else:
            ok = run_soak(work, a.minutes, a.size, a.workers, a.seed, a.warmup,
                          a.max_rss_growth_mb, a.max_slowdown)
    finally:
        if a.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
