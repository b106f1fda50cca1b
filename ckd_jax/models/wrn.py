"""Wide ResNets of RepDistiller/CKD (``models/wrn.py``): wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2.

WRN-d-k (n = (d-4)/6 blocks per stage, widths 16, 16k, 32k, 64k): conv3x3(3->16), three stages
of pre-activation blocks (BN-ReLU-conv3x3-BN-ReLU-conv3x3, strides 1, 2, 2), final BN-ReLU,
global average pool, linear ``fc``. A block whose width changes applies BN-ReLU to its input
*before* both branches and projects the shortcut with a 1x1 conv (``convShortcut``); a block with
equal widths adds the raw input. Dropout rate is 0 in every reference constructor, so there is
none here.

Features (``is_feat``), 32x32 input: [conv1 32x32x16 (no BN), stage1 32x32x16k,
stage2 16x16x32k, stage3 8x8x64k, pooled [N, 64k]]. ``preact=True`` applies, as the reference
does, the BN that follows each stage (``block2.layer.0.bn1``, ``block3.layer.0.bn1``, ``bn1``) to
the stage outputs 1-3; in train mode that BN is called a second time, so its running statistics
are updated twice, exactly as in PyTorch.
"""

from __future__ import annotations

import flax.linen as nn

from ckd_jax.models.layers import BatchNorm, check_input, conv, dense, global_avg_pool


class WRNBlock(nn.Module):
    """Pre-activation basic block (see module docstring). [N,H,W,in] -> [N,H/s,W/s,out]."""

    in_planes: int
    out_planes: int
    stride: int

    def setup(self):
        self.bn1 = BatchNorm()
        self.conv1 = conv(self.out_planes, 3, self.stride, 1)
        self.bn2 = BatchNorm()
        self.conv2 = conv(self.out_planes, 3, 1, 1)
        if self.in_planes != self.out_planes:
            self.convShortcut = conv(self.out_planes, 1, self.stride)

    def __call__(self, x, train: bool):
        ura = not train
        act = nn.relu(self.bn1(x, ura))
        out = nn.relu(self.bn2(self.conv1(act), ura))
        out = self.conv2(out)
        if self.in_planes == self.out_planes:
            return x + out
        return self.convShortcut(act) + out


class WideResNet(nn.Module):
    """WRN-depth-widen (see module docstring). Input [N, H, W, 3] -> logits [N, num_classes]."""

    num_classes: int
    depth: int
    widen: int

    def setup(self):
        n = (self.depth - 4) // 6
        ch = (16, 16 * self.widen, 32 * self.widen, 64 * self.widen)
        self.conv1 = conv(ch[0], 3, 1, 1)
        stages = []
        for s in range(3):
            stages.append([
                WRNBlock(ch[s] if i == 0 else ch[s + 1], ch[s + 1],
                         (1, 2, 2)[s] if i == 0 else 1, name=f"block{s + 1}.layer.{i}")
                for i in range(n)])
        self.stages = stages
        self.bn1 = BatchNorm()
        self.fc = dense(self.num_classes, ch[3], "torch_zero_bias", "fc")

    def __call__(self, x, train: bool = False, return_features: bool = False,
                 preact: bool = False):
        check_input(x, "WideResNet")
        ura = not train
        out = self.conv1(x)
        feats = [out]
        for stage in self.stages:
            for block in stage:
                out = block(out, train)
            feats.append(out)
        out = nn.relu(self.bn1(out, ura))
        pooled = global_avg_pool(out)
        logits = self.fc(pooled)
        if not return_features:
            return logits
        if preact:
            # The reference re-applies the BN that follows each stage (a second call in train mode).
            f1 = self.stages[1][0].bn1(feats[1], ura)
            f2 = self.stages[2][0].bn1(feats[2], ura)
            f3 = self.bn1(feats[3], ura)
            feats = [feats[0], f1, f2, f3]
        return feats + [pooled], logits


def wide_resnet(name: str, num_classes: int) -> WideResNet:
    """``wrn_{depth}_{widen}``."""
    _, depth, widen = name.split("_")
    return WideResNet(num_classes=num_classes, depth=int(depth), widen=int(widen))

