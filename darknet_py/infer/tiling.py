"""Tiled inference for small objects in large images (``-tiles CxR``, ``-tile_overlap F``,
``-tiles_full``).

>>> det = Detector("yolov4-tiny.cfg", "yolov4-tiny.weights", tiles=(3, 2), tile_overlap=0.2)
>>> det("street_6000x4000.jpg")

What exactly happens to one image of ``W x H`` pixels (network input ``w x h``):

1. **Grid** (:func:`tile_grid`). ``C`` columns of width ``tw = ceil(W / (C - (C-1)*overlap))``
   (so neighbouring tiles share ``overlap`` of a tile), ``R`` rows likewise. A tile is never
   smaller than the network input: ``tw`` is raised to ``min(w, W)`` (``th`` to ``min(h, H)``),
   so the network sees every tile at scale <= 1 and a tile is never enlarged beyond the network
   size (only an image already smaller than the network is enlarged, as untiled detection
   does). Tiles are spread evenly: column ``i`` starts at ``round(i * (W - tw) / (C - 1))``, so
   the first touches the left edge, the last the right edge, and sizes that do not divide evenly
   only change the overlap. Tiles that come out identical (a grid too fine for a small image)
   are run once.
2. **Detection**. Each tile is a crop of the loaded image that goes through the normal stages
   (:meth:`Pipeline.prepare` at the network size: the same stretch or letterbox, by the rule
   of the whole image: a crop of a still image is resized like ``detector test`` does, a crop of
   a video frame like ``demo`` does, :func:`~darknet_py.imaging.image.prepare_frame`; ``forward``,
   ``decode`` against the tile's own size); the tiles of an image (and of the images of a batch)
   go through the backend ``batch_size`` tiles at a time (at least one image's tiles).
3. **Mapping**. Candidate boxes, relative to their tile, become relative to the whole image
   (``x = (x_t * tw + x0) / W``, ``w = w_t * tw / W``; likewise y and h).
4. **Merge**. The candidates of all tiles (plus, with ``full=True``, the candidates of the whole
   image resized to the network as untiled detection makes them) are pooled and go through the
   pipeline's NMS once (:meth:`Pipeline.suppress`: the cfg's ``nms_kind``/``beta_nms`` through
   :func:`~darknet_py.infer.nms.apply_nms`, pixel boxes first for ``detector valid``), which
   merges the duplicates that tiles overlapping an object make. The result is one
   :class:`~darknet_py.structures.detections.DetectionSet` per image, like untiled detection,
   so drawing, ``-out`` JSON, labels, ``map`` and ``valid`` read it unchanged.

Known limit: an object larger than the overlap is cut by every tile that holds it; the pieces
(smaller boxes inside the whole one) can have an IoU below the NMS threshold with each other and
survive the merge. ``-tiles_full`` adds the whole-image pass that sees such objects whole.
"""
from __future__ import annotations

import math
import re
from typing import List, Optional, Sequence, Tuple

import torch

from ..errors import UsageError
from ..structures.detections import DetectionSet
from ..imaging.image import crop_image, image_size
from .pipeline import Pipeline, Source

__all__ = ["TiledPipeline", "tile_grid", "parse_tiles", "map_tile_boxes", "tiled"]

Tile = Tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)


def parse_tiles(text) -> Optional[Tuple[int, int]]:
    """``"3x2"`` -> ``(3, 2)``; ``None``/``""`` -> ``None``; a (C, R) pair is checked and
    returned. Anything else is a one-line :class:`UsageError` naming the value."""
    if text is None or text == "":
        return None
    if isinstance(text, str):
        m = re.fullmatch(r"\s*(\d+)\s*[xX*,]\s*(\d+)\s*", text)
        if not m:
            raise UsageError(f"-tiles {text}: expected COLUMNSxROWS, e.g. -tiles 3x2",
                             value=text)
        cols, rows = int(m.group(1)), int(m.group(2))
        shown = text
    else:
        try:
            cols, rows = (int(v) for v in text)
        except (TypeError, ValueError):
            raise UsageError(f"tiles={text!r}: expected (columns, rows)", value=text) from None
        shown = f"{cols}x{rows}"
    if cols < 1 or rows < 1:
        raise UsageError(f"-tiles {shown}: columns and rows must be >= 1", value=text)
    return cols, rows


