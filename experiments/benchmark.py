"""Throughput of the compiled student step against the limit of a bare training step.

  python experiments/benchmark.py                       # full grid (for a GPU)
  python experiments/benchmark.py --models resnet32 --methods ckd_k2 --populations 1,32 \
      --dtypes bfloat16 --json results/bench_h100.json
  python experiments/benchmark.py --quick               # tiny CPU smoke run (tiny_cnn, P=1)
  python experiments/benchmark.py --models resnet32 --methods ce --populations 1 \
      --dtypes float32 --steps 5 --n-train 320           # CPU: ckd_jax vs PyTorch, resnet32

For each student model, method, population size P and compute dtype the engine's pseudo-epoch
is built exactly as `run_distillation` builds it (`engine.make_train_epoch` on synthetic uint8
images and a random logit table of the real shapes: sampling, gather, augmentation, forward,
loss, SGD, `steps` steps per call, vmapped over P members) and timed. The *limit* is the same
student's forward + backward + SGD(momentum, weight decay) update on the same number of images
per step, already on the device and already normalised, with no sampling, no augmentation and
plain cross-entropy, as a `lax.scan` of the same length, vmapped over the same P members
(`make_limit_epoch` below). `x limit` = time of the method's call / time of the limit's call
(1.0 = no overhead).

Loop: `--epoch-loop auto` (the default) is what the engine does: a host loop over one compiled
step on CPU (XLA:CPU runs convolution gradients inside `while` loops many times slower), one
`lax.scan` per call on accelerators; method and limit always use the same loop. A progress line
goes to stderr before and after every row.

PyTorch column (CPU, float32, P=1 rows, when torch is importable; `--no-torch` skips it): the
limit's step (train-mode forward, cross-entropy, backward, `torch.optim.SGD` with the same
momentum and weight decay) of the model's PyTorch twin (tests/torch_zoo.py; a TinyCNN twin
here) on the same number of images per step, same steps per call, warm-up and repeats, timed in
the same command (`bench_torch_reference`), each torch call followed by one more call of the
limit, so both see the same machine load. `x torch` = median over the repeats of torch time /
ckd_jax limit time, i.e. ckd_jax img/s / torch img/s (> 1: ckd_jax's step is faster). The goal
column says whether the step is at least as fast.

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

import ckd_jax  # noqa: E402

ckd_jax.set_cpu_flags()  # our XLA:CPU speed flag, before jax starts (ckd_jax/__init__.py)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ckd_jax.train.choices import resolve_epoch_loop  # noqa: E402,F401 (tests call it here)

# name -> DistillConfig overrides. Plain method names of the registry are accepted too.
METHODS = ("ce", "kd", "ckd_k2", "ckd_k3", "mixup", "rkd", "crd")  # ckd_jax VARIANTS names
DEFAULT_MODELS = ("resnet32", "wrn_16_2", "vgg8")
DEFAULT_POPULATIONS = (1, 8, 32)
DEFAULT_DTYPES = ("float32", "bfloat16")
# CIFAR-100 statistics (the cifar100 spec, ckd_jax/data/specs.py; the paper's protocol:
# docs/method.md); the values only shift the synthetic inputs.
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


def _time_calls(call, args_for, warmup: int, repeats: int, last: dict | None = None):
    """Run `call(*args_for(i))` warmup + repeats times; returns (median s, all times).

    `call` returns (new first argument, outputs); the first argument is threaded through (it is
    donated by the compiled functions); `last["carry"]` gets the final one if `last` is given,
    and `last["cpu_s"]` the median CPU time of this process per call (all its threads: robust
    to other processes on the same core, unlike wall time).
    """
    carry = None
    times, cpu = [], []
    for i in range(warmup + repeats):
        args = args_for(i, carry)
        t0, c0 = time.perf_counter(), time.process_time()
        carry, out = call(*args)
        jax.block_until_ready((carry, out))
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if i >= warmup:
            times.append(dt)
            cpu.append(dc)
    if last is not None:
        last["carry"] = carry
        last["cpu_s"] = statistics.median(cpu)
    return statistics.median(times), times


def _compile(fn, *args):
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def bench_method(model_name: str, method_name: str, population: int, dtype: str, *,
                 batch_size: int, n_train: int, steps: int, num_classes: int, image_size: int,
                 channels: int, warmup: int, repeats: int, model_kwargs: dict,
                 limit_cache: dict, epoch_loop: str = "scan",
                 member_loop: str = "vmap") -> dict:
    """One row: the engine's compiled pseudo-epoch and its limit, timed (see module doc).
    `member_loop` as in `engine.make_train_epoch` ("sequential": the P members one after
    another through the program compiled for one; the limit stays vmapped over P)."""
    epoch_loop = resolve_epoch_loop(epoch_loop, jax.devices()[0].platform)
    from ckd_jax.data.specs import DatasetSpec
    from ckd_jax.models import create_model
    from ckd_jax.train import engine as S
    from ckd_jax.train.config import DistillConfig, make_step_spec
    from ckd_jax.train.methods import build_method

    cfg = DistillConfig(student=model_name, student_kwargs=dict(model_kwargs),
                        batch_size=batch_size, compute_dtype=dtype,
                        **method_overrides(method_name)).validate()
    method = build_method(cfg)
    model = create_model(model_name, num_classes, **model_kwargs)
    mesh = S.make_mesh(1)
    data_spec = DatasetSpec(mean=_MEAN[:channels], std=_STD[:channels], crop_size=image_size,
                            padding=4, flip=True)
    spec = make_step_spec(data_spec, n_train, batch_size=batch_size, epochs=1,
                          steps_per_epoch=steps, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, schedule="plateau", compute_dtype=dtype,
                          group_forward=cfg.group_forward)
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
    member_loop = S.resolve_member_loop(member_loop, mesh)
    epoch_fn = S.make_train_epoch(model, method, spec, mesh, loop=epoch_loop,
                                  member_loop=member_loop)
    if member_loop == "sequential" and p == 1:  # one member: the wrapper calls this directly
        epoch_fn = epoch_fn.fn
    epoch_keys = [jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, i)
                  for i in range(warmup + repeats + 1)]
    if epoch_loop == "scan" and (member_loop == "vmap" or p == 1):  # an AOT-compilable jit
        compiled, compile_s = _compile(epoch_fn, state, data, epoch_keys[0], active)
    else:  # no ahead-of-time lowering for a host loop: time the first call instead
        t0 = time.perf_counter()
        state, _ = epoch_fn(state, data, epoch_keys[-1], active)
        jax.block_until_ready(state)
        compiled, compile_s = epoch_fn, time.perf_counter() - t0
    timed = {}
    t_method, _ = _time_calls(
        compiled, lambda i, c: (state if c is None else c, data, epoch_keys[i], active),
        warmup, repeats, last=timed)
    timed.pop("carry")
    state = data = None  # free the device copies before the limit's data

    lkey = (model_name, p, dtype, images_per_step)
    if lkey not in limit_cache:
        limit_cache[lkey] = bench_limit(model, p, dtype, images_per_step, steps=steps,
                                        num_classes=num_classes, image_size=image_size,
                                        channels=channels, warmup=warmup, repeats=repeats,
                                        momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                        epoch_loop=epoch_loop,
                                        keep_rerun=jax.devices()[0].platform == "cpu"
                                        and p == 1 and dtype == "float32")
    lim = limit_cache[lkey]
    img_total = steps * images_per_step * p
    return {
        "model": model_name, "method": method_name, "population": p, "dtype": dtype,
        "member_loop": member_loop, "images_per_s_per_member": img_total / t_method / p,
        "images_per_step": images_per_step, "steps_per_call": steps,
        "compile_s": compile_s, "call_s": t_method, "call_cpu_s": timed["cpu_s"],
        "steps_per_s": steps / t_method,
        "images_per_s": img_total / t_method, "limit_compile_s": lim["compile_s"],
        "limit_call_s": lim["call_s"], "limit_images_per_s": img_total / lim["call_s"],
        "x_limit": t_method / lim["call_s"],
    }


def bench_limit(model, p: int, dtype: str, images_per_step: int, *, steps: int,
                num_classes: int, image_size: int, channels: int, warmup: int, repeats: int,
                momentum: float, weight_decay: float, epoch_loop: str = "scan",
                keep_rerun: bool = False) -> dict:
    """Time `make_limit_epoch` on pre-normalised device images [P, steps, N, H, W, C].

    With epoch_loop="python" the limit is the same step compiled alone and called once per host
    iteration, like the engine's python loop. `keep_rerun`: the result also holds "rerun", a
    function that times one more call (for the PyTorch column's interleaved timing; it keeps
    the images alive, so only CPU P=1 rows ask for it).
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
    last: dict = {}
    t, _ = _time_calls(compiled, lambda i, c: (carry if c is None else c, images, labels),
                       warmup, repeats, last)
    result = {"compile_s": compile_s, "call_s": t}
    if keep_rerun:
        def rerun() -> float:
            t0 = time.perf_counter()
            last["carry"], out = compiled(last["carry"], images, labels)
            jax.block_until_ready((last["carry"], out))
            return time.perf_counter() - t0

        result["rerun"] = rerun
    return result


