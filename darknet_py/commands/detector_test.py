"""``darknet-py detector test obj.data cfg weights [image]`` (Darknet's ``test_detector``).

Prints the layer table, then per image Darknet's ``Detection layer`` lines,
``<path>: Predicted in N milli-seconds.`` and one line per detected class
(``dog: 81%``, or with ``-ext_output`` the ``(left_x: … top_y: … width: … height: …)`` block), and
writes ``predictions.jpg``. Without an image argument, image paths are read from stdin, one per
line (Darknet's ``Enter Image Path:`` loop); an unreadable image there is reported and skipped.
When stdin is a list (a file or a pipe, not a terminal), the next images are read and resized
while the network runs and the previous image is printed and drawn (the pipeline's overlap,
:meth:`~darknet_py.infer.pipeline.Pipeline.process`): the output is the same, byte for byte
(timings aside), as one image after the other; at a terminal each path is run as it is typed.

Under ``torchrun`` with paths on stdin, rank 0 reads the whole list, every rank detects its
contiguous share (:mod:`darknet_py.distributed`), and rank 0 prints the per-image text, writes
``-out`` and ``predictions.jpg`` (of the last image) as one process would; ``-save_labels`` files
are written by the rank that detected the image.
"""
from __future__ import annotations

import os
import sys

import click

from .. import distributed as dist
from ..console import eprint
from ..errors import DataError
from ..files import refuse_output_onto_inputs, same_file
from ..imaging.image import save_image
from ..infer.results import JsonOutWriter, write_labels
from ._common import backend_flags, flag, preflight
from ._detect_common import HIER_THRESH_HELP, make_detector, split_model_args
from ._tiling import tile_flags, tile_options

GROUP = "detector"


@click.command("test")
@click.argument("data", type=click.Path(dir_okay=False))
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.argument("weights", required=False)
@click.argument("image", required=False)
@flag("thresh", type=float, default=0.25, show_default=True, help="Detection threshold.")
@flag("hier", "hier_thresh", type=float, default=0.5, show_default=True, help=HIER_THRESH_HELP)
@flag("ext_output", is_flag=True, help="Print box coordinates (left_x, top_y, width, height).")
@flag("dont_show", is_flag=True, help="Do not open a window (darknet-py never does; accepted).")
@flag("letter_box", is_flag=True, help="Letterbox the image instead of stretching it.")
@flag("out", "out", type=click.Path(dir_okay=False), default=None,
      help="Write Darknet's JSON result file.")
@flag("save_labels", is_flag=True, help="Write YOLO .txt labels next to each image.")
@tile_flags
@backend_flags
@dist.command
def COMMAND(data, cfg, weights, image, thresh, hier_thresh, ext_output, dont_show, letter_box,
            out, save_labels, tiles, tile_overlap, tiles_full, **backend_options):
    """Detect objects in IMAGE (or in image paths read from stdin).

    CFG is a Darknet .cfg (then WEIGHTS follows) or a `darknet-py export` .onnx file (no
    WEIGHTS: `detector test obj.data model.onnx image.jpg`)."""
    tiling = tile_options(tiles, tile_overlap, tiles_full)
    weights, image = split_model_args(cfg, weights, image)
    parsed = preflight(data, cfg, weights, image=image, names=True)
    inputs = [("data file", data), ("cfg file", cfg), ("weights file", weights),
              ("image", image), ("names file", parsed.names_or_default())]
    refuse_output_onto_inputs(out, "-out", inputs)
    refuse_output_onto_inputs(PREDICTIONS, f"{PREDICTIONS} (the drawing detector test writes "
                              "in the working folder)", [("image", image)])
    det = make_detector(data, cfg, weights, thresh, hier_thresh, letter_box, tiling=tiling,
                        **backend_options)
    if image is None and dist.is_distributed():
        return _sharded_stdin_list(det, out, ext_output, save_labels, thresh)
    writer = JsonOutWriter(out) if out else None
    single = image is not None
    failures = 0
    try:
        if not single and not _is_terminal(sys.stdin):
            _stdin_list(det, writer, out, ext_output, save_labels, thresh)
            return
        while True:
            if single:
                path = image
            else:
                sys.stdout.write("Enter Image Path: ")
                sys.stdout.flush()
                line = sys.stdin.readline()
                if not line:
                    break
                path = line.strip()
                if not path:
                    continue
                clash = _output_clash(path, out)
                if clash:
                    failures += 1
                    print(f"Cannot load image {path}: {clash}", file=sys.stderr)
                    continue
            try:
                (name, im, dets), = det.detect_sets([path])
            except DataError as e:
                if single:
                    raise
                failures += 1
                print(f"Cannot load image {path}: {e.message}", file=sys.stderr)
                continue
            ms = det.last_forward_ms[0] if det.last_forward_ms else 0.0
            sys.stdout.write(det.stdout(name, dets, ms, ext_output))
            sys.stdout.flush()
            save_image(det.draw(im, dets), PREDICTIONS)
            if writer is not None:
                writer.add(dets, det.names, path)
            if save_labels:
                base, _ = os.path.splitext(path)
                write_labels(base + ".txt", dets, thresh)
            if single:
                break
    except Exception:
        if writer is not None:
            writer.abort()          # a failed run leaves an existing -out file as it was
        raise
    finally:
        if writer is not None:
            writer.close()          # the end of the list, or Ctrl-C: what was detected


