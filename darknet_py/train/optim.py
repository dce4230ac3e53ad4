"""Darknet's parameter update (``update_network`` -> ``update_convolutional_layer`` & co.).

Darknet keeps, per parameter array, an ``*_updates`` buffer. Backward *adds* this iteration's
``-dLoss/dparam`` (summed over every image of the iteration, all subdivisions) to it, then
``update_network`` does, with ``batch = net.batch * net.subdivisions`` (:func:`update_batch`)::

    weight_updates += -decay * batch * weights          # weights only (conv / connected)
    weights        += lr / batch * weight_updates
    weight_updates *= momentum                          # carried into the next iteration

    biases += lr / batch * bias_updates;  bias_updates *= momentum     # no decay
    scales += lr / batch * scale_updates; scale_updates *= momentum    # no decay (BN)

where ``lr = get_current_rate(net) * l.learning_rate_scale`` (the layer's ``learning_rate=``).
So it is SGD with momentum on the *sum* of the gradients, L2 decay only on weights, and the
momentum buffer holds the (decayed) step direction. :class:`DarknetSGD` reproduces exactly that
from PyTorch gradients (``grad = -updates``), including these details of Darknet's GPU build,
which is what people train with:

* ``fix_nan=True`` (default): before the update, NaN/inf entries of the weights' update buffer
  are set to 0 and NaN/inf weights to ``1 / (index + 1)`` (``reset_nan_and_inf`` /
  ``fix_nan_and_inf`` in ``update_convolutional_layer_gpu``; the CPU build does neither);
* a per-group ``clip`` constrains weights to ``[-clip, clip]`` after the update (conv ``clip=``);
* ``adam=1`` ([net] ``adam``): ``adam_update_gpu`` (decay on every parameter, no momentum
  buffer, the rate not divided by ``batch``, bias correction with ``t = current batch``);
* per-group ``dont_update`` / ``burnin_update`` / ``train_only_bn`` (``update_network_gpu``).

Deliberate difference: Darknet's mixed-precision ``loss_scale`` divides the rate by the same
factor the gradients were multiplied by; with real gradients that cancels out and is left out.
Batch-norm biases *are* updated as on the GPU (cuDNN computes their gradient); Darknet's CPU build
never fills ``bias_updates`` of batch-normalised conv layers, so its biases stay frozen there.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

import numpy as np
import torch

from .schedule import learning_rate, update_batch

__all__ = ["DarknetSGD", "darknet_param_groups"]


class DarknetSGD(torch.optim.Optimizer):
    """Darknet's update rule as a ``torch.optim.Optimizer``.

    ``DarknetSGD(net, net.config)`` groups a :class:`~darknet_py.model.network.Network` the Darknet
    way (:func:`darknet_param_groups`) and follows the cfg's schedule: ``opt.step(iteration)``
    (optionally ``scaler=`` a ``GradScaler``) uses ``learning_rate(cfg, iteration)``.

    Args:
        params: a Network, parameters or param groups. Group keys (defaults in brackets):
            ``decay`` [True] whether weight decay applies (Darknet: weights yes, biases/scales no),
            ``lr_scale`` [1.0] the layer's ``learning_rate=`` multiplier,
            ``clip`` [0.0] constrain to ``[-clip, clip]`` after the update (0 = off),
            ``dont_update`` / ``burnin_update`` / ``train_only_bn`` [0] Darknet's layer flags.
        cfg: a :class:`~darknet_py.formats.netconfig.NetConfig`: defaults for everything below, and the
            schedule :meth:`rate` / ``step(iteration)`` use.
        lr: base rate, normally overwritten each iteration by ``step(lr=...)`` or the schedule.
        momentum, decay: ``[net] momentum`` / ``decay``.
        batch: ``update_batch`` (images per iteration, see :func:`~darknet_py.train.schedule.update_batch`).
        adam, B1, B2, eps: ``[net] adam`` and its constants.
        fix_nan: the GPU build's NaN/inf repair of weights and their updates (see module doc).
        gpu: use the GPU build's ``update_batch`` (times subdivisions/sequential_subdivisions).
        lr_multiplier: multiplies the scheduled rate (e.g. Darknet's ``learning_rate *= ngpus``).
    """

    def __init__(self, params: Iterable[Any], cfg: Any = None, *, lr: Optional[float] = None,
                 momentum: Optional[float] = None, decay: Optional[float] = None,
                 batch: Optional[int] = None, adam: Optional[bool] = None,
                 B1: Optional[float] = None, B2: Optional[float] = None,
                 eps: Optional[float] = None, fix_nan: bool = True, gpu: bool = True,
                 lr_multiplier: float = 1.0):
        # a Network instead of parameters: Darknet's grouping (decay on weights only, per-layer
        # learning_rate=, clip, dont_update, ...)
        if hasattr(params, "layers") and isinstance(params, torch.nn.Module):
            params = darknet_param_groups(params)
        #: the [net] options the schedule reads (None: give ``lr`` to every ``step``)
        self.cfg = cfg
        self.lr_multiplier = float(lr_multiplier)
        if cfg is not None:
            lr = float(cfg.learning_rate) if lr is None else lr
            momentum = float(cfg.momentum) if momentum is None else momentum
            decay = float(cfg.decay) if decay is None else decay
            batch = update_batch(cfg, gpu=gpu) if batch is None else batch
            adam = bool(getattr(cfg, "adam", 0)) if adam is None else adam
            B1 = float(getattr(cfg, "B1", 0.9)) if B1 is None else B1
            B2 = float(getattr(cfg, "B2", 0.999)) if B2 is None else B2
            eps = float(getattr(cfg, "eps", 0.000001)) if eps is None else eps
        lr = 0.001 if lr is None else lr
        momentum = 0.9 if momentum is None else momentum
        decay = 0.0005 if decay is None else decay
        batch = 1 if batch is None else int(batch)
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=decay, batch=batch,
                        adam=bool(adam), B1=0.9 if B1 is None else B1,
                        B2=0.999 if B2 is None else B2, eps=0.000001 if eps is None else eps,
                        fix_nan=fix_nan, decay=True, lr_scale=1.0, clip=0.0, dont_update=0,
                        burnin_update=0, train_only_bn=0)
        super().__init__(params, defaults)
        self.last_rate: Optional[float] = None

    @classmethod
    def from_config(cls, params: Iterable[Any], cfg: Any, gpu: bool = True,
                    fix_nan: bool = True) -> "DarknetSGD":
        """Build from a :class:`~darknet_py.formats.netconfig.NetConfig` (momentum, decay, batch, adam,
        and the learning-rate schedule used when ``step`` gets an iteration but no ``lr``)."""
        return cls(params, cfg, gpu=gpu, fix_nan=fix_nan)

    def rate(self, iteration: int) -> float:
        """``get_current_rate`` (times ``lr_multiplier``) for an iteration; needs ``cfg``."""
        if self.cfg is None:
            raise ValueError("DarknetSGD was built without a NetConfig: pass lr= to step()")
        return learning_rate(self.cfg, iteration) * self.lr_multiplier

    @torch.no_grad()
    def step(self, closure: Any = None, *, lr: Optional[float] = None,  # type: ignore[override]
             iteration: Optional[int] = None, burn_in: Optional[int] = None, scaler: Any = None):
        """One ``update_network``.

        Args:
            closure: a loss closure as for any optimizer, or the iteration number (an ``int``),
                so ``opt.step(iteration)`` works.
            lr: this iteration's rate; default ``get_current_rate`` of ``cfg`` at ``iteration``.
            iteration: the current batch number after this iteration's images were counted
                (Darknet's ``get_current_batch``): the rate, Adam's ``t``, the layer-flag checks.
            burn_in: ``[net] burn_in`` for ``burnin_update`` (default: ``cfg.burn_in``).
            scaler: a ``torch.amp.GradScaler``: gradients are unscaled, the step is skipped on
                inf/NaN (as the scaler does) and the scaler is updated.
        """
        if isinstance(closure, (int, np.integer)) and not isinstance(closure, bool):
            iteration, closure = int(closure), None
        if lr is None and self.cfg is not None and iteration is not None:
            lr = self.rate(iteration)
        if burn_in is None:
            burn_in = int(getattr(self.cfg, "burn_in", 0)) if self.cfg is not None else 0
        if scaler is not None and getattr(scaler, "is_enabled", lambda: False)():
            result = scaler.step(self, lr=lr, iteration=iteration, burn_in=burn_in)
            scaler.update()
            return result
        if lr is not None:
            self.last_rate = float(lr)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        it = int(iteration) if iteration is not None else None
        for group in self.param_groups:
            if lr is not None:
                group["lr"] = float(lr)
            if group["train_only_bn"]:
                continue
            if it is not None:
                if group["burnin_update"] and group["burnin_update"] * burn_in > it:
                    continue
                if not group["dont_update"] < it:
                    continue
            rate = group["lr"] * group["lr_scale"]
            batch = group["batch"]
            decay = group["weight_decay"]
            repair = group["fix_nan"] and group["decay"] and not _all_finite(group["params"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "updates" not in state:
                    state["updates"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                updates: torch.Tensor = state["updates"]
                updates.sub_(p.grad)  # Darknet's backward adds -dLoss/dparam
                if repair:
                    _reset_nan_inf_(updates)
                    _fix_nan_inf_weights_(p)
                if group["adam"]:
                    self._adam(p, updates, state, group, rate, batch, decay, it)
                else:
                    if group["decay"] and decay:
                        updates.add_(p, alpha=-decay * batch)
                    p.add_(updates, alpha=rate / batch)
                    updates.mul_(group["momentum"])
                if group["clip"] and group["decay"]:  # constrain_ongpu: weights only
                    p.clamp_(-group["clip"], group["clip"])
        return loss

    @staticmethod
    def _adam(p: torch.Tensor, updates: torch.Tensor, state: Dict[str, Any], group: Dict[str, Any],
              rate: float, batch: int, decay: float, it: Optional[int]) -> None:
        """``adam_update_gpu``: decay on every parameter; the update buffer is cleared after."""
        if "m" not in state:
            state["m"] = torch.zeros_like(p)
            state["v"] = torch.zeros_like(p)
            state["t"] = 0
        # Darknet passes t = get_current_batch (>= 1 once an iteration has been counted)
        t = max(1, it if it is not None else state["t"] + 1)
        state["t"] = t
        B1, B2, eps = group["B1"], group["B2"], group["eps"]
        m, v = state["m"], state["v"]
        m.mul_(B1)
        v.mul_(B2)
        if decay:
            updates.add_(p, alpha=-decay * batch)
        m.add_(updates, alpha=1 - B1)
        v.addcmul_(updates, updates, value=1 - B2)
        mhat = m / (1 - B1 ** t)
        vhat = v / (1 - B2 ** t)
        p.add_(rate * mhat / (vhat.sqrt() + eps))
        updates.zero_()


def _all_finite(params) -> bool:
    """One host sync for a whole group: are every parameter and its gradient finite?

    A sum is NaN/inf exactly when some element is (or it overflows, which also warrants the
    careful per-tensor path)."""
    sums = [t.sum() for p in params for t in (p, p.grad) if t is not None]
    return True if not sums else bool(torch.isfinite(torch.stack(sums)).all())


def _reset_nan_inf_(t: torch.Tensor) -> None:
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        t.masked_fill_(bad, 0.0)


def _fix_nan_inf_weights_(p: torch.Tensor) -> None:
    bad = ~torch.isfinite(p)
    if bool(bad.any()):
        idx = torch.arange(p.numel(), device=p.device, dtype=p.dtype).view_as(p)
        p.copy_(torch.where(bad, 1.0 / (idx + 1), p))


def darknet_param_groups(net: Any, frozen_before: Optional[int] = None) -> List[Dict[str, Any]]:
    """Param groups that update ``net`` the way Darknet does.

    Per layer: weights (parameters with more than one dimension) get weight decay; biases and
    batch-norm scales do not. ``lr_scale`` is the layer's ``learning_rate=``
    (``learning_rate_scale``); ``clip``, ``dont_update``, ``burnin_update`` and ``train_only_bn``
    come from the layer (Darknet propagates ``train_only_bn`` to every earlier layer).
    Layers with index < ``frozen_before`` (e.g. below a ``stopbackward``) are left out.
    """
    layers = list(getattr(net, "layers", []))
    # train_only_bn on layer k applies to layers 0..k (set_train_only_bn)
    only_bn_until = -1
    for layer in layers:
        if _layer_option(layer, "train_only_bn", "train_only_bn", 0):
            only_bn_until = max(only_bn_until, int(layer.index))
    groups: List[Dict[str, Any]] = []
    seen: set = set()
    for layer in layers:
        idx = int(getattr(layer, "index", 0))
        if frozen_before is not None and idx < frozen_before:
            continue
        common = dict(lr_scale=_layer_option(layer, "learning_rate_scale", "learning_rate", 1.0),
                      clip=_layer_option(layer, "clip", "clip", 0.0),
                      dont_update=int(_layer_option(layer, "dont_update", "dont_update", 0)),
                      burnin_update=int(_layer_option(layer, "burnin_update", "burnin_update", 0)),
                      train_only_bn=int(idx <= only_bn_until))
        decayed, plain = [], []
        for p in layer.parameters(recurse=True):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            (decayed if p.dim() > 1 else plain).append(p)
        if decayed:
            groups.append(dict(params=decayed, decay=True, layer=idx, **common))
        if plain:
            groups.append(dict(params=plain, decay=False, layer=idx, **common))
    return groups


def _layer_option(layer: Any, attr: str, key: str, default: float) -> float:
    """A layer's attribute, else its cfg option (every Darknet layer may carry these keys)."""
    value = getattr(layer, attr, None)
    if value is None:
        section = getattr(layer, "section", None)
        if section is not None and hasattr(section, "has") and section.has(key):
            value = section.float(key, default)
    return float(default if value is None else value)
