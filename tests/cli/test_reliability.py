"""Nothing a user owns is destroyed, and no input or client kills the process.

The second half of the reliability corpus (the first is ``test_bad_inputs.py``, whose helpers
this file shares): backends called from several threads, decompression bombs, outputs aimed at
inputs, two trainings into one backup folder, hostile HTTP clients, and the user errors that
used to end in a traceback. Each test failed on the code before its fix; docs/reliability.md
lists what each one proves.
"""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
from conftest import REFDATA, require
from test_bad_inputs import (CORPUS, DETECT, assert_clean_error, changed, run_inproc,  # noqa: F401
                             snapshot, work)

FASTEST = REFDATA / "weights" / "yolo-fastest"
IMAGES = ["dog", "horses", "person", "giraffe", "eagle", "scream"]


# ----------------------------------------------------------------------------- threads
def _installed_backends():
    import importlib.util

    import torch
    names = ["exact", "fast"]
    if importlib.util.find_spec("onnx") is not None:
        names += [n for n in ("onnxruntime", "openvino") if importlib.util.find_spec(n)]
    if torch.cuda.is_available():
        names.append("cuda")
    return names


@pytest.mark.parametrize("backend", _installed_backends())
def test_every_backend_gives_each_thread_its_own_result(backend):
    """6 threads detect on 6 different images, 3 times each, through one Detector: every call
    returns exactly the detections of a single-threaded run on its own image. The OpenVINO
    backend shared one infer request: other images' detections, and "Infer Request is busy"."""
    from darknet_py.infer.detector import Detector
    cfg = require(FASTEST / "yolo-fastest-1.1.cfg")
    images = [str(require(REFDATA / "images" / f"{n}.jpg")) for n in IMAGES]
    det = Detector(cfg, FASTEST / "yolo-fastest-1.1.weights", backend=backend,
                   device="cuda" if backend == "cuda" else "cpu", thresh=0.1)

    def listing(path):
        (d,) = det(path)
        return [(o.class_id, round(o.confidence, 3), tuple(round(v, 1) for v in o.box))
                for o in d.detections]

    want = {p: listing(p) for p in images}
    assert sum(map(len, want.values())) > 10          # something to mix up
    got, errors = [], []
    start = threading.Barrier(len(images))

    def work_on(path):
        start.wait()
        for _ in range(3):
            try:
                got.append((path, listing(path)))
            except Exception as e:                     # noqa: BLE001 - reported below
                errors.append(repr(e))

    threads = [threading.Thread(target=work_on, args=(p,)) for p in images]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(got) == 3 * len(images)
    assert [p for p, dets in got if dets != want[p]] == []


