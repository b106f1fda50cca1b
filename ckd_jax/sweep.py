"""Sweeps: methods x budgets x seeds x learning rates, one population per (method, budget) cell.

The library part of `experiments/sweep.py` (the command line: docs/experiments.md). In Python:

    from ckd_jax import sweep
    cells = sweep.plan_cells(base, ["ce", "kd"], [200], seeds=[1, 2], lrs=[0.05], out="results/t")
    rows = sweep.run_sweep(cells, teacher_apply=teacher.apply, teacher_variables=teacher_vars)

A cell = (variant, subset size or budget); its seeds x learning rates are ONE population (one
`run_distillation` call, vmapped over members). `plan_cells` validates every cell's config
before any work; cell run dirs are `<out>/<variant>_S<subset>`. Logit tables live in
`<out>/logit_tables`, shared by every cell, so each (seed, subset) costs its B = 0.8 S teacher
calls once for the whole sweep. `run_sweep` skips finished cells (summary.json with
finished=true), resumes unfinished ones from their checkpoints, and rewrites
`<out>/results.jsonl` (one row per member per cell) from all cell summaries (`check_existing`
first refuses a cell dir that holds a run of another configuration, `check_teacher` a
teacher-using cell that can neither load nor build its tables).

Shards (`shard_cells`, `parse_shard`): shard (I, N) holds cell k of the name-sorted cells when
k % N == I, so the N shards together run every cell exactly once. A shard resumes and skips like
a whole sweep, touches only its own cells and writes its rows to
`<out>/results.shard-I-of-N.jsonl` (never results.jsonl, which concurrent shards would
clobber); `experiments/report.py` reads the union of all finished cells' summaries. Shards that
need the same (seed, subset) logit table may both build it (written atomically); on one machine
a lock on the table folder makes the second wait and load it instead.

Workers (`run_sweep_jobs`, `parse_jobs`): N cells at once, each in a worker process (the sweep
script, given as `script`, rerun with `--cell NAME`) pinned to its own CPU core(s)
(`ckd_jax.jobs`), with one progress view and each cell's output in `<out>/logs/<cell>.log`.
Cells that need the same logit table wait for the first to build it, so no table costs its
teacher calls twice. Every worker has `cores_per_job` cores, and a one-process sweep starts
XLA with as many threads, so one process and N workers (and any shard) give the same rows, bit
for bit: XLA:CPU's convolution reduction order depends on its thread-pool size.

Members apart (`cells_to_split`, `member_runs`, `merge_member_runs`): each member (seed x
learning rate) of a cell may run as its own one-member run in `<cell>/members/s<seed>_lr<lr>/`
(one worker each, so that every core is busy when fewer cells are left than workers); once all
have finished, the cell's config.json, metrics.jsonl and summary.json are written from theirs
and its rows are those of the cell run whole, bit for bit (on CPU a population's members run one
after another through the one-member program anyway).

Variants: any method name of `ckd_jax.train.methods` (its config defaults), or a named variant
of `ckd_jax.train.methods.VARIANTS` (a method plus config overrides, `variant_overrides`).

Importing this module changes no environment variable and no jax setting; the sweep script sets
its XLA:CPU flag and a worker's cores before it imports it.
"""

from __future__ import annotations

import glob
import json
import os
import time

from ckd_jax import results as R
from ckd_jax.train.config import (
    EVAL_BATCH_FIELDS,
    PATH_FIELDS,
    RESULT_INVARIANT_FIELDS,
    DistillConfig,
)
from ckd_jax.train.methods import VARIANTS, variant_overrides  # noqa: F401  (re-exported)

# Config fields that do not change a cell's results (may differ between reruns; the lists and
# why each field is on them: ckd_jax/train/config.py).
_NON_SEMANTIC = {*RESULT_INVARIANT_FIELDS, *PATH_FIELDS, *EVAL_BATCH_FIELDS}


