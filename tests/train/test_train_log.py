"""Training logs: the per-iteration CSV, -map rows and plots, honest ETA / next mAP, chart."""
from __future__ import annotations

import csv
import os
import re
import sys

import cv2
import pytest

from darknet_py.errors import UsageError
from darknet_py.train.chart import TrainChart
from darknet_py.train.log import CSV_COLUMNS, IterationTimer, TrainLog, summary_writer_class

from train_fixtures import make_facemask_workdir, run_cli


def test_iteration_timer_reaches_zero_and_forgets_a_slow_start():
    t = IterationTimer(alpha=0.1)
    t.add(100.0)                      # a slow first iteration (warm-up)
    for _ in range(90):
        t.add(1.0)
    assert t.seconds == pytest.approx(1.0, abs=0.01)
    assert t.hours_left(10, 20) == pytest.approx(10 * t.seconds / 3600)
    assert t.hours_left(20, 20) == 0.0


def test_log_csv_is_flushed_and_resumed_without_a_second_header(tmp_path):
    p = tmp_path / "x_log.csv"
    log = TrainLog(str(p))
    log.iteration(1, 5.0, 5.0, 0.001, 10.0, 0.2)
    rows = list(csv.reader(open(p)))            # read while still open: already on disk
    assert rows[0] == list(CSV_COLUMNS) and rows[1][:2] == ["iter", "1"]
    log.close()
    log = TrainLog(str(p))
    log.map(2, 0.5, 0.5)
    log.close()
    rows = list(csv.reader(open(p)))
    assert [r[0] for r in rows] == ["kind", "iter", "map"]


def test_tensorboard_missing_is_a_one_line_usage_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(UsageError, match="pip install tensorboard"):
        summary_writer_class()


def test_chart_loss_axis_grows_above_max_chart_loss():
    c = TrainChart(100, 20.0)
    c.add_loss(1, 5.0)
    assert c.y_max() == 20.0
    c.add_loss(2, 300.0)
    assert 300.0 < c.y_max() <= 400.0
    # the 300 dot is drawn below the top edge, not clipped onto it
    img = c.render()
    blue = (img[:, :, 0] > 200) & (img[:, :, 1] < 80) & (img[:, :, 2] < 80)
    ys = [y for y, x in zip(*blue.nonzero()) if x > 60 and y < 900]
    assert ys and min(ys) > 100


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = make_facemask_workdir(tmp_path_factory.mktemp("trainlog"), max_batches=3)
    r = run_cli("detector", "train", "obj.data", "small.cfg", "yolov4-tiny.conv.29", "-map",
                "-max_batches", 3, "-workers", 0, "-seed", 1, "-tensorboard", "tb", cwd=work,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 0, r.stderr[-3000:]
    return work, r.stdout


def test_log_csv_rows_of_a_run(trained):
    work, out = trained
    rows = list(csv.DictReader(open(work / "backup" / "small_log.csv")))
    iters = [r for r in rows if r["kind"] == "iter"]
    maps = [r for r in rows if r["kind"] == "map"]
    assert [int(r["iteration"]) for r in iters] == [1, 2, 3]
    printed = re.findall(r"(?m)^ (\d+): ([\d.]+), ([\d.]+) avg loss, [\d.]+ rate", out)
    assert [(r["iteration"], float(r["loss"]), float(r["avg_loss"])) for r in iters] == [
        (i, pytest.approx(float(l), abs=1e-6), pytest.approx(float(a), abs=1e-6))
        for i, l, a in printed]
    assert all(float(r["images_per_s"]) > 0 and float(r["lr"]) >= 0 for r in iters)
    # -map evaluates at the last iteration; its row carries the printed mAP
    mean = float(re.search(r"mean_average_precision \(mAP@0.50\) = ([\d.]+)", out).group(1))
    assert [int(r["iteration"]) for r in maps] == [3]
    assert float(maps[0]["map"]) == pytest.approx(mean, abs=1e-6)


def test_short_run_tells_the_truth_and_writes_plots(trained):
    work, out = trained
    assert re.findall(r"next mAP calculation at (\d+) iterations", out) == ["3"] * 3
    last = [l for l in out.splitlines() if l.startswith(" 3: ")][0]
    assert last.endswith(" 0.000000 hours left")
    for name in ("pr_curve.png", "f1_curve.png", "confusion_matrix.png"):
        assert cv2.imread(str(work / "backup" / "plots" / name)) is not None, name
    assert (work / "backup" / "plots" / "summary.json").exists()
    assert any(p.name.startswith("events.out.tfevents") for p in (work / "tb").iterdir())
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(work / "backup" / "chart.png").st_mode & 0o777 == 0o666 & ~mask
