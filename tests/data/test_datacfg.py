"""obj.data / names / list readers and Darknet's image -> label path rule."""
from __future__ import annotations

import pytest

from conftest import refpath, require

from darknet_py.data.datacfg import read_data_cfg, read_list, read_names
from darknet_py.data.paths import find_replace_extension, label_path
from darknet_py.errors import DataError


# ----------------------------------------------------------------------------- obj.data
def test_read_data_cfg_keys_and_defaults(tmp_path):
    p = tmp_path / "obj.data"
    p.write_text("# comment\n; other comment\n\nclasses = 3   # three\ntrain  = data/train.txt\n"
                 "valid=data/valid.txt\nnames = data/obj.names\nbackup = backup/\n"
                 "eval=coco\nresults=res\ndifficult=data/diff.txt\nmap=data/x.map\n"
                 "saveweights=500\nsavelast=50\ncustom_key = 1\nclasses=99\n")
    d = read_data_cfg(p)
    assert d.classes == 3                      # first occurrence wins, as option_find
    assert d.train == "data/train.txt" and d.valid == "data/valid.txt"
    assert d.names == "data/obj.names" and d.backup == "backup/"
    assert d.eval == "coco" and d.results == "res" and d.difficult == "data/diff.txt"
    assert d.map == "data/x.map" and d.saveweights == 500 and d.savelast == 50
    assert "custom_key" in d.options and d.options["classes"].line == 4
    assert [o.line for o in d.duplicates] == [16]

    e = tmp_path / "empty.data"
    e.write_text("classes=2\n")
    d = read_data_cfg(e)
    assert d.train_or_default() == "data/train.txt"
    assert d.train_or_default("data/train.list") == "data/train.list"
    assert d.valid_or_default() == "data/train.txt"
    assert d.valid_or_default(fallback_to_train=True) == "data/train.txt"
    assert d.names_or_default() == "data/names.list"
    assert d.backup_or_default() == "/backup/" and d.results_or_default() == "results"
    assert d.eval_or_default() == "voc" and d.savelast_or_default() == 100
    assert d.saveweights_or_default(6000) == 1000 and d.saveweights_or_default(20000) == 10000
    assert d.classes_or_default(1) == 2


def test_labels_alias_and_valid_fallback(tmp_path):
    p = tmp_path / "a.data"
    p.write_text("labels=x.names\ntrain=t.txt\n")
    d = read_data_cfg(p)
    assert d.names_or_default() == "x.names"
    assert d.valid_or_default(fallback_to_train=True) == "t.txt"


@pytest.mark.parametrize("text,line,msg", [
    ("classes=3\ntrain data/train.txt\n", 2, "key = value"),
    ("classes=\n", 1, "no value"),
    ("classes=three\n", 1, "integer"),
    ("classes=0\n", 1, ">= 1"),
    ("=5\n", 1, "missing key"),
])
def test_read_data_cfg_errors_name_file_and_line(tmp_path, text, line, msg):
    p = tmp_path / "bad.data"
    p.write_text(text)
    with pytest.raises(DataError) as e:
        read_data_cfg(p)
    assert e.value.file == str(p) and e.value.line == line and msg in str(e.value)
    assert f"{p}:{line}" in str(e.value)


def test_missing_files_are_data_errors(tmp_path):
    for fn in (read_data_cfg, read_names, read_list):
        with pytest.raises(DataError) as e:
            fn(tmp_path / "nope.txt")
        assert "not found" in str(e.value) and "nope.txt" in str(e.value)


def test_read_names_and_list(tmp_path):
    n = tmp_path / "obj.names"
    n.write_text("traffic light\r\nperson\n\ncar\n\n")
    assert read_names(n) == ["traffic light", "person", "", "car"]
    assert len(read_names(require(refpath("cfg", "darknet", "coco.names")))) == 80
    lst = tmp_path / "train.txt"
    lst.write_text("data/img/a.jpg\n\n  data/img/b.jpg  \r\n/abs/c.png\n")
    assert read_list(lst) == ["data/img/a.jpg", "data/img/b.jpg", "/abs/c.png"]


