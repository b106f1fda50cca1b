"""Tables and a plot from a sweep's results.

  python experiments/report.py results/<name> --out results/<name>/report
  python experiments/report.py runs/a runs/b --out results/<name> --curves ce,kd,ckd_cal

Input: sweep directories (their finished cells' summaries, else results.jsonl) or results.jsonl
files; several sources are one table (a member found in two is an error) and their rows are
also written to `<out>/results.jsonl`. Writes table.md
(printed too: a variants x budgets headline, then one row per variant and budget, then every
learning rate), table.csv and plot.png (test accuracy against teacher calls, one line per
variant with +-1 std error bars). Rule: per (variant, subset size), the learning rate with
the highest mean best-validation top-1 over seeds is chosen; the table reports the mean +- sample
std (ddof = 1) over seeds of the test top-1 at each seed's best-validation point at that rate.

`--curves V1,V2,...` also writes the training-length figure curves.png, curves.csv and curves.md
from the cells' metrics.jsonl (runs with `eval_test_every = N` log a test figure every N
pseudo-epochs): test top-1 against pseudo-epoch for those variants at their chosen learning
rate, one thin line per seed, the seeds' mean in bold, each seed's selected (best-validation)
epoch marked. The curves describe training; no choice is made from them. When the curves span
several subset sizes, curves_S<S>.png holds each one alone.

Paired differences (paired.md, paired.csv, printed): per subset size S and variant pair A,B
(`--paired A,B`, repeatable; default the DEFAULT_PAIRS present), the per-seed differences A - B
of test top-1 at each variant's chosen rate (a seed fixes the subset, the split and the logit
table, so both saw the same images), for the selected and for the last weights: mean, std, n
and a 95% interval mean +- t x std / sqrt(n), Student's t over seeds with n-1 degrees of freedom.
Seeds only one variant has are named as excluded.

Several subset sizes: budget.png and budget.csv, test top-1 against teacher calls B (log axis),
one line per variant, +-1 std over seeds, selected and last weights side by side.

`--publish DIR` also copies each finished cell's config.json, cell.json, summary.json and
metrics.jsonl (no checkpoints, tables or logs) to DIR/<sweep folder>/<cell>/, so that a results
folder is rebuilt by one command (then `report.py DIR/* --out ...` reads the copies).
"""

from __future__ import annotations

import argparse
import csv
import glob
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


def _chosen_curves(curves: list[dict], agg: list[dict], variants: list[str]) -> list[dict]:
    """The curves of `variants` at each (variant, subset size)'s chosen learning rate, in the
    order of `variants`; a variant with no logged test curve is an error naming the fix."""
    chosen = {(a["variant"], a["subset_size"]): a["lr"] for a in agg}
    out = []
    for variant in variants:
        mine = [c for c in curves if c["variant"] == variant and c["points"]
                and chosen.get((variant, c["subset_size"])) == float(c["lr"])]
        if not mine:
            known = sorted({c["variant"] for c in curves if c["points"]})
            raise ValueError(f"--curves: variant {variant!r} has no finished cell with a logged "
                             f"test curve (run it with --set eval_test_every=10); variants with "
                             f"curves: {known or 'none'}")
        out.extend(sorted(mine, key=lambda c: (c["subset_size"], c["seed"])))
    return out


def _member_key(variant: str, subset_size, seed, lr) -> tuple:
    """How a curve finds its results row: (variant, subset size, seed, lr as float)."""
    return variant, subset_size, seed, float(lr)


def _mean_curve(curves: list[dict]) -> list[tuple[int, float]]:
    """(pseudo-epoch, mean test top-1) over `curves`, at the epochs every one of them logged."""
    per_seed = [{e: acc for e, acc, _ in c["points"]} for c in curves]
    common = sorted(set.intersection(*(set(p) for p in per_seed)))
    return [(e, sum(p[e] for p in per_seed) / len(per_seed)) for e in common]


