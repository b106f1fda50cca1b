"""`experiments/sweep.py --shard I/N`: N shards run every cell exactly once, each writing only
its own cells and its own results file, and together give the same results (and report) as one
unsharded sweep of the same cells."""

import csv
import os

import jax
import jax.numpy as jnp
import pytest
from experiments_support import TINY_SWEEP_BASE, load_experiment  # tests/ on sys.path

from ckd_jax import results as R
from ckd_jax import sweep
from ckd_jax.models import create_model
from ckd_jax.train.engine import make_mesh

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


sweep_cli = load_experiment("sweep")  # the command line: main
report = load_experiment("report")

BASE = TINY_SWEEP_BASE
VARIANTS, SIZES, SEEDS, LRS = ["kd", "ce"], [200, 300], [1, 2], [0.05]
N_SHARDS = 3


def _comparable(rows):
    """Rows without the wall-clock field, in a fixed order."""
    rows = [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]
    return sorted(rows, key=lambda r: (r["cell"], r["seed"], r["lr"]))


def test_shard_cells_partition_and_errors(tmp_path):
    cells = sweep.plan_cells(BASE, ["ce", "kd", "ckd", "ckd_kl3"], [200, 300, 400], [1], [0.1],
                             str(tmp_path))
    names = [c["name"] for c in cells]
    for n in range(1, len(cells) + 2):
        shards = [[c["name"] for c in sweep.shard_cells(cells, (i, n))] for i in range(n)]
        flat = [name for s in shards for name in s]
        assert sorted(flat) == sorted(names)  # every cell exactly once
        for s in shards:  # plan order inside a shard, sizes as even as k % N makes them
            assert s == [name for name in names if name in s]
            assert len(s) in (len(cells) // n, -(-len(cells) // n))
    # independent of the order the variants were listed in
    again = sweep.plan_cells(BASE, ["ckd_kl3", "kd", "ckd", "ce"], [400, 200, 300], [1], [0.1],
                             str(tmp_path))
    for i in range(3):
        assert sorted(c["name"] for c in sweep.shard_cells(cells, (i, 3))) == \
            sorted(c["name"] for c in sweep.shard_cells(again, (i, 3)))
    assert sweep.parse_shard("0/1") == (0, 1) and sweep.parse_shard("3/4") == (3, 4)
    for bad, match in (("4/4", "0 <= I < N"), ("-1/2", "0 <= I < N"), ("1/0", "N >= 1"),
                       ("1", "must look like I/N"), ("a/b", "must look like I/N"),
                       ("1/2/3", "must look like I/N")):
        with pytest.raises(ValueError, match=match):
            sweep.parse_shard(bad)
    assert not os.listdir(tmp_path)


def test_sweep_cli_dry_run_shows_only_the_shard(tmp_path, capsys):
    cfg = os.path.join(ROOT, "experiments", "configs", "digits_quickstart.py")
    argv = ["--config", cfg, "--methods", "ce,kd,ckd", "--subset-sizes", "250", "--seeds", "1",
            "--lrs", "0.05", "--out", str(tmp_path), "--dry-run"]
    seen = []
    for i in range(2):
        assert sweep_cli.main(argv + ["--shard", f"{i}/2"]) == 0
        text = capsys.readouterr().out
        assert f"shard {i}/2: {2 - i} of 3 cells" in text
        seen += [line.split()[0] for line in text.splitlines()[1:]]
    assert sorted(seen) == ["ce_S250", "ckd_S250", "kd_S250"]
    assert not os.listdir(tmp_path)


@pytest.fixture(scope="module")
def sharded_and_whole(tmp_path_factory):
    teacher = create_model("tiny_cnn", 10, width=4)
    tvars = teacher.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)), train=False)
    kw = dict(mesh=make_mesh(1), teacher_apply=teacher.apply, teacher_variables=tvars)

    whole = str(tmp_path_factory.mktemp("whole"))
    whole_rows = sweep.run_sweep(sweep.plan_cells(BASE, VARIANTS, SIZES, SEEDS, LRS, whole),
                                 log=lambda s: None, **kw)

    sharded = str(tmp_path_factory.mktemp("sharded"))
    logs, shard_rows = {}, {}
    for i in range(N_SHARDS):  # as N jobs of one array would, each with the same command
        logs[i] = []
        cells = sweep.plan_cells(BASE, VARIANTS, SIZES, SEEDS, LRS, sharded)
        shard_rows[i] = sweep.run_sweep(cells, log=logs[i].append, shard=(i, N_SHARDS), **kw)
    # rerunning a shard skips its finished cells and rewrites only its own file
    rerun = []
    sweep.run_sweep(sweep.plan_cells(BASE, VARIANTS, SIZES, SEEDS, LRS, sharded),
                    log=rerun.append, shard=(0, N_SHARDS), **kw)
    return dict(whole=whole, whole_rows=whole_rows, sharded=sharded, logs=logs,
                shard_rows=shard_rows, rerun=rerun)


def test_shards_run_each_cell_once_and_match_one_sweep(sharded_and_whole):
    d = sharded_and_whole
    names = ["ce_S200", "ce_S300", "kd_S200", "kd_S300"]
    ran = [line.split("] ")[1].split(":")[0] for i in d["logs"]
           for line in d["logs"][i] if "running" in line]
    assert sorted(ran) == names  # every cell exactly once over the shards
    for i in d["logs"]:
        assert d["logs"][i][0].startswith(f"shard {i}/{N_SHARDS}: ")
    assert not any("running" in line for line in d["rerun"])
    assert sum("skipped" in line for line in d["rerun"]) == 2  # shard 0: ce_S200, kd_S300

    sharded = d["sharded"]
    assert not os.path.exists(os.path.join(sharded, R.RESULTS_FILE))
    files = sorted(f for f in os.listdir(sharded) if f.startswith("results."))
    assert files == [f"results.shard-{i}-of-{N_SHARDS}.jsonl" for i in range(N_SHARDS)]
    per_file = {i: R.read_results(os.path.join(sharded, files[i])) for i in range(N_SHARDS)}
    for i, rows in per_file.items():  # each shard's file holds its own cells only
        assert {r["cell"] for r in rows} == {r["cell"] for r in d["shard_rows"][i]}
    cells_by_file = [{r["cell"] for r in rows} for rows in per_file.values()]
    assert sum(len(c) for c in cells_by_file) == len(set().union(*cells_by_file)) == 4

    whole = R.read_results(os.path.join(d["whole"], R.RESULTS_FILE))
    assert len(whole) == 4 * len(SEEDS) * len(LRS)
    union_files = [r for rows in per_file.values() for r in rows]
    union_cells = R.read_results(sharded)  # what report.py reads: all cells' summaries
    assert _comparable(union_cells) == _comparable(union_files) == _comparable(whole)
    assert {r["teacher_calls"] for r in whole if r["variant"] == "kd"} == {160, 240}


def test_report_of_shards_equals_report_of_one_sweep(sharded_and_whole, tmp_path):
    tables = {}
    for key in ("whole", "sharded"):
        out = str(tmp_path / key)
        assert report.main([sharded_and_whole[key], "--out", out]) == 0
        with open(os.path.join(out, "table.csv")) as f:
            tables[key] = list(csv.DictReader(f))
    assert len(tables["whole"]) == 4
    assert tables["sharded"] == tables["whole"]
