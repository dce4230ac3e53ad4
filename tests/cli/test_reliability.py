"""Nothing a user owns is destroyed, and no input or client kills the process.

The second half of the reliability corpus (the first is ``test_bad_inputs.py``, whose helpers
this file shares): backends called from several threads, decompression bombs, outputs aimed at
inputs, two trainings into one backup folder, hostile HTTP clients, and the user errors that
used to end in a traceback. Each test failed on the code before its fix; docs/reliability.md
lists what each one proves.
"""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from conftest import REFDATA, require

from test_bad_inputs import (CORPUS, DETECT, assert_clean_error, changed, run_inproc,  # noqa: F401
                             snapshot, work)

FASTEST = REFDATA / "weights" / "yolo-fastest"
IMAGES = ["dog", "horses", "person", "giraffe", "eagle", "scream"]


# ----------------------------------------------------------------------------- threads
def _installed_backends():
    import importlib.util

    import torch
    names = ["exact", "fast"]
    if importlib.util.find_spec("onnx") is not None:
        names += [n for n in ("onnxruntime", "openvino") if importlib.util.find_spec(n)]
    if torch.cuda.is_available():
        names.append("cuda")
    return names


@pytest.mark.parametrize("backend", _installed_backends())
def test_every_backend_gives_each_thread_its_own_result(backend):
    """6 threads detect on 6 different images, 3 times each, through one Detector: every call
    returns exactly the detections of a single-threaded run on its own image. The OpenVINO
    backend shared one infer request: other images' detections, and "Infer Request is busy"."""
    from darknet_py.infer.detector import Detector
    cfg = require(FASTEST / "yolo-fastest-1.1.cfg")
    images = [str(require(REFDATA / "images" / f"{n}.jpg")) for n in IMAGES]
    det = Detector(cfg, FASTEST / "yolo-fastest-1.1.weights", backend=backend,
                   device="cuda" if backend == "cuda" else "cpu", thresh=0.1)

    def listing(path):
        (d,) = det(path)
        return [(o.class_id, round(o.confidence, 3), tuple(round(v, 1) for v in o.box))
                for o in d.detections]

    want = {p: listing(p) for p in images}
    assert sum(map(len, want.values())) > 10          # something to mix up
    got, errors = [], []
    start = threading.Barrier(len(images))

    def work_on(path):
        start.wait()
        for _ in range(3):
            try:
                got.append((path, listing(path)))
            except Exception as e:                     # noqa: BLE001 - reported below
                errors.append(repr(e))

    threads = [threading.Thread(target=work_on, args=(p,)) for p in images]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(got) == 3 * len(images)
    assert [p for p, dets in got if dets != want[p]] == []