def curve_summary(curves: list[dict], rows: list[dict]) -> list[dict]:
    """Per (variant, subset size) of `curves`: seeds, mean pseudo-epochs run, mean selected
    epoch, the test figures of the selected and of the last weights (means over seeds, from
    `rows`), and the peak of the seeds' mean test curve over the epochs every seed logged
    (epoch and value), with the last such epoch's mean. Descriptive only: nothing is chosen
    from it."""
    by_member = {_member_key(r["variant"], r["subset_size"], r["seed"], r["lr"]): r
                 for r in rows}
    out = []
    for key in dict.fromkeys((c["variant"], c["subset_size"]) for c in curves):
        mine = [c for c in curves if (c["variant"], c["subset_size"]) == key]
        mean_curve = _mean_curve(mine)
        peak = max(mean_curve, key=lambda t: t[1]) if mean_curve else (None, math.nan)
        members = [by_member.get(_member_key(c["variant"], c["subset_size"], c["seed"], c["lr"]))
                   for c in mine]
        selected = [m["test_top1_at_best_val"] for m in members if m is not None]
        last = [m["last_test_top1"] for m in members
                if m is not None and m.get("last_test_top1") is not None]
        out.append({"variant": key[0], "subset_size": key[1], "lr": float(mine[0]["lr"]),
                    "seeds": [c["seed"] for c in mine],
                    "epochs_run": sum(c["epochs_run"] for c in mine) / len(mine),
                    "best_epoch": sum(c["best_epoch"] for c in mine) / len(mine),
                    "test_at_selected": (sum(selected) / len(selected) if selected
                                         else math.nan),
                    "test_at_last": sum(last) / len(last) if last else math.nan,
                    "peak_epoch": peak[0], "peak_test": peak[1],
                    "last_common_epoch": mean_curve[-1][0] if mean_curve else None,
                    "last_common_test": mean_curve[-1][1] if mean_curve else math.nan,
                    "test_images": sorted({str(c["test_images"]) for c in mine
                                           if c["test_images"] is not None})})
    return out


def curves_markdown(summary: list[dict]) -> str:
    lines = ["**Training length.** Test top-1 (%) logged during training, at each variant's "
             "chosen learning rate; means over seeds. *Selected*: the test figure of each seed's "
             "best-validation weights (the table's number); *last*: of the weights the run "
             "ended with. *Peak*: the highest point of the seeds' mean test curve over the "
             "pseudo-epochs every seed logged; it is a description, no choice is made from it.",
             "",
             "| variant | S | lr | seeds | pseudo-epochs run (mean) | selected epoch (mean) | "
             "test at selected | test at last | peak of mean curve (epoch) | "
             "mean curve at last common epoch |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    subsets = [f"{s['variant']} S={s['subset_size']}: {'/'.join(s['test_images'])}"
               for s in summary if s.get("test_images")]
    if subsets:  # the curve's points (not selected/last) on a fixed subset of the test split
        lines[1:1] = ["", "Curve points measured on a fixed random subset of the test images "
                          "(`eval_test_curve_images`; *selected* and *last* use the whole "
                          "split): " + "; ".join(subsets) + "."]
    for s in summary:
        lines.append(f"| {s['variant']} | {s['subset_size']} | {s['lr']:g} | "
                     f"{','.join(map(str, s['seeds']))} | {s['epochs_run']:.0f} | "
                     f"{s['best_epoch']:.0f} | {_pct(s['test_at_selected'])} | "
                     f"{_pct(s['test_at_last'])} | "
                     f"{_pct(s['peak_test'])} ({s['peak_epoch']}) | "
                     f"{_pct(s['last_common_test'])} ({s['last_common_epoch']}) |")
    return "\n".join(lines) + "\n"


