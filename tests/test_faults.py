"""Fault injection, in process: every file kind the project writes x each damage -> the command
that reads it answers in one line naming the file and the safe next step (or recovers, saying
so), touches nothing, and makes no teacher call (docs/files.md is the table these tests hold
the code to). Subprocess cases (the issue's three headline cases, SIGKILL during writes) are in
test_faults_commands.py."""

from __future__ import annotations

import errno
import json
import os
import shutil

import jax
import numpy as np
import pytest
from experiments_support import load_experiment
from faults_support import (
    BYTE_DAMAGES,
    QS_ARGS,
    QS_B,
    QUICKSTART_CONFIG,
    damage,
    finished_summary,
    make_quickstart_folder,
    quickstart_config,
    snapshot,
)

from ckd_jax import files
from ckd_jax import results as R
from ckd_jax.checkpoint import Checkpointer
from ckd_jax.cli import run_command
from ckd_jax.files import DamagedFile, WriteFailed
from ckd_jax.logit_table import FORMAT_VERSION, LogitTable, load_matching_table

QS = load_experiment("quickstart")
REPORT = load_experiment("report")
CHECK = load_experiment("check_runs")


def _one_line(capsys, prog: str) -> tuple[str, str]:
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    return lines[0], out.out


@pytest.fixture(scope="module")
def qs_template(tmp_path_factory):
    """One hand-made finished quickstart folder, copied by every case that damages it."""
    root = tmp_path_factory.mktemp("qs_template")
    make_quickstart_folder(root / "qs")
    return root / "qs"


@pytest.fixture
def qs(tmp_path, qs_template):
    dst = tmp_path / "qs"
    shutil.copytree(qs_template, dst)
    return dst


def _quickstart(folder, *extra) -> int:
    return run_command(QS.main, ["--out", str(folder), *QS_ARGS, *extra], prog="quickstart.py")


# ----------------------------------------------------------------------------- logit tables
def _unfinished(qs):
    shutil.rmtree(qs / "kd")  # the run must be started so that the tables are read


@pytest.mark.parametrize("kind", BYTE_DAMAGES + ("newer_version",))
def test_damaged_table_is_one_line_with_cost_and_no_teacher_call(qs, capsys, kind):
    _unfinished(qs)
    table = qs / "logit_tables" / "digits_tiny_cnn_augmented_S250_seed1.npz"
    if kind == "newer_version":
        t = LogitTable.load(table)
        LogitTable(t.logits, t.indices, {**t.meta, "format_version": FORMAT_VERSION + 1}
                   ).save(table)
    else:
        damage(table, kind)
    before = snapshot(qs.parent)
    assert _quickstart(qs) == 2
    line, _ = _one_line(capsys, "quickstart.py")
    assert str(table) in line and f"{QS_B} teacher calls" in line, line
    assert "deleting" in line and "is safe" in line and "--rebuild-tables" in line, line
    if kind == "newer_version":
        assert "newer ckd_jax" in line
    assert snapshot(qs.parent) == before  # nothing written, no table rebuilt, no marker


def test_table_of_other_images_is_refused_without_teacher_call(tmp_path, capsys):
    """Issue 20: same dataset name and indices, other images -> refused in one line naming the
    table, the mismatch and the rebuild cost; nothing is reused silently."""
    from ckd_jax.data import load_train_test

    train, _ = load_train_test("digits")
    qs = tmp_path / "qs"
    make_quickstart_folder(qs, tables_from=255 - train.images, finished=False)
    before = snapshot(tmp_path)
    assert _quickstart(qs) == 2
    line, _ = _one_line(capsys, "quickstart.py")
    assert "seed1.npz" in line and "images mismatch" in line and f"{QS_B} teacher calls" in line
    assert snapshot(tmp_path) == before


def test_table_of_other_images_refused_by_run_distillation_with_zero_calls(tmp_path):
    """The issue-20 journey: a second subset pointed at the first run's logit_table_dir."""
    from engine_support import CountingTeacher, tiny_config

    from ckd_jax.data import load_train_test
    from ckd_jax.train.distill import _Prepared, run_distillation

    teacher = CountingTeacher()
    cfg = tiny_config(method="kd", logit_table_dir=str(tmp_path / "tables"),
                      out_dir=str(tmp_path / "second"))
    prep = _Prepared(cfg, jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",)),
                     teacher.apply, teacher.variables)
    train, _ = load_train_test("digits")
    m = prep.members[0]
    from ckd_jax.logit_table import build_or_load_logit_table

    build_or_load_logit_table(m.table_path, teacher_apply=teacher.apply,
                              teacher_variables=teacher.variables, teacher_name=cfg.teacher,
                              dataset_name="digits", images=np.roll(train.images, 1, axis=2),
                              indices=m.split.teacher_idx, key=jax.random.PRNGKey(1),
                              spec=prep.spec, seed=1)
    teacher.calls = 0
    with pytest.raises(ValueError, match=r"seed1\.npz: logit table images mismatch.*64 teacher "
                                         r"calls"):
        run_distillation(cfg, teacher_apply=teacher.apply, teacher_variables=teacher.variables)
    assert teacher.calls == 0 and not (tmp_path / "second").exists()


