"""The one inference pipeline: stages, batching, thread-pool loading, backends' construction
rules, and the Detector API over it (embedded yolo-fastest-1.1, so this runs in seconds)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import REPO, refpath, require

from darknet_py.errors import DarknetError, UsageError
from darknet_py.infer.backends.factory import make_backend
from darknet_py.infer.detector import Detector
from darknet_py.infer.pipeline import Pipeline
from darknet_py.model.network import Network
from darknet_py.structures.detections import ImageDetections, scale_to_pixels

CFG = REPO / "cfg" / "yolo-fastest-1.1.cfg"
WEIGHTS = REPO / "weights" / "yolo-fastest-1.1.weights"
DOG = REPO / "data" / "dog.jpg"


@pytest.fixture(scope="module")
def exact():
    return make_backend(CFG, WEIGHTS, backend="exact", device="cpu")


@pytest.fixture(scope="module")
def images():
    folder = require(refpath("images"))
    return [str(DOG)] + sorted(str(p) for p in folder.glob("*.jpg"))[:4]


def _same(a, b, tol=0.0):
    assert len(a) == len(b)
    for (na, _, da), (nb, _, db) in zip(a, b):
        assert na == nb and da.image_size == db.image_size
        assert torch.allclose(da.boxes, db.boxes, atol=tol, rtol=0)
        assert torch.allclose(da.probs, db.probs, atol=tol, rtol=0)


def test_iterate_with_loader_threads_equals_run(exact, images):
    ref = Pipeline(exact, batch_size=1).run(images)
    threaded = list(Pipeline(exact, batch_size=1, loader_threads=2).iterate(iter(images)))
    _same(ref, threaded)
    assert sum(int((d.probs > 0).any(1).sum()) for _, _, d in ref) > 5   # found something


def test_batches_equal_single_images(exact, images):
    # one forward per image vs 3 per call: float32 summation order only
    _same(Pipeline(exact, batch_size=1).run(images), Pipeline(exact, batch_size=3).run(images),
          tol=1e-5)


def test_pixel_boxes_scale_before_nms(exact):
    relative = Pipeline(exact, nms=0).run([str(DOG)])[0][2]
    pixels = Pipeline(exact, nms=0, pixel_boxes=True).run([str(DOG)])[0][2]
    assert torch.equal(pixels.boxes, scale_to_pixels(relative).boxes)


def test_nms_zero_keeps_every_candidate_probability(exact):
    pipe = Pipeline(exact, nms=0)
    _, im, raw = pipe.run([str(DOG)])[0]
    candidates = pipe.decode(pipe.forward(pipe.prepare([im])), [(im.shape[2], im.shape[1])])[0]
    assert torch.equal(raw.probs, candidates.probs)
    suppressed = Pipeline(exact).run([str(DOG)])[0][2]
    assert int((suppressed.probs > 0).sum()) < int((raw.probs > 0).sum())


def test_array_and_path_inputs_agree(exact):
    pipe = Pipeline(exact)
    from_path = pipe.run([str(DOG)])[0][2]
    from_array = pipe.run([cv2.imread(str(DOG))])[0][2]
    assert torch.equal(from_path.boxes, from_array.boxes)


def test_fast_backend_detections_equal_exact(exact, images):
    fast = make_backend(CFG, WEIGHTS, backend="fast")
    assert fast.name == "fast" and fast.device.type == "cpu"
    _same(Pipeline(exact).run(images), Pipeline(fast).run(images), tol=2e-5)


def test_auto_on_cpu_is_a_runtime_when_installed_else_fast():
    """Without a GPU, ``auto`` runs ONNX Runtime when it is installed, or OpenVINO where that
    is installed too and won the timed race on this machine (which of the two wins depends on
    the CPU, so both are allowed here; the race's rule has its own tests), else ``fast``."""
    if torch.cuda.is_available():
        pytest.skip("auto picks cuda on this machine")
    import importlib.util
    has_ort = all(importlib.util.find_spec(m) for m in ("onnxruntime", "onnx"))
    has_ov = importlib.util.find_spec("openvino") is not None
    net = Network.from_files(CFG, WEIGHTS, batch=1)
    be = make_backend(CFG, WEIGHTS, network=net)
    allowed = {"fast"}
    if has_ort:
        allowed = {"onnxruntime", "openvino"} if has_ov else {"onnxruntime"}
    assert be.name in allowed, be.auto_reason
    assert be.auto_reason.startswith("the CPU")


@pytest.mark.parametrize("kwargs, text", [
    ({"backend": "tensorrt"}, "unknown backend 'tensorrt'"),
    ({"precision": "int4"}, "unknown precision 'int4'"),
    ({"backend": "fast", "precision": "fp16"}, "fp32 or bf16"),
])
def test_backend_choice_errors(kwargs, text):
    with pytest.raises(UsageError, match=text):
        make_backend(CFG, WEIGHTS, **kwargs)


def test_cuda_backend_without_a_gpu_is_one_line_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UsageError, match="names GPU 0 but"):
        make_backend(CFG, WEIGHTS, backend="cuda", device="cuda")
    with pytest.raises(UsageError, match="needs a CUDA GPU"):
        make_backend(CFG, WEIGHTS, backend="cuda")


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from darknet_py.export.exporter import ExportOptions, export_model
    out = tmp_path_factory.mktemp("onnx") / "fastest.onnx"
    export_model(CFG, WEIGHTS, out, ExportOptions(dynamic_batch=True,
                                                  names=(REPO / "cfg" / "coco.names")
                                                  .read_text().split()))
    return out


