"""Timing calls against each other: the one harness behind the backends' build-time choices
(thread counts and Winograd-or-oneDNN plans in :mod:`darknet_py.infer.backends.fast`, thread
counts in :mod:`darknet_py.infer.backends.onnxruntime`) and ``darknet-py bench``
(:mod:`darknet_py.bench`).

* :func:`time_call`: the median seconds of one call, repeated after warm-up calls.
* :func:`interleave`: several candidates timed round-robin, one call each per round, the order
  reversed every other round so that no candidate always follows the same one: load from other
  processes hits them alike. Returns every sample (wall and process CPU seconds).
* :func:`race`: :func:`interleave`'s median wall seconds per candidate (which one is faster).
* :func:`quiet_clock`: the clock for timing one thread on a machine shared with other processes.

Nothing here imports torch: a candidate that runs on a GPU passes its ``sync``
(``torch.cuda.synchronize``), called before the clock starts and before it stops.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, TypeVar

__all__ = ["Samples", "time_call", "interleave", "race", "quiet_clock"]

K = TypeVar("K", bound=Hashable)


@dataclass
class Samples:
    """The timed calls of one candidate, in call order."""

    wall: List[float] = field(default_factory=list)   # seconds per call (perf_counter)
    cpu: List[float] = field(default_factory=list)    # process CPU seconds per call, all threads

    @property
    def median(self) -> float:
        """Median wall seconds per call."""
        return statistics.median(self.wall)


def quiet_clock(threads: Optional[int]) -> Callable[[], float]:
    """``time.thread_time`` when the work runs in the calling thread alone (``threads == 1``):
    the CPU time of that thread, which other processes sharing the CPUs barely change; else
    ``time.perf_counter`` (the thread clock cannot see work done by other threads)."""
    return time.thread_time if threads == 1 else time.perf_counter


def time_call(fn: Callable[[], Any], repeat: int = 3, warmup: int = 1,
              clock: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds of ``fn()`` over ``repeat`` calls, after ``warmup`` untimed calls."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


def interleave(candidates: Mapping[K, Callable[[], Any]], rounds: int, warmup: int = 1,
               sync: Optional[Mapping[K, Callable[[], None]]] = None) -> Dict[K, Samples]:
    """Time every candidate ``rounds`` times, round-robin (one call each per round), after
    ``warmup`` untimed rounds. The order alternates between the given one and its reverse,
    starting so that the first timed round runs in the given order. ``sync[key]`` (default:
    nothing) is called before each call is timed and again before its clock stops."""
    keys = list(candidates)
    syncs = {k: (sync or {}).get(k) or _no_sync for k in keys}
    samples: Dict[K, Samples] = {k: Samples() for k in keys}
    for r in range(-warmup, rounds):
        for k in (keys if r % 2 == 0 else keys[::-1]):
            fn, wait = candidates[k], syncs[k]
            wait()
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            wait()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if r >= 0:
                samples[k].wall.append(wall)
                samples[k].cpu.append(cpu)
    return samples


def race(candidates: Mapping[K, Callable[[], Any]], rounds: int = 5,
         warmup: int = 1) -> Dict[K, float]:
    """Median wall seconds of each candidate, timed with :func:`interleave`."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    return {k: s.median for k, s in interleave(candidates, rounds, warmup).items()}


def _no_sync() -> None:
    pass
