"""``detector train`` on ``yolov3-tiny_occlusion_track.cfg`` (``[crnn]``, ``track=1``): the
batch arithmetic of Darknet's tracking training, the sequence loader, and gradients that reach
every parameter Darknet updates, the recurrent ones included."""
import io
import math
import os
import re

import pytest

from darknet_py.layers.crnn import CrnnLayer
from darknet_py.model.network import Network
from darknet_py.train.trainer import TrainOptions, Trainer

from train_fixtures import make_track_workdir, run_cli


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    # 2 sequences of 4 frames per forward pass, 2 forward passes per iteration
    return make_track_workdir(tmp_path_factory.mktemp("track"), n_images=16, size=64, batch=4,
                              subdivisions=2, time_steps=4)


def _trainer(work, cfg, **kw):
    opts = dict(data="obj.data", cfg=cfg, workers=0, seed=1, chart=False, nogpu=True,
                bf16=False)
    opts.update(kw)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        trainer = Trainer(TrainOptions(**opts), out=io.StringIO())
        trainer.setup()
    finally:
        os.chdir(cwd)
    return trainer


def test_detector_train_cli(work):
    r = run_cli("detector", "train", "obj.data", "small.cfg", "-dont_show", "-max_batches", 2,
                "-workers", 0, "-seed", 2, cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    # Darknet's line: net.batch = 4/2 * 4 = 8 images per forward pass, 2 sequences
    assert " Tracking! batch = 8, subdiv = 2, time_steps = 4, mini_batch = 2 " in r.stdout
    lines = re.findall(r"(?m)^ (\d+): (\S+), (\S+) avg loss, .* (\d+) images, ", r.stdout)
    assert [(int(i), int(n)) for i, _, _, n in lines] == [(1, 16), (2, 32)]
    assert all(math.isfinite(float(loss)) for _, loss, _, _ in lines)
    net = Network.from_cfg(work / "small.cfg")
    net.load_weights(work / "backup" / "small_final.weights")
    assert net.seen == 32                # iterations x net.batch x subdivisions, as Darknet


def test_every_updated_parameter_gets_a_gradient(work):
    trainer = _trainer(work, "small.cfg", max_batches=1)
    try:
        batches = []
        next_minibatch = trainer.source.next_minibatch

        def record():
            x, truth = next_minibatch()
            batches.append(x.shape)
            return x, truth
        trainer.source.next_minibatch = record
        loss = trainer.train_iteration()
    finally:
        trainer.source.close()
    assert math.isfinite(loss) and trainer.iteration == 1
    assert batches == [(8, 3, 64, 64)] * 2
    crnn = [l for l in trainer.net.layers if isinstance(l, CrnnLayer)]
    assert len(crnn) == 2
    updated = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    # the recurrent layers' three convolutions are trained like any [convolutional]
    for layer in crnn:
        assert {id(p) for p in layer.parameters()} <= updated
    none = []
    for group in trainer.optimizer.param_groups:
        assert not group["train_only_bn"] and not group["dont_update"]
        for p in group["params"]:
            if p.grad is None or not bool((p.grad != 0).any()):
                none.append((group["layer"], tuple(p.shape)))
    assert not none, f"parameters without a gradient (layer, shape): {none}"


def test_the_cfgs_own_batch_is_accepted(work):
    """track.cfg as written: batch=8 subdivisions=4 time_steps=20 at 416x416."""
    trainer = _trainer(work, "track.cfg")
    try:
        assert trainer.images_per_iter == 160
        x, truth = trainer.source.next_minibatch()
        assert x.shape == (40, 3, 416, 416) and truth.shape[0] == 40
    finally:
        trainer.source.close()


def test_sequences_that_straddle_forward_passes_are_one_line_errors(work):
    text = (work / "small.cfg").read_text().replace("augment_speed=3",
                                                    "augment_speed=3\nsequential_subdivisions=3")
    text = re.sub(r"(?m)^subdivisions=2$", "subdivisions=4", text)
    (work / "straddle.cfg").write_text(text)
    r = run_cli("detector", "train", "obj.data", "straddle.cfg", "-dont_show", "-max_batches", 1,
                "-workers", 0, cwd=work)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert re.search(r"straddle\.cfg:1: track=1: sequential_subdivisions=3 does not divide "
                     r"subdivisions=4", r.stderr), r.stderr
