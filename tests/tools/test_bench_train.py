"""tools/bench_train.py: parsing both implementations' iteration lines, the inputs it prepares,
and a real side-by-side run (darknet-py on the shapes set beside a stand-in Darknet that prints
Darknet's iteration lines until it is stopped)."""
import importlib.util
import io
import os
import re
import stat
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest

from conftest import REPO
from train_fixtures import make_shapes_workdir

SCRIPT = REPO / "tools" / "bench_train.py"

DARKNET_LINES = """\
 1: 206.821686, 206.821686 avg loss, 0.000000 rate, 20.662637 seconds, 16 images, -1.000000 hours left
v3 (iou loss, Normalizer: (iou: 0.07, obj: 1.00, cls: 1.00) Region 30 Avg (IOU: 0.322877), count: 6
 2: 207.983887, 206.937912 avg loss, 0.000000 rate, 14.572328 seconds, 32 images, 0.168473 hours left
 3: 207.983887, -nan avg loss, 0.000000 rate, 14.0 seconds, 48 images, 0.168473 hours left
 4: 207.983887, 206.937912 avg loss, 0.000001 rate, 16.0 seconds, 64 images, 0.168473 hours left
"""


def _tool():
    if "bench_train" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_train", SCRIPT)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bench_train"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["bench_train"]


def test_parse_iterations_drops_warmup_and_reads_images_per_iteration():
    run = _tool().parse_iterations(DARKNET_LINES, warmup=1)
    assert run.seconds == [14.572328, 14.0, 16.0]
    assert run.images_per_iteration == 16
    assert run.median_s == pytest.approx(14.572328)
    assert run.images_per_s == pytest.approx(16 / 14.572328)
    with pytest.raises(ValueError, match="only 4 iteration lines"):
        _tool().parse_iterations(DARKNET_LINES, warmup=4)


def test_prepared_inputs_change_only_schedule_mosaic_and_backup(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)        # relative paths of the .data resolve against it
    cfg = tmp_path / "a.cfg"
    cfg.write_text("[net]\nbatch=16\nmax_batches = 400\nmosaic=1\nburn_in=100\n")
    data = tmp_path / "a.data"
    data.write_text("classes=3\ntrain=train.txt\nbackup=/somewhere\nsaveweights=100\n")
    out = tmp_path / "out"
    out.mkdir()
    new_data, new_cfg = _tool().prepared_inputs(data, cfg, 12, 0, out, "x")
    assert new_cfg == out / "x" / "x.cfg"
    assert new_cfg.read_text() == "[net]\nbatch=16\nmax_batches=12\nmosaic=0\nburn_in=100\n"
    assert new_data.read_text() == (f"classes=3\ntrain={tmp_path / 'train.txt'}\n"
                                    f"backup={out / 'x' / 'backup'}\n")
    assert (out / "x" / "backup").is_dir()
    assert cfg.read_text().count("400") == 1          # the user's files are untouched


def test_side_by_side_run_prints_ratios_to_darknet(tmp_path, monkeypatch):
    work = make_shapes_workdir(tmp_path / "shapes", n_images=8, size=64, batch=4,
                               max_batches=4, burn_in=1)
    fake = tmp_path / "darknet"
    # the stand-in must be stopped by the tool (it never ends by itself) and gets the pinned
    # Darknet command line
    fake.write_text("#!/bin/sh\n"
                    "case \"$1 $2\" in 'detector train') ;; *) exit 3;; esac\n"
                    "i=1\nwhile :; do\n"
                    "  echo \" $i: 9.0, 9.0 avg loss, 0.000000 rate, 8.000000 seconds, "
                    "$((i*4)) images, 1.0 hours left\"\n"
                    "  i=$((i+1)); sleep 0.05\ndone\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.chdir(work)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = _tool().main(["--data", str(work / "obj.data"), "--cfg", str(work / "small.cfg"),
                           "--weights", str(work / "yolov4-tiny.conv.29"), "--darknet", str(fake),
                           "--variants", "fp32", "--iterations", "4", "--warmup", "1",
                           "--workers", "0", "--keep", str(tmp_path / "kept")])
    assert rc == 0, err.getvalue()
    table = out.getvalue()
    assert "small.cfg, 4 images per iteration" in table
    dn = re.search(r"\| Darknet \(.*\) \| (\d+) \| 8\.00 \| 0\.50 \| 1\.00x \|", table)
    assert dn and int(dn.group(1)) >= 1
    py = re.search(r"\| darknet-py fp32 \| 3 \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)x \|", table)
    assert py, table
    assert float(py.group(3)) == pytest.approx(float(py.group(2)) / 0.5, rel=0.01)
    kept = tmp_path / "kept"
    assert "max_batches=4" in (kept / "darknet-py-fp32" / "darknet-py-fp32.cfg").read_text()
    assert (kept / "darknet-py-fp32" / "backup" / "darknet-py-fp32_final.weights").is_file()
    assert (kept / "darknet" / "train.log").read_text().startswith(" 1: 9.0, 9.0 avg loss")
    assert not any(p.name.startswith("backup") for p in work.iterdir())


def test_one_line_errors(tmp_path):
    err = io.StringIO()
    with redirect_stderr(err), pytest.raises(SystemExit) as e:
        _tool().main(["--data", str(tmp_path / "none.data"), "--cfg", str(tmp_path / "a.cfg"),
                      "--weights", str(tmp_path / "w")])
    assert e.value.code == 2
    assert "none.data: no such file" in err.getvalue()
