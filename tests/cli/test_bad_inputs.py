"""Hostile inputs through the command line, crash safety of checkpoints, and safe loading.

Every file of the corpus ``tests/fixtures/files/bad/`` (see its README.md; regenerate with
``make_corpus.py``) is run through ``darknet-py`` as a user would: in a temporary copy of the
corpus, mostly in-process through click's runner (same code path, exit code and stderr as the
real command, without a Python start-up per case) and a few cases as real subprocesses. Each
case checks:

* the exit code (1 for bad files, 2 for bad usage, 0 where the input must work),
* exactly one ``darknet-py: <kind>: <file>[:<line>]: <message>`` error line, no ``Traceback``,
* that nothing was left behind: no new or modified file in the working folder (an error never
  leaves a half-written ``predictions.jpg`` or weights file).
"""
from __future__ import annotations

import ast
import errno
import os
import pickle
import re
import shutil
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import REFDATA, REPO, require

from darknet_py import files as files_module
from darknet_py.cli import main as cli_main
from darknet_py.errors import WeightsError
from darknet_py.model.network import Network

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "files" / "bad"
DETECT = ("detector", "test", "good/tiny.data")


# ----------------------------------------------------------------------------- helpers
@pytest.fixture
def work(tmp_path, monkeypatch):
    """A private copy of the corpus as the current directory."""
    root = tmp_path / "bad"
    shutil.copytree(CORPUS, root, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(root)
    return root


def snapshot(root: Path) -> dict:
    """Every file under ``root`` with its size and mtime (empty folders do not count)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def changed(before: dict, after: dict) -> set:
    return {k for k, v in after.items() if before.get(k) != v}


class Result:
    def __init__(self, code: int, stdout: str, stderr: str):
        self.code, self.stdout, self.stderr = code, stdout, stderr

    @property
    def error_lines(self):
        return [l for l in self.stderr.splitlines() if l.startswith("darknet-py:")
                and not l.startswith("darknet-py: warning:")]


def run_inproc(*args, input=None) -> Result:
    """``darknet-py ARGS`` in this process (click's runner): same exit code and stderr."""
    res = CliRunner().invoke(cli_main, [str(a) for a in args], input=input)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError(f"uncaught {type(res.exception).__name__}: {res.exception}") \
            from res.exception
    return Result(res.exit_code, res.stdout, res.stderr)


def run_subprocess(*args, cwd, timeout=600) -> Result:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "darknet_py.cli", *map(str, args)], cwd=cwd,
                       capture_output=True, text=True, timeout=timeout, env=env)
    return Result(p.returncode, p.stdout, p.stderr)


def assert_clean_error(r: Result, kind: str, where: str, text: str, code: int = 1) -> str:
    """One error line ``darknet-py: <kind>: <where>: ...<text>...``, the exit code, no traceback."""
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.code == code, (r.code, r.stderr[-2000:])
    assert len(r.error_lines) == 1, r.stderr[-2000:]
    line = r.error_lines[0]
    assert line.startswith(f"darknet-py: {kind}: {where}"), line
    assert text in line, line
    return line


def whole_weights(path: Path, cfg: Path) -> Network:
    """The file loads completely into ``cfg`` and holds only finite numbers."""
    net = Network.from_cfg(cfg)
    rep = net.load_weights(path, strict_tail=True)
    assert rep.bytes_left == 0
    for t in net.state_dict().values():
        assert torch.isfinite(t).all(), path
    return net


def corpus_files(folder: str, pattern: str = "*"):
    return sorted(p.name for p in (CORPUS / folder).glob(pattern))


