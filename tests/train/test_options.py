"""The training-options inventory (darknet_py/train/options.py) against Darknet's detection cfgs,
the warning ``detector train`` prints once, and ``cfg options``."""
import os
import re
from dataclasses import fields


from conftest import REFDATA, require
from darknet_py.formats.cfg import parse_cfg_text, read_cfg
from darknet_py.formats.netconfig import NetConfig
from darknet_py.model.network import Network
from darknet_py.train import options as O

HEAD = re.compile(r"^\s*\[(yolo|region|Gaussian_yolo)\]", re.M)

#: what darknet-py ignores in each of AlexeyAB's detection cfgs (update it when an option gets
#: implemented: the test then fails until this says so)
EXPECTED_IGNORED = {
    "yolov4-tiny_contrastive": {"net:contrastive", "net:contrastive_jit_flip"},
}


def detection_cfgs():
    folder = require(REFDATA / "cfg" / "darknet")
    return [p for p in sorted(folder.glob("*.cfg")) if HEAD.search(p.read_text())]


def test_the_54_detection_cfgs_have_no_unclassified_option():
    cfgs = detection_cfgs()
    assert len(cfgs) == 54
    missing = {}
    for p in cfgs:
        left = O.unclassified_options(read_cfg(p))
        if left:
            missing[p.name] = left
    assert not missing, f"options in neither TRAINING_OPTIONS nor MODEL_OPTIONS: {missing}"


def test_every_net_option_darknet_parses_is_classified():
    # NetConfig reads exactly parse_net_options' keys
    keys = {f.name for f in fields(NetConfig)} - {"line", "file"}
    missing = {k for k in keys if O.lookup(O.NET, k) is None and not O.is_model_option(O.NET, k)}
    assert not missing


def test_table_entries_are_well_formed():
    for (section, key), opt in O.TRAINING_OPTIONS.items():
        assert opt.status in O.STATUSES and opt.what, (section, key)
        assert not O.is_model_option(section, key), (section, key)   # one classification


def test_ignored_inventory_of_the_54_cfgs():
    got = {}
    for p in detection_cfgs():
        ign = [o for o in O.training_options(read_cfg(p))
               if o.option.status == O.IGNORED and not o.is_default and o.section != "contrastive"]
        if ign:
            got[p.stem] = {f"{o.section}:{o.key}" for o in ign}
    assert got == EXPECTED_IGNORED


def _net(text):
    return Network(parse_cfg_text(text, "t.cfg"), "t.cfg")


NET = """[net]
batch=2
width=64
height=64
channels=3
{extra}
[convolutional]
filters=18
size=1
activation=linear
grad_centr={gc}

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=1
num=3
"""


def test_warning_names_ignored_options_with_their_lines():
    net = _net(NET.format(extra="adversarial_lr=0.05\ntrack=0\nangle=7", gc=1))
    assert O.training_warning(net) == (
        "t.cfg: training options darknet-py does not implement (ignored): adversarial_lr=0.05 "
        "(line 6); [convolutional] grad_centr=1 (line 13)")
    # Darknet's defaults (track=0, grad_centr=0) and unused options (angle) are not reported
    assert O.training_warning(_net(NET.format(extra="track=0\nangle=7", gc=0))) is None


def test_contrastive_branch_is_named():
    cfg = require(REFDATA / "cfg" / "darknet" / "yolov4-tiny_contrastive.cfg")
    net = Network.from_cfg(cfg, width=64, height=64, batch=1)
    [(layer, branch)] = O.untrained_branches(net)
    assert layer.index == 54 and branch == [44, 45, 46, 47, 48]
    text = O.training_warning(net)
    assert text.endswith("[contrastive] (line 447) has no loss in darknet-py: layers 44-48, "
                         "which feed only it, are not trained")
    assert "contrastive=1 (line 18)" in text and "onlyforward" not in text    # implemented


def test_detector_train_warns_once(tmp_path):
    """A real run of yolov4-tiny_contrastive: one warning line at start, with the branch."""
    from train_fixtures import make_shapes_workdir, run_cli
    work = make_shapes_workdir(tmp_path / "w", n_images=2, size=64, batch=2, max_batches=1)
    src = require(REFDATA / "cfg" / "darknet" / "yolov4-tiny_contrastive.cfg").read_text()
    text = re.sub(r"(?m)^(width|height)=416$", r"\1=64", src)
    text = re.sub(r"(?m)^batch=64$", "batch=2", text)
    text = re.sub(r"(?m)^subdivisions=2$", "subdivisions=1", text)
    (work / "c.cfg").write_text(text)
    (work / "obj.data").write_text((work / "obj.data").read_text().replace("classes=2",
                                                                           "classes=80"))
    r = run_cli("detector", "train", "obj.data", "c.cfg", "-dont_show", "-max_batches", 2,
                "-workers", 0, "-seed", 1, "-nogpu", cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    lines = [ln for ln in out.splitlines() if "does not implement" in ln]
    assert len(lines) == 1 and out.count("[contrastive] (line 447)") == 1, lines
    assert lines[0].startswith("darknet-py: warning: c.cfg: training options darknet-py does not "
                               "implement (ignored): contrastive=1 (line 18)")
    assert "layers 44-48, which feed only it, are not trained" in lines[0]


def test_cfg_options_command(tmp_path):
    from click.testing import CliRunner
    from darknet_py.cli import main as cli_main
    folder = tmp_path / "cfgs"
    folder.mkdir()
    for name in ("yolov4-custom.cfg", "yolov4-tiny.cfg", "resnet50.cfg"):
        (folder / name).write_bytes(require(REFDATA / "cfg" / "darknet" / name).read_bytes())
    res = CliRunner().invoke(cli_main, ["cfg", "options", str(folder)])
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "resnet50" not in out                              # not a detection cfg
    assert out.count(str(folder)) == 2
    assert "  implemented  [convolutional] stopbackward=800 (line 744): no gradient to " in out
    assert "  implemented  [yolo] ignore_thresh=.7 (lines 973, 1061, 1149): " in out
    assert "  unused       angle=0 (line 13): " in out
    (folder / "yolov4-custom.cfg").write_text((folder / "yolov4-custom.cfg").read_text().replace(
        "mosaic=1", "mosaic=1\nadversarial_lr=0.05"))
    res = CliRunner().invoke(cli_main, ["cfg", "options", "--ignored", str(folder)])
    assert res.stdout.splitlines() == [
        os.path.join(str(folder), "yolov4-custom.cfg"),
        "  ignored      adversarial_lr=0.05 (line 27): "
        + O.TRAINING_OPTIONS[("net", "adversarial_lr")].what]
    res = CliRunner().invoke(cli_main, ["cfg", "options", "--summary", str(folder)])
    assert re.search(r"(?m)^implemented +\[convolutional\] stopbackward +1 cfgs  ", res.stdout)
    assert re.search(r"(?m)^ignored +adversarial_lr +1 cfgs  ", res.stdout)
    assert re.search(r"(?m)^implemented +batch +2 cfgs  ", res.stdout)
    res = CliRunner().invoke(cli_main, ["cfg", "options", str(tmp_path / "nope.cfg")])
    assert res.exit_code == 1 and res.output.strip().endswith("nope.cfg: cfg file or folder not "
                                                              "found")
