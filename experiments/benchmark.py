"""Throughput of the compiled student step against the limit of a bare training step.

  python experiments/benchmark.py                       # full grid (for a GPU)
  python experiments/benchmark.py --models resnet32 --methods ckd_k2 --populations 1,32 \
      --dtypes bfloat16 --json results/bench_h100.json
  python experiments/benchmark.py --quick               # tiny CPU smoke run (tiny_cnn, P=1)

For each student model, method, population size P and compute dtype the engine's pseudo-epoch
is built exactly as `run_distillation` builds it (`student.make_train_epoch` on synthetic uint8
images and a random logit table of the real shapes: sampling, gather, augmentation, forward,
loss, SGD, `steps` steps per call, vmapped over P members) and timed. The *limit* is the same
student's forward + backward + SGD(momentum, weight decay) update on the same number of images
per step, already on the device and already normalised, with no sampling, no augmentation and
plain cross-entropy, as a `lax.scan` of the same length, vmapped over the same P members
(`make_limit_epoch` below). `x limit` = time of the method's call / time of the limit's call
(1.0 = no overhead).

Timing: compile (lower + compile) timed separately; `--warmup` calls excluded; each repeat is
one call followed by `jax.block_until_ready`; the median over `--repeats` is reported. Images/s
counts student images per step over all members: CKD k=2 with 64 tuples is 128 images per step.
The issue's goals are printed beside the numbers (they are goals, not results): CKD within 1.2x
of the limit; on one H100, resnet32 CKD k=2 above 50,000 images/s at P=1 and above 300,000 in
total at P=32.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

# name -> DistillConfig overrides. Plain method names of the registry are accepted too.
METHODS = ("ce", "kd", "ckd_k2", "ckd_k3", "mixup", "rkd", "crd")  # ckd_jax VARIANTS names
DEFAULT_MODELS = ("resnet32", "wrn_16_2", "vgg8")
DEFAULT_POPULATIONS = (1, 8, 32)
DEFAULT_DTYPES = ("float32", "bfloat16")
# CIFAR-100 statistics (PAPER.md protocol); the values only shift the synthetic inputs.
_MEAN, _STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


def method_overrides(name: str) -> dict:
    from ckd_jax.train.methods import variant_overrides

    return variant_overrides(name, what="benchmark method")


def make_limit_epoch(model, compute_dtype: str, momentum: float = 0.9,
                     weight_decay: float = 5e-4, single_step: bool = False):
    """Compiled `(carry, images [P, S, N, H, W, C], labels [P, S, N]) -> (carry, loss [P, S])`.

    carry = (params, batch_stats, momentum buffers, lr [P]) stacked over P members. Each of the S
    scan steps: train-mode forward on N pre-normalised images (cast to `compute_dtype` like the
    engine), mean cross-entropy, gradient, torch-style SGD (g += wd * p; buf = m * buf + g;
    p -= lr * buf). Nothing else: this is the floor the engine's step is compared with.
    """
    bf16 = compute_dtype == "bfloat16"

    def loss_fn(params, stats, x, y):
        if bf16:
            params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
        variables = {"params": params, **({"batch_stats": stats} if stats else {})}
        logits, upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
        logp = jax.nn.log_softmax(logits.astype(jnp.float32))
        ce = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
        new_stats = upd.get("batch_stats", stats)
        new_stats = jax.tree.map(lambda n, o: n.astype(o.dtype), new_stats, stats)
        return ce, new_stats

    def step(carry, xy):
        params, stats, buf, lr = carry
        x, y = xy
        (loss, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, x, y)
        g = jax.tree.map(lambda gi, p: gi + weight_decay * p, g, params)
        buf = jax.tree.map(lambda b, gi: momentum * b + gi, buf, g)
        params = jax.tree.map(lambda p, b: p - lr * b, params, buf)
        return (params, stats, buf, lr), loss

    def member(carry, images, labels):
        if single_step:  # one step, no loop at all (XLA:CPU is slow inside while loops)
            carry, loss = step(carry, (images[0], labels[0]))
            return carry, loss[None]
        return jax.lax.scan(step, carry, (images, labels))

    return jax.jit(jax.vmap(member), donate_argnums=(0,))


def _time_calls(call, args_for, warmup: int, repeats: int):
    """Run `call(*args_for(i))` warmup + repeats times; returns (median s, all times).

    `call` returns (new first argument, outputs); the first argument is threaded through (it is
    donated by the compiled functions).
    """
    carry = None
    times = []
    for i in range(warmup + repeats):
        args = args_for(i, carry)
        t0 = time.perf_counter()
        carry, out = call(*args)
        jax.block_until_ready((carry, out))
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
    return statistics.median(times), times


def _compile(fn, *args):
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def bench_method(model_name: str, method_name: str, population: int, dtype: str, *,
                 batch_size: int, n_train: int, steps: int, num_classes: int, image_size: int,
                 channels: int, warmup: int, repeats: int, model_kwargs: dict,
                 limit_cache: dict, epoch_loop: str = "scan") -> dict:
    """One row: the engine's compiled pseudo-epoch and its limit, timed (see module doc)."""
    from ckd_jax.models import create_model
    from ckd_jax.train import student as S
    from ckd_jax.train.config import DistillConfig
    from ckd_jax.train.methods import build_method

    cfg = DistillConfig(student=model_name, student_kwargs=dict(model_kwargs),
                        batch_size=batch_size, compute_dtype=dtype,
                        **method_overrides(method_name)).validate()
    method = build_method(cfg)
    model = create_model(model_name, num_classes, **model_kwargs)
    mesh = S.make_mesh(1)
    spec = S.StepSpec(
        batch_size=batch_size, steps_per_epoch=steps, n_train=n_train, crop_size=image_size,
        padding=4, flip=True, mean=_MEAN[:channels], std=_STD[:channels], eval_crop=None,
        momentum=cfg.momentum, weight_decay=cfg.weight_decay, schedule="plateau",
        total_steps=steps, compute_dtype=dtype, group_forward=cfg.group_forward,
        has_remainder=False, remainder_weight=1.0, use_pool=False)
    images_per_step = batch_size * (method.tuple_size if method.sampling == "tuple" else 1)

    # Synthetic data of the real shapes, one copy broadcast to P members on the device.
    rng = np.random.default_rng(0)
    p = population
    img = jnp.asarray(rng.integers(0, 256, (n_train, image_size, image_size, channels),
                                   dtype=np.uint8))
    labels = rng.integers(0, num_classes, n_train).astype(np.int32)
    logits = jnp.asarray(rng.normal(0, 2, (n_train, num_classes)).astype(np.float32))
    bcast = lambda a: jnp.broadcast_to(a[None], (p,) + a.shape)
    aux = method.data_aux(labels) if method.data_aux else {}
    data = S.MemberData(
        images=bcast(img), labels=bcast(jnp.asarray(labels)), teacher_logits=bcast(logits),
        remainder_images=jnp.zeros((p, 1, image_size, image_size, channels), jnp.uint8),
        remainder_labels=jnp.zeros((p, 1), jnp.int32),
        tuple_pool=jnp.zeros((p, 1, max(1, method.tuple_size)), jnp.int32),
        aux={k: bcast(jnp.asarray(v)) for k, v in aux.items()})
    keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(p))
    lrs = jnp.full((p,), 0.01, jnp.float32)
    state = S.init_state(model, method, keys, lrs, (image_size, image_size, channels),
                         num_classes, n_train)
    active = jnp.ones((p,), bool)
    # Method and limit use the same loop: "scan" (the accelerator path, the default) or
    # "python" (one compiled step per host iteration; much faster on XLA:CPU).
    epoch_fn = S.make_train_epoch(model, method, spec, mesh, loop=epoch_loop)
    epoch_keys = [jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, i)
                  for i in range(warmup + repeats + 1)]
    if epoch_loop == "scan":
        compiled, compile_s = _compile(epoch_fn, state, data, epoch_keys[0], active)
    else:  # no ahead-of-time lowering for a host loop: time the first call instead
        t0 = time.perf_counter()
        state, _ = epoch_fn(state, data, epoch_keys[-1], active)
        jax.block_until_ready(state)
        compiled, compile_s = epoch_fn, time.perf_counter() - t0
    t_method, _ = _time_calls(
        compiled, lambda i, c: (state if c is None else c, data, epoch_keys[i], active),
        warmup, repeats)
    state = data = None  # free the device copies before the limit's data

    lkey = (model_name, p, dtype, images_per_step)
    if lkey not in limit_cache:
        limit_cache[lkey] = bench_limit(model, p, dtype, images_per_step, steps=steps,
                                        num_classes=num_classes, image_size=image_size,
                                        channels=channels, warmup=warmup, repeats=repeats,
                                        momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                        epoch_loop=epoch_loop)
    lim = limit_cache[lkey]
    img_total = steps * images_per_step * p
    return {
        "model": model_name, "method": method_name, "population": p, "dtype": dtype,
        "images_per_step": images_per_step, "steps_per_call": steps,
        "compile_s": compile_s, "call_s": t_method, "steps_per_s": steps / t_method,
        "images_per_s": img_total / t_method, "limit_compile_s": lim["compile_s"],
        "limit_call_s": lim["call_s"], "limit_images_per_s": img_total / lim["call_s"],
        "x_limit": t_method / lim["call_s"],
    }


