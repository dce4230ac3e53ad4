"""VOC XML -> Darknet labels (darknet_py.prep.voc, `darknet-py data voc2yolo`) on the real
face-mask XMLs, checked against a direct XML count and against what real Darknet read from the
oracle's labels (oracle parts E and G)."""
import os
import re
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import refpath, require

from darknet_py.errors import DataError, UsageError
from darknet_py.imaging.image import read_image_size
from darknet_py.prep.voc import (FACEMASK_NAME_MAP, convert_voc_dataset, format_report,
                                 label_path_for_image, parse_name_map, parse_voc_xml,
                                 read_class_names, read_names, voc_to_yolo_boxes)

FACEMASK = refpath("datasets", "facemask")
NAMES = ["chin_diaper", "mask", "no_mask"]
REPO = Path(__file__).resolve().parents[2]


def _read_labels(path):
    """(N, 5) float64 rows of a label file, read independently of the converter."""
    text = Path(path).read_text()
    if not text.strip():
        return np.zeros((0, 5))
    return np.loadtxt(path, ndmin=2)


@pytest.fixture(scope="module")
def facemask_all(tmp_path_factory):
    require(FACEMASK / "annotations")
    out = tmp_path_factory.mktemp("facemask_yolo")
    result = convert_voc_dataset([FACEMASK / "annotations"], REPO / "cfg" / "obj.names",
                                 parse_name_map("facemask"), out_dir=out)
    return result, out


def test_obj_names_is_the_reports_order():
    assert read_names(REPO / "cfg" / "obj.names") == NAMES
    assert parse_name_map("facemask") == FACEMASK_NAME_MAP == parse_name_map(
        "mask_weared_incorrect=chin_diaper,with_mask=mask,without_mask=no_mask")


def test_counts_match_a_direct_xml_count(facemask_all):
    result, out = facemask_all
    xmls = sorted((FACEMASK / "annotations").glob("*.xml"))
    direct = Counter(o.findtext("name") for x in xmls for o in ET.parse(x).getroot().iter("object"))
    # 725 of the set's 853 images are here: 3498 of its 4072 objects
    assert len(xmls) == 725
    assert dict(direct) == {"with_mask": 2787, "without_mask": 599, "mask_weared_incorrect": 112}
    expected = [direct[src] for src in ("mask_weared_incorrect", "with_mask", "without_mask")]
    assert result.class_counts.tolist() == expected
    assert result.total_boxes == sum(direct.values()) == 3498
    assert result.xml_name_counts == dict(direct)
    assert len(result.label_paths) == 725 and not result.empty_images
    assert not result.size_mismatches  # every <size> agrees with the JPEG header
    # the files on disk say the same
    rows = np.concatenate([_read_labels(p) for p in result.label_paths])
    assert np.bincount(rows[:, 0].astype(int), minlength=3).tolist() == expected
    # every box is a valid Darknet truth: centre in (0, 1], inside the image after clamping
    cx, cy, w, h = rows[:, 1:].T
    assert np.all((cx > 0) & (cx <= 1) & (cy > 0) & (cy <= 1) & (w > 0) & (h > 0))
    assert np.all(cx + w / 2 <= 1 + 1e-6) and np.all(cy + h / 2 <= 1 + 1e-6)
    report = format_report(result)
    assert "chin_diaper" in report and "3498" in report and "clamped 11 boxes" in report


def test_train_split_counts_equal_darknet_calc_anchors(facemask_all):
    """Oracle G ran `darknet detector calc_anchors` on labels made from the train.list XMLs."""
    result, out = facemask_all
    log = require(refpath("oracle", "calc_anchors", "facemask_train__k6_416x416__run1.combined.txt"))
    text = log.read_text()
    counters = [int(v) for v in re.search(r"counters_per_class = ([\d, ]+)", text).group(1).split(",")]
    boxes = int(re.findall(r"box: (\d+)", text)[-1])
    images = int(re.search(r"read labels from (\d+) images", text).group(1))
    names = (FACEMASK / "train.list").read_text().split()
    rows = np.concatenate([_read_labels(label_path_for_image(str(out / n))) for n in names])
    assert len(names) == images == 597
    assert np.bincount(rows[:, 0].astype(int), minlength=3).tolist() == counters == [94, 2248, 489]
    assert len(rows) == boxes == 2831


