"""Model-agnostic linen building blocks: dense, embeddings, norms, MLP, masks, attention (with a
chunked KV cache) and transformer blocks / stacks. Every parameter carries logical axis names from
:mod:`lmjax.axes`; every layer takes ``dtype`` (compute) and ``param_dtype`` (storage)."""

from lmjax.layers.attention import MultiHeadAttention, dot_product_attention
from lmjax.layers.dense import DenseGeneral, default_kernel_init
from lmjax.layers.embeddings import (
    Embed,
    FactorizedEmbed,
    PositionEmbed,
    TypeEmbed,
    sinusoidal_positions,
)
from lmjax.layers.mlp import ACTIVATIONS, GATED_ACTIVATIONS, MLP, activation_fn
from lmjax.layers.norms import LayerNorm, RMSNorm
from lmjax.layers.transformer import (
    REMAT_POLICIES,
    BlockConfig,
    TransformerBlock,
    TransformerStack,
    stack_layer_params,
    unstack_layer_params,
)

__all__ = [
    "ACTIVATIONS",
    "BlockConfig",
    "DenseGeneral",
    "Embed",
    "FactorizedEmbed",
    "GATED_ACTIVATIONS",
    "LayerNorm",
    "MLP",
    "MultiHeadAttention",
    "PositionEmbed",
    "REMAT_POLICIES",
    "RMSNorm",
    "TransformerBlock",
    "TransformerStack",
    "TypeEmbed",
    "activation_fn",
    "default_kernel_init",
    "dot_product_attention",
    "sinusoidal_positions",
    "stack_layer_params",
    "unstack_layer_params",
]
