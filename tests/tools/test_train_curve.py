"""tools/train_curve.py: train a few iterations on the synthetic shapes set, evaluate each
checkpoint, print the table, write CSV and PNG; evaluation of an existing backup folder; the
face-mask recipe it builds by default; one-line errors."""
import csv
import importlib.util
import io
import re
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest

from conftest import REFDATA, REPO, require
from train_fixtures import make_shapes_workdir

SCRIPT = REPO / "tools" / "train_curve.py"


def _tool():
    if "train_curve" not in sys.modules:     # dataclasses need the module registered
        spec = importlib.util.spec_from_file_location("train_curve", SCRIPT)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["train_curve"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["train_curve"]


def _main(*args):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = _tool().main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = make_shapes_workdir(tmp_path_factory.mktemp("curve") / "shapes", n_images=8, size=64,
                               batch=4, max_batches=4, burn_in=1)
    out = work / "curve"
    mp = pytest.MonkeyPatch()
    mp.chdir(work)                   # obj.data's relative paths, as Darknet reads them
    rc, stdout, stderr = _main("--data", work / "obj.data", "--cfg", work / "small.cfg",
                               "--weights", work / "yolov4-tiny.conv.29", "--workdir", out,
                               "--saveweights", 2, "--workers", 0, "--seed", 1, "--nogpu")
    mp.undo()
    assert rc == 0, stderr
    return work, out, stdout


def test_table_csv_png_of_each_checkpoint(trained):
    work, out, stdout = trained
    backup = out / "backup"          # --saveweights: the run's own obj.data and backup
    assert sorted(p.name for p in backup.glob("small_*.weights")) == \
        ["small_2.weights", "small_4.weights", "small_final.weights"]
    table = stdout[stdout.index("iteration   train_s"):].splitlines()
    rows = [l.split() for l in table[1:] if re.match(r"\s+\d+\s", l)]
    assert [r[0] for r in rows] == ["2", "4"]          # _final is iteration 4: not repeated
    with open(out / "train_curve.csv", newline="") as f:
        data = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in data] == [2, 4]
    log = {}
    with open(backup / "small_log.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["kind"] == "iter":
                log[int(r["iteration"])] = r
    for r, printed in zip(data, rows):
        m50, m75 = float(r["map50"]), float(r["map75"])
        assert 0 <= m75 <= m50 <= 1 or (m50 == 0 and m75 == 0)
        assert printed[2] == f"{m50 * 100:.2f}%" and printed[3] == f"{m75 * 100:.2f}%"
        it = int(r["iteration"])
        assert float(r["loss"]) == pytest.approx(float(log[it]["loss"]))
        assert float(r["avg_loss"]) == pytest.approx(float(log[it]["avg_loss"]))
        assert float(r["train_seconds"]) > 0
        assert r["weights"].endswith(f"small_{it}.weights")
    w, h = _png_size(out / "train_curve.png")
    assert (w, h) == (700, 420)
    assert (out / "train.log").read_text().count("Saving weights to") == 3


def test_eval_only_matches_and_overlays_a_reference(trained, tmp_path):
    work, out, _ = trained
    ref = tmp_path / "ref.tsv"
    ref.write_text("iteration\tmAP@0.50\n2\t0.1\n4\t0.3\n")
    rc, stdout, stderr = _main("--eval-only", "--data", out / "obj.data", "--cfg",
                               work / "small.cfg", "--workdir", tmp_path / "again",
                               "--reference", ref, "--nogpu")
    assert rc == 0, stderr
    with open(out / "train_curve.csv", newline="") as f:
        first = [(r["iteration"], r["map50"], r["map75"]) for r in csv.DictReader(f)]
    with open(tmp_path / "again" / "train_curve.csv", newline="") as f:
        again = [(r["iteration"], r["map50"], r["map75"]) for r in csv.DictReader(f)]
    assert again == first                    # evaluation is deterministic
    assert not (tmp_path / "again" / "train.log").exists()
    assert _png_size(tmp_path / "again" / "train_curve.png") == (700, 420)
    assert _tool().read_reference(ref) == ("mAP@0.50", [(2, 0.1), (4, 0.3)])
    # our own CSV is a valid reference too (its first map column is map50)
    col, rows = _tool().read_reference(out / "train_curve.csv")
    assert col == "map50" and [r[0] for r in rows] == [2, 4]


def test_one_line_errors(trained, tmp_path):
    work, out, _ = trained
    rc, _, err = _main("--eval-only", "--data", work / "obj.data", "--cfg", work / "small.cfg",
                       "--backup", tmp_path / "nothing", "--workdir", tmp_path / "w")
    assert rc == 1 and err.count("\n") == 1 and "backup folder does not exist" in err
    (tmp_path / "empty").mkdir()
    rc, _, err = _main("--eval-only", "--data", work / "obj.data", "--cfg", work / "small.cfg",
                       "--backup", tmp_path / "empty", "--workdir", tmp_path / "w")
    assert rc == 1 and err.count("\n") == 1 and "no small_<N>.weights" in err
    rc, _, err = _main("--data", work / "obj.data")
    assert rc == 1 and "give both --data and --cfg" in err
    bad = tmp_path / "bad.tsv"
    bad.write_text("step\tvalue\n1\t2\n")
    rc, _, err = _main("--eval-only", "--data", out / "obj.data", "--cfg", work / "small.cfg",
                       "--workdir", tmp_path / "w", "--reference", bad)
    assert rc == 1 and "'iteration' column" in err


def test_default_recipe_is_the_facemask_fine_tune(tmp_path):
    require(REFDATA / "datasets" / "facemask" / "annotations")
    tool = _tool()
    data, cfg, conv = tool.build_facemask_recipe(tmp_path, 100)
    text = data.read_text()
    assert "classes=3" in text and "saveweights=100" in text
    train = (tmp_path / "train.txt").read_text().split()
    val = (tmp_path / "val.txt").read_text().split()
    assert (len(train), len(val)) == (597, 128)
    first = tmp_path / "facemask" / "maksssksksss2.txt"
    assert first.exists() and (tmp_path / "facemask" / "maksssksksss2.jpg").is_symlink()
    classes = {int(l.split()[0]) for p in (tmp_path / "facemask").glob("*.txt")
               for l in p.read_text().splitlines() if l.strip()}
    assert classes == {0, 1, 2}
    assert cfg.read_text() == require(REFDATA / "oracle" / "train_curve" /
                                      "yolov4-tiny-facemask3-320.cfg").read_text()
    assert conv.stat().st_size == tool.CONV29_BYTES
