"""Darknet training augmentation on synthetic images with known boxes.

The images have a flat background and pure-colour "objects" exactly covering their label boxes,
so after any transform the object pixels must sit inside the returned truth boxes (and the boxes
on the object pixels): this checks that boxes move with the image, through crop, flip,
letter_box, mosaic and mixup.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import refpath, require

from darknet_py.data.augment import (AugmentConfig, ImageParams, augment_image, blend_truth_mosaic,
                                     correct_boxes, distort_hsv, fill_truth_detection,
                                     image_data_augmentation, load_detection_sample,
                                     mosaic_shifts)
from darknet_py.errors import CfgError

OBJ_COLORS = [(250, 20, 20), (20, 250, 20), (20, 20, 250), (250, 250, 20)]
BG_COLORS = [(90, 90, 90), (60, 120, 160), (160, 60, 120), (120, 160, 60)]


def synth(ow, oh, boxes, bg=(90, 90, 90), colors=None):
    """uint8 RGB image with each box (class,x,y,w,h) painted in its class colour."""
    img = np.empty((oh, ow, 3), np.uint8)
    img[:] = bg
    for cls, x, y, w, h in boxes:
        x0, x1 = int(round((x - w / 2) * ow)), int(round((x + w / 2) * ow))
        y0, y1 = int(round((y - h / 2) * oh)), int(round((y + h / 2) * oh))
        img[max(y0, 0):y1, max(x0, 0):x1] = (colors or OBJ_COLORS)[int(cls)]
    return img


def object_mask(img_hwc_u8, color, tol=40):
    return (np.abs(img_hwc_u8.astype(np.int16) - np.array(color, np.int16)) < tol).all(-1)


def truth_rows(truth):
    n = int((truth[:, 0] > 0).sum())
    return truth[:n]


def box_pixels(row, W, H):
    x, y, w, h = row[:4]
    return (x - w / 2) * W, (x + w / 2) * W, (y - h / 2) * H, (y + h / 2) * H


def assert_pixels_inside_boxes(img, truth, cls, color, pad=2.0):
    """Every pixel of the object colour lies in a truth box of that class (+pad px).

    An object visible as a sliver of at most 1 px is skipped: Darknet drops boxes that are not
    wider/taller than one network pixel."""
    H, W = img.shape[:2]
    mask = object_mask(img, color)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0 or xs.max() - xs.min() < 1 or ys.max() - ys.min() < 1:
        return
    inside = np.zeros(len(xs), bool)
    for row in truth:
        if int(row[4]) != cls:
            continue
        l, r, t, b = box_pixels(row, W, H)
        inside |= (xs + 0.5 >= l - pad) & (xs + 0.5 <= r + pad) & (ys + 0.5 >= t - pad) \
            & (ys + 0.5 <= b + pad)
    assert inside.all(), f"{(~inside).sum()} object pixels of class {cls} outside its boxes"


def assert_boxes_on_pixels(img, truth, pad=2.5):
    """Each truth box matches the bounding box of its object pixels (within pad px)."""
    H, W = img.shape[:2]
    for row in truth:
        mask = object_mask(img, OBJ_COLORS[int(row[4])])
        l, r, t, b = box_pixels(row, W, H)
        sub = mask[max(int(t), 0):int(np.ceil(b)), max(int(l), 0):int(np.ceil(r))]
        ys, xs = np.nonzero(sub)
        assert len(xs), f"box {row} has no object pixels"
        x_off, y_off = max(int(l), 0), max(int(t), 0)
        assert abs(xs.min() + x_off - l) <= pad and abs(xs.max() + 1 + x_off - r) <= pad
        assert abs(ys.min() + y_off - t) <= pad and abs(ys.max() + 1 + y_off - b) <= pad


def to_hwc_u8(chw):
    return np.rint(chw.transpose(1, 2, 0) * 255).astype(np.uint8)


BOXES = np.array([[0, 0.30, 0.35, 0.30, 0.40], [1, 0.72, 0.70, 0.25, 0.30]], np.float32)


# ----------------------------------------------------------------------------- boxes
def test_flip_moves_the_box():
    img = synth(120, 80, BOXES)
    p = ImageParams(0, 0, 0, 0, 120, 80, 1, 0.0, 1.0, 1.0, 0, 0)
    truth, _ = fill_truth_detection(BOXES, None, 2, 200, 1, 0.0, 0.0, 1.0, 1.0, 96, 64)
    np.testing.assert_allclose(truth[:, 0], 1 - BOXES[:, 1], atol=1e-6)   # x mirrored
    np.testing.assert_allclose(truth[:, 1:4], BOXES[:, 2:5], atol=1e-6)
    np.testing.assert_array_equal(truth[:, 4], BOXES[:, 0])
    out = image_data_augmentation(img, 96, 64, p, truth)
    np.testing.assert_array_equal(out, cv2.resize(img, (96, 64))[:, ::-1])
    for k in range(2):
        assert_pixels_inside_boxes(out, truth, k, OBJ_COLORS[k])
    assert_boxes_on_pixels(out, truth)


def test_crop_clips_and_drops_like_darknet():
    boxes = np.array([
        [0, 0.25, 0.5, 0.1, 0.2],     # inside the left half: scaled x2
        [1, 0.75, 0.5, 0.1, 0.2],     # right half: cropped away (w = 0) -> dropped
        [2, 0.50, 0.5, 0.2, 0.2],     # straddles the cut: clipped to [0.8, 1]
        [0, 0.0, 0.0, 0.1, 0.1],      # x = y = 0: Darknet's invalid marker -> dropped
        [1, 0.1, 0.5, 0.0004, 0.2],   # narrower than one network pixel -> dropped
    ], np.float32)
    # crop = left half of the image (pleft 0, swidth ow/2): Darknet's sx = 1/0.5, dx = 0
    truth, min_w_h = fill_truth_detection(boxes, None, 3, 200, 0, 0.0, 0.0, 2.0, 1.0, 416, 416)
    np.testing.assert_allclose(truth, [[0.5, 0.5, 0.2, 0.2, 0], [0.9, 0.5, 0.2, 0.2, 2]],
                               atol=1e-6)
    assert min_w_h == int(0.2 * 416)
    # shifted crop: pleft = 0.25*ow, swidth = 0.5*ow -> dx = 0.5
    truth, _ = fill_truth_detection(boxes[:3], None, 3, 200, 0, 0.5, 0.0, 2.0, 1.0, 416, 416)
    np.testing.assert_allclose(truth, [[0.05, 0.5, 0.1, 0.2, 0], [0.95, 0.5, 0.1, 0.2, 1],
                                       [0.5, 0.5, 0.4, 0.2, 2]], atol=1e-6)
    # classes >= classes are dropped, max_boxes truncates *before* filtering (as Darknet)
    truth, _ = fill_truth_detection(boxes[:3], None, 2, 200, 0, 0.0, 0.0, 1.0, 1.0, 416, 416)
    assert truth[:, 4].tolist() == [0, 1]
    truth, _ = fill_truth_detection(boxes[[3, 0, 2]], None, 3, 2, 0, 0.0, 0.0, 1.0, 1.0, 416, 416)
    assert truth[:, 4].tolist() == [0]


def test_correct_boxes_marks_outside():
    b = np.array([[0, -0.3, 0.5, 0.2, 0.2], [0, 0.5, 1.3, 0.2, 0.2], [0, 0.5, 0.5, 0.2, 0.2]],
                 np.float32)
    out = correct_boxes(b, 0, 0, 1, 1, 0)
    assert (out[:2, 1:] == 999999).all() and (out[2, 1:] != 999999).all()


@pytest.mark.parametrize("letter_box", [0, 1])
def test_random_crop_flip_keeps_boxes_on_objects(letter_box):
    cfg = AugmentConfig(width=96, height=64, classes=2, jitter=0.3, resize=1.5, flip=1,
                        letter_box=letter_box)
    img = synth(150, 110, BOXES)
    rng = np.random.default_rng(1)
    seen_flip = 0
    for _ in range(25):
        a = augment_image(img, BOXES, cfg, rng, 96, 64)
        seen_flip += a.params.flip
        for k in range(2):
            assert_pixels_inside_boxes(a.image, a.truth, k, OBJ_COLORS[k])
        # boxes that are not clipped away keep their object pixels
        assert_boxes_on_pixels(a.image, a.truth[(a.truth[:, 2] > 0.05) & (a.truth[:, 3] > 0.05)])
    assert 0 < seen_flip < 25


def test_letter_box_pads_to_aspect_ratio():
    cfg = AugmentConfig(width=64, height=64, classes=2, jitter=0.0, flip=0, letter_box=1)
    img = synth(200, 100, BOXES)
    a = augment_image(img, BOXES, cfg, np.random.default_rng(0), 64, 64)
    order = np.argsort(a.truth[:, 4])
    np.testing.assert_allclose(a.truth[order, 1], 0.25 + 0.5 * BOXES[:, 2], atol=1e-6)
    np.testing.assert_allclose(a.truth[order, 3], 0.5 * BOXES[:, 4], atol=1e-6)
    np.testing.assert_allclose(a.truth[order, 0], BOXES[:, 1], atol=1e-6)
    mean = np.rint(np.array(cv2.mean(img)[:3]))
    assert (np.abs(a.image[:15].astype(float) - mean) <= 1).all()     # padding rows
    assert (np.abs(a.image[-15:].astype(float) - mean) <= 1).all()


def test_max_boxes():
    rng = np.random.default_rng(0)
    many = np.column_stack([np.zeros(300), rng.uniform(0.1, 0.9, (300, 2)),
                            np.full((300, 2), 0.05)]).astype(np.float32)
    cfg = AugmentConfig(width=64, height=64, classes=1, max_boxes=50, jitter=0.0, flip=0)
    img = synth(64, 64, [])
    image, truth = load_detection_sample(lambda k: (img, many), cfg, rng)
    assert truth.shape == (50, 5) and (truth[:, 0] > 0).all()
    cfg = AugmentConfig(width=64, height=64, classes=1, max_boxes=50, jitter=0.0, flip=0, mixup=3)
    image, truth = load_detection_sample(lambda k: (img, many), cfg, rng, apply_mixup=True)
    assert truth.shape == (50, 5)


# ----------------------------------------------------------------------------- colour
def test_hsv_keeps_boxes_and_changes_pixels():
    cfg = AugmentConfig(width=96, height=64, classes=2, jitter=0.0, flip=0, hue=0.1,
                        saturation=1.5, exposure=1.5)
    img = synth(120, 80, BOXES)
    plain = cv2.resize(img, (96, 64))
    changed = 0
    rng = np.random.default_rng(3)
    for _ in range(5):
        a = augment_image(img, BOXES, cfg, rng, 96, 64)
        order = np.argsort(a.truth[:, 4])
        np.testing.assert_allclose(a.truth[order][:, :4], BOXES[:, 1:], atol=1e-6)
        changed += int((a.image != plain).any())
    assert changed == 5


def test_distort_hsv_is_opencv_uint8_arithmetic():
    rgb = np.array([[[200, 40, 120], [10, 200, 30], [255, 255, 255]]], np.uint8)
    assert distort_hsv(rgb, 0.0, 1.0, 1.0) is rgb
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float64)
    out = cv2.cvtColor(distort_hsv(rgb, 0.0, 1.5, 2.0), cv2.COLOR_RGB2HSV).astype(np.float64)
    exp_v = np.minimum(np.rint(hsv[..., 2] * 2.0), 255)
    np.testing.assert_allclose(out[..., 2], exp_v, atol=2)       # V saturates at 255
    # hue: saturating add (Darknet quirk): 170 + 179*0.5 -> 255, not wrapped to 79.5
    px = cv2.cvtColor(np.array([[[170, 200, 200]]], np.uint8), cv2.COLOR_HSV2RGB)
    got = distort_hsv(px, 0.5, 1.0, 1.0)
    want = cv2.cvtColor(np.array([[[255, 200, 200]]], np.uint8), cv2.COLOR_HSV2RGB)
    np.testing.assert_array_equal(got, want)


def test_background_blur_keeps_boxes_sharp():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    truth = np.array([[0.5, 0.5, 0.25, 0.5, 0]], np.float32)
    p = ImageParams(0, 0, 0, 0, 96, 64, 0, 0.0, 1.0, 1.0, 1, 0)
    out = image_data_augmentation(img, 96, 64, p, truth)
    inside = np.zeros((64, 96), bool)
    inside[16:48, 36:60] = True
    np.testing.assert_array_equal(out[inside], img[inside])
    assert (out[~inside] != img[~inside]).mean() > 0.5
    p.blur = 5                                  # whole image, kernel 5
    out = image_data_augmentation(img, 96, 64, p, truth)
    np.testing.assert_array_equal(out, cv2.GaussianBlur(img, (5, 5), 0))


def test_gaussian_noise_only_brightens():
    img = np.full((32, 32, 3), 100, np.uint8)
    p = ImageParams(0, 0, 0, 0, 32, 32, 0, 0.0, 1.0, 1.0, 0, 30)
    out = image_data_augmentation(img, 32, 32, p, np.zeros((0, 5), np.float32),
                                  np.random.default_rng(0))
    assert (out >= img).all() and (out > img).mean() > 0.3


# ----------------------------------------------------------------------------- mosaic / mixup
def _quad_images():
    imgs = []
    for k in range(4):
        boxes = np.array([[k, 0.5, 0.5, 0.3, 0.3]], np.float32)
        imgs.append((synth(100, 80, boxes, bg=BG_COLORS[k]), boxes))
    return imgs


@pytest.mark.parametrize("mosaic_bound", [0, 1])
def test_mosaic_quadrants(mosaic_bound):
    imgs = _quad_images()
    cfg = AugmentConfig(width=96, height=64, classes=4, jitter=0.0, flip=0, mixup=3,
                        mosaic_bound=mosaic_bound)
    rng = np.random.default_rng(5)
    for _ in range(6):
        info = {}
        image, truth = load_detection_sample(lambda k: imgs[k], cfg, rng, apply_mixup=True,
                                             info=info)
        assert info["use_mixup"] == 3
        cx, cy = info["cut_x"], info["cut_y"]
        assert int(96 * 0.2) <= cx <= int(96 * 0.8) and int(64 * 0.2) <= cy <= int(64 * 0.8)
        out = to_hwc_u8(image)
        quads = [out[:cy, :cx], out[:cy, cx:], out[cy:, :cx], out[cy:, cx:]]
        for k, q in enumerate(quads):
            # each quadrant shows only image k: its background and its object colour
            assert object_mask(q, BG_COLORS[k], 3).mean() > 0.3, f"quadrant {k}"
            for j in range(4):
                if j != k:
                    assert not object_mask(q, BG_COLORS[j], 3).any(), f"quadrant {k} has {j}"
                    assert not object_mask(q, OBJ_COLORS[j], 3).any(), f"quadrant {k} has {j}"
        rows = truth_rows(truth)
        for k in range(4):
            assert_pixels_inside_boxes(out, rows, k, OBJ_COLORS[k])
        bounds = [(0, cx, 0, cy), (cx, 96, 0, cy), (0, cx, cy, 64), (cx, 96, cy, 64)]
        for row in rows:
            l, r, t, b = box_pixels(row, 96, 64)
            # Darknet tests the int-truncated edges, so a box may stick out by < 1 px
            assert -1 < l and r < 97 and -1 < t and b < 65
            if mosaic_bound:
                bl, br, bt, bb = bounds[int(row[4])]
                assert bl - 1 <= l and r <= br + 1 and bt - 1 <= t and b <= bb + 1


def test_mosaic_with_jitter_and_flip_keeps_boxes_on_objects():
    imgs = _quad_images()
    cfg = AugmentConfig(width=96, height=64, classes=4, jitter=0.3, flip=1, mixup=3)
    rng = np.random.default_rng(11)
    nboxes = 0
    for _ in range(10):
        image, truth = load_detection_sample(lambda k: imgs[k], cfg, rng, apply_mixup=True)
        out = to_hwc_u8(image)
        rows = truth_rows(truth)
        nboxes += len(rows)
        for k in range(4):
            assert_pixels_inside_boxes(out, rows, k, OBJ_COLORS[k], pad=2.5)
    assert nboxes > 10


def test_blend_truth_mosaic_by_hand():
    # quadrant 1 (top right), cut at (40, 30) in a 100x100 mosaic, no shifts:
    # x moves right by 0.4, y up by (100-30)/100
    t = np.array([[0.2, 0.8, 0.2, 0.2, 3]], np.float32)
    out = blend_truth_mosaic(np.zeros((0, 5), np.float32), t, 100, 100, 40, 30, 1, 0, 0, 0, 0,
                             0, 200)
    np.testing.assert_allclose(out, [[0.6, 0.1, 0.2, 0.2, 3]], atol=1e-6)
    # sticking out of the top (exact binary fractions: 128 px, cut at 64): the part above the
    # mosaic is cut off
    t = np.array([[0.25, 0.53125, 0.25, 0.125, 3]], np.float32)
    out = blend_truth_mosaic(np.zeros((0, 5), np.float32), t, 128, 128, 64, 64, 1, 0, 0, 0, 0,
                             0, 200)
    np.testing.assert_allclose(out, [[0.75, 0.046875, 0.25, 0.09375, 3]], atol=1e-7)
    # mosaic_bound: clipped to the quadrant's left edge (x >= 0.5)
    t = np.array([[0.0625, 0.75, 0.25, 0.25, 1]], np.float32)
    out = blend_truth_mosaic(np.zeros((0, 5), np.float32), t, 128, 128, 64, 64, 1, 0, 0, 0, 0,
                             1, 200)
    np.testing.assert_allclose(out, [[0.59375, 0.25, 0.1875, 0.25, 1]], atol=1e-7)
    # without mosaic_bound the same box keeps its full width
    out = blend_truth_mosaic(np.zeros((0, 5), np.float32), t, 128, 128, 64, 64, 1, 0, 0, 0, 0,
                             0, 200)
    np.testing.assert_allclose(out, [[0.5625, 0.25, 0.25, 0.25, 1]], atol=1e-7)
    # no room left: nothing appended
    full = np.ones((200, 5), np.float32)
    assert blend_truth_mosaic(full, t, 128, 128, 64, 64, 1, 0, 0, 0, 0, 0, 200).shape == (200, 5)


def test_mosaic_shifts_skip_padding():
    # padding (negative offsets) on the left of 20 px and at the bottom of 10 px of a 200x100
    # image, network 100x50: 10 and 5 network pixels are skipped, bounded by the cut
    p = ImageParams(-20, 30, 5, -10, 190, 105, 0, 0.0, 1.0, 1.0, 0, 0)
    assert mosaic_shifts(p, 200, 100, 100, 50, 40, 20) == (10, 0, 0, 5)
    assert mosaic_shifts(p, 200, 100, 100, 50, 6, 20) == (6, 0, 0, 5)
    # flipped: the left padding is now on the right
    p.flip = 1
    assert mosaic_shifts(p, 200, 100, 100, 50, 40, 20) == (0, 10, 0, 5)
    assert mosaic_shifts(p, 200, 100, 100, 50, 95, 20) == (0, 5, 0, 5)


def test_mixup_averages_two_images():
    a = synth(64, 64, [[0, 0.3, 0.3, 0.2, 0.2]], bg=(0, 0, 0))
    b = synth(64, 64, [[1, 0.7, 0.7, 0.2, 0.2]], bg=(200, 200, 200))
    srcs = [(a, np.array([[0, 0.3, 0.3, 0.2, 0.2]], np.float32)),
            (b, np.array([[1, 0.7, 0.7, 0.2, 0.2]], np.float32))]
    cfg = AugmentConfig(width=64, height=64, classes=2, jitter=0.0, flip=0, mixup=1)
    image, truth = load_detection_sample(lambda k: srcs[k], cfg, np.random.default_rng(0),
                                         apply_mixup=True)
    np.testing.assert_allclose(image, (a / 255.0 * 0.5 + b / 255.0 * 0.5).transpose(2, 0, 1),
                               atol=1e-6)
    rows = truth_rows(truth)
    np.testing.assert_allclose(rows, [[0.3, 0.3, 0.2, 0.2, 0], [0.7, 0.7, 0.2, 0.2, 1]],
                               atol=1e-6)


# ----------------------------------------------------------------------------- config
def test_config_from_darknet_cfgs(tmp_path):
    c = AugmentConfig.from_cfg(str(require(refpath("cfg", "darknet", "yolov4.cfg"))))
    assert (c.width, c.height, c.classes, c.max_boxes) == (608, 608, 80, 200)
    assert c.mosaic and c.jitter == pytest.approx(0.3) and c.random == 1.0
    assert c.hue == pytest.approx(0.1) and c.saturation == 1.5 and c.exposure == 1.5
    t = AugmentConfig.from_cfg(str(require(refpath("cfg", "darknet", "yolov4-tiny.cfg"))))
    assert not t.mosaic and t.random == 0 and t.letter_box == 0
    assert (t.width, t.height) == (416, 416)
    with pytest.raises(CfgError, match="letter_box=1 & mosaic=1"):
        AugmentConfig(width=64, height=64, mixup=3, letter_box=1)
    assert AugmentConfig(width=64, height=64, mixup=4).mixup == 3      # cutmix dropped
    assert AugmentConfig(width=64, height=64, exposure=0, saturation=0).exposure == 1.0
    p = tmp_path / "cls.cfg"
    p.write_text("[net]\nwidth=64\nheight=64\nchannels=3\n[convolutional]\nfilters=4\n")
    with pytest.raises(CfgError, match="not a detector cfg"):
        AugmentConfig.from_cfg(str(p))
