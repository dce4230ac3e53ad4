"""``darknet-py cfg options CFG|DIR … [--ignored] [--summary]``: the training options of cfgs.

For each cfg (a folder stands for the detection cfgs in it: those with a ``[yolo]``, ``[region]``
or ``[Gaussian_yolo]`` section), every training option it sets, where, and what darknet-py does
with it, from the one table in :mod:`darknet_py.train.options` (status ``implemented``,
``ignored``, ``unused``; ``default`` for an ignored option left at Darknet's default). A
``[contrastive]`` layer adds the layers that are not trained. ``--ignored``: only what
``detector train`` warns about; ``--summary``: one line per option over all the cfgs given.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Tuple

import click

from ..errors import CfgError
from ..files import read_bounded
from ..formats.cfg import MAX_CFG_BYTES, read_cfg
from ..model.network import Network
from ..train.options import (IGNORED, _ranges, describe_set_options, training_options,
                             untrained_branches)

GROUP = "cfg"

_HEAD = re.compile(r"^\s*\[(yolo|region|Gaussian_yolo)\]", re.M)


def _cfg_files(paths: Tuple[str, ...]) -> List[str]:
    out: List[str] = []
    for p in paths:
        if os.path.isdir(p):
            for name in sorted(os.listdir(p)):
                f = os.path.join(p, name)
                if name.endswith(".cfg") and os.path.isfile(f) and _HEAD.search(
                        read_bounded(f, MAX_CFG_BYTES, CfgError, "cfg file")
                        .decode("utf-8", "replace")):
                    out.append(f)
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise CfgError("cfg file or folder not found", file=p)
    return out


def _status(o) -> str:
    if o.option.status == IGNORED and o.is_default:
        return "default"
    return o.option.status


def _cfg_lines(path: str, ignored_only: bool) -> List[str]:
    sections = read_cfg(path)
    opts = training_options(sections)
    groups: Dict[Tuple[str, str, str], list] = {}
    for o in opts:
        groups.setdefault((o.section, o.key, o.value), []).append(o)
    lines = []
    for group in groups.values():
        o = group[0]
        status = _status(o)
        if ignored_only and (status != IGNORED or o.section == "contrastive"):
            continue
        lines.append(f"  {status:<12s} {describe_set_options(group)}: {o.option.what}")
    lines.extend(_contrastive_lines(path, sections))
    return lines


def _contrastive_lines(path: str, sections) -> List[str]:
    """The [contrastive] branch note (needs the layer graph, so only such cfgs are built)."""
    if not any(s.type == "contrastive" for s in sections):
        return []
    net = Network.from_cfg(path, batch=1)
    out = []
    for layer, branch in untrained_branches(net):
        what = (f"layers {_ranges(branch)} feed only it and are not trained" if branch else
                "nothing is trained through it")
        out.append(f"  {IGNORED:<12s} [contrastive] (line {layer.section.line}): no loss in "
                   f"darknet-py: {what}")
    return out


def _summary(files: List[str]) -> List[str]:
    seen: Dict[Tuple[str, str], dict] = {}
    for f in files:
        for o in training_options(read_cfg(f)):
            entry = seen.setdefault((o.section, o.key), {"option": o.option, "cfgs": set(),
                                                         "statuses": set()})
            entry["cfgs"].add(os.path.basename(f))
            entry["statuses"].add(_status(o))
    lines = []
    for (section, key), e in sorted(seen.items(), key=lambda kv: (kv[1]["option"].status,
                                                                  kv[0][0] != "net", kv[0])):
        name = key if section == "net" else f"[{section}] {key}"
        status = "/".join(sorted(e["statuses"]))
        lines.append(f"{status:<20s} {name:<34s} {len(e['cfgs']):3d} cfgs  {e['option'].what}")
    return lines


@click.command("options", context_settings={"help_option_names": ["-h", "--help"],
                                            "max_content_width": 100})
@click.argument("cfgs", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--ignored", "ignored_only", is_flag=True,
              help="Only the options darknet-py ignores (what detector train warns about).")
@click.option("--summary", is_flag=True,
              help="One line per option over all the cfgs: status, how many cfgs set it, what "
                   "darknet-py does.")
def COMMAND(cfgs: Tuple[str, ...], ignored_only: bool, summary: bool) -> None:
    """Print the training options CFGS set and what darknet-py does with each (a folder: its
    detection cfgs). Statuses: implemented; ignored (darknet-py does not do it, training warns);
    default (ignored, but at Darknet's default value); unused (Darknet's detector training does
    not use it either, or it tunes the CUDA build only)."""
    files = _cfg_files(cfgs)
    if summary:
        for line in _summary(files):
            click.echo(line)
        return
    for f in files:
        lines = _cfg_lines(f, ignored_only)
        if ignored_only and not lines:
            continue
        click.echo(f)
        for line in lines:
            click.echo(line)