def check_overlap(overlap: float) -> float:
    overlap = float(overlap)
    if not 0.0 <= overlap < 1.0:
        raise UsageError(f"-tile_overlap {overlap:g}: must be >= 0 and < 1", value=overlap)
    return overlap


def _axis(length: int, count: int, overlap: float, minimum: int) -> List[Tuple[int, int]]:
    size = math.ceil(length / (count - (count - 1) * overlap) - 1e-9)
    size = min(length, max(size, min(minimum, length)))
    if count == 1:
        starts = [(length - size) // 2]
    else:
        starts = [int(round(i * (length - size) / (count - 1))) for i in range(count)]
    return [(s, s + size) for s in starts]


def tile_grid(width: int, height: int, cols: int, rows: int, overlap: float = 0.2,
              net_width: int = 0, net_height: int = 0) -> List[Tile]:
    """The tiles ``(x0, y0, x1, y1)`` of a ``width x height`` image, row by row, without
    duplicates (see the module text for the rule)."""
    if width < 1 or height < 1:
        raise UsageError(f"cannot tile an image of {width}x{height} pixels")
    xs = _axis(int(width), int(cols), overlap, int(net_width))
    ys = _axis(int(height), int(rows), overlap, int(net_height))
    out: List[Tile] = []
    for y0, y1 in ys:
        for x0, x1 in xs:
            t = (x0, y0, x1, y1)
            if t not in out:
                out.append(t)
    return out


def map_tile_boxes(dets: DetectionSet, tile: Tile, image_wh: Tuple[int, int]) -> DetectionSet:
    """Candidates relative to ``tile`` -> relative to the whole image."""
    x0, y0, x1, y1 = tile
    w, h = image_wh
    tw, th = x1 - x0, y1 - y0
    b = dets.boxes.to(torch.float32)
    scale = torch.tensor([tw / w, th / h, tw / w, th / h], dtype=torch.float32)
    shift = torch.tensor([x0 / w, y0 / h, 0.0, 0.0], dtype=torch.float32)
    return DetectionSet(b * scale + shift, dets.objectness, dets.probs,
                        None if dets.uncertainty is None else dets.uncertainty * scale,
                        (int(w), int(h)))


class TiledPipeline(Pipeline):
    """A :class:`Pipeline` that detects on overlapping tiles of each image and merges them.

    Args (besides :class:`Pipeline`'s):
        tiles: ``(columns, rows)``.
        tile_overlap: fraction of a tile shared with its neighbour (0 <= overlap < 1).
        tiles_full: also detect on the whole image; its candidates join the merge.

    :meth:`run`, :meth:`iterate` and :meth:`detect_frames` tile; :meth:`detect_batch` (inputs
    already resized to the network) cannot and says so.
    """

    def __init__(self, backend, *, tiles, tile_overlap: float = 0.2, tiles_full: bool = False,
                 **options):
        super().__init__(backend, **options)
        self.tiles = parse_tiles(tiles)
        if self.tiles is None:
            raise UsageError("TiledPipeline needs tiles=(columns, rows)")
        self.tile_overlap = check_overlap(tile_overlap)
        self.tiles_full = bool(tiles_full)

    def grid(self, width: int, height: int) -> List[Tile]:
        return tile_grid(width, height, self.tiles[0], self.tiles[1], self.tile_overlap,
                         self.width, self.height)

    def candidates(self, originals: Sequence[Source]) -> List[DetectionSet]:
        """Pooled candidates (before NMS) of every loaded image or frame (:meth:`source`,
        :meth:`frame_source`), boxes relative to the image."""
        plan = self._prepare_sources(originals)
        outputs, ms = self._forward_prepared(plan, len(originals))
        self.last_forward_ms = [ms] * len(originals)
        return self._candidates(originals, self._after_forward(plan), outputs)

    # the stages of a batch (see Pipeline): the reader cuts and prepares the tiles, the network
    # thread runs them backend call by backend call, the calling thread decodes, maps, merges
    def _prepare_sources(self, originals: Sequence[Source]) -> List[Tuple[list, torch.Tensor]]:
        """The tile jobs ``(image index, tile or None for the whole image, crop size)`` of a
        batch, cut into backend calls of ``batch_size`` tiles (at least one image's tiles),
        each with its prepared input."""
        jobs = []
        for k, im in enumerate(originals):
            w, h = image_size(im)
            for t in self.grid(w, h):
                x0, y0, x1, y1 = t
                jobs.append((k, t, crop_image(im, x0, y0, x1, y1)))
            if self.tiles_full:
                jobs.append((k, None, im))
        per_image = max(1, len(jobs) // max(1, len(originals)))
        step = max(self.batch_size, per_image)
        plan = []
        for s in range(0, len(jobs), step):
            chunk = jobs[s:s + step]
            crops = [c for _, _, c in chunk]
            plan.append(([(k, t, image_size(c)) for k, t, c in chunk], self.prepare(crops)))
        return plan

    def _forward_prepared(self, plan, count: int):
        outputs, total_ms = [], 0.0
        for _, x in plan:
            outs, ms = self._timed_forward(x)
            outputs.append(outs)
            total_ms += ms * int(x.shape[0])
        return outputs, total_ms / max(1, count)

    def _after_forward(self, plan):
        return [jobs for jobs, _ in plan]

    def _candidates(self, originals: Sequence[Source], plan: List[list], outputs: list
                    ) -> List[DetectionSet]:
        pooled: List[List[DetectionSet]] = [[] for _ in originals]
        for jobs, outs in zip(plan, outputs):
            sets = self.decode(outs, [size for _, _, size in jobs])
            for (k, t, _), cand in zip(jobs, sets):
                wh = image_size(originals[k])
                pooled[k].append(cand if t is None else map_tile_boxes(cand, t, wh))
        return [DetectionSet.concat(p, self.backend.classes, image_size(im))
                for p, im in zip(pooled, originals)]

    def _finish_outputs(self, originals, plan, outputs) -> List[DetectionSet]:
        return self.suppress(self._candidates(originals, plan, outputs))

    def detect_batch(self, x, image_sizes):
        raise UsageError("tiled detection needs the original images, not network inputs: use "
                         "run/iterate/detect_frames (Detector: __call__/detect_sets/"
                         "detect_frames)")

    def __repr__(self) -> str:
        c, r = self.tiles
        return (f"TiledPipeline({self.backend.describe()}, tiles={c}x{r}, "
                f"overlap={self.tile_overlap}, full={self.tiles_full}, thresh={self.thresh}, "
                f"nms={self.nms})")


def tiled(pipeline: Pipeline, tiles, tile_overlap: float = 0.2, tiles_full: bool = False
          ) -> Pipeline:
    """``pipeline`` itself when ``tiles`` is None, else a :class:`TiledPipeline` with the same
    backend and settings (how ``map``/``valid`` add ``-tiles`` to the pipeline they use)."""
    tiles = parse_tiles(tiles)
    if tiles is None:
        return pipeline
    return TiledPipeline(pipeline.backend, tiles=tiles, tile_overlap=tile_overlap,
                         tiles_full=tiles_full, thresh=pipeline.thresh,
                         hier_thresh=pipeline.hier_thresh, nms=pipeline.nms,
                         letter_box=pipeline.letter_box, batch_size=pipeline.batch_size,
                         pixel_boxes=pipeline.pixel_boxes, loader_threads=pipeline.loader_threads)
