"""The XLA:CPU setting that ckd_jax's commands use, applied by one call (`ckd_jax.set_cpu_flags`).

Importing ckd_jax changes nothing. `apply()` (what `ckd_jax.set_cpu_flags()` runs; every
`experiments/` command calls it before jax starts, and so does tests/conftest.py) appends

    --xla_cpu_experimental_ynn_fusion_type=-individual_convolution,+eltwise

to the ``XLA_FLAGS`` environment variable. Why: on XLA:CPU the
training step of the zoo's small convolutional networks (resnet8/32, tiny_cnn; NHWC) spends
most of its time in the convolution gradients and the elementwise/BatchNorm code around them;
with this setting XLA leaves the convolutions to its Eigen kernels (YNNPACK's individual
convolutions are slower here) and hands elementwise fusions to YNNPACK.

How much it gains on a given CPU: docs/performance.md ("The package's XLA:CPU flag") has the
benchmark commands with and without it (``CKD_JAX_CPU_FLAGS=0`` gives the default), and the
attempts that were measured and not kept. Model code, parameter names and shapes are unchanged.

Rules:
* The flag only changes how the *CPU* compiler fuses; GPU/TPU programs are compiled exactly as
  before (on an accelerator machine only the host-side CPU programs see it).
* A value the user already set wins: nothing is added if ``XLA_FLAGS`` already mentions
  ``xla_cpu_experimental_ynn_fusion_type``; every other user flag (e.g.
  ``--xla_force_host_platform_device_count``) is kept, the setting is appended after them.
* Opt-out: ``CKD_JAX_CPU_FLAGS=0`` (or ``off``/``false``/``no``) in the environment.
* Only for jaxlib versions where the flag was checked (`VERIFIED_JAXLIB`): XLA aborts on an
  unknown flag, so on other versions nothing is added.
* XLA reads ``XLA_FLAGS`` once, when the first backend starts: call it before running any jax
  computation. If a backend is already up, nothing is changed (`apply` returns False).
"""

from __future__ import annotations

import os

FLAG_NAME = "xla_cpu_experimental_ynn_fusion_type"
FLAGS = (f"--{FLAG_NAME}=-individual_convolution,+eltwise",)
OPT_OUT_ENV = "CKD_JAX_CPU_FLAGS"
VERIFIED_JAXLIB = ("0.10.",)


def _jaxlib_version() -> str:
    try:
        from jaxlib.version import __version__
    except Exception:  # pragma: no cover - no jaxlib: nothing to configure
        return ""
    return __version__


def backends_started() -> bool:
    import sys

    xb = sys.modules.get("jax._src.xla_bridge")
    if xb is None:  # jax not imported yet: no backend can exist
        return False
    try:
        return bool(xb.backends_are_initialized())
    except Exception:  # pragma: no cover - private API moved: assume the safe answer
        return True


def cpu_flags(existing: str, jaxlib_version: str, env: dict | None = None) -> str:
    """The ``XLA_FLAGS`` value to use: `existing` with this module's flags appended (pure)."""
    env = os.environ if env is None else env
    if env.get(OPT_OUT_ENV, "").strip().lower() in ("0", "off", "false", "no"):
        return existing
    if not jaxlib_version.startswith(VERIFIED_JAXLIB) or FLAG_NAME in existing:
        return existing
    return " ".join([existing.strip(), *FLAGS]).strip()


def apply() -> bool:
    """Append `FLAGS` to ``os.environ["XLA_FLAGS"]`` (see the module doc); True if changed."""
    existing = os.environ.get("XLA_FLAGS", "")
    new = cpu_flags(existing, _jaxlib_version())
    if new == existing or backends_started():
        return False
    os.environ["XLA_FLAGS"] = new
    return True
