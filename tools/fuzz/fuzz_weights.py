"""Coverage-guided fuzzing of the Darknet ``.weights`` reader with atheris.

    pip install atheris
    python tools/fuzz/fuzz_weights.py -atheris_runs=200000 [corpus_dir]
    python tools/fuzz/fuzz_weights.py -rss_limit_mb=2048 -timeout=30 corpus_dir

Each input is written as a weights file and loaded into a small fixed network (the corpus model
``tests/data/bad/good/tiny.cfg`` by default, ``DARKNET_PY_FUZZ_CFG=<cfg>`` for another). Seed
the corpus with real files (``cp tests/data/bad/good/tiny.weights tests/data/bad/weights/*
tools/fuzz/corpus_weights/``). Contract: ``load_weights`` either raises
:class:`darknet_py.errors.WeightsError` or loads every float the network needs, reports the
bytes left over exactly, and never reads more than that into memory (``-rss_limit_mb`` checks
it). A second mode (first byte odd) feeds the bytes to ``load_state_dict_file`` (torch's
``weights_only`` unpickler), which may only raise ``WeightsError``.

Not part of CI (atheris is not a dependency); the hypothesis tests are.
"""
from __future__ import annotations

import os
import sys
import tempfile
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

import atheris  # noqa: E402
import cv2  # noqa: E402,F401  (imported first so that only darknet_py is instrumented)
import numpy  # noqa: E402,F401
import torch  # noqa: E402

with atheris.instrument_imports(include=["darknet_py"]):
    from darknet_py.errors import WeightsError
    from darknet_py.model.network import Network

torch.set_num_threads(1)
warnings.simplefilter("ignore")
CFG = os.environ.get("DARKNET_PY_FUZZ_CFG",
                     os.path.join(REPO, "tests", "data", "bad", "good", "tiny.cfg"))
NET = Network.from_cfg(CFG)
NEED = NET.num_weight_floats()
PATH = os.path.join(tempfile.mkdtemp(prefix="fuzz_weights_"), "input.weights")


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    with open(PATH, "wb") as f:
        f.write(data[1:])
    if data[0] & 1:
        try:
            NET.load_state_dict_file(PATH)
        except WeightsError:
            pass
        return
    try:
        rep = NET.load_weights(PATH)
    except WeightsError:
        return
    if rep.floats_read != NEED:
        raise AssertionError(f"loaded {rep.floats_read} floats, the network needs {NEED}")
    if rep.bytes_left != len(data) - 1 - rep.header.nbytes - 4 * NEED:
        raise AssertionError(f"bytes_left {rep.bytes_left} is wrong for a {len(data) - 1}-byte "
                             "file")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
