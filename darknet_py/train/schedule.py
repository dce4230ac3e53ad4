"""Darknet's learning-rate schedule: ``get_current_rate`` and ``get_current_batch`` (``network.c``).

The rate is computed the way Darknet's C code computes it: the cfg values are ``float``s, the
``pow``/``exp``/``cos`` calls run in double precision and the result is returned as a ``float``,
so :func:`learning_rate` reproduces Darknet's numbers to the last bit in ordinary cases.

Policies (``[net] policy=``): ``constant``, ``step`` (``step``, ``scale``), ``steps`` (``steps``,
``scales``), ``exp`` (``gamma``), ``poly`` (``power``, ``max_batches``), ``sigmoid`` (written
``sig`` in :class:`~darknet_py.formats.netconfig.NetConfig`; ``gamma``, ``step``), ``random`` (``power``)
and ``sgdr`` (``learning_rate_min``, ``sgdr_cycle``, ``sgdr_mult``). Every policy is preceded by the
``burn_in`` warm-up ``learning_rate * (batch_num / burn_in) ** power``.
"""
from __future__ import annotations

import math
import random as _random
from typing import Callable, Optional

import numpy as np

from ..errors import CfgError
from ..formats.netconfig import NetConfig

__all__ = ["images_per_iteration", "current_batch", "learning_rate", "update_batch",
           "seq_subdivisions", "loader_seq_subdivisions", "check_sequences",
           "short_run_warning"]


def _f32(v: float) -> float:
    """Round to float32 (Darknet keeps every cfg number and the returned rate in a ``float``)."""
    return float(np.float32(v))


def images_per_iteration(cfg: NetConfig) -> int:
    """``net.batch * net.subdivisions``: images consumed by one iteration (``seen`` increment).

    Darknet's ``net.batch`` is ``batch / subdivisions`` (integer division, at least 1) times
    ``time_steps`` (:attr:`NetConfig.net_batch`).
    """
    return cfg.net_batch * max(1, int(cfg.subdivisions))


