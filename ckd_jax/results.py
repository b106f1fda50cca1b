"""Results of sweeps: one row per (cell, population member), and their aggregation into tables.

A *sweep* (`ckd_jax.sweep`, `experiments/sweep.py`) runs one population (seeds x learning
rates) per *cell* = (variant, subset size). Every cell directory holds the engine's
`summary.json` and a small `cell.json` naming the variant; `collect_rows(sweep_dir)` flattens
all finished cells into rows and `write_jsonl` stores them as `<sweep_dir>/results.jsonl`, the
one file `report.py` reads.

Row fields (one JSON object per line): variant, cell, method, dataset, teacher, student,
schedule, subset_size, budget (teacher-labelled samples per seed, B = 0.8 S), seed, lr,
teacher_calls (per seed; 0 for the CE-only student), test_top1_at_best_val,
test_top5_at_best_val, best_val_top1, best_epoch, last_test_top1, last_test_top5,
last_val_top1, plateaus, epochs_run, train_seconds (of the whole cell), overrides (the variant's
config overrides), calibration ("none": accuracies on raw logits as in the paper; "table":
calibrated logits, docs/calibration.md), and both evaluations whichever chose the weights
(test_top1_at_best_val_raw / _calibrated, logit_offset_norm). Accuracies are fractions in
[0, 1] (None where undefined). A calibrated run with `also_select_raw` (two best slots) adds one
more row per member, variant `<variant>@raw`: the same training selected and tested on raw
logits (the paper's `ckd` from a `ckd_cal` run).

Aggregation rule (`aggregate`): for each (variant, subset_size), the learning rate is the one
with the highest *mean validation* top-1 over seeds (`best_val_top1`); the reported number is the
mean +- sample standard deviation (ddof = 1) over seeds of `test_top1_at_best_val` at that
learning rate. Test accuracy never takes part in the choice.
"""

from __future__ import annotations

import glob
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable

from ckd_jax import files

CELL_FILE = "cell.json"
RESULTS_FILE = "results.jsonl"
# The rows of one shard of a sharded sweep (`sweep.py --shard I/N`): each shard writes its own.
SHARD_RESULTS_FILE = "results.shard-{i}-of-{n}.jsonl"

# Summary keys copied onto every member row.
_CELL_KEYS = ("method", "dataset", "teacher", "student", "schedule", "subset_size", "budget",
              "train_seconds", "calibration")

SELECTION_RULE = ("learning rate chosen per (method, budget) by the highest mean best-validation "
                  "top-1 over seeds; test accuracy is not used for the choice")


def cell_name(variant: str, subset_size: int | None = None, budget: int | None = None) -> str:
    """Directory name of a cell: `<variant>_S<subset>` (or `<variant>_B<budget>`)."""
    if (subset_size is None) == (budget is None):
        raise ValueError(f"give exactly one of subset_size={subset_size!r}, budget={budget!r}")
    return f"{variant}_S{subset_size}" if subset_size is not None else f"{variant}_B{budget}"


def rows_from_summary(summary: dict, variant: str, cell: str,
                      overrides: dict | None = None) -> list[dict]:
    """One row per population member of a `run_distillation` summary (see module docstring)."""
    base = {"variant": variant, "cell": cell}
    base.update({k: summary.get(k) for k in _CELL_KEYS})
    base["overrides"] = dict(overrides or {})
    rows, raw_rows = [], []
    for member in summary["members"]:
        row = dict(base)
        row.update(member)
        second = row.pop("raw_selection", None)
        rows.append(row)
        if second is not None:
            raw_rows.append(_raw_selection_row(row, second, variant))
    return rows + raw_rows


RAW_SELECTION_SUFFIX = "@raw"


def _raw_selection_row(row: dict, second: dict, variant: str) -> dict:
    """The row of a member's second best slot (`also_select_raw`): the same training, selected
    and tested on raw logits, i.e. what the variant's uncalibrated twin (ckd_cal -> ckd) would
    report. Its variant is `<variant>@raw`; fields the slot does not measure are None."""
    out = dict(row)
    out.update(second)
    out.update({"variant": variant + RAW_SELECTION_SUFFIX, "calibration": "none",
                "selected_on": "raw", "test_top1_at_best_val_raw": second["test_top1_at_best_val"],
                "last_test_top1_raw": second["last_test_top1"],
                "logit_offset": None, "logit_offset_norm": None})
    return out