# ----------------------------------------------------------------------------- decompression bombs
def _png_bomb(path: Path, side: int = 30000) -> Path:
    """A real PNG of side x side grey pixels in under 1 MB: one compressed block of rows, ended
    by a full flush (so it can be repeated byte for byte), repeated; the checksum is exact."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = 100
    block = (b"\x00" + b"\x80" * side) * rows
    co = zlib.compressobj(9, zlib.DEFLATED, -15)          # raw deflate blocks, no header
    piece = co.compress(block) + co.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(side // rows):
        adler = zlib.adler32(block, adler)
    idat = b"\x78\xda" + piece * (side // rows) + b"\x03\x00" + struct.pack(">I", adler)
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _header_bombs(folder: Path) -> dict:
    """Files whose headers announce 65000x65000 pixels (4.2 billion), one per format whose
    header is read, built from small real files with their size fields patched."""
    import struct

    import cv2
    import numpy as np
    small = np.full((8, 8, 3), 100, np.uint8)
    out = {}
    for ext in (".jpg", ".png", ".bmp", ".tiff", ".webp", ".ppm"):
        ok, buf = cv2.imencode(ext, small)
        assert ok
        b = bytearray(buf.tobytes())
        if ext == ".jpg":
            i = b.find(b"\xff\xc0")
            struct.pack_into(">HH", b, i + 5, 65000, 65000)
        elif ext == ".png":
            struct.pack_into(">II", b, 16, 65000, 65000)
        elif ext == ".bmp":
            struct.pack_into("<ii", b, 18, 65000, 65000)
        elif ext == ".tiff":
            off = struct.unpack("<I", b[4:8])[0]
            for k in range(struct.unpack("<H", b[off:off + 2])[0]):
                e = off + 2 + 12 * k
                tag, kind = struct.unpack("<HH", b[e:e + 4])
                if tag in (256, 257):
                    struct.pack_into("<H" if kind == 3 else "<I", b, e + 8, 65000)
        elif ext == ".webp":      # 14-bit sides: 16384x16384 = 268 million pixels
            if b[12:16] == b"VP8 ":
                struct.pack_into("<HH", b, 26, 16384 - 1, 16384 - 1)
            else:                 # lossless: (w-1) | (h-1) << 14 after the signature byte
                bits = int.from_bytes(b[21:25], "little") & ~((1 << 28) - 1)
                b[21:25] = (bits | 16383 | 16383 << 14).to_bytes(4, "little")
        else:
            b = bytearray(b"P6\n65000 65000\n255\n" + bytes(b.split(b"255\n", 1)[1]))
        out[ext] = folder / f"bomb{ext}"
        out[ext].write_bytes(bytes(b))
    gif = folder / "bomb.gif"      # GIF: header only, 65535x65535 logical screen
    gif.write_bytes(b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00" + b"\x3b")
    out[".gif"] = gif
    return out


@pytest.fixture
def no_decoding(monkeypatch):
    """Fails the test if OpenCV is asked to decode an image."""
    import cv2

    def refuse(*a, **k):
        raise AssertionError("the image reached OpenCV's decoder")
    monkeypatch.setattr(cv2, "imdecode", refuse)
    monkeypatch.setattr(cv2, "imread", refuse)


def test_header_bombs_are_refused_before_decoding(tmp_path, no_decoding):
    """Every format whose header is read: the file is refused from its header (the decoder is
    never called) with one message naming the size and the cap; training's loader, inference's
    loader and voc2yolo's size reader agree."""
    from darknet_py.data.augment import load_image_hwc_uint8 as train_load
    from darknet_py.errors import DataError
    from darknet_py.imaging.image import load_image, read_image_size
    for ext, path in _header_bombs(tmp_path).items():
        for load in (load_image, train_load):
            with pytest.raises(DataError) as e:
                load(str(path))
            msg = str(e.value)
            assert msg.startswith(f"{path}: cannot load image: it is "), msg
            assert "more than the cap of 134,217,728 pixels (raise it with --max-image-pixels " \
                   "or DARKNET_PY_MAX_IMAGE_PIXELS)" in msg, msg
        assert read_image_size(path)[0] in (65000, 65535, 16383, 16384), ext   # size only, no decode


def test_png_bomb_in_detector_test_is_one_line_under_a_memory_limit(tmp_path):
    """The 30000x30000 PNG (under 1 MB) through the real command, in a process limited to 3.5 GiB
    of address space (a normal run peaks near 2.1): one line naming the file, its size and the
    cap, exit 1. Before: 21.5 GB resident for a minute, or a cv2.error traceback under a limit."""
    import resource
    import shutil
    import subprocess
    import sys

    from conftest import REPO
    shutil.copytree(CORPUS / "good", tmp_path / "good")
    bomb = _png_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 1_000_000

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (3584 << 20, 3584 << 20))
    env = dict(__import__("os").environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "darknet_py.cli", *DETECT, "good/tiny.cfg",
                        "good/tiny.weights", "bomb.png", "-dont_show", "-backend", "exact"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                       preexec_fn=limit)
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    assert p.returncode == 1, p.stderr[-2000:]
    errors = [l for l in p.stderr.splitlines() if l.startswith("darknet-py:")]
    assert errors == ["darknet-py: data error: bomb.png: cannot load image: it is 30000x30000 "
                      "(900,000,000 pixels), more than the cap of 134,217,728 pixels (raise it "
                      "with --max-image-pixels or DARKNET_PY_MAX_IMAGE_PIXELS)"], p.stderr[-2000:]
    assert not (tmp_path / "predictions.jpg").exists()


def test_raised_cap_lets_opencv_refuse_in_one_line(work, monkeypatch):
    """With the cap raised past 65000x65000 (flag or environment), OpenCV's own limit refuses
    the JPEG: its cv2.error is one line, not a traceback. A small cap refuses a small image; a
    cap that is not a number is a usage error."""
    bombs = _header_bombs(work)
    monkeypatch.setenv("DARKNET_PY_MAX_IMAGE_PIXELS", "134217728")     # restored after the test
    r = run_inproc("--max-image-pixels", 5_000_000_000, *DETECT, "good/tiny.cfg",
                   "good/tiny.weights", bombs[".jpg"], "-dont_show", "-backend", "exact")
    assert_clean_error(r, "data error", f"{bombs['.jpg']}: cannot load image: OpenCV cannot "
                       "decode it (its check 'pixels <= CV_IO_MAX_IMAGE_PIXELS' failed", "")
    monkeypatch.setenv("DARKNET_PY_MAX_IMAGE_PIXELS", "1000")
    r = run_inproc(*DETECT, "good/tiny.cfg", "good/tiny.weights", "good/small.jpg", "-dont_show",
                   "-backend", "exact")
    assert_clean_error(r, "data error", "good/small.jpg: cannot load image: it is ",
                       "more than the cap of 1,000 pixels")
    monkeypatch.setenv("DARKNET_PY_MAX_IMAGE_PIXELS", "lots")
    r = run_inproc(*DETECT, "good/tiny.cfg", "good/tiny.weights", "good/small.jpg", "-dont_show",
                   "-backend", "exact")
    assert_clean_error(r, "usage error", "DARKNET_PY_MAX_IMAGE_PIXELS must be a positive", "",
                       code=2)
    assert not (work / "predictions.jpg").exists()