def load_base_config(spec: str | None) -> DistillConfig:
    """A DistillConfig from a config file path (`.py`) or a module path with `get_config()`;
    the defaults when `spec` is None."""
    from ckd_jax.train.config import load_config_file

    return DistillConfig() if spec is None else load_config_file(spec)


def plan_cells(base: DistillConfig, variants: list[str], subset_sizes: list[int] | None,
               seeds: list[int] | None, lrs: list[float] | None, out: str,
               budgets: list[int] | None = None) -> list[dict]:
    """The validated cells of a sweep: [{name, variant, overrides, config}], budget-major.

    Every config is validated here, before any work; a variant's overrides win over the base
    config (and its --set overrides) for the keys it names.
    """
    if not variants:
        raise ValueError("no variants given (--methods)")
    if len(set(variants)) != len(variants):
        raise ValueError(f"duplicate variants in {variants}")
    if subset_sizes and budgets:
        raise ValueError("give --subset-sizes or --budgets, not both")
    if budgets:
        sizes = [(None, b) for b in budgets]
    elif subset_sizes:
        sizes = [(s, None) for s in subset_sizes]
    else:
        sizes = [(base.subset_size, base.budget)]
    common = {"logit_table_dir": os.path.join(out, "logit_tables")}
    if seeds:
        common["seeds"] = tuple(int(s) for s in seeds)
    if lrs:
        common["learning_rates"] = tuple(float(lr) for lr in lrs)
    cells = []
    for subset, budget in sizes:
        for variant in variants:
            overrides = variant_overrides(variant)
            name = R.cell_name(variant, subset, budget)
            config = base.replace(**overrides, **common, subset_size=subset, budget=budget,
                                  out_dir=os.path.join(out, name))
            config.validate()
            cells.append({"name": name, "variant": variant, "overrides": overrides,
                          "config": config})
    return cells


def check_existing(cells: list[dict]) -> None:
    """Fail before any work if a cell dir holds a run of another configuration (paths aside:
    a moved or copied sweep folder still matches, `DistillConfig.differs_from_saved`)."""
    for cell in cells:
        for cfg in [cell["config"]] + [m["config"] for m in member_runs(cell)]:
            path = os.path.join(cfg.out_dir, "config.json")
            if not os.path.exists(path):
                continue
            changed = [k for k in cfg.differs_from_saved(path) if k not in _NON_SEMANTIC]
            if changed:
                raise ValueError(f"{cfg.out_dir} holds a run with another configuration "
                                 f"(differs in {changed}); use a new --out or remove that cell")


# A cell's members run apart (`--split-members`): member i, (seed, lr), trains as a one-member
# population in `<cell>/members/s<seed>_lr<lr>/` (resumable like any run); once all have
# finished, the cell's config.json, metrics.jsonl and summary.json are written from theirs, so
# the cell reads as if it had run whole. On CPU the members of a population run one after
# another through the program compiled for one member anyway (member_loop "sequential"), and
# every member's randomness comes from its seed alone, so the rows are the same, bit for bit.
MEMBERS_DIR = "members"
SPLIT_MODES = ("auto", "yes", "no")


def member_runs(cell: dict) -> list[dict]:
    """The one-member runs of a cell: [{index, seed, lr, name, config}] in population order."""
    cfg = cell["config"]
    runs = []
    for i, (seed, lr) in enumerate(cfg.members()):
        name = f"s{seed}_lr{lr!r}"
        runs.append({"index": i, "seed": seed, "lr": lr, "name": name,
                     "config": cfg.replace(seeds=(seed,), learning_rates=(lr,),
                                           out_dir=os.path.join(cfg.out_dir, MEMBERS_DIR,
                                                                name))})
    return runs


def _started_whole(cell: dict) -> bool:
    """Whether the cell has checkpoints of a whole-population run (kept going whole)."""
    folder = os.path.join(cell["config"].out_dir, "checkpoints")
    return os.path.isdir(folder) and bool(os.listdir(folder))


