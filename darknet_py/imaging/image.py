"""Darknet's image input path: loading, ``resize_image`` and ``letterbox_image``.

Darknet (built with OpenCV, as the oracle was) represents an image as planar float32 RGB in
``[0, 1]`` (``image.data[c*h*w + y*w + x]``). Here that is a ``torch.Tensor`` of shape ``(C, H, W)``
(or ``(B, C, H, W)`` for the batched helpers).

* :func:`load_image` mirrors ``load_image_cv``/``load_image_mat_cv``/``mat_to_image``
  (``image_opencv.cpp``): ``cv2.imread`` with ``IMREAD_COLOR`` for 3 channels (OpenCV turns grey,
  RGBA and 16-bit files into 8-bit BGR, and applies the EXIF orientation), BGR->RGB, then
  ``byte / 255.0f`` (computed as ``byte * (1/255.0f)`` like the oracle's -Ofast build).
* :func:`resize_image` is ``image.c``'s own two-pass bilinear resize (not ``cv2.resize``), with its
  edge rules: the last output column copies the last input column, the last output row only gets
  the ``(1 - dy)`` share of its upper source row.
* :func:`letterbox_image` is ``image.c``'s ``letterbox_image``: aspect-preserving resize with
  Darknet's integer ``new_w``/``new_h`` rule, centred on a canvas filled with 0.5.
* :func:`prepare_frame` is the one rule for video frames (:class:`VideoFrame`), Darknet's
  ``demo``: ``cv::resize`` on the uint8 frame, not ``resize_image`` (see there).

Deliberate differences: an unreadable file raises :class:`~darknet_py.errors.DataError` (Darknet
prints "Cannot load image" and carries on with a blank 10x10 image); a target size of 1 pixel uses
the first source row/column (Darknet divides by zero there).
"""
from __future__ import annotations

import functools
import os
import re
import threading
from pathlib import Path
from typing import Optional, Tuple, Union

import cv2
import numpy as np
import torch

from ..errors import DataError
from ..files import PathLike, atomic_write_bytes
from .resize_kernel import compiled_resize
from .image_header import (MAX_PIXELS_ENV, check_pixels, header_of_bytes, max_image_pixels,
                           read_file_header)

ImageLike = Union[PathLike, torch.Tensor, np.ndarray]

__all__ = [
    "load_image", "decode_image", "resize_image", "letterbox_image", "letterbox_size", "prepare_input",
    "image_size", "image_from_array", "prepare_frame", "image_to_bgr_uint8", "save_image",
    "DecodedImage", "VideoFrame", "load_decoded", "crop_image", "as_image_tensor",
]


def _cv2():

    return cv2


#: float32(1/255): the -Ofast oracle build turns ``byte / 255.0f`` into ``byte * (1/255.0f)``
_INV_255 = np.float32(1.0 / 255.0)


def load_image(path: PathLike, channels: int = 3) -> torch.Tensor:
    """Load an image file as Darknet's ``load_image(path, 0, 0, channels)`` does (OpenCV build).

    Returns a float32 ``(C, H, W)`` tensor, RGB channel order, values ``byte / 255``.
    ``channels`` 0 or 3 read with ``IMREAD_COLOR``, 1 with ``IMREAD_GRAYSCALE``; anything else
    reads the file unchanged (4-channel files are then RGBA). Raises :class:`DataError` naming the
    file when it is missing or not a decodable image (:func:`decode_image`).

    8-bit images are split into planes and converted with a 256-entry float32 table
    (``cv2.LUT``), which gives the same floats as ``byte * float32(1/255)`` in one pass per plane.
    """
    return torch.from_numpy(_planar_float(decode_image(path, channels)))


