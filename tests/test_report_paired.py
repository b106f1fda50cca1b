"""experiments/report.py's budget-study outputs on hand-written cells: the paired per-seed
differences with their Student-t interval (paired.md/.csv), the budget figure's numbers
(budget.csv), one training-length figure per budget, and --publish. Every figure is checked
against a NumPy computation; the t quantile against published values and a NumPy integral."""

import csv
import json
import math
import os

import numpy as np
import pytest
from experiments_support import load_experiment  # tests/ on sys.path
from test_report_curves import _write_cell

from ckd_jax import results as R

report = load_experiment("report")

# Two-sided 95% (and 99%) quantiles of Student's t, from printed tables.
T95 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 9: 2.2622, 10: 2.2281,
       29: 2.0452, 30: 2.0423}


@pytest.mark.parametrize("df", sorted(T95))
def test_t_quantile_matches_the_printed_table(df):
    assert R.t_quantile(0.95, df) == pytest.approx(T95[df], abs=1e-4)


@pytest.mark.parametrize("df", [1, 2, 3, 6, 7])
def test_t_cdf_matches_a_numpy_integral_of_the_density(df):
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    for t in (0.3, 1.0, 2.5):
        x = np.linspace(0.0, t, 200_001)
        pdf = np.exp(log_c) * (1 + x ** 2 / df) ** (-(df + 1) / 2)
        integral = 2 * np.sum((pdf[1:] + pdf[:-1]) / 2 * np.diff(x))  # P(|T| < t)
        assert R.t_two_sided_cdf(t, df) == pytest.approx(integral, abs=1e-9)
    assert R.t_quantile(0.99, 4) == pytest.approx(4.6041, abs=1e-4)
    with pytest.raises(ValueError, match="whole number >= 1"):
        R.t_two_sided_cdf(1.0, 0)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        R.t_quantile(1.0, 3)


def _cell(sweep, variant, subset, per_seed, *, lr=0.1, val=0.5):
    """A cell whose member of seed s has test top-1 at best validation per_seed[s][0] and last
    test top-1 per_seed[s][1], all at one learning rate."""
    seeds = sorted(per_seed)
    curves = {(s, lr): {10: per_seed[s][1]} for s in seeds}
    best = {(s, lr): (10, val, per_seed[s][0]) for s in seeds}
    _write_cell(sweep, variant, seeds, [lr] * len(seeds), curves, best, subset=subset)


# (selected, last) test top-1 per seed. At S=100 mixup_kd lacks seed 3 and ckd_cal seed 4.
KD = {100: {1: (0.40, 0.38), 2: (0.44, 0.45), 3: (0.47, 0.41), 4: (0.42, 0.40)},
      200: {1: (0.50, 0.49), 2: (0.53, 0.50), 3: (0.55, 0.56)}}
CKD_CAL = {100: {1: (0.45, 0.41), 2: (0.46, 0.47), 3: (0.52, 0.44)},
           200: {1: (0.56, 0.55), 2: (0.54, 0.52), 3: (0.60, 0.57)}}
MIXUP_KD = {100: {1: (0.43, 0.40), 2: (0.47, 0.44), 4: (0.41, 0.43)},
            200: {1: (0.55, 0.52), 2: (0.53, 0.53), 3: (0.58, 0.58)}}


@pytest.fixture()
def budgets(tmp_path):
    """One sweep folder with kd, ckd_cal and mixup_kd at S=100 and S=200; kd at S=100 also
    has a second rate with a worse validation (never chosen) and better test figures."""
    sweep = str(tmp_path / "sweep")
    os.makedirs(sweep)
    for variant, table in (("kd", KD), ("ckd_cal", CKD_CAL), ("mixup_kd", MIXUP_KD)):
        for subset, per_seed in table.items():
            if variant == "kd" and subset == 100:
                seeds = sorted(per_seed)
                curves = {**{(s, 0.1): {10: per_seed[s][1]} for s in seeds},
                          **{(s, 0.5): {10: 0.99} for s in seeds}}
                best = {**{(s, 0.1): (10, 0.5, per_seed[s][0]) for s in seeds},
                        **{(s, 0.5): (10, 0.1, 0.99) for s in seeds}}
                _write_cell(sweep, "kd", seeds + seeds, [0.1] * 4 + [0.5] * 4, curves, best,
                            subset=subset)
            else:
                _cell(sweep, variant, subset, per_seed)
    return sweep


