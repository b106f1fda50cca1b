"""Distillation methods as named configurations of the one training step.

A `Method` says how a step samples its batch (single samples, or tuples of k for CKD), whether
it mixes inputs, which extra trainable heads or state it owns (CRD, white-box regressors), which
intermediate features it needs (white-box methods: student features from the step's forward,
teacher features cached with the logits) and how the loss is computed from the student's
outputs and the cached teacher outputs. The training loop
(`ckd_jax.train.engine`) never branches on a method's name: adding a method means adding a
builder to `_BUILDERS`, nothing else.

Every loss comes from `ckd_jax.losses`; the weights are the paper's
(docs/method.md, "The baselines").
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ckd_jax import losses as L

Array = jax.Array


class LossInputs(NamedTuple):
    """What a method's loss sees for one population member and one step.

    Shapes (batch B, tuple size k, classes C): for `sampling="sample"` logits, teacher_logits
    [B, C], labels [B], sample_idx [B]; for `sampling="tuple"` [B, k, C], [B, k], [B, k].
    `mix` is (partners, weights) from the method's input transform, else None.
    `features` / `teacher_features`: only for methods that declare feature layers, else None:
    {layer index: float32 [B, ...] or [B, k, ...]}, the student's train-mode features of this
    step's views and the teacher's cached features (of the view its logits were computed on).
    """

    logits: Array
    teacher_logits: Array
    labels: Array
    sample_idx: Array
    extra_params: Any
    extra_state: Any
    data_aux: Any
    mix: Any
    key: Array
    features: Any = None
    teacher_features: Any = None


class FeatureShapes(NamedTuple):
    """Per-sample feature shapes (no batch dim) a white-box method's heads are sized from:
    student/teacher {layer index: shape}, e.g. {2: (16, 16, 32)} or {4: (64,)}."""

    student: dict
    teacher: dict


LossFn = Callable[[LossInputs], tuple[Array, Any, dict]]


@dataclass(frozen=True)
class Method:
    """A distillation method, as the training step uses it.

    Attributes:
      name: registry name.
      sampling: "sample" (batch of B samples, one epoch permutation per pseudo-epoch) or
        "tuple" (B tuples of `tuple_size` distinct samples drawn at random each step).
      loss: LossInputs -> (scalar loss, new extra_state, metrics dict of scalars).
      uses_teacher: False only for the plain cross-entropy student (no logit table needed).
      tuple_size, n_pos: group sizes for "tuple" sampling.
      mix: optional (key, images float [B,H,W,C]) -> (mixed images, (partners, weights)).
      init_extra: optional (key, num_classes, n_data) -> (extra_params, extra_state): trainable
        heads (trained with the student) and non-trainable state. Methods with feature layers
        get a fourth argument, a `FeatureShapes`.
      data_aux: optional (labels np [n]) -> dict of arrays per member, computed once on the host.
      student_layers, teacher_layers: feature layers (indices into `return_features=True`'s
        list) the loss needs; non-empty makes the step run the student with
        `return_features=True` and the teacher pass cache those teacher features.
    """

    name: str
    sampling: str
    loss: LossFn
    uses_teacher: bool = True
    tuple_size: int = 1
    n_pos: int = 0
    mix: Callable | None = None
    init_extra: Callable | None = None
    data_aux: Callable | None = None
    description: str = ""
    hyper: dict = field(default_factory=dict)
    student_layers: tuple[int, ...] = ()
    teacher_layers: tuple[int, ...] = ()

    @property
    def needs_features(self) -> bool:
        return bool(self.student_layers or self.teacher_layers)


def _ce_kd(x: LossInputs, cfg, w_kd: float):
    """CE with ground truth (w_cls) plus KD (w_kd, temperature T): the base of most baselines."""
    ce = L.cross_entropy(x.logits, x.labels)
    kd = L.kd_loss(x.logits, x.teacher_logits, cfg.temperature) if w_kd else jnp.zeros(())
    return cfg.w_cls * ce + w_kd * kd, {"ce": ce, "kd": kd}


def _build_ce(cfg) -> Method:
    """Cross-entropy with the labels, no teacher: a student trained alone (DistillConfig), or a
    supervised teacher (TeacherConfig: its `label_smoothing`, and the batch's accuracy as the
    metric "acc", the teacher log's train_acc)."""
    smoothing = getattr(cfg, "label_smoothing", None)
    if smoothing is None:  # a student: metrics {"ce"}, no hyper-parameters
        def loss(x: LossInputs):
            ce = L.cross_entropy(x.logits, x.labels)
            return ce, x.extra_state, {"ce": ce}

        return Method("ce", "sample", loss, uses_teacher=False,
                      description="student trained alone with cross-entropy (no teacher)")

    def teacher_loss(x: LossInputs):
        if smoothing:
            targets = optax.smooth_labels(jax.nn.one_hot(x.labels, x.logits.shape[-1]),
                                          smoothing)
            ce = optax.softmax_cross_entropy(x.logits, targets).mean()
        else:
            ce = L.cross_entropy(x.logits, x.labels)
        acc = jnp.mean(jnp.argmax(x.logits, -1) == x.labels)
        return ce, x.extra_state, {"ce": ce, "acc": acc}

    return Method("ce", "sample", teacher_loss, uses_teacher=False,
                  description="supervised teacher: cross-entropy on the full training split",
                  hyper={"label_smoothing": smoothing})


def _build_kd(cfg) -> Method:
    def loss(x: LossInputs):
        total, m = _ce_kd(x, cfg, cfg.w_kd)
        return total, x.extra_state, m

    return Method("kd", "sample", loss, description="CE + T^2 KL at T (Hinton et al.)",
                  hyper={"w_cls": cfg.w_cls, "w_kd": cfg.w_kd, "T": cfg.temperature})


def _ckd_core(x: LossInputs, cfg, n_pos: int):
    """CKD's loss on logits: (total, metrics, lam); lam is the "interp" weight (else None)."""
    lam = None
    if cfg.ckd_combine == "interp":  # lam ~ Beta(1, 1) once per batch (ablation)
        lam = jax.random.uniform(x.key, ())
    terms = L.ckd_terms(x.logits, x.teacher_logits, x.labels, n_pos=n_pos,
                        form=cfg.ckd_form, temperature=cfg.temperature,
                        combine=cfg.ckd_combine, lam=lam)
    total = cfg.w_cls * terms["cls"] + cfg.w_rel * terms["rel"]
    return total, {"ckd_cls": terms["cls"], "ckd_rel": terms["rel"]}, lam


def _build_ckd(cfg) -> Method:
    n_pos, _ = L.split_groups(cfg.pos_and_neg)

    def loss(x: LossInputs):
        total, metrics, _ = _ckd_core(x, cfg, n_pos)
        if cfg.w_anchor:
            # The loss above is blind to a shift shared by all student logits; this pins it by
            # matching the batch mean of the student's logits to the teacher's (same samples).
            gap = (jnp.mean(x.logits.reshape(-1, x.logits.shape[-1]), axis=0)
                   - jnp.mean(x.teacher_logits.reshape(-1, x.logits.shape[-1]), axis=0))
            anchor = jnp.mean(jnp.square(gap))
            total = total + cfg.w_anchor * anchor
            metrics = {**metrics, "ckd_anchor": anchor}
        if cfg.w_sample:
            # KD's per-sample terms on every tuple member ([B, k, C] -> [B k, C]).
            c = x.logits.shape[-1]
            s, t = x.logits.reshape(-1, c), x.teacher_logits.reshape(-1, c)
            ce = L.cross_entropy(s, x.labels.reshape(-1))
            kd = L.kd_loss(s, t, cfg.temperature)
            total = total + cfg.w_sample * (ce + kd)
            metrics = {**metrics, "ce": ce, "kd": kd}
        return total, x.extra_state, metrics

    hyper = {"k": cfg.pos_and_neg, "form": cfg.ckd_form, "combine": cfg.ckd_combine,
             "w_cls": cfg.w_cls, "w_rel": cfg.w_rel}
    if cfg.w_anchor:
        hyper["w_anchor"] = cfg.w_anchor
    if cfg.w_sample:
        hyper.update(w_sample=cfg.w_sample, T=cfg.temperature)
    return Method("ckd", "tuple", loss, tuple_size=cfg.pos_and_neg, n_pos=n_pos,
                  description="comparative KD on group-mean differences (Wilf et al.)",
                  hyper=hyper)


def _mixing_builder(name: str, transform: Callable, description: str):
    def build(cfg) -> Method:
        def mix(key, images):
            out = transform(key, images)
            return out[0], (out[1], out[2])

        def loss(x: LossInputs):
            partners, weights = x.mix
            total = L.mix_distill_loss(x.logits, x.labels, x.teacher_logits, partners, weights,
                                       soft=cfg.mix_soft, temperature=cfg.temperature,
                                       w_cls=cfg.w_cls, w_soft=cfg.w_kd)
            return total, x.extra_state, {}

        return Method(name, "sample", loss, mix=mix, description=description,
                      hyper={"soft": cfg.mix_soft, "w_cls": cfg.w_cls, "w_soft": cfg.w_kd})

    return build


def _build_rkd(cfg) -> Method:
    w = 1.0 if cfg.w_extra is None else cfg.w_extra  # distance 25 and angle 50 inside rkd_loss

    def loss(x: LossInputs):
        base, m = _ce_kd(x, cfg, cfg.w_kd)
        rkd = L.rkd_loss(x.logits, x.teacher_logits)
        return base + w * rkd, x.extra_state, {**m, "rkd": rkd}

    return Method("rkd", "sample", loss, description="CE + KD + RKD on logits (25 dist, 50 angle)",
                  hyper={"w_rkd": w})


def _build_dist(cfg) -> Method:
    w = 2.0 if cfg.w_extra is None else cfg.w_extra

    def loss(x: LossInputs):
        base, m = _ce_kd(x, cfg, cfg.w_kd)
        dist = L.dist_loss(x.logits, x.teacher_logits, tau=cfg.temperature)
        return base + w * dist, x.extra_state, {**m, "dist": dist}

    return Method("dist", "sample", loss, description="CE + KD + DIST (tau 4, weight 2)",
                  hyper={"w_dist": w})


def _build_crd(cfg) -> Method:
    w = 0.8 if cfg.w_extra is None else cfg.w_extra

    def init_extra(key, num_classes, n_data):
        return L.crd_init(key, num_classes, num_classes, n_data, feat_dim=cfg.crd_feat_dim)

    def data_aux(labels):
        sorted_idx, start, count = L.crd_class_index(np.asarray(labels))
        return {"crd_sorted": sorted_idx, "crd_start": start, "crd_count": count}

    def loss(x: LossInputs):
        base, m = _ce_kd(x, cfg, cfg.w_kd)
        aux = x.data_aux
        contrast = L.crd_sample_negatives(x.key, x.labels, x.sample_idx, aux["crd_sorted"],
                                          aux["crd_start"], aux["crd_count"],
                                          n_neg=cfg.crd_negatives)
        crd, new_state = L.crd_loss(x.extra_params, x.extra_state, x.logits, x.teacher_logits,
                                    x.sample_idx, contrast)
        return base + w * crd, new_state, {**m, "crd": crd}

    return Method("crd", "sample", loss, init_extra=init_extra, data_aux=data_aux,
                  description="CE + KD + CRD on logits (memory banks, NCE)",
                  hyper={"w_crd": w, "negatives": cfg.crd_negatives})


# ------------------------------------------------------------------------------------------
# white-box methods: FitNet hint, VID, CC, each plain (CE + KD + term) or on CKD's group
# comparisons of features (`ckd_inter` of the authors' code: CKD loss + term). docs/whitebox.md
# ------------------------------------------------------------------------------------------
WHITEBOX_WEIGHTS = {"fitnet": 100.0, "vid": 1.0, "cc": 0.02}  # authors' w_inter_defaults


@functools.lru_cache(maxsize=64)
def _feature_count(model_name: str, kwargs_json: str) -> int:
    """Length of `model.apply(..., return_features=True)`'s list (abstract, no FLOPs)."""
    from ckd_jax.models import feature_shapes

    return len(feature_shapes(model_name, 10, **json.loads(kwargs_json)))


def _resolve_layer(index: int, count: int, what: str, model: str) -> int:
    j = index + count if index < 0 else index
    if not 0 <= j < count:
        raise ValueError(f"{what}={index} is out of range for {model}, whose feature list has "
                         f"{count} entries (accepted: {-count}..{count - 1})")
    return j


def whitebox_layer_pairs(kind: str, cfg) -> list[tuple[int, int]]:
    """(student layer, teacher layer) pairs a white-box term uses, as non-negative indices.

    fitnet: [(hint_layer, hint_layer)]; vid: `vid_layers`, or RepDistiller's feat[1:-1]
    (zip of both lists, so up to the shorter one); cc: the last feature (pooled vector) of each.
    """
    ns = _feature_count(cfg.student, json.dumps(cfg.student_kwargs or {}, sort_keys=True))
    nt = _feature_count(cfg.teacher, json.dumps(cfg.teacher_kwargs or {}, sort_keys=True))
    pair = lambda i, what: (_resolve_layer(i, ns, what, f"student {cfg.student}"),
                            _resolve_layer(i, nt, what, f"teacher {cfg.teacher}"))
    if kind == "fitnet":
        return [pair(cfg.hint_layer, "hint_layer")]
    if kind == "cc":
        return [(ns - 1, nt - 1)]
    if cfg.vid_layers:
        return [pair(i, "vid_layers entry") for i in cfg.vid_layers]
    pairs = [(i, i) for i in range(1, min(ns, nt) - 1)]
    if not pairs:
        raise ValueError(f"VID's default layers feat[1:-1] are empty for student {cfg.student} "
                         f"({ns} features) and teacher {cfg.teacher} ({nt}); set vid_layers")
    return pairs


def _as_map(x):
    """A feature as an NHWC map: [N, D] pooled vectors become [N, 1, 1, D]."""
    return x[:, None, None, :] if x.ndim == 2 else x


def _map_shape(shape) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in shape)
    if len(shape) == 1:
        return (1, 1) + shape
    if len(shape) != 3:
        raise ValueError(f"white-box layers must be [H, W, C] maps or [D] vectors, got {shape}")
    return shape


