"""``darknet-py detect cfg weights [image]``: Darknet's shortcut for ``detector test`` with COCO.

Darknet's ``main`` (``src/darknet.c``) runs ``test_detector("cfg/coco.data", cfg, weights, image,
thresh, .5, ...)`` for ``detect``, with ``-thresh`` defaulting to 0.24 and ``-ext_output``; the
data file is read from the working directory, as there. Everything else is ``detector test``.
"""
from __future__ import annotations

import os

import click

from ..errors import DataError
from ._common import backend_flags, flag
from .detector_test import COMMAND as detector_test

GROUP = None

#: what Darknet's detect reads, relative to the working directory
COCO_DATA = os.path.join("cfg", "coco.data")


@click.command("detect")
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.argument("weights", required=False)
@click.argument("image", required=False)
@flag("thresh", type=float, default=0.24, show_default=True,
      help="Detection threshold (Darknet's detect default).")
@flag("ext_output", is_flag=True, help="Print box coordinates (left_x, top_y, width, height).")
@flag("dont_show", is_flag=True, help="Do not open a window (darknet-py never does; accepted).")
@backend_flags
@click.pass_context
def COMMAND(ctx, cfg, weights, image, thresh, ext_output, dont_show, **backend_options):
    """Detect objects in IMAGE with a COCO model: `detector test cfg/coco.data CFG WEIGHTS IMAGE`.

    cfg/coco.data is read from the working directory, as Darknet does (the darknet-py folder
    has one)."""
    if not os.path.exists(COCO_DATA):
        raise DataError(f"detect reads {COCO_DATA} from the working directory, as Darknet does, "
                        f"and {os.getcwd()} has none: run it from the darknet-py folder, or use "
                        f"`darknet-py detector test obj.data cfg weights image`", file=COCO_DATA)
    ctx.invoke(detector_test, data=COCO_DATA, cfg=cfg, weights=weights, image=image,
               thresh=thresh, ext_output=ext_output, dont_show=dont_show, **backend_options)
