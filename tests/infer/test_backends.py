"""Every installed CPU backend against Darknet's recorded detections (oracle/detect) and against
the exact path: what ``-backend auto`` may pick must give the same detections.

Default run: the ``auto`` backend (whatever it picks on this machine) and ``exact`` for the 4
oracle models, one Network per model shared by both. The other backends (``fast``,
``onnxruntime``, ``openvino``) and the letter-box runs are ``@pytest.mark.slow``.
"""
import functools
import importlib.util
import json
import re

import numpy as np
import pytest
import torch
from conftest import refpath, require

MODELS = ["yolov4-tiny", "yolov3-tiny", "yolo-fastest-1.1", "yolo-fastest-1.1-xl"]
LETTER_BOX = ["yolov4-tiny", "yolov3-tiny"]


def _shared(p):
    return str(require(refpath(p.replace("$SHARED/", ""))))


def _oracle(model, mode="default"):
    return json.loads(require(refpath("oracle", "detect", f"{model}__{mode}.json")).read_text())


@functools.lru_cache(maxsize=None)
def _network(model):
    from darknet_py.model.network import Network
    o = _oracle(model)
    return Network.from_files(_shared(o["cfg"]), _shared(o["weights"]), batch=1)


@functools.lru_cache(maxsize=None)
def _backend(model, name):
    from darknet_py.infer.backends.factory import make_backend
    o = _oracle(model)
    if name in ("onnxruntime", "openvino"):
        pytest.importorskip(name)
    return make_backend(_shared(o["cfg"]), _shared(o["weights"]), backend=name, device="cpu",
                        network=_network(model))


def _run(model, name, mode):
    from darknet_py.infer.pipeline import Pipeline
    o = _oracle(model, mode)
    pipe = Pipeline(_backend(model, name), thresh=0.25, nms=0.45, letter_box=mode == "letter_box")
    return o, pipe.run([_shared(im["filename"]) for im in o["images"]])


def _listing(dets):
    out = []
    for i in range(len(dets)):
        for c in torch.nonzero(dets.probs[i] > 0.005).flatten().tolist():
            out.append((c, float(dets.probs[i, c]), dets.boxes[i].tolist()))
    return out


def _check_against_oracle(oracle, results):
    assert len(results) == len(oracle["images"]) == 8
    for entry, (_, _, dets) in zip(oracle["images"], results):
        W, H = dets.image_size
        got = _listing(dets)
        want = [(o["class_id"], o["confidence"],
                 [o["relative_coordinates"][k] for k in ("center_x", "center_y", "width", "height")])
                for o in entry["objects"]]
        assert [g[0] for g in got] == [w[0] for w in want], entry["filename"]
        for (_, gp, gb), (_, wp, wb) in zip(got, want):
            assert abs(gp - wp) <= 1e-3, entry["filename"]
            assert np.abs((np.array(gb) - np.array(wb)) * [W, H, W, H]).max() <= 0.5


def _check_same_detections(results, reference):
    """Identical detections: the same (class, row order) list, probabilities and boxes equal up
    to float rounding of the network (1e-4)."""
    for (_, _, a), (_, _, b) in zip(results, reference):
        la, lb = _listing(a), _listing(b)
        assert [x[0] for x in la] == [x[0] for x in lb]
        for (_, pa, ba), (_, pb, bb) in zip(la, lb):
            assert abs(pa - pb) <= 1e-4
            assert np.abs(np.array(ba) - np.array(bb)).max() <= 1e-4


def _case(model, name, mode="default"):
    oracle, results = _run(model, name, mode)
    _check_against_oracle(oracle, results)
    if name != "exact":
        _check_same_detections(results, _run(model, "exact", mode)[1])


@pytest.mark.parametrize("model", MODELS)
def test_auto_backend_equals_darknet_and_exact(model):
    _case(model, "auto")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["exact", "fast", "onnxruntime", "openvino"])
@pytest.mark.parametrize("model", MODELS)
def test_every_cpu_backend_equals_darknet(model, name):
    _case(model, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["auto", "fast", "onnxruntime", "openvino"])
