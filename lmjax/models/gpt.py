"""GPT-1, GPT-2 and GPT-3: decoder-only transformer language models with tied output embeddings.

Axis legend: B batch, L length, T decode chunk, M cache length (= the init dummy's length),
N layers, E embed, H heads, D head dim (E / H), F mlp, V vocab, P positions (max_len).

References:
- GPT-1: Radford et al. 2018, "Improving Language Understanding by Generative Pre-Training";
  ``openai/finetune-transformer-lm:train.py`` (post-LN blocks, no final norm, N(0, 0.02)
  everywhere).
- GPT-2: Radford et al. 2019, "Language Models are Unsupervised Multitask Learners" §2.3;
  ``openai/gpt-2:src/model.py`` (pre-LN blocks, final ``ln_f``, ``wpe`` N(0, 0.01)).
- GPT-3: Brown et al. 2020, "Language Models are Few-Shot Learners" §2.1 and Table 2.1
  (GPT-2's architecture with alternating dense and locally banded sparse attention).

The model: ``x = token_embed(inputs) + position_embed(positions)``, dropout, ``num_layers``
transformer blocks (:mod:`lmjax.layers.transformer`), an optional final LayerNorm, and tied logits
``hidden @ token_embed^T`` computed in float32.

Call (the lmjax decoder-only contract)::

    model = GPT(config)
    out = model.apply({'params': params}, inputs, positions=None, segment_ids=None,
                      deterministic=True, decode=False, rngs={'dropout': key})  # rngs when training
    out['logits']  # float32 [B, L, V]
    out['hidden']  # [B, L, E] (compute dtype), the final hidden states the logits are read from

``positions`` int32 [B, L] default to ``arange(L)`` (or to ``cache_index + arange(T)`` when
decoding). ``segment_ids`` int32 [B, L]: 0 = padding, 1, 2, ... = documents of a packed row;
attention stays inside the same nonzero segment; None = one document, no padding.

KV-cache decoding::

    variables = model.init(key, jnp.zeros((B, M), jnp.int32), decode=True)
    cache = variables['cache']                      # all zeros, M slots
    out, mutated = model.apply({'params': params, 'cache': cache}, chunk,   # chunk int32 [B, T]
                               positions=None, segment_ids=None, decode=True, mutable=['cache'])
    cache = mutated['cache']                        # T entries written, index advanced by T

A prompt batch of unequal lengths is LEFT-padded and prefilled with ``segment_ids`` (1 real,
0 pad) and explicit positions (``cumsum(segment_ids) - 1`` clipped at 0); later tokens need
explicit positions too (``cache_index - num_pad``), since the default ``cache_index + arange(T)``
counts the pad slots. Keys whose stored segment id is 0 are never attended.

Parameter tree (``scan_layers=True``, the default; the dtype is ``param_dtype``)::

    token_embed/embedding                      [V, E]        (vocab, embed)
    position_embed/embedding                   [P, E]        (position, embed)
    decoder/layers/attention_norm/scale        [N, E]        (layers, norm)
    decoder/layers/attention_norm/bias         [N, E]        (layers, norm)
    decoder/layers/attention/query/kernel      [N, E, H, D]  (layers, embed, heads, kv)
    decoder/layers/attention/query/bias        [N, H, D]     (layers, heads, kv)
    decoder/layers/attention/key/kernel        [N, E, H, D]  (layers, embed, heads, kv)
    decoder/layers/attention/key/bias          [N, H, D]     (layers, heads, kv)
    decoder/layers/attention/value/kernel      [N, E, H, D]  (layers, embed, heads, kv)
    decoder/layers/attention/value/bias        [N, H, D]     (layers, heads, kv)
    decoder/layers/attention/out/kernel        [N, H, D, E]  (layers, heads, kv, embed)
    decoder/layers/attention/out/bias          [N, E]        (layers, embed)
    decoder/layers/mlp_norm/scale              [N, E]        (layers, norm)
    decoder/layers/mlp_norm/bias               [N, E]        (layers, norm)
    decoder/layers/mlp/wi/kernel               [N, E, F]     (layers, embed, mlp)
    decoder/layers/mlp/wi/bias                 [N, F]        (layers, mlp)
    decoder/layers/mlp/wo/kernel               [N, F, E]     (layers, mlp, embed)
    decoder/layers/mlp/wo/bias                 [N, E]        (layers, embed)
    final_norm/scale                           [E]           (norm)    -- only if final_norm
    final_norm/bias                            [E]           (norm)    -- only if final_norm

With ``scan_layers=False`` each ``decoder/layers/<path>`` [N, ...] is instead
``decoder/layers_{i}/<path>`` [...] for i in 0..N-1. ``to_scanned_layout`` and
``to_unscanned_layout`` convert one into the other; the same weights give the same outputs in
either layout. ``attention_norm`` is the norm before attention (pre-LN: GPT-2 ``ln_1``) or after
its residual sum (post-LN: GPT-1 ``ln_1``); ``mlp_norm`` likewise (``ln_2``). Hugging Face's
Conv1D weights are stored [in, out], as these kernels are; its fused ``c_attn`` [E, 3E] splits
column-wise into query, key, value and reshapes each [E, E] -> [E, H, D].

Cache tree (scanned; unscanned uses ``layers_{i}`` without the leading N)::

    cache_index                                      []               int32  (positions)
    decoder/layers/attention/cached_key              [N, B, M, H, D]  dtype
    decoder/layers/attention/cached_value            [N, B, M, H, D]  dtype
    decoder/layers/attention/cached_segment_ids      [N, B, M]        int32
    decoder/layers/attention/cache_index             [N]              int32

Vocabulary of GPT-1: the released table has 40478 BPE rows (``encoder_bpe_40000.json``), like
Hugging Face ``openai-gpt`` (``vocab_size=40478``), and the 'gpt1' preset uses that size. The
original fine-tuning code appends ``GPT1_SPECIAL_TOKENS`` as rows 40478, 40479, 40480 (N(0, 0.02))
and keeps the 512 position rows in the same matrix after them; lmjax keeps positions in their own
table, and a model that needs the special tokens uses ``vocab_size=GPT1_VOCAB_WITH_SPECIALS``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax import axes
from lmjax.models import parameters
from lmjax.layers import masks
from lmjax.layers.embeddings import Embed, PositionEmbed
from lmjax.layers.mlp import activation_fn
from lmjax.layers.norms import LayerNorm
from lmjax.layers.transformer import (
    REMAT_POLICIES,
    BlockConfig,
    TransformerStack,
)

GPT1_SPECIAL_TOKENS = ("_start_", "_delimiter_", "_classify_")
GPT1_BPE_VOCAB = 40478
GPT1_VOCAB_WITH_SPECIALS = GPT1_BPE_VOCAB + len(GPT1_SPECIAL_TOKENS)
ATTENTION_PATTERNS = ("dense", "alternating_local")
_DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Hyper-parameters of a GPT model.

    Attributes:
      vocab_size: V, rows of the (tied) token embedding.
      max_len: P, rows of the learned position table (n_ctx).
      num_layers: N.
      embed_dim: E (d_model).
      num_heads: H; the head width is ``embed_dim // num_heads``.
      mlp_dim: F (GPT: 4 * E).
      norm: 'pre' (GPT-2/3) or 'post' (GPT-1) LayerNorm placement.
      final_norm: a LayerNorm after the last block (GPT-2/3 ``ln_f``; GPT-1 has none).
      activation: MLP activation; GPT uses the tanh approximation of GELU ('gelu_tanh').
      layer_norm_eps: LayerNorm epsilon.
      embed_dropout: dropout on the summed embeddings (``embd_pdrop``).
      attention_dropout: dropout on attention weights (``attn_pdrop``).
      residual_dropout: dropout on each sublayer output (``resid_pdrop``).
      init_std: std of the normal init of every kernel and the token table (0.02).
      position_init_std: std of the position table (GPT-2 ``wpe``: 0.01; GPT-1: 0.02).
      residual_scaling: init the attention-out and MLP-out kernels with
        ``init_std / sqrt(2 * num_layers)`` (GPT-2 paper §2.3; HF ``_init_weights`` on ``c_proj``).
        The official TF GPT-2 code does not do this: set False to match it.
      attention_pattern: 'dense', or 'alternating_local' (GPT-3: even layers dense, odd layers
        attend only to the ``local_window`` most recent tokens, themselves included).
      local_window: band width of the local layers.
      scan_layers: scan over layers (parameters ``decoder/layers`` [N, ...]) instead of unrolling
        (``decoder/layers_{i}``).
      remat: rematerialisation policy of each block ('none' | 'full' | 'dots_saveable' |
        'dots_with_no_batch_dims_saveable').
      dtype: compute dtype name; logits, softmax and norms are float32 regardless.
      param_dtype: parameter storage dtype name.
    """

    vocab_size: int = 50257
    max_len: int = 1024
    num_layers: int = 12
    embed_dim: int = 768
    num_heads: int = 12
    mlp_dim: int = 3072
    norm: str = "pre"
    final_norm: bool = True
    activation: str = "gelu_tanh"
    layer_norm_eps: float = 1e-5
    embed_dropout: float = 0.1
    attention_dropout: float = 0.1
    residual_dropout: float = 0.1
    init_std: float = 0.02
    position_init_std: float = 0.01
    residual_scaling: bool = True
    attention_pattern: str = "dense"
    local_window: int = 256
    scan_layers: bool = True
    remat: str = "none"
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self) -> None:
        problems = []
        if self.embed_dim % self.num_heads:
            problems.append(
                f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}"
            )
        if self.norm not in ("pre", "post"):
            problems.append(f"norm={self.norm!r} must be 'pre' or 'post'")
        if self.attention_pattern not in ATTENTION_PATTERNS:
            problems.append(
                f"attention_pattern={self.attention_pattern!r} must be one of {ATTENTION_PATTERNS}"
            )
        if self.attention_pattern == "alternating_local" and self.local_window <= 0:
            problems.append(f"local_window={self.local_window} must be positive")
        if self.remat not in REMAT_POLICIES:
            problems.append(f"remat={self.remat!r} must be one of {sorted(REMAT_POLICIES)}")
        for field in ("dtype", "param_dtype"):
            if getattr(self, field) not in _DTYPES:
                problems.append(f"{field}={getattr(self, field)!r} must be one of {_DTYPES}")
        for field in ("vocab_size", "max_len", "num_layers", "embed_dim", "num_heads", "mlp_dim"):
            if getattr(self, field) <= 0:
                problems.append(f"{field}={getattr(self, field)} must be positive")
        try:
            activation_fn(self.activation)
        except ValueError as error:
            problems.append(str(error))
        if problems:
            raise ValueError("Invalid GPTConfig: " + "; ".join(problems) + ".")

    @property
    def head_dim(self) -> int:
        """D = E / H."""
        return self.embed_dim // self.num_heads

    def layer_windows(self) -> tuple[int, ...]:
        """The local window of each layer (0 = dense): odd layers are local when alternating."""
        if self.attention_pattern == "dense":
            return (0,) * self.num_layers
        return tuple(self.local_window if i % 2 else 0 for i in range(self.num_layers))


