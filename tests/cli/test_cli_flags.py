"""Darknet's flags on darknet-py's command line (``darknet_py/commands/_flags.py``).

Every Darknet flag that AlexeyAB's ``run_detector`` (src/detector.c) and ``main`` (src/darknet.c)
read is walked for every Darknet command: an option of the command works in both spellings with
the same result, a flag Darknet's command uses that darknet-py lacks is a one-line usage error
naming it, a flag Darknet reads but ignores for that command is ignored with a warning; an unknown
flag is a usage error on every command. In-process through click's runner, on files that do not
exist (each command stops at its first file check), so the whole walk takes about a second.
"""
from __future__ import annotations

import os
import re

import click
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import refpath, require

from darknet_py.cli import GROUPS, main as cli_main
from darknet_py.commands import _flags

# AlexeyAB/darknet src/detector.c run_detector() and src/darknet.c main(): every find_*arg call,
# written out here independently of the table the code uses
DARKNET_C = ("-dont_show -benchmark -benchmark_layers -show -letter_box -map -points:int "
             "-show_imgs -mjpeg_port:int -avgframes:int -dontdraw_bbox -json_port:int "
             "-http_post_host:str -time_limit_sec:int -out_filename:str -json_file_output:str "
             "-out:str -prefix:str -thresh:float -iou_thresh:float -hier:float -c:int -s:int "
             "-num_of_clusters:int -width:int -height:int -ext_output -save_labels -chart:str "
             "-mAP_epochs:int -gpus:str -clear -i:int -cuda_debug_sync")

BASE = {
    "detector test": ["nope.data", "nope.cfg", "nope.weights", "nope.jpg"],
    "detector train": ["nope.data", "nope.cfg"],
    "detector valid": ["nope.data", "nope.cfg", "nope.weights"],
    "detector map": ["nope.data", "nope.cfg", "nope.weights"],
    "detector demo": ["nope.data", "nope.cfg", "nope.weights", "nope.mp4"],
    "detector calc_anchors": ["nope.data"],
    "partial": ["nope.cfg", "nope.weights", "nope.out", "1"],
    "detect": ["nope.cfg", "nope.weights", "nope.jpg"],
}
VALUE = {"flag": [], "int": ["1"], "float": ["0.5"], "str": ["x"]}


def run(args, cwd):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli_main, args)
    finally:
        os.chdir(old)


def command(key):
    group, _, name = key.rpartition(" ")
    return GROUPS[group or None].commands[name]


def test_table_is_darknets_flag_list():
    want = dict(f.lstrip("-").partition(":")[::2] for f in DARKNET_C.split())
    assert {k: v or "flag" for k, v in want.items()} == _flags.DARKNET_FLAGS
    assert set(_flags.USES) == set(BASE)
    for key, used in _flags.USES.items():
        assert used <= _flags.PARSED[key]


WALK = [(key, flag) for key in BASE for flag in sorted(_flags.PARSED[key])]


@pytest.mark.parametrize("key,flag", WALK, ids=[f"{k}:{f}" for k, f in WALK])
def test_every_darknet_flag(key, flag, tmp_path):
    args = key.split() + BASE[key]
    value = VALUE[_flags.DARKNET_FLAGS[flag]]
    res = run(args + [f"-{flag}"] + value, tmp_path)
    out = res.output
    assert "Traceback" not in out and "No such option" not in out
    assert "no such option" not in out
    if flag in _flags.not_implemented(key, command(key)):
        assert res.exit_code == 2
        assert out.strip() == (f"darknet-py: usage error: -{flag} is a Darknet flag that "
                               f"darknet-py does not implement (for {key})")
    elif _flags._canonical(f"-{flag}", _flags._options(command(key))) is not None:
        assert "ignored" not in out
        assert "does not implement" not in out
        twin = run(args + [f"--{flag}"] + value, tmp_path)
        assert (twin.exit_code, twin.output) == (res.exit_code, out)
    else:
        assert f"darknet-py: warning: ignored: -{flag} is not supported by {key}" in out
        assert "does not implement" not in out


ALL = [f"{g or ''} {n}".strip() for g, grp in GROUPS.items() for n, c in grp.commands.items()
       if not isinstance(c, click.Group)]


@pytest.mark.parametrize("key", ALL)
def test_unknown_flag_is_a_usage_error_on_every_command(key, tmp_path):
    res = run(key.split() + BASE.get(key, ["nope"]) + ["-bogus", "3"], tmp_path)
    assert res.exit_code == 2, res.output
    assert res.output.strip().startswith(f"darknet-py: usage error: no such option -bogus for {key}")
    assert "Traceback" not in res.output


@pytest.mark.parametrize("args,message", [
    ("detector train x.data y.cfg -mjpeg_port 8090",
     "-mjpeg_port is a Darknet flag that darknet-py does not implement"),
    ("detector train x.data y.cfg -show_imgs",
     "-show_imgs is a Darknet flag that darknet-py does not implement"),
    ("detector test x.data y.cfg z.weights -benchmark_layers",
     "-benchmark_layers is a Darknet flag that darknet-py does not implement"),
    ("detector demo x.data y.cfg z.weights -json_port 8070",
     "-json_port is a Darknet flag that darknet-py does not implement"),
    ("detector demo x.data y.cfg z.weights -http_post_host h",
     "-http_post_host is a Darknet flag that darknet-py does not implement"),
    ("detector test x.data y.cfg z.weights -thres 0.5", "no such option -thres for detector test "
     "(did you mean -thresh?)"),
    ("cfg custom --clases 3", "no such option --clases for cfg custom (did you mean --classes?)"),
])
def test_issue_examples(args, message, tmp_path):
    """The issue's commands; each flag defined by a command later makes its case pass through."""
    cmd = command(" ".join(args.split()[:2]) if args.startswith("detector") else "cfg custom")
    flag = re.search(r"(-\w+)", message).group(1)
    if message.endswith("not implement") and _flags._canonical(flag, _flags._options(cmd)):
        pytest.skip(f"{flag} is implemented now")
    res = run(args.split(), tmp_path)
    assert res.exit_code == 2
    assert message in res.output and len(res.output.strip().splitlines()) == 1


