"""``darknet-py data voc2yolo``: PASCAL VOC XML -> Darknet label files (see
:mod:`darknet_py.prep.voc`; AlexeyAB's ``scripts/voc_label.py`` does this for VOC itself)."""
from __future__ import annotations

from typing import Optional, Sequence

import click

from ..files import atomic_write_bytes, refuse_output_onto_inputs
from ..prep.voc import convert_voc_dataset, format_report, parse_name_map

GROUP = "data"

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command("voc2yolo", context_settings=_CONTEXT)
@click.argument("sources", nargs=-1, required=True, metavar="XML_DIR_OR_FILES...")
@click.option("--names", required=True, metavar="OBJ.NAMES",
              help="Class names, one per line; class id = line number - 1.")
@click.option("--map", "maps", multiple=True, metavar="XML=CLASS,...",
              help="Rename XML classes to obj.names classes. 'facemask' is short for "
                   "mask_weared_incorrect=chin_diaper,with_mask=mask,without_mask=no_mask.")
@click.option("--out-dir", metavar="DIR",
              help="Link the images into DIR and write the labels next to the links (the "
                   "dataset is not touched). Without it labels go next to the images "
                   "(or into labels/ for a JPEGImages/ folder), where Darknet looks.")
@click.option("--images-dir", metavar="DIR",
              help="Where the images are (default: next to the XML, ../images, ../JPEGImages).")
@click.option("--skip-difficult", is_flag=True, help="Drop objects marked <difficult>1.")
@click.option("--unknown", type=click.Choice(["error", "skip"]), default="error",
              show_default=True, help="An object whose class is not in obj.names (after --map).")
@click.option("--missing-image", type=click.Choice(["error", "skip"]), default="error",
              show_default=True, help="An XML whose image cannot be found.")
@click.option("--voc-shift", is_flag=True,
              help="Subtract 1 px from the centre like voc_label.py (default: cx=(xmin+xmax)/2/W).")
@click.option("--link", type=click.Choice(["symlink", "hardlink", "copy"]), default="symlink",
              show_default=True, help="How images are put into --out-dir.")
@click.option("--list", "list_file", metavar="FILE",
              help="Also write the converted images' paths (as Darknet should read them) here.")
def COMMAND(sources: Sequence[str], names: str, maps: Sequence[str], out_dir: Optional[str],
            images_dir: Optional[str], skip_difficult: bool, unknown: str, missing_image: str,
            voc_shift: bool, link: str, list_file: Optional[str]) -> None:
    """Convert PASCAL VOC XML annotations to Darknet's YOLO label files.

    Writes one '<class> <cx> <cy> <w> <h>' line per object (relative, 6 decimals), boxes clamped
    to the image, and prints the boxes per class. Face-mask set:

    \b
      darknet-py data voc2yolo annotations/ --names obj.names --map facemask --out-dir fm/
    """
    import os


    refuse_output_onto_inputs(list_file, "--list", [("names file", names)] +
                              [("XML source", s) for s in sources])
    result = convert_voc_dataset(
        sources, names, parse_name_map(maps), out_dir=out_dir, images_dir=images_dir,
        skip_difficult=skip_difficult, unknown=unknown, missing_image=missing_image,
        voc_shift=voc_shift, place=link)
    if list_file:
        os.makedirs(os.path.dirname(os.path.abspath(list_file)), exist_ok=True)
        atomic_write_bytes(list_file, "".join(p + "\n" for p in result.image_paths).encode())
    click.echo(format_report(result))
    if list_file:
        click.echo(f"image list: {list_file}")
