"""The RepDistiller / CKD zoo against independent PyTorch re-implementations (tests/torch_zoo.py,
written from the reference's layer lists, with the reference's state_dict layout)."""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch  # the test extra pins torch==2.13.0 (CPU)
import torch_zoo  # tests/ is on sys.path (pytest's default "prepend" import mode)

from ckd_jax.models import (
    PAPER_ROLES,
    REFERENCE_MODELS,
    create_model,
    feature_shapes,
    load_torch_checkpoint,
    model_names,
    param_count,
)
from ckd_jax.models.convert import torch_key_map
from ckd_jax.models.layers import BatchNorm, conv, dense

torch.set_num_threads(1)  # the test machine's two cores are shared

# Deep/wide networks whose XLA CPU compile dominates; they still run in CI.
SLOW = {"resnet110", "ResNet50", "vgg16", "vgg19", "ShuffleV1", "resnet32x4"}


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


def _nhwc(t):
    t = t.detach().numpy()
    return np.transpose(t, (0, 2, 3, 1)) if t.ndim == 4 else t


def _random_torch_net(name, num_classes=100, seed=0):
    """Reference-layout torch net with random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    net = torch_zoo.build(name, num_classes)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0.0, 0.2)
                mod.running_mean.normal_(0.0, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.num_batches_tracked.fill_(1000)
    return net


def _save(net, path):
    torch.save({"epoch": 240, "model": net.state_dict(), "accuracy": 74.31}, path)
    return path


def _assert_close(ours, ref, what, rtol=1e-4):
    """|ours - ref| <= rtol * max|ref| (+ a float32 floor): tolerance scaled to the magnitude."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    scale = float(np.max(np.abs(ref))) + 1e-6
    err = float(np.max(np.abs(ours - ref)))
    assert err <= rtol * scale, f"{what}: max abs err {err:.3g} > {rtol} * {scale:.3g}"


def _eval_both(name, num_classes=100):
    """jit of (features, logits) for preact=False and preact=True in one program (XLA shares
    the common computation, so this costs about one compile)."""
    model = create_model(name, num_classes)

    def run(variables, x):
        return tuple(model.apply(variables, x, train=False, return_features=True, preact=p)
                     for p in (False, True))

    return jax.jit(run)


# ----------------------------------------------------------------------------- registry
def test_registry_has_every_ckd_name_and_small_models():
    ckd_names = ["resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56",
                 "resnet110", "resnet8x4", "resnet32x4", "ResNet50", "wrn_16_1", "wrn_16_2",
                 "wrn_40_1", "wrn_40_2", "vgg8", "vgg11", "vgg13", "vgg16", "vgg19",
                 "MobileNetV2", "ShuffleV1", "ShuffleV2"]
    assert list(REFERENCE_MODELS) == ckd_names
    assert set(model_names()) == set(ckd_names) | {"tiny_cnn", "mlp"}
    assert set(PAPER_ROLES) <= set(ckd_names)
    assert {n for n, r in PAPER_ROLES.items() if r == "teacher"} == {
        "resnet110", "resnet56", "resnet32x4", "wrn_40_2", "vgg13", "ResNet50"}


def test_bad_name_lists_available_models():
    with pytest.raises(ValueError, match="unknown model 'resnet18'") as e:
        create_model("resnet18", 100)
    for n in ("resnet32", "wrn_40_2", "ShuffleV2", "tiny_cnn"):
        assert n in str(e.value)
    with pytest.raises(ValueError, match="unknown model"):
        load_torch_checkpoint({}, "vgg13_bn", 100)
    with pytest.raises(ValueError, match="num_classes"):
        create_model("resnet8", 0)
    with pytest.raises(ValueError, match="keyword"):
        create_model("resnet8", 10, width=3)


def test_published_parameter_counts():
    # Figures stated for the reference networks at 100 classes.
    assert param_count("resnet32", 100) == 472_756
    assert param_count("wrn_40_2", 100) == 2_255_156


def test_param_count_follows_the_input_shape():
    # MLP 784-32-10 on 28x28x1 and 3072-32-10 on the default 32x32x3, counted by hand.
    assert param_count("mlp", 10, input_shape=(28, 28, 1), width=32) == 784 * 32 + 32 + 32 * 10 + 10
    assert param_count("mlp", 10, width=32) == 3072 * 32 + 32 + 32 * 10 + 10


