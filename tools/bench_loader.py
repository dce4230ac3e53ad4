#!/usr/bin/env python
"""Throughput of the darknet-py training loader (images/second).

Default: coco128 train2017 with yolov4-style augmentation (mosaic=1, jitter=.3, hue=.1,
saturation=exposure=1.5, flip) at 416 and 608, with 1 and 2 loader workers::

    python tools/bench_loader.py [--refdata ../shared] [--sizes 416 608] [--workers 1 2]
                                 [--batches 8] [--batch 16] [--no-mosaic]

Each configuration warms up with 2 mini-batches (worker start, first decodes), then times
``--batches`` mini-batches. Mosaic is applied to 50 % of the samples, as in Darknet.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from darknet_py.data.augment import AugmentConfig  # noqa: E402
from darknet_py.data.dataset import DetectionDataset, make_loader  # noqa: E402
from darknet_py.devices import usable_cpus  # noqa: E402


def bench(paths, size: int, workers: int, batches: int, batch: int, mosaic: bool,
          seed: int = 0) -> float:
    cfg = AugmentConfig(width=size, height=size, classes=80, jitter=0.3, hue=0.1,
                        saturation=1.5, exposure=1.5, flip=1, mixup=3 if mosaic else 0)
    ds = DetectionDataset(paths, cfg, seed=seed)
    loader = make_loader(ds, batch=batch, subdivisions=1, num_workers=workers, seed=seed,
                         pin_memory=False, persistent_workers=True)
    it = iter(loader)
    warmup = 2
    done = 0
    t0 = None
    while done < warmup + batches:
        try:
            images, truths = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        done += 1
        if done == warmup:
            t0 = time.perf_counter()
    elapsed = time.perf_counter() - t0
    del it, loader
    return batches * batch / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--refdata", default=os.environ.get(
        "DARKNET_PY_REFDATA", str(Path(__file__).resolve().parent.parent.parent / "shared")))
    ap.add_argument("--sizes", type=int, nargs="+", default=[416, 608])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--no-mosaic", action="store_true")
    args = ap.parse_args()
    paths = sorted(glob.glob(os.path.join(args.refdata, "datasets/coco128/images/train2017/*.jpg")))
    if not paths:
        sys.exit(f"coco128 not found under {args.refdata} (use --refdata)")
    mosaic = not args.no_mosaic
    print(f"coco128 train2017: {len(paths)} images, mosaic={'on (50%)' if mosaic else 'off'}, "
          f"mini-batch {args.batch}, {args.batches} timed mini-batches, {usable_cpus()} usable CPUs")
    print(f"{'size':>6} {'workers':>8} {'images/s':>10}")
    for size in args.sizes:
        for workers in args.workers:
            ips = bench(paths, size, workers, args.batches, args.batch, mosaic)
            print(f"{size:>6} {workers:>8} {ips:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
