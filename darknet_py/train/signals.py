"""Ctrl-C and SIGTERM during ``detector train``: stop cleanly and keep ``<cfg>_last.weights``.

Darknet installs no handler: a signal kills it and the iterations since the last ``_last`` save
are lost. Here the first SIGINT/SIGTERM asks the loop to stop after the current mini-batch (or
the running mAP evaluation); the trainer then writes ``_last.weights`` and exits. A second signal
stops at once (``KeyboardInterrupt``; the trainer still saves the weights of the last whole
iteration), except while the weights are being updated (it is raised when the update is whole)
or written (the save finishes and the run ends with it). Under torchrun a second signal only
repeats the first: the launcher passes on the signal it got (a second one for the ranks) and
kills them itself after its grace period.
"""
from __future__ import annotations

import contextlib
import os
import signal
from typing import Dict, Iterator

__all__ = ["StopSignals"]


class StopSignals:
    """The stop request of SIGINT/SIGTERM, and the spans in which a second signal must wait."""

    def __init__(self, world: int = 1):
        self.world = world
        #: a signal (or :meth:`request`) asked the run to stop at the next safe point
        self.requested = False
        self._updating = self._saving = False
        self._interrupt_pending = False
        self._old: Dict[int, object] = {}

    def request(self) -> None:
        """What the first signal does: stop after this mini-batch (or mAP calculation)."""
        self.requested = True

    @contextlib.contextmanager
    def updating(self) -> Iterator[None]:
        """The weights are being updated: a second signal meanwhile raises
        ``KeyboardInterrupt`` once the update is whole."""
        self._updating = True
        try:
            yield
        finally:
            self._updating = False
        if self._interrupt_pending:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def saving(self) -> Iterator[None]:
        """A checkpoint is being written: a second signal meanwhile lets it finish."""
        self._saving = True
        try:
            yield
        finally:
            self._saving = False

    def handle(self, signum: int, frame=None) -> None:
        """The SIGINT/SIGTERM handler."""
        if self.requested and self.world == 1:
            if self._saving or self._updating:
                self._interrupt_pending = not self._saving
                _write_fd(2, f"\n signal {signum}: "
                             f"{'saving' if self._saving else 'updating'} the weights, "
                             "then stopping\n")
                return
            raise KeyboardInterrupt
        self.requested = True
        # os.write, not print: the signal may arrive in the middle of a print to the same
        # stream, and a buffered write re-entered from a handler raises RuntimeError
        _write_fd(2, f"\n signal {signum}: stopping after this mini-batch (or the mAP "
                     "calculation), then saving _last.weights\n")

    def install(self) -> None:
        """Handle SIGINT and SIGTERM (nothing outside the main thread, which cannot)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self.handle)
            except ValueError:  # not the main thread
                pass

    def restore(self) -> None:
        """Put back the handlers :meth:`install` replaced."""
        old, self._old = self._old, {}
        for sig, h in old.items():
            signal.signal(sig, h)


def _write_fd(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode())
    except OSError:
        pass
