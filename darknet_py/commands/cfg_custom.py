"""``darknet-py cfg custom``: a custom yolo-obj.cfg for N classes the way AlexeyAB's README says
(see :mod:`darknet_py.prep.custom_cfg`)."""
from __future__ import annotations

from typing import Optional

import click

from ..errors import DataError, UsageError
from ..files import read_bounded, refuse_output_onto_inputs
from ..prep.custom_cfg import parse_anchors, write_custom_cfg
from ..prep.split import read_image_list
from ..prep.voc import read_class_names as read_names

GROUP = "cfg"

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command("custom", context_settings=_CONTEXT)
@click.option("--classes", type=int, metavar="N", help="Number of classes (or give --names).")
@click.option("--names", metavar="OBJ.NAMES", help="Take the number of classes from a names file.")
@click.option("--from", "src", required=True, metavar="SRC.cfg",
              help="Source cfg, e.g. cfg/yolov4-custom.cfg or cfg/yolov4-tiny-custom.cfg.")
@click.option("-o", "--output", "dst", required=True, metavar="OUT.cfg", help="Cfg to write.")
@click.option("--width", type=int, help="Network width (multiple of 32; default: keep).")
@click.option("--height", type=int, help="Network height (multiple of 32; default: keep).")
@click.option("--batch", type=int, default=64, show_default=True)
@click.option("--subdivisions", type=int, default=16, show_default=True)
@click.option("--max-batches", type=int,
              help="Default: classes*2000, not less than the training images, not less than 6000.")
@click.option("--steps", metavar="S1,S2", help="Default: 80% and 90% of max_batches.")
@click.option("--train-images", type=int, default=0, metavar="N",
              help="Number of training images, for the max_batches rule.")
@click.option("--train-list", metavar="TRAIN.txt",
              help="Count the training images from a list file, for the max_batches rule.")
@click.option("--mosaic", type=click.IntRange(0, 1), help="Set mosaic= in [net] (default: keep).")
@click.option("--learning-rate", type=float, metavar="LR",
              help="Default: the source's; lowered to 0.001 when higher and --batch or "
                   "--burn-in is below the source's (with a comment: 0.00261 diverges with "
                   "small batch and burn_in).")
@click.option("--burn-in", type=int, metavar="N", help="Set burn_in= (default: keep).")
@click.option("--keep-schedule", is_flag=True,
              help="Leave max_batches, steps, learning_rate and burn_in as they are.")
@click.option("--anchors", "anchors", metavar="W1,H1,...",
              help="Set anchors= (and num=) of every [yolo] head, e.g. calc_anchors' output.")
@click.option("--anchors-from", "anchors_from", metavar="ANCHORS.txt",
              help="Like --anchors, read from a file (calc_anchors writes anchors.txt).")
@click.option("--stopbackward", type=int, metavar="LAYER",
              help="Set stopbackward=1 in layer LAYER (0-based, as cfg show numbers them): "
                   "training runs no backward pass from there down, so that layer and the "
                   "ones before it keep their pretrained weights (a faster fine-tune; 9 is "
                   "yolov4-tiny's first maxpool).")
def COMMAND(classes: Optional[int], names: Optional[str], src: str, dst: str,
            width: Optional[int], height: Optional[int], batch: int, subdivisions: int,
            max_batches: Optional[int], steps: Optional[str], train_images: int,
            train_list: Optional[str], mosaic: Optional[int], learning_rate: Optional[float],
            burn_in: Optional[int], keep_schedule: bool,
            anchors: Optional[str], anchors_from: Optional[str],
            stopbackward: Optional[int]) -> None:
    """Write a custom cfg for N classes, editing SRC.cfg in place like the README says.

    classes= in every [yolo]/[region], filters=(classes+5)*masks in the [convolutional] before
    each [yolo] ((classes+coords+1)*num for [region]), batch/subdivisions, max_batches and steps,
    learning_rate (at most 0.001 when batch or burn_in is made smaller, unless --learning-rate
    is given).
    Comments and layout of SRC.cfg are kept. Face-mask example (the report's values):

    \b
      darknet-py cfg custom --classes 3 --from yolov4-custom.cfg -o yolov4-obj.cfg \\
          --width 416 --height 416 --max-batches 6400 --steps 4800,5400
    """

    refuse_output_onto_inputs(dst, "-o", [("source cfg", src), ("names file", names),
                                          ("train list", train_list),
                                          ("anchors file", anchors_from)])
    if names is not None:
        n_names = len(read_names(names))
        if classes is not None and classes != n_names:
            raise UsageError(f"--classes {classes} but {names} has {n_names} names", value=classes)
        classes = n_names
    if classes is None:
        raise UsageError("give --classes N or --names obj.names")
    if train_list is not None:
        train_images = max(train_images, len(read_image_list(train_list)[0]))
    anchor_values = None
    if anchors is not None and anchors_from is not None:
        raise UsageError("give --anchors or --anchors-from, not both")
    if anchors is not None:
        anchor_values = parse_anchors(anchors)
    if anchors_from is not None:
        text = read_bounded(anchors_from, 1 << 20, DataError, "anchors file")
        anchor_values = parse_anchors(text.decode("utf-8", "replace"), anchors_from)
    step_values = None
    if steps is not None:
        try:
            step_values = [int(s) for s in steps.split(",") if s.strip()]
        except ValueError:
            raise UsageError(f"--steps expects integers separated by commas, got '{steps}'",
                             value=steps) from None
    result = write_custom_cfg(src, dst, classes, width=width, height=height, batch=batch,
                              subdivisions=subdivisions, max_batches=max_batches,
                              steps=step_values, train_images=train_images, mosaic=mosaic,
                              learning_rate=learning_rate, burn_in=burn_in,
                              keep_schedule=keep_schedule, anchors=anchor_values,
                              stopbackward=stopbackward)
    heads = ", ".join(f"{t} line {line} (filters={f})" for t, line, f in result.heads)
    click.echo(f"wrote {dst}: classes={result.classes}, max_batches={result.max_batches}, "
               f"steps={','.join(map(str, result.steps))}; heads: {heads}")
    for change in result.changes:
        click.echo(f"  {change}")
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
