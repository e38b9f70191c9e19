"""The one generic train step and eval step, jitted with shardings from the logical axes.

``train_step(state, batch, key) -> (state, metrics)`` is a pure module-level function (flax lm1b /
MaxText style). It runs the objective's corruption from the step's key, splits the global batch
into micro-batches for gradient accumulation, sums token-weighted losses and gradients over them,
and applies one optimizer update. ``make_train_step`` binds the model, objective and optimizer
and jits it once with ``in_shardings`` / ``out_shardings`` derived from the parameters' logical
axes and the experiment's mesh and rules, donating the old state.

Mixed precision: parameters stay float32 (``param_dtype``); the model computes in its config's
``dtype`` and returns float32 logits; the loss, gradients and optimizer update are float32.

Axis legend: B global batch, A accumulation steps, L length.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lmjax import axes
from lmjax.train import mesh as mesh_lib

# init_state / abstract_train_state are re-exported: the contract names them in this module.
from lmjax.train.state import TrainState, abstract_train_state, init_state  # noqa: F401

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]

# Objective metrics that are summed over micro-batches / eval batches rather than token-averaged.
_COUNT_METRIC = "num_tokens"


def _model_outputs(
    model: nn.Module,
    objective: Any,
    params: Any,
    batch: Batch,
    deterministic: bool,
    key: jax.Array,
) -> Any:
    """Returns the model's outputs for the batch keys the objective feeds it.

    ``key`` feeds two rng streams: ``'dropout'`` (training only) and ``'sample'`` (randomness
    that is part of the computation in training and evaluation alike, e.g. ELECTRA's generator
    samples); models that use neither ignore them.
    """
    inputs = {name: batch[name] for name in objective.model_inputs}
    dropout_key, sample_key = jax.random.split(key)
    rngs = {"sample": sample_key}
    if not deterministic:
        rngs["dropout"] = dropout_key
    return model.apply({"params": params}, **inputs, deterministic=deterministic, rngs=rngs)


def _token_weighted_loss(
    params: Any, batch: Batch, model_key: jax.Array, *, model: nn.Module, objective: Any
) -> tuple[jax.Array, Metrics]:
    """Returns (mean loss x token count, metrics); summed over micro-batches it is a token sum."""
    outputs = _model_outputs(model, objective, params, batch, False, model_key)
    loss, metrics = objective.loss(outputs, batch)
    num_tokens = jax.lax.stop_gradient(jnp.asarray(metrics[_COUNT_METRIC], jnp.float32))
    return loss.astype(jnp.float32) * num_tokens, metrics


def _weighted_metric_sums(metrics: Metrics) -> Metrics:
    """Returns metrics as sums: token-weighted for averages, as-is for the token count."""
    num_tokens = jnp.asarray(metrics[_COUNT_METRIC], jnp.float32)
    return {
        name: (
            num_tokens if name == _COUNT_METRIC else jnp.asarray(value, jnp.float32) * num_tokens
        )
        for name, value in metrics.items()
    }


def _split_microbatches(batch: Batch, grad_accum: int, batch_spec: Any) -> Batch:
    """Returns the batch as [A, B/A, ...]: micro-batch i holds rows i, i+A, i+2A, ...

    Reshaping [B] -> [B/A, A] keeps each device's rows on that device (its contiguous block of
    B/num_shards rows becomes B/(A*num_shards) rows of the first axis), so no data moves between
    devices; the scan then walks the A axis.
    """

    def split(x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0] // grad_accum, grad_accum) + x.shape[1:])
        x = jnp.swapaxes(x, 0, 1)  # [A, B/A, ...]
        return jax.lax.with_sharding_constraint(x, PartitionSpec(None, batch_spec))

    return jax.tree_util.tree_map(split, batch)


def _check_batch_divides(batch: Batch, grad_accum: int, batch_shards: int) -> None:
    """Raises a clear error (at trace time) when the batch cannot be split evenly."""
    sizes = {x.shape[0] for x in jax.tree_util.tree_leaves(batch)}
    if len(sizes) != 1:
        raise ValueError(f"batch arrays disagree on the batch size: {sorted(sizes)}.")
    size = sizes.pop()
    if size % (grad_accum * batch_shards):
        raise ValueError(
            f"global batch {size} does not split into train.grad_accum={grad_accum} micro-batches "
            f"of rows spread over {batch_shards} batch shards of the mesh; make train.global_batch "
            f"a multiple of grad_accum x batch shards = {grad_accum * batch_shards}."
        )


def train_step(
    state: TrainState,
    batch: Batch,
    key: jax.Array,
    *,
    model: nn.Module,
    objective: Any,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    grad_accum: int = 1,
    batch_spec: Any = None,
) -> tuple[TrainState, Metrics]:
    """Returns the state after one optimizer update on ``batch``, and the step's metrics.

    Args:
        state: the current state (donated by the jitted wrapper).
        batch: the global batch, each array [B, ...] (objective-specific keys, e.g. inputs,
            targets, weights, positions, segment_ids).
        key: this step's key; callers derive it as ``fold_in(base_key, step)`` so a resumed run
            sees the same keys. Split into the corruption key and the dropout key.
        model: the linen module.
        objective: an ``lmjax.objectives.Objective`` (corrupt, loss, model_inputs).
        tx: the optimizer.
        schedule: the learning-rate schedule (reported as a metric).
        grad_accum: number of micro-batches A; the gradient equals the one-big-batch gradient
            because losses and gradients are summed per token and divided by the total count.
        batch_spec: the mesh axes of the batch dimension (for the micro-batch layout).

    Returns:
        ``(new_state, metrics)`` with the objective's metrics averaged per token over the whole
        batch, ``num_tokens`` summed, plus ``learning_rate``, ``grad_norm`` and ``param_norm``.
    """
    corrupt_key, model_key = jax.random.split(key)
    batch = objective.corrupt(corrupt_key, batch)
    loss_and_grad = jax.value_and_grad(
        functools.partial(_token_weighted_loss, model=model, objective=objective), has_aux=True
    )

    def micro_sums(params, micro_batch, index):
        (_, metrics), grads = loss_and_grad(
            params, micro_batch, jax.random.fold_in(model_key, index)
        )
        return grads, _weighted_metric_sums(metrics)

    if grad_accum == 1:
        grad_sum, metric_sums = micro_sums(state.params, batch, 0)
    else:
        micro_batches = _split_microbatches(batch, grad_accum, batch_spec)
        first = jax.tree_util.tree_map(lambda x: x[0], micro_batches)
        sum_shapes = jax.eval_shape(micro_sums, state.params, first, 0)
        zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, jnp.float32), sum_shapes)

        def accumulate(carry, xs):
            micro_batch, index = xs
            sums = micro_sums(state.params, micro_batch, index)
            return jax.tree_util.tree_map(jnp.add, carry, sums), None

        (grad_sum, metric_sums), _ = jax.lax.scan(
            accumulate, zeros, (micro_batches, jnp.arange(grad_accum))
        )

    total_tokens = metric_sums[_COUNT_METRIC]
    denominator = jnp.maximum(total_tokens, 1.0)
    grads = jax.tree_util.tree_map(lambda g: (g / denominator).astype(jnp.float32), grad_sum)
    metrics = {
        name: (value if name == _COUNT_METRIC else value / denominator)
        for name, value in metric_sums.items()
    }
    metrics["learning_rate"] = jnp.asarray(schedule(state.step), jnp.float32)
    metrics["grad_norm"] = optax.tree.norm(grads)
    new_state = state.apply_gradients(tx, grads)
    metrics["param_norm"] = optax.tree.norm(new_state.params)
    return new_state, metrics


def eval_step(
    params: Any, batch: Batch, key: jax.Array, *, model: nn.Module, objective: Any
) -> Metrics:
    """Returns sums over one eval batch: ``<metric>_sum`` (token-weighted) and ``num_tokens``.

    Sums (not means) so the mean over several batches is exact: add the sums of every batch and
    divide by the summed ``num_tokens`` (``eval_means``).
    """
    corrupt_key, model_key = jax.random.split(key)
    batch = objective.corrupt(corrupt_key, batch)
    outputs = _model_outputs(model, objective, params, batch, True, model_key)
    loss, metrics = objective.loss(outputs, batch)
    metrics = dict(metrics, loss=loss)
    return {
        (name if name == _COUNT_METRIC else f"{name}_sum"): value
        for name, value in _weighted_metric_sums(metrics).items()
    }


def eval_means(sums: Metrics) -> dict[str, float]:
    """Returns per-token means from summed eval metrics (the output of ``eval_step``, added up)."""
    total = float(sums[_COUNT_METRIC])
    means = {
        name[: -len("_sum")]: float(value) / max(total, 1.0)
        for name, value in sums.items()
        if name.endswith("_sum")
    }
    means[_COUNT_METRIC] = total
    return means


class MeshBoundStep:
    """A jitted step that is always traced and run under its mesh and logical-axis rules.

    ``jax.set_mesh`` must be entered outside ``jax.jit``, and flax reads the logical rules from a
    context when the model's activation constraints are traced; this wrapper enters both around
    every call so callers never have to.

    Attributes:
        jitted: the underlying ``jax.jit`` function (for ``.lower`` / inspection).
        mesh: the mesh.
        rules: the checked logical-axis rules.
    """

    def __init__(self, jitted: Callable[..., Any], mesh: Mesh, rules: mesh_lib.Rules):
        self.jitted = jitted
        self.mesh = mesh
        self.rules = rules

    def __call__(self, *args: Any) -> Any:
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            return self.jitted(*args)

    def lower(self, *args: Any) -> Any:
        """Returns the lowered computation for ``args`` (e.g. to read its HLO or cost)."""
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            return self.jitted.lower(*args)


def make_train_step(
    model: nn.Module,
    objective: Any,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    mesh: Mesh,
    rules: mesh_lib.Rules,
    state_shardings: TrainState,
    grad_accum: int = 1,
) -> MeshBoundStep:
    """Returns ``train_step(state, batch, key) -> (state, metrics)`` jitted for the mesh.

    ``in_shardings``: the state's shardings (from ``init_state``), the batch split over the
    'batch' rule's mesh axes, a replicated key. ``out_shardings``: the same state shardings and
    replicated metrics. ``donate_argnums=0`` reuses the old state's buffers.

    Raises:
        ValueError: when ``grad_accum`` is not a positive int; at the first call, when the batch
            does not split into ``grad_accum`` micro-batches over the batch shards.
    """
    if (
        isinstance(grad_accum, bool)
        or not isinstance(grad_accum, (int, np.integer))
        or grad_accum < 1
    ):
        raise ValueError(
            f"train.grad_accum={grad_accum!r} must be a positive int (1 = no accumulation)."
        )
    batch_sharding = mesh_lib.batch_sharding(mesh, rules)
    batch_shards = mesh_lib.batch_shard_count(mesh, rules)
    replicated = mesh_lib.replicated_sharding(mesh)
    step = functools.partial(
        train_step,
        model=model,
        objective=objective,
        tx=tx,
        schedule=schedule,
        grad_accum=int(grad_accum),
        batch_spec=dict(rules).get(axes.BATCH),
    )

    def checked_step(state, batch, key):
        _check_batch_divides(batch, int(grad_accum), batch_shards)
        return step(state, batch, key)

    jitted = jax.jit(
        checked_step,
        in_shardings=(state_shardings, batch_sharding, replicated),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )
    return MeshBoundStep(jitted, mesh, rules)


def make_eval_step(
    model: nn.Module, objective: Any, mesh: Mesh, rules: mesh_lib.Rules, param_shardings: Any
) -> MeshBoundStep:
    """Returns ``eval_step(params, batch, key) -> metric sums`` jitted for the mesh."""
    replicated = mesh_lib.replicated_sharding(mesh)
    jitted = jax.jit(
        functools.partial(eval_step, model=model, objective=objective),
        in_shardings=(param_shardings, mesh_lib.batch_sharding(mesh, rules), replicated),
        out_shardings=replicated,
    )
    return MeshBoundStep(jitted, mesh, rules)


def host_batch_to_global(host_batch: dict[str, Any], mesh: Mesh, rules: mesh_lib.Rules) -> Batch:
    """Returns the global batch as jax.Arrays built from this process's slice of it.

    Each process passes only its own ``b = global_batch / process_count`` rows; the rows land on
    this process's devices along the batch dimension (``jax.make_array_from_process_local_data``),
    so no process ever holds the whole batch.

    Raises:
        ValueError: when the host rows do not split evenly over this process's batch shards.
    """
    sharding = mesh_lib.batch_sharding(mesh, rules)
    global_batch = {}
    for name, value in host_batch.items():
        value = np.asarray(value)
        local_shards = _local_batch_shards(sharding)
        if value.ndim == 0 or value.shape[0] % local_shards:
            raise ValueError(
                f"host batch array {name!r} has shape {value.shape}; its first (batch) dimension "
                f"must split over this process's {local_shards} batch shards. Make "
                f"train.global_batch / process count a multiple of {local_shards}."
            )
        global_batch[name] = jax.make_array_from_process_local_data(sharding, value)
    return global_batch


def _local_batch_shards(sharding: NamedSharding) -> int:
    """Returns how many distinct batch-row blocks this process's devices hold."""
    index_map = sharding.addressable_devices_indices_map((sharding.mesh.size * 1024,))
    return len({index[0].start for index in index_map.values()})
