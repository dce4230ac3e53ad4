"""File helpers every module shares: bounded reads of user-named files and atomic writes.

* :func:`read_bounded`: at most ``limit`` bytes (``/dev/zero`` or a mistaken huge file cannot
  exhaust memory); every failure is the caller's :class:`~darknet_py.errors.DarknetError` kind
  naming the file.
* :func:`atomic_write_bytes` / :func:`atomic_write_files`: temp file in the target's folder,
  fsync, rename, so a crash or a full disk leaves the old file or the new one, never half of one.
  Files get the permissions a plain ``open(path, "w")`` would give (``0666 & ~umask``), not
  ``mkstemp``'s private ``0600``.
* :func:`refuse_output_onto_inputs`: a command never writes over one of its own inputs (the same
  file by device and inode, so another spelling, a symlink or a hard link is caught too).
* :class:`AtomicTextWriter`: a results file written progressively into a temp file and renamed
  over the destination only when the run succeeded.
* :data:`PathLike`: the type of every path argument of the package (``str`` or ``os.PathLike``).
* :func:`cache_folder`: where what is made once and reused is kept.
"""
from __future__ import annotations

import os
import tempfile
from typing import IO, Iterable, List, Optional, Sequence, Tuple, Union

from .errors import UsageError

__all__ = ["PathLike", "cache_folder", "read_bounded", "atomic_write_bytes", "atomic_write_files",
           "default_file_mode", "same_file", "refuse_output_onto_inputs", "AtomicTextWriter"]

#: a path argument: ``str`` or anything ``os.fspath`` takes
PathLike = Union[str, "os.PathLike[str]"]


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


# ----------------------------------------------------------------------------- outputs vs inputs
def same_file(a: Optional[str], b: Optional[str]) -> bool:
    """Whether two paths name one existing file (device and inode: spelling, symlinks and hard
    links do not matter)."""
    if not a or not b:
        return False
    try:
        sa, sb = os.stat(a), os.stat(b)
    except (OSError, ValueError):
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def refuse_output_onto_inputs(output: Optional[str], what: str,
                              inputs: Iterable[Tuple[str, Optional[str]]]) -> None:
    """A :class:`~darknet_py.errors.UsageError` when ``output`` (described as ``what``, e.g.
    ``"-out"``) is the same file as one of ``inputs`` (``(description, path)`` pairs): Darknet
    would write over the user's cfg, weights, image or video; darknet-py never does. Checked
    before anything runs; an output that does not exist yet cannot be an input."""
    if not output:
        return
    try:
        os.stat(output)
    except (OSError, ValueError):
        return
    for description, path in inputs:
        if same_file(output, path):
            same = "" if os.path.normpath(output) == os.path.normpath(path) else f" ({path})"
            raise UsageError(f"{what} {output} is the {description}{same}: darknet-py never "
                             "writes over its inputs; choose another file", value=output)


class AtomicTextWriter:
    """A file written in pieces into a hidden temp file next to ``path`` (created at the first
    :meth:`write`), made durable and renamed over ``path`` by :meth:`commit`, or removed by
    :meth:`abort`: the destination is the old file or the whole new one, never a part, and a
    run that fails before committing leaves it untouched. As a context manager: commit on
    success, abort on an exception. OSError of the folder propagates."""

    def __init__(self, path: str):
        self.path = os.fspath(path)
        self._f: Optional[IO[bytes]] = None
        self._tmp: Optional[str] = None
        self.done = False

    def _open(self) -> None:
        folder = os.path.dirname(os.path.abspath(self.path)) or "."
        fd, self._tmp = tempfile.mkstemp(prefix="." + os.path.basename(self.path) + ".",
                                         suffix=".tmp", dir=folder)
        self._f = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        if self.done:
            raise ValueError(f"{self.path}: written already")
        if self._f is None:
            self._open()
        self._f.write(data)

    def commit(self) -> None:
        if self.done:
            return
        if self._f is None:
            self._open()
        f, tmp = self._f, self._tmp
        try:
            f.flush()
            os.fchmod(f.fileno(), default_file_mode())
            os.fsync(f.fileno())
            f.close()
            os.replace(tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self.done = True
        self._f = None
        _fsync_folder(self.path)

    def abort(self) -> None:
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            self._f = None
        if self._tmp is not None and not self.done:
            _unlink(self._tmp)
        self.done = True

    def __enter__(self) -> "AtomicTextWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def cache_folder() -> str:
    """Where darknet-py keeps what it makes once and reuses (on-the-fly exports, int8 models,
    compiled kernels): ``$DARKNET_PY_CACHE``, else ``$XDG_CACHE_HOME/darknet_py``, else
    ``~/.cache/darknet_py`` (never the weights' folder, which may be read-only or shared)."""
    if os.environ.get("DARKNET_PY_CACHE"):
        return os.environ["DARKNET_PY_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "darknet_py")
