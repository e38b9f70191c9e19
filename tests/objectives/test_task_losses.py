"""Fine-tuning losses (lmjax.objectives.task_losses) against numpy, padding rows, LM term, jit."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import objectives
from lmjax.models import heads
from lmjax.objectives import task_losses
from lmjax.train import step as train_step_lib

RNG = np.random.default_rng(0)
WEIGHTS = np.array([1.0, 1.0, 0.0, 1.0], np.float32)  # row 2 pads the last eval batch
REAL = WEIGHTS > 0


def _np_ce(logits, labels):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]


def _loss(name, outputs, batch, **options):
    objective = objectives.get(name, model_inputs=("inputs",), **options)
    return objective.loss(outputs, batch)


def test_registered_objectives_and_options():
    for name in ("classification", "regression", "multiple_choice", "span_extraction",
                 "token_classification"):
        objective = objectives.get(name, model_inputs=["inputs", "attention_mask"], lm_coef=0.5)
        assert objective.name == name
        assert objective.model_inputs == ("inputs", "attention_mask")
        batch = {"inputs": jnp.ones((2, 3), jnp.int32)}
        assert objective.corrupt(jax.random.key(0), batch) is batch
    with pytest.raises(ValueError, match="model_inputs"):
        objectives.get("classification")
    with pytest.raises(ValueError, match="lm_coef=-1.0 must be >= 0"):
        objectives.get("classification", model_inputs=("inputs",), lm_coef=-1.0)
    with pytest.raises(ValueError, match="including 'inputs'"):
        objectives.get("regression", model_inputs=("attention_mask",))
    with pytest.raises(ValueError, match="head='nli' must be one of"):
        task_losses.task_objective("nli", model_inputs=("inputs",))


def test_classification_ignores_padding_rows():
    logits = RNG.normal(size=(4, 3)).astype(np.float32)
    labels = np.array([2, 0, -1, 1], np.int32)  # NO_LABEL on the padding row
    loss, metrics = _loss("classification", {"class_logits": jnp.asarray(logits)},
                          {"labels": jnp.asarray(labels), "example_weights": WEIGHTS})
    expected = _np_ce(logits[REAL], labels[REAL]).mean()
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    hits = (logits.argmax(-1) == labels)[REAL].mean()
    np.testing.assert_allclose(metrics["accuracy"], hits, rtol=1e-6)
    assert float(metrics["num_tokens"]) == 3.0
    assert set(metrics) == {"loss", "task_loss", "accuracy", "num_tokens"}
    assert all(v.dtype == jnp.float32 and v.shape == () for v in metrics.values())
    unweighted, _ = _loss("classification", {"class_logits": jnp.asarray(logits[REAL])},
                          {"labels": jnp.asarray(labels[REAL])})
    np.testing.assert_allclose(unweighted, expected, rtol=1e-5)


def test_multiple_choice_softmax_over_choices():
    logits = RNG.normal(size=(4, 5)).astype(np.float32)
    labels = np.array([4, 0, 7, 2], np.int32)  # 7 is out of range on the padding row
    loss, metrics = _loss("multiple_choice", {"choice_logits": jnp.asarray(logits)},
                          {"labels": jnp.asarray(labels), "example_weights": WEIGHTS})
    np.testing.assert_allclose(loss, _np_ce(logits[REAL], labels[REAL]).mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"],
                               (logits.argmax(-1) == labels)[REAL].mean(), rtol=1e-6)


def test_regression_mse_ignores_padding_rows_even_nan_labels():
    prediction = RNG.normal(size=(4,)).astype(np.float32)
    labels = np.array([0.5, 4.0, np.nan, 2.5], np.float32)
    batch = {"labels": jnp.asarray(labels), "example_weights": WEIGHTS}
    loss, metrics = _loss("regression", {"prediction": jnp.asarray(prediction)}, batch)
    expected = np.mean((prediction[REAL] - labels[REAL]) ** 2)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["mse"], expected, rtol=1e-5)
    assert "accuracy" not in metrics
    grad = jax.grad(lambda p: _loss("regression", {"prediction": p}, batch)[0])(
        jnp.asarray(prediction)
    )
    assert np.isfinite(np.asarray(grad)).all() and float(grad[2]) == 0.0


def test_span_loss_is_mean_of_start_and_end_cross_entropy():
    start = RNG.normal(size=(4, 6)).astype(np.float32)
    end = RNG.normal(size=(4, 6)).astype(np.float32)
    starts = np.array([1, 0, -5, 3], np.int32)
    ends = np.array([2, 0, 99, 5], np.int32)
    outputs = {"start_logits": jnp.asarray(start), "end_logits": jnp.asarray(end)}
    batch = {"start_positions": jnp.asarray(starts), "end_positions": jnp.asarray(ends),
             "example_weights": WEIGHTS}
    loss, metrics = _loss("span_extraction", outputs, batch)
    expected = (_np_ce(start[REAL], starts[REAL]).mean() + _np_ce(end[REAL], ends[REAL]).mean()) / 2
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    start_hit = start.argmax(-1) == starts
    end_hit = end.argmax(-1) == ends
    np.testing.assert_allclose(metrics["start_accuracy"], start_hit[REAL].mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["accuracy"], (start_hit & end_hit)[REAL].mean(), rtol=1e-6)
    assert float(metrics["num_tokens"]) == 3.0


def test_token_classification_weights_tokens_and_rows():
    logits = RNG.normal(size=(4, 5, 3)).astype(np.float32)
    labels = RNG.integers(0, 3, size=(4, 5)).astype(np.int32)
    label_weights = np.ones((4, 5), np.float32)
    label_weights[0, 3:] = 0.0
    labels[0, 3:] = -100  # HF's ignore index at unweighted tokens
    labels[2] = -1
    batch = {"labels": jnp.asarray(labels), "label_weights": jnp.asarray(label_weights),
             "example_weights": WEIGHTS}
    loss, metrics = _loss("token_classification", {"token_logits": jnp.asarray(logits)}, batch)
    keep = (label_weights * WEIGHTS[:, None]) > 0
    np.testing.assert_allclose(loss, _np_ce(logits[keep], labels[keep]).mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"],
                               (logits.argmax(-1) == labels)[keep].mean(), rtol=1e-6)
    assert float(metrics["num_tokens"]) == keep.sum() == 13


def test_lm_coef_adds_the_auxiliary_lm_loss_over_weighted_positions():
    b, c, length, vocab = 4, 2, 5, 7
    choice_logits = RNG.normal(size=(b, c)).astype(np.float32)
    lm_logits = RNG.normal(size=(b, c, length, vocab)).astype(np.float32)
    lm_targets = RNG.integers(0, vocab, size=(b, c, length)).astype(np.int32)
    lm_weights = np.ones((b, c, length), np.float32)
    lm_weights[..., -1] = 0.0  # no next token after the last position
    lm_weights[1, 0, 2:] = 0.0  # padding
    labels = np.array([1, 0, 1, 1], np.int32)
    outputs = {"choice_logits": jnp.asarray(choice_logits), "lm_logits": jnp.asarray(lm_logits)}
    batch = {"labels": jnp.asarray(labels), "example_weights": WEIGHTS,
             "lm_targets": jnp.asarray(lm_targets), "lm_weights": jnp.asarray(lm_weights)}
    loss, metrics = _loss("multiple_choice", outputs, batch, lm_coef=0.5)
    keep = (lm_weights * WEIGHTS[:, None, None]) > 0
    lm = _np_ce(lm_logits[keep], lm_targets[keep]).mean()
    task = _np_ce(choice_logits[REAL], labels[REAL]).mean()
    np.testing.assert_allclose(metrics["lm_loss"], lm, rtol=1e-5)
    np.testing.assert_allclose(metrics["task_loss"], task, rtol=1e-5)
    np.testing.assert_allclose(loss, task + 0.5 * lm, rtol=1e-5)
    np.testing.assert_allclose(metrics["loss"], loss)
    no_lm, no_lm_metrics = _loss("multiple_choice", outputs, batch)
    np.testing.assert_allclose(no_lm, task, rtol=1e-5)
    assert "lm_loss" not in no_lm_metrics


def test_lm_coef_errors_name_the_fix():
    outputs = {"class_logits": jnp.zeros((2, 3))}
    batch = {"labels": jnp.zeros((2,), jnp.int32)}
    with pytest.raises(ValueError, match="only a causal"):
        _loss("classification", outputs, batch, lm_coef=0.5)
    outputs["lm_logits"] = jnp.zeros((2, 4, 5))
    with pytest.raises(ValueError, match="lm_targets"):
        _loss("classification", outputs, batch, lm_coef=0.5)
    batch.update(lm_targets=jnp.zeros((2, 3), jnp.int32), lm_weights=jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"batch\['lm_targets'\] has shape"):
        _loss("classification", outputs, batch, lm_coef=0.5)
    with pytest.raises(ValueError, match=r"batch\['labels'\] has shape"):
        _loss("classification", {"class_logits": jnp.zeros((2, 3))},
              {"labels": jnp.zeros((3,), jnp.int32)})
    with pytest.raises(ValueError, match="example_weights has shape"):
        _loss("classification", {"class_logits": jnp.zeros((2, 3))},
              {"labels": jnp.zeros((2,), jnp.int32), "example_weights": jnp.ones((3,))})


def _gpt_multiple_choice():
    backbone = dict(family="gpt", vocab_size=32, max_len=8, num_layers=1, embed_dim=16,
                    num_heads=2, mlp_dim=32, norm="post", final_norm=False, scan_layers=False)
    config = heads.TaskConfig(backbone=backbone, head="multiple_choice", extract_id=31,
                              share_choice_dropout=True)
    ids = np.random.default_rng(1).integers(1, 30, size=(4, 2, 8)).astype(np.int32)
    ids[..., 5] = 31
    mask = np.ones_like(ids)
    mask[..., 6:] = 0
    ids = np.where(mask == 1, ids, 0)
    lm_weights = np.zeros(ids.shape, np.float32)
    lm_weights[..., :5] = 1.0  # next-token targets over non-pad positions (M[:, 1:])
    batch = {
        "inputs": jnp.asarray(ids),
        "attention_mask": jnp.asarray(mask),
        "labels": jnp.array([0, 1, 1, 0], jnp.int32),
        "example_weights": jnp.asarray(WEIGHTS),
        "lm_targets": jnp.asarray(np.roll(ids, -1, axis=-1)),
        "lm_weights": jnp.asarray(lm_weights),
    }
    return heads.TaskModel(config), batch


def test_jit_and_grad_through_task_model_and_loss():
    model, batch = _gpt_multiple_choice()
    objective = objectives.get("multiple_choice", model_inputs=("inputs", "attention_mask"),
                               lm_coef=0.5)
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), batch["inputs"])["params"])

    @jax.jit
    def loss_and_grad(params, batch, key):
        def loss_fn(p):
            inputs = {k: batch[k] for k in objective.model_inputs}
            outputs = model.apply({"params": p}, **inputs, deterministic=False,
                                  rngs={"dropout": key})
            return objective.loss(outputs, batch)

        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    (loss, metrics), grads = loss_and_grad(params, batch, jax.random.key(1))
    assert np.isfinite(float(loss)) and float(metrics["lm_loss"]) > 0
    flat = jax.tree_util.tree_leaves(grads)
    assert all(np.isfinite(np.asarray(g)).all() for g in flat)
    assert float(jnp.abs(grads["head"]["classifier"]["kernel"]).sum()) > 0
    assert float(jnp.abs(grads["backbone"]["token_embed"]["embedding"]).sum()) > 0
    # The padding row (weight 0) can hold anything: the loss and gradients do not move.
    changed = dict(batch, inputs=batch["inputs"].at[2].set(7), labels=batch["labels"].at[2].set(9))
    (loss2, _), grads2 = loss_and_grad(params, changed, jax.random.key(1))
    np.testing.assert_allclose(loss2, loss, rtol=1e-6)
    np.testing.assert_allclose(grads2["head"]["classifier"]["kernel"],
                               grads["head"]["classifier"]["kernel"], rtol=1e-5, atol=1e-7)


def test_eval_step_counts_only_real_examples():
    model, batch = _gpt_multiple_choice()
    objective = objectives.get("multiple_choice", model_inputs=("inputs", "attention_mask"))
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), batch["inputs"])["params"])
    sums = jax.jit(lambda p, b: train_step_lib.eval_step(
        p, b, jax.random.key(0), model=model, objective=objective))(params, batch)
    means = train_step_lib.eval_means(sums)
    assert means["num_tokens"] == 3.0
    outputs = jax.jit(lambda p: model.apply({"params": p}, batch["inputs"],
                                            attention_mask=batch["attention_mask"]))(params)
    hits = np.asarray(outputs["choice_logits"]).argmax(-1) == np.asarray(batch["labels"])
    np.testing.assert_allclose(means["accuracy"], hits[REAL].mean(), rtol=1e-6)