def _prepare(cfg):
    from ckd_jax.train.distill import _Prepared

    return _Prepared(cfg, jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",)), None,
                     None)


@pytest.fixture(scope="module")
def teacher_tables(tmp_path_factory):
    """A teacher run folder (untrained TinyCNN(32)) and the quickstart's kd tables built from
    it, once; cases copy it."""
    from faults_support import build_tables, teacher_folder

    root = tmp_path_factory.mktemp("teacher_tables") / "qs"
    teacher_folder(root / "teacher")
    build_tables(root, root / "teacher", root / "logit_tables")
    return root


def test_tables_are_checked_against_the_teacher_each_use(tmp_path, teacher_tables, monkeypatch,
                                                        capsys):
    """Tables that recorded this teacher's fingerprint are used without loading the teacher;
    one without it (built before fingerprints) makes the run load the teacher once and compare
    the weights' hash; a seed-2 table renamed to seed 1 is refused naming both seeds."""
    from ckd_jax.train import supervised

    qs = tmp_path / "qs"
    shutil.copytree(teacher_tables, qs)
    cfg = quickstart_config(str(qs))
    loads = []
    real = supervised.load_teacher
    monkeypatch.setattr(supervised, "load_teacher",
                        lambda *a, **k: loads.append(1) or real(*a, **k))
    prep = _prepare(cfg)
    assert loads == [] and prep.teacher_hash is None and all(m.table for m in prep.members)

    t1 = qs / "logit_tables" / "digits_tiny_cnn_augmented_S250_seed1.npz"
    old = LogitTable.load(t1)
    del old.meta["teacher_source_sha256"]
    old.save(t1)
    prep = _prepare(cfg)
    assert loads == [1] and prep.teacher_hash == old.meta["teacher_hash"]

    shutil.copy(t1.with_name(t1.name.replace("seed1", "seed2")), t1)
    with pytest.raises(ValueError, match=r"seed1\.npz: logit table seed mismatch: the table was "
                                         r"built for seed 2, the run expects seed 1"):
        _prepare(cfg)
    assert "Traceback" not in capsys.readouterr().err


def test_older_table_loads_with_one_note(tmp_path, capsys):
    t = LogitTable(np.zeros((3, 2), np.float32), np.arange(3),
                   {"dataset": "d", "teacher_name": "t", "view": "augmented", "seed": 1})
    t.save(tmp_path / "old.npz")  # format 1: no image hash, no version field
    got = load_matching_table(tmp_path / "old.npz", rebuild_calls=3, dataset="d",
                              indices=np.arange(3), teacher_name="t", teacher_hash=None,
                              view="augmented", images_hash="x" * 64, view_hash="y" * 64)
    assert len(got) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("note: logit table") and "predates" in e
                                 for e in err), err


def test_missing_table_without_teacher_is_one_line(qs, capsys):
    _unfinished(qs)
    os.remove(qs / "logit_tables" / "digits_tiny_cnn_augmented_S250_seed2.npz")
    before = snapshot(qs.parent)
    assert _quickstart(qs) == 2
    line, _ = _one_line(capsys, "quickstart.py")
    assert "no checkpoint in" in line and str(qs / "teacher") in line, line
    assert snapshot(qs.parent) == before


# ------------------------------------------------------- summary.json, config.json, teacher.json
@pytest.mark.parametrize("kind", BYTE_DAMAGES + ("schema",))
@pytest.mark.parametrize("name", ["kd/summary.json", "kd/config.json", "teacher/teacher.json"])
def test_damaged_run_json_is_one_line(qs, capsys, name, kind):
    path = qs / name
    if kind == "schema":  # valid JSON of another shape (another version, or not ours)
        path.write_text(json.dumps(["not", "an", "object"]) if name.endswith("config.json")
                        else json.dumps({"finished": True}))
    else:
        damage(path, kind)
    if name.endswith("summary.json") and kind == "schema":
        pass
    before = snapshot(qs.parent)
    assert _quickstart(qs) == 2
    line, _ = _one_line(capsys, "quickstart.py")
    assert str(path) in line and "damaged" in line, line
    assert "delete" in line, line  # the safe next step
    assert snapshot(qs.parent) == before


def test_config_of_another_run_and_missing_config(qs, capsys):
    cfg = quickstart_config(str(qs)).replace(epochs=7)
    (qs / "kd" / "config.json").write_text(cfg.to_json())
    assert _quickstart(qs) == 2
    line, _ = _one_line(capsys, "quickstart.py")
    assert "holds a finished run with other settings" in line and str(qs / "kd") in line
    os.remove(qs / "kd" / "config.json")
    assert _quickstart(qs) == 2
    line, _ = _one_line(capsys, "quickstart.py")
    assert "run config" in line and "is missing" in line and "config.json" in line


