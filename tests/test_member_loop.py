"""The two ways a population's members run (`DistillConfig.member_loop`): all members in one
vmapped program (accelerators) or one after another through the program compiled for one
member (CPU). Both must give the same weights to float tolerance, the same protocol decisions
and the same teacher-call counts."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from engine_support import CountingTeacher, tiny_config  # tests/ is on sys.path

from ckd_jax.train.distill import run_distillation
from ckd_jax.train.engine import _OneMemberAtATime, make_mesh, resolve_member_loop

_DECISIONS = ("epochs_run", "best_epoch", "plateaus")


def _run(cfg, teacher):
    return run_distillation(cfg, teacher_apply=teacher.apply,
                            teacher_variables=teacher.variables, mesh=make_mesh(1))


def test_vmap_and_sequential_members_agree(tmp_path):
    # CKD (tuples) calibrated from its table (the offset pass) under the plateau protocol with
    # patience 2: members reload, drop their rates and finish at different pseudo-epochs, so
    # the sequential path also skips finished members while the others train on.
    teacher = CountingTeacher(seed=5)
    tables = str(tmp_path / "tables")
    runs, rows = {}, {}
    for loop in ("vmap", "sequential"):
        calls_before = teacher.calls
        cfg = tiny_config(method="ckd", seeds=(1, 2), learning_rates=(0.01, 0.5),
                          schedule="plateau", patience=2, max_lr_drops=1, max_epochs=8,
                          calibration="table", member_loop=loop, logit_table_dir=tables,
                          eval_test_every=1, out_dir=str(tmp_path / loop))
        runs[loop] = _run(cfg, teacher)
        runs[loop]["calls"] = teacher.calls - calls_before
        with open(os.path.join(cfg.out_dir, "metrics.jsonl")) as f:
            rows[loop] = [json.loads(line) for line in f]
    vm, sq = runs["vmap"], runs["sequential"]
    assert vm["member_loop"] == "vmap" and sq["member_loop"] == "sequential"
    # The first run built both seeds' tables (2 x 64 calls); the second reused them.
    assert vm["calls"] == 2 * vm["budget"] and sq["calls"] == 0
    assert [m["teacher_calls"] for m in vm["members"]] == [m["teacher_calls"]
                                                           for m in sq["members"]]
    epochs_run = [m["epochs_run"] for m in vm["members"]]
    assert len(set(epochs_run)) > 1, f"members should finish at different epochs: {epochs_run}"
    for a, b in zip(vm["members"], sq["members"]):
        for key in _DECISIONS:
            assert a.get(key) == b.get(key), key
        for key in ("test_top1_at_best_val", "last_test_top1", "best_val_top1"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), key
    leaves = lambda s: [np.asarray(x) for x in jax.tree.leaves((s["_final"]["state"],
                                                                s["_final"]["best"]))]
    for a, b in zip(leaves(vm), leaves(sq)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert [(r["epoch"], r["member"]) for r in rows["vmap"]] == [
        (r["epoch"], r["member"]) for r in rows["sequential"]]
    for a, b in zip(rows["vmap"], rows["sequential"]):
        for key, v in a.items():
            if isinstance(v, float):
                assert v == pytest.approx(b[key], rel=1e-4, abs=1e-5, nan_ok=True), key
            else:
                assert v == b[key], key
    assert sq["_final"]["compiles"] == 1  # one program for one member, reused by all


def test_auto_is_sequential_on_cpu_and_names_are_checked():
    mesh = make_mesh(1)
    assert resolve_member_loop("auto", mesh) == "sequential"
    assert resolve_member_loop("vmap", mesh) == "vmap"
    with pytest.raises(ValueError, match="accepted: auto, vmap, sequential"):
        resolve_member_loop("pmap", mesh)
    with pytest.raises(ValueError, match="member_loop='pmap'"):
        tiny_config(member_loop="pmap").validate()


def test_one_member_at_a_time_skips_finished_members_and_reuses_data_pieces():
    calls = []

    @jax.jit
    def epoch(state, data, keys, active):  # a stand-in population epoch, vmapped shapes
        return ({"w": state["w"] + data[:, :1] * 0 + keys[:, :1]},
                {"loss": jnp.sum(state["w"], axis=1)})

    def counted(*args):
        calls.append(args[0]["w"].shape)
        return epoch(*args)

    counted._cache_size = epoch._cache_size
    loop = _OneMemberAtATime(counted, (True, True, True, True), cached_args=(1,), skip_arg=3)
    state = {"w": jnp.arange(6.0).reshape(3, 2)}
    data = jnp.ones((3, 4))
    keys = jnp.asarray([[10.0], [20.0], [30.0]])
    new, metrics = loop(state, data, keys, jnp.asarray([True, False, True]))
    assert calls == [(1, 2), (1, 2)]  # the finished member 1 was not run
    np.testing.assert_array_equal(new["w"], [[10, 11], [2, 3], [34, 35]])
    np.testing.assert_array_equal(np.isnan(metrics["loss"]), [False, True, False])
    np.testing.assert_array_equal(np.asarray(metrics["loss"])[[0, 2]], [1.0, 9.0])
    pieces = loop._cache[1][1]
    loop(state, data, keys, jnp.asarray([True, True, True]))
    assert loop._cache[1][1] is pieces  # the same data object: split once
    assert len(calls) == 5