def write_curves_csv(curves: list[dict], path: str) -> None:
    """One line per logged test point: variant, subset size, seed, lr, pseudo-epoch, test top-1
    (%), the learning rate at that epoch, the logits it was measured on (raw/calibrated) and the
    seed's selected (best-validation) epoch."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(("variant", "subset_size", "seed", "lr", "epoch", "test_top1_pct", "lr_now",
                "logits", "selected_epoch"))
    for c in curves:
        for epoch, acc, lr_now in c["points"]:
            w.writerow([c["variant"], c["subset_size"], c["seed"], f"{float(c['lr']):g}", epoch,
                        f"{100 * acc:.4f}", f"{lr_now:g}", c["selected_on"], c["best_epoch"]])
    write_atomic(path, buf.getvalue())


def write_curves_plot(curves: list[dict], rows: list[dict], path: str, title: str = "") -> None:
    """Test top-1 against pseudo-epoch: per variant one colour, a thin line per seed, the
    seeds' mean (over the epochs all of them logged) in bold, and a marker at each seed's
    selected epoch at its selected test figure. One panel per subset size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    at_best = {_member_key(r["variant"], r["subset_size"], r["seed"], r["lr"]):
               r["test_top1_at_best_val"] for r in rows}
    subsets = sorted({c["subset_size"] for c in curves})
    fig, axes = plt.subplots(1, len(subsets), figsize=(7.6 * len(subsets), 4.6), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    variants = list(dict.fromkeys(c["variant"] for c in curves))
    for ax, subset in zip(axes[0], subsets):
        for i, variant in enumerate(variants):
            colour = colours[i % len(colours)]
            mine = [c for c in curves if c["variant"] == variant and c["subset_size"] == subset]
            if not mine:
                continue
            for c in mine:
                ax.plot([p[0] for p in c["points"]], [100 * p[1] for p in c["points"]],
                        color=colour, alpha=0.35, linewidth=0.8)
                best = at_best.get(_member_key(variant, subset, c["seed"], c["lr"]))
                if best is not None and c["best_epoch"] is not None:
                    ax.plot([c["best_epoch"]], [100 * best], marker="*", markersize=9,
                            color=colour, markeredgecolor="black", markeredgewidth=0.5)
            mean_curve = _mean_curve(mine)
            ax.plot([e for e, _ in mean_curve], [100 * acc for _, acc in mean_curve],
                    color=colour, linewidth=2.2,
                    linestyle="--" if variant.startswith("ckd") else "-",
                    label=f"{variant} (lr {float(mine[0]['lr']):g}, {len(mine)} seeds)")
        ax.set_xlabel("pseudo-epoch")
        ax.set_ylabel("test top-1 (%)")
        ax.set_title(f"S = {subset}; thin: seeds, bold: mean, star: selected epoch", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, dpi=120, format="png"))
    plt.close(fig)


# The comparisons the budget study (issue 27) reads: does a CKD form beat KD, and does it beat
# the matched mixup baseline (KD at T = 4 on mixed images)?
DEFAULT_PAIRS = (("ckd_cal", "kd"), ("ckd", "kd"), ("ckd_cal", "mixup_kd"),
                 ("ckd_anchor", "mixup_kd"), ("ckd_anchor", "ckd_cal"))


def parse_pairs(texts: list[str]) -> list[tuple[str, str]]:
    """`--paired` values ("A,B", several joined by ";" or given again) -> [(A, B), ...]."""
    pairs = []
    for text in texts:
        for item in (t.strip() for t in text.split(";")):
            names = [n.strip() for n in item.split(",")]
            if len(names) != 2 or not all(names) or names[0] == names[1]:
                raise ValueError(f"--paired {item!r} must name two different variants as A,B "
                                 f"(the difference A - B), e.g. ckd_cal,kd")
            pairs.append((names[0], names[1]))
    return pairs


def _pp(v: float) -> str:
    """A difference of two accuracies in percentage points, signed."""
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:+.2f}"


