"""``cfg show`` (Darknet's layer table) and ``cfg custom --anchors`` on the command line."""
from __future__ import annotations

import os

from click.testing import CliRunner

from conftest import refpath, require

from darknet_py.cli import main as cli_main
from darknet_py.formats.cfg import read_cfg


def run(args, cwd):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli_main, [str(a) for a in args])
    finally:
        os.chdir(old)


def test_cfg_show_prints_darknets_table(tmp_path):
    cfg = require(refpath("cfg", "darknet", "yolov4-tiny.cfg"))
    oracle = require(refpath("oracle", "network_tables", "yolov4-tiny.stderr.txt")).read_text()
    res = run(["cfg", "show", cfg], tmp_path)
    assert res.exit_code == 0, res.output
    first, rest = res.stdout.split("\n", 1)
    assert first == "mini_batch = 1, batch = 1, time_steps = 1, train = 0 "
    assert rest == oracle
    res = run(["cfg", "table", cfg, "-width", 320, "--height=320"], tmp_path)
    assert "   0 conv     32       3 x 3/ 2    320 x 320 x   3 ->  160 x 160 x  32" in res.stdout
    res = run(["cfg", "show", "nope.cfg"], tmp_path)
    assert (res.exit_code, res.output.strip()) == (1, "darknet-py: cfg error: nope.cfg: cfg file "
                                                      "not found")


def test_cfg_custom_anchors(tmp_path):
    src = require(refpath("cfg", "darknet", "yolov4-tiny-custom.cfg"))
    anchors = " 10, 14,  23, 27,  37, 58,  81, 82, 135,169, 344,319"   # calc_anchors' layout
    (tmp_path / "anchors.txt").write_text(" 11, 15,  24, 28,  38, 59,  82, 83, 136,170, 345,320")
    res = run(["cfg", "custom", "--classes", 3, "--from", src, "-o", "a.cfg", "--anchors", anchors],
              tmp_path)
    assert res.exit_code == 0, res.output
    res = run(["cfg", "custom", "--classes", 3, "--from", src, "-o", "b.cfg", "--anchors-from",
               "anchors.txt"], tmp_path)
    assert res.exit_code == 0, res.output
    for name, first in (("a.cfg", 10.0), ("b.cfg", 11.0)):
        heads = [s for s in read_cfg(str(tmp_path / name)) if s.type == "yolo"]
        assert len(heads) == 2
        for h in heads:
            assert h.float_list("anchors")[0] == first and len(h.float_list("anchors")) == 12
            assert h.int("num", 0) == 6 and h.int("classes", 0) == 3
    for bad, text in (("10,14,23", "expected width,height pairs, got 3 values"),
                      ("10,x", "'x' is not a number"), ("10,14, 0,3", "must be positive"),
                      ("10,14, 20,30", "mask index 3: give at least 6 anchors")):
        res = run(["cfg", "custom", "--classes", 3, "--from", src, "-o", "c.cfg", "--anchors",
                   bad], tmp_path)
        assert res.exit_code == 2 and text in res.output and "Traceback" not in res.output
    assert not (tmp_path / "c.cfg").exists()
