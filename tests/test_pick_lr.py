"""experiments/pick_lr.py: the learning rate chosen per cell and selection, from validation."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pick_lr_chooses_the_best_mean_validation_per_selection(tmp_path):
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
    out = subprocess.run([sys.executable, os.path.join(REPO, "experiments", "pick_lr.py"),
                          str(tmp_path)], capture_output=True, text=True, check=True).stdout
    assert "| ckd_cal_S100 | raw | 0.1 | 50.00 | 2 | **chosen** |" in out
    assert "| ckd_cal_S100 | raw | 0.05 | 45.00 | 2 |  |" in out
    assert "| ckd_cal_S100 | calibrated | 0.05 | 65.00 | 2 | **chosen** |" in out
    assert "| ce_S100 | raw | 0.1 | 20.00 | 1 | **chosen** |" in out
    assert "ce_S100 | calibrated" not in out