def test_labels_equal_darknet_truths_of_oracle_train_step(facemask_all):
    """Oracle E: Darknet's truth rows for the first 4 train images (float32, any box order)."""
    result, out = facemask_all
    truth = np.load(require(refpath("oracle", "train_step", "v4tiny_facemask3", "truth.npy")))
    names = (FACEMASK / "train.list").read_text().split()[:4]
    for b, name in enumerate(names):
        rows = truth[b][truth[b][:, 0] != 0][:, :5]          # x, y, w, h, class
        label = label_path_for_image(str(out / name))
        ours = _read_labels(label).astype(np.float32)[:, [1, 2, 3, 4, 0]]  # like fscanf %f
        assert len(ours) == len(rows)
        key = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
        np.testing.assert_array_equal(key(ours), key(rows))


def test_clamps_a_real_box_one_pixel_past_the_edge(facemask_all):
    result, out = facemask_all
    ann = parse_voc_xml(FACEMASK / "annotations" / "maksssksksss231.xml")
    assert (ann.width, ann.height) == (400, 249)
    k = [o.box for o in ann.objects].index((392.0, 86.0, 401.0, 106.0))  # xmax = width + 1
    assert ann.objects[k].name == "with_mask"
    rows = _read_labels(out / "maksssksksss231.txt")
    # clamped to xmax = 400: cx = (392+400)/2/400, w = 8/400; unclamped would be 0.99125, 0.0225
    np.testing.assert_allclose(rows[k], [1, 0.99, 96 / 249, 0.02, 20 / 249], atol=5e-7)
    assert (out / "maksssksksss231.txt").read_text().splitlines()[k] == \
        "1 0.990000 0.385542 0.020000 0.080321"
    assert result.clamped_boxes == 11
    # the other objects of that image are untouched by clamping
    yolo, clamped = voc_to_yolo_boxes(ann.boxes, 400, 249)
    assert clamped.tolist() == [i == k for i in range(len(ann.objects))]


def test_voc_shift_reproduces_voc_label_py():
    boxes = np.array([[10.0, 20.0, 50.0, 80.0]])
    plain, _ = voc_to_yolo_boxes(boxes, 200, 100)
    shifted, _ = voc_to_yolo_boxes(boxes, 200, 100, voc_shift=True)
    np.testing.assert_allclose(plain, [[0.15, 0.5, 0.2, 0.6]])
    # voc_label.py: x = ((xmin + xmax)/2 - 1) / W, w unchanged
    np.testing.assert_allclose(shifted, [[(30 - 1) / 200, (50 - 1) / 100, 0.2, 0.6]])


def test_layout_symlinks_and_label_next_to_it(facemask_all):
    result, out = facemask_all
    img = out / "maksssksksss2.jpg"
    assert img.is_symlink() and os.path.samefile(img, FACEMASK / "images" / "maksssksksss2.jpg")
    assert str(img) in result.image_paths
    assert label_path_for_image(str(img)) == str(out / "maksssksksss2.txt")
    assert set(result.label_paths) == {label_path_for_image(p) for p in result.image_paths}
    # the shared dataset itself is never written to
    assert not list((FACEMASK / "images").glob("*.txt"))


def test_label_path_for_image_mirrors_replace_image_to_label():
    assert label_path_for_image("/d/VOC2007/JPEGImages/a.jpg") == "/d/VOC2007/labels/a.txt"
    assert label_path_for_image("/c/images/train2017/b.jpg") == "/c/labels/train2017/b.txt"
    assert label_path_for_image("/c/images/val2014/b.JPEG") == "/c/labels/val2014/b.txt"
    # any other folder (including plain /images/) keeps the label next to the image
    assert label_path_for_image("/f/images/c.png") == "/f/images/c.txt"
    assert label_path_for_image(" /f/x/d.jpeg\t") == "/f/x/d.txt"
    # only the first /JPEGImages/ is swapped; unsupported extension: no .txt
    assert label_path_for_image("/a/JPEGImages/JPEGImages/e.jpg") == "/a/labels/JPEGImages/e.txt"
    assert label_path_for_image("/a/e.Jpg") == "/a/e.Jpg"


