"""ShuffleNets of RepDistiller/CKD: ``ShuffleV1`` (``models/ShuffleNetv1.py``, groups 3, widths
240/480/960, blocks 4/8/4) and ``ShuffleV2`` (``models/ShuffleNetv2.py``, net size 1: widths
116/232/464, 1024-wide last conv, blocks 3/7/3).

Both start with a 1x1 conv (3->24)-BN-ReLU at full resolution (the CIFAR variant: no stride, no
max pool) and have three stride-2 stages, so a 32x32 input ends at 4x4.

ShuffleV1 block (``layer{l}.{i}``): 1x1 group conv (groups 1 when the input has 24 channels,
else 3) - BN - ReLU - channel shuffle - 3x3 depthwise (stride) - BN - ReLU - 1x1 group conv
(groups 3) - BN; stride-2 blocks concatenate a shortcut ``AvgPool2d(3, 2, padding=1)`` (zero
padding counted in the average, PyTorch's default) and output ``width - in_channels`` channels
from the conv branch; stride-1 blocks add the input. ReLU after the sum/concat.
ShuffleV2: each stage is a ``DownBlock`` (two stride-2 branches, concat, shuffle) followed by
``BasicBlock``s (split channels in halves, transform the second half, concat, shuffle).

Features (``is_feat``), 32x32 input: [stem 32x32x24, stage1 16x16xC1, stage2 8x8xC2,
stage3 4x4xC3, pooled [N, C]]. ``preact=True`` gives the last block's pre-ReLU concat/sum
(ShuffleV2: the concat of the untouched half and the pre-ReLU branch, *before* the shuffle, as
the reference returns it).

Pooling: the reference uses ``F.avg_pool2d(out, 4)`` (window 4, stride 4, floor), which is the
global mean for a 32x32 input (4x4 map). For 56x56 inputs (7x7 map) that window averages only
the top-left 4x4 positions; ``global_pool=False`` (default) reproduces this so CKD-trained
weights behave identically, ``global_pool=True`` averages the whole map instead.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from ckd_jax.models.layers import (
    TORCH_DEFAULT_KERNEL,
    BatchNorm,
    channel_shuffle,
    check_input,
    conv,
    dense,
    global_avg_pool,
)


def _conv(features, kernel, stride=1, padding=0, groups=1, name=None):
    # The ShuffleNet files keep PyTorch's default initialisation.
    return conv(features, kernel, stride, padding, groups, kernel_init=TORCH_DEFAULT_KERNEL,
                name=name)


def _pool_head(x, global_pool: bool):
    """Reference ``avg_pool2d(x, 4)`` + flatten, or the global mean. [N,H,W,C] -> [N, C']."""
    if global_pool:
        return global_avg_pool(x)
    if x.shape[1] < 4 or x.shape[2] < 4:
        raise ValueError(f"the reference 4x4 average pool needs a final map of at least 4x4, "
                         f"got {x.shape[1]}x{x.shape[2]}; use a larger input or global_pool=True")
    if x.shape[1] >= 8 or x.shape[2] >= 8:
        # The reference would flatten a >1x1 pooled map into a vector its classifier rejects.
        raise ValueError(f"the reference 4x4 average pool of a {x.shape[1]}x{x.shape[2]} map "
                         "is larger than 1x1 (the reference fails here); use global_pool=True")
    return nn.avg_pool(x, (4, 4), strides=(4, 4))[:, 0, 0, :]


class ShuffleV1Block(nn.Module):
    """ShuffleNet v1 bottleneck; returns (out, preact)."""

    in_planes: int
    out_planes: int
    stride: int
    groups: int

    @nn.compact
    def __call__(self, x, train: bool):
        ura = not train
        mid = int(self.out_planes / 4)
        g = 1 if self.in_planes == 24 else self.groups
        out = nn.relu(BatchNorm(name="bn1")(_conv(mid, 1, groups=g, name="conv1")(x), ura))
        out = channel_shuffle(out, g)
        out = _conv(mid, 3, self.stride, 1, groups=mid, name="conv2")(out)
        out = nn.relu(BatchNorm(name="bn2")(out, ura))
        out = _conv(self.out_planes, 1, groups=self.groups, name="conv3")(out)
        out = BatchNorm(name="bn3")(out, ura)
        if self.stride == 2:
            res = nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                              count_include_pad=True)
            preact = jnp.concatenate([out, res], axis=-1)
        else:
            preact = out + x
        return nn.relu(preact), preact


