"""darknet_py.devices: one device rule for every command and the API."""
import pytest
import torch

from darknet_py import devices
from darknet_py.devices import describe, select_device
from darknet_py.errors import UsageError


def fake_cuda(monkeypatch, count):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.delenv("LOCAL_RANK", raising=False)


def test_default_is_cuda_when_available_else_cpu(monkeypatch):
    fake_cuda(monkeypatch, 2)
    assert select_device() == torch.device("cuda", 0)
    assert select_device(device="cuda") == torch.device("cuda", 0)
    fake_cuda(monkeypatch, 0)
    assert select_device() == torch.device("cpu")
    assert select_device(device=None) == torch.device("cpu")


def test_gpus_and_i_choose_the_gpu(monkeypatch):
    fake_cuda(monkeypatch, 4)
    assert select_device(index=2) == torch.device("cuda", 2)
    assert select_device(gpus=[3]) == torch.device("cuda", 3)
    assert select_device(gpus=[1, 3], index=0) == torch.device("cuda", 1)   # -gpus wins
    assert select_device(gpus=[1, 3], local_rank=1) == torch.device("cuda", 3)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert select_device(gpus=[0, 2]) == torch.device("cuda", 2)
    assert select_device(device="cuda:3") == torch.device("cuda", 3)
    assert select_device(device=torch.device("cuda", 1)) == torch.device("cuda", 1)
    assert select_device(device=2) == torch.device("cuda", 2)


def test_cpu_spellings(monkeypatch):
    fake_cuda(monkeypatch, 1)
    assert select_device(index=-1) == torch.device("cpu")          # Darknet's -i -1
    assert select_device(gpus=[0], nogpu=True) == torch.device("cpu")
    assert select_device(device="cpu") == torch.device("cpu")
    assert select_device(device=-1) == torch.device("cpu")


@pytest.mark.parametrize("kw,needle", [
    (dict(gpus=[1]), "-gpus 1 names GPU 1 but only 1 GPU (0) visible"),
    (dict(index=5), "-i 5 names GPU 5 but only 1 GPU (0) visible"),
    (dict(device="cuda:2"), "device='cuda:2' names GPU 2"),
    (dict(gpus=[-2]), "GPU indices are 0 or more"),
    (dict(device="tpu"), "expected 'cpu', 'cuda'"),
])
def test_missing_gpu_is_a_usage_error(monkeypatch, kw, needle):
    fake_cuda(monkeypatch, 1)
    with pytest.raises(UsageError) as e:
        select_device(**kw)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_api_gpu_without_cuda_is_a_usage_error(monkeypatch):
    fake_cuda(monkeypatch, 0)
    with pytest.raises(UsageError) as e:
        select_device(device="cuda")
    assert "GPU 0" in str(e.value) and "CPU" in str(e.value)


@pytest.mark.parametrize("kw,flag", [(dict(gpus=[0]), "-gpus 0"), (dict(index=0), "-i 0"),
                                     (dict(gpus=[0, 1], index=2), "-gpus 0,1")])
def test_darknet_gpu_flags_without_cuda_warn_once_and_run_on_the_cpu(monkeypatch, capsys, kw,
                                                                      flag):
    """Darknet's CPU build ignores -i / -gpus; commands copied from AlexeyAB's README run."""
    fake_cuda(monkeypatch, 0)
    monkeypatch.setattr(devices, "_warned", set())
    assert select_device(**kw) == torch.device("cpu")
    assert select_device(**kw, local_rank=1) == torch.device("cpu")
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and f"{flag} ignored" in err and "CPU" in err, err


def test_usable_cpus_is_the_affinity_mask_else_the_cpu_count(monkeypatch):
    import os
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    assert devices.usable_cpus() == 2
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert devices.usable_cpus() == 6


def test_describe(monkeypatch):
    monkeypatch.setattr(devices, "cpu_bf16_supported", lambda: True)
    assert describe(torch.device("cpu")).startswith("device: CPU (")
    assert "bf16" in describe(torch.device("cpu"))
    assert describe("cpu", backend="onnxruntime").endswith(", backend: onnxruntime")

    class Props:
        name = "Fake GPU"
        total_memory = 8 * 2 ** 30
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props)
    assert describe(torch.device("cuda", 1)).startswith("device: GPU 1 (Fake GPU, 8.0 GiB")


