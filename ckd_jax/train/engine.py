"""The one training engine, for students and teachers alike: the compiled step (sampling,
gather, augmentation, forward, loss and update on device), the population of members, and
evaluation. `ckd_jax.train.distill` (student runs) and `ckd_jax.train.supervised` (teacher
runs) are the two front ends over it.

Data flow of one pseudo-epoch (docs/design.md), all inside one `jax.jit`:
  draw batch/tuple indices with `jax.random` -> gather uint8 images, labels and logit-table rows
  -> random crop + flip -> normalise -> (mix) -> student forward -> method loss -> SGD update,
repeated `steps_per_epoch` times by `lax.scan`, and `vmap`ped over the population axis (members
differ in seed, learning rate and their own budgeted subset). Python runs only between
pseudo-epochs.

Data parallelism: a 1-D `data` mesh; every array that enters the step is replicated and the
per-step batch is constrained to `P('data')` right after the gather, so XLA splits the forward,
backward and BatchNorm reductions across devices. The math is the same on 1 or 8 devices
(BatchNorm statistics are over the global batch), up to reduction order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ckd_jax.data.augment import center_crop, normalize, random_crop_flip
from ckd_jax.losses import cross_entropy
from ckd_jax.losses.sampling import epoch_indices
from ckd_jax.train import optim
from ckd_jax.train.choices import MEMBER_LOOPS, resolve_epoch_loop
from ckd_jax.train.methods import FeatureShapes, LossInputs, Method

Array = jax.Array


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D `data` mesh over the first `num_devices` devices (default: all). The devices of
    every process (`jax.devices()`): with `jax.distributed` several processes form one mesh and
    the engine's replicated host arrays are placed on it by `jax.device_put`."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(f"num_devices={num_devices} must be in [1, {len(devices)}]")
    if jax.process_count() > 1 and n != len(devices):
        raise ValueError(f"num_devices={num_devices}: with {jax.process_count()} processes the "
                         f"mesh spans all {len(devices)} devices (leave it unset)")
    return Mesh(np.asarray(devices[:n]), ("data",), axis_types=(AxisType.Auto,))


class MemberData(NamedTuple):
    """Training data of every population member, stacked on a leading member axis [M, ...].

    images uint8 [M, n, H, W, C]; labels int32 [M, n]; teacher_logits f32 [M, n, C] (row i is
    the cached teacher output for images[:, i]); remainder_* the labelled remainder (CE only,
    never shown to the teacher; [M, 1, ...] dummies when unused); tuple_pool int32 [M, pool, k]
    (the paper's fixed tuple pool, [M, 1, k] dummy when unused); aux: the method's host-side
    per-member arrays (CRD class index); teacher_features: white-box methods only (else None),
    {teacher layer: [M, n, ...] float32 or bfloat16}, cached with the logits (same view).
    """

    images: Array
    labels: Array
    teacher_logits: Array
    remainder_images: Array
    remainder_labels: Array
    tuple_pool: Array
    aux: Any
    teacher_features: Any = None


class TrainState(NamedTuple):
    """Per-member training state, stacked on the member axis.

    params: {"student": ..., "extra": ...} (extra: the method's trainable heads);
    batch_stats: the student's BatchNorm running statistics; momentum: SGD momentum buffers
    (optax.trace state); extra_state: the method's non-trainable state (CRD memory banks);
    lr: current base learning rate (divided by 10 on plateaus); step: global step count.
    """

    params: Any
    batch_stats: Any
    momentum: Any
    extra_state: Any
    lr: Array
    step: Array


@dataclass(frozen=True)
class StepSpec:
    """Static facts the compiled step is specialised on (one compile per distinct spec)."""

    batch_size: int
    steps_per_epoch: int
    n_train: int
    crop_size: int
    padding: int
    flip: bool
    mean: tuple
    std: tuple
    eval_crop: int | None
    momentum: float
    weight_decay: float
    schedule: str  # optim.SCHEDULES: "plateau" (constant within phases), "cosine", ...
    total_steps: int  # cosine / one-cycle horizon
    compute_dtype: str
    group_forward: str
    has_remainder: bool
    remainder_weight: float
    use_pool: bool
    # Optimiser facts beyond the students' (teachers' recipes, ckd_jax.train.supervised):
    nesterov: bool = False
    milestones: tuple = ()  # multistep milestones, in global steps
    lr_factor: float = 0.1  # multistep factor
    warmup_steps: int = 0  # cosine warm-up


def steps_per_pseudo_epoch(n_train: int, batch_size: int) -> int:
    """The paper's pseudo-epoch: ceil(train size / batch) steps."""
    return math.ceil(n_train / batch_size)


# ------------------------------------------------------------------------------------------
# forward pass
# ------------------------------------------------------------------------------------------
def _forward_features(model, spec: StepSpec, params, batch_stats, x, layers=()):
    """Train-mode forward; returns (float32 logits, {layer: float32 features}, batch_stats).

    With `layers` empty the model is called without `return_features` (the same program as
    before white-box methods existed) and the feature dict is empty.
    """
    if spec.compute_dtype == "bfloat16":
        params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
        x = x.astype(jnp.bfloat16)
    variables = {"params": params}
    if batch_stats:
        variables["batch_stats"] = batch_stats
    feats = {}
    if layers:
        (all_feats, logits), updates = model.apply(variables, x, train=True,
                                                   return_features=True, mutable=["batch_stats"])
        feats = {i: all_feats[i].astype(jnp.float32) for i in layers}
    else:
        logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    new_stats = updates.get("batch_stats", batch_stats)
    new_stats = jax.tree.map(lambda new, old: new.astype(old.dtype), new_stats, batch_stats)
    return logits.astype(jnp.float32), feats, new_stats


def _forward(model, spec: StepSpec, params, batch_stats, x):
    """Train-mode forward; returns (float32 logits, new batch_stats)."""
    logits, _, stats = _forward_features(model, spec, params, batch_stats, x)
    return logits, stats


def _student_outputs(model, method: Method, spec: StepSpec, params, batch_stats, x):
    """(logits, {layer: features}, batch_stats) of a batch [B, ...] (logits [B, C], features
    [B, ...]) or a tuple batch [B, k, ...] (logits [B, k, C], features [B, k, ...]); features
    only for `method.student_layers`."""
    layers = method.student_layers
    if method.sampling == "sample":
        return _forward_features(model, spec, params, batch_stats, x, layers)
    b, k = x.shape[:2]
    flat = lambda a: a.reshape((-1,) + a.shape[2:])
    unflat = lambda a, m: a.reshape((b, m) + a.shape[1:])
    if spec.group_forward == "joint":
        logits, feats, stats = _forward_features(model, spec, params, batch_stats, flat(x),
                                                 layers)
        return unflat(logits, k), {i: unflat(f, k) for i, f in feats.items()}, stats
    # The paper: P members and N members as two forward passes (BN statistics per group).
    n_pos = method.n_pos
    lp, fp, stats = _forward_features(model, spec, params, batch_stats, flat(x[:, :n_pos]),
                                      layers)
    ln, fn, stats = _forward_features(model, spec, params, stats, flat(x[:, n_pos:]), layers)
    cat = lambda p, n: jnp.concatenate([unflat(p, n_pos), unflat(n, k - n_pos)], 1)
    return cat(lp, ln), {i: cat(fp[i], fn[i]) for i in layers}, stats


# ------------------------------------------------------------------------------------------
# one member: epoch of steps
# ------------------------------------------------------------------------------------------
def _epoch_indices(method: Method, spec: StepSpec, data: MemberData, key):
    """Sample indices for a whole pseudo-epoch: [S, B] or [S, B, k] (S steps)."""
    return epoch_indices(key, method.sampling, steps=spec.steps_per_epoch,
                         batch_size=spec.batch_size, n=spec.n_train, k=method.tuple_size,
                         pool=data.tuple_pool if spec.use_pool else None)


def _augment(spec: StepSpec, key, images_u8):
    """uint8 [..., H, W, C] -> normalised float32 augmented views, same leading dims."""
    lead = images_u8.shape[:-3]
    flat = images_u8.reshape((-1,) + images_u8.shape[-3:])
    out = random_crop_flip(key, flat, crop_size=spec.crop_size, padding=spec.padding,
                           flip=spec.flip)
    out = normalize(out, spec.mean, spec.std)
    return out.reshape(lead + out.shape[1:])


def _make_member_epoch(model, method: Method, spec: StepSpec, shard: Callable):
    def step(state, inputs, data):
        idx, key = inputs
        k_aug, k_mix, k_loss, k_rem, k_remaug = jax.random.split(key, 5)
        images = shard(_augment(spec, k_aug, data.images[idx]))
        labels = data.labels[idx]
        teacher = data.teacher_logits[idx]
        teacher_feats = None
        if method.teacher_layers:  # gathered like the logits; stored f32 or bf16
            teacher_feats = {i: shard(data.teacher_features[i][idx].astype(jnp.float32))
                             for i in method.teacher_layers}
        mix = None
        if method.mix is not None:
            images, mix = method.mix(k_mix, images)

        def loss_fn(params):
            logits, feats, stats = _student_outputs(model, method, spec, params["student"],
                                                    state.batch_stats, images)
            loss, new_extra_state, metrics = method.loss(LossInputs(
                logits=logits, teacher_logits=teacher, labels=labels, sample_idx=idx,
                extra_params=params["extra"], extra_state=state.extra_state,
                data_aux=data.aux, mix=mix, key=k_loss,
                features=feats if method.student_layers else None,
                teacher_features=teacher_feats))
            if spec.has_remainder:
                # Reviewers' setting: the rest of the train split keeps its labels (CE only).
                r = data.remainder_labels.shape[0]
                ridx = jax.random.randint(k_rem, (spec.batch_size,), 0, r)
                rimg = shard(_augment(spec, k_remaug, data.remainder_images[ridx]))
                rlogits, stats = _forward(model, spec, params["student"], stats, rimg)
                rce = cross_entropy(rlogits, data.remainder_labels[ridx])
                loss = loss + spec.remainder_weight * rce
                metrics = {**metrics, "remainder_ce": rce}
            return loss, (stats, new_extra_state, metrics)

        (loss, (stats, extra_state, metrics)), grads = jax.value_and_grad(
            loss_fn, has_aux=True)(state.params)
        # torch.optim.SGD (ckd_jax.train.optim): weight decay added to the gradient (the
        # student and the method's heads, as the authors' optimiser holds both), momentum
        # buf = m * buf + g, p -= lr * buf; lr = this member's base rate under the schedule.
        lr = optim.scheduled_lr(spec.schedule, state.lr, state.step,
                                total_steps=spec.total_steps, milestones=spec.milestones,
                                factor=spec.lr_factor, warmup_steps=spec.warmup_steps)
        params, momentum = optim.sgd_update(grads, state.momentum, state.params, lr,
                                            momentum=spec.momentum,
                                            weight_decay=spec.weight_decay,
                                            nesterov=spec.nesterov)
        new_state = TrainState(params, stats, momentum, extra_state, state.lr, state.step + 1)
        return new_state, {"loss": loss, **metrics}

    def plan(data: MemberData, key):
        """Indices [S, B(, k)] and step keys [S] of one pseudo-epoch."""
        k_idx, k_steps = jax.random.split(key)
        return (_epoch_indices(method, spec, data, k_idx),
                jax.random.split(k_steps, spec.steps_per_epoch))

    def masked_step(state, inputs, data, active):
        new_state, metrics = step(state, inputs, data)
        # Members that finished the protocol keep their state (the population runs on).
        return jax.tree.map(lambda a, b: jnp.where(active, a, b), new_state, state), metrics

    def member_epoch(state: TrainState, data: MemberData, key, active):
        idx, keys = plan(data, key)
        new_state, metrics = jax.lax.scan(lambda st, xs: masked_step(st, xs, data, active),
                                          state, (idx, keys))
        return new_state, jax.tree.map(jnp.mean, metrics)

    return member_epoch, plan, masked_step


# ------------------------------------------------------------------------------------------
# public builders
# ------------------------------------------------------------------------------------------
class _PythonLoopEpoch:
    """The same pseudo-epoch as the `lax.scan` version, one compiled step per Python iteration.

    XLA:CPU runs convolution gradients inside a `while` loop many times slower than the same
    step compiled alone, so on CPU the scan is replaced by a host loop over one jitted step.
    Same random numbers, same updates, same metrics (tested against the scan version).
    """

    def __init__(self, plan, masked_step, steps: int):
        self.steps = steps
        self._plan = jax.jit(jax.vmap(plan))
        self._step = jax.jit(jax.vmap(masked_step), donate_argnums=(0,))

    def __call__(self, state, data, keys, active):
        idx, step_keys = self._plan(data, keys)  # [M, S, ...], [M, S, 2]
        metrics = []
        for t in range(self.steps):
            state, m = self._step(state, (idx[:, t], step_keys[:, t]), data, active)
            metrics.append(m)
        return state, jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs), axis=0), *metrics)

    def _cache_size(self) -> int:
        return max(self._plan._cache_size(), self._step._cache_size())


