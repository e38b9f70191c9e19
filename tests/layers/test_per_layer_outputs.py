"""TransformerStack(per_layer_outputs=True): same parameters and output, per-layer states/scores."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.layers import BlockConfig, MultiHeadAttention, TransformerStack, masks

CONFIG = BlockConfig(num_heads=2, head_dim=4, mlp_dim=16, norm_placement="post")
X = jax.random.normal(jax.random.key(1), (2, 5, 8))
MASK = masks.key_padding_mask(jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]), 5)


@pytest.mark.parametrize("scan", [False, True])
@pytest.mark.parametrize("num_groups", [0, 2])
def test_per_layer_outputs_match_layer_by_layer(scan, num_groups):
    stack = TransformerStack(CONFIG, num_layers=4, scan=scan, num_groups=num_groups)
    per = TransformerStack(
        CONFIG, num_layers=4, scan=scan, num_groups=num_groups, per_layer_outputs=True
    )
    variables = stack.init(jax.random.key(0), X, MASK)
    assert jax.tree.structure(variables) == jax.tree.structure(
        jax.eval_shape(per.init, jax.random.key(0), X, MASK)
    )
    y = stack.apply(variables, X, MASK)
    y2, outputs = per.apply(variables, X, MASK)
    np.testing.assert_array_equal(y2, y)
    assert outputs["hidden_states"].shape == (4, 2, 5, 8)
    assert outputs["attention_scores"].shape == (4, 2, 2, 5, 5)
    assert outputs["attention_scores"].dtype == jnp.float32
    np.testing.assert_allclose(outputs["hidden_states"][-1], y, atol=1e-6)
    # Layer i's state is the output of the first i + 1 layers: rerun a shorter stack.
    if not scan and num_groups == 0:
        params = variables["params"]
        short = {"params": {"layers_0": params["layers_0"], "layers_1": params["layers_1"]}}
        two = TransformerStack(CONFIG, num_layers=2).apply(short, X, MASK)
        np.testing.assert_allclose(outputs["hidden_states"][1], two, atol=1e-6)


def test_remat_keeps_per_layer_outputs():
    plain = TransformerStack(CONFIG, num_layers=2, scan=True, per_layer_outputs=True)
    variables = plain.init(jax.random.key(0), X, MASK)
    remat = TransformerStack(
        CONFIG, num_layers=2, scan=True, per_layer_outputs=True, remat="full"
    )
    a, b = plain.apply(variables, X, MASK), remat.apply(variables, X, MASK)
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, atol=1e-6), a, b)


def test_attention_returns_unmasked_scaled_scores():
    attention = MultiHeadAttention(num_heads=2, head_dim=4, return_scores=True)
    variables = attention.init(jax.random.key(0), X, mask=MASK)
    out, scores = attention.apply(variables, X, mask=MASK)
    plain = MultiHeadAttention(num_heads=2, head_dim=4).apply(variables, X, mask=MASK)
    np.testing.assert_array_equal(out, plain)
    p = nn.unbox(variables["params"])
    q = jnp.einsum("ble,ehd->blhd", X, p["query"]["kernel"]) + p["query"]["bias"]
    k = jnp.einsum("ble,ehd->blhd", X, p["key"]["kernel"]) + p["key"]["bias"]
    np.testing.assert_allclose(scores, jnp.einsum("bqhd,bkhd->bhqk", q, k) / 2.0, atol=1e-5)