def bench_limit(model, p: int, dtype: str, images_per_step: int, *, steps: int,
                num_classes: int, image_size: int, channels: int, warmup: int, repeats: int,
                momentum: float, weight_decay: float, epoch_loop: str = "scan") -> dict:
    """Time `make_limit_epoch` on pre-normalised device images [P, steps, N, H, W, C].

    With epoch_loop="python" the limit is the same step compiled alone and called once per host
    iteration, like the engine's python loop.
    """
    fn = make_limit_epoch(model, dtype, momentum, weight_decay,
                          single_step=epoch_loop == "python")
    key = jax.random.PRNGKey(0)
    shape = (p, steps, images_per_step, image_size, image_size, channels)
    x_dtype = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
    images = jax.random.normal(key, shape, x_dtype)
    labels = jax.random.randint(key, shape[:3], 0, num_classes)

    def init(k):
        v = model.init(k, jnp.zeros((1, image_size, image_size, channels)), train=False)
        params, stats = v["params"], v.get("batch_stats", {})
        return params, stats, jax.tree.map(jnp.zeros_like, params), jnp.float32(0.01)

    carry = jax.jit(jax.vmap(init))(jax.random.split(key, p))
    if epoch_loop == "python":
        one, compile_s = _compile(fn, carry, images[:, :1], labels[:, :1])

        def compiled(c, x, y):
            losses = []
            for t in range(steps):
                c, loss = one(c, x[:, t:t + 1], y[:, t:t + 1])
                losses.append(loss)
            return c, losses
    else:
        compiled, compile_s = _compile(fn, carry, images, labels)
    t, _ = _time_calls(compiled, lambda i, c: (carry if c is None else c, images, labels),
                       warmup, repeats)
    return {"compile_s": compile_s, "call_s": t}


