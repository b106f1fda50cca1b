"""experiments/report.py over several sweep folders (one table) and its training-length output
(--curves): hand-written cells, every figure checked against a NumPy computation."""

import csv
import json
import os

import numpy as np
import pytest
from experiments_support import load_experiment  # tests/ on sys.path

from ckd_jax import results as R

report = load_experiment("report")


def _write_cell(sweep_dir, variant, seeds, lrs, curves, best, *, calibrated=False,
                finished=True, subset=100, test_images=None):
    """A finished cell `<variant>_S<subset>` with one member per (seed, lr): `curves[(seed,
    lr)]` is {epoch: test top-1} logged on the run's own logits (its last epoch's figure is the
    member's last_test_top1); `best[(seed, lr)]` = (best_epoch, best_val_top1,
    test_top1_at_best_val). `test_images`: the rows' curve-subset size (None: not logged)."""
    cell_dir = os.path.join(sweep_dir, f"{variant}_S{subset}")
    os.makedirs(cell_dir)
    json.dump({"variant": variant, "overrides": {}}, open(os.path.join(cell_dir, R.CELL_FILE), "w"))
    members, lines = [], []
    for i, (seed, lr) in enumerate(zip(seeds, lrs)):
        epoch_best, val, test = best[(seed, lr)]
        log = curves[(seed, lr)]
        members.append({"seed": seed, "lr": lr, "best_epoch": epoch_best, "best_val_top1": val,
                        "test_top1_at_best_val": test, "epochs_run": max(log),
                        "last_test_top1": log[max(log)],
                        "selected_on": "calibrated" if calibrated else "raw"})
        for epoch in range(1, max(log) + 1):
            row = {"epoch": epoch, "member": i, "seed": seed, "lr": lr, "lr_now": lr,
                   "val_top1": 0.1}
            if epoch in log:  # the other logits get a figure that must not be read
                row["test_top1_calibrated" if calibrated else "test_top1"] = log[epoch]
                row["test_top1" if calibrated else "test_top1_calibrated"] = 0.999
                if test_images is not None:
                    row["test_images"] = test_images
            lines.append(json.dumps(row))
    summary = {"method": variant.split("_")[0], "subset_size": subset,
               "budget": int(0.8 * subset),
               "finished": finished, "calibration": "table" if calibrated else "none",
               "members": members}
    json.dump(summary, open(os.path.join(cell_dir, "summary.json"), "w"))
    open(os.path.join(cell_dir, "metrics.jsonl"), "w").write("\n".join(lines) + "\n")


