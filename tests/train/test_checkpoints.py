"""Checkpoints of ``detector train`` (darknet_py.train.checkpoints) without a training run:
Darknet's file names and save rule, NaN weights never written, a killed run's temp files."""
import pytest
import torch

from darknet_py.errors import TrainingStopped
from darknet_py.formats.cfg import parse_cfg_text
from darknet_py.model.network import Network
from darknet_py.train.checkpoints import (CheckpointPolicy, CheckpointWriter, basecfg,
                                          remove_stale_temp_files)

CFG = """[net]
batch=2
width=16
height=16
channels=3

[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky

[convolutional]
filters=4
size=1
stride=1
activation=linear
"""


def _net():
    torch.manual_seed(0)
    return Network(parse_cfg_text(CFG), "t.cfg")


def test_file_names_are_darknets():
    p = CheckpointPolicy("backup", basecfg("cfg/yolov4-tiny-custom.cfg"), 1000, 100)
    assert p.base == "yolov4-tiny-custom"
    assert [p.path(s) for s in ("1000", "last", "best", "final", "ema")] == [
        "backup/yolov4-tiny-custom_1000.weights", "backup/yolov4-tiny-custom_last.weights",
        "backup/yolov4-tiny-custom_best.weights", "backup/yolov4-tiny-custom_final.weights",
        "backup/yolov4-tiny-custom_ema.weights"]


def test_cfg_base_name_is_darknets_basecfg():
    # after the last / (and \\), cut at the FIRST dot, as utils.c basecfg does
    assert basecfg("cfg/yolov4-tiny.cfg") == "yolov4-tiny"
    assert basecfg("/abs/dir.v2/my.model.cfg") == "my"
    assert basecfg("C:\\nets\\tiny.cfg") == "tiny"
    assert basecfg("noext") == "noext"


def _darknet_saves(start, end, save_after, save_last_after):
    """``train_detector``'s two save conditions, written out: (numbered, last) per iteration."""
    iter_save = iter_save_last = start
    numbered, last = [], []
    for i in range(start + 1, end + 1):
        if i >= iter_save + save_after or i % save_after == 0:
            iter_save = i
            numbered.append(i)
        if save_after > save_last_after and (i >= iter_save_last + save_last_after
                                             or (i % save_last_after == 0 and i > 1)):
            iter_save_last = i
            last.append(i)
    return numbered, last


@pytest.mark.parametrize("start,end,every,last_every,numbered,last", [
    # defaults of a short cfg: saveweights 1000, savelast 100
    (0, 2500, 1000, 100, [1000, 2000], list(range(100, 2501, 100))),
    # a resume at 1050 saves 2000 (a multiple) and then counts on from there
    (1050, 2300, 1000, 500, [2000], [1500, 2000]),
    # savelast >= saveweights: no _last at all (Darknet's condition)
    (0, 10, 2, 2, [2, 4, 6, 8, 10], []),
    # savelast=1: every iteration but the first (iteration % 1 == 0 needs iteration > 1, and
    # the first is 0 + 1 >= iter_save_last + 1)
    (0, 4, 2, 1, [2, 4], [1, 2, 3, 4]),
])
def test_save_rule_is_darknets(start, end, every, last_every, numbered, last):
    assert _darknet_saves(start, end, every, last_every) == (numbered, last)
    p = CheckpointPolicy("b", "c", every, last_every, iter_save=start, iter_save_last=start)
    got_n, got_l = [], []
    for i in range(start + 1, end + 1):
        if p.numbered_due(i):
            got_n.append(i)
        if p.last_due(i):
            got_l.append(i)
    assert (got_n, got_l) == (numbered, last)


class _Log(list):
    def __call__(self, text=""):
        self.append(text)


def test_writer_saves_seen_and_names_the_last_good_file(tmp_path):
    net, log = _net(), _Log()
    w = CheckpointWriter(CheckpointPolicy(str(tmp_path), "t", 2, 1), net, images_per_iter=8,
                         log=log)
    assert w.last_good_hint() == "no checkpoint was written yet"
    w.save_due(1)                         # savelast=1: _last only
    w.save_due(2)                         # both
    assert log == [f"Saving weights to {tmp_path}/t_last.weights",
                   f"Saving weights to {tmp_path}/t_2.weights",
                   f"Saving weights to {tmp_path}/t_last.weights"]
    saved = _net()
    saved.load_weights(tmp_path / "t_2.weights")
    assert saved.seen == 2 * 8                   # iteration x images per iteration
    assert w.last_good_hint() == f"the last good weights are {tmp_path}/t_last.weights"


def test_nan_weights_are_refused_and_the_previous_file_kept(tmp_path):
    net, log = _net(), _Log()
    w = CheckpointWriter(CheckpointPolicy(str(tmp_path), "t", 10, 1), net, 2, log=log)
    w.save_last(3)
    before = (tmp_path / "t_last.weights").read_bytes()
    with torch.no_grad():
        net.layers[1].weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(TrainingStopped) as e:
        w.save_last(4)
    assert str(e.value) == (f"the weights of layer 1 became NaN/inf at iteration 4; "
                            f"{tmp_path}/t_last.weights was not written; the last good weights "
                            f"are {tmp_path}/t_last.weights (lower learning_rate or check the "
                            "labels)")
    assert (tmp_path / "t_last.weights").read_bytes() == before


def test_writes_happen_inside_the_saving_guard_and_only_on_rank_0(tmp_path):
    import contextlib
    inside = []

    @contextlib.contextmanager
    def saving():
        inside.append("enter")
        yield
        inside.append("exit")
    net = _net()
    w = CheckpointWriter(CheckpointPolicy(str(tmp_path), "t", 10, 1), net, 2, log=_Log(),
                         saving=saving)
    w.save(str(tmp_path / "a.weights"), 1)
    assert inside == ["enter", "exit"] and (tmp_path / "a.weights").exists()
    other = CheckpointWriter(CheckpointPolicy(str(tmp_path), "t", 10, 1), net, 2, log=_Log(),
                             is_main=False, saving=saving)
    other.save(str(tmp_path / "b.weights"), 1)
    assert not (tmp_path / "b.weights").exists()
    assert other.last_good == str(tmp_path / "b.weights")     # what rank 0 wrote
    assert inside == ["enter", "exit"]


def test_stop_saves_last_and_says_how_to_resume(tmp_path):
    log = _Log()
    w = CheckpointWriter(CheckpointPolicy(str(tmp_path), "t", 10, 1), _net(), 2, log=log)
    w.save_on_stop(5)
    assert log == [f"Saving weights to {tmp_path}/t_last.weights",
                   "Interrupted: last weights saved; resume with the same command and "
                   f"{tmp_path}/t_last.weights"]


def test_only_the_temp_files_of_this_cfg_are_removed(tmp_path):
    names = [".t_last.weights.a1b2.tmp", ".t_best.weights.x.tmp", ".other_last.weights.a.tmp",
             "t_last.weights", ".t_last.weights"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    log = _Log()
    remove_stale_temp_files(str(tmp_path), "t", log)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".other_last.weights.a.tmp", ".t_last.weights", "t_last.weights"]
    assert sorted(log) == [
        f"removed {tmp_path}/.t_best.weights.x.tmp (a save interrupted by a crash)",
        f"removed {tmp_path}/.t_last.weights.a1b2.tmp (a save interrupted by a crash)"]
