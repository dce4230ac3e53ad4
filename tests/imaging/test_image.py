"""Darknet-exact image input: load_image (OpenCV build), resize_image, letterbox_image.

Oracle: the input tensors Darknet itself fed to the network (oracle/dumps/*/input.npy and the
train-step batches), which must be reproduced bit-exactly from the image files.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import refpath, require
from darknet_py.errors import DarknetError, DataError
from darknet_py.imaging.image import (image_size, image_to_bgr_uint8, letterbox_image,
                                    letterbox_size, load_image, prepare_input, resize_image,
                                    save_image)


def _shared_path(p: str) -> Path:
    return refpath(p.replace("$SHARED/", ""))


def _dump_cases():
    root = refpath("oracle", "dumps")
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob("*/meta.json"))


@pytest.mark.parametrize("dump", _dump_cases() or ["<no oracle>"])
def test_input_matches_darknet_dump(dump):
    meta_path = require(refpath("oracle", "dumps", dump, "meta.json"))
    meta = json.loads(meta_path.read_text())
    # "input_npy" may point to a byte-identical file in another folder ("../x/input.npy (...)")
    ref = np.load(require(meta_path.parent / meta["input_npy"].split()[0]))
    image = require(_shared_path(meta["image"]))
    letter = meta["resize_mode"] == "letterbox"
    x = prepare_input(image, meta["net_w"], meta["net_h"], letter_box=letter)
    assert x.shape == (3, meta["net_h"], meta["net_w"]) and x.dtype == torch.float32
    diff = np.abs(x.numpy() - ref).max()
    assert diff <= 1e-5, f"{dump}: max abs diff {diff}"
    assert diff == 0.0, f"{dump}: expected bit-exact input, max abs diff {diff}"


@pytest.mark.parametrize("case", ["v4tiny_coco", "v4tiny_facemask3"])
def test_train_step_inputs_match(case):
    """Other image sizes (773x512, 640x424, 500x500, 400x290, 301x400 ...), stretched to 416."""
    meta = json.loads(require(refpath("oracle", "train_step", case, "meta.json")).read_text())
    ref = np.load(require(refpath("oracle", "train_step", case, meta["input_npy"].split()[0])))
    paths = [p.replace("$SHARED/", str(refpath()) + "/")
              .replace("$FACEMASK", str(refpath("datasets", "facemask", "images")))
             for p in meta["images"]]
    originals = [load_image(require(Path(p))) for p in paths]
    batch = torch.stack([prepare_input(im, 416, 416) for im in originals])
    assert [list(image_size(im)) for im in originals] == meta["image_orig_wh"]
    assert batch.shape == ref.shape
    assert np.abs(batch.numpy() - ref).max() == 0.0


def test_load_image_layout_and_values():
    path = require(refpath("images", "dog.jpg"))
    im = load_image(path)
    assert im.shape == (3, 576, 768) and im.dtype == torch.float32
    import cv2
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    # channel 0 is red, values are bytes/255
    assert np.allclose(im[0].numpy(), bgr[:, :, 2] / 255.0, atol=1e-7)
    assert np.allclose(im[2].numpy(), bgr[:, :, 0] / 255.0, atol=1e-7)
    grey = load_image(path, channels=1)
    assert grey.shape == (1, 576, 768)


def test_greyscale_and_rgba_files_become_rgb(tmp_path):
    import cv2
    grey = (np.arange(12 * 10, dtype=np.uint8).reshape(12, 10) * 2)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    im = load_image(tmp_path / "g.png")
    assert im.shape == (3, 12, 10)
    assert torch.equal(im[0], im[1]) and torch.equal(im[1], im[2])
    assert abs(float(im[0, 1, 0]) - 20 / 255.0) < 1e-7
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0] = 10   # B
    rgba[..., 2] = 200  # R
    rgba[..., 3] = 7    # alpha is dropped by IMREAD_COLOR
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    im = load_image(tmp_path / "a.png")
    assert im.shape == (3, 4, 5)
    assert abs(float(im[0, 0, 0]) - 200 / 255.0) < 1e-7 and abs(float(im[2, 0, 0]) - 10 / 255.0) < 1e-7
    deep = np.full((3, 3, 3), 65535, np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    im = load_image(tmp_path / "d.png")
    assert float(im.max()) == 1.0  # 16-bit is scaled to 8-bit by OpenCV's IMREAD_COLOR


def test_missing_or_bad_image_raises_data_error(tmp_path):
    with pytest.raises(DataError) as err:
        load_image(tmp_path / "nope.jpg")
    assert "nope.jpg" in str(err.value)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DarknetError) as err:
        prepare_input(bad, 32, 32)
    assert "bad.jpg" in str(err.value)


def test_resize_hand_cases():
    # one row 0, 1 -> 3 columns: sx = c*0.5 -> 0, 0.5, last column copies the last input column
    im = torch.tensor([[[0.0, 1.0]]])
    assert torch.allclose(resize_image(im, 3, 1), torch.tensor([[[0.0, 0.5, 1.0]]]))
    # identity size: a copy
    x = torch.rand(3, 5, 7)
    y = resize_image(x, 7, 5)
    assert torch.equal(x, y) and y is not x
    # Darknet's last-row quirk: 2 rows of ones stretched to 42 rows. h_scale = 1/41 in float32 puts
    # the last row at sy = 0.99999994, so it only gets (1 - dy) * row0 ~ 6e-8 instead of 1
    ones = torch.ones(1, 2, 1)
    out = resize_image(ones, 1, 42)
    assert torch.allclose(out[0, :41, 0], torch.ones(41))
    assert 0 < float(out[0, 41, 0]) < 1e-6
    # a regular case: 3 rows -> 5 rows interpolates halfway
    col = torch.tensor([0.0, 1.0, 3.0]).view(1, 3, 1)
    assert torch.allclose(resize_image(col, 1, 5).flatten(), torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0]))
    # batched input gives the same as per-image
    b = torch.rand(2, 3, 9, 11)
    rb = resize_image(b, 4, 6)
    assert torch.equal(rb[1], resize_image(b[1], 4, 6))


def test_letterbox_rule_and_fill():
    assert letterbox_size(768, 576, 416, 416) == (416, 312)
    assert letterbox_size(500, 500, 416, 416) == (416, 416)
    assert letterbox_size(301, 400, 416, 416) == (313, 416)   # (301*416)/400 = 313.04 -> 313
    im = torch.ones(3, 576, 768)
    lb = letterbox_image(im, 416, 416)
    assert lb.shape == (3, 416, 416)
    assert torch.all(lb[:, :52] == 0.5) and torch.all(lb[:, 52 + 312:] == 0.5)
    assert torch.all(lb[:, 52:52 + 312] == 1.0)


def test_bgr_uint8_truncates_like_darknet(tmp_path):
    im = torch.tensor([[[0.0, 0.5, 1.0]], [[0.2, 0.999, 0.004]], [[1.0, 1.0, 0.0]]])
    bgr = image_to_bgr_uint8(im)
    assert bgr.shape == (1, 3, 3)
    assert bgr[0, 1].tolist() == [255, 254, 127]  # B, G, R of pixel 1; truncation not rounding
    out = save_image(torch.rand(3, 8, 8), tmp_path / "predictions")
    assert out.endswith("predictions.jpg") and Path(out).is_file()


def _resize_reference(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """image.c's resize_image written out pixel by pixel in float32 (tiny images only)."""
    c, in_h, in_w = im.shape
    f = np.float32
    part = np.zeros((c, in_h, w), np.float32)
    w_scale = f(in_w - 1) / f(w - 1) if w > 1 else f(0)
    h_scale = f(in_h - 1) / f(h - 1) if h > 1 else f(0)
    for k in range(c):
        for r in range(in_h):
            for col in range(w):
                if col == w - 1 or in_w == 1:
                    val = im[k, r, in_w - 1]
                else:
                    sx = f(col) * w_scale
                    ix = int(sx)
                    dx = f(sx - f(ix))
                    val = f(f(f(1) - dx) * im[k, r, ix]) + f(dx * im[k, r, ix + 1])
                part[k, r, col] = f(val)
    out = np.zeros((c, h, w), np.float32)
    for k in range(c):
        for r in range(h):
            sy = f(r) * h_scale
            iy = int(sy)
            dy = f(sy - f(iy))
            for col in range(w):
                out[k, r, col] = f(f(f(1) - dy) * part[k, iy, col])
            if r == h - 1 or in_h == 1:
                continue
            for col in range(w):
                out[k, r, col] = f(out[k, r, col] + f(dy * part[k, iy + 1, col]))
    return out