def test_a_float_tiff_is_named_for_what_it_is(work):
    """A float32 TIFF was 'not a readable image file'; OpenCV (like Darknet) cannot read it as
    an 8-bit image, and the message now says why."""
    import cv2
    import numpy as np
    cv2.imwrite(str(work / "f32.tiff"), np.random.default_rng(0).random((20, 30, 3),
                                                                       dtype=np.float32))
    r = run_inproc(*DETECT, "good/tiny.cfg", "good/tiny.weights", "f32.tiff", "-dont_show",
                   "-backend", "exact")
    assert_clean_error(r, "data error", "f32.tiff: cannot load image: a 32-bit floating-point "
                       "TIFF", "convert it to 8 bits")
    assert "WARN" not in r.stderr


def test_inference_never_converts_a_whole_image_to_float(tmp_path, monkeypatch):
    """Detector calls, map and valid (which do not keep the images) resize from the decoded
    bytes: the largest array converted to float is the columns the resize reads, not the
    image (4 bytes per value instead of 1). The network input is bit-identical to resizing
    Darknet's float image (stretch and letterbox, colour, grey and BGRA, up and down)."""
    import cv2
    import numpy as np
    import torch

    from darknet_py.imaging import image as image_module
    from darknet_py.imaging.image import DecodedImage, letterbox_image, prepare_input, resize_image
    from darknet_py.infer.detector import Detector
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, (1500, 2000, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "photo.png"), photo)
    converted = []
    real = image_module._planar_float
    monkeypatch.setattr(image_module, "_planar_float",
                        lambda mat, *a: converted.append(mat.size) or real(mat, *a))
    det = Detector(CORPUS / "good" / "tiny.cfg", CORPUS / "good" / "tiny.weights",
                   backend="exact", device="cpu")
    # the numpy resize (no compiled kernel)
    with monkeypatch.context() as m:
        m.setattr(image_module, "compiled_resize", lambda wait=False: None)
        det(str(tmp_path / "photo.png"))
    # a 32x32 network: the two columns each output column reads, 64 of the 2000
    assert converted and max(converted) <= 1500 * 2 * 32 * 3, max(converted)
    # the compiled resize (the speed extra) converts nothing to a float array but the output
    from darknet_py.imaging.resize_kernel import compiled_resize
    if compiled_resize(wait=True) is not None:
        converted.clear()
        det(str(tmp_path / "photo.png"))
        assert converted == []
    monkeypatch.undo()
    for mat in (photo[:37, :53], photo[:5, :1], photo[:1, :9], photo[:40, :30, 0],
                np.dstack([photo[:33, :21], photo[:33, :21, :1]])):
        mat = np.ascontiguousarray(mat)
        as_float = DecodedImage(mat).to_tensor()
        for w, h in ((16, 24), (90, 70), (53, 37), (1, 1)):
            assert torch.equal(resize_image(DecodedImage(mat), w, h),
                               resize_image(as_float, w, h)), (mat.shape, w, h)
            if (w, h) != (1, 1):
                    assert torch.equal(letterbox_image(DecodedImage(mat), w, h),
                                   letterbox_image(as_float, w, h)), (mat.shape, w, h)
    assert torch.equal(prepare_input(str(tmp_path / "photo.png"), 416, 416),
                       resize_image(DecodedImage(photo).to_tensor(), 416, 416))


def test_video_frames_over_the_cap_are_refused_at_open(tmp_path, monkeypatch):
    """A video is held to the cap from its announced frame size, before a frame is decoded."""
    import cv2
    import numpy as np

    from darknet_py.errors import DataError
    from darknet_py.infer.stream import open_capture
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48), True)
    for _ in range(3):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    open_capture(path).release()
    monkeypatch.setenv("DARKNET_PY_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(DataError, match=r"clip.avi: cannot read the video: its frames are 64x48 "
                                        r"\(3,072 pixels\), more than the cap of 1,000 pixels"):
        open_capture(path)