def _np_interval(diffs, t):
    d = np.asarray(diffs, np.float64)
    half = t * d.std(ddof=1) / np.sqrt(len(d))
    return d.mean(), d.std(ddof=1), d.mean() - half, d.mean() + half


def test_paired_differences_match_numpy(budgets, tmp_path):
    out = str(tmp_path / "rep")
    rep = report.make_report(budgets, out, paired=[("ckd_cal", "kd"), ("ckd_cal", "mixup_kd")])
    got = {(d["subset_size"], d["a"], d["b"], d["view"]): d for d in rep["paired_rows"]}
    assert list(got) == [(s, a, b, v) for s in (100, 200)
                         for a, b in (("ckd_cal", "kd"), ("ckd_cal", "mixup_kd"))
                         for v in ("selected", "last")]
    for (subset, a, b, view), d in got.items():
        ta, tb = {"kd": KD, "mixup_kd": MIXUP_KD, "ckd_cal": CKD_CAL}[a], \
            {"kd": KD, "mixup_kd": MIXUP_KD}[b]
        k = 0 if view == "selected" else 1
        seeds = sorted(set(ta[subset]) & set(tb[subset]))
        diffs = [ta[subset][s][k] - tb[subset][s][k] for s in seeds]
        mean, std, low, high = _np_interval(diffs, T95[len(seeds) - 1])
        assert d["seeds"] == seeds and d["n"] == len(seeds)
        assert d["diffs"] == pytest.approx(diffs, abs=1e-12)
        assert (d["mean"], d["std"]) == (pytest.approx(mean, abs=1e-12),
                                         pytest.approx(std, abs=1e-12))
        assert (d["low"], d["high"]) == (pytest.approx(low, abs=1e-5),
                                         pytest.approx(high, abs=1e-5))
        assert d["lr_a"] == d["lr_b"] == 0.1  # kd's 0.5 has the worse validation
    # Seeds one side lacks are named, not dropped silently.
    assert got[(100, "ckd_cal", "kd", "selected")]["only_b"] == [4]
    assert got[(100, "ckd_cal", "mixup_kd", "selected")]["only_a"] == [3]
    assert got[(100, "ckd_cal", "mixup_kd", "selected")]["only_b"] == [4]
    md = open(os.path.join(out, "paired.md")).read()
    assert "Student's t with n-1" in md
    assert "| 100 | 80 | ckd_cal - mixup_kd | selected | 2 | 1,2 | +2.00 -1.00 | +0.50 |" in md
    assert "ckd_cal only: 3; mixup_kd only: 4" in md
    with open(os.path.join(out, "paired.csv")) as f:
        lines = list(csv.DictReader(f))
    line = next(r for r in lines if (r["subset_size"], r["a"], r["b"], r["view"])
                == ("200", "ckd_cal", "kd", "last"))
    mean, std, low, high = _np_interval([0.06, 0.02, 0.01], T95[2])
    assert float(line["mean_pp"]) == pytest.approx(100 * mean, abs=1e-4)
    assert float(line["low_pp"]) == pytest.approx(100 * low, abs=1e-3)
    assert float(line["high_pp"]) == pytest.approx(100 * high, abs=1e-3)
    assert line["resolved"] == ("yes" if low > 0 else "no") and line["n"] == "3"


def test_default_pairs_name_what_they_could_not_compare(budgets, tmp_path):
    rep = report.make_report(budgets, str(tmp_path / "rep"))
    assert {(d["a"], d["b"]) for d in rep["paired_rows"]} == {("ckd_cal", "kd"),
                                                              ("ckd_cal", "mixup_kd")}
    assert "Not compared (a variant has no rows): ckd - kd, ckd_anchor - mixup_kd, " \
           "ckd_anchor - ckd_cal." in rep["paired"]


