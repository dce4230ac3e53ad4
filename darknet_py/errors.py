"""One exception family for everything a user can get wrong.

Every error a user can cause (a bad cfg, a truncated weights file, a missing image, a wrong label)
is raised as a :class:`DarknetError` subclass that carries the file, the line and the offending
value. The CLI prints ``str(err)`` on one line and exits with ``err.exit_code``; ``--debug`` shows
the traceback instead.
"""
from __future__ import annotations

from typing import Optional


class DarknetError(Exception):
    """Base class of all user-facing errors.

    ``exit_code`` is 1 for runtime problems (bad files) and 2 for usage errors (bad flags).
    """

    exit_code = 1
    kind = "error"

    def __init__(self, message: str, file: Optional[str] = None, line: Optional[int] = None,
                 value: object = None):
        self.message = _strip_worker_traceback(message)
        self.file = None if file is None else str(file)
        self.line = line
        self.value = value
        super().__init__(self.format())

    def format(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file if self.line is None else f"{self.file}:{self.line}"
            where += ": "
        return f"{where}{self.message}"


def _strip_worker_traceback(message: str) -> str:
    """The error's own one-line message when it was raised in a DataLoader worker.

    PyTorch re-raises a worker's exception in the main process as ``type(err)(text)`` where
    ``text`` is ``"Caught DataError in DataLoader worker process 0.\nOriginal Traceback ..."``;
    the last line of that traceback is ``"darknet_py.errors.DataError: <message>"``.
    """
    if not isinstance(message, str) or not message.startswith("Caught ") \
            or "\nOriginal Traceback" not in message:
        return message
    last = [ln for ln in message.splitlines() if ln.strip()][-1]
    _, sep, own = last.partition(": ")
    return own if sep else last


class CfgError(DarknetError):
    """A .cfg file that cannot be parsed or built (unknown section, bad number, bad index...)."""
    kind = "cfg error"


class WeightsError(DarknetError):
    """A .weights / state-dict file that does not fit the network (truncated, wrong header...)."""
    kind = "weights error"


class DataError(DarknetError):
    """A dataset problem: obj.data, list files, label files, images, names files."""
    kind = "data error"


class UsageError(DarknetError):
    """Bad command-line usage (missing argument, contradictory flags)."""
    exit_code = 2
    kind = "usage error"


class TrainingStopped(DarknetError):
    """A training run that cannot go on: the loss or the weights became NaN/inf."""
    kind = "training stopped"
