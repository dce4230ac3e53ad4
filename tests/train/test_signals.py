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