def resolve_member_loop(member_loop: str, mesh: Mesh) -> str:
    """"auto" -> "sequential" on CPU, "vmap" elsewhere; other values are checked and kept."""
    if member_loop not in MEMBER_LOOPS:
        raise ValueError(f"member_loop={member_loop!r}; accepted: {', '.join(MEMBER_LOOPS)}")
    if member_loop == "auto":
        return "sequential" if mesh.devices.flat[0].platform == "cpu" else "vmap"
    return member_loop


class _OneMemberAtATime:
    """A compiled population function `f(*args)` (vmapped over a leading member axis) run one
    member at a time: each call slices member m's rows out of the member-axis arguments, calls
    the same function compiled for M = 1, and stacks the outputs back to [M, ...].

    Why: on XLA:CPU, `vmap` over members turns every convolution into a grouped one; three
    resnet8 members take 2.1x (ce) to 2.7x (ckd_k2) as long vmapped as one at a time
    (docs/performance.md, "Population members: sequential on CPU instead of vmapped");
    accelerators keep the vmap.
    Members are independent, so the results equal the vmapped ones up to float reduction order
    (tests/test_member_loop.py). Arguments that do not change between calls (the training data,
    the validation images) are split once and the pieces reused while the same object is passed.

    `member_args[i]` says whether positional argument i carries the member axis (False: shared
    by every member, e.g. the test set). With `skip_arg` = the index of a boolean [M] "active"
    argument, members that are not active are not run at all: their state outputs are their
    inputs unchanged (what the masked step would return) and their other outputs NaN (the
    engine never reads a finished member's training metrics).
    """

    def __init__(self, fn, member_args: tuple[bool, ...], *, cached_args: tuple[int, ...] = (),
                 skip_arg: int | None = None, state_arg: int = 0):
        self.fn = fn
        self.member_args = member_args
        self.cached_args = cached_args
        self.skip_arg = skip_arg
        self.state_arg = state_arg
        self._cache: dict[int, tuple[Any, list]] = {}
        self._split = jax.jit(lambda tree, m: [jax.tree.map(lambda a, i=i: a[i:i + 1], tree)
                                               for i in range(m)], static_argnums=1)
        self._stack = jax.jit(lambda trees: jax.tree.map(lambda *xs: jnp.concatenate(xs),
                                                         *trees))

    def _pieces(self, i: int, arg, m: int) -> list:
        if i in self.cached_args:
            hit = self._cache.get(i)
            if hit is not None and hit[0] is arg:
                return hit[1]
            pieces = self._split(arg, m)
            self._cache[i] = (arg, pieces)
            return pieces
        return self._split(arg, m)

    def __call__(self, *args):
        # The member count: the leading dim of any member-axis leaf (batch_stats may be empty).
        m = next(leaf.shape[0] for a, has in zip(args, self.member_args) if has
                 for leaf in jax.tree.leaves(a))
        if m == 1:
            return self.fn(*args)
        pieces = [self._pieces(i, a, m) if has else None
                  for i, (a, has) in enumerate(zip(args, self.member_args))]
        run = (np.ones(m, bool) if self.skip_arg is None
               else np.asarray(args[self.skip_arg], bool))
        outs = [None] * m
        for j in np.flatnonzero(run):
            outs[j] = self.fn(*[p[j] if p is not None else a for p, a in zip(pieces, args)])
        if not run.all():
            template = outs[int(np.flatnonzero(run)[0])] if run.any() else None
            for j in np.flatnonzero(~run):
                outs[j] = self._idle_output(template, pieces[self.state_arg][j], args, pieces, j)
        return self._stack(outs)

    def _idle_output(self, template, state, args, pieces, j):
        """What an inactive member returns: its state unchanged, NaN metrics."""
        if template is None:  # nobody ran: shapes from the abstract evaluation
            template = jax.eval_shape(self.fn, *[p[j] if p is not None else a
                                                 for p, a in zip(pieces, args)])
        metrics = jax.tree.map(lambda t: jnp.full(t.shape, jnp.nan, t.dtype), template[1])
        return state, metrics

    def _cache_size(self) -> int:
        return self.fn._cache_size()


