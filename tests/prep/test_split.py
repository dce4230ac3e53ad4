"""train/valid/test split and obj.data (darknet_py.prep.split, `darknet-py data split`) on the
converted face-mask set."""
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import refpath, require

from darknet_py.errors import DataError, UsageError
from darknet_py.prep.split import parse_ratios, split_counts, split_dataset
from darknet_py.prep.voc import FACEMASK_NAME_MAP, convert_voc_dataset, label_path_for_image

FACEMASK = refpath("datasets", "facemask")
REPO = Path(__file__).resolve().parents[2]
NAMES = REPO / "cfg" / "obj.names"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The 725 face-mask images symlinked with their labels (a Darknet-ready folder)."""
    require(FACEMASK / "annotations")
    out = tmp_path_factory.mktemp("fm")
    res = convert_voc_dataset([FACEMASK / "annotations"], NAMES, FACEMASK_NAME_MAP, out_dir=out,
                              check_image_size=False)
    return out, res


def _classes_present(paths):
    """(n, 3) bool: which classes each image's label file holds (read directly)."""
    out = np.zeros((len(paths), 3), bool)
    for i, p in enumerate(paths):
        rows = np.loadtxt(label_path_for_image(p), ndmin=2)
        out[i, np.unique(rows[:, 0].astype(int))] = True
    return out


def test_ratios_must_sum_to_one():
    assert parse_ratios("0.7,0.15,0.15") == (0.7, 0.15, 0.15)
    assert parse_ratios("0.8,0.2") == (0.8, 0.2)
    with pytest.raises(UsageError, match="sum to 1.*1.1"):
        parse_ratios("0.7,0.2,0.2")
    with pytest.raises(UsageError, match="numbers"):
        parse_ratios("0.7,x,0.3")
    with pytest.raises(UsageError, match="2 .* or 3"):
        parse_ratios("1")
    with pytest.raises(UsageError, match="non-negative"):
        parse_ratios("1.2,-0.2")


def test_split_counts_sum_to_n():
    assert split_counts(725, (0.7, 0.15, 0.15)) == [507, 109, 109]
    assert split_counts(10, (0.7, 0.15, 0.15)) == [7, 2, 1]
    for n in range(0, 60):
        c = split_counts(n, (0.7, 0.15, 0.15))
        assert sum(c) == n and all(abs(ci - r * n) < 1 for ci, r in zip(c, (0.7, 0.15, 0.15)))


def test_split_writes_darknet_files(converted, tmp_path):
    folder, conv = converted
    res = split_dataset(folder, tmp_path / "s", NAMES, "0.7,0.15,0.15", seed=0)
    lists = {k: (tmp_path / "s" / f"{k}.txt").read_text().splitlines()
             for k in ("train", "valid", "test")}
    assert [len(v) for v in lists.values()] == [507, 109, 109]
    everything = sum(lists.values(), [])
    assert len(set(everything)) == 725 and set(everything) == set(conv.image_paths)
    # listed paths are the symlinks (not resolved): Darknet finds the label next to each
    assert all(p.startswith(str(folder)) and os.path.isfile(label_path_for_image(p))
               for p in everything)
    data = dict(line.split(" = ", 1) for line in
                (tmp_path / "s" / "obj.data").read_text().splitlines())
    assert data == {"classes": "3", "train": str(tmp_path / "s" / "train.txt"),
                    "valid": str(tmp_path / "s" / "valid.txt"),
                    "names": str(tmp_path / "s" / "obj.names"),
                    "backup": str(tmp_path / "s" / "backup") + "/"}
    assert (tmp_path / "s" / "backup").is_dir()
    assert (tmp_path / "s" / "obj.names").read_text() == "chin_diaper\nmask\nno_mask\n"
    assert "valid = " + str(tmp_path / "s" / "test.txt") in (tmp_path / "s" / "obj-test.data").read_text()
    # per-split box counts add up to the converter's
    total = sum(res.boxes_per_class[k] for k in res.splits)
    assert total.tolist() == conv.class_counts.tolist() == [112, 2787, 599]


def test_split_is_deterministic(converted, tmp_path):
    folder, _ = converted
    a = split_dataset(folder, tmp_path / "a", NAMES, seed=3)
    b = split_dataset(folder, tmp_path / "b", NAMES, seed=3)
    c = split_dataset(folder, tmp_path / "c", NAMES, seed=4)
    assert a.splits == b.splits
    assert (tmp_path / "a" / "train.txt").read_bytes() == (tmp_path / "b" / "train.txt").read_bytes()
    assert a.splits["valid"] != c.splits["valid"]


def test_stratify_divides_each_class_in_the_ratios(converted, tmp_path):
    folder, _ = converted
    res = split_dataset(folder, tmp_path / "st", NAMES, seed=0, stratify=True)
    assert [len(res.splits[k]) for k in ("train", "valid", "test")] == [507, 109, 109]
    pres = {k: _classes_present(v) for k, v in res.splits.items()}
    n_with = sum(p.sum(0) for p in pres.values())
    assert n_with.tolist() == [86, 653, 240]  # images holding each class
    # the rarest class (chin_diaper, 86 images) is split 70/15/15 to within one image
    for k, r in zip(("train", "valid", "test"), (0.7, 0.15, 0.15)):
        assert abs(pres[k][:, 0].sum() - r * 86) <= 1, (k, pres[k][:, 0].sum())
        assert res.images_per_class[k].tolist() == pres[k].sum(0).tolist()


def test_list_input_root_and_errors(converted, tmp_path):
    folder, _ = converted
    train_list = require(FACEMASK / "train.list")  # bare names, relative to the images
    with pytest.raises(DataError, match="--root") as e:
        split_dataset(train_list, tmp_path / "x", NAMES)
    assert e.value.line == 1
    res = split_dataset(train_list, tmp_path / "l", NAMES, "0.8,0.2", root=folder)
    assert [len(v) for v in res.splits.values()] == [478, 119]
    assert not (tmp_path / "l" / "test.txt").exists()
    assert sum(res.boxes_per_class.values()).tolist() == [94, 2248, 489]  # as Darknet counted

    # a label with a class id the names file does not have
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.jpg").write_bytes(b"")
    (d / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n3 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError, match="class id 3") as e:
        split_dataset(d, tmp_path / "y", NAMES)
    assert e.value.file == str(d / "a.txt") and e.value.line == 2
    with pytest.raises(DataError, match="not found"):
        split_dataset(tmp_path / "nothing", tmp_path / "y", NAMES)


def test_cli_split(converted, tmp_path):
    from darknet_py.cli import main
    folder, _ = converted
    runner = CliRunner()
    args = ["data", "split", str(folder), "--names", str(NAMES), "--out", str(tmp_path / "o")]
    res = runner.invoke(main, args + ["--ratios", "0.7,0.15,0.15", "--seed", "0", "--stratify"])
    assert res.exit_code == 0, res.output
    assert "507" in res.output and "obj.data" in res.output
    res = runner.invoke(main, args + ["--ratios", "0.5,0.2,0.2"])
    assert res.exit_code == 2 and "must sum to 1" in res.output