def test_copied_and_older_config_still_match(tmp_path, qs, capsys):
    """Paths are not what a run is: a copied folder is reused (0 teacher calls), and so is a
    config.json of an older version that lacks a field added since (its default then)."""
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(qs, copy)
    saved = json.loads((copy / "kd" / "config.json").read_text())
    del saved["w_anchor"]  # as if written before that field existed
    (copy / "kd" / "config.json").write_text(json.dumps(saved))
    before = snapshot(copy)
    assert _quickstart(copy) == 0
    out = capsys.readouterr()
    assert "reusing" in out.out and "teacher calls made by this invocation: 0" in out.out
    assert snapshot(copy) == before


# --------------------------------------------------------------------- metrics.jsonl (appended)
@pytest.mark.parametrize("kind", ["missing", "empty", "trunc10", "trunc50", "trunc90", "torn",
                                  "flip"])
def test_metrics_jsonl_keeps_its_whole_rows(tmp_path, kind):
    rows = [{"epoch": e, "member": m, "val_top1": 0.1 * e} for e in range(1, 6) for m in (0, 1)]
    path = tmp_path / "metrics.jsonl"
    files.append_lines(path, [json.dumps(r) for r in rows])
    data = path.read_bytes()
    if kind == "torn":
        with open(path, "ab") as f:
            f.write(b'{"epoch": 6, "mem')
    elif kind != "flip":
        damage(path, kind)
    if kind == "missing":
        with pytest.raises(FileNotFoundError):
            files.read_jsonl(path, appended=True)
        return
    if kind == "flip":
        cut = data.index(b"\n", len(data) // 3)
        path.write_bytes(data[:cut - 3] + b"\xff\xff" + data[cut - 1:])
        with pytest.raises(DamagedFile, match=rf"metrics file {path} is damaged: line \d+"):
            files.read_jsonl(path, what="metrics file", appended=True, repair=True)
        return
    kept = files.read_jsonl(path, what="metrics file", appended=True, repair=True)
    assert kept == rows[:len(kept)]
    assert path.read_bytes() == data[:sum(len(json.dumps(r)) + 1 for r in kept)]
    if kind == "trunc90":
        assert 0 < len(kept) < len(rows)
    if kind == "torn":
        assert kept == rows


# ------------------------------------------------------- sweep results, cell files (report.py)
def _sweep(folder):
    cfg = quickstart_config(str(folder))
    for variant in ("ce", "kd"):
        cell = folder / f"{variant}_S250"
        cell.mkdir(parents=True)
        (cell / "cell.json").write_text(json.dumps({"variant": variant, "overrides": {}}))
        (cell / "summary.json").write_text(json.dumps(finished_summary(cfg.replace(
            method=variant))))
    R.write_jsonl(R.collect_rows(str(folder)), str(folder / "results.jsonl"))


@pytest.mark.parametrize("kind", ("missing",) + BYTE_DAMAGES)
@pytest.mark.parametrize("target", ["results.jsonl", "kd_S250/cell.json",
                                    "kd_S250/summary.json"])
def test_report_answers_in_one_line(tmp_path, capsys, target, kind):
    sweep = tmp_path / "sweep"
    _sweep(sweep)
    damage(sweep / target, kind)
    source = sweep / "results.jsonl" if target == "results.jsonl" else sweep
    if target != "results.jsonl":
        os.remove(sweep / "results.jsonl")
    before = snapshot(tmp_path)
    status = run_command(REPORT.main, [str(source), "--out", str(tmp_path / "rep")],
                         prog="report.py")
    if (target == "results.jsonl" and kind.startswith("trunc")
            and (sweep / target).read_bytes().endswith(b"\n")):
        # The one gap (docs/files.md): a whole-written file cut exactly at a row boundary has
        # no torn line to show it; the cells' summaries (report.py <sweep dir>) are the truth.
        assert status == 0
        capsys.readouterr()
        return
    if kind == "missing" and target != "results.jsonl":
        # a cell without its file is an unfinished cell: reported without it, said in the rows
        assert status == 0
        assert "kd" not in capsys.readouterr().out.split("| variant")[1].split("\n| ")[1]
        return
    assert status == 2
    line, _ = _one_line(capsys, "report.py")
    assert str(sweep / target) in line or (kind == "empty" and "no result rows" in line), line
    assert not (tmp_path / "rep").exists() and snapshot(tmp_path) == before


# ----------------------------------------------------------------------- checkpoints (orbax)
def _two_steps(folder) -> Checkpointer:
    ck = Checkpointer(folder, keep_best=False, max_to_keep=2)
    for step in (1, 2):
        ck.save(step, {"w": np.arange(500, dtype=np.float32) * step}, extra={"step": step})
    return ck


def _data_file(step_dir) -> str:
    found = [os.path.join(r, f) for r, _, fs in os.walk(step_dir / "state") for f in fs
             if os.sep + "d" + os.sep in os.path.join(r, f)]
    return max(found, key=os.path.getsize)


@pytest.mark.parametrize("kind", ("missing",) + BYTE_DAMAGES + ("no_manifest",))
def test_damaged_latest_checkpoint_falls_back_in_one_line(tmp_path, capsys, kind):
    ck = _two_steps(tmp_path / "ck")
    if kind == "no_manifest":  # a step written before manifests existed, and damaged
        os.remove(tmp_path / "ck" / "2" / "ckd_sha256.json")
        kind = "trunc50"
    damage(_data_file(tmp_path / "ck" / "2"), kind)
    step, state = ck.restore_latest({"w": np.zeros(500, np.float32)})
    assert step == 1 and np.array_equal(state["w"], np.arange(500, dtype=np.float32))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note: checkpoint ") and "/ck/2" in err[0]
    assert "using the older intact step 1" in err[0]
    assert ck.latest_intact_step() in (1, 2)  # without a manifest only a restore can tell
    ck.close()


def test_every_checkpoint_damaged_is_one_line(tmp_path):
    ck = _two_steps(tmp_path / "ck")
    for step in (1, 2):
        damage(_data_file(tmp_path / "ck" / str(step)), "trunc50")
    with pytest.raises(DamagedFile, match=r"no intact checkpoint in .*/ck \(checkpoint .*/ck/2 "
                                          r"is damaged.*; and 1 older\); delete"):
        ck.restore_latest()
    ck.close()


def _teacher_dir(folder, steps=(1, 2), width=4):
    """A teacher run's checkpoints folder (step 1 best, step 2 latest), made without training."""
    from ckd_jax.models import create_model

    model = create_model("tiny_cnn", 10, width=width)
    variables = model.init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 1), np.float32),
                           train=False)
    with Checkpointer(folder / "checkpoints", best_metric="test_acc") as ck:
        for step in steps:
            ck.save(step, {"params": variables["params"],
                           "batch_stats": variables.get("batch_stats", {})},
                    {"test_acc": 0.5 - 0.1 * step},
                    extra={"config": {"model": "tiny_cnn", "model_kwargs": {"width": width}},
                           "num_classes": 10, "image_shape": [8, 8, 1]})
    return variables


