"""experiments/benchmark.py: the --quick CPU run end to end (with the PyTorch column), the
limit step's SGD arithmetic against NumPy, the goal column, the per-platform loop choice and the
PyTorch twins."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch  # the test extra pins torch==2.13.0 (CPU)
from experiments_support import load_experiment  # tests/ on sys.path

from ckd_jax.models import create_model, param_count

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "benchmark.py")
bench = load_experiment("benchmark")


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["scan", "auto"])  # auto on CPU = the python host loop
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
    resolved = {"scan": "scan", "auto": "python"}[loop]
    assert data["header"]["epoch_loop"] == resolved and f"epoch loop {resolved}" in text
    assert "[1/1] tiny_cnn ckd_k2 P=1 float32" in proc.stderr  # progress before the row
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
    # PyTorch column: the same bare step of the torch twin, timed in the same command
    assert data["header"]["torch"].startswith("torch " + torch.__version__)
    assert row["torch_images_per_s"] > 0 and row["limit_images_per_s_vs_torch"] > 0
    assert 0 < row["x_torch"] < float("inf")  # paired (interleaved) ratio, see the unit test
    assert "| x torch |" in text and f"{row['x_torch']:.2f}" in line
    assert "step >= torch: " in row["goal"]
    assert f"ratio {row['x_torch']:.2f}" in proc.stderr


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


def test_epoch_loop_auto_is_python_on_cpu_only():
    assert bench.resolve_epoch_loop("auto", "cpu") == "python"
    for platform in ("gpu", "cuda", "tpu", "rocm"):
        assert bench.resolve_epoch_loop("auto", platform) == "scan"
    assert bench.resolve_epoch_loop("scan", "cpu") == "scan"
    assert bench.resolve_epoch_loop("python", "gpu") == "python"


def test_torch_twins_have_the_same_parameters():
    twin = bench.torch_reference_net("tiny_cnn", 10, {"width": 4})
    assert sum(p.numel() for p in twin.parameters()) == param_count("tiny_cnn", 10, width=4)
    twin = bench.torch_reference_net("resnet8", 10)  # tests/torch_zoo.py
    assert sum(p.numel() for p in twin.parameters()) == param_count("resnet8", 10)
    assert bench.torch_reference_net("mlp", 10) is None


def test_torch_reference_column():
    ref = bench.bench_torch_reference("tiny_cnn", 8, steps=2, num_classes=10, image_size=8,
                                      channels=3, warmup=0, repeats=1,
                                      model_kwargs={"width": 2})
    assert ref["torch_images_per_s"] == pytest.approx(2 * 8 / ref["torch_call_s"])
    assert "x_torch" not in ref
    calls = []
    paired = bench.bench_torch_reference(  # the limit's rerun, called after each torch call
        "tiny_cnn", 8, steps=2, num_classes=10, image_size=8, channels=3, warmup=1, repeats=3,
        model_kwargs={"width": 2}, paired_call=lambda: calls.append(1) or 1e6)
    assert len(calls) == 4
    assert paired["limit_images_per_s"] == pytest.approx(2 * 8 / 1e6)
    assert 0 < paired["x_torch"] < 1e-3  # torch time / 1e6 s
    row = bench.add_torch_reference(
        {"model": "tiny_cnn", "method": "ce", "images_per_step": 8, "dtype": "float32",
         "population": 1, "limit_images_per_s": 1.0}, {("tiny_cnn", 8): paired}, platform="cpu")
    assert row["x_torch"] == paired["x_torch"]
    assert row["limit_images_per_s_vs_torch"] == paired["limit_images_per_s"]
    row = {"model": "tiny_cnn", "method": "ce", "images_per_step": 8, "dtype": "float32",
           "population": 1, "limit_images_per_s": 3 * ref["torch_images_per_s"]}
    cache = {("tiny_cnn", 8): ref}
    bench.add_torch_reference(dict(row), cache, platform="cpu")  # cached: no second timing
    out = bench.add_torch_reference(row, cache, platform="cpu")
    assert out["x_torch"] == pytest.approx(3.0)
    assert "step >= torch: met" in bench.goal_text(out, "cpu")
    for other in ({"population": 8}, {"dtype": "bfloat16"}):
        skipped = bench.add_torch_reference({**row, **other}, cache, platform="cpu")
        assert skipped["x_torch"] is None and skipped["torch_images_per_s"] is None
    assert bench.add_torch_reference(dict(row), {}, platform="gpu")["x_torch"] is None
    kw = dict(steps=1, num_classes=10, image_size=8, channels=3, warmup=0, repeats=1)
    assert bench.add_torch_reference({**row, "model": "mlp"}, {}, platform="cpu", **kw)[
        "x_torch"] is None  # no torch twin


def test_whole_loop_row_times_a_real_run_against_its_compiled_epoch(tmp_path):
    """The whole-loop figure: a real run_distillation (synthetic CIFAR-10-shaped data), one
    time per pseudo-epoch after the first, and the compiled epoch of the same shapes."""
    r = bench.bench_whole_loop("tiny_cnn", "ckd_k2", subset_size=100, epochs=3, dataset=None,
                               data_path=None, workdir=str(tmp_path), repeats=1,
                               model_kwargs={"width": 4}, population=2)
    assert r["budget"] == 80 and r["steps_per_epoch"] == 2  # ceil(80 / 64)
    assert len(r["loop_epoch_s_all"]) == 2  # epochs 2 and 3: the compiling one is dropped
    assert r["loop_epoch_s"] == pytest.approx(float(np.median(r["loop_epoch_s_all"])))
    assert r["compiled_epoch_s"] > 0
    assert r["x_compiled"] == pytest.approx(r["loop_epoch_s"] / r["compiled_epoch_s"])
    with open(tmp_path / "loop_tiny_cnn_ckd_k2" / "summary.json") as f:
        summary = json.load(f)
    assert summary["finished"] and len(summary["members"]) == 2  # seeds 1 and 2
    assert r["population"] == 2 and r["member_loop"] == "sequential"  # the CPU default
    assert "| tiny_cnn | ckd_k2 | 100 | 80 | 2 | sequential | 2 |" in bench.loop_markdown(r)
    # CPU time of the process beside wall time (robust to other processes on the core)
    assert len(r["loop_epoch_cpu_s_all"]) == 2 and r["compiled_epoch_cpu_s"] > 0
    assert r["x_compiled_cpu_mean"] == pytest.approx(
        float(np.mean(r["loop_epoch_cpu_s_all"])) / r["compiled_epoch_cpu_s"])


def test_whole_loop_of_a_study_config_stops_after_its_epochs(tmp_path):
    """--loop-config: the study's own protocol (plateau, up to 1000 pseudo-epochs) and its test
    curve, stopped after the asked pseudo-epochs like a kill."""
    from ckd_jax.train.config import DistillConfig

    data = bench._synthetic_cifar10(str(tmp_path / "data"), 1100, 100)
    base = DistillConfig(dataset="cifar10", data_path=data, teacher="tiny_cnn",
                         teacher_kwargs={"width": 8}, student_kwargs={"width": 4},
                         schedule="plateau", max_epochs=1000,
                         eval_test_every=2, eval_batch_size=100, progress=False,
                         learning_rates=(0.1, 0.05), seeds=(7,))
    r = bench.bench_whole_loop("tiny_cnn", "kd", subset_size=100, epochs=3, dataset=None,
                               data_path=None, workdir=str(tmp_path), repeats=1,
                               model_kwargs={"width": 4}, base=base)
    assert len(r["loop_epoch_s_all"]) == 2 and r["steps_per_epoch"] == 2
    with open(tmp_path / "loop_tiny_cnn_kd" / "summary.json") as f:
        summary = json.load(f)
    assert not summary["finished"] and summary["schedule"] == "plateau"
    assert [(m["seed"], m["lr"]) for m in summary["members"]] == [(1, 0.1)]
    with open(tmp_path / "loop_tiny_cnn_kd" / "metrics.jsonl") as f:
        logged = [json.loads(line) for line in f]
    assert [row["epoch"] for row in logged] == [1, 2, 3]
    assert [("test_top1" in row) for row in logged] == [False, True, False]