def test_train_cli_rejects_a_missing_gpu(tmp_path, monkeypatch):
    """`detector train -gpus 7` on a machine with one GPU: one line, exit 2, no traceback (the
    GPU is faked: without CUDA the flag is Darknet's CPU-build no-op, tested below)."""
    from click.testing import CliRunner
    from darknet_py.cli import main
    fake_cuda(monkeypatch, 1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.data").write_text("classes=1\ntrain=a.data\n")
    (tmp_path / "a.cfg").write_text("[net]\n")
    r = CliRunner().invoke(main, ["detector", "train", "a.data", "a.cfg", "-gpus", "7"])
    assert r.exit_code == 2, r.output
    assert "names GPU 7 but only 1 GPU (0) visible" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


cpu_torch = pytest.mark.skipif(torch.cuda.is_available(),
                               reason="needs a torch without CUDA (there -i 0 names a real GPU)")


@cpu_torch
def test_detector_test_with_i_0_runs_on_the_cpu(tmp_path):
    """AlexeyAB's README command `detector test cfg/coco.data cfg/yolov4.cfg yolov4.weights -i 0
    -thresh 0.25` (with yolov4-tiny) on a CPU-only torch: a warning, detections, exit 0."""
    import subprocess
    import sys
    from conftest import REFDATA, require
    cfg = require(REFDATA / "cfg" / "darknet" / "yolov4-tiny.cfg")
    weights = require(REFDATA / "weights" / "yolov4-tiny.weights")
    (tmp_path / "coco.data").write_text(
        f"classes=80\nnames={REFDATA / 'cfg' / 'darknet' / 'coco.names'}\n")
    r = subprocess.run([sys.executable, "-m", "darknet_py.cli", "detector", "test", "coco.data",
                        str(cfg), str(weights), str(REFDATA / "images" / "dog.jpg"), "-i", "0",
                        "-thresh", "0.25", "-dont_show", "-backend", "fast"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.count("-i 0 ignored") == 1 and "Traceback" not in r.stderr
    assert "dog:" in r.stdout


@cpu_torch
def test_detector_test_backend_cuda_stays_an_error(tmp_path):
    import subprocess
    import sys
    from conftest import REFDATA, require
    cfg = require(REFDATA / "cfg" / "darknet" / "yolov4-tiny.cfg")
    (tmp_path / "coco.data").write_text(
        f"classes=80\nnames={REFDATA / 'cfg' / 'darknet' / 'coco.names'}\n")
    r = subprocess.run([sys.executable, "-m", "darknet_py.cli", "detector", "test", "coco.data",
                        str(cfg), str(REFDATA / "weights" / "yolov4-tiny.weights"),
                        str(REFDATA / "images" / "dog.jpg"), "-i", "0", "-backend", "cuda",
                        "-dont_show"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "-backend cuda needs a CUDA GPU" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr


@cpu_torch
def test_train_with_gpus_0_trains_on_the_cpu(tmp_path):
    """`detector train obj.data cfg conv.29 -gpus 0,1 -dont_show` on a CPU-only torch: one
    warning, one process on the CPU, weights written."""
    from train_fixtures import make_facemask_workdir, run_cli
    root = make_facemask_workdir(tmp_path / "w", n_train=2, n_valid=1, size=64, max_batches=1)
    r = run_cli("detector", "train", "obj.data", "small.cfg", "yolov4-tiny.conv.29", "-gpus",
                "0,1", "-dont_show", "-workers", "0", cwd=root, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.count("-gpus 0,1 ignored") == 1 and "device: CPU" in r.stderr
    assert (root / "backup" / "small_final.weights").exists()


def test_torchrun_without_gpus_takes_the_gpu_of_its_local_rank(monkeypatch):
    fake_cuda(monkeypatch, 2)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert select_device() == torch.device("cuda", 1)
    assert select_device(nogpu=True) == torch.device("cpu")