def test_load_teacher_uses_older_intact_checkpoint(tmp_path, capsys):
    from ckd_jax.logit_table import variables_hash
    from ckd_jax.train.supervised import load_teacher

    variables = _teacher_dir(tmp_path / "t")
    damage(_data_file(tmp_path / "t" / "checkpoints" / "2"), "flip")
    got = load_teacher(tmp_path / "t", "tiny_cnn", 10, model_kwargs={"width": 4})
    assert variables_hash(got) == variables_hash(
        {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})})
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoints/2 is damaged" in err[0] and "step 1" in err[0]
    damage(_data_file(tmp_path / "t" / "checkpoints" / "1"), "trunc10")
    with pytest.raises(DamagedFile, match="no intact checkpoint in"):
        load_teacher(tmp_path / "t", "tiny_cnn", 10, model_kwargs={"width": 4})


# ----------------------------------------------------------------- full disk, no permission
ERRNOS = [errno.ENOSPC, errno.EACCES]


def _site_table(path):
    LogitTable(np.ones((2, 3), np.float32), np.arange(2), {"seed": 2}).save(path)


def _site_json(path):
    files.write_json(path, {"new": True})


def _site_results(path):
    R.write_jsonl([{"new": 1}], str(path))


def _site_csv(path):
    REPORT.write_csv([], str(path))


WRITE_SITES = {"logit table": ("t.npz", _site_table),
               "config/summary/cell/teacher.json": ("summary.json", _site_json),
               "results.jsonl": ("results.jsonl", _site_results),
               "report table.csv": ("table.csv", _site_csv)}


@pytest.mark.parametrize("err", ERRNOS, ids=errno.errorcode.get)
@pytest.mark.parametrize("site", list(WRITE_SITES))
def test_failed_atomic_write_keeps_previous_file(tmp_path, monkeypatch, site, err):
    name, write = WRITE_SITES[site]
    path = tmp_path / name
    path.write_bytes(b"previous good state")

    def refuse(*a, **k):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(WriteFailed) as e:
        write(path)
    msg = str(e.value)
    assert "\n" not in msg and f"cannot write {path}" in msg
    assert errno.errorcode[err] in msg and "previous state is left" in msg
    assert path.read_bytes() == b"previous good state"
    assert sorted(os.listdir(tmp_path)) == [name]  # no temporary file left


@pytest.mark.parametrize("err", ERRNOS, ids=errno.errorcode.get)
def test_failed_append_takes_back_the_partial_block(tmp_path, monkeypatch, err):
    path = tmp_path / "metrics.jsonl"
    files.append_lines(path, ['{"epoch": 1}'])
    real_write = os.write

    def half_then_fail(fd, data):
        real_write(fd, bytes(data[:5]))
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "write", half_then_fail)
    with pytest.raises(WriteFailed, match=f"cannot write {path}.*{errno.errorcode[err]}"):
        files.append_lines(path, ['{"epoch": 2}', '{"epoch": 3}'])
    monkeypatch.undo()
    assert path.read_bytes() == b'{"epoch": 1}\n'