def _excluded(d: dict) -> str:
    parts = [f"{name} only: {','.join(map(str, seeds))}"
             for name, seeds in ((d["a"], d["only_a"]), (d["b"], d["only_b"])) if seeds]
    return "; ".join(parts) or "-"


def _resolved(d: dict) -> str:
    if not (math.isfinite(d["low"]) and math.isfinite(d["high"])):
        return "n/a"
    return "yes" if d["low"] > 0 or d["high"] < 0 else "no"


def paired_markdown(diffs: list[dict], not_compared: list[tuple[str, str]] = ()) -> str:
    """The paired differences as a table, per subset size S, with how they were computed;
    `not_compared`: default pairs left out because a variant has no rows (named below it)."""
    level = diffs[0]["level"] if diffs else 0.95
    pct = f"{100 * level:g}%"
    lines = [f"**Paired differences** A - B of test top-1 (percentage points), seed by seed: a "
             f"seed fixes the subset, the split and the logit table, so both variants saw the "
             f"same images. Each variant at its chosen learning rate (the table's). Mean, sample "
             f"std (ddof=1) and n over the seeds both variants have; {pct} interval = mean +- "
             f"t x std / sqrt(n), t the two-sided {pct} quantile of Student's t with n-1 "
             f"degrees of freedom (a t interval over seeds). *selected*: each seed's "
             f"best-validation weights (the table's figure); *last*: the weights the run ended "
             f"with, a view at the same rates. *resolved*: the interval excludes 0. Seeds only "
             f"one variant has are listed as excluded.", "",
             f"| S | B | A - B | view | n | seeds | per-seed differences | mean | std | "
             f"{pct} interval (t) | resolved | excluded seeds |",
             "|---:|---:|---|---|---:|---|---|---:|---:|---|---|---|"]
    for d in diffs:
        lines.append(f"| {d['subset_size']} | {d['budget']} | {d['a']} - {d['b']} | {d['view']} "
                     f"| {d['n']} | {','.join(map(str, d['seeds'])) or '-'} | "
                     f"{' '.join(_pp(v) for v in d['diffs']) or '-'} | {_pp(d['mean'])} | "
                     f"{_pct(d['std'])} | [{_pp(d['low'])}, {_pp(d['high'])}] | "
                     f"{_resolved(d)} | {_excluded(d)} |")
    if len({d["subset_size"] for d in diffs}) > 1:
        lines += ["", *paired_overview(diffs)]
    if not_compared:
        lines += ["", "Not compared (a variant has no rows): "
                  + ", ".join(f"{a} - {b}" for a, b in not_compared) + "."]
    return "\n".join(lines) + "\n"


def paired_overview(diffs: list[dict], view: str = "selected") -> list[str]:
    """Markdown lines: one row per pair, one column per subset size, each cell the `view`'s
    mean [interval] (n seeds), in bold where the interval excludes 0; "-" where the pair has
    no seeds at that size. The per-budget answer at a glance."""
    subsets = sorted({d["subset_size"] for d in diffs})
    budgets = {d["subset_size"]: d["budget"] for d in diffs}
    cells: dict[tuple[str, str], dict] = {}
    for d in diffs:
        if d["view"] == view:
            cells.setdefault((d["a"], d["b"]), {})[d["subset_size"]] = d

    def cell(d):
        if d is None or d["n"] == 0:
            return "-"
        text = f"{_pp(d['mean'])} [{_pp(d['low'])}, {_pp(d['high'])}] (n={d['n']})"
        return f"**{text}**" if _resolved(d) == "yes" else text

    lines = [f"**At a glance** ({view} weights): mean A - B in points, its interval, and the "
             f"number of paired seeds; bold where the interval excludes 0.", "",
             "| A - B | " + " | ".join(f"S={s} (B={budgets[s]})" for s in subsets) + " |",
             "|---|" + "---:|" * len(subsets)]
    for (a, b), by_subset in cells.items():
        lines.append(f"| {a} - {b} | "
                     + " | ".join(cell(by_subset.get(s)) for s in subsets) + " |")
    return lines