# ----------------------------------------------------------------------------- cfg files
#: cfg file -> (line the error names or None, text of the message)
CFG_CASES = {
    "unknown_section.cfg": (26, "unsupported section [foobar]"),
    "duplicate_net.cfg": (32, "duplicate [net] section"),
    "missing_net.cfg": (1, "first section must be [net]"),
    "option_before_section.cfg": (1, "appears before any [section]"),
    "bad_number.cfg": (13, "option 'filters' expects an integer, got 'four'"),
    "bad_float.cfg": (7, "option 'learning_rate' expects a number, got '0.0.1'"),
    "nan_value.cfg": (7, "option 'learning_rate' is not a number"),
    "int_overflow.cfg": (13, "out of range for a 32-bit integer"),
    "negative_size.cfg": (11, "size must be >= 1, got -3"),
    "negative_width.cfg": (1, "width must be positive, got -32"),
    "zero_stride.cfg": (11, "stride must be >= 1, got 0"),
    "route_future.cfg": (27, "layers=5 refers to layer 5, but only layers 0..1 exist"),
    "huge_width.cfg": (1, "input size 100000x100000 is too large"),
    "huge_filters.cfg": (11, "would hold 2700000000 weights"),
    "huge_kernel.cfg": (11, "would hold 120002400012 weights"),
    "huge_upsample.cfg": (19, "output 1600000x1600000x4 is too large"),
    "huge_maxpool.cfg": (19, "size=1000000000 is far larger than the 16x16 input"),
    "huge_num.cfg": (30, "num=1000000000 is out of range"),
    "groups_not_dividing.cfg": (11, "groups=3 must divide both the input channels (3)"),
    "mask_beyond_anchors.cfg": (27, "mask index 7 is outside the num=3 anchors"),
    "filters_not_matching_classes.cfg": (26, "set filters=18 in the [convolutional] before"),
    "dilation_mismatch.cfg": (11, "dilation=4 with size=3 and padding=0"),
    "unknown_activation.cfg": (17, "unknown activation 'leakyy'"),
    "malformed_header.cfg": (26, "malformed section header '[yolo'"),
    "no_equals.cfg": (13, "cannot parse line 'filters' (expected key=value)"),
    "no_layers.cfg": (None, "no layers"),
    "empty.cfg": (None, "cfg file has no sections"),
    "only_comments.cfg": (None, "cfg file has no sections"),
    "binary_garbage.cfg": (None, "not a text cfg file"),
    "non_utf8.cfg": (26, "not valid UTF-8"),
    "eval_attempt.cfg": (13, "option 'filters' expects an integer"),
}


def test_every_cfg_in_the_corpus_has_an_expectation():
    assert set(corpus_files("cfg", "*.cfg")) == set(CFG_CASES)


@pytest.mark.parametrize("name", sorted(CFG_CASES))
def test_bad_cfg(work, name):
    line, text = CFG_CASES[name]
    before = snapshot(work)
    r = run_inproc(*DETECT, f"cfg/{name}", "good/tiny.weights", "good/small.jpg", "-dont_show")
    where = f"cfg/{name}:{line}: " if line else f"cfg/{name}: "
    assert_clean_error(r, "cfg error", where, text)
    assert changed(before, snapshot(work)) == set()
    assert not (work / "PWNED").exists()


@pytest.mark.parametrize("name", ["huge_filters.cfg", "no_layers.cfg"])
def test_bad_cfg_in_partial_and_train(work, name):
    line, text = CFG_CASES[name]
    where = f"cfg/{name}:{line}: " if line else f"cfg/{name}: "
    before = snapshot(work)
    r = run_inproc("partial", f"cfg/{name}", "good/tiny.weights", "out.weights", 1)
    assert_clean_error(r, "cfg error", where, text)
    r = run_inproc("detector", "train", "labels/train.data", f"cfg/{name}", "-dont_show",
                   "-workers", 0)
    assert_clean_error(r, "cfg error", where, text)
    assert changed(before, snapshot(work)) == set()


def test_missing_cfg_and_directory_cfg(work):
    r = run_inproc(*DETECT, "cfg/nope.cfg", "good/tiny.weights", "good/small.jpg")
    assert_clean_error(r, "cfg error", "cfg/nope.cfg: ", "cfg file not found")
    r = run_inproc(*DETECT, "cfg", "good/tiny.weights", "good/small.jpg")
    assert r.code == 2 and "Traceback" not in r.stderr and "is a directory" in r.stderr


# ----------------------------------------------------------------------------- weights
#: weights file -> (exit code, message text)
WEIGHTS_CASES = {
    "empty.weights": (1, "file is 0 bytes, too short for a Darknet weights header"),
    "short_header.weights": (1, "file is 10 bytes, too short"),
    "header_only.weights": (1, "file ends early: layer 0 needs 4 floats for its biases but only 0"),
    "truncated_mid_layer.weights": (1, "file ends early: layer 0 needs 108 floats for its weights "
                                       "but only 34 remain"),
    "wrong_major.weights": (1, "header version 7.2.5 is not one Darknet writes"),
    "wrong_minor.weights": (1, "header version 0.555.5 is not one Darknet writes"),
    "negative_revision.weights": (1, "header version 0.2.-1 is not one Darknet writes"),
    "html_page.weights": (1, "this is an HTML page"),
    "lfs_pointer.weights": (1, "this is a Git LFS pointer"),
    "text.weights": (1, "this is a text file, not a Darknet weights file"),
    "longer_than_needed.weights": (0, "40 bytes left over after loading all 3 layers"),
    "old_32bit_seen.weights": (0, ""),
}


