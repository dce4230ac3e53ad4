"""Object tracking across frames with ByteTrack (``detector demo … -track``, ``Detector.track``).

>>> for frame in det.track("walkway.mp4"):
...     print(frame.frame_id, [(d.name, d.track_id) for d in frame.detections])

The association is `supervision <https://github.com/roboflow/supervision>`_'s ``sv.ByteTrack``
(an optional extra: ``pip install 'darknet-py[track]'``); darknet-py only converts. Per frame:

1. the detections Darknet would print (:func:`~darknet_py.infer.draw.actual_detections`: each
   box with its best class above ``thresh``) become an ``sv.Detections`` with corner boxes in
   pixels of the frame, that class id and its probability as the confidence; boxes of
   different classes on one object (IoU > ``merge_iou``, default 0.7) are merged by
   supervision's class-agnostic NMS, keeping the most confident;
2. ``ByteTrack.update_with_detections`` matches them to the tracks (class-agnostic, as
   supervision does) and returns the boxes that belong to a confirmed track with its
   ``tracker_id``;
3. :class:`TrackedFrame` keeps those rows of the frame's :class:`DetectionSet` (all their classes
   above ``thresh``, like ``-out``), with one ``track_id`` per row.

Boxes ByteTrack does not confirm (its new-track threshold is ``track_activation_threshold + 0.1``,
``thresh + 0.1`` here) are not reported for that frame. :meth:`ByteTracker.counts` gives the
number of unique tracks per class (a track's class is the one it had in most of its frames).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

from ..errors import UsageError
from ..structures.boxes import xywh_to_xyxy
from ..structures.detections import Detection, DetectionSet, ImageDetections
from .draw import actual_detections, draw_detections
from .results import detection_to_json, to_detections
from .stream import frame_reader, stream

__all__ = ["ByteTracker", "TrackedFrame", "track", "require_supervision"]

SUPERVISION_HINT = "pip install 'darknet-py[track]'"


def require_supervision():
    """The ``supervision`` module with ``ByteTrack``, or a one-line UsageError saying how to get
    it."""
    try:
        import supervision as sv
    except ImportError:
        raise UsageError(f"tracking needs the supervision package ({SUPERVISION_HINT})") from None
    if not hasattr(sv, "ByteTrack"):
        raise UsageError(f"supervision {getattr(sv, '__version__', '?')} has no ByteTrack "
                         f"(removed in later releases): {SUPERVISION_HINT} installs one that has "
                         "it")
    return sv


def subset(dets: DetectionSet, rows: Sequence[int]) -> DetectionSet:
    idx = torch.as_tensor(list(rows), dtype=torch.long)
    return DetectionSet(dets.boxes[idx], dets.objectness[idx], dets.probs[idx],
                        None if dets.uncertainty is None else dets.uncertainty[idx],
                        dets.image_size)


@dataclass
class TrackedFrame:
    """One frame of a tracked stream.

    ``detections``: one :class:`Detection` per (tracked box, class above thresh) with its
    ``track_id``; ``raw``: those boxes as a :class:`DetectionSet`; ``track_ids``: the id of each
    row of ``raw``; ``frame``: the frame as the source gave it (None from
    :meth:`ByteTracker.update`)."""

    frame_id: int
    frame: object
    detections: ImageDetections
    raw: DetectionSet
    track_ids: List[int]

    def to_json(self, names: Sequence[str], filename: Optional[str] = None) -> str:
        """Darknet's ``-out`` entry of this frame, each object with its ``track_id``."""
        return detection_to_json(self.raw, names, self.frame_id, filename,
                                 track_ids=self.track_ids)

    def labels(self) -> List[str]:
        return [f"#{t}" for t in self.track_ids]