@pytest.mark.parametrize("name", ["resnet8", "ResNet50", "wrn_16_1", "vgg8", "MobileNetV2",
                                  "ShuffleV1", "ShuffleV2"])
def test_feature_shapes_and_param_count_match_torch(name):
    # One member per family through the abstract helpers (the round trip below checks the
    # shapes of every model through real forward passes).
    net = torch_zoo.build(name, 100).eval()
    assert param_count(name, 100) == sum(p.numel() for p in net.parameters())
    x = torch.zeros(1, 3, 32, 32)
    for preact in (False, True):
        with torch.no_grad():
            feats, logits = net(x, is_feat=True, preact=preact)
        want = [tuple(_nhwc(f).shape) for f in feats]
        assert feature_shapes(name, 100, preact=preact) == want
        assert tuple(logits.shape) == (1, 100)


def test_feature_shapes_at_56_stanford_cars_crops():
    # CKD's global pooling: every stage shrinks, the pooled vector keeps its width.
    assert feature_shapes("resnet32", 196, 56) == [
        (1, 56, 56, 16), (1, 56, 56, 16), (1, 28, 28, 32), (1, 14, 14, 64), (1, 64)]
    assert feature_shapes("wrn_16_2", 196, 56)[-2:] == [(1, 14, 14, 128), (1, 128)]
    assert feature_shapes("vgg8", 196, 56)[-3:] == [(1, 7, 7, 512), (1, 7, 7, 512), (1, 512)]
    # vgg: the 4th max pool is applied only for 64-pixel inputs, as in the reference.
    assert feature_shapes("vgg8", 196, 64)[-3:] == [(1, 8, 8, 512), (1, 4, 4, 512), (1, 512)]
    assert feature_shapes("MobileNetV2", 196, 56)[-2:] == [(1, 4, 4, 160), (1, 1280)]