# The safe next step for a damaged cell file: the cell's checkpoints and logit tables are
# intact, so the sweep retrains or re-tests it without any teacher call.
_CELL_NEXT_STEP = ("delete it and rerun the sweep command: the cell resumes from its checkpoint "
                   "(no teacher call: its logit tables are kept)")


def read_summary(cell_dir: str) -> dict:
    """A run's summary.json; `DamagedFile` (one line, with the next step) when damaged."""
    summary = files.read_json(os.path.join(cell_dir, "summary.json"), what="run summary",
                              next_step=_CELL_NEXT_STEP)
    if not isinstance(summary.get("members"), list):
        raise files.DamagedFile(f"run summary {os.path.join(cell_dir, 'summary.json')} is "
                                f"damaged: it has no members list; {_CELL_NEXT_STEP}")
    return summary


def read_cell(cell_dir: str) -> tuple[dict, dict] | None:
    """(cell.json, summary.json) of a cell directory, or None if either is missing; a damaged
    one is `DamagedFile` (one line naming it and the next step)."""
    cell_path = os.path.join(cell_dir, CELL_FILE)
    summary_path = os.path.join(cell_dir, "summary.json")
    if not (os.path.exists(cell_path) and os.path.exists(summary_path)):
        return None
    cell = files.read_json(cell_path, what="sweep cell file", next_step=_CELL_NEXT_STEP)
    if not isinstance(cell.get("variant"), str):
        raise files.DamagedFile(f"sweep cell file {cell_path} is damaged: no variant name; "
                                f"{_CELL_NEXT_STEP}")
    return cell, read_summary(cell_dir)


def cell_finished(cell_dir: str) -> bool:
    """True when the cell's summary.json exists and says `finished: true`."""
    path = os.path.join(cell_dir, "summary.json")
    if not os.path.exists(path):
        return False
    return bool(read_summary(cell_dir).get("finished", False))


def collect_rows(sweep_dir: str, finished_only: bool = True,
                 names: Iterable[str] | None = None) -> list[dict]:
    """Member rows of every cell under `sweep_dir` (cells sorted by directory name); only the
    cells whose directory names are in `names` when given."""
    names = None if names is None else set(names)
    rows = []
    for cell_path in sorted(glob.glob(os.path.join(sweep_dir, "*", CELL_FILE))):
        cell_dir = os.path.dirname(cell_path)
        if names is not None and os.path.basename(cell_dir) not in names:
            continue
        got = read_cell(cell_dir)
        if got is None:
            continue
        cell, summary = got
        if finished_only and not summary.get("finished", False):
            continue
        rows.extend(rows_from_summary(summary, cell["variant"], os.path.basename(cell_dir),
                                      cell.get("overrides")))
    return rows


def variant_of_config(config: dict) -> str:
    """The name a `distill.py` run's config.json answers to: the most specific
    `methods.VARIANTS` entry whose every override the config holds, else its method."""
    from ckd_jax.train.methods import VARIANTS

    best, best_size = config["method"], 0
    for name, ov in VARIANTS.items():  # on a tie the first entry wins (ckd before ckd_k2)
        if len(ov) > best_size and all(config.get(k) == v for k, v in ov.items()):
            best, best_size = name, len(ov)
    return best


def single_run_rows(run_dir: str) -> list[dict]:
    """Member rows of one `distill.py` run folder (config.json + summary.json, no cell.json):
    its variant from the config (`variant_of_config`), its folder name as the cell."""
    config = files.read_json(os.path.join(run_dir, "config.json"), what="run config",
                             next_step="rerun the distill.py command that made it")
    summary = read_summary(run_dir)
    return rows_from_summary(summary, variant_of_config(config),
                             os.path.basename(os.path.normpath(run_dir)))


