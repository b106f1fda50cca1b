"""ckd_jax: Comparative Knowledge Distillation in JAX/Flax."""
__version__ = "0.1.0"