@pytest.mark.parametrize("model", LETTER_BOX)
def test_every_cpu_backend_letter_box(model, name):
    _case(model, name, "letter_box")


def test_auto_rule():
    """``auto``: ONNX Runtime on the CPU when installed (it is what the oracle test above runs),
    OpenVINO for bf16 when installed, else the fast plan; cuda on a GPU; onnxruntime for .onnx."""
    import importlib.util

    from darknet_py.infer.backends.factory import auto_backend
    cpu = torch.device("cpu")
    have = lambda *m: all(importlib.util.find_spec(x) is not None for x in m)  # noqa: E731
    name = lambda *a: auto_backend(*a)[0]  # noqa: E731
    assert name("m.onnx", cpu) == "onnxruntime"
    assert name("m.cfg", torch.device("cuda")) == "cuda"
    assert name("m.cfg", cpu) == ("onnxruntime" if have("onnxruntime", "onnx") else "fast")
    assert name("m.cfg", cpu, "bf16") == ("openvino" if have("openvino", "onnx") else "fast")
    assert name("m.cfg", cpu, "fp16") == "fast"
    assert auto_backend("m.cfg", cpu)[1].startswith("the CPU")


def test_auto_choice_is_printed_with_its_reason(capsys):
    """The ``Using backend`` line of ``-backend auto`` says which clause of the rule applied;
    a backend named on the command line gets no reason."""
    from darknet_py.commands._common import open_backend
    from darknet_py.infer.backends.factory import auto_backend
    o = _oracle("yolo-fastest-1.1")
    cfg, weights = _shared(o["cfg"]), _shared(o["weights"])
    name, reason = auto_backend(cfg, torch.device("cpu"))
    be = open_backend(cfg, weights, quiet=True, gpu_index=-1)
    if name == "onnxruntime" and importlib.util.find_spec("openvino") is not None:
        # both runtimes: the faster on this machine, with both times in the reason
        assert be.name in ("onnxruntime", "openvino")
        assert re.fullmatch(r"the CPU, (onnxruntime|openvino) [0-9.]+ ms against "
                            r"(onnxruntime|openvino) [0-9.]+ ms per batch-1 call \(timed "
                            r"(now|earlier on this machine); openvino needs a 5 % lead\)",
                            be.auto_reason), be.auto_reason
        name, reason = be.name, be.auto_reason
    assert be.name == name and be.auto_reason == reason
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"Using backend {name} on cpu") and \
        line.endswith(f"(-backend auto: {reason})")
    be = open_backend(cfg, weights, backend="fast", quiet=True, gpu_index=-1)
    assert be.auto_reason is None and "-backend auto" not in capsys.readouterr().err


def test_auto_falls_back_to_fast_when_the_export_fails(monkeypatch):
    from darknet_py.errors import UsageError
    from darknet_py.infer.backends import factory
    from darknet_py.infer.backends import onnxruntime as ortmod
    pytest.importorskip("onnxruntime")

    def refuse(*a, **k):
        raise UsageError("cannot export this layer")
    monkeypatch.setattr(ortmod, "cached_export", refuse)
    monkeypatch.setattr(factory, "cached_export", refuse)
    o = _oracle("yolo-fastest-1.1")
    be = factory.make_backend(_shared(o["cfg"]), _shared(o["weights"]), backend="auto", device="cpu",
                              network=_network("yolo-fastest-1.1"))
    assert be.name == "fast" and be.auto_reason.startswith("onnxruntime cannot take this model")
    with pytest.raises(UsageError):
        factory.make_backend(_shared(o["cfg"]), _shared(o["weights"]), backend="onnxruntime",
                          device="cpu", network=_network("yolo-fastest-1.1"))


