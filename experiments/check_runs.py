"""Check a folder of runs: what each holds, whether it is intact, and what finishing it costs.

  python experiments/check_runs.py runs/quickstart

Walks the folder (any depth) and prints one line per item it finds:
  - student runs (a folder with config.json): finished, resumable (from which pseudo-epoch),
    not started, or damaged (which file and why), and the teacher calls finishing it would
    take (the logit tables it needs that are missing or damaged, B each);
  - teacher runs (a folder with teacher.json or teacher checkpoints): finished, resumable or
    damaged;
  - logit tables (*.npz under a logit_tables folder): intact (rows, teacher calls that built it)
    or damaged (why, rebuild cost), and interrupted teacher passes (their calls were spent);
  - sweep results files (results.jsonl, results.shard-*.jsonl): rows, or damaged.
Reads only; writes nothing. Exit status 0 when everything is intact, 1 when something is
damaged, 2 for a bad argument (`<command>: error: ...`). docs/files.md lists every file.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ckd_jax.files import DamagedFile, read_json, read_jsonl  # noqa: E402

_OK, _DAMAGED = "ok", "damaged"


def _why(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _checkpoint_state(ckpt_dir: str, best_metric: str | None) -> tuple[int | None, str | None]:
    """(newest intact step or None, damage line or None) of a checkpoints folder."""
    from ckd_jax.checkpoint import Checkpointer

    if not os.path.isdir(ckpt_dir):
        return None, None
    ck = Checkpointer(ckpt_dir, keep_best=best_metric is not None,
                      best_metric=best_metric or "val_acc")
    try:
        intact, damaged = [], []
        for step in ck.all_steps():
            try:
                ck.check_step(step)
                ck.extra(step)
                intact.append(step)
            except DamagedFile as e:
                damaged.append(_why(e))
        return (intact[-1] if intact else None), (damaged[-1] if damaged else None)
    finally:
        ck.close()


def _table_budget(subset_size: int | None, budget: int | None) -> int | None:
    """B, the teacher calls of one table (ckd_jax.budget: B = int(0.8 S))."""
    if budget is not None:
        return int(budget)
    return None if subset_size is None else int(subset_size * 0.8)


def check_table(path: str) -> tuple[str, str]:
    from ckd_jax.logit_table import LogitTable

    size = re.search(r"_S(\d+)_seed\d+\.npz$", os.path.basename(path))
    try:
        t = LogitTable.load(path, rebuild_calls=_table_budget(int(size.group(1)), None)
                            if size else None)
    except (DamagedFile, OSError) as e:
        return _DAMAGED, _why(e)
    seed = re.search(r"_seed(\d+)\.npz$", os.path.basename(path))
    if seed and "seed" in t.meta and t.meta["seed"] != int(seed.group(1)):
        return _DAMAGED, (f"built for seed {t.meta['seed']} but named seed {seed.group(1)} "
                          "(renamed?); a run would refuse it: delete it (it is rebuilt)")
    return _OK, (f"{len(t)} rows, built with {t.meta.get('teacher_calls', '?')} teacher calls, "
                 f"table format {t.meta.get('format_version', 1)}")


def _run_tables(run_dir: str, cfg: dict) -> list[str]:
    """Where this run's tables can be (the recorded folder, or beside a moved run)."""
    places = [cfg.get("logit_table_dir"), os.path.join(run_dir, "logit_tables"),
              os.path.join(os.path.dirname(run_dir), "logit_tables")]
    return [p for p in places if p and os.path.isdir(p)]


def _other_teacher(table_path: str, cfg: dict) -> bool:
    """True when the table recorded a teacher fingerprint that is not the one of the run's
    teacher_checkpoint (as it is on disk now); tables without one cannot be told cheaply."""
    from ckd_jax.logit_table import LogitTable, teacher_fingerprint

    recorded = LogitTable.load(table_path).meta.get("teacher_source_sha256")
    source = cfg.get("teacher_checkpoint")
    if recorded is None or not source or not os.path.exists(source):
        return False
    now = teacher_fingerprint(source)
    return now is not None and now != recorded