def cells_to_split(cells: list[dict], mode: str, jobs: int) -> set[str]:
    """Names of the unfinished cells whose members run apart. "no": none; "yes": every one
    with several members; "auto": the cells already split by an earlier run (to resume their
    members), and, on a CPU-only machine when fewer cells are left than `jobs`, every cell
    with several members not already running whole (more busy cores, same rows)."""
    from ckd_jax import jobs as J

    if mode not in SPLIT_MODES:
        raise ValueError(f"--split-members {mode!r}; accepted: {', '.join(SPLIT_MODES)}")
    todo = [c for c in cells if not R.cell_finished(c["config"].out_dir)
            and c["config"].num_members > 1]
    if mode == "no":
        return set()
    if mode == "yes":
        return {c["name"] for c in todo}
    unfinished = [c for c in cells if not R.cell_finished(c["config"].out_dir)]
    spread = len(unfinished) < jobs and not J.accelerator_installed()
    return {c["name"] for c in todo
            if os.path.isdir(os.path.join(c["config"].out_dir, MEMBERS_DIR))
            or (spread and not _started_whole(c))}


def merge_member_runs(cell: dict) -> bool:
    """When every member run of `cell` has finished: write the cell's config.json,
    metrics.jsonl (each row's member index the population's) and, last, summary.json (the
    members' summaries in population order; teacher calls and train seconds summed), and return
    True; else write nothing and return False."""
    from ckd_jax import files

    runs = member_runs(cell)
    if not all(R.cell_finished(m["config"].out_dir) for m in runs):
        return False
    out = cell["config"].out_dir
    summaries = [R.read_summary(m["config"].out_dir) for m in runs]
    config = files.read_json(os.path.join(runs[0]["config"].out_dir, "config.json"),
                             what="run config")
    config.update(seeds=list(cell["config"].seeds),
                  learning_rates=list(cell["config"].learning_rates), out_dir=out)
    metrics = []
    for m in runs:
        path = os.path.join(m["config"].out_dir, "metrics.jsonl")
        if os.path.exists(path):
            metrics += [{**row, "member": m["index"]} for row in
                        files.read_jsonl(path, what="metrics file", appended=True)]
    metrics.sort(key=lambda row: (row.get("epoch", 0), row["member"]))  # the engine's order
    summary = {**summaries[0], "members": [s["members"][0] for s in summaries],
               "teacher_calls_this_run": sum(s.get("teacher_calls_this_run", 0)
                                             for s in summaries),
               "train_seconds": sum(s.get("train_seconds", 0.0) for s in summaries),
               "finished": True, "members_run_apart": True}
    files.write_atomic(os.path.join(out, "config.json"), json.dumps(config, sort_keys=True))
    files.write_jsonl(os.path.join(out, "metrics.jsonl"), metrics)
    files.write_json(os.path.join(out, "summary.json"), summary)
    return True


def check_teacher(cells: list[dict], teacher_given: bool) -> None:
    """Fail before any work if a teacher-using cell can neither load nor build its tables."""
    from ckd_jax.train.methods import build_method

    if teacher_given:
        return
    for cell in cells:
        cfg = cell["config"]
        if cfg.teacher_checkpoint is not None or not build_method(cfg).uses_teacher:
            continue
        size = f"S{cfg.subset_size}" if cfg.subset_size is not None else None
        for seed in cfg.seeds:
            pattern = f"*_{size}_seed{seed}.npz" if size else f"*_seed{seed}.npz"
            if not glob.glob(os.path.join(cfg.logit_table_dir, pattern)):
                raise ValueError(
                    f"cell {cell['name']} uses the teacher but there is no teacher_checkpoint "
                    f"(--set teacher_checkpoint=<train_teacher.py run dir or .pth>) and no "
                    f"logit table {pattern} in {cfg.logit_table_dir}")


