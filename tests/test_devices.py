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


@pytest.mark.parametrize("kw", [dict(gpus=[0]), dict(index=0), dict(device="cuda")])
def test_any_gpu_without_cuda_is_a_usage_error(monkeypatch, kw):
    fake_cuda(monkeypatch, 0)
    with pytest.raises(UsageError) as e:
        select_device(**kw)
    assert "GPU 0" in str(e.value) and "CPU" in str(e.value)


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


def test_train_cli_rejects_a_missing_gpu(tmp_path):
    """`detector train -gpus 7` on a machine without GPU 7: one line, exit 2, no traceback."""
    import subprocess
    import sys
    (tmp_path / "a.data").write_text("classes=1\n")
    (tmp_path / "a.cfg").write_text("[net]\n")
    gpu = torch.cuda.device_count() + 7
    r = subprocess.run([sys.executable, "-m", "darknet_py.cli", "detector", "train", "a.data",
                        "a.cfg", "-gpus", str(gpu)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert f"names GPU {gpu}" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_torchrun_without_gpus_takes_the_gpu_of_its_local_rank(monkeypatch):
    fake_cuda(monkeypatch, 2)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert select_device() == torch.device("cuda", 1)
    assert select_device(nogpu=True) == torch.device("cpu")