def update_batch(cfg: NetConfig, gpu: bool = True) -> int:
    """The ``batch`` that ``update_network`` passes to the layers' update functions.

    CPU: ``net.batch * net.subdivisions``; the GPU build also multiplies by
    ``get_sequence_value`` (``subdivisions / sequential_subdivisions``, at least 1).
    """
    n = images_per_iteration(cfg)
    if gpu:
        seq_sub = int(getattr(cfg, "sequential_subdivisions", 0) or 0)
        sequence = max(1, int(cfg.subdivisions) // seq_sub) if seq_sub else 1
        n *= sequence
    return n


def seq_subdivisions(cfg: NetConfig, batch_num: int) -> int:
    """``get_current_seq_subdivisions``: ``sequential_subdivisions`` times each ``seq_scales``
    entry whose step is ``<= batch_num`` (truncated to an int after each product, as Darknet's
    ``int *= float``), kept within ``[1, subdivisions]``."""
    value = int(cfg.sequential_subdivisions)
    for step, scale in zip(cfg.steps, cfg.seq_scales):
        if int(step) > batch_num:
            break
        value = int(value * np.float32(scale))
    return min(max(value, 1), max(1, int(cfg.subdivisions)))


def loader_seq_subdivisions(cfg: NetConfig, iteration: int) -> int:
    """How many loader chunks (Darknet's ``args.threads`` with ``track=1``) make the images of
    the iteration that follows ``iteration`` finished ones.

    ``train_detector`` loads the first iteration's images with the cfg's
    ``sequential_subdivisions`` (``subdivisions`` when it is 0) and every later one while the
    previous iteration trains, after setting the value from ``get_current_batch`` at that time:
    the images of iteration ``i + 1`` (``i >= 1``) use :func:`seq_subdivisions` of ``i - 1``.
    """
    if iteration <= 0:
        first = int(cfg.sequential_subdivisions)
        return first if first > 0 else max(1, int(cfg.subdivisions))
    return seq_subdivisions(cfg, iteration - 1)


def check_sequences(cfg: NetConfig, max_batches: Optional[int] = None) -> None:
    """``track=1``: raise a one-line :class:`~darknet_py.errors.CfgError` when the loader could
    not make whole sequences for some iteration up to ``max_batches`` (default: the cfg's).

    Each of Darknet's ``sequential_subdivisions`` loader chunks holds ``batch/subdivisions``
    sequences; unless the number of chunks divides ``subdivisions`` a chunk ends in the middle
    of a forward pass and that pass gets a broken step-major layout (Darknet does not check and
    trains the recurrent layers on frames of unrelated sequences).
    """
    if not cfg.track:
        return
    if cfg.sequential_subdivisions < 0:
        raise CfgError(f"sequential_subdivisions={cfg.sequential_subdivisions} must be >= 0",
                       file=cfg.file, line=cfg.line)
    last = int(cfg.max_batches if max_batches is None else max_batches)
    subdivisions = max(1, int(cfg.subdivisions))
    # the value changes only after a step of seq_scales: check the first iteration and those
    for finished in [0] + sorted({int(s) + 1 for s in cfg.steps[:len(cfg.seq_scales)]}):
        if finished > 0 and finished >= last:
            continue
        threads = loader_seq_subdivisions(cfg, finished)
        if subdivisions % threads:
            when = "" if finished == 0 else \
                f" (from iteration {finished + 1} on, after seq_scales)"
            raise CfgError(f"track=1: sequential_subdivisions={threads}{when} does not divide "
                           f"subdivisions={subdivisions}, so the loader's sequences would "
                           "straddle forward passes; use a divisor of subdivisions",
                           file=cfg.file, line=cfg.line)


def short_run_warning(cfg: NetConfig, start_iteration: int, cfg_path: str) -> Optional[str]:
    """The warning for a run from ``start_iteration`` that ends (``max_batches``) before the
    ``burn_in`` warm-up does, or ``None``: a short trial on a cfg made for a long run barely
    moves the weights; it names the highest rate the run reaches."""
    if not 0 < start_iteration + 1 <= cfg.max_batches < cfg.burn_in:
        return None
    return (f"max_batches={cfg.max_batches} ends before burn_in={cfg.burn_in} does: the learning "
            f"rate stays below {learning_rate(cfg, cfg.max_batches):.6g} for the whole run "
            f"(learning_rate={cfg.learning_rate:g}); lower burn_in in {cfg_path} for a short run")


def current_batch(seen: int, cfg: NetConfig) -> int:
    """``get_current_batch``: the iteration number, ``seen / (net.batch * net.subdivisions)``."""
    return int(seen) // images_per_iteration(cfg)


def learning_rate(cfg: NetConfig, batch_num: int,
                  uniform: Optional[Callable[[], float]] = None) -> float:
    """``get_current_rate`` for iteration ``batch_num`` (see :func:`current_batch`).

    ``uniform`` draws from U(0, 1) for ``policy=random`` (default: Python's ``random.random``;
    Darknet uses ``rand()``, so that policy is random in both and cannot match draw for draw).
    """
    b = int(batch_num)
    lr = _f32(cfg.learning_rate)
    power = _f32(cfg.power)
    burn_in = int(cfg.burn_in)
    if b < burn_in:
        frac = _f32(np.float32(b) / np.float32(burn_in))
        return _f32(lr * math.pow(frac, power))
    policy = str(cfg.policy).lower()
    if policy == "constant":
        return lr
    if policy == "step":
        step = max(1, int(cfg.step))  # Darknet would divide by zero; step >= 1 in practice
        return _f32(lr * math.pow(_f32(cfg.scale), b // step))
    if policy == "steps":
        rate = np.float32(lr)
        for step, scale in zip(cfg.steps, cfg.scales):
            if int(step) > b:
                return float(rate)
            rate = np.float32(rate * np.float32(scale))
        return float(rate)
    if policy == "exp":
        return _f32(lr * math.pow(_f32(cfg.gamma), b))
    if policy == "poly":
        frac = _f32(np.float32(1) - np.float32(b) / np.float32(cfg.max_batches))
        return _f32(lr * _pow(frac, power))
    if policy == "random":
        u = (uniform or _random.random)()
        return _f32(lr * math.pow(u, power))
    if policy in ("sig", "sigmoid"):
        z = float(np.float32(_f32(cfg.gamma)) * np.float32(b - int(cfg.step)))
        return _f32(lr * (1.0 / (1.0 + _exp(z))))
    if policy == "sgdr":
        last_start = 0
        cycle = int(cfg.sgdr_cycle)
        mult = int(cfg.sgdr_mult)
        while last_start + cycle < b:
            last_start += cycle
            cycle *= mult
            if cycle <= 0:  # Darknet would loop forever on sgdr_cycle=0
                break
        lr_min = _f32(cfg.learning_rate_min)
        phase = float(np.float32(b - last_start)) * 3.14159265 / cycle if cycle else 0.0
        span = _f32(np.float32(lr) - np.float32(lr_min))  # float - float in C
        return _f32(lr_min + 0.5 * span * (1.0 + math.cos(phase)))
    # Darknet: "Policy is weird!" -> the base rate
    return lr


def _pow(base: float, exponent: float) -> float:
    """C ``pow`` semantics for the cases Python's ``math.pow`` rejects (negative base)."""
    try:
        return math.pow(base, exponent)
    except ValueError:
        return float("nan")


def _exp(z: float) -> float:
    try:
        return math.exp(z)
    except OverflowError:
        return float("inf")
