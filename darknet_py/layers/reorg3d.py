"""``[reorg3d]`` = Darknet's REORG (``reorg_layer.c``, ``parse_reorg``): space-to-depth.

``(c, h, w) -> (c*s*s, h/s, w/s)``: ``out[(dy*s + dx)*c + k, j, i] = x[k, j*s + dy, i*s + dx]``
(Darknet's ``reorg_cpu`` called with the output size). ``reverse=1`` calls ``reorg_cpu`` with
``(w*s, h*s, c/s^2)`` so the data is scattered into a ``(c/s^4, h*s^2, w*s^2)`` view of the
``(c/s^2, h*s, w*s)`` output, exactly as Darknet does. Sizes Darknet would handle out of bounds
(``h``/``w`` not multiples of ``s``, or ``c`` not a multiple of ``s^4`` when reversing) build but
refuse to run with a :class:`~darknet_py.errors.CfgError`.
"""
from __future__ import annotations

from typing import Optional


from .reorg import _ReorgBase, reorg_cpu


class Reorg3dLayer(_ReorgBase):
    table_name = "reorg"

    def _check_runnable(self) -> Optional[str]:
        c, h, w = self.in_shape
        st = self.stride
        if self.reverse:
            if c % (st ** 4):
                return (f"reverse=1 needs input channels ({c}) divisible by stride^4={st ** 4} "
                        "(Darknet would read outside the input)")
            return None
        if h % st or w % st:
            return (f"input {w} x {h} is not a multiple of stride={st}; Darknet would read a "
                    "misaligned view of the input")
        return None

    def forward(self, x, outputs):
        self._refuse()
        oc, oh, ow = self.out_shape
        out = reorg_cpu(x, ow, oh, oc, self.stride, forward=bool(self.reverse))
        return out.view(x.shape[0], *self.out_shape)

    def table_line(self) -> str:
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        return "\n".join(list(self.defaults_log)
                         + [f"reorg                    /{self.stride:2d} {w:4d} x{h:4d} x{c:4d} -> "
                            f"{ow:4d} x{oh:4d} x{oc:4d}"])