@pytest.mark.parametrize("err", ERRNOS, ids=errno.errorcode.get)
def test_failed_checkpoint_save_keeps_earlier_steps(tmp_path, monkeypatch, err):
    import ckd_jax.checkpoint as C

    ck = Checkpointer(tmp_path / "ck", keep_best=False, max_to_keep=3)
    ck.save(1, {"w": np.ones(4, np.float32)})

    def refuse(path, *_):
        raise files.write_failed(path, OSError(err, os.strerror(err)))

    monkeypatch.setattr(C, "write_atomic", refuse)
    with pytest.raises(WriteFailed, match=errno.errorcode[err]):
        ck.save(2, {"w": np.zeros(4, np.float32)})
    monkeypatch.undo()
    assert ck.all_steps() == [1] and sorted(os.listdir(tmp_path / "ck")) == ["1"]
    assert np.array_equal(ck.restore_latest()[1]["w"], np.ones(4, np.float32))
    ck.close()


def test_full_disk_in_a_command_is_one_line(tmp_path, capsys, monkeypatch):
    sweep = tmp_path / "sweep"
    _sweep(sweep)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    assert run_command(REPORT.main, [str(sweep), "--out", str(tmp_path / "rep")],
                       prog="report.py") == 2
    line, _ = _one_line(capsys, "report.py")
    assert "the disk is full (ENOSPC)" in line and "table.md" in line


# ------------------------------------------------------------------------- check_runs.py
def test_check_runs_lists_states_and_costs(qs, capsys):
    table = qs / "logit_tables" / "digits_tiny_cnn_augmented_S250_seed3.npz"
    damage(table, "trunc50")
    (qs / "logit_tables" / "digits_tiny_cnn_augmented_S250_seed2.npz.building.json").write_text(
        json.dumps({"teacher_calls": 200}))
    shutil.copytree(qs / "kd", qs / "ckd")
    cfg = quickstart_config(str(qs), "ckd")
    (qs / "ckd" / "config.json").write_text(cfg.to_json())
    os.remove(qs / "ckd" / "summary.json")
    before = snapshot(qs)
    assert run_command(CHECK.main, [str(qs)], prog="check_runs.py") == 1
    out = capsys.readouterr().out
    lines = {line.split()[2].rstrip(":"): line for line in out.splitlines()[:-1]}
    assert "finished" in lines[str(qs / "kd")]
    assert "not started" in lines[str(qs / "ckd")] and f"{QS_B} teacher calls" in \
        lines[str(qs / "ckd")] and "seed 3: damaged" in lines[str(qs / "ckd")]
    assert "damaged" in lines[str(table)] and "200 teacher calls" in lines[str(table)]
    assert "interrupted" in out and out.splitlines()[-1].endswith("2 damaged")
    assert snapshot(qs) == before  # reads only


def test_check_runs_damaged_checkpoint_of_a_finished_run_and_quickstart_advice(qs, capsys):
    """A finished run whose only checkpoint is damaged is reported (export.py would refuse
    it), and in a quickstart folder the advice names the quickstart command, not a sweep's."""
    with Checkpointer(qs / "kd" / "checkpoints", keep_best=False, max_to_keep=1) as ck:
        ck.save(1, {"w": np.arange(500, dtype=np.float32)}, extra={"step": 1})
    assert run_command(CHECK.main, [str(qs / "kd")], prog="check_runs.py") == 0
    assert "finished" in capsys.readouterr().out
    damage(_data_file(qs / "kd" / "checkpoints" / "1"), "flip")
    assert run_command(CHECK.main, [str(qs)], prog="check_runs.py") == 1
    line = [x for x in capsys.readouterr().out.splitlines() if f" {qs / 'kd'}:" in x][0]
    assert line.split()[1] == "damaged" and "finished, but" in line and "export.py" in line

    damage(qs / "kd" / "summary.json", "flip")
    assert run_command(CHECK.main, [str(qs)], prog="check_runs.py") == 1
    out = capsys.readouterr().out
    assert f"rerun the quickstart command (python experiments/quickstart.py --out {qs})" in out
    assert "sweep command" not in out


def test_resumed_run_saves_over_a_damaged_newer_step(tmp_path, capsys):
    """Resumed from step 1 because step 3 is damaged, the run saves step 2, then 3: the newer
    and the damaged step are set aside (kept, renamed), never pruned in place of new ones."""
    ck = Checkpointer(tmp_path / "ck", keep_best=False, max_to_keep=1)
    ck.save(1, {"w": np.ones(5, np.float32)})
    ck.save(3, {"w": np.ones(5, np.float32)})
    shutil.copytree(tmp_path / "ck" / "3", tmp_path / "ck" / "1")  # as if 1 had been kept
    ck._manager.reload()
    damage(_data_file(tmp_path / "ck" / "3"), "flip")
    assert ck.restore_latest()[0] == 1
    ck.save(2, {"w": np.full(5, 2, np.float32)})
    assert "is newer than the step 2 being saved; set aside" in capsys.readouterr().err
    assert ck.all_steps() == [2]
    ck.save(3, {"w": np.full(5, 3, np.float32)})
    step, state = ck.restore_latest()
    assert step == 3 and np.array_equal(state["w"], np.full(5, 3, np.float32))
    assert [n for n in os.listdir(tmp_path / "ck") if n.startswith(".set-aside-3-")]
    ck.close()