def _duplicated_rows(metrics_path: str) -> int:
    """metrics.jsonl rows of a (pseudo-epoch, member) logged more than once: two processes
    trained the run at the same time."""
    rows = read_jsonl(metrics_path, what="metrics file", appended=True)
    keys = [(r.get("epoch"), r.get("member")) for r in rows]
    return len(keys) - len(set(keys))


def check_student_run(run_dir: str) -> tuple[str, str]:
    from ckd_jax.train.methods import build_method

    try:
        cfg_dict = read_json(os.path.join(run_dir, "config.json"), what="run config")
    except DamagedFile as e:
        return _DAMAGED, f"{_why(e)}; delete this run folder to run it again"
    calls, tables = 0, []
    try:
        from ckd_jax.train.config import DistillConfig

        known = {f for f in DistillConfig.__dataclass_fields__}
        fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg_dict.items()
                  if k in known}
        cfg = DistillConfig(**fields)
        uses_teacher = build_method(cfg).uses_teacher
    except Exception as e:  # a config of another version of the project
        return _DAMAGED, (f"config.json cannot be read as a DistillConfig ({_why(e)}); "
                          "written by another version?")
    b = _table_budget(cfg.subset_size, cfg.budget)
    if uses_teacher:
        size = f"S{cfg.subset_size}" if cfg.subset_size is not None else ""
        dirs = _run_tables(run_dir, cfg_dict)
        for seed in cfg.seeds:
            pattern = f"*_{size}_seed{seed}.npz"
            found = [p for d in dirs for p in glob.glob(os.path.join(d, pattern))]
            usable = [p for p in found if check_table(p)[0] == _OK]
            foreign = [p for p in usable if _other_teacher(p, cfg_dict)]
            if foreign:
                return _DAMAGED, (f"logit table {foreign[0]} was built by another teacher than "
                                  f"{cfg_dict.get('teacher_checkpoint')} (its recorded teacher "
                                  "fingerprint differs); the run would refuse it: delete it "
                                  f"(rebuilding costs {b} teacher calls)")
            if not usable:
                calls += b or 0
                tables.append(f"seed {seed}: {'damaged' if found else 'missing'}")
    summary_path = os.path.join(run_dir, "summary.json")
    cost = (f"finishing it costs {calls} teacher calls ({'; '.join(tables)})" if calls
            else "finishing it costs no teacher call")
    if os.path.exists(summary_path):
        try:
            from ckd_jax.results import read_summary

            summary = read_summary(run_dir)
        except DamagedFile as e:
            return _DAMAGED, _why(e)
    step, damage = _checkpoint_state(os.path.join(run_dir, "checkpoints"), None)
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(metrics):
        try:
            twice = _duplicated_rows(metrics)
        except DamagedFile as e:
            return _DAMAGED, f"{_why(e)}; delete it (the run logs again from its checkpoint)"
        if twice:
            return _DAMAGED, (f"{metrics} holds {twice} rows logged twice (two processes ran "
                              f"this run at once?); delete {run_dir} to run it again")
    if os.path.exists(summary_path) and summary.get("finished"):
        if damage:
            return _DAMAGED, (f"finished, but {damage}; export.py refuses it: delete "
                              f"{run_dir} to run it again")
        return _OK, "finished"
    if damage and step is None:
        return _DAMAGED, (f"{damage}; delete {run_dir}/checkpoints to train it from the "
                          f"start; {cost}")
    if step is not None:
        extra = f" (newer step damaged: {damage})" if damage else ""
        return _OK, f"resumable from pseudo-epoch {step}{extra}; {cost}"
    return _OK, f"not started (no checkpoint); {cost}"


