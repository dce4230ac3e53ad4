"""Image path -> label path, exactly as AlexeyAB's ``replace_image_to_label`` (``utils.c``).

Darknet replaces, in this order and each at most once (first occurrence, ``find_replace``):
``/images/train2017/``, ``/images/val2017/``, ``/JPEGImages/`` and the backslash variants
``\\images\\train2017\\``, ``\\images\\val2017\\``, ``\\images\\train2014\\``,
``\\images\\val2014\\``, ``/images/train2014/``, ``/images/val2014/``, ``\\JPEGImages\\`` by the
corresponding ``labels`` folder; trims spaces and tabs at both ends; then replaces a final image
extension (``.jpg .JPG .jpeg .JPEG .png .PNG .bmp .BMP .ppm .PPM .tiff .TIFF``, only when it is
the last occurrence and at the very end, ``find_replace_extension``) by ``.txt``.

A plain ``/images/`` folder is **not** mapped (so YOLO labels of e.g. ``data/obj/images/x.jpg``
are looked for next to the image, as ``data/obj/images/x.txt``).

Difference: Darknet prints ``Failed to infer label file name`` and goes on to read the image file
itself as a label file when the extension is not one of the above; we raise
:class:`~darknet_py.errors.DataError` (or return ``None`` with ``strict=False``).
"""
from __future__ import annotations

import os
from typing import Optional

from ..errors import DataError
from ..files import PathLike

FOLDER_REPLACEMENTS = (
    ("/images/train2017/", "/labels/train2017/"),
    ("/images/val2017/", "/labels/val2017/"),
    ("/JPEGImages/", "/labels/"),
    ("\\images\\train2017\\", "\\labels\\train2017\\"),
    ("\\images\\val2017\\", "\\labels\\val2017\\"),
    ("\\images\\train2014\\", "\\labels\\train2014\\"),
    ("\\images\\val2014\\", "\\labels\\val2014\\"),
    ("/images/train2014/", "/labels/train2014/"),
    ("/images/val2014/", "/labels/val2014/"),
    ("\\JPEGImages\\", "\\labels\\"),
)

IMAGE_EXTENSIONS = (".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG", ".bmp", ".BMP", ".ppm",
                    ".PPM", ".tiff", ".TIFF")


def find_replace(text: str, orig: str, rep: str) -> str:
    """Replace the first occurrence of ``orig`` (Darknet's ``find_replace``)."""
    return text.replace(orig, rep, 1)


def find_replace_extension(text: str, orig: str, rep: str) -> str:
    """Replace ``orig`` only if its last occurrence ends the string (``find_replace_extension``)."""
    pos = text.rfind(orig)
    if pos < 0 or len(text) - pos != len(orig):
        return text
    return text[:pos] + rep


def _label_path_darknet(image_path: str) -> str:
    out = image_path
    for orig, rep in FOLDER_REPLACEMENTS:
        out = find_replace(out, orig, rep)
    out = out.strip(" \t")
    for ext in IMAGE_EXTENSIONS:
        out = find_replace_extension(out, ext, ".txt")
    return out


def label_path(image_path: PathLike, strict: bool = True) -> Optional[str]:
    """The YOLO label file Darknet reads for ``image_path``.

    With ``strict`` (default) an image whose extension Darknet cannot map to ``.txt`` raises a
    :class:`DataError`; otherwise ``None`` is returned for it.
    """
    image_path = os.fspath(image_path)
    out = _label_path_darknet(image_path)
    if len(out) <= 4:
        if strict:
            raise DataError(f"label file name is too short: '{out}' (from image path "
                            f"'{image_path}')", value=image_path)
        return None
    if not out.endswith(".txt"):
        if strict:
            raise DataError(
                f"cannot infer the label file of image '{image_path}': its extension is not one "
                f"of {' '.join(IMAGE_EXTENSIONS)} (Darknet: 'Failed to infer label file name')",
                value=image_path)
        return None
    return out
