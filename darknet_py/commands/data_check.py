"""``darknet-py data check obj.data [-train|-valid|-all] [-cfg CFG] [-decode] [-fix-into DIR]
[-json report.json] [-strict]``: the dataset doctor of :mod:`darknet_py.data.check`."""
from __future__ import annotations

import json

import click

from ..data.check import check_dataset, format_report, write_fixed_copy
from ..data.datacfg import read_data_cfg
from ..errors import DataError
from ..files import atomic_write_bytes, refuse_output_onto_inputs
from ._common import eprint, flag

GROUP = "data"

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command("check", context_settings=_CONTEXT)
@click.argument("datacfg", metavar="OBJ.DATA")
@flag("train", "which", flag_value="train", help="Check only the train= list.")
@flag("valid", "which", flag_value="valid", help="Check only the valid= list.")
@flag("all", "which", flag_value="all", default=True,
      help="Check train= and, when set, valid= (default; also finds train/valid leakage).")
@flag("cfg", metavar="CFG", default=None,
      help="Network cfg: box sizes in network pixels, sub-stride boxes, anchors, classes.")
@flag("decode", is_flag=True, help="Decode every image (default: header and end-marker checks).")
@flag("fix-into", "fix_into", metavar="DIR", default=None,
      help="Write a cleaned copy into DIR (new or empty); the originals are never modified.")
@flag("json", "json_path", metavar="REPORT.JSON", default=None,
      help="Also write the whole report (every finding) as JSON.")
@flag("strict", is_flag=True, help="Exit with 1 on warnings too.")
@flag("limit", type=int, default=20, show_default=True,
      help="Lines printed per kind of problem (0: all).")
@flag("seed", type=int, default=0, show_default=True,
      help="srand() seed of the anchors k-means (as detector calc_anchors -seed).")
def COMMAND(datacfg: str, which: str, cfg, decode: bool, fix_into, json_path, strict: bool,
            limit: int, seed: int) -> None:
    """Check a dataset before training: images, labels, lists, duplicates, leakage, statistics.

    One line per problem (FILE:LINE: severity: kind: message), grouped by kind, then a summary
    table (images, boxes and images per class, imbalance, box sizes, aspect ratios) and the
    counters_per_class= / anchors= lines to put in the cfg.

    Exit code: 0 when there are no errors (warnings only, e.g. missing label files, boxes
    sticking out of the image, duplicates, train/valid leakage); 1 when there are errors that
    training would skip or choke on (missing, empty, unreadable or truncated images; label lines
    Darknet drops or misreads; classes not matching the cfg), or with -strict when there are
    warnings, or when the check cannot run at all (a one-line message on stderr); 2 for bad
    usage.
    """

    if json_path is not None:
        parsed = read_data_cfg(datacfg)
        refuse_output_onto_inputs(json_path, "-json", [
            ("data file", datacfg), ("cfg file", cfg), ("names file", parsed.names),
            ("train list", parsed.train), ("valid list", parsed.valid)])
    rep = check_dataset(datacfg, which=which, cfg=cfg, decode=decode, anchors_seed=seed)
    click.echo(format_report(rep, limit=limit))
    if json_path is not None:
        try:
            atomic_write_bytes(json_path, json.dumps(rep.as_dict(), indent=1).encode())
        except OSError as e:
            raise DataError(f"cannot write the report: {e.strerror}", file=json_path) from None
        eprint(f"report written to {json_path}")
    if fix_into is not None:
        fixed = write_fixed_copy(rep, fix_into)
        kept = ", ".join(f"{k} {v} entries ({fixed.entries_dropped[k]} dropped)"
                         for k, v in fixed.entries_kept.items())
        click.echo(f"\ncleaned copy in {fixed.folder}: {kept}; {fixed.lines_dropped} label "
                   f"lines dropped, {fixed.boxes_clamped} boxes clamped; use {fixed.data}")
    code = rep.exit_code(strict=strict)
    if code:
        raise SystemExit(code)
