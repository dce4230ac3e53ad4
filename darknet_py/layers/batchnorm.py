"""Darknet's batch normalisation (``batchnorm_layer.c``, ``blas.c``), shared by conv layers.

Inference: ``(x - rolling_mean) / sqrt(rolling_variance + .00001) * scales + biases``.

Training follows Darknet exactly, which differs from ``torch.nn.BatchNorm2d``:

* the batch variance is the *unbiased* one (``1/(N-1)``, ``variance_cpu``) and it is used both to
  normalise and to update the rolling statistics;
* the backward pass uses Darknet's ``mean_delta``/``variance_delta``/``normalize_delta`` formulas
  (which treat the variance as biased), implemented by :class:`DarknetBatchNormFn`;
* rolling statistics move by ``momentum`` (0.1 in Darknet's CPU path ``.9*old + .1*new``; 0.01
  in its cuDNN GPU path, ``exponentialAverageFactor``).
"""
from __future__ import annotations

import torch

BN_EPS = 0.00001


class DarknetBatchNormFn(torch.autograd.Function):
    """Training-mode BN over (B, C, H, W) with Darknet's forward and backward formulas."""

    @staticmethod
    def forward(ctx, x, scales, biases):
        n = x.shape[0] * x.shape[2] * x.shape[3]
        mean = x.mean(dim=(0, 2, 3))
        xc = x - mean.view(1, -1, 1, 1)
        var = (xc * xc).sum(dim=(0, 2, 3)) / max(n - 1, 1)
        inv_std = 1.0 / torch.sqrt(var + BN_EPS)
        x_norm = xc * inv_std.view(1, -1, 1, 1)
        ctx.save_for_backward(xc, x_norm, inv_std, scales)
        ctx.n = n
        out = x_norm * scales.view(1, -1, 1, 1) + biases.view(1, -1, 1, 1)
        return out, mean, var

    @staticmethod
    def backward(ctx, grad_out, _gm, _gv):
        xc, x_norm, inv_std, scales = ctx.saved_tensors
        n = ctx.n
        g = grad_out
        grad_scales = (g * x_norm).sum(dim=(0, 2, 3))
        grad_biases = g.sum(dim=(0, 2, 3))
        d = g * scales.view(1, -1, 1, 1)
        # Darknet: mean_delta = sum(d) * -1/sqrt(var+eps)
        mean_delta = d.sum(dim=(0, 2, 3)) * (-inv_std)
        # variance_delta = sum(d * (x-mean)) * -.5 * (var+eps)^(-3/2)
        variance_delta = (d * xc).sum(dim=(0, 2, 3)) * (-0.5) * inv_std.pow(3)
        grad_x = (d * inv_std.view(1, -1, 1, 1)
                  + variance_delta.view(1, -1, 1, 1) * 2.0 * xc / n
                  + mean_delta.view(1, -1, 1, 1) / n)
        return grad_x, grad_scales, grad_biases


def batchnorm_train(x, scales, biases, rolling_mean, rolling_variance, momentum: float):
    """Normalise with batch statistics and update the rolling ones in place (no grad).

    Statistics are always computed in float32 (under AMP the conv output may be fp16/bf16).
    """
    if x.dtype != torch.float32:
        x = x.float()
    out, mean, var = DarknetBatchNormFn.apply(x, scales.float(), biases.float())
    with torch.no_grad():
        rolling_mean.mul_(1.0 - momentum).add_(mean.detach(), alpha=momentum)
        rolling_variance.mul_(1.0 - momentum).add_(var.detach(), alpha=momentum)
    return out


def batchnorm_infer(x, scales, biases, rolling_mean, rolling_variance):
    inv = scales / torch.sqrt(rolling_variance + BN_EPS)
    shift = biases - rolling_mean * inv
    return x * inv.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