def _write_xml(path, filename, objects, size=(100, 50), extra=""):
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>\n"
        for n, b, d in objects)
    size_xml = "" if size is None else \
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
    path.write_text(f"<annotation>\n<filename>{filename}</filename>\n{size_xml}\n{extra}{objs}"
                    "</annotation>\n")


def _blank_image(path, w=100, h=50):
    import cv2
    cv2.imwrite(str(path), np.zeros((h, w, 3), np.uint8))


def test_in_place_voc_layout_writes_into_labels(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    _blank_image(tmp_path / "JPEGImages" / "a.jpg")
    _write_xml(tmp_path / "Annotations" / "a.xml", "a.jpg",
               [("mask", (10, 10, 30, 40), 0), ("no_mask", (50, 0, 100, 50), 1)])
    res = convert_voc_dataset([tmp_path / "Annotations"], NAMES)
    assert res.label_paths == [str(tmp_path / "labels" / "a.txt")]
    assert (tmp_path / "labels" / "a.txt").read_text() == \
        "1 0.200000 0.500000 0.200000 0.600000\n2 0.750000 0.500000 0.500000 1.000000\n"
    res = convert_voc_dataset([tmp_path / "Annotations"], NAMES, skip_difficult=True)
    assert res.difficult_skipped == 1 and res.class_counts.tolist() == [0, 1, 0]


def test_png_rgba_originals_and_size_from_image(facemask_all, tmp_path):
    """The XMLs say .jpg; with --images-dir png_originals the RGBA PNGs are found by stem."""
    import cv2
    result, out = facemask_all
    pngs = sorted((FACEMASK / "png_originals").glob("*.png"))
    assert len(pngs) == 5
    assert cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED).shape[2] == 4  # RGBA
    xmls = [FACEMASK / "annotations" / (p.stem + ".xml") for p in pngs]
    res = convert_voc_dataset(xmls, NAMES, FACEMASK_NAME_MAP, out_dir=tmp_path / "png",
                              images_dir=FACEMASK / "png_originals")
    assert not res.size_mismatches
    for p, label in zip(pngs, res.label_paths):
        assert label.endswith(p.stem + ".txt") and os.readlink(label[:-4] + ".png") == str(p)
        assert Path(label).read_text() == (out / (p.stem + ".txt")).read_text()
    # <size> missing: the size comes from the image file (PNG header, JPEG SOF)
    for img in (pngs[0], refpath("images", "dog.jpg")):
        w, h = read_image_size(img)
        assert (w, h) == tuple(cv2.imread(str(img), cv2.IMREAD_UNCHANGED).shape[1::-1])
        d = tmp_path / f"nosize_{img.suffix[1:]}"
        d.mkdir()
        shutil.copy(img, d / img.name)
        _write_xml(d / "x.xml", img.name, [("mask", (0, 0, w / 2, h / 4), 0)], size=None)
        r = convert_voc_dataset([d / "x.xml"], NAMES)
        assert r.size_from_image == 1
        np.testing.assert_allclose(_read_labels(r.label_paths[0]), [[1, 0.25, 0.125, 0.5, 0.25]],
                                   atol=1e-6)


