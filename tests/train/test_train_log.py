"""Training logs: the per-iteration CSV, -map rows and plots, honest ETA / next mAP, chart."""
from __future__ import annotations

import csv
import os
import re
import sys

import cv2
import pytest

from darknet_py.errors import UsageError
from darknet_py.train.chart import TrainChart, TrainDisplay
from darknet_py.train.log import (CSV_COLUMNS, IterationTimer, LossAverage, TrainLog, TrainLogs,
                                  iteration_line, summary_writer_class)

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


def test_avg_loss_is_darknets():
    a = LossAverage()
    # the first loss starts the average, then 0.9 / 0.1 (Darknet applies the update to the
    # first loss too: 10 * 0.9 + 10 * 0.1)
    assert a.add(10.0) == 10.0 * 0.9 + 10.0 * 0.1
    assert a.add(20.0) == pytest.approx(11.0)
    assert a.add(0.0) == pytest.approx(9.9)
    a.value = float("nan")                  # a NaN average restarts from the next loss
    assert a.add(4.0) == pytest.approx(4.0)


def test_iteration_line_is_darknets_printf():
    # printf("\n %d: %f, %f avg loss, %f rate, %lf seconds, %d images, %f hours left\n", ...)
    assert iteration_line(12, 3.5, 4.25, 0.00261, 1.5, 768, 0.125) == (
        "\n 12: 3.500000, 4.250000 avg loss, 0.002610 rate, 1.500000 seconds, 768 images, "
        "0.125000 hours left")


def test_logs_of_a_resumed_run_drop_what_is_trained_again(tmp_path):
    first = TrainLogs.open(str(tmp_path), "c", 0)
    for i in (1, 2, 3):
        first.iteration(i, 1.0, 1.0, 0.001, 10.0, 0.1)
    first.map(3, 0.5, 0.5)
    first.close()
    resumed = TrainLogs.open(str(tmp_path), "c", 2)   # from a checkpoint of iteration 2
    resumed.iteration(3, 2.0, 2.0, 0.001, 10.0, 0.1)
    resumed.close()
    rows = list(csv.reader(open(tmp_path / "c_log.csv")))
    assert [(r[0], r[1], r[2]) for r in rows[1:]] == [
        ("iter", "1", "1.000000"), ("iter", "2", "1.000000"), ("iter", "3", "2.000000")]
    assert TrainLogs.open(str(tmp_path / "nowhere"), "c", 0, main_process=False).logs == []


class _Streams:
    def __init__(self):
        self.calls = []

    def update(self, paths, *numbers):
        self.calls.append(("update", [os.path.basename(p) for p in paths], numbers))

    def status(self, *numbers):
        self.calls.append(("status", numbers))

    def close(self):
        self.calls.append(("close",))


def test_display_draws_the_chart_and_streams_it(tmp_path):
    chart = TrainChart(10)
    chart.add_loss(1, 2.0)
    streams = _Streams()
    d = TrainDisplay(chart, str(tmp_path), "c", draw=True, streams=streams)
    d.show(1, 2.5, 2.0, 0.001, -1.0, -1.0, 0.5, chart=False)     # the numbers only
    assert not (tmp_path / "chart.png").exists()
    d.show(1, 2.5, 2.0, 0.001, -1.0, -1.0, 0.5)
    assert cv2.imread(str(tmp_path / "chart_c.png")) is not None
    numbers = (1, 10, 2.5, 2.0, 0.001, -1.0, -1.0, 0.5)
    assert streams.calls == [("status", numbers),
                             ("update", ["chart.png", "chart_c.png"], numbers)]
    d.close()
    assert streams.calls[-1] == ("close",)
    # -chart off (no chart files): the page still gets the numbers
    off = TrainDisplay(TrainChart(10), str(tmp_path / "none"), "c", draw=False,
                       streams=_Streams())
    off.show(2, 1.0, 1.0, 0.001, 0.3, 0.3, 0.1)
    assert off.streams.calls == [("status", (2, 10, 1.0, 1.0, 0.001, 0.3, 0.3, 0.1))]


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
