"""Multi-head attention against a naive einsum, and the chunked KV cache against full attention."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import axes
from lmjax.layers import MultiHeadAttention, dot_product_attention, masks

KEY = jax.random.key(0)
B, L, E, H, D = 2, 6, 8, 2, 4


def naive_attention(params, x, mask, window=0):
    """Per-head loops in float64 numpy: softmax(q k^T / sqrt(D) masked) v, then the out kernel."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), nn.unbox(params))
    x = np.asarray(x, np.float64)
    q = np.einsum("ble,ehd->blhd", x, p["query"]["kernel"]) + p["query"]["bias"]
    k = np.einsum("ble,ehd->blhd", x, p["key"]["kernel"]) + p["key"]["bias"]
    v = np.einsum("ble,ehd->blhd", x, p["value"]["kernel"]) + p["value"]["bias"]
    out = np.zeros_like(q)
    for b in range(x.shape[0]):
        for h in range(q.shape[2]):
            logits = q[b, :, h] @ k[b, :, h].T / np.sqrt(q.shape[-1])
            allowed = np.broadcast_to(np.asarray(mask), (x.shape[0], 1) + logits.shape)[b, 0]
            if window:
                i = np.arange(logits.shape[0])
                allowed = allowed & (np.abs(i[:, None] - i[None, :]) < window)
            logits = np.where(allowed, logits, -np.inf)
            with np.errstate(invalid="ignore"):  # padding rows (no allowed key) become NaN
                weights = np.exp(logits - logits.max(-1, keepdims=True))
                weights /= weights.sum(-1, keepdims=True)
            out[b, :, h] = weights @ v[b, :, h]
    return np.einsum("blhd,hde->ble", out, p["out"]["kernel"]) + p["out"]["bias"]


@pytest.fixture(scope="module")
def setup():
    layer = MultiHeadAttention(num_heads=H, head_dim=D)
    x = jax.random.normal(KEY, (B, L, E))
    variables = layer.init(KEY, x)
    return layer, x, variables["params"]


def test_parameter_shapes_and_axes(setup):
    _, _, params = setup
    boxed = jax.tree_util.tree_flatten_with_path(
        params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
    )[0]
    found = {"/".join(k.key for k in path): (v.names, v.value.shape) for path, v in boxed}
    assert found["query/kernel"] == ((axes.EMBED, axes.HEADS, axes.KV), (E, H, D))
    assert found["value/bias"] == ((axes.HEADS, axes.KV), (H, D))
    assert found["out/kernel"] == ((axes.HEADS, axes.KV, axes.EMBED), (H, D, E))
    assert found["out/bias"] == ((axes.EMBED,), (E,))


@pytest.mark.parametrize("window", [0, 2])
def test_matches_naive_attention(setup, window):
    layer, x, params = setup
    segments = jnp.array([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 1, 1]])
    mask = masks.decoder_mask(L, segments)
    out = layer.apply({"params": params}, x, mask=mask, window=window)
    expected = naive_attention(params, x, mask, window)
    real = np.asarray(segments) != 0  # the padding row is fully masked: no reference value
    np.testing.assert_allclose(np.asarray(out)[real], expected[real], rtol=1e-5, atol=1e-5)


def test_fully_masked_rows_are_finite():
    q = jnp.ones((1, 2, 1, 4))
    out, weights = dot_product_attention(q, q, q, mask=jnp.zeros((1, 1, 2, 2), bool))
    assert np.isfinite(np.asarray(out)).all()
    np.testing.assert_allclose(weights, 0.5)


def test_bias_scale_and_bf16_softmax_in_float32():
    q = jax.random.normal(KEY, (1, 3, 2, 4)).astype(jnp.bfloat16)
    bias = jnp.arange(9, dtype=jnp.float32).reshape(1, 1, 3, 3)
    out, weights = dot_product_attention(q, q, q, bias=bias, scale=1.0, dtype=jnp.bfloat16)
    assert weights.dtype == jnp.float32 and out.dtype == jnp.bfloat16
    qf = q.astype(jnp.float32)
    logits = jnp.einsum("bqhd,bkhd->bhqk", qf, qf) + bias
    np.testing.assert_allclose(weights, jax.nn.softmax(logits), atol=1e-5)


def test_attention_dropout_needs_rng_and_changes_output(setup):
    layer = MultiHeadAttention(num_heads=H, head_dim=D, dropout_rate=0.5)
    _, x, params = setup
    base = layer.apply({"params": params}, x)
    noisy = layer.apply({"params": params}, x, deterministic=False, rngs={"dropout": KEY})
    assert not np.allclose(base, noisy)


def _decode(layer, params, x, chunks, segment_ids=None, window=0):
    cache = layer.init(KEY, jnp.zeros_like(x), decode=True)["cache"]
    assert all(np.all(np.asarray(leaf) == 0) for leaf in jax.tree_util.tree_leaves(cache))
    outs, start = [], 0
    for size in chunks:
        seg = None if segment_ids is None else segment_ids[:, start : start + size]
        out, mutated = layer.apply(
            {"params": params, "cache": cache},
            x[:, start : start + size],
            segment_ids=seg,
            window=window,
            decode=True,
            mutable=["cache"],
        )
        cache = mutated["cache"]
        assert int(cache["cache_index"]) == start + size
        outs.append(out)
        start += size
    return jnp.concatenate(outs, axis=1), cache


@pytest.mark.parametrize("window", [0, 3])
def test_chunked_cache_equals_full_attention(setup, window):
    layer, x, params = setup
    full = layer.apply({"params": params}, x, mask=masks.causal_mask(L), window=window)
    decoded, cache = _decode(layer, params, x, chunks=(3, 1, 2), window=window)
    np.testing.assert_allclose(decoded, full, rtol=1e-5, atol=1e-5)
    assert cache["cached_key"].shape == (B, L, H, D)
    np.testing.assert_array_equal(cache["cached_segment_ids"], np.ones((B, L)))


def test_left_padded_cache_ignores_pad_keys(setup):
    layer, x, params = setup
    segments = jnp.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    full = layer.apply({"params": params}, x, mask=masks.decoder_mask(L, segments))
    # Prefill 4 slots with the pad marks, then two single tokens without segment ids.
    prefill_segments = jnp.concatenate([segments[:, :4], jnp.ones((B, 2), jnp.int32)], axis=1)
    decoded, cache = _decode(layer, params, x, chunks=(4, 1, 1), segment_ids=prefill_segments)
    real = np.asarray(segments) != 0
    np.testing.assert_allclose(np.asarray(decoded)[real], np.asarray(full)[real], atol=1e-5)
    np.testing.assert_array_equal(cache["cached_segment_ids"], segments)


def test_decode_without_cache_is_a_clear_error(setup):
    layer, x, params = setup
    with pytest.raises(ValueError, match="needs a KV cache"):
        layer.apply({"params": params}, x, decode=True, mutable=["cache"])
