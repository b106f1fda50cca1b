"""The README's main job runs end to end (shortened) and prints CKD's row with numbers."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quickstart(out):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "quickstart.py"), "--out", str(out),
         "--epochs", "2", "--teacher-epochs", "2", "--quiet"],
        capture_output=True, text=True, env=env, timeout=1200, check=False)


def test_quickstart_end_to_end_then_rerun_without_teacher_calls(tmp_path):
    out = tmp_path / "qs"
    first = _quickstart(out)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    rows = {m.group(1): m for m in re.finditer(
        r"^\| (ce|kd|ckd|ckd_cal) \| (\d+) \| (\d+\.\d+) \+- (\d+\.\d+) \| ([\d., ]+) \|$",
        first.stdout, re.M)}
    assert list(rows) == ["ce", "kd", "ckd", "ckd_cal"], first.stdout[-3000:]  # in this order
    assert rows["ckd"].group(2) == "200" and rows["ce"].group(2) == "0"
    assert rows["ckd_cal"].group(2) == "200"
    assert "ckd_cal" in first.stdout.split(rows["ckd_cal"].group(0))[1]  # the sentence
    assert "WARNING" not in first.stdout + first.stderr  # clean output (no absl warnings)
    for m in rows.values():
        per_seed = [float(v) for v in m.group(5).split(",")]
        assert len(per_seed) == 3 and all(0.0 <= v <= 100.0 for v in per_seed)
    # 3 seeds x 200 teacher calls, made once (KD and both CKD rows share the tables)
    assert "teacher calls made by this invocation: 600" in first.stdout
    assert len(os.listdir(out / "logit_tables")) == 3

    again = _quickstart(out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "teacher calls made by this invocation: 0" in again.stdout
    assert "reusing" in again.stdout