def test_data_check_reports_a_bomb_without_decoding_it(tmp_path, no_decoding):
    """``data check`` (even with -decode) lists the bomb as an unreadable image naming the cap,
    and exits 1, without decoding it."""
    bombs = _header_bombs(tmp_path)
    (tmp_path / "bomb.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (tmp_path / "list.txt").write_text(f"{bombs['.png']}\n")
    (tmp_path / "obj.names").write_text("thing\n")
    (tmp_path / "obj.data").write_text(f"classes=1\ntrain={tmp_path}/list.txt\n"
                                       f"names={tmp_path}/obj.names\n")
    r = run_inproc("data", "check", tmp_path / "obj.data", "-decode")
    assert r.code == 1, r.stdout + r.stderr
    assert "unreadable-image: cannot load image: it is 65000x65000 (4,225,000,000 pixels), " \
           "more than the cap of 134,217,728 pixels" in r.stdout, r.stdout


# ----------------------------------------------------------------------------- outputs onto inputs
MODEL = ("good/tiny.cfg", "good/tiny.weights")


def _refused(r, flag, what):
    """A usage error naming the flag and the input it would have overwritten."""
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.code == 2, (r.code, r.stderr[-2000:])
    assert len(r.error_lines) == 1, r.stderr[-2000:]
    line = r.error_lines[0]
    assert line.startswith(f"darknet-py: usage error: {flag} ") and f" is the {what}" in line \
        and "darknet-py never writes over its inputs" in line, line


@pytest.mark.parametrize("target", ["weights", "cfg", "hardlink", "symlink"])
def test_export_never_writes_over_its_inputs(work, target):
    """``export cfg w -o w`` replaced the trained weights with protobuf; ``-o cfg`` the cfg. Also
    through another name for the same file (hard link, symlink)."""
    import os
    if target == "hardlink":
        os.link("good/tiny.weights", "other.onnx")
    elif target == "symlink":
        os.symlink(os.path.abspath("good/tiny.cfg"), "link.onnx")
    out = {"weights": "good/tiny.weights", "cfg": "good/tiny.cfg", "hardlink": "other.onnx",
           "symlink": "link.onnx"}[target]
    before = snapshot(work)
    r = run_inproc("export", *MODEL, "-o", out)
    _refused(r, "-o", "weights file" if target in ("weights", "hardlink") else "cfg file")
    assert changed(before, snapshot(work)) == set()


def test_partial_never_writes_over_its_weights(work):
    before = snapshot(work)
    _refused(run_inproc("partial", *MODEL, "good/tiny.weights", 1), "the output",
             "weights file")
    assert changed(before, snapshot(work)) == set()


@pytest.mark.parametrize("out,what", [("good/small.jpg", "image"),
                                      ("good/tiny.weights", "weights file"),
                                      ("good/tiny.cfg", "cfg file"),
                                      ("good/tiny.names", "names file")])
def test_detector_test_out_never_names_an_input(work, out, what):
    before = snapshot(work)
    r = run_inproc(*DETECT, *MODEL, "good/small.jpg", "-dont_show", "-backend", "exact",
                   "-out", out)
    _refused(r, "-out", what)
    assert changed(before, snapshot(work)) == set()


def test_a_failed_run_leaves_the_result_file_as_it_was(work):
    """``-out result.json`` was opened (emptied) before anything succeeded: a run on a bad image
    destroyed the previous results. It is now written to a temp file and renamed at the end."""
    import json
    r = run_inproc(*DETECT, *MODEL, "good/small.jpg", "-dont_show", "-backend", "exact",
                   "-out", "result.json")
    assert r.code == 0, r.stderr
    good = (work / "result.json").read_bytes()
    assert json.loads(good)[0]["filename"] == "good/small.jpg"
    before = snapshot(work)
    r = run_inproc(*DETECT, *MODEL, "images/truncated.jpg", "-dont_show", "-backend", "exact",
                   "-out", "result.json")
    assert_clean_error(r, "data error", "images/truncated.jpg", "truncated")
    assert changed(before, snapshot(work)) == set()
    assert (work / "result.json").read_bytes() == good
    assert [p.name for p in work.iterdir() if p.name.startswith(".")] == []     # no temp file


def test_predictions_jpg_is_never_the_image(work):
    import shutil
    shutil.copy(work / "good" / "small.jpg", work / "predictions.jpg")
    before = snapshot(work)
    r = run_inproc(*DETECT, *MODEL, "predictions.jpg", "-dont_show", "-backend", "exact")
    _refused(r, "predictions.jpg", "image")
    assert changed(before, snapshot(work)) == set()


def test_stdin_paths_that_are_outputs_are_skipped(work):
    """Image paths read from stdin that are the -out file or predictions.jpg are reported and
    skipped; the others are detected."""
    import json
    (work / "result.json").write_text("[]")
    r = run_inproc(*DETECT, *MODEL, "-dont_show", "-backend", "exact", "-out", "result.json",
                   input="result.json\ngood/small.jpg\n")
    assert r.code == 0, r.stderr
    assert "Cannot load image result.json: it is the -out file of this run" in r.stderr
    assert [e["filename"] for e in json.loads((work / "result.json").read_text())] == \
        ["good/small.jpg"]


def _small_video(path):
    import cv2
    import numpy as np
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48), True)
    for k in range(3):
        writer.write(np.full((48, 64, 3), 40 * k, np.uint8))
    writer.release()


