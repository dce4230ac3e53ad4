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
    """Training-mode BN over (B, C, H, W) with Darknet's forward and backward formulas.

    Darknet's backward (``mean_delta``, ``variance_delta``, ``normalize_delta``) is the usual
    batch-norm gradient written with the inverse std it normalised with, so torch's fused
    ``native_batch_norm_backward`` given that inverse std computes it exactly (and the scale and
    bias gradients ``sum(delta * x_norm)``, ``sum(delta)``).
    """

    @staticmethod
    def forward(ctx, x, scales, biases):
        var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=1)   # Darknet: unbiased
        inv_std = torch.rsqrt(var + BN_EPS)
        out = torch.nn.functional.batch_norm(x, mean, var, scales, biases, False, 0.0, BN_EPS)
        ctx.save_for_backward(x, scales, mean, inv_std)
        return out, mean, var

    @staticmethod
    def backward(ctx, grad_out, _gm, _gv):
        x, scales, mean, inv_std = ctx.saved_tensors
        gx, gs, gb = torch.ops.aten.native_batch_norm_backward(
            grad_out.contiguous(memory_format=_memory_format(x)), x, scales, None, None, mean,
            inv_std, True, BN_EPS, [ctx.needs_input_grad[0], ctx.needs_input_grad[1],
                                    ctx.needs_input_grad[2]])
        return gx, gs, gb


def _memory_format(x: torch.Tensor):
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(
        memory_format=torch.channels_last) and not x.is_contiguous() else torch.contiguous_format


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
