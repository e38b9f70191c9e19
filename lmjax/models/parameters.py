"""Parameter-tree helpers every model family shares: abstract shapes, counts and scan layouts.

A family module (``gpt.py``, ``bert.py``, ...) exposes ``param_shapes(config)``,
``count_params(config)``, ``to_scanned_layout(params, num_layers)`` and
``to_unscanned_layout(params)`` as one-line calls into these functions, naming its own module and
the name of its layer stack (``decoder`` / ``encoder``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.layers.transformer import stack_layer_params, unstack_layer_params


def abstract_params(model: nn.Module) -> Any:
    """Returns the parameter tree of ``model`` as ``jax.ShapeDtypeStruct`` leaves (no allocation).

    The model is initialised by ``jax.eval_shape`` on a [1, 1] token batch; leaves are unboxed.
    """
    abstract = jax.eval_shape(
        lambda key: model.init(key, jnp.zeros((1, 1), jnp.int32)), jax.random.key(0)
    )
    return nn.unbox(abstract["params"])


def param_count(params: Any) -> int:
    """Returns the number of scalars in a parameter tree (arrays or ShapeDtypeStructs)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))


def scanned_layout(params: Mapping[str, Any], stack: str, num_layers: int) -> dict[str, Any]:
    """Unscanned (``<stack>/layers_{i}``) -> scanned (``<stack>/layers`` [N, ...]) parameters.

    Accepts boxed (``nn.LogicallyPartitioned``) or plain leaves; returns plain arrays.
    """
    params = dict(nn.unbox(params))
    params[stack] = stack_layer_params(params[stack], num_layers)
    return params


def unscanned_layout(params: Mapping[str, Any], stack: str) -> dict[str, Any]:
    """Scanned (``<stack>/layers`` [N, ...]) -> unscanned (``<stack>/layers_{i}``) parameters.

    Accepts boxed or plain leaves; returns plain arrays.
    """
    params = dict(nn.unbox(params))
    params[stack] = unstack_layer_params(params[stack])
    return params