def test_every_weights_file_in_the_corpus_has_an_expectation():
    assert set(corpus_files("weights")) == set(WEIGHTS_CASES)


@pytest.mark.parametrize("name", sorted(WEIGHTS_CASES))
def test_bad_weights(work, name):
    code, text = WEIGHTS_CASES[name]
    before = snapshot(work)
    if text and not code:       # in-process the warning goes to pytest; see the subprocess test
        with pytest.warns(UserWarning, match=re.escape(f"weights/{name}: {text}")):
            r = run_inproc(*DETECT, "good/tiny.cfg", f"weights/{name}", "good/small.jpg",
                           "-dont_show")
    else:
        r = run_inproc(*DETECT, "good/tiny.cfg", f"weights/{name}", "good/small.jpg", "-dont_show")
    if code:
        assert_clean_error(r, "weights error", f"weights/{name}: ", text)
        assert changed(before, snapshot(work)) == set()
    else:
        assert r.code == 0 and r.error_lines == [], r.stderr[-2000:]
        assert "Traceback" not in r.stderr
        assert changed(before, snapshot(work)) == {"predictions.jpg"}
        # the same detections as with the exact file
        ref = run_inproc(*DETECT, "good/tiny.cfg", "good/tiny.weights", "good/small.jpg",
                         "-dont_show")
        def detections(out):
            return [l for l in out.splitlines() if "Predicted in" not in l]
        assert detections(r.stdout) == detections(ref.stdout) and "face: " in r.stdout


def test_truncated_weights_in_partial_and_train_leave_nothing(work):
    before = snapshot(work)
    r = run_inproc("partial", "good/tiny.cfg", "weights/truncated_mid_layer.weights",
                   "out.conv.2", 2)
    assert_clean_error(r, "weights error", "weights/truncated_mid_layer.weights: ",
                       "file ends early")
    r = run_inproc("detector", "train", "labels/train.data", "labels/tiny_b8.cfg",
                   "weights/truncated_mid_layer.weights", "-dont_show", "-workers", 0)
    assert_clean_error(r, "weights error", "weights/truncated_mid_layer.weights: ",
                       "file ends early")
    assert changed(before, snapshot(work)) == set()     # no out.conv.2, nothing in backup/


BROKEN_UPSTREAM = {
    "tatarikk_yolov4-tiny.weights": "UTF-8 replacement bytes (EF BF BD)",
    "haanhvu_yolov4-tiny.conv.29": "file ends early: layer 2 needs 36864 floats",
}


@pytest.mark.parametrize("name", sorted(BROKEN_UPSTREAM))
def test_broken_upstream_weights(work, name):
    path = require(REFDATA / "weights" / "broken" / name)
    cfg = require(REFDATA / "cfg" / "darknet" / "yolov4-tiny.cfg")
    before = snapshot(work)
    r = run_inproc(*DETECT, cfg, path, "good/small.jpg", "-dont_show")
    assert_clean_error(r, "weights error", f"{path}: ", BROKEN_UPSTREAM[name])
    r = run_inproc("partial", cfg, path, "out.conv.29", 29)
    assert_clean_error(r, "weights error", f"{path}: ", "file ends early")
    assert changed(before, snapshot(work)) == set()


# ----------------------------------------------------------------------------- images
IMAGE_FAILS = {
    "zero_bytes.jpg": "not a readable image file",
    "not_an_image.jpg": "not a readable image file",
    "truncated.jpg": "the JPEG file is truncated (1067 bytes, no end-of-image marker)",
    "truncated_in_header.jpg": "the JPEG file is truncated (100 bytes",
}
IMAGE_WORKS = ("alpha.png", "deep16.png", "one_pixel.png", "grey.jpg", "grey.png")


def test_every_image_in_the_corpus_has_an_expectation():
    assert set(corpus_files("images")) == set(IMAGE_FAILS) | set(IMAGE_WORKS)