def parse_shard(text: str) -> tuple[int, int]:
    """`"I/N"` -> (I, N), with N >= 1 and 0 <= I < N."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r} must look like I/N (shard I of N, integers), e.g. "
                         "0/4") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: need N >= 1 and 0 <= I < N (for N = {max(n, 1)}: "
                         f"0/{max(n, 1)} .. {max(n, 1) - 1}/{max(n, 1)})")
    return i, n


def shard_cells(cells: list[dict], shard: tuple[int, int] | None) -> list[dict]:
    """The cells of shard (I, N): cell k of the cells sorted by name when k % N == I (in plan
    order), so the N shards together hold every cell exactly once; all cells for None."""
    if shard is None:
        return list(cells)
    i, n = shard
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {i}/{n}: need N >= 1 and 0 <= I < N")
    names = sorted(c["name"] for c in cells)
    mine = {name for k, name in enumerate(names) if k % n == i}
    return [c for c in cells if c["name"] in mine]


def _write_cell_file(cell: dict) -> None:
    from ckd_jax.files import write_json

    cfg = cell["config"]
    write_json(os.path.join(cfg.out_dir, R.CELL_FILE),
               {"variant": cell["variant"], "overrides": cell["overrides"],
                "subset_size": cfg.subset_size, "budget": cfg.budget})


def _fmt_acc(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def _checked_cells(cells: list[dict], shard: tuple[int, int] | None, teacher_given: bool,
                   log) -> tuple[str, list[dict]]:
    """(sweep dir, this shard's cells), after the checks that must pass before any work; the
    sweep dir exists afterwards. Shared by `run_sweep` and `run_sweep_jobs`."""
    if not cells:
        raise ValueError("no cells to run")
    out = os.path.dirname(cells[0]["config"].out_dir.rstrip(os.sep))
    planned = len(cells)
    cells = shard_cells(cells, shard)
    check_existing(cells)
    check_teacher(cells, teacher_given)
    os.makedirs(out, exist_ok=True)
    if shard is not None:
        log(f"shard {shard[0]}/{shard[1]}: {len(cells)} of {planned} cells "
            f"({', '.join(c['name'] for c in cells) or 'none'})")
    return out, cells


def run_sweep(cells: list[dict], *, mesh=None, teacher_apply=None, teacher_variables=None,
              log=print, shard: tuple[int, int] | None = None,
              rebuild_tables: bool = False, write_results: bool = True,
              split: set[str] | frozenset[str] = frozenset(),
              member: int | None = None) -> list[dict]:
    """Run (or skip, or resume) every cell, then rewrite `<out>/results.jsonl`.

    `cells` come from `plan_cells` (all sharing one out dir). A cell whose summary.json says
    finished=true is skipped; others call `run_distillation(resume=True)`. Returns the rows
    written to results.jsonl (every finished cell under the out dir, this sweep's or not).
    With `shard=(I, N)` only that shard's cells (`shard_cells`) are checked and run, and their
    rows go to `<out>/results.shard-I-of-N.jsonl` instead (results.jsonl is left alone).
    `rebuild_tables` (`--rebuild-tables`): rebuild damaged or mismatched logit tables (the
    cost is printed first) instead of stopping at them.
    `write_results=False` (a `--jobs` worker running one cell) writes no results file.
    `split`: names of the cells whose members run apart (`cells_to_split`), one after another
    here, then merged (`merge_member_runs`); `member=I` (a `--jobs` worker) runs member I of
    the split cell alone and merges nothing.
    """
    from ckd_jax.train.distill import run_distillation

    out, cells = _checked_cells(cells, shard, teacher_variables is not None, log)
    t_sweep = time.time()
    calls = 0
    for i, cell in enumerate(cells, 1):
        cfg = cell["config"]
        tag = f"[{i}/{len(cells)}] {cell['name']}"
        if R.cell_finished(cfg.out_dir):
            _write_cell_file(cell)  # in case an earlier run stopped right after training
            log(f"{tag}: skipped (finished; {cfg.out_dir}/summary.json)")
            continue
        if cell["name"] in split:
            calls += _run_members(cell, tag, member, log, mesh=mesh, teacher_apply=teacher_apply,
                                  teacher_variables=teacher_variables,
                                  rebuild_tables=rebuild_tables)
            if member is None and merge_member_runs(cell):
                _write_cell_file(cell)
                log(f"{tag}: {cfg.num_members} members run apart, merged into "
                    f"{cfg.out_dir}/summary.json")
            continue
        log(f"{tag}: running {cfg.method} with {cfg.num_members} member(s) "
            f"(seeds {list(cfg.seeds)} x lrs {list(cfg.learning_rates)})")
        t0 = time.time()
        summary = run_distillation(cfg, mesh=mesh, resume=True, teacher_apply=teacher_apply,
                                   teacher_variables=teacher_variables,
                                   rebuild_tables=rebuild_tables)
        summary.pop("_final", None)
        _write_cell_file(cell)
        calls += int(summary.get("teacher_calls_this_run", 0))
        best = max((m["test_top1_at_best_val"] or 0.0) for m in summary["members"])
        log(f"{tag}: done in {time.time() - t0:.1f} s (finished={summary['finished']}, "
            f"teacher calls this cell {summary.get('teacher_calls_this_run', 0)}, "
            f"best member test top-1 @ best val {_fmt_acc(best)})")
    if not write_results:
        return []
    return _write_results(cells, out, shard, log, time.time() - t_sweep, calls)


def _run_members(cell: dict, tag: str, only: int | None, log, **run_kw) -> int:
    """Run the unfinished one-member runs of a split cell (only member `only` when given),
    resuming each from its checkpoints; returns the teacher calls made."""
    from ckd_jax.train.distill import run_distillation

    runs = member_runs(cell)
    if only is not None and not 0 <= only < len(runs):
        raise ValueError(f"--member {only}: cell {cell['name']} has members 0..{len(runs) - 1}")
    calls = 0
    for m in runs:
        if only is not None and m["index"] != only:
            continue
        cfg = m["config"]
        mtag = f"{tag} member {m['index']} (seed {m['seed']}, lr {m['lr']:g})"
        if R.cell_finished(cfg.out_dir):
            log(f"{mtag}: skipped (finished; {cfg.out_dir}/summary.json)")
            continue
        log(f"{mtag}: running {cfg.method} apart in {cfg.out_dir}")
        t0 = time.time()
        summary = run_distillation(cfg, resume=True, **run_kw)
        calls += int(summary.get("teacher_calls_this_run", 0))
        log(f"{mtag}: done in {time.time() - t0:.1f} s (finished={summary['finished']})")
    return calls


def _write_results(cells: list[dict], out: str, shard: tuple[int, int] | None, log,
                   seconds: float, calls: int) -> list[dict]:
    """Rewrite `<out>/results.jsonl` (or this shard's results file) from the cell summaries."""
    if shard is None:
        rows, results = R.collect_rows(out), os.path.join(out, R.RESULTS_FILE)
    else:  # only this shard's cells: other shards may be writing theirs right now
        rows = R.collect_rows(out, names=[c["name"] for c in cells])
        results = os.path.join(out, R.SHARD_RESULTS_FILE.format(i=shard[0], n=shard[1]))
    R.write_jsonl(rows, results)
    unfinished = [c["name"] for c in cells if not R.cell_finished(c["config"].out_dir)]
    if unfinished:
        log(f"warning: unfinished cells left out of {os.path.basename(results)}: {unfinished}")
    log(f"sweep done in {seconds:.1f} s: {len(rows)} rows in "
        f"{results}; teacher calls this invocation: {calls}")
    return rows


def run_sweep_jobs(cells: list[dict], jobs: int, argv: list[str], *, script: str, log=print,
                   shard: tuple[int, int] | None = None, heartbeat_s: float = 60.0,
                   cores_per_job: int = 1,
                   split: set[str] | frozenset[str] = frozenset()) -> list[dict]:
    """`run_sweep` with the cells run `jobs` at a time, each by a worker process (the sweep
    script `script`, experiments/sweep.py, run with `argv` + `--cell NAME`) pinned to its own
    core(s); then the results file as `run_sweep` writes it. The cells named in `split` run one
    worker per unfinished member (`--cell NAME --member I`) and are merged here once all have
    finished. Raises RuntimeError naming the cells whose worker failed."""
    from ckd_jax import jobs as J

    J.core_groups(jobs, cores_per_job=cores_per_job)  # what the machine cannot take: now
    out, cells = _checked_cells(cells, shard, False, log)
    tasks, run_dirs = [], {}  # run_dirs: a member task's run folder
    for cell in cells:
        cfg = cell["config"]
        if R.cell_finished(cfg.out_dir):
            _write_cell_file(cell)
            log(f"{cell['name']}: skipped (finished; {cfg.out_dir}/summary.json)")
            continue
        drop = ("--jobs", "--cell", "--shard", "--member", "--split-members")
        add = ["--jobs", "1", "--cell", cell["name"]]
        if cell["name"] not in split:
            tasks.append(J.Task(cell["name"], J.child_argv(script, argv, drop=drop, add=add),
                                members=cfg.num_members,
                                log_path=os.path.join(out, "logs", f"{cell['name']}.log")))
            continue
        for m in member_runs(cell):
            if R.cell_finished(m["config"].out_dir):
                continue
            name = f"{cell['name']}.{m['name']}"
            tasks.append(J.Task(name, J.child_argv(script, argv, drop=drop,
                                                   add=add + ["--member", str(m["index"])]),
                                log_path=os.path.join(out, "logs", f"{name}.log")))
            run_dirs[name] = m["config"].out_dir
    t_sweep = time.time()
    status = J.run_tasks(tasks, min(jobs, max(1, len(tasks))), log=log,
                         heartbeat_s=heartbeat_s, cores_per_job=cores_per_job) if tasks else {}
    calls = 0
    for task in tasks:
        run_dir = run_dirs.get(task.name, os.path.join(out, task.name))
        if status.get(task.name) == 0 and os.path.exists(os.path.join(run_dir, "summary.json")):
            calls += int(R.read_summary(run_dir).get("teacher_calls_this_run", 0))
    for cell in cells:
        if cell["name"] in split and merge_member_runs(cell):
            _write_cell_file(cell)
    rows = _write_results(cells, out, shard, log, time.time() - t_sweep, calls)
    failed = sorted(name for name, rc in status.items() if rc != 0)
    if failed:
        raise RuntimeError(f"{len(failed)} cell(s) failed: {failed}; see {out}/logs/<cell>.log "
                           "and rerun the same command to resume them")
    return rows


def parse_jobs(text: str, cells: list[dict], shard: tuple[int, int] | None,
               cores_per_job: int = 1, split_mode: str = "no") -> int:
    """`--jobs`: "auto" (`ckd_jax.jobs.default_jobs` over the tasks still to run: the cells,
    or the members of the cells `cells_to_split` would split on every core) or N >= 1."""
    from ckd_jax import jobs as J

    if text == "auto":
        mine = shard_cells(cells, shard)
        todo = [c for c in mine if not R.cell_finished(c["config"].out_dir)]
        slots = max(1, len(J.available_cores()) // max(1, cores_per_job))
        split = cells_to_split(mine, split_mode, slots)
        tasks = sum(sum(not R.cell_finished(m["config"].out_dir) for m in member_runs(c))
                    if c["name"] in split else 1 for c in todo)
        n = J.default_jobs(tasks, cores_per_job)
    else:
        try:
            n = int(text)
        except ValueError:
            raise ValueError(f"--jobs {text!r} must be a whole number >= 1 or 'auto'") from None
        if n < 1:
            raise ValueError(f"--jobs {n} must be >= 1 (or 'auto')")
    # more than the cores, or a bad --cores-per-job: one line, before any work
    J.core_groups(n, cores_per_job=cores_per_job)
    return n