def write_jsonl(rows: Iterable[dict], path: str) -> None:
    """Write rows as JSON lines, atomically (a reader never sees half a file)."""
    files.write_atomic(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def read_results(path: str) -> list[dict]:
    """Rows from a results.jsonl file, or from a sweep directory: the union of all its finished
    cells' summaries (whichever shards ran them), else its results.jsonl, else the union of its
    shards' results files (`SHARD_RESULTS_FILE`)."""
    if os.path.isdir(path):
        if (os.path.exists(os.path.join(path, "summary.json"))
                and not os.path.exists(os.path.join(path, CELL_FILE))):
            return single_run_rows(path)
        rows = collect_rows(path)
        if rows:
            return rows
        file = os.path.join(path, RESULTS_FILE)
        shard_files = sorted(glob.glob(os.path.join(
            path, SHARD_RESULTS_FILE.format(i="*", n="*"))))
        if not os.path.exists(file) and shard_files:
            return [row for f in shard_files for row in read_results(f)]
        if not os.path.exists(file):
            raise FileNotFoundError(f"{path} holds neither finished cells (*/{CELL_FILE} + "
                                    f"summary.json) nor {RESULTS_FILE} nor shard results "
                                    f"({SHARD_RESULTS_FILE.format(i='I', n='N')})")
        path = file
    if not os.path.exists(path):
        raise FileNotFoundError(f"results file {path} does not exist")
    next_step = ("rewrite it from the cells' summaries by rerunning the sweep command (finished "
                 "cells are skipped, no teacher call), or pass the sweep directory instead")
    rows = files.read_jsonl(path, what="results file", next_step=next_step)
    with open(path, "rb") as f:  # the line of each row (read_jsonl skips blank lines only)
        lines = [n for n, line in enumerate(f.read().split(b"\n"), 1) if line.strip()]
    for n, row in zip(lines, rows):
        bad = _bad_figure(row)
        if bad is not None:
            raise files.DamagedFile(f"results file {path} is damaged: line {n}: {bad}; "
                                    f"{next_step}")
    return rows


# Fields of a results row that are numbers (or None where not measured): a figure stored as a
# string ("0.9") would otherwise drop out of the mean without a word.
_NUMERIC_FIELDS = ("seed", "lr", "subset_size", "budget", "teacher_calls")
_NUMERIC_PREFIXES = ("test_", "last_test_", "best_val_", "last_val_", "val_")


def _bad_figure(row: dict) -> str | None:
    """What is wrong with the first non-numeric figure of `row` (None when all are numbers)."""
    for key, value in row.items():
        if key in _NUMERIC_FIELDS or key.startswith(_NUMERIC_PREFIXES):
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, float))):
                return (f"{key} is {json.dumps(value)} (a {type(value).__name__}), not a "
                        "number")
    return None


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; NaN for a single value)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var)


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def choose_lr(val_means: dict[float, float]) -> float:
    """The learning rate with the best mean validation accuracy; ties go to the smaller rate.

    The one rule of LR selection (`aggregate`, experiments/pick_lr.py)."""
    if not val_means:
        raise ValueError("choose_lr needs at least one learning rate")
    ascending = sorted(val_means)
    return max(ascending, key=lambda lr: val_means[lr])  # max keeps the first: the smaller lr


def aggregate(rows: Iterable[dict], metric: str = "test_top1_at_best_val",
              select_by: str = "best_val_top1") -> list[dict]:
    """Per (variant, subset_size): the learning rate with the best mean `select_by` over seeds,
    and mean +- sample std (ddof = 1) of `metric` over the seeds at that learning rate.

    Members whose `select_by` or `metric` is None/NaN are left out (and not counted in n_seeds).
    Ties in mean validation accuracy go to the smaller learning rate.

    Returns a list of dicts sorted by (variant order of first appearance, subset_size): variant,
    method, subset_size, budget, teacher_calls (per seed), lr, n_seeds, seeds, mean, std,
    val_mean (mean `select_by` at the chosen lr), per_lr ({lr: {val_mean, mean, std, n}}).
    """
    groups: dict[tuple, dict[float, list[dict]]] = defaultdict(lambda: defaultdict(list))
    order: list[str] = []
    for row in rows:
        for key in ("variant", "subset_size", "lr", "seed", metric, select_by):
            if key not in row:
                raise ValueError(f"results row lacks {key!r}: {row}")
        bad = _bad_figure(row)
        if bad is not None:  # rows not read by read_results (e.g. built in memory)
            raise ValueError(f"results row of {row.get('variant')!r} seed {row.get('seed')!r}: "
                             f"{bad}")
        if row["variant"] not in order:
            order.append(row["variant"])
        groups[(row["variant"], row["subset_size"])][float(row["lr"])].append(row)

    out = []
    for (variant, subset), by_lr in groups.items():
        per_lr = {}
        for lr, members in by_lr.items():
            ok = [m for m in members if _finite(m[select_by]) and _finite(m[metric])]
            val_mean, _ = _mean_std([m[select_by] for m in ok])
            mean, std = _mean_std([m[metric] for m in ok])
            per_lr[lr] = {"val_mean": val_mean, "mean": mean, "std": std, "n": len(ok),
                          "seeds": sorted(m["seed"] for m in ok)}
        candidates = {lr: v["val_mean"] for lr, v in per_lr.items() if v["n"] > 0}
        if not candidates:
            continue
        lr = choose_lr(candidates)
        chosen = by_lr[lr]
        first = chosen[0]
        out.append({
            "variant": variant, "method": first.get("method"), "subset_size": subset,
            "budget": first.get("budget"), "teacher_calls": first.get("teacher_calls"),
            "lr": lr, "n_seeds": per_lr[lr]["n"], "seeds": per_lr[lr]["seeds"],
            "mean": per_lr[lr]["mean"], "std": per_lr[lr]["std"],
            "val_mean": per_lr[lr]["val_mean"], "per_lr": per_lr,
            # the logits the accuracies are measured on (older rows: the paper's raw logits)
            "calibration": first.get("calibration") or "none",
        })
    rank = {v: i for i, v in enumerate(order)}
    out.sort(key=lambda r: (rank[r["variant"]], r["subset_size"]))
    return out