class _TorchTinyCNN:
    """A PyTorch TinyCNN (ckd_jax.models.small) for the reference column of tiny_cnn rows."""

    @staticmethod
    def build(num_classes: int, width: int = 16, in_channels: int = 3):
        from torch import nn

        return nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(2 * width, num_classes))


def torch_reference_net(model_name: str, num_classes: int, model_kwargs: dict | None = None):
    """The PyTorch twin of a zoo model (tests/torch_zoo.py; tiny_cnn here), or None.

    None when torch is not importable or there is no twin (mlp, or tests/ absent).
    """
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    if model_name == "tiny_cnn":
        return _TorchTinyCNN.build(num_classes, **(model_kwargs or {}))
    tests_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "tests")
    if tests_dir not in sys.path and os.path.isdir(tests_dir):
        sys.path.append(tests_dir)
    try:
        import torch_zoo
    except ImportError:
        return None
    try:
        return torch_zoo.build(model_name, num_classes)
    except ValueError:
        return None


def bench_torch_reference(model_name: str, images_per_step: int, *, steps: int,
                          num_classes: int, image_size: int, channels: int, warmup: int,
                          repeats: int, momentum: float = 0.9, weight_decay: float = 5e-4,
                          model_kwargs: dict | None = None, channels_last: bool = False,
                          paired_call=None) -> dict | None:
    """PyTorch's time for the limit's step: the reference net in train mode, forward on
    `images_per_step` images already in memory, cross-entropy, backward,
    `torch.optim.SGD(lr, momentum, weight_decay)`; `steps` steps per call, median of `repeats`
    calls after `warmup`. Default threads, float32, NCHW (the reference code's format) unless
    `channels_last`. None when torch or the model's twin is missing.

    `paired_call` (the limit's `rerun`, which times one ckd_jax call of the same steps) is
    called after every torch call, so both are timed interleaved under the same machine load:
    then "x_torch" = median over the repeats of torch time / ckd_jax time, and
    "limit_images_per_s" = ckd_jax's median in this interleaved timing.
    """
    net = torch_reference_net(model_name, num_classes, model_kwargs)
    if net is None:
        return None
    import torch

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.train().to(memory_format=fmt)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=momentum,
                          weight_decay=weight_decay)
    x = torch.randn(images_per_step, channels, image_size, image_size).to(memory_format=fmt)
    y = torch.randint(0, num_classes, (images_per_step,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def call():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
        return loss.item()

    times, jax_times = [], []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        call()
        dt = time.perf_counter() - t0
        dj = paired_call() if paired_call is not None else None
        if i >= warmup:
            times.append(dt)
            jax_times.append(dj)
    t = statistics.median(times)
    out = {"torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
           "torch_call_s": t, "torch_images_per_s": steps * images_per_step / t}
    if paired_call is not None:
        out["x_torch"] = statistics.median(a / b for a, b in zip(times, jax_times))
        out["limit_images_per_s"] = steps * images_per_step / statistics.median(jax_times)
    return out


def add_torch_reference(row: dict, cache: dict, *, platform: str, **kw) -> dict:
    """Add `torch_images_per_s` and `x_torch` (= ckd_jax limit img/s / torch img/s; > 1 means
    ckd_jax's bare step is faster) to a CPU float32 P=1 row; None elsewhere or without torch.
    The torch step is timed once per (model, images per step) and cached; with `paired_call`
    in `kw` (see `bench_torch_reference`) the ratio is the interleaved one.
    """
    row.update(torch_images_per_s=None, x_torch=None)
    if platform != "cpu" or row["dtype"] != "float32" or row["population"] != 1:
        return row
    key = (row["model"], row["images_per_step"])
    if key not in cache:
        cache[key] = bench_torch_reference(row["model"], row["images_per_step"], **kw)
    ref = cache[key]
    if ref is not None:
        row["torch_images_per_s"] = ref["torch_images_per_s"]
        if "x_torch" in ref:
            row["x_torch"] = ref["x_torch"]
            row["limit_images_per_s_vs_torch"] = ref["limit_images_per_s"]
        else:
            row["x_torch"] = row["limit_images_per_s"] / ref["torch_images_per_s"]
    return row


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
    if row.get("x_torch") is not None:
        goals.append(f"step >= torch: {'met' if row['x_torch'] >= 1.0 else 'NOT met'}")
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
             f"x limit = call time / limit call time (bare CE step on pre-normalised images). "
             f"torch img/s: the same bare step of the PyTorch reference net (CPU, float32, "
             f"P=1 rows; {header.get('torch') or 'torch not importable'}), timed alternately "
             f"with the limit's step; x torch = median of the paired time ratios torch / "
             f"ckd_jax limit (> 1: ckd_jax faster).",
             "",
             "| model | method | P | members | dtype | img/step | compile s | ms/call | steps/s "
             "| img/s (total) | img/s per member | limit img/s | x limit | torch img/s | x torch "
             "| goal |",
             "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        t_ips, x_t = r.get("torch_images_per_s"), r.get("x_torch")
        lines.append(
            f"| {r['model']} | {r['method']} | {r['population']} | "
            f"{r.get('member_loop', 'vmap')} | {r['dtype']} | "
            f"{r['images_per_step']} | {r['compile_s']:.1f} | {1000 * r['call_s']:.1f} | "
            f"{r['steps_per_s']:.1f} | {r['images_per_s']:,.0f} | "
            f"{r.get('images_per_s_per_member', r['images_per_s'] / r['population']):,.0f} | "
            f"{r['limit_images_per_s']:,.0f} | {r['x_limit']:.2f} | "
            f"{'-' if t_ips is None else f'{t_ips:,.0f}'} | "
            f"{'-' if x_t is None else f'{x_t:.2f}'} | {r['goal']} |")
    return "\n".join(lines) + "\n"


def bench_row(args, model: str, method: str, p: int, dtype: str, steps: int, dev,
              caches: dict) -> dict:
    """One table row: the method against its limit, then the PyTorch column (CPU)."""
    row = bench_method(model, method, p, dtype, batch_size=args.batch_size,
                       n_train=args.n_train, steps=steps, num_classes=args.num_classes,
                       image_size=args.image_size, channels=args.channels,
                       warmup=args.warmup, repeats=args.repeats,
                       model_kwargs=args.model_kwargs, limit_cache=caches["limit"],
                       epoch_loop=args.epoch_loop, member_loop=args.member_loop)
    if args.no_torch:
        row.update(torch_images_per_s=None, x_torch=None)
    else:
        lim = caches["limit"].get((model, p, dtype, row["images_per_step"]), {})
        add_torch_reference(row, caches["torch"], platform=dev.platform, steps=steps,
                            num_classes=args.num_classes, image_size=args.image_size,
                            channels=args.channels, warmup=args.warmup,
                            repeats=args.repeats, model_kwargs=args.model_kwargs,
                            paired_call=lim.get("rerun"))
    row["goal"] = goal_text(row, dev.device_kind)
    return row


def run_rows(args, steps: int, dev) -> list[dict]:
    """Every (model, dtype, P, method) row, with a progress line on stderr before and after
    each (a CPU row can take minutes)."""
    rows = []
    caches: dict = {"limit": {}, "torch": {}}
    grid = [(m, d, p, meth) for m in args.models for d in args.dtypes
            for p in args.populations for meth in args.methods]
    for i, (model, dtype, p, method) in enumerate(grid, 1):
        print(f"[{i}/{len(grid)}] {model} {method} P={p} {dtype} ({args.epoch_loop} loop, "
              f"{steps} steps per call) ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        row = bench_row(args, model, method, p, dtype, steps, dev, caches)
        rows.append(row)
        jax_ips = row.get("limit_images_per_s_vs_torch", row["limit_images_per_s"])
        torch_text = ("" if row["x_torch"] is None else
                      f"; bare step, timed alternately: ckd_jax {jax_ips:,.0f} img/s, torch "
                      f"{row['torch_images_per_s']:,.0f} img/s, ratio {row['x_torch']:.2f}")
        print(f"  {model} {method} P={p} {dtype}: {row['images_per_s']:,.0f} img/s, "
              f"x limit {row['x_limit']:.2f}{torch_text} ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr, flush=True)
    return rows


# ------------------------------------------------------------------------------------------
# the whole loop: a real run_distillation against its compiled epoch
# ------------------------------------------------------------------------------------------
def _synthetic_cifar10(folder: str, n_train: int, n_test: int) -> str:
    """A CIFAR-10-python folder of random uint8 images (the official layout), for timing."""
    import pickle

    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)

    def batch(name, n):
        data = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                b"labels": rng.integers(0, 10, n).tolist()}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(data, f)

    per = -(-n_train // 5)
    for i in range(1, 6):
        batch(f"data_batch_{i}", per)
    batch("test_batch", n_test)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    return folder


def bench_whole_loop(model_name: str, method_name: str, *, subset_size: int, epochs: int,
                     dataset: str | None, data_path: str | None, workdir: str,
                     warmup: int = 1, repeats: int = 3, model_kwargs: dict | None = None,
                     compute_dtype: str = "float32", population: int = 1,
                     member_loop: str = "auto", base=None) -> dict:
    """Wall time per pseudo-epoch of a real `run_distillation` (validation, calibration offset,
    protocol, metrics, checkpoints included; compilation excluded: the first pseudo-epoch is
    dropped; the final test pass, once per run, is reported apart) against the compiled
    pseudo-epoch alone (`bench_method` at the same model, method, batch, B and steps).

    `dataset`/`data_path`: a CIFAR-like dataset to load (e.g. cifar10_jpeg and its .npz), or
    None for a synthetic CIFAR-10-python folder of random images written under `workdir`
    (S + 10000 train images, 1000 test). The teacher is a random tiny_cnn given in memory: its
    B calls per seed happen before the loop and are not timed.

    `population` P: the run has P members (seeds 1..P, one learning rate), and the compiled
    epoch it is compared with is the P-member one, both with `member_loop`.

    `base`: a study's DistillConfig (`--loop-config`) instead: its data, teacher (checkpoint,
    else the random one), student, protocol, evaluation, checkpoint and progress settings, with
    the method and S given here, its first learning rate, seeds 1..P, and `epochs` pseudo-epochs
    (the run is stopped there like a kill, so any schedule works; the final test is skipped).
    The mean per pseudo-epoch is reported beside the median: the periodic work (a test curve
    point every `eval_test_every`, a checkpoint every `checkpoint_seconds`) is in the mean only.
    """
    from ckd_jax.models import create_model
    from ckd_jax.train.config import DistillConfig
    from ckd_jax.train.distill import run_distillation

    out_dir = os.path.join(workdir, f"loop_{model_name}_{method_name}")
    if base is not None:
        cfg = base.replace(**method_overrides(method_name), subset_size=subset_size,
                           budget=None, student=model_name, out_dir=out_dir,
                           seeds=tuple(range(1, population + 1)),
                           learning_rates=base.learning_rates[:1], member_loop=member_loop,
                           logit_table_dir=None).validate()
        model_kwargs = cfg.student_kwargs
        compute_dtype = cfg.compute_dtype
    elif dataset is None:
        dataset, data_path = "cifar10", _synthetic_cifar10(
            os.path.join(workdir, "synthetic_cifar10"), subset_size + 10000, 1000)
    if base is None:
        cfg = DistillConfig(
            dataset=dataset, data_path=data_path, subset_size=subset_size, student=model_name,
            student_kwargs=dict(model_kwargs or {}), teacher="tiny_cnn",
            teacher_kwargs={"width": 8}, schedule="cosine", epochs=epochs,
            seeds=tuple(range(1, population + 1)), learning_rates=(0.05,),
            compute_dtype=compute_dtype, progress=False, member_loop=member_loop,
            out_dir=out_dir, **method_overrides(method_name)).validate()
    teacher = create_model("tiny_cnn", 10, width=8)
    t_vars = teacher.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
    given = {} if cfg.teacher_checkpoint else {"teacher_apply": teacher.apply,
                                               "teacher_variables": t_vars}
    ends, ends_cpu = [], []

    def on_epoch(_):
        ends.append(time.perf_counter())
        ends_cpu.append(time.process_time())

    t_start = time.perf_counter()
    summary = run_distillation(cfg, **given, on_epoch=on_epoch, resume=False,
                               stop_after_epochs=epochs if base else None)
    t_total = time.perf_counter() - t_start
    per_epoch = np.diff(ends)  # epoch 2..E: compilation excluded
    per_epoch_cpu = np.diff(ends_cpu)
    loop_s = float(statistics.median(per_epoch))
    n_train, steps = summary["budget"], summary["steps_per_epoch"]
    row = bench_method(model_name, method_name, population, compute_dtype,
                       batch_size=cfg.batch_size,
                       n_train=n_train, steps=steps, num_classes=10, image_size=32,
                       channels=3, warmup=warmup, repeats=repeats,
                       model_kwargs=dict(model_kwargs or {}), limit_cache={},
                       epoch_loop=cfg.epoch_loop, member_loop=summary["member_loop"])
    return {"model": model_name, "method": method_name, "subset_size": subset_size,
            "population": population, "member_loop": summary["member_loop"],
            "budget": n_train, "steps_per_epoch": steps, "epochs": epochs,
            "loop_epoch_s": loop_s, "loop_epoch_s_all": [float(x) for x in per_epoch],
            "loop_epoch_mean_s": float(np.mean(per_epoch)),
            "x_compiled_mean": float(np.mean(per_epoch)) / row["call_s"],
            # CPU time of this process (all threads), immune to other processes on the core
            "loop_epoch_cpu_s_all": [float(x) for x in per_epoch_cpu],
            "loop_epoch_cpu_mean_s": float(np.mean(per_epoch_cpu)),
            "loop_epoch_cpu_median_s": float(np.median(per_epoch_cpu)),
            "compiled_epoch_cpu_s": row["call_cpu_s"],
            "x_compiled_cpu_mean": float(np.mean(per_epoch_cpu)) / row["call_cpu_s"],
            "x_compiled_cpu_median": float(np.median(per_epoch_cpu)) / row["call_cpu_s"],
            "compiled_epoch_s": row["call_s"], "x_compiled": loop_s / row["call_s"],
            "run_total_s": t_total, "first_epoch_s": ends[0] - t_start if ends else math.nan}


def loop_markdown(r: dict) -> str:
    goal = "goal <= 1.1x on CPU (resnet8, S = 2000)"
    return ("| model | method | S | B | P | member loop | steps/epoch | whole loop s/epoch | "
            "compiled epoch s | loop / compiled |\n"
            "|---|---|---:|---:|---:|---|---:|---:|---:|---:|\n"
            f"| {r['model']} | {r['method']} | {r['subset_size']} | {r['budget']} | "
            f"{r['population']} | {r['member_loop']} | "
            f"{r['steps_per_epoch']} | {r['loop_epoch_s']:.3f} | {r['compiled_epoch_s']:.3f} | "
            f"{r['x_compiled']:.2f} |\n\nwhole loop = median wall time per pseudo-epoch of "
            f"run_distillation over epochs 2..{r['epochs']} (validation, calibration offset, "
            f"protocol, metrics and checkpoints included; compilation excluded); {goal}. "
            f"Mean instead of median (periodic test points and checkpoints included): "
            f"{r['loop_epoch_mean_s']:.3f} s, {r['x_compiled_mean']:.2f}x the compiled epoch; "
            f"share outside the compiled epoch {1 - 1 / r['x_compiled_mean']:.0%}. In CPU "
            f"time of the process (other processes on the core do not count): mean "
            f"{r['x_compiled_cpu_mean']:.2f}x, median {r['x_compiled_cpu_median']:.2f}x the "
            f"compiled epoch's {r['compiled_epoch_cpu_s']:.3f} s; share outside "
            f"{1 - 1 / r['x_compiled_cpu_mean']:.0%} (mean), "
            f"{1 - 1 / r['x_compiled_cpu_median']:.0%} (median)\n")


def _list(text: str, kind=str) -> list:
    return [kind(v.strip()) for v in text.split(",") if v.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=_list, default=list(DEFAULT_MODELS))
    ap.add_argument("--methods", type=_list, default=list(METHODS))
    ap.add_argument("--populations", type=lambda t: _list(t, int), default=None,
                    help=f"default {','.join(map(str, DEFAULT_POPULATIONS))}; with "
                         "--whole-loop: 1 (one real run per value)")
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
    ap.add_argument("--epoch-loop", choices=("auto", "scan", "python"), default="auto",
                    help="scan: a pseudo-epoch as one lax.scan (the accelerator path); python: "
                         "a host loop over one compiled step (the engine's CPU path); auto "
                         "(default): python on CPU, scan on accelerators, as the engine; the "
                         "limit uses the same loop")
    ap.add_argument("--member-loop", choices=("auto", "vmap", "sequential"), default="auto",
                    help="how the P members run (engine.make_train_epoch; auto: sequential on "
                         "CPU, vmap elsewhere)")
    ap.add_argument("--no-torch", action="store_true",
                    help="skip the PyTorch reference column (CPU float32 P=1 rows)")
    ap.add_argument("--whole-loop", metavar="MODEL:METHOD:S", default=None,
                    help="instead of the grid: time a real run_distillation per pseudo-epoch "
                         "against its compiled epoch, e.g. resnet8:ckd_k2:2000")
    ap.add_argument("--loop-epochs", type=int, default=6,
                    help="pseudo-epochs of the whole-loop run (the first is dropped)")
    ap.add_argument("--loop-dataset", default=None,
                    help="dataset of the whole-loop run (e.g. cifar10_jpeg; default: "
                         "synthetic CIFAR-10-shaped images)")
    ap.add_argument("--loop-path", default=None, help="its data_path")
    ap.add_argument("--loop-config", default=None,
                    help="a study config (.py) for the whole-loop run instead of the synthetic "
                         "one: its data, teacher, protocol, evaluation and checkpoint settings, "
                         "stopped after --loop-epochs")
    ap.add_argument("--loop-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a field of --loop-config (repeatable)")
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.methods, args.populations = ["tiny_cnn"], ["ckd_k2"], [1]
        args.dtypes, args.batch_size, args.n_train, args.steps = ["float32"], 16, 64, 4
        args.num_classes, args.image_size, args.repeats = 10, 16, 2
        args.model_kwargs = {"width": 4}

    if args.whole_loop is not None:
        args.populations = args.populations or [1]
        return _main_whole_loop(args)
    args.populations = args.populations or list(DEFAULT_POPULATIONS)
    # Every choice checked before any compile.
    from ckd_jax.models import model_names
    from ckd_jax.train.config import COMPUTE_DTYPES
    from ckd_jax.train.engine import steps_per_pseudo_epoch

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
    args.epoch_loop = resolve_epoch_loop(args.epoch_loop, dev.platform)
    torch_version = None
    if not args.no_torch and dev.platform == "cpu":
        try:
            import torch
            torch_version = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
        except ImportError:
            pass
    header = {"device_kind": dev.device_kind, "platform": dev.platform,
              "jax_version": jax.__version__, "batch_size": args.batch_size, "steps": steps,
              "n_train": args.n_train, "num_classes": args.num_classes,
              "image_size": args.image_size, "channels": args.channels,
              "warmup": args.warmup, "repeats": args.repeats, "epoch_loop": args.epoch_loop,
              "member_loop": args.member_loop,
              "compilation_cache": jax.config.jax_compilation_cache_dir,
              "torch": torch_version,
              "xla_flags": os.environ.get("XLA_FLAGS", "")}
    rows = run_rows(args, steps, dev)
    print(markdown(rows, header))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"header": header, "rows": rows}, f, indent=1)
    if any(not math.isfinite(r["call_s"]) for r in rows):
        return 1
    return 0


def _main_whole_loop(args) -> int:
    import tempfile

    parts = args.whole_loop.split(":")
    if len(parts) != 3 or not parts[2].isdigit():
        raise SystemExit(f"--whole-loop {args.whole_loop!r}: expected MODEL:METHOD:S, e.g. "
                         "resnet8:ckd_k2:2000")
    model, method, subset = parts[0], parts[1], int(parts[2])
    from ckd_jax.models import model_names

    if model not in model_names():
        raise SystemExit(f"unknown model {model!r}; available: {', '.join(model_names())}")
    method_overrides(method)  # unknown names: a one-line error
    if args.loop_epochs < 3:
        raise SystemExit(f"--loop-epochs {args.loop_epochs} must be >= 3 (the first is dropped)")
    dev = jax.devices()[0]
    print(f"whole loop: {model} {method} S={subset}, {args.loop_epochs} pseudo-epochs on "
          f"{dev.device_kind} ...", file=sys.stderr, flush=True)
    if any(p < 1 for p in args.populations):
        raise SystemExit(f"--populations {args.populations}: every population must be >= 1")
    base = None
    if args.loop_config is not None:
        from ckd_jax.train.config import apply_overrides, load_config_file

        base = apply_overrides(load_config_file(args.loop_config), args.loop_set)
    elif args.loop_set:
        raise SystemExit("--loop-set needs --loop-config")
    rows = []
    for population in args.populations:  # one real run per population size
        with tempfile.TemporaryDirectory() as work:
            r = bench_whole_loop(model, method, subset_size=subset, epochs=args.loop_epochs,
                                 dataset=args.loop_dataset, data_path=args.loop_path,
                                 workdir=work, warmup=args.warmup, repeats=args.repeats,
                                 model_kwargs=args.model_kwargs, population=population,
                                 member_loop=args.member_loop, base=base)
        r.update(device_kind=dev.device_kind, jax_version=jax.__version__)
        print(loop_markdown(r), flush=True)
        rows.append(r)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(rows if len(rows) > 1 else rows[0], f, indent=1)
    return 0


if __name__ == "__main__":
    from ckd_jax.cli import run_command  # a bad input: one line on stderr, exit status 2

    sys.exit(run_command(main))