PAIRED_COLUMNS = ("a", "b", "subset_size", "budget", "view", "field", "lr_a", "lr_b", "n",
                  "seeds", "diffs_pp", "mean_pp", "std_pp", "level", "t", "low_pp", "high_pp",
                  "resolved", "excluded_a_only", "excluded_b_only")


def write_paired_csv(diffs: list[dict], path: str) -> None:
    """One line per (S, pair, view); differences in percentage points (empty where undefined),
    the t multiplier used, and the seeds left out of the pairing."""
    num = lambda v: "" if v is None or not math.isfinite(v) else f"{100 * v:.4f}"
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(PAIRED_COLUMNS)
    for d in diffs:
        w.writerow([d["a"], d["b"], d["subset_size"], d["budget"], d["view"], d["field"],
                    f"{d['lr_a']:g}", f"{d['lr_b']:g}", d["n"], " ".join(map(str, d["seeds"])),
                    " ".join(f"{100 * v:.4f}" for v in d["diffs"]), num(d["mean"]),
                    num(d["std"]), f"{d['level']:g}",
                    "" if not math.isfinite(d["t"]) else f"{d['t']:.6f}", num(d["low"]),
                    num(d["high"]), _resolved(d), " ".join(map(str, d["only_a"])),
                    " ".join(map(str, d["only_b"]))])
    write_atomic(path, buf.getvalue())


def _checked_pairs(pairs: list[tuple[str, str]] | None, agg: list[dict]) -> list[tuple]:
    """The pairs to compare: the given ones (a variant absent from the rows is an error), else
    the DEFAULT_PAIRS whose two variants both have rows."""
    known = list(dict.fromkeys(a["variant"] for a in agg))
    if pairs is None:
        return [p for p in DEFAULT_PAIRS if p[0] in known and p[1] in known]
    for a, b in pairs:
        missing = [v for v in (a, b) if v not in known]
        if missing:
            raise ValueError(f"--paired {a},{b}: no results for {missing}; variants in the "
                             f"rows: {known}")
    return list(pairs)


def budget_view(agg: list[dict], rows: list[dict], select_by: str = "best_val_top1"
                ) -> list[dict]:
    """Per (variant, subset size) of `agg`: the table's figure (selected weights) and the
    last weights' test top-1 at the same chosen learning rate, mean and std over seeds, with
    the budget B read from the rows."""
    out = []
    for a in agg:
        last = list(R.seed_values(rows, a["variant"], a["subset_size"], a["lr"],
                                  "last_test_top1", select_by).values())
        last_mean, last_std = R._mean_std(last)
        out.append({"variant": a["variant"], "logits": _logits(a),
                    "subset_size": a["subset_size"], "budget": a["budget"], "lr": a["lr"],
                    "n_seeds": a["n_seeds"], "seeds": a["seeds"], "mean": a["mean"],
                    "std": a["std"], "last_n": len(last), "last_mean": last_mean,
                    "last_std": last_std})
    return out


BUDGET_COLUMNS = ("variant", "logits", "subset_size", "budget", "lr", "n_seeds", "seeds",
                  "test_top1_mean_pct", "test_top1_std_pct", "last_n_seeds",
                  "last_test_top1_mean_pct", "last_test_top1_std_pct")


def write_budget_csv(view: list[dict], path: str) -> None:
    """budget.png's numbers: one line per (variant, subset size), accuracies in percent."""
    num = lambda v: "" if v is None or not math.isfinite(v) else f"{100 * v:.4f}"
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(BUDGET_COLUMNS)
    for v in view:
        w.writerow([v["variant"], v["logits"], v["subset_size"], v["budget"], f"{v['lr']:g}",
                    v["n_seeds"], " ".join(map(str, v["seeds"])), num(v["mean"]),
                    num(v["std"]), v["last_n"], num(v["last_mean"]), num(v["last_std"])])
    write_atomic(path, buf.getvalue())


