#!/usr/bin/env python
"""``detector map`` with an untrained head: hundreds of thousands of detections.

The case: the face-mask ``val.list`` (128 images, VOC labels converted into ``--workdir``),
``cfg/yolov4-tiny-obj.cfg`` (3 classes, 416x416) with yolov4-tiny.conv.29 and a randomly
initialised head (seed 0), ``-backend fast`` on ``--threads`` threads. Every box passes the 0.005
objectness threshold and NMS keeps most of them (about 817,000 detections).

Printed: the seconds of each stage of one run (network, NMS, matching and ranking) in CPU time
of this process (steadier than wall time on a shared machine) and in wall time; then, on the
same candidates of ``--compare`` images, the NMS before this change (every pair of a class's
candidates, class by class: ``_nms_per_class_dense``, still used for thresholds <= 0) against
the pair search of ``_nms_per_class_sparse``, their ratio, and whether they agree::

    python tools/bench_map.py [--refdata ../shared] [--workdir /tmp/bench-map] [--threads 1]
                              [--compare 8] [--images N]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CONV29_BYTES = 19789716


def clocks():
    return time.process_time(), time.perf_counter()


def since(start):
    cpu, wall = clocks()
    return cpu - start[0], wall - start[1]


def prepare(refdata: Path, work: Path) -> Path:
    """Labels next to symlinked images, obj.data, and the untrained-head weights."""
    work.mkdir(parents=True, exist_ok=True)
    fm = refdata / "datasets" / "facemask"
    names = [n for n in (fm / "val.list").read_text().split() if n]
    if not (work / "fm").exists():
        ann = work / "ann"
        ann.mkdir(exist_ok=True)
        for n in names:
            (ann / (n[:-4] + ".xml")).write_bytes((fm / "annotations" / (n[:-4] + ".xml"))
                                                  .read_bytes())
        subprocess.run([sys.executable, "-m", "darknet_py.cli", "data", "voc2yolo", str(ann),
                        "--names", str(REPO / "cfg" / "obj.names"), "--map", "facemask",
                        "--images-dir", str(fm / "images"), "--out-dir", str(work / "fm")],
                       check=True, capture_output=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    (work / "val.txt").write_text("".join(str(work / "fm" / n) + "\n" for n in names))
    (work / "obj.data").write_text(f"classes=3\nvalid={work / 'val.txt'}\n"
                                   f"names={REPO / 'cfg' / 'obj.names'}\n")
    weights = work / "untrained.weights"
    if not weights.exists():
        import torch

        from darknet_py.model.network import Network
        (work / "conv29").write_bytes((refdata / "weights" / "yolov4-tiny.weights")
                                      .read_bytes()[:CONV29_BYTES])
        torch.manual_seed(0)
        net = Network.from_cfg(str(REPO / "cfg" / "yolov4-tiny-obj.cfg"))
        net.load_weights(str(work / "conv29"), cutoff=29)
        net.save_weights(str(weights))
    return work


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--refdata", default=os.environ.get("DARKNET_PY_REFDATA",
                                                        str(REPO.parent / "shared")))
    ap.add_argument("--workdir", default="/tmp/bench-map")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compare", type=int, default=8,
                    help="images on which the old NMS is timed against the new one")
    ap.add_argument("--images", type=int, default=None, help="only the first N images")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    from darknet_py.data.datacfg import read_list
    from darknet_py.imaging.image import image_size
    from darknet_py.infer.backends.factory import make_backend
    from darknet_py.infer.evaluate import map_pipeline, read_map_truths
    from darknet_py.infer.nms import _nms_per_class_dense, _nms_per_class_sparse, apply_nms
    from darknet_py.infer.pipeline import scale_to_pixels
    from darknet_py.metrics import darknet_map, format_map_report

    work = prepare(Path(args.refdata), Path(args.workdir))
    with open("/proc/loadavg") as f:
        print(f"load average before: {' '.join(f.read().split()[:3])}")
    backend = make_backend(str(REPO / "cfg" / "yolov4-tiny-obj.cfg"),
                           str(work / "untrained.weights"), backend="fast",
                           threads=args.threads)
    print(f"backend: {backend.describe()}")
    pipe = map_pipeline(backend, batch_size=4, loader_threads=0)
    images = read_list(str(work / "val.txt"))[:args.images]
    candidates = []
    t = clocks()
    for i in range(0, len(images), 4):
        loaded = [pipe.load(p) for p in images[i:i + 4]]
        with torch.no_grad():
            sets = pipe.decode(pipe.forward(pipe.prepare([im for _, im in loaded])),
                               [image_size(im) for _, im in loaded])
        candidates += [scale_to_pixels(s) for s in sets] if pipe.pixel_boxes else sets
    net_cpu, net_wall = since(t)
    t = clocks()
    kept = [apply_nms(s, pipe.nms, pipe.nms_kind, pipe.beta_nms) for s in candidates]
    nms_cpu, nms_wall = since(t)
    truths = [read_map_truths(p) for p in images]
    t = clocks()
    result = darknet_map(kept, truths, backend.classes, ["chin_diaper", "mask", "no_mask"])
    report = format_map_report(result)
    map_cpu, map_wall = since(t)
    total_cpu = net_cpu + nms_cpu + map_cpu
    print(f"images {len(images)}, detections_count {result.detections_count}, "
          f"mAP {result.mean_ap:.6f} ({len(report)} characters of report)")
    print(f"network        cpu {net_cpu:7.2f} s   wall {net_wall:7.2f} s")
    print(f"NMS            cpu {nms_cpu:7.2f} s   wall {nms_wall:7.2f} s")
    print(f"match + rank   cpu {map_cpu:7.2f} s   wall {map_wall:7.2f} s")
    print(f"total          cpu {total_cpu:7.2f} s   wall {net_wall + nms_wall + map_wall:7.2f} s")
    n = min(args.compare, len(candidates))
    if n:
        thr, kind, beta = pipe.nms, pipe.nms_kind, pipe.beta_nms
        t = clocks()
        dense = [_nms_per_class_dense(s, thr, kind, beta) for s in candidates[:n]]
        dense_cpu = since(t)[0]
        t = clocks()
        sparse = [_nms_per_class_sparse(s, thr, kind, beta) for s in candidates[:n]]
        sparse_cpu = since(t)[0]
        same = all(torch.equal(a.probs, b.probs) and torch.equal(a.boxes, b.boxes)
                   for a, b in zip(dense, sparse))
        print(f"NMS on {n} images: all pairs per class {dense_cpu / n * 1000:.0f} ms/image, "
              f"pair search {sparse_cpu / n * 1000:.0f} ms/image: ratio "
              f"{dense_cpu / max(sparse_cpu, 1e-9):.1f}x; identical results: {same}")
    with open("/proc/loadavg") as f:
        print(f"load average after: {' '.join(f.read().split()[:3])}")


if __name__ == "__main__":
    main()