def goal_text(row: dict, device_kind: str) -> str:
    """The issue's goals that apply to a row, with met / NOT met (never faked)."""
    goals = []
    if row["method"].startswith("ckd"):
        ok = row["x_limit"] <= 1.2
        goals.append(f"<=1.2x limit: {'met' if ok else 'NOT met'}")
    if row["model"] == "resnet32" and row["method"] in ("ckd_k2", "ckd"):
        target = {1: 50_000, 32: 300_000}.get(row["population"])
        if target is not None:
            ok = row["images_per_s"] > target
            where = ("" if "H100" in device_kind
                     else f" (goal is for one H100; ran on {device_kind})")
            goals.append(f">{target:,} img/s: {'met' if ok else 'NOT met'}{where}")
    return "; ".join(goals)


def markdown(rows: list[dict], header: dict) -> str:
    lines = [f"# Student-step throughput: {header['device_kind']} ({header['platform']}), "
             f"jax {header['jax_version']}, 1 device",
             "",
             f"batch {header['batch_size']} (tuples for CKD), {header['steps']} steps per call, "
             f"n_train {header['n_train']}, {header['num_classes']} classes, images "
             f"{header['image_size']}x{header['image_size']}x{header['channels']}; epoch loop "
             f"{header['epoch_loop']}; median of "
             f"{header['repeats']} calls after {header['warmup']} warm-up; compile timed "
             f"separately (persistent cache: {header['compilation_cache'] or 'off'}). "
             f"x limit = call time / limit call time (bare CE step on pre-normalised images).",
             "",
             "| model | method | P | dtype | img/step | compile s | ms/call | steps/s | img/s "
             "(total) | limit img/s | x limit | goal |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['method']} | {r['population']} | {r['dtype']} | "
            f"{r['images_per_step']} | {r['compile_s']:.1f} | {1000 * r['call_s']:.1f} | "
            f"{r['steps_per_s']:.1f} | {r['images_per_s']:,.0f} | "
            f"{r['limit_images_per_s']:,.0f} | {r['x_limit']:.2f} | {r['goal']} |")
    return "\n".join(lines) + "\n"


