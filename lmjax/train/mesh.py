"""The device mesh, the logical-to-mesh rule table, and the shardings they give a pytree.

An experiment names its mesh and rules in plain data (big_vision's form)::

    config.mesh = [('data', -1), ('fsdp', 1), ('tensor', 1)]
    config.rules = [('batch', ('data', 'fsdp')), ('embed', 'fsdp'), ('mlp', 'tensor'), ...]

Parameters carry logical axis names (``lmjax/axes.py``) through ``nn.with_logical_partitioning``;
their shardings come from ``jax.eval_shape`` -> ``nn.get_partition_spec`` -> the rules -> a
``NamedSharding`` per leaf (the flax lm1b / MaxText recipe). Unlike flax's own
``nn.logical_to_mesh_axes``, which silently skips a rule whose mesh axis is already taken, every
ambiguity here is an error that names the rule or parameter and says how to fix it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lmjax import axes

# One rule maps a logical axis name to nothing (replicated), one mesh axis, or a tuple of them.
MeshTarget = Any  # None | str | tuple[str, ...]
Rules = tuple[tuple[str, MeshTarget], ...]


def build_mesh(mesh_spec: Sequence[Sequence[Any]], devices: Sequence[Any] | None = None) -> Mesh:
    """Returns a ``jax.sharding.Mesh`` shaped by ``mesh_spec`` over ``devices``.

    Args:
        mesh_spec: ``(axis_name, size)`` pairs in mesh order, e.g.
            ``[('data', -1), ('fsdp', 1), ('tensor', 1)]``. At most one size may be -1; it takes
            every device the other axes leave.
        devices: the devices to lay out (default: all of ``jax.devices()``, across processes).
            The order follows ``mesh_utils.create_device_mesh`` (topology-aware on TPU, the
            process-major device order elsewhere), so each process's devices hold a contiguous
            slice of the batch axis.

    Returns:
        A mesh with ``Auto`` axis types, so ``jax.jit`` propagates shardings from the in/out
        shardings and the logical constraints in the model.

    Raises:
        ValueError: on a malformed spec, a repeated axis name, more than one -1, or sizes whose
            product does not equal the device count.
    """
    devices = list(jax.devices() if devices is None else devices)
    names, sizes = _parse_mesh_spec(mesh_spec)
    num_devices = len(devices)
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(
                f"mesh {list(zip(names, sizes, strict=True))}: the fixed axis sizes multiply to "
                f"{known}, which does not divide the {num_devices} available devices. Choose sizes "
                f"whose product divides {num_devices}, e.g. "
                "config.mesh = [('data', -1), ('fsdp', 1), ('tensor', 1)]."
            )
        sizes = [num_devices // known if s == -1 else s for s in sizes]
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"mesh {list(zip(names, sizes, strict=True))} needs {math.prod(sizes)} devices but "
            f"{num_devices} are available. Make the sizes multiply to {num_devices}, or set one "
            "size to -1 so it takes the remaining devices."
        )
    device_grid = mesh_utils.create_device_mesh(tuple(sizes), devices)
    return Mesh(device_grid, tuple(names))


def _parse_mesh_spec(mesh_spec: Sequence[Sequence[Any]]) -> tuple[list[str], list[int]]:
    """Returns the axis names and sizes of a mesh spec, validated."""
    if isinstance(mesh_spec, (str, bytes)) or not isinstance(mesh_spec, Iterable):
        raise ValueError(
            f"config.mesh must be a list of (axis_name, size) pairs, got {mesh_spec!r}. "
            "Example: [('data', -1), ('fsdp', 1), ('tensor', 1)]."
        )
    names, sizes = [], []
    for entry in mesh_spec:
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str)):
            raise ValueError(
                f"mesh entry {entry!r} is not an (axis_name, size) pair. "
                "Example: config.mesh = [('data', -1), ('fsdp', 1), ('tensor', 1)]."
            )
        name, size = entry
        if (
            isinstance(size, bool)
            or not isinstance(size, (int, np.integer))
            or (size < 1 and size != -1)
        ):
            raise ValueError(
                f"mesh axis {name!r} has size {size!r}; sizes are positive ints, or -1 for "
                "'every remaining device'."
            )
        if name in names:
            raise ValueError(
                f"mesh axis {name!r} appears twice in {list(mesh_spec)!r}; name each axis once."
            )
        names.append(name)
        sizes.append(int(size))
    if not names:
        raise ValueError("config.mesh is empty; give at least one axis, e.g. [('data', -1)].")
    if sizes.count(-1) > 1:
        raise ValueError(
            f"mesh {list(mesh_spec)!r} has more than one -1 size; at most one axis may take the "
            "remaining devices."
        )
    return names, sizes


def _target_axes(target: MeshTarget) -> tuple[str, ...]:
    """Returns the mesh axes a rule target names, as a tuple (empty for None)."""
    if target is None:
        return ()
    if isinstance(target, str):
        return (target,)
    return tuple(target)


def check_rules(rules: Iterable[Sequence[Any]], mesh: Mesh) -> Rules:
    """Returns ``rules`` checked and normalised to a tuple of ``(logical_name, target)`` pairs.

    A target is ``None`` (replicated), a mesh axis name, or a tuple of mesh axis names. A logical
    name listed twice with the same target is kept once.

    Args:
        rules: ``(logical_name, target)`` pairs, e.g. ``lmjax.axes.DEFAULT_RULES``.
        mesh: the mesh the rules refer to.

    Raises:
        ValueError: on a logical name that is not in ``lmjax/axes.py``; a mesh axis that is not in
            the mesh; a logical name given twice with different targets; or a target that
            repeats a mesh axis.
    """
    seen: dict[str, MeshTarget] = {}
    for rule in rules:
        if not (isinstance(rule, (tuple, list)) and len(rule) == 2 and isinstance(rule[0], str)):
            raise ValueError(
                f"rule {rule!r} is not a (logical_name, mesh_axis | tuple | None) pair. "
                "Example: ('embed', 'fsdp')."
            )
        name, target = rule
        if isinstance(target, list):
            target = tuple(target)
        if name not in axes.ALL:
            raise ValueError(
                f"rule {rule!r}: {name!r} is not a logical axis name. Use one of the names in "
                f"lmjax/axes.py: {', '.join(axes.ALL)}."
            )
        target_axes = _target_axes(target)
        for axis in target_axes:
            if axis not in mesh.axis_names:
                raise ValueError(
                    f"rule {rule!r}: mesh axis {axis!r} is not in the mesh "
                    f"{tuple(mesh.axis_names)}. Add the axis to config.mesh or change the rule."
                )
        if len(set(target_axes)) != len(target_axes):
            raise ValueError(f"rule {rule!r} names a mesh axis twice; name each mesh axis once.")
        if name in seen and _target_axes(seen[name]) != target_axes:
            raise ValueError(
                f"conflicting rules for logical axis {name!r}: {seen[name]!r} and {target!r}. "
                "Keep one rule per logical axis."
            )
        seen[name] = target if not isinstance(target, tuple) or len(target) != 1 else target[0]
    return tuple(seen.items())


def logical_to_mesh_spec(
    logical_names: Sequence[str | None], rules: Rules, where: str = "an array"
) -> PartitionSpec:
    """Returns the mesh ``PartitionSpec`` for one array's logical axis names.

    Args:
        logical_names: one logical name (or None) per array dimension.
        rules: checked rules (from ``check_rules``).
        where: what the array is (a parameter path), for error messages.

    Raises:
        ValueError: on a logical name not in ``lmjax/axes.py``, or when two dimensions of the
            array would be sharded over the same mesh axis.
    """
    table = dict(rules)
    entries, used = [], {}
    for dim, name in enumerate(logical_names):
        if name is None:
            entries.append(None)
            continue
        if name not in axes.ALL:
            raise ValueError(
                f"{where} uses logical axis {name!r}, which is not in lmjax/axes.py; "
                f"use one of {', '.join(axes.ALL)}."
            )
        target = table.get(name)
        for axis in _target_axes(target):
            if axis in used:
                raise ValueError(
                    f"{where} with logical axes {tuple(logical_names)} would shard dimensions "
                    f"{used[axis]} ({logical_names[used[axis]]!r}) and {dim} ({name!r}) over the "
                    f"same mesh axis {axis!r}. Change the rules so these logical axes map to "
                    "different mesh axes."
                )
            used[axis] = dim
        entries.append(target)
    return PartitionSpec(*entries)


def path_name(path: tuple[Any, ...]) -> str:
    """Returns a pytree key path as a readable 'a/b/c' string."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def _check_divisible(shape: Sequence[int], spec: PartitionSpec, mesh: Mesh, where: str) -> None:
    """Raises when a dimension of ``shape`` does not split evenly over its mesh axes."""
    for dim, (size, target) in enumerate(zip(shape, spec, strict=False)):
        ways = math.prod(mesh.shape[a] for a in _target_axes(target))
        if size % ways:
            raise ValueError(
                f"{where} has shape {tuple(shape)}; dimension {dim} (size {size}) is sharded over "
                f"mesh axes {_target_axes(target)} ({ways} ways), which does not divide it. Change "
                "the size (e.g. pad the vocab to a multiple), the mesh, or the rule for that axis."
            )