def test_demo_never_writes_the_video_over_its_source(work):
    """``demo ... same.avi -out_filename same.avi`` destroyed the source video."""
    _small_video(work / "same.avi")
    before = snapshot(work)
    r = run_inproc("detector", "demo", "good/tiny.data", *MODEL, "same.avi", "-dont_show",
                   "-backend", "exact", "-out_filename", "same.avi")
    _refused(r, "-out_filename", "video")
    r = run_inproc("detector", "demo", "good/tiny.data", *MODEL, "same.avi", "-dont_show",
                   "-backend", "exact", "-out", "same.avi")
    _refused(r, "-out", "video")
    assert changed(before, snapshot(work)) == set()


def test_other_writers_refuse_their_inputs(work):
    """cfg custom (a hard link to --from slipped past the old name check), data split (the
    source list inside --out), data check -json, voc2yolo --list."""
    import os
    os.link("good/tiny.cfg", "custom.cfg")
    before = snapshot(work)
    _refused(run_inproc("cfg", "custom", "--classes", 2, "--from", "good/tiny.cfg", "-o",
                        "custom.cfg"), "-o", "source cfg")
    assert changed(before, snapshot(work)) == set()
    os.makedirs("split")
    (work / "split" / "train.txt").write_text(f"{work}/good/small.jpg\n")
    before = snapshot(work)
    _refused(run_inproc("data", "split", "split/train.txt", "--names", "good/tiny.names",
                        "--out", "split"), "--out", "source list")
    _refused(run_inproc("data", "check", "good/tiny.data", "-json", "good/tiny.data"), "-json",
             "data file")
    _refused(run_inproc("data", "voc2yolo", "good", "--names", "good/tiny.names", "--list",
                        "good/tiny.names"), "--list", "names file")
    assert changed(before, snapshot(work)) == set()


# ----------------------------------------------------------------------------- one training per folder
def _train(data, *extra):
    return run_inproc("detector", "train", data, "good/tiny.cfg", "-dont_show", "-workers", 0,
                      "-seed", 1, *extra)


@pytest.fixture
def train_data(work):
    (work / "labels" / "train.data").write_text(
        "classes=1\ntrain=labels/train.txt\nnames=good/tiny.names\nbackup=backup\nsavelast=2\n")
    return "labels/train.data"


def test_a_second_training_into_the_same_backup_folder_refuses(work, train_data):
    """While a training (here a separate process holding the lock the trainer takes) owns
    backup/tiny.lock, a second one refuses in one line naming the first's PID and touches no
    file; once it ends, training runs and removes its lock."""
    import subprocess
    import sys

    from conftest import REPO
    (work / "backup").mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from darknet_py.train.lock import hold_backup_lock; "
         "hold_backup_lock('backup', 'tiny'); print('held', flush=True); sys.stdin.read()"],
        cwd=work, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=dict(__import__("os").environ, PYTHONPATH=str(REPO)))
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(work)
        r = _train(train_data, "-max_batches", 2)
        assert_clean_error(r, "data error", "backup/tiny.lock: ",
                           f"another training (PID {holder.pid}) is writing its checkpoints")
        assert changed(before, snapshot(work)) == set()
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    r = _train(train_data, "-max_batches", 2)
    assert r.code == 0, r.stderr[-2000:]
    assert sorted(p.name for p in (work / "backup").iterdir()) == [
        "tiny_final.weights", "tiny_last.weights", "tiny_log.csv"]


def test_a_stale_lock_is_taken_over(work, train_data):
    """A lock file left by a run that was killed (no process holds it) is taken over, and said."""
    import subprocess
    import sys
    (work / "backup").mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (work / "backup" / "tiny.lock").write_text(f"{dead.pid}\n")
    r = _train(train_data, "-max_batches", 1)
    assert r.code == 0, r.stderr[-2000:]
    assert f"taking over the lock" in r.stdout and f"of PID {dead.pid} (no longer running" \
        in r.stdout, r.stdout
    assert not (work / "backup" / "tiny.lock").exists()


