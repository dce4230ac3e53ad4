"""Training-image augmentation of Darknet's detector, OpenCV build.

Mirrors ``load_data_detection`` (``data.c``, the ``#ifdef OPENCV`` version), its helpers
``fill_truth_detection``/``correct_boxes``/``blend_truth``/``blend_truth_mosaic`` and
``image_data_augmentation`` (``image_opencv.cpp``):

1. per image: random crop offsets ``pleft, pright, ptop, pbot`` in ``[-jitter*ow, +jitter*ow]``
   (plus the ``resize=`` range), ``letter_box`` padding to the network aspect ratio, and for
   mosaic the "move every 2nd image to the corner" rule; the crop (padded with the image's mean
   colour) is **stretched** to the network size with ``cv::resize`` INTER_LINEAR;
2. horizontal flip (``flip=1``: 50 %);
3. HSV distortion on the 8-bit image, exactly as ``image_data_augmentation`` does it:
   ``S *= dsat``, ``V *= dexp``, ``H += 179*dhue`` with OpenCV's saturating uint8 arithmetic
   (the hue saturates at 0/255 instead of wrapping: a Darknet quirk we keep), where
   ``dhue ~ U(-hue, hue)`` and ``dsat``/``dexp`` are ``rand_scale`` (``U(1, s)`` or its inverse);
4. ``blur``: 1/3 no blur, 1/3 Gaussian 17x17 of the background only (boxes stay sharp), 1/3
   Gaussian with kernel ``blur|1`` of the whole image (limited by the smallest box / 8);
5. ``gaussian_noise``: 50 %: ``cv::randn`` into a *uint8* matrix, so negative noise saturates to
   0 and the noise only brightens (Darknet quirk, kept);
6. boxes: shuffled, mapped through the crop, flipped, clipped to [0,1], truncated to
   ``max_boxes`` *before* filtering, and dropped when smaller than one network pixel or centred
   outside (``fill_truth_detection``);
7. ``mosaic`` (``mixup=3``): 50 % of samples are a mosaic of 4 augmented images cut at a random
   ``cut_x, cut_y`` in [0.2, 0.8] of the network size; boxes are shifted into their quadrant and
   clipped to the mosaic (``mosaic_bound=1``: to their quadrant) and kept only when fully inside
   with 0 < w, h < 1 (``blend_truth_mosaic``); ``mixup=1``: 50 % of samples are the average of 2
   images with both box sets.

Output: image float32 ``(C, h, w)`` RGB in [0, 1] and truth float32 ``(max_boxes, 5)`` rows
``(x, y, w, h, class)`` relative to the network input, zero-padded (Darknet's ``d.y``; a row
with ``x == 0`` ends the list).

Deliberate differences:

* Randomness comes from a seedable ``numpy.random.Generator`` (Darknet: ``rand()``), so the
  random streams differ; the distributions are Darknet's. The shuffle of the boxes is a uniform
  permutation (Darknet's ``randomize_boxes`` swaps with a random index, a slightly non-uniform
  shuffle); ``cv::randn`` noise is drawn with numpy.
* Darknet decides mosaic/mixup (50 %) once per loader thread chunk (``n/threads`` images); we
  decide per sample, with the same overall rate (with ``[net] track=1`` per chunk, as Darknet:
  :class:`~darknet_py.data.dataset.SequenceBatchSampler`, which also shares one
  :class:`AugmentDraws` among the images of a chunk).
* Darknet picks every image of a batch at random with replacement; the first image of a sample
  is the one the sampler asks for, the other mosaic/mixup images are random.
* The truth has 5 columns (Darknet at this commit has ``truth_size = 6``, the 6th being a
  track id used only for embeddings).
* ``cutmix`` (``mixup=2``) is not supported for detection, as in Darknet (it prints a message and
  disables it); ``mixup=4`` (mosaic + cutmix) becomes mosaic.
* Non-finite / out-of-range label rows are dropped when the label file is read
  (:mod:`darknet_py.data.labels`) instead of reaching ``fill_truth_detection``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..errors import CfgError
from ..imaging.image import decode_image
from ..model.network import Network

log = logging.getLogger("darknet_py.data")

F32 = np.float32


# ----------------------------------------------------------------------------- configuration
@dataclass
class AugmentConfig:
    """The options ``train_detector`` passes to the loader (``load_args``).

    ``mixup`` is Darknet's combined code (``NetConfig.mixup``): 0 none, 1 mixup, 2 cutmix
    (unsupported for detection: off), 3 mosaic, 4 mosaic+cutmix (= mosaic).
    ``jitter``, ``resize``, ``max_boxes``, ``classes`` come from the last detection layer.
    """

    width: int
    height: int
    channels: int = 3
    classes: int = 80
    max_boxes: int = 200
    jitter: float = 0.2
    resize: float = 1.0
    flip: int = 1
    hue: float = 0.0
    saturation: float = 1.0
    exposure: float = 1.0
    blur: int = 0
    gaussian_noise: int = 0
    mixup: int = 0
    letter_box: int = 0
    mosaic_bound: int = 0
    random: float = 0.0          # [yolo] random= (multi-scale), used by the size schedule
    resize_step: float = 32.0
    file: str = "<cfg>"

    def __post_init__(self) -> None:
        # load_thread: a zero exposure/saturation means "off" (1)
        if self.exposure == 0:
            self.exposure = 1.0
        if self.saturation == 0:
            self.saturation = 1.0
        if self.mixup in (2, 4):
            log.warning("cutmix=1 isn't supported for Detector (use cutmix=1 only for Classifier)")
            self.mixup = 0 if self.mixup == 2 else 3
        if self.mixup == 3 and self.letter_box:
            raise CfgError("Combination: letter_box=1 & mosaic=1 - isn't supported, use only 1 of "
                           "these parameters", file=self.file)
        if self.width <= 0 or self.height <= 0:
            raise CfgError(f"network size {self.width}x{self.height} is not positive",
                           file=self.file)
        if self.channels not in (1, 3):
            raise CfgError(f"the detection loader supports channels=1 or 3, got {self.channels}",
                           file=self.file)

    @property
    def mosaic(self) -> bool:
        return self.mixup == 3

    def without_augmentation(self) -> "AugmentConfig":
        """Same sizes and letter_box, no random transform (for validation / inspection)."""
        return replace(self, jitter=0.0, resize=1.0, flip=0, hue=0.0, saturation=1.0,
                       exposure=1.0, blur=0, gaussian_noise=0, mixup=0)

    @classmethod
    def from_network(cls, net: Network) -> "AugmentConfig":
        """The options ``train_detector`` reads: ``[net]``'s, and the built *last* detection
        layer's ``classes``, ``max_boxes``, ``jitter``, ``resize`` and ``random`` (each head kind
        with its own defaults, as Darknet asks ``net.layers[net.n - 1]``)."""
        if not net.heads:
            raise CfgError("no [yolo], [region] or [Gaussian_yolo] layer: not a detector cfg",
                           file=net.cfg_path)
        c, head = net.config, net.heads[-1]
        return cls(width=c.width, height=c.height, channels=c.channels or 3,
                   classes=head.classes, max_boxes=head.max_boxes, jitter=head.jitter,
                   resize=head.resize, flip=c.flip, hue=c.hue, saturation=c.saturation,
                   exposure=c.exposure, blur=c.blur, gaussian_noise=c.gaussian_noise,
                   mixup=c.mixup, letter_box=c.letter_box, mosaic_bound=c.mosaic_bound,
                   random=head.random, resize_step=c.resize_step, file=net.cfg_path)

    @classmethod
    def from_cfg(cls, path: str) -> "AugmentConfig":
        """:meth:`from_network` of the network a cfg builds."""
        return cls.from_network(Network.from_cfg(path))


# ----------------------------------------------------------------------------- random helpers
def _uniform(rng: np.random.Generator, a: float, b: float) -> float:
    """``rand_uniform_strong``: U(min, max) with the bounds swapped when reversed."""
    lo, hi = (a, b) if a <= b else (b, a)
    return float(F32(rng.random()) * F32(hi - lo) + F32(lo))


def rand_scale(rng: np.random.Generator, s: float) -> float:
    """``rand_scale``: U(1, s), inverted half of the time."""
    scale = _uniform(rng, 1.0, s)
    return scale if rng.integers(2) else float(F32(1.0 / scale))


def _precalc(lo: float, hi: float, r: float) -> float:
    """``rand_precalc_random``: r * (max - min) + min (bounds swapped when reversed), float."""
    if hi < lo:
        lo, hi = hi, lo
    return float(F32(r) * F32(hi - lo) + F32(lo))


def _trunc(v: float) -> int:
    """C float -> int conversion (towards zero)."""
    return int(math.trunc(float(v)))


# ----------------------------------------------------------------------------- image I/O
def load_image(path: str, channels: int = 3) -> np.ndarray:
    """The training image: :func:`darknet_py.imaging.image.decode_image` (the one decoder, so
    training refuses exactly the files inference refuses: it raises
    :class:`~darknet_py.errors.DataError`) as the ``(H, W, C)`` uint8 RGB array the augmentation
    works on. ``channels`` >= 3 reads in colour (``IMREAD_COLOR``), fewer in greyscale."""
    mat = decode_image(path, 3 if channels >= 3 else 1)
    if mat.ndim == 2:
        return mat[:, :, None]
    return cv2.cvtColor(mat, cv2.COLOR_BGR2RGB)


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    out = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    return out[:, :, None] if out.ndim == 2 else out


# ----------------------------------------------------------------------------- per-image params
@dataclass
class ImageParams:
    """Random choices for one image (the per-image part of ``load_data_detection``)."""

    pleft: int
    pright: int
    ptop: int
    pbot: int
    swidth: int
    sheight: int
    flip: int
    dhue: float
    dsat: float
    dexp: float
    blur: int
    gaussian_noise: int


@dataclass(frozen=True)
class AugmentDraws:
    """The random numbers of ``load_data_detection`` that do not depend on the image: the crop
    fractions (``r1..r4``, ``resize_r1/2``), flip, colour, blur and noise choices. Darknet draws
    them for every image, or with ``[net] track=1`` once per loader chunk (its
    ``augmentation_calculated``), so that the frames of a sequence get the same crop and colour."""

    resize_r1: float
    resize_r2: float
    r1: float
    r2: float
    r3: float
    r4: float
    flip: int
    dhue: float
    dsat: float
    dexp: float
    blur: int
    gaussian_noise: int


def draw_augmentation(rng: np.random.Generator, cfg: AugmentConfig) -> AugmentDraws:
    """Draw one :class:`AugmentDraws` (in the order :func:`sample_image_params` always used, so a
    seeded sample is unchanged whether it draws here or there)."""
    resize_r1, resize_r2, r1, r2, r3, r4 = (float(v) for v in rng.random(6))
    flip = int(rng.integers(2)) if cfg.flip else 0
    dhue = _uniform(rng, -cfg.hue, cfg.hue)
    dsat = rand_scale(rng, cfg.saturation)
    dexp = rand_scale(rng, cfg.exposure)
    blur = 0
    if cfg.blur:
        tmp_blur = int(rng.integers(3))   # 0: off, 1: background, 2: whole image
        blur = 0 if tmp_blur == 0 else (1 if tmp_blur == 1 else cfg.blur)
    gaussian_noise = cfg.gaussian_noise if (cfg.gaussian_noise and rng.integers(2) == 1) else 0
    return AugmentDraws(resize_r1, resize_r2, r1, r2, r3, r4, flip, dhue, dsat, dexp, blur,
                        gaussian_noise)


def sample_image_params(rng: np.random.Generator, cfg: AugmentConfig, ow: int, oh: int, w: int,
                        h: int, use_mixup: int = 0, i_mixup: int = 0,
                        draws: Optional[AugmentDraws] = None) -> ImageParams:
    """Darknet's per-image crop/flip/colour draws, including ``letter_box`` and the mosaic
    corner move; an invalid crop is reset to the whole image as Darknet does. ``draws``: use
    these instead of drawing new ones (``track=1``: one set per loader chunk); the crop offsets
    are still computed from this image's size, as Darknet does."""
    dw = _trunc(F32(ow) * F32(cfg.jitter))
    dh = _trunc(F32(oh) * F32(cfg.jitter))
    resize_down = cfg.resize if cfg.resize <= 1.0 else 1.0 / cfg.resize
    resize_up = cfg.resize if cfg.resize >= 1.0 else 1.0 / cfg.resize
    min_rdw = _trunc(ow * (1 - 1 / resize_down) / 2)
    min_rdh = _trunc(oh * (1 - 1 / resize_down) / 2)
    max_rdw = _trunc(ow * (1 - 1 / resize_up) / 2)
    max_rdh = _trunc(oh * (1 - 1 / resize_up) / 2)

    d = draws if draws is not None else draw_augmentation(rng, cfg)
    resize_r1, resize_r2, r1, r2, r3, r4 = d.resize_r1, d.resize_r2, d.r1, d.r2, d.r3, d.r4
    flip, dhue, dsat, dexp = d.flip, d.dhue, d.dsat, d.dexp
    blur, gaussian_noise = d.blur, d.gaussian_noise

    pleft = _trunc(_precalc(-dw, dw, r1))
    pright = _trunc(_precalc(-dw, dw, r2))
    ptop = _trunc(_precalc(-dh, dh, r3))
    pbot = _trunc(_precalc(-dh, dh, r4))
    if cfg.resize < 1:
        hi_w, hi_h = 0, 0
    else:
        hi_w, hi_h = max_rdw, max_rdh
    pleft = _trunc(pleft + _precalc(min_rdw, hi_w, resize_r1))
    pright = _trunc(pright + _precalc(min_rdw, hi_w, resize_r2))
    ptop = _trunc(ptop + _precalc(min_rdh, hi_h, resize_r1))
    pbot = _trunc(pbot + _precalc(min_rdh, hi_h, resize_r2))

    if cfg.letter_box:
        img_ar = F32(ow) / F32(oh)
        net_ar = F32(w) / F32(h)
        if img_ar / net_ar > 1:        # image is wider: pad top and bottom
            delta_h = (F32(ow) / net_ar - F32(oh)) / F32(2)
            ptop = _trunc(ptop - delta_h)
            pbot = _trunc(pbot - delta_h)
        else:                           # image is taller: pad left and right
            delta_w = (F32(oh) * net_ar - F32(ow)) / F32(2)
            pleft = _trunc(pleft - delta_w)
            pright = _trunc(pright - delta_w)

    if use_mixup == 3 and rng.integers(2) == 0:
        # move every 2nd image to the corner so that most of it stays visible
        # each quadrant keeps the side towards the mosaic centre (mirrored when flipped)
        if (i_mixup in (0, 2)) != bool(flip):
            pleft, pright = pleft + pright, 0
        else:
            pright, pleft = pright + pleft, 0
        if i_mixup in (0, 1):
            pbot, ptop = pbot + ptop, 0
        else:
            ptop, pbot = ptop + pbot, 0

    swidth = ow - pleft - pright
    sheight = oh - ptop - pbot
    if swidth <= 0 or sheight <= 0 or (ow - pleft) <= 0 or (oh - ptop) <= 0:
        log.warning("invalid resize (swidth=%d, sheight=%d, pleft=%d, pright=%d, ptop=%d, pbot=%d, "
                    "ow=%d, oh=%d): using the whole image", swidth, sheight, pleft, pright, ptop,
                    pbot, ow, oh)
        swidth, sheight, pleft, ptop = ow, oh, 0, 0
    return ImageParams(pleft, pright, ptop, pbot, swidth, sheight, flip, dhue, dsat, dexp, blur,
                       gaussian_noise)