@pytest.mark.parametrize("in_hw,out_wh", [((7, 9), (5, 4)), ((4, 5), (11, 8)), ((1, 6), (3, 2)),
                                          ((6, 1), (2, 3)), ((13, 17), (13, 6))])
def test_vectorised_resize_matches_pixel_loop(in_hw, out_wh):
    im = np.random.default_rng(sum(in_hw) * 7 + out_wh[0]).random((3,) + in_hw, np.float32)
    got = resize_image(torch.from_numpy(im), *out_wh)
    assert np.array_equal(got.numpy(), _resize_reference(im, *out_wh))
    # batched input gives the same planes
    both = resize_image(torch.from_numpy(np.stack([im, im[::-1].copy()])), *out_wh)
    assert torch.equal(both[0], got)
    assert np.array_equal(both[1].numpy(), _resize_reference(im[::-1].copy(), *out_wh))


def test_resize_results_do_not_share_reused_buffers():
    a_in, b_in = torch.rand(3, 20, 30), torch.rand(3, 20, 30)
    a = resize_image(a_in, 16, 12)
    a_copy = a.clone()
    resize_image(b_in, 16, 12)
    assert torch.equal(a, a_copy)
    assert torch.equal(resize_image(a_in, 16, 12), a_copy)


def test_exif_orientation_applied_like_imread(tmp_path):
    """load_image decodes from the bytes it read: OpenCV applies the EXIF orientation there as
    cv2.imread (Darknet's reader) does."""
    import cv2
    Image = pytest.importorskip("PIL.Image")
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :10] = 255
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6                                   # rotate 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    im.save(path, exif=exif)
    got = load_image(path)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert got.shape == (3, 40, 20) == (3,) + bgr.shape[:2]
    assert np.array_equal(got[0].numpy(), bgr[:, :, 2] * np.float32(1.0 / 255.0))
