"""`detector test` and `detector demo` run as a user would, checked against Darknet's output."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import REFDATA, REPO, require

CFG = REPO / "cfg" / "yolo-fastest-1.1.cfg"
WEIGHTS = REPO / "weights" / "yolo-fastest-1.1.weights"


def run_cli(*args, cwd, input=None):
    return subprocess.run([sys.executable, "-m", "darknet_py.cli", *map(str, args)], cwd=cwd,
                          input=input, capture_output=True, text=True, timeout=600)


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "coco.names").write_text((REPO / "cfg" / "coco.names").read_text())
    (tmp_path / "obj.data").write_text("classes=80\nnames=coco.names\n")
    return tmp_path


def oracle_block(model, image_name):
    d = json.loads(require(REFDATA / "oracle" / "detect" / f"{model}__default.json").read_text())
    for im in d["images"]:
        if im["filename"].endswith("/" + image_name):
            return im
    raise KeyError(image_name)


def strip_time(lines):
    return [l for l in lines if "Predicted in" not in l]


def test_detector_test_single_image_matches_darknet(workdir):
    img = require(REFDATA / "images" / "dog.jpg")
    r = run_cli("detector", "test", "obj.data", CFG, WEIGHTS, img, "-ext_output", "-dont_show",
                "-out", "result.json", cwd=workdir)
    assert r.returncode == 0, r.stderr
    ref = oracle_block("yolo-fastest-1.1", "dog.jpg")
    ours = r.stdout.splitlines()
    theirs = ref["stdout"].splitlines()
    assert strip_time(ours) == strip_time(theirs)
    assert any(l.startswith(f"{img}: Predicted in ") and l.endswith(" milli-seconds.") for l in ours)
    pred = cv2.imread(str(workdir / "predictions.jpg"))
    assert pred is not None and pred.shape == (576, 768, 3)
    out = json.loads((workdir / "result.json").read_text())
    assert out[0]["frame_id"] == 1 and out[0]["filename"] == str(img)
    got = [(o["class_id"], round(o["confidence"], 3)) for o in out[0]["objects"]]
    want = [(o["class_id"], round(o["confidence"], 3)) for o in ref["objects"]]
    assert sorted(got) == sorted(want)
    assert "   layer   filters  size/strd(dil)" in r.stderr


def test_detector_test_reads_stdin_and_skips_bad_paths(workdir):
    imgs = [require(REFDATA / "images" / n) for n in ("eagle.jpg", "person.jpg")]
    stdin = f"{imgs[0]}\n{workdir / 'missing.jpg'}\n{imgs[1]}\n"
    r = run_cli("detector", "test", "obj.data", CFG, WEIGHTS, "-dont_show", "-save_labels",
                cwd=workdir, input=stdin)
    assert r.returncode == 0, r.stderr
    assert "missing.jpg" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout.count("Enter Image Path: ") == 4        # three paths, then EOF
    for name in ("eagle.jpg", "person.jpg"):
        ref = oracle_block("yolo-fastest-1.1", name)
        body = [l for l in ref["stdout"].splitlines() if ": " in l and "Predicted" not in l
                and "Detection layer" not in l]
        for line in body:
            assert line.split("\t")[0] in r.stdout      # without -ext_output: "name: NN%"
    # -save_labels writes YOLO txt next to each image; those are read-only here, so only check
    # the run did not fail on them


def test_detector_test_errors(workdir):
    r = run_cli("detector", "test", "obj.data", CFG, WEIGHTS, workdir / "nope.jpg", cwd=workdir)
    assert r.returncode == 1 and "nope.jpg" in r.stderr and "Traceback" not in r.stderr
    (workdir / "short.names").write_text("a\nb\n")
    (workdir / "short.data").write_text("classes=80\nnames=short.names\n")
    r = run_cli("detector", "test", "short.data", CFG, WEIGHTS, REPO / "data" / "dog.jpg",
                cwd=workdir)
    assert r.returncode == 1 and "2 names" in r.stderr and "classes=80" in r.stderr


def test_detector_demo_writes_annotated_video(workdir):
    frames = [cv2.imread(str(require(REFDATA / "images" / n))) for n in ("dog.jpg", "horses.jpg")]
    h, w = 360, 480
    video = workdir / "in.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (w, h))
    for i in range(6):
        vw.write(cv2.resize(frames[i % 2], (w, h)))
    vw.release()
    r = run_cli("detector", "demo", "obj.data", CFG, WEIGHTS, video, "-out_filename", "out.avi",
                "-dont_show", "-ext_output", "-batch", "2", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("Objects:") == 6 and r.stdout.count("AVG_FPS:") == 6
    assert "dog: " in r.stdout and "left_x:" in r.stdout
    cap = cv2.VideoCapture(str(workdir / "out.avi"))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, f = cap.read()
    assert n == 6 and ok and f.shape == (h, w, 3)
    r = run_cli("detector", "demo", "obj.data", CFG, WEIGHTS, workdir / "none.mp4", cwd=workdir)
    assert r.returncode == 1 and "none.mp4" in r.stderr


DEMO_ORACLE = REPO / "tests" / "fixtures" / "files" / "demo_oracle"


def demo_blocks(stdout):
    """The per-frame detection lines of a demo's stdout: what lies between ``Objects:`` and the
    ``FPS:`` line of each frame (Darknet clears the screen before each ``Objects:``)."""
    blocks = []
    for part in stdout.split("Objects:\n\n")[1:]:
        body = part.split("\nFPS:")[0].rstrip("\n")
        blocks.append(body.split("\n") if body else [])
    return blocks


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    """darknet-py's demo on the oracle video, once per (model, flags)."""
    runs = {}

    def run(model, *flags):
        if (model, flags) not in runs:
            cwd = tmp_path_factory.mktemp("demo")
            (cwd / "coco.names").write_text((REPO / "cfg" / "coco.names").read_text())
            (cwd / "coco.data").write_text("classes=80\nnames=coco.names\n")
            cfg, weights = model
            r = run_cli("detector", "demo", "coco.data", cfg, weights, DEMO_ORACLE / "demo.avi",
                        "-dont_show", "-ext_output", "-backend", "exact", "-out", "frames.json",
                        *flags, cwd=cwd)
            assert r.returncode == 0, r.stderr[-2000:]
            runs[model, flags] = (demo_blocks(r.stdout),
                                  json.loads((cwd / "frames.json").read_text()))
        return runs[model, flags]
    return run


