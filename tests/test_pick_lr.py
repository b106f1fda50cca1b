"""experiments/pick_lr.py: the learning rate chosen per cell and selection, from validation."""

import json

import pytest
from experiments_support import load_experiment

from ckd_jax.results import aggregate, choose_lr

pick_lr = load_experiment("pick_lr")


def test_pick_lr_chooses_the_best_mean_validation_per_selection(tmp_path, capsys):
    cell = tmp_path / "ckd_cal_S100"
    cell.mkdir()
    # lr 0.1 is best on raw logits (mean of seeds: 0.5 vs 0.45), lr 0.05 on calibrated ones
    rows = [(1, 0.1, [0.3, 0.6], [0.5, 0.5]), (2, 0.1, [0.4, 0.3], [0.5, 0.4]),
            (1, 0.05, [0.4, 0.45], [0.7, 0.6]), (2, 0.05, [0.45, 0.4], [0.6, 0.55])]
    with open(cell / "metrics.jsonl", "w") as f:
        for seed, lr, raw, cal in rows:
            for epoch, (r, c) in enumerate(zip(raw, cal), 1):
                f.write(json.dumps({"epoch": epoch, "seed": seed, "lr": lr, "val_top1": r,
                                    "val_top1_calibrated": c}) + "\n")
    (tmp_path / "ce_S100").mkdir()  # a method without a table: NaN calibrated figures
    with open(tmp_path / "ce_S100" / "metrics.jsonl", "w") as f:
        f.write(json.dumps({"epoch": 1, "seed": 1, "lr": 0.1, "val_top1": 0.2,
                            "val_top1_calibrated": float("nan")}) + "\n")
    assert pick_lr.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| ckd_cal_S100 | raw | 0.1 | 50.00 | 2 | **chosen** |" in out
    assert "| ckd_cal_S100 | raw | 0.05 | 45.00 | 2 |  |" in out
    assert "| ckd_cal_S100 | calibrated | 0.05 | 65.00 | 2 | **chosen** |" in out
    assert "| ce_S100 | raw | 0.1 | 20.00 | 1 | **chosen** |" in out
    assert "ce_S100 | calibrated" not in out


def test_one_lr_rule_ties_go_to_the_smaller_rate(tmp_path, capsys):
    assert choose_lr({0.1: 0.5, 0.05: 0.5, 0.2: 0.4}) == 0.05
    assert choose_lr({0.2: 0.6, 0.05: 0.5}) == 0.2
    with pytest.raises(ValueError, match="at least one"):
        choose_lr({})
    # the reports' aggregate and pick_lr agree on a tie listed larger rate first
    rows = [dict(variant="kd", subset_size=100, lr=lr, seed=1, best_val_top1=0.5,
                 test_top1_at_best_val=0.4) for lr in (0.1, 0.05)]
    assert [r["lr"] for r in aggregate(rows)] == [0.05]
    (tmp_path / "kd_S100").mkdir()
    with open(tmp_path / "kd_S100" / "metrics.jsonl", "w") as f:
        for lr in (0.1, 0.05):
            f.write(json.dumps({"epoch": 1, "seed": 1, "lr": lr, "val_top1": 0.5}) + "\n")
    assert pick_lr.main([str(tmp_path)]) == 0
    assert "| kd_S100 | raw | 0.05 | 50.00 | 1 | **chosen** |" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="no <cell>/metrics.jsonl"):
        pick_lr.main([str(tmp_path / "nothing")])
