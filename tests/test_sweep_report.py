"""experiments/sweep.py and experiments/report.py: a tiny real sweep on digits (two variants,
one subset, two seeds), its resumption, results.jsonl, and the report's numbers and LR rule."""

import csv
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from experiments_support import TINY_SWEEP_BASE, load_experiment  # tests/ on sys.path

from ckd_jax import results as R
from ckd_jax import sweep
from ckd_jax.models import create_model
from ckd_jax.train.engine import make_mesh

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


sweep_cli = load_experiment("sweep")  # the command line: main
report = load_experiment("report")

BASE = TINY_SWEEP_BASE


def _np_mean_std(values):
    a = np.asarray(values, np.float64)
    return a.mean(), (a.std(ddof=1) if len(a) > 1 else math.nan)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """Run the sweep once, then again (which must skip every cell)."""
    out = str(tmp_path_factory.mktemp("sweep"))
    teacher = create_model("tiny_cnn", 10, width=4)
    tvars = teacher.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)), train=False)
    cells = sweep.plan_cells(BASE, ["ce", "kd"], [200], [1, 2], [0.05], out)
    logs1 = []
    rows1 = sweep.run_sweep(cells, mesh=make_mesh(1), teacher_apply=teacher.apply,
                            teacher_variables=tvars, log=logs1.append)
    mtimes = {c["name"]: os.path.getmtime(os.path.join(c["config"].out_dir, "summary.json"))
              for c in cells}
    logs2 = []
    # No teacher given the second time: a skipped cell must need none.
    rows2 = sweep.run_sweep(sweep.plan_cells(BASE, ["ce", "kd"], [200], [1, 2], [0.05], out),
                            mesh=make_mesh(1), log=logs2.append)
    return dict(out=out, cells=cells, rows1=rows1, rows2=rows2, logs1=logs1, logs2=logs2,
                mtimes=mtimes)


def test_sweep_layout_rows_and_resume(swept):
    out, cells = swept["out"], swept["cells"]
    assert [c["name"] for c in cells] == ["ce_S200", "kd_S200"]
    for c in cells:
        assert R.cell_finished(c["config"].out_dir)
    # logit tables shared at the sweep level, one per seed (only kd needs them)
    tables = sorted(os.listdir(os.path.join(out, "logit_tables")))
    assert len(tables) == 2 and tables[0].endswith("_S200_seed1.npz")
    assert sum("running" in line for line in swept["logs1"]) == 2
    assert any("done in" in line and "s (" in line for line in swept["logs1"])
    # second run: both cells skipped, no training, summaries untouched
    assert sum("skipped" in line for line in swept["logs2"]) == 2
    assert not any("running" in line for line in swept["logs2"])
    for c in cells:
        path = os.path.join(c["config"].out_dir, "summary.json")
        assert os.path.getmtime(path) == swept["mtimes"][c["name"]]
    # results.jsonl: one row per member per cell, consistent between the two runs
    rows = R.read_results(os.path.join(out, "results.jsonl"))
    assert rows == swept["rows2"] == json.loads(json.dumps(swept["rows1"]))
    assert sorted((r["variant"], r["seed"], r["lr"]) for r in rows) == [
        ("ce", 1, 0.05), ("ce", 2, 0.05), ("kd", 1, 0.05), ("kd", 2, 0.05)]
    for r in rows:
        assert r["subset_size"] == 200 and r["budget"] == 160
        assert r["teacher_calls"] == (0 if r["variant"] == "ce" else 160)
        assert 0.0 <= r["test_top1_at_best_val"] <= 1.0
    with open(os.path.join(out, "kd_S200", "summary.json")) as f:
        assert json.load(f)["teacher_calls_this_run"] == 320  # 2 seeds x 160, once


