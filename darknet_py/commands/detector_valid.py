"""``darknet-py detector valid obj.data cfg weights`` (Darknet's ``validate_detector``).

Detections at threshold 0.001, hier 0.5, NMS 0.6 (the cfg's ``nms_kind``) on boxes in pixels of
the original image, written to ``results=`` (default ``results/``) as Darknet does:

* ``eval=coco``: ``<results>/coco_results.json`` (COCO image id = leading digits of the file
  name, Darknet's COCO category ids); with ``-coco_json instances.json`` (or ``coco_json=`` in
  obj.data) the file is then scored with pycocotools (AP@[.5:.95], AP50, AP75, …);
* otherwise (``eval=voc``, the default): ``<results>/comp4_det_test_<class>.txt`` per class with
  ``<image id> <prob> <xmin> <ymin> <xmax> <ymax>`` (1-based pixel corners).

Images are read and resized on ``-workers`` threads ahead of the network, which runs in batches
(``-batch``) on its own thread while the main thread decodes, suppresses and formats the batch
before (:meth:`~darknet_py.infer.pipeline.Pipeline.process`; the files are the same as with
every step in one thread).
``eval=imagenet``, ``bdd`` and ``kitti`` are not implemented (a clear error says so).
"""
from __future__ import annotations

import os
import sys
from typing import List

import click
import numpy as np

from .. import distributed as dist
from ..data.datacfg import read_data_cfg, read_list, read_names
from ..errors import DataError, UsageError
from ..files import atomic_write_bytes, refuse_output_onto_inputs
from ..infer.evaluate import head_codes
from ..infer.pipeline import Pipeline
from ..infer.tiling import tiled
from ..metrics.coco import coco_evaluate, coco_result_lines, format_coco_results
from ..structures.boxes import xywh_to_xyxy
from ._common import backend_flags, check_file, eprint, flag, open_backend, preflight
from ._tiling import tile_flags, tile_options

GROUP = "detector"

VALID_THRESH = 0.001
VALID_HIER = 0.5
VALID_NMS = 0.6


def voc_lines(image_id: str, dets, width: int, height: int) -> List[tuple]:
    """(class, line) pairs of ``print_detector_detections`` for one image (pixel boxes)."""
    boxes = dets.boxes.detach().cpu().numpy().astype(np.float32)
    probs = dets.probs.detach().cpu().numpy().astype(np.float32)
    # Darknet: float xmin = b.x - b.w / 2. + 1 (double arithmetic, stored as float)
    corners = (xywh_to_xyxy(boxes.astype(np.float64)) + 1).astype(np.float32)
    out = []
    for i in range(boxes.shape[0]):
        xmin, ymin, xmax, ymax = corners[i]
        xmin, ymin = max(xmin, np.float32(1)), max(ymin, np.float32(1))
        xmax, ymax = min(xmax, np.float32(width)), min(ymax, np.float32(height))
        for j in np.nonzero(probs[i])[0]:
            out.append((int(j), "%s %f %f %f %f %f\n" % (image_id, probs[i, j], xmin, ymin,
                                                          xmax, ymax)))
    return out


@click.command("valid")
@click.argument("data", type=click.Path(dir_okay=False))
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.argument("weights", type=click.Path(dir_okay=False))
@click.argument("outfile", required=False)
@flag("coco_json", type=click.Path(dir_okay=False), default=None,
      help="COCO instances json: score the results with pycocotools.")
@flag("batch", type=int, default=8, show_default=True, help="Images per forward pass.")
@flag("workers", type=int, default=None,
      help="Threads that read and resize images ahead of the network (default: one per CPU "
      "beyond the first, at most 4).")
