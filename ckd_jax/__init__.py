"""ckd_jax: Comparative Knowledge Distillation in JAX/Flax.

Importing any part of ckd_jax changes no environment variable and no jax setting. One call is
offered for CPU users who want the XLA:CPU setting our commands use (see `set_cpu_flags`).
"""

__version__ = "0.1.0"


def set_cpu_flags() -> bool:
    """Append ckd_jax's XLA:CPU speed flag to ``XLA_FLAGS``; call it before jax computes anything.

    Every `experiments/` command calls it first thing; a library user may call it too:

        import ckd_jax
        ckd_jax.set_cpu_flags()   # before the first jax computation
        import jax

    It makes the zoo's small convolutional networks train faster on XLA:CPU and changes nothing
    on GPU/TPU. A flag you set yourself wins, `CKD_JAX_CPU_FLAGS=0` turns it off, and nothing is
    added on an unchecked jaxlib or once a jax backend has started. Returns True if it changed
    ``XLA_FLAGS``. The details and the measurements: ckd_jax/_cpu_speed.py, docs/performance.md.
    """
    from ckd_jax import _cpu_speed

    return _cpu_speed.apply()
