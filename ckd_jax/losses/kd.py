"""Per-sample supervision: cross-entropy, soft cross-entropy and Hinton KD.

All functions are pure, jit/vmap/grad compatible and reduce to a scalar (mean over the batch).
Pattern used in every module: the public function checks its arguments (static information, at
trace time) and then calls a private jitted core. Inside a caller's jit the core is inlined; in
eager calls it compiles one program instead of dispatching dozens of small ops.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._checks import (
    check_integer_dtype,
    check_labels_in_range,
    check_positive,
    check_rank,
    check_same_shape,
    shape_of,
)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy with integer labels.

    Shapes: logits [B, C] (float), labels [B] (int in [0, C)). Returns a scalar.

    Formula: mean_b -log softmax(logits_b)[labels_b]  (PyTorch ``nn.CrossEntropyLoss``).

    Label range is checked only when `labels` is concrete (not under jit); under jit an
    out-of-range label makes the result NaN (JAX's out-of-bounds gather fills with NaN).

    Example:

      >>> round(float(cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3]))), 4)   # log 4
      1.3863
    """
    check_rank("logits", logits, 2, "[B, C]")
    check_rank("labels", labels, 1, "[B]")
    check_integer_dtype("labels", labels)
    if shape_of(labels)[0] != shape_of(logits)[0]:
        raise ValueError(
            f"labels {shape_of(labels)} and logits {shape_of(logits)} must share the batch "
            "dimension"
        )
    check_labels_in_range("labels", labels, shape_of(logits)[1])
    return _cross_entropy(logits, labels)


@jax.jit
def _cross_entropy(logits, labels):
    logp = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return -jnp.mean(picked)


def soft_cross_entropy(logits: jax.Array, target_probs: jax.Array) -> jax.Array:
    """Mean cross-entropy against a probability target.

    Shapes: logits [B, C], target_probs [B, C] (rows are distributions). Returns a scalar.

    Formula: mean_b -sum_c p_bc log softmax(logits_b)_c  (PyTorch ``nn.CrossEntropyLoss`` with
    probability targets; used by the mixup baselines against softmax(teacher) at T = 1).

    Example:

      >>> target = jnp.array([[0.5, 0.5, 0.0, 0.0]])
      >>> round(float(soft_cross_entropy(jnp.zeros((1, 4)), target)), 4)   # log 4
      1.3863
    """
    check_rank("logits", logits, 2, "[B, C]")
    check_same_shape("logits", logits, "target_probs", target_probs)
    return _soft_cross_entropy(logits, target_probs)


@jax.jit
def _soft_cross_entropy(logits, target_probs):
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.sum(target_probs * logp, axis=-1))


def _kl_rows(student_logits, target_logits, temperature):
    """Per-row KL(softmax(target/T) || softmax(student/T)) summed over the last axis."""
    log_q = jax.nn.log_softmax(student_logits / temperature, axis=-1)
    log_p = jax.nn.log_softmax(target_logits / temperature, axis=-1)
    # log_p is finite even when p underflows to 0, so p * (log_p - log_q) is 0 there (no NaN).
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def kd_loss(
    student_logits: jax.Array, teacher_logits: jax.Array, temperature: float = 4.0
) -> jax.Array:
    """Hinton et al. (2015) knowledge distillation loss.

    Shapes: student_logits [B, C], teacher_logits [B, C]. Returns a scalar.

    Formula: T^2 * mean_b sum_c p_bc (log p_bc - log q_bc), p = softmax(t/T), q = softmax(s/T),
    i.e. RepDistiller's ``DistillKL`` (``kl_div(..., size_average=False) * T^2 / B``).
    Default T = 4 (the paper / RepDistiller CIFAR-100; docs/method.md).

    Example:

      >>> teacher = jnp.array([[0.0, 4 * jnp.log(3.0)]])     # softmax(t / 4) = [0.25, 0.75]
      >>> round(float(kd_loss(jnp.zeros((1, 2)), teacher)), 4)  # 16 * KL([.25, .75] || [.5, .5])
      2.093
    """
    check_rank("student_logits", student_logits, 2, "[B, C]")
    check_same_shape("student_logits", student_logits, "teacher_logits", teacher_logits)
    check_positive("temperature", temperature)
    return _kd_loss(student_logits, teacher_logits, temperature)


@jax.jit
def _kd_loss(student_logits, teacher_logits, temperature):
    return temperature**2 * jnp.mean(_kl_rows(student_logits, teacher_logits, temperature))