# ----------------------------------------------------------------------------- boxes
def correct_boxes(boxes: np.ndarray, dx: float, dy: float, sx: float, sy: float,
                  flip: int) -> np.ndarray:
    """``correct_boxes``: map label boxes ``(M,5)`` (class,x,y,w,h) through crop+flip.

    Returns ``(M,5)`` float32 (class, x, y, w, h); boxes Darknet marks invalid (x == y == 0, or
    entirely outside [0,1] before the transform) get x = y = w = h = 999999.
    """
    b = boxes.astype(F32, copy=False)
    cls, x, y, w, h = b[:, 0], b[:, 1], b[:, 2], b[:, 3], b[:, 4]
    half = F32(2)
    left, right = x - w / half, x + w / half
    top, bottom = y - h / half, y + h / half
    invalid = ((x == 0) & (y == 0)) | ((x + w / half) < 0) | ((y + h / half) < 0) \
        | ((x - w / half) > 1) | ((y - h / half) > 1)
    sx, sy, dx, dy = F32(sx), F32(sy), F32(dx), F32(dy)
    left, right = left * sx - dx, right * sx - dx
    top, bottom = top * sy - dy, bottom * sy - dy
    if flip:
        left, right = F32(1) - right, F32(1) - left
    left, right = np.clip(left, 0, 1), np.clip(right, 0, 1)
    top, bottom = np.clip(top, 0, 1), np.clip(bottom, 0, 1)
    out = np.empty_like(b)
    out[:, 0] = cls
    out[:, 1] = (left + right) / half
    out[:, 2] = (top + bottom) / half
    out[:, 3] = np.clip(right - left, 0, 1)
    out[:, 4] = np.clip(bottom - top, 0, 1)
    out[invalid, 1:] = F32(999999)
    return out


