"""The fast inference plan (darknet_py.infer.backends.fast) gives the exact path's numbers.

Every CPU variant is compared with the exact path (``net(x)``) *and* with Darknet's own dumped
head outputs (oracle/dumps), on the inputs Darknet was fed. CUDA variants run only where CUDA is.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import dump_dir, dump_input, load_model

from darknet_py.infer.backends import fast as fastpath
from darknet_py.infer.backends.fast import (FastNetwork, NnpackWinogradConv, max_pool_separable,
                                 nnpack_available, optimize_for_inference)

MODELS = [("yolov4-tiny", "yolov4-tiny__dog"), ("yolov3-tiny", "yolov3-tiny__dog"),
          ("yolo-fastest-1.1", "yolo-fastest-1.1__dog")]
#: keyword sets for optimize_for_inference: every CPU float32 path
CPU_VARIANTS = {
    "default": {},
    "onednn-channels-last": {"winograd": False},
    "onednn-nchw": {"winograd": False, "channels_last": False},
    "autotune": {"autotune": True},
}
NNPACK_OK, NNPACK_REASON = nnpack_available()
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

TINY_CFG = """
[net]
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=32
size=3
stride=1
pad=1
activation=mish

[convolutional]
size=1
stride=1
pad=1
filters=18
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=1
num=3
"""


@pytest.fixture(scope="module", autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def exact_outputs():
    """(net, input, exact outputs, Darknet's outputs) per model, computed once."""
    cache = {}

    def get(model, dump):
        if model not in cache:
            net = load_model(model)
            folder = dump_dir(dump)
            x = dump_input(folder)
            with torch.inference_mode():
                exact = [o.clone() for o in net(x)]
            darknet = [np.load(folder / f"layer{h.index:03d}_yolo.npy") for h in net.heads]
            cache[model] = (net, x, exact, darknet)
        return cache[model]
    return get


def _max_diff(outs, refs):
    return max(float((a - b).abs().max()) for a, b in zip(outs, refs))


#: every variant on yolov4-tiny, the two main ones on the other models (keeps the test time down)
CASES = [(m, d, v) for m, d in MODELS for v in CPU_VARIANTS
         if m == "yolov4-tiny" or v in ("default", "onednn-channels-last")]


@pytest.mark.parametrize("model,dump,variant", CASES, ids=[f"{m}-{v}" for m, _, v in CASES])
def test_cpu_fast_paths_equal_exact_path_and_darknet(exact_outputs, model, dump, variant):
    net, x, exact, darknet = exact_outputs(model, dump)
    fast = optimize_for_inference(net, "cpu", **CPU_VARIANTS[variant])
    outs = fast(x)
    assert len(outs) == len(exact) == len(net.heads)
    for o, e in zip(outs, exact):
        assert o.shape == e.shape and o.dtype == torch.float32 and o.is_contiguous()
    diff = _max_diff(outs, exact)
    assert diff < 1e-4, f"{model} {variant}: max diff to the exact path {diff}"
    for head, o, ref in zip(net.heads, outs, darknet):
        d = float(np.abs(o[0].numpy().reshape(ref.shape) - ref).max())
        assert d < 1e-4, f"{model} {variant} layer {head.index}: max diff to Darknet {d}"
    kernels = {k for _, k in fast.kernels}
    if variant.startswith("onednn"):
        assert "nnpack-winograd" not in kernels
    # the plan does not modify the network: the exact path still gives the same numbers
    with torch.inference_mode():
        assert _max_diff(net(x), exact) == 0.0


@pytest.mark.skipif(not NNPACK_OK, reason=f"NNPACK unavailable: {NNPACK_REASON}")
def test_winograd_is_used_where_it_applies(exact_outputs):
    net, x, _, _ = exact_outputs("yolov4-tiny", "yolov4-tiny__dog")
    fast = optimize_for_inference(net, "cpu")
    kernels = dict(fast.kernels)
    wino = [i for i, k in kernels.items() if k == "nnpack-winograd"]
    # yolov4-tiny: the twelve 3x3 stride-1 convolutions with >= 16 input channels
    assert len(wino) == 12
    for i in wino:
        layer = net.layers[i]
        assert (layer.size, layer.stride_x, layer.groups) == (3, 1, 1)
    assert kernels[0] == "conv2d"  # 3 input channels: direct convolution
    assert "maxpool-separable" in kernels.values()
    assert "winograd=True" in fast.describe()


@pytest.mark.parametrize("split_batch", [None, False])
def test_batch_of_two_equals_single_images(exact_outputs, split_batch):
    net, x, exact, _ = exact_outputs("yolov4-tiny", "yolov4-tiny__dog")
    fast = optimize_for_inference(net, "cpu", split_batch=split_batch)
    assert fast.split_batch is (fast.winograd if split_batch is None else split_batch)
    x2 = torch.cat([x, x.flip(-1)])
    batched = fast(x2)
    with torch.inference_mode():
        flipped = net(x.flip(-1))
    for h in range(len(batched)):
        assert batched[h].shape[0] == 2
        assert float((batched[h][0] - exact[h][0]).abs().max()) < 1e-4
        assert float((batched[h][1] - flipped[h][0]).abs().max()) < 1e-4


def test_wrong_input_shape_is_rejected(exact_outputs):
    net, x, _, _ = exact_outputs("yolov3-tiny", "yolov3-tiny__dog")
    fast = optimize_for_inference(net, "cpu")
    with pytest.raises(ValueError, match="network input must be"):
        fast(x[:, :, :32])


@pytest.mark.parametrize("size,stride,hw,pad", [(2, 2, (12, 10), 1), (2, 1, (13, 13), 1),
                                                  (3, 2, (11, 9), 2), (3, 1, (8, 8), 2),
                                                  (1, 1, (5, 7), 0), (3, 3, (10, 10), 2)])
def test_separable_max_pool_equals_max_pool2d(size, stride, hw, pad):
    g = torch.Generator().manual_seed(size * 10 + stride)
    x = torch.randn(2, 5, *hw, generator=g)
    xp = F.pad(x, (pad // 2, pad, pad // 2, pad), value=-3.4e38)
    oh = (hw[0] + pad - size) // stride + 1
    ow = (hw[1] + pad - size) // stride + 1
    ref = F.max_pool2d(xp, size, stride)[:, :, :oh, :ow]
    got = max_pool_separable(xp, size, (stride, stride), (oh, ow))
    assert got.shape == ref.shape and got.is_contiguous()
    assert torch.equal(got, ref)


def test_maxpool_layer_inference_is_separable_and_training_keeps_max_pool2d(tiny_net):
    """MaxpoolLayer uses the separable maxima without autograd (same values) and F.max_pool2d
    with it (the gradient goes to one input per window, as in Darknet, even on ties)."""
    from darknet_py.layers.base import FLT_MAX
    layer = tiny_net.layers[1]
    x = torch.randn(2, 16, 64, 64).clamp(min=0)  # many tied zeros
    with torch.no_grad():
        fast = layer(x, [])
    ref = F.max_pool2d(layer._padded(x, -FLT_MAX), 2, 2)
    assert torch.equal(fast, ref)
    xg = x.clone().requires_grad_(True)
    layer(xg, []).sum().backward()
    assert set(xg.grad.unique().tolist()) <= {0.0, 1.0}
    assert float(xg.grad.sum()) == ref.numel()


@pytest.mark.skipif(not NNPACK_OK, reason=f"NNPACK unavailable: {NNPACK_REASON}")
@pytest.mark.parametrize("cin,cout,hw,pad,threads", [(16, 8, (13, 13), 1, 1),
                                                      (32, 24, (7, 11), 1, 2),
                                                      (16, 16, (9, 9), 0, 1)])
def test_nnpack_winograd_conv_matches_conv2d(cin, cout, hw, pad, threads):
    g = torch.Generator().manual_seed(cin + cout)
    w = torch.randn(cout, cin, 3, 3, generator=g) * (2 / (9 * cin)) ** 0.5
    b = torch.randn(cout, generator=g)
    x = torch.randn(2, cin, *hw, generator=g)
    conv = NnpackWinogradConv(w, b, hw, pad, threads)
    ref = F.conv2d(x.double(), w.double(), b.double(), 1, pad).float()
    got = conv(x)
    assert got.shape == ref.shape
    assert float((got - ref).abs().max() / ref.abs().max()) < 1e-5
    with pytest.raises(ValueError, match="built for"):
        conv(torch.zeros(1, cin, hw[0] + 1, hw[1]))


def test_without_nnpack_the_plan_falls_back_to_direct_convolutions(exact_outputs, monkeypatch):
    class NoNnpack:
        lib = None
        reason = "simulated: symbol not found"

    monkeypatch.setattr(fastpath, "_NNPACK", NoNnpack())
    assert nnpack_available() == (False, "simulated: symbol not found")
    net, x, exact, _ = exact_outputs("yolov3-tiny", "yolov3-tiny__dog")
    fast = optimize_for_inference(net, "cpu")
    assert "nnpack-winograd" not in {k for _, k in fast.kernels}
    assert fast.winograd is False and fast.channels_last is True
    assert _max_diff(fast(x), exact) < 1e-4
    with pytest.warns(UserWarning, match="unavailable"):
        optimize_for_inference(net, "cpu", winograd=True)


def test_cpu_bf16_plan_runs_and_stays_close(exact_outputs):
    net, x, exact, _ = exact_outputs("yolov4-tiny", "yolov4-tiny__dog")
    fast = optimize_for_inference(net, "cpu", half=True)
    assert fast.dtype == torch.bfloat16 and fast.winograd is False
    outs = fast(x)
    assert all(o.dtype == torch.float32 for o in outs)
    # bf16 keeps ~3 significant digits: measured max diff 0.09 on these outputs
    assert _max_diff(outs, exact) < 0.3


def test_half_spec_is_validated(exact_outputs):
    net, _, _, _ = exact_outputs("yolo-fastest-1.1", "yolo-fastest-1.1__dog")
    with pytest.raises(ValueError, match="half must be"):
        optimize_for_inference(net, "cpu", half="fp8")


def test_step_times_cover_every_layer(exact_outputs):
    net, x, _, _ = exact_outputs("yolo-fastest-1.1", "yolo-fastest-1.1__dog")
    fast = optimize_for_inference(net, "cpu", threads=1)
    assert torch.get_num_threads() == 1 and fast.threads == 1
    times = fast.step_times(x, repeat=1)
    assert [i for i, _, _ in times] == list(range(len(net.layers)))
    assert all(t >= 0 for _, _, t in times)
    assert "identity" in {k for _, k, _ in times}  # yolo-fastest's dropout layers


@pytest.fixture(scope="module")
def tiny_net(tmp_path_factory):
    from darknet_py.model.network import Network
    cfg = tmp_path_factory.mktemp("tiny") / "tiny.cfg"
    cfg.write_text(TINY_CFG)
    torch.manual_seed(0)
    net = Network.from_cfg(cfg)
    with torch.no_grad():  # non-trivial batch-norm statistics so folding is exercised
        for layer in net.layers:
            if getattr(layer, "batch_normalize", 0):
                layer.rolling_mean.uniform_(-0.1, 0.1)
                layer.rolling_variance.uniform_(0.5, 1.5)
                layer.scales.uniform_(0.5, 1.5)
    net.eval()
    return net


def test_torch_compile_plan_equals_exact(tiny_net):
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        exact = tiny_net(x)
    fast = optimize_for_inference(tiny_net, "cpu", compile=True)
    outs = fast(x)
    assert fast.timing.compile_seconds is not None and fast.timing.compile_seconds >= 0
    assert _max_diff(outs, exact) < 1e-4
    assert _max_diff(fast(x), exact) < 1e-4


def test_torch_compile_failure_falls_back_to_eager(tiny_net, monkeypatch):
    def broken_compile(*a, **k):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken_compile)
    x = torch.rand(1, 3, 64, 64)
    with pytest.warns(UserWarning, match="torch.compile failed"):
        fast = optimize_for_inference(tiny_net, "cpu", compile=True)
    assert fast.compiled is False
    with torch.inference_mode():
        assert _max_diff(fast(x), tiny_net(x)) < 1e-4


def test_compile_failure_on_first_call_falls_back(tiny_net, monkeypatch):
    def compile_that_fails_later(fn, **k):
        def run(*a):
            raise RuntimeError("backend exploded")
        return run

    monkeypatch.setattr(torch, "compile", compile_that_fails_later)
    x = torch.rand(1, 3, 64, 64)
    fast = optimize_for_inference(tiny_net, "cpu", compile=True)
    with pytest.warns(UserWarning, match="first call"):
        outs = fast(x)
    assert fast.compiled is False
    with torch.inference_mode():
        assert _max_diff(outs, tiny_net(x)) < 1e-4


def test_cuda_request_without_cuda_is_an_error(tiny_net):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(RuntimeError, match="CUDA"):
        FastNetwork(tiny_net, "cuda")


# ----------------------------------------------------------------------------- CUDA
@needs_cuda
@pytest.mark.parametrize("model,dump", MODELS[:2], ids=[m for m, _ in MODELS[:2]])
def test_cuda_fp32_equals_exact_and_darknet(exact_outputs, model, dump):
    import copy
    net, x, exact, darknet = exact_outputs(model, dump)
    gpu = copy.deepcopy(net)
    for graphs in (False, True):
        fast = optimize_for_inference(gpu, "cuda", cuda_graphs=graphs)
        outs = [o.cpu() for o in fast(x)]
        assert _max_diff(outs, exact) < 1e-4
        for o, ref in zip(outs, darknet):
            assert float(np.abs(o[0].numpy().reshape(ref.shape) - ref).max()) < 1e-4
        # a second call (graph replay) and another batch size (a new graph)
        assert _max_diff([o.cpu() for o in fast(x)], exact) < 1e-4
        two = fast(torch.cat([x, x]))
        assert _max_diff([o[1:].cpu() for o in two], exact) < 1e-4


@needs_cuda
@pytest.mark.parametrize("half", ["fp16", "bf16"])
def test_cuda_half_precision_stays_close(exact_outputs, half):
    import copy
    if half == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    net, x, exact, _ = exact_outputs("yolov4-tiny", "yolov4-tiny__dog")
    fast = optimize_for_inference(copy.deepcopy(net), "cuda", half=half)
    outs = [o.cpu() for o in fast(x)]
    assert all(o.dtype == torch.float32 for o in outs)
    assert _max_diff(outs, exact) < (0.05 if half == "fp16" else 0.3)
