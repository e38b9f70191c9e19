"""The generic train / eval step: accumulation, mixed precision, exact eval sums, batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from lmjax import axes, objectives
from lmjax.train import mesh as mesh_lib
from lmjax.train import optimizers
from lmjax.train import step as step_lib

_OPT = dict(name="adamw", learning_rate=1e-2, schedule="constant")


def _mesh_and_rules(shape):
    mesh = mesh_lib.build_mesh([("data", shape[0]), ("fsdp", shape[1]), ("tensor", shape[2])])
    return mesh, mesh_lib.check_rules(axes.DEFAULT_RULES, mesh)


def _init_inputs(length):
    return {
        k: jax.ShapeDtypeStruct((1, length), jnp.int32)
        for k in objectives.get("causal_lm").model_inputs
    }


def test_four_microbatches_equal_one_full_batch(
    tiny_gpt, run_steps, reference_batches, reference_losses
):
    # The reference batches have a different number of weighted tokens in every row, so a plain
    # mean of micro-batch means would differ; the token-weighted sums must not.
    counts = reference_batches[0]["weights"].reshape(4, 4, -1).sum(axis=(0, 2))
    assert len(set(counts.tolist())) > 1
    model, _ = tiny_gpt()
    losses, _, _ = run_steps(
        model, reference_batches, [("data", 2), ("fsdp", 2), ("tensor", 2)], grad_accum=4
    )
    np.testing.assert_allclose(losses, reference_losses, rtol=0, atol=1e-5)


def test_batch_that_does_not_split_into_microbatches_is_a_clear_error(tiny_gpt, reference_batches):
    model, _ = tiny_gpt()
    mesh, rules = _mesh_and_rules((2, 2, 2))
    tx = optimizers.make_optimizer(_OPT, 5)
    abstract, shardings = step_lib.abstract_train_state(model, tx, _init_inputs(32), mesh, rules)
    objective, schedule = objectives.get("causal_lm"), optimizers.make_schedule(_OPT, 5)

    def make_step(grad_accum):
        return step_lib.make_train_step(
            model, objective, tx, schedule, mesh, rules, shardings, grad_accum=grad_accum
        )

    train_step = make_step(grad_accum=3)
    batch = step_lib.host_batch_to_global(reference_batches[0], mesh, rules)
    with pytest.raises(ValueError, match=r"global batch 16 does not split into train.grad_accum=3"):
        train_step.lower(abstract, batch, jax.random.key(0))
    with pytest.raises(ValueError, match=r"grad_accum=0 must be a positive int"):
        make_step(grad_accum=0)


def test_bfloat16_compute_keeps_float32_params_and_loss(
    tiny_gpt, reference_batches, reference_losses
):
    model, _ = tiny_gpt(dtype="bfloat16")
    mesh, rules = _mesh_and_rules((8, 1, 1))
    objective = objectives.get("causal_lm")
    tx = optimizers.make_optimizer(_OPT, 5)
    state, shardings = step_lib.init_state(
        model, tx, _init_inputs(32), mesh, rules, jax.random.key(0)
    )
    train_step = step_lib.make_train_step(
        model, objective, tx, optimizers.make_schedule(_OPT, 5), mesh, rules, shardings
    )
    old_state = state
    losses = []
    for index, host_batch in enumerate(reference_batches[:2]):
        batch = step_lib.host_batch_to_global(host_batch, mesh, rules)
        state, metrics = train_step(state, batch, jax.random.fold_in(jax.random.key(1), index))
        losses.append(metrics["loss"])
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(state.params))
    assert all(
        x.dtype == jnp.float32
        for x in jax.tree_util.tree_leaves(state.opt_state)
        if jnp.issubdtype(x.dtype, jnp.floating)
    )
    assert losses[0].dtype == jnp.float32 and int(state.step) == 2
    # bf16 activations change the numbers a little, not the training.
    np.testing.assert_allclose([float(x) for x in losses], reference_losses[:2], atol=0.05)
    assert float(metrics["num_tokens"]) == float(reference_batches[1]["weights"].sum())
    assert set(metrics) >= {"loss", "accuracy", "num_tokens", "learning_rate", "grad_norm"}
    assert float(metrics["learning_rate"]) == pytest.approx(1e-2)
    # The old state was donated to the step.
    assert jax.tree_util.tree_leaves(old_state.params)[0].is_deleted()


def test_eval_sums_give_the_exact_mean_over_batches(tiny_gpt, reference_batches):
    model, _ = tiny_gpt()
    mesh, rules = _mesh_and_rules((2, 2, 2))
    objective = objectives.get("causal_lm")
    tx = optimizers.make_optimizer(_OPT, 5)
    state, shardings = step_lib.init_state(
        model, tx, _init_inputs(32), mesh, rules, jax.random.key(0)
    )
    eval_step = step_lib.make_eval_step(model, objective, mesh, rules, shardings.params)
    totals = {}
    for host_batch in reference_batches[:2]:
        sums = eval_step(
            state.params, step_lib.host_batch_to_global(host_batch, mesh, rules), jax.random.key(0)
        )
        for name, value in sums.items():
            totals[name] = totals.get(name, 0.0) + float(value)
    means = step_lib.eval_means(totals)

    params = jax.device_get(state.params)
    losses, counts = [], []
    for host_batch in reference_batches[:2]:
        outputs = model.apply(
            {"params": params}, **{k: host_batch[k] for k in objective.model_inputs}
        )
        loss, metrics = objective.loss(outputs, host_batch)
        losses.append(float(loss))
        counts.append(float(metrics["num_tokens"]))
    assert counts[0] != counts[1]
    expected = (losses[0] * counts[0] + losses[1] * counts[1]) / sum(counts)
    assert means["loss"] == pytest.approx(expected, rel=1e-5)
    assert means["num_tokens"] == sum(counts)
    assert 0.0 <= means["accuracy"] <= 1.0


def test_host_batch_to_global_shards_the_batch_dimension(reference_batches):
    mesh, rules = _mesh_and_rules((2, 2, 2))
    batch = step_lib.host_batch_to_global(reference_batches[0], mesh, rules)
    assert batch["inputs"].shape == (16, 32)
    assert batch["inputs"].sharding.spec == P(("data", "fsdp"))
    np.testing.assert_array_equal(np.asarray(batch["targets"]), reference_batches[0]["targets"])
    with pytest.raises(
        ValueError, match=r"'inputs' has shape \(6, 32\).*split over this process's 4 batch shards"
    ):
        step_lib.host_batch_to_global({"inputs": reference_batches[0]["inputs"][:6]}, mesh, rules)
