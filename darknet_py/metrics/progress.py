"""Progress of a long evaluation on stderr, silent when it is quick.

``detector map`` and the in-training mAP print Darknet's text on stdout and nothing else until the
report; on a large list (or an untrained model with hundreds of thousands of detections) that is
minutes of silence. :class:`StageProgress` says which stage runs and how far it is, on stderr
(so stdout stays Darknet's), only once a stage has run for ``delay`` seconds: on a terminal one
``\\r`` line at most 4 times a second, elsewhere (a log file) a full line at most every 10 s.

Its ``check`` hook is also where a caller stops the work (the trainer aborts the evaluation on a
signal): :meth:`StageProgress.step` calls it on every step.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO


#: seconds a stage runs before its progress is shown
DEFAULT_DELAY = 3.0


class StageProgress:
    def __init__(self, delay: Optional[float] = None, stream: Optional[TextIO] = None,
                 check: Optional[Callable[[], None]] = None, tty: Optional[bool] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.stream = stream if stream is not None else sys.stderr
        self.delay = DEFAULT_DELAY if delay is None else delay
        self.check = check
        self.tty = self.stream.isatty() if tty is None else tty
        self.clock = clock
        self.stage = ""
        self.start = self.last = 0.0
        self.shown = False          # a \r line is on the terminal and needs its newline
        self.lines = 0              # full lines written (not on a terminal)

    def begin(self, stage: str) -> None:
        self.end()
        self.stage = stage
        self.start = self.clock()
        self.last = self.start

    def step(self, done: int, total: int) -> None:
        if self.check is not None:
            self.check()
        now = self.clock()
        if not self.stage or now - self.start < self.delay:
            return
        if now - self.last < (0.25 if self.tty else 10.0) and done < total and self.shown:
            return
        self.last = now
        text = f" {self.stage}: {done}/{total} ({now - self.start:.0f} s)"
        if self.tty:
            self.stream.write("\r" + text)
            self.shown = True
        else:
            # the first line may follow Darknet's "\r<count>" image counter: start a new line
            self.stream.write(("" if self.lines else "\n") + text + "\n")
            self.lines += 1
            self.shown = True
        self.stream.flush()

    def end(self) -> None:
        if self.shown and self.tty:
            self.stream.write("\n")
            self.stream.flush()
        self.shown = False
        self.stage = ""
