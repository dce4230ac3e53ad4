"""Property-based fuzzing of the cfg parser, the network builder and the weights reader.

Contracts checked on generated inputs:

* cfg text -> :class:`Network`: only :class:`~darknet_py.errors.DarknetError` may escape (never
  ValueError, ZeroDivisionError, IndexError, OverflowError, a torch RuntimeError, MemoryError);
  a network that builds runs its forward pass at the cfg size and every layer's output has the
  element count of its ``out_shape`` (a forward may refuse with a DarknetError, as ``[reorg]``
  does for inputs Darknet would read out of bounds);
* bytes -> cfg file: only :class:`~darknet_py.errors.CfgError`;
* damaged weights file -> ``load_weights``: only :class:`~darknet_py.errors.WeightsError` or a
  complete load;
* memory: hostile sizes are refused before anything big is allocated (checked in a process whose
  address space is capped);
* damaged image files -> ``decode_image``: refused from the header when it announces more than
  the pixel cap, else decoded at the announced size, or a :class:`~darknet_py.errors.DataError`.

Deterministic (``derandomize=True``) and CI-sized (``max_examples`` 100-400 per property, about
30 s in all). ``DARKNET_PY_FUZZ_EXAMPLES=N`` runs N examples per property instead (and
``DARKNET_PY_FUZZ_RANDOM=1`` random ones) for a longer local session
(``pytest --hypothesis-show-statistics`` shows how many built and ran,
``DARKNET_PY_FUZZ_WHY=1`` why the others were refused); the atheris harnesses in
``tools/fuzz/`` do coverage-guided fuzzing of the same entry points.
"""
from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import REFDATA, REPO

from darknet_py.formats.cfg import parse_cfg_text, read_cfg
from darknet_py.errors import CfgError, DarknetError, WeightsError
from darknet_py.model.network import Network

sys.path.insert(0, str(REPO / "tools" / "fuzz"))
from cfg_vocab import (HEAD_EXTRA_CHANNELS, HOSTILE, LAYER_OPTIONS, NET_OPTIONS,  # noqa: E402
                       REQUIRED, good_values, head_with_matching_conv)

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "files" / "bad"
TINY_CFG = CORPUS / "good" / "tiny.cfg"
TINY_WEIGHTS = CORPUS / "good" / "tiny.weights"

#: a forward pass is run only on networks whose outputs hold fewer floats than this in all,
#: and whose weights fewer than WEIGHTS_BUDGET (yolov4-tiny at 64x64 fits both)
FORWARD_BUDGET = 2_000_000
WEIGHTS_BUDGET = 10_000_000


def fuzz_settings(examples: int):
    n = int(os.environ.get("DARKNET_PY_FUZZ_EXAMPLES", examples))
    return settings(max_examples=n, deadline=None,
                    derandomize=not os.environ.get("DARKNET_PY_FUZZ_RANDOM"), database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much],
                    print_blob=True)


# ----------------------------------------------------------------------------- strategies
@st.composite
def options(draw, table: dict, required=()):
    """``key=value`` lines: values that build real layers, or (in one section of ten) a mix
    with hostile ones."""
    optional = sorted(set(table) - set(required))
    keys = list(required)
    if optional:
        keys += draw(st.lists(st.sampled_from(optional), max_size=6, unique=True))
    hostile = draw(st.floats(0, 1)) < 0.1
    out = []
    for key in keys:
        kind = table[key]
        if hostile and draw(st.booleans()):
            value = draw(st.one_of(st.sampled_from(HOSTILE), st.integers(-70000, 70000).map(str)))
        else:
            value = draw(st.sampled_from(good_values(kind)))
        out.append(f"{key}={value}")
    return out