def make_train_epoch(model, method: Method, spec: StepSpec, mesh: Mesh, loop: str = "auto",
                     member_loop: str = "auto"):
    """Compiled `(state, data, keys [M], active [M]) -> (state, metrics {name: [M]})`.

    One call runs one pseudo-epoch of `spec.steps_per_epoch` steps for every member. The state
    argument is donated (updated in place on the device). `loop`: "scan" (the whole pseudo-epoch
    as one `lax.scan`, the accelerator path), "python" (a host loop over one compiled step, much
    faster on XLA:CPU) or "auto" (scan except on CPU). `member_loop`: "vmap" (all members in one
    program, the accelerator path), "sequential" (one member after another through the program
    compiled for one member; finished members are not run; the CPU path, `_OneMemberAtATime`)
    or "auto" (sequential on CPU).
    """
    loop = resolve_epoch_loop(loop, mesh.devices.flat[0].platform)
    member_loop = resolve_member_loop(member_loop, mesh)
    batch_sharding = NamedSharding(mesh, P("data"))
    shard = lambda x: jax.lax.with_sharding_constraint(x, batch_sharding)
    member_epoch, plan, masked_step = _make_member_epoch(model, method, spec, shard)
    if loop == "python":
        epoch = _PythonLoopEpoch(plan, masked_step, spec.steps_per_epoch)
    else:
        epoch = jax.jit(jax.vmap(member_epoch), donate_argnums=(0,))
    if member_loop == "sequential":
        return _OneMemberAtATime(epoch, (True, True, True, True), cached_args=(1,), skip_arg=3)
    return epoch