# ----------------------------------------------------------------------------- conversion
@pytest.mark.parametrize("name", _params(REFERENCE_MODELS))
def test_torch_checkpoint_round_trip(name, tmp_path):
    """Reference-layout .pth -> flax variables; same parameter count, same logits and features
    (plain and pre-activation), eval mode."""
    net = _random_torch_net(name).eval()
    path = _save(net, tmp_path / "ckpt_epoch_240.pth")
    variables = load_torch_checkpoint(path, name, 100)
    assert set(variables) == {"params", "batch_stats"}
    n_params = sum(a.size for a in jax.tree_util.tree_leaves(variables["params"]))
    assert n_params == sum(p.numel() for p in net.parameters())

    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
    outs = _eval_both(name)(variables, jnp.asarray(x))
    for preact, (feats, logits) in zip((False, True), outs):
        with torch.no_grad():
            ref_feats, ref_logits = net(torch.from_numpy(x.transpose(0, 3, 1, 2)), is_feat=True,
                                        preact=preact)
        _assert_close(logits, ref_logits.numpy(), f"{name} logits")
        assert len(feats) == len(ref_feats)
        for i, (f, rf) in enumerate(zip(feats, ref_feats)):
            _assert_close(f, _nhwc(rf), f"{name} feature {i} (preact={preact})")
    if name not in ("MobileNetV2", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2"):
        # a pre-activation can be negative, a post-ReLU output cannot: the variants differ
        assert float(jnp.min(outs[1][0][-2])) < 0 <= float(jnp.min(outs[0][0][-2]))


@pytest.mark.parametrize("name,size", [("resnet8", 56), ("vgg8", 64), ("ShuffleV2", 56)])
def test_round_trip_at_larger_inputs(name, size):
    # Stanford Cars crops (56) and the vgg 64-pixel branch; ShuffleV2 keeps the reference's
    # fixed 4x4 average pool (top-left window of the 7x7 map).
    net = _random_torch_net(name, 196, seed=4).eval()
    variables = load_torch_checkpoint({"model": net.state_dict()}, name, 196)
    x = np.random.default_rng(3).normal(size=(2, size, size, 3)).astype(np.float32)
    logits = jax.jit(create_model(name, 196).apply)(variables, jnp.asarray(x))
    with torch.no_grad():
        ref = net(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    _assert_close(logits, ref.numpy(), f"{name}@{size} logits")


def test_shufflenet_pooling_options():
    model = create_model("ShuffleV2", 10)
    x = jnp.zeros((1, 64, 64, 3))
    variables = jax.eval_shape(lambda: create_model("ShuffleV2", 10, global_pool=True).init(
        jax.random.PRNGKey(0), x))
    with pytest.raises(ValueError, match="global_pool=True"):
        jax.eval_shape(model.apply, variables, x)
    out = jax.eval_shape(create_model("ShuffleV2", 10, global_pool=True).apply, variables, x)
    assert out.shape == (1, 10)


@pytest.mark.parametrize("name,preact", [("resnet8", False), ("wrn_16_1", True),
                                         ("vgg8", False)])
def test_train_mode_batchnorm_matches_torch(name, preact):
    net = _random_torch_net(name, 10, seed=5)
    variables = load_torch_checkpoint(net.state_dict(), name, 10)
    x = np.random.default_rng(4).normal(size=(4, 32, 32, 3)).astype(np.float32)
    model = create_model(name, 10)
    train_fn = jax.jit(functools.partial(model.apply, train=True, return_features=True,
                                         preact=preact, mutable=["batch_stats"]))
    (feats, logits), new_state = train_fn(variables, jnp.asarray(x))
    net.train()
    with torch.no_grad():
        _, ref_logits = net(torch.from_numpy(x.transpose(0, 3, 1, 2)), is_feat=True,
                            preact=preact)
    _assert_close(logits, ref_logits.numpy(), f"{name} train logits")
    ref_sd = net.state_dict()
    changed = 0
    stat_keys = torch_key_map({"batch_stats": new_state["batch_stats"]})
    for key, (path, _) in stat_keys.items():
        ours = new_state["batch_stats"]
        for p in path[1:]:
            ours = ours[p]
        before = variables["batch_stats"]
        for p in path[1:]:
            before = before[p]
        _assert_close(ours, ref_sd[key].numpy(), f"{name} {key}", rtol=1e-5)
        changed += not np.allclose(ours, before)
    assert changed == len(stat_keys)  # every running statistic moved, as in torch


def test_other_architecture_checkpoint_names_the_key(tmp_path):
    path = _save(torch_zoo.build("resnet8", 100), tmp_path / "r8.pth")
    with pytest.raises(ValueError, match=r"lacks key 'layer1\.1\.conv1\.weight'"):
        load_torch_checkpoint(path, "resnet14", 100)
    with pytest.raises(ValueError, match=r"'fc\.weight': checkpoint shape \(100, 64\), model "
                                         r"expects shape \(10, 64\)"):
        load_torch_checkpoint(path, "resnet8", 10)
    wrn = torch_zoo.build("wrn_16_1", 100).state_dict()
    with pytest.raises(ValueError, match=r"unexpected key 'block1\.layer\.0\.bn1\.weight'"):
        load_torch_checkpoint(wrn, "resnet8", 100)
    with pytest.raises(ValueError, match="not a tensor"):
        load_torch_checkpoint({"epoch": 3}, "resnet8", 100)


def test_dataparallel_prefix_and_numpy_state_dict():
    net = _random_torch_net("resnet8", 10, seed=6)
    sd = {"module." + k: v.numpy() for k, v in net.state_dict().items()}
    a = load_torch_checkpoint(sd, "resnet8", 10)
    b = load_torch_checkpoint({"model": net.state_dict()}, "resnet8", 10)
    assert jax.tree_util.tree_all(
        jax.tree_util.tree_map(lambda u, v: bool(jnp.array_equal(u, v)), a, b))
    # layouts: conv OIHW -> HWIO, linear [out, in] -> [in, out]
    np.testing.assert_array_equal(a["params"]["conv1"]["kernel"],
                                  net.conv1.weight.detach().numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(a["params"]["fc"]["kernel"], net.fc.weight.detach().numpy().T)
    np.testing.assert_array_equal(a["batch_stats"]["bn1"]["var"], net.bn1.running_var.numpy())


def test_missing_torch_gives_install_hint(tmp_path, monkeypatch):
    path = _save(torch_zoo.build("resnet8", 10), tmp_path / "r8.pth")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ImportError, match=r"pip install torch==2\.13\.0"):
        load_torch_checkpoint(path, "resnet8", 10)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_torch_checkpoint("/nonexistent/nope.pth", "resnet8", 10)


def test_initialisation_follows_reference():
    # Every zoo conv is layers.conv: kaiming_normal(fan_out) = N(0, 2 / (k*k*out)), untruncated.
    kernel = conv(256, 3).init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 256)))["params"]
    k = kernel["kernel"]
    assert abs(float(jnp.std(k)) / np.sqrt(2 / (9 * 256)) - 1) < 0.02
    assert float(jnp.max(jnp.abs(k))) > 4 * np.sqrt(2 / (9 * 256))  # not truncated at 2 sigma
    assert "bias" not in kernel
    # vgg / MobileNetV2 classifier: N(0, 0.01) weight, zero bias
    head = dense(100, 512, "normal001", "classifier").init(jax.random.PRNGKey(1),
                                                            jnp.zeros((1, 512)))["params"]
    assert abs(float(jnp.std(head["kernel"])) - 0.01) < 5e-4
    assert bool(jnp.all(head["bias"] == 0))
    # PyTorch's default Linear: U(+-1/sqrt(fan_in)) for weight and bias
    head = dense(100, 64, "torch", "fc").init(jax.random.PRNGKey(2), jnp.zeros((1, 64)))["params"]
    for leaf in (head["kernel"], head["bias"]):
        assert 0.1 < float(jnp.max(jnp.abs(leaf))) <= 1 / 8
    # BatchNorm starts at gamma 1, beta 0, running mean 0, var 1
    bn = BatchNorm().init(jax.random.PRNGKey(0), jnp.zeros((2, 3)), use_running_average=False)
    assert [float(bn["params"]["scale"][0]), float(bn["params"]["bias"][0])] == [1.0, 0.0]
    assert [float(bn["batch_stats"]["mean"][0]), float(bn["batch_stats"]["var"][0])] == [0, 1]


