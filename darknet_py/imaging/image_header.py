"""Image sizes read from file headers, and the pixel cap that stops decompression bombs.

An 875 KB PNG can announce 30000x30000 pixels: OpenCV decodes it into 2.7 GB of BGR bytes and
Darknet's float image needs four times that. Every image a user names (``detector test``,
training, ``data check``, ``data voc2yolo``, video frames) is therefore measured from its header
*before* it is decoded, and refused when its pixel count exceeds :func:`max_image_pixels`
(``DARKNET_PY_MAX_IMAGE_PIXELS``, or ``darknet-py --max-image-pixels N``, which sets it for the
run and its data-loader workers).

:func:`read_header` knows JPEG, PNG, GIF, BMP, WebP, TIFF and PNM (PBM/PGM/PPM/PAM), the formats
OpenCV decodes that a dataset is made of; for the rest (JPEG 2000, OpenEXR, Radiance HDR, Sun
raster) it returns ``None`` and OpenCV's own limit (2^30 pixels) applies to the decode, after
which the decoded size is checked against the cap as well.
"""
from __future__ import annotations

import io
import os
import struct
from typing import BinaryIO, NamedTuple, Optional

from ..errors import DataError, UsageError

__all__ = ["MAX_PIXELS_ENV", "DEFAULT_MAX_PIXELS", "max_image_pixels", "check_pixels",
           "ImageHeader", "read_header", "read_file_header"]

#: the environment variable that sets the cap (``--max-image-pixels`` sets it too)
MAX_PIXELS_ENV = "DARKNET_PY_MAX_IMAGE_PIXELS"
#: 2^27 pixels (a 100-megapixel camera file fits; 11585x11585 square): Darknet's float32 RGB
#: image of it is 1.5 GiB, inside the 2 GiB per-image input bound of DARKNET_PY_MAX_ALLOC_GIB
DEFAULT_MAX_PIXELS = 1 << 27


def max_image_pixels() -> int:
    """The cap in pixels: ``$DARKNET_PY_MAX_IMAGE_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"{MAX_PIXELS_ENV} must be a positive whole number of pixels, got "
                         f"'{raw}'", value=raw)
    return value


def check_pixels(width: int, height: int, file: str, cap: Optional[int] = None) -> None:
    """A :class:`DataError` naming the file, its size and the cap when ``width*height`` is over
    the cap (or a side is not positive)."""
    cap = max_image_pixels() if cap is None else cap
    if width < 1 or height < 1:
        raise DataError(f"cannot load image: its header gives a size of {width}x{height}",
                        file=file)
    if width * height > cap:
        raise DataError(f"cannot load image: it is {width}x{height} ({width * height:,} pixels), "
                        f"more than the cap of {cap:,} pixels (raise it with "
                        f"--max-image-pixels or {MAX_PIXELS_ENV})", file=file)


class ImageHeader(NamedTuple):
    width: int
    height: int
    #: why OpenCV (and Darknet) cannot use the file although its header is valid, or None
    unsupported: Optional[str] = None


_PNG = b"\x89PNG\r\n\x1a\n"
#: SOF markers (baseline, progressive, lossless, arithmetic); C4 DHT, C8 JPG, CC DAC are not
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                       0xCF})


def read_header(f: BinaryIO) -> Optional[ImageHeader]:
    """The size in the header of the image file open as ``f`` (seekable), or ``None`` when the
    format is not one read here or the header is cut short (OpenCV then decides)."""
    f.seek(0)
    head = f.read(32)
    try:
        if head[:8] == _PNG and head[12:16] == b"IHDR":
            w, h = struct.unpack(">II", head[16:24])
            return ImageHeader(w, h)
        if head[:2] == b"\xff\xd8":
            return _jpeg(f)
        if head[:6] in (b"GIF87a", b"GIF89a"):
            w, h = struct.unpack("<HH", head[6:10])
            return ImageHeader(w, h)
        if head[:2] == b"BM" and len(head) >= 26:
            if struct.unpack("<I", head[14:18])[0] == 12:          # OS/2 BITMAPCOREHEADER
                w, h = struct.unpack("<HH", head[18:22])
            else:
                w, h = struct.unpack("<ii", head[18:26])
            return ImageHeader(abs(w), abs(h))                      # negative h: top-down rows
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return _webp(head)
        if head[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff(f, "<" if head[:2] == b"II" else ">")
        if len(head) >= 2 and head[:1] == b"P" and head[1:2] in b"1234567":
            return _pnm(f)
    except (struct.error, ValueError, OSError):
        return None
    return None


def read_file_header(path: str) -> Optional[ImageHeader]:
    """:func:`read_header` of a file (OSError propagates)."""
    with open(path, "rb") as f:
        return read_header(f)


def header_of_bytes(data: bytes) -> Optional[ImageHeader]:
    """:func:`read_header` of a file's bytes already in memory."""
    return read_header(io.BytesIO(data))