@st.composite
def cfg_texts(draw):
    lines = ["[net]"] + draw(options(NET_OPTIONS, required=("width", "height", "channels")))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(sorted(LAYER_OPTIONS)))
        if kind in HEAD_EXTRA_CHANNELS and draw(st.booleans()):
            # half of the heads get the conv they need, so later layers are reached too
            head = head_with_matching_conv(kind, draw(st.integers(1, 4)), draw(st.integers(1, 3)))
            lines += [""] + head + draw(options(LAYER_OPTIONS[kind]))
            continue
        lines += ["", f"[{kind}]"] + draw(options(LAYER_OPTIONS[kind], REQUIRED.get(kind, ())))
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the contract
def _event(name: str) -> None:
    """Count outcomes in hypothesis' statistics (pytest --hypothesis-show-statistics)."""
    try:
        event(name)
    except Exception:  # outside a hypothesis test (the plain sampling test)
        pass


def build_and_run(text: str, path: str = "<fuzz>"):
    """Parse, build and (if small) run ``text``; returns the network or None (a DarknetError).

    Any other exception propagates and fails the test, with the cfg text in the report.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            net = Network(parse_cfg_text(text, path), path)
        except DarknetError as e:
            _event(f"refused: {type(e).__name__}" + (
                " " + re.sub(r"\d+", "N", e.message)[:50] if os.environ.get("DARKNET_PY_FUZZ_WHY")
                else ""))
            return None
        sizes = [l.out_shape[0] * l.out_shape[1] * l.out_shape[2] for l in net.layers]
        if sum(sizes) + net.channels * net.height * net.width > FORWARD_BUDGET or \
                net.num_weight_floats() > WEIGHTS_BUDGET:
            _event("built (too big to run)")
            return net
        net.eval()
        try:
            with torch.no_grad():
                outs = net.forward_all(torch.rand(1, net.channels, net.height, net.width))
        except DarknetError:
            _event("built, forward refused (DarknetError)")
            return net
        _event("built and ran")
        for layer, out, size in zip(net.layers, outs, sizes):
            assert out[0].numel() == size, (f"layer {layer.index} [{layer.section.type}] gives "
                                            f"{tuple(out.shape)}, its out_shape is "
                                            f"{layer.out_shape}\n{text}")
        return net


@pytest.fixture(autouse=True, scope="module")
def _restore_cwd():
    """The fuzz tests move to a scratch folder (tree=/map= are read relative to the cwd); the
    tests after this module must not run from there."""
    cwd = os.getcwd()
    yield
    os.chdir(cwd)


@fuzz_settings(400)
@given(cfg_texts())
def test_generated_cfgs_build_or_raise_cfg_errors(tmp_path_factory, text):
    os.chdir(tmp_path_factory.getbasetemp())   # tree=/map= values are read relative to the cwd
    build_and_run(text)


def test_generated_cfgs_build_often_enough():
    """The generator must reach the builder: most examples of a fixed sample parse, and many
    networks build and run (otherwise the property above would test only the parser)."""
    import random
    rng = random.Random(0)
    built = 0
    for _ in range(300):
        lines = ["[net]"] + [f"{k}={rng.choice(good_values(NET_OPTIONS[k]))}"
                             for k in ("width", "height", "channels")]
        for _ in range(rng.randint(1, 6)):
            kind = rng.choice(sorted(LAYER_OPTIONS))
            lines += ["", f"[{kind}]"]
            for key in rng.sample(sorted(LAYER_OPTIONS[kind]),
                                  rng.randint(0, len(LAYER_OPTIONS[kind]))):
                lines.append(f"{key}={rng.choice(good_values(LAYER_OPTIONS[kind][key]))}")
        built += build_and_run("\n".join(lines) + "\n") is not None
    assert built >= 30, built


LINE_EDITS = ("delete", "duplicate", "hostile", "swap", "garbage")
YOLOV4_TINY = REFDATA / "cfg" / "darknet" / "yolov4-tiny.cfg"


@st.composite
def mutated_real_cfgs(draw):
    text = YOLOV4_TINY.read_text()
    text = text.replace("width=416", "width=64").replace("height=416", "height=64")
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        edit = draw(st.sampled_from(LINE_EDITS))
        if edit == "delete":
            del lines[i]
        elif edit == "duplicate":
            lines.insert(i, lines[i])
        elif edit == "hostile" and "=" in lines[i]:
            lines[i] = lines[i].split("=", 1)[0] + "=" + draw(st.sampled_from(HOSTILE))
        elif edit == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            lines.insert(i, draw(st.text(max_size=20)))
        if not lines:
            break
    return "\n".join(lines) + "\n"


@pytest.mark.skipif(not YOLOV4_TINY.exists(), reason=f"reference file missing: {YOLOV4_TINY}")
@fuzz_settings(100)
@given(mutated_real_cfgs())
def test_mutated_yolov4_tiny_cfgs(tmp_path_factory, text):
    os.chdir(tmp_path_factory.getbasetemp())
    build_and_run(text)


@fuzz_settings(200)
@given(st.one_of(st.binary(max_size=400),
                 st.binary(max_size=200).map(lambda b: b"[net]\nwidth=8\n" + b),
                 st.text(max_size=300).map(lambda t: ("[net]\n" + t).encode("utf-8",
                                                                         "surrogatepass"))))
def test_any_bytes_as_cfg_file(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "fuzz.cfg"
    path.write_bytes(data)
    try:
        read_cfg(path)
    except CfgError:
        return
    try:
        build_and_run(data.decode("utf-8"), str(path))
    except UnicodeDecodeError:
        pytest.fail("read_cfg accepted bytes that are not UTF-8")


# ----------------------------------------------------------------------------- weights
_TINY_NET = None


def tiny_net() -> Network:
    global _TINY_NET
    if _TINY_NET is None:
        _TINY_NET = Network.from_cfg(TINY_CFG)
    return _TINY_NET


@st.composite
def damaged_weights(draw):
    data = bytearray(TINY_WEIGHTS.read_bytes())
    edit = draw(st.sampled_from(["truncate", "flip", "append", "header", "splice"]))
    if edit == "truncate":
        del data[draw(st.integers(0, len(data) - 1)):]
    elif edit == "flip":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif edit == "append":
        data += draw(st.binary(min_size=1, max_size=64))
    elif edit == "header":
        int32 = st.integers(-2 ** 31, 2 ** 31 - 1)
        fields = draw(st.tuples(int32, int32, int32))
        data[:12] = struct.pack("<iii", *fields)
    else:
        i = draw(st.integers(0, len(data)))
        data[i:i + draw(st.integers(0, 16))] = draw(st.binary(max_size=16))
    return bytes(data)


@fuzz_settings(200)
@given(damaged_weights())
def test_damaged_weights_load_or_raise_weights_errors(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "fuzz.weights"
    path.write_bytes(data)
    net = tiny_net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            rep = net.load_weights(path)
        except WeightsError:
            return
    assert rep.floats_read == net.num_weight_floats()
    assert rep.bytes_left == len(data) - rep.header.nbytes - 4 * rep.floats_read


@fuzz_settings(100)
@given(st.binary(max_size=2000))
def test_any_bytes_as_weights_file(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "fuzz_raw.weights"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tiny_net().load_weights(path)
        except WeightsError:
            pass


# ----------------------------------------------------------------------------- image headers
_IMAGE_FORMATS = (".jpg", ".png", ".bmp", ".tiff", ".webp", ".ppm", ".gif")


def _small_image(ext: str) -> bytes:
    import cv2
    import numpy as np
    img = (np.arange(12 * 16 * 3) % 251).astype(np.uint8).reshape(12, 16, 3)
    if ext == ".gif":   # not every OpenCV build writes GIF: a minimal one by hand (1x1)
        return (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff,\x00\x00"
                b"\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


@st.composite
def damaged_images(draw):
    """A small real image of each format whose header is read, with header bytes overwritten
    (size fields among them), bytes inserted, or cut short."""
    data = bytearray(_small_image(draw(st.sampled_from(_IMAGE_FORMATS))))
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["overwrite", "insert", "cut"]))
        i = draw(st.integers(0, min(len(data), 80)))
        if how == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=4))
            data[i:i + len(chunk)] = chunk
        elif how == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


@fuzz_settings(150)
@given(st.one_of(damaged_images(), st.binary(max_size=300)))
def test_damaged_image_headers_are_refused_or_decoded_within_the_cap(tmp_path_factory, data):
    """The header reader never raises; decode_image gives a uint8 image of at most the cap
    (here 4096 pixels), of the size the header announced, or a DataError, nothing else.
    Files whose header is not read are left out (OpenCV's own limit, not ours, applies to
    them, and a fuzzed one could announce a billion pixels)."""
    from darknet_py.errors import DataError
    from darknet_py.imaging.image import decode_image
    from darknet_py.imaging.image_header import MAX_PIXELS_ENV, header_of_bytes
    header = header_of_bytes(data)
    if header is None:
        event("no header read")
        return
    path = tmp_path_factory.getbasetemp() / "fuzz.img"
    path.write_bytes(data)
    old = os.environ.get(MAX_PIXELS_ENV)
    os.environ[MAX_PIXELS_ENV] = "4096"
    try:
        mat = decode_image(path, 3)
    except DataError:
        event("refused")
        return
    finally:
        if old is None:
            del os.environ[MAX_PIXELS_ENV]
        else:
            os.environ[MAX_PIXELS_ENV] = old
    event("decoded")
    assert mat.dtype.name == "uint8" and mat.shape[0] * mat.shape[1] <= 4096
    assert (mat.shape[1], mat.shape[0]) == (header.width, header.height)


def test_every_weights_truncation_of_a_real_file_is_a_weights_error(tmp_path):
    """All 876 prefixes of the tiny file (exhaustive, not sampled)."""
    data = TINY_WEIGHTS.read_bytes()
    net = tiny_net()
    path = tmp_path / "cut.weights"
    for n in range(len(data)):
        path.write_bytes(data[:n])
        with pytest.raises(WeightsError):
            net.load_weights(path)
    path.write_bytes(data)
    assert net.load_weights(path).bytes_left == 0


# ----------------------------------------------------------------------------- memory bound
MEMORY_PROBE = r'''
import os, resource, sys, warnings
warnings.simplefilter("ignore")
import torch
from darknet_py.formats.cfg import parse_cfg_text
from darknet_py.errors import CfgError
from darknet_py.model.network import Network
torch.zeros(1)
def vm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
cap = vm_bytes() + int(sys.argv[2]) * (1 << 20)
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
base = open(sys.argv[1]).read()
def before_yolo(section):
    return base.replace("[yolo]", section + "\n\n[yolo]")
route300 = "[route]\nlayers=" + ",".join(["-1"] * 300) + "\n\n"
cases = {
    "width=100000": base.replace("width=32", "width=100000"),
    "width=height=16384": base.replace("width=32", "width=16384")
                              .replace("height=32", "height=16384"),
    "channels=100000000": base.replace("channels=3", "channels=100000000"),
    "filters=100000000": base.replace("filters=4", "filters=100000000"),
    "size=100001": base.replace("size=3", "size=100001"),
    "num=1000000000": base.replace("num=3", "num=1000000000"),
    "max=2000000000": base.replace("num=3", "num=3\nmax=2000000000"),
    "upsample stride=100000": before_yolo("[upsample]\nstride=100000"),
    "maxpool size=1000000000": before_yolo("[maxpool]\nsize=1000000000"),
    "connected output=1000000000": before_yolo("[connected]\noutput=1000000000"),
    "implicit filters=2000000000": before_yolo("[implicit]\nfilters=2000000000"),
    "route x300": before_yolo(route300 * 4),  # each doubles the channels 300 times over
}
for name, text in cases.items():
    try:
        Network(parse_cfg_text(text, name), name)
        print("BUILT", name)
    except CfgError as e:
        print("CFGERROR", name, "|", str(e)[:120])
# weights: a 4 GiB sparse file and /dev/zero cost no more than the network needs
from darknet_py.formats.weights import load_weights
net = Network.from_cfg(sys.argv[1])
big = sys.argv[3]
with open(big, "r+b") as f:
    f.truncate(4 << 30)
rep = load_weights(net, big)
print("WEIGHTS", rep.floats_read, rep.bytes_left)
rep = load_weights(net, "/dev/zero")
print("DEVZERO", rep.floats_read)
try:
    from darknet_py.formats.cfg import read_cfg
    read_cfg("/dev/zero")
except CfgError as e:
    print("CFGZERO", e)
print("PEAK_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
'''


def test_hostile_sizes_never_allocate_gigabytes(tmp_path):
    """Under a 512 MiB address-space cap (beyond what torch already mapped), every hostile size
    is a CfgError and a 4 GiB weights file loads with a warning: nothing big is allocated."""
    big = tmp_path / "huge.weights"
    big.write_bytes(TINY_WEIGHTS.read_bytes())
    probe = tmp_path / "probe.py"
    probe.write_text(MEMORY_PROBE)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, str(probe), str(TINY_CFG), "512", str(big)],
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout
    assert "BUILT" not in out and out.count("CFGERROR") == 12, out
    assert "WEIGHTS 214 4294966420" in out, out          # 4 GiB - 20 header - 856 used
    assert "DEVZERO 214" in out and "CFGZERO" in out, out


# ----------------------------------------------------------------------------- regressions
def test_share_index_to_a_layer_that_shares_itself():
    """atheris find: share_index naming a conv that shares another conv crashed with
    AttributeError; like Darknet (which copies the weight pointers) it uses the first conv's."""
    text = "\n".join([
        "[net]", "width=16", "height=16", "channels=4", "",
        "[convolutional]", "filters=4", "size=3", "pad=1", "",
        "[convolutional]", "filters=4", "size=3", "pad=1", "share_index=0", "",
        "[convolutional]", "filters=4", "size=3", "pad=1", "share_index=-1", ""])
    net = build_and_run(text)
    assert net.layers[2]._owner() is net.layers[0] and net.num_weight_floats() == 4 + 4 * 4 * 9


