"""``-tiles``/``-tile_overlap``/``-tiles_full`` on detector test, demo, map, valid and ``-track``
on demo, run in this process with click's runner (one torch import for the module)."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import REFDATA, REPO, require

CFG = REPO / "cfg" / "yolo-fastest-1.1.cfg"
WEIGHTS = REPO / "weights" / "yolo-fastest-1.1.weights"
COCO128 = ["000000000139.jpg", "000000000285.jpg", "000000000632.jpg"]


def cli(*args, cwd=None, monkeypatch=None):
    from darknet_py.cli import main
    if monkeypatch is not None and cwd is not None:
        monkeypatch.chdir(cwd)
    res = CliRunner().invoke(main, [str(a) for a in args])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError(f"uncaught {type(res.exception).__name__}: {res.exception}") \
            from res.exception
    return res


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "obj.data").write_text(f"classes=80\nnames={REPO / 'cfg' / 'coco.names'}\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _objects(path):
    return [o for entry in json.loads(path.read_text()) for o in entry["objects"]]


def test_detector_test_tiles_find_the_small_objects(workdir):
    canvas = np.full((1500, 2000, 3), 114, np.uint8)
    for k, name in enumerate(["bus", "zidane", "giraffe"]):
        im = cv2.imread(str(require(REFDATA / "images" / f"{name}.jpg")))
        s = 380 / max(im.shape[:2])
        im = cv2.resize(im, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        x, y = 60 + 760 * k, 60 + 500 * k
        canvas[y:y + im.shape[0], x:x + im.shape[1]] = im
    cv2.imwrite(str(workdir / "canvas.jpg"), canvas)
    plain = cli("detector", "test", "obj.data", CFG, WEIGHTS, "canvas.jpg", "-out", "plain.json")
    tiled = cli("detector", "test", "obj.data", CFG, WEIGHTS, "canvas.jpg", "-out", "tiled.json",
                "-tiles", "5x4", "-tile_overlap", "0.25", "-ext_output")
    assert plain.exit_code == 0 and tiled.exit_code == 0, tiled.stderr[-2000:]
    n_plain, n_tiled = len(_objects(workdir / "plain.json")), len(_objects(workdir / "tiled.json"))
    assert n_tiled >= 6 and n_tiled >= 3 * n_plain, (n_plain, n_tiled)
    assert "canvas.jpg: Predicted in" in tiled.stdout and "person: " in tiled.stdout
    assert cv2.imread(str(workdir / "predictions.jpg")).shape == (1500, 2000, 3)


@pytest.mark.parametrize("args,text", [
    (["-tiles", "0x3"], "-tiles 0x3"),
    (["-tiles", "3by2"], "-tiles 3by2"),
    (["-tiles", "2x2", "-tile_overlap", "1.5"], "-tile_overlap 1.5"),
    (["-tiles_full"], "-tiles_full needs -tiles"),
])
def test_bad_tile_flags_are_one_line_usage_errors(workdir, args, text):
    img = require(REFDATA / "images" / "dog.jpg")
    r = cli("detector", "test", "obj.data", CFG, WEIGHTS, img, *args)
    lines = [l for l in r.stderr.splitlines() if l.startswith("darknet-py:")]
    assert r.exit_code == 2 and len(lines) == 1 and text in lines[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr


def test_bad_tiles_in_a_real_process_exit_without_traceback(tmp_path):
    (tmp_path / "obj.data").write_text(f"classes=80\nnames={REPO / 'cfg' / 'coco.names'}\n")
    p = subprocess.run([sys.executable, "-m", "darknet_py.cli", "detector", "map", "obj.data",
                        str(CFG), str(WEIGHTS), "-tiles", "0x3"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("darknet-py: ")
    assert "-tiles 0x3" in p.stderr


def _pan_video(path, frames=8):
    """zidane.jpg at half size on a grey strip, a window sliding across it."""
    im = cv2.imread(str(require(REFDATA / "images" / "zidane.jpg")))
    im = cv2.resize(im, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    h, w = im.shape[:2]
    pad = w // 4
    canvas = np.full((h, w + 2 * pad, 3), 114, np.uint8)
    canvas[:, pad:pad + w] = im
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w + pad, h))
    for k in range(frames):
        x = k * pad // (frames - 1)
        vw.write(canvas[:, x:x + w + pad].copy())
    vw.release()


def test_demo_track_writes_track_ids_and_counts_unique_tracks(workdir):
    pytest.importorskip("supervision")
    _pan_video(workdir / "pan.avi")
    r = cli("detector", "demo", "obj.data", CFG, WEIGHTS, "pan.avi", "-track", "-out",
            "frames.json", "-out_filename", "tracked.avi", "-dont_show")
    assert r.exit_code == 0, r.stderr[-2000:]
    entries = json.loads((workdir / "frames.json").read_text())
    assert [e["frame_id"] for e in entries] == list(range(1, 9))
    persons = [o for e in entries for o in e["objects"] if o["name"] == "person"]
    assert all(isinstance(o["track_id"], int) for e in entries for o in e["objects"])
    assert len(persons) >= 15 and len({o["track_id"] for o in persons}) == 2
    assert "Unique tracks per class" in r.stdout and "\nperson: 2\n" in r.stdout + "\n"
    cap = cv2.VideoCapture(str(workdir / "tracked.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 8
    cap.release()


def test_demo_with_tiles_runs_every_frame(workdir):
    _pan_video(workdir / "pan.avi", frames=3)
    r = cli("detector", "demo", "obj.data", CFG, WEIGHTS, "pan.avi", "-tiles", "2x1",
            "-tiles_full", "-out", "frames.json", "-dont_show", "-batch", "2")
    assert r.exit_code == 0, r.stderr[-2000:]
    assert r.stdout.count("Objects:") == 3
    assert any(o["name"] == "person" for o in _objects(workdir / "frames.json"))


def _coco128(workdir, eval_kind="coco"):
    val = require(REFDATA / "datasets" / "coco128" / "images" / "val2017")
    (workdir / "list.txt").write_text("".join(f"{val / n}\n" for n in COCO128))
    (workdir / "results").mkdir(exist_ok=True)
    (workdir / "v.data").write_text(f"classes=80\nvalid=list.txt\nnames={REPO / 'cfg/coco.names'}"
                                    f"\neval={eval_kind}\nresults=results\n")


def test_map_and_valid_take_tiles_through_the_same_metric_code(workdir):
    _coco128(workdir)

    def map_lines(*extra):
        r = cli("detector", "map", "v.data", CFG, WEIGHTS, *extra)
        assert r.exit_code == 0, r.stderr[-2000:]
        return [l for l in r.stdout.splitlines() if "ap = " in l or "mAP@" in l]

    plain = map_lines()
    assert plain and any("mAP@0.50" in l for l in plain)
    assert map_lines("-tiles", "1x1") == plain          # one tile = the image: same numbers
    assert map_lines("-tiles", "2x2", "-tiles_full") != plain

    def valid(*extra):
        r = cli("detector", "valid", "v.data", CFG, WEIGHTS, *extra)
        assert r.exit_code == 0, r.stderr[-2000:]
        return json.loads((workdir / "results" / "coco_results.json").read_text())

    base = valid()
    assert valid("-tiles", "1x1") == base and len(base) > 50
    tiled = valid("-tiles", "2x2")
    assert tiled != base and {d["image_id"] for d in tiled} == {d["image_id"] for d in base}


def test_demo_track_without_supervision_says_how_to_install_it(workdir, monkeypatch):
    monkeypatch.setitem(sys.modules, "supervision", None)
    _pan_video(workdir / "pan.avi", frames=2)
    r = cli("detector", "demo", "obj.data", CFG, WEIGHTS, "pan.avi", "-track")
    lines = [l for l in r.stderr.splitlines() if l.startswith("darknet-py:")]
    assert r.exit_code == 2 and len(lines) == 1 and "darknet-py[track]" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and "Objects:" not in r.stdout
