"""The compiled resize (the ``speed`` extra, Numba) gives the numpy path's values, bit for bit."""
import numpy as np
import pytest
import torch

from darknet_py.imaging import image as I
from darknet_py.imaging import resize_kernel as K

numba = pytest.importorskip("numba")


@pytest.fixture(scope="module")
def kernel():
    k = K.compiled_resize(wait=True)
    assert k is not None, K.kernel_state()
    assert K.kernel_state().startswith("compiled")
    return k


def _cases():
    rng = np.random.default_rng(4)
    fixed = [((1, 1, 3), 5, 4), ((7, 1, 3), 6, 3), ((1, 9), 4, 1), ((9, 9, 3), 1, 1),
             ((5, 8, 4), 16, 12), ((30, 40, 3), 30, 40), ((12, 700, 3), 600, 5)]
    for shape, w, h in fixed:
        yield rng.integers(0, 256, shape, dtype=np.uint8), w, h
    for trial in range(150):
        in_h = int(rng.integers(1, 70))
        in_w = int(rng.integers(1, 900 if trial % 10 == 0 else 150))
        ch = [None, 1, 3, 4][trial % 4]
        shape = (in_h, in_w) if ch is None else (in_h, in_w, ch)
        yield (rng.integers(0, 256, shape, dtype=np.uint8), int(rng.integers(1, 520)),
               int(rng.integers(1, 50)))


def test_compiled_resize_equals_the_numpy_path(kernel):
    n = 0
    for mat, w, h in _cases():
        want = I.resize_image(I.DecodedImage(mat).to_tensor(), w, h)
        got = I._resize_compiled(kernel, mat, w, h)
        assert got.shape == want.shape and torch.equal(got, want), (mat.shape, w, h)
        n += 1
    assert n > 150


def test_compiled_resize_takes_any_layout_with_one_specialisation(kernel):
    """Read-only, non-contiguous and grey sources give the same values, through the one
    compiled version (no caller pays a compilation on its first image)."""
    rng = np.random.default_rng(9)
    big = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    views = [big[::2, ::3], big[:, :, 1], np.flip(big, 1)]
    frozen = big.copy()
    frozen.setflags(write=False)
    views.append(frozen)
    for mat in views:
        want = I.resize_image(I.DecodedImage(np.ascontiguousarray(mat)).to_tensor(), 41, 23)
        assert torch.equal(I._resize_compiled(kernel, mat, 41, 23), want)
    assert len(kernel.signatures) == 1


def test_letterbox_of_a_decoded_image_uses_it_and_equals_the_float_path(kernel):
    mat = np.random.default_rng(2).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    assert torch.equal(I.letterbox_image(I.DecodedImage(mat), 416, 416),
                       I.letterbox_image(I.DecodedImage(mat).to_tensor(), 416, 416))


def test_the_first_image_does_not_build_and_the_second_does_not_wait(monkeypatch):
    """The first call answers None and starts nothing (a single image never pays for the
    build); the second starts the build on a thread and answers None (the numpy path runs);
    wait=True gives the kernel."""
    monkeypatch.setattr(K, "_KERNEL", None)
    monkeypatch.setattr(K, "_REASON", "numpy (not built)")
    monkeypatch.setattr(K, "_calls", 0)
    assert K.compiled_resize() is None and K._KERNEL is None
    assert K.compiled_resize() is None and K._KERNEL is not None
    assert "being built" in K.kernel_state() or K.kernel_state().startswith("compiled")
    assert K.compiled_resize(wait=True) is not None
    assert K.kernel_state().startswith("compiled")


def test_without_numba_the_numpy_path_runs(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_numba(name, *args, **kwargs):
        if name == "numba":
            raise ImportError("no numba here")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_numba)
    kernel, reason = K._build()
    assert kernel is False and "speed" in reason


def test_a_huge_source_is_not_kept_and_gives_the_same_values(kernel, monkeypatch):
    """Above _KEEP_PART_VALUES pass 1's buffer is made for the call and not kept per thread
    (memory stays bounded after a huge photo); the values are the same."""
    mat = np.random.default_rng(6).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    monkeypatch.setattr(I, "_KEEP_PART_VALUES", 10)
    kept_before = dict(getattr(I._SCRATCH, "bufs", {}))
    got = I._resize_compiled(kernel, mat, 17, 9)
    assert not [k for k in getattr(I._SCRATCH, "bufs", {}) if k not in kept_before
                and k[0] == "compiled-part"]
    assert torch.equal(got, I.resize_image(I.DecodedImage(mat).to_tensor(), 17, 9))