def fill_truth_detection(boxes: np.ndarray, rng: Optional[np.random.Generator], classes: int,
                         max_boxes: int, flip: int, dx: float, dy: float, sx: float, sy: float,
                         net_w: int, net_h: int) -> Tuple[np.ndarray, int]:
    """``fill_truth_detection``: shuffle, :func:`correct_boxes`, keep the first ``max_boxes``,
    then drop boxes under one network pixel, invalid ones and those centred outside (0, 1].

    Returns (truth ``(K,5)`` float32 rows ``(x, y, w, h, class)``, ``min_w_h``: the smallest
    box side in network pixels, as int, 0 when there is no box).
    """
    if boxes.shape[0] == 0:
        return np.zeros((0, 5), F32), 0
    if rng is not None and boxes.shape[0] > 1:
        boxes = boxes[rng.permutation(boxes.shape[0])]
    b = correct_boxes(boxes, dx, dy, sx, sy, flip)[:max_boxes]
    cls, x, y, w, h = b[:, 0], b[:, 1], b[:, 2], b[:, 3], b[:, 4]
    lowest_w, lowest_h = F32(1) / F32(net_w), F32(1) / F32(net_h)
    keep = (cls < classes) & (cls >= 0) & ~((w < lowest_w) | (h < lowest_h)) \
        & ~((x == 999999) | (y == 999999)) & ~((x <= 0) | (x > 1) | (y <= 0) | (y > 1))
    b = b[keep]
    truth = np.empty((b.shape[0], 5), F32)
    truth[:, 0] = b[:, 1]
    truth[:, 1] = b[:, 2]
    truth[:, 2] = np.minimum(b[:, 3], 1)
    truth[:, 3] = np.minimum(b[:, 4], 1)
    truth[:, 4] = b[:, 0]
    if truth.shape[0] == 0:
        return truth, 0
    min_w_h = int(min(float((truth[:, 2] * F32(net_w)).min()),
                      float((truth[:, 3] * F32(net_h)).min())))
    return truth, min_w_h


