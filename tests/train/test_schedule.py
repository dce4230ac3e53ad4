"""darknet_py.train.schedule: Darknet's get_current_rate / get_current_batch (network.c).

Expected values are worked out by hand from the C formulas (shown next to each row).
"""
from __future__ import annotations

import math

import pytest

from conftest import REFDATA, require
from darknet_py.formats.netconfig import NetConfig
from darknet_py.errors import CfgError
from darknet_py.train.schedule import (check_sequences, current_batch, images_per_iteration,
                                       learning_rate, loader_seq_subdivisions, seq_subdivisions,
                                       short_run_warning, update_batch)


def cfg(**kw) -> NetConfig:
    base = dict(batch=64, subdivisions=16, width=416, height=416, channels=3, learning_rate=0.1,
                max_batches=1000, burn_in=0, power=4.0)
    base.update(kw)
    return NetConfig(**base)


RATE_TABLE = [
    # (description, cfg options, batch_num, expected)
    ("constant", dict(policy="constant"), 5, 0.1),
    # burn_in: lr * (b / burn_in) ** power, for any policy
    ("burn_in half", dict(policy="steps", learning_rate=0.00261, burn_in=1000, steps=[1600000],
                          scales=[0.1]), 500, 0.00261 * 0.5 ** 4),
    ("burn_in 0.3", dict(policy="constant", learning_rate=0.00261, burn_in=1000), 300,
     0.00261 * 0.3 ** 4),
    ("burn_in power 1", dict(policy="constant", burn_in=100, power=1.0), 25, 0.025),
    ("burn_in ends", dict(policy="constant", burn_in=100), 100, 0.1),
    ("burn_in start", dict(policy="constant", burn_in=100), 0, 0.0),
    # steps: multiply by scales[i] for every steps[i] <= b (yolov4-tiny's schedule)
    ("steps before", dict(policy="steps", learning_rate=0.00261, steps=[1600000, 1800000],
                          scales=[0.1, 0.1]), 1599999, 0.00261),
    ("steps at first", dict(policy="steps", learning_rate=0.00261, steps=[1600000, 1800000],
                            scales=[0.1, 0.1]), 1600000, 0.000261),
    ("steps after both", dict(policy="steps", learning_rate=0.00261, steps=[1600000, 1800000],
                              scales=[0.1, 0.1]), 1900000, 0.0000261),
    ("steps scale up", dict(policy="steps", steps=[10, 20], scales=[2.0, 0.25]), 15, 0.2),
    # step: lr * scale ** (b / step) with integer division
    ("step", dict(policy="step", step=100, scale=0.5), 250, 0.025),
    ("step first", dict(policy="step", step=100, scale=0.5), 99, 0.1),
    # exp: lr * gamma ** b
    ("exp", dict(policy="exp", gamma=0.99), 10, 0.1 * 0.99 ** 10),
    # poly: lr * (1 - b / max_batches) ** power
    ("poly half", dict(policy="poly", max_batches=1000), 500, 0.1 * 0.5 ** 4),
    ("poly power 2", dict(policy="poly", max_batches=1000, power=2.0), 900, 0.1 * 0.01),
    ("poly end", dict(policy="poly", max_batches=1000), 1000, 0.0),
    # sigmoid: lr / (1 + exp(gamma * (b - step)))
    ("sig", dict(policy="sig", gamma=0.1, step=50), 60, 0.1 / (1 + math.e)),
    ("sig at step", dict(policy="sig", gamma=0.1, step=50), 50, 0.05),
    # sgdr: cosine from lr to lr_min over cycles of sgdr_cycle * sgdr_mult**k
    ("sgdr mid first", dict(policy="sgdr", learning_rate_min=0.001, sgdr_cycle=100, sgdr_mult=2),
     50, 0.001 + 0.5 * 0.099 * (1 + math.cos(math.pi / 2))),
    ("sgdr end first", dict(policy="sgdr", learning_rate_min=0.001, sgdr_cycle=100, sgdr_mult=2),
     100, 0.001),
    ("sgdr second cycle", dict(policy="sgdr", learning_rate_min=0.001, sgdr_cycle=100,
                               sgdr_mult=2), 150, 0.001 + 0.5 * 0.099 * (1 + math.cos(math.pi / 4))),
    ("sgdr restart", dict(policy="sgdr", learning_rate_min=0.001, sgdr_cycle=100, sgdr_mult=2),
     101, 0.001 + 0.5 * 0.099 * (1 + math.cos(math.pi / 200))),
    ("sgdr third cycle", dict(policy="sgdr", learning_rate_min=0.001, sgdr_cycle=100, sgdr_mult=2),
     400, 0.001 + 0.5 * 0.099 * (1 + math.cos(100 * math.pi / 400))),
]


@pytest.mark.parametrize("desc,opts,batch_num,expected", RATE_TABLE, ids=[r[0] for r in RATE_TABLE])
def test_learning_rate_table(desc, opts, batch_num, expected):
    assert learning_rate(cfg(**opts), batch_num) == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_random_policy_uses_power_of_uniform_draw():
    c = cfg(policy="random", power=2.0)
    assert learning_rate(c, 7, uniform=lambda: 0.5) == pytest.approx(0.025, rel=1e-6)
    draws = {learning_rate(c, 7) for _ in range(20)}
    assert len(draws) > 1 and all(0 <= d <= 0.1 for d in draws)


def test_rate_is_a_float32_like_darknets():
    # 0.1 is not representable: Darknet returns the float nearest to 0.1
    assert learning_rate(cfg(policy="constant"), 1) == 0.10000000149011612