def _gpt2(num_layers: int, embed_dim: int, num_heads: int) -> GPTConfig:
    return GPTConfig(
        num_layers=num_layers, embed_dim=embed_dim, num_heads=num_heads, mlp_dim=4 * embed_dim
    )


def _gpt3(num_layers: int, embed_dim: int, num_heads: int) -> GPTConfig:
    return GPTConfig(
        max_len=2048,
        num_layers=num_layers,
        embed_dim=embed_dim,
        num_heads=num_heads,
        mlp_dim=4 * embed_dim,
        attention_pattern="alternating_local",
    )


# GPT-3 Table 2.1, with two rows of the table made self-consistent (d_model = heads x d_head):
# - 13B: the paper says d_model 5140, not 40 heads x 128 = 5120; lmjax uses 5120 (~12.9B params).
# - XL: the paper says 24 heads x 128 with d_model 2048 (24 x 128 = 3072); lmjax keeps d_model 2048
#   and d_head 128, i.e. 16 heads, which gives the table's 1.3B (24 heads of 128 would give 1.5B).
# The width of the local band is not published: 256 is an inference (GPT-Neo's local attention
# window); change it with local_window.
PRESETS: dict[str, GPTConfig] = {
    "gpt1": GPTConfig(
        vocab_size=GPT1_BPE_VOCAB,
        max_len=512,
        norm="post",
        final_norm=False,
        position_init_std=0.02,
        residual_scaling=False,
    ),
    "gpt2": _gpt2(12, 768, 12),
    "gpt2-medium": _gpt2(24, 1024, 16),
    "gpt2-large": _gpt2(36, 1280, 20),
    "gpt2-xl": _gpt2(48, 1600, 25),
    "gpt3-small": _gpt3(12, 768, 12),
    "gpt3-medium": _gpt3(24, 1024, 16),
    "gpt3-large": _gpt3(24, 1536, 16),
    "gpt3-xl": _gpt3(24, 2048, 16),
    "gpt3-2.7b": _gpt3(32, 2560, 32),
    "gpt3-6.7b": _gpt3(32, 4096, 32),
    "gpt3-13b": _gpt3(40, 5120, 40),
    "gpt3-175b": _gpt3(96, 12288, 96),
    # Small presets for tests and CPU demos.
    "tiny": GPTConfig(
        vocab_size=8192, max_len=256, num_layers=4, embed_dim=256, num_heads=4, mlp_dim=1024
    ),
    "gpt1-tiny": GPTConfig(
        vocab_size=8192,
        max_len=256,
        num_layers=4,
        embed_dim=256,
        num_heads=4,
        mlp_dim=1024,
        norm="post",
        final_norm=False,
        position_init_std=0.02,
        residual_scaling=False,
    ),
    "gpt3-tiny": GPTConfig(
        vocab_size=8192,
        max_len=256,
        num_layers=4,
        embed_dim=256,
        num_heads=4,
        mlp_dim=1024,
        attention_pattern="alternating_local",
        local_window=32,
    ),
}

