"""Regression fixture: loss values on fixed inputs, committed in tests/fixtures/loss_values.json.

Any change of a number fails here. After an intended change, regenerate (and say why in the
commit) with

    python -m tests.test_losses_fixture --regenerate

Inputs come from NumPy's default_rng (stable across versions), not from jax.random, so the
fixture does not depend on JAX's PRNG implementation. Values are float32 results on CPU of one
jitted program (`loss_values`), compared at rtol 1e-5.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

FIXTURE = Path(__file__).parent / "fixtures" / "loss_values.json"
RTOL = 1e-5


def fixture_inputs() -> dict:
    """Fixed inputs, from NumPy's default_rng (stable across NumPy and JAX versions)."""
    import numpy as np

    r = np.random.default_rng(20231104)
    f32 = lambda *shape: (r.normal(size=shape) * 2.0).astype(np.float32)
    b, c, n_data, feat = 6, 10, 12, 4
    inp = {"s": f32(b, c), "t": f32(b, c), "y": r.integers(0, c, size=b).astype(np.int32),
           "p_logits": f32(b, c)}
    for k in (2, 3, 4, 6):
        inp[f"s{k}"], inp[f"t{k}"] = f32(b, k, c), f32(b, k, c)
        inp[f"y{k}"] = r.integers(0, c, size=(b, k)).astype(np.int32)
    inp["partner"] = r.permutation(b).astype(np.int32)
    inp["partners"] = np.stack([r.permutation(b), r.permutation(b)]).astype(np.int32)
    inp["crd_params"] = {"embed_s": {"kernel": f32(c, feat), "bias": f32(feat)},
                         "embed_t": {"kernel": f32(c, feat), "bias": f32(feat)}}
    inp["crd_memory"] = (f32(n_data, feat) * 0.1, f32(n_data, feat) * 0.1)
    inp["crd_cidx"] = np.concatenate(
        [np.arange(b)[:, None], r.integers(0, n_data, (b, 5))], axis=1).astype(np.int32)
    inp["feats"] = (f32(2, 4, 4, 3), f32(2, 4, 4, 3))
    return inp


def loss_values(inp: dict) -> dict:
    """Every loss on the fixture inputs (pure; evaluated as one compiled program)."""
    import jax
    import jax.numpy as jnp

    from ckd_jax import losses as L

    s, t, y = inp["s"], inp["t"], inp["y"]
    out = {
        "cross_entropy": L.cross_entropy(s, y),
        "soft_cross_entropy": L.soft_cross_entropy(s, jax.nn.softmax(inp["p_logits"])),
        "kd_loss_T4": L.kd_loss(s, t),
        "kd_loss_T1": L.kd_loss(s, t, 1.0),
        "rkd_loss": L.rkd_loss(s, t),
        "dist_loss": L.dist_loss(s, t),
        "cc_loss": L.cc_loss(s, t),
    }
    for k in (2, 3, 4, 6):
        n_pos, _ = L.split_groups(k)
        for form in ("mse", "kl"):
            # every combine for k = 2 and 3, the difference (CKD proper) for larger groups
            for combine in ("diff", "add", "interp") if k <= 3 else ("diff",):
                lam = 0.3 if combine == "interp" else None
                terms = L.ckd_terms(inp[f"s{k}"], inp[f"t{k}"], inp[f"y{k}"], n_pos=n_pos,
                                    form=form, combine=combine, lam=lam)
                for name, v in terms.items():
                    out[f"ckd_k{k}_{form}_{combine}_{name}"] = v
    for soft in ("ce", "kd"):
        out[f"mix_pair_{soft}"] = L.mix_distill_loss(s, y, t, inp["partner"], 0.35, soft=soft)
        out[f"mix_three_{soft}"] = L.mix_distill_loss(s, y, t, inp["partners"],
                                                      jnp.array([0.2, 0.5, 0.3]), soft=soft)
    mask = L.cutmix_box_mask(None, 9, 7, jnp.float32(0.42), centre=(2, 6))
    out["cutmix_mask_kept_fraction"] = jnp.mean(mask)

    # CRD over two steps: Z estimated on the first, memory updated in between
    state = {"memory_s": inp["crd_memory"][0], "memory_t": inp["crd_memory"][1],
             "z_s": jnp.float32(-1.0), "z_t": jnp.float32(-1.0)}
    idx = jnp.arange(s.shape[0], dtype=jnp.int32)
    loss1, state = L.crd_loss(inp["crd_params"], state, s, t, idx, inp["crd_cidx"])
    loss2, state = L.crd_loss(inp["crd_params"], state, t, s, idx, inp["crd_cidx"])
    out.update(crd_loss_step1=loss1, crd_loss_step2=loss2, crd_z_s=state["z_s"],
               crd_memory_s_sum=jnp.sum(state["memory_s"]))

    feats_s, feats_t = inp["feats"]
    out["fitnet_loss"] = L.fitnet_loss(feats_s, feats_t)
    out["vid_loss"] = L.vid_loss(feats_s, jnp.array([0.1, -0.5, 2.0]), feats_t)
    return out


def compute_values() -> dict[str, float]:
    import jax

    values = jax.jit(loss_values)(fixture_inputs())  # one compile instead of ~40
    return {k: float(v) for k, v in sorted(values.items())}


def test_loss_values_match_fixture():
    import numpy as np

    assert FIXTURE.exists(), f"missing {FIXTURE}; run python -m tests.test_losses_fixture " \
        "--regenerate"
    want = json.loads(FIXTURE.read_text())
    got = compute_values()
    assert sorted(got) == sorted(want), "fixture keys changed: regenerate deliberately"
    bad = {k: (got[k], want[k]) for k in want
           if not np.isclose(got[k], want[k], rtol=RTOL, atol=1e-7)}
    assert not bad, f"loss values changed (got, fixture): {bad}"


if __name__ == "__main__":
    if "--regenerate" not in sys.argv:
        sys.exit("usage: python -m tests.test_losses_fixture --regenerate")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    values = compute_values()
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(values, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(values)} values to {FIXTURE}")