def test_resuming_drops_the_log_rows_after_the_checkpoint(work, train_data):
    """A run killed after iteration 3 whose last checkpoint is iteration 2 (here: a run to 3
    with savelast=2, resumed from _last) logged iteration 3 once before the kill; the resumed
    run trains 3 again. Each iteration is in _log.csv once, in order."""
    import csv
    r = _train(train_data, "-max_batches", 3)
    assert r.code == 0, r.stderr[-2000:]
    log = work / "backup" / "tiny_log.csv"
    assert [row[1] for row in csv.reader(log.open())][1:] == ["1", "2", "3"]
    r = run_inproc("detector", "train", train_data, "good/tiny.cfg", "backup/tiny_last.weights",
                   "-dont_show", "-workers", 0, "-seed", 1, "-max_batches", 4)
    assert r.code == 0, r.stderr[-2000:]
    rows = list(csv.reader(log.open()))
    assert rows[0][:2] == ["kind", "iteration"] and [row[1] for row in rows[1:]] == \
        ["1", "2", "3", "4"]
    assert [p.name for p in (work / "backup").iterdir() if p.name.startswith(".")] == []


# ----------------------------------------------------------------------------- hostile HTTP clients
@pytest.fixture
def servers():
    import numpy as np

    from darknet_py.serve.server import JsonServer, MjpegServer
    mjpeg = MjpegServer(0, "127.0.0.1").start(announce=False)
    js = JsonServer(0, "127.0.0.1").start(announce=False)
    mjpeg.publish_image(np.zeros((8, 8, 3), np.uint8))
    mjpeg.set_status(loss=1.0)
    try:
        yield mjpeg, js
    finally:
        mjpeg.close()
        js.close()


def _raw_get(port, path="/status", host="127.0.0.1", reset=False, timeout=5.0):
    """One request on a raw socket: the response bytes, or b'' after a reset (RST, not FIN)."""
    import socket
    import struct
    c = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        head = f"GET {path} HTTP/1.1\r\n" + (f"Host: {host}\r\n" if host is not None else "")
        c.sendall((head + "\r\n").encode())
        if reset:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return b""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = c.recv(4096)
            if not chunk:
                break
            data += chunk
        return data
    finally:
        c.close()


def test_clients_that_reset_print_no_traceback(servers, capfd):
    """40 clients that reset right after their request (page, status, streams): each one used
    to print a whole socketserver traceback into the user's terminal."""
    import time
    mjpeg, js = servers
    for k in range(10):
        for port, path in ((mjpeg.port, "/status"), (mjpeg.port, "/"),
                           (mjpeg.port, "/stream.mjpg"), (js.port, "/")):
            _raw_get(port, path, reset=True)
    time.sleep(0.5)
    assert b"200 OK" in _raw_get(mjpeg.port)         # still serving
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Error" not in err, err[-2000:]
    assert len(err.splitlines()) <= 20, err          # at most the streams' one "new client" line


def test_host_header_must_name_the_server(servers):
    """DNS rebinding: a page on attacker.example whose name now resolves to 127.0.0.1 sends
    'Host: attacker.example'; only names of this server are served."""
    mjpeg, js = servers
    for port in (mjpeg.port, js.port):
        for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1:1",
                     "10.1.2.3"):
            assert _raw_get(port, "/status", host).startswith(b"HTTP/1.0 403"), host
    for host in ("127.0.0.1", f"127.0.0.1:{mjpeg.port}", f"localhost:{mjpeg.port}", None):
        assert _raw_get(mjpeg.port, "/status", host).startswith(b"HTTP/1.0 200"), host


def test_server_header_does_not_advertise_python(servers):
    mjpeg, _ = servers
    head = _raw_get(mjpeg.port).decode("latin-1")
    assert "\r\nServer: darknet-py\r\n" in head and "Python" not in head, head


def test_idle_connections_cannot_pile_up_threads(servers):
    """Clients that connect and send nothing each held a thread; at most MAX_CONNECTIONS are
    served at a time and the rest are closed at once, and the server answers again as soon as
    they go."""
    import socket
    import threading
    import time

    from darknet_py.serve.server import MAX_CONNECTIONS
    mjpeg, _ = servers
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", mjpeg.port), timeout=5)
            for _ in range(MAX_CONNECTIONS + 16)]
    try:
        deadline = time.monotonic() + 5
        while threading.active_count() - before < MAX_CONNECTIONS and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert threading.active_count() - before <= MAX_CONNECTIONS
        closed = 0
        for c in idle[MAX_CONNECTIONS:]:
            try:
                closed += c.recv(1) == b""
            except OSError:
                closed += 1
        assert closed == 16
    finally:
        for c in idle:
            c.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if b"200 OK" in _raw_get(mjpeg.port, timeout=1):
                break
        except OSError:
            pass
        time.sleep(0.1)
    else:
        raise AssertionError("the server did not answer after the idle clients left")


