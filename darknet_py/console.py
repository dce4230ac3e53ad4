"""Messages for the user on stderr (notes, warnings, the backend line), apart from stdout's
Darknet-format results: :func:`eprint`, the one helper every module uses for them."""
from __future__ import annotations

import sys

__all__ = ["eprint"]


def eprint(*args) -> None:
    """``print`` to stderr, flushed: the note shows before whatever the program does next."""
    print(*args, file=sys.stderr)
    sys.stderr.flush()