def test_thread_policy_never_runs_more_threads_than_asked():
    from darknet_py.infer.backends.fast import FastBackend
    be = FastBackend(_network("yolo-fastest-1.1"), threads=2)
    plan = be.plan
    assert plan.run_threads in (1, 2)
    if plan.timing.threads:
        assert set(plan.timing.threads) == {1, 2}
        best = min(plan.timing.threads, key=plan.timing.threads.get)
        assert plan.run_threads == best
    before = torch.get_num_threads()
    x = torch.rand(1, 3, be.height, be.width)
    plan.use_threads(1)
    one = be(x)
    plan.use_threads(2)
    two = be(x)
    assert torch.get_num_threads() == before           # each call restores the count
    for a, b in zip(one, two):
        assert torch.allclose(a, b, atol=1e-5)


def test_fast_backend_races_winograd_against_onednn():
    """Where NNPACK's Winograd applies, the backend keeps whichever plan was faster at build
    time; either one matches the exact path within 1e-5 (relative to the output range)."""
    from darknet_py.infer.backends.exact import ExactBackend
    from darknet_py.infer.backends.fast import FastBackend, _uses_winograd, nnpack_available
    net = _network("yolov4-tiny")
    be = FastBackend(net, threads=1)
    if nnpack_available()[0] and be.plan_race:
        assert set(be.plan_race) == {"winograd", "onednn"}
        assert _uses_winograd(be.plan) == (be.plan_race["winograd"] < be.plan_race["onednn"])
    x = torch.rand(1, 3, be.height, be.width)
    ref = ExactBackend(net, torch.device("cpu"))(x)
    for a, b in zip(be(x), ref):
        assert float((a - b).abs().max()) <= 1e-5 * max(1.0, float(b.abs().max()))


def test_thread_race_rule_prefers_the_cheaper_setup_within_the_margin():
    from darknet_py.infer.backends.onnxruntime import RACE_MARGIN, pick_setup
    assert RACE_MARGIN == 0.05
    # spinning 10 % faster than one thread: picked; two sleeping threads 3 % faster: not
    assert pick_setup({(1, False): 10.0, (2, False): 9.7, (2, True): 9.0}) == (2, True)
    # within 5 % of one thread: one thread stays (noise does not buy a second core)
    assert pick_setup({(1, False): 10.0, (2, False): 9.8, (2, True): 9.6}) == (1, False)
    # spinning must beat two sleeping threads by the margin too
    assert pick_setup({(1, False): 10.0, (2, False): 8.0, (2, True): 7.9}) == (2, False)
    assert pick_setup({(1, False): 10.0, (2, False): 12.0}) == (1, False)


@pytest.mark.parametrize("policy", [None, "PASSIVE", "ACTIVE"])
def test_onnxruntime_thread_race_and_its_printout(policy, monkeypatch):
    """A small network races 1 thread against 2 sleeping and (policy unset) 2 spinning workers,
    keeps what pick_setup says and prints the race; a policy the user set is honoured."""
    pytest.importorskip("onnxruntime")
    from darknet_py.infer.backends import onnxruntime as ortmod
    monkeypatch.setattr(ortmod, "USER_WAIT_POLICY", policy)
    monkeypatch.setattr(ortmod, "usable_cpus", lambda: 2)
    path = _backend("yolo-fastest-1.1", "onnxruntime").path
    be = ortmod.OnnxRuntimeBackend(path)
    spin = policy == "ACTIVE"
    expected = {(1, False), (2, spin)} | ({(2, True)} if policy is None else set())
    assert set(be.calibration) == expected
    assert (be.threads, be.spinning) == ortmod.pick_setup(be.calibration)
    assert "; raced 1: " in be.details() and ("2 spinning: " in be.details()) == (policy != "PASSIVE")
    x = torch.rand(1, 3, be.height, be.width)
    ref = ortmod.OnnxRuntimeBackend(path, threads=1, calibrate_threads=False)(x)
    for a, b in zip(be(x), ref):
        assert torch.allclose(a, b, atol=1e-5)


