"""Distillation methods as named configurations of the one training step.

A `Method` says how a step samples its batch (single samples, or tuples of k for CKD), whether
it mixes inputs, which extra trainable heads or state it owns (CRD) and how the loss is computed
from the student's outputs and the cached teacher logits. The training loop
(`ckd_jax.train.student`) never branches on a method's name: adding a method means adding a
builder to `_BUILDERS`, nothing else.

Every loss comes from `ckd_jax.losses`; the weights are the paper's (PAPER.md "Baselines").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ckd_jax import losses as L

Array = jax.Array


class LossInputs(NamedTuple):
    """What a method's loss sees for one population member and one step.

    Shapes (batch B, tuple size k, classes C): for `sampling="sample"` logits, teacher_logits
    [B, C], labels [B], sample_idx [B]; for `sampling="tuple"` [B, k, C], [B, k], [B, k].
    `mix` is (partners, weights) from the method's input transform, else None.
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
        heads (trained with the student, no weight decay) and non-trainable state.
      data_aux: optional (labels np [n]) -> dict of arrays per member, computed once on the host.
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


def _ce_kd(x: LossInputs, cfg, w_kd: float):
    """CE with ground truth (w_cls) plus KD (w_kd, temperature T): the base of most baselines."""
    ce = L.cross_entropy(x.logits, x.labels)
    kd = L.kd_loss(x.logits, x.teacher_logits, cfg.temperature) if w_kd else jnp.zeros(())
    return cfg.w_cls * ce + w_kd * kd, {"ce": ce, "kd": kd}


def _build_ce(cfg) -> Method:
    def loss(x: LossInputs):
        ce = L.cross_entropy(x.logits, x.labels)
        return ce, x.extra_state, {"ce": ce}

    return Method("ce", "sample", loss, uses_teacher=False,
                  description="student trained alone with cross-entropy (no teacher)")


def _build_kd(cfg) -> Method:
    def loss(x: LossInputs):
        total, m = _ce_kd(x, cfg, cfg.w_kd)
        return total, x.extra_state, m

    return Method("kd", "sample", loss, description="CE + T^2 KL at T (Hinton et al.)",
                  hyper={"w_cls": cfg.w_cls, "w_kd": cfg.w_kd, "T": cfg.temperature})


def _build_ckd(cfg) -> Method:
    n_pos, _ = L.split_groups(cfg.pos_and_neg)

    def loss(x: LossInputs):
        lam = None
        if cfg.ckd_combine == "interp":  # lam ~ Beta(1, 1) once per batch (ablation)
            lam = jax.random.uniform(x.key, ())
        terms = L.ckd_terms(x.logits, x.teacher_logits, x.labels, n_pos=n_pos,
                            form=cfg.ckd_form, temperature=cfg.temperature,
                            combine=cfg.ckd_combine, lam=lam)
        total = cfg.w_cls * terms["cls"] + cfg.w_rel * terms["rel"]
        return total, x.extra_state, {"ckd_cls": terms["cls"], "ckd_rel": terms["rel"]}

    return Method("ckd", "tuple", loss, tuple_size=cfg.pos_and_neg, n_pos=n_pos,
                  description="comparative KD on group-mean differences (Wilf et al.)",
                  hyper={"k": cfg.pos_and_neg, "form": cfg.ckd_form,
                         "combine": cfg.ckd_combine, "w_cls": cfg.w_cls, "w_rel": cfg.w_rel})


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
}


def method_names() -> list[str]:
    """Every method name `build_method` accepts."""
    return list(_BUILDERS)


def build_method(cfg) -> Method:
    """The `Method` for a (validated) `DistillConfig`."""
    if cfg.method not in _BUILDERS:
        raise ValueError(f"unknown method {cfg.method!r}; available: {', '.join(_BUILDERS)}")
    return _BUILDERS[cfg.method](cfg)
