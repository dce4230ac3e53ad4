"""``darknet-py cfg show CFG [-width W -height H] [-batch N]``: Darknet's layer table for a cfg.

Prints what Darknet prints while it parses the cfg (``parse_network_cfg_custom(cfg, 1, 1)``, as
``detector test`` does): the ``mini_batch = …`` line, the layer table with shapes and BFLOPs,
``Total BFLOPS``, ``avg_outputs`` and the ``Unused field`` warnings, on stdout (Darknet writes it
to stderr). No weights are needed. Also available as ``cfg table``.
"""
from __future__ import annotations

import sys
from typing import Optional

import click

from ..errors import UsageError
from ..model.network import Network
from ._common import flag, preflight

GROUP = "cfg"
ALIASES = ("table",)


@click.command("show", context_settings={"help_option_names": ["-h", "--help"],
                                         "max_content_width": 100})
@click.argument("cfg", type=click.Path(dir_okay=False))
@flag("width", type=int, default=None, help="Network width (default: the cfg's).")
@flag("height", type=int, default=None, help="Network height (default: the cfg's).")
@flag("batch", type=int, default=1, show_default=True,
      help="Mini-batch the table is printed for (Darknet's detector test uses 1).")
def COMMAND(cfg: str, width: Optional[int], height: Optional[int], batch: int) -> None:
    """Print Darknet's layer table for CFG (shapes, BFLOPs, unused fields)."""
    preflight(cfg=cfg)
    if batch < 1:
        raise UsageError(f"-batch must be >= 1, got {batch}")
    net = Network.from_cfg(cfg, batch=batch, width=width, height=height)
    net.eval()
    net.print_table(file=sys.stdout)
    sys.stdout.flush()