def test_report_from_sweep_matches_numpy(swept, tmp_path):
    out = swept["out"]
    rep_dir = str(tmp_path / "report")
    assert report.main([out, "--out", rep_dir]) == 0
    for name in ("table.md", "table.csv", "plot.png"):
        assert os.path.getsize(os.path.join(rep_dir, name)) > 0
    with open(os.path.join(rep_dir, "plot.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    rows = [json.loads(line) for line in open(os.path.join(out, "results.jsonl"))]
    with open(os.path.join(rep_dir, "table.csv")) as f:
        table = {r["variant"]: r for r in csv.DictReader(f)}
    md = open(os.path.join(rep_dir, "table.md")).read()
    assert "mean best-validation" in md or "highest mean best_val_top1" in md
    for variant in ("ce", "kd"):
        test = [r["test_top1_at_best_val"] for r in rows if r["variant"] == variant]
        mean, std = _np_mean_std(test)
        got = table[variant]
        assert int(got["n_seeds"]) == 2
        assert float(got["test_top1_mean_pct"]) == pytest.approx(100 * mean, abs=1e-3)
        assert float(got["test_top1_std_pct"]) == pytest.approx(100 * std, abs=1e-3)
        assert f"{100 * mean:.2f} +- {100 * std:.2f}" in md
        assert int(got["teacher_calls"]) == (0 if variant == "ce" else 160)


def _synthetic_rows():
    """kd at S=500: lr 0.1 has the best mean validation but the worse test accuracy."""
    val = {0.1: [0.60, 0.62, 0.64], 0.05: [0.50, 0.52, 0.51]}
    test = {0.1: [0.40, 0.43, 0.47], 0.05: [0.70, 0.72, 0.71]}
    rows = []
    for lr in (0.1, 0.05):
        for i, seed in enumerate((1, 2, 3)):
            rows.append({"variant": "kd", "method": "kd", "subset_size": 500, "budget": 400,
                         "teacher_calls": 400, "seed": seed, "lr": lr,
                         "best_val_top1": val[lr][i], "test_top1_at_best_val": test[lr][i]})
    # a ckd row set where one member has no result (None) and must be left out
    for seed, v, t in ((1, 0.5, 0.55), (2, 0.6, 0.65), (3, None, None)):
        rows.append({"variant": "ckd", "method": "ckd", "subset_size": 500, "budget": 400,
                     "teacher_calls": 400, "seed": seed, "lr": 0.05, "best_val_top1": v,
                     "test_top1_at_best_val": t})
    return rows


def test_report_picks_lr_by_validation_not_test(tmp_path):
    path = tmp_path / "results.jsonl"
    R.write_jsonl(_synthetic_rows(), str(path))
    rep = report.make_report(str(path), str(tmp_path / "rep"))
    with open(tmp_path / "rep" / "table.csv") as f:
        table = {r["variant"]: r for r in csv.DictReader(f)}
    kd = table["kd"]
    assert float(kd["lr"]) == 0.1  # best validation, although 0.05 has the best test
    mean, std = _np_mean_std([0.40, 0.43, 0.47])
    assert float(kd["test_top1_mean_pct"]) == pytest.approx(100 * mean, abs=1e-3)
    assert float(kd["test_top1_std_pct"]) == pytest.approx(100 * std, abs=1e-3)
    assert float(kd["val_top1_mean_pct"]) == pytest.approx(100 * np.mean([0.6, 0.62, 0.64]),
                                                           abs=1e-3)
    ckd = table["ckd"]
    assert int(ckd["n_seeds"]) == 2 and ckd["seeds"] == "1 2"
    assert float(ckd["test_top1_mean_pct"]) == pytest.approx(60.0, abs=1e-3)
    md = rep["table"]
    assert "test accuracy is not used for the choice" in md
    # headline: variants down, subset sizes across; the best mean of the column in bold
    assert "| variant | logits | S=500 (B=400) |" in md
    assert f"| kd | raw | {100 * mean:.2f} +- {100 * std:.2f} |" in md
    assert "| ckd | raw | **60.00 +- 7.07** |" in md
    val = 100 * np.mean([0.6, 0.62, 0.64])
    assert f"| kd | kd | raw | 500 | 400 | 400 | 0.1 | 3 | {val:.2f}" in md


def test_lr_tie_goes_to_smaller_lr():
    rows = [{"variant": "kd", "subset_size": 10, "seed": 1, "lr": lr, "best_val_top1": 0.5,
             "test_top1_at_best_val": t} for lr, t in ((0.1, 0.2), (0.025, 0.3), (0.05, 0.4))]
    (agg,) = R.aggregate(rows)
    assert agg["lr"] == 0.025 and agg["mean"] == 0.3 and math.isnan(agg["std"])


def test_plan_cells_variants_and_errors(tmp_path):
    cells = sweep.plan_cells(BASE, ["ckd", "ckd_kl3"], [200, 300], [1, 2, 3], [0.1, 0.05],
                             str(tmp_path))
    names = [c["name"] for c in cells]
    assert names == ["ckd_S200", "ckd_kl3_S200", "ckd_S300", "ckd_kl3_S300"]
    kl3 = cells[1]["config"]
    assert (kl3.method, kl3.ckd_form, kl3.pos_and_neg) == ("ckd", "kl", 3)
    assert kl3.seeds == (1, 2, 3) and kl3.learning_rates == (0.1, 0.05)
    assert kl3.logit_table_dir == os.path.join(str(tmp_path), "logit_tables")
    assert kl3.out_dir == os.path.join(str(tmp_path), "ckd_kl3_S200")
    assert sweep.variant_overrides("rkd") == {"method": "rkd"}
    with pytest.raises(ValueError, match="unknown variant 'nope'.*ckd_kl3"):
        sweep.plan_cells(BASE, ["nope"], [200], None, None, str(tmp_path))
    # a teacher-using cell with no teacher and no tables fails before any work
    with pytest.raises(ValueError, match="teacher_checkpoint"):
        sweep.run_sweep(cells, log=lambda s: None)
    assert not os.path.exists(os.path.join(str(tmp_path), "ckd_S200"))
    # an existing cell of another configuration fails before any work
    os.makedirs(cells[0]["config"].out_dir)
    with open(os.path.join(cells[0]["config"].out_dir, "config.json"), "w") as f:
        f.write(cells[0]["config"].replace(epochs=7).to_json())
    with pytest.raises(ValueError, match="another configuration.*epochs"):
        sweep.run_sweep(cells, log=lambda s: None)


def test_sweep_cli_dry_run(tmp_path, capsys):
    cfg = os.path.join(ROOT, "experiments", "configs", "digits_quickstart.py")
    rc = sweep_cli.main(["--config", cfg, "--methods", "ce,ckd_k3", "--subset-sizes", "250",
                         "--seeds", "1", "--lrs", "0.05", "--set", "epochs=3",
                         "--out", str(tmp_path), "--dry-run"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "ce_S250" in text and "ckd_k3_S250" in text and "to run" in text
    assert not os.listdir(tmp_path)


def test_headline_has_a_dash_for_a_missing_cell():
    rows = [{"variant": v, "subset_size": s, "budget": int(0.8 * s), "seed": seed, "lr": 0.1,
             "best_val_top1": 0.5, "test_top1_at_best_val": t + 0.01 * seed}
            for v, s, t in (("kd", 100, 0.30), ("kd", 200, 0.40), ("ckd", 100, 0.50))
            for seed in (1, 2)]
    md = report.headline_table(R.aggregate(rows))
    assert "| variant | logits | S=100 (B=80) | S=200 (B=160) |" in md
    assert "| kd | raw | 31.50 +- 0.71 | **41.50 +- 0.71** |" in md
    assert "| ckd | raw | **51.50 +- 0.71** | - |" in md


def test_report_lists_variants_in_registry_order():
    rows = [{"variant": v, "subset_size": 100, "seed": 1, "lr": 0.1, "best_val_top1": 0.5,
             "test_top1_at_best_val": 0.5} for v in ("rkd", "my_variant", "ckd_cal", "kd", "ce")]
    order = [a["variant"] for a in report.in_variant_order(R.aggregate(rows))]
    assert order == ["ce", "kd", "ckd_cal", "rkd", "my_variant"]
