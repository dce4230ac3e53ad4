"""Detections and ground truth for Darknet's ``validate_detector_map``, and mAP of a network.

:func:`collect_map_inputs` runs a network over a valid list the way ``validate_detector_map``
does (objectness threshold 0.005, NMS 0.45 with the last head's ``nms_kind``, stretch or the cfg's
letterbox) and reads each image's labels; :func:`evaluate_network_map` adds the metric and prints
Darknet's report. ``detector map`` and ``detector train -map`` both use them.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, TextIO

import numpy as np

from ..console import eprint
from ..data.datacfg import read_list
from ..data.labels import read_labels
from ..data.paths import label_path
from ..errors import DataError, UsageError
from ..metrics import darknet_map, format_map_report
from ..metrics.progress import StageProgress
from ..model.decode import as_spec
from ..structures.detections import DetectionSet
from .backends.base import Backend
from .backends.exact import ExactBackend
from .pipeline import Pipeline
from .tiling import tiled

#: ``validate_detector_map``'s fixed values
MAP_OBJECTNESS_THRESH = 0.005
MAP_NMS_THRESH = 0.45



@dataclass
class MapInputs:
    """What the network and the label files give for a valid list (input of ``darknet_map``)."""

    paths: List[str]
    detections: List[DetectionSet]
    truths: List[np.ndarray]
    classes: int
    #: (layer index, Darknet LAYER_TYPE code) of each detection head
    heads: List[tuple]
    missing_labels: List[str]


def read_map_truths(image_path: str, on_missing: Optional[Callable[[str], None]] = None
                    ) -> np.ndarray:
    """The label rows Darknet's ``read_boxes`` returns for an image (``(M, 5)`` float32), via
    :mod:`darknet_py.data` (path mapping and reader); no label file -> no rows."""
    lp = label_path(image_path, strict=False)
    if lp is None:
        eprint(f"Failed to infer label file name (check image extension is supported): "
               f"{image_path} ")
        return np.zeros((0, 5), np.float32)
    lab = read_labels(lp)
    if lab.missing:
        if on_missing is not None:
            on_missing(lp)
        return np.zeros((0, 5), np.float32)
    rows = lab.rows if lab.rows is not None else lab.boxes
    return np.ascontiguousarray(rows, dtype=np.float32).reshape(-1, 5)


def map_pipeline(backend, batch_size: int = 4, loader_threads: Optional[int] = None):
    """The pipeline ``validate_detector_map`` runs: objectness 0.005, NMS 0.45 with the last
    head's kind, the model's own ``letter_box`` (Darknet ignores ``-letter_box`` here); its
    stages overlap (``loader_threads``: see :class:`~darknet_py.infer.pipeline.Pipeline`)."""
    return Pipeline(backend, thresh=MAP_OBJECTNESS_THRESH, hier_thresh=0.0, nms=MAP_NMS_THRESH,
                    letter_box=backend.letter_box, batch_size=batch_size,
                    loader_threads=loader_threads)


def detect_for_map(pipeline, images: Sequence[str],
                   progress: Optional[Callable[[int], None]] = None) -> List[DetectionSet]:
    """Detections of each image as ``validate_detector_map`` makes them (see
    :func:`map_pipeline`), boxes relative to the original image."""
    out: List[DetectionSet] = []
    for done, (_, _, dets) in enumerate(pipeline.iterate(list(images), keep_images=False), 1):
        out.append(dets)
        if progress is not None and (done % pipeline.batch_size == 0 or done == len(images)):
            progress(done)
    return out


def head_codes(heads) -> List[tuple]:
    """(layer index, Darknet LAYER_TYPE code) of each head (the ``Detection layer`` lines)."""
    return [(as_spec(h).index, as_spec(h).type_code) for h in heads]


def collect_map_inputs(model: Backend, images: Sequence[str] = (), *, batch_size: int = 4,
                       progress: Optional[Callable[[int], None]] = None,
                       on_missing_label: Optional[Callable[[str], None]] = None,
                       tiling: Optional[dict] = None,
                       announce: Optional[Callable[[str], None]] = None) -> MapInputs:
    """Run a model over ``images`` and read their labels (all but the metric itself).

    ``model`` is the backend that runs the network (:func:`~.backends.factory.make_backend`);
    ``tiling`` (``tiles``, ``tile_overlap``, ``tiles_full``) detects on tiles
    (:func:`~darknet_py.infer.tiling.tiled`), the rest unchanged. ``announce`` gets the line
    saying which threads run what (:meth:`~darknet_py.infer.pipeline.Pipeline.describe_threads`)
    before the images run.
    """
    if not model.heads:
        raise UsageError("the network has no detection layer ([yolo], [region], "
                         "[Gaussian_yolo]); detector map needs one", value=model.source)
    missing: List[str] = []

    def note_missing(lp: str) -> None:
        missing.append(lp)
        if on_missing_label is not None:
            on_missing_label(lp)

    pipeline = map_pipeline(model, batch_size)
    if tiling:
        pipeline = tiled(pipeline, **tiling)
    if announce is not None:
        announce(pipeline.describe_threads())
    dets = detect_for_map(pipeline, list(images), progress)
    truths = [read_map_truths(p, note_missing) for p in images]
    return MapInputs(list(images), dets, truths, model.classes, head_codes(model.heads), missing)


def read_difficult_truths(difficult_list: str, count: int) -> List[np.ndarray]:
    """Labels of the ``difficult=`` list (parallel to ``valid=``, VOC2007)."""
    dif_images = read_list(difficult_list)
    if len(dif_images) < count:
        raise DataError(f"the difficult list has {len(dif_images)} images, the valid list "
                        f"{count}", file=difficult_list)
    return [read_map_truths(p) for p in dif_images[:count]]


class EvaluationStopped(Exception):
    """:func:`evaluate_network_map` stopped because its ``should_stop`` said so."""


def evaluate_network_map(net, valid_list: str, names: Sequence[str], classes: int,
                         thresh: float = 0.25, iou_thresh: float = 0.5, map_points: int = 0,
                         difficult: Optional[str] = None, batch_size: int = 4,
                         out: Optional[TextIO] = None,
                         should_stop: Optional[Callable[[], bool]] = None,
                         progress_delay: Optional[float] = None):
    """mAP of ``net`` (a :class:`~darknet_py.model.network.Network`, used as it is: not fused,
    not moved) on the images of ``valid_list``, printing Darknet's report to ``out``.

    Images are letterboxed when the cfg's ``[net] letter_box`` says so, stretched otherwise:
    Darknet's ``validate_detector_map`` takes a ``letter_box`` argument but replaces it with
    ``net.letter_box``, so there is no argument for it here.
    ``should_stop`` is asked after every batch of images and every matched image: when it says
    yes, :class:`EvaluationStopped` is raised (the trainer's signal handling: a cluster's grace
    period is shorter than a long evaluation). Progress goes to stderr once a stage has taken
    ``progress_delay`` seconds (default: :class:`~darknet_py.metrics.progress.StageProgress`'s).
    """

    def check() -> None:
        if should_stop is not None and should_stop():
            raise EvaluationStopped()
    out = out or sys.stdout
    images = read_list(valid_list)
    if not images:
        raise DataError("the valid list is empty", file=valid_list)
    print("\n calculation mAP (mean average precision)...", file=out)
    backend = ExactBackend.wrap(net)
    for index, code in head_codes(backend.heads):
        print(f" Detection layer: {index} - type = {code} ", file=out)
    out.flush()              # a log shows that the (possibly long) calculation has started
    shown = StageProgress(progress_delay, check=check)
    shown.begin("mAP: detecting, images")
    inputs = collect_map_inputs(backend, images=images, batch_size=batch_size,
                                progress=lambda done: shown.step(done, len(images)))
    dif = read_difficult_truths(difficult, len(images)) if difficult else None
    shown.begin("mAP: matching, images")
    try:
        result = darknet_map(inputs.detections, inputs.truths, classes, list(names),
                             iou_thresh=iou_thresh, thresh=thresh, map_points=map_points,
                             difficult_truths=dif, progress=shown.step)
    finally:
        shown.end()
    out.write(format_map_report(result, progress=True, footer=False))
    out.flush()
    return result
