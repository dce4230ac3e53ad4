"""``darknet-py detector test obj.data cfg weights [image]`` (Darknet's ``test_detector``).

Prints the layer table, then per image Darknet's ``Detection layer`` lines,
``<path>: Predicted in N milli-seconds.`` and one line per detected class
(``dog: 81%``, or with ``-ext_output`` the ``(left_x: … top_y: … width: … height: …)`` block), and
writes ``predictions.jpg``. Without an image argument, image paths are read from stdin, one per
line (Darknet's ``Enter Image Path:`` loop); an unreadable image there is reported and skipped.
"""
from __future__ import annotations

import os
import sys
import time

import click

from ..errors import DarknetError, DataError
from ._common import flag, preflight
from ._detect_common import device_from_index, make_detector

GROUP = "detector"


@click.command("test")
@click.argument("data", type=click.Path(dir_okay=False))
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.argument("weights", type=click.Path(dir_okay=False))
@click.argument("image", required=False)
@flag("thresh", type=float, default=0.25, show_default=True, help="Detection threshold.")
@flag("hier", "hier_thresh", type=float, default=0.5, show_default=True, help="Hierarchy threshold.")
@flag("ext_output", is_flag=True, help="Print box coordinates (left_x, top_y, width, height).")
@flag("dont_show", is_flag=True, help="Do not open a window (darknet-py never does; accepted).")
@flag("letter_box", is_flag=True, help="Letterbox the image instead of stretching it.")
@flag("out", "out", type=click.Path(dir_okay=False), default=None,
      help="Write Darknet's JSON result file.")
@flag("save_labels", is_flag=True, help="Write YOLO .txt labels next to each image.")
@flag("i", "gpu_index", type=int, default=0, show_default=True,
      help="GPU index (CPU when CUDA is not available).")
@flag("half", is_flag=True, help="fp16 forward on CUDA.")
def COMMAND(data, cfg, weights, image, thresh, hier_thresh, ext_output, dont_show, letter_box,
            out, save_labels, gpu_index, half):
    """Detect objects in IMAGE (or in image paths read from stdin)."""
    from ..infer.draw import JsonOutWriter, write_labels
    from ..infer.image import save_image
    preflight(data, cfg, weights, image=image, names=True)
    det = make_detector(data, cfg, weights, thresh, hier_thresh, letter_box,
                        device_from_index(gpu_index), half=half)
    writer = JsonOutWriter(out) if out else None
    single = image is not None
    failures = 0
    try:
        while True:
            if single:
                path = image
            else:
                sys.stdout.write("Enter Image Path: ")
                sys.stdout.flush()
                line = sys.stdin.readline()
                if not line:
                    break
                path = line.strip()
                if not path:
                    continue
            try:
                (name, im, dets), = det.detect_sets([path])
            except DataError as e:
                if single:
                    raise
                failures += 1
                print(f"Cannot load image {path}: {e.message}", file=sys.stderr)
                continue
            ms = det.last_forward_ms[0] if det.last_forward_ms else 0.0
            sys.stdout.write(det.stdout(name, dets, ms, ext_output))
            sys.stdout.flush()
            save_image(det.draw(im, dets), "predictions")
            if writer is not None:
                writer.add(dets, det.names, path)
            if save_labels:
                base, _ = os.path.splitext(path)
                write_labels(base + ".txt", dets, thresh)
            if single:
                break
    finally:
        if writer is not None:
            writer.close()