#: the drawing of the last image, in the working folder (Darknet's name)
PREDICTIONS = "predictions.jpg"


#: the tag of the last item of a stdin list: the end of input (the loop's last prompt)
_END_OF_INPUT = object()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _stdin_list(det, writer, out, ext_output, save_labels, thresh) -> None:
    """The ``Enter Image Path:`` loop over a list on stdin, overlapped: the pipeline's reader
    thread reads the lines and the images ahead, the network runs on its thread, and this
    thread prints, draws and writes each image's results in the order of the lines, with the
    prompts where the sequential loop prints them."""

    def lines():
        """(tag, image path or None) per stdin line, then the end of input; a path this run
        writes is refused here (``tag`` carries the message)."""
        for line in sys.stdin:
            path = line.strip()
            clash = _output_clash(path, out) if path else ""
            yield (path, clash), (path if path and not clash else None)
        yield _END_OF_INPUT, None

    eprint(f"overlap: {det.pipeline.describe_threads()}")
    results = det.pipeline.process(lines(), keep_images=True, errors_per_image=True)
    try:
        for o in results:
            sys.stdout.write("Enter Image Path: ")
            sys.stdout.flush()
            if o.tag is _END_OF_INPUT:
                break
            path, clash = o.tag
            if not path:
                continue
            error = clash or (o.error.message if o.error is not None else "")
            if error:
                print(f"Cannot load image {path}: {error}", file=sys.stderr)
                continue
            sys.stdout.write(det.stdout(o.name, o.detections, o.forward_ms, ext_output))
            sys.stdout.flush()
            save_image(det.draw(o.image, o.detections), PREDICTIONS)
            if writer is not None:
                writer.add(o.detections, det.names, path)
            if save_labels:
                base, _ = os.path.splitext(path)
                write_labels(base + ".txt", o.detections, thresh)
    finally:
        results.close()


def _output_clash(path: str, out) -> str:
    """Why an image path read from stdin must not be used (it is a file this run writes), or
    an empty string."""
    if same_file(path, out):
        return "it is the -out file of this run (darknet-py never writes over its inputs)"
    if same_file(path, PREDICTIONS):
        return (f"it is {PREDICTIONS}, which this run writes (darknet-py never writes over its "
                "inputs)")
    return ""


def _detect_one(det, path, out, ext_output, save_labels, thresh):
    """(stdout text, detections, None) of one image, or (None, None, error message)."""
    clash = _output_clash(path, out)
    if clash:
        return None, None, clash
    try:
        (name, _, dets), = det.detect_sets([path])
    except DataError as e:
        return None, None, e.message
    ms = det.last_forward_ms[0] if det.last_forward_ms else 0.0
    if save_labels:
        base, _ = os.path.splitext(path)
        write_labels(base + ".txt", dets, thresh)
    return det.stdout(name, dets, ms, ext_output), dets, None


def _sharded_stdin_list(det, out, ext_output, save_labels, thresh) -> None:
    """torchrun: rank 0 reads stdin to its end, the ranks detect their share, rank 0 prints."""
    lines = dist.broadcast(sys.stdin.readlines() if dist.is_main() else None)
    paths = [line.strip() for line in lines if line.strip()]
    results = dist.map_sharded(paths, lambda mine: [
        _detect_one(det, p, out, ext_output, save_labels, thresh) for p in mine])
    if results is None:                   # not rank 0
        return
    writer = JsonOutWriter(out) if out else None
    todo = iter(results)
    last = None
    try:
        for line in lines + [None]:       # None: the prompt that meets the end of input
            sys.stdout.write("Enter Image Path: ")
            sys.stdout.flush()
            path = line.strip() if line is not None else ""
            if not path:
                continue
            text, dets, error = next(todo)
            if error is not None:
                print(f"Cannot load image {path}: {error}", file=sys.stderr)
                continue
            sys.stdout.write(text)
            sys.stdout.flush()
            if writer is not None:
                writer.add(dets, det.names, path)
            last = path
    except Exception:
        if writer is not None:
            writer.abort()
        raise
    finally:
        if writer is not None:
            writer.close()
    if last is not None:                  # predictions.jpg is the last image's, as one process
        (_, im, dets), = det.detect_sets([last])
        save_image(det.draw(im, dets), PREDICTIONS)