def decode_image(path: PathLike, channels: int = 3) -> np.ndarray:
    """The one accept/refuse decision for image files (inference and training): the uint8 image
    OpenCV decodes (HW grey, HWC BGR or BGRA, as :func:`load_image` reads ``channels``), or a
    :class:`DataError` naming the file. The file is read once (the truncation check, the header
    and the decoder share the bytes).

    Before decoding, the size in the file's header is checked against the pixel cap
    (:mod:`.image_header`: a decompression bomb never reaches the decoder), and the file may be
    no larger than an uncompressed image within the cap; OpenCV's own errors (its 2^30-pixel
    limit, a failed allocation) become the same one-line :class:`DataError`."""
    cv2 = _cv2()
    path_str = os.fspath(path)
    if channels in (0, 3):
        flag = cv2.IMREAD_COLOR
    elif channels == 1:
        flag = cv2.IMREAD_GRAYSCALE
    else:
        flag = cv2.IMREAD_UNCHANGED
    if not os.path.isfile(path_str):
        raise DataError("cannot load image: file not found", file=path_str)
    cap = max_image_pixels()
    data = _read_image_bytes(path_str, cap)
    problem = _jpeg_bytes_problem(data)
    if problem:
        raise DataError(f"cannot load image: {problem}", file=path_str)
    header = header_of_bytes(data) if data else None
    if header is not None:
        check_pixels(header.width, header.height, path_str, cap)
        if header.unsupported:
            raise DataError(f"cannot load image: {header.unsupported}", file=path_str)
    try:
        mat = cv2.imdecode(np.frombuffer(data, np.uint8), flag) if data else None
        if mat is None:
            mat = cv2.imread(path_str, flag)    # formats imdecode refuses but imread takes
    except cv2.error as e:
        raise DataError(f"cannot load image: OpenCV cannot decode it ({_cv_error_text(e)})",
                        file=path_str) from None
    if mat is None or mat.size == 0:
        raise DataError("cannot load image: not a readable image file", file=path_str)
    # formats whose header is not read before decoding (JPEG 2000, EXR, ...) are held to the cap
    # here: OpenCV's own 2^30-pixel limit bounded the decode
    check_pixels(int(mat.shape[1]), int(mat.shape[0]), path_str, cap)
    if mat.dtype != np.uint8:
        # only reachable with IMREAD_UNCHANGED; Darknet would read the raw bytes, we scale to 8 bit
        mat = (mat.astype(np.float64) / (np.iinfo(mat.dtype).max / 255.0)).astype(np.uint8) \
            if np.issubdtype(mat.dtype, np.integer) else np.clip(mat * 255, 0, 255).astype(np.uint8)
    return mat


def _read_image_bytes(path: str, cap: int) -> bytes:
    """The file's bytes (empty when it cannot be read: OpenCV's verdict follows), refusing a file
    larger than a 4-channel float32 image of ``cap`` pixels stored uncompressed: no image within
    the cap is that large, and reading it would cost that memory before any check."""
    limit = 16 * cap + (1 << 20)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise DataError(f"cannot load image: the file is {size:,} bytes, more than any "
                                f"image within the cap of {cap:,} pixels takes (raise it with "
                                f"--max-image-pixels or {MAX_PIXELS_ENV})", file=path)
            # in blocks: read(n) would reserve n bytes at once, and the file may grow
            blocks, total = [], 0
            while total <= limit:
                block = f.read(min(1 << 24, limit + 1 - total))
                if not block:
                    break
                blocks.append(block)
                total += len(block)
            if total > limit:
                raise DataError(f"cannot load image: the file grew past {limit:,} bytes while "
                                "being read", file=path)
            return b"".join(blocks)
    except OSError:
        return b""


def _cv_error_text(e: Exception) -> str:
    """The short reason of a ``cv2.error`` (its ``err`` field, not the multi-line report with
    OpenCV's source path)."""
    text = str(getattr(e, "err", "") or "").strip()
    if text and getattr(e, "code", None) == -215:      # cv::Error::StsAssert
        text = f"its check '{text}' failed in {getattr(e, 'func', '?')}"
    if not text:
        lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
        text = lines[0] if lines else type(e).__name__
    return text


class DecodedImage:
    """A decoded image file kept as OpenCV gives it (uint8 HW grey, HWC BGR or BGRA) until the
    network input is made from it.

    Darknet converts the whole image to float32 RGB before resizing (4 bytes per value instead of
    1); the pipeline instead resizes straight from these bytes (:func:`resize_image` gathers the
    source columns it needs and converts only those, giving the same floats bit for bit; an
    image less than twice the target width is converted whole, which costs no more), and
    converts the whole image only where a caller asks for it (:meth:`to_tensor`: drawing
    ``predictions.jpg``, ``Detector.detect_sets``)."""

    __slots__ = ("mat",)

    def __init__(self, mat: np.ndarray):
        self.mat = mat

    @property
    def size(self) -> Tuple[int, int]:
        """(width, height)"""
        return int(self.mat.shape[1]), int(self.mat.shape[0])

    @property
    def channels(self) -> int:
        return 1 if self.mat.ndim == 2 else int(self.mat.shape[2])

    def crop(self, x0: int, y0: int, x1: int, y1: int) -> "DecodedImage":
        return DecodedImage(self.mat[y0:y1, x0:x1])

    def to_tensor(self) -> torch.Tensor:
        """The Darknet image :func:`load_image` would have given."""
        return torch.from_numpy(_planar_float(np.ascontiguousarray(self.mat)))

    def __repr__(self) -> str:
        return f"DecodedImage({self.size[0]}x{self.size[1]}x{self.channels})"


