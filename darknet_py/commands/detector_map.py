"""``darknet-py detector map obj.data yolo.cfg yolo.weights [-iou_thresh 0.5] [-points 0]
[-thresh 0.25]``: Darknet's ``validate_detector_map``.

For every image of the ``valid=`` list (default ``data/train.txt``): load, stretch to the network
size (``resize_image``; ``letterbox_image`` when the cfg's ``[net]`` has ``letter_box=1``), run the
network, ``get_network_boxes`` with objectness threshold 0.005, NMS 0.45 with the last head's
``nms_kind``; read the image's label file (``replace_image_to_label``); then
:func:`~darknet_py.metrics.darknet_map` and Darknet's printout.

As in Darknet:

* the ``-letter_box`` flag is accepted but has no effect: ``validate_detector_map`` overrides it
  with the cfg's ``letter_box`` (a note is printed on stderr when the two disagree);
* ``difficult=`` (a list parallel to ``valid=``, VOC2007) is honoured: detections that match only
  a difficult object are left out of the ranking;
* the ``classes=`` of the .data file is not used: the number of classes is the last detection
  layer's, and the names file must have exactly that many names;
* an image without a label file counts as an image without objects, with Darknet's
  ``Can't open label file`` line on stdout (Darknet also appends the path to ``bad.list`` in the
  current directory; darknet-py does not write that file).

stdout carries the same lines as Darknet's (``calculation mAP``, ``Detection layer``, the
``detections_count`` / ``rank`` progress, one line per class, the thresh statistics and the mAP);
stderr the per-batch image counter, the matching progress when it takes more than a few seconds
and ``Total Detection Time``.

darknet-py additions, after Darknet's text: ``-coco`` prints pycocotools' summary of the same
detections (:mod:`darknet_py.metrics.coco_map`); ``-plots DIR`` writes curves, the confusion
matrix and tables (:mod:`darknet_py.metrics.plots`), plus ``coco_results.json`` with ``-coco``.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Optional

import click

from .. import distributed as dist
from ..data.datacfg import read_data_cfg, read_list, read_names
from ..errors import DataError, UsageError
from ..infer.evaluate import collect_map_inputs, head_codes, read_difficult_truths
from ..metrics import darknet_map, format_map_report
from ..metrics.coco import write_coco_results
from ..metrics.coco_map import coco_map
from ..metrics.plots import write_map_plots
from ..metrics.progress import StageProgress
from ._common import backend_flags, check_file, eprint, flag, open_backend, preflight
from ._tiling import tile_flags, tile_options

GROUP = "detector"

MAP_FOOTER = ("\nSet -points flag:\n"
              " `-points 101` for MS COCO \n"
              " `-points 11` for PascalVOC 2007 (uncomment `difficult` in voc.data) \n"
              " `-points 0` (AUC) for ImageNet, PascalVOC 2010-2012, your custom dataset\n")

@click.command("map", context_settings={"ignore_unknown_options": False})
@click.argument("datacfg", type=click.Path())
@click.argument("cfgfile", type=click.Path())
@click.argument("weightfile", type=click.Path(), required=False)
@flag("iou_thresh", type=float, default=0.5, show_default=True,
      help="IoU a detection needs (strictly more) to match a truth.")
@flag("points", type=int, default=0, show_default=True,
      help="0: area under the curve; 11: PascalVOC 2007; 101: MS COCO.")
@flag("thresh", type=float, default=0.25, show_default=True,
      help="Confidence for the TP/FP/FN, precision, recall, F1 and average IoU line.")
@flag("letter_box", is_flag=True, help="Accepted for compatibility; as in Darknet the cfg's "
      "letter_box decides.")
@flag("dont_show", is_flag=True, help="Accepted for compatibility (nothing is shown).")
@flag("batch", type=int, default=1, show_default=True,
      help="Images per network call (darknet-py only; Darknet runs one at a time).")
@flag("plots", type=click.Path(file_okay=False), default=None,
      help="darknet-py: write PR/F1 curves, confusion matrix, per_class.csv and summary.json "
      "into this folder.")
@flag("coco", is_flag=True, help="darknet-py: after Darknet's printout, pycocotools' COCO AP "
      "summary of the same detections (ground truth: coco_json= of the .data file, else the "
      "YOLO labels).")
@tile_flags
@backend_flags
@dist.command
def COMMAND(datacfg: str, cfgfile: str, weightfile: Optional[str], iou_thresh: float,
            points: int, thresh: float, letter_box: bool, dont_show: bool,
            batch: int, plots: Optional[str], coco: bool, tiles, tile_overlap, tiles_full,
            **backend_options) -> None:
    """Mean average precision of a detector on the data file's valid list (Darknet's
    `detector map`)."""
    if points < 0:
        raise UsageError(f"-points must be 0, 11, 101 or another positive count, got {points}")
    if batch < 1:
        raise UsageError(f"-batch must be >= 1, got {batch}")
    tiling = tile_options(tiles, tile_overlap, tiles_full)
    preflight(datacfg, cfgfile, weightfile, names=True, lists=("valid",))
    check_file(cfgfile, "cfg file")
    if weightfile is not None:
        check_file(weightfile, "weights file")
    data = read_data_cfg(datacfg)
    if coco and "coco_json" in data.options:     # fail before running the network
        check_file(data.options["coco_json"].value, "coco_json file")
    valid = data.valid_or_default("data/train.txt")
    names_file = data.names_or_default()
    names = read_names(names_file)

    backend = open_backend(cfgfile, weightfile, data=datacfg, **backend_options)
    classes = backend.classes
    if classes != len(names):
        raise DataError(f"number of names {len(names)} isn't equal to classes={classes} in the "
                        f"file {cfgfile}", file=names_file)
    if letter_box and not backend.letter_box:
        eprint("note: -letter_box has no effect on detector map (as in Darknet); set "
               "letter_box=1 in [net] of the cfg")
    print("\n calculation mAP (mean average precision)...")
    for index, code in head_codes(backend.heads):
        print(f" Detection layer: {index} - type = {code} ")
    sys.stdout.flush()
    images = read_list(check_file(valid, "valid list"))
    if not images:
        raise DataError("the valid list is empty", file=valid)

    def progress(done: int) -> None:
        # Darknet prints its loop counter (a multiple of 4) before each group of 4 images
        sys.stderr.write(f"\r{done}")
        sys.stderr.flush()

    def missing(lp: str) -> None:
        print(f"Can't open label file. (This can be normal only if you use MSCOCO): {lp} ")

    start = time.time()
    sharded = dist.is_distributed()      # torchrun: this rank's images, gathered on rank 0
    inputs = collect_map_inputs(backend, images=dist.shard(images), batch_size=batch,
                                progress=progress, on_missing_label=None if sharded else missing,
                                tiling=tiling, announce=lambda line: eprint(f"overlap: {line}"))
    if sharded:
        merged = dist.gather_concat(inputs.paths, inputs.detections, inputs.truths,
                                    inputs.missing_labels)
        if merged is None:               # not rank 0
            return
        inputs.paths, inputs.detections, inputs.truths, inputs.missing_labels = merged
        for lp in inputs.missing_labels:
            missing(lp)
    difficult = None
    if data.difficult is not None:
        # a list parallel to valid=; its labels mark objects whose detections are not ranked
        difficult = read_difficult_truths(check_file(data.difficult, "difficult list"),
                                          len(images))
    shown = StageProgress()         # silent unless matching takes seconds (stderr)
    shown.begin("mAP: matching, images")
    try:
        result = darknet_map(inputs.detections, inputs.truths, classes, names,
                             iou_thresh=iou_thresh, thresh=thresh, map_points=points,
                             difficult_truths=difficult, progress=shown.step)
    finally:
        shown.end()
    sys.stdout.write(format_map_report(result, progress=True, footer=False))
    sys.stdout.flush()
    eprint(f"Total Detection Time: {int(time.time() - start)} Seconds")
    sys.stdout.write(MAP_FOOTER)
    sys.stdout.flush()
    if coco or plots:
        _extras(data, inputs, result, classes, names, plots, coco)


def _extras(data, inputs, result, classes, names, plots: Optional[str], coco: bool) -> None:
    """darknet-py's additions after Darknet's text: ``-coco`` summary, ``-plots`` files."""
    run = None
    opt = data.options.get("coco_json")
    coco_json = opt.value if opt is not None else None
    if coco:
        run = coco_map(inputs.paths, inputs.detections, inputs.truths, classes, names,
                       coco_json)
        gt_name = coco_json if coco_json else "the YOLO label files"
        print(f"\n COCO evaluation (pycocotools, ground truth: {gt_name}):")
        sys.stdout.write(run.summary_lines())
        sys.stdout.flush()
    if plots:
        write_map_plots(result, plots, run.stats.as_dict() if run is not None else None)
        if run is not None:
            write_coco_results(os.path.join(plots, "coco_results.json"), run.result_lines)
            if coco_json is None:       # the ground truth built from the labels
                with open(os.path.join(plots, "coco_ground_truth.json"), "w") as f:
                    json.dump(run.ground_truth, f)
        eprint(f"plots written to {plots}")