def _jpeg(f: BinaryIO) -> Optional[ImageHeader]:
    """The first SOF segment's size, walking the marker segments from SOI (skipping APPn, DQT,
    DHT, ... by their lengths, so an EXIF thumbnail inside APP1 is never mistaken for it)."""
    f.seek(2)
    while True:
        byte = f.read(1)
        while byte and byte != b"\xff":
            byte = f.read(1)
        while byte == b"\xff":
            byte = f.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            continue
        if marker in (0xD9, 0xDA):
            return None                    # image data before any frame header
        seg = f.read(2)
        if len(seg) < 2:
            return None
        length = struct.unpack(">H", seg)[0]
        if marker in _JPEG_SOF:
            data = f.read(5)
            if len(data) < 5:
                return None
            h, w = struct.unpack(">HH", data[1:5])
            # h == 0 means "given by a DNL marker later": OpenCV refuses those; leave it to it
            return ImageHeader(w, h) if h else None
        if length < 2:
            return None
        f.seek(length - 2, os.SEEK_CUR)


def _webp(head: bytes) -> Optional[ImageHeader]:
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30:
        w, h = struct.unpack("<HH", head[26:30])
        return ImageHeader(w & 0x3FFF, h & 0x3FFF)
    if chunk == b"VP8L" and len(head) >= 25:
        bits = int.from_bytes(head[21:25], "little")
        return ImageHeader((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X" and len(head) >= 30:
        return ImageHeader(int.from_bytes(head[24:27], "little") + 1,
                           int.from_bytes(head[27:30], "little") + 1)
    return None


_TIFF_TYPES = {3: ("H", 2), 4: ("I", 4)}


def _tiff(f: BinaryIO, order: str) -> Optional[ImageHeader]:
    """Width, height, bits per sample and sample format of the first IFD (the page OpenCV
    reads)."""
    f.seek(4)
    (offset,) = struct.unpack(order + "I", f.read(4))
    f.seek(offset)
    (count,) = struct.unpack(order + "H", f.read(2))
    tags = {}
    for _ in range(min(count, 512)):
        entry = f.read(12)
        if len(entry) < 12:
            break
        tag, kind, n = struct.unpack(order + "HHI", entry[:8])
        if tag in (256, 257, 258, 339) and kind in _TIFF_TYPES and n >= 1:
            code, size = _TIFF_TYPES[kind]
            if n * size <= 4:
                tags[tag] = struct.unpack(order + code, entry[8:8 + size])[0]
            else:                          # one value per sample, stored elsewhere: the first
                here = f.tell()
                f.seek(struct.unpack(order + "I", entry[8:12])[0])
                tags[tag] = struct.unpack(order + code, f.read(size))[0]
                f.seek(here)
    if 256 not in tags or 257 not in tags or tags[256] is None or tags[257] is None:
        return None
    unsupported = None
    if tags.get(339) == 3:                 # SampleFormat IEEE float
        bits = tags.get(258)
        unsupported = (f"a {bits}-bit floating-point TIFF" if bits else
                       "a floating-point TIFF") + \
            " (OpenCV, like Darknet, reads images of 8- or 16-bit integers: convert it to 8 bits)"
    return ImageHeader(int(tags[256]), int(tags[257]), unsupported)


def _pnm(f: BinaryIO) -> Optional[ImageHeader]:
    """PBM/PGM/PPM (``P1``-``P6``: magic, width, height, with ``#`` comments) and PAM (``P7``:
    ``WIDTH``/``HEIGHT`` lines)."""
    f.seek(0)
    text = f.read(4096).decode("latin-1")
    if text[1] == "7":
        fields = {}
        for line in text.splitlines()[1:]:
            parts = line.split("#", 1)[0].split()
            if len(parts) >= 2:
                fields[parts[0]] = parts[1]
            if parts[:1] == ["ENDHDR"]:
                break
        if "WIDTH" in fields and "HEIGHT" in fields:
            return ImageHeader(int(fields["WIDTH"]), int(fields["HEIGHT"]))
        return None
    tokens = []
    for line in text[2:].splitlines():
        tokens += line.split("#", 1)[0].split()
        if len(tokens) >= 2:
            return ImageHeader(int(tokens[0]), int(tokens[1]))
    return None
