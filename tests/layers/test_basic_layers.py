"""Dense, norms, embeddings and MLP against plain jnp formulas; axes and dtypes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import axes
from lmjax.layers import (
    MLP,
    DenseGeneral,
    Embed,
    FactorizedEmbed,
    LayerNorm,
    PositionEmbed,
    RMSNorm,
    TypeEmbed,
    activation_fn,
    sinusoidal_positions,
)

KEY = jax.random.key(0)


def _names_and_shapes(variables):
    boxed = jax.tree_util.tree_leaves(
        variables["params"], is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
    )
    return [(leaf.names, leaf.value.shape) for leaf in boxed]


def test_dense_general_multi_axis_matches_einsum():
    x = jax.random.normal(KEY, (2, 3, 4, 5))  # [B, L, H, D]
    layer = DenseGeneral(6, kernel_axes=(axes.HEADS, axes.KV, axes.EMBED), axis=(-2, -1))
    variables = layer.init(KEY, x)
    params = nn.unbox(variables["params"])
    assert params["kernel"].shape == (4, 5, 6) and params["bias"].shape == (6,)
    expected = jnp.einsum("blhd,hde->ble", x, params["kernel"]) + params["bias"]
    np.testing.assert_allclose(layer.apply(variables, x), expected, rtol=1e-5, atol=1e-5)
    assert _names_and_shapes(variables) == [
        ((axes.EMBED,), (6,)),
        ((axes.HEADS, axes.KV, axes.EMBED), (4, 5, 6)),
    ]


def test_dense_general_init_sees_flat_fan_in():
    # variance_scaling(1, fan_in) on a [E, H, D] kernel must use fan_in = E, not E * H.
    layer = DenseGeneral((8, 16), kernel_axes=(axes.EMBED, axes.HEADS, axes.KV), use_bias=False)
    kernel = nn.unbox(layer.init(KEY, jnp.ones((1, 256)))["params"])["kernel"]
    assert kernel.shape == (256, 8, 16)
    assert abs(float(jnp.std(kernel)) - 256**-0.5) < 0.1 * 256**-0.5


def test_dense_general_rejects_wrong_axis_names():
    layer = DenseGeneral(4, kernel_axes=(axes.EMBED,))
    with pytest.raises(ValueError, match="one logical name per kernel dimension"):
        layer.init(KEY, jnp.ones((1, 3)))


def test_dense_general_casts_to_compute_dtype():
    layer = DenseGeneral(4, kernel_axes=(axes.EMBED, axes.MLP), dtype=jnp.bfloat16)
    variables = layer.init(KEY, jnp.ones((1, 3)))
    assert nn.unbox(variables["params"])["kernel"].dtype == jnp.float32
    assert layer.apply(variables, jnp.ones((1, 3))).dtype == jnp.bfloat16


def test_layer_norm_and_rms_norm_formulas():
    x = jax.random.normal(KEY, (2, 3, 8)) * 3 + 1
    ln = LayerNorm(epsilon=1e-5)
    variables = ln.init(KEY, x)
    expected = (x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(ln.apply(variables, x), expected, rtol=1e-5, atol=1e-5)
    assert _names_and_shapes(variables) == [((axes.NORM,), (8,)), ((axes.NORM,), (8,))]

    rms = RMSNorm(epsilon=1e-6)
    variables = rms.init(KEY, x)
    expected = x / jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(rms.apply(variables, x), expected, rtol=1e-5, atol=1e-5)
    assert list(nn.unbox(variables["params"])) == ["scale"]


def test_norm_in_float32_returns_compute_dtype():
    x = (jax.random.normal(KEY, (2, 8)) * 100).astype(jnp.bfloat16)
    ln = LayerNorm(dtype=jnp.bfloat16)
    y = ln.apply(ln.init(KEY, x), x)
    assert y.dtype == jnp.bfloat16
    reference = LayerNorm().apply(ln.init(KEY, x), x.astype(jnp.float32))
    np.testing.assert_allclose(y.astype(jnp.float32), reference, atol=2e-2)


def test_embed_lookup_and_tied_logits_float32():
    embed = Embed(10, 4, dtype=jnp.bfloat16)
    ids = jnp.array([[1, 9, 0]])
    variables = embed.init(KEY, ids)
    table = nn.unbox(variables["params"])["embedding"]
    rows = embed.apply(variables, ids)
    assert rows.dtype == jnp.bfloat16
    np.testing.assert_allclose(rows.astype(jnp.float32), table[ids], atol=1e-2)
    h = jax.random.normal(KEY, (1, 3, 4))
    logits = embed.apply(variables, h, method=Embed.attend)
    assert logits.dtype == jnp.float32 and logits.shape == (1, 3, 10)
    np.testing.assert_allclose(logits, h @ table.T, atol=0.05)
    with pytest.raises(TypeError, match="integer"):
        embed.apply(variables, jnp.ones((1, 2)))


def test_position_and_type_tables_axes():
    pos = PositionEmbed(6, 4)
    assert _names_and_shapes(pos.init(KEY, jnp.arange(3)))[0] == (
        (axes.POSITION, axes.EMBED),
        (6, 4),
    )
    typ = TypeEmbed(2, 4)
    assert _names_and_shapes(typ.init(KEY, jnp.zeros(3, jnp.int32)))[0] == (
        (axes.TYPE, axes.EMBED),
        (2, 4),
    )


def test_sinusoidal_positions_match_paper_formula():
    positions = np.arange(5)
    d = 8
    enc = np.asarray(sinusoidal_positions(positions, d, interleave=True))
    for p in positions:
        for i in range(d // 2):
            angle = p / 10000 ** (2 * i / d)
            np.testing.assert_allclose(enc[p, 2 * i], np.sin(angle), atol=1e-6)
            np.testing.assert_allclose(enc[p, 2 * i + 1], np.cos(angle), atol=1e-6)
    concat = np.asarray(sinusoidal_positions(positions, d))
    np.testing.assert_allclose(concat[:, : d // 2], enc[:, 0::2], atol=1e-6)
    np.testing.assert_allclose(concat[:, d // 2 :], enc[:, 1::2], atol=1e-6)


def test_factorized_embed_small_table_then_projection():
    layer = FactorizedEmbed(num_embeddings=10, factor_dim=3, features=8)
    ids = jnp.array([[2, 5]])
    variables = layer.init(KEY, ids, method=FactorizedEmbed.embed_and_project)
    params = nn.unbox(variables["params"])
    assert params["embedding"].shape == (10, 3)
    assert params["projection"]["kernel"].shape == (3, 8)
    out = layer.apply(variables, ids, method=FactorizedEmbed.embed_and_project)
    expected = (
        params["embedding"][ids] @ params["projection"]["kernel"] + params["projection"]["bias"]
    )
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    small = jnp.ones((1, 2, 3))
    logits = layer.apply(variables, small, method=FactorizedEmbed.attend)
    np.testing.assert_allclose(logits, small @ params["embedding"].T, rtol=1e-5)
    names = dict((s, n) for n, s in _names_and_shapes(variables))
    assert names[(10, 3)] == (axes.VOCAB, axes.FACTOR)
    assert names[(3, 8)] == (axes.FACTOR, axes.EMBED)


def test_activations():
    x = jnp.linspace(-3, 3, 7)
    from jax.scipy.special import erf

    np.testing.assert_allclose(
        activation_fn("gelu")(x), 0.5 * x * (1 + erf(x / np.sqrt(2))), atol=1e-6
    )
    tanh_gelu = 0.5 * x * (1 + jnp.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(activation_fn("gelu_tanh")(x), tanh_gelu, atol=1e-6)
    np.testing.assert_allclose(activation_fn("swish")(x), x * jax.nn.sigmoid(x), atol=1e-6)
    np.testing.assert_allclose(activation_fn("relu")(x), np.maximum(x, 0))
    with pytest.raises(ValueError, match="gated_gelu"):
        activation_fn("gleu")


@pytest.mark.parametrize("activation", ["gelu", "gated_gelu"])
def test_mlp_matches_formula(activation):
    x = jax.random.normal(KEY, (2, 3, 4))
    mlp = MLP(hidden_dim=6, activation=activation)
    variables = mlp.init(KEY, x)
    p = nn.unbox(variables["params"])
    if activation == "gated_gelu":
        assert set(p) == {"wi_0", "wi_1", "wo"}
        gate = x @ p["wi_0"]["kernel"] + p["wi_0"]["bias"]
        lin = x @ p["wi_1"]["kernel"] + p["wi_1"]["bias"]
        h = jax.nn.gelu(gate, approximate=True) * lin
    else:
        assert set(p) == {"wi", "wo"}
        h = jax.nn.gelu(x @ p["wi"]["kernel"] + p["wi"]["bias"], approximate=False)
    expected = h @ p["wo"]["kernel"] + p["wo"]["bias"]
    np.testing.assert_allclose(mlp.apply(variables, x), expected, rtol=1e-5, atol=1e-5)


def test_mlp_dropout_is_active_only_when_not_deterministic():
    x = jnp.ones((1, 4, 4))
    mlp = MLP(hidden_dim=32, dropout_rate=0.5)
    variables = mlp.init(KEY, x)
    base = mlp.apply(variables, x)
    np.testing.assert_array_equal(base, mlp.apply(variables, x, deterministic=True))
    noisy = mlp.apply(variables, x, deterministic=False, rngs={"dropout": KEY})
    assert not np.allclose(base, noisy)
