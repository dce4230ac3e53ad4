"""`detector train` as a user runs it: checkpoints, resume, Ctrl-C, SIGKILL, bad input."""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from darknet_py.model.network import Network

from train_fixtures import make_facemask_workdir, run_cli

EXPECTED_BYTES = None


def weights_are_whole(path, cfg):
    net = Network.from_cfg(cfg)
    rep = net.load_weights(path)       # raises on a truncated file
    return rep.bytes_left == 0


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return make_facemask_workdir(tmp_path_factory.mktemp("train"),
                                 extra_data="savelast=1\nsaveweights=2\n")


def iteration_numbers(stdout):
    return [int(m) for m in re.findall(r"(?m)^ (\d+): [-\d.naif]+, ", stdout)]


def test_train_checkpoints_and_resume(work):
    r = run_cli("detector", "train", "obj.data", "small.cfg", "yolov4-tiny.conv.29", "-dont_show",
                "-max_batches", 2, "-workers", 0, "-seed", 3, cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    assert iteration_numbers(r.stdout) == [1, 2]
    backup = work / "backup"
    for name in ("small_2.weights", "small_last.weights", "small_final.weights"):
        assert (backup / name).exists(), name
        assert weights_are_whole(backup / name, work / "small.cfg")
    net = Network.from_cfg(work / "small.cfg")
    net.load_weights(backup / "small_final.weights")
    assert net.seen == 2 * 2                      # iterations x batch, as Darknet saves it
    line = [l for l in r.stdout.splitlines() if l.startswith(" 2: ")][0]
    assert re.match(r"^ 2: [\d.]+, [\d.]+ avg loss, [\d.]+ rate, [\d.]+ seconds, 4 images, "
                    r"[\d.]+ hours left$", line)
    # resume: the iteration count continues from seen
    r = run_cli("detector", "train", "obj.data", "small.cfg", backup / "small_last.weights",
                "-dont_show", "-max_batches", 4, "-workers", 0, cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    assert iteration_numbers(r.stdout) == [3, 4]
    # -clear restarts at 1
    r = run_cli("detector", "train", "obj.data", "small.cfg", backup / "small_last.weights",
                "-dont_show", "-max_batches", 1, "-workers", 0, "-clear", cwd=work)
    assert r.returncode == 0 and iteration_numbers(r.stdout) == [1]
    assert (work / "chart.png").exists()


def test_sigint_saves_last_and_exits_0(work, tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "darknet_py.cli", "detector", "train", "obj.data",
                          "small.cfg", "yolov4-tiny.conv.29", "-dont_show", "-max_batches", "500",
                          "-workers", "0", "-clear"], cwd=work, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    out = ""
    while " 1: " not in out:
        line = p.stdout.readline()
        assert line, p.stderr.read()[-2000:]
        out += line
    p.send_signal(signal.SIGINT)
    rest, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    assert "last weights saved" in rest
    assert weights_are_whole(work / "backup" / "small_last.weights", work / "small.cfg")


def test_sigkill_never_leaves_a_corrupt_weights_file(work):
    rng = np.random.default_rng(0)
    trials = 3
    for trial in range(trials):
        p = subprocess.Popen([sys.executable, "-m", "darknet_py.cli", "detector", "train",
                              "obj.data", "small.cfg", "yolov4-tiny.conv.29", "-dont_show",
                              "-max_batches", "500", "-workers", "0", "-clear"], cwd=work,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        lines = 0
        target = int(rng.integers(1, 4))
        while lines < target:
            line = p.stdout.readline()
            if not line:
                break
            lines += line.startswith(" ") and ": " in line and "avg loss" in line
        time.sleep(float(rng.uniform(0, 0.5)))
        p.kill()
        p.wait()
        for f in (work / "backup").glob("*.weights"):
            assert weights_are_whole(f, work / "small.cfg"), f"{f} corrupt after kill {trial}"


def test_bad_inputs_are_one_line_errors(work, tmp_path):
    (tmp_path / "bad.data").write_text("classes=5\ntrain=" + str(work / "train.txt") + "\n")
    r = run_cli("detector", "train", tmp_path / "bad.data", work / "small.cfg", cwd=tmp_path)
    assert r.returncode == 1 and "classes=5" in r.stderr and "classes=3" in r.stderr
    assert "Traceback" not in r.stderr
    (tmp_path / "nolist.data").write_text("classes=3\ntrain=missing.txt\n")
    r = run_cli("detector", "train", tmp_path / "nolist.data", work / "small.cfg", cwd=tmp_path)
    assert r.returncode == 1 and "missing.txt" in r.stderr and "Traceback" not in r.stderr
    bad_cfg = tmp_path / "bad.cfg"
    bad_cfg.write_text((work / "small.cfg").read_text().replace("filters=24", "filters=25", 1))
    r = run_cli("detector", "train", work / "obj.data", bad_cfg, cwd=work)
    assert r.returncode == 1 and "filters=24" in r.stderr and "Traceback" not in r.stderr


def test_ddp_two_gloo_processes_on_cpu(work):
    """DDP with 2 processes (gloo) sharing the cfg's global batch; rank 0 logs/saves."""
    out = work / "ddp_backup"
    data = work / "ddp.data"
    data.write_text((work / "obj.data").read_text().replace("backup=backup", f"backup={out}"))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", "2", "-m", "darknet_py.cli", "detector", "train",
                        str(data), "small.cfg", "yolov4-tiny.conv.29", "-dont_show",
                        "-max_batches", "2", "-workers", "0", "-seed", "5"],
                       cwd=work, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert iteration_numbers(r.stdout) == [1, 2]            # printed once (rank 0)
    assert re.search(r"(?m)^ 2: .* 4 images, ", r.stdout)   # global batch 2 x 2 its
    assert r.stdout.count("small_final.weights") == 1                     # saved by rank 0 only
    net = Network.from_cfg(work / "small.cfg")
    net.load_weights(out / "small_final.weights")
    assert net.seen == 4


def test_a_run_shorter_than_burn_in_says_so_once(work, tmp_path):
    """max_batches before burn_in ends: one warning with the highest rate the run reaches."""
    cfg = tmp_path / "long_burn_in.cfg"
    cfg.write_text(re.sub(r"(?m)^burn_in=.*$", "burn_in=1000", (work / "small.cfg").read_text()))
    r = run_cli("detector", "train", "obj.data", cfg, "yolov4-tiny.conv.29", "-dont_show",
                "-max_batches", 1, "-workers", 0, "-clear", cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [l for l in r.stderr.splitlines() if "ends before burn_in=1000" in l]
    assert len(lines) == 1, r.stderr[-2000:]
    assert "max_batches=1 ends before burn_in=1000 does: the learning rate stays below 1e-15" \
        in lines[0], lines[0]
    r = run_cli("detector", "train", "obj.data", "small.cfg", "yolov4-tiny.conv.29", "-dont_show",
                "-max_batches", 1, "-workers", 0, "-clear", cwd=work)
    assert r.returncode == 0 and "ends before burn_in" not in r.stderr
