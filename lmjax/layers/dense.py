"""A general dense (matrix-multiply) layer with logical axis names on its parameters.

``DenseGeneral`` contracts one or more trailing input axes against a kernel whose shape is
``in_shape + features`` (so attention's query projection can map ``[B, L, E]`` to ``[B, L, H, D]``
with a ``[E, H, D]`` kernel, and its output projection ``[B, L, H, D]`` back to ``[B, L, E]`` with a
``[H, D, E]`` kernel). It follows flax's ``nn.DenseGeneral`` and MaxText's ``DenseGeneral``
(parameters stored in ``param_dtype``, cast to the compute ``dtype`` at use) and adds logical axis
names from :mod:`lmjax.axes` on the kernel and the bias.

Initialisers are called on the *flattened* kernel ``[prod(in_shape), prod(features)]`` and the
result is reshaped, so fan-in based initialisers (``variance_scaling``) see the true fan-in and
fan-out whatever the kernel's rank.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Initializer = Callable[[jax.Array, Sequence[int], Any], jax.Array]

# LeCun normal: the default of flax's Dense.
default_kernel_init: Initializer = nn.initializers.variance_scaling(
    1.0, "fan_in", "truncated_normal"
)


def _as_tuple(value: int | Sequence[int]) -> tuple[int, ...]:
    return (value,) if isinstance(value, int) else tuple(value)


def flat_initializer(init: Initializer, num_in_dims: int) -> Initializer:
    """Wraps ``init`` so it is called on the 2-D ``[fan_in, fan_out]`` view of the kernel.

    Args:
      init: an initialiser ``(key, shape, dtype) -> array``.
      num_in_dims: how many leading kernel dimensions are contracted with the input.

    Returns:
      An initialiser for the full kernel shape.
    """

    def initialize(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        shape = tuple(shape)
        flat = (math.prod(shape[:num_in_dims]), math.prod(shape[num_in_dims:]))
        return jnp.reshape(init(key, flat, dtype), shape)

    return initialize


class DenseGeneral(nn.Module):
    """``y = x . kernel + bias`` over the axes ``axis`` of ``x``.

    Attributes:
      features: the output feature shape, an int or a tuple (e.g. ``(H, D)``).
      kernel_axes: logical axis names of the kernel, one per kernel dimension
        (``len(axis) + len(features)`` names); the bias takes the last ``len(features)`` names.
      axis: the input axes contracted with the kernel (default: the last axis).
      use_bias: whether to add a bias of shape ``features``.
      kernel_init: initialiser of the kernel (called on its flattened 2-D view).
      bias_init: initialiser of the bias.
      dtype: the compute dtype (inputs and kernel are cast to it).
      param_dtype: the storage dtype of the parameters.
    """

    features: int | Sequence[int]
    kernel_axes: tuple[str | None, ...]
    axis: int | Sequence[int] = -1
    use_bias: bool = True
    kernel_init: Initializer = default_kernel_init
    bias_init: Initializer = nn.initializers.zeros_init()
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Applies the layer.

        Args:
          inputs: an array whose axes ``axis`` are contracted, e.g. ``[B, L, E]``.

        Returns:
          ``inputs``' remaining axes followed by ``features``, in ``dtype``.
        """
        features = _as_tuple(self.features)
        axis = tuple(a % inputs.ndim for a in _as_tuple(self.axis))
        in_shape = tuple(inputs.shape[a] for a in axis)
        kernel_shape = in_shape + features
        if len(self.kernel_axes) != len(kernel_shape):
            raise ValueError(
                f"DenseGeneral {self.name!r}: kernel_axes {self.kernel_axes} has "
                f"{len(self.kernel_axes)} names but the kernel {kernel_shape} has "
                f"{len(kernel_shape)} dimensions; pass one logical name per kernel dimension."
            )
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(
                flat_initializer(self.kernel_init, len(in_shape)), self.kernel_axes
            ),
            kernel_shape,
            self.param_dtype,
        )
        inputs = jnp.asarray(inputs, self.dtype)
        kernel = jnp.asarray(kernel, self.dtype)
        dimension_numbers = ((axis, tuple(range(len(axis)))), ((), ()))
        y = lax.dot_general(inputs, kernel, dimension_numbers)
        if self.use_bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(self.bias_init, self.kernel_axes[len(axis) :]),
                features,
                self.param_dtype,
            )
            y = y + jnp.asarray(bias, self.dtype)
        return y
