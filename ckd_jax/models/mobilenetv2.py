"""MobileNetV2 of RepDistiller/CKD (``models/mobilenetv2.py``, ``mobile_half``: expansion T=6,
width multiplier 0.5), registered as ``MobileNetV2``.

conv3x3/2 (3->16)-BN-ReLU; seven stages of inverted residual blocks (t, c, n, s) =
(1,8,1,1) (6,12,2,1) (6,16,3,2) (6,32,4,2) (6,48,3,1) (6,80,3,2) (6,160,1,1), each block
1x1 expand (always present, even for t=1) - BN - ReLU - 3x3 depthwise (stride s on the first
block) - BN - ReLU - 1x1 project - BN, with an identity shortcut when stride 1 and widths equal;
1x1 conv (160->1280)-BN-ReLU; average pool; linear ``classifier.0``.

Features (``is_feat``), 32x32 input: [stem 16x16x16, stage1 16x16x12, stage2 8x8x16,
stage4 4x4x48, stage6 2x2x160, pooled [N, 1280]]. There is no pre-activation variant
(``preact`` is ignored, as in the reference).

Pooling: the reference pools with ``AvgPool2d(2, ceil_mode=True)`` sized for 32x32 inputs (a
2x2 final map), i.e. the global mean at 32x32. At 56x56 the final map is 4x4 and the reference
fails (5120 pooled features for a 1280-input classifier), so no reference checkpoint exists at
that size; we use the global mean at every size.
"""

from __future__ import annotations

import flax.linen as nn

from ckd_jax.models.layers import BatchNorm, check_input, conv, dense, global_avg_pool

# (expansion t, channels c at width 1.0, blocks n, first stride s)
_SETTING = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1))


class InvertedResidual(nn.Module):
    """pw expand - dw 3x3 - pw linear (+ identity). [N,H,W,inp] -> [N,H/s,W/s,oup]."""

    inp: int
    oup: int
    stride: int
    expand: int

    @nn.compact
    def __call__(self, x, train: bool):
        ura = not train
        hidden = self.inp * self.expand
        out = nn.relu(BatchNorm(name="conv.1")(conv(hidden, 1, name="conv.0")(x), ura))
        out = conv(hidden, 3, self.stride, 1, groups=hidden, name="conv.3")(out)
        out = nn.relu(BatchNorm(name="conv.4")(out, ura))
        out = BatchNorm(name="conv.7")(conv(self.oup, 1, name="conv.6")(out), ura)
        if self.stride == 1 and self.inp == self.oup:
            return x + out
        return out


class MobileNetV2(nn.Module):
    """MobileNetV2 (see module docstring). Input [N, H, W, 3] -> logits [N, num_classes]."""

    num_classes: int
    expansion: int = 6
    width_mult: float = 0.5

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False,
                 preact: bool = False):
        del preact  # no pre-activation features in the reference
        check_input(x, "MobileNetV2")
        ura = not train
        in_ch = int(32 * self.width_mult)
        x = conv(in_ch, 3, 2, 1, name="conv1.0")(x)
        x = nn.relu(BatchNorm(name="conv1.1")(x, ura))
        feats = [x]
        for s, (t, c, n, stride) in enumerate(_SETTING):
            t = 1 if s == 0 else self.expansion
            out_ch = int(c * self.width_mult)
            for i in range(n):
                x = InvertedResidual(in_ch, out_ch, stride if i == 0 else 1, t,
                                     name=f"blocks.{s}.{i}")(x, train)
                in_ch = out_ch
            if s in (1, 2, 4, 6):
                feats.append(x)
        last = int(1280 * self.width_mult) if self.width_mult > 1.0 else 1280
        x = nn.relu(BatchNorm(name="conv2.1")(conv(last, 1, name="conv2.0")(x), ura))
        pooled = global_avg_pool(x)
        logits = dense(self.num_classes, last, "normal001", "classifier.0")(pooled)
        if return_features:
            return feats + [pooled], logits
        return logits


def mobile_half(num_classes: int) -> MobileNetV2:
    """The reference's ``mobile_half`` (T=6, width 0.5), named ``MobileNetV2`` in the zoo."""
    return MobileNetV2(num_classes=num_classes)
