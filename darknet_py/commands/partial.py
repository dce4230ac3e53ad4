"""``darknet-py partial cfg weights out N``: keep the first N layers' weights (Darknet's partial).

The output is what Darknet writes: header 0.2.5 with ``seen = 0`` followed by the parameters of
layers ``0..N-1``; e.g. ``yolov4-tiny.conv.29`` from ``yolov4-tiny.weights``.
"""
from __future__ import annotations

import click

from ..errors import UsageError
from ..files import refuse_output_onto_inputs
from ..formats.weights import DARKNET_VERSION, WeightsHeader
from ..model.network import Network
from ._common import eprint, preflight, print_startup

GROUP = None


@click.command("partial", context_settings={"ignore_unknown_options": False})
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.argument("weights", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.argument("layers", type=int)
def COMMAND(cfg, weights, out, layers):
    """Write the first LAYERS layers of WEIGHTS to OUT (e.g. yolov4.conv.137)."""
    if layers < 0:
        raise UsageError(f"the layer count must be >= 0, got {layers}")
    preflight(cfg=cfg, weights=weights)
    refuse_output_onto_inputs(out, "the output", [("cfg file", cfg), ("weights file", weights)])
    net = Network.from_files(cfg, weights, batch=1, cutoff=layers)
    print_startup(net)
    eprint(f"Saving weights to {out}")
    net.seen = 0
    net.save_weights(out, cutoff=layers, header=WeightsHeader(*DARKNET_VERSION, seen=0))