def test_maxpool_window_far_larger_than_its_input_is_refused():
    """atheris find: [maxpool] size=6548 (stride 1) on a 24x24 input built, then its forward
    took minutes and 1.3 GB for a global max; such windows are refused at build time, while
    SPP's size=13 on a 1x1 map (yolov4 at a small input size) still builds."""
    text = ("[net]\nwidth=24\nheight=24\nchannels=8\n\n[maxpool]\nsize=6548\n")
    with pytest.raises(CfgError, match="size=6548 is far larger than the 24x24 input"):
        Network(parse_cfg_text(text, "<t>"), "<t>")
    spp = "[net]\nwidth=1\nheight=1\nchannels=8\n\n[maxpool]\nsize=13\nstride=1\n"
    assert build_and_run(spp).layers[0].out_shape == (8, 1, 1)


def test_maxpool_padding_far_larger_than_its_input_is_refused():
    """atheris find: [maxpool] padding=58565 stride_y=67138 on 8x32 gave a small output but the
    forward padded the input to 110 GB (RuntimeError from the allocator)."""
    text = "[net]\nwidth=8\nheight=32\nchannels=8\n\n[maxpool]\nstride_y=67138\npadding=58565\n"
    with pytest.raises(CfgError, match="padding=58565 and stride would pad the 8x32 input"):
        Network(parse_cfg_text(text, "<t>"), "<t>")
