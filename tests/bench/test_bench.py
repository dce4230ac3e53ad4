"""The benchmark (darknet-py bench, tools/benchmark.py) runs and reports; no timing is asserted."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from conftest import REPO
from models import model_files

from darknet_py.cli import main

pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def fake_darknet(tmp_path_factory):
    """A stand-in `darknet` that prints Darknet's "Predicted in" line per image on stdin."""
    folder = tmp_path_factory.mktemp("fake_darknet")
    script = folder / "darknet"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys
        assert sys.argv[1:3] == ["detector", "test"], sys.argv
        for i, line in enumerate(sys.stdin):
            print(f"{{line.strip()}}: Predicted in {{10 + i % 3}}.500000 milli-seconds.")
        """))
    script.chmod(0o755)
    return str(script)


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory, fake_darknet):
    cfg, weights = model_files("yolov4-tiny")
    out = tmp_path_factory.mktemp("bench") / "report.json"
    result = CliRunner().invoke(main, [
        "bench", str(cfg), str(weights), "--quick", "--width", "128", "--height", "128",
        "--variants", "exact,fast,opencv,darknet,cuda-fp16", "--darknet", fake_darknet,
        "--threads", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output, json.loads(out.read_text())


def test_quick_bench_prints_latencies_and_ratios(quick_report):
    text, _ = quick_report
    assert "network only (forward pass)" in text
    assert "end to end (decode + resize + forward + boxes + NMS)" in text
    for label in ("darknet-py exact (cpu fp32)", "darknet-py fast (cpu fp32)", "OpenCV DNN (cpu)",
                  "Darknet (darknet detector test)"):
        assert label in text
    assert "vs opencv" in text and "vs darknet" in text
    fast_line = next(line for line in text.splitlines() if "darknet-py fast (cpu fp32)" in line)
    assert fast_line.rstrip().endswith("x")  # the ratio columns
    assert "threads: torch 1, opencv 1" in text
    assert "machine:" in text and "128x128 batch 1" in text


def test_quick_bench_json_report(quick_report):
    _, rep = quick_report
    assert rep["model"]["width"] == 128 and rep["model"]["batch"] == 1
    assert rep["config"]["threads"] == 1 and rep["config"]["runs"] == 3
    for key in ("cpu", "usable_cpus", "torch", "opencv", "torch_threads", "opencv_threads",
                "omp_wait_policy"):
        assert key in rep["machine"]
    results = {(r["runner"], r["mode"]): r for r in rep["results"]}
    for runner in ("exact", "fast", "opencv"):
        for mode in ("network", "end_to_end"):
            r = results[(runner, mode)]
            assert r["runs"] == 3 and r["median_ms"] > 0 and r["img_per_s"] > 0
            assert r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
    assert set(results[("fast", "network")]["ratios"]) == {"opencv", "darknet"}
    assert results[("opencv", "network")]["ratios"].keys() == {"darknet"}
    dn = results[("darknet", "network")]
    assert dn["interleaved"] is False and dn["runs"] == 3 and dn["median_ms"] == pytest.approx(11.5)
    assert ("darknet", "end_to_end") not in results
    assert rep["build"]["fast"]["plan"].startswith("FastNetwork(device=cpu, dtype=float32")
    if not __import__("torch").cuda.is_available():
        assert any(s["runner"] == "cuda-fp16" for s in rep["skipped"])


def test_opencv_boxes_take_each_rows_best_class_and_nms_per_class():
    import numpy as np

    from darknet_py.bench.opencv import opencv_boxes
    rows = np.array([[0.50, 0.5, 0.2, 0.2, 0.9, 0.9, 0.1],    # class 0
                     [0.51, 0.5, 0.2, 0.2, 0.8, 0.8, 0.0],    # class 0, overlaps the first
                     [0.50, 0.5, 0.2, 0.2, 0.7, 0.0, 0.7],    # class 1, same box: kept
                     [0.10, 0.1, 0.1, 0.1, 0.2, 0.2, 0.0]],   # below the threshold
                    dtype=np.float32)
    [(boxes, conf, cls)] = opencv_boxes([rows[:2], rows[2:]], 1, 200, 100)
    got = sorted((int(c), round(float(p), 3), tuple(np.round(b, 3))) for b, p, c
                 in zip(boxes, conf, cls))
    assert got == [(0, 0.9, (80.0, 40.0, 40.0, 20.0)), (1, 0.7, (80.0, 40.0, 40.0, 20.0))]


def test_missing_darknet_is_skipped_and_said(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    cfg, weights = model_files("yolo-fastest-1.1")
    result = CliRunner().invoke(main, [
        "bench", str(cfg), str(weights), "--quick", "--width", "96", "--height", "96",
        "--variants", "fast,opencv,darknet", "--no-end-to-end", "--batch", "2",
        "--runs", "2", "--warmup", "0"])
    assert result.exit_code == 0, result.output
    assert "skipped darknet:" in result.output
    assert "end to end" not in result.output
    assert "batch 2" in result.output


@pytest.mark.parametrize("args,message", [
    (["--variants", "exact,turbo"], "unknown benchmark variant"),
    (["--width", "100"], "multiple of 32"),
    (["--threads", "0"], "--threads"),
])
def test_bad_options_are_usage_errors(args, message):
    cfg, weights = model_files("yolo-fastest-1.1")
    result = CliRunner().invoke(main, ["bench", str(cfg), str(weights), "--quick"] + args)
    assert result.exit_code == 2
    assert message in result.output


def test_missing_weights_is_a_data_error(tmp_path):
    cfg, _ = model_files("yolo-fastest-1.1")
    result = CliRunner().invoke(main, ["bench", str(cfg), str(tmp_path / "nope.weights"),
                                       "--quick"])
    assert result.exit_code == 1
    assert "weights file not found" in result.output


def test_tools_benchmark_script(tmp_path):
    cfg, weights = model_files("yolo-fastest-1.1")
    out = tmp_path / "r.json"
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "benchmark.py"), str(cfg), str(weights), "--quick",
         "--width", "96", "--height", "96", "--variants", "fast,opencv", "--json", str(out)],
        capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "vs opencv" in proc.stdout
    rep = json.loads(out.read_text())
    assert rep["machine"]["omp_wait_policy"] == "PASSIVE"  # set by the script before torch
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import benchmark
    finally:
        sys.path.remove(str(REPO / "tools"))
    rep["name"] = "yolo-fastest-1.1"
    table = benchmark.markdown_table([rep])
    assert "| yolo-fastest-1.1-96 | 1 | network | darknet-py fast (cpu fp32) |" in table
    assert "1.00x" in table


def test_cfg_with_size_edits_only_the_net_size(tmp_path):
    from darknet_py.bench.runners import cfg_with_size
    from darknet_py.formats.cfg import read_cfg
    src = tmp_path / "m.cfg"
    src.write_text("[net]\n# size\nwidth=416\nheight=416\nchannels=3\n[maxpool]\nsize=2\n")
    out = cfg_with_size(str(src), 320, 256, str(tmp_path))
    assert open(out).read() == "[net]\n# size\nwidth=320\nheight=256\nchannels=3\n[maxpool]\nsize=2\n"
    net = read_cfg(out)[0]
    assert (net.int("width"), net.int("height")) == (320, 256)