@pytest.mark.parametrize("name", sorted(IMAGE_FAILS))
def test_unreadable_image(work, name):
    before = snapshot(work)
    r = run_inproc(*DETECT, "good/tiny.cfg", "good/tiny.weights", f"images/{name}", "-dont_show")
    assert_clean_error(r, "data error", f"images/{name}: ", IMAGE_FAILS[name])
    assert changed(before, snapshot(work)) == set()      # no predictions.jpg


@pytest.mark.parametrize("name", IMAGE_WORKS)
def test_unusual_image_works(work, name):
    import cv2

    before = snapshot(work)
    r = run_inproc(*DETECT, "good/tiny.cfg", "good/tiny.weights", f"images/{name}", "-dont_show")
    assert r.code == 0 and "Traceback" not in r.stderr and r.error_lines == [], r.stderr[-2000:]
    assert f"images/{name}: Predicted in" in r.stdout
    assert changed(before, snapshot(work)) == {"predictions.jpg"}
    drawn = cv2.imread(str(work / "predictions.jpg"))
    src = cv2.imread(str(work / "images" / name), cv2.IMREAD_UNCHANGED)
    assert drawn.shape[:2] == src.shape[:2]


def test_unusual_images_load_as_darknet_reads_them(work):
    """alpha dropped, 16 bit scaled to 8, grey copied to 3 channels (OpenCV IMREAD_COLOR)."""
    from darknet_py.imaging.image import load_image
    ref = load_image("good/small.jpg")
    rgb_png = load_image("images/alpha.png")
    assert rgb_png.shape == ref.shape
    deep = load_image("images/deep16.png")
    assert torch.equal(deep, rgb_png)             # x*257 read back as x
    grey = load_image("images/grey.png")
    assert grey.shape[0] == 3 and torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    assert tuple(load_image("images/one_pixel.png").shape) == (3, 1, 1)


def test_stdin_loop_reports_bad_images_and_goes_on(work):
    paths = ["images/zero_bytes.jpg", "good/small.jpg", "images/truncated.jpg", "images/nope.jpg",
             "images/grey.png"]
    r = run_inproc(*DETECT, "good/tiny.cfg", "good/tiny.weights", "-dont_show",
                   input="\n".join(paths) + "\n")
    assert r.code == 0 and "Traceback" not in r.stderr
    for bad in ("images/zero_bytes.jpg", "images/truncated.jpg", "images/nope.jpg"):
        assert f"Cannot load image {bad}: cannot load image" in r.stderr
    assert r.stdout.count("Predicted in") == 2


# ----------------------------------------------------------------------------- obj.data
#: (data file, command) -> (message kind, where, text); the train command runs the tiny cfg
DATA_CASES = {
    ("no_names", "test"): ("data error", "data/names.list: ", "names= in data/no_names.data"),
    ("too_few_names", "test"): ("data error", "data/empty.names: ", "has 0 names but the cfg has "
                                                                    "classes=1"),
    ("empty_value", "test"): ("data error", "data/empty_value.data:2: ", "'names' has no value"),
    ("bad_classes", "test"): ("data error", "data/bad_classes.data:1: ",
                              "'classes' must be an integer, got 'three'"),
    ("no_equals", "train"): ("data error", "data/no_equals.data:2: ", "expected 'key = value'"),
    ("no_train", "train"): ("data error", "data/no_train.data: ", "no train= line, and Darknet's "
                                                                  "default list data/train.txt"),
    ("missing_list", "train"): ("data error", "data/nope.txt: ", "image list not found"),
    ("list_is_dir", "train"): ("data error", "data: ", "image list is a directory"),
    ("empty_list", "train"): ("data error", "data/empty.txt: ", "the train list has no images"),
    ("classes_mismatch", "train"): ("data error", "data/classes_mismatch.data: ",
                                    "classes=5 in data/classes_mismatch.data but classes=1"),
    ("unknown_extension", "train"): ("data error", "cannot infer the label file of image "
                                                   "'labels/good.gif'", ""),
    ("no_usable_image", "train"): ("data error", "could not load any image", ""),
}


def test_every_data_file_in_the_corpus_has_an_expectation():
    assert set(corpus_files("data", "*.data")) == {f"{n}.data" for n, _ in DATA_CASES}


@pytest.mark.parametrize("name,command", sorted(DATA_CASES))
def test_bad_data_file(work, name, command):
    kind, where, text = DATA_CASES[(name, command)]
    before = snapshot(work)
    if command == "test":
        r = run_inproc("detector", "test", f"data/{name}.data", "good/tiny.cfg",
                       "good/tiny.weights", "good/small.jpg", "-dont_show")
    else:
        r = run_inproc("detector", "train", f"data/{name}.data", "good/tiny.cfg", "-dont_show",
                       "-workers", 0, "-max_batches", 1)
    assert_clean_error(r, kind, where, text)
    assert changed(before, snapshot(work)) == set()