def read_results_union(sources: Iterable[str]) -> list[dict]:
    """Rows of several sweep directories or results files (`read_results` each), as one list.

    For studies whose cells ran as separate sweeps (e.g. one seed per process). Two rows for the
    same (variant, subset_size, seed, lr) are an error naming both sources: the table would
    otherwise count one member twice."""
    rows, seen = [], {}
    for source in sources:
        for row in read_results(source):
            key = (row.get("variant"), row.get("subset_size"), row.get("seed"), row.get("lr"))
            if key in seen:
                raise ValueError(f"{source} and {seen[key]} both hold variant {key[0]!r}, "
                                 f"S={key[1]}, seed {key[2]}, lr {key[3]}: pass each run once")
            seen[key] = source
            rows.append(row)
    return rows


def read_test_curves(sweep_dir: str) -> list[dict]:
    """The test curve of every member of every finished cell under `sweep_dir`, from the
    metrics.jsonl rows that `eval_test_every` gave a test figure.

    One dict per member: variant, cell, subset_size, seed, lr, selected_on ("raw" or
    "calibrated": the logits the run selects on, and the ones its curve is measured on),
    best_epoch (the selected pseudo-epoch), epochs_run, points, a list of
    (pseudo-epoch, test top-1, learning rate then), in epoch order, and test_images (the
    number of test images the points were measured on, `eval_test_curve_images`; None: the
    whole split; "mixed" if a resumed run changed it). A member without logged test figures
    gets an empty `points`."""
    curves = []
    for cell_path in sorted(glob.glob(os.path.join(sweep_dir, "*", CELL_FILE))):
        cell_dir = os.path.dirname(cell_path)
        got = read_cell(cell_dir)
        if got is None or not got[1].get("finished", False):
            continue
        cell, summary = got
        metrics_path = os.path.join(cell_dir, "metrics.jsonl")
        logged = (files.read_jsonl(metrics_path, what="metrics file", appended=True)
                  if os.path.exists(metrics_path) else [])
        for i, member in enumerate(summary["members"]):
            key = "test_top1_calibrated" if member.get("selected_on") == "calibrated" \
                else "test_top1"
            mine = [r for r in logged if r.get("member") == i and _finite(r.get(key))]
            points = sorted((r["epoch"], r[key], r["lr_now"]) for r in mine)
            counts = {r.get("test_images") for r in mine}
            curves.append({"variant": cell["variant"], "cell": os.path.basename(cell_dir),
                           "subset_size": summary.get("subset_size"), "seed": member["seed"],
                           "lr": member["lr"], "selected_on": member.get("selected_on", "raw"),
                           "best_epoch": member.get("best_epoch"),
                           "epochs_run": member.get("epochs_run"), "points": points,
                           "test_images": (counts.pop() if len(counts) == 1 else
                                           "mixed" if counts else None)})
    return curves


# --- Paired differences between variants (same seed = same subset, split and logit table) ---