def _whitebox_term(kind: str, cfg, pairs):
    """(init(key, FeatureShapes) -> (params, state), term(fs, ft, params, state) -> (scalar,
    new state)); fs/ft {layer: [N, ...]} are per-sample features or group comparisons."""
    if kind == "fitnet":
        (ls, lt), = pairs

        def regressor(shapes):
            return L.HintRegressor(t_shape=_map_shape(shapes.teacher[lt]), use_relu=cfg.hint_relu)

        def init(key, shapes: FeatureShapes):
            x = jnp.zeros((2,) + _map_shape(shapes.student[ls]), jnp.float32)
            v = regressor(shapes).init(key, x, train=False)
            return {"hint": v["params"]}, {"hint": v["batch_stats"]}

        def term(fs, ft, params, state):
            t = _as_map(ft[lt])
            reg = L.HintRegressor(t_shape=t.shape[1:], use_relu=cfg.hint_relu)
            # train-mode BatchNorm, as the authors' ConvReg inside module.train()
            out, upd = reg.apply({"params": params["hint"], "batch_stats": state["hint"]},
                                 _as_map(fs[ls]), train=True, mutable=["batch_stats"])
            return L.fitnet_loss(out, t), {**state, "hint": upd["batch_stats"]}

        return init, term

    if kind == "vid":
        def init(key, shapes: FeatureShapes):
            keys = jax.random.split(key, len(pairs))
            params = []
            for k, (ls, lt) in zip(keys, pairs):
                sc, tc = _map_shape(shapes.student[ls])[-1], _map_shape(shapes.teacher[lt])[-1]
                reg = L.VIDRegressor(mid_channels=tc, out_channels=tc)  # VIDLoss(s, t, t)
                params.append(reg.init(k, jnp.zeros((1, 1, 1, sc), jnp.float32))["params"])
            return {"vid": params}, {}

        def term(fs, ft, params, state):
            total = jnp.zeros((), jnp.float32)
            for p, (ls, lt) in zip(params["vid"], pairs):
                s, t = L.match_spatial(_as_map(fs[ls]), _as_map(ft[lt]))
                reg = L.VIDRegressor(mid_channels=t.shape[-1], out_channels=t.shape[-1])
                pred, log_scale = reg.apply({"params": p}, s)
                total = total + L.vid_loss(pred, log_scale, t)
            return total, state

        return init, term

    (ls, lt), = pairs
    embed = L.CCEmbed(feat_dim=cfg.cc_feat_dim)

    def init(key, shapes: FeatureShapes):
        ks, kt = jax.random.split(key)
        zs = jnp.zeros((2, math.prod(shapes.student[ls])), jnp.float32)
        zt = jnp.zeros((2, math.prod(shapes.teacher[lt])), jnp.float32)
        return {"embed_s": embed.init(ks, zs)["params"],
                "embed_t": embed.init(kt, zt)["params"]}, {}

    def term(fs, ft, params, state):
        es = embed.apply({"params": params["embed_s"]}, fs[ls])
        et = embed.apply({"params": params["embed_t"]}, ft[lt])
        return L.cc_loss(es, et), state

    return init, term