@pytest.fixture()
def two_sweeps(tmp_path):
    """Seed 1 in sweep a, seed 2 in sweep b; kd at two rates (0.1 has the better validation),
    ckd_cal calibrated. Seed 2 logs one epoch fewer (a shorter plateau run)."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    kd_curves = {(1, 0.1): {10: 0.30, 20: 0.50, 30: 0.45},
                 (2, 0.1): {10: 0.40, 20: 0.42},
                 (1, 0.05): {10: 0.9, 20: 0.9, 30: 0.9},
                 (2, 0.05): {10: 0.9, 20: 0.9}}
    kd_best = {(1, 0.1): (18, 0.60, 0.48), (2, 0.1): (12, 0.62, 0.41),
               (1, 0.05): (20, 0.10, 0.90), (2, 0.05): (20, 0.10, 0.90)}
    ckd_curves = {(1, 0.1): {10: 0.20, 20: 0.60}, (2, 0.1): {10: 0.30, 20: 0.40}}
    ckd_best = {(1, 0.1): (20, 0.5, 0.58), (2, 0.1): (9, 0.5, 0.35)}
    for folder, seed in ((a, 1), (b, 2)):
        os.makedirs(folder)
        _write_cell(folder, "kd", [seed, seed], [0.1, 0.05], kd_curves, kd_best)
        _write_cell(folder, "ckd_cal", [seed], [0.1], ckd_curves, ckd_best, calibrated=True)
    return a, b


def test_several_sources_are_one_table(two_sweeps, tmp_path):
    a, b = two_sweeps
    rep = report.make_report([a, b], str(tmp_path / "rep"))
    with open(tmp_path / "rep" / "table.csv") as f:
        table = {r["variant"]: r for r in csv.DictReader(f)}
    assert table["kd"]["seeds"] == "1 2" and float(table["kd"]["lr"]) == 0.1
    assert float(table["kd"]["test_top1_mean_pct"]) == pytest.approx(100 * np.mean([0.48, 0.41]),
                                                                   abs=1e-3)
    assert float(table["kd"]["test_top1_std_pct"]) == pytest.approx(
        100 * np.std([0.48, 0.41], ddof=1), abs=1e-3)
    assert "curves" not in rep  # only with --curves
    union = R.read_results(str(tmp_path / "rep" / "results.jsonl"))  # the table's input
    assert sorted((r["variant"], r["seed"], r["lr"]) for r in union) == sorted(
        (r["variant"], r["seed"], r["lr"]) for r in R.read_results(a) + R.read_results(b))


def test_a_member_in_two_sources_is_an_error(two_sweeps, tmp_path):
    a, _ = two_sweeps
    with pytest.raises(ValueError, match="both hold variant 'ckd_cal', S=100, seed 1, lr 0.1"):
        report.make_report([a, a], str(tmp_path / "rep"))
    assert not os.path.exists(tmp_path / "rep")


def test_curves_match_numpy(two_sweeps, tmp_path):
    a, b = two_sweeps
    out = str(tmp_path / "rep")
    assert report.main([a, b, "--out", out, "--curves", "kd,ckd_cal"]) == 0
    summary = {s["variant"]: s for s in report.make_report(
        [a, b], out, curves=["kd", "ckd_cal"])["curve_summary"]}
    kd = summary["kd"]
    # the chosen rate only (0.1: best validation), epochs both seeds logged: 10 and 20
    mean_curve = {10: np.mean([0.30, 0.40]), 20: np.mean([0.50, 0.42])}
    assert kd["lr"] == 0.1 and kd["seeds"] == [1, 2]
    assert kd["peak_epoch"] == 20 and kd["peak_test"] == pytest.approx(mean_curve[20])
    assert kd["last_common_epoch"] == 20
    assert kd["epochs_run"] == pytest.approx(np.mean([30, 20]))
    assert kd["best_epoch"] == pytest.approx(np.mean([18, 12]))
    assert kd["test_at_selected"] == pytest.approx(np.mean([0.48, 0.41]))
    assert kd["test_at_last"] == pytest.approx(np.mean([0.45, 0.42]))
    ckd = summary["ckd_cal"]  # read on calibrated logits (the 0.999 raw figures are not)
    assert ckd["peak_epoch"] == 20 and ckd["peak_test"] == pytest.approx(np.mean([0.6, 0.4]))
    with open(os.path.join(out, "curves.csv")) as f:
        points = list(csv.DictReader(f))
    assert len(points) == 3 + 2 + 2 + 2  # kd seeds 1, 2 at lr 0.1; ckd_cal seeds 1, 2
    assert {p["lr"] for p in points} == {"0.1"}
    assert max(float(p["test_top1_pct"]) for p in points) == pytest.approx(60.0)
    with open(os.path.join(out, "curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    md = open(os.path.join(out, "curves.md")).read()
    assert (f"| kd | 100 | 0.1 | 1,2 | 25 | 15 | 44.50 | 43.50 | {100 * mean_curve[20]:.2f} (20) "
            f"| {100 * mean_curve[20]:.2f} (20) |") in md


def test_curves_errors_before_writing(two_sweeps, tmp_path):
    a, b = two_sweeps
    out = tmp_path / "rep"
    with pytest.raises(ValueError, match=r"variant 'ce' has no finished cell .* "
                                         r"variants with curves: \['ckd_cal', 'kd'\]"):
        report.make_report([a, b], str(out), curves=["kd", "ce"])
    R.write_jsonl(R.read_results(a), str(tmp_path / "results.jsonl"))
    with pytest.raises(ValueError, match="must be a sweep directory"):
        report.make_report([str(tmp_path / "results.jsonl")], str(out), curves=["kd"])
    assert not out.exists()


def test_unfinished_cells_have_no_curve(tmp_path):
    sweep = str(tmp_path / "s")
    os.makedirs(sweep)
    _write_cell(sweep, "kd", [1], [0.1], {(1, 0.1): {10: 0.5}}, {(1, 0.1): (10, 0.5, 0.5)},
                finished=False)
    assert R.read_test_curves(sweep) == []


def test_a_member_without_test_points_has_no_curve_subset(tmp_path):
    sweep = str(tmp_path / "s")
    os.makedirs(sweep)
    _write_cell(sweep, "kd", [1], [0.1], {(1, 0.1): {10: 0.5}}, {(1, 0.1): (10, 0.5, 0.5)})
    metrics = os.path.join(sweep, "kd_S100", "metrics.jsonl")
    rows = [json.loads(line) for line in open(metrics)]
    with open(metrics, "w") as f:  # a run that logged no test figure (eval_test_every = 0)
        f.writelines(json.dumps({k: v for k, v in r.items() if not k.startswith("test_")})
                     + "\n" for r in rows)
    [curve] = R.read_test_curves(sweep)
    assert curve["points"] == [] and curve["test_images"] is None


def test_several_sources_need_out(two_sweeps, capsys):
    a, b = two_sweeps
    with pytest.raises(SystemExit) as err:
        report.main([a, b])
    assert err.value.code == 2
    assert "--out is required with several sources" in capsys.readouterr().err


def test_curves_on_a_test_subset_say_so(two_sweeps, tmp_path):
    a, b = two_sweeps
    c = str(tmp_path / "c")
    os.makedirs(c)
    _write_cell(c, "mixup", [1], [0.1], {(1, 0.1): {10: 0.25, 20: 0.35}},
                {(1, 0.1): (20, 0.4, 0.33)}, test_images=2000)
    curves = {x["variant"]: x["test_images"] for x in R.read_test_curves(c)
              + R.read_test_curves(a)}
    assert curves == {"mixup": 2000, "kd": None, "ckd_cal": None}
    plain = report.make_report([a, b], str(tmp_path / "plain"), curves=["kd"])["curves"]
    assert "eval_test_curve_images" not in plain
    md = report.make_report([a, b, c], str(tmp_path / "rep"), curves=["kd", "mixup"])["curves"]
    assert "fixed random subset of the test images" in md and "mixup S=100: 2000" in md
    assert "kd S=100" not in md  # the whole split: not listed
