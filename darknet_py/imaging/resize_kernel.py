"""Darknet's ``resize_image`` of a decoded 8-bit image as one compiled loop (Numba), when the
``speed`` extra is installed: the same float32 operations in the same order as the numpy path of
:func:`darknet_py.imaging.image.resize_image`, so the same bits (``tests/imaging`` compares the
two), in a fraction of the time (no temporary arrays, no float copy of the source columns, and
pass 1 only on the source rows pass 2 reads).

Per value, as ``image.c``: pass 1 (along x) ``part = (1-dx)*float(a) + dx*float(b)``, two
products and a sum, each rounded to float32, the last output column a copy of the last input
column; pass 2 (along y) ``out = (1-dy)*part[iy] + dy*part[iy+1]``, the last output row (and a
one-row source) only the first product. ``float(v)`` is the byte's Darknet float (a 256-entry
table).

:func:`compiled_resize` gives the kernel, or None while it is not ready and without Numba (the
numpy path runs then, with the same results). Importing Numba and compiling or loading the
kernel takes about a second, so the second call (the second image of a process: a single image
never pays for it) starts that on a background thread and returns None, and later calls get the
kernel once it is there (``wait=True`` builds and waits, as the benchmark does before timing).
The machine code is cached in :func:`~darknet_py.files.cache_folder` (``numba/``) unless the
user set ``NUMBA_CACHE_DIR``.
"""
from __future__ import annotations

import os
import threading
import warnings
from typing import Callable, Optional

import numpy as np

from ..files import cache_folder

__all__ = ["compiled_resize", "kernel_state"]

_LOCK = threading.Lock()
#: None: not started; a Thread: being built; False: unavailable (see _REASON); else the kernel
_KERNEL = None
_REASON = "numpy (the compiled resize is built from the second image of a process on)"
#: calls before the build starts (the first image of a process is resized by numpy)
_CALLS_BEFORE_BUILD = 1
_calls = 0


def kernel_state() -> str:
    """``compiled (numba X)``, or why the numpy path runs (not built yet, no Numba, failed)."""
    return _REASON


def compiled_resize(wait: bool = False) -> Optional[Callable]:
    """The compiled kernel ``kernel(mat, lut, ix, ix1, wx0, wx1, iy, iy1, wy0, wy1, need, part,
    out, swap)``, or None: Numba is not installed or could not compile it (a warning says why,
    once), or it is not built yet (the second call starts that on a background thread;
    ``wait=True`` starts it and waits for it)."""
    global _KERNEL, _REASON, _calls
    kernel = _KERNEL
    if kernel is None:
        with _LOCK:
            _calls += 1
            if _KERNEL is None and (wait or _calls > _CALLS_BEFORE_BUILD):
                _REASON = "numpy (the compiled resize is being built)"
                _KERNEL = threading.Thread(target=_build_now, name="darknet-py-resize-build",
                                           daemon=True)
                _KERNEL.start()
            kernel = _KERNEL
    if kernel is None:
        return None
    if isinstance(kernel, threading.Thread):
        if not wait:
            return None
        kernel.join()
        kernel = _KERNEL
    return kernel or None


def _build_now() -> None:
    global _KERNEL, _REASON
    kernel, reason = _build()
    if kernel:
        # compile (or load from the cache) now, on this thread, not in a caller's first call:
        # arguments of the types every call passes (writable, C-contiguous), so that it is the
        # one specialisation
        index = np.zeros(1, np.int64)
        weight = np.zeros(1, np.float32)
        kernel(np.zeros((1, 1, 3), np.uint8), np.zeros(256, np.float32), index, index, weight,
               weight, index, index, weight, weight, np.ones(1, np.bool_),
               np.zeros((3, 1, 1), np.float32), np.zeros((3, 1, 1), np.float32), True)
    _KERNEL, _REASON = kernel, reason


def _build():
    os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(cache_folder(), "numba"))
    try:
        import numba
    except ImportError:
        return False, "numpy (install the 'speed' extra for the compiled resize)"
    try:
        kernel = numba.njit(cache=True, nogil=True)(_resize_bytes)
    except Exception as e:  # noqa: BLE001 - any failure of an optional compiler: numpy runs
        warnings.warn(f"the compiled resize is unavailable ({e}); the numpy path runs")
        return False, f"numpy (numba {numba.__version__} failed: {e})"
    return kernel, f"compiled (numba {numba.__version__})"


def _resize_bytes(mat, lut, ix, ix1, wx0, wx1, iy, iy1, wy0, wy1, need, part, out, swap):
    """``mat`` (in_h, in_w, planes) uint8; ``lut`` the 256 byte floats; ``ix, ix1, wx0, wx1``
    and ``iy, iy1, wy0, wy1`` the two passes' indices and float32 weights; ``need[r]``: source
    row ``r`` is read by pass 2; ``part`` (planes, in_h, w) and ``out`` (planes, h, w) float32;
    ``swap``: planes 0 and 2 exchanged (BGR(A) -> RGB(A))."""
    in_h, in_w, planes = mat.shape[0], mat.shape[1], mat.shape[2]
    w, h = ix.shape[0], iy.shape[0]
    for r in range(in_h):
        if not need[r]:
            continue
        for p in range(planes):
            src = 2 - p if swap and p < 3 else p
            if in_w == 1:
                # Darknet's `im.w == 1`: every column copies the only one
                only = lut[mat[r, 0, src]]
                for c in range(w):
                    part[p, r, c] = only
            else:
                for c in range(w - 1):
                    left = wx0[c] * lut[mat[r, ix[c], src]]
                    right = wx1[c] * lut[mat[r, ix1[c], src]]
                    part[p, r, c] = left + right
                part[p, r, w - 1] = lut[mat[r, in_w - 1, src]]
    for p in range(planes):
        for rr in range(h):
            top, k0 = iy[rr], wy0[rr]
            if rr < h - 1 and in_h > 1:
                bottom, k1 = iy1[rr], wy1[rr]
                for c in range(w):
                    out[p, rr, c] = k0 * part[p, top, c] + k1 * part[p, bottom, c]
            else:
                for c in range(w):
                    out[p, rr, c] = k0 * part[p, top, c]
