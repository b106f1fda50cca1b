"""Tables and a plot from a sweep's results.

  python experiments/report.py results/<name> --out results/<name>/report

Input: a sweep directory (its results.jsonl, else its cells' summaries) or a results.jsonl file.
Writes table.md (printed too: a variants x budgets headline, then one row per variant and
budget, then every learning rate), table.csv and plot.png (test accuracy against teacher calls, one
line per variant with +-1 std error bars). Rule: per (variant, subset size), the learning rate with
the highest mean best-validation top-1 over seeds is chosen; the table reports the mean +- sample
std (ddof = 1) over seeds of the test top-1 at each seed's best-validation point at that rate.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ckd_jax import results as R  # noqa: E402
from ckd_jax.files import write_atomic  # noqa: E402
from ckd_jax.train.methods import VARIANTS  # noqa: E402


def in_variant_order(agg: list[dict]) -> list[dict]:
    """`agg` with the variants in the registry's order (ce, kd, the CKD forms, then the other
    baselines; `ckd_jax.train.methods.VARIANTS`), unknown names after them as they came;
    budgets ascending within a variant."""
    rank = {v: i for i, v in enumerate(VARIANTS)}
    first = {v: i for i, v in enumerate(dict.fromkeys(a["variant"] for a in agg))}
    return sorted(agg, key=lambda a: (rank.get(a["variant"], len(rank)), first[a["variant"]],
                                      a["subset_size"]))


def _pct(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.2f}"


def _meta(rows: list[dict]) -> str:
    keys = ("dataset", "teacher", "student", "schedule")
    parts = []
    for k in keys:
        vals = sorted({str(r.get(k)) for r in rows if r.get(k) is not None})
        if vals:
            parts.append(f"{k} {'/'.join(vals)}")
    return ", ".join(parts)


def _logits(a: dict) -> str:
    """How a row's accuracies were measured: "raw" (the paper) or "calibrated"."""
    return "calibrated" if a["calibration"] == "table" else "raw"


def headline_table(agg: list[dict]) -> str:
    """Variants down, subset sizes across: test top-1 mean +- std (%) at the chosen learning
    rate, the best mean of each column in bold ("-" where a variant has no such cell)."""
    subsets = sorted({a["subset_size"] for a in agg})
    cell = {(a["variant"], a["subset_size"]): a for a in agg}
    budget = {a["subset_size"]: a["budget"] for a in agg}
    best = {s: max((a["mean"] for a in agg if a["subset_size"] == s and math.isfinite(a["mean"])),
                   default=None) for s in subsets}
    lines = ["| variant | logits | " + " | ".join(f"S={s} (B={budget[s]})" for s in subsets)
             + " |", "|---|---|" + "---:|" * len(subsets)]
    for variant in dict.fromkeys(a["variant"] for a in agg):
        first = next(a for a in agg if a["variant"] == variant)
        entries = []
        for s in subsets:
            a = cell.get((variant, s))
            if a is None:
                entries.append("-")
                continue
            text = f"{_pct(a['mean'])} +- {_pct(a['std'])}"
            entries.append(f"**{text}**" if a["mean"] == best[s] else text)
        lines.append(f"| {variant} | {_logits(first)} | " + " | ".join(entries) + " |")
    return "\n".join(lines) + "\n"


