"""The README's main job: the whole CKD pipeline on scikit-learn digits, on a CPU, no download.

  python experiments/quickstart.py [--out runs/quickstart] [--epochs 40]

1. trains a TinyCNN teacher (width 32) on the 1,437-image digits train split;
2. draws a budget per seed (S = 250 samples: B = 200 teacher calls, 50 validation images) and
   builds each seed's logit table: 200 teacher calls per seed, made once, saved, reused;
3. distils a width-8 TinyCNN student with CE only (no teacher), KD and CKD (MSE, k = 2), seeds
   1-3, one population per method, fixed-length cosine schedule;
4. prints test top-1 (mean +- std over seeds, at the best validation epoch) per method.

A rerun reuses the teacher, the logit tables and finished runs (0 teacher calls).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs",
                      "digits_quickstart.py")
METHODS = ("ce", "kd", "ckd")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/quickstart")
    ap.add_argument("--epochs", type=int, default=None, help="student pseudo-epochs")
    ap.add_argument("--teacher-epochs", type=int, default=15)
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)

    from ckd_jax.train.config import load_config_file
    from ckd_jax.train.distill import run_distillation
    from ckd_jax.train.supervised import TeacherConfig, train_teacher

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
        with open(teacher_summary) as f:
            teacher_acc = json.load(f)["test_acc"]
        print(f"[1/2] teacher: reusing {teacher_dir} (test top-1 {100 * teacher_acc:.2f}%)")
    else:
        print(f"[1/2] teacher: training {base.teacher} on digits for {args.teacher_epochs} "
              "epochs")
        result = train_teacher(TeacherConfig(
            dataset="digits", model=base.teacher, model_kwargs=dict(base.teacher_kwargs),
            out=teacher_dir, recipe="paper", epochs=args.teacher_epochs, batch_size=64, lr=0.05,
            schedule="cosine", progress=not args.quiet))
        teacher_acc = result.test_acc
        print(f"      teacher test top-1 {100 * teacher_acc:.2f}%")

    rows = []
    for method in METHODS:
        print(f"[2/2] student: {method}")
        cfg = base.replace(method=method, teacher_checkpoint=teacher_dir,
                           logit_table_dir=os.path.join(args.out, "logit_tables"),
                           out_dir=os.path.join(args.out, method))
        done = os.path.join(cfg.out_dir, "summary.json")
        summary = None
        if os.path.exists(done):
            with open(done) as f:
                summary = json.load(f)
        if summary is not None and summary.get("finished"):
            with open(os.path.join(cfg.out_dir, "config.json")) as f:
                if json.load(f) != json.loads(cfg.to_json()):
                    raise SystemExit(f"{cfg.out_dir} holds a finished run with other settings; "
                                     "use another --out")
            calls = 0  # reused as it is: no teacher call, no training
            print(f"      reusing {cfg.out_dir}")
        else:
            summary = run_distillation(cfg)
            calls = summary["teacher_calls_this_run"]
        accs = np.array([m["test_top1_at_best_val"] for m in summary["members"]]) * 100
        rows.append((method, summary["budget"] if method != "ce" else 0, calls, accs))

    print(f"\nDigits, TinyCNN(32) teacher ({100 * teacher_acc:.2f}%) -> TinyCNN(8) student, "
          f"S = {base.subset_size}, seeds {list(base.seeds)}, {base.epochs} pseudo-epochs")
    print("| method | teacher calls per seed | test top-1 % (mean +- std) | per seed |")
    print("|---|---|---|---|")
    for method, calls, _, accs in rows:
        per_seed = ", ".join(f"{a:.1f}" for a in accs)
        print(f"| {method} | {calls} | {accs.mean():.2f} +- {accs.std(ddof=1):.2f} | "
              f"{per_seed} |")
    made = sum(r[2] for r in rows)
    print(f"teacher calls made by this invocation: {made}; wall time {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    from ckd_jax.cli import run_command  # a bad input: one line on stderr, exit status 2

    sys.exit(run_command(main))
