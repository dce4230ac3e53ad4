"""``[reorg]`` = Darknet's REORG_OLD (``reorg_old_layer.c``, ``parse_reorg_old``; YOLOv2 passthrough).

Shapes: ``(c, h, w) -> (c*s*s, h/s, w/s)`` (``reverse=1``: ``(c/(s*s), h*s, w*s)``).

The data movement is Darknet's ``reorg_cpu`` (``blas.c``) called with the layer's *input* size
where that function expects the *output* size, so it is not a plain space-to-depth:

* forward: the input buffer is reinterpreted as ``(c/s^2, h*s, w*s)``; each ``s x s`` block of
  that view goes to channels ``(dy*s + dx)*(c/s^2) + k``; the resulting ``(c, h, w)`` buffer is
  then read as the ``(c*s*s, h/s, w/s)`` output;
* reverse: the ``(c, h, w)`` input is scattered the other way into a ``(c/s^2, h*s, w*s)`` output.

:func:`reorg_cpu` is that function, vectorised; ``[reorg3d]`` (:mod:`.reorg3d`) calls it with the
output size as intended. Darknet silently reads or writes out of bounds when ``c`` is not a
multiple of ``s*s`` or ``h, w`` not multiples of ``s``; darknet-py builds such a layer (the table
is Darknet's) but refuses to run it with a :class:`~darknet_py.errors.CfgError`.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..errors import CfgError
from .base import BuildContext, Layer
from .parse_helpers import DefaultsLog, loud_int


def reorg_cpu(x: torch.Tensor, w: int, h: int, c: int, stride: int, forward: bool) -> torch.Tensor:
    """Darknet's ``reorg_cpu(x, w, h, c, batch, stride, forward, out)`` on ``(B, ...)`` tensors.

    ``forward=False`` (Darknet's default direction): ``out`` is ``(c, h, w)``, read from ``x``
    viewed as ``(c/s^2, h*s, w*s)``: ``out[(dy*s+dx)*c/s^2 + k, j, i] = x[k, j*s+dy, i*s+dx]``.
    ``forward=True``: the inverse scatter, ``x`` is ``(c, h, w)`` and ``out`` ``(c/s^2, h*s, w*s)``.
    Returns a ``(B, c*h*w)`` tensor in Darknet's memory order.
    """
    s = stride
    b = x.shape[0]
    in_c = c // (s * s)
    if not forward:
        v = x.reshape(b, in_c, h, s, w, s)
        return v.permute(0, 3, 5, 1, 2, 4).reshape(b, -1)
    v = x.reshape(b, s, s, in_c, h, w)
    return v.permute(0, 3, 4, 1, 5, 2).reshape(b, -1)


class _ReorgBase(Layer):
    """Shared parsing of ``[reorg]`` and ``[reorg3d]``: ``stride`` and ``reverse``."""

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        s = section
        self.defaults_log = DefaultsLog()
        self.stride = loud_int(s, "stride", 1, self.defaults_log)
        self.reverse = s.int("reverse", 0)
        c, h, w = self.in_shape
        if not (c and h and w):
            raise s.error(f"the layer before [{s.type}] must output an image")
        st = self.stride
        if st < 1:
            raise s.error(f"stride must be >= 1, got {st}", value=st)
        if self.reverse:
            self.out_shape = (c // (st * st), h * st, w * st)
        else:
            self.out_shape = (c * st * st, h // st, w // st)
        if min(self.out_shape) < 1:
            raise s.error(f"stride={st} leaves an empty output for a {w} x {h} x {c} input")
        self._cannot_run: Optional[str] = self._check_runnable()

    def _check_runnable(self) -> Optional[str]:
        raise NotImplementedError

    def _refuse(self) -> None:
        if self._cannot_run:
            s = self.section
            raise CfgError(f"[{s.type}] {self._cannot_run}", file=s.file, line=s.line)


class ReorgOldLayer(_ReorgBase):
    """Darknet's ``[reorg]`` (REORG_OLD)."""

    table_name = "reorg_old"

    def _check_runnable(self) -> Optional[str]:
        c, h, w = self.in_shape
        st = self.stride
        if c % (st * st):
            return (f"input channels {c} are not a multiple of stride^2={st * st}; Darknet would "
                    "read outside the input")
        if not self.reverse and (h % st or w % st):
            return (f"input {w} x {h} is not a multiple of stride={st}; Darknet would write "
                    "outside the output")
        return None

    def forward(self, x, outputs):
        self._refuse()
        c, h, w = self.in_shape
        out = reorg_cpu(x, w, h, c, self.stride, forward=bool(self.reverse))
        return out.view(x.shape[0], *self.out_shape)

    def table_line(self) -> str:
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        return "\n".join(list(self.defaults_log)
                         + [f"reorg_old              /{self.stride:2d}  {w:4d} x{h:4d} x{c:4d}   "
                            f"->  {ow:4d} x{oh:4d} x{oc:4d}"])