def test_current_batch_and_update_batch():
    c = cfg(batch=64, subdivisions=16)
    assert images_per_iteration(c) == 64
    assert current_batch(6400, c) == 100
    assert current_batch(6463, c) == 100
    # batch not divisible by subdivisions: Darknet's net.batch = 64 / 3 = 21 per forward
    c3 = cfg(batch=64, subdivisions=3)
    assert images_per_iteration(c3) == 63
    assert current_batch(630, c3) == 10
    # time_steps multiply net.batch
    assert images_per_iteration(cfg(batch=64, subdivisions=16, time_steps=2)) == 128
    assert update_batch(c, gpu=False) == 64
    # GPU: * subdivisions / sequential_subdivisions
    assert update_batch(cfg(batch=64, subdivisions=16, sequential_subdivisions=4)) == 256
    assert update_batch(cfg(batch=64, subdivisions=16, sequential_subdivisions=16)) == 64
    # batch < subdivisions: Darknet's net.batch 0 is raised to time_steps (at least 1)
    assert images_per_iteration(cfg(batch=2, subdivisions=4)) == 4
    assert images_per_iteration(cfg(batch=2, subdivisions=4, time_steps=3)) == 12


def test_track_batch_arithmetic_of_the_occlusion_cfg():
    """yolov3-tiny_occlusion_track.cfg: batch=8 subdivisions=4 time_steps=20."""
    c = cfg(batch=8, subdivisions=4, time_steps=20, track=1, sequential_subdivisions=4)
    assert c.mini_batch == 2            # detector.c: args.mini_batch = net.batch / time_steps
    assert c.net_batch == 40            # parse_net_options: batch / subdivs * time_steps
    assert images_per_iteration(c) == 160      # imgs, the "images" count and seen per iteration
    check_sequences(c)


def test_sequential_subdivisions_schedule():
    # get_current_seq_subdivisions: times seq_scales[i] for steps[i] <= batch_num, int after
    # each product, within [1, subdivisions]
    c = cfg(subdivisions=16, sequential_subdivisions=8, policy="steps", steps=[100, 200, 300],
            scales=[1, 1, 1], seq_scales=[0.5, 0.75, 0.1], track=1, max_batches=1000)
    assert [seq_subdivisions(c, b) for b in (0, 99, 100, 199, 200, 300)] == [8, 8, 4, 4, 3, 1]
    assert seq_subdivisions(cfg(sequential_subdivisions=8, steps=[1], seq_scales=[4.0]), 5) == 16
    # the loader: the first iteration's images with the cfg's value (0: subdivisions), those of
    # iteration i + 1 with the value at batch i - 1 (set after the previous load was taken)
    assert loader_seq_subdivisions(c, 0) == 8
    assert loader_seq_subdivisions(cfg(sequential_subdivisions=0), 0) == 16
    assert [loader_seq_subdivisions(c, i) for i in (100, 101, 201, 301)] == [8, 4, 3, 1]


def test_check_sequences_names_the_cfg_line():
    bad = cfg(subdivisions=4, sequential_subdivisions=3, track=1, file="t.cfg", line=1)
    with pytest.raises(CfgError, match=r"^t\.cfg:1: track=1: sequential_subdivisions=3 does not "
                                       r"divide subdivisions=4"):
        check_sequences(bad)
    bad.track = 0
    check_sequences(bad)                # without track the loader does not make sequences
    later = cfg(subdivisions=16, sequential_subdivisions=8, policy="steps", steps=[100, 200],
                scales=[1, 1], seq_scales=[0.5, 0.75], track=1, max_batches=1000)
    with pytest.raises(CfgError, match=r"=3 \(from iteration 202 on"):
        check_sequences(later)
    check_sequences(later, max_batches=201)      # -max_batches stops before it
    with pytest.raises(CfgError, match="must be >= 0"):
        check_sequences(cfg(sequential_subdivisions=-1, track=1))


def test_yolov4_tiny_cfg_schedule():
    from darknet_py.formats.cfg import read_cfg
    from darknet_py.formats.netconfig import find_net_section
    path = require(REFDATA / "cfg" / "darknet" / "yolov4-tiny.cfg")
    net = NetConfig.from_section(find_net_section(read_cfg(str(path)), str(path)))
    assert (net.policy, net.burn_in, net.steps) == ("steps", 1000, [1600000, 1800000])
    assert learning_rate(net, 0) == 0.0
    assert learning_rate(net, 1000) == pytest.approx(0.00261, rel=1e-6)
    assert learning_rate(net, 2000000) == pytest.approx(0.0000261, rel=1e-6)
    # the iteration of a seen counter: batch 64 per iteration
    assert current_batch(64 * 1500, net) == 1500


def test_short_run_warning_only_for_a_run_inside_burn_in():
    c = cfg(policy="constant", learning_rate=0.001, burn_in=1000, max_batches=2)
    assert short_run_warning(c, 0, "long.cfg") == (
        "max_batches=2 ends before burn_in=1000 does: the learning rate stays below 1.6e-14 "
        "for the whole run (learning_rate=0.001); lower burn_in in long.cfg for a short run")
    assert short_run_warning(cfg(burn_in=1000, max_batches=1000), 0, "c.cfg") is None
    assert short_run_warning(cfg(burn_in=0, max_batches=2), 0, "c.cfg") is None
    # a resume past max_batches trains nothing: nothing to warn about
    assert short_run_warning(c, 2, "long.cfg") is None
    assert short_run_warning(c, 1, "long.cfg") is not None