# ----------------------------------------------------------------------------- labels
EXPECTED_LABEL_WARNINGS = [
    "labels/nan.txt:1: Wrong annotation: NaN or inf",
    "labels/inf.txt:1: Wrong annotation: NaN or inf",
    "labels/negative.txt:1: Wrong annotation: width or height <= 0",
    "labels/negative.txt:2: Wrong annotation: class_id = -1 should be [from 0 to 0]",
    "labels/class_too_big.txt:1: Wrong annotation: class_id = 5 should be [from 0 to 0]",
    "labels/four_fields.txt:1: expected 'class x y w h', got '0 0.5 0.5 0.2' (line skipped)",
    "labels/six_fields.txt:1: 1 extra column(s) ignored",
]


def test_bad_labels_are_read_as_darknet_would_with_file_and_line():
    from darknet_py.data.labels import read_labels
    kept = {}
    for name in ("nan", "inf", "negative", "class_too_big", "four_fields", "six_fields",
                 "blank_lines", "good"):
        lf = read_labels(str(CORPUS / "labels" / f"{name}.txt"), classes=1)
        kept[name] = (lf.num_boxes, [int(n) for n in lf.linenos])
        for w in lf.warnings:
            assert re.match(rf"^{re.escape(str(CORPUS / 'labels' / name))}\.txt:\d+: ", w), w
    assert kept == {"nan": (1, [1, 2]), "inf": (1, [1, 2]), "negative": (1, [1, 2, 3]),
                    "class_too_big": (1, [1, 2]), "four_fields": (1, [2]),
                    "six_fields": (1, [1]), "blank_lines": (2, [2, 5]), "good": (1, [1])}


def test_bad_labels_in_training_are_reported_and_training_goes_on(tmp_path):
    """A real `detector train` over every label file of the corpus (one batch of all 8)."""
    root = tmp_path / "bad"
    shutil.copytree(CORPUS, root)
    r = run_subprocess("detector", "train", "labels/train.data", "labels/tiny_b8.cfg",
                       "-dont_show", "-workers", 0, "-max_batches", 1, "-seed", 1, cwd=root)
    assert r.code == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    for w in EXPECTED_LABEL_WARNINGS:
        assert w in r.stderr, (w, r.stderr[-3000:])
    assert "blank_lines.txt" not in r.stderr and "labels/good.txt" not in r.stderr
    assert re.search(r"(?m)^ 1: [\d.]+, [\d.]+ avg loss", r.stdout)
    whole_weights(root / "backup" / "tiny_b8_final.weights", root / "labels" / "tiny_b8.cfg")


# ----------------------------------------------------------------------------- real processes
SUBPROCESS_CASES = [
    (("detector", "test", "good/tiny.data", "cfg/binary_garbage.cfg", "good/tiny.weights",
      "good/small.jpg", "-dont_show"), "cfg error"),
    (("detector", "test", "good/tiny.data", "good/tiny.cfg", "weights/truncated_mid_layer.weights",
      "good/small.jpg", "-dont_show"), "weights error"),
    (("detector", "test", "good/tiny.data", "good/tiny.cfg", "good/tiny.weights",
      "images/zero_bytes.jpg", "-dont_show"), "data error"),
    (("detector", "test", "good/tiny.data", "good/tiny.cfg", "good/tiny.weights",
      "images/alpha.png", "-dont_show"), None),
    (("detector", "test", "good/tiny.data", "good/tiny.cfg", "weights/longer_than_needed.weights",
      "good/small.jpg", "-dont_show"), "warning"),
    (("detector", "train", "labels/train.data", "good/tiny.cfg", "-workers", "-1"), "usage error"),
]