def logical_shardings(abstract_tree: Any, mesh: Mesh, rules: Rules) -> Any:
    """Returns a ``NamedSharding`` per leaf of a pytree of logically partitioned values.

    ``abstract_tree`` is typically ``jax.eval_shape(model.init, ...)``: its leaves are
    ``nn.LogicallyPartitioned`` boxes (or plain arrays / ShapeDtypeStructs, which are replicated).
    The result has the unboxed tree's structure.

    Raises:
        ValueError: naming the parameter when a rule would use one mesh axis twice in its spec, or
            when a sharded dimension does not divide evenly.
    """
    logical_specs = nn.get_partition_spec(abstract_tree)
    values = nn.meta.unbox(abstract_tree)

    def to_sharding(path, spec, value):
        where = f"parameter {path_name(path)!r}"
        mesh_spec = logical_to_mesh_spec(tuple(spec), rules, where)
        _check_divisible(value.shape, mesh_spec, mesh, where)
        return NamedSharding(mesh, mesh_spec)

    return jax.tree_util.tree_map_with_path(
        to_sharding, logical_specs, values, is_leaf=lambda x: isinstance(x, PartitionSpec)
    )


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Returns the sharding that keeps a full copy of an array on every device."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
    """Returns the sharding of a batch array: dimension 0 over the 'batch' rule's mesh axes.

    Only the batch dimension is split; any other layout (e.g. sequence parallelism over
    'length') is left to the model's activation constraints. The same sharding serves every
    batch array whatever its rank.
    """
    target = dict(rules).get(axes.BATCH)
    return NamedSharding(mesh, PartitionSpec(target))


def batch_shard_count(mesh: Mesh, rules: Rules) -> int:
    """Returns how many ways the batch dimension is split over the mesh."""
    return math.prod(mesh.shape[a] for a in _target_axes(dict(rules).get(axes.BATCH)))