# ------------------------------------------------------ issue 28: own data, overrides, folders
DISTILL = load_experiment("distill")


def _distill(*args) -> int:
    return run_command(DISTILL.main, ["--config", QUICKSTART_CONFIG, *args], prog="distill.py")


def _npz(path, kind: str):
    """An own-data file with one fault: 1-based labels, a class without training images,
    test labels beyond the training range, an object class_names, another format, or an
    .npz cut to half its size."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)
    y = np.arange(40) % 10
    arrays = dict(train_images=x, train_labels=y, test_images=x[:20], test_labels=y[:20])
    if kind == "one_based":
        arrays.update(train_labels=y + 1, test_labels=y[:20] + 1)
    elif kind == "absent_class":
        arrays.update(train_labels=np.where(y == 3, 4, y))
    elif kind == "test_beyond":
        arrays.update(train_labels=np.minimum(y, 8))
    elif kind == "object_names":
        arrays["class_names"] = np.array([str(i) for i in range(10)], dtype=object)
    if kind == "not_npz":
        path.write_text("image,label\n0,1\n")
        return
    np.savez(path, **arrays, allow_pickle=True) if kind == "object_names" else np.savez(
        path, **arrays)
    if kind == "truncated":
        damage(path, "trunc50")


NPZ_FAULTS = {
    "one_based": r"training labels in .* run from 1 to 10 .* the lowest is 1, not 0; renumber",
    "absent_class": r"run from 0 to 9 \(9 distinct\).*classes \[3\] have no training image",
    "test_beyond": r"the test labels in .* run from 0 to 9, outside the training labels' range "
                   r"0\.\.8",
    "object_names": r"class_names in .* is an object array .*dtype=str",
    "not_npz": r"is not an \.npz file \(not a zip archive",
    "truncated": r"is not an \.npz file|is damaged \(cannot be read",
}


@pytest.mark.parametrize("kind", list(NPZ_FAULTS))
def test_own_data_fault_is_one_line(tmp_path, capsys, kind):
    import re

    data = tmp_path / "mine.npz"
    _npz(data, kind)
    before = snapshot(tmp_path)
    assert _distill("--set", "dataset=npz", "--set", f"data_path={data}", "--set", "method=ce",
                    "--out", str(tmp_path / "run")) == 2
    line, _ = _one_line(capsys, "distill.py")
    assert re.search(NPZ_FAULTS[kind], line), line
    assert "class names" not in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("value,message", [
    ("None", None), ("", None), ("nonsense", r"--set teacher_kwargs=nonsense: expected a JSON "
                                             r"object"), ("[1]", r"expected a JSON object")])
def test_teacher_kwargs_override(value, message):
    from ckd_jax.train.config import apply_overrides, load_config_file

    base = load_config_file(QUICKSTART_CONFIG)
    if message is None:
        assert apply_overrides(base, [f"teacher_kwargs={value}"]).teacher_kwargs is None
    else:
        with pytest.raises(ValueError, match=message):
            apply_overrides(base, [f"teacher_kwargs={value}"])


def test_unwritable_output_folder_is_one_line(tmp_path, capsys, monkeypatch):
    real = os.makedirs

    def refuse(path, *a, **k):
        if str(path).startswith(str(tmp_path / "ro")):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(os, "makedirs", refuse)
    assert _distill("--set", "method=ce", "--set", "epochs=1",
                    "--out", str(tmp_path / "ro" / "run")) == 2
    line, _ = _one_line(capsys, "distill.py")
    assert f"cannot write {tmp_path / 'ro' / 'run'}: permission denied" in line


def test_atomic_files_get_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        files.write_atomic(tmp_path / "a.json", "{}")
        with open(tmp_path / "plain.json", "w") as f:
            f.write("{}")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a.json").st_mode & 0o777 == 0o640
    assert os.stat(tmp_path / "plain.json").st_mode & 0o777 == 0o640


def test_results_row_with_a_string_figure_names_file_and_line(tmp_path, capsys):
    _sweep(tmp_path)
    path = tmp_path / "results.jsonl"
    rows = path.read_text().splitlines()
    row = json.loads(rows[2])
    row["test_top1_at_best_val"] = "0.9"
    rows[2] = json.dumps(row)
    path.write_text("\n".join(rows) + "\n")
    assert run_command(REPORT.main, [str(path)], prog="report.py") == 2
    line, _ = _one_line(capsys, "report.py")
    assert f"results file {path} is damaged: line 3: test_top1_at_best_val is \"0.9\" (a str)" \
        in line


def test_variant_name_is_accepted_by_distill(tmp_path, capsys):
    from ckd_jax.train.methods import VARIANTS

    for sets in (["--set", "method=ckd_cal"], ["--set", "variant=ckd_cal"]):
        got = DISTILL._variant_first(sets[1:] + ["epochs=1"])
        assert got[-1] == "epochs=1" and "calibration=table" in got
    from ckd_jax.train.config import apply_overrides, load_config_file

    cfg = apply_overrides(load_config_file(QUICKSTART_CONFIG),
                          DISTILL._variant_first(["variant=mixup_kd", "seeds=1"]))
    assert (cfg.method, cfg.mix_soft, cfg.seeds) == ("mixup", "kd", (1,))
    assert VARIANTS["mixup_kd"]["mix_soft"] == "kd"
    assert _distill("--set", "variant=nope", "--out", str(tmp_path / "x")) == 2
    line, _ = _one_line(capsys, "distill.py")
    assert "unknown variant 'nope'; accepted: named variants" in line


def test_sigint_saves_a_checkpoint_and_the_rerun_says_where_it_resumes(tmp_path, capsys):
    """SIGINT (Ctrl-C; SIGTERM takes the same path) during training: the pseudo-epoch ends, a
    checkpoint is saved although checkpoint_seconds is not due, and one line says what was
    saved and the command that resumes (exit status 130 at the command line); the rerun says
    from which pseudo-epoch it resumed."""
    import signal

    from engine_support import tiny_config

    from ckd_jax.interrupt import RunInterrupted
    from ckd_jax.train.distill import run_distillation

    cfg = tiny_config(method="ce", out_dir=str(tmp_path / "run"), epochs=3,
                      checkpoint_seconds=3600.0, subset_size=40, eval_batch_size=400)
    kw = {}
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN in a pytest-xdist worker
    with pytest.raises(RunInterrupted, match=r"stopped by SIGINT after pseudo-epoch 1: "
                                             r"checkpoint of pseudo-epoch 1 saved in .*; to "
                                             r"resume, run "):
        run_distillation(cfg, on_epoch=lambda e: os.kill(os.getpid(), signal.SIGINT), **kw)
    assert signal.getsignal(signal.SIGINT) is before  # put back
    capsys.readouterr()
    summary = run_distillation(cfg, stop_after_epochs=1, **kw)
    assert "resumed from the checkpoint of pseudo-epoch 1" in capsys.readouterr().out
    assert not summary["finished"]

    def interrupted():
        raise RunInterrupted("stopped by SIGTERM after pseudo-epoch 3: ...")

    assert run_command(lambda: interrupted(), prog="distill.py") == 130
    assert capsys.readouterr().err == "distill.py: stopped by SIGTERM after pseudo-epoch 3: ...\n"


def test_teacher_sigint_stops_after_the_epoch_and_the_rerun_says_how_far_it_resumed(
        tmp_path, capsys):
    """SIGINT (SIGTERM alike) while a teacher trains: the epoch ends with its checkpoint, one
    line names it and the command that resumes (with --resume, which train_teacher.py needs);
    the rerun says from which epoch it resumed, ends as 3 epochs, and without a checkpoint says
    that it starts over."""
    import dataclasses
    import signal

    from ckd_jax.data import load_train_test
    from ckd_jax.interrupt import RunInterrupted
    from ckd_jax.train.supervised import TeacherConfig, train_teacher

    train, test = load_train_test("digits")
    train, test = train.subset(np.arange(64)), test.subset(np.arange(32))
    cfg = TeacherConfig(dataset="digits", model="tiny_cnn", model_kwargs={"width": 4},
                        out=str(tmp_path / "teacher"), epochs=3, batch_size=32,
                        progress=False)
    ckpt = tmp_path / "teacher" / "checkpoints"
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN in a pytest-xdist worker
    with pytest.raises(RunInterrupted, match=rf"^stopped by SIGINT after epoch 1: checkpoint "
                                             rf"of epoch 1 saved in {ckpt}; to resume, run "
                                             r".* --resume$"):
        train_teacher(cfg, train=train, test=test,
                      on_epoch_end=lambda row: os.kill(os.getpid(), signal.SIGINT))
    assert signal.getsignal(signal.SIGINT) is before  # put back
    assert sorted(os.listdir(ckpt)) == ["1"]
    capsys.readouterr()
    cfg = dataclasses.replace(cfg, resume=True)
    result = train_teacher(cfg, train=train, test=test)
    assert f"{tmp_path / 'teacher'}: resumed from the checkpoint of epoch 1 of 3" in (
        capsys.readouterr().out)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    shutil.rmtree(ckpt)
    with pytest.raises(RunInterrupted, match="after epoch 1"):  # a run without checkpoints
        train_teacher(cfg, train=train, test=test,
                      on_epoch_end=lambda row: os.kill(os.getpid(), signal.SIGTERM))
    assert "no checkpoint to resume from: starting over from epoch 0" in (
        capsys.readouterr().out)


_HOLDER = """
import sys, time
from ckd_jax.runlock import run_lock
with run_lock(sys.argv[1]):
    print("HELD", flush=True)
    time.sleep(120)
