"""The list and video commands with their stages overlapped (reader thread, network thread,
main thread: Pipeline.process) print and write exactly what they print and write with every
step in one thread, one batch after the other (timings aside); Ctrl-C stops them at once."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import cv2
import pytest
from click.testing import CliRunner

from conftest import REFDATA, REPO, require
from darknet_py.cli import main

CFG = str(REPO / "cfg" / "yolo-fastest-1.1.cfg")
WEIGHTS = str(REPO / "weights" / "yolo-fastest-1.1.weights")
VAL = REFDATA / "datasets" / "coco128" / "images" / "val2017"
#: one network thread count for every run: both runs use the same backend set-up
BACKEND = ["-threads", "1"]


def invoke(monkeypatch, args, *, sequential: bool, stdin=None, terminal=False):
    """The command in this process; ``sequential`` runs every stage in the calling thread
    (``Pipeline.process(..., overlap=False)``), ``terminal`` makes ``detector test`` take its
    stdin for a terminal (the prompt-then-read loop)."""
    from darknet_py.commands import detector_test
    from darknet_py.infer.pipeline import Pipeline
    real = Pipeline.process
    with monkeypatch.context() as m:
        if sequential:
            m.setattr(Pipeline, "process",
                      lambda self, items, *a, **k: real(self, items, *a, **{**k,
                                                                          "overlap": False}))
        m.setattr(detector_test, "_is_terminal", lambda stream: terminal)
        res = CliRunner().invoke(main, args, input=stdin)
    assert res.exit_code == 0, (res.output, res.exception)
    return res


def _untimed(text: str) -> str:
    text = re.sub(r"Predicted in [0-9.]+ milli-seconds", "Predicted in T milli-seconds", text)
    return re.sub(r"FPS:[0-9.]+ \t AVG_FPS:[0-9.]+", "FPS:F \t AVG_FPS:F", text)


@pytest.fixture
def images(tmp_path):
    """coco128 images copied where -save_labels may write."""
    names = sorted(p.name for p in require(VAL).glob("*.jpg"))[:6]
    out = []
    for n in names:
        shutil.copy(VAL / n, tmp_path / n)
        out.append(str(tmp_path / n))
    return out


def test_detector_test_on_a_stdin_list(monkeypatch, tmp_path, images):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "coco.names").write_text((REPO / "cfg" / "coco.names").read_text())
    (tmp_path / "obj.data").write_text("classes=80\nnames=coco.names\n")
    lines = [images[0], "", str(tmp_path / "missing.jpg"), images[1], "predictions.jpg",
             "  " + images[2] + "  ", images[3], images[4], images[5]]
    stdin = "\n".join(lines) + "\n"
    runs = []
    for terminal in (True, False):        # the prompt-then-read loop, then the overlapped list
        args = ["detector", "test", "obj.data", CFG, WEIGHTS, "-ext_output", "-dont_show",
                "-save_labels", "-out", "result.json"] + BACKEND
        res = invoke(monkeypatch, args, sequential=False, stdin=stdin, terminal=terminal)
        files = {p.name: p.read_bytes() for p in sorted(tmp_path.iterdir())
                 if p.suffix in (".json", ".txt") or p.name == "predictions.jpg"}
        runs.append((res, files))
        for p in tmp_path.glob("0*.txt"):
            p.unlink()
    (seq, seq_files), (ovl, ovl_files) = runs
    assert "overlap: " in ovl.stderr and "overlap: " not in seq.stderr
    assert _untimed(ovl.stdout) == _untimed(seq.stdout)
    assert ovl.stdout.count("Enter Image Path: ") == len(lines) + 1
    assert ovl.stdout.count("Predicted in") == 6
    cannot = [l for l in ovl.stderr.splitlines() if l.startswith("Cannot load image")]
    assert cannot == [l for l in seq.stderr.splitlines() if l.startswith("Cannot load image")]
    assert len(cannot) == 2              # the missing file and the file this run writes
    assert ovl_files == seq_files and len([n for n in ovl_files if n.endswith(".txt")]) >= 6


def _data_file(tmp_path, images, kind="coco"):
    (tmp_path / "list.txt").write_text("".join(f"{p}\n" for p in images))
    (tmp_path / "results").mkdir(exist_ok=True)
    data = tmp_path / "v.data"
    data.write_text(f"classes=80\nvalid={tmp_path / 'list.txt'}\n"
                    f"names={REPO / 'cfg' / 'coco.names'}\neval={kind}\n"
                    f"results={tmp_path / 'results'}\n")
    return str(data)


@pytest.mark.parametrize("batch", ["1", "3"])
def test_detector_map_printout(monkeypatch, tmp_path, batch):
    val = sorted(str(p) for p in require(VAL).glob("*.jpg"))[:10]
    data = _data_file(tmp_path, val)
    args = ["detector", "map", data, CFG, WEIGHTS, "-dont_show", "-batch", batch] + BACKEND
    seq = invoke(monkeypatch, args, sequential=True)
    ovl = invoke(monkeypatch, args, sequential=False)
    assert "overlap: " in ovl.stderr
    assert ovl.stdout == seq.stdout and "mean average precision (mAP@0.50)" in ovl.stdout


@pytest.mark.parametrize("kind", ["coco", "voc"])
def test_detector_valid_files(monkeypatch, tmp_path, kind):
    val = sorted(str(p) for p in require(VAL).glob("*.jpg"))[:9]
    data = _data_file(tmp_path, val, kind)
    written = []
    for sequential in (True, False):
        args = ["detector", "valid", data, CFG, WEIGHTS, "-batch", "4", "-workers", "2"] + BACKEND
        res = invoke(monkeypatch, args, sequential=sequential)
        written.append((res.stdout, {p.name: p.read_bytes()
                                     for p in sorted((tmp_path / "results").iterdir())}))
        shutil.rmtree(tmp_path / "results")
        (tmp_path / "results").mkdir()
    assert written[0] == written[1]
    assert sum(len(b) for b in written[0][1].values()) > 1000


def test_detector_demo_printout_and_files(monkeypatch, tmp_path):
    frames = [cv2.imread(str(require(REFDATA / "images" / n)))
              for n in ("dog.jpg", "horses.jpg", "person.jpg")]
    video = tmp_path / "in.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (480, 360))
    for i in range(7):
        vw.write(cv2.resize(frames[i % 3], (480, 360)))
    vw.release()
    (tmp_path / "coco.names").write_text((REPO / "cfg" / "coco.names").read_text())
    (tmp_path / "obj.data").write_text("classes=80\nnames=coco.names\n")
    monkeypatch.chdir(tmp_path)
    runs = []
    for sequential in (True, False):
        args = ["detector", "demo", "obj.data", CFG, WEIGHTS, str(video), "-dont_show",
                "-ext_output", "-batch", "2", "-out", "frames.json", "-out_filename",
                "out.avi"] + BACKEND
        res = invoke(monkeypatch, args, sequential=sequential)
        runs.append((_untimed(res.stdout), (tmp_path / "frames.json").read_bytes(),
                     (tmp_path / "out.avi").read_bytes()))
    assert runs[0] == runs[1]
    assert runs[1][0].count("Objects:") == 7 and "dog: " in runs[1][0]


def test_ctrl_c_with_a_reader_blocked_on_stdin(tmp_path, images):
    """A pipe that stays open (the reader thread waits in a read) and Ctrl-C: the command stops
    at once with Darknet's files written so far and exit code 130, no traceback."""
    (tmp_path / "coco.names").write_text((REPO / "cfg" / "coco.names").read_text())
    (tmp_path / "obj.data").write_text("classes=80\nnames=coco.names\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "darknet_py.cli", "detector", "test",
                             "obj.data", CFG, WEIGHTS, "-dont_show", "-out", "result.json"]
                            + BACKEND, cwd=tmp_path, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdin.write("".join(f"{p}\n" for p in images[:2]))
    proc.stdin.flush()                   # ...and the pipe stays open: no end of input
    seen = ""
    while seen.count("Predicted in") < 2:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()[-2000:]
        seen += line
    time.sleep(0.3)                      # the reader is now waiting for the third line
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert time.perf_counter() - t0 < 15
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert len(json.loads((tmp_path / "result.json").read_text())) == 2