def test_batchnorm_formula_by_hand():
    # y = (x - mean)/sqrt(var_biased + eps)*gamma + beta; running var uses var_unbiased.
    x = jnp.array([[1.0], [2.0], [6.0]])
    bn = BatchNorm()
    variables = {"params": {"scale": jnp.array([2.0]), "bias": jnp.array([0.5])},
                 "batch_stats": {"mean": jnp.array([1.0]), "var": jnp.array([4.0])}}
    y, state = bn.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    mean, var_b, var_u = 3.0, 14.0 / 3.0, 7.0
    np.testing.assert_allclose(y[:, 0], (np.array([1, 2, 6]) - mean) / np.sqrt(var_b + 1e-5) * 2
                               + 0.5, rtol=1e-6)
    np.testing.assert_allclose(state["batch_stats"]["mean"], [0.9 * 1 + 0.1 * mean], rtol=1e-6)
    np.testing.assert_allclose(state["batch_stats"]["var"], [0.9 * 4 + 0.1 * var_u], rtol=1e-6)
    y = bn.apply(variables, x, use_running_average=True)
    np.testing.assert_allclose(y[:, 0], (np.array([1, 2, 6]) - 1) / np.sqrt(4 + 1e-5) * 2 + 0.5,
                               rtol=1e-6)


def test_bfloat16_compute_stays_bfloat16_and_close():
    # The training code casts params and inputs to bfloat16; BN statistics stay float32.
    net = _random_torch_net("resnet8", 10, seed=7).eval()
    variables = load_torch_checkpoint(net.state_dict(), "resnet8", 10)
    model = create_model("resnet8", 10)
    x = jnp.asarray(np.random.default_rng(5).normal(size=(2, 32, 32, 3)), jnp.float32)
    params16 = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), variables["params"])
    v16 = {"params": params16, "batch_stats": variables["batch_stats"]}
    out16 = jax.jit(model.apply)(v16, x.astype(jnp.bfloat16))
    assert out16.dtype == jnp.bfloat16
    _assert_close(out16.astype(jnp.float32), jax.jit(model.apply)(variables, x), "bf16", 0.05)


def test_input_validation():
    model = create_model("resnet8", 10)
    with pytest.raises(ValueError, match="NHWC"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 32, 32)))
