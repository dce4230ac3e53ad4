"""`darknet-py data check` (darknet_py.data.check) on real face-mask images converted to YOLO
labels with darknet_py.prep.voc, with one planted problem of each kind."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO, refpath, require

from darknet_py.cli import main as cli_main
from darknet_py.data.check import check_dataset, format_report, write_fixed_copy
from darknet_py.errors import DataError, UsageError
from darknet_py.prep.voc import FACEMASK_NAME_MAP, convert_voc_dataset

FACEMASK = refpath("datasets", "facemask")
NAMES = REPO / "cfg" / "obj.names"                 # chin_diaper, mask, no_mask
CFG = REPO / "cfg" / "yolov4-tiny-obj.cfg"         # 3 classes, 416x416, strides 16 and 32
ORDER = ["mask_weared_incorrect", "with_mask", "without_mask"]   # = obj.names via the map
N_TRAIN, N_VALID = 30, 8


def _stems(split, n):
    return [Path(p).stem for p in (FACEMASK / split).read_text().split()[:n]]


def _xml_counts(stems):
    """Boxes per class id counted straight from the XML files."""
    c = Counter(o.findtext("name") for s in stems
                for o in ET.parse(FACEMASK / "annotations" / f"{s}.xml").getroot().iter("object"))
    return [c[n] for n in ORDER]


def _add(*counts):
    return [sum(v) for v in zip(*counts)]


BAD_LABEL = """1 0.5 0.5 0.2 0.2
1 0.5 0.5 0.2
7 0.5 0.5 0.2 0.2
1 nan 0.5 0.2 0.2
1 0.5 0.5 0 0.2
1 1.2 0.5 0.2 0.2
1 0.95 0.5 0.2 0.2
1 0.5 0.5 0.2 0.2
2 0.3 0.3 0.0005 0.0005
2 0.3 0.6 0.02 0.02
"""


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    require(FACEMASK / "annotations")
    root = tmp_path_factory.mktemp("check")
    train, valid = _stems("train.list", N_TRAIN), _stems("val.list", N_VALID)
    fm = root / "fm"
    res = convert_voc_dataset([FACEMASK / "annotations" / f"{s}.xml" for s in train + valid],
                              NAMES, FACEMASK_NAME_MAP, out_dir=fm)
    img = {Path(p).stem: p for p in res.image_paths}
    (root / "train.txt").write_text("".join(img[s] + "\n" for s in train))
    (root / "valid.txt").write_text("".join(img[s] + "\n" for s in valid))
    (root / "clean.data").write_text(f"classes = 3\ntrain = {root / 'train.txt'}\n"
                                     f"valid = {root / 'valid.txt'}\nnames = {NAMES}\n")

    # ---- the planted problems, in a folder of their own
    bad = root / "bad"
    bad.mkdir()
    src = FACEMASK / "images"
    lab = {s: Path(img[s]).with_suffix(".txt") for s in train + valid}

    def plant(name, data=None, copy_of=None, label=None, salt=True):
        p = bad / name
        if copy_of is not None:
            shutil.copyfile(src / f"{copy_of}.jpg", p)
            if salt:    # bytes after the JPEG end marker: same picture, not a duplicate file
                with open(p, "ab") as fh:
                    fh.write(name.encode())
        else:
            p.write_bytes(data)
        if label is not None:
            p.with_suffix(".txt").write_text(label)
        return str(p)

    whole = (src / f"{train[3]}.jpg").read_bytes()
    planted = {
        "missing": str(bad / "missing.jpg"),
        "empty": plant("empty.jpg", b"", label="1 0.5 0.5 0.1 0.1\n"),
        "truncated": plant("truncated.jpg", whole[:len(whole) // 2],
                           label=lab[train[3]].read_text()),
        "junk": plant("junk.jpg", b"this is not an image\n" * 10, label=""),
        "nolabel": plant("nolabel.jpg", copy_of=train[4]),
        "background": plant("background.jpg", copy_of=train[5], label=""),
        "copy": plant("copy.jpg", copy_of=train[2], label=lab[train[2]].read_text(),
                      salt=False),
        "badlab": plant("badlab.jpg", copy_of=train[6], label=BAD_LABEL),
        "leak": plant("leak.jpg", copy_of=train[7], label=lab[train[7]].read_text(),
                      salt=False),
    }
    # the cfg, images and labels of the clean part are reused, the lists are new
    tlines = [img[s] for s in train] + [planted[k] for k in (
        "missing", "empty", "truncated", "junk", "nolabel", "background", "copy", "badlab")]
    tlines.insert(10, img[train[1]])            # a repeated entry (line 11 repeats line 2)
    vlines = [img[s] for s in valid] + [planted["leak"], img[train[8]]]
    (bad / "train.txt").write_text("\n".join(tlines) + "\n")
    (bad / "valid.txt").write_text("\n".join(vlines) + "\n")
    (bad / "obj.data").write_text(f"classes = 3\ntrain = {bad / 'train.txt'}\n"
                                  f"valid = {bad / 'valid.txt'}\nnames = {NAMES}\n")
    line = {p: i for i, p in enumerate(tlines, start=1) if p not in (img[train[1]],)}
    return dict(root=root, train=train, valid=valid, planted=planted, tline=line,
                tlines=tlines, vlines=vlines, bad=bad, img=img)


def test_clean_subset_counts_equal_the_xml(ds):
    rep = check_dataset(str(ds["root"] / "clean.data"))
    assert rep.errors == 0, format_report(rep)
    tr, va = rep.splits
    assert (tr.entries, tr.images, va.images) == (N_TRAIN, N_TRAIN, N_VALID)
    assert tr.boxes_per_class == _xml_counts(ds["train"])
    assert va.boxes_per_class == _xml_counts(ds["valid"])
    assert tr.boxes == sum(_xml_counts(ds["train"]))
    assert rep.counters_per_class == tr.boxes_per_class
    text = format_report(rep)
    assert "boxes chin_diaper" in text and "0 errors" in text


def _only(rep, kind):
    got = [f for f in rep.findings if f.kind == kind]
    assert len(got) == 1, (kind, [f.format() for f in got])
    return got[0]


def test_each_planted_problem_is_reported_once_with_file_and_line(ds):
    rep = check_dataset(str(ds["bad"] / "obj.data"), cfg=str(CFG))
    p, ln, tlist, vlist = ds["planted"], ds["tline"], str(ds["bad"] / "train.txt"), \
        str(ds["bad"] / "valid.txt")
    for kind, key in (("missing-image", "missing"), ("empty-image", "empty"),
                      ("truncated-image", "truncated"), ("unreadable-image", "junk"),
                      ("missing-label", "nolabel"), ("duplicate-image", "copy")):
        f = _only(rep, kind)
        assert (f.file, f.line, f.split) == (tlist, ln[p[key]], "train"), f.format()
    f = _only(rep, "duplicate-entry")
    assert (f.file, f.line) == (tlist, 11) and "repeats line 2" in f.message
    leaks = sorted((f.line, f.message) for f in rep.findings if f.kind == "leaked-image")
    assert [l for l, _ in leaks] == [N_VALID + 1, N_VALID + 2]     # copied bytes, same path
    assert all(f.file == vlist for f in rep.findings if f.kind == "leaked-image")
    assert "same content as the train image" in leaks[0][1]
    badlab = str(Path(p["badlab"]).with_suffix(".txt"))
    for kind, line in (("malformed", 2), ("class-out-of-range", 3), ("nan", 4),
                       ("nonpositive-size", 5), ("outside-image", 6), ("extends-outside", 7),
                       ("duplicate-box", 8), ("sub-pixel", 9)):
        f = _only(rep, kind)
        assert (f.file, f.line) == (badlab, line), f.format()
    stride = [f for f in rep.findings if f.kind == "sub-stride" and f.file == badlab]
    assert [f.line for f in stride] == [10]
    # the truncated image's label is still read (Darknet trains on the half-grey picture)
    assert rep.errors == 4 + 5 and rep.exit_code() == 1
    tr, va = rep.splits
    assert (tr.entries, tr.images, tr.background, tr.missing_labels) == (N_TRAIN + 9,
                                                                         N_TRAIN + 5, 1, 1)
    # boxes per class = the XML count of each distinct readable image + badlab's kept lines
    t = ds["train"]
    assert tr.boxes_per_class == _add(_xml_counts(t), _xml_counts([t[3]]), _xml_counts([t[2]]),
                                      [0, 3, 2])
    # a leaked copy (other path) is read by Darknet and counted; the same path is not
    assert va.boxes_per_class == _add(_xml_counts(ds["valid"]), _xml_counts([t[7]]))


def test_cfg_classes_mismatch_and_names(ds, tmp_path):
    other = tmp_path / "other.data"
    names = tmp_path / "two.names"
    names.write_text("a\nb\n")
    other.write_text(f"classes = 3\ntrain = {ds['root'] / 'train.txt'}\nnames = {names}\n")
    rep = check_dataset(str(other), which="train",
                        cfg=str(require(refpath("cfg", "darknet", "yolov4-tiny.cfg"))))
    assert _only(rep, "classes-mismatch").line is None and "classes = 80" in \
        _only(rep, "classes-mismatch").message
    assert _only(rep, "names-count").file == str(names)
    assert [s.name for s in rep.splits] == ["train"]
    assert rep.network.strides == [16, 32] and rep.network.num_anchors == 6
    assert len(rep.anchors) == 6 and rep.anchors_avg_iou > 50
    with pytest.raises(DataError, match="valid="):
        check_dataset(str(other), which="valid")


def _tree_digest(folder: Path):
    return {str(p): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_exit_codes_json_and_fix_into(ds, tmp_path):
    bad = ds["bad"]
    before = _tree_digest(bad), _tree_digest(ds["root"] / "fm")
    out_json = tmp_path / "r.json"
    fixed = tmp_path / "fixed"
    r = CliRunner().invoke(cli_main, ["data", "check", str(bad / "obj.data"), "-json",
                                      str(out_json), "-fix-into", str(fixed), "-limit", "0"])
    assert r.exit_code == 1, r.output
    missing_line = ds["tline"][ds["planted"]["missing"]]
    assert "error missing-image: 1" in r.output and "Traceback" not in r.output
    assert f"{bad / 'train.txt'}:{missing_line}: error: missing-image" in r.output
    assert "counters_per_class = " in r.output and "cleaned copy in" in r.output
    rep = json.loads(out_json.read_text())
    assert rep["errors"] == 9 and rep["counts"]["malformed"] == 1
    assert {"kind", "file", "line", "message", "severity"} <= set(rep["findings"][0])
    assert rep["splits"][0]["boxes_per_class"] == check_dataset(
        str(bad / "obj.data")).splits[0].boxes_per_class
    # the originals are untouched, the copy is clean and loads as a dataset
    assert (_tree_digest(bad), _tree_digest(ds["root"] / "fm")) == before
    again = check_dataset(str(fixed / "obj.data"))
    assert again.errors == 0, format_report(again)
    assert not [f for f in again.findings if f.kind in ("duplicate-entry", "duplicate-image",
                                                        "leaked-image", "duplicate-box")]
    assert again.splits[0].images == N_TRAIN + 3      # - repeated, missing, empty, junk,
    #                                                   truncated and copy entries
    fixed_badlab = (fixed / "bad" / "badlab.txt").read_text().splitlines()
    assert fixed_badlab == ["1 0.500000 0.500000 0.200000 0.200000",
                            "1 0.925000 0.500000 0.150000 0.200000",
                            "2 0.300000 0.300000 0.000500 0.000500",
                            "2 0.300000 0.600000 0.020000 0.020000"]
    assert os.path.islink(fixed / "bad" / "badlab.jpg")
    # a non-empty -fix-into folder is refused: usage error, nothing written
    r = CliRunner().invoke(cli_main, ["data", "check", str(bad / "obj.data"), "-fix-into",
                                      str(fixed)])
    assert r.exit_code == 2 and "new or empty folder" in r.output
    with pytest.raises(UsageError):
        write_fixed_copy(check_dataset(str(bad / "obj.data"), which="train"), str(fixed))


def test_cli_warnings_only_and_strict_and_user_errors(ds, tmp_path):
    lst = tmp_path / "train.txt"
    lst.write_text(f"{ds['img'][ds['train'][0]]}\n{ds['planted']['nolabel']}\n")
    data = tmp_path / "w.data"
    data.write_text(f"classes = 3\ntrain = {lst}\n")
    r = CliRunner().invoke(cli_main, ["data", "check", str(data)])
    assert r.exit_code == 0 and "0 errors, 1 warnings" in r.output, r.output
    r = CliRunner().invoke(cli_main, ["data", "check", str(data), "-strict"])
    assert r.exit_code == 1
    r = CliRunner().invoke(cli_main, ["data", "check", str(tmp_path / "nope.data")])
    assert r.exit_code == 1 and r.output.strip().count("\n") == 0
    assert r.output.startswith("darknet-py: data error: ") and "nope.data" in r.output
    data.write_text(f"classes = 3\ntrain = {tmp_path / 'missing.txt'}\n")
    r = CliRunner().invoke(cli_main, ["data", "check", str(data)])
    assert r.exit_code == 1 and "image list not found" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli_main, ["data", "check", "--help"])
    assert r.exit_code == 0 and "Exit code" in r.output


def test_progress_is_throttled_and_only_when_enabled(capsys):
    from darknet_py.data.check import _Progress
    p = _Progress(1000, enabled=True)
    for _ in range(1000):
        p.step("train")
    err = capsys.readouterr().err
    assert err.endswith("train: checked 1000/1000 images\n") and err.count("\r") < 10
    q = _Progress(3, enabled=False)
    for _ in range(3):
        q.step("train")
    assert capsys.readouterr().err == ""


def test_same_list_for_train_and_valid_is_one_warning_and_fix_keeps_it(ds, tmp_path):
    """`train=` and `valid=` naming one file: one 'same-list' warning at the valid= line (not a
    leaked-image per entry), and -fix-into writes a non-empty list that both keys name."""
    lst = ds["root"] / "train.txt"
    data = tmp_path / "same.data"
    data.write_text(f"classes = 3\ntrain = {lst}\nvalid = {lst}\nnames = {NAMES}\n")
    fixed = tmp_path / "fixed"
    r = CliRunner().invoke(cli_main, ["data", "check", str(data), "-fix-into", str(fixed)])
    assert r.exit_code == 0, r.output
    assert "leaked-image" not in r.output
    assert r.output.count("same-list") == 2, r.output        # the group header and its line
    assert f"{data}:3: warning: same-list: valid= and train= are the same file" in r.output
    lines = dict(ln.split(" = ", 1) for ln in (fixed / "obj.data").read_text().splitlines())
    assert lines["train"] == lines["valid"] == str(fixed / "train.txt")
    assert len((fixed / "train.txt").read_text().split()) == N_TRAIN
    assert not (fixed / "valid.txt").exists()


def test_fix_into_never_writes_an_empty_list(ds, tmp_path):
    """A valid list whose every entry is also in train= (another list file): -fix-into would drop
    them all; it says so in one line, exit 1, and writes nothing."""
    vlist = tmp_path / "valid.txt"
    vlist.write_text((ds["root"] / "train.txt").read_text())
    data = tmp_path / "leak.data"
    data.write_text(f"classes = 3\ntrain = {ds['root'] / 'train.txt'}\nvalid = {vlist}\n"
                    f"names = {NAMES}\n")
    fixed = tmp_path / "fixed"
    r = CliRunner().invoke(cli_main, ["data", "check", str(data), "-fix-into", str(fixed)])
    assert r.exit_code == 1, r.output
    err = [ln for ln in r.output.splitlines() if "darknet-py:" in ln]
    assert len(err) == 1 and str(vlist) in err[0] and f"leaked-image {N_TRAIN}" in err[0], err
    assert "nothing written" in err[0] and "Traceback" not in r.output
    assert not fixed.exists() or not os.listdir(fixed)
