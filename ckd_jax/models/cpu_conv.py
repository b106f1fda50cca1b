"""An experimental convolution for XLA:CPU whose weight gradient is a sum of shifted matmuls.

`shifted_matmul_conv` has the signature of `jax.lax.conv_general_dilated` (what flax's
`nn.Conv(conv_general_dilated=...)` calls) and the same forward pass and input gradient. Only
the weight gradient differs in *how* it is computed: for a k x k kernel,

    dW[i, j] = X_ij^T @ dY

with X_ij the padded input shifted by (i, j) and strided, [N*Ho*Wo, C_in], and dY the output
gradient, [N*Ho*Wo, C_out]: k*k matrix products with a long contraction axis instead of
XLA's weight-gradient convolution (which XLA:CPU runs with layout transposes around it).
Same numbers up to float summation order (tests/test_cpu_conv.py checks against `jax.grad` of
the plain convolution).

It is not used by the model zoo: measured with `python experiments/conv_speed.py` it was
slower than the default on the development CPU (docs/performance.md gives the figures). It is
kept so the measurement can be rerun on other CPUs and jaxlib versions.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


def _is_plain_2d(window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                 feature_group_count, batch_group_count) -> bool:
    dn = dimension_numbers
    if isinstance(dn, lax.ConvDimensionNumbers):
        plain_dn = dn == lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), _NHWC)
    else:
        plain_dn = tuple(dn or ()) == _NHWC
    ones = lambda d: d is None or all(v == 1 for v in d)
    return (plain_dn and not isinstance(padding, str) and len(window_strides) == 2
            and ones(lhs_dilation) and ones(rhs_dilation) and feature_group_count == 1
            and batch_group_count == 1)


def shifted_matmul_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                        dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                        precision=None, preferred_element_type=None):
    """`lax.conv_general_dilated` with the weight gradient as shifted matmuls (NHWC/HWIO,
    explicit padding, no dilation, no groups); any other call goes to `lax` unchanged."""
    if not _is_plain_2d(window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                        feature_group_count, batch_group_count):
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type)
    pad = tuple(tuple(int(v) for v in p) for p in padding)
    return _conv(lhs, rhs, tuple(int(s) for s in window_strides), pad)


def _plain(x, w, strides, padding):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, strides, padding):
    return _plain(x, w, strides, padding)


def _conv_fwd(x, w, strides, padding):
    return _plain(x, w, strides, padding), (x, w)


def _conv_bwd(strides, padding, res, dy):
    x, w = res
    _, x_vjp = jax.vjp(lambda a: _plain(a, w, strides, padding), x)
    (dx,) = x_vjp(dy)
    kh, kw, cin, cout = w.shape
    n, ho, wo, _ = dy.shape
    (sh, sw) = strides
    xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    dy2 = dy.reshape(n * ho * wo, cout)
    rows = []
    for i in range(kh):
        for j in range(kw):
            xs = lax.slice(xp, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, cin),
                           (1, sh, sw, 1))
            rows.append(xs.reshape(n * ho * wo, cin).T @ dy2)
    dw = jnp.stack(rows).reshape(kh, kw, cin, cout).astype(w.dtype)
    return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)