def check_teacher_run(run_dir: str) -> tuple[str, str]:
    summary = os.path.join(run_dir, "teacher.json")
    step, damage = _checkpoint_state(os.path.join(run_dir, "checkpoints"), "test_acc")
    if damage and step is None:
        return _DAMAGED, f"{damage}; retrain the teacher (delete {run_dir}), then its tables"
    note = f" (newest checkpoint damaged, step {step} is used: {damage})" if damage else ""
    if os.path.exists(summary):
        try:
            acc = read_json(summary, what="teacher summary").get("test_acc")
        except DamagedFile as e:
            return _DAMAGED, f"{_why(e)}; delete it and rerun (the checkpoints are kept)"
        return _OK, f"finished (test top-1 {acc}){note}"
    if step is not None:
        return _OK, f"resumable from epoch {step}{note} (rerun with --resume)"
    return _OK, "no checkpoint yet"


def _is_teacher_ckpt(ckpt_dir: str) -> bool:
    steps = [d for d in os.listdir(ckpt_dir) if d.isdigit()] if os.path.isdir(ckpt_dir) else []
    return any(os.path.isdir(os.path.join(ckpt_dir, d, "metrics")) for d in steps)


def check_folder(root: str) -> list[tuple[str, str, str, str]]:
    """(kind, path, state, detail) for every item under `root`."""
    if not os.path.exists(root):
        raise FileNotFoundError(f"{root} does not exist")
    if not os.path.isdir(root):
        raise NotADirectoryError(f"{root} is not a folder of runs")
    out = []
    for here, dirs, files in os.walk(root):
        dirs.sort()
        if os.path.basename(here) == "checkpoints":
            dirs[:] = []
            continue
        if "config.json" in files:
            out.append(("run", here, *check_student_run(here)))
        elif {"metrics.jsonl", "summary.json"} & set(files) and "teacher.json" not in files:
            out.append(("run", here, _DAMAGED, "config.json is missing (its other files are "
                        f"here); delete {here} to run it again"))
        elif "teacher.json" in files or _is_teacher_ckpt(os.path.join(here, "checkpoints")):
            out.append(("teacher", here, *check_teacher_run(here)))
        for name in sorted(files):
            path = os.path.join(here, name)
            if name.endswith(".npz") and os.path.basename(here) == "logit_tables":
                out.append(("table", path, *check_table(path)))
            elif name.endswith(".npz.building.json"):
                try:
                    lost = read_json(path).get("teacher_calls", "?")
                except DamagedFile:
                    lost = "?"
                out.append(("table", path[:-len(".building.json")], _DAMAGED,
                            f"a teacher pass was interrupted ({lost} teacher calls spent, "
                            "nothing saved); the next run builds it again at that cost"))
            elif name == "results.jsonl" or (name.startswith("results.shard-")
                                             and name.endswith(".jsonl")):
                try:
                    rows = read_jsonl(path, what="results file")
                    out.append(("results", path, _OK, f"{len(rows)} rows"))
                except DamagedFile as e:
                    out.append(("results", path, _DAMAGED,
                                f"{_why(e)}; rerun the sweep command to rewrite it"))
    return out


def _is_quickstart_folder(root: str) -> bool:
    """A quickstart --out folder: teacher/ and logit_tables/ beside run folders, no sweep
    cell (cell.json) anywhere."""
    return (os.path.isdir(os.path.join(root, "teacher"))
            and not glob.glob(os.path.join(root, "*", "cell.json")))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="a run folder, or a folder holding runs (any depth)")
    args = ap.parse_args(argv)
    items = check_folder(args.folder)
    if not items:
        raise ValueError(f"{args.folder} holds no run, teacher, logit table or results file")
    quickstart = _is_quickstart_folder(args.folder)
    for kind, path, state, detail in items:
        if quickstart:
            detail = detail.replace("the sweep command", "the quickstart command (python "
                                    f"experiments/quickstart.py --out {args.folder})")
        print(f"{kind:8s} {state:8s} {path}: {detail}")
    damaged = sum(state == _DAMAGED for _, _, state, _ in items)
    print(f"{len(items)} items, {damaged} damaged")
    return 1 if damaged else 0


if __name__ == "__main__":
    from ckd_jax.cli import run_command  # a bad input: one line on stderr, exit status 2

    sys.exit(run_command(main))
