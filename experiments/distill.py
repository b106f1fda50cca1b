"""Distil one population of students (one method, one budget, seeds x learning rates).

  python experiments/distill.py --config experiments/configs/digits_quickstart.py \
      --set method=kd --set teacher_checkpoint=runs/quickstart/teacher --out runs/digits_kd

Writes <out>/config.json, metrics.jsonl (one line per member per pseudo-epoch), checkpoints/
(resumed automatically when the same command runs again) and summary.json, and prints the
summary table. The logit tables go beside the teacher run (<teacher>/logit_tables, reused by
every run on that teacher) unless --set logit_table_dir=... says otherwise. `--set key=value`
overrides any DistillConfig field (lists as comma-separated values, dicts as JSON). A named
variant of sweep.py (docs/experiments.md; ckd_cal, ckd_anchor, mixup_kd, ...) is accepted as
`--set variant=NAME` or `--set method=NAME`: its settings are applied first, so other `--set`s
still override them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ckd_jax  # noqa: E402

ckd_jax.set_cpu_flags()  # our XLA:CPU speed flag, before jax starts (ckd_jax/__init__.py)

from ckd_jax.train.config import apply_overrides, load_config_file  # noqa: E402


def _variant_first(sets: list[str]) -> list[str]:
    """The `--set`s with a named variant (`variant=NAME`, or `method=NAME` where NAME is a
    variant and not a method) expanded into its settings, placed first."""
    from ckd_jax.train.methods import VARIANTS, method_names, variant_overrides

    variant, rest = None, []
    for item in sets:
        key, _, value = item.partition("=")
        if key == "variant" or (key == "method" and value in VARIANTS
                                and value not in method_names()):
            variant = value
        else:
            rest.append(item)
    if variant is None:
        return rest
    expanded = [f"{k}={json.dumps(v) if isinstance(v, (dict, list)) else v}"
                for k, v in variant_overrides(variant).items()]
    print(f"variant {variant}: {', '.join(expanded)}")
    return expanded + rest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="config file with get_config()")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field (repeatable)")
    ap.add_argument("--out", help="output directory (overrides out_dir)")
    ap.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    ap.add_argument("--rebuild-tables", action="store_true",
                    help="rebuild logit tables that are damaged or do not match the run (B "
                         "teacher calls each, printed first; without it they are an error)")
    ap.add_argument("--devices", type=int, default=None,
                    help="number of local devices for data parallelism (default: all)")
    args = ap.parse_args(argv)

    config = apply_overrides(load_config_file(args.config), _variant_first(args.set))
    if args.out:
        config = config.replace(out_dir=args.out)
    config.validate()

    from ckd_jax.train.distill import run_distillation
    from ckd_jax.train.engine import make_mesh

    summary = run_distillation(config, mesh=make_mesh(args.devices),
                               resume=not args.no_resume, rebuild_tables=args.rebuild_tables)
    summary.pop("_final", None)
    print(f"\n{summary['method']} | {summary['dataset']} | {summary['teacher']} -> "
          f"{summary['student']} | budget {summary['budget']} teacher calls per seed"
          + (" | calibrated (figures after the logit offset, docs/calibration.md)"
             if summary.get("calibration") == "table" else ""))
    print("| seed | lr | test top-1 @ best val | best val | best epoch | last test top-1 |")
    print("|---|---|---|---|---|---|")
    for m in summary["members"]:
        fmt = lambda v: "n/a" if v is None else f"{100 * v:.2f}"
        print(f"| {m['seed']} | {m['lr']} | {fmt(m['test_top1_at_best_val'])} | "
              f"{fmt(m['best_val_top1'])} | {m['best_epoch']} | {fmt(m['last_test_top1'])} |")
    if config.out_dir:
        print(f"summary: {os.path.join(config.out_dir, 'summary.json')}")
    else:
        print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    from ckd_jax.cli import run_command  # a bad input: one line on stderr, exit status 2

    sys.exit(run_command(main))
