"""darknet_py.timing: the one harness the backends' build-time races and the benchmark use."""
import time

import pytest

from darknet_py.timing import interleave, quiet_clock, race, time_call


def test_interleave_alternates_the_order_and_keeps_only_timed_rounds():
    calls, syncs = [], []
    samples = interleave({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                         rounds=3, warmup=2, sync={"b": lambda: syncs.append("b")})
    # warm-up rounds a,b / b,a, then timed rounds a,b / b,a / a,b: the first timed round runs in
    # the given order and no candidate always follows the same one
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b"]
    assert len(syncs) == 2 * 5          # before and after every call of "b", warm-up included
    assert {k: len(s.wall) for k, s in samples.items()} == {"a": 3, "b": 3}
    assert all(len(s.cpu) == 3 for s in samples.values())


def test_race_finds_the_faster_candidate():
    med = race({"slow": lambda: time.sleep(0.004), "quick": lambda: None}, rounds=3)
    assert set(med) == {"slow", "quick"}
    assert med["slow"] >= 0.004 > med["quick"]


def test_time_call_warms_up_then_takes_the_median():
    ticks = iter([0.0, 1.0, 10.0, 13.0, 20.0, 22.0])    # timed calls last 1, 3 and 2 clock units
    calls = []
    assert time_call(lambda: calls.append(1), repeat=3, warmup=2,
                     clock=lambda: next(ticks)) == 2.0
    assert len(calls) == 5
    with pytest.raises(ValueError):
        time_call(lambda: None, repeat=0)


def test_quiet_clock_is_the_thread_clock_for_one_thread_only():
    assert quiet_clock(1) is time.thread_time
    assert quiet_clock(4) is time.perf_counter and quiet_clock(None) is time.perf_counter