# The parameter counts the GPT-3 paper names its sizes by (Table 2.1).
GPT3_PAPER_PARAMS = {
    "gpt3-small": 125e6,
    "gpt3-medium": 350e6,
    "gpt3-large": 760e6,
    "gpt3-xl": 1.3e9,
    "gpt3-2.7b": 2.7e9,
    "gpt3-6.7b": 6.7e9,
    "gpt3-13b": 13.0e9,
    "gpt3-175b": 175.0e9,
}


class GPT(nn.Module):
    """A GPT decoder-only language model (see the module docstring for call, cache and params).

    Attributes:
      config: the model's ``GPTConfig``.
    """

    config: GPTConfig

    def block_config(self) -> BlockConfig:
        """The per-layer hyper-parameters handed to the transformer stack."""
        cfg = self.config
        out_std = cfg.init_std
        if cfg.residual_scaling:
            out_std = cfg.init_std / math.sqrt(2 * cfg.num_layers)
        return BlockConfig(
            num_heads=cfg.num_heads,
            head_dim=cfg.head_dim,
            mlp_dim=cfg.mlp_dim,
            activation=cfg.activation,
            norm_placement=cfg.norm,
            norm_kind="layer",
            norm_eps=cfg.layer_norm_eps,
            use_bias=True,
            attention_dropout=cfg.attention_dropout,
            residual_dropout=cfg.residual_dropout,
            mlp_dropout=0.0,
            kernel_init=nn.initializers.normal(stddev=cfg.init_std),
            out_kernel_init=nn.initializers.normal(stddev=out_std),
            bias_init=nn.initializers.zeros_init(),
            dtype=jnp.dtype(cfg.dtype),
            param_dtype=jnp.dtype(cfg.param_dtype),
        )

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        deterministic: bool = True,
        decode: bool = False,
    ) -> dict[str, jax.Array]:
        """Runs the model.

        Args:
          inputs: int32 [B, L] token ids (a chunk [B, T] when decoding).
          positions: int32 [B, L] position ids (default: arange, or cache_index + arange(T)).
          segment_ids: int32 [B, L]; 0 = padding, equal nonzero ids = one document. In decode
            mode they are stored in the cache as key validity (nonzero = attendable).
          deterministic: disables dropout (pass ``rngs={'dropout': key}`` when False).
          decode: use and update the KV cache (``mutable=['cache']``).

        Returns:
          ``{'logits': float32 [B, L, V], 'hidden': [B, L, E]}``.
        """
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        param_dtype = jnp.dtype(cfg.param_dtype)
        if inputs.ndim != 2:
            raise ValueError(f"GPT expects inputs [batch, length], got shape {inputs.shape}.")
        batch, length = inputs.shape

        if decode:
            if self.is_initializing() and length > cfg.max_len:
                raise ValueError(
                    f"A KV cache of {length} slots exceeds max_len={cfg.max_len}; initialise the "
                    "cache with a dummy input of at most max_len tokens."
                )
            cache_index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
            if positions is None:
                positions = cache_index.value + jnp.arange(length, dtype=jnp.int32)
                positions = jnp.broadcast_to(positions, (batch, length))
            if not self.is_initializing():
                cache_index.value = cache_index.value + length
            mask = None  # the KV cache builds the causal / validity mask
        else:
            if length > cfg.max_len:
                raise ValueError(
                    f"Sequence length {length} exceeds max_len={cfg.max_len}; shorten the inputs "
                    "or build the model with a larger max_len."
                )
            if positions is None:
                positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
            mask = masks.decoder_mask(length, segment_ids)  # [B|1, 1, L, L]

        token_embed = Embed(
            cfg.vocab_size,
            cfg.embed_dim,
            embedding_init=nn.initializers.normal(stddev=cfg.init_std),
            dtype=dtype,
            param_dtype=param_dtype,
            name="token_embed",
        )
        position_embed = PositionEmbed(
            cfg.max_len,
            cfg.embed_dim,
            embedding_init=nn.initializers.normal(stddev=cfg.position_init_std),
            dtype=dtype,
            param_dtype=param_dtype,
            name="position_embed",
        )
        x = token_embed(inputs) + position_embed(positions)  # [B, L, E]
        x = nn.Dropout(cfg.embed_dropout)(x, deterministic=deterministic)
        x = nn.with_logical_constraint(x, (axes.BATCH, axes.LENGTH, axes.ACT_EMBED))

        x = TransformerStack(
            self.block_config(),
            num_layers=cfg.num_layers,
            scan=cfg.scan_layers,
            remat=cfg.remat,
            windows=cfg.layer_windows(),
            name="decoder",
        )(
            x,
            mask,
            None,
            segment_ids if decode else None,
            None,
            None,
            deterministic,
            decode,
        )  # [B, L, E]
        if cfg.final_norm:
            x = LayerNorm(
                epsilon=cfg.layer_norm_eps, dtype=dtype, param_dtype=param_dtype, name="final_norm"
            )(x)
        logits = token_embed.attend(x)  # float32 [B, L, V]
        logits = nn.with_logical_constraint(logits, (axes.BATCH, axes.LENGTH, axes.ACT_VOCAB))
        return {"logits": logits, "hidden": x}


Config = GPTConfig  # the family protocol of lmjax.models: Config, PRESETS, Model
Model = GPT


def param_shapes(config: GPTConfig) -> Any:
    """The parameter tree as ``jax.ShapeDtypeStruct`` leaves (no allocation, via eval_shape)."""
    return parameters.abstract_params(GPT(config))


def count_params(config: GPTConfig) -> int:
    """The number of parameters of a model built from ``config`` (no allocation)."""
    return parameters.param_count(param_shapes(config))


def to_scanned_layout(params: Mapping[str, Any], num_layers: int) -> dict[str, Any]:
    """Unscanned parameters (``decoder/layers_{i}``) -> scanned (``decoder/layers`` [N, ...]).

    Accepts boxed (``nn.LogicallyPartitioned``) or plain leaves; returns plain arrays.
    """
    return parameters.scanned_layout(params, "decoder", num_layers)


def to_unscanned_layout(params: Mapping[str, Any]) -> dict[str, Any]:
    """Scanned parameters (``decoder/layers`` [N, ...]) -> unscanned (``decoder/layers_{i}``)."""
    return parameters.unscanned_layout(params, "decoder")
