"""Distillation losses as pure JAX functions: CKD, per-sample KD and the paper's baselines.

Every loss is a pure function of arrays (jit / vmap / grad compatible). Where a baseline needs
state or parameters (CRD memory banks, feature regressors) they are explicit inputs/outputs.
See docs/losses.md for formulas, references and default weights.
"""

from .calibration import (
    apply_logit_offset,
    estimate_logit_offset,
    find_head_bias,
    fold_offset_into_head,
)
from .ckd import ckd_loss, ckd_terms, compare_groups, split_groups
from .kd import cross_entropy, kd_loss, soft_cross_entropy
from .mixing import (
    cutmix_box_mask,
    cutmix_inputs,
    mix_distill_loss,
    mix_indices_weights,
    mixup3_inputs,
    mixup_inputs,
)
from .relational import (
    crd_class_index,
    crd_embed,
    crd_init,
    crd_loss,
    crd_sample_negatives,
    dist_loss,
    rkd_loss,
)
from .sampling import sample_tuples
from .whitebox import (
    CCEmbed,
    HintRegressor,
    VIDRegressor,
    cc_loss,
    fitnet_loss,
    hint_regressor_kind,
    match_spatial,
    vid_log_scale_init,
    vid_loss,
)

__all__ = [
    "apply_logit_offset",
    "estimate_logit_offset",
    "find_head_bias",
    "fold_offset_into_head",
    "CCEmbed",
    "HintRegressor",
    "VIDRegressor",
    "cc_loss",
    "ckd_loss",
    "ckd_terms",
    "compare_groups",
    "crd_class_index",
    "crd_embed",
    "crd_init",
    "crd_loss",
    "crd_sample_negatives",
    "cross_entropy",
    "cutmix_box_mask",
    "cutmix_inputs",
    "dist_loss",
    "fitnet_loss",
    "hint_regressor_kind",
    "kd_loss",
    "match_spatial",
    "mix_distill_loss",
    "mix_indices_weights",
    "mixup3_inputs",
    "mixup_inputs",
    "rkd_loss",
    "sample_tuples",
    "soft_cross_entropy",
    "split_groups",
    "vid_log_scale_init",
    "vid_loss",
]