def blend_truth(acc: np.ndarray, new: np.ndarray, max_boxes: int) -> np.ndarray:
    """``blend_truth`` (mixup): append the second image's boxes while there is room."""
    room = max(0, max_boxes - acc.shape[0])
    return np.concatenate([acc, new[:room]], 0)


def blend_truth_mosaic(acc: np.ndarray, truth: np.ndarray, w: int, h: int, cut_x: int, cut_y: int,
                       i_mixup: int, left_shift: int, right_shift: int, top_shift: int,
                       bot_shift: int, mosaic_bound: int, max_boxes: int) -> np.ndarray:
    """``blend_truth_mosaic``: move one image's boxes into its mosaic quadrant, clip them, keep
    those inside the mosaic and appends them to ``acc`` (rows (x, y, w, h, class))."""
    room = max(0, max_boxes - acc.shape[0])
    t = truth[:room]
    if t.shape[0] == 0:
        return acc
    xb, yb, wb, hb = (t[:, k].astype(F32) for k in range(4))
    fw, fh = F32(w), F32(h)
    if i_mixup in (0, 2):
        xb = xb - F32(w - cut_x - right_shift) / fw
    else:
        xb = xb + F32(cut_x - left_shift) / fw
    if i_mixup in (0, 1):
        yb = yb - F32(h - cut_y - bot_shift) / fh
    else:
        yb = yb + F32(cut_y - top_shift) / fh
    half = F32(2)

    def edges(xb, yb, wb, hb):
        return (np.trunc((xb - wb / half) * fw).astype(np.int64),
                np.trunc((xb + wb / half) * fw).astype(np.int64),
                np.trunc((yb - hb / half) * fh).astype(np.int64),
                np.trunc((yb + hb / half) * fh).astype(np.int64))

    left, right, top, bot = edges(xb, yb, wb, hb)
    if mosaic_bound:
        lb, rb = (0, cut_x) if i_mixup in (0, 2) else (cut_x, w)
        tb, bb = (0, cut_y) if i_mixup in (0, 1) else (cut_y, h)
        left = np.maximum(left, lb)
        right = np.minimum(right, rb)
        top = np.maximum(top, tb)
        bot = np.minimum(bot, bb)
        xb = (F32(1) * (right + left).astype(F32) / half) / fw
        wb = (right - left).astype(F32) / fw
        yb = ((bot + top).astype(F32) / half) / fh
        hb = (bot - top).astype(F32) / fh
    else:
        d = np.where(left < 0, left.astype(F32) / fw, F32(0))
        xb, wb = xb - d / half, wb + d
        d = np.where(right > w, (right - w).astype(F32) / fw, F32(0))
        xb, wb = xb - d / half, wb - d
        d = np.where(top < 0, top.astype(F32) / fh, F32(0))
        yb, hb = yb - d / half, hb + d
        d = np.where(bot > h, (bot - h).astype(F32) / fh, F32(0))
        yb, hb = yb - d / half, hb - d
        left, right, top, bot = edges(xb, yb, wb, hb)
    lowest_w, lowest_h = F32(1) / fw, F32(1) / fh
    keep = (left >= 0) & (right <= w) & (top >= 0) & (bot <= h) \
        & (wb > 0) & (wb < 1) & (hb > 0) & (hb < 1) & (xb > 0) & (xb < 1) & (yb > 0) & (yb < 1) \
        & (wb > lowest_w) & (hb > lowest_h)
    moved = np.stack([xb, yb, wb, hb, t[:, 4]], 1).astype(F32)[keep]
    return np.concatenate([acc, moved], 0)


