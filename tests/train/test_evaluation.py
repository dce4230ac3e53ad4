"""``-map`` during training (darknet_py.train.evaluation): when Darknet's ``train_detector``
evaluates, and the best-mAP rule, without training anything."""
import io

import pytest

from darknet_py.errors import DataError
from darknet_py.train.evaluation import BestMap, MapSchedule, TrainEvaluation, next_map_iteration


def _darknet_evaluations(start, max_batches, map_epochs, train_images, imgs, burn_in):
    """The iterations after which ``train_detector`` calls ``validate_detector_map``: its loop
    written out (``calc_map_for_each`` in C int arithmetic, ``fmax`` with 100 and burn_in, the
    ``iteration == net.max_batches`` clause, ``iter_map = iteration``)."""
    iter_map, done = start, []
    for iteration in range(start + 1, max_batches + 1):
        each = max((map_epochs * train_images) // imgs, 100)
        next_calc = max(iter_map + each, burn_in)
        if iteration >= next_calc or iteration == max_batches:
            iter_map = iteration
            done.append(iteration)
    return done


def _scheduled(start, max_batches, map_epochs, train_images, imgs, burn_in):
    s = MapSchedule(map_epochs, train_images, imgs, burn_in, max_batches, last=start)
    done = []
    for iteration in range(start + 1, max_batches + 1):
        if s.due(iteration):
            s.evaluated(iteration)
            done.append(iteration)
    return done


@pytest.mark.parametrize("start,max_batches,map_epochs,train_images,imgs,burn_in,expected", [
    # 4 epochs of 1000 images at 64 a step: 62 iterations, raised to 100; none before burn_in
    (0, 1350, 4, 1000, 64, 1000, [1000, 1100, 1200, 1300, 1350]),
    # 4 epochs of 10000 images at 64: every 625 (4 * 10000 / 64 = 625 exactly)
    (0, 2400, 4, 10000, 64, 1000, [1000, 1625, 2250, 2400]),
    # integer division: 4 * 6500 / 64 = 406.25 -> 406
    (0, 1300, 4, 6500, 64, 0, [406, 812, 1218, 1300]),
    # -map_epochs 1 with 12800 images: every 200
    (0, 700, 1, 12800, 64, 100, [200, 400, 600, 700]),
    # a resumed run counts from its start iteration, not from 0
    (1500, 2500, 4, 10000, 64, 1000, [2125, 2500]),
    # a resumed run still inside burn_in waits for it
    (100, 1200, 4, 1000, 64, 1000, [1000, 1100, 1200]),
    # a short run evaluates once, at its last iteration
    (0, 5, 4, 8, 2, 1, [5]),
])
def test_map_schedule_is_darknets_rule(start, max_batches, map_epochs, train_images, imgs,
                                       burn_in, expected):
    assert _darknet_evaluations(start, max_batches, map_epochs, train_images, imgs,
                                burn_in) == expected
    assert _scheduled(start, max_batches, map_epochs, train_images, imgs, burn_in) == expected


def test_next_map_iteration_and_the_announced_one():
    assert next_map_iteration(0, 4, 10000, 64, 1000) == 1000
    assert next_map_iteration(1000, 4, 10000, 64, 1000) == 1625
    assert next_map_iteration(1000, 4, 1000, 64, 0) == 1100
    s = MapSchedule(4, 10000, 64, 1000, max_batches=1200, last=0)
    assert (s.next_at, s.announced) == (1000, 1000)
    s.evaluated(1000)
    # Darknet would print 1625; the run ends at 1200 and evaluates there
    assert (s.next_at, s.announced) == (1625, 1200)
    assert not s.due(1199) and s.due(1200)


def test_best_map_ties_are_a_new_best():
    b = BestMap()
    assert (b.last, b.best) == (-1.0, -1.0)
    assert b.add(0.0)                    # the first result is a best, even 0
    assert b.add(0.5)
    assert not b.add(0.4)
    assert (b.last, b.best) == (0.4, 0.5)
    assert b.add(0.5)                    # Darknet's >=: the newer weights of an equal mAP
    assert (b.last, b.best) == (0.5, 0.5)


def test_plots_that_cannot_be_written_do_not_stop_training(tmp_path, monkeypatch):
    import darknet_py.train.evaluation as evaluation
    said = []

    def refuse(result, folder):
        raise DataError("cannot write the plots", file=folder)
    monkeypatch.setattr(evaluation, "write_map_plots", refuse)
    ev = TrainEvaluation(net=None, data_cfg=None, train_list="train.txt", names=["a"],
                         classes=1, thresh=0.25, iou_thresh=0.5,
                         plots_dir=str(tmp_path / "plots"), out=io.StringIO(), log=said.append)
    ev.write_plots()
    assert said == [f" plots not written: {tmp_path / 'plots'}: cannot write the plots"]