def _whitebox_builder(kind: str, on_groups: bool):
    name = f"ckd_{kind}" if on_groups else kind

    def build(cfg) -> Method:
        w = WHITEBOX_WEIGHTS[kind] if cfg.w_extra is None else cfg.w_extra
        pairs = whitebox_layer_pairs(kind, cfg)
        init_term, term = _whitebox_term(kind, cfg, pairs)
        s_layers = tuple(sorted({a for a, _ in pairs}))
        t_layers = tuple(sorted({b for _, b in pairs}))
        hyper = {"w_" + kind: w, "layers": [list(p) for p in pairs]}
        if kind == "fitnet":
            hyper["hint_relu"] = cfg.hint_relu
        if kind == "cc":
            hyper["feat_dim"] = cfg.cc_feat_dim

        def init_extra(key, num_classes, n_data, shapes: FeatureShapes):
            del num_classes, n_data
            return init_term(key, shapes)

        if not on_groups:
            def loss(x: LossInputs):
                base, m = _ce_kd(x, cfg, cfg.w_kd)
                value, new_state = term(x.features, x.teacher_features, x.extra_params,
                                        x.extra_state)
                return base + w * value, new_state, {**m, kind: value}

            return Method(name, "sample", loss, init_extra=init_extra, description=(
                f"CE + KD + {kind} on intermediate features (weight {w:g})"),
                hyper={"w_cls": cfg.w_cls, "w_kd": cfg.w_kd, **hyper},
                student_layers=s_layers, teacher_layers=t_layers)

        n_pos, _ = L.split_groups(cfg.pos_and_neg)

        def loss(x: LossInputs):
            total, m, lam = _ckd_core(x, cfg, n_pos)
            # The authors' InterCKDTrainHelpers: group means of each feature, P - N (the same
            # comparison as the logits), then the white-box loss on those comparisons.
            cmp = lambda feats: {i: L.compare_groups(f, n_pos, cfg.ckd_combine, lam)
                                 for i, f in feats.items()}
            value, new_state = term(cmp(x.features), cmp(x.teacher_features), x.extra_params,
                                    x.extra_state)
            return total + w * value, new_state, {**m, kind: value}

        return Method(name, "tuple", loss, tuple_size=cfg.pos_and_neg, n_pos=n_pos,
                      init_extra=init_extra, description=(
                          f"CKD + {kind} on group-mean feature differences (weight {w:g})"),
                      hyper={"k": cfg.pos_and_neg, "form": cfg.ckd_form,
                             "combine": cfg.ckd_combine, "w_cls": cfg.w_cls, "w_rel": cfg.w_rel,
                             **hyper},
                      student_layers=s_layers, teacher_layers=t_layers)

    return build