def _chunked(images, labels, batch_size: int, multiple: int = 1):
    """Pad [N, ...] images / [N] labels to whole chunks: ([n, B, ...], [n, B]); pad label -1.

    B = `batch_size`, or N rounded up to a `multiple` (the device count) when that is smaller:
    a 200-image validation set is not padded to a 1,000-image chunk (5x the work)."""
    n = images.shape[0]
    batch_size = min(batch_size, -(-n // multiple) * multiple)
    chunks = math.ceil(n / batch_size)
    pad = chunks * batch_size - n
    images = jnp.pad(images, ((0, pad),) + ((0, 0),) * (images.ndim - 1))
    labels = jnp.pad(labels, (0, pad), constant_values=-1)
    return (images.reshape((chunks, batch_size) + images.shape[1:]),
            labels.reshape(chunks, batch_size))


def _make_eval_logits(model, spec: StepSpec, mesh: Mesh):
    """`(variables, uint8 images [B, H, W, C]) -> float32 logits [B, C]`: eval mode (running
    statistics), clean view (centre crop where the dataset has one), sharded over the mesh."""
    batch_sharding = NamedSharding(mesh, P("data"))

    def logits_of(variables, x):
        if spec.eval_crop is not None and spec.eval_crop != x.shape[1]:
            x = center_crop(x, spec.eval_crop)
        x = jax.lax.with_sharding_constraint(normalize(x, spec.mean, spec.std), batch_sharding)
        if spec.compute_dtype == "bfloat16":
            x = x.astype(jnp.bfloat16)
            variables = jax.tree.map(lambda p: p.astype(jnp.bfloat16), variables)
        return model.apply(variables, x, train=False).astype(jnp.float32)

    return logits_of


def _variables(params, batch_stats) -> dict:
    return {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}


def make_evaluate(model, spec: StepSpec, mesh: Mesh, batch_size: int, shared_images: bool,
                  calibrated: bool = False, member_loop: str = "auto"):
    """Compiled `(params, batch_stats, images u8, labels) -> (top1 [M], top5 [M])` fractions.

    images/labels are [M, N, ...] per member (validation) or shared [N, ...] (test) when
    `shared_images`. Evaluation is in eval mode (running statistics), on the clean view (centre
    crop where the dataset has one), in chunks of `batch_size` sharded over the mesh.

    With `calibrated=True` the function takes a fifth argument, each member's logit offset
    [M, C] (`make_logit_offset`), and returns (top1, top5, top1_cal, top5_cal): the raw
    accuracies and those of the calibrated logits `logits - offset`, from one forward pass.
    `member_loop` as in `make_train_epoch` (members one at a time on CPU).
    """
    logits_of = _make_eval_logits(model, spec, mesh)

    def counts(logits, y):
        top = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
        hit = top == y[:, None]
        valid = y >= 0
        return jnp.stack([jnp.sum(hit[:, 0] & valid), jnp.sum(jnp.any(hit, axis=1) & valid)])

    def member_eval(params, batch_stats, images, labels, offset):
        n = images.shape[0]
        variables = _variables(params, batch_stats)

        def chunk(carry, xy):
            x, y = xy
            logits = logits_of(variables, x)
            c = counts(logits, y)
            if offset is not None:
                c = jnp.concatenate([c, counts(logits - offset, y)])
            return carry + c, None

        width = 2 if offset is None else 4
        total, _ = jax.lax.scan(chunk, jnp.zeros(width, jnp.int32),
                                _chunked(images, labels, batch_size, mesh.size))
        return tuple(total[i] / n for i in range(width))

    data_axes = (None, None) if shared_images else (0, 0)
    if calibrated:
        fn = jax.jit(jax.vmap(member_eval, in_axes=(0, 0, *data_axes, 0)))
    else:
        fn = jax.jit(jax.vmap(lambda p, b, x, y: member_eval(p, b, x, y, None),
                              in_axes=(0, 0, *data_axes)))
    if resolve_member_loop(member_loop, mesh) == "vmap":
        return fn
    per_member = not shared_images
    return _OneMemberAtATime(fn, (True, True, per_member, per_member) + (True,) * calibrated,
                             cached_args=(2, 3) if per_member else ())


def make_logit_offset(model, spec: StepSpec, mesh: Mesh, batch_size: int,
                      member_loop: str = "auto"):
    """Compiled `(params, batch_stats, images u8 [M, n, ...], teacher_logits [M, n, C]) ->
    offset [M, C]`: each member's shared logit offset (`ckd_jax.losses.estimate_logit_offset`)
    between its eval-mode, clean-view logits on its own teacher-labelled images and their cached
    teacher logits. No teacher call; the images are the member's training rows only."""
    from ckd_jax.losses.calibration import estimate_logit_offset

    logits_of = _make_eval_logits(model, spec, mesh)

    def member_offset(params, batch_stats, images, teacher_logits):
        variables = _variables(params, batch_stats)
        labels = jnp.zeros(images.shape[0], jnp.int32)
        xs, ys = _chunked(images, labels, batch_size, mesh.size)
        _, logits = jax.lax.scan(lambda c, x: (c, logits_of(variables, x)), None, xs)
        n_pad = xs.shape[0] * xs.shape[1]
        logits = logits.reshape(n_pad, -1)
        teacher = jnp.pad(teacher_logits.astype(jnp.float32),
                          ((0, n_pad - teacher_logits.shape[0]), (0, 0)))
        return estimate_logit_offset(logits, teacher, mask=ys.reshape(-1) >= 0)

    fn = jax.jit(jax.vmap(member_offset))
    if resolve_member_loop(member_loop, mesh) == "vmap":
        return fn
    return _OneMemberAtATime(fn, (True, True, True, True), cached_args=(2, 3))


def student_feature_shapes(model, sample_shape: tuple) -> list[tuple[int, ...]]:
    """Per-sample shapes (no batch dim) of the model's `return_features=True` list, computed
    abstractly (no FLOPs) for inputs of shape `sample_shape` (H, W, C)."""
    x = jnp.zeros((2,) + tuple(sample_shape), jnp.float32)

    def run(key):
        variables = model.init(key, x, train=False)
        return model.apply(variables, x, train=False, return_features=True)[0]

    return [tuple(f.shape[1:]) for f in jax.eval_shape(run, jax.random.PRNGKey(0))]


def init_state(model, method: Method, keys: Array, lrs: Array, sample_shape: tuple,
               num_classes: int, n_train: int,
               teacher_feature_shapes: dict | None = None) -> TrainState:
    """Stacked initial state for members with PRNG `keys` [M] and learning rates `lrs` [M].

    `sample_shape` is one input image's shape after augmentation (H, W, C).
    `teacher_feature_shapes` ({teacher layer: per-sample shape}, e.g. from the cached table) is
    required by methods with feature layers: their heads are sized from it and from the
    student's feature shapes (`student_feature_shapes`).
    """
    shapes = None
    if method.needs_features:
        missing = [i for i in method.teacher_layers if i not in (teacher_feature_shapes or {})]
        if missing:
            raise ValueError(f"method {method.name} needs teacher feature shapes of layers "
                             f"{list(method.teacher_layers)}; teacher_feature_shapes has "
                             f"{sorted(teacher_feature_shapes or {})}")
        s_shapes = student_feature_shapes(model, sample_shape)
        shapes = FeatureShapes(
            student={i: s_shapes[i] for i in method.student_layers},
            teacher={i: tuple(teacher_feature_shapes[i]) for i in method.teacher_layers})

    def one(key, lr):
        k_model, k_extra = jax.random.split(key)
        variables = model.init(k_model, jnp.zeros((1,) + tuple(sample_shape), jnp.float32),
                               train=False)
        student = variables["params"]
        batch_stats = variables.get("batch_stats", {})
        extra_params, extra_state = {}, {}
        if method.init_extra is not None and shapes is not None:
            extra_params, extra_state = method.init_extra(k_extra, num_classes, n_train, shapes)
        elif method.init_extra is not None:
            extra_params, extra_state = method.init_extra(k_extra, num_classes, n_train)
        params = {"student": student, "extra": extra_params}
        return TrainState(params, batch_stats, optim.sgd_init(params), extra_state,
                          jnp.asarray(lr, jnp.float32), jnp.int32(0))

    return jax.jit(jax.vmap(one))(keys, lrs)


def tree_select(mask: Array, on_true, on_false):
    """Per-member select between two stacked pytrees (mask [M] bool)."""
    def pick(a, b):
        m = mask.reshape(mask.shape + (1,) * (a.ndim - 1))
        return jnp.where(m, a, b)

    return jax.tree.map(pick, on_true, on_false)
