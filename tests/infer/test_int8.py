"""``-precision int8`` (darknet_py/infer/backends/int8.py): the seeded calibration sample, the
list parsing and its one-line errors, one real calibration of yolov4-tiny on 10 coco128 images
(8 calibrated on, 2 held out for the fp32 / int8 mAP report) whose detections on dog.jpg must be
close to fp32's, and the cache that a second run (Python or CLI) uses instead of calibrating.

Speed is not tested here: ``python tools/benchmark.py --int8`` measures it (docs/benchmarks.md).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REFDATA, REPO, require

from darknet_py.cli import main as cli_main
from darknet_py.errors import DataError, UsageError
from darknet_py.infer.backends import int8 as int8_module
from darknet_py.infer.backends.int8 import (MAX_CALIBRATION_IMAGES, MAX_HELD_OUT_IMAGES,
                                            read_calibration_images, sample_calibration)

CFG = REFDATA / "cfg" / "darknet" / "yolov4-tiny.cfg"
WEIGHTS = REFDATA / "weights" / "yolov4-tiny.weights"
DOG = REFDATA / "images" / "dog.jpg"
# Run in a process of their own (tests/infer/test_int8_process.py runs this file): in the same
# process as the rest of the suite, after its many torch/ONNX Runtime/OpenVINO sessions, NNCF's
# calibration ended the whole pytest process with a segmentation fault (seen twice, in CI order
# only; this file alone passes). A fresh process keeps the checks and isolates the native crash.
pytestmark = pytest.mark.skipif(os.environ.get("DARKNET_PY_INT8_OWN_PROCESS") != "1",
                                reason="run in its own process by test_int8_process.py")

NEEDS_TOOLKIT = pytest.mark.skipif(
    not all(int8_module._installed(m) for m in ("onnx", "openvino", "nncf")),
    reason="-precision int8 needs onnx, openvino and nncf (pip install 'darknet-py[int8]')")


# ----------------------------------------------------------------------------- the sample
def test_sample_is_seeded_order_independent_disjoint_and_capped():
    paths = [f"images/{i:05d}.jpg" for i in range(1000)]
    a = sample_calibration("list", paths)
    b = sample_calibration("list", list(reversed(paths)) + paths[:50])   # other order, repeats
    assert (a.images, a.held_out) == (b.images, b.held_out)
    assert a.listed == b.listed == 1000
    assert len(a.held_out) == MAX_HELD_OUT_IMAGES and len(a.images) == MAX_CALIBRATION_IMAGES
    assert not set(a.images) & set(a.held_out)
    assert a.images != paths[100:400]                       # a sample, not the list's head
    moved = sample_calibration("list", [f"/elsewhere/{p}" for p in paths])
    assert [os.path.basename(p) for p in moved.held_out] == \
        [os.path.basename(p) for p in a.held_out]
    other_seed = sample_calibration("list", paths, seed=1)
    assert other_seed.held_out != a.held_out
    # adding images keeps most of the chosen ones
    grown = sample_calibration("list", paths + [f"more/{i}.jpg" for i in range(100)])
    assert len(set(grown.images) & set(a.images)) > 200


@pytest.mark.parametrize("n, held, calibrated", [(1, 0, 1), (2, 1, 1), (10, 2, 8), (128, 26, 102),
                                                 (597, 100, 300)])
def test_sample_sizes(n, held, calibrated):
    s = sample_calibration("list", [f"{i}.jpg" for i in range(n)])
    assert (len(s.held_out), len(s.images)) == (held, calibrated)


def test_calibration_list_parsing(tmp_path):
    lst = tmp_path / "calib.txt"
    lst.write_text("\ufeffa.jpg\n\n  b.jpg  \r\nc.jpg\na.jpg\n")
    source, paths = read_calibration_images(str(lst))
    assert source == str(lst) and paths == ["a.jpg", "b.jpg", "c.jpg", "a.jpg"]
    assert sample_calibration(source, paths).listed == 3
    assert read_calibration_images([Path("x.jpg"), "y.jpg"]) == ("2 paths", ["x.jpg", "y.jpg"])
    with pytest.raises(DataError, match="calibration list not found"):
        read_calibration_images(str(tmp_path / "nope.txt"))
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(DataError, match="the calibration list is empty"):
        read_calibration_images(str(tmp_path / "empty.txt"))
    with pytest.raises(UsageError, match="empty list"):
        read_calibration_images([])
    with pytest.raises(UsageError, match="list file or a list of image paths"):
        read_calibration_images(3)


# ----------------------------------------------------------------------------- one calibration
@pytest.fixture(scope="module")
def coco10(tmp_path_factory):
    """A list of 10 labelled coco128 train2017 images (the sample holds 2 out)."""
    folder = require(REFDATA / "datasets" / "coco128" / "images" / "train2017")
    images = sorted(str(p) for p in folder.glob("*.jpg"))[:10]
    lst = tmp_path_factory.mktemp("int8_list") / "coco10.txt"
    lst.write_text("".join(p + "\n" for p in images))
    return lst


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory):
    """A cache folder of this module's own (the first run below must calibrate)."""
    folder = tmp_path_factory.mktemp("int8_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DARKNET_PY_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def calibrated(int8_cache, coco10):
    """yolov4-tiny made int8 on coco10 (the one real calibration of the tests: ~30 s)."""
    from darknet_py.infer.backends.factory import make_backend
    require(CFG), require(WEIGHTS)
    lines = []
    backend = make_backend(CFG, WEIGHTS, precision="int8", calibration=str(coco10),
                           device="cpu", log=lines.append)
    return backend, lines


@NEEDS_TOOLKIT
def test_calibration_report(calibrated, coco10):
    backend, lines = calibrated
    assert backend.name == "openvino" and backend.precision == "int8"
    assert lines[0].startswith(f"int8: calibrating on 8 of the 10 images of {coco10} "
                               "(seeded sample, 2 held out)"), lines
    report = backend.calibration_report
    assert report["calibration_images"] == 8 and report["held_out_images"] == 2
    assert report["held_out_labeled"] == 2
    assert 0 < report["map_fp32"] <= 100 and 0 <= report["map_int8"] <= 100
    summary = [l for l in lines if "mAP@0.5 fp32" in l]
    assert len(summary) == 1 and f"fp32 {report['map_fp32']:.2f} %, int8 " \
        f"{report['map_int8']:.2f} %" in summary[0], lines
    # the two image lists named in the report: disjoint, together the list
    held = Path(report["held_out_list"]).read_text().split()
    calib = Path(report["calibration_list"]).read_text().split()
    assert len(held) == 2 and len(calib) == 8
    assert set(held) | set(calib) == set(coco10.read_text().split())


def _detections(backend):
    from darknet_py.infer.pipeline import Pipeline
    (_, _, dets), = Pipeline(backend, thresh=0.25, nms=0.45).run([str(DOG)])
    out = []
    for i in range(len(dets)):
        probs = dets.probs[i]
        c = int(probs.argmax())
        if float(probs[c]) > 0:
            out.append((c, float(probs[c]), dets.boxes[i].tolist()))
    return out


def _iou(a, b):
    def corners(x, y, w, h):
        return x - w / 2, y - h / 2, x + w / 2, y + h / 2
    ax0, ay0, ax1, ay1 = corners(*a)
    bx0, by0, bx1, by1 = corners(*b)
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


@NEEDS_TOOLKIT
def test_int8_detections_on_dog_close_to_fp32(calibrated):
    """int8 is not exact: the same four objects over -thresh 0.25 (bicycle, dog, truck, car),
    each box at IoU > 0.85 of fp32's and its probability within 0.15 (measured here: IoU >= 0.95,
    bicycle 0.60 -> 0.52, the others within 0.02, calibrated on 8 images)."""
    from darknet_py.infer.backends.factory import make_backend
    int8 = _detections(calibrated[0])
    fp32 = _detections(make_backend(CFG, WEIGHTS, backend="exact", device="cpu"))
    assert sorted(d[0] for d in fp32) == sorted(d[0] for d in int8) == [1, 2, 7, 16]
    for c, p, box in fp32:
        iou, q = max((_iou(box, b), q) for k, q, b in int8 if k == c)
        assert iou > 0.85 and abs(q - p) < 0.15, (c, p, q, iou)


@NEEDS_TOOLKIT
def test_second_run_takes_the_cache(calibrated, coco10, monkeypatch):
    from darknet_py.infer.backends.factory import make_backend

    def no_calibration(*args, **kwargs):
        raise AssertionError("calibrated again")

    monkeypatch.setattr(int8_module, "_calibrate", no_calibration)
    lines = []
    again = make_backend(CFG, WEIGHTS, precision="int8", calibration=str(coco10), device="cpu",
                         log=lines.append)
    assert again.path == calibrated[0].path
    assert len(lines) == 1 and lines[0].startswith(f"int8: {again.path} from the cache (")
    assert "mAP@0.5 fp32" in lines[0]
    # the same images given as a list of paths are the same calibration set; the Detector
    from darknet_py.infer.detector import Detector
    paths = coco10.read_text().split()
    det = Detector(CFG, WEIGHTS, names=str(REFDATA / "cfg" / "darknet" / "coco.names"),
                   precision="int8", calibration=paths, device="cpu")
    assert det.backend.path == again.path and det.describe().startswith(
        "backend openvino on cpu (int8")
    assert "dog" in [d.name for d in det(str(DOG))[0]]


@NEEDS_TOOLKIT
@pytest.mark.parametrize("change", ["other images", "input size"])
def test_key_follows_the_calibration_set_and_the_model(calibrated, coco10, tmp_path, monkeypatch,
                                                       change):
    from darknet_py.infer.backends.factory import make_backend
    stems = []

    def record(onnx_path, cs, stem, *args):
        stems.append(stem)
        raise _Stop()

    monkeypatch.setattr(int8_module, "_calibrate", record)
    paths = coco10.read_text().split()
    kwargs = {}
    if change == "other images":
        paths = paths[:9]
    else:
        kwargs = dict(width=320, height=320)
    with pytest.raises(_Stop):
        make_backend(CFG, WEIGHTS, precision="int8", calibration=paths, device="cpu",
                     log=lambda s: None, **kwargs)
    assert stems and stems[0] + ".xml" != calibrated[0].path


class _Stop(Exception):
    pass


@NEEDS_TOOLKIT
def test_damaged_cached_model_is_made_again(calibrated, coco10, monkeypatch):
    """A cached model that OpenVINO cannot read is calibrated again, not an error."""
    from darknet_py.infer.backends.factory import make_backend
    xml = Path(calibrated[0].path)
    good = xml.read_bytes()
    calls = []

    def rebuild(onnx_path, cs, stem, *args):
        calls.append(stem)
        xml.write_bytes(good)

    monkeypatch.setattr(int8_module, "_calibrate", rebuild)
    try:
        xml.write_bytes(good[:len(good) // 2])
        be = make_backend(CFG, WEIGHTS, precision="int8", calibration=str(coco10), device="cpu",
                          log=lambda s: None)
    finally:
        xml.write_bytes(good)
    assert calls == [str(xml)[:-len(".xml")]] and be.precision == "int8"


# ----------------------------------------------------------------------------- the commands
def _cli(*args, cwd=None):
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return CliRunner().invoke(cli_main, [str(a) for a in args])
    finally:
        os.chdir(old)


def _error_line(result):
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    lines = [l for l in result.stderr.splitlines() if l.startswith("darknet-py:")
             and not l.startswith("darknet-py: warning:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return lines[0]


@pytest.fixture
def coco_data(tmp_path, coco10):
    data = tmp_path / "coco.data"
    data.write_text(f"classes=80\nnames={REFDATA / 'cfg' / 'darknet' / 'coco.names'}\n"
                    f"train={coco10}\nvalid={coco10}\n")
    return data


def test_calib_errors_are_one_line(tmp_path, coco_data):
    require(CFG), require(WEIGHTS), require(DOG)
    base = ["detector", "test", coco_data, CFG, WEIGHTS, DOG]
    r = _cli(*base, "-precision", "int8", "-calib", tmp_path / "missing.txt")
    assert r.exit_code == 1
    line = _error_line(r)
    assert "missing.txt" in line and "calibration list (-calib) not found" in line, line
    r = _cli(*base, "-calib", coco_data)
    assert r.exit_code == 2 and "-calib is for -precision int8" in _error_line(r)
    no_train = tmp_path / "no_train.data"
    no_train.write_text(f"classes=80\nnames={REFDATA / 'cfg' / 'darknet' / 'coco.names'}\n")
    r = _cli("detector", "test", no_train, CFG, WEIGHTS, DOG, "-precision", "int8")
    assert r.exit_code == 2 and "which has none: give -calib LIST" in _error_line(r)
    r = _cli("detector", "map", no_train.parent / "absent.data", CFG, WEIGHTS, "-precision",
             "int8")
    assert r.exit_code == 1 and "absent.data" in _error_line(r)


@NEEDS_TOOLKIT
def test_calib_list_naming_a_missing_image(tmp_path, coco_data):
    lst = tmp_path / "one_missing.txt"
    lst.write_text("".join(f"{tmp_path / 'gone'}{i}.jpg\n" for i in range(3)))
    r = _cli("detector", "test", coco_data, CFG, WEIGHTS, DOG, "-precision", "int8", "-calib",
             lst)
    assert r.exit_code == 1
    line = _error_line(r)
    assert "calibration image not found (listed in" in line and "gone" in line, line


@NEEDS_TOOLKIT
@pytest.mark.parametrize("backend", ["fast", "exact", "onnxruntime"])
def test_int8_runs_on_openvino_only(coco_data, backend):
    r = _cli("detector", "test", coco_data, CFG, WEIGHTS, DOG, "-precision", "int8", "-backend",
             backend)
    assert r.exit_code == 2
    assert f"-precision int8 runs on -backend openvino (OpenVINO with NNCF), not '{backend}'" \
        in _error_line(r)


def test_absent_toolkit_is_one_line(coco_data, monkeypatch):
    monkeypatch.setitem(sys.modules, "nncf", None)          # what an uninstalled package gives
    r = _cli("detector", "test", coco_data, CFG, WEIGHTS, DOG, "-precision", "int8")
    assert r.exit_code == 2
    line = _error_line(r)
    assert "-precision int8 needs the 'nncf' package" in line
    assert "pip install 'darknet-py[int8]'" in line
    assert " conv " not in r.stderr            # refused before the network is loaded


def test_int8_is_never_the_default():
    import inspect

    import torch

    from darknet_py.cli import GROUPS
    from darknet_py.infer.backends.factory import auto_backend, make_backend
    from darknet_py.infer.detector import Detector
    for group, name in [("detector", "test"), ("detector", "map"), ("detector", "valid"),
                        ("detector", "demo"), (None, "detect")]:
        params = {p.name: p for p in GROUPS[group].commands[name].params}
        assert params["precision"].default == "fp32" and params["calibration"].default is None
    for fn in (make_backend, Detector.__init__):
        assert inspect.signature(fn).parameters["precision"].default == "fp32"
    assert auto_backend(str(CFG), torch.device("cpu"))[0] in ("onnxruntime", "fast")
    assert auto_backend(str(CFG), torch.device("cpu"), "int8")[0] == "openvino"


@NEEDS_TOOLKIT
def test_commands_run_int8_from_the_cache(calibrated, coco_data, int8_cache, tmp_path):
    """`detector test` in a new process with the .data's train= list: no calibration, the same
    model; `detector map` in this one: the cached model's report line, then Darknet's mAP."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               DARKNET_PY_CACHE=str(int8_cache))
    p = subprocess.run([sys.executable, "-m", "darknet_py.cli", "detector", "test",
                        str(coco_data), str(CFG), str(WEIGHTS), str(DOG), "-precision", "int8",
                        "-threads", "1"], cwd=tmp_path, capture_output=True, text=True,
                       env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"int8: {calibrated[0].path} from the cache (" in p.stderr
    assert "Using backend openvino on cpu (int8, 1 threads" in p.stderr
    assert "calibrating" not in p.stderr
    names = [l.split(":")[0] for l in p.stdout.splitlines() if l.endswith("%")]
    assert {"bicycle", "dog", "truck"} <= set(names), p.stdout
    r = _cli("detector", "map", coco_data, CFG, WEIGHTS, "-precision", "int8", cwd=tmp_path)
    assert r.exit_code == 0, r.stderr[-2000:]
    assert "from the cache" in r.stderr and "mean average precision (mAP@0.50)" in r.stdout
