"""``darknet-py data split``: train/valid/test list files, obj.names and obj.data (see
:mod:`darknet_py.prep.split`)."""
from __future__ import annotations

from typing import Optional

import click

from ..files import refuse_output_onto_inputs
from ..prep.split import format_split_report, split_dataset

GROUP = "data"

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command("split", context_settings=_CONTEXT)
@click.argument("source", metavar="IMAGES_DIR_OR_LIST")
@click.option("--names", required=True, metavar="OBJ.NAMES", help="Class names (copied to OUT).")
@click.option("--out", "out_dir", required=True, metavar="DIR",
              help="Folder for train.txt, valid.txt, test.txt, obj.names, obj.data.")
@click.option("--ratios", default="0.7,0.15,0.15", show_default=True, metavar="TRAIN,VALID[,TEST]",
              help="Shares of the images; must sum to 1.")
@click.option("--seed", default=0, show_default=True, type=int, help="Shuffle seed.")
@click.option("--stratify", is_flag=True,
              help="Divide the images holding each class (by their rarest class) in the ratios.")
@click.option("--root", metavar="DIR", help="Base folder for relative paths in a list file "
                                           "(default: the list file's folder).")
@click.option("--backup", metavar="DIR", help="obj.data backup= folder (default: OUT/backup).")
def COMMAND(source: str, names: str, out_dir: str, ratios: str, seed: int, stratify: bool,
            root: Optional[str], backup: Optional[str]) -> None:
    """Split labelled images into Darknet's train/valid/test lists and write obj.data.

    Labels are found the way Darknet finds them (next to each image, or labels/ for JPEGImages/).
    With a test split, obj-test.data points valid= at test.txt for the final `detector map`.
    """
    import os


    for name in ("train.txt", "valid.txt", "test.txt", "obj.names", "obj.data", "obj-test.data"):
        refuse_output_onto_inputs(os.path.join(out_dir, name), "--out",
                                  [("source list", source), ("names file", names)])
    result = split_dataset(source, out_dir, names, ratios=ratios, seed=seed, stratify=stratify,
                           root=root, backup=backup)
    click.echo(format_split_report(result))