class ByteTracker:
    """ByteTrack over a detector's per-frame :class:`DetectionSet`s.

    Args:
        names: class names (for :meth:`counts` and the labels).
        thresh: the detection threshold (boxes above it are passed to ByteTrack, which also
            uses it as ``track_activation_threshold``).
        frame_rate: the video's frame rate (scales ``lost_track_buffer``).
        lost_track_buffer: frames a lost track is kept to be found again.
        minimum_matching_threshold: ByteTrack's matching threshold.
        minimum_consecutive_frames: frames before a new track is reported.
        merge_iou: boxes of different classes overlapping more than this (IoU) are one object
            for the tracker (supervision's class-agnostic ``with_nms``, the highest confidence
            kept): Darknet's per-class NMS leaves e.g. a ``dog`` and a ``cat`` box on the same
            animal, which would otherwise compete for one track. ``None``: no merging.
    """

    def __init__(self, names: Sequence[str], thresh: float = 0.25, frame_rate: float = 25.0,
                 lost_track_buffer: int = 30, minimum_matching_threshold: float = 0.8,
                 minimum_consecutive_frames: int = 1, merge_iou: Optional[float] = 0.7):
        sv = require_supervision()
        self._sv = sv
        self.names = list(names)
        self.thresh = float(thresh)
        self.tracker = sv.ByteTrack(track_activation_threshold=self.thresh,
                                    lost_track_buffer=int(lost_track_buffer),
                                    minimum_matching_threshold=float(minimum_matching_threshold),
                                    frame_rate=max(1, int(round(frame_rate))),
                                    minimum_consecutive_frames=int(minimum_consecutive_frames))
        self.merge_iou = None if merge_iou is None else float(merge_iou)
        self.frames = 0
        self._classes: Dict[int, Counter] = defaultdict(Counter)

    def update(self, dets: DetectionSet, frame_id: Optional[int] = None, frame=None
               ) -> TrackedFrame:
        """Track one frame's detections (frames must come in order)."""
        sv = self._sv
        self.frames += 1
        frame_id = self.frames if frame_id is None else int(frame_id)
        selected = actual_detections(dets, self.thresh, self.names)
        w, h = dets.image_size
        if selected:
            rows = np.array([r for r, _ in selected], dtype=np.int64)
            best = np.array([c for _, c in selected], dtype=np.int64)
            b = dets.boxes.detach().to(torch.float32).cpu().numpy()[rows]
            probs = dets.probs.detach().to(torch.float32).cpu().numpy()
            xyxy = xywh_to_xyxy(b) * np.array([w, h, w, h], np.float32)
            det = sv.Detections(xyxy=xyxy.astype(np.float32),
                                confidence=probs[rows, best].astype(np.float32),
                                class_id=best, data={"row": rows})
            if self.merge_iou is not None and len(det) > 1:
                det = det.with_nms(threshold=self.merge_iou, class_agnostic=True)
        else:
            det = sv.Detections.empty()
            det.data = {"row": np.zeros(0, dtype=np.int64)}
        out = self.tracker.update_with_detections(det)
        kept_rows: List[int] = []
        ids: List[int] = []
        if len(out):
            for row, cls, tid in zip(out.data["row"].tolist(), out.class_id.tolist(),
                                     out.tracker_id.tolist()):
                kept_rows.append(int(row))
                ids.append(int(tid))
                self._classes[int(tid)][int(cls)] += 1
        raw = subset(dets, kept_rows) if kept_rows else DetectionSet.empty(
            int(dets.probs.shape[1]) if dets.probs.dim() == 2 else 0, dets.image_size)
        return TrackedFrame(frame_id, frame, self._labelled(raw, ids, frame_id), raw, ids)

    def _labelled(self, raw: DetectionSet, ids: List[int], frame_id: int) -> ImageDetections:
        out: List[Detection] = []
        for i, tid in enumerate(ids):
            for d in to_detections("", subset(raw, [i]), self.names, self.thresh):
                d.track_id = tid
                out.append(d)
        return ImageDetections(f"frame {frame_id}", out, raw)

    def counts(self) -> Dict[str, int]:
        """Unique tracks per class name (each track counted once, under its usual class)."""
        c: Counter = Counter()
        for votes in self._classes.values():
            cls = votes.most_common(1)[0][0]
            c[self.names[cls] if cls < len(self.names) else str(cls)] += 1
        return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))

    def summary_lines(self) -> List[str]:
        """``Unique tracks per class:`` and one ``name: N`` line per class (end of demo)."""
        lines = [f"Unique tracks per class ({sum(self.counts().values())} tracks):"]
        lines += [f"{name}: {n}" for name, n in self.counts().items()]
        return lines

    def draw(self, image, tracked: TrackedFrame, classes: Optional[int] = None):
        """The tracked boxes drawn like ``draw_detections_v3``, ``#id`` before each label."""
        return draw_detections(image, tracked.raw, self.names, self.thresh, classes,
                               row_labels=tracked.labels())


def track(detector, source, tracker: Optional[ByteTracker] = None, **tracker_options
          ) -> Iterator[TrackedFrame]:
    """:meth:`Detector.stream` with a :class:`ByteTracker`: one :class:`TrackedFrame` per frame.
    ``source`` is a video file, a camera index or an iterable of frames; ``frame_rate`` defaults
    to the video's."""
    require_supervision()
    reader = frame_reader(detector, source)
    if tracker is None:
        tracker_options.setdefault("frame_rate", reader.fps)
        tracker = ByteTracker(detector.names, detector.thresh, **tracker_options)
    for result in stream(detector, reader):
        yield tracker.update(result.raw, result.frame_id, result.frame)