_BUILDERS: dict[str, Callable[[Any], Method]] = {
    "ce": _build_ce,
    "kd": _build_kd,
    "ckd": _build_ckd,
    "mixup": _mixing_builder("mixup", L.mixup_inputs, "mixup + CE + soft CE (T=1)"),
    "mixup3": _mixing_builder("mixup3", L.mixup3_inputs, "three-sample mixup"),
    "cutmix": _mixing_builder("cutmix", L.cutmix_inputs, "CutMix + CE + soft CE (T=1)"),
    "rkd": _build_rkd,
    "dist": _build_dist,
    "crd": _build_crd,
    **{name: _whitebox_builder(kind, on_groups)
       for on_groups in (False, True) for kind in ("fitnet", "vid", "cc")
       for name in [f"ckd_{kind}" if on_groups else kind]},
}


def method_names() -> list[str]:
    """Every method name `build_method` accepts."""
    return list(_BUILDERS)


# Named variants: a method plus the config fields that make one row of the paper's tables
# (used by ckd_jax/sweep.py and experiments/benchmark.py).
_CKD = {"method": "ckd", "ckd_form": "mse", "pos_and_neg": 2, "ckd_combine": "diff"}
VARIANTS: dict[str, dict] = {
    "ce": {"method": "ce"},
    "kd": {"method": "kd"},
    "ckd": dict(_CKD),  # the WACV release: MSE form, k = 2
    "ckd_k2": dict(_CKD),
    **{f"ckd_k{k}": {**_CKD, "pos_and_neg": k} for k in (3, 4, 6, 8)},
    "ckd_kl2": {**_CKD, "ckd_form": "kl"},
    "ckd_kl3": {**_CKD, "ckd_form": "kl", "pos_and_neg": 3},  # the first release
    "ckd_add": {**_CKD, "ckd_combine": "add"},
    "ckd_interp": {**_CKD, "ckd_combine": "interp"},
    "ckd_pool": {**_CKD, "tuple_pool": 100000},
    # CKD with the shared logit offset handled (docs/calibration.md): calibrated from the logit
    # table before every validation (no teacher call), or pinned during training.
    "ckd_cal": {**_CKD, "calibration": "table"},
    # ckd_cal with two best slots (schedule="cosine" only): its rows are ckd_cal's, and its
    # `ckd_both@raw` rows are the paper's ckd from the same training (raw selection and test).
    "ckd_both": {**_CKD, "calibration": "table", "also_select_raw": True},
    "ckd_anchor": {**_CKD, "w_anchor": 1.0},
    # CKD's comparison terms plus KD's per-sample CE and KD (weights 1, 1, 1, 1: each term at
    # the weight it has in its own method), calibrated like ckd_cal.
    "ckd_kd_cal": {**_CKD, "w_sample": 1.0, "calibration": "table"},
    "mixup": {"method": "mixup"},
    "mixup_kd": {"method": "mixup", "mix_soft": "kd"},
    "mixup3": {"method": "mixup3"},
    "cutmix": {"method": "cutmix"},
    "rkd": {"method": "rkd"},
    "dist": {"method": "dist"},
    "crd": {"method": "crd"},
}


def variant_overrides(name: str, what: str = "variant") -> dict:
    """Config overrides of a variant name (a VARIANTS entry or a plain method name)."""
    if name in VARIANTS:
        return dict(VARIANTS[name])
    if name in _BUILDERS:
        return {"method": name}
    raise ValueError(f"unknown {what} {name!r}; accepted: named variants "
                     f"{', '.join(VARIANTS)} or method names {', '.join(_BUILDERS)}")


def build_method(cfg, *, resolved: bool = False) -> Method:
    """The `Method` for a (validated) `DistillConfig`, or a `TeacherConfig` (method "ce").
    resolved=True: the DistillConfig's teacher is filled in already (`DistillConfig.resolve`),
    so its teacher.json is not read again."""
    if cfg.method not in _BUILDERS:
        raise ValueError(f"unknown method {cfg.method!r}; available: {', '.join(_BUILDERS)}")
    if hasattr(cfg, "with_teacher") and not resolved:  # teacher None: the recorded or default
        cfg = cfg.with_teacher()
    return _BUILDERS[cfg.method](cfg)
