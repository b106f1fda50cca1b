"""ckd_jax: Comparative Knowledge Distillation in JAX/Flax."""
from ckd_jax import _cpu_speed

_cpu_speed.apply()  # XLA:CPU flags, before any jax backend starts (see ckd_jax/_cpu_speed.py)
__version__ = "0.1.0"
