"""Messages for the user on stderr (notes, progress, the backend line), apart from stdout's
Darknet-format results.

:func:`eprint` flushes after every message, so notes interleave in order with what subprocesses
and the other stream print, and a log shows them even when the process is then killed.
"""
from __future__ import annotations

import sys

__all__ = ["eprint"]


def eprint(*args) -> None:
    """``print`` to stderr, flushed."""
    print(*args, file=sys.stderr)
    sys.stderr.flush()
