"""``[crnn]``: convolutional RNN (``crnn_layer.c``, ``parse_crnn``).

Three convolutions of the same geometry (``size``, ``stride``, ``dilation``, ``pad``/``padding``,
``groups``, ``activation``, ``batch_normalize``, ``xnor``): ``input`` (c -> hidden), ``self``
(hidden -> hidden) and ``output`` (hidden -> output). For each time step::

    h_new = (h if shortcut else 0) + input_conv(x_t) + self_conv(h)
    y_t   = output_conv(h_new)

In training the batch holds ``time_steps`` ([net]) consecutive chunks of ``batch / time_steps``
images (step-major, as Darknet advances ``state.input`` by ``inputs*batch`` per step). At
inference one step is run per call, as in Darknet's ``detector test``/``demo``, which build the
network with ``time_steps=1``.

State, as in ``forward_crnn_layer``: in training the hidden state starts at zero for every forward
pass; at inference it is *kept* between calls (the layer remembers the last frame, which is what
tracking cfgs such as ``yolov3-tiny_occlusion_track`` rely on). :meth:`CrnnLayer.reset_state`
clears it; a new batch size, device or dtype also starts from zero.

Weights layout: the three convolutional layers in the order input, self, output, each in the
``[convolutional]`` layout (biases, [scales, rolling_mean, rolling_variance], weights).
"""
from __future__ import annotations

from typing import List, Optional

import torch

from ..formats.cfg import Option, Section
from .base import BuildContext, Layer
from .convolutional import ConvolutionalLayer
from .parse_helpers import DefaultsLog, loud_int, loud_str


def _sub_section(parent: Section, **options) -> Section:
    sec = Section(type="convolutional", line=parent.line, file=parent.file)
    for key, value in options.items():
        sec.options.append(Option(key, str(value), parent.line))
    return sec


class CrnnLayer(Layer):
    table_name = "CRNN Layer"

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        s = section
        log = self.defaults_log = DefaultsLog()
        size = s.int("size", 3)
        stride = s.int("stride", 1)
        dilation = s.int("dilation", 1)
        pad = s.int("pad", 0)
        padding = s.int("padding", 0)
        if pad:
            padding = size // 2
        self.output_filters = loud_int(s, "output", 1, log)
        self.hidden_filters = loud_int(s, "hidden", 1, log)
        groups = s.int("groups", 1)
        activation = loud_str(s, "activation", "logistic", log)
        batch_normalize = s.int("batch_normalize", 0)
        xnor = s.int("xnor", 0)
        self.shortcut = s.int("shortcut", 0)
        #: [net] time_steps: used in training; Darknet's inference entry points (detector
        #: test/demo: parse_network_cfg_custom(cfg, 1, 1)) force time_steps=1
        self.time_steps = max(1, ctx.net.time_steps)
        c, h, w = self.in_shape
        if not (c and h and w):
            raise s.error("the layer before [crnn] must output an image")
        geometry = dict(size=size, stride=stride, dilation=dilation, padding=padding, pad=0,
                        groups=groups, activation=activation, batch_normalize=batch_normalize,
                        xnor=xnor)

        def conv(in_shape, filters) -> ConvolutionalLayer:
            sub_ctx = BuildContext(net=ctx.net, shapes=[in_shape], cfg_path=ctx.cfg_path)
            return ConvolutionalLayer(index, _sub_section(s, filters=filters, **geometry), sub_ctx)

        self.input_layer = conv(self.in_shape, self.hidden_filters)
        hidden_shape = self.input_layer.out_shape
        if hidden_shape[1:] != (h, w):
            raise s.error(f"the hidden state must keep the {w} x {h} input size, but size={size} "
                          f"stride={stride} padding={padding} gives {hidden_shape[2]} x "
                          f"{hidden_shape[1]}; use stride=1 and pad=1")
        self.self_layer = conv(hidden_shape, self.hidden_filters)
        self.output_layer = conv(hidden_shape, self.output_filters)
        self.out_shape = self.output_layer.out_shape
        self.bflops = (self.input_layer.bflops + self.self_layer.bflops
                       + self.output_layer.bflops)
        self._state: Optional[torch.Tensor] = None

    def reset_state(self) -> None:
        """Forget the hidden state kept between inference calls."""
        self._state = None

    def _initial_state(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        hc, hh, hw = self.input_layer.out_shape
        st = self._state
        if self.training or st is None or st.shape != (batch, hc, hh, hw) \
                or st.device != x.device or st.dtype != x.dtype:
            return x.new_zeros(batch, hc, hh, hw)
        return st

    def forward(self, x, outputs):
        total = x.shape[0]
        steps = self.time_steps if self.training else 1
        if total % steps:
            raise ValueError(f"[crnn] layer {self.index}: batch {total} is not a multiple of "
                             f"time_steps={steps}")
        batch = total // steps
        state = self._initial_state(x, batch)
        ys: List[torch.Tensor] = []
        for t in range(steps):
            xt = x[t * batch:(t + 1) * batch]
            in_out = self.input_layer(xt, ())
            self_out = self.self_layer(state, ())
            state = (state + in_out + self_out) if self.shortcut else (in_out + self_out)
            ys.append(self.output_layer(state, ()))
        if not self.training:
            self._state = state.detach()
        return ys[0] if len(ys) == 1 else torch.cat(ys, dim=0)

    # --------------------------------------------------------------- weights / fusing
    def num_weight_floats(self) -> int:
        return sum(l.num_weight_floats() for l in self._convs())

    def read_weights(self, reader) -> None:
        for l in self._convs():
            l.read_weights(reader)

    def write_weights(self, writer) -> None:
        for l in self._convs():
            l.write_weights(writer)

    def fuse(self) -> None:
        for l in self._convs():
            l.fuse()

    def unfuse(self) -> None:
        for l in self._convs():
            l.unfuse()

    @property
    def _fused(self):
        return self.input_layer._fused

    def _convs(self):
        return (self.input_layer, self.self_layer, self.output_layer)

    # --------------------------------------------------------------- printing
    def table_line(self) -> str:
        c, h, w = self.in_shape
        lines = list(self.defaults_log)
        lines.append(f"CRNN Layer: {h} x {w} x {c} image, {self.output_filters} filters")
        lines += [l.table_line() for l in self._convs()]
        return "\n".join(lines)
