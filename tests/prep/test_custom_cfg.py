"""`darknet-py cfg custom` (darknet_py.prep.custom_cfg) and the face-mask templates
cfg/yolov4-obj.cfg and cfg/yolov4-tiny-obj.cfg."""
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import refpath, require

from darknet_py.formats.cfg import parse_cfg_text, read_cfg
from darknet_py.errors import CfgError, UsageError
from darknet_py.model.network import Network
from darknet_py.train.freeze import BackwardStops
from darknet_py.prep.custom_cfg import (LEARNING_RATE_COMMENT, custom_max_batches, custom_steps,
                                         make_custom_cfg, write_custom_cfg)

REPO = Path(__file__).resolve().parents[2]
UPSTREAM = refpath("cfg", "darknet")
# the seed report's edits: 3 classes, 416x416, batch 64/16, max_batches 6400, steps 4800,5400;
# the shipped templates train at 0.001 (safe when a user shrinks batch and burn_in)
REPORT = dict(width=416, height=416, batch=64, subdivisions=16, max_batches=6400,
              steps=(4800, 5400), mosaic=1, learning_rate=0.001)
TEMPLATES = [("yolov4-custom.cfg", "yolov4-obj.cfg", 3), ("yolov4-tiny-custom.cfg", "yolov4-tiny-obj.cfg", 2)]


def _text(path):
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


@pytest.mark.parametrize("src,dst,n_yolo", TEMPLATES)
def test_template_equals_tool_output(src, dst, n_yolo):
    upstream = _text(require(UPSTREAM / src))
    made = make_custom_cfg(upstream, 3, source=src, **REPORT)
    assert _text(REPO / "cfg" / dst) == made.text
    assert [h[2] for h in made.heads] == [24] * n_yolo


@pytest.mark.parametrize("src,dst,n_yolo", TEMPLATES)
def test_template_values(src, dst, n_yolo):
    """Read back with the project's cfg parser: every value the README asks for."""
    sections = read_cfg(REPO / "cfg" / dst)
    net = sections[0]
    assert net.type == "net"
    assert (net.int("batch"), net.int("subdivisions"), net.int("width"), net.int("height")) == \
        (64, 16, 416, 416)
    assert net.int("max_batches") == 6400 and net.int_list("steps") == [4800, 5400]
    assert net.float_list("scales") == [0.1, 0.1] and net.str("policy") == "steps"
    assert net.int("mosaic") == 1
    yolos = [i for i, s in enumerate(sections) if s.type == "yolo"]
    assert len(yolos) == n_yolo
    for i in yolos:
        assert sections[i].int("classes") == 3
        assert len(sections[i].int_list("mask")) == 3
        assert sections[i - 1].type == "convolutional"
        assert sections[i - 1].int("filters") == (3 + 5) * 3 == 24
        assert sections[i - 1].str("activation") == "linear"
    # nothing else was touched: the other lines are the upstream lines
    up = _text(UPSTREAM / src).splitlines()
    ours = _text(REPO / "cfg" / dst).splitlines()
    # both templates train at 0.001 (yolov4-custom.cfg's own rate; tiny's 0.00261 is lowered
    # by --learning-rate 0.001, since it diverges with small batch and burn_in)
    assert net.float("learning_rate") == 0.001 and net.int("burn_in") == 1000
    if "tiny" in src:
        # upstream tiny has no mosaic line: it is added at the end of [net]
        assert ours.pop(up.index("scales=.1,.1") + 1) == "mosaic=1"
    assert len(ours) == len(up)
    changed = {re.sub(r"\s", "", a).split("=")[0] for a, b in zip(up, ours) if a != b}
    assert changed <= {"width", "height", "subdivisions", "max_batches", "steps", "filters",
                       "classes", "learning_rate"}
    assert sum(a != b for a, b in zip(up, ours)) == 4 + 2 * n_yolo


def test_reproduces_oracle_facemask_cfg():
    """Oracle E's yolov4-tiny-facemask3.cfg = upstream tiny with batch=4, subdivisions=1,
    classes=3, filters=24 and the rest untouched."""
    oracle = _text(require(refpath("oracle", "train_step", "v4tiny_facemask3", "yolov4-tiny-facemask3.cfg")))
    made = make_custom_cfg(_text(UPSTREAM / "yolov4-tiny-custom.cfg"), 3, batch=4, subdivisions=1,
                           keep_schedule=True)
    assert made.text == oracle
    assert made.max_batches == 500200 and made.steps == (400000, 450000)