class VideoFrame(DecodedImage):
    """A video frame as ``cv2.VideoCapture`` reads it (uint8 HWC BGR): its network input is made
    by Darknet's ``demo`` rule (:func:`prepare_frame`), not by ``detector test``'s.

    The same bytes as a :class:`DecodedImage` are a still image; wrapping them in
    ``VideoFrame`` is what selects the video rule in :func:`prepare_input` (and so in
    :class:`~darknet_py.infer.pipeline.Pipeline` and tiling: a tile of a frame is a frame).
    A grey or BGRA array is made BGR first, as ``VideoCapture`` delivers every frame."""

    __slots__ = ()

    def __init__(self, mat: np.ndarray):
        if mat.dtype != np.uint8 or mat.ndim not in (2, 3) or \
                (mat.ndim == 3 and mat.shape[2] not in (1, 3, 4)):
            raise ValueError(f"a video frame is a uint8 HxW, HxWx3 (BGR) or HxWx4 array, got "
                             f"{mat.dtype} {tuple(mat.shape)}")
        if mat.ndim == 2 or mat.shape[2] != 3:
            cv2 = _cv2()
            code = cv2.COLOR_BGRA2BGR if mat.ndim == 3 and mat.shape[2] == 4 else \
                cv2.COLOR_GRAY2BGR
            mat = cv2.cvtColor(np.ascontiguousarray(mat), code)
        super().__init__(np.ascontiguousarray(mat))

    def crop(self, x0: int, y0: int, x1: int, y1: int) -> "VideoFrame":
        return VideoFrame(self.mat[y0:y1, x0:x1])

    def __repr__(self) -> str:
        return f"VideoFrame({self.size[0]}x{self.size[1]})"


def load_decoded(path: PathLike, channels: int = 3) -> DecodedImage:
    """:func:`decode_image` as a :class:`DecodedImage` (what the pipeline loads)."""
    return DecodedImage(decode_image(path, channels))


def crop_image(image: Union[torch.Tensor, DecodedImage], x0: int, y0: int, x1: int,
               y1: int) -> Union[torch.Tensor, DecodedImage]:
    """The ``[y0:y1, x0:x1]`` part of a ``(C, H, W)`` tensor or a :class:`DecodedImage`."""
    if isinstance(image, DecodedImage):
        return image.crop(x0, y0, x1, y1)
    return image[:, y0:y1, x0:x1].contiguous()


def as_image_tensor(image: Union[torch.Tensor, DecodedImage]) -> torch.Tensor:
    """The ``(C, H, W)`` float tensor of a tensor or a :class:`DecodedImage`."""
    return image.to_tensor() if isinstance(image, DecodedImage) else image


#: ``byte * float32(1/255)`` for every byte: the oracle's -Ofast ``byte / 255.0f``
_BYTE_TO_FLOAT = (np.arange(256, dtype=np.float32) * _INV_255).reshape(1, 256)


def _planar_float(mat: np.ndarray) -> np.ndarray:
    """An OpenCV uint8 image (HW, HWC BGR or HWC BGRA) -> planar float32 RGB(A) ``(C, H, W)``,
    values ``byte * float32(1/255)`` (bit-exact with the oracle's conversion)."""
    cv2 = _cv2()
    planes = [mat] if mat.ndim == 2 else list(cv2.split(mat))
    if len(planes) in (3, 4):
        planes[0], planes[2] = planes[2], planes[0]        # BGR(A) -> RGB(A)
    out = np.empty((len(planes),) + mat.shape[:2], np.float32)
    for c, plane in enumerate(planes):
        cv2.LUT(plane, _BYTE_TO_FLOAT, dst=out[c])
    return out


