"""``[net] ema_alpha``: Darknet's exponential moving average of the conv weights.

Mirrors, from AlexeyAB's ``network.c`` and ``detector.c``:

* ``train_network_waitkey`` (both builds, after ``update_network[_gpu]`` and the iteration
  increment): with ``ema_alpha != 0`` and ``iteration >= max_batches / 2`` (integer division),

  - ``is_ema_initialized`` false: ``ema_update(net, 0)`` copies the weights ("EMA
    initialization");
  - then, at ``iteration == max_batches - 1000``: ``ema_apply`` (the weights *become* the
    average; training goes on from there, the average is no longer touched);
  - or, at ``iteration < max_batches - 1000``: ``ema_update(net, ema_alpha)``;

  so the first iteration both initialises and updates (a no-op up to rounding), and with
  ``max_batches < 2000`` the apply point lies before the start: the average is the weights of
  iteration ``max_batches / 2``, never updated nor applied. (``ema_period`` is computed there but
  unused.)
* ``ema_update``: ``ema = alpha * ema + (1 - alpha) * w`` in float32, for the weights, biases and
  BN scales of every ``[convolutional]`` layer that owns them (``weights_ema``/``biases_ema``/
  ``scales_ema`` are allocated only for non-shared convs of a training network). Rolling mean and
  variance are not averaged; other layer types ([connected], [shortcut] weights, ...) have no
  average.
* ``ema_apply``: weights, biases and scales := their averages ("BN rolling mean/var
  recalculation is required", says Darknet's comment; it does not do one, neither do we).
* ``train_detector``: each time ``<cfg>_last.weights`` is written and the average is
  initialised, ``save_weights_upto(net, "<cfg>_ema.weights", net.n, 1)`` writes the same file
  with each owning conv's averages in place of its biases, scales and weights
  (``save_convolutional_weights_ema``: current rolling mean/variance) and every other layer as
  is. Numbered, ``_best``, ``_final`` files and the ``-map`` evaluation use the trained weights
  (``copy_weights_net``), never the average.

Convs below a ``stopbackward=1`` are built with ``train=0`` and get no ``*_ema`` arrays: they are
not averaged (their weights never change anyway). Darknet's ``save_convolutional_weights_ema``
would write such a layer from its NULL arrays (the ``-frozen`` cfgs set ``ema_alpha``); darknet-py
writes the layer's own weights there.

The average is not stored in any file Darknet reads back, so a resumed run starts a new one at
its first iteration past ``max_batches / 2``; so does darknet-py. ``is_ema_initialized`` looks
for a non-zero averaged weight; we keep a flag (the same unless every conv weight is exactly 0).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch

from ..layers.convolutional import ConvolutionalLayer

__all__ = ["WeightsEMA"]


class WeightsEMA:
    """The average of one network's conv weights, following Darknet's schedule (module doc).

    ``WeightsEMA.for_network(net)`` gives ``None`` when the cfg sets no ``ema_alpha``. Call
    :meth:`after_update` once per iteration right after the optimizer step, with the iteration
    number Darknet's ``cur_iteration`` has then; :meth:`save` writes ``<cfg>_ema.weights``.
    """

    def __init__(self, net, alpha: float, max_batches: int, train0_below: int = 0):
        self.net = net
        #: Darknet reads ema_alpha into a float; the update runs in float32 arithmetic
        self.alpha = np.float32(alpha)
        self.start_point = int(max_batches) // 2
        self.apply_point = int(max_batches) - 1000
        self.initialized = False
        self.applied = False
        #: (parameter, its average) for every parameter Darknet averages; the averages exist
        #: from the initialisation on (Darknet allocates them zeroed at start-up)
        self.params: List[torch.nn.Parameter] = _averaged_parameters(net, train0_below)
        self.averages: List[torch.Tensor] = []

    @classmethod
    def for_network(cls, net, train0_below: int = 0) -> Optional["WeightsEMA"]:
        """``train0_below``: the layers below it are built with ``train=0`` (``stopbackward=1``,
        :class:`~darknet_py.train.freeze.BackwardStops`) and have no average."""
        alpha = float(net.config.ema_alpha)
        if alpha == 0:
            return None
        return cls(net, alpha, net.config.max_batches, train0_below)

    # ------------------------------------------------------------------ Darknet's functions
    @torch.no_grad()
    def update(self, alpha: np.float32) -> None:
        """``ema_update(net, alpha)``; ``alpha = 0`` copies the weights (the initialisation)."""
        a = np.float32(alpha)
        if not self.averages:
            self.averages = [p.detach().clone() for p in self.params]
            if a == 0:
                return
        b = np.float32(1) - a                 # (1 - ema_alpha) in float, as the C code
        for p, avg in zip(self.params, self.averages):
            # two products, then the sum: each rounded to float32 as Darknet's loop does
            avg.mul_(float(a)).add_(p.detach() * float(b))

    @torch.no_grad()
    def apply(self) -> None:
        """``ema_apply``: the weights, biases and scales take their averages."""
        for p, avg in zip(self.params, self.averages):
            p.copy_(avg)
        self.applied = True

    def after_update(self, iteration: int) -> List[str]:
        """The EMA block of ``train_network_waitkey`` for the iteration that was just trained
        (``*net.cur_iteration`` after its increment); returns Darknet's printed lines."""
        lines: List[str] = []
        if iteration < self.start_point:
            return lines
        if not self.initialized:
            self.update(np.float32(0))
            self.initialized = True
            lines.append(" EMA initialization ")
        if iteration == self.apply_point:
            self.apply()
            lines.append(" ema_apply() ")
        elif iteration < self.apply_point:
            self.update(self.alpha)
            lines.append(f" ema_update(), ema_alpha = {float(self.alpha):f} ")
        return lines

    # ------------------------------------------------------------------ saving
    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The network holds the averages inside the block (its own values come back after):
        what ``save_convolutional_weights_ema`` writes instead of the trained ones."""
        if not self.initialized:
            raise RuntimeError("the EMA is not initialised yet")
        saved: List[Tuple[torch.nn.Parameter, torch.Tensor]] = []
        try:
            with torch.no_grad():
                for p, avg in zip(self.params, self.averages):
                    saved.append((p, p.data))
                    p.data = avg
            yield
        finally:
            with torch.no_grad():
                for p, data in saved:
                    p.data = data

    def save(self, path: str) -> None:
        """Write ``<cfg>_ema.weights`` (``save_weights_upto(..., save_ema=1)``) with the
        network's header and ``seen``."""
        with self.swapped_in():
            self.net.save_weights(path)

    def first_nonfinite_layer(self) -> Optional[int]:
        """Index of the first layer whose average holds NaN/inf, else ``None``."""
        for p, avg in zip(self.params, self.averages):
            if not bool(torch.isfinite(avg).all()):
                return self._layer_of(p)
        return None

    def _layer_of(self, param: torch.nn.Parameter) -> int:
        for layer in self.net.layers:
            if any(q is param for q in layer.parameters(recurse=False)):
                return int(layer.index)
        return -1


def _averaged_parameters(net, train0_below: int = 0) -> List[torch.nn.Parameter]:
    """Weights, biases and BN scales of every top-level ``[convolutional]`` that owns them: the
    layers Darknet allocates ``*_ema`` arrays for (a ``share_index`` conv has none, nor has a
    conv built with ``train=0`` below a ``stopbackward=1``, and the convs inside [crnn] & co. are
    not of type CONVOLUTIONAL in ``ema_update``'s loop)."""
    out: List[torch.nn.Parameter] = []
    for layer in net.layers:
        if not isinstance(layer, ConvolutionalLayer) or layer.share_layer is not None \
                or layer.index < train0_below:
            continue
        out.append(layer.weight)
        out.append(layer.bias)
        if layer.batch_normalize:
            out.append(layer.scales)
    return out
