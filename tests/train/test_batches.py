"""The train list of ``detector train`` (darknet_py.train.batches): one-line errors before any
training, and the endless batch source."""
import pytest

from darknet_py.data.datacfg import read_data_cfg
from darknet_py.errors import DataError
from darknet_py.train.batches import BatchSource, read_train_list


def test_train_list_and_its_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.txt").write_text("a.jpg\n\nb.jpg\n")
    (tmp_path / "obj.data").write_text("classes=1\ntrain=train.txt\n")
    assert read_train_list(read_data_cfg("obj.data"), "obj.data") == ("train.txt",
                                                                      ["a.jpg", "b.jpg"])
    # no train= line: Darknet's data/train.txt, and a clear line when it is not there either
    (tmp_path / "none.data").write_text("classes=1\n")
    with pytest.raises(DataError, match=r"^none.data: no train= line, and Darknet's default "
                                        r"list data/train.txt does not exist"):
        read_train_list(read_data_cfg("none.data"), "none.data")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.txt").write_text("c.jpg\n")
    assert read_train_list(read_data_cfg("none.data"), "none.data") == ("data/train.txt",
                                                                        ["c.jpg"])
    (tmp_path / "empty.txt").write_text("\n")
    (tmp_path / "empty.data").write_text("classes=1\ntrain=empty.txt\n")
    with pytest.raises(DataError, match="^empty.txt: the train list has no images"):
        read_train_list(read_data_cfg("empty.data"), "empty.data")


def test_batch_source_starts_a_new_pass_when_the_loader_ends():
    source = BatchSource([1, 2])
    assert [source.next_minibatch() for _ in range(5)] == [1, 2, 1, 2, 1]
