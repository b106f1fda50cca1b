"""report.py reads a single `distill.py` run folder (config.json + summary.json, no cell.json)."""

import json
import os

from experiments_support import run_main

from ckd_jax import results as R
from ckd_jax.train.methods import VARIANTS


def test_variant_of_config_names_the_most_specific_variant():
    assert R.variant_of_config({"method": "kd"}) == "kd"
    assert R.variant_of_config(dict(VARIANTS["ckd_cal"])) == "ckd_cal"
    assert R.variant_of_config(dict(VARIANTS["ckd"])) == "ckd"  # not its twin ckd_k2
    assert R.variant_of_config({**VARIANTS["ckd"], "calibration": "none"}) == "ckd"
    assert R.variant_of_config(dict(VARIANTS["mixup_kd"])) == "mixup_kd"
    assert R.variant_of_config({"method": "rkd"}) == "rkd"


def test_report_reads_a_distill_run_folder(tmp_path, capsys):
    run = tmp_path / "my_run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({**VARIANTS["ckd_cal"], "subset_size": 100}))
    members = [{"seed": s, "lr": 0.1, "best_epoch": 3, "best_val_top1": 0.5,
                "test_top1_at_best_val": t, "epochs_run": 5, "last_test_top1": t,
                "selected_on": "calibrated"} for s, t in ((1, 0.40), (2, 0.50))]
    (run / "summary.json").write_text(json.dumps(
        {"method": "ckd", "subset_size": 100, "budget": 80, "finished": True,
         "calibration": "table", "members": members}))
    rows = R.read_results(str(run))
    assert [(r["variant"], r["cell"], r["seed"]) for r in rows] == [
        ("ckd_cal", "my_run", 1), ("ckd_cal", "my_run", 2)]
    out = tmp_path / "rep"
    status, _, err = run_main("report", [str(run), "--out", str(out)], capsys)
    assert status == 0, err
    table = (out / "table.md").read_text()
    assert "| ckd_cal |" in table and "45.00 +- 7.07" in table  # mean and std of 40 and 50
    assert os.path.exists(out / "table.csv")
