"""The paper's early-stopping protocol on scripted validation accuracies (no training)."""

import numpy as np
import pytest

from ckd_jax.train.protocol import PlateauProtocol


def _run(vals, **kw):
    """Feed a [epochs, M] script; return the protocol and the decisions per epoch."""
    vals = np.asarray(vals, float)
    p = PlateauProtocol(vals.shape[1], **kw)
    decisions = []
    for e, v in enumerate(vals):
        if p.done:
            break
        decisions.append(p.update(v, test=v + 100 * (e + 1), test5=v + 1000))
    return p, decisions


def test_reloads_and_stop_happen_exactly_after_patience():
    # member 0: improves at epochs 1, 2 then never again -> plateau events at epochs 5, 8, 11
    # with patience 3; reload at 5 and 8, stop at 11 (the third event).
    script = [[0.1], [0.2]] + [[0.15]] * 20
    p, dec = _run(script, patience=3, max_plateaus=3, max_epochs=1000)
    reload_epochs = [e + 1 for e, d in enumerate(dec) if d.reload[0]]
    stop_epochs = [e + 1 for e, d in enumerate(dec) if d.stopped[0]]
    assert reload_epochs == [5, 8]
    assert stop_epochs == [11]
    assert len(dec) == 11 and p.done
    s = p.summary(0)
    assert s["best_epoch"] == 2 and s["best_val_top1"] == pytest.approx(0.2)
    assert s["test_top1_at_best_val"] == pytest.approx(0.2 + 200)  # test recorded at epoch 2
    assert s["last_test_top1"] == pytest.approx(0.15 + 1100)
    assert s["plateaus"] == 3 and s["epochs_run"] == 11
    assert p.lr_scale[0] == pytest.approx(0.01)  # two /10 drops


def test_improvement_resets_the_patience_counter_and_must_be_strict():
    # equal value is not an improvement; a later strict improvement resets the counter.
    script = [[0.5], [0.5], [0.5], [0.6], [0.5], [0.5], [0.5]]
    p, dec = _run(script, patience=3, max_plateaus=1)
    assert [d.improved[0] for d in dec][:4] == [True, False, False, True]
    assert [d.stopped[0] for d in dec] == [False] * 6 + [True]
    assert p.summary(0)["best_epoch"] == 4


def test_members_are_independent():
    a = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]  # keeps improving
    b = [0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]  # never improves after epoch 1
    p, dec = _run(np.stack([a, b], 1), patience=2, max_plateaus=2, max_epochs=8)
    assert [bool(d.reload[1]) for d in dec] == [False, False, True, False, False, False, False,
                                                False]
    assert [bool(d.stopped[1]) for d in dec][4] is True  # second plateau at epoch 5
    assert not any(d.reload[0] for d in dec)
    assert dec[-1].stopped[0] and len(dec) == 8  # member 0 stops at max_epochs
    assert p.summary(1)["epochs_run"] == 5 and p.summary(0)["epochs_run"] == 8
    # a stopped member's records do not move any more
    assert p.summary(1)["last_val_top1"] == pytest.approx(0.1)


def test_cosine_runs_fixed_length_without_reloads():
    p, dec = _run([[0.3]] * 10, schedule="cosine", epochs=4, patience=1)
    assert len(dec) == 4 and p.done
    assert not any(d.reload.any() for d in dec)


def test_state_dict_round_trip():
    p, _ = _run([[0.1, 0.2], [0.3, 0.1], [0.2, 0.1]], patience=5)
    q = PlateauProtocol(2, patience=5)
    q.load_state_dict(p.state_dict())
    for name in PlateauProtocol.FIELDS:
        np.testing.assert_array_equal(getattr(q, name), getattr(p, name))
    d1 = p.update(np.array([0.5, 0.0]), np.array([1.0, 1.0]))
    d2 = q.update(np.array([0.5, 0.0]), np.array([1.0, 1.0]))
    np.testing.assert_array_equal(d1.improved, d2.improved)


def test_bad_schedule():
    with pytest.raises(ValueError, match="schedule='linear'"):
        PlateauProtocol(1, schedule="linear")
