"""The network ``detector train`` trains: built from the cfg and checked against obj.data, its
start weights, its place on the device, and the DDP wrapper of a multi-process run.

* :func:`build_network`: what Darknet would reject or train wrongly is a one-line error before
  any file is touched (``batch=1``, no detection layer, classes differing from obj.data, track=1
  sequences straddling forward passes); what darknet-py trains differently is a warning.
* :func:`load_start_weights`: a whole file, or a partial one (``yolov4.conv.137``, written by
  ``partial``) that Darknet loads silently up to where it ends (:func:`partial_cutoff`).
* :func:`place_network`: the device, the batch-norm momentum of the Darknet build for it, and
  the precision's memory layout (:meth:`~darknet_py.train.precision.Precision.prepare`).
* :func:`distributed_model`: ``DistributedDataParallel`` over :class:`RawHeads`.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable, Optional

import torch

from ..errors import DataError, UsageError
from ..formats.weights import WeightsHeader
from ..layers.convolutional import BN_MOMENTUM_CPU, BN_MOMENTUM_GPU
from ..model.network import Network
from .options import training_warning
from .schedule import check_sequences

__all__ = ["build_network", "load_start_weights", "partial_cutoff", "place_network",
           "RawHeads", "distributed_model"]


def build_network(cfg_path: str, data_cfg, data_path: str, max_batches: Optional[int] = None,
                  warn: bool = True) -> Network:
    """The network of ``cfg_path`` checked for training with ``data_cfg`` (read from
    ``data_path``); ``max_batches`` overrides the cfg's; ``warn``: say (once, rank 0) what of this
    cfg darknet-py does not train as Darknet."""
    net = Network.from_cfg(cfg_path)
    cfgc = net.config
    if max_batches is not None:
        cfgc.max_batches = max_batches
    check_sequences(cfgc)       # track=1: sequences that would straddle forward passes
    if cfgc.batch * cfgc.subdivisions == 1 and cfgc.batch == 1:
        raise UsageError("batch=1 cannot train: set batch=64 subdivisions=16 (or similar) in "
                         f"{cfg_path}")
    if not net.heads:
        raise UsageError(f"{cfg_path} has no detection layer ([yolo], [Gaussian_yolo] or "
                         "[region]) to train")
    classes = net.heads[-1].classes
    data_classes = data_cfg.classes_or_default(classes)
    if data_classes != classes:
        raise DataError(f"classes={data_classes} in {data_path} but classes={classes} in the "
                        f"last detection layer of {cfg_path}", file=data_path)
    warning = training_warning(net) if warn else None
    if warning:
        warnings.warn(warning, stacklevel=2)
    return net


def load_start_weights(net: Network, path: str, log: Callable[[str], None]) -> None:
    """Load ``path`` (whole or partial) into ``net`` and say so as Darknet does."""
    rep = net.load_weights(path, cutoff=partial_cutoff(net, path))
    log(f"Loaded {rep.layers_loaded} layers from weights-file {path}, seen {rep.header.seen}")


def partial_cutoff(net: Network, path: str) -> Optional[int]:
    """Darknet loads a partial file (yolov4.conv.137) silently: the index of the first layer past
    the weights of ``path`` when they end at a layer boundary (for a whole file: past the last
    layer with weights), else ``None`` (:meth:`Network.load_weights` then says where it does not
    fit)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header = WeightsHeader.unpack(f.read(24), path)
    floats = (size - header.nbytes) // 4
    total = 0
    for layer in net.layers:
        if floats == total:
            return layer.index
        total += layer.num_weight_floats()
    return None


def place_network(net: Network, device: torch.device, precision) -> None:
    """Move ``net`` to ``device`` and into ``precision``'s layout, with the batch-norm momentum
    of the Darknet build for that device."""
    net.to(device)
    # BN rolling statistics move like the Darknet build for this device: 0.1 in its CPU
    # path, 0.01 (cuDNN's exponentialAverageFactor) on GPU
    for layer in net.layers:
        if hasattr(layer, "bn_momentum"):
            layer.bn_momentum = BN_MOMENTUM_GPU if device.type == "cuda" else BN_MOMENTUM_CPU
    precision.prepare(net)


class RawHeads(torch.nn.Module):
    """Wraps the network so DDP's forward returns the raw head inputs."""

    def __init__(self, net: Network):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x, raw_heads=True)


def distributed_model(net: Network, device: torch.device, stops=None) -> torch.nn.Module:
    """``net`` under ``DistributedDataParallel``; ``stops`` (the cfg's
    :class:`~darknet_py.train.freeze.BackwardStops`): layers cut off by stopbackward get no
    gradient, so DDP must not wait for theirs."""
    return torch.nn.parallel.DistributedDataParallel(
        RawHeads(net), device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=stops is not None)
