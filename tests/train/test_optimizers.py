"""Schedules, weight-decay masks, clipping and the three optimizers of lmjax.train.optimizers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmjax.train import optimizers


def _cfg(**overrides):
    cfg = dict(
        name="adamw",
        learning_rate=1.0,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        weight_decay=0.0,
        weight_decay_mask="matrices",
        schedule="constant",
        warmup_steps=0,
        end_learning_rate_fraction=0.0,
        clip_grad_norm=0.0,
    )
    cfg.update(overrides)
    return cfg


def test_warmup_cosine_reaches_peak_then_end_fraction():
    schedule = optimizers.make_schedule(
        _cfg(
            schedule="warmup_cosine",
            learning_rate=2.0,
            warmup_steps=10,
            end_learning_rate_fraction=0.1,
        ),
        110,
    )
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(1.0)
    assert float(schedule(10)) == pytest.approx(2.0)
    assert float(schedule(60)) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5), rel=1e-5)  # half-way down
    assert float(schedule(110)) == pytest.approx(0.2, rel=1e-5)
    assert float(schedule(500)) == pytest.approx(0.2, rel=1e-5)


def test_warmup_linear_is_gpt1_schedule():
    # openai/finetune-transformer-lm opt.py: x/warmup while x <= warmup, then 1 - x (x = t / T).
    total, warmup_fraction = 1000, 0.002
    schedule = optimizers.make_schedule(
        _cfg(
            schedule="warmup_linear",
            learning_rate=6.25e-5,
            warmup_steps=int(total * warmup_fraction),
        ),
        total,
    )

    def reference(t):
        x = t / total
        return 6.25e-5 * (x / warmup_fraction if x < warmup_fraction else 1 - x)

    for t in (0, 1, 2, 3, 500, 999, 1000):
        assert float(schedule(t)) == pytest.approx(reference(t), rel=1e-5, abs=1e-12), t


def test_warmup_rsqrt_and_constant():
    rsqrt = optimizers.make_schedule(
        _cfg(schedule="warmup_rsqrt", learning_rate=1.0, warmup_steps=100), 10_000
    )
    assert float(rsqrt(50)) == pytest.approx(0.5)
    assert float(rsqrt(100)) == pytest.approx(1.0)
    assert float(rsqrt(400)) == pytest.approx(0.5)
    constant = optimizers.make_schedule(_cfg(schedule="constant", learning_rate=3e-4), 100)
    assert float(constant(0)) == pytest.approx(3e-4) and float(constant(99)) == pytest.approx(3e-4)


@pytest.mark.parametrize(
    "overrides, total, message",
    [
        (dict(schedule="linear_warmup"), 10, "optimizer.schedule='linear_warmup'"),
        (dict(warmup_steps=20), 10, "warmup_steps=20"),
        (dict(end_learning_rate_fraction=2.0), 10, "end_learning_rate_fraction"),
        (dict(), 0, "train.steps=0"),
    ],
)
def test_bad_schedule_config_is_a_clear_error(overrides, total, message):
    with pytest.raises(ValueError, match=message):
        optimizers.make_schedule(_cfg(**overrides), total)


def test_bad_optimizer_config_is_a_clear_error():
    with pytest.raises(ValueError, match="optimizer.name='sgd'.*adamw, adafactor, lamb"):
        optimizers.make_optimizer(_cfg(name="sgd"), 10)
    with pytest.raises(ValueError, match="weight_decay_mask='vectors'"):
        optimizers.make_optimizer(_cfg(weight_decay_mask="vectors"), 10)


def _params():
    return {
        "layer": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones((3,))},
        "norm": {"scale": jnp.ones((4,))},
        "scanned": {"bias": jnp.ones((2, 3)), "kernel": jnp.ones((2, 4, 3))},
        "embedding": jnp.ones((8, 4)),
    }


@pytest.mark.parametrize("name", ["adamw", "lamb", "adafactor"])
@pytest.mark.parametrize("mask", ["matrices", "all", "none"])
def test_weight_decay_mask_decides_which_params_decay(name, mask):
    # With zero gradients the only update is weight decay.
    tx = optimizers.make_optimizer(
        _cfg(name=name, learning_rate=0.1, weight_decay=0.5, weight_decay_mask=mask), 10
    )
    params = _params()
    updates, _ = tx.update(jax.tree_util.tree_map(jnp.zeros_like, params), tx.init(params), params)
    decayed = {
        path: bool(np.any(np.asarray(u) != 0))
        for path, u in zip(
            [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(updates)[0]],
            jax.tree_util.tree_leaves(updates),
            strict=True,
        )
    }
    matrices = {"['embedding']", "['layer']['kernel']", "['scanned']['kernel']"}
    expected = {"matrices": matrices, "all": set(decayed), "none": set()}[mask]
    assert {p for p, d in decayed.items() if d} == expected


def test_adamw_decay_is_learning_rate_times_weight_decay():
    tx = optimizers.make_optimizer(_cfg(learning_rate=0.1, weight_decay=0.5), 10)
    params = {"kernel": jnp.full((2, 2), 2.0)}
    updates, _ = tx.update({"kernel": jnp.zeros((2, 2))}, tx.init(params), params)
    np.testing.assert_allclose(updates["kernel"], -0.1 * 0.5 * 2.0, rtol=1e-6)


def test_global_norm_clipping_bounds_the_gradient_seen_by_adam():
    params = {"kernel": jnp.zeros((3, 3))}
    grads = {"kernel": jnp.full((3, 3), 100.0)}  # global norm 300
    tx = optimizers.make_optimizer(_cfg(clip_grad_norm=1.0), 10)
    _, state = tx.update(grads, tx.init(params), params)
    first_moments = [
        s.mu
        for s in jax.tree_util.tree_leaves(state, is_leaf=lambda s: hasattr(s, "mu"))
        if hasattr(s, "mu")
    ]
    # Adam's first moment after one step is (1 - b1) * clipped gradient, whose norm is the clip.
    assert float(optax.tree.norm(first_moments[0])) == pytest.approx(0.1 * 1.0, rel=1e-5)


@pytest.mark.parametrize("name", ["adamw", "lamb", "adafactor"])
def test_each_optimizer_descends_a_quadratic(name):
    tx = optimizers.make_optimizer(_cfg(name=name, learning_rate=0.05, schedule="constant"), 50)
    target = jnp.arange(12.0).reshape(3, 4) / 10.0
    params = {"kernel": jnp.ones((3, 4))}
    state = tx.init(params)

    def loss(p):
        return jnp.sum((p["kernel"] - target) ** 2)

    start = float(loss(params))
    for _ in range(20):
        grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    assert float(loss(params)) < 0.5 * start
    assert math.isfinite(float(loss(params)))