def t_two_sided_cdf(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with `df` >= 1 degrees of freedom (integer), exact.

    The finite series for integer df (Abramowitz & Stegun 26.7.3-4), with theta =
    atan(t / sqrt(df)) and c = cos(theta)^2: odd df, (2/pi) (theta + sin cos (1 + 2/3 c +
    2*4/(3*5) c^2 + ... up to c^((df-3)/2))); even df, sin (1 + 1/2 c + 1*3/(2*4) c^2 + ...
    up to c^((df-2)/2)). Written here so that the report needs no scipy."""
    if df < 1 or int(df) != df:
        raise ValueError(f"degrees of freedom {df!r} must be a whole number >= 1")
    t = abs(float(t))
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 1:
        series, term = 0.0, 1.0
        for k in range(1, (df - 1) // 2 + 1):  # terms c^0 .. c^((df-3)/2)
            series += term
            term *= c * (2 * k) / (2 * k + 1)
        return 2.0 / math.pi * (theta + s * math.cos(theta) * series)
    series, term = 0.0, 1.0
    for k in range(1, df // 2 + 1):  # terms c^0 .. c^((df-2)/2)
        series += term
        term *= c * (2 * k - 1) / (2 * k)
    return s * series


def t_quantile(level: float, df: int) -> float:
    """The t with P(|T| < t) = `level` for Student's t with `df` degrees of freedom: the
    multiplier of a two-sided `level` confidence interval (2.776 for 0.95 and df = 4).
    Bisection on `t_two_sided_cdf` to 1e-12."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level {level!r} must lie strictly between 0 and 1")
    lo, hi = 0.0, 1.0
    while t_two_sided_cdf(hi, df) < level:
        lo, hi = hi, 2.0 * hi
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_two_sided_cdf(mid, df) < level else (lo, mid)
    return 0.5 * (lo + hi)


# The views a paired comparison reports: the selected (best-validation) weights, the table's
# number, and the weights each run ended with, both at the learning rate the table chose.
PAIRED_VIEWS = (("selected", "test_top1_at_best_val"), ("last", "last_test_top1"))


def paired_differences(rows: list[dict], pairs: list[tuple[str, str]],
                       metric: str = "test_top1_at_best_val", select_by: str = "best_val_top1",
                       level: float = 0.95,
                       views: tuple[tuple[str, str], ...] = PAIRED_VIEWS) -> list[dict]:
    """Per subset size S (ascending), pair (a, b) and view: the per-seed differences a - b.

    Each variant is taken at its learning rate chosen by `aggregate` (validation only); a
    view's value of a seed is that member's row field (`metric` for "selected"). Only seeds
    both variants have a finite value for are paired; the others are listed as excluded
    (`only_a`, `only_b`), never silently dropped. The interval is mean +- t x std / sqrt(n)
    with t = `t_quantile(level, n - 1)` (Student's t over seeds; NaN for n < 2). A pair is
    reported at every S where both variants have a chosen rate.

    Returns dicts: a, b, subset_size, budget, view, field, lr_a, lr_b, seeds, diffs, n, mean,
    std, t, low, high, only_a, only_b (values as fractions, like the rows)."""
    views = tuple((name, metric if name == "selected" else field) for name, field in views)
    chosen = {(g["variant"], g["subset_size"]): g
              for g in aggregate(rows, metric=metric, select_by=select_by)}
    out = []
    for subset in sorted({s for _, s in chosen}):
        for a, b in pairs:
            if (a, subset) not in chosen or (b, subset) not in chosen:
                continue
            ga, gb = chosen[(a, subset)], chosen[(b, subset)]
            for view, field in views:
                va, vb = (seed_values(rows, g["variant"], subset, g["lr"], field, select_by)
                          for g in (ga, gb))
                seeds = sorted(set(va) & set(vb))
                diffs = [va[s] - vb[s] for s in seeds]
                mean, std = _mean_std(diffs)
                n = len(diffs)
                t = t_quantile(level, n - 1) if n >= 2 else math.nan
                half = t * std / math.sqrt(n) if n >= 2 else math.nan
                out.append({"a": a, "b": b, "subset_size": subset, "budget": ga["budget"],
                            "view": view, "field": field, "lr_a": ga["lr"], "lr_b": gb["lr"],
                            "seeds": seeds, "diffs": diffs, "n": n, "mean": mean, "std": std,
                            "level": level, "t": t, "low": mean - half, "high": mean + half,
                            "only_a": sorted(set(va) - set(vb)),
                            "only_b": sorted(set(vb) - set(va))})
    return out


def seed_values(rows: list[dict], variant: str, subset, lr: float, field: str,
                 select_by: str) -> dict:
    """{seed: row[field]} of the members of (variant, subset) at `lr` whose `field` and
    `select_by` are finite (the members `aggregate` counts)."""
    return {r["seed"]: r[field] for r in rows
            if r["variant"] == variant and r["subset_size"] == subset and float(r["lr"]) == lr
            and _finite(r.get(field)) and _finite(r.get(select_by))}
