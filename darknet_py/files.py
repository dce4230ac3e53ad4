"""File helpers every module shares: bounded reads of user-named files and atomic writes.

* :func:`read_bounded`: at most ``limit`` bytes (``/dev/zero`` or a mistaken huge file cannot
  exhaust memory); every failure is the caller's :class:`~darknet_py.errors.DarknetError` kind
  naming the file.
* :func:`atomic_write_bytes` / :func:`atomic_write_files`: temp file in the target's folder,
  fsync, rename, so a crash or a full disk leaves the old file or the new one, never half of one.
  Files get the permissions a plain ``open(path, "w")`` would give (``0666 & ~umask``), not
  ``mkstemp``'s private ``0600``.
"""
from __future__ import annotations

import os
import tempfile
from typing import List, Sequence, Tuple

__all__ = ["read_bounded", "atomic_write_bytes", "atomic_write_files", "default_file_mode"]


def read_bounded(path: str, limit: int, error: type, what: str) -> bytes:
    """Read at most ``limit`` bytes of ``path``, raising ``error`` (naming the file) on failure."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise error(f"{what} not found", file=path) from None
    except IsADirectoryError:
        raise error(f"{what} is a directory, not a file", file=path) from None
    except OSError as e:
        raise error(f"cannot read {what}: {e.strerror}", file=path) from None
    if len(data) > limit:
        raise error(f"not a {what}: larger than {limit >> 20} MiB", file=path)
    return data


def default_file_mode() -> int:
    """``0666 & ~umask``: what ``open(path, "w")`` creates (read without changing the umask for
    long: it is process-wide)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _write_temp(path: str, data: bytes, mode: int) -> str:
    folder = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_folder(path: str) -> None:
    """Make a rename durable (best effort: some file systems refuse directory fsync)."""
    try:
        dfd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring); OSError propagates."""
    tmp = _write_temp(path, data, default_file_mode())
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    _fsync_folder(path)


def atomic_write_files(files: Sequence[Tuple[str, bytes]]) -> None:
    """Write several files together: all temps first, then the renames, so an error while writing
    touches no target. OSError propagates with every temp file removed."""
    mode = default_file_mode()
    temps: List[Tuple[str, str]] = []
    try:
        for path, data in files:
            temps.append((_write_temp(path, data, mode), path))
        for tmp, path in temps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in temps:
            _unlink(tmp)
        raise
    for _, path in temps:
        _fsync_folder(path)
