"""ckd_jax/_cpu_speed.py: the XLA:CPU flags ckd_jax sets by itself (appended, never overriding
the user's, opt-out), and that XLA accepts them (a subprocess imports ckd_jax and computes)."""

import os
import subprocess
import sys

from ckd_jax import _cpu_speed as cs

FLAG = cs.FLAGS[0]
DEVICES = "--xla_force_host_platform_device_count=8"


def test_appends_after_user_flags():
    assert cs.cpu_flags("", "0.10.2", env={}) == FLAG
    assert cs.cpu_flags(DEVICES, "0.10.2", env={}) == f"{DEVICES} {FLAG}"


def test_user_value_opt_out_and_unverified_versions_left_alone():
    mine = "--xla_cpu_experimental_ynn_fusion_type=+reduce"
    assert cs.cpu_flags(f"{DEVICES} {mine}", "0.10.2", env={}) == f"{DEVICES} {mine}"
    for off in ("0", "off", "False", "no"):
        assert cs.cpu_flags(DEVICES, "0.10.2", env={cs.OPT_OUT_ENV: off}) == DEVICES
    assert cs.cpu_flags(DEVICES, "0.10.2", env={cs.OPT_OUT_ENV: "1"}) == f"{DEVICES} {FLAG}"
    assert cs.cpu_flags(DEVICES, "0.12.0", env={}) == DEVICES  # XLA aborts on unknown flags


def test_import_sets_flags_that_xla_accepts():
    code = ("import os, ckd_jax, jax, jax.numpy as jnp; "
            "print(os.environ['XLA_FLAGS']); print(jax.device_count()); "
            "print(float(jax.jit(lambda x: jnp.tanh(x).sum())(jnp.ones(8))))")
    env = {k: v for k, v in os.environ.items() if k != cs.OPT_OUT_ENV}
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=3", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout.splitlines()
    assert out[0] == f"--xla_force_host_platform_device_count=3 {FLAG}"
    assert out[1] == "3" and abs(float(out[2]) - 8 * 0.7615941559557649) < 1e-5
    env[cs.OPT_OUT_ENV] = "0"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout.splitlines()
    assert out[0] == "--xla_force_host_platform_device_count=3"
