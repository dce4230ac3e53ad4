"""``[shortcut]`` (``shortcut_layer.c``, ``shortcut_multilayer_cpu`` in ``blas.c``).

``out = act(x * w0 + sum_i from_i * w_{i+1})`` where ``x`` is the previous output and ``from`` lists
earlier layers. Without weights all w are 1. ``weights_type=per_feature`` gives one scalar per input,
``per_channel`` one per input and channel; ``weights_normalization=relu`` divides relu(w) by
``eps + sum relu(w)``, ``softmax`` uses ``exp(w - max) / (eps + sum exp(w - max))``.

When an added layer has a different size, Darknet adds it element-wise over the flat per-image
index range both share (its first ``min(size)`` values); that rule is kept.

Weights layout: ``(n+1)`` floats (per_feature) or ``(n+1)*c`` floats (per_channel), input-major.
"""
from __future__ import annotations

import torch
from torch import nn

from .activations import get_activation
from .base import BuildContext, Layer

WEIGHTS_TYPES = {"none": 0, "per_feature": 1, "per_layer": 1, "per_channel": 2}
NORMALIZATIONS = {"none": 0, "relu": 1, "avg_relu": 1, "softmax": 2}


class ShortcutLayer(Layer):
    table_name = "Shortcut Layer"

    def __init__(self, index, section, ctx: BuildContext):
        super().__init__(index, section, ctx)
        s = section
        self.activation_name = s.str("activation", "linear")
        self.activation = get_activation(self.activation_name, s)
        wt = s.str("weights_type", "none")
        if wt not in WEIGHTS_TYPES:
            raise s.error(f"weights_type={wt}: use one of none, per_feature, per_channel", value=wt)
        self.weights_type = WEIGHTS_TYPES[wt]
        wn = s.str("weights_normalization", "none")
        if wn not in NORMALIZATIONS:
            if self.weights_type:
                raise s.error(f"weights_normalization={wn}: use one of none, relu, softmax", value=wn)
            wn = "none"
        self.weights_normalization = NORMALIZATIONS[wn]
        rel = s.int_list("from")
        if not rel:
            raise s.error("shortcut needs from=")
        self.from_idx = [ctx.resolve(s, "from", v) for v in rel]
        self.inputs = list(self.from_idx)
        c, h, w = self.in_shape
        self.from_sizes = [ctx.shapes[i][0] * ctx.shapes[i][1] * ctx.shapes[i][2]
                           for i in self.from_idx]
        self.same_shape = all(ctx.shapes[i] == self.in_shape for i in self.from_idx)
        self.from_shapes = [ctx.shapes[i] for i in self.from_idx]
        self.out_shape = self.in_shape
        n = len(self.from_idx)
        self.nweights = 0
        if self.weights_type == 1:
            self.nweights = n + 1
        elif self.weights_type == 2:
            self.nweights = (n + 1) * c
        if self.nweights:
            self.weights = nn.Parameter(torch.ones(self.nweights))
        self.bflops = w * h * c * n / 1e9
        if self.weights_type:
            self.bflops *= 2

    def _normalized_weights(self) -> torch.Tensor:
        """(n+1, C or 1) weights after Darknet's normalisation."""
        n = len(self.from_idx)
        wts = self.weights.view(n + 1, -1)
        if self.weights_normalization == 1:
            r = torch.relu(wts)
            return r / (0.0001 + r.sum(dim=0, keepdim=True))
        if self.weights_normalization == 2:
            e = torch.exp(wts - wts.max(dim=0, keepdim=True).values)
            return e / (0.0001 + e.sum(dim=0, keepdim=True))
        return wts

    def forward(self, x, outputs):
        if not self.nweights and self.same_shape:
            out = x
            for i in self.from_idx:
                out = out + outputs[i]
            return self.activation(out)
        b = x.shape[0]
        if self.nweights:
            wts = self._normalized_weights()  # (n+1, C) or (n+1, 1)

            def scale(t, k):
                wk = wts[k]
                return t * (wk.view(1, -1, 1, 1) if wk.numel() > 1 else wk)
            out = scale(x, 0)
        else:
            scale = None
            out = x
        flat = out.reshape(b, -1)
        for k, i in enumerate(self.from_idx, start=1):
            add = outputs[i]
            if add.shape[1:] == out.shape[1:]:
                term = scale(add, k) if scale else add
                flat = flat + term.reshape(b, -1)
                continue
            # different size: Darknet adds over the shared flat prefix; weights follow the
            # output's channel at each position
            m = min(flat.shape[1], add[0].numel())
            add_flat = add.reshape(b, -1)[:, :m]
            if scale:
                c, h, w = self.out_shape
                wk = wts[k]
                if wk.numel() > 1:
                    chan = torch.arange(m, device=x.device) // (h * w)
                    add_flat = add_flat * wk[chan].view(1, -1)
                else:
                    add_flat = add_flat * wk
            flat = torch.cat([flat[:, :m] + add_flat, flat[:, m:]], dim=1)
        return self.activation(flat.view_as(out))

    def num_weight_floats(self) -> int:
        return self.nweights

    def read_weights(self, reader) -> None:
        if self.nweights:
            self.weights.copy_(torch.from_numpy(reader.read(self.nweights, "shortcut weights")))

    def write_weights(self, writer) -> None:
        if self.nweights:
            writer.write(self.weights.detach().cpu())

    def table_line(self) -> str:
        c, h, w = self.out_shape
        src = "".join(f"{i}, " for i in self.from_idx)
        line = (f"Shortcut Layer: {src} wt = {self.weights_type}, wn = {self.weights_normalization}, "
                f"outputs:{w:4d} x{h:4d} x{c:4d} {self.bflops:5.3f} BF")
        # parse_shortcut adds one line per input whose shape differs from the previous layer's
        ic, ih, iw = self.in_shape
        for fc, fh, fw in self.from_shapes:
            if (fc, fh, fw) != (ic, ih, iw):
                line += f"\n ({iw:4d} x{ih:4d} x{ic:4d}) + ({fw:4d} x{fh:4d} x{fc:4d}) "
        return line
