"""Normalisation layers computed in float32: LayerNorm and RMSNorm.

- ``LayerNorm`` (Ba et al., 2016, arXiv:1607.06450): ``(x - mean) / sqrt(var + eps) * scale + bias``
  over the last axis. GPT-1/2/3 and BERT use it with eps 1e-5 (GPT, ``openai/gpt-2:src/model.py``
  ``norm``) or 1e-12 (BERT, ``google-research/bert:modeling.py``).
- ``RMSNorm`` (Zhang & Sennrich, 2019, arXiv:1910.07467): ``x / sqrt(mean(x^2) + eps) * scale``, no
  mean subtraction and no bias; T5 uses it with eps 1e-6 (``t5x/examples/t5/layers.py``
  ``LayerNorm``).

Both cast the input to float32, normalise, apply the float32 scale (and bias) and cast the result to
the compute ``dtype``. Their parameters carry the logical axis ``'norm'`` (never sharded).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax import axes
from lmjax.layers.dense import Initializer


def _norm_param(module: nn.Module, name: str, init: Initializer, features: int) -> jax.Array:
    """Declares ``module``'s [E] parameter ``name`` on the 'norm' axis; returns it in float32."""
    value = module.param(
        name,
        nn.with_logical_partitioning(init, (axes.NORM,)),
        (features,),
        module.param_dtype,
    )
    return jnp.asarray(value, jnp.float32)


class LayerNorm(nn.Module):
    """Layer normalisation over the last axis, in float32.

    Attributes:
      epsilon: added to the variance before the square root.
      use_scale: learn a multiplicative ``scale`` [E] (initialised to ones).
      use_bias: learn an additive ``bias`` [E] (initialised to zeros).
      scale_init: initialiser of ``scale``.
      bias_init: initialiser of ``bias``.
      dtype: the dtype of the output.
      param_dtype: the storage dtype of ``scale`` and ``bias``.
    """

    epsilon: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True
    scale_init: Initializer = nn.initializers.ones_init()
    bias_init: Initializer = nn.initializers.zeros_init()
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalises ``x`` [..., E] over its last axis; returns [..., E] in ``dtype``."""
        features = x.shape[-1]
        x = jnp.asarray(x, jnp.float32)
        mean = jnp.mean(x, axis=-1, keepdims=True)
        centred = x - mean
        variance = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
        y = centred * jax.lax.rsqrt(variance + self.epsilon)
        if self.use_scale:
            y = y * _norm_param(self, "scale", self.scale_init, features)
        if self.use_bias:
            y = y + _norm_param(self, "bias", self.bias_init, features)
        return jnp.asarray(y, self.dtype)


class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the last axis, in float32 (no centring, no bias).

    Attributes:
      epsilon: added to the mean square before the square root.
      scale_init: initialiser of ``scale`` [E].
      dtype: the dtype of the output.
      param_dtype: the storage dtype of ``scale``.
    """

    epsilon: float = 1e-6
    scale_init: Initializer = nn.initializers.ones_init()
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalises ``x`` [..., E] over its last axis; returns [..., E] in ``dtype``."""
        features = x.shape[-1]
        x = jnp.asarray(x, jnp.float32)
        mean_square = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        y = x * jax.lax.rsqrt(mean_square + self.epsilon)
        scale = _norm_param(self, "scale", self.scale_init, features)
        return jnp.asarray(y * scale, self.dtype)


NORMS = {"layer": LayerNorm, "rms": RMSNorm}


def make_norm(kind: str, epsilon: float, dtype: Any, param_dtype: Any, name: str) -> nn.Module:
    """Returns a ``LayerNorm`` (``kind='layer'``) or ``RMSNorm`` (``kind='rms'``) named ``name``."""
    if kind not in NORMS:
        raise ValueError(f"Unknown norm kind {kind!r}; choose one of {sorted(NORMS)}.")
    return NORMS[kind](epsilon=epsilon, dtype=dtype, param_dtype=param_dtype, name=name)
