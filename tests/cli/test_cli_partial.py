"""`darknet-py partial` run as a user would, against Darknet's recorded outputs."""
import hashlib
import json
import subprocess
import sys

import pytest

from conftest import REFDATA, require


def run_cli(*args, cwd=None, input=None):
    return subprocess.run([sys.executable, "-m", "darknet_py.cli", *map(str, args)], cwd=cwd,
                          input=input, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("cut", [15, 29])
def test_partial_matches_darknet(cut, tmp_path):
    ref = json.loads(require(REFDATA / "oracle" / "partial" / "partial_results.json")
                     .read_text())[f"cut_{cut}"]
    out = tmp_path / f"yolov4-tiny.conv.{cut}"
    r = run_cli("partial", REFDATA / "cfg/darknet/yolov4-tiny.cfg",
                REFDATA / "weights/yolov4-tiny.weights", out, cut)
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    assert len(data) == ref["bytes"]
    assert hashlib.sha256(data).hexdigest() == ref["sha256"]
    assert f"Done! Loaded {cut} layers from weights-file" in r.stderr
    assert "   layer   filters  size/strd(dil)      input                output" in r.stderr


def test_partial_errors_are_one_line(tmp_path):
    r = run_cli("partial", REFDATA / "cfg/darknet/yolov4-tiny.cfg", tmp_path / "nope.weights",
                tmp_path / "out", 29)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("darknet-py: weights error:")
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()
    bad = tmp_path / "bad.cfg"
    bad.write_text("[net]\nwidth=416\nheight=416\nchannels=3\n[convolutional]\nfilters=x\n")
    r = run_cli("partial", bad, REFDATA / "weights/yolov4-tiny.weights", tmp_path / "out", 1)
    assert r.returncode == 1 and f"{bad}:6:" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("partial", bad)
    assert r.returncode == 2 and "Missing argument" in r.stderr
