"""Coverage-guided fuzzing of the cfg parser and the network builder with atheris.

    pip install atheris
    python tools/fuzz/fuzz_cfg.py -atheris_runs=200000 [corpus_dir]
    python tools/fuzz/fuzz_cfg.py -max_total_time=600 -rss_limit_mb=4096 -timeout=30 corpus_dir

Two input modes, chosen by the first byte: raw bytes written to a file and read with
``read_cfg`` (exercises the reader: encodings, NUL bytes, odd lines), or bytes steered through
:mod:`cfg_vocab` (real section names and options, good and hostile values) so the fuzzer reaches
the layer constructors. The contract is the one of ``tests/test_fuzz.py``: only
:class:`darknet_py.errors.DarknetError` may escape, and a network that builds runs its forward
pass with every layer's output of its ``out_shape`` size. Anything else is reported by atheris
as a crash with the input saved (``crash-<sha1>``); replay it with
``python tools/fuzz/fuzz_cfg.py crash-<sha1>``.

Not part of CI (atheris is not a dependency); the hypothesis tests are.
"""
from __future__ import annotations

import os
import sys
import tempfile
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import atheris  # noqa: E402
import cv2  # noqa: E402,F401  (imported first so that only darknet_py is instrumented)
import numpy  # noqa: E402,F401
import torch  # noqa: E402

with atheris.instrument_imports(include=["darknet_py"]):
    from darknet_py.formats.cfg import parse_cfg_text, read_cfg
    from darknet_py.errors import DarknetError
    from darknet_py.model.network import Network

from cfg_vocab import HOSTILE, LAYER_OPTIONS, NET_OPTIONS, good_values  # noqa: E402

torch.set_num_threads(1)
warnings.simplefilter("ignore")
START_DIR = os.getcwd()
sys.argv = [a if a.startswith("-") or not os.path.exists(a) else os.path.abspath(a)
            for a in sys.argv]
WORKDIR = tempfile.mkdtemp(prefix="fuzz_cfg_")
os.chdir(WORKDIR)                      # tree=/map= names are opened relative to the cwd
CFG_PATH = os.path.join(WORKDIR, "input.cfg")
SECTION_TYPES = sorted(LAYER_OPTIONS)
FORWARD_BUDGET = 2_000_000


def _value(fdp: "atheris.FuzzedDataProvider", kind: str) -> str:
    pick = fdp.ConsumeIntInRange(0, 9)
    if pick < 6:
        return fdp.PickValueInList(list(good_values(kind)))
    if pick < 8:
        return fdp.PickValueInList(list(HOSTILE))
    return str(fdp.ConsumeIntInRange(-70000, 70000))


def _structured_text(fdp: "atheris.FuzzedDataProvider") -> str:
    lines = ["[net]"]
    for key in ("width", "height", "channels"):
        lines.append(f"{key}={_value(fdp, NET_OPTIONS[key])}")
    net_keys = sorted(NET_OPTIONS)
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        key = fdp.PickValueInList(net_keys)
        lines.append(f"{key}={_value(fdp, NET_OPTIONS[key])}")
    for _ in range(fdp.ConsumeIntInRange(1, 8)):
        kind = fdp.PickValueInList(SECTION_TYPES)
        lines += ["", f"[{kind}]"]
        keys = sorted(LAYER_OPTIONS[kind])
        for _ in range(fdp.ConsumeIntInRange(0, len(keys))):
            key = fdp.PickValueInList(keys)
            lines.append(f"{key}={_value(fdp, LAYER_OPTIONS[kind][key])}")
    return "\n".join(lines) + "\n"


def check_network(text: str, path: str) -> None:
    try:
        net = Network(parse_cfg_text(text, path), path)
    except DarknetError:
        return
    sizes = [l.out_shape[0] * l.out_shape[1] * l.out_shape[2] for l in net.layers]
    if sum(sizes) > FORWARD_BUDGET or net.num_weight_floats() > FORWARD_BUDGET:
        return
    net.eval()
    try:
        with torch.no_grad():
            outs = net.forward_all(torch.rand(1, net.channels, net.height, net.width))
    except DarknetError:
        return
    for layer, out, size in zip(net.layers, outs, sizes):
        if out[0].numel() != size:
            raise AssertionError(f"layer {layer.index} [{layer.section.type}] output "
                                 f"{tuple(out.shape)} does not match out_shape {layer.out_shape}")


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    if data[0] & 1:                    # raw bytes through the file reader
        with open(CFG_PATH, "wb") as f:
            f.write(data[1:])
        try:
            read_cfg(CFG_PATH)
        except DarknetError:
            return
        check_network(data[1:].decode("utf-8"), CFG_PATH)
    else:
        check_network(_structured_text(atheris.FuzzedDataProvider(data[1:])), "<fuzz>")


def main() -> None:
    argv = list(sys.argv)
    if not any(a.startswith("-artifact_prefix=") for a in argv):
        # the harness works in a temp folder; crash files go where it was started from
        argv.insert(1, f"-artifact_prefix={START_DIR}{os.sep}")
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