def test_background_unknown_missing_and_malformed(tmp_path):
    _blank_image(tmp_path / "a.jpg")
    _blank_image(tmp_path / "b.jpg")
    _write_xml(tmp_path / "a.xml", "a.jpg", [])                                # no objects
    _write_xml(tmp_path / "b.xml", "b.jpg", [("mask", (1, 1, 9, 9), 0), ("hat", (2, 2, 8, 8), 0)])
    out = tmp_path / "out"
    with pytest.raises(DataError) as e:
        convert_voc_dataset([tmp_path / "b.xml"], NAMES, out_dir=out)
    assert "b.xml" in str(e.value) and "'hat'" in str(e.value) and e.value.line is not None
    res = convert_voc_dataset([tmp_path / "a.xml", tmp_path / "b.xml"], NAMES, out_dir=out,
                              unknown="skip")
    assert res.unknown_counts == {"hat": 1} and res.class_counts.tolist() == [0, 1, 0]
    assert res.empty_images == [str(tmp_path / "a.xml")]
    assert (out / "a.txt").read_text() == ""      # background image: empty label file
    assert "background" in format_report(res)
    # a name map can rescue the unknown class; mapping to a class not in names is a usage error
    res = convert_voc_dataset([tmp_path / "b.xml"], NAMES, {"hat": "no_mask"}, out_dir=out)
    assert res.class_counts.tolist() == [0, 1, 1]
    with pytest.raises(UsageError, match="not a class"):
        convert_voc_dataset([tmp_path / "b.xml"], NAMES, {"hat": "cap"}, out_dir=out)
    # image missing
    _write_xml(tmp_path / "c.xml", "c.jpg", [("mask", (1, 1, 9, 9), 0)])
    with pytest.raises(DataError, match="not found") as e:
        convert_voc_dataset([tmp_path / "c.xml"], NAMES, out_dir=out)
    assert e.value.file.endswith("c.xml")
    res = convert_voc_dataset([tmp_path / "c.xml", tmp_path / "a.xml"], NAMES, out_dir=out,
                              missing_image="skip")
    assert res.missing_images == [str(tmp_path / "c.xml")] and len(res.label_paths) == 1
    # malformed XML, missing coordinate, inverted box: file and line in the error
    bad = tmp_path / "bad.xml"
    bad.write_text("<annotation>\n<filename>a.jpg</filename>\n<object><name>mask</name>\n</annotation>\n")
    with pytest.raises(DataError, match="malformed XML") as e:
        parse_voc_xml(bad)
    assert e.value.file == str(bad) and e.value.line == 4
    bad.write_text("<annotation><filename>a.jpg</filename>\n<object><name>mask</name>"
                   "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>x</xmax><ymax>5</ymax></bndbox>"
                   "</object></annotation>")
    with pytest.raises(DataError, match="<xmax> is not a number") as e:
        parse_voc_xml(bad)
    assert e.value.line == 2
    _write_xml(bad, "a.jpg", [("mask", (9, 1, 1, 9), 0)])
    with pytest.raises(DataError, match="xmax < xmin"):
        convert_voc_dataset([bad], NAMES, out_dir=out)
    with pytest.raises(DataError, match="not found"):
        convert_voc_dataset([tmp_path / "nope.xml"], NAMES)


def test_names_file_errors(tmp_path):
    p = tmp_path / "obj.names"
    p.write_text("a\nb\na\n")
    with pytest.raises(DataError, match="twice") as e:
        read_class_names(p)
    assert e.value.line == 3
    p.write_text("a\n\nb\n")
    with pytest.raises(DataError, match="blank line"):
        read_class_names(p)
    p.write_text("a\r\nb\r\n\n")
    assert read_class_names(p) == ["a", "b"]
    p.write_text("a\n\nb\n")
    assert read_names(p) == ["a", "", "b"]     # Darknet's reading; only prep refuses the blank


def test_cli_voc2yolo(tmp_path):
    from darknet_py.cli import main
    xmls = [str(FACEMASK / "annotations" / f"maksssksksss{i}.xml") for i in (2, 3, 231)]
    for x in xmls:
        require(Path(x))
    runner = CliRunner()
    res = runner.invoke(main, ["data", "voc2yolo", *xmls, "--names", str(REPO / "cfg" / "obj.names"),
                               "--map", "facemask", "--out-dir", str(tmp_path / "o"),
                               "--list", str(tmp_path / "o" / "all.txt")])
    assert res.exit_code == 0, res.output
    assert "clamped 1 boxes" in res.output
    assert (tmp_path / "o" / "all.txt").read_text().splitlines() == \
        [str(tmp_path / "o" / f"maksssksksss{i}.jpg") for i in (2, 3, 231)]
    res = runner.invoke(main, ["data", "voc2yolo", *xmls, "--names", str(REPO / "cfg" / "obj.names"),
                               "--out-dir", str(tmp_path / "o")])
    assert res.exit_code == 1
    assert "data error" in res.output and "maksssksksss2.xml" in res.output
    assert "Traceback" not in res.output