#: a JPEG marker inside entropy-coded data: FF followed by neither 00 (a stuffed FF), a restart
#: marker D0-D7, nor another FF (fill byte)
_JPEG_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")
#: markers without a length field
_JPEG_STANDALONE = frozenset([0x01] + list(range(0xD0, 0xD8)))


def jpeg_problem(path: PathLike) -> Optional[str]:
    """Why a JPEG file is cut short, or ``None`` (also for files that are not JPEG).

    libjpeg decodes a truncated JPEG without an error (it prints ``Premature end of JPEG file`` and
    fills the rest grey), so ``cv2.imread`` and Darknet use a half-grey image. Here the file's
    marker segments are walked from SOI to EOI; data after EOI is allowed, a file that ends
    before EOI is reported. Deliberate difference from Darknet (which detects on it anyway).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return _jpeg_bytes_problem(data)


def _jpeg_bytes_problem(data: bytes) -> Optional[str]:
    """:func:`jpeg_problem` on the bytes of a file."""
    n = len(data)
    if n < 2 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    pos = 2
    while True:
        while pos + 1 < n and data[pos] == 0xFF and data[pos + 1] == 0xFF:
            pos += 1                                      # fill bytes before a marker
        if pos + 2 > n:
            break
        if data[pos] != 0xFF:
            return None                                  # unexpected layout: leave it to OpenCV
        marker = data[pos + 1]
        if marker == 0xD9:
            return None                                  # EOI: complete
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if pos + 4 > n:
            break
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if end > n:
            break
        pos = end
        if marker == 0xDA:                               # SOS: scan data up to the next marker
            m = _JPEG_MARKER.search(data, pos)
            if m is None:
                break
            pos = m.start()
    return f"the JPEG file is truncated ({n} bytes, no end-of-image marker)"


def image_from_array(array: np.ndarray) -> torch.Tensor:
    """Darknet's ``mat_to_image`` of an OpenCV image (HW grey, HWC BGR or BGRA): uint8 as
    :func:`load_image` converts it, float arrays taken as already in [0, 1]."""
    if array.dtype == np.uint8:
        return torch.from_numpy(_planar_float(np.ascontiguousarray(array)))
    arr = array if array.ndim == 3 else array[:, :, None]
    if arr.shape[2] in (3, 4):
        arr = arr[:, :, [2, 1, 0] + ([3] if arr.shape[2] == 4 else [])]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).to(torch.float32)


def image_size(image: Union[torch.Tensor, DecodedImage]) -> Tuple[int, int]:
    """(width, height) of a ``(C, H, W)`` or ``(B, C, H, W)`` image tensor or a
    :class:`DecodedImage`."""
    if isinstance(image, DecodedImage):
        return image.size
    return int(image.shape[-1]), int(image.shape[-2])


def _as_tensor(image: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
    if image.dtype != torch.float32:
        image = image.to(torch.float32)
    return image


@functools.lru_cache(maxsize=64)
def _axis_weights(src: int, dst: int) -> Tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """For one resize pass: source index, its clamped right/lower neighbour (long tensors) and
    the float32 weights ``1 - d`` and ``d`` of every output position (cached per size pair).

    Mirrors ``resize_image``: ``scale = (float)(src-1)/(dst-1)``, ``s = pos*scale`` in float32,
    ``i = (int)s``, ``d = s - i``.
    """
    if dst == 1:
        idx = np.zeros(1, np.int64)
        frac = np.zeros(1, np.float32)
    else:
        scale = np.float32(src - 1) / np.float32(dst - 1)
        pos = np.arange(dst, dtype=np.float32) * scale
        idx = pos.astype(np.int64)
        frac = (pos - idx.astype(np.float32)).astype(np.float32)
        idx = np.minimum(idx, src - 1)
    idx1 = np.minimum(idx + 1, src - 1)
    one_minus = (np.float32(1) - frac).astype(np.float32)
    for a in (one_minus, frac):
        a.setflags(write=False)
    return torch.from_numpy(idx), torch.from_numpy(idx1), one_minus, frac


def resize_image(image: Union[torch.Tensor, np.ndarray, DecodedImage], w: int, h: int
                 ) -> torch.Tensor:
    """Darknet's ``resize_image`` (``image.c``): two-pass bilinear, float32, exact edge rules.

    Works on ``(C, H, W)`` or ``(B, C, H, W)``, or on a :class:`DecodedImage` (then the result
    is what resizing its :meth:`~DecodedImage.to_tensor` gives, bit for bit, without converting
    the whole image). Pass 1 (columns): output column ``c`` is ``(1-dx)*in[ix] + dx*in[ix+1]``
    with ``sx = c*(in_w-1)/(w-1)``, except the last column (or a 1-pixel-wide source) which
    copies the last input column. Pass 2 (rows): row ``r`` is ``(1-dy)*part[iy]`` plus
    ``dy*part[iy+1]`` except for the last row (and 1-row sources), which keep only the first
    term (a Darknet quirk reproduced on purpose).

    Vectorised: each pass is two gathers (``index_select``) and three float32 array operations
    (the same three roundings as the C expression: two products, one sum), on buffers reused
    between calls; no per-pixel Python.
    """
    if w < 1 or h < 1:
        raise ValueError(f"resize_image: target size must be positive, got {w}x{h}")
    if isinstance(image, DecodedImage):
        return _resize_decoded(image.mat, w, h)
    image = _as_tensor(image)
    in_h, in_w = int(image.shape[-2]), int(image.shape[-1])
    if in_w == w and in_h == h:
        return image.clone()
    image = image.detach()
    lead = tuple(image.shape[:-2])
    planes = int(np.prod(lead)) if lead else 1
    src = image.reshape(planes * in_h, in_w)
    if not src.is_contiguous():
        src = src.contiguous()
    # pass 1: along x, on (planes*in_h, w)
    ix, ix1, wx0, wx1 = _axis_weights(in_w, w)
    a = _scratch("a", (planes * in_h, w))
    b = _scratch("b", (planes * in_h, w))
    torch.index_select(src, 1, ix, out=a)
    pa = a.numpy()
    if in_w == 1:
        part = pa                                          # every column copies the only one
    else:
        torch.index_select(src, 1, ix1, out=b)
        pb = b.numpy()
        np.multiply(pa, wx0, out=pa)
        np.multiply(pb, wx1, out=pb)
        np.add(pa, pb, out=pa)
        pa[:, w - 1] = src[:, in_w - 1].numpy()            # the last column copies the last input
        part = pa
    return _resize_rows(part, planes, in_h, w, h).view(lead + (h, w))


def _resize_decoded(mat: np.ndarray, w: int, h: int) -> torch.Tensor:
    """:func:`resize_image` of ``DecodedImage(mat).to_tensor()``, converting to float only the
    source columns pass 1 reads (``2*w`` of them instead of the image's width): the same bytes
    through the same table give the same floats, and the arithmetic is the same."""
    in_h, in_w = int(mat.shape[0]), int(mat.shape[1])
    if in_w == w and in_h == h:
        return torch.from_numpy(_planar_float(np.ascontiguousarray(mat)))
    kernel = compiled_resize()
    if kernel is not None:
        return _resize_compiled(kernel, mat, w, h)
    if 2 * w >= in_w or in_w == 1:
        # pass 1 reads two columns per output column: converting the whole image is then no
        # more memory than the gathered columns, and faster (one conversion, no gathers)
        return resize_image(torch.from_numpy(_planar_float(np.ascontiguousarray(mat))), w, h)
    ix, ix1, wx0, wx1 = _axis_weights(in_w, w)
    # the columns pass 1 reads, [ix | ix1], gathered in one go, then one conversion to float
    both = _planar_float(_gather_columns(mat, np.concatenate([ix.numpy(), ix1.numpy()])))
    planes = both.shape[0]
    pa, pb = both[:, :, :w], both[:, :, w:]
    # the last output column copies the last input column: ix1's last entry, except for w=1
    last = pb[:, :, w - 1].copy() if int(ix1[-1]) == in_w - 1 else \
        _planar_float(np.ascontiguousarray(mat[:, in_w - 1:in_w]))[:, :, 0]
    np.multiply(pa, wx0, out=pa)
    np.multiply(pb, wx1, out=pb)
    part = np.empty((planes, in_h, w), np.float32)
    np.add(pa, pb, out=part)
    part[:, :, w - 1] = last
    return _resize_rows(part.reshape(planes * in_h, w), planes, in_h, w, h)


def _resize_compiled(kernel, mat: np.ndarray, w: int, h: int) -> torch.Tensor:
    """:func:`_resize_decoded` by the compiled loop of :mod:`.resize_kernel` (the same values).
    Every array it gets is writable and C-contiguous (the kernel is compiled for those types
    once, ahead of the first call)."""
    src = mat if mat.ndim == 3 else mat.reshape(mat.shape[0], mat.shape[1], 1)
    if not (src.flags.c_contiguous and src.flags.writeable):
        src = np.array(src, order="C")
    in_h, in_w, planes = (int(v) for v in src.shape)
    ix, ix1, wx0, wx1 = _kernel_axis(in_w, w)
    iy, iy1, wy0, wy1 = _kernel_axis(in_h, h)
    shape = (planes, in_h, w)
    # pass 1's rows are a per-thread buffer (a worker thread's fresh arrays fault their pages
    # in on every call), except for a huge photo's, which is not kept after its image
    part = _scratch("compiled-part", shape).numpy() if planes * in_h * w <= _KEEP_PART_VALUES \
        else np.empty(shape, np.float32)
    out = np.empty((planes, h, w), np.float32)
    kernel(src, _KERNEL_LUT, ix, ix1, wx0, wx1, iy, iy1, wy0, wy1, _rows_read(in_h, h), part, out,
           planes in (3, 4))
    return torch.from_numpy(out)


#: largest pass-1 buffer of the compiled resize kept between calls (4M values: 16 MiB)
_KEEP_PART_VALUES = 1 << 22
#: the byte floats as the kernel takes them (a writable copy of :data:`_BYTE_TO_FLOAT`)
_KERNEL_LUT = _BYTE_TO_FLOAT.reshape(256).copy()


@functools.lru_cache(maxsize=64)
def _kernel_axis(src: int, dst: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_axis_weights` as writable numpy arrays (never written: the kernel's types)."""
    return tuple(np.array(np.asarray(v)) for v in _axis_weights(src, dst))  # type: ignore


@functools.lru_cache(maxsize=64)
def _rows_read(in_h: int, h: int) -> np.ndarray:
    """Which source rows pass 2 of ``in_h -> h`` reads (pass 1 skips the others)."""
    iy, iy1, _, _ = _axis_weights(in_h, h)
    need = np.zeros(in_h, np.bool_)
    need[iy.numpy()] = True
    if in_h > 1 and h > 1:
        need[iy1.numpy()[:h - 1]] = True
    return need


#: rows per cv2.remap call of :func:`_gather_columns` (its map is this many rows tall)
_GATHER_STRIP = 64


@functools.lru_cache(maxsize=8)
def _column_map(columns: bytes, rows: int) -> np.ndarray:
    """cv2.remap's integer map (CV_16SC2) that copies ``columns`` (int64 bytes) of ``rows``
    rows: pixel (r, k) <- (r, columns[k])."""
    cols = np.frombuffer(columns, np.int64).astype(np.int16)
    m = np.empty((rows, len(cols), 2), np.int16)
    m[:, :, 0] = cols
    m[:, :, 1] = np.arange(rows, dtype=np.int16)[:, None]
    return m


def _gather_columns(mat: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``np.take(mat, columns, axis=1)`` of a uint8 image, done by OpenCV's nearest-neighbour
    remap on integer coordinates (an exact copy of the pixels, ~1.6x faster than the gather),
    strip by strip so that the map stays small whatever the image's height."""
    in_w = int(mat.shape[1])
    if in_w > np.iinfo(np.int16).max or mat.ndim == 3 and mat.shape[2] > 4:
        return np.take(mat, columns, axis=1)
    cv2 = _cv2()
    in_h = int(mat.shape[0])
    out = np.empty((in_h, len(columns)) + mat.shape[2:], np.uint8)
    strip = min(_GATHER_STRIP, in_h)
    cmap = _column_map(np.ascontiguousarray(columns, np.int64).tobytes(), strip)
    for r0 in range(0, in_h, strip):
        r1 = min(in_h, r0 + strip)
        cv2.remap(mat[r0:r1], cmap[:r1 - r0], None, cv2.INTER_NEAREST, dst=out[r0:r1])
    return out


def _resize_rows(part: np.ndarray, planes: int, in_h: int, w: int, h: int) -> torch.Tensor:
    """Pass 2 of :func:`resize_image` (along y) on the ``(planes*in_h, w)`` result of pass 1:
    a new ``(planes, h, w)`` tensor."""
    part_t = torch.from_numpy(part).view(planes, in_h, w)
    iy, iy1, wy0, wy1 = _axis_weights(in_h, h)
    out = torch.empty((planes, h, w), dtype=torch.float32)
    torch.index_select(part_t, 1, iy, out=out)
    po = out.numpy()
    np.multiply(po, wy0[:, None], out=po)
    if in_h > 1 and h > 1:
        bot = _scratch("c", (planes, h, w))
        torch.index_select(part_t, 1, iy1, out=bot)
        pbot = bot.numpy()
        np.multiply(pbot[:, :h - 1], wy1[:h - 1, None], out=pbot[:, :h - 1])
        np.add(po[:, :h - 1], pbot[:, :h - 1], out=po[:, :h - 1])   # the last row: top term only
    return out


_SCRATCH = threading.local()


def _scratch(name: str, shape: Tuple[int, ...]) -> torch.Tensor:
    """A float32 work buffer of ``shape`` kept per thread (reused while the shape repeats)."""
    key = (name, shape)
    bufs = getattr(_SCRATCH, "bufs", None)
    if bufs is None:
        bufs = _SCRATCH.bufs = {}
    buf = bufs.get(key)
    if buf is None:
        if len(bufs) > 16:
            bufs.clear()
        buf = bufs[key] = torch.empty(shape, dtype=torch.float32)
    return buf


def letterbox_size(src_w: int, src_h: int, net_w: int, net_h: int) -> Tuple[int, int]:
    """Darknet's letterbox ``(new_w, new_h)`` rule (``letterbox_image``, ``correct_yolo_boxes``).

    The float32 ratios ``net_w/src_w`` and ``net_h/src_h`` are compared; the smaller side is filled
    and the other gets C integer division ``(src_other * net_side) / src_side``.
    """
    if np.float32(net_w) / np.float32(src_w) < np.float32(net_h) / np.float32(src_h):
        return net_w, (src_h * net_w) // src_w
    return (src_w * net_h) // src_h, net_h


def letterbox_image(image: Union[torch.Tensor, np.ndarray, DecodedImage], w: int, h: int
                    ) -> torch.Tensor:
    """Darknet's ``letterbox_image``: resize keeping aspect, centre on a 0.5-filled ``w x h``."""
    if not isinstance(image, DecodedImage):
        image = _as_tensor(image)
    in_w, in_h = image_size(image)
    new_w, new_h = letterbox_size(in_w, in_h, w, h)
    resized = resize_image(image, new_w, new_h)
    boxed = torch.full(resized.shape[:-2] + (h, w), 0.5, dtype=torch.float32)
    dx, dy = (w - new_w) // 2, (h - new_h) // 2
    # embed_image: pixels that fall outside the canvas are dropped
    x0, y0 = max(dx, 0), max(dy, 0)
    x1, y1 = min(dx + new_w, w), min(dy + new_h, h)
    if x1 > x0 and y1 > y0:
        boxed[..., y0:y1, x0:x1] = resized[..., y0 - dy:y1 - dy, x0 - dx:x1 - dx]
    return boxed


def prepare_input(image: Union[ImageLike, DecodedImage], net_w: int, net_h: int,
                  letter_box: bool = False, channels: int = 3) -> torch.Tensor:
    """The network input ``(C, net_h, net_w)`` Darknet builds from one image or video frame.

    A :class:`VideoFrame` gets the ``demo`` rule (:func:`prepare_frame`). Anything else is a
    still image and gets ``detector test``'s: a path (decoded with :func:`load_decoded`: the
    whole image is never converted to float), a :class:`DecodedImage`, or an already loaded
    ``(C, H, W)`` float tensor / array; stretch mode uses :func:`resize_image`, ``letter_box``
    :func:`letterbox_image`.
    """
    if isinstance(image, VideoFrame):
        return prepare_frame(image, net_w, net_h, letter_box)
    if isinstance(image, (str, os.PathLike)):
        image = load_decoded(image, channels)
    if not isinstance(image, DecodedImage):
        image = _as_tensor(image)
    if letter_box:
        return letterbox_image(image, net_w, net_h)
    return resize_image(image, net_w, net_h)


def prepare_frame(frame: Union[np.ndarray, DecodedImage], net_w: int, net_h: int,
                  letter_box: bool = False) -> torch.Tensor:
    """The network input ``(3, net_h, net_w)`` of a BGR uint8 video frame, as Darknet's
    ``detector demo`` makes it (``fetch_in_thread`` in ``demo.c``): the one rule for video frames.

    * stretch: ``get_image_from_stream_resize`` (``image_opencv.cpp``): ``cv::resize`` of the
      uint8 BGR frame to ``net_w x net_h`` with ``INTER_LINEAR`` (OpenCV's fixed-point bilinear,
      not ``image.c``'s float ``resize_image``), ``cv::cvtColor(RGB2BGR)`` (a channel swap: RGB
      order), then ``mat_to_image``: planar float32 ``byte / 255.0f`` (``byte * float32(1/255)``
      in the oracle's -Ofast build, as for still images).
    * ``letter_box``: ``get_image_from_stream_letterbox``: ``mat_to_image`` of the whole frame
      (RGB order), then ``image.c``'s ``letterbox_image`` (0.5 canvas), which is exactly the
      still-image letterbox of the frame's bytes.

    Detections come back with the frame's own size: in stretch mode ``demo`` passes the network
    size to ``get_network_boxes`` (relative boxes are the same for the frame), with letterbox
    the frame's size (``correct_yolo_boxes`` undoes the letterbox); ``draw_detections_cv_v3``
    then scales the relative boxes to the frame's pixels.

    Because of ``cv::resize``, a frame's detections can differ slightly from ``detector test``
    on the same picture, exactly as in Darknet."""
    image = frame if isinstance(frame, VideoFrame) else \
        VideoFrame(frame.mat if isinstance(frame, DecodedImage) else frame)
    if letter_box:
        return letterbox_image(DecodedImage(image.mat), net_w, net_h)
    if net_w < 1 or net_h < 1:
        raise ValueError(f"prepare_frame: target size must be positive, got {net_w}x{net_h}")
    small = _cv2().resize(image.mat, (int(net_w), int(net_h)), interpolation=_cv2().INTER_LINEAR)
    return torch.from_numpy(_planar_float(small))


def image_to_bgr_uint8(image: torch.Tensor) -> np.ndarray:
    """Darknet's ``image_to_mat``/``save_image`` conversion: ``(unsigned char)(val*255)`` (truncation),
    interleaved, BGR order for OpenCV. Input ``(3, H, W)`` RGB (or ``(1, H, W)``)."""
    arr = image.detach().cpu().to(torch.float32).numpy()
    arr = (arr * np.float32(255.0))
    arr = np.clip(arr, 0, 255).astype(np.uint8)   # C cast of out-of-range values is undefined
    hwc = arr.transpose(1, 2, 0)
    if hwc.shape[2] == 3:
        hwc = hwc[:, :, ::-1]
    return np.ascontiguousarray(hwc)


def save_image(image: torch.Tensor, name: PathLike, quality: int = 80) -> str:
    """``save_image(im, name)``: writes ``name.jpg`` (quality 80) unless ``name`` has an extension.

    Darknet encodes with stb_image_write; OpenCV's JPEG encoder is used here, so the bytes differ
    slightly while the pixels drawn are the same. Written atomically (temp file, then rename)."""
    cv2 = _cv2()
    out = os.fspath(name)
    if not Path(out).suffix:
        out += ".jpg"
    try:
        ok, buf = cv2.imencode(Path(out).suffix, image_to_bgr_uint8(image),
                               [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    except cv2.error:
        ok = False
    if not ok:
        raise DataError("failed to write image: OpenCV cannot encode this format", file=out)
    try:
        atomic_write_bytes(out, buf.tobytes())   # never a half-written file after a crash
    except OSError as e:
        raise DataError(f"failed to write image: {e.strerror}", file=out) from None
    return out


def read_image_size(path: PathLike) -> Tuple[int, int]:
    """``(width, height)`` of an image file, from its header (JPEG, PNG, GIF, BMP, WebP, TIFF,
    PNM: :func:`.image_header.read_header`); other formats are decoded, within
    the image pixel cap.

    RGBA and greyscale PNGs are fine: only the size is read. Raises :class:`DataError` when the
    file cannot be read as an image.
    """
    p = os.fspath(path)
    try:
        header = read_file_header(p)
    except OSError as e:
        raise DataError(f"cannot read image: {e.strerror}", file=p) from None
    if header is not None and header.width > 0 and header.height > 0:
        return int(header.width), int(header.height)
    try:
        img = decode_image(p, -1)       # only for formats whose header is not read
    except DataError as e:
        raise DataError(f"cannot decode image ({e.message})", file=p) from None
    return int(img.shape[1]), int(img.shape[0])
