"""The causal-LM objective on a hand-computed example, and the objective registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import objectives
from lmjax.objectives import causal_lm


def test_weighted_loss_accuracy_and_token_count_by_hand():
    # Vocabulary of 3; two rows of two tokens. Logits chosen so log-softmax is easy:
    # [0, 0, 0] -> every class has probability 1/3; [ln 2, 0, 0] -> probabilities 1/2, 1/4, 1/4.
    ln2 = np.log(2.0)
    logits = jnp.array(
        [[[ln2, 0.0, 0.0], [0.0, 0.0, 0.0]], [[0.0, ln2, 0.0], [5.0, 0.0, 0.0]]], jnp.float32
    )
    targets = jnp.array([[0, 2], [1, 0]])
    weights = jnp.array([[1.0, 1.0], [0.5, 0.0]])
    loss, metrics = causal_lm.causal_lm_loss(
        {"logits": logits}, {"targets": targets, "weights": weights}
    )
    # NLLs: -ln(1/2), -ln(1/3), -ln(1/2), (ignored). Weighted mean over weights 1 + 1 + 0.5.
    expected = (np.log(2) + np.log(3) + 0.5 * np.log(2)) / 2.5
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-6)
    # argmax hits: row 0 token 0 (yes, w 1), row 0 token 1 (argmax 0 != 2, w 1), row 1 token 0
    # (yes, w 0.5), row 1 token 1 (yes but w 0).
    np.testing.assert_allclose(metrics["accuracy"], 1.5 / 2.5, rtol=1e-6)
    np.testing.assert_allclose(metrics["num_tokens"], 2.5)
    assert all(v.dtype == jnp.float32 for v in metrics.values())


def test_loss_is_float32_for_bfloat16_logits_and_zero_weights_are_safe():
    logits = jnp.zeros((1, 2, 4), jnp.bfloat16)
    batch = {"targets": jnp.zeros((1, 2), jnp.int32), "weights": jnp.zeros((1, 2))}
    loss, metrics = jax.jit(causal_lm.causal_lm_loss)({"logits": logits}, batch)
    assert loss.dtype == jnp.float32 and float(loss) == 0.0 and float(metrics["num_tokens"]) == 0
    batch.pop("weights")
    loss, _ = causal_lm.causal_lm_loss({"logits": logits}, batch)
    np.testing.assert_allclose(loss, np.log(4), rtol=1e-3)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="disagree"):
        causal_lm.causal_lm_loss(
            {"logits": jnp.zeros((1, 3, 4))}, {"targets": jnp.zeros((1, 2), jnp.int32)}
        )


def test_objective_registry():
    objective = objectives.get("causal_lm")
    assert isinstance(objective, objectives.Objective)
    assert objective.model_inputs == ("inputs", "positions", "segment_ids")
    batch = {"inputs": jnp.ones((1, 2), jnp.int32)}
    assert objective.corrupt(jax.random.key(0), batch) is batch
    assert objective.loss is causal_lm.causal_lm_loss
    assert "causal_lm" in objectives.names()
    with pytest.raises(ValueError, match="known objectives:.*causal_lm"):
        objectives.get("mlm_typo")