def test_real_command_line_matches_in_process_runs(tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(CORPUS, root)
    for args, kind in SUBPROCESS_CASES:
        before = snapshot(root)
        real = run_subprocess(*args, cwd=root)
        assert "Traceback" not in real.stderr, real.stderr[-2000:]
        cwd = os.getcwd()
        os.chdir(root)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                inproc = run_inproc(*args)
        finally:
            os.chdir(cwd)
        assert real.code == inproc.code, (args, real.stderr[-1000:], inproc.stderr[-1000:])
        assert real.error_lines == inproc.error_lines
        if kind == "warning":       # warnings are one line too, and the run works
            assert real.code == 0 and "darknet-py: warning: weights/longer_than_needed.weights: " \
                "40 bytes left over after loading all 3 layers" in real.stderr, real.stderr
            kind = None
        if kind is None:
            assert real.code == 0
            assert changed(before, snapshot(root)) == {"predictions.jpg"}
            (root / "predictions.jpg").unlink()
        else:
            assert len(real.error_lines) == 1 and real.error_lines[0].startswith(
                f"darknet-py: {kind}: "), real.stderr[-1000:]
            assert real.code == (2 if kind == "usage error" else 1)
            assert changed(before, snapshot(root)) == set()


def test_out_of_memory_is_one_line(work, monkeypatch):
    def no_memory(self, x, raw_heads=False):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 40000000000 bytes.")
    monkeypatch.setattr(Network, "forward", no_memory)
    before = snapshot(work)
    r = run_inproc(*DETECT, "good/tiny.cfg", "good/tiny.weights", "good/small.jpg", "-dont_show",
                   "-backend", "exact")
    assert_clean_error(r, "out of memory", "[enforce fail", "can't allocate memory")
    assert changed(before, snapshot(work)) == set()


# ----------------------------------------------------------------------------- crash safety
class _FullDisk:
    """Stands in for the ``os`` module inside darknet_py.files (whose ``atomic_write_bytes``
    writes every checkpoint and chart): the data write (``fdopen(...).write``) or the ``fsync``
    hits ENOSPC once ``after`` weights files have been written; from then on every file fails."""

    def __init__(self, where: str, after: int = 0):
        self.where, self.after, self.weights_written = where, after, 0

    def _maybe_fail(self, fd: int):
        if ".weights" in os.readlink(f"/proc/self/fd/{fd}"):
            self.weights_written += 1
            if self.weights_written > self.after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        elif self.weights_written >= self.after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def module(self):
        real = os
        fake = types.SimpleNamespace(**{k: getattr(real, k) for k in dir(real)
                                        if not k.startswith("__")})
        disk = self

        if self.where == "write":
            def fdopen(fd, mode="r", *a, **kw):
                f = real.fdopen(fd, mode, *a, **kw)
                write = f.write

                def failing_write(data):
                    write(data[: len(data) // 2])      # half of it reaches the disk
                    disk._maybe_fail(f.fileno())
                    return write(data[len(data) // 2:])
                f.write = failing_write
                return f
            fake.fdopen = fdopen
        else:
            def fsync(fd):
                if stat_is_file(fd):
                    disk._maybe_fail(fd)
                return real.fsync(fd)
            fake.fsync = fsync
        return fake


def stat_is_file(fd: int) -> bool:
    import stat
    return stat.S_ISREG(os.fstat(fd).st_mode)


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_disk_full_while_saving_keeps_the_previous_file(tmp_path, monkeypatch, where):
    net = Network.from_cfg(CORPUS / "good" / "tiny.cfg")
    net.load_weights(CORPUS / "good" / "tiny.weights")
    target = tmp_path / "model.weights"
    net.save_weights(target)
    old = target.read_bytes()
    with torch.no_grad():
        net.layers[0].weight.add_(1.0)
    monkeypatch.setattr(files_module, "os", _FullDisk(where).module())
    with pytest.raises(WeightsError, match="cannot write weights file: No space left on device"):
        net.save_weights(target)
    monkeypatch.undo()
    assert target.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.weights"]   # no temp file
    net.save_weights(target)                                                  # disk free again
    assert target.read_bytes() != old


def _train_args(data="labels/train.data", cfg="good/tiny.cfg", *extra):
    return ("detector", "train", data, cfg, "-dont_show", "-workers", 0, "-seed", 1, *extra)


@pytest.fixture
def train_work(work):
    (work / "labels" / "train.data").write_text(
        "classes=1\ntrain=labels/train.txt\nnames=good/tiny.names\nbackup=backup\nsavelast=1\n")
    return work


def test_disk_full_during_training_keeps_the_last_checkpoint(train_work, monkeypatch):
    disk = _FullDisk("fsync", after=2)          # the 3rd checkpoint hits a full disk
    monkeypatch.setattr(files_module, "os", disk.module())
    with pytest.warns(UserWarning, match="cannot write the chart .No space left on device.; "
                                         "training goes on"):
        r = run_inproc(*_train_args("labels/train.data", "good/tiny.cfg", "-max_batches", 5))
    assert_clean_error(r, "weights error", "backup/tiny_last.weights: ",
                       "cannot write weights file: No space left on device")
    monkeypatch.undo()
    net = whole_weights(train_work / "backup" / "tiny_last.weights", CORPUS / "good" / "tiny.cfg")
    assert net.seen == 2 * 2                    # iteration 2 x batch 2: the last good save
    assert sorted(p.name for p in (train_work / "backup").iterdir()) == ["tiny_last.weights", "tiny_log.csv"]


def _nan_at(iteration, monkeypatch, times=1):
    """Make Trainer.train_iteration give a NaN loss ``times`` times when it reaches
    ``iteration`` (a skipped batch does not advance the iteration)."""
    from darknet_py.train import trainer as trainer_module
    original = trainer_module.Trainer.train_iteration
    left = [times]

    def train_iteration(self):
        if self.iteration + 1 == iteration and left[0] > 0:
            left[0] -= 1
            self.optimizer.zero_grad()
            return float("nan")
        return original(self)
    monkeypatch.setattr(trainer_module.Trainer, "train_iteration", train_iteration)


def test_nan_loss_stops_and_points_at_the_last_good_checkpoint(train_work, monkeypatch):
    _nan_at(3, monkeypatch)
    r = run_inproc(*_train_args("labels/train.data", "good/tiny.cfg", "-max_batches", 5))
    line = assert_clean_error(r, "training stopped", "loss is nan at iteration 3",
                              "the last good weights are backup/tiny_last.weights")
    assert "-nan_skip" in line
    net = whole_weights(train_work / "backup" / "tiny_last.weights", CORPUS / "good" / "tiny.cfg")
    assert net.seen == 2 * 2


def test_nan_skip_goes_on_to_the_end(train_work, monkeypatch):
    _nan_at(3, monkeypatch)
    r = run_inproc(*_train_args("labels/train.data", "good/tiny.cfg", "-max_batches", 4,
                                "-nan_skip"))
    assert r.code == 0 and r.error_lines == [], r.stderr[-2000:]
    assert "loss is nan at iteration 3: batch skipped" in r.stdout
    assert [int(m) for m in re.findall(r"(?m)^ (\d+): [\d.]+, ", r.stdout)] == [1, 2, 3, 4]
    net = whole_weights(train_work / "backup" / "tiny_final.weights", CORPUS / "good" / "tiny.cfg")
    assert net.seen == 4 * 2


def test_nan_skip_stops_when_every_batch_is_nan(train_work, monkeypatch):
    _nan_at(3, monkeypatch, times=10 ** 6)
    r = run_inproc(*_train_args("labels/train.data", "good/tiny.cfg", "-max_batches", 10,
                                "-nan_skip"))
    assert_clean_error(r, "training stopped", "loss is nan at iteration 3, 100 batches in a row",
                       "the last good weights are backup/tiny_last.weights")
    whole_weights(train_work / "backup" / "tiny_last.weights", CORPUS / "good" / "tiny.cfg")


def test_nan_weights_are_never_saved(train_work, monkeypatch):
    """Weights that became NaN (with a finite loss) must not replace the last good file."""
    from darknet_py.train import trainer as trainer_module
    original = trainer_module.Trainer.train_iteration

    def train_iteration(self):
        loss = original(self)
        if self.iteration == 3:
            with torch.no_grad():
                self.net.layers[1].weight.fill_(float("nan"))
        return loss
    monkeypatch.setattr(trainer_module.Trainer, "train_iteration", train_iteration)
    r = run_inproc(*_train_args("labels/train.data", "good/tiny.cfg", "-max_batches", 5))
    assert_clean_error(r, "training stopped",
                       "the weights of layer 1 became NaN/inf at iteration 3",
                       "backup/tiny_last.weights was not written; the last good weights are "
                       "backup/tiny_last.weights")
    net = whole_weights(train_work / "backup" / "tiny_last.weights", CORPUS / "good" / "tiny.cfg")
    assert net.seen == 2 * 2


def test_divergence_with_a_huge_learning_rate_as_a_user_sees_it(tmp_path):
    """learning_rate=1e30 in a real run: stops with exit 1, and every checkpoint is usable."""
    root = tmp_path / "bad"
    shutil.copytree(CORPUS, root)
    (root / "labels" / "train.data").write_text(
        "classes=1\ntrain=labels/train.txt\nnames=good/tiny.names\nbackup=backup\nsavelast=1\n")
    cfg = root / "nan.cfg"
    cfg.write_text((CORPUS / "good" / "tiny.cfg").read_text().replace("learning_rate=0.001",
                                                                       "learning_rate=1e30"))
    r = run_subprocess(*_train_args("labels/train.data", "nan.cfg", "-max_batches", 6), cwd=root)
    assert r.code == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert len(r.error_lines) == 1 and r.error_lines[0].startswith(
        "darknet-py: training stopped: "), r.stderr[-2000:]
    for f in (root / "backup").glob("*.weights"):
        whole_weights(f, cfg)


# ----------------------------------------------------------------------------- safe loading
class _Payload:
    """Unpickling this creates a folder: proof that a file's code ran."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_state_dict_files_are_never_unpickled(tmp_path):
    evil = tmp_path / "evil.pt"
    marker = tmp_path / "PWNED"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": _Payload(str(marker))}, f, protocol=2)
    torch.save({"state_dict": _Payload(str(marker))}, tmp_path / "evil_torch.pt")
    net = Network.from_cfg(CORPUS / "good" / "tiny.cfg")
    for path in (evil, tmp_path / "evil_torch.pt"):
        with pytest.raises(WeightsError, match="not a loadable state-dict file"):
            net.load_state_dict_file(path)
    assert not marker.exists()
    good = tmp_path / "good.pt"
    net.save_state_dict(good)                       # a plain state_dict still loads
    Network.from_cfg(CORPUS / "good" / "tiny.cfg").load_state_dict_file(good)


def test_no_code_execution_on_file_contents():
    """The package never evaluates text or unpickles files: no eval/exec/compile, no pickle or
    yaml loads, and every torch.load passes weights_only=True."""
    bad = []
    for path in sorted((REPO / "darknet_py").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) \
                else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) \
                else ""
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if name in ("eval", "exec", "compile") and (isinstance(f, ast.Name)
                                                        or owner == "builtins"):
                bad.append(f"{where}: {name}()")
            if owner in ("pickle", "marshal", "dill", "cloudpickle") and name in ("load", "loads"):
                bad.append(f"{where}: {owner}.{name}()")
            if owner == "yaml" and name in ("load", "unsafe_load", "full_load"):
                bad.append(f"{where}: yaml.{name}()")
            if owner == "torch" and name == "load":
                ok = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                         and k.value.value is True for k in node.keywords)
                if not ok:
                    bad.append(f"{where}: torch.load without weights_only=True")
    assert bad == []


def test_list_and_data_paths_are_not_expanded(work, monkeypatch):
    """``~`` and ``$VARS`` stay literal (Darknet uses fopen on the text as written)."""
    from darknet_py.data.datacfg import read_data_cfg, read_list
    from darknet_py.data.dataset import DetectionDataset
    from darknet_py.data.augment import AugmentConfig
    from darknet_py.data.paths import label_path

    home = work / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("IMGS", str(home))
    for folder in ("~", "$IMGS"):
        (work / folder).mkdir()
        shutil.copy(work / "good" / "small.jpg", work / folder / "a.jpg")
        (work / folder / "a.txt").write_text("0 0.5 0.5 0.3 0.3\n")
    (work / "lit.txt").write_text("~/a.jpg\n$IMGS/a.jpg\n")
    (work / "lit.data").write_text("classes=1\ntrain=lit.txt\nnames=~/tiny.names\n")
    paths = read_list("lit.txt")
    assert paths == ["~/a.jpg", "$IMGS/a.jpg"]
    assert [label_path(p) for p in paths] == ["~/a.txt", "$IMGS/a.txt"]
    assert read_data_cfg("lit.data").names == "~/tiny.names"
    aug = AugmentConfig.from_cfg(str(work / "good" / "tiny.cfg"))
    ds = DetectionDataset(paths, aug, seed=0, augment=False)
    for i in range(2):
        img, boxes = ds.load(i, np.random.default_rng(0))
        assert img is not None and boxes.shape == (1, 5)
    r = run_inproc(*DETECT, "good/tiny.cfg", "good/tiny.weights", "~/a.jpg", "-dont_show")
    assert r.code == 0 and "~/a.jpg: Predicted in" in r.stdout
    # the expanded places hold nothing: a literal path is the only way these loads succeed
    assert list(home.iterdir()) == []
