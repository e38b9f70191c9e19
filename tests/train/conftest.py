"""Shared pieces of the train tests: a very small GPT, synthetic LM batches, reference runs.

Everything is sized to compile and run in seconds on a CPU with 8 fake devices (tests/conftest.py,
which also holds the tiny text corpus and the tiny demo run's overrides).
"""

import numpy as np
import pytest

from lmjax import models

# 2 layers, width 64, 4 heads, 32 positions: small enough that each compile takes a few seconds.
TINY_GPT = dict(
    vocab_size=128,
    max_len=32,
    num_layers=2,
    embed_dim=64,
    num_heads=4,
    mlp_dim=128,
    embed_dropout=0.0,
    attention_dropout=0.0,
    residual_dropout=0.0,
)


@pytest.fixture(scope="session")
def tiny_gpt():
    """Returns a factory ``(**overrides) -> (model, model_cfg)`` of the tiny GPT."""

    def make(**overrides):
        cfg = models.config_dict("gpt", "tiny", **{**TINY_GPT, **overrides})
        return models.build(cfg), cfg

    return make


def _lm_batches(num_batches, batch_size, length, vocab_size, seed=0):
    """Returns synthetic packed-LM batches (the data contract) with uneven token counts per row.

    Each row holds two documents (segments 1 and 2) split at a random point, and a random-length
    tail of padding (segment 0, weight 0), so micro-batches carry different numbers of tokens.
    """
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(num_batches):
        # Learnable rows: each counts up from a random start with a random stride of 1-3.
        starts = rng.integers(0, vocab_size, (batch_size, 1))
        strides = rng.integers(1, 4, (batch_size, 1))
        tokens = ((starts + strides * np.arange(length + 1)) % vocab_size).astype(np.int32)
        segment_ids = np.zeros((batch_size, length), np.int32)
        positions = np.zeros((batch_size, length), np.int32)
        weights = np.zeros((batch_size, length), np.float32)
        for row in range(batch_size):
            used = int(rng.integers(length // 4, length + 1))
            split = int(rng.integers(1, used)) if used > 1 else used
            segment_ids[row, :split], segment_ids[row, split:used] = 1, 2
            positions[row, :split] = np.arange(split)
            positions[row, split:used] = np.arange(used - split)
            weights[row, : split - 1] = 1.0  # the last token of a document predicts nothing
            weights[row, split : used - 1] = 1.0
        batches.append(
            {
                "inputs": tokens[:, :-1],
                "targets": tokens[:, 1:],
                "segment_ids": segment_ids,
                "positions": positions,
                "weights": weights,
            }
        )
    return batches


@pytest.fixture(scope="session")
def run_steps():
    """Returns ``(model, batches, mesh_spec, ...) -> (losses, state, shardings)`` of a few steps.

    The step is built exactly as the loop builds it (mesh, checked default rules, ``init_state``,
    ``make_train_step``) and fed with ``host_batch_to_global``; the per-step keys are
    ``fold_in(key(1), step)``.
    """
    import jax
    import jax.numpy as jnp

    from lmjax import axes, objectives
    from lmjax.train import mesh as mesh_lib
    from lmjax.train import optimizers
    from lmjax.train import step as step_lib

    def run(model, batches, mesh_spec, devices=None, grad_accum=1):
        mesh = mesh_lib.build_mesh(mesh_spec, devices)
        rules = mesh_lib.check_rules(axes.DEFAULT_RULES, mesh)
        opt_cfg = dict(
            name="adamw",
            learning_rate=1e-2,
            schedule="constant",
            weight_decay=0.1,
            clip_grad_norm=1.0,
        )
        tx = optimizers.make_optimizer(opt_cfg, len(batches))
        schedule = optimizers.make_schedule(opt_cfg, len(batches))
        objective = objectives.get("causal_lm")
        length = batches[0]["inputs"].shape[1]
        init_inputs = {
            k: jax.ShapeDtypeStruct((1, length), jnp.int32) for k in objective.model_inputs
        }
        state, shardings = step_lib.init_state(
            model, tx, init_inputs, mesh, rules, jax.random.key(0)
        )
        train_step = step_lib.make_train_step(
            model, objective, tx, schedule, mesh, rules, shardings, grad_accum=grad_accum
        )
        losses = []
        for index, host_batch in enumerate(batches):
            batch = step_lib.host_batch_to_global(host_batch, mesh, rules)
            state, metrics = train_step(state, batch, jax.random.fold_in(jax.random.key(1), index))
            losses.append(float(metrics["loss"]))
        return losses, state, shardings

    return run


@pytest.fixture(scope="session")
def reference_batches():
    """Returns the 5 global batches (16 rows of 32 tokens, vocab 128) the step tests train on."""
    return _lm_batches(5, 16, 32, TINY_GPT["vocab_size"], seed=3)


@pytest.fixture(scope="session")
def reference_losses(tiny_gpt, run_steps, reference_batches):
    """Returns the tiny GPT's 5 losses on ``reference_batches`` on ONE device, no accumulation."""
    import jax

    model, _ = tiny_gpt()
    losses, _, _ = run_steps(
        model,
        reference_batches,
        [("data", 1), ("fsdp", 1), ("tensor", 1)],
        devices=jax.devices()[:1],
    )
    return losses


def _records(workdir, split="train"):
    """Returns ``{step: record}`` of one split of a run's metrics.jsonl (latest attempt)."""
    from lmjax.train.logging import read_metrics

    return {r["step"]: r for r in read_metrics(str(workdir)) if r["split"] == split}


@pytest.fixture(scope="session")
def records():
    """Returns ``(workdir, split='train') -> {step: record}`` read from a run's metrics.jsonl."""
    return _records


@pytest.fixture(scope="session")
def reference_run(tiny_run_config, tmp_path_factory):
    """Returns ``(workdir, summary)`` of an uninterrupted 4-step tiny run on 8 devices, in-process.

    The resume and multi-process tests compare their runs with this one, step for step.
    """
    from lmjax.train import loop

    workdir = tmp_path_factory.mktemp("reference_run")
    summary = loop.train(tiny_run_config(), str(workdir))
    return str(workdir), summary