def test_auto_times_the_two_runtimes_once_and_keeps_the_faster(tmp_path, monkeypatch):
    """With onnxruntime and openvino installed, ``auto`` times both on the export (batch 1,
    interleaved), keeps OpenVINO only with a 5 % lead, writes the result beside the export and
    reads it back next time (no second race); a damaged choice file is timed again."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    from darknet_py.infer.backends import factory
    monkeypatch.setenv("DARKNET_PY_CACHE", str(tmp_path))
    o = _oracle("yolo-fastest-1.1")
    said = []
    be = factory.make_backend(_shared(o["cfg"]), _shared(o["weights"]), device="cpu",
                              network=_network("yolo-fastest-1.1"), log=said.append)
    assert said == ["auto: timing onnxruntime against openvino on this model (once for this "
                    "machine)"]
    (choices,) = tmp_path.glob("*.onnx.auto.json")
    entry = json.loads(choices.read_text())[factory._choice_key(None)]
    ms = entry["ms"]
    want = "openvino" if ms["openvino"] < 0.95 * ms["onnxruntime"] else "onnxruntime"
    assert entry["choice"] == be.name == want and "(timed now;" in be.auto_reason
    # the same choice again, from the file
    monkeypatch.setattr(factory, "race", lambda *a, **k: pytest.fail("raced twice"))
    again = factory.make_backend(_shared(o["cfg"]), _shared(o["weights"]), device="cpu",
                                 network=_network("yolo-fastest-1.1"), log=said.append)
    assert again.name == be.name and "timed earlier on this machine" in again.auto_reason
    assert len(said) == 1
    # a made-up faster OpenVINO in the file is what auto runs
    data = json.loads(choices.read_text())
    data[factory._choice_key(None)] = {"choice": "openvino",
                                       "ms": {"onnxruntime": 9.0, "openvino": 4.0}}
    choices.write_text(json.dumps(data))
    assert factory.make_backend(_shared(o["cfg"]), _shared(o["weights"]), device="cpu",
                                network=_network("yolo-fastest-1.1")).name == "openvino"
    choices.write_text("{not json")
    monkeypatch.undo()
    monkeypatch.setenv("DARKNET_PY_CACHE", str(tmp_path))
    factory.make_backend(_shared(o["cfg"]), _shared(o["weights"]), device="cpu",
                         network=_network("yolo-fastest-1.1"), log=said.append)
    assert len(said) == 2 and json.loads(choices.read_text())


def test_auto_runtime_rule_gives_openvino_only_a_clear_lead(monkeypatch):
    """The 5 % margin: OpenVINO 4 % faster keeps ONNX Runtime, 6 % faster takes OpenVINO."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    from darknet_py.infer.backends import factory
    path = _backend("yolo-fastest-1.1", "onnxruntime").path
    for ov_ms, want in ((9.6, "onnxruntime"), (9.4, "openvino")):
        monkeypatch.setattr(factory, "race", lambda c, r, warmup=0, ov=ov_ms:
                            {"onnxruntime": 0.010, "openvino": ov / 1000})
        monkeypatch.setattr(factory, "_read_choices", lambda p: {})
        monkeypatch.setattr(factory, "atomic_write_bytes", lambda p, d: None)
        be = factory._fastest_runtime(path, None, lambda s: None)
        assert be.name == want, (ov_ms, be.auto_reason)


def test_auto_runs_onnxruntime_when_openvino_cannot_take_the_model(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    from darknet_py.errors import DataError
    from darknet_py.infer.backends import factory

    def refuse(path, precision, threads):
        raise DataError("OpenVINO cannot compile the file: unsupported", file=path)
    monkeypatch.setattr(factory, "OpenVinoBackend", refuse)
    monkeypatch.setenv("DARKNET_PY_CACHE", str(tmp_path))
    o = _oracle("yolo-fastest-1.1")
    be = factory.make_backend(_shared(o["cfg"]), _shared(o["weights"]), device="cpu",
                              network=_network("yolo-fastest-1.1"), log=pytest.fail)
    assert be.name == "onnxruntime"
    assert be.auto_reason.startswith("the CPU, onnxruntime installed (openvino cannot take")
    assert not list(tmp_path.glob("*.auto.json"))
