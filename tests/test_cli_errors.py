"""Every command under experiments/ reports a bad configuration or input as one stderr line
`<command>: error: <message>` with exit status 2 and leaves no output behind
(ckd_jax.cli.run_command); a real crash keeps its traceback."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ckd_jax.cli import error_line, raised_by_project, run_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "experiments", "configs", "digits_quickstart.py")

# (command, arguments with {out} for the output path, what the message must say). Each bad
# input fails while the configuration is checked: no training, no jax compilation.
CASES = [
    ("distill.py", ["--config", DIGITS, "--set", "method=ckdx", "--out", "{out}"],
     "method='ckdx' is not supported; accepted: ce, kd, ckd"),
    ("distill.py", ["--config", "{tmp}/missing_config.py", "--out", "{out}"],
     "missing_config.py does not exist"),
    ("sweep.py", ["--config", DIGITS, "--methods", "ce,ckdx", "--out", "{out}"],
     "unknown variant 'ckdx'; accepted: named variants ce, kd"),
    ("sweep.py", ["--config", DIGITS, "--methods", "ce", "--shard", "2/2", "--out", "{out}"],
     "--shard '2/2': need N >= 1 and 0 <= I < N"),
    ("report.py", ["{tmp}/no_sweep_here", "--out", "{out}"], "no_sweep_here does not exist"),
    ("report.py", ["{tmp}/results.jsonl", "--out", "{out}"],
     "results.jsonl is damaged: line 2 is not a JSON object"),
    ("quickstart.py", ["--epochs", "0", "--out", "{out}"], "epochs=0 must be >= 1"),
    ("quickstart.py", ["--variants", "ce,ckdx", "--out", "{out}"], "unknown variant 'ckdx'"),
    ("train_teacher.py", ["--dataset", "nope", "--model", "tiny_cnn", "--out", "{out}"],
     "unknown dataset 'nope'; available: cifar10"),
    ("model_table.py", ["--num-classes", "0"], "--num-classes 0 must be >= 1"),
    ("benchmark.py", ["--models", "resnet32,nope", "--json", "{out}/bench.json"],
     "unknown model 'nope'; available:"),
]


@pytest.mark.parametrize("command,args,message", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, command, args, message):
    (tmp_path / "results.jsonl").write_text('{"variant": "kd"}\nnot json\n')
    before = sorted(os.listdir(tmp_path))
    out = tmp_path / "out"
    argv = [a.format(out=out, tmp=tmp_path) for a in args]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, PYTHONWARNINGS="ignore")
    env.pop("CKD_JAX_TRACEBACK", None)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", command), *argv],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr[-3000:]
    assert len(lines) == 1, r.stderr[-3000:]
    assert lines[0].startswith(f"{command}: error: ") and message in lines[0], lines[0]
    assert r.stdout == ""
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == before  # nothing else written either (e.g. runs/)


def _project_check(value):
    raise ValueError(f"value={value!r} is not supported;\n  accepted: a, b")


def test_run_command_project_errors(capsys):
    assert run_command(lambda argv: _project_check(argv[0]), ["z"], prog="tool.py") == 2
    err = capsys.readouterr().err
    assert err == "tool.py: error: value='z' is not supported; accepted: a, b\n"

    def missing(argv):
        open(os.path.join(argv[0], "absent.json"))

    assert run_command(missing, ["/nonexistent_ckd_dir"], prog="t") == 2
    assert capsys.readouterr().err.startswith("t: error: [Errno 2] No such file")

    def message_exit(argv):
        raise SystemExit("unknown dtype 'f8'; accepted: float32, bfloat16")

    assert run_command(message_exit, [], prog="b.py") == 2
    assert capsys.readouterr().err == "b.py: error: unknown dtype 'f8'; accepted: float32, " \
                                      "bfloat16\n"
    assert run_command(lambda argv: 0, []) == 0
    assert run_command(lambda argv: None, []) == 0
    assert error_line("x", "a\nb") == "x: error: a b"


def test_run_command_crashes_keep_their_traceback(monkeypatch):
    def numpy_crash(argv):
        np.linspace(0.0, 1.0, num=-1)  # a ValueError raised inside NumPy, not by our checks

    with pytest.raises(ValueError, match="must be non-negative") as info:
        run_command(numpy_crash, [], prog="t")
    assert not raised_by_project(info.value)
    with pytest.raises(json.JSONDecodeError):  # the standard library's, not ours
        run_command(lambda argv: json.loads("{bad"), [], prog="t")
    with pytest.raises(KeyError):
        run_command(lambda argv: {}["k"], [], prog="t")
    with pytest.raises(SystemExit) as code:
        run_command(lambda argv: sys.exit(3), [], prog="t")
    assert code.value.code == 3
    monkeypatch.setenv("CKD_JAX_TRACEBACK", "1")
    with pytest.raises(ValueError, match="not supported"):
        run_command(lambda argv: _project_check(1), [], prog="t")
