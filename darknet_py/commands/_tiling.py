"""The ``-tiles CxR`` / ``-tile_overlap F`` / ``-tiles_full`` flags of ``detector test``, ``demo``,
``map`` and ``valid`` (tiled inference, :mod:`darknet_py.infer.tiling`)."""
from __future__ import annotations

from ..errors import UsageError
from ..infer.tiling import check_overlap, parse_tiles
from ._common import flag


def tile_flags(fn):
    """Add the tiling flags; the command receives ``tiles`` (text or None), ``tile_overlap`` and
    ``tiles_full``; :func:`tile_options` checks them."""
    fn = flag("tiles_full", is_flag=True,
              help="With -tiles: also detect on the whole image and merge it in.")(fn)
    fn = flag("tile_overlap", type=float, default=0.2, show_default=True,
              help="With -tiles: fraction of a tile shared with its neighbour.")(fn)
    return flag("tiles", type=str, default=None, metavar="CxR",
                help="Detect on C x R overlapping tiles of each image (small objects in large "
                     "images); duplicates are merged with the cfg's NMS.")(fn)


def tile_options(tiles, tile_overlap: float, tiles_full: bool) -> dict:
    """Checked keyword arguments for ``Detector``/``tiled`` (one-line UsageError naming a bad
    value); ``tiles`` None when tiling is off."""
    parsed = parse_tiles(tiles)
    if parsed is None and tiles_full:
        raise UsageError("-tiles_full needs -tiles CxR")
    return {"tiles": parsed, "tile_overlap": check_overlap(tile_overlap), "tiles_full": tiles_full}