@pytest.mark.parametrize("recording, first_frame, flags", [
    ("yolo-fastest-1.1__avgframes1", 1, ()),
    ("yolov4-tiny__avgframes1", 1, ()),
    ("yolov4-tiny__default", 2, ()),
    ("yolov4-tiny__letter_box", 1, ("-letter_box",)),
])
def test_detector_demo_matches_darknets_demo(demo_runs, recording, first_frame, flags):
    """Per frame: the printed lines (classes, confidences and boxes as Darknet's
    ``draw_detections_cv_v3`` prints them) and the JSON objects (same order, %f values) of a
    real Darknet demo on the same video (see the oracle's README for which frame is which)."""
    if recording.startswith("yolo-fastest"):
        model = (CFG, WEIGHTS)
    else:
        model = (require(REFDATA / "cfg" / "darknet" / "yolov4-tiny.cfg"),
                 require(REFDATA / "weights" / "yolov4-tiny.weights"))
    ours, ours_json = demo_runs(model, *flags)
    assert len(ours) == 6 and [e["frame_id"] for e in ours_json] == list(range(1, 7))
    theirs = demo_blocks((DEMO_ORACLE / f"{recording}.stdout.txt").read_text())
    theirs_json = json.loads((DEMO_ORACLE / f"{recording}.darknet_out.json").read_text())
    # Darknet prints frames first_frame..5: never the last one, and its first block is empty
    assert len(theirs) == len(theirs_json) == 6 - first_frame and theirs[0] == []
    for k, lines in enumerate(theirs[1:], first_frame + 1):
        assert ours[k - 1] == [l for l in lines if l != "Stream closed."], f"frame {k}"
    compared = 0
    for entry in theirs_json:
        mine = ours_json[entry["frame_id"] + first_frame - 2]["objects"]
        want = entry["objects"]
        assert [(o["class_id"], o["name"]) for o in mine] == \
            [(o["class_id"], o["name"]) for o in want], f"frame {entry['frame_id']}"
        for a, b in zip(mine, want):
            assert abs(a["confidence"] - b["confidence"]) <= 2e-5
            for key, v in b["relative_coordinates"].items():
                assert abs(a["relative_coordinates"][key] - v) <= 2e-5
            compared += 1
    assert compared >= 10


def test_detect_shortcut_is_detector_test_with_coco_data(tmp_path):
    """Darknet's `detect cfg weights image`: `detector test cfg/coco.data ...` at -thresh 0.24,
    run where cfg/coco.data is (the repository's copied to a scratch folder, as in a checkout)."""
    (tmp_path / "cfg").mkdir()
    for name in ("coco.data", "coco.names"):
        (tmp_path / "cfg" / name).write_text((REPO / "cfg" / name).read_text())
    model = [CFG, WEIGHTS, REPO / "data" / "dog.jpg"]
    short = run_cli("detect", *model, "-ext_output", cwd=tmp_path)
    assert short.returncode == 0, short.stderr[-1000:]
    assert (tmp_path / "predictions.jpg").exists()
    full = run_cli("detector", "test", "cfg/coco.data", *model, "-thresh", "0.24", "-ext_output",
                   "-dont_show", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-1000:]
    lines = strip_time(short.stdout.splitlines())
    assert lines == strip_time(full.stdout.splitlines()) and any("dog:" in l for l in lines)


def test_detect_without_cfg_coco_data_is_one_line(tmp_path):
    r = run_cli("detect", CFG, WEIGHTS, REPO / "data" / "dog.jpg", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"darknet-py: data error: cfg/coco.data: detect reads cfg/coco.data from the working "
        f"directory, as Darknet does, and {tmp_path} has none: run it from the darknet-py "
        f"folder, or use `darknet-py detector test obj.data cfg weights image`"]