def _list(text: str, kind=str) -> list:
    return [kind(v.strip()) for v in text.split(",") if v.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=_list, default=list(DEFAULT_MODELS))
    ap.add_argument("--methods", type=_list, default=list(METHODS))
    ap.add_argument("--populations", type=lambda t: _list(t, int),
                    default=list(DEFAULT_POPULATIONS))
    ap.add_argument("--dtypes", type=_list, default=list(DEFAULT_DTYPES))
    ap.add_argument("--batch-size", type=int, default=64, help="samples (tuples) per step")
    ap.add_argument("--n-train", type=int, default=4000,
                    help="teacher-labelled samples per member (paper: 0.8 S, S <= 6000)")
    ap.add_argument("--steps", type=int, default=None,
                    help="steps per call (default: the pseudo-epoch, ceil(n_train / batch))")
    ap.add_argument("--num-classes", type=int, default=100)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--model-kwargs", type=json.loads, default={},
                    help='JSON kwargs for create_model, e.g. \'{"width": 8}\' for tiny_cnn')
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true",
                    help="CPU smoke setting: tiny_cnn width 4, ckd_k2, P=1, float32, "
                         "batch 16, 4 steps, 16x16 images, 10 classes, 2 repeats")
    ap.add_argument("--json", help="write the rows and header to this JSON file")
    ap.add_argument("--epoch-loop", choices=("scan", "python"), default="scan",
                    help="scan: a pseudo-epoch as one lax.scan (the accelerator path); python: "
                         "a host loop over one compiled step (the engine's CPU path); the "
                         "limit uses the same loop")
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.methods, args.populations = ["tiny_cnn"], ["ckd_k2"], [1]
        args.dtypes, args.batch_size, args.n_train, args.steps = ["float32"], 16, 64, 4
        args.num_classes, args.image_size, args.repeats = 10, 16, 2
        args.model_kwargs = {"width": 4}

    # Every choice checked before any compile.
    from ckd_jax.models import model_names
    from ckd_jax.train.config import COMPUTE_DTYPES
    from ckd_jax.train.student import steps_per_pseudo_epoch

    for m in args.models:
        if m not in model_names():
            raise SystemExit(f"unknown model {m!r}; available: {', '.join(model_names())}")
    for m in args.methods:
        try:
            method_overrides(m)
        except ValueError as e:
            raise SystemExit(str(e)) from None
    for d in args.dtypes:
        if d not in COMPUTE_DTYPES:
            raise SystemExit(f"unknown dtype {d!r}; accepted: {', '.join(COMPUTE_DTYPES)}")
    if any(p < 1 for p in args.populations) or args.repeats < 1 or args.warmup < 0:
        raise SystemExit("populations and repeats must be >= 1, warmup >= 0")
    steps = args.steps or steps_per_pseudo_epoch(args.n_train, args.batch_size)

    dev = jax.devices()[0]
    header = {"device_kind": dev.device_kind, "platform": dev.platform,
              "jax_version": jax.__version__, "batch_size": args.batch_size, "steps": steps,
              "n_train": args.n_train, "num_classes": args.num_classes,
              "image_size": args.image_size, "channels": args.channels,
              "warmup": args.warmup, "repeats": args.repeats, "epoch_loop": args.epoch_loop,
              "compilation_cache": jax.config.jax_compilation_cache_dir}
    rows = []
    limit_cache: dict = {}
    for model in args.models:
        for dtype in args.dtypes:
            for p in args.populations:
                for method in args.methods:
                    row = bench_method(model, method, p, dtype, batch_size=args.batch_size,
                                       n_train=args.n_train, steps=steps,
                                       num_classes=args.num_classes,
                                       image_size=args.image_size, channels=args.channels,
                                       warmup=args.warmup, repeats=args.repeats,
                                       model_kwargs=args.model_kwargs,
                                       limit_cache=limit_cache, epoch_loop=args.epoch_loop)
                    row["goal"] = goal_text(row, dev.device_kind)
                    rows.append(row)
                    print(f"  {model} {method} P={p} {dtype}: {row['images_per_s']:,.0f} img/s, "
                          f"x limit {row['x_limit']:.2f}", file=sys.stderr, flush=True)
    print(markdown(rows, header))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"header": header, "rows": rows}, f, indent=1)
    if any(not math.isfinite(r["call_s"]) for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    from ckd_jax.cli import run_command  # a bad input: one line on stderr, exit status 2

    sys.exit(run_command(main))
