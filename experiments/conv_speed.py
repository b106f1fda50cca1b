"""Time the zoo's training step with the default convolution against an alternative one.

  taskset -c 1 python experiments/conv_speed.py --models resnet8,resnet32 --repeats 7

For each model: the bare training step (train-mode forward, cross-entropy, backward, SGD with
momentum 0.9 and weight decay 5e-4; batch 64, 32x32x3, float32, the step `benchmark.py` calls the
limit) is compiled twice, once with flax's default convolution and once with each alternative
(`--impls`, ckd_jax.models.cpu_conv), then called alternately, `--steps` steps per timed call, so
both see the same machine load. Printed: img/s of each and the median of the paired time ratios
(default time / alternative time: > 1 means the alternative is faster). Before timing, the
gradients of both are compared on one batch (max abs difference, relative to the largest
gradient entry), so a fast but wrong alternative cannot pass unnoticed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from ckd_jax.models import create_model, layers  # noqa: E402
from ckd_jax.models.cpu_conv import shifted_matmul_conv  # noqa: E402

IMPLS = {"shifted_matmul": shifted_matmul_conv}


def build_step(model_name: str, impl, batch: int, steps: int):
    """(init variables, jitted call of `steps` SGD steps, jitted grad of one batch)."""
    layers.CONV_IMPL = impl  # read when the modules are traced
    try:
        model = create_model(model_name, 10)
        x0 = jnp.zeros((batch, 32, 32, 3))
        variables = model.init(jax.random.PRNGKey(0), x0, train=True)
    finally:
        layers.CONV_IMPL = None
    tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.05, momentum=0.9))

    def loss_fn(params, stats, x, y):
        layers.CONV_IMPL = impl
        try:
            logits, upd = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                                      mutable=["batch_stats"])
        finally:
            layers.CONV_IMPL = None
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, upd["batch_stats"]

    grad = jax.jit(jax.grad(loss_fn, has_aux=True))

    def one(carry, xy):
        params, stats, opt = carry
        g, stats = jax.grad(loss_fn, has_aux=True)(params, stats, *xy)
        upd, opt = tx.update(g, opt, params)
        return (optax.apply_updates(params, upd), stats, opt), None

    @jax.jit
    def call(params, stats, opt, xs, ys):
        carry = (params, stats, opt)
        for i in range(steps):  # unrolled: XLA:CPU runs convolution gradients in loops slowly
            carry, _ = one(carry, (xs[i], ys[i]))
        return carry

    params, stats = variables["params"], variables["batch_stats"]
    return (params, stats, tx.init(params)), call, grad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet8")
    ap.add_argument("--impls", default="shifted_matmul", help=f"any of {', '.join(IMPLS)}")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    impls = args.impls.split(",")
    bad = [i for i in impls if i not in IMPLS]
    if bad:
        ap.error(f"unknown --impls {bad}; accepted: {', '.join(IMPLS)}")
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.normal(size=(args.steps, args.batch, 32, 32, 3)), jnp.float32)
    ys = jnp.asarray(rng.integers(0, 10, (args.steps, args.batch)))
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, "
          f"cores {len(os.sched_getaffinity(0))}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print("| model | alternative | grad max diff / max grad | default img/s | alternative img/s "
          "| x default (median paired) |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.models.split(","):
        base_state, base_call, base_grad = build_step(name, None, args.batch, args.steps)
        for impl in impls:
            state, call, grad = build_step(name, IMPLS[impl], args.batch, args.steps)
            g0, _ = base_grad(*base_state[:2], xs[0], ys[0])
            g1, _ = grad(*state[:2], xs[0], ys[0])
            diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                       zip(jax.tree.leaves(g0), jax.tree.leaves(g1)))
            scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(g0))
            for c, s in ((base_call, base_state), (call, state)):  # compile + warm up
                jax.block_until_ready(c(*s, xs, ys))
            tb, ta = [], []
            for _ in range(args.repeats):
                for c, s, out in ((base_call, base_state, tb), (call, state, ta)):
                    t = time.perf_counter()
                    jax.block_until_ready(c(*s, xs, ys))
                    out.append(time.perf_counter() - t)
            imgs = args.batch * args.steps
            ratio = float(np.median(np.asarray(tb) / np.asarray(ta)))
            print(f"| {name} | {impl} | {diff / scale:.1e} | {imgs / np.median(tb):.0f} | "
                  f"{imgs / np.median(ta):.0f} | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
