"""Sweep: methods x budgets x seeds x learning rates, one population per (method, budget) cell.

  python experiments/sweep.py --config experiments/configs/cifar100_paper.py \
      --set teacher_checkpoint=/models/resnet110_vanilla/ckpt_epoch_240.pth \
      --methods ckd,ckd_kl3,kd,ce --subset-sizes 2000,6000 --seeds 1,2,3 \
      --lrs 0.1,0.05,0.025 --out results/c100_resnet32

A cell = (variant, subset size); its seeds x learning rates are one population (one run,
vmapped over members) in `<out>/<variant>_S<subset>`; logit tables in `<out>/logit_tables` are
shared by every cell, so each (seed, subset) costs its B = 0.8 S teacher calls once. Rerunning
the same command skips finished cells, resumes unfinished ones from their checkpoints, and
rewrites `<out>/results.jsonl` (one row per member per cell). Then:

  python experiments/report.py results/c100_resnet32

`--shard I/N` (0 <= I < N): run cell k of the name-sorted cells when k % N == I, so N jobs with
the same command and I = 0..N-1 run every cell exactly once (a SLURM job array:
docs/experiments.md); a shard writes its rows to `<out>/results.shard-I-of-N.jsonl`.

`--jobs N`: N cells at once on one machine, each in its own process pinned to its own CPU
core(s) (default: one per core on a CPU-only machine, 1 where a GPU/TPU plugin is installed),
with one progress view and each cell's output in `<out>/logs/<cell>.log`; a killed sweep takes
its workers down with it and the same command resumes. It composes with `--shard`. `--jobs 1`
runs the cells one after another in this process. `--cores-per-job C` (default 1) cores per
worker, and as many XLA threads in a one-process sweep, so `--jobs 1`, `--jobs N` and any
`--shard` give the same rows, bit for bit.

`--split-members` (default auto): when fewer cells are left than `--jobs` on a CPU-only
machine, each member (seed x learning rate) of a cell runs as its own one-member run in
`<cell>/members/s<seed>_lr<lr>/`, one worker each, merged into the cell once all have finished
(same rows, bit for bit); `yes` splits every multi-member cell, `no` none.

`--methods`: any method name of `ckd_jax.train.methods`, or a named variant of
`ckd_jax.train.methods.VARIANTS`, e.g. `ckd` (WACV: MSE, k=2), `ckd_cal` (calibrated,
docs/calibration.md) and `ckd_kl3` (first release: KL at T=4, k=3); `--list-variants` prints
them.

The library behind this command (planning, running, shards, workers, members apart):
`ckd_jax.sweep`.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ckd_jax  # noqa: E402

ckd_jax.set_cpu_flags()  # our XLA:CPU speed flag, before jax starts (ckd_jax/__init__.py)

from ckd_jax import jobs as _jobs  # noqa: E402

_jobs.become_worker()  # a --jobs worker: its own cores, before any jax backend starts

from ckd_jax import results as R  # noqa: E402
from ckd_jax.sweep import (  # noqa: E402
    SPLIT_MODES,
    cells_to_split,
    load_base_config,
    parse_jobs,
    parse_shard,
    plan_cells,
    run_sweep,
    run_sweep_jobs,
    shard_cells,
)
from ckd_jax.train.config import apply_overrides  # noqa: E402
from ckd_jax.train.methods import VARIANTS  # noqa: E402


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _float_list(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="config file (.py) or module with get_config() "
                                     "(default: DistillConfig defaults)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a base config field (repeatable)")
    ap.add_argument("--methods", help="comma-separated variants, e.g. ckd,ckd_kl3,kd,ce")
    ap.add_argument("--subset-sizes", type=_int_list, help="e.g. 2000,6000 (default: config's)")
    ap.add_argument("--budgets", type=_int_list,
                    help="teacher-call budgets B instead of subset sizes")
    ap.add_argument("--seeds", type=_int_list, help="e.g. 1,2,3 (default: config's)")
    ap.add_argument("--lrs", type=_float_list, help="e.g. 0.1,0.05,0.025 (default: config's)")
    ap.add_argument("--out", help="sweep directory, e.g. results/<name>")
    ap.add_argument("--devices", type=int, default=None,
                    help="local devices for data parallelism (default: all)")
    ap.add_argument("--shard", metavar="I/N", default=None,
                    help="run only shard I of N (0 <= I < N): cell k of the name-sorted cells "
                         "when k %% N == I; for N machines or a job array")
    ap.add_argument("--jobs", default="auto",
                    help="cells run at once, each in a process pinned to its own CPU core(s) "
                         "(default auto: one per core on a CPU-only machine, 1 with a GPU/TPU "
                         "plugin installed; 1: one after another in this process)")
    ap.add_argument("--cores-per-job", type=int, default=1,
                    help="CPU cores (XLA threads) of each job, the same for every --jobs so "
                         "that rows do not depend on it (default 1)")
    ap.add_argument("--split-members", default="auto", choices=SPLIT_MODES,
                    help="run each member (seed x learning rate) of a cell as its own "
                         "one-member run, merged into the cell when all have finished; same "
                         "rows (default auto: when fewer cells are left than --jobs on a "
                         "CPU-only machine, and for cells an earlier run split)")
    ap.add_argument("--cell", default=None, help=argparse.SUPPRESS)  # a --jobs worker's cell
    ap.add_argument("--member", type=int, default=None, help=argparse.SUPPRESS)  # its member
    ap.add_argument("--rebuild-tables", action="store_true",
                    help="rebuild logit tables that are damaged or do not match (B teacher "
                         "calls each, printed first; without it they are an error)")
    ap.add_argument("--dry-run", action="store_true", help="print the cells and exit")
    ap.add_argument("--list-variants", action="store_true", help="print the variants and exit")
    args = ap.parse_args(argv)

    if args.list_variants:
        from ckd_jax.train.methods import method_names

        for name, ov in VARIANTS.items():
            print(f"{name:12s} {ov}")
        print("plain methods:", ", ".join(method_names()))
        return 0
    if not args.methods or not args.out:
        ap.error("--methods and --out are required")
    shard = parse_shard(args.shard) if args.shard is not None else None
    base = apply_overrides(load_base_config(args.config), args.set)
    variants = [v.strip() for v in args.methods.split(",") if v.strip()]
    cells = plan_cells(base, variants, args.subset_sizes, args.seeds, args.lrs, args.out,
                       budgets=args.budgets)
    for key in sorted({k for c in cells for k in c["overrides"]}):
        if any(s.startswith(f"{key}=") for s in args.set):
            print(f"note: --set {key}=... is overridden by the variants that set {key}")
    if args.dry_run:
        if shard is not None:
            print(f"shard {shard[0]}/{shard[1]}: {len(shard_cells(cells, shard))} of "
                  f"{len(cells)} cells")
        for c in shard_cells(cells, shard):
            cfg = c["config"]
            state = "finished" if R.cell_finished(cfg.out_dir) else "to run"
            print(f"{c['name']:24s} {state:9s} {c['overrides']} seeds={list(cfg.seeds)} "
                  f"lrs={list(cfg.learning_rates)}")
        return 0

    jobs = parse_jobs(args.jobs, cells, shard, args.cores_per_job, split_mode=args.split_members)
    if args.cell is not None:  # a --jobs worker: one cell (or member), no results file
        mine = [c for c in cells if c["name"] == args.cell]
        if not mine:
            raise ValueError(f"--cell {args.cell!r} is not a cell of this sweep; cells: "
                             f"{[c['name'] for c in cells]}")
        from ckd_jax.train.engine import make_mesh

        run_sweep(mine, mesh=make_mesh(args.devices), write_results=False,
                  rebuild_tables=args.rebuild_tables, member=args.member,
                  split={args.cell} if args.member is not None else frozenset())
        return 0
    split = cells_to_split(shard_cells(cells, shard), args.split_members, jobs)
    if split:
        print(f"members run apart (--split-members {args.split_members}): {sorted(split)}")
    if jobs > 1:
        run_sweep_jobs(cells, jobs, list(sys.argv[1:] if argv is None else argv),
                       script=os.path.abspath(__file__), shard=shard,
                       cores_per_job=args.cores_per_job, split=split)
    else:
        from ckd_jax.train.engine import make_mesh

        _start_backend_like_a_worker(args.cores_per_job)
        run_sweep(cells, mesh=make_mesh(args.devices), shard=shard,
                  rebuild_tables=args.rebuild_tables, split=split)
    print(f"next: python experiments/report.py {args.out}")
    return 0


def _start_backend_like_a_worker(cores_per_job: int) -> None:
    """A one-process sweep: XLA's thread pool as a `--jobs` worker's, so that the rows match."""
    from ckd_jax import _cpu_speed
    from ckd_jax import jobs as J

    if J.start_cpu_backend(cores_per_job):
        print(f"CPU backend started with {cores_per_job} XLA thread(s) (--cores-per-job), as "
              "each --jobs worker runs")
    elif _cpu_speed.backends_started() and len(J.available_cores()) > cores_per_job:
        print(f"note: jax was started before this sweep with a thread pool for "
              f"{len(J.available_cores())} cores, not --cores-per-job {cores_per_job}: rows may "
              "differ in the last bits from the same sweep run from the command line")


if __name__ == "__main__":
    from ckd_jax.cli import run_command  # a bad input: one line on stderr, exit status 2

    sys.exit(run_command(main))
