"""ckd_jax/_cpu_speed.py: the XLA:CPU flag our commands set by one call, `ckd_jax.set_cpu_flags()`
(appended, never overriding the user's, opt-out); importing ckd_jax changes no environment
variable; XLA accepts the flag (a subprocess imports every module, calls it, computes)."""

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


# Imports every ckd_jax module (the environment must not change), then makes the one call (the
# flag is appended after the user's), then computes on the CPU backend with those flags.
_CHILD = """
import os, pkgutil, importlib, json, sys
before = dict(os.environ)
import ckd_jax
names = [m.name for m in pkgutil.walk_packages(ckd_jax.__path__, "ckd_jax.")]
for name in names:
    importlib.import_module(name)
changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
first = ckd_jax.set_cpu_flags()
again = ckd_jax.set_cpu_flags()
import jax, jax.numpy as jnp
total = float(jax.jit(lambda x: jnp.tanh(x).sum())(jnp.ones(8)))
print(json.dumps(dict(modules=len(names), changed=changed, first=first, again=again,
                      flags=os.environ["XLA_FLAGS"], devices=jax.device_count(), total=total)))
"""


def test_import_changes_nothing_and_the_call_sets_a_flag_xla_accepts():
    import json

    env = {k: v for k, v in os.environ.items() if k != cs.OPT_OUT_ENV}
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=3", JAX_PLATFORMS="cpu")
    out = json.loads(subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                                    text=True, timeout=300, check=True).stdout.splitlines()[-1])
    assert out["modules"] > 30 and out["changed"] == []
    assert out["first"] is True and out["again"] is False  # a second call adds nothing
    assert out["flags"] == f"--xla_force_host_platform_device_count=3 {FLAG}"
    assert out["devices"] == 3 and abs(out["total"] - 8 * 0.7615941559557649) < 1e-5
