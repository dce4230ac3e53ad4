"""cfg parser: Darknet's line rules, typed options, errors with file:line."""
import pytest

from darknet_py.formats.cfg import parse_cfg_text, read_cfg
from darknet_py.errors import CfgError
from darknet_py.formats.netconfig import NetConfig, find_net_section

from conftest import REFDATA


def test_darknet_line_rules():
    text = """
# comment
; another comment
[net]
 width = 416
height=4 16
batch = 64 # inline comments are ignored like atoi does

[route]
layers = -1, 61
[yolo]
anchors = 10,13,  16,30,
mask = 0,1,2
"""
    secs = parse_cfg_text(text, "t.cfg")
    assert [s.type for s in secs] == ["net", "route", "yolo"]
    net = secs[0]
    assert net.int("width") == 416
    assert net.int("height") == 416          # every whitespace is stripped, as Darknet's strip()
    assert net.int("batch") == 64
    assert secs[1].int_list("layers") == [-1, 61]
    assert secs[2].float_list("anchors") == [10, 13, 16, 30]   # trailing comma tolerated
    assert secs[2].int_list("mask") == [0, 1, 2]
    assert secs[1].line == 9 and secs[1].options[0].line == 10


def test_unused_fields_are_reported():
    secs = parse_cfg_text("[net]\nwidth=32\nheight=32\nchannels=3\nbogus_key=1\n", "t.cfg")
    cfg = NetConfig.from_section(secs[0])
    assert cfg.width == 32
    assert [o.key for o in secs[0].unused()] == ["bogus_key"]


@pytest.mark.parametrize("text,msg,line", [
    ("[net]\nwidth=abc\nheight=1\nchannels=3\n", "expects an integer, got 'abc'", 2),
    ("width=3\n[net]\n", "before any [section]", 1),
    ("[net]\nwidth\n", "expected key=value", 2),
    ("[net\nwidth=1\n", "malformed section header", 1),
])
def test_errors_name_file_and_line(text, msg, line):
    with pytest.raises(CfgError) as e:
        secs = parse_cfg_text(text, "bad.cfg")
        NetConfig.from_section(secs[0])
    assert msg in str(e.value)
    assert e.value.line == line and e.value.file == "bad.cfg"
    assert str(e.value).startswith(f"bad.cfg:{line}: ")


def test_net_section_rules():
    with pytest.raises(CfgError, match="first section must be"):
        find_net_section(parse_cfg_text("[conv]\nsize=1\n"), "x.cfg")
    with pytest.raises(CfgError, match="duplicate"):
        find_net_section(parse_cfg_text("[net]\n[net]\n"), "x.cfg")


def test_read_cfg_file_errors(tmp_path):
    with pytest.raises(CfgError, match="not found"):
        read_cfg(tmp_path / "missing.cfg")
    p = tmp_path / "bin.cfg"
    p.write_bytes(b"\x00\x01\x02")
    with pytest.raises(CfgError, match="NUL"):
        read_cfg(p)
    p.write_bytes(b"[net]\nwidth=\xff\n")
    with pytest.raises(CfgError, match="UTF-8") as e:
        read_cfg(p)
    assert e.value.line == 2
    p.write_text("")
    with pytest.raises(CfgError, match="no sections"):
        read_cfg(p)


def test_every_shipped_cfg_parses():
    folder = REFDATA / "cfg" / "darknet"
    if not folder.is_dir():
        pytest.skip("no reference cfg folder")
    cfgs = sorted(folder.glob("*.cfg"))
    assert len(cfgs) >= 80
    for p in cfgs:
        secs = read_cfg(p)
        assert secs[0].type in ("net", "network"), p.name


def test_net_options_typed(refdata):
    secs = read_cfg(refdata / "cfg" / "darknet" / "yolov4.cfg")
    c = NetConfig.from_section(secs[0])
    assert (c.batch, c.subdivisions, c.width, c.height, c.channels) == (64, 8, 608, 608, 3)
    assert c.mini_batch == 8
    assert c.policy == "steps" and c.steps == [400000, 450000] and c.scales == [0.1, 0.1]
    assert c.burn_in == 1000 and c.max_batches == 500500
    assert c.mosaic == 1 and c.mixup == 3          # Darknet folds mosaic into its mixup code
    assert c.learning_rate == pytest.approx(0.0013)


def test_editable_cfg_keeps_the_users_text():
    from darknet_py.formats.cfg import EditableCfg, with_network_size
    text = "# my cfg\r\n[net]\r\nwidth = 416   # input\r\nbatch=1\r\n\r\n[convolutional]\r\nsize=3\r\n"
    out = with_network_size(text, 320, 256, "m.cfg")
    # only the value of the edited line changes; a missing option is added after the last one
    assert out == ("# my cfg\r\n[net]\r\nwidth = 320   # input\r\nbatch=1\r\nheight=256\r\n"
                   "\r\n[convolutional]\r\nsize=3\r\n")
    secs = parse_cfg_text(out, "m.cfg")
    assert (secs[0].int("width"), secs[0].int("height"), secs[1].line) == (320, 256, 7)
    cfg = EditableCfg(text, "m.cfg")
    assert cfg.text() == text                       # untouched: byte for byte
    cfg.set(cfg.sections[1], "size", 1)
    assert cfg.sections[1].int("size") == 1 and "size=1\r\n" in cfg.text()


@pytest.mark.parametrize("text,msg,line", [
    ("width=3\n[net]\n", "before any [section]", 1),
    ("[net]\nwidth\n", "expected key=value", 2),
    ("[net\nwidth=1\n", "malformed section header", 1),
])
def test_editable_cfg_fails_as_the_reader_does(text, msg, line):
    from darknet_py.formats.cfg import EditableCfg
    with pytest.raises(CfgError) as e:
        EditableCfg(text, "bad.cfg")
    assert msg in str(e.value) and (e.value.file, e.value.line) == ("bad.cfg", line)
    with pytest.raises(CfgError, match="must start with a \\[net\\]"):
        EditableCfg("[convolutional]\nsize=1\n", "x.cfg").net()
