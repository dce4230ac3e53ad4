"""The network's training loss: the sum of what its detection heads compute.

Each head owns its delta (:meth:`darknet_py.layers.head.DetectionHead.loss`: ``[yolo]`` in
:mod:`darknet_py.layers.yolo`, ``[Gaussian_yolo]`` in :mod:`darknet_py.layers.gaussian_yolo`,
``[region]`` in :mod:`darknet_py.layers.region`). Darknet adds every head's delta in full, so the
trainer back-propagates the **sum** of their costs; what Darknet *reports* is their mean
(:func:`network_cost`, ``get_network_cost``).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ["network_cost", "heads_loss"]


def heads_loss(heads: Sequence, raws: Sequence[torch.Tensor],
               truth: Union[torch.Tensor, np.ndarray], net_w: int, net_h: int, seen: int = 0
               ) -> Tuple[torch.Tensor, List[torch.Tensor], List[Tuple[int, object]]]:
    """Every head's loss on its raw input (``net(x, raw_heads=True)``): ``(total, costs,
    [(layer index, stats)])``; ``total`` (the sum of the costs) is what to back-propagate.
    ``seen`` is Darknet's ``*net.seen`` during this forward (``[region]`` uses it)."""
    costs, stats = [], []
    for head, raw in zip(heads, raws):
        cost, st, _ = head.loss(raw.float(), truth, net_w, net_h, seen)
        costs.append(cost)
        stats.append((head.index, st))
    return torch.stack(costs).sum(), costs, stats


def network_cost(layer_costs: Sequence[Union[float, torch.Tensor]]) -> float:
    """``get_network_cost``: the mean of the heads' ``l.cost``.

    ``detector train`` prints, per iteration, the mean of this over the subdivisions divided by
    the images per forward (``train_network``: ``sum / (subdivisions * net.batch)``).
    """
    vals = [float(c.detach()) if torch.is_tensor(c) else float(c) for c in layer_costs]
    return sum(vals) / len(vals) if vals else 0.0