def test_paired_arguments_are_checked_before_writing(budgets, tmp_path, capsys):
    out = tmp_path / "rep"
    with pytest.raises(ValueError, match=r"--paired ckd,kd: no results for \['ckd'\]; "
                                         r"variants in the rows: \['kd', 'ckd_cal', "
                                         r"'mixup_kd'\]"):
        report.main([budgets, "--out", str(out), "--paired", "ckd,kd"])
    for bad in ("kd", "kd,kd", "kd,ckd_cal,ce", "kd,"):
        with pytest.raises(ValueError, match="must name two different variants as A,B"):
            report.main([budgets, "--out", str(out), "--paired", bad])
    assert not out.exists()
    assert report.parse_pairs(["ckd_cal,kd; ckd_cal,mixup_kd", "kd,ce"]) == [
        ("ckd_cal", "kd"), ("ckd_cal", "mixup_kd"), ("kd", "ce")]
    assert report.main([budgets, "--out", str(out), "--paired", "none"]) == 0
    assert not (out / "paired.md").exists()


def test_budget_figure_numbers_match_numpy(budgets, tmp_path):
    out = str(tmp_path / "rep")
    assert report.main([budgets, "--out", out, "--curves", "kd,ckd_cal"]) == 0
    with open(os.path.join(out, "budget.csv")) as f:
        lines = {(r["variant"], r["subset_size"]): r for r in csv.DictReader(f)}
    assert len(lines) == 6
    for variant, table in (("kd", KD), ("ckd_cal", CKD_CAL), ("mixup_kd", MIXUP_KD)):
        for subset, per_seed in table.items():
            line = lines[(variant, str(subset))]
            sel = np.array([v[0] for v in per_seed.values()])
            last = np.array([v[1] for v in per_seed.values()])
            assert line["budget"] == str(int(0.8 * subset)) and line["lr"] == "0.1"
            assert float(line["test_top1_mean_pct"]) == pytest.approx(100 * sel.mean(), abs=1e-3)
            assert float(line["test_top1_std_pct"]) == pytest.approx(100 * sel.std(ddof=1),
                                                                     abs=1e-3)
            assert float(line["last_test_top1_mean_pct"]) == pytest.approx(100 * last.mean(),
                                                                           abs=1e-3)
            assert float(line["last_test_top1_std_pct"]) == pytest.approx(
                100 * last.std(ddof=1), abs=1e-3)
    for name in ("budget.png", "curves.png", "curves_S100.png", "curves_S200.png"):
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name


def test_one_budget_writes_no_budget_figure(tmp_path):
    sweep = str(tmp_path / "sweep")
    os.makedirs(sweep)
    _cell(sweep, "kd", 100, KD[100])
    _cell(sweep, "ckd_cal", 100, CKD_CAL[100])
    out = tmp_path / "rep"
    report.make_report(sweep, str(out), curves=["kd"])
    assert sorted(os.listdir(out)) == ["curves.csv", "curves.md", "curves.png", "paired.csv",
                                       "paired.md", "plot.png", "table.csv", "table.md"]


