"""Bounded, ordered work ahead of the consumer on background threads: the overlap mechanism of
the inference pipeline.

>>> with Prefetcher(paths, decode, depth=2) as decoded:   # decode runs on a worker thread
...     for image in decoded:                              # in the order of ``paths``
...         use(image)

:class:`Prefetcher` pulls items from an iterable and runs ``work(item)`` on ``workers`` threads,
at most ``depth`` items ahead of the consumer (pulled, being worked on or waiting), so memory
stays bounded whatever the length of the input; the consumer gets the results in input order.
Chained (a prefetcher's items are another prefetcher's results), they make the stages of
:class:`~darknet_py.infer.pipeline.Pipeline`: reading + resizing, the network, and the caller's
decoding and NMS run at the same time on different batches. OpenCV, numpy, PyTorch and the ONNX
runtimes release the GIL in their kernels, so the stages share the CPUs.

Rules:

* **order**: results come out in the order the items went in, whatever thread finished first;
* **errors**: an exception raised by the iterable or by ``work`` reaches the consumer at that
  item's place (the results before it first); nothing after it is read;
* **closing**: :meth:`close` (also at the end of a ``with`` block, when the consumer stops
  early, breaks out of a loop, or gets an exception such as ``KeyboardInterrupt``) stops the
  workers after the item each is working on, and closes the iterable (a generator's
  ``finally`` runs, e.g. a video capture is released) on the thread that last read it. A
  worker blocked in reading the iterable (a pipe or a camera that sends nothing) is not waited
  for: it stops, and closes the iterable, when the read returns;
* the workers are daemon threads: a process that ends does not wait for them.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Generic, Iterable, Iterator, List, Optional, Tuple, TypeVar

__all__ = ["Prefetcher"]

T = TypeVar("T")
R = TypeVar("R")

#: seconds :meth:`Prefetcher.close` waits for a worker to finish the item it is working on
CLOSE_TIMEOUT = 30.0
#: seconds it waits for a worker blocked reading the source
READ_GRACE = 1.0


class Prefetcher(Generic[T, R]):
    """``work(item)`` for every item of ``items`` on ``workers`` background threads, at most
    ``depth`` items ahead of the consumer; iterate it (once) to get the results in order. See the
    module text for the rules."""

    def __init__(self, items: Iterable[T], work: Callable[[T], R], *, depth: int = 2,
                 workers: int = 1, name: str = "darknet-py-prefetch"):
        if depth < 1 or workers < 1:
            raise ValueError(f"Prefetcher needs depth >= 1 and workers >= 1, got {depth}, "
                             f"{workers}")
        self._source: Iterator[T] = iter(items)
        self._work = work
        self.depth = int(depth)
        self.workers = min(int(workers), self.depth)   # more workers than slots would idle
        self.name = name
        self._cond = threading.Condition()
        self._source_lock = threading.Lock()
        self._results: Dict[int, Tuple[bool, Any]] = {}
        self._reserved = 0            # items pulled or about to be pulled, not yet consumed
        self._next_pull = 0           # sequence number of the next item read from the source
        self._next_out = 0            # sequence number the consumer waits for
        self._end: Optional[int] = None   # number of items there are (known at the end/error)
        self._closed = False
        self._source_closed = False
        self._threads: List[threading.Thread] = []
        self._started = False
        #: the worker now reading the source (holding the source lock), if any
        self._reading: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ workers
    def _start(self) -> None:
        self._started = True
        for k in range(self.workers):
            t = threading.Thread(target=self._run, name=f"{self.name}-{k}", daemon=True)
            self._threads.append(t)
            t.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and self._end is None and self._reserved >= self.depth:
                    self._cond.wait()
                if self._closed or self._end is not None:
                    return
                self._reserved += 1
            # another worker may be blocked reading the source: wait for it, not past close()
            while not self._source_lock.acquire(timeout=0.05):
                if self._closed:
                    return
            try:
                if self._closed or self._end is not None:
                    if self._closed:
                        self._close_source_locked()
                    self._unreserve()
                    return
                seq = self._next_pull
                self._reading = threading.current_thread()
                try:
                    item = next(self._source)
                except StopIteration:
                    self._finish(seq, None)
                    return
                except BaseException as e:      # the consumer raises it at this item's place
                    self._finish(seq, e)
                    return
                finally:
                    self._reading = None
                self._next_pull += 1
                if self._closed:                # closed while this worker was reading
                    self._close_source_locked()
                    return
            finally:
                self._source_lock.release()
            try:
                result = (True, self._work(item))
            except BaseException as e:
                result = (False, e)
            del item
            with self._cond:
                if self._closed:
                    return
                self._results[seq] = result
                if not result[0] and (self._end is None or self._end > seq + 1):
                    self._end = seq + 1         # nothing after a failed item is read
                self._cond.notify_all()
            if not result[0]:
                return

    def _unreserve(self) -> None:
        with self._cond:
            self._reserved -= 1
            self._cond.notify_all()

    def _finish(self, seq: int, error: Optional[BaseException]) -> None:
        """The source ended (or raised) at ``seq``: called with the source lock held."""
        with self._cond:
            if error is not None:
                self._results[seq] = (False, error)
                seq += 1
            else:
                self._reserved -= 1
            if self._end is None or self._end > seq:
                self._end = seq
            self._cond.notify_all()

    def _close_source_locked(self) -> None:
        """Close the source once (a generator's ``finally`` runs); the source lock is held."""
        if self._source_closed:
            return
        self._source_closed = True
        close = getattr(self._source, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                pass

    # ------------------------------------------------------------------ consumer
    def __iter__(self) -> "Prefetcher[T, R]":
        return self

    def __next__(self) -> R:
        with self._cond:
            if not self._started and not self._closed:
                self._start()
            while True:
                if self._closed:
                    raise StopIteration
                if self._next_out in self._results:
                    ok, value = self._results.pop(self._next_out)
                    self._next_out += 1
                    self._reserved -= 1
                    self._cond.notify_all()
                    break
                if self._end is not None and self._next_out >= self._end:
                    raise StopIteration
                self._cond.wait()
        if not ok:
            self.close()
            raise value
        return value

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Stop the workers and close the source (see the module text); safe to call from any
        thread, more than once."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._results.clear()
            self._cond.notify_all()
        if isinstance(self._source, Prefetcher):
            self._source.close(timeout)         # wakes a worker waiting for its next item
        me = threading.current_thread()
        for t in self._threads:
            if t is not me:
                # a worker inside work() finishes its item; one blocked reading the source gets
                # a moment (a video frame), not more (a pipe that sends nothing)
                t.join(READ_GRACE if t is self._reading else timeout)
        if self._source_lock.acquire(blocking=False):
            try:
                self._close_source_locked()
            finally:
                self._source_lock.release()

    @property
    def running(self) -> bool:
        """Whether a worker thread is still alive (after :meth:`close`: one blocked reading)."""
        return any(t.is_alive() for t in self._threads)

    def __enter__(self) -> "Prefetcher[T, R]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close(timeout=0.0)
        except Exception:
            pass