def test_map_gpus_is_ignored_with_a_warning(tmp_path):
    res = run("detector map x.data y.cfg z.weights -gpus 0".split(), tmp_path)
    assert res.exit_code == 1   # went on: the data file is missing
    lines = res.output.strip().splitlines()
    assert lines[0].startswith("darknet-py: warning: ignored: -gpus is not supported")
    assert lines[1] == "darknet-py: data error: x.data: data file not found"


def test_an_option_a_command_defines_is_not_reported_missing():
    """The command's own options come first: defining -mjpeg_port removes the error."""
    @click.command()
    @click.option("-mjpeg_port", type=int)
    def cmd(mjpeg_port):
        pass
    assert _flags.check_args("detector train", cmd, ["--mjpeg_port=8090"]) == ["-mjpeg_port=8090"]
    assert "-mjpeg_port" not in _flags.help_epilog("detector train", cmd)
    with pytest.raises(Exception, match="-mjpeg_port is a Darknet flag"):
        _flags.check_args("detector train", click.Command("x"), ["-mjpeg_port", "1"])


def test_values_and_negative_numbers_pass_through():
    @click.command()
    @click.option("-thresh", type=float)
    @click.option("-o", "out")
    def cmd(thresh, out):
        pass
    assert _flags.check_args("export", cmd, ["--thresh", "-0.5", "-omodel.onnx", "-1"]) == \
        ["-thresh", "-0.5", "-omodel.onnx", "-1"]


def test_calc_anchors_double_dash_clusters(tmp_path):
    """``--num_of_clusters 3`` writes 3 anchors (it used to be dropped silently: 5)."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(12):
        (tmp_path / f"im{i}.txt").write_text(
            "".join(f"0 0.5 0.5 {w:.3f} {h:.3f}\n" for w, h in rng.uniform(0.05, 0.9, (3, 2))))
        lines.append(str(tmp_path / f"im{i}.jpg"))
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "obj.data").write_text(f"classes=1\ntrain={tmp_path}/train.txt\n")
    res = run(["detector", "calc_anchors", "obj.data", "--num_of_clusters", "3", "--width=416",
               "--height", "416", "-seed", "1"], tmp_path)
    assert res.exit_code == 0, res.output
    assert len(re.findall(r"\d+", (tmp_path / "anchors.txt").read_text())) == 2 * 3
    # not a terminal: one progress line, not one per box
    assert res.output.count("loaded \t image") == 1
    assert "loaded \t image: 12 \t box: 36" in res.output


def test_show_batch_double_dash_n(tmp_path):
    """``show_batch --n 2`` writes 2 images (it used to write the default 16)."""
    import cv2
    cfg = require(refpath("cfg", "darknet", "yolov4-tiny-custom.cfg"))
    lines = []
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"im{i}.jpg"), np.full((64, 80, 3), 90 + i, np.uint8))
        (tmp_path / f"im{i}.txt").write_text("0 0.5 0.5 0.4 0.4\n")
        lines.append(str(tmp_path / f"im{i}.jpg"))
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "obj.data").write_text(f"classes=1\ntrain={tmp_path}/train.txt\n")
    res = run(["detector", "show_batch", "obj.data", str(cfg), "--n", "2", "--out_dir", "out",
               "--seed", "0"], tmp_path)
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(tmp_path / "out")) == ["aug_0000.jpg", "aug_0001.jpg"]


def test_user_files_are_checked_before_the_layer_table(tmp_path):
    """A missing image or names file is reported before the network is built (no table)."""
    cfg = require(refpath("cfg", "darknet", "yolov4-tiny.cfg"))
    weights = require(refpath("weights", "yolov4-tiny.weights"))
    (tmp_path / "coco.names").write_text("a\n" * 80)
    (tmp_path / "obj.data").write_text("classes=80\nnames=coco.names\n")
    (tmp_path / "nonames.data").write_text("classes=80\nnames=nope.names\n")
    for data, image, message in (
            ("obj.data", "nope.jpg", "darknet-py: data error: nope.jpg: cannot load image: "
                                     "file not found"),
            ("nonames.data", str(refpath("images", "dog.jpg")),
             "darknet-py: data error: nope.names: names file 'nope.names' (names= in "
             "nonames.data) not found")):
        res = run(["detector", "test", data, str(cfg), str(weights), image], tmp_path)
        assert res.exit_code == 1
        assert res.output.strip() == message   # nothing else: no layer table, no weights line
    res = run(["detector", "map", "obj.data", str(cfg), "nope.weights"], tmp_path)
    assert res.output.strip() == "darknet-py: weights error: nope.weights: weights file not found"
    res = run(["partial", str(cfg), "nope.weights", "out.weights", "29"], tmp_path)
    assert res.output.strip() == "darknet-py: weights error: nope.weights: weights file not found"