# ----------------------------------------------------------------------------- one line, not a traceback
@pytest.mark.parametrize("backup,text", [
    ("good/tiny.names", "backup= names a file, not a folder"),
    ("good/tiny.names/backup", "cannot create the backup folder: Not a directory"),
    ("/proc/darknet_py_backup", "cannot create the backup folder: "),
])
def test_backup_that_cannot_be_a_folder_is_one_line(work, backup, text):
    """backup= naming a file was a FileExistsError traceback; a folder that cannot be created
    (a file as parent, a read-only file system) an OSError traceback."""
    (work / "labels" / "train.data").write_text(
        f"classes=1\ntrain=labels/train.txt\nnames=good/tiny.names\nbackup={backup}\n")
    before = snapshot(work)
    r = _train("labels/train.data", "-max_batches", 1)
    assert_clean_error(r, "data error", f"{backup}: ", text)
    assert changed(before, snapshot(work)) == set()


def test_out_of_memory_in_a_loader_worker_names_the_allocation(work, monkeypatch):
    """An allocation failure inside a DataLoader worker reached the user as 'Caught
    RuntimeError in DataLoader worker process 0.'; the line is now the allocator's own."""
    from torch._utils import ExceptionWrapper

    from darknet_py.train.trainer import Trainer
    try:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 40000000000 bytes.")
    except RuntimeError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    monkeypatch.setattr(Trainer, "train_iteration", lambda self: wrapped.reraise())
    (work / "labels" / "train.data").write_text(
        "classes=1\ntrain=labels/train.txt\nnames=good/tiny.names\nbackup=backup\n")
    r = _train("labels/train.data", "-max_batches", 1)
    assert_clean_error(r, "out of memory", "[enforce fail at alloc_cpu.cpp:127] err == 0. "
                       "DefaultCPUAllocator: can't allocate memory", "40000000000 bytes")
    assert "Caught" not in r.stderr


