"""The README's main job: the whole CKD pipeline on scikit-learn digits, on a CPU, no download.

  python experiments/quickstart.py [--out runs/quickstart] [--epochs 40]

1. trains a TinyCNN teacher (width 32) on the 1,437-image digits train split;
2. draws a budget per seed (S = 250 samples: B = 200 teacher calls, 50 validation images) and
   builds each seed's logit table: 200 teacher calls per seed, made once, saved, reused;
3. distils a width-8 TinyCNN student with CE only (no teacher), KD, CKD (MSE, k = 2) as the
   paper evaluates it (raw logits) and CKD calibrated from its logit table (`ckd_cal`, no extra
   teacher call; docs/calibration.md), seeds 1-3, one population per variant, fixed-length
   cosine schedule;
4. prints test top-1 (mean +- std over seeds, at the best validation epoch) per variant.

`--variants` picks other named variants (ckd_jax.train.methods.VARIANTS), e.g.
`--variants ce,kd,ckd,ckd_cal,ckd_anchor` adds CKD with the in-training offset anchor.

A rerun reuses the teacher, the logit tables and finished runs (0 teacher calls), also in a
folder moved or copied elsewhere; a killed run resumes. A damaged logit table is an error naming
the file and its rebuild cost; `--rebuild-tables` rebuilds it (the cost is printed first).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ckd_jax  # noqa: E402

ckd_jax.set_cpu_flags()  # our XLA:CPU speed flag, before jax starts (ckd_jax/__init__.py)

import numpy as np  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs",
                      "digits_quickstart.py")
VARIANTS = ("ce", "kd", "ckd", "ckd_cal")
CKD_ROWS_NOTE = (
    "ckd and ckd_cal train the same way; ckd is scored on raw logits as in the paper, ckd_cal "
    "after subtracting one offset vector that CKD's loss cannot see, estimated from the "
    "teacher-labelled images and their cached teacher logits (no teacher call, no validation "
    "or test data), for model selection and test alike.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/quickstart")
    ap.add_argument("--epochs", type=int, default=None, help="student pseudo-epochs")
    ap.add_argument("--teacher-epochs", type=int, default=15)
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma-separated named variants (default: %(default)s)")
    ap.add_argument("--rebuild-tables", action="store_true",
                    help="rebuild logit tables that are damaged or do not match (costs B "
                         "teacher calls per table, printed first)")
    args = ap.parse_args(argv)

    from ckd_jax.files import DamagedFile, read_json
    from ckd_jax.results import read_summary
    from ckd_jax.train.config import load_config_file
    from ckd_jax.train.distill import run_distillation
    from ckd_jax.train.methods import variant_overrides
    from ckd_jax.train.supervised import TeacherConfig, train_teacher

    variants = [v for v in args.variants.split(",") if v]
    overrides = {v: variant_overrides(v) for v in variants}  # unknown names fail here

    t0 = time.time()
    base = load_config_file(CONFIG)
    if args.epochs is not None:
        base = base.replace(epochs=args.epochs)
    base = base.replace(progress=not args.quiet)
    base.validate()  # a bad --epochs fails here, before the teacher is trained
    if args.teacher_epochs < 1:
        raise ValueError(f"--teacher-epochs {args.teacher_epochs} must be >= 1")

    teacher_dir = os.path.join(args.out, "teacher")
    teacher_summary = os.path.join(teacher_dir, "teacher.json")
    if os.path.exists(teacher_summary):
        teacher_acc = read_json(teacher_summary, what="teacher summary", next_step=(
            f"delete it and rerun: the teacher is tested again from {teacher_dir}/checkpoints "
            "(no training, no teacher call on the tables)")).get("test_acc")
        if not isinstance(teacher_acc, (int, float)):
            raise DamagedFile(f"teacher summary {teacher_summary} is damaged: no test_acc; "
                              "delete it and rerun")
        print(f"[1/2] teacher: reusing {teacher_dir} (test top-1 {100 * teacher_acc:.2f}%)")
    else:
        print(f"[1/2] teacher: training {base.teacher} on digits for {args.teacher_epochs} "
              "epochs")
        from ckd_jax.runlock import run_lock

        with run_lock(teacher_dir):  # one process per run folder
            result = train_teacher(TeacherConfig(
                dataset="digits", model=base.teacher, model_kwargs=dict(base.teacher_kwargs),
                out=teacher_dir, recipe="paper", epochs=args.teacher_epochs, batch_size=64,
                lr=0.05, schedule="cosine", progress=not args.quiet,
                resume=True))  # a killed run goes on
        teacher_acc = result.test_acc
        print(f"      teacher test top-1 {100 * teacher_acc:.2f}%")

    rows = []
    for variant in variants:
        print(f"[2/2] student: {variant}")
        cfg = base.replace(**overrides[variant], teacher_checkpoint=teacher_dir,
                           logit_table_dir=os.path.join(args.out, "logit_tables"),
                           out_dir=os.path.join(args.out, variant))
        done = os.path.join(cfg.out_dir, "summary.json")
        summary = read_summary(cfg.out_dir) if os.path.exists(done) else None
        if summary is not None and summary.get("finished"):
            if cfg.differs_from_saved(os.path.join(cfg.out_dir, "config.json")):
                raise SystemExit(f"{cfg.out_dir} holds a finished run with other settings; "
                                 "use another --out")
            calls = 0  # reused as it is: no teacher call, no training
            print(f"      reusing {cfg.out_dir}")
        else:
            summary = run_distillation(cfg, rebuild_tables=args.rebuild_tables)
            calls = summary["teacher_calls_this_run"]
        accs = np.array([m["test_top1_at_best_val"] for m in summary["members"]]) * 100
        teacher_calls = summary["members"][0]["teacher_calls"]
        rows.append((variant, teacher_calls, calls, accs))

    print(f"\nDigits, TinyCNN(32) teacher ({100 * teacher_acc:.2f}%) -> TinyCNN(8) student, "
          f"S = {base.subset_size}, seeds {list(base.seeds)}, {base.epochs} pseudo-epochs")
    print("| method | teacher calls per seed | test top-1 % (mean +- std) | per seed |")
    print("|---|---|---|---|")
    for variant, calls, _, accs in rows:
        per_seed = ", ".join(f"{a:.1f}" for a in accs)
        print(f"| {variant} | {calls} | {accs.mean():.2f} +- {accs.std(ddof=1):.2f} | "
              f"{per_seed} |")
    if "ckd" in variants and "ckd_cal" in variants:
        print(CKD_ROWS_NOTE)
    made = sum(r[2] for r in rows)
    print(f"teacher calls made by this invocation: {made}; wall time {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    from ckd_jax.cli import run_command  # a bad input: one line on stderr, exit status 2

    sys.exit(run_command(main))
