"""Pieces shared by the command modules: Darknet-style flags, network loading, messages."""
from __future__ import annotations

import os
import sys
from typing import Optional

import click

from ..errors import DataError, UsageError


def flag(name: str, dest: Optional[str] = None, **kw):
    """A Darknet single-dash option (``-thresh``) that also accepts ``--thresh``."""
    return click.option(f"-{name}", f"--{name}", dest or name.replace("-", "_"), **kw)


def eprint(*args) -> None:
    print(*args, file=sys.stderr)
    sys.stderr.flush()


def load_network(cfg: str, weights: Optional[str], *, batch: int = 1, cutoff=None,
                 width=None, height=None, quiet: bool = False, fuse: bool = True,
                 device: str = "cpu"):
    """Build the network from a cfg, print Darknet's table, load weights, set eval mode."""
    from ..model.network import Network
    from ..model.weights import format_load_report
    net = Network.from_cfg(cfg, batch=batch, width=width, height=height)
    if not quiet:
        net.print_table()
    if weights is not None:
        rep = net.load_weights(weights, cutoff=cutoff)
        if not quiet:
            eprint(format_load_report(rep))
    net.eval()
    if fuse:
        net.fuse()
    return net.to(device) if device != "cpu" else net


def check_file(path: str, what: str) -> str:
    if not os.path.exists(path):
        raise DataError(f"{what} not found", file=path)
    return path


def parse_gpus(text: Optional[str]):
    if not text:
        return []
    try:
        return [int(t) for t in text.split(",") if t.strip() != ""]
    except ValueError:
        raise UsageError(f"-gpus expects a comma-separated list of GPU indices, got '{text}'") \
            from None