def test_learning_rate_cap_override_and_warning():
    """0.00261 (tiny) is lowered to 0.001 unless --learning-rate says otherwise; a rate above
    0.001 with a short burn_in is warned about; --keep-schedule keeps the source's rate."""
    up = _text(require(UPSTREAM / "yolov4-tiny-custom.cfg"))
    made = make_custom_cfg(up, 3, batch=16, subdivisions=1, burn_in=40)
    net = parse_cfg_text(made.text)[0]
    assert net.float("learning_rate") == 0.001 and net.int("burn_in") == 40
    assert not made.warnings
    made = make_custom_cfg(up, 3, batch=16, subdivisions=1, burn_in=40, learning_rate=0.00261)
    net = parse_cfg_text(made.text)[0]
    assert net.float("learning_rate") == 0.00261 and LEARNING_RATE_COMMENT not in made.text
    assert any("learning_rate=0.00261 with burn_in=40 can diverge" in w for w in made.warnings)
    made = make_custom_cfg(up, 3, learning_rate=0.002, burn_in=150)
    assert parse_cfg_text(made.text)[0].float("learning_rate") == 0.002 and not made.warnings
    # the quick trial's 0.002 with burn_in=100 learned; 99 is below what was measured
    assert not make_custom_cfg(up, 3, learning_rate=0.002, burn_in=100).warnings
    assert any("burn_in=99 can diverge" in w
               for w in make_custom_cfg(up, 3, learning_rate=0.002, burn_in=99).warnings)
    # yolov4-custom.cfg already trains at 0.001: nothing changes, no comment
    v4 = make_custom_cfg(_text(require(UPSTREAM / "yolov4-custom.cfg")), 3)
    assert LEARNING_RATE_COMMENT not in v4.text and "learning_rate" not in "".join(v4.changes)
    assert "learning_rate=0.00261" in make_custom_cfg(up, 3, keep_schedule=True).text
    made = make_custom_cfg(up, 3, batch=64, subdivisions=16, burn_in=400)   # a shorter burn_in
    assert parse_cfg_text(made.text)[0].float("learning_rate") == 0.001
    assert LEARNING_RATE_COMMENT in made.text
    with pytest.raises(UsageError, match="--keep-schedule cannot be combined"):
        make_custom_cfg(up, 3, keep_schedule=True, learning_rate=0.001)
    with pytest.raises(UsageError, match="--learning-rate must be a positive"):
        make_custom_cfg(up, 3, learning_rate=0)



def test_stopbackward_freezes_from_the_layer_given(tmp_path):
    """--stopbackward 9 (the quick trial's): layer 9 (yolov4-tiny's first maxpool) gets
    stopbackward=1, the network built from the cfg stops its backward pass there (layers 0-9
    are not trained), and an index outside the layers is a usage error naming the range."""
    up = _text(require(UPSTREAM / "yolov4-tiny-custom.cfg"))
    made = make_custom_cfg(up, 3, stopbackward=9)
    layers = parse_cfg_text(made.text)[1:]
    assert layers[9].type == "maxpool" and layers[9].int("stopbackward") == 1
    assert [i for i, sec in enumerate(layers) if sec.has("stopbackward")] == [9]
    assert any("[maxpool] added stopbackward=1" in c for c in made.changes)
    cfg = tmp_path / "frozen.cfg"
    cfg.write_text(made.text)
    net = Network.from_cfg(cfg, batch=1, width=64, height=64)
    stops = BackwardStops.for_network(net)
    assert stops.stops == [(9, 1)] and stops.frozen_through(0) == 9 and stops.train0_below == 9
    with pytest.raises(UsageError, match=r"--stopbackward must be a layer index from 0 to 36"):
        make_custom_cfg(up, 3, stopbackward=37)
    with pytest.raises(UsageError, match=r"--stopbackward must be"):
        make_custom_cfg(up, 3, stopbackward=-1)

