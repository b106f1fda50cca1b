"""Export the selected student of a finished distillation run as one self-describing file.

  python experiments/export.py runs/digits_ckd_cal [--member N] [--out student.msgpack]

Writes the best-validation weights of the member with the best validation accuracy (or member
N), with the run's calibrated logit offset folded into the head bias when the run calibrated
(`calibration="table"`), so the exported network's plain logits are the run's calibrated ones.
Default output: <RUN_DIR>/exported/student_member<N>.msgpack. Load it in three lines:

  from ckd_jax.export import load_exported
  model, variables = load_exported("student.msgpack")
  logits = model.apply(variables, x, train=False)

(format and header: ckd_jax/export.py, docs/calibration.md). Exit status 2 on a bad argument.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ckd_jax  # noqa: E402

ckd_jax.set_cpu_flags()  # our XLA:CPU speed flag, before jax starts (ckd_jax/__init__.py)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", help="a finished experiments/distill.py run directory")
    ap.add_argument("--member", type=int, default=None,
                    help="member index (default: the best by validation top-1)")
    ap.add_argument("--out", default=None, help="output file (default under RUN_DIR/exported)")
    args = ap.parse_args(argv)

    from ckd_jax.export import export_run

    path, header = export_run(args.run_dir, member=args.member, out=args.out)
    src = header["source"]
    top1 = src["test_top1_at_best_val"]
    print(f"exported member {src['member']} (seed {src['seed']}, lr {src['lr']}, best epoch "
          f"{src['best_epoch']}) of {args.run_dir}: {header['model']} {header['model_kwargs']}, "
          f"{header['num_classes']} classes, logit offset "
          f"{'folded into the head bias' if header['logit_offset_folded'] else 'not used'}; "
          f"the run's test top-1 {'n/a' if top1 is None else f'{100 * top1:.2f}'}% -> {path}")
    return 0


if __name__ == "__main__":
    from ckd_jax.cli import run_command  # a bad input: one line on stderr, exit status 2

    sys.exit(run_command(main))
