"""Regenerate the bad-input corpus in this folder (deterministic; the outputs are committed).

    python tests/data/bad/make_corpus.py

Every file is small. ``README.md`` says what each one is and what darknet-py must do with it;
``tests/test_bad_inputs.py`` runs each through the command line. The two broken upstream weights
files are not copied here: the tests read them from the reference data (``weights/broken/``).
"""
from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent

TINY_CFG = """[net]
batch=2
subdivisions=1
width=32
height=32
channels=3
learning_rate=0.001
max_batches=10
policy=constant

[convolutional]
batch_normalize=1
filters=4
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters=18
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=0,1,2
anchors=4,6, 8,10, 14,20
classes=1
num=3
"""


def _write(rel: str, data) -> None:
    p = HERE / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    p.write_bytes(data)


def _tiny_weights() -> bytes:
    """Header 0.2.5 (seen 0) + the 214 floats tiny.cfg needs, fixed pseudo-random values."""
    rng = np.random.default_rng(20240611)
    conv1 = [np.zeros(4), np.ones(4), np.zeros(4), np.ones(4),
             rng.uniform(-0.5, 0.5, 4 * 3 * 3 * 3)]
    # biases per anchor (x, y, w, h, objectness, class): confident enough to give detections
    conv2 = [np.tile([0.0, 0.0, 0.0, 0.0, 2.0, 2.0], 3), rng.uniform(-0.5, 0.5, 18 * 4)]
    body = np.concatenate(conv1 + conv2).astype("<f4").tobytes()
    return struct.pack("<iiiQ", 0, 2, 5, 0) + body


def cfgs() -> None:
    base = TINY_CFG
    cases = {
        "unknown_section": base.replace("[yolo]", "[foobar]\nsize=1\n\n[yolo]"),
        "duplicate_net": base + "\n[net]\nwidth=32\n",
        "missing_net": base.split("\n\n", 1)[1],
        "option_before_section": "width=32\n" + base,
        "bad_number": base.replace("filters=4", "filters=four"),
        "bad_float": base.replace("learning_rate=0.001", "learning_rate=0.0.1"),
        "nan_value": base.replace("learning_rate=0.001", "learning_rate=nan"),
        "int_overflow": base.replace("filters=4", "filters=99999999999999999999"),
        "negative_size": base.replace("size=3", "size=-3"),
        "negative_width": base.replace("width=32", "width=-32"),
        "zero_stride": base.replace("stride=2", "stride=0"),
        "route_future": base.replace("[yolo]", "[route]\nlayers=5\n\n[yolo]"),
        "huge_width": base.replace("width=32", "width=100000").replace("height=32",
                                                                        "height=100000"),
        "huge_filters": base.replace("filters=4", "filters=100000000"),
        "huge_kernel": base.replace("size=3", "size=100001"),
        "huge_upsample": base.replace("[convolutional]\nfilters=18",
                                      "[upsample]\nstride=100000\n\n[convolutional]\nfilters=18"),
        "huge_maxpool": base.replace("[convolutional]\nfilters=18",
                                     "[maxpool]\nsize=1000000000\nstride=1\n\n"
                                     "[convolutional]\nfilters=18"),
        "huge_num": base.replace("num=3", "num=1000000000"),
        "groups_not_dividing": base.replace("filters=4", "filters=4\ngroups=3"),
        "mask_beyond_anchors": base.replace("mask=0,1,2", "mask=0,1,7"),
        "filters_not_matching_classes": base.replace("filters=18", "filters=17"),
        "dilation_mismatch": base.replace("filters=4", "filters=4\ndilation=4\npadding=0")
                                 .replace("pad=1\nactivation=leaky", "activation=leaky"),
        "unknown_activation": base.replace("activation=leaky", "activation=leakyy"),
        "malformed_header": base.replace("[yolo]", "[yolo"),
        "no_equals": base.replace("filters=4", "filters"),
        "no_layers": base.split("\n\n", 1)[0] + "\n",
        "empty": "",
        "only_comments": "# a cfg with nothing in it\n; still nothing\n",
        "eval_attempt": base.replace("filters=4", "filters=__import__('os').system('touch PWNED')"),
    }
    for name, text in cases.items():
        _write(f"cfg/{name}.cfg", text)
    rng = np.random.default_rng(7)
    garbage = rng.integers(0, 256, 300, dtype=np.uint8).tobytes()
    _write("cfg/binary_garbage.cfg", b"\x7fELF\x02\x01\x01\x00" + garbage)
    _write("cfg/non_utf8.cfg", base.replace("[yolo]", "# caf\u00e9 au lait\n[yolo]")
           .encode("latin-1"))