# ----------------------------------------------------------------------------- image transform
def _box_cover_mask(truth: np.ndarray, cols: int, rows: int) -> np.ndarray:
    """Pixels inside any truth box (Darknet's ROIs of the background blur), vectorised with a
    2-D difference array instead of one copy per box."""
    x, y, w, h = (truth[:, k].astype(np.float64) for k in range(4))
    left = np.trunc((x - w / 2.0) * cols).astype(np.int64)
    width = np.trunc(w * cols).astype(np.int64)
    top = np.trunc((y - h / 2.0) * rows).astype(np.int64)
    height = np.trunc(h * rows).astype(np.int64)
    x0, y0 = np.clip(left, 0, cols), np.clip(top, 0, rows)
    x1, y1 = np.clip(left + width, 0, cols), np.clip(top + height, 0, rows)
    ok = (x1 > x0) & (y1 > y0)
    x0, y0, x1, y1 = x0[ok], y0[ok], x1[ok], y1[ok]
    diff = np.zeros((rows + 1, cols + 1), np.int32)
    np.add.at(diff, (y0, x0), 1)
    np.add.at(diff, (y0, x1), -1)
    np.add.at(diff, (y1, x0), -1)
    np.add.at(diff, (y1, x1), 1)
    return diff.cumsum(0).cumsum(1)[:rows, :cols] > 0