def test_readme_rule_for_max_batches_and_steps():
    assert custom_max_batches(1) == 6000 and custom_max_batches(3) == 6000
    assert custom_max_batches(4) == 8000 and custom_max_batches(80) == 160000
    assert custom_max_batches(3, train_images=7000) == 7000
    assert custom_steps(6000) == (4800, 5400) and custom_steps(8000) == (6400, 7200)
    made = make_custom_cfg(_text(require(UPSTREAM / "yolov4-custom.cfg")), 3)
    # README: "max_batches=6000 if you train for 3 classes", "steps=4800,5400"
    assert (made.max_batches, made.steps) == (6000, (4800, 5400))
    net = parse_cfg_text(made.text)[0]
    assert (net.int("batch"), net.int("subdivisions"), net.int("width")) == (64, 16, 608)
    made = make_custom_cfg(_text(UPSTREAM / "yolov4-custom.cfg"), 5, max_batches=6400)
    assert made.steps == (5120, 5760) and made.warnings  # below the rule for 5 classes: warned


def test_upstream_detection_cfgs_are_fixed_points():
    """Every upstream detection cfg already follows the filters rule: asking for its own class
    count (and keeping its [net]) must give the file back byte for byte. This checks the yolo,
    Gaussian_yolo (classes+9) and region ((classes+coords+1)*num) formulas on 53 real cfgs."""
    checked = set()
    for path in sorted(require(UPSTREAM).glob("*.cfg")):
        text = _text(path)
        if not re.search(r"^\s*\[(yolo|region|Gaussian_yolo)\]", text, re.M):
            continue
        heads = re.findall(r"^\s*\[(yolo|region|Gaussian_yolo)\][^\[]*?^\s*classes\s*=\s*(\d+)",
                           text, re.M)
        classes = {int(c) for _, c in heads}
        assert len(classes) == 1, path
        made = make_custom_cfg(text, classes.pop(), batch=None, subdivisions=None,
                               keep_schedule=True, source=str(path))
        assert made.text == text, (path.name, made.changes)
        checked.update(t for t, _, _ in made.heads)
    assert checked == {"[yolo]", "[region]", "[Gaussian_yolo]"}


def test_region_and_gaussian_filters():
    v2 = make_custom_cfg(_text(require(UPSTREAM / "yolov2-voc.cfg")), 2)
    assert [h[0] for h in v2.heads] == ["[region]"] and v2.heads[0][2] == (2 + 4 + 1) * 5
    g = make_custom_cfg(_text(require(UPSTREAM / "Gaussian_yolov3_BDD.cfg")), 2)
    assert {h[2] for h in g.heads} == {(2 + 9) * 3}


def test_layout_comments_and_line_endings_are_kept():
    src = ("[net]\r\n# Training\r\nbatch = 8   # small\r\nsubdivisions=2\r\nwidth=608\r\n"
           "height=608\r\n\r\n[convolutional]\r\nsize=1\r\nfilters = 255 # x\r\nactivation=linear\r\n"
           "\r\n[yolo]\r\nnum=9\r\n")
    made = make_custom_cfg(src, 1, width=320, height=320, max_batches=6000)
    assert made.text == (
        "[net]\r\n# Training\r\nbatch = 64   # small\r\nsubdivisions=16\r\nwidth=320\r\n"
        "height=320\r\nmax_batches=6000\r\nsteps=4800,5400\r\n\r\n[convolutional]\r\nsize=1\r\n"
        "filters = 54 # x\r\nactivation=linear\r\n\r\n[yolo]\r\nnum=9\r\nclasses=1\r\n")
    # no mask: (classes + 5) * num; duplicated keys are all edited
    assert made.heads == [("[yolo]", 15, 54)]  # line in the written cfg
    dup = make_custom_cfg("[net]\nbatch=1\nbatch=2\n[convolutional]\nfilters=1\n[yolo]\nmask=0\n", 2)
    assert dup.text.count("batch=64") == 2 and "filters=7" in dup.text


