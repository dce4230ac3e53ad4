"""``stopbackward`` and ``onlyforward``: where Darknet's backward pass stops or skips a layer.

Mirrors Darknet's GPU build (``backward_network_gpu`` in ``network_kernels.cu``, the
``last_stop_backward`` pass of ``parse_network_cfg_custom`` and ``update_network_gpu``):

* the backward loop runs from the last layer down and ``break``\\ s at a layer with
  ``stopbackward == 1``, or with ``stopbackward = N > get_current_iteration`` (the iterations
  already completed, i.e. iterations 1..N of the run are frozen). That layer and every layer
  below it get no gradient, whatever routes lead back to them. They are still *updated* with an
  empty gradient: weight decay and momentum move their weights, as ``update_network_gpu`` updates
  every layer with ``l.train``;
* with ``stopbackward=1`` the layers below the last such layer are built with ``train=0``: their
  convolutions run batch norm in inference mode (rolling statistics, not updated;
  ``forward_convolutional_layer_gpu``: ``if (l.train == 0) state.train = 0``) and they are never
  updated, not even by decay (``if (l.train == 0) continue``);
* ``onlyforward=1``: the loop skips the layer's backward, so nothing reaches its inputs through
  it, and its own parameters (a conv's) get an empty gradient (still updated).

In autograd terms: the outputs of the layers cut off are detached (a forward hook), and before
the update the parameters Darknet updates without a gradient get a zero one, so
:class:`~darknet_py.train.optim.DarknetSGD` applies the decay and momentum Darknet applies. (The
CPU build's ``backward_network`` breaks at any non-zero ``stopbackward``, whatever the iteration;
darknet-py trains like the GPU build, as elsewhere.)
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple

import torch

from ..layers.convolutional import ConvolutionalLayer

__all__ = ["BackwardStops", "layer_consumers", "reaching"]


def layer_consumers(net) -> Dict[int, List[int]]:
    """Layer index -> the layers that read its output (the previous layer or ``inputs=``)."""
    consumers: Dict[int, List[int]] = {int(l.index): [] for l in net.layers}
    for layer in net.layers:
        srcs = set(int(i) for i in layer.inputs)
        if layer.uses_previous and layer.index > 0:
            srcs.add(int(layer.index) - 1)
        for i in srcs:
            consumers[i].append(int(layer.index))
    return consumers


def reaching(net, targets: Iterable[int],
             passes: Callable[[int], bool] = lambda i: True) -> List[bool]:
    """Per layer: does its output reach one of ``targets`` (which reach themselves), through
    layers for which ``passes(index)`` holds? (What a gradient from the targets can reach.)"""
    consumers = layer_consumers(net)
    hit = [False] * len(net.layers)
    for t in targets:
        hit[t] = True
    for i in range(len(net.layers) - 1, -1, -1):          # consumers always come later
        if not hit[i] and passes(i) and any(hit[j] for j in consumers[i]):
            hit[i] = True
    return hit


class BackwardStops:
    """The ``stopbackward`` / ``onlyforward`` layers of a network and what they cut off.

    :meth:`for_network` gives ``None`` when the cfg has neither. Per iteration:
    :meth:`begin_iteration` (before the forward passes, with the number of completed
    iterations), then :meth:`before_step` (after the backward passes, before the update).
    """

    def __init__(self, net, stops: List[Tuple[int, int]], onlyforward: List[int]):
        self.net = net
        #: (layer index, stopbackward value), value != 0
        self.stops = stops
        self.onlyforward = onlyforward
        #: Darknet's last_stop_backward: the layers below it are built with train=0
        ones = [i for i, v in stops if v == 1]
        self.train0_below = max(ones) if ones else 0
        #: layers whose output is detached in this iteration
        self.detached: Set[int] = set(onlyforward)
        #: the highest layer no gradient reaches in this iteration (-1: none)
        self.cut = -1
        # layers a head's gradient reaches only through an onlyforward layer (those included):
        # Darknet runs their backward with an empty delta, so they are updated (decay)
        heads = [int(l.index) for l in net.layers if l.is_head]
        full = reaching(net, heads)
        only = set(onlyforward)
        clean = reaching(net, heads, passes=lambda i: i not in only)
        self.behind_onlyforward = {i for i in range(len(full)) if full[i] and not clean[i]}
        self._hooks = [layer.register_forward_hook(self._hook) for layer in net.layers
                       if not layer.is_head]

    @classmethod
    def for_network(cls, net) -> Optional["BackwardStops"]:
        stops = [(int(l.index), int(l.stopbackward)) for l in net.layers
                 if getattr(l, "stopbackward", 0)]
        only = [int(l.index) for l in net.layers
                if l.section is not None and l.section.int("onlyforward", 0)]
        if not stops and not only:
            return None
        return cls(net, stops, only)

    def _hook(self, layer, args, output):
        if layer.index in self.detached and isinstance(output, torch.Tensor):
            return output.detach()
        return None

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def frozen_through(self, completed: int) -> int:
        """The layer the backward loop breaks at when ``completed`` iterations are done (-1:
        it runs down to layer 0)."""
        active = [i for i, v in self.stops if v == 1 or v > completed]
        return max(active) if active else -1

    def begin_iteration(self, completed: int) -> None:
        """Cut the graph for the iteration after ``completed`` ones; put the ``train=0`` convs
        in inference mode (again: an evaluation in between switches the network back)."""
        self.cut = self.frozen_through(completed)
        self.detached = set(self.onlyforward) | set(range(self.cut + 1))
        for layer in self.net.layers:
            if layer.index < self.train0_below and isinstance(layer, ConvolutionalLayer):
                layer.eval()

    @torch.no_grad()
    def before_step(self) -> None:
        """Zero gradients for the parameters Darknet updates with an empty gradient: the layers
        cut off by a stopbackward or an onlyforward layer, except the ``train=0`` ones (which it
        does not update at all). Layers no head's gradient reaches anyway (a [contrastive]
        branch) are left alone."""
        for layer in self.net.layers:
            i = layer.index
            if i < self.train0_below or not (i <= self.cut or i in self.behind_onlyforward):
                continue
            for p in layer.parameters(recurse=True):
                if p.requires_grad and p.grad is None:
                    p.grad = torch.zeros_like(p)