# ----------------------------------------------------------------------------- label paths
@pytest.mark.parametrize("image,label", [
    # COCO layout
    ("coco/images/train2017/0001.jpg", "coco/labels/train2017/0001.txt"),
    ("/d/coco/images/val2017/0001.jpg", "/d/coco/labels/val2017/0001.txt"),
    ("/d/coco/images/train2014/x.jpg", "/d/coco/labels/train2014/x.txt"),
    ("/d/coco/images/val2014/x.JPG", "/d/coco/labels/val2014/x.txt"),
    # Pascal VOC layout (and the face-mask set converted for Darknet)
    ("/d/VOC2007/JPEGImages/000001.jpg", "/d/VOC2007/labels/000001.txt"),
    ("/s/facemask_yolo/JPEGImages/maksssksksss2.jpg", "/s/facemask_yolo/labels/maksssksksss2.txt"),
    # a plain images/ folder is NOT mapped: the label sits next to the image
    ("/s/facemask_yolo/images/maksssksksss2.jpg", "/s/facemask_yolo/images/maksssksksss2.txt"),
    ("data/obj/img1.png", "data/obj/img1.txt"),
    # Windows separators
    ("C:\\coco\\images\\train2017\\a.jpg", "C:\\coco\\labels\\train2017\\a.txt"),
    ("C:\\coco\\images\\val2017\\a.jpg", "C:\\coco\\labels\\val2017\\a.txt"),
    ("C:\\coco\\images\\train2014\\a.jpg", "C:\\coco\\labels\\train2014\\a.txt"),
    ("C:\\coco\\images\\val2014\\a.jpg", "C:\\coco\\labels\\val2014\\a.txt"),
    ("C:\\voc\\JPEGImages\\a.jpeg", "C:\\voc\\labels\\a.txt"),
    # every extension Darknet maps
    *[(f"x/a{ext}", "x/a.txt") for ext in (".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG",
                                            ".bmp", ".BMP", ".ppm", ".PPM", ".tiff", ".TIFF")],
    # only the first occurrence of a folder is replaced; extension only at the very end
    ("/a/JPEGImages/b/JPEGImages/c.jpg", "/a/labels/b/JPEGImages/c.txt"),
    ("x/a.jpg.png", "x/a.jpg.txt"),
    ("x/a.png.jpg", "x/a.png.txt"),
    # surrounding spaces/tabs are trimmed
    ("  x/a.jpg\t", "x/a.txt"),
])
def test_label_path_darknet_rule(image, label):
    assert label_path(image) == label


@pytest.mark.parametrize("image", ["x/a.webp", "x/a.gif", "x/a.Jpg", "x/a", "x/.jpg.gif"])
def test_label_path_unsupported_extension(image):
    with pytest.raises(DataError) as e:
        label_path(image)
    assert "extension" in str(e.value) or "too short" in str(e.value)
    assert label_path(image, strict=False) is None


def test_find_replace_extension_rule():
    assert find_replace_extension("a.jpg", ".jpg", ".txt") == "a.txt"
    assert find_replace_extension("a.jpgx", ".jpg", ".txt") == "a.jpgx"
    assert find_replace_extension("a.jpg.jpg", ".jpg", ".txt") == "a.jpg.txt"


def test_label_path_on_real_layouts():
    coco = sorted(require(refpath("datasets", "coco128", "images", "train2017")).glob("*.jpg"))
    labels = [label_path(str(p)) for p in coco]
    found = sum(1 for lp in labels if __import__("os").path.exists(lp))
    assert found == 126          # 2 background images have no label file (NOTES.txt)
    assert all("/labels/train2017/" in lp for lp in labels)


def test_valid_fallback_is_announced_once(tmp_path, capsys):
    p = tmp_path / "obj.data"
    p.write_text("classes=1\ntrain=t.txt\n")
    d = read_data_cfg(p)
    assert d.valid_or_default(fallback_to_train=True) == "t.txt"
    assert d.valid_or_default(fallback_to_train=True) == "t.txt"
    err = capsys.readouterr().err
    assert err == (f"darknet-py: warning: {p}: no valid= line: evaluating t.txt instead "
                   f"(Darknet's fallback)\n")
    p.write_text("classes=1\ntrain=t.txt\nvalid=v.txt\n")
    assert read_data_cfg(p).valid_or_default() == "v.txt"
    assert capsys.readouterr().err == ""
