"""experiments/benchmark.py: the --quick CPU run end to end, the limit step's SGD arithmetic
against NumPy, and the goal column."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ckd_jax.models import create_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "benchmark.py")
_spec = importlib.util.spec_from_file_location("_exp_benchmark", SCRIPT)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.parametrize("loop", ["scan", "python"])
def test_quick_run_prints_table_with_ratio(tmp_path, loop):
    out_json = tmp_path / "bench.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, SCRIPT, "--quick", "--json", str(out_json),
                           "--epoch-loop", loop],
                          capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert "| x limit |" in text and "jax " + jax.__version__ in text
    data = json.loads(out_json.read_text())
    assert data["header"]["device_kind"] == jax.devices("cpu")[0].device_kind
    assert data["header"]["epoch_loop"] == loop and f"epoch loop {loop}" in text
    (row,) = data["rows"]
    assert (row["model"], row["method"], row["population"], row["dtype"]) == (
        "tiny_cnn", "ckd_k2", 1, "float32")
    assert row["images_per_step"] == 32  # 16 tuples of 2 images
    steps = data["header"]["steps"]
    assert steps == 4
    assert row["images_per_s"] == pytest.approx(steps * 32 / row["call_s"])
    assert row["steps_per_s"] == pytest.approx(steps / row["call_s"])
    assert row["x_limit"] == pytest.approx(row["call_s"] / row["limit_call_s"])
    assert row["compile_s"] > 0 and row["call_s"] > 0
    assert "<=1.2x limit" in row["goal"]
    line = next(ln for ln in text.splitlines() if ln.startswith("| tiny_cnn | ckd_k2"))
    assert f"{row['x_limit']:.2f}" in line


def test_limit_step_matches_numpy_sgd():
    """Two limit steps on a linear model (mlp depth 0): CE gradient and torch-style SGD
    (g + wd p; buf = m buf + g; p -= lr buf) by hand in NumPy."""
    model = create_model("mlp", 3, depth=0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 2, 5, 2, 2, 1)).astype(np.float32)  # [P, S, N, H, W, C]
    y = rng.integers(0, 3, size=(1, 2, 5)).astype(np.int32)
    v = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 2, 2, 1)), train=False)
    params = v["params"]
    lr, m, wd = 0.1, 0.9, 0.01
    carry = (jax.tree.map(lambda a: a[None], params), {},
             jax.tree.map(lambda a: jnp.zeros_like(a)[None], params), jnp.full((1,), lr))
    fn = bench.make_limit_epoch(model, "float32", momentum=m, weight_decay=wd)
    (new_params, _, _, _), losses = fn(carry, jnp.asarray(x), jnp.asarray(y))

    W = np.asarray(params["Dense_0"]["kernel"], np.float64)
    b = np.asarray(params["Dense_0"]["bias"], np.float64)
    bw, bb = np.zeros_like(W), np.zeros_like(b)
    ref_losses = []
    for s in range(2):
        xs = x[0, s].reshape(5, -1).astype(np.float64)
        z = xs @ W + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        onehot = np.eye(3)[y[0, s]]
        ref_losses.append(-np.mean(np.log(p[np.arange(5), y[0, s]])))
        gz = (p - onehot) / 5
        gw, gb = xs.T @ gz + wd * W, gz.sum(0) + wd * b
        bw, bb = m * bw + gw, m * bb + gb
        W, b = W - lr * bw, b - lr * bb
    np.testing.assert_allclose(np.asarray(losses[0]), ref_losses, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(new_params["Dense_0"]["kernel"][0]), W, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(np.asarray(new_params["Dense_0"]["bias"][0]), b, rtol=1e-5,
                               atol=1e-6)


def test_goal_text():
    row = {"model": "resnet32", "method": "ckd_k2", "population": 1, "x_limit": 1.5,
           "images_per_s": 60_000.0}
    text = bench.goal_text(row, "NVIDIA H100 80GB HBM3")
    assert "<=1.2x limit: NOT met" in text and ">50,000 img/s: met" in text
    assert "goal is for one H100" not in text
    row.update(population=32, x_limit=1.1, images_per_s=200_000.0)
    text = bench.goal_text(row, "cpu")
    assert "<=1.2x limit: met" in text and ">300,000 img/s: NOT met" in text
    assert "ran on cpu" in text
    assert bench.goal_text({**row, "method": "kd"}, "cpu") == ""
    with pytest.raises(ValueError, match="unknown benchmark method 'nope'"):
        bench.method_overrides("nope")