def test_onnx_file_runs_through_the_same_pipeline(exact, onnx_file, images):
    ort = make_backend(onnx_file)
    assert ort.name == "onnxruntime" and ort.heads == exact.heads
    _same(Pipeline(exact).run(images), Pipeline(ort).run(images), tol=2e-5)
    with pytest.raises(UsageError, match="already holds its weights"):
        make_backend(onnx_file, WEIGHTS)
    with pytest.raises(UsageError, match="onnxruntime or openvino"):
        make_backend(onnx_file, backend="exact")


def test_cached_export_is_reused(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import shutil
    cache = tmp_path / "cache"
    monkeypatch.setenv("DARKNET_PY_CACHE", str(cache))
    models = tmp_path / "models"
    models.mkdir()
    cfg, weights = models / "m.cfg", models / "m.weights"
    shutil.copy(CFG, cfg)
    shutil.copy(WEIGHTS, weights)
    first = make_backend(cfg, weights, backend="onnxruntime")
    cached = sorted(cache.glob("m.weights.*.onnx"))
    assert len(cached) == 1 and first.source == str(cached[0])
    assert sorted(p.name for p in models.iterdir()) == ["m.cfg", "m.weights"]  # nothing beside
    mtime = cached[0].stat().st_mtime_ns
    second = make_backend(cfg, weights, backend="onnxruntime")
    assert second.source == first.source and cached[0].stat().st_mtime_ns == mtime
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")   # other weights, other key
    make_backend(cfg, weights, backend="onnxruntime")
    assert len(list(cache.glob("m.weights.*.onnx"))) == 2


def test_cli_test_with_onnx_file_and_no_weights(onnx_file, tmp_path, monkeypatch):
    from darknet_py.cli import main
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "coco.data"
    data.write_text(f"classes=80\nnames={REPO / 'cfg' / 'coco.names'}\n")
    res = CliRunner().invoke(main, ["detector", "test", str(data), str(onnx_file), str(DOG),
                                    "-dont_show", "-out", "r.json"])
    assert res.exit_code == 0, res.output
    assert "Using backend onnxruntime on cpu" in res.stderr
    assert "dog: " in res.stdout and (tmp_path / "predictions.jpg").exists()
    assert json.loads((tmp_path / "r.json").read_text())[0]["objects"]


def test_detector_api_explains_itself(exact):
    det = Detector(CFG, backend=exact, names=REPO / "cfg" / "coco.names")
    assert "backend exact on cpu" in repr(det) and det.input_size == (320, 320)
    result = det(str(DOG))[0]
    assert isinstance(result, ImageDetections) and len(result) == len(result.detections) > 0
    text = str(result)
    assert text.splitlines()[0].endswith(f"{len(result)} detections") and "dog" in text
    assert "tensor" not in repr(result) and "tensor" not in repr(result.raw)
    bgr = cv2.imread(str(DOG))
    drawn = det.draw(bgr, result)
    assert isinstance(drawn, np.ndarray) and drawn.shape == bgr.shape and drawn.dtype == np.uint8
    assert (drawn != bgr).any()


def test_detector_thresholds_are_pipeline_settings(exact):
    det = Detector(CFG, backend=exact)
    det.thresh = 0.9
    assert det.pipeline.thresh == 0.9
    assert all(d.confidence > 0.9 for d in det(str(DOG))[0])
