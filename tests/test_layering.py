"""The losses stand alone: importing every ckd_jax.losses module (and drawing tuples, which the
training engine also uses) loads no ckd_jax.train module, nor any other part of ckd_jax.
A fresh interpreter is needed: the test session has imported the training code already."""

import json
import os
import subprocess
import sys

_CHILD = """
import importlib, json, pkgutil, sys
import ckd_jax.losses
names = [m.name for m in pkgutil.walk_packages(ckd_jax.losses.__path__, "ckd_jax.losses.")]
for name in names:
    importlib.import_module(name)
import jax
idx = ckd_jax.losses.sample_tuples(jax.random.key(0), n=6, k=3, batch_size=2)
print(json.dumps(dict(modules=names, shape=list(idx.shape),
                      loaded=sorted(m for m in sys.modules if m.startswith("ckd_jax")))))
"""


def test_losses_import_nothing_from_training():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = json.loads(subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                                    text=True, timeout=300, check=True).stdout.splitlines()[-1])
    assert "ckd_jax.losses.sampling" in out["modules"] and out["shape"] == [2, 3]
    assert [m for m in out["loaded"] if m.startswith("ckd_jax.train")] == []
    outside = [m for m in out["loaded"] if m != "ckd_jax" and not m.startswith("ckd_jax.losses")]
    assert outside == [], outside