def weights() -> None:
    good = _tiny_weights()
    _write("good/tiny.weights", good)
    _write("weights/empty.weights", b"")
    _write("weights/short_header.weights", good[:10])
    _write("weights/header_only.weights", good[:20])
    _write("weights/truncated_mid_layer.weights", good[:20 + 4 * 50 + 2])  # inside layer 0
    _write("weights/longer_than_needed.weights", good + b"\x00" * 40)
    _write("weights/wrong_major.weights", struct.pack("<iii", 7, 2, 5) + good[12:])
    _write("weights/wrong_minor.weights", struct.pack("<iii", 0, 555, 5) + good[12:])
    _write("weights/negative_revision.weights", struct.pack("<iii", 0, 2, -1) + good[12:])
    _write("weights/old_32bit_seen.weights", struct.pack("<iiiI", 0, 1, 0, 64) + good[20:])
    _write("weights/html_page.weights",
           b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n")
    _write("weights/lfs_pointer.weights", b"version https://git-lfs.github.com/spec/v1\n"
           b"oid sha256:0123456789abcdef\nsize 24251276\n")
    _write("weights/text.weights", b"these are not the weights you are looking for\n" * 4)


def images() -> None:
    src = cv2.imread(str(HERE / "good" / "small.jpg"))
    ok, buf = cv2.imencode(".jpg", src, [cv2.IMWRITE_JPEG_QUALITY, 90])
    jpg = buf.tobytes()
    _write("images/zero_bytes.jpg", b"")
    _write("images/truncated.jpg", jpg[: len(jpg) // 2])
    _write("images/truncated_in_header.jpg", jpg[:100])
    _write("images/not_an_image.jpg", b"hello, I am a text file\n")
    rgba = np.dstack([src, np.full(src.shape[:2], 128, np.uint8)])
    for name, arr in (("alpha.png", rgba), ("deep16.png", src.astype(np.uint16) * 257),
                      ("one_pixel.png", src[:1, :1]),
                      ("grey.jpg", cv2.cvtColor(src, cv2.COLOR_BGR2GRAY)),
                      ("grey.png", cv2.cvtColor(src, cv2.COLOR_BGR2GRAY))):
        ok, b = cv2.imencode(Path(name).suffix, arr)
        assert ok
        _write(f"images/{name}", b.tobytes())


LABELS = {
    "nan": "0 0.5 0.5 nan 0.2\n0 0.4 0.4 0.2 0.2\n",
    "inf": "0 0.5 0.5 0.2 inf\n0 0.4 0.4 0.2 0.2\n",
    "negative": "0 0.5 0.5 -0.2 0.2\n-1 0.5 0.5 0.2 0.2\n0 0.4 0.4 0.2 0.2\n",
    "class_too_big": "5 0.5 0.5 0.2 0.2\n0 0.4 0.4 0.2 0.2\n",
    "four_fields": "0 0.5 0.5 0.2\n0 0.4 0.4 0.2 0.2\n",
    "six_fields": "0 0.5 0.5 0.2 0.2 0.9\n",
    "blank_lines": "\n0 0.5 0.5 0.2 0.2\n\n\n0 0.4 0.4 0.2 0.2\n\n",
    "good": "0 0.5 0.5 0.3 0.3\n",
}


def labels() -> None:
    img = (HERE / "good" / "small.jpg").read_bytes()
    for name, text in LABELS.items():
        _write(f"labels/{name}.jpg", img)
        _write(f"labels/{name}.txt", text)
    _write("labels/train.txt", "".join(f"labels/{n}.jpg\n" for n in LABELS))
    _write("labels/train.data", "classes=1\ntrain=labels/train.txt\nnames=good/tiny.names\n"
           "backup=backup\n")
    _write("labels/tiny_b8.cfg", TINY_CFG.replace("batch=2", "batch=8"))


def datas() -> None:
    d = {
        "no_names": "classes=1\n",
        "no_train": "classes=1\nnames=good/tiny.names\nbackup=backup\n",
        "missing_list": "classes=1\ntrain=data/nope.txt\nnames=good/tiny.names\nbackup=backup\n",
        "list_is_dir": "classes=1\ntrain=data\nnames=good/tiny.names\nbackup=backup\n",
        "empty_list": "classes=1\ntrain=data/empty.txt\nnames=good/tiny.names\nbackup=backup\n",
        "no_usable_image": "classes=1\ntrain=data/no_usable.txt\nnames=good/tiny.names\n"
                           "backup=backup\n",
        "unknown_extension": "classes=1\ntrain=data/gif.txt\nnames=good/tiny.names\n"
                             "backup=backup\n",
        "bad_classes": "classes=three\nnames=good/tiny.names\n",
        "classes_mismatch": "classes=5\ntrain=labels/train.txt\nnames=good/tiny.names\n"
                            "backup=backup\n",
        "no_equals": "classes=1\ntrain labels/train.txt\n",
        "empty_value": "classes=1\nnames=\n",
        "too_few_names": "classes=1\nnames=data/empty.names\n",
    }
    for name, text in d.items():
        _write(f"data/{name}.data", text)
    _write("data/empty.txt", "\n\n")
    _write("data/empty.names", "")
    _write("data/no_usable.txt", "data/missing1.jpg\nimages/zero_bytes.jpg\n"
           "images/not_an_image.jpg\ndata/missing2.jpg\n")
    _write("data/gif.txt", "labels/good.gif\n")


def good() -> None:
    _write("good/tiny.cfg", TINY_CFG)
    _write("good/tiny.names", "face\n")
    _write("good/tiny.data", "classes=1\nnames=good/tiny.names\n")
    if not (HERE / "good" / "small.jpg").exists():  # 64x48 crop of Darknet's dog.jpg
        import os
        shared = Path(os.environ.get("DARKNET_PY_REFDATA", HERE.parents[3] / "shared"))
        im = cv2.imread(str(shared / "images" / "dog.jpg"))
        small = cv2.resize(im, (64, 48), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(HERE / "good" / "small.jpg"), small, [cv2.IMWRITE_JPEG_QUALITY, 90])


if __name__ == "__main__":
    good()
    cfgs()
    weights()
    images()
    labels()
    datas()
    print("corpus written to", HERE)
