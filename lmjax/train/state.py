"""The training state and its initialisation directly into the sharded layout.

``TrainState`` is a plain pytree (step, params, opt_state): no apply function or optimizer inside,
so it can be donated, checkpointed and restored onto any mesh. ``init_state`` never materialises the
model on one device: it derives every leaf's sharding from ``jax.eval_shape`` of the initialiser and
the parameters' logical axis names, then runs the initialiser under ``jax.jit`` with those
``out_shardings`` (the flax lm1b / MaxText recipe).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lmjax.train import mesh as mesh_lib


class TrainState(struct.PyTreeNode):
    """What one training step reads and writes.

    Attributes:
        step: int32 scalar, the number of optimizer updates applied so far.
        params: the model parameters (float32 master copy; unboxed, no logical-axis wrappers).
        opt_state: the optax optimizer state for ``params``.
    """

    step: jax.Array
    params: Any
    opt_state: Any

    def apply_gradients(self, tx: optax.GradientTransformation, grads: Any) -> "TrainState":
        """Returns the state after one optimizer update with ``grads``."""
        updates, opt_state = tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        return self.replace(step=self.step + 1, params=params, opt_state=opt_state)


def _boxed_params(model: nn.Module, init_inputs: dict[str, Any], key: jax.Array) -> Any:
    """Returns the model's freshly initialised params, still wrapped in logical-axis boxes."""
    inputs = {name: jnp.zeros(x.shape, x.dtype) for name, x in init_inputs.items()}
    variables = model.init(
        {"params": key, "dropout": key, "sample": key}, **inputs, deterministic=True
    )
    return variables["params"]


def _shape_names(path: tuple[Any, ...]) -> tuple[str, ...]:
    """Returns the key names along a pytree path (for matching optimizer leaves to params)."""
    return tuple(mesh_lib.path_name((entry,)) for entry in path)


def opt_state_shardings(
    abstract_opt_state: Any, abstract_params: Any, param_shardings: Any, mesh: Mesh
) -> Any:
    """Returns a sharding for every leaf of an optimizer state.

    Optimizer leaves that mirror a parameter (Adam's ``mu`` / ``nu``, LAMB's moments, an
    unfactored Adafactor ``v``) are found by their path ending in the parameter's path and having
    its shape; they take the parameter's sharding. A leaf with one dimension fewer than its
    parameter (Adafactor's factored row / column statistics) keeps the sharding of the
    dimensions it retains. Everything else (step counts, placeholders) is replicated.

    Args:
        abstract_opt_state: ``jax.eval_shape(tx.init, params)``.
        abstract_params: the unboxed parameter shapes.
        param_shardings: a ``NamedSharding`` per parameter (``mesh.logical_shardings``).
        mesh: the mesh.
    """
    by_path: dict[tuple[str, ...], tuple[tuple[int, ...], PartitionSpec]] = {}
    for (path, value), sharding in zip(
        jax.tree_util.tree_flatten_with_path(abstract_params)[0],
        jax.tree_util.tree_leaves(param_shardings),
        strict=True,
    ):
        by_path[_shape_names(path)] = (tuple(value.shape), sharding.spec)
    replicated = mesh_lib.replicated_sharding(mesh)

    def sharding_for(path, leaf) -> NamedSharding:
        names = _shape_names(path)
        shape = tuple(getattr(leaf, "shape", ()))
        for start in range(len(names)):
            match = by_path.get(names[start:])
            if match is None:
                continue
            param_shape, spec = match
            spec = tuple(spec) + (None,) * (len(param_shape) - len(spec))
            if shape == param_shape:
                return NamedSharding(mesh, PartitionSpec(*spec))
            if len(shape) == len(param_shape) - 1:
                for dropped in range(len(param_shape)):
                    kept = param_shape[:dropped] + param_shape[dropped + 1 :]
                    if kept == shape:
                        return NamedSharding(
                            mesh, PartitionSpec(*(spec[:dropped] + spec[dropped + 1 :]))
                        )
            return replicated
        return replicated

    return jax.tree_util.tree_map_with_path(sharding_for, abstract_opt_state)


def abstract_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    init_inputs: dict[str, Any],
    mesh: Mesh,
    rules: mesh_lib.Rules,
) -> tuple[TrainState, TrainState]:
    """Returns the state's shapes (ShapeDtypeStructs carrying shardings) and its shardings.

    Nothing is allocated. The first result is what a checkpointer restores into (possibly a
    different mesh than the one the checkpoint was written on); the second is the
    ``out_shardings`` / ``in_shardings`` of the jitted initialiser and train step.

    Args:
        model: the linen module; every parameter should carry logical axis names.
        tx: the optimizer.
        init_inputs: keyword arguments of ``model.init`` as arrays or ShapeDtypeStructs (a dummy
            batch of a few rows; only shapes and dtypes are used).
        mesh: the device mesh.
        rules: checked rules (``mesh.check_rules``).
    """
    key = jax.random.key(0)
    with nn.logical_axis_rules(rules):
        boxed = jax.eval_shape(lambda k: _boxed_params(model, init_inputs, k), key)
    param_shardings = mesh_lib.logical_shardings(boxed, mesh, rules)
    params = nn.meta.unbox(boxed)
    opt_state = jax.eval_shape(tx.init, params)
    shardings = TrainState(
        step=mesh_lib.replicated_sharding(mesh),
        params=param_shardings,
        opt_state=opt_state_shardings(opt_state, params, param_shardings, mesh),
    )
    shapes = TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32), params=params, opt_state=opt_state
    )
    abstract = jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings
    )
    return abstract, shardings


def init_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    init_inputs: dict[str, Any],
    mesh: Mesh,
    rules: mesh_lib.Rules,
    key: jax.Array,
    shardings: TrainState | None = None,
) -> tuple[TrainState, TrainState]:
    """Returns a freshly initialised ``TrainState`` laid out on the mesh, and its shardings.

    The initialiser runs under ``jax.jit`` with ``out_shardings`` from the logical axes, so each
    device only ever holds its own shards (a model larger than one device's memory initialises).
    Every process must pass the same ``key``.

    Args:
        model: the linen module.
        tx: the optimizer.
        init_inputs: keyword arguments of ``model.init`` (a dummy batch; shapes/dtypes only).
        mesh: the device mesh.
        rules: checked rules (``mesh.check_rules``).
        key: the parameter-initialisation key.
        shardings: the state's shardings when already computed (``abstract_train_state``).

    Returns:
        ``(state, state_shardings)``; ``state.step`` is 0.
    """
    if shardings is None:
        _, shardings = abstract_train_state(model, tx, init_inputs, mesh, rules)

    def fresh_state(k: jax.Array) -> TrainState:
        params = nn.meta.unbox(_boxed_params(model, init_inputs, k))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    init = jax.jit(
        fresh_state, in_shardings=mesh_lib.replicated_sharding(mesh), out_shardings=shardings
    )
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        state = init(key)
    return state, shardings


def parameter_count(params: Any) -> int:
    """Returns the total number of scalars in a parameter tree."""
    return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params))
