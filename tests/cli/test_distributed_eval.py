"""`detector map`, `valid` and `test` under torchrun (2 gloo processes on CPU): the list is
sharded, results gathered on rank 0, and the output is the single-process output.

torchrun sets OMP_NUM_THREADS=1 in its processes; the single-process runs get the same, since a
CPU convolution's float summation order (hence the last digits of a box) depends on the number
of threads. The -batch 4 chunks of the 2 shards of 16 images are those of one process."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REFDATA, REPO, require

CFG = REPO / "cfg" / "yolo-fastest-1.1.cfg"
WEIGHTS = REPO / "weights" / "yolo-fastest-1.1.weights"
N_IMAGES = 16


def cli(*args, cwd, nproc=1, stdin=None):
    launcher = [sys.executable, "-m", "darknet_py.cli"] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         str(nproc), "-m", "darknet_py.cli"]
    r = subprocess.run([*launcher, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                       timeout=600, input=stdin, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist_eval")
    val = require(REFDATA / "datasets" / "coco128" / "images" / "val2017")
    require(WEIGHTS)
    images = sorted(val.glob("*.jpg"))[:N_IMAGES]
    assert len(images) == N_IMAGES
    (root / "list.txt").write_text("".join(f"{p}\n" for p in images))
    for name in ("one", "two"):
        (root / name).mkdir()
        (root / f"{name}.data").write_text(
            f"classes=80\nvalid=list.txt\nnames={REPO / 'cfg/coco.names'}\neval=coco\n"
            f"results={name}\n")
    return root, images


def test_map_and_valid_equal_one_process(setup):
    root, _ = setup
    m1 = cli("detector", "map", "one.data", CFG, WEIGHTS, cwd=root)
    m2 = cli("detector", "map", "two.data", CFG, WEIGHTS, cwd=root, nproc=2)
    assert "mean average precision (mAP@0.50)" in m1.stdout
    assert m2.stdout == m1.stdout                  # every line, printed once (rank 0 only)
    v1 = cli("detector", "valid", "one.data", CFG, WEIGHTS, "-batch", 4, cwd=root)
    v2 = cli("detector", "valid", "two.data", CFG, WEIGHTS, "-batch", 4, cwd=root, nproc=2)
    j1 = json.loads((root / "one" / "coco_results.json").read_text())
    j2 = json.loads((root / "two" / "coco_results.json").read_text())
    assert len(j1) > 100 and j2 == j1             # same entries, same order
    assert len({d["image_id"] for d in j1}) > N_IMAGES // 2
    assert v2.stdout.replace("two/", "one/") == v1.stdout


@pytest.mark.slow
def test_detector_test_stdin_list_equals_one_process(setup):
    root, images = setup
    listing = "".join(f"{p}\n" for p in images[:7]) + "\n" + str(root / "missing.jpg") + "\n" + \
        "".join(f"{p}\n" for p in images[7:10])
    (root / "t1").mkdir()
    (root / "t2").mkdir()
    t1 = cli("detector", "test", root / "one.data", CFG, WEIGHTS, "-dont_show", "-ext_output",
             "-out", "r.json", cwd=root / "t1", stdin=listing)
    t2 = cli("detector", "test", root / "one.data", CFG, WEIGHTS, "-dont_show", "-ext_output",
             "-out", "r.json", cwd=root / "t2", nproc=2, stdin=listing)

    def unclocked(text):
        return re.sub(r"Predicted in [\d.]+ milli-seconds", "Predicted in T milli-seconds", text)
    assert t1.stdout.count("Enter Image Path: ") == 13
    assert unclocked(t2.stdout) == unclocked(t1.stdout)
    assert t2.stderr.count("Cannot load image") == 1
    assert (root / "t2" / "r.json").read_text() == (root / "t1" / "r.json").read_text()
    assert (root / "t2" / "predictions.jpg").read_bytes() == \
        (root / "t1" / "predictions.jpg").read_bytes()