def markdown_table(agg: list[dict], rows: list[dict], metric: str, select_by: str) -> str:
    """The headline (variants x subset sizes), the main table (one row per variant and subset
    size) and a per-learning-rate table."""
    caption = (f"Test top-1 (%) at each seed's best-validation point ({metric}), mean +- sample "
               f"std (ddof=1) over seeds. Learning rate chosen per (method, subset size) by the "
               f"highest mean {select_by} over seeds; test accuracy is not used for the choice. "
               f"Teacher calls are per seed (B = teacher-labelled split). {_meta(rows)}.")
    lines = [f"**Table.** {caption}", "", "**Headline** (test top-1 %, mean +- std over seeds; "
             "best of each column in bold).", "", headline_table(agg).rstrip("\n"), "",
             "**Per row.**", "",
             "| variant | method | logits | subset S | budget B | teacher calls | lr (chosen) | "
             "seeds | val top-1 (mean) | test top-1 (mean +- std) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for a in agg:
        lines.append(f"| {a['variant']} | {a['method']} | {_logits(a)} | {a['subset_size']} | "
                     f"{a['budget']} | "
                     f"{a['teacher_calls']} | {a['lr']:g} | {a['n_seeds']} | "
                     f"{_pct(a['val_mean'])} | {_pct(a['mean'])} +- {_pct(a['std'])} |")
    lines += ["", "**All learning rates** (mean over seeds; * = chosen).", "",
              "| variant | subset S | lr | seeds | val top-1 (mean) | test top-1 (mean +- std) |",
              "|---|---:|---:|---:|---:|---:|"]
    for a in agg:
        for lr in sorted(a["per_lr"], reverse=True):
            p = a["per_lr"][lr]
            mark = "*" if lr == a["lr"] else ""
            lines.append(f"| {a['variant']} | {a['subset_size']} | {lr:g}{mark} | {p['n']} | "
                         f"{_pct(p['val_mean'])} | {_pct(p['mean'])} +- {_pct(p['std'])} |")
    if any(a["calibration"] == "table" for a in agg):
        lines += ["", "logits: *raw* = the paper's evaluation; *calibrated* = validation and test "
                  "on logits minus one offset vector estimated from the teacher-labelled images "
                  "and their cached teacher logits (no teacher call; docs/calibration.md)."]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("variant", "method", "logits", "subset_size", "budget", "teacher_calls", "lr",
               "n_seeds", "seeds", "val_top1_mean_pct", "test_top1_mean_pct", "test_top1_std_pct")


def write_csv(agg: list[dict], path: str) -> None:
    """One line per (variant, subset size), accuracies in percent (empty where undefined)."""
    num = lambda v: "" if v is None or not math.isfinite(v) else f"{100 * v:.4f}"
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for a in agg:
        w.writerow([a["variant"], a["method"], _logits(a), a["subset_size"], a["budget"],
                    a["teacher_calls"], f"{a['lr']:g}", a["n_seeds"],
                    " ".join(map(str, a["seeds"])), num(a["val_mean"]), num(a["mean"]),
                    num(a["std"])])
    write_atomic(path, buf.getvalue())


def write_plot(agg: list[dict], path: str, title: str = "") -> None:
    """Test top-1 against the teacher-call budget per seed, one line per variant (CKD forms
    dashed), +-1 std error bars, the legend outside the axes.

    The x axis is the budget B (teacher-labelled samples per seed) for every variant, so the
    CE-only student (0 teacher calls, same labelled data) is drawn at the budgets it matches.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.6, 4.4))
    variants = list(dict.fromkeys(a["variant"] for a in agg))
    markers = "os^vDP*Xph<>"
    for i, variant in enumerate(variants):
        pts = sorted((a["budget"], a["mean"], a["std"]) for a in agg if a["variant"] == variant)
        x = [p[0] for p in pts]
        y = [100 * p[1] for p in pts]
        s = [0.0 if not math.isfinite(p[2]) else 100 * p[2] for p in pts]
        ax.errorbar(x, y, yerr=s, marker=markers[i % len(markers)], capsize=3, label=variant,
                    linestyle="--" if variant.startswith("ckd") else "-")
    ax.set_xlabel("teacher calls per seed (budget B)")
    ax.set_ylabel("test top-1 at best validation (%)")
    rule = "mean +- std over seeds, LR chosen by mean validation accuracy"
    ax.set_title(f"{title}\n{rule}" if title else rule, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, dpi=120, format="png"))
    plt.close(fig)


def make_report(source: str, out: str, metric: str = "test_top1_at_best_val",
                select_by: str = "best_val_top1") -> dict:
    """Write table.md, table.csv and plot.png under `out`; returns {name: path} and the table."""
    rows = R.read_results(source)
    if not rows:
        raise ValueError(f"no result rows in {source}")
    agg = in_variant_order(R.aggregate(rows, metric=metric, select_by=select_by))
    if not agg:
        raise ValueError(f"no row of {source} has finite {metric} and {select_by}")
    os.makedirs(out, exist_ok=True)
    table = markdown_table(agg, rows, metric, select_by)
    paths = {"table.md": os.path.join(out, "table.md"),
             "table.csv": os.path.join(out, "table.csv"),
             "plot.png": os.path.join(out, "plot.png")}
    write_atomic(paths["table.md"], table)
    write_csv(agg, paths["table.csv"])
    write_plot(agg, paths["plot.png"], title=_meta(rows))
    return {"paths": paths, "table": table, "aggregate": agg}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="sweep directory or results.jsonl")
    ap.add_argument("--out", help="output folder (default: <sweep dir>/report)")
    ap.add_argument("--metric", default="test_top1_at_best_val",
                    help="reported member metric (default: %(default)s)")
    ap.add_argument("--select-by", default="best_val_top1",
                    help="member metric whose mean over seeds picks the LR (default: %(default)s)")
    args = ap.parse_args(argv)
    base = args.source if os.path.isdir(args.source) else os.path.dirname(args.source) or "."
    out = args.out or os.path.join(base, "report")
    rep = make_report(args.source, out, metric=args.metric, select_by=args.select_by)
    print(rep["table"])
    for path in rep["paths"].values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    from ckd_jax.cli import run_command  # a bad input: one line on stderr, exit status 2

    sys.exit(run_command(main))
