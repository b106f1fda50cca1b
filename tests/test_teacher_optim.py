"""ckd_jax.train.optim: SGD equivalence with torch.optim.SGD, LR injection, schedules."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from ckd_jax.train import optim

A = np.array([[2.0, -1.0, 0.5], [0.3, 1.5, -0.7], [1.0, 0.2, 3.0], [-0.4, 0.8, 1.1]], np.float32)
B = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
P0 = np.array([0.5, -0.3, 1.2], np.float32)


def _grad_np(p):
    """Gradient of 0.5 * ||A p - b||^2, written out by hand."""
    return A.T @ (A @ p - B)


def _torch_run(lrs, momentum, wd, nesterov):
    p = torch.nn.Parameter(torch.tensor(P0.copy()))
    opt = torch.optim.SGD([p], lr=lrs[0], momentum=momentum, weight_decay=wd, nesterov=nesterov)
    out = []
    for lr in lrs:
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        loss = 0.5 * torch.sum((torch.tensor(A) @ p - torch.tensor(B)) ** 2)
        loss.backward()
        opt.step()
        out.append(p.detach().numpy().copy())
    return np.stack(out)


def _jax_run(lrs, momentum, wd, nesterov):
    tx = optim.make_optimizer(lr_schedule=lrs[0], momentum=momentum, weight_decay=wd,
                              nesterov=nesterov)
    params = {"p": jnp.asarray(P0)}
    state = tx.init(params)
    out = []
    for lr in lrs:
        state = optim.set_lr(state, lr)
        grads = {"p": jnp.asarray(_grad_np(np.asarray(params["p"])))}
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        out.append(np.asarray(params["p"]))
    return np.stack(out)


@pytest.mark.parametrize("momentum,wd,nesterov", [(0.9, 5e-4, False), (0.9, 0.05, True),
                                                  (0.0, 0.01, False)])
def test_sgd_matches_torch(momentum, wd, nesterov):
    # LR changes mid-run (as a plateau /10 does): torch applies lr outside the momentum buffer.
    lrs = [0.05] * 4 + [0.005] * 3 + [0.02] * 2
    ref = _torch_run(lrs, momentum, wd, nesterov)
    got = _jax_run(lrs, momentum, wd, nesterov)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    assert not np.allclose(ref[0], ref[-1])  # the run actually moved


def test_hand_computed_first_two_steps():
    lr, m, wd = 0.1, 0.9, 0.01
    p = P0.astype(np.float64)
    d0 = _grad_np(p) + wd * p
    p1 = p - lr * d0
    d1 = _grad_np(p1) + wd * p1
    p2 = p1 - lr * (m * d0 + d1)
    got = _jax_run([lr, lr], m, wd, False)
    np.testing.assert_allclose(got[1], p2, rtol=1e-5)


def test_get_set_lr_on_population_state():
    tx = optim.make_optimizer(lr_schedule=0.1, weight_decay=0.0, momentum=0.0)
    stacked = {"w": jnp.ones((3, 2))}  # 3 members, 2 weights each
    state = jax.vmap(tx.init)(stacked)
    assert optim.get_lr(state).shape == (3,)
    lrs = jnp.array([0.1, 0.01, 1.0])
    state = optim.set_lr(state, lrs)
    np.testing.assert_allclose(optim.get_lr(state), lrs)
    grads = {"w": jnp.ones((3, 2))}
    updates, state = jax.vmap(tx.update)(grads, state, stacked)
    # plain SGD, no momentum/decay: update = -lr * g for each member
    np.testing.assert_allclose(updates["w"], -np.repeat(np.asarray(lrs)[:, None], 2, 1),
                               rtol=1e-6)
    state = optim.scale_lr(state, 0.1)
    np.testing.assert_allclose(optim.get_lr(state), lrs * 0.1, rtol=1e-6)
    state = optim.set_lr(state, 0.5)  # scalar broadcast to the population
    np.testing.assert_allclose(optim.get_lr(state), [0.5] * 3)


def test_set_lr_inside_jit_and_chain():
    tx = optax.chain(optax.clip_by_global_norm(1.0), optim.make_optimizer(lr_schedule=0.1))
    state = tx.init({"w": jnp.zeros(2)})
    new = jax.jit(lambda s: optim.set_lr(s, 0.02))(state)
    assert float(optim.get_lr(new)) == pytest.approx(0.02)
    assert isinstance(new, tuple) and len(new) == 2


def test_set_lr_refuses_schedule_state():
    tx = optim.make_optimizer(lr_schedule=optim.cosine(0.1, 10))
    state = tx.init({"w": jnp.zeros(2)})
    assert float(optim.get_lr(state)) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="schedule"):
        optim.set_lr(state, 0.01)
    with pytest.raises(ValueError, match="inject_hyperparams"):
        optim.get_lr(optax.sgd(0.1).init({"w": jnp.zeros(2)}))


def test_schedule_drives_updates():
    sched = optim.multistep(0.1, steps_per_epoch=2, milestones_epochs=(1,), factor=0.1)
    tx = optim.make_optimizer(lr_schedule=sched, momentum=0.0, weight_decay=0.0)
    params = {"w": jnp.zeros(())}
    state = tx.init(params)
    seen = []
    for _ in range(4):
        upd, state = tx.update({"w": jnp.ones(())}, state, params)
        seen.append(-float(upd["w"]))
    np.testing.assert_allclose(seen, [0.1, 0.1, 0.01, 0.01], rtol=1e-6)


def test_multistep_matches_repdistiller_epochs():
    spe, base = 7, 0.05
    sched = optim.multistep(base, spe)
    for epoch in [0, 1, 149, 150, 179, 180, 209, 210, 239]:
        # RepDistiller: lr = base * 0.1 ** sum(epoch_1based > m), epoch_1based = epoch + 1
        want = base * 0.1 ** sum((epoch + 1) > m for m in (150, 180, 210))
        for s in (epoch * spe, epoch * spe + spe - 1):
            assert float(sched(s)) == pytest.approx(want, rel=1e-5), (epoch, s)


def test_cosine_and_warmup_formula():
    base, total, warm = 0.4, 100, 10
    s0 = optim.cosine(base, total)
    s1 = optim.cosine(base, total, warmup_steps=warm)
    for s in [0, 1, 37, 50, 99, 100]:
        assert float(s0(s)) == pytest.approx(base * 0.5 * (1 + math.cos(math.pi * s / total)),
                                             abs=1e-6)
    for s in [0, 5, 10, 55, 100]:
        want = (base * s / warm if s < warm else
                base * 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm))))
        assert float(s1(s)) == pytest.approx(want, abs=1e-6)


def test_onecycle_formula():
    peak, total, pct, div, fdiv = 0.4, 200, 0.25, 25.0, 1e4
    sched = optim.onecycle(peak, total, pct_start=pct, div_factor=div, final_div_factor=fdiv)
    lo, end, p = peak / div, peak / div / fdiv, int(pct * total)
    for s in [0, 10, 50, 51, 120, 200]:
        if s <= p:
            want = peak + (lo - peak) * (1 + math.cos(math.pi * s / p)) / 2
        else:
            want = end + (peak - end) * (1 + math.cos(math.pi * (s - p) / (total - p))) / 2
        assert float(sched(s)) == pytest.approx(want, rel=1e-5, abs=1e-9), s
    assert float(sched(p)) == pytest.approx(peak)


@pytest.mark.parametrize("call", [
    lambda: optim.make_optimizer(lr_schedule=-0.1),
    lambda: optim.make_optimizer(lr_schedule=0.1, momentum=1.0),
    lambda: optim.make_optimizer(lr_schedule=0.1, weight_decay=-1),
    lambda: optim.make_optimizer(lr_schedule=0.1, momentum=0.0, nesterov=True),
    lambda: optim.multistep(0.1, 0),
    lambda: optim.multistep(0.1, 10, (180, 150)),
    lambda: optim.cosine(0.1, 10, warmup_steps=10),
    lambda: optim.onecycle(0.1, 10, pct_start=1.5),
])
def test_bad_arguments_raise(call):
    with pytest.raises(ValueError):
        call()


# ------------------------------------------------ the functional layer the engines' step calls
def _functional_run(lrs, momentum, wd, nesterov):
    params = {"p": jnp.asarray(P0)}
    buf = optim.sgd_init(params)
    step = jax.jit(lambda g, b, p, lr: optim.sgd_update(g, b, p, lr, momentum=momentum,
                                                        weight_decay=wd, nesterov=nesterov))
    out = []
    for lr in lrs:
        grads = {"p": jnp.asarray(_grad_np(np.asarray(params["p"])))}
        params, buf = step(grads, buf, params, jnp.float32(lr))
        out.append(np.asarray(params["p"]))
    return np.stack(out)


@pytest.mark.parametrize("momentum,wd,nesterov", [(0.9, 5e-4, False), (0.9, 0.05, True),
                                                  (0.0, 0.01, False)])
def test_sgd_update_matches_torch(momentum, wd, nesterov):
    lrs = [0.05] * 4 + [0.005] * 3 + [0.02] * 2  # LR changed mid-run, as plateau /10 does
    ref = _torch_run(lrs, momentum, wd, nesterov)
    np.testing.assert_allclose(_functional_run(lrs, momentum, wd, nesterov), ref, rtol=1e-6,
                               atol=1e-6)
    # the optax adapter is the same function
    np.testing.assert_allclose(_jax_run(lrs, momentum, wd, nesterov), ref, rtol=1e-6, atol=1e-6)


def test_sgd_update_per_member_learning_rates():
    """vmapped over a population, each member follows its own rate (as in the engine)."""
    lrs = jnp.array([0.1, 0.01, 0.5])
    params = {"w": jnp.tile(jnp.asarray(P0)[None], (3, 1))}
    buf = jax.vmap(optim.sgd_init)(params)
    upd = jax.vmap(lambda g, b, p, lr: optim.sgd_update(g, b, p, lr, momentum=0.9,
                                                        weight_decay=1e-2))
    for _ in range(3):
        grads = {"w": jnp.asarray(np.stack([_grad_np(np.asarray(w)) for w in params["w"]]))}
        params, buf = upd(grads, buf, params, lrs)
    for i, lr in enumerate(np.asarray(lrs)):
        ref = _torch_run([float(lr)] * 3, 0.9, 1e-2, False)[-1]
        np.testing.assert_allclose(params["w"][i], ref, rtol=1e-5, atol=1e-6)


def test_scheduled_lr_dispatch_matches_each_schedule():
    base, spe, total = 0.2, 5, 40
    steps = jnp.arange(0, total + 1)
    lr = lambda name, **kw: np.asarray(jax.vmap(
        lambda s: optim.scheduled_lr(name, jnp.float32(base), s, total_steps=total, **kw))(steps))
    np.testing.assert_array_equal(lr("constant"), np.float32(base))
    np.testing.assert_array_equal(lr("plateau"), np.float32(base))
    np.testing.assert_allclose(lr("multistep", milestones=(10, 25), factor=0.1),
                               [float(optim.multistep(base, spe, (2, 5))(s)) for s in steps],
                               rtol=1e-6)
    np.testing.assert_allclose(lr("cosine", warmup_steps=4),
                               [float(optim.cosine(base, total, 4)(s)) for s in steps],
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(lr("onecycle"),
                               [float(optim.onecycle(base, total)(s)) for s in steps],
                               rtol=1e-5, atol=1e-8)
    # optax's own one-cycle agrees with ours
    ref = optax.cosine_onecycle_schedule(total, base, pct_start=0.25)
    np.testing.assert_allclose(lr("onecycle"), [float(ref(s)) for s in steps], rtol=1e-5,
                               atol=1e-8)
    with pytest.raises(ValueError, match="schedule"):
        optim.scheduled_lr("linear", base, 0)


def test_cosine_without_warmup_is_the_student_formula():
    # op for op the expression the student step had inline (bitwise, per-member base rates)
    base = jnp.array([0.05, 0.1], jnp.float32)
    for s in [0, 1, 7, 31, 32, 40]:
        t = jnp.minimum(jnp.int32(s), 32).astype(jnp.float32)
        want = base * 0.5 * (1.0 + jnp.cos(jnp.pi * t / 32))
        got = jax.jit(lambda b, st: optim.cosine_lr(b, st, 32))(base, jnp.int32(s))
        np.testing.assert_array_equal(got, want)


def test_plateau_drop():
    lr = jnp.array([0.1, 0.05, 0.2])
    got = optim.plateau_drop(lr, jnp.array([True, False, True]))
    np.testing.assert_allclose(got, [0.01, 0.05, 0.02], rtol=1e-7)