def test_errors():
    base = _text(require(UPSTREAM / "yolov4-tiny-custom.cfg"))
    with pytest.raises(UsageError, match="at least 1"):
        make_custom_cfg(base, 0)
    with pytest.raises(UsageError, match="multiple of 32"):
        make_custom_cfg(base, 3, width=400)
    with pytest.raises(UsageError, match="multiple of --subdivisions"):
        make_custom_cfg(base, 3, batch=64, subdivisions=5)
    with pytest.raises(UsageError, match="increasing"):
        make_custom_cfg(base, 3, steps=(5400, 4800))
    with pytest.raises(CfgError, match="scales"):
        make_custom_cfg(base, 3, steps=(100, 200, 300))
    with pytest.raises(CfgError, match="not a detection cfg"):
        make_custom_cfg("[net]\nbatch=1\n[convolutional]\nfilters=3\n", 3)
    with pytest.raises(CfgError, match=r"must follow a \[convolutional\]") as e:
        make_custom_cfg("[net]\nbatch=1\n[convolutional]\nfilters=3\n[route]\nlayers=-1\n[yolo]\n", 3,
                        source="x.cfg")
    assert e.value.file == "x.cfg" and e.value.line == 7
    # the editor reads through the network's tokenizer: the same errors as read_cfg
    with pytest.raises(CfgError, match=r"cannot parse line 'batch' \(expected key=value\)") as e:
        make_custom_cfg("[net]\nbatch\n", 3)
    assert e.value.line == 2
    with pytest.raises(CfgError, match="malformed section header") as e:
        make_custom_cfg("[net]\nbatch=1\n[yolo\n", 3)
    assert e.value.line == 3


def test_cli_writes_the_template(tmp_path):
    from darknet_py.cli import main
    out = tmp_path / "yolov4-tiny-obj.cfg"
    res = CliRunner().invoke(main, [
        "cfg", "custom", "--names", str(REPO / "cfg" / "obj.names"),
        "--from", str(require(UPSTREAM / "yolov4-tiny-custom.cfg")), "-o", str(out),
        "--width", "416", "--height", "416", "--max-batches", "6400", "--steps", "4800,5400",
        "--mosaic", "1", "--learning-rate", "0.001"])
    assert res.exit_code == 0, res.output
    assert _text(out) == _text(REPO / "cfg" / "yolov4-tiny-obj.cfg")
    assert "filters=255 -> filters=24" in res.output
    res = CliRunner().invoke(main, ["cfg", "custom", "--classes", "3", "--from",
                                    str(UPSTREAM / "yolov4-tiny-custom.cfg"), "-o", str(out),
                                    "--width", "400"])
    assert res.exit_code == 2 and "multiple of 32" in res.output and "Traceback" not in res.output


def test_write_custom_cfg_refuses_to_overwrite_source(tmp_path):
    src = tmp_path / "a.cfg"
    src.write_text(_text(require(UPSTREAM / "yolov4-tiny-custom.cfg")))
    with pytest.raises(UsageError, match="is the source cfg: darknet-py never writes over its "
                                         "inputs"):
        write_custom_cfg(src, src, 3)
    with pytest.raises(CfgError, match="not found"):
        write_custom_cfg(tmp_path / "none.cfg", tmp_path / "b.cfg", 3)


def test_tiny_template_builds_a_network():
    network = pytest.importorskip("darknet_py.model.network")
    net = network.Network.from_cfg(str(REPO / "cfg" / "yolov4-tiny-obj.cfg"), batch=1)
    assert [h.classes for h in net.heads] == [3, 3]
    assert [h.n for h in net.heads] == [3, 3]


def test_the_templates_batch_and_burn_in_keep_its_rate(tmp_path):
    """`cfg custom` from yolov4-tiny-custom.cfg keeping batch=64 (the default) and burn_in=1000,
    the case the README calls safe: 0.00261 stays, no comment, no warning; --batch 16 lowers it."""
    from darknet_py.cli import main
    src = str(require(UPSTREAM / "yolov4-tiny-custom.cfg"))
    out = tmp_path / "my.cfg"
    res = CliRunner().invoke(main, ["cfg", "custom", "--classes", "3", "--from", src, "-o",
                                    str(out), "--max-batches", "6400", "--steps", "4800,5400"])
    assert res.exit_code == 0, res.output
    net = read_cfg(out)[0]
    assert (net.int("batch"), net.int("burn_in"), net.float("learning_rate")) == \
        (64, 1000, 0.00261)
    assert LEARNING_RATE_COMMENT not in _text(out) and "warning" not in res.output.lower()
    res = CliRunner().invoke(main, ["cfg", "custom", "--classes", "3", "--from", src, "-o",
                                    str(out), "--batch", "16", "--subdivisions", "1"])
    assert res.exit_code == 0, res.output
    assert read_cfg(out)[0].float("learning_rate") == 0.001
    assert LEARNING_RATE_COMMENT in _text(out)
