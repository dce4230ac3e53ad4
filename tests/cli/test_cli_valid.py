"""`detector valid` as a user runs it, against Darknet's recorded coco_results.json."""
import json
import subprocess
import sys

import pytest

from conftest import REFDATA, REPO, require

IMAGES = ["000000000139.jpg", "000000000285.jpg", "000000000632.jpg"]


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "darknet_py.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def write_setup(tmp_path, eval_kind):
    val = require(REFDATA / "datasets" / "coco128" / "images" / "val2017")
    (tmp_path / "list.txt").write_text("".join(f"{val / n}\n" for n in IMAGES))
    (tmp_path / "results").mkdir()
    (tmp_path / "v.data").write_text(f"classes=80\nvalid=list.txt\nnames={REPO / 'cfg/coco.names'}"
                                     f"\neval={eval_kind}\nresults=results\n")


def test_valid_coco_json_matches_darknet(tmp_path):
    write_setup(tmp_path, "coco")
    r = run_cli("detector", "valid", "v.data", REFDATA / "cfg/darknet/yolov4-tiny.cfg",
                REFDATA / "weights/yolov4-tiny.weights", "-batch", 3, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    ours = json.loads((tmp_path / "results" / "coco_results.json").read_text())
    ids = {int(n[:-4]) for n in IMAGES}
    ref = [d for d in json.loads(require(REFDATA / "oracle/map/valid_coco/coco_results.json")
                                 .read_text()) if d["image_id"] in ids]
    assert len(ours) == len(ref) > 100
    for a, b in zip(ours, ref):                       # same entries, same order
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert abs(a["score"] - b["score"]) < 1e-3
        assert max(abs(u - v) for u, v in zip(a["bbox"], b["bbox"])) < 0.01


def test_valid_voc_files_and_bad_results_folder(tmp_path):
    write_setup(tmp_path, "voc")
    r = run_cli("detector", "valid", "v.data", REPO / "cfg/yolo-fastest-1.1.cfg",
                REPO / "weights/yolo-fastest-1.1.weights", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    dog = (tmp_path / "results" / "comp4_det_test_person.txt").read_text().splitlines()
    assert dog and all(len(l.split()) == 6 for l in dog)
    assert {l.split()[0] for l in dog} <= {n[:-4] for n in IMAGES}
    assert len(list((tmp_path / "results").glob("comp4_det_test_*.txt"))) == 80
    (tmp_path / "results").rename(tmp_path / "gone")
    r = run_cli("detector", "valid", "v.data", REPO / "cfg/yolo-fastest-1.1.cfg",
                REPO / "weights/yolo-fastest-1.1.weights", cwd=tmp_path)
    assert r.returncode == 1 and "results folder" in r.stderr and "Traceback" not in r.stderr