def crop_and_resize(img: np.ndarray, w: int, h: int, pleft: int, ptop: int, swidth: int,
                    sheight: int) -> np.ndarray:
    """The crop of ``image_data_augmentation``: the rectangle (pleft, ptop, swidth, sheight) of
    the image, outside parts filled with the image's mean colour, stretched to w x h."""
    oh, ow = img.shape[:2]
    if pleft == 0 and ptop == 0 and swidth == ow and sheight == oh:
        return _resize(img, w, h)
    c = img.shape[2]
    mean = [float(v) for v in np.rint(np.array(cv2.mean(img)[:c])).clip(0, 255)]
    x0, y0 = max(pleft, 0), max(ptop, 0)
    x1, y1 = min(pleft + swidth, ow), min(ptop + sheight, oh)
    if x1 > x0 and y1 > y0:
        # the part inside the image, padded with the mean colour up to the crop rectangle
        cropped = cv2.copyMakeBorder(img[y0:y1, x0:x1], y0 - ptop, ptop + sheight - y1,
                                     x0 - pleft, pleft + swidth - x1, cv2.BORDER_CONSTANT,
                                     value=mean + [0.0] * (4 - c))
        if cropped.ndim == 2:
            cropped = cropped[:, :, None]
    else:
        cropped = np.empty((sheight, swidth, c), np.uint8)
        cropped[:] = np.array(mean, np.uint8)
    return _resize(cropped, w, h)


def distort_hsv(img: np.ndarray, dhue: float, dsat: float, dexp: float) -> np.ndarray:
    """HSV part of ``image_data_augmentation`` on uint8 RGB: S*dsat, V*dexp, H+179*dhue with
    OpenCV's saturating uint8 arithmetic (greyscale: V*dexp only)."""
    if dsat == 1 and dexp == 1 and dhue == 0:
        return img
    if img.shape[2] < 3:
        return np.rint(img.astype(F32) * F32(dexp)).clip(0, 255).astype(np.uint8)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hch, sch, vch = cv2.split(hsv)
    sch = np.rint(sch.astype(F32) * F32(dsat)).clip(0, 255).astype(np.uint8)
    vch = np.rint(vch.astype(F32) * F32(dexp)).clip(0, 255).astype(np.uint8)
    hch = cv2.add(hch, float(179 * dhue))
    if hch.ndim == 3:
        hch = hch[:, :, 0]
    return cv2.cvtColor(cv2.merge([hch, sch, vch]), cv2.COLOR_HSV2RGB)


