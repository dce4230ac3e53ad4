"""Signals sent the way `timeout`, SLURM and Kubernetes send them: to the whole process group.

The DataLoader workers get the signal too; they must ignore it (the main process shuts them
down), and the run must still save a complete ``_last.weights`` and exit 0 without a traceback.
"""
import os
import signal
import subprocess
import sys

import pytest

from darknet_py.model.network import Network

from train_fixtures import make_facemask_workdir


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return make_facemask_workdir(tmp_path_factory.mktemp("signals"),
                                 extra_data="savelast=1000\nsaveweights=1000\n")


def _train_until_first_iteration(work, workers):
    p = subprocess.Popen([sys.executable, "-m", "darknet_py.cli", "detector", "train", "obj.data",
                          "small.cfg", "yolov4-tiny.conv.29", "-dont_show", "-max_batches", "500",
                          "-workers", str(workers), "-clear"], cwd=work, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    out = ""
    while " 1: " not in out:
        line = p.stdout.readline()
        if not line:
            p.kill()
            pytest.fail("training ended before iteration 1: " + p.stderr.read()[-2000:])
        out += line
    return p


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_group_signal_with_workers_saves_last_and_exits_0(work, sig):
    last = work / "backup" / "small_last.weights"
    if last.exists():
        last.unlink()
    p = _train_until_first_iteration(work, workers=2)
    os.killpg(p.pid, sig)                      # main process and both workers
    try:
        rest, err = p.communicate(timeout=240)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "last weights saved" in rest
    net = Network.from_cfg(work / "small.cfg")
    rep = net.load_weights(last)
    assert rep.bytes_left == 0 and net.seen > 0
    # the workers were shut down by the main process: nothing of the group is left
    with pytest.raises(ProcessLookupError):
        os.killpg(p.pid, 0)


@pytest.fixture(scope="module")
def map_work(tmp_path_factory):
    """One iteration, then -map on a valid list of 4000 entries: an evaluation that runs for
    minutes, as on a big valid set or with an untrained model's many detections."""
    root = make_facemask_workdir(tmp_path_factory.mktemp("signals_map"), n_train=4, n_valid=2,
                                 size=64, batch=2, max_batches=1,
                                 extra_data="savelast=1000\nsaveweights=1000\n")
    images = (root / "valid.txt").read_text().split()
    (root / "valid.txt").write_text("".join(images[i % len(images)] + "\n"
                                            for i in range(4000)))
    return root


def _start_map_run(work):
    p = subprocess.Popen([sys.executable, "-m", "darknet_py.cli", "detector", "train",
                          "obj.data", "small.cfg", "yolov4-tiny.conv.29", "-dont_show", "-map",
                          "-workers", "0", "-clear"], cwd=work, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    out = ""
    while "calculation mAP" not in out:
        line = p.stdout.readline()
        if not line:
            p.kill()
            pytest.fail("training ended before the mAP calculation: " + p.stderr.read()[-2000:])
        out += line
    return p, out


@pytest.mark.parametrize("signals", [1, 2])
def test_signal_during_training_map_aborts_it_and_saves_last(map_work, signals):
    """SIGTERM while -map evaluates: the evaluation stops (it does not run to its end) and
    _last.weights is saved whole, exit 0; a second SIGTERM right after still saves it (it used
    to exit without _last)."""
    last = map_work / "backup" / "small_last.weights"
    if last.exists():
        last.unlink()
    p, out = _start_map_run(map_work)
    for _ in range(signals):
        p.send_signal(signal.SIGTERM)
    try:
        rest, err = p.communicate(timeout=600)
    finally:
        if p.poll() is None:
            p.kill()
    out += rest
    assert p.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "mean_average_precision" not in out and "detections_count" not in out, out[-2000:]
    assert "last weights saved" in out
    net = Network.from_cfg(map_work / "small.cfg")
    rep = net.load_weights(last)
    assert rep.bytes_left == 0 and net.seen > 0


def test_second_signal_during_the_save_waits_for_it(map_work, tmp_path):
    """A signal that arrives while _last.weights is being written does not interrupt the write:
    it is sent from inside the save (the real handler runs there), the file comes out whole."""
    last = map_work / "backup" / "small_last.weights"
    if last.exists():
        last.unlink()
    hook = tmp_path / "sitecustomize.py"
    hook.write_text(
        "import os, signal\n"
        "from darknet_py.model.network import Network\n"
        "real = Network.save_weights\n"
        "def save_weights(self, path, *a, **kw):\n"
        "    if str(path).endswith('_last.weights'):\n"
        "        os.kill(os.getpid(), signal.SIGTERM)   # the second signal, mid-save\n"
        "    return real(self, path, *a, **kw)\n"
        "Network.save_weights = save_weights\n")
    p = subprocess.Popen([sys.executable, "-c",
                          f"import sys; sys.path.insert(0, {str(tmp_path)!r}); "
                          "import sitecustomize; from darknet_py.cli import main; "
                          "sys.argv[0] = 'darknet-py'; main()",
                          "detector", "train", "obj.data", "small.cfg", "yolov4-tiny.conv.29",
                          "-dont_show", "-map", "-workers", "0", "-clear"], cwd=map_work,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = ""
    while "calculation mAP" not in out:
        line = p.stdout.readline()
        if not line:
            p.kill()
            pytest.fail("training ended before the mAP calculation: " + p.stderr.read()[-2000:])
        out += line
    p.send_signal(signal.SIGTERM)
    try:
        rest, err = p.communicate(timeout=600)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err[-3000:]
    assert "saving the weights, then stopping" in err and "Traceback" not in err, err[-3000:]
    assert "last weights saved" in rest
    net = Network.from_cfg(map_work / "small.cfg")
    assert net.load_weights(last).bytes_left == 0 and net.seen > 0


# ------------------------------------------------------------------ StopSignals alone
def _signals(world=1):
    from darknet_py.train.signals import StopSignals
    return StopSignals(world)


def test_first_signal_asks_to_stop_and_second_stops_now(capfd):
    s = _signals()
    s.handle(signal.SIGTERM)
    assert s.requested
    assert capfd.readouterr().err == (f"\n signal {int(signal.SIGTERM)}: stopping after this "
                                      "mini-batch (or the mAP calculation), then saving "
                                      "_last.weights\n")
    with pytest.raises(KeyboardInterrupt):
        s.handle(signal.SIGINT)


def test_second_signal_during_an_update_is_raised_when_it_is_whole(capfd):
    s = _signals()
    s.request()
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with s.updating():
            s.handle(signal.SIGINT)          # held: the update goes on
            steps.append("updated")
    assert steps == ["updated"]
    assert capfd.readouterr().err == (f"\n signal {int(signal.SIGINT)}: updating the weights, "
                                      "then stopping\n")


def test_second_signal_during_a_save_lets_it_finish_and_raises_nothing(capfd):
    s = _signals()
    s.request()
    with s.saving():
        s.handle(signal.SIGTERM)
    assert capfd.readouterr().err.endswith("saving the weights, then stopping\n")
    with s.updating():                       # nothing pending afterwards either
        pass


def test_under_torchrun_a_second_signal_only_repeats_the_first():
    s = _signals(world=2)
    s.handle(signal.SIGTERM)
    s.handle(signal.SIGTERM)                 # no KeyboardInterrupt: the launcher kills later
    assert s.requested


def test_install_and_restore_the_handlers():
    before = signal.getsignal(signal.SIGTERM)
    s = _signals()
    s.install()
    try:
        assert signal.getsignal(signal.SIGTERM) == s.handle
        assert signal.getsignal(signal.SIGINT) == s.handle
    finally:
        s.restore()
    assert signal.getsignal(signal.SIGTERM) == before
