"""``darknet-py detector demo obj.data cfg weights video.mp4`` (Darknet's ``demo``).

Reads a video file (or camera ``-c N`` when no file is given) with OpenCV, detects objects in
each frame, prints ``Objects:`` with one line per detection as Darknet's demo does
(``draw_detections_cv_v3``: :func:`~darknet_py.infer.draw.demo_detection_lines`) and
``FPS:… AVG_FPS:…`` per frame, and with ``-out_filename`` writes the annotated video (MJPG in an
.avi like Darknet, or any container OpenCV can write, at the source's FPS). Frames go through
:meth:`~darknet_py.infer.detector.Detector.stream`: the one pipeline with Darknet's demo rule
for video frames (``cv::resize`` bilinear of the uint8 frame, or ``letterbox_image``:
:func:`~darknet_py.imaging.image.prepare_frame`), so detections can differ slightly from
``detector test`` on the same picture, exactly as in Darknet; its reader thread reads and
prepares the next frames while the network runs and this thread prints, draws and writes the
previous ones. ``FPS`` is the rate at which frames come out (per batch), ``AVG_FPS`` the mean
since the start, as Darknet's demo measures them; ``-benchmark`` prints only those (no
detections, drawing or output). Frames are batched (``-batch N``) when that helps throughput on
a GPU. ``-mjpeg_port N`` streams the drawn frames (MJPEG over HTTP, a page at ``/``) and
``-json_port N`` each frame's detections as Darknet's JSON stream (:mod:`darknet_py.serve`).

Deliberate difference: every frame is printed, from the first to the last. Darknet's demo
detects one frame while it prints the previous one, so its printout starts at frame
``1 + avgframes/2`` (frame 2 by default) and the last frame is detected but never printed.

darknet-py additions: ``-tiles CxR`` (``-tile_overlap``, ``-tiles_full``) detects on tiles of each
frame (:mod:`darknet_py.infer.tiling`; each tile is prepared by the same video-frame rule);
``-track`` follows objects with ByteTrack (:mod:`darknet_py.infer.tracking`, needs the
``track`` extra): drawn labels start with ``#id``, ``-out`` and ``-json_port`` objects carry
``track_id`` (only boxes on a confirmed track are reported), and the end prints the number of
unique tracks per class.
"""
from __future__ import annotations

import os
import sys
import time

import click
import cv2

from ..console import eprint
from ..errors import DataError, UsageError
from ..files import refuse_output_onto_inputs
from ..imaging.image import image_from_array, image_to_bgr_uint8
from ..infer.draw import demo_detection_lines
from ..infer.results import JsonOutWriter, detection_to_json
from ..infer.stream import frame_reader, read_ahead
from ..infer.tracking import ByteTracker, require_supervision
from ..serve import DemoStreams
from ._common import backend_flags, flag, preflight
from ._detect_common import HIER_THRESH_HELP, make_detector
from ._http import http_flags
from ._tiling import tile_flags, tile_options

GROUP = "detector"


@click.command("demo")
@click.argument("data", type=click.Path(dir_okay=False))
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.argument("weights", type=click.Path(dir_okay=False))
@click.argument("video", required=False)
@flag("c", "cam_index", type=int, default=0, show_default=True, help="Camera index when no video.")
@flag("thresh", type=float, default=0.25, show_default=True)
@flag("hier", "hier_thresh", type=float, default=0.5, show_default=True, help=HIER_THRESH_HELP)
@flag("out_filename", type=click.Path(dir_okay=False), default=None,
      help="Write the annotated video here (.avi = MJPG like Darknet; .mp4 = mp4v).")
@flag("ext_output", is_flag=True, help="Print box coordinates.")
@flag("dont_show", is_flag=True, help="No window (darknet-py never opens one; accepted).")
@flag("letter_box", is_flag=True)
@flag("benchmark", is_flag=True, help="Print only the frame rates: no detections, drawing or "
      "output video.")
@flag("batch", type=int, default=1, show_default=True, help="Frames per forward pass.")
@backend_flags
@flag("out", "json_out", type=click.Path(dir_okay=False), default=None,
      help="Write Darknet's per-frame JSON.")
@http_flags(json_port=True)
@tile_flags
@flag("track", is_flag=True, help="Follow objects across frames (ByteTrack, needs "
      "supervision): #id on labels, track_id in -out/-json_port, unique tracks per class at "
      "the end.")
