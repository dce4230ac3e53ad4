"""One training per backup folder and cfg: ``<backup>/<cfg>.lock``.

Two trainings of the same cfg into one backup folder overwrite each other's ``_last``, ``_N`` and
``_best`` checkpoints, interleave their ``_log.csv`` rows and delete each other's in-flight temp
files. Darknet has no guard; darknet-py holds an exclusive ``flock`` on ``<backup>/<cfg>.lock``
for the whole run and writes its PID into it, so a second run refuses in one line naming the
first.

The kernel releases a ``flock`` when its process dies (kill -9, a crash, a power cut leaves a file
no process holds), so a stale lock file is recognised by the lock being free, never by guessing
from a PID; the PID it names is only reported. ``flock`` is advisory and local to one machine:
two machines training into one network folder are not detected.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, Optional

from ..errors import DataError

__all__ = ["BackupLock", "hold_backup_lock", "open_backup_folder"]

#: the locks this process holds, by lock path: a Trainer whose setup failed never reached the
#: release in ``run``; a later Trainer of this process takes its lock over instead of refusing
_HELD: Dict[str, "BackupLock"] = {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


class BackupLock:
    """The held lock; :meth:`release` unlocks and removes the file."""

    def __init__(self, path: str, fd: int):
        self.path = path
        self._fd: Optional[int] = fd

    def release(self) -> None:
        if self._fd is None:
            return
        _HELD.pop(self.path, None)
        try:
            os.unlink(self.path)        # while still locked: no other run holds this inode
        except OSError:
            pass
        try:
            os.close(self._fd)          # closing drops the flock
        except OSError:
            pass
        self._fd = None


def _read_pid(fd: int) -> Optional[int]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 64).decode("ascii", "replace").split()
        return int(text[0]) if text else None
    except (OSError, ValueError):
        return None


def hold_backup_lock(backup: str, base: str,
                     log: Callable[[str], None] = lambda s: None) -> BackupLock:
    """Lock ``<backup>/<base>.lock`` for this run, or raise :class:`DataError` naming the run
    that holds it. A lock file left by a run that died is taken over (and said so in ``log``)."""
    import fcntl
    path = os.path.join(backup, f"{base}.lock")
    key = os.path.abspath(path)
    previous = _HELD.pop(key, None)
    if previous is not None:
        previous.release()
    for _ in range(10):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except IsADirectoryError:
            raise DataError("the training lock file is a folder; remove it", file=path) from None
        except OSError as e:
            raise DataError(f"cannot create the training lock: {e.strerror}", file=path) \
                from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = _read_pid(fd)
            os.close(fd)
            who = f"PID {pid}" if pid is not None else "another process"
            raise DataError(f"another training ({who}) is writing its checkpoints and log for "
                            f"{base} into this backup folder; wait for it to end, or give this "
                            "one another backup= folder in the .data file", file=path) from None
        # the holder may have removed the file between our open and our flock: then we hold
        # an unlinked inode, and a third run could lock a new file; start again
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except OSError:
            pass
        os.close(fd)
    else:
        raise DataError("the training lock file keeps changing; is another training starting "
                        "and ending here?", file=path)
    stale = _read_pid(fd)
    if stale is not None and stale != os.getpid():
        state = "no longer running" if not _alive(stale) else "not holding it"
        log(f"taking over the lock {path} of PID {stale} ({state}: it ended without removing it)")
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"{os.getpid()}\n".encode())
    lock = BackupLock(key, fd)
    _HELD[key] = lock
    return lock


def open_backup_folder(backup: str, base: str,
                       log: Callable[[str], None] = lambda s: None) -> BackupLock:
    """Create ``backup`` (with its parents) and lock it for ``base``: what a training does
    before it touches any file there. A ``backup=`` naming a file, or a folder that cannot be
    created or written, is one :class:`DataError` naming it."""
    if os.path.exists(backup) and not os.path.isdir(backup):
        raise DataError("backup= names a file, not a folder (the .data file's backup= line)",
                        file=backup)
    try:
        os.makedirs(backup, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the backup folder: {e.strerror} (the .data file's "
                        "backup= line)", file=backup) from None
    if not os.access(backup, os.W_OK | os.X_OK):
        raise DataError("backup folder is not writable", file=backup)
    return hold_backup_lock(backup, base, log)