def write_budget_plot(view: list[dict], path: str, title: str = "") -> None:
    """Test top-1 against teacher calls B (log axis, the paper's x axis), one line per variant
    with +-1 std error bars over seeds: the selected weights (the table) on the left, the last
    weights on the right. Variants are shifted a little along x so that their bars do not hide
    each other; the ticks are the budgets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted({v["budget"] for v in view})
    variants = list(dict.fromkeys(v["variant"] for v in view))
    fig, axes = plt.subplots(1, 2, figsize=(12.4, 4.6), sharey=True)
    markers = "os^vDP*Xph<>"
    for ax, (mean_key, std_key, name) in zip(axes, (
            ("mean", "std", "selected weights (best validation; the table)"),
            ("last_mean", "last_std", "last weights (a view at the same rates)"))):
        for i, variant in enumerate(variants):
            pts = sorted((v["budget"], v[mean_key], v[std_key]) for v in view
                         if v["variant"] == variant and math.isfinite(v[mean_key]))
            if not pts:
                continue
            shift = 1.0 + 0.012 * (i - (len(variants) - 1) / 2)
            ax.errorbar([p[0] * shift for p in pts], [100 * p[1] for p in pts],
                        yerr=[0.0 if not math.isfinite(p[2]) else 100 * p[2] for p in pts],
                        marker=markers[i % len(markers)], capsize=3, label=variant,
                        linestyle="--" if variant.startswith("ckd") else "-")
        ax.set_xscale("log")
        ax.set_xticks(budgets)
        ax.set_xticklabels([str(b) for b in budgets])
        ax.minorticks_off()
        ax.set_xlabel("teacher calls per seed (budget B = 0.8 S)")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test top-1 (%)")
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    rule = "mean +- std over seeds, LR chosen per (variant, S) by mean validation accuracy"
    fig.suptitle(f"{title}\n{rule}" if title else rule, fontsize=9)
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, dpi=120, format="png"))
    plt.close(fig)


# What a committed results folder keeps of each run: enough to rebuild every table and figure
# (no checkpoints, logit tables or logs).
PUBLISHED_FILES = ("config.json", R.CELL_FILE, "summary.json", "metrics.jsonl")


def publish_plan(sources: list[str], dest: str) -> list[tuple[str, str]]:
    """(from, to) of every file `publish` copies: each finished cell of each sweep directory,
    `<dest>/<sweep folder name>/<cell>/<file>` for the PUBLISHED_FILES it has. Errors, before
    anything is copied, on a source that is not a sweep directory, two sources with the same
    folder name, and a destination file that exists with other contents."""
    import filecmp

    not_dirs = [s for s in sources if not os.path.isdir(s)]
    if not_dirs:
        raise ValueError(f"--publish copies run folders, so every source must be a sweep "
                         f"directory, not {not_dirs}")
    names = [os.path.basename(os.path.normpath(s)) for s in sources]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"--publish: several sources are named {twice}; they would land in "
                         f"the same folder of {dest}")
    plan = []
    for source, name in zip(sources, names):
        for cell_file in sorted(glob.glob(os.path.join(source, "*", R.CELL_FILE))):
            cell_dir = os.path.dirname(cell_file)
            if not R.cell_finished(cell_dir):
                continue
            for f in PUBLISHED_FILES:
                src = os.path.join(cell_dir, f)
                if os.path.exists(src):
                    plan.append((src, os.path.join(dest, name, os.path.basename(cell_dir), f)))
    if not plan:
        raise ValueError(f"--publish: no finished cell in {sources}")
    differ = [to for src, to in plan
              if os.path.exists(to) and not filecmp.cmp(src, to, shallow=False)]
    if differ:
        raise ValueError(f"--publish: {len(differ)} file(s) in {dest} differ from the runs' "
                         f"(first: {differ[0]}); nothing copied. Publish into a new folder or "
                         f"remove those files if the runs are the newer truth")
    return plan


def publish(sources: list[str], dest: str) -> list[str]:
    """Copy the finished cells' PUBLISHED_FILES of the sweep directories `sources` into
    `dest` (`publish_plan`); files already there with the same bytes are left alone, so a
    second call changes nothing. Returns the paths written."""
    written = []
    for src, to in publish_plan(sources, dest):
        if os.path.exists(to):
            continue
        with open(src, "rb") as f:
            write_atomic(to, f.read())
        written.append(to)
    return written


def make_report(source: str | list[str], out: str, metric: str = "test_top1_at_best_val",
                select_by: str = "best_val_top1", curves: list[str] | None = None,
                paired: list[tuple[str, str]] | None = None,
                publish_to: str | None = None) -> dict:
    """Write table.md, table.csv and plot.png under `out` (and curves.png, curves.csv,
    curves.md for the `curves` variants); returns {name: path}, the table and the aggregate.
    `source`: one sweep directory or results file, or a list of them (one table).

    Also paired.md/paired.csv for the `paired` (A, B) variant pairs (None: the DEFAULT_PAIRS
    present in the rows; []: none), budget.png/budget.csv when the rows hold several subset
    sizes, one curves_S<S>.png per subset size beside curves.png when the curves span several,
    and with `publish_to` the run files the committed results need copied there (`publish`).
    Every check is made before anything is written."""
    sources = [source] if isinstance(source, str) else list(source)
    if curves:
        not_dirs = [s for s in sources if not os.path.isdir(s)]
        if not_dirs:
            raise ValueError(f"--curves reads the cells' metrics.jsonl, so every source must be "
                             f"a sweep directory, not {not_dirs}")
    rows = R.read_results_union(sources)
    named = " ".join(sources)
    if not rows:
        raise ValueError(f"no result rows in {named}")
    agg = in_variant_order(R.aggregate(rows, metric=metric, select_by=select_by))
    if not agg:
        raise ValueError(f"no row of {named} has finite {metric} and {select_by}")
    chosen_curves = None
    if curves:  # checked before anything is written
        chosen_curves = _chosen_curves([c for s in sources for c in R.read_test_curves(s)],
                                       agg, curves)
    pairs = _checked_pairs(paired, agg)
    if publish_to is not None:
        publish_plan(sources, publish_to)
    os.makedirs(out, exist_ok=True)
    table = markdown_table(agg, rows, metric, select_by)
    paths = {"table.md": os.path.join(out, "table.md"),
             "table.csv": os.path.join(out, "table.csv"),
             "plot.png": os.path.join(out, "plot.png")}
    write_atomic(paths["table.md"], table)
    write_csv(agg, paths["table.csv"])
    write_plot(agg, paths["plot.png"], title=_meta(rows))
    if len(sources) > 1:  # the table's exact input, in one file
        paths["results.jsonl"] = os.path.join(out, R.RESULTS_FILE)
        R.write_jsonl(rows, paths["results.jsonl"])
    result = {"paths": paths, "table": table, "aggregate": agg}
    if chosen_curves is not None:
        for name in ("curves.png", "curves.csv", "curves.md"):
            paths[name] = os.path.join(out, name)
        summary = curve_summary(chosen_curves, rows)
        result["curves"] = curves_markdown(summary)
        result["curve_summary"] = summary
        write_curves_plot(chosen_curves, rows, paths["curves.png"], title=_meta(rows))
        write_curves_csv(chosen_curves, paths["curves.csv"])
        write_atomic(paths["curves.md"], result["curves"])
        _write_curves_per_budget(chosen_curves, rows, out, paths)
    if pairs:
        diffs = R.paired_differences(rows, pairs, metric=metric, select_by=select_by)
        skipped = [p for p in DEFAULT_PAIRS if p not in pairs] if paired is None else []
        result["paired"] = paired_markdown(diffs, skipped)
        result["paired_rows"] = diffs
        paths["paired.md"] = os.path.join(out, "paired.md")
        paths["paired.csv"] = os.path.join(out, "paired.csv")
        write_atomic(paths["paired.md"], result["paired"])
        write_paired_csv(diffs, paths["paired.csv"])
    if len({a["subset_size"] for a in agg}) > 1:
        view = budget_view(agg, rows, select_by=select_by)
        result["budget_view"] = view
        paths["budget.png"] = os.path.join(out, "budget.png")
        paths["budget.csv"] = os.path.join(out, "budget.csv")
        write_budget_plot(view, paths["budget.png"], title=_meta(rows))
        write_budget_csv(view, paths["budget.csv"])
    if publish_to is not None:
        result["published"] = publish(sources, publish_to)
    return result


def _write_curves_per_budget(chosen_curves: list[dict], rows: list[dict], out: str,
                             paths: dict) -> None:
    """One training-length figure per subset size (curves_S<S>.png) when the curves span
    several; curves.png keeps them all, one panel each."""
    subsets = sorted({c["subset_size"] for c in chosen_curves})
    if len(subsets) < 2:
        return
    for subset in subsets:
        name = f"curves_S{subset}.png"
        paths[name] = os.path.join(out, name)
        write_curves_plot([c for c in chosen_curves if c["subset_size"] == subset], rows,
                          paths[name], title=_meta(rows))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", nargs="+", metavar="source",
                    help="sweep directory or results.jsonl; several make one table")
    ap.add_argument("--out", help="output folder (default: <sweep dir>/report; required with "
                                  "several sources)")
    ap.add_argument("--metric", default="test_top1_at_best_val",
                    help="reported member metric (default: %(default)s)")
    ap.add_argument("--select-by", default="best_val_top1",
                    help="member metric whose mean over seeds picks the LR (default: %(default)s)")
    ap.add_argument("--curves", help="comma-separated variants whose logged test curves to plot "
                                     "(curves.png/.csv/.md; sweep directories only)")
    ap.add_argument("--paired", action="append", metavar="A,B",
                    help="variant pair whose per-seed differences A - B to report with a 95%% "
                         "t interval (paired.md/.csv; repeatable, or A,B;C,D; default: "
                         + "; ".join(f"{a},{b}" for a, b in DEFAULT_PAIRS)
                         + ", those present; 'none' for none)")
    ap.add_argument("--publish", metavar="DIR",
                    help="also copy each finished cell's " + ", ".join(PUBLISHED_FILES)
                         + " to DIR/<sweep folder>/<cell>/ (sweep directories only; a differing "
                           "file already there is an error, identical ones are kept)")
    args = ap.parse_args(argv)
    if len(args.sources) > 1 and not args.out:
        ap.error(f"--out is required with several sources ({len(args.sources)} given)")
    source = args.sources[0]
    base = source if os.path.isdir(source) else os.path.dirname(source) or "."
    out = args.out or os.path.join(base, "report")
    curves = [v for v in (args.curves or "").split(",") if v] or None
    paired = None
    if args.paired is not None:
        paired = [] if args.paired == ["none"] else parse_pairs(args.paired)
    rep = make_report(args.sources, out, metric=args.metric, select_by=args.select_by,
                      curves=curves, paired=paired, publish_to=args.publish)
    print(rep["table"])
    for section in ("curves", "paired"):
        if section in rep:
            print(rep[section])
    if "published" in rep:
        print(f"published {len(rep['published'])} new file(s) to {args.publish}")
    for path in rep["paths"].values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    from ckd_jax.cli import run_command  # a bad input: one line on stderr, exit status 2

    sys.exit(run_command(main))