def image_data_augmentation(img: np.ndarray, w: int, h: int, p: ImageParams, truth: np.ndarray,
                            rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """``image_data_augmentation``: crop+stretch, flip, HSV, blur, noise; uint8 (h, w, C) RGB."""
    sized = crop_and_resize(img, w, h, p.pleft, p.ptop, p.swidth, p.sheight)
    if p.flip:
        flipped = cv2.flip(sized, 1)
        sized = flipped[:, :, None] if flipped.ndim == 2 else flipped
    sized = distort_hsv(sized, p.dhue, p.dsat, p.dexp)
    if p.blur:
        ksize = 17 if p.blur == 1 else (p.blur // 2) * 2 + 1
        dst = cv2.GaussianBlur(sized, (ksize, ksize), 0)
        if dst.ndim == 2:
            dst = dst[:, :, None]
        if p.blur == 1 and truth.shape[0]:
            mask = _box_cover_mask(truth, sized.shape[1], sized.shape[0])
            dst[mask] = sized[mask]
        sized = dst
    if p.gaussian_noise:
        sigma = min(max(p.gaussian_noise, 0), 127)
        g = rng if rng is not None else np.random.default_rng()
        noise = np.rint(g.normal(0.0, sigma, sized.shape)).clip(0, 255).astype(np.uint8)
        sized = cv2.add(sized, noise)
        if sized.ndim == 2:
            sized = sized[:, :, None]
    return sized


@dataclass
class AugmentedImage:
    image: np.ndarray       # uint8 (h, w, C) RGB
    truth: np.ndarray       # (K, 5) float32 (x, y, w, h, class)
    params: ImageParams


def augment_image(img: np.ndarray, boxes: np.ndarray, cfg: AugmentConfig,
                  rng: np.random.Generator, w: int, h: int, use_mixup: int = 0,
                  i_mixup: int = 0, draws: Optional[AugmentDraws] = None) -> AugmentedImage:
    """One image through Darknet's per-image pipeline (``load_data_detection`` loop body);
    ``draws``: see :func:`sample_image_params`."""
    oh, ow = img.shape[:2]
    p = sample_image_params(rng, cfg, ow, oh, w, h, use_mixup, i_mixup, draws)
    sx = F32(p.swidth) / F32(ow)
    sy = F32(p.sheight) / F32(oh)
    dx = (F32(p.pleft) / F32(ow)) / sx
    dy = (F32(p.ptop) / F32(oh)) / sy
    truth, min_w_h = fill_truth_detection(boxes, rng, cfg.classes, cfg.max_boxes, p.flip, dx, dy,
                                          1.0 / float(sx), 1.0 / float(sy), w, h)
    if p.blur > 1 and (min_w_h // 8) < p.blur:
        p.blur = min_w_h // 8        # disable blur if one of the objects is too small
    out = image_data_augmentation(img, w, h, p, truth, rng)
    return AugmentedImage(out, truth, p)


# ----------------------------------------------------------------------------- whole sample
_TO_FLOAT = np.arange(256, dtype=F32) / F32(255)   # mat_to_image: byte / 255.0f


def to_float_chw(img: np.ndarray) -> np.ndarray:
    """uint8 (h, w, C) -> float32 (C, h, w) in [0, 1] (``mat_to_image``)."""
    return _TO_FLOAT[np.ascontiguousarray(img.transpose(2, 0, 1))]


ImageSource = Callable[[int], Tuple[np.ndarray, np.ndarray]]


def mosaic_shifts(p: ImageParams, ow: int, oh: int, w: int, h: int, cut_x: int,
                  cut_y: int) -> Tuple[int, int, int, int]:
    """Network pixels of padding to skip on each side when cutting a mosaic quadrant out of an
    augmented image: (left, right, top, bottom), as ``load_data_detection`` computes them (after
    a flip the left and right crop offsets trade places)."""
    pleft, pright = (p.pright, p.pleft) if p.flip else (p.pleft, p.pright)
    left_shift = min(cut_x, max(0, (-pleft * w) // ow))
    right_shift = min(w - cut_x, max(0, (-pright * w) // ow))
    top_shift = min(cut_y, max(0, (-p.ptop * h) // oh))
    bot_shift = min(h - cut_y, max(0, (-p.pbot * h) // oh))
    return left_shift, right_shift, top_shift, bot_shift


def load_detection_sample(fetch: ImageSource, cfg: AugmentConfig, rng: np.random.Generator,
                          w: Optional[int] = None, h: Optional[int] = None,
                          apply_mixup: Optional[bool] = None, info: Optional[dict] = None,
                          draws: Optional[Sequence[AugmentDraws]] = None
                          ) -> Tuple[np.ndarray, np.ndarray]:
    """One training sample as ``load_data_detection`` makes it.

    ``fetch(k)`` returns ``(image uint8 (H, W, C) RGB, boxes (M,5) (class,x,y,w,h))`` for the
    k-th image of the sample (k = 0 is the sample's own image; mosaic asks for k = 1..3 and
    mixup for k = 1, which the caller should pick at random).
    ``apply_mixup``: force (True) or skip (False) the configured mosaic/mixup instead of
    Darknet's 50 % draw. ``info``: if given, receives ``use_mixup`` and, for a mosaic,
    ``cut_x``/``cut_y``. ``draws``: the image-independent random choices of each of the
    sample's images (k = 0..3 for mosaic, 0..1 for mixup, 0 otherwise) instead of new draws
    (``track=1``, see :class:`AugmentDraws`).
    Returns image float32 ``(C, h, w)`` in [0,1] and truth float32 ``(max_boxes, 5)``.
    """
    w = cfg.width if w is None else w
    h = cfg.height if h is None else h
    use_mixup = cfg.mixup
    if apply_mixup is None:
        if use_mixup and rng.integers(2) == 0:
            use_mixup = 0
    elif not apply_mixup:
        use_mixup = 0
    if info is not None:
        info["use_mixup"] = use_mixup
    c = cfg.channels
    truth = np.zeros((0, 5), F32)

    def drawn(k: int) -> Optional[AugmentDraws]:
        return None if draws is None else draws[k]

    if use_mixup == 3:
        min_offset = F32(0.2)
        lo_x, hi_x = _trunc(F32(w) * min_offset), _trunc(F32(w) * (F32(1) - min_offset))
        lo_y, hi_y = _trunc(F32(h) * min_offset), _trunc(F32(h) * (F32(1) - min_offset))
        cut_x = int(rng.integers(lo_x, hi_x + 1))
        cut_y = int(rng.integers(lo_y, hi_y + 1))
        if info is not None:
            info.update(cut_x=cut_x, cut_y=cut_y)
        canvas = np.zeros((h, w, c), np.uint8)
        for i_mixup in range(4):
            img, boxes = fetch(i_mixup)
            ow, oh = img.shape[1], img.shape[0]
            a = augment_image(img, boxes, cfg, rng, w, h, use_mixup, i_mixup, drawn(i_mixup))
            left_shift, right_shift, top_shift, bot_shift = mosaic_shifts(
                a.params, ow, oh, w, h, cut_x, cut_y)
            if i_mixup == 0:
                sy0, sx0 = h - cut_y - bot_shift, w - cut_x - right_shift
                canvas[:cut_y, :cut_x] = a.image[sy0:sy0 + cut_y, sx0:sx0 + cut_x]
            elif i_mixup == 1:
                sy0, sx0 = h - cut_y - bot_shift, left_shift
                canvas[:cut_y, cut_x:] = a.image[sy0:sy0 + cut_y, sx0:sx0 + (w - cut_x)]
            elif i_mixup == 2:
                sy0, sx0 = top_shift, w - cut_x - right_shift
                canvas[cut_y:, :cut_x] = a.image[sy0:sy0 + (h - cut_y), sx0:sx0 + cut_x]
            else:
                sy0, sx0 = top_shift, left_shift
                canvas[cut_y:, cut_x:] = a.image[sy0:sy0 + (h - cut_y), sx0:sx0 + (w - cut_x)]
            truth = blend_truth_mosaic(truth, a.truth, w, h, cut_x, cut_y, i_mixup, left_shift,
                                       right_shift, top_shift, bot_shift, cfg.mosaic_bound,
                                       cfg.max_boxes)
        image = to_float_chw(canvas)
    elif use_mixup == 1:
        img, boxes = fetch(0)
        a0 = augment_image(img, boxes, cfg, rng, w, h, draws=drawn(0))
        img, boxes = fetch(1)
        a1 = augment_image(img, boxes, cfg, rng, w, h, draws=drawn(1))
        image = to_float_chw(a1.image) * F32(0.5) + to_float_chw(a0.image) * F32(0.5)
        truth = blend_truth(a0.truth, a1.truth, cfg.max_boxes)
    else:
        img, boxes = fetch(0)
        a = augment_image(img, boxes, cfg, rng, w, h, draws=drawn(0))
        image = to_float_chw(a.image)
        truth = a.truth
    out_truth = np.zeros((cfg.max_boxes, 5), F32)
    n = min(truth.shape[0], cfg.max_boxes)
    out_truth[:n] = truth[:n]
    return image, out_truth

