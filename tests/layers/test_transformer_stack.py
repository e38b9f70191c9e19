"""Transformer blocks and stacks: norm placement, scan, remat, shared layers, per-layer windows."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import axes
from lmjax.layers import (
    BlockConfig,
    TransformerBlock,
    TransformerStack,
    masks,
    stack_layer_params,
    unstack_layer_params,
)

KEY = jax.random.key(0)
B, L, E = 2, 5, 8
CONFIG = BlockConfig(num_heads=2, head_dim=4, mlp_dim=16, activation="gelu_tanh")
X = jax.random.normal(jax.random.key(1), (B, L, E))
MASK = masks.causal_mask(L)


def _count(params):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(nn.unbox(params)))


def reference_block(p, x, placement, mask):
    """One block written out with jnp, from the parameter tree."""

    def norm(q, h):
        mean = h.mean(-1, keepdims=True)
        var = ((h - mean) ** 2).mean(-1, keepdims=True)
        return (h - mean) / jnp.sqrt(var + 1e-5) * q["scale"] + q["bias"]

    def attention(q, h):
        proj = lambda name: jnp.einsum("ble,ehd->blhd", h, q[name]["kernel"]) + q[name]["bias"]
        logits = jnp.einsum("bqhd,bkhd->bhqk", proj("query"), proj("key")) / 2.0  # sqrt(D=4)
        weights = jax.nn.softmax(jnp.where(mask, logits, -1e30), axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, proj("value"))
        return jnp.einsum("blhd,hde->ble", out, q["out"]["kernel"]) + q["out"]["bias"]

    def mlp(q, h):
        h = jax.nn.gelu(h @ q["wi"]["kernel"] + q["wi"]["bias"], approximate=True)
        return h @ q["wo"]["kernel"] + q["wo"]["bias"]

    if placement == "pre":
        x = x + attention(p["attention"], norm(p["attention_norm"], x))
        return x + mlp(p["mlp"], norm(p["mlp_norm"], x))
    x = norm(p["attention_norm"], x + attention(p["attention"], x))
    return norm(p["mlp_norm"], x + mlp(p["mlp"], x))


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_block_norm_placement_matches_reference(placement):
    config = BlockConfig(**{**CONFIG.__dict__, "norm_placement": placement})
    block = TransformerBlock(config)
    variables = block.init(KEY, X, MASK)
    params = nn.unbox(variables["params"])
    assert set(params) == {"attention_norm", "attention", "mlp_norm", "mlp"}
    out = block.apply(variables, X, MASK)
    np.testing.assert_allclose(out, reference_block(params, X, placement, MASK), atol=2e-5)
    # The other placement's formula must not match (the test can fail).
    other = "post" if placement == "pre" else "pre"
    assert not np.allclose(out, reference_block(params, X, other, MASK), atol=1e-3)


def test_block_residual_dropout_uses_rng():
    config = BlockConfig(**{**CONFIG.__dict__, "residual_dropout": 0.5})
    block = TransformerBlock(config)
    variables = block.init(KEY, X, MASK)
    base = block.apply(variables, X, MASK)
    noisy = block.apply(variables, X, MASK, deterministic=False, rngs={"dropout": KEY})
    assert not np.allclose(base, noisy)


def test_cross_attention_block():
    config = BlockConfig(**{**CONFIG.__dict__, "cross_attention": True})
    encoded = jax.random.normal(KEY, (B, 3, E))
    block = TransformerBlock(config)
    variables = block.init(KEY, X, MASK, encoded=encoded)
    assert {"cross_attention", "cross_attention_norm"} <= set(variables["params"])
    out1 = block.apply(variables, X, MASK, encoded=encoded)
    out2 = block.apply(variables, X, MASK, encoded=encoded * 2)
    assert out1.shape == (B, L, E) and not np.allclose(out1, out2)
    with pytest.raises(ValueError, match="pass `encoded`"):
        block.apply(variables, X, MASK)


WINDOWS = (0, 2, 0, 2)


@pytest.fixture(scope="module")
def unscanned():
    stack = TransformerStack(CONFIG, num_layers=4, windows=WINDOWS)
    variables = stack.init(KEY, X, MASK)
    return stack, nn.unbox(variables["params"])


def test_unscanned_layout(unscanned):
    _, params = unscanned
    assert sorted(params) == ["layers_0", "layers_1", "layers_2", "layers_3"]


def test_scan_equals_unscanned_for_same_weights(unscanned):
    stack, params = unscanned
    expected = stack.apply({"params": params}, X, MASK)
    scanned = TransformerStack(CONFIG, num_layers=4, windows=WINDOWS, scan=True)
    stacked = stack_layer_params(params, 4)
    assert stacked["layers"]["attention"]["query"]["kernel"].shape == (4, E, 2, 4)
    # The scanned module initialises to the same tree structure and shapes.
    init_shapes = nn.unbox(jax.eval_shape(lambda: scanned.init(KEY, X, MASK))["params"])
    assert jax.tree_util.tree_map(lambda a: a.shape, init_shapes) == jax.tree_util.tree_map(
        lambda a: a.shape, stacked
    )
    out = scanned.apply({"params": stacked}, X, MASK)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    # Round trip of the layout helpers.
    back = unstack_layer_params(stacked)
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, params)


def test_windows_restrict_the_right_layers(unscanned):
    stack, params = unscanned
    dense = TransformerStack(CONFIG, num_layers=4).apply({"params": params}, X, MASK)
    banded = stack.apply({"params": params}, X, MASK)
    # Positions 0 and 1 see no key beyond the band of width 2: identical; later ones differ.
    np.testing.assert_allclose(banded[:, :2], dense[:, :2], atol=1e-6)
    assert not np.allclose(banded[:, 2:], dense[:, 2:], atol=1e-4)


def _loss_and_grads(remat, params):
    stack = TransformerStack(CONFIG, num_layers=2, windows=(0, 2), scan=True, remat=remat)
    loss = lambda p: jnp.sum(stack.apply({"params": p}, X, MASK) ** 2)
    return jax.jit(jax.value_and_grad(loss))(params)


@pytest.fixture(scope="module")
def two_layer_grads(unscanned):
    _, params = unscanned
    stacked = stack_layer_params({k: params[k] for k in ("layers_0", "layers_1")}, 2)
    return stacked, _loss_and_grads("none", stacked)


@pytest.mark.parametrize("policy", ["full", "dots_saveable"])
def test_remat_gives_equal_outputs_and_grads(two_layer_grads, policy):
    params, (value, grads) = two_layer_grads
    remat_value, remat_grads = _loss_and_grads(policy, params)
    np.testing.assert_allclose(remat_value, value, rtol=1e-6)
    # Grads agree up to float32 rounding (key-bias grads are ~0 by softmax shift invariance).
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), remat_grads, grads
    )


def test_shared_layers_have_one_layers_parameters():
    count = lambda module: _count(jax.eval_shape(lambda: module.init(KEY, X, MASK))["params"])
    one_block = count(TransformerBlock(CONFIG))
    for scan in (False, True):
        shared = TransformerStack(CONFIG, num_layers=4, num_groups=1, scan=scan)
        shapes = jax.eval_shape(shared.init, KEY, X, MASK)["params"]
        assert list(shapes) == ["layers_0"]
        assert _count(shapes) == one_block
    assert count(TransformerStack(CONFIG, num_layers=4, num_groups=2)) == 2 * one_block
    assert count(TransformerStack(CONFIG, num_layers=4)) == 4 * one_block


@pytest.mark.parametrize("scan", [False, True])
def test_shared_layers_apply_one_block_repeatedly(scan):
    # ALBERT grouping: 4 layers, 2 groups -> layers 0, 1 use group 0 and layers 2, 3 group 1.
    stack = TransformerStack(CONFIG, num_layers=4, num_groups=2, scan=scan)
    params = nn.unbox(TransformerStack(CONFIG, num_layers=4, num_groups=2).init(KEY, X, MASK))
    params = params["params"]
    block = TransformerBlock(CONFIG)
    expected = X
    for group in (0, 0, 1, 1):
        expected = block.apply({"params": params[f"layers_{group}"]}, expected, MASK)
    np.testing.assert_allclose(stack.apply({"params": params}, X, MASK), expected, atol=1e-5)


def test_scanned_parameters_carry_the_layers_axis():
    stack = TransformerStack(CONFIG, num_layers=3, scan=True)
    boxed = jax.eval_shape(lambda: stack.init(KEY, X, MASK))["params"]
    leaves = jax.tree_util.tree_leaves(
        boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
    )
    assert leaves
    for leaf in leaves:
        assert leaf.names[0] == axes.LAYERS and leaf.value.shape[0] == 3
        assert len(leaf.names) == len(leaf.value.shape)


def test_stack_argument_errors():
    with pytest.raises(ValueError, match="one window per layer"):
        TransformerStack(CONFIG, num_layers=2, windows=(0,)).init(KEY, X, MASK)
    with pytest.raises(ValueError, match="remat"):
        TransformerStack(CONFIG, num_layers=2, remat="sometimes").init(KEY, X, MASK)
    with pytest.raises(ValueError, match="norm_placement"):
        BlockConfig(num_heads=2, head_dim=4, mlp_dim=8, norm_placement="sandwich")
