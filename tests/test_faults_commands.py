"""Fault injection in real processes: the issue's three headline cases run as a user runs them
(`python experiments/quickstart.py --out <folder>`), and a SIGKILL during each kind of write
(atomic file, appended lines, a teacher pass before its table is saved) followed by a rerun
that ends identical to an uninterrupted run. The in-process matrix is test_faults.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
from experiments_support import ROOT, user_env
from faults_support import (
    QS_ARGS,
    QS_B,
    damage,
    make_quickstart_folder,
    snapshot,
)
from test_faults import _data_file, _teacher_dir

from ckd_jax.logit_table import LogitTable, build_or_load_logit_table


def _env():
    env = user_env(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, PYTHONUNBUFFERED="1",
                   PYTHONWARNINGS="ignore")
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".jax_cache"))
    env.pop("CKD_JAX_TRACEBACK", None)
    return env


def _quickstart(out, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "quickstart.py"),
                           "--out", str(out), *QS_ARGS], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=600)


def test_headline_truncated_table_is_one_line(tmp_path):
    qs = tmp_path / "qs"
    make_quickstart_folder(qs, finished=False)
    table = qs / "logit_tables" / "digits_tiny_cnn_augmented_S250_seed1.npz"
    damage(table, "trunc50")  # "cut to half its size"
    before = snapshot(tmp_path)
    r = _quickstart(qs, tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("quickstart.py: error: logit table "), r.stderr
    assert str(table) in lines[0] and "is safe" in lines[0] and f"{QS_B} teacher calls" in lines[0]
    assert snapshot(tmp_path) == before


def _damaged_teacher_folder(tmp_path):
    """A quickstart folder without tables whose teacher's newest checkpoint has its data cut
    to half, an older intact checkpoint beside it."""
    qs = tmp_path / "qs"
    make_quickstart_folder(qs, finished=False)
    shutil.rmtree(qs / "logit_tables")
    shutil.rmtree(qs / "teacher")
    _teacher_dir(qs / "teacher", width=32)
    (qs / "teacher" / "teacher.json").write_text(json.dumps({"test_acc": 0.9}))
    damage(_data_file(qs / "teacher" / "checkpoints" / "2"), "trunc50")
    return qs


def test_headline_damaged_teacher_checkpoint(tmp_path, capsys):
    """The newest teacher checkpoint's data truncated, an older intact one beside it: the
    older one builds the tables, said in one line (in process: the same code path as the
    command, without the training that follows). Both damaged: the command answers in one
    line, exit 2, no orbax/TensorStore trace, nothing written."""
    from faults_support import quickstart_config

    from ckd_jax.train.distill import _Prepared

    qs = _damaged_teacher_folder(tmp_path)
    cfg = quickstart_config(str(qs))
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",))
    prep = _Prepared(cfg, mesh, None, None)
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == 1 and notes[0].startswith("note: checkpoint "), notes
    assert "checkpoints/2 is damaged" in notes[0] and "using the older intact step 1" in notes[0]
    assert prep.build_missing_tables() == 3 * QS_B
    assert sorted(os.listdir(qs / "logit_tables")) == [
        f"digits_tiny_cnn_augmented_S250_seed{s}.npz" for s in (1, 2, 3)]  # no marker left

    shutil.rmtree(qs / "logit_tables")
    damage(_data_file(qs / "teacher" / "checkpoints" / "1"), "trunc50")
    before = snapshot(tmp_path)
    r = _quickstart(qs, tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no intact checkpoint in" in lines[0], r.stderr[-3000:]
    assert str(qs / "teacher" / "checkpoints") in lines[0] and "Traceback" not in r.stderr
    assert snapshot(tmp_path) == before


def test_headline_copied_finished_folder_is_reused(tmp_path):
    qs = tmp_path / "runs" / "quickstart"
    make_quickstart_folder(qs)
    copy = tmp_path / "x"
    shutil.copytree(qs, copy)  # `cp -r runs/quickstart /tmp/x`
    before = snapshot(tmp_path)
    r = _quickstart(copy, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"reusing {copy / 'kd'}" in r.stdout
    assert "teacher calls made by this invocation: 0" in r.stdout
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------- SIGKILL during writes
_WRITER = textwrap.dedent("""
    import os, sys, time
    from ckd_jax import files
    mode, path = sys.argv[1], sys.argv[2]
    rows = [f'{{"epoch": {e}, "val": {e / 10}}}' for e in range(1, 9)]
    if mode == "atomic":
        def write(f):
            data = "".join(r + "\\n" for r in rows).encode()
            f.write(data[:len(data) // 2]); f.flush()
            if os.environ.get("KILL_ME"):
                print("HALF", flush=True); time.sleep(120)
            f.write(data[len(data) // 2:])
        files.write_atomic(path, write)
    else:  # append: 4 rows, then the rest as a block the kill tears
        done = files.read_jsonl(path, appended=True, repair=True) if os.path.exists(path) else []
        files.append_lines(path, rows[len(done):4]) if len(done) < 4 else None
        tail = "".join(r + "\\n" for r in rows[max(4, len(done)):])
        if os.environ.get("KILL_ME"):
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            os.write(fd, tail.encode()[:len(tail) // 2 + 3])  # the kernel wrote part of it
            print("HALF", flush=True); time.sleep(120)
        files.append_lines(path, rows[max(4, len(done)):])
    print("DONE", flush=True)
""")


def _kill_at_half(cmd) -> None:
    proc = subprocess.Popen(cmd, env={**_env(), "KILL_ME": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.strip() == "HALF":
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]


def test_sigkill_during_atomic_write_and_append_then_rerun(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    run = lambda mode, path: subprocess.run([sys.executable, str(script), mode, str(path)],
                                            env=_env(), capture_output=True, text=True,
                                            timeout=60, check=True)
    clean = {}
    for mode in ("atomic", "append"):
        clean[mode] = tmp_path / f"clean_{mode}.jsonl"
        run(mode, clean[mode])

    target = tmp_path / "cut" / "summary.json"
    target.parent.mkdir()
    target.write_text('{"previous": "good"}\n')
    _kill_at_half([sys.executable, str(script), "atomic", str(target)])
    assert target.read_text() == '{"previous": "good"}\n'  # the old file, whole
    assert len(os.listdir(target.parent)) == 2  # and the killed writer's temporary file
    run("atomic", target)
    assert target.read_bytes() == clean["atomic"].read_bytes()
    assert os.listdir(target.parent) == ["summary.json"]  # the stale temporary file is gone

    log = tmp_path / "cut" / "metrics.jsonl"
    _kill_at_half([sys.executable, str(script), "append", str(log)])
    assert not log.read_bytes().endswith(b"\n")  # torn
    run("append", log)  # the rerun drops the torn row and appends the rest
    assert log.read_bytes() == clean["append"].read_bytes()


def test_crash_during_teacher_pass_then_rerun_says_what_it_costs(tmp_path, capsys):
    """A crash between the teacher pass and the table write (here: an exception in the pass,
    as a kill would stop it; the write itself is atomic, tested above): the rerun says that
    the lost pass's calls are spent again, and ends with the table an uninterrupted build
    makes."""
    from faults_support import table_build_args

    class Killed(BaseException):
        pass

    def die(n):
        raise Killed

    path = tmp_path / "tables" / "t_S8_seed1.npz"
    try:
        build_or_load_logit_table(path, **table_build_args(die))
    except Exception as e:  # the host callback's exception reaches us wrapped by XLA
        assert "Killed" in repr(e) or isinstance(e, Killed)
    except Killed:
        pass
    assert sorted(os.listdir(path.parent)) == [path.name + ".building.json"]
    capsys.readouterr()

    table, made = build_or_load_logit_table(path, **table_build_args())
    notes = capsys.readouterr().err.strip().splitlines()
    assert made == 6 and len(notes) == 1, notes
    assert "an earlier run spent 6 teacher calls" in notes[0] and "costs 6 more" in notes[0]
    assert sorted(os.listdir(path.parent)) == [path.name]

    clean, _ = build_or_load_logit_table(tmp_path / "clean.npz", **table_build_args())
    again = LogitTable.load(path)
    assert again.meta["teacher_calls"] == 6
    np.testing.assert_array_equal(again.logits, clean.logits)
    assert {k: v for k, v in again.meta.items() if k != "created"} == \
        {k: v for k, v in clean.meta.items() if k != "created"}


def test_foreign_table_is_refused_by_the_real_command(tmp_path):
    """A seed-1 table of another teacher copied over the run's own while every table is on
    disk (so the teacher need not be loaded to build one): the command refuses it in one line
    naming the table and both teacher hashes, exit 2, before any training."""
    from faults_support import build_tables, teacher_folder

    from ckd_jax.logit_table import variables_hash

    qs = tmp_path / "qs"
    own = teacher_folder(qs / "teacher", width=32)
    assert build_tables(qs, qs / "teacher", qs / "logit_tables") == 3 * QS_B
    other = teacher_folder(tmp_path / "other", width=16, seed=1)
    build_tables(qs, tmp_path / "other", tmp_path / "other_tables", width=16, seeds=(1,))
    name = "digits_tiny_cnn_augmented_S250_seed1.npz"
    shutil.copy(tmp_path / "other_tables" / name, qs / "logit_tables" / name)
    before = snapshot(tmp_path)
    r = _quickstart(qs, tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("quickstart.py: error: "), r.stderr
    assert str(qs / "logit_tables" / name) in lines[0] and "teacher_hash mismatch" in lines[0]
    assert variables_hash(other) in lines[0] and variables_hash(own) in lines[0]
    assert snapshot(tmp_path) == before