"""


def test_second_process_on_a_run_folder_is_refused_and_a_dead_owner_taken_over(tmp_path,
                                                                               capsys):
    """Two real processes, one run folder: the second is refused in one line naming the
    owner's pid and host, before writing anything; once the owner is killed (its lock file
    left behind), the next run takes the folder over with a note."""
    import signal
    import socket
    import subprocess
    import sys

    from experiments_support import ROOT

    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=ROOT)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "HELD"
        before = snapshot(tmp_path)
        assert _distill("--set", "method=ce", "--set", "epochs=1", "--out", str(run)) == 2
        line, _ = _one_line(capsys, "distill.py")
        assert f"{run} is in use by process {holder.pid} on {socket.gethostname()}" in line
        assert snapshot(tmp_path) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert (run / "run.lock").exists()  # a killed owner leaves it
    from ckd_jax.runlock import run_lock

    with run_lock(run):
        err = capsys.readouterr().err
    assert f"took over the lock of process {holder.pid}" in err and "ended without" in err
    assert not (run / "run.lock").exists()


def test_check_runs_sees_foreign_renamed_duplicated_and_orphaned(tmp_path, teacher_tables,
                                                                  capsys):
    qs = tmp_path / "qs"
    shutil.copytree(teacher_tables, qs)
    cfg = quickstart_config(str(qs))
    os.makedirs(cfg.out_dir)
    (qs / "kd" / "config.json").write_text(cfg.to_json())
    (qs / "kd" / "summary.json").write_text(json.dumps(finished_summary(cfg)))
    assert run_command(CHECK.main, [str(qs)], prog="check_runs.py") == 0
    capsys.readouterr()

    tables = qs / "logit_tables"
    shutil.copy(tables / "digits_tiny_cnn_augmented_S250_seed2.npz",
                tables / "digits_tiny_cnn_augmented_S250_seed1.npz")
    row = json.dumps({"epoch": 1, "member": 0, "val_top1": 0.5})
    (qs / "kd" / "metrics.jsonl").write_text(row + "\n" + row + "\n")
    os.makedirs(qs / "ce")
    (qs / "ce" / "metrics.jsonl").write_text(row + "\n")
    assert run_command(CHECK.main, [str(qs)], prog="check_runs.py") == 1
    out = capsys.readouterr().out
    assert "built for seed 2 but named seed 1" in out
    assert "rows logged twice" in out
    assert f"{qs / 'ce'}: config.json is missing" in out

    (qs / "kd" / "metrics.jsonl").write_text(row + "\n")
    os.remove(tables / "digits_tiny_cnn_augmented_S250_seed1.npz")
    t3 = LogitTable.load(tables / "digits_tiny_cnn_augmented_S250_seed3.npz")
    t3.meta["teacher_source_sha256"] = "f" * 64  # as if built from another teacher
    t3.save(tables / "digits_tiny_cnn_augmented_S250_seed3.npz")
    assert run_command(CHECK.main, [str(qs)], prog="check_runs.py") == 1
    assert "seed3.npz was built by another teacher" in capsys.readouterr().out


def test_lock_wait_option_waits_for_the_owner(tmp_path, monkeypatch, capsys):
    """CKD_JAX_WAIT_LOCK: a bad value is one line before the folder is made; SECONDS waits
    that long and is then refused; inf waits until the owner ends. (flock locks of two opens
    exclude each other within one process too, so a thread stands in for the second run.)"""
    import threading
    import time

    from ckd_jax.runlock import RunLocked, run_lock

    run = tmp_path / "run"
    monkeypatch.setenv("CKD_JAX_WAIT_LOCK", "soon")
    with pytest.raises(ValueError, match=r"CKD_JAX_WAIT_LOCK='soon' is not a number of "
                                         r"seconds; accepted: 0 \(refuse at once"):
        with run_lock(run):
            pass
    assert not run.exists()
    monkeypatch.delenv("CKD_JAX_WAIT_LOCK")
    got = []

    def second():
        with run_lock(run):
            got.append(json.loads((run / "run.lock").read_text())["pid"])

    with run_lock(run):
        monkeypatch.setenv("CKD_JAX_WAIT_LOCK", "0.3")
        t0 = time.monotonic()
        with pytest.raises(RunLocked, match=r"is in use by process \d+ .*\(waited 0.3 s\)"):
            with run_lock(run):
                pass
        assert time.monotonic() - t0 >= 0.3
        monkeypatch.setenv("CKD_JAX_WAIT_LOCK", "inf")
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive() and not got  # still waiting
    waiter.join(timeout=30)
    assert got == [os.getpid()] and not (run / "run.lock").exists()
    assert "waiting for it to end (at most inf s, CKD_JAX_WAIT_LOCK)" in capsys.readouterr().err