def COMMAND(data, cfg, weights, video, cam_index, thresh, hier_thresh, out_filename, ext_output,
            dont_show, letter_box, benchmark, batch, json_out, mjpeg_port, json_port, http_host,
            tiles, tile_overlap, tiles_full, track, **backend_options):
    """Detect objects in every frame of VIDEO (or a camera)."""
    parsed = preflight(data, cfg, weights, video=video, names=True)
    inputs = [("data file", data), ("cfg file", cfg), ("weights file", weights),
              ("video", video), ("names file", parsed.names_or_default())]
    refuse_output_onto_inputs(out_filename, "-out_filename", inputs)
    refuse_output_onto_inputs(json_out, "-out", inputs + [("-out_filename", out_filename)])
    if batch < 1:
        raise UsageError("-batch must be >= 1")
    tiling = tile_options(tiles, tile_overlap, tiles_full)
    if track:
        require_supervision()
    det = make_detector(data, cfg, weights, thresh, hier_thresh, letter_box, batch_size=batch,
                        tiling=tiling, **backend_options)
    print("Demo")
    print(f"video file: {video}" if video else f"Webcam index: {cam_index}")
    reader = frame_reader(det, video or cam_index)
    src_fps = reader.fps
    ahead = read_ahead(det.pipeline, reader.queue_size)
    eprint(f"overlap: {det.pipeline.describe_threads(ahead)}")
    tracker = ByteTracker(det.names, thresh, frame_rate=src_fps) if track else None
    writer = None
    tmp_out = None
    jw = JsonOutWriter(json_out) if json_out else None
    http = DemoStreams(mjpeg_port, json_port, http_host)
    frames = 0
    avg_fps = 0.0
    results = det.stream(reader)
    t_start = t_batch = time.perf_counter()
    try:
        for group in _batches(results, batch):
            # Darknet's FPS: frames shown per second; a batch's frames come out together
            now = time.perf_counter()
            fps = len(group) / max(1e-9, now - t_batch)
            t_batch = now
            for result in group:
                frame, dets = result.frame, result.raw
                frames += 1
                avg_fps = frames / max(1e-9, time.perf_counter() - t_start)
                if benchmark:
                    print(f"\nFPS:{fps:.1f} \t AVG_FPS:{avg_fps:.1f}")
                    continue
                print("Objects:\n")
                tracked = tracker.update(dets, frames) if tracker is not None else None
                if tracked is not None:
                    http.detections(tracked.to_json(det.names))
                else:
                    http.detections(detection_to_json(dets, det.names, frames))
                lines = demo_detection_lines(dets, det.names, thresh, ext_output,
                                             (frame.shape[1], frame.shape[0]))
                for line in lines:
                    print(line)
                print(f"\nFPS:{fps:.1f} \t AVG_FPS:{avg_fps:.1f}")
                if jw is not None:
                    if tracked is not None:
                        jw.add(tracked.raw, det.names, None, tracked.track_ids)
                    else:
                        jw.add(dets, det.names, None)
                if out_filename or http.wants_frames:
                    if tracked is not None:
                        drawn = image_to_bgr_uint8(tracker.draw(image_from_array(frame), tracked,
                                                                det.classes))
                    else:
                        drawn = det.draw(frame, dets)
                    http.frame(drawn, frames=frames, fps=round(fps, 1), avg_fps=round(avg_fps, 1))
                    if out_filename:
                        if writer is None:
                            tmp_out = _temp_name(out_filename)
                            writer = _open_writer(tmp_out, out_filename, src_fps, drawn.shape[1],
                                                  drawn.shape[0])
                        writer.write(drawn)
            sys.stdout.flush()
    except Exception:
        # a failed run leaves existing output files as they were (Ctrl-C, the way a camera run
        # ends, keeps what was written)
        if jw is not None:
            jw.abort()
        if writer is not None:
            writer.release()
            writer = None
        if tmp_out is not None:
            _remove(tmp_out)
        raise
    finally:
        results.close()
        reader.close()
        http.close()
        if jw is not None:
            jw.close()
        if writer is not None:
            writer.release()
            os.replace(tmp_out, out_filename)
            print("output_video_writer closed. ")
    print("input video stream closed. ")
    if frames == 0:
        raise DataError("the video has no readable frames", file=video or f"camera {cam_index}")
    if tracker is not None:
        print("\n".join(tracker.summary_lines()))


def _batches(results, size: int):
    """Lists of ``size`` consecutive results (the last one shorter): the frames of one batch,
    which come out of the pipeline together."""
    group = []
    for r in results:
        group.append(r)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _temp_name(path: str) -> str:
    """A new hidden file next to ``path`` with its extension (OpenCV picks the container from
    it), unique so that two runs never write into one temp file."""
    import tempfile
    folder, name = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(name)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".partial{ext}", dir=folder)
    except OSError as e:
        raise DataError(f"cannot write the video here: {e.strerror}", file=path) from None
    os.close(fd)
    return tmp


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _open_writer(tmp: str, final: str, fps: float, w: int, h: int):
    ext = os.path.splitext(final)[1].lower()
    fourcc = {".mp4": "mp4v", ".m4v": "mp4v", ".mkv": "XVID"}.get(ext, "MJPG")
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*fourcc), float(fps), (w, h), True)
    if not writer.isOpened():
        raise DataError(f"OpenCV cannot write a {fourcc} video here", file=final)
    return writer