class ShuffleNetV1(nn.Module):
    """ShuffleNet v1 for CIFAR (see module docstring). [N,H,W,3] -> logits [N, classes]."""

    num_classes: int
    out_planes: tuple = (240, 480, 960)
    num_blocks: tuple = (4, 8, 4)
    groups: int = 3
    global_pool: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False,
                 preact: bool = False):
        check_input(x, "ShuffleV1")
        x = nn.relu(BatchNorm(name="bn1")(_conv(24, 1, name="conv1")(x), not train))
        feats, pre_feats = [x], [x]
        in_planes = 24
        for s, (width, n) in enumerate(zip(self.out_planes, self.num_blocks)):
            for i in range(n):
                stride = 2 if i == 0 else 1
                cat_planes = in_planes if i == 0 else 0
                x, pre = ShuffleV1Block(in_planes, width - cat_planes, stride, self.groups,
                                        name=f"layer{s + 1}.{i}")(x, train)
                in_planes = width
            feats.append(x)
            pre_feats.append(pre)
        pooled = _pool_head(x, self.global_pool)
        logits = dense(self.num_classes, pooled.shape[-1], "torch", "linear")(pooled)
        if return_features:
            return (pre_feats if preact else feats) + [pooled], logits
        return logits


class ShuffleV2Basic(nn.Module):
    """ShuffleNet v2 basic unit (split, transform half, concat, shuffle); (out, preact)."""

    in_channels: int

    @nn.compact
    def __call__(self, x, train: bool):
        ura = not train
        c = int(x.shape[-1] * 0.5)
        x1, x2 = x[..., :c], x[..., c:]
        ch = int(self.in_channels * 0.5)
        out = nn.relu(BatchNorm(name="bn1")(_conv(ch, 1, name="conv1")(x2), ura))
        out = BatchNorm(name="bn2")(_conv(ch, 3, 1, 1, groups=ch, name="conv2")(out), ura)
        branch = BatchNorm(name="bn3")(_conv(ch, 1, name="conv3")(out), ura)
        preact = jnp.concatenate([x1, branch], axis=-1)
        out = channel_shuffle(jnp.concatenate([x1, nn.relu(branch)], axis=-1), 2)
        return out, preact


class ShuffleV2Down(nn.Module):
    """ShuffleNet v2 down-sampling unit: two stride-2 branches, concat, shuffle."""

    in_channels: int
    out_channels: int

    @nn.compact
    def __call__(self, x, train: bool):
        ura = not train
        cin, mid = self.in_channels, self.out_channels // 2
        left = BatchNorm(name="bn1")(_conv(cin, 3, 2, 1, groups=cin, name="conv1")(x), ura)
        left = nn.relu(BatchNorm(name="bn2")(_conv(mid, 1, name="conv2")(left), ura))
        right = nn.relu(BatchNorm(name="bn3")(_conv(mid, 1, name="conv3")(x), ura))
        right = BatchNorm(name="bn4")(_conv(mid, 3, 2, 1, groups=mid, name="conv4")(right), ura)
        right = nn.relu(BatchNorm(name="bn5")(_conv(mid, 1, name="conv5")(right), ura))
        return channel_shuffle(jnp.concatenate([left, right], axis=-1), 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNet v2 (net size 1) for CIFAR (see module docstring). [N,H,W,3] -> [N, classes]."""

    num_classes: int
    out_channels: tuple = (116, 232, 464, 1024)
    num_blocks: tuple = (3, 7, 3)
    global_pool: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False,
                 preact: bool = False):
        check_input(x, "ShuffleV2")
        ura = not train
        x = nn.relu(BatchNorm(name="bn1")(_conv(24, 1, name="conv1")(x), ura))
        feats, pre_feats = [x], [x]
        in_ch = 24
        for s, (width, n) in enumerate(zip(self.out_channels[:3], self.num_blocks)):
            x = ShuffleV2Down(in_ch, width, name=f"layer{s + 1}.0")(x, train)
            for i in range(n):
                x, pre = ShuffleV2Basic(width, name=f"layer{s + 1}.{i + 1}")(x, train)
            in_ch = width
            feats.append(x)
            pre_feats.append(pre)
        x = _conv(self.out_channels[3], 1, name="conv2")(x)
        x = nn.relu(BatchNorm(name="bn2")(x, ura))
        pooled = _pool_head(x, self.global_pool)
        logits = dense(self.num_classes, pooled.shape[-1], "torch", "linear")(pooled)
        if return_features:
            return (pre_feats if preact else feats) + [pooled], logits
        return logits