def test_label_values_beyond_float_range_give_no_numpy_warning(tmp_path):
    """'0 1e300 ...' in a label file leaked numpy's 'overflow encountered in cast' warning into
    data check and training; the line is reported like any NaN/inf value, once."""
    import shutil
    import warnings

    from darknet_py.data.labels import read_labels
    shutil.copy(CORPUS / "labels" / "good.jpg", tmp_path / "a.jpg")
    (tmp_path / "a.txt").write_text("0 1e300 0.5 0.5 0.5\n0 0.5 0.5 1e39 0.2\n0 0.5 0.5 0.2 0.2\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lf = read_labels(str(tmp_path / "a.txt"), classes=1)
    assert lf.boxes.shape[0] == 1 and [i.line for i in lf.issues] == [1, 2]
    (tmp_path / "list.txt").write_text(f"{tmp_path}/a.jpg\n")
    (tmp_path / "obj.data").write_text(f"classes=1\ntrain={tmp_path}/list.txt\n"
                                       f"names={CORPUS}/good/tiny.names\n")
    r = run_inproc("data", "check", tmp_path / "obj.data")
    assert "warning: overflow" not in r.stderr and "RuntimeWarning" not in r.stderr, r.stderr


# ----------------------------------------------------------------------------- quieter defects
def test_class_names_with_quotes_and_backslashes_give_valid_json(work):
    """Names are escaped in -out (and the -json_port stream, same function); Darknet prints
    them raw and its JSON is invalid for such names."""
    import json

    import torch

    from darknet_py.infer.results import detection_to_json
    from darknet_py.structures.detections import DetectionSet
    (work / "good" / "tiny.names").write_text('a "quoted" \\name\n')
    r = run_inproc(*DETECT, *MODEL, "good/small.jpg", "-dont_show", "-backend", "exact",
                   "-thresh", 0.0, "-out", "result.json")
    assert r.code == 0, r.stderr
    frames = json.loads((work / "result.json").read_text())
    assert frames[0]["objects"] and all(o["name"] == 'a "quoted" \\name'
                                        for o in frames[0]["objects"])
    dets = DetectionSet(torch.tensor([[0.5, 0.5, 0.2, 0.2]]), torch.tensor([0.9]),
                        torch.tensor([[0.9]]), image_size=(10, 10))
    text = detection_to_json(dets, ['x"\\'], 1, 'dir\\"file.jpg')
    assert json.loads(text)["filename"] == 'dir\\"file.jpg'
    assert json.loads(text)["objects"][0]["name"] == 'x"\\'


def test_a_cfg_and_a_data_file_starting_with_a_bom_are_read(work):
    """A UTF-8 byte-order mark (Windows editors) before [net] was refused with an invisible
    character in the message; before the first line of .data and .names files it became part of
    a key or class name."""
    for name in ("tiny.cfg", "tiny.data", "tiny.names"):
        path = work / "good" / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    r = run_inproc(*DETECT, *MODEL, "good/small.jpg", "-dont_show", "-backend", "exact",
                   "-thresh", 0.0, "-out", "result.json")
    assert r.code == 0, r.stderr
    from darknet_py.data.datacfg import read_names
    assert read_names(work / "good" / "tiny.names") == ["face"]
    assert '"name":"face"' in (work / "result.json").read_text()


@pytest.mark.parametrize("key,value", [("savelast", 0), ("saveweights", 0), ("savelast", -5)])
def test_save_periods_below_one_are_refused(work, key, value):
    """savelast=0 / saveweights=0 saved every iteration (Darknet dies of SIGFPE dividing by
    it; a negative one saves every iteration there): one line naming the file and line."""
    (work / "labels" / "train.data").write_text(
        "classes=1\ntrain=labels/train.txt\nnames=good/tiny.names\nbackup=backup\n"
        f"{key}={value}\n")
    before = snapshot(work)
    r = _train("labels/train.data", "-max_batches", 2)
    assert_clean_error(r, "data error", "labels/train.data:5: ",
                       f"{key}={value}: weights are saved every {key} iterations, which must "
                       "be 1 or more")
    assert changed(before, snapshot(work)) == set()


def test_a_huge_names_file_is_refused_without_reading_it_all(tmp_path, monkeypatch):
    """A names file is read up to 16 MiB (a list up to 1 GiB): a mistaken 200 MB file is
    refused after reading 16 MiB."""
    from darknet_py import files
    from darknet_py.data.datacfg import read_names
    from darknet_py.errors import DataError
    big = tmp_path / "huge.names"
    with open(big, "wb") as f:
        f.truncate(200 << 20)                 # sparse: costs no disk
    asked = []
    real = files.read_bounded
    monkeypatch.setattr("darknet_py.data.datacfg.read_bounded",
                        lambda p, limit, *a: asked.append(limit) or real(p, limit, *a))
    with pytest.raises(DataError, match=r"huge.names: not a names file: larger than 16 MiB"):
        read_names(big)
    assert asked == [16 << 20]


def test_weights_with_nan_values_warn_naming_the_layer(tmp_path):
    """A weights file holding NaN/inf (a damaged file, a diverged training) loaded silently."""
    import warnings

    import numpy as np

    from darknet_py.model.network import Network
    data = bytearray((CORPUS / "good" / "tiny.weights").read_bytes())
    floats = np.frombuffer(data, np.float32, offset=20)
    header = len(data) - floats.size * 4
    bad = tmp_path / "nan.weights"
    poisoned = floats.copy()
    poisoned[[0, 200, 201]] = [np.nan, np.inf, -np.inf]   # layer 0's biases, layer 1's weights
    bad.write_bytes(bytes(data[:header]) + poisoned.tobytes())
    net = Network.from_cfg(CORPUS / "good" / "tiny.cfg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net.load_weights(bad)
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 1 and msgs[0].startswith(f"{bad}: layer 0 [convolutional] has 1 NaN/inf "
                                                 "weight values (and 1 later layers)"), msgs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Network.from_cfg(CORPUS / "good" / "tiny.cfg").load_weights(CORPUS / "good" /
                                                                     "tiny.weights")


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_truncated_cached_onnx_export_is_rebuilt(tmp_path, monkeypatch, runtime):
    """The on-the-fly export cached for -backend onnxruntime/openvino was used as it was: a
    copy cut short stayed broken for good. It is rebuilt when the runtime cannot load it."""
    pytest.importorskip("onnx")
    pytest.importorskip(runtime)
    from darknet_py.infer.backends.factory import make_backend
    monkeypatch.setenv("DARKNET_PY_CACHE", str(tmp_path))
    model = (CORPUS / "good" / "tiny.cfg", CORPUS / "good" / "tiny.weights")
    make_backend(*model, backend=runtime, device="cpu")
    (cached,) = tmp_path.glob("*.onnx")
    whole = cached.read_bytes()
    cached.write_bytes(whole[: len(whole) // 2])
    backend = make_backend(*model, backend=runtime, device="cpu")
    assert cached.read_bytes() == whole
    assert backend.width == 32
