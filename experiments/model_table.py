"""Print the zoo's registry table (markdown): parameters, paper role, forward cost at 32x32.

    python experiments/model_table.py [--num-classes 100] [--size 32] [--cost-analysis]

Parameters are counted at `--num-classes` (100 = CIFAR-100). The forward cost is counted, not
measured: the model's jaxpr for one [1, size, size, 3] image (eval mode) is walked and the
multiply-accumulates of every convolution (`conv_general_dilated`: output elements x kernel
height x width x input channels per group) and every matmul (`dot_general`) are summed; BatchNorm,
ReLU, pooling and residual additions are not counted (the usual convention of CIFAR KD papers).
GFLOPs = 2 x GMACs. `--cost-analysis` also compiles each model and prints XLA's own
`cost_analysis()["flops"]` for comparison (slow on a CPU; it includes the element-wise ops).
Runs on CPU in about a minute; no data, no download.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ckd_jax  # noqa: E402

ckd_jax.set_cpu_flags()  # our XLA:CPU speed flag, before jax starts (ckd_jax/__init__.py)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from ckd_jax.models import PAPER_ROLES, REFERENCE_MODELS, create_model, param_count  # noqa: E402


def _sub_jaxprs(eqn):
    for v in eqn.params.values():
        for item in v if isinstance(v, list | tuple) else (v,):
            if hasattr(item, "jaxpr") and hasattr(item.jaxpr, "eqns"):  # ClosedJaxpr
                yield item.jaxpr
            elif hasattr(item, "eqns"):  # Jaxpr
                yield item


def count_macs(jaxpr) -> int:
    """Multiply-accumulates of the convolutions and matmuls in `jaxpr` (recursing into calls)."""
    macs = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            out = eqn.outvars[0].aval.shape
            rhs = eqn.invars[1].aval.shape
            out_dim = eqn.params["dimension_numbers"].rhs_spec[0]  # kernel's output-feature axis
            macs += math.prod(out) * (math.prod(rhs) // rhs[out_dim])
        elif name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            macs += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)
        for sub in _sub_jaxprs(eqn):
            macs += count_macs(sub)
    return macs


def forward_macs(name: str, num_classes: int = 100, size: int = 32) -> int:
    """MACs of one eval-mode forward pass of a [1, size, size, 3] image."""
    model = create_model(name, num_classes)
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(x.shape)))
    closed = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, x)
    return count_macs(closed.jaxpr)


def xla_flops(name: str, num_classes: int = 100, size: int = 32) -> float:
    """XLA's compiled cost analysis ("flops") of the same forward pass."""
    model = create_model(name, num_classes)
    x = jnp.zeros((1, size, size, 3), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
    compiled = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


def table(num_classes: int = 100, size: int = 32, cost_analysis: bool = False) -> str:
    head = f"| model | parameters ({num_classes} classes) | role in CKD / RepDistiller | " \
           f"MMACs @{size}x{size} | GFLOPs @{size}x{size} |"
    sep = "|---|---:|---|---:|---:|"
    if cost_analysis:
        head += " XLA cost_analysis GFLOPs |"
        sep += "---:|"
    rows = [head, sep]
    for name in REFERENCE_MODELS:
        macs = forward_macs(name, num_classes, size)
        row = (f"| {name} | {param_count(name, num_classes):,} | {PAPER_ROLES.get(name, '-')} | "
               f"{macs / 1e6:.1f} | {2 * macs / 1e9:.3f} |")
        if cost_analysis:
            row += f" {xla_flops(name, num_classes, size) / 1e9:.3f} |"
        rows.append(row)
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--size", type=int, default=32, help="input height = width")
    parser.add_argument("--cost-analysis", action="store_true",
                        help="also compile each model and print XLA's flop count")
    args = parser.parse_args(argv)
    if args.num_classes < 1:
        raise ValueError(f"--num-classes {args.num_classes} must be >= 1")
    if args.size < 1:
        raise ValueError(f"--size {args.size} must be >= 1")
    print(table(args.num_classes, args.size, args.cost_analysis))
    return 0


if __name__ == "__main__":
    from ckd_jax.cli import run_command  # a bad input: one line on stderr, exit status 2

    sys.exit(run_command(main))