@tile_flags
@backend_flags
@dist.command
def COMMAND(data, cfg, weights, outfile, coco_json, batch, workers, tiles, tile_overlap,
            tiles_full, **backend_options):
    """Write Darknet's detection results for the valid= list (COCO json or VOC files)."""
    if batch < 1 or (workers is not None and workers < 1):
        raise UsageError("-batch and -workers must be >= 1")
    tiling = tile_options(tiles, tile_overlap, tiles_full)
    preflight(data, cfg, weights, names=True, lists=("valid",))
    d = read_data_cfg(data)
    valid = d.valid_or_default("data/train.list")
    names = read_names(d.names_or_default())
    prefix = d.results_or_default()
    kind = d.eval_or_default()
    if kind not in ("coco", "voc"):
        raise UsageError(f"eval={kind} in {data}: darknet-py writes eval=coco and eval=voc "
                         "results only")
    if coco_json is None and "coco_json" in d.options:
        coco_json = d.options["coco_json"].value
    paths = read_list(check_file(valid, "valid list"))
    if not paths:
        raise DataError("the valid list is empty", file=valid)
    if not os.path.isdir(prefix):
        raise DataError(f"results folder '{prefix}' does not exist (results= in {data}; "
                        "Darknet needs it too)", file=prefix)
    inputs = [("data file", data), ("cfg file", cfg), ("weights file", weights),
              ("names file", d.names_or_default()), ("valid list", valid),
              ("coco_json file", coco_json)]
    if kind == "coco":
        outputs = [os.path.join(prefix, (outfile or "coco_results") + ".json")]
    else:
        outputs = [os.path.join(prefix, f"{outfile or 'comp4_det_test_'}{n}.txt") for n in names]
    for path in outputs:
        refuse_output_onto_inputs(path, "the results file", inputs)
    backend = open_backend(cfg, weights, data=data, **backend_options)
    if backend.network is not None:
        c = backend.network.config
        eprint(f"Learning Rate: {c.learning_rate:g}, Momentum: {c.momentum:g}, "
               f"Decay: {c.decay:g}")
    for index, code in head_codes(backend.heads):
        print(f" Detection layer: {index} - type = {code} ")
    classes = backend.classes
    if len(names) < classes:
        raise DataError(f"the names file has {len(names)} names but the cfg has "
                        f"classes={classes}", file=d.names_or_default())
    # validate_detector: thresh .001, hier .5, NMS .6 on pixel boxes, the cfg's letter_box
    pipeline = Pipeline(backend, thresh=VALID_THRESH, hier_thresh=VALID_HIER, nms=VALID_NMS,
                        letter_box=backend.letter_box, batch_size=batch, pixel_boxes=True,
                        loader_threads=workers)
    if tiling["tiles"] is not None:
        pipeline = tiled(pipeline, **tiling)
    eprint(f"overlap: {pipeline.describe_threads()}")
    coco_lines: List[str] = []
    voc = [[] for _ in range(classes)]
    paths = dist.shard(paths)            # torchrun: this rank's images (all for one process)
    for done, (path, _, px) in enumerate(pipeline.iterate(paths, keep_images=False), 1):
        if done % batch == 0 or done == len(paths):
            eprint(done)
        w, h = px.image_size
        if kind == "coco":
            coco_lines += coco_result_lines(path, px, w, h, relative=False)
        else:
            image_id = os.path.basename(path).split(".", 1)[0]
            for j, line in voc_lines(image_id, px, w, h):
                voc[j].append(line)
    merged = dist.gather_concat(coco_lines, *voc)      # rank 0: in the order of the list
    if merged is None:
        return
    coco_lines, voc = merged[0], merged[1:]
    if kind == "coco":
        out = os.path.join(prefix, (outfile or "coco_results") + ".json")
        atomic_write_bytes(out, format_coco_results(coco_lines).encode())
        print(f"Results written to {out} ({len(coco_lines)} detections)")
        if coco_json:
            stats = coco_evaluate(out, coco_json)
            sys.stdout.write(stats.summary)
            print(f"\n COCO AP@[.5:.95] = {stats['AP']:.4f}, AP50 = {stats['AP50']:.4f}, "
                  f"AP75 = {stats['AP75']:.4f}")
    else:
        base = outfile or "comp4_det_test_"
        for j in range(classes):
            atomic_write_bytes(os.path.join(prefix, f"{base}{names[j]}.txt"),
                               "".join(voc[j]).encode())
        print(f"Results written to {prefix}/{base}<class>.txt")
