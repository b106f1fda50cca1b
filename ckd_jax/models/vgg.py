"""VGG-BN of RepDistiller/CKD (``models/vgg.py``, the ``*_bn`` constructors): vgg8, vgg11,
vgg13, vgg16, vgg19.

Five blocks of conv3x3 (with bias) - BN - ReLU layers; the last ReLU of each block is left out
(the block output is pre-activation, and the forward applies ReLU after it). Between blocks
0/1, 1/2 and 2/3 a 2x2/2 max pool; between blocks 3 and 4 a max pool *only when the input
height is 64* (as the reference's ``if h == 64``); then adaptive average pool to 1x1 (the global
mean) and linear ``classifier`` (512 -> classes).

Features (``is_feat``), 32x32 input: [relu(block0) 32x32x64, relu(block1) 16x16x128,
relu(block2) 8x8x256, relu(block3) 4x4x512, relu(block4) 4x4x512, pooled [N, 512]];
``preact=True`` gives blocks 1-4 before their ReLU.
"""

from __future__ import annotations

import flax.linen as nn

from ckd_jax.models.layers import BatchNorm, check_input, conv, dense, global_avg_pool

# Channel lists per block (RepDistiller cfg 'S', 'A', 'B', 'D', 'E').
VGG_CFGS = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512),
              (512, 512, 512, 512)),
}


def _max_pool(x):
    return nn.max_pool(x, (2, 2), strides=(2, 2))  # floor mode, no padding, like MaxPool2d(2, 2)


class VGG(nn.Module):
    """VGG with BatchNorm (see module docstring). Input [N, H, W, 3] -> logits [N, classes]."""

    num_classes: int
    cfg: tuple

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False,
                 preact: bool = False):
        check_input(x, "VGG")
        h = x.shape[1]
        ura = not train
        feats, pre_feats = [], []
        for b, widths in enumerate(self.cfg):
            if b in (1, 2, 3) or (b == 4 and h == 64):
                x = _max_pool(x)
            for k, w in enumerate(widths):
                if k:
                    x = nn.relu(x)
                x = conv(w, 3, 1, 1, bias=True, name=f"block{b}.{3 * k}")(x)
                x = BatchNorm(name=f"block{b}.{3 * k + 1}")(x, ura)
            pre_feats.append(x)
            x = nn.relu(x)
            feats.append(x)
        pooled = global_avg_pool(x)
        logits = dense(self.num_classes, pooled.shape[-1], "normal001", "classifier")(pooled)
        if return_features:
            out = [feats[0]] + (pre_feats[1:] if preact else feats[1:])
            return out + [pooled], logits
        return logits


def vgg_bn(name: str, num_classes: int) -> VGG:
    """``vgg8`` ... ``vgg19`` (the reference's ``vgg*_bn``)."""
    return VGG(num_classes=num_classes, cfg=VGG_CFGS[name])
