"""ckd_jax.models.cpu_conv: the shifted-matmul weight gradient against jax.grad of lax's conv."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ckd_jax.models.cpu_conv import shifted_matmul_conv

DN = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize("k,stride,pad,groups", [(3, 1, 1, 1), (3, 2, 1, 1), (1, 2, 0, 1),
                                                 (3, 1, 1, 2)])
def test_forward_and_both_gradients_match_lax(k, stride, pad, groups):
    kx, kw, kg = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (3, 9, 9, 4))
    w = jax.random.normal(kw, (k, k, 4 // groups, 6))
    args = ((stride, stride), ((pad, pad), (pad, pad)))
    kwargs = dict(dimension_numbers=DN, feature_group_count=groups)
    ref = lambda a, b: lax.conv_general_dilated(a, b, *args, **kwargs)
    alt = lambda a, b: shifted_matmul_conv(a, b, *args, **kwargs)
    np.testing.assert_allclose(alt(x, w), ref(x, w), rtol=1e-5, atol=1e-5)
    g = jax.random.normal(kg, ref(x, w).shape)
    loss = lambda f: (lambda a, b: jnp.sum(f(a, b) * g))
    want = jax.grad(loss(ref), argnums=(0, 1))(x, w)
    got = jax.jit(jax.grad(loss(alt), argnums=(0, 1)))(x, w)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_zoo_model_with_the_alternative_convolution_has_the_same_gradients():
    from ckd_jax.models import create_model, layers

    x = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3))
    model = create_model("resnet8", 10)
    variables = model.init(jax.random.PRNGKey(2), x, train=False)

    def grads(impl):
        layers.CONV_IMPL = impl
        try:
            f = lambda p: jnp.sum(model.apply({**variables, "params": p}, x, train=False) ** 2)
            return jax.grad(f)(variables["params"])
        finally:
            layers.CONV_IMPL = None

    for a, b in zip(jax.tree.leaves(grads(shifted_matmul_conv)), jax.tree.leaves(grads(None))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
