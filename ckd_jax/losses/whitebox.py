"""White-box (intermediate-feature) baselines: FitNet hints, VID and CC. Features are NHWC.

The trainable pieces (regressors, embeddings) are small flax.linen modules whose parameters the
caller trains with the student; the losses are pure functions of arrays. For white-box CKD
(`ckd_inter`) apply them to group comparisons of features (`compare_groups` on [B, k, H, W, C]).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_min_rank, check_rank, check_same_shape, shape_of

# PyTorch BatchNorm2d defaults (momentum 0.1 -> flax 0.9, eps 1e-5).
_BN = dict(momentum=0.9, epsilon=1e-5)


# ---------------------------------------------------------------------------------------------
# FitNet


def hint_regressor_kind(s_hw: Sequence[int], t_hw: Sequence[int]) -> str:
    """Which ConvReg layer maps student spatial size `s_hw` to teacher `t_hw` (RepDistiller order):
    "stride2" (s_H == 2 t_H: 3x3 conv, stride 2, pad 1), "transpose" (2 s_H == t_H: 4x4
    transposed conv, stride 2, pad 1), "valid" (s_H >= t_H: conv with kernel
    (1 + s_H - t_H, 1 + s_W - t_W), no padding). Raises ValueError otherwise.

    Example:

      >>> hint_regressor_kind((8, 8), (4, 4)), hint_regressor_kind((4, 4), (8, 8))
      ('stride2', 'transpose')
    """
    sh, sw = int(s_hw[0]), int(s_hw[1])
    th, tw = int(t_hw[0]), int(t_hw[1])
    if sh == 2 * th:
        return "stride2"
    if 2 * sh == th:
        return "transpose"
    if sh >= th and sw >= tw:
        return "valid"
    raise ValueError(
        f"HintRegressor cannot map student spatial size {(sh, sw)} to teacher {(th, tw)}; "
        "accepted: s_H == 2 t_H, 2 s_H == t_H, or s_H >= t_H and s_W >= t_W"
    )


class HintRegressor(nn.Module):
    """FitNet hint regressor, RepDistiller ``ConvReg``: conv + BatchNorm (+ ReLU).

    `t_shape` = teacher feature shape (H_t, W_t, C_t) without the batch dim.
    Input student features [N, H_s, W_s, C_s] -> [N, H_t, W_t, C_t]. The conv is chosen by
    `hint_regressor_kind` at trace time. Call with `train=True, mutable=["batch_stats"]` while
    training (batch statistics), `train=False` otherwise.

    Example:

      >>> reg = HintRegressor(t_shape=(4, 4, 16))          # student 8x8 -> teacher 4x4: stride 2
      >>> out, variables = reg.init_with_output(jax.random.key(0), jnp.ones((2, 8, 8, 8)))
      >>> out.shape
      (2, 4, 4, 16)
    """

    t_shape: Sequence[int]
    use_relu: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_rank("student feature", x, 4, "[N, H, W, C] (NHWC)")
        if len(self.t_shape) != 3:
            raise ValueError(f"t_shape must be (H_t, W_t, C_t), got {tuple(self.t_shape)}")
        th, tw, tc = (int(v) for v in self.t_shape)
        kind = hint_regressor_kind(x.shape[1:3], (th, tw))
        if kind == "stride2":
            x = nn.Conv(tc, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))(x)
        elif kind == "transpose":
            # PyTorch ConvTranspose2d(k=4, s=2, p=1) == lax transpose conv padded by k - 1 - p = 2
            x = nn.ConvTranspose(tc, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                                 transpose_kernel=True)(x)
        else:
            kh, kw = 1 + x.shape[1] - th, 1 + x.shape[2] - tw
            x = nn.Conv(tc, (kh, kw), padding="VALID")(x)
        x = nn.BatchNorm(use_running_average=not train, **_BN)(x)
        return nn.relu(x) if self.use_relu else x


def fitnet_loss(regressed: jax.Array, teacher_feat: jax.Array) -> jax.Array:
    """FitNet hint loss (Romero et al., ICLR 2015), RepDistiller ``HintLoss``.

    Shapes: regressed (HintRegressor output) and teacher_feat, both [N, H, W, C]. Returns
    mean((regressed - teacher_feat)^2) over all entries. Paper weight 100 (layer 2).

    Example:

      >>> float(fitnet_loss(jnp.ones((1, 2, 2, 3)), jnp.zeros((1, 2, 2, 3))))
      1.0
    """
    check_min_rank("regressed", regressed, 2, "[N, ...]")
    check_same_shape("regressed", regressed, "teacher_feat", teacher_feat)
    return _mse(regressed, teacher_feat)


@jax.jit
def _mse(a, b):
    return jnp.mean((a - b) ** 2)


# ---------------------------------------------------------------------------------------------
# VID


def _pool_to(x: jax.Array, hw: tuple[int, int]) -> jax.Array:
    """Adaptive average pooling of NHWC x to spatial size hw (sizes must divide evenly)."""
    n, h, w, c = x.shape
    oh, ow = hw
    if h % oh or w % ow:
        raise ValueError(f"cannot average-pool spatial size {(h, w)} to {(oh, ow)}: sizes must "
                         "divide evenly")
    return x.reshape(n, oh, h // oh, ow, w // ow, c).mean(axis=(2, 4))


def match_spatial(student_feat: jax.Array, teacher_feat: jax.Array):
    """Average-pool the larger of two NHWC feature maps to the other's spatial size
    (as RepDistiller ``VIDLoss.forward`` does before regressing). Returns (student, teacher).

    Example:

      >>> s, t = match_spatial(jnp.ones((1, 8, 8, 3)), jnp.ones((1, 4, 4, 5)))
      >>> s.shape, t.shape
      ((1, 4, 4, 3), (1, 4, 4, 5))
    """
    check_rank("student_feat", student_feat, 4, "[N, H, W, C]")
    check_rank("teacher_feat", teacher_feat, 4, "[N, H, W, C]")
    sh, th = student_feat.shape[1:3], teacher_feat.shape[1:3]
    if sh == th:
        return student_feat, teacher_feat
    if sh[0] > th[0]:
        return _pool_to(student_feat, th), teacher_feat
    return student_feat, _pool_to(teacher_feat, sh)


def vid_log_scale_init(init_pred_var: float = 5.0, eps: float = 1e-5) -> float:
    """softplus^{-1}(init_pred_var - eps) = log(exp(init_pred_var - eps) - 1).

    Example:

      >>> round(vid_log_scale_init(5.0), 4)          # softplus of it gives back 5 - 1e-5
      4.9932
    """
    return float(np.log(np.expm1(init_pred_var - eps)))


class VIDRegressor(nn.Module):
    """VID regressor (Ahn et al., CVPR 2019), RepDistiller ``VIDLoss`` parameters.

    1x1 conv (mid_channels) - ReLU - 1x1 conv (mid_channels) - ReLU - 1x1 conv (out_channels),
    all without bias, and a per-channel `log_scale` [out_channels] initialised to
    softplus^{-1}(init_pred_var - eps). RepDistiller uses mid = out = teacher channels.
    Input [N, H, W, C_s] -> (pred_mean [N, H, W, out_channels], log_scale [out_channels]).
    Spatial sizes must already match the target (see `match_spatial`).

    Example:

      >>> reg = VIDRegressor(mid_channels=8, out_channels=16)
      >>> (mean, log_scale), variables = reg.init_with_output(jax.random.key(0),
      ...                                                      jnp.ones((2, 4, 4, 8)))
      >>> mean.shape, log_scale.shape
      ((2, 4, 4, 16), (16,))
    """

    mid_channels: int
    out_channels: int
    init_pred_var: float = 5.0
    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array):
        check_rank("student feature", x, 4, "[N, H, W, C] (NHWC)")
        x = nn.relu(nn.Conv(self.mid_channels, (1, 1), use_bias=False)(x))
        x = nn.relu(nn.Conv(self.mid_channels, (1, 1), use_bias=False)(x))
        x = nn.Conv(self.out_channels, (1, 1), use_bias=False)(x)
        init = vid_log_scale_init(self.init_pred_var, self.eps)
        log_scale = self.param("log_scale", nn.initializers.constant(init),
                               (self.out_channels,))
        return x, log_scale


def vid_loss(pred_mean: jax.Array, log_scale: jax.Array, target: jax.Array,
             eps: float = 1e-5) -> jax.Array:
    """VID negative log-likelihood, RepDistiller ``VIDLoss``.

    Shapes: pred_mean [N, H, W, C], log_scale [C], target [N, H, W, C]. Returns a scalar:
      var = softplus(log_scale) + eps;  mean over all entries of 0.5 ((pred - target)^2 / var
      + log var). Paper weight 1 (summed over the student's intermediate layers).

    Example:

      >>> x = jnp.ones((2, 4, 4, 3))
      >>> log_scale = jnp.full(3, vid_log_scale_init(1.0))   # variance 1: only the error is left
      >>> round(float(vid_loss(x + 1.0, log_scale, x)), 4)    # 0.5 * (1^2 / 1 + log 1)
      0.5
    """
    check_rank("pred_mean", pred_mean, 4, "[N, H, W, C]")
    check_same_shape("pred_mean", pred_mean, "target", target)
    check_rank("log_scale", log_scale, 1, "[C]")
    if shape_of(log_scale)[0] != shape_of(pred_mean)[-1]:
        raise ValueError(f"log_scale {shape_of(log_scale)} must have one entry per channel of "
                         f"pred_mean {shape_of(pred_mean)}")
    return _vid_loss(pred_mean, log_scale, target, eps)


@jax.jit
def _vid_loss(pred_mean, log_scale, target, eps):
    var = jax.nn.softplus(log_scale) + eps
    return jnp.mean(0.5 * ((pred_mean - target) ** 2 / var + jnp.log(var)))


# ---------------------------------------------------------------------------------------------
# CC


class CCEmbed(nn.Module):
    """Correlation-congruence embedding: flatten + linear to `feat_dim` (default 128).

    Matches RepDistiller's ``LinearEmbed`` used for ``--distill correlation`` (no L2
    normalisation there). Input [N, ...] (usually the penultimate pooled feature [N, D]) ->
    [N, feat_dim].

    Example:

      >>> embed = CCEmbed(feat_dim=8)
      >>> out, variables = embed.init_with_output(jax.random.key(0), jnp.ones((4, 16)))
      >>> out.shape
      (4, 8)
    """

    feat_dim: int = 128

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.reshape(x, (x.shape[0], -1))
        return nn.Dense(self.feat_dim)(x)


def cc_loss(s_embed: jax.Array, t_embed: jax.Array) -> jax.Array:
    """Correlation congruence (Peng et al., ICCV 2019) as in RepDistiller ``Correlation``.

    Shapes: s_embed [B, D], t_embed [B, D]. Returns a scalar:
      delta = |s - t|;  loss = mean_{i=0..B-2} sum_d delta[i, d] * delta[i+1, d]
    (the authors' code shared with RepDistiller: products of consecutive samples' residuals).
    Needs B >= 2. Paper weight 0.02.

    Example:

      >>> s = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
      >>> float(cc_loss(s, jnp.zeros((3, 2))))   # (1*0 + 0*1 + 0*1 + 1*1) / 2
      0.5
    """
    check_rank("s_embed", s_embed, 2, "[B, D]")
    check_same_shape("s_embed", s_embed, "t_embed", t_embed)
    if shape_of(s_embed)[0] < 2:
        raise ValueError(f"cc_loss needs a batch of at least 2, got shape {shape_of(s_embed)}")
    return _cc_loss(s_embed, t_embed)


@jax.jit
def _cc_loss(s_embed, t_embed):
    delta = jnp.abs(s_embed - t_embed)
    return jnp.mean(jnp.sum(delta[:-1] * delta[1:], axis=1))