def test_publish_copies_the_run_files_once_and_refuses_to_overwrite(budgets, tmp_path):
    cell = os.path.join(budgets, "kd_S100")
    open(os.path.join(cell, "config.json"), "w").write('{"method": "kd"}\n')
    os.makedirs(os.path.join(cell, "checkpoints", "10"))
    open(os.path.join(cell, "checkpoints", "10", "w.bin"), "wb").write(b"weights")
    os.makedirs(os.path.join(budgets, "logit_tables"))
    _write_cell(budgets, "ce", [1], [0.1], {(1, 0.1): {10: 0.3}}, {(1, 0.1): (10, 0.3, 0.3)},
                finished=False)
    dest = str(tmp_path / "published")
    out = str(tmp_path / "rep")
    assert report.main([budgets, "--out", out, "--publish", dest]) == 0
    got = sorted(os.path.relpath(os.path.join(d, f), dest)
                 for d, _, fs in os.walk(dest) for f in fs)
    cells = sorted(c for c in os.listdir(budgets) if c.endswith(("_S100", "_S200"))
                   and not c.startswith("ce_"))  # the unfinished ce cell is not published
    assert got == sorted([f"sweep/{c}/{f}" for c in cells
                          for f in ("cell.json", "metrics.jsonl", "summary.json")]
                         + ["sweep/kd_S100/config.json"])
    for rel in got:
        with open(os.path.join(dest, rel), "rb") as a, \
                open(os.path.join(budgets, rel.split("/", 1)[1]), "rb") as b:
            assert a.read() == b.read()
    # The copy is a results folder: its report is the same table.
    assert report.make_report(os.path.join(dest, "sweep"), str(tmp_path / "rep2"))["table"] == \
        open(os.path.join(out, "table.md")).read()
    # Again: nothing to copy. A file that differs: an error before anything is copied.
    assert report.publish([budgets], dest) == []
    summary = os.path.join(budgets, "kd_S200", "summary.json")
    data = json.load(open(summary))
    data["members"][0]["test_top1_at_best_val"] = 0.1
    json.dump(data, open(summary, "w"))
    os.remove(os.path.join(dest, "sweep", "mixup_kd_S200", "metrics.jsonl"))
    with pytest.raises(ValueError, match=r"1 file\(s\) in .* differ from the runs' \(first: "
                                         r".*kd_S200/summary.json\); nothing copied"):
        report.main([budgets, "--out", out, "--publish", dest])
    assert not os.path.exists(os.path.join(dest, "sweep", "mixup_kd_S200", "metrics.jsonl"))
    with pytest.raises(ValueError, match="every source must be a sweep directory"):
        report.publish([os.path.join(out, "table.csv")], dest)


def test_paired_overview_is_the_selected_rows_by_budget(budgets, tmp_path):
    md = report.make_report(budgets, str(tmp_path / "rep"),
                            paired=[("ckd_cal", "kd"), ("ckd_cal", "mixup_kd")])["paired"]
    overview = md.split("**At a glance**", 1)[1]
    assert "| A - B | S=100 (B=80) | S=200 (B=160) |" in overview

    def cell(a, b, subset):
        ta, tb = {"kd": KD, "mixup_kd": MIXUP_KD, "ckd_cal": CKD_CAL}[a], \
            {"kd": KD, "mixup_kd": MIXUP_KD}[b]
        seeds = sorted(set(ta[subset]) & set(tb[subset]))
        mean, _, low, high = _np_interval([ta[subset][s][0] - tb[subset][s][0] for s in seeds],
                                          T95[len(seeds) - 1])
        text = f"{100 * mean:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}] (n={len(seeds)})"
        return f"**{text}**" if low > 0 or high < 0 else text

    for a, b in (("ckd_cal", "kd"), ("ckd_cal", "mixup_kd")):
        assert f"| {a} - {b} | {cell(a, b, 100)} | {cell(a, b, 200)} |" in overview
    assert "**" not in overview.split("\n", 1)[1]  # no interval here excludes 0


def test_paired_overview_bolds_a_resolved_difference_and_marks_a_missing_one():
    row = lambda s, lo, hi, n: {"a": "ckd", "b": "kd", "subset_size": s, "budget": s * 4 // 5,
                                "view": "selected", "n": n, "mean": (lo + hi) / 2,
                                "low": lo, "high": hi}
    lines = report.paired_overview([row(250, 0.01, 0.03, 5), row(500, -0.01, 0.03, 4),
                                    row(1000, math.nan, math.nan, 0),
                                    {**row(250, -0.5, 0.5, 5), "view": "last"}])
    assert lines[-1] == ("| ckd - kd | **+2.00 [+1.00, +3.00] (n=5)** | +1.00 [-1.00, +3.00] "
                         "(n=4) | - |")
    assert len(lines) == 5  # the heading, a blank, the header, the rule, one pair
