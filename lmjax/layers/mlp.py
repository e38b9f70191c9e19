"""The position-wise feed-forward block and its activations.

Axis legend: B batch, L length, E embed, F mlp (hidden width).

``MLP`` computes ``wo(dropout(act(wi(x))))`` [B, L, E] -> [B, L, F] -> [B, L, E] (Vaswani et al.,
2017, §3.3), or, for a gated activation, ``wo(dropout(act(wi_0(x)) * wi_1(x)))`` (Shazeer, 2020,
"GLU Variants Improve Transformer", arXiv:2002.05202; T5.1.1's ``('gelu', 'linear')`` in
``t5x/examples/t5/layers.py`` ``MlpBlock``, parameters ``wi_0`` / ``wi_1`` / ``wo``).

Activations (``ACTIVATIONS``):
  'gelu'       exact GELU ``x * Phi(x)`` with the error function (BERT's PyTorch ports, HF 'gelu').
  'gelu_tanh'  the tanh approximation (GPT-1/2 ``gelu``; HF 'gelu_new'; TF BERT).
  'relu'       max(x, 0) (T5 1.0, Transformer-XL).
  'swish' / 'silu'  ``x * sigmoid(x)`` (Meena's decoder FFN).
  'linear'     identity.
Gated activations (``GATED_ACTIVATIONS``):
  'gated_gelu' ``gelu_tanh(wi_0 x) * wi_1 x``: T5.1.1 / mT5 (t5x uses ``jax.nn.gelu``, whose
               default is the tanh approximation; HF's T5 v1.1 configs say 'gelu_new').
  'gated_silu' ``silu(wi_0 x) * wi_1 x`` (SwiGLU).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax import axes
from lmjax.layers.dense import DenseGeneral, Initializer, default_kernel_init

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "swish": jax.nn.silu,
    "silu": jax.nn.silu,
    "linear": lambda x: x,
}
GATED_ACTIVATIONS: dict[str, str] = {"gated_gelu": "gelu_tanh", "gated_silu": "silu"}


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
    """Returns the elementwise activation named ``name`` (see the module docstring)."""
    if name in GATED_ACTIVATIONS:
        return ACTIVATIONS[GATED_ACTIVATIONS[name]]
    if name not in ACTIVATIONS:
        raise ValueError(
            f"Unknown activation {name!r}; choose one of "
            f"{sorted(ACTIVATIONS) + sorted(GATED_ACTIVATIONS)}."
        )
    return ACTIVATIONS[name]


def is_gated(name: str) -> bool:
    """Whether ``name`` is a gated (two input projections) activation."""
    activation_fn(name)  # validates the name
    return name in GATED_ACTIVATIONS


class MLP(nn.Module):
    """Position-wise feed-forward block.

    Attributes:
      hidden_dim: F, the hidden width.
      activation: a name from ``ACTIVATIONS`` or ``GATED_ACTIVATIONS``.
      out_features: the output width (default: the input width E).
      use_bias: whether the projections have biases (GPT/BERT: yes; T5: no).
      dropout_rate: dropout on the hidden activations (T5's ``dropout_rate`` inside the MLP; GPT
        and BERT apply dropout only to the block output, so 0 there).
      kernel_init: initialiser of ``wi`` (``wi_0``, ``wi_1``).
      out_kernel_init: initialiser of ``wo`` (GPT-2 residual scaling sets a smaller std here).
      bias_init: initialiser of the biases.
      dtype: the compute dtype.
      param_dtype: the storage dtype.
    """

    hidden_dim: int
    activation: str = "gelu"
    out_features: int | None = None
    use_bias: bool = True
    dropout_rate: float = 0.0
    kernel_init: Initializer = default_kernel_init
    out_kernel_init: Initializer = default_kernel_init
    bias_init: Initializer = nn.initializers.zeros_init()
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        """Applies the block to ``x`` [B, L, E]; returns [B, L, out_features or E] in ``dtype``."""
        act = activation_fn(self.activation)
        dense = dict(
            use_bias=self.use_bias,
            bias_init=self.bias_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        hidden_axes = (axes.EMBED, axes.MLP)
        if is_gated(self.activation):
            gate = DenseGeneral(
                self.hidden_dim, hidden_axes, kernel_init=self.kernel_init, name="wi_0", **dense
            )(x)
            linear = DenseGeneral(
                self.hidden_dim, hidden_axes, kernel_init=self.kernel_init, name="wi_1", **dense
            )(x)
            h = act(gate) * linear  # [B, L, F]
        else:
            h = act(
                DenseGeneral(
                    self.hidden_dim, hidden_axes, kernel_init=self.kernel_init, name="wi", **dense
                )(x)
            )  # [B, L, F]
        h = nn.with_logical_constraint(h, (axes.BATCH, axes.LENGTH, axes.ACT_MLP))
        h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
        out_features = self.out_features or x.shape[-1]
        return DenseGeneral(
            out_features,
            (axes.MLP, axes.EMBED),
            kernel_init=self.out_kernel_init,
            name="wo",
            **dense,
        )(h)  # [B, L, E]
