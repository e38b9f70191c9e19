"""Meena: an Evolved Transformer sequence-to-sequence model for multi-turn open-domain dialogue.

Axis legend: B batch, Le encoder length, Ld decoder length, T decode chunk, M cache slots,
E embed, H heads, V vocab.

References:
- Adiwardana et al. (2020), "Towards a Human-like Open-Domain Chatbot", arXiv:2001.09977, §2.2-2.4:
  1 Evolved Transformer encoder block + 13 ET decoder blocks, hidden 2560, 32 heads, 8K BPE
  (SentencePiece) vocabulary, at most 128 tokens in encoder and decoder, 2.6B parameters, 7 turns of
  context.
- So et al. (2019), "The Evolved Transformer", arXiv:1901.11117; blocks in
  :mod:`lmjax.layers.evolved_transformer` after ``tensor2tensor/models/evolved_transformer.py``.
- Embedding and positions follow tensor2tensor's transformer defaults
  (``tensor2tensor/models/transformer.py`` / ``layers/common_layers.py``): one embedding table
  shared by encoder input, decoder input and output softmax
  (``shared_embedding_and_softmax_weights``), rows initialised N(0, E^-1/2) and multiplied by
  sqrt(E) at lookup (``multiply_embedding_mode='sqrt_depth'``), and the fixed sinusoidal timing
  signal (``add_timing_signal_1d``: [sin..., cos...], inverse frequencies ``1e4^(-i/(E/2-1))``).
  No parameters for positions. No public Meena checkpoint or code exists, so these t2t defaults
  are assumptions; ``tie_embeddings=False`` adds a separate [E, V] output kernel (the 'meena'
  preset then has 20.5M more parameters). With them the 'meena' preset has 2,591,745,280
  parameters (the paper: 2.6B). t2t also zeroes the embedding of id 0 at its input; lmjax does
  not (padding is masked by segment ids instead).

The seq2seq contract (shared with T5 and BART)::

    model = Meena(config)
    out = model.apply({'params': p}, encoder_inputs, decoder_inputs,
                      encoder_segment_ids=None, decoder_segment_ids=None,
                      encoder_positions=None, decoder_positions=None,
                      deterministic=True, decode=False)
    out['logits']   # float32 [B, Ld, V]
    out['hidden']   # [B, Ld, E]  decoder output after its final norm
    out['encoded']  # [B, Le, E]  encoder output after its final norm
    encoded = model.apply({'params': p}, encoder_inputs, method='encode')
    out = model.apply({'params': p}, encoded, decoder_inputs, method='decode')  # logits, hidden

Segment ids int32 [B, L]: 0 = padding, equal nonzero ids = one example of a packed row; attention
and every convolution stay inside a segment; decoder segment k attends to encoder segment k.

Decoding (the KV + conv cache)::

    cache = model.init(key, jnp.zeros((B, Le), jnp.int32), jnp.zeros((B, M), jnp.int32),
                       decode=True)['cache']
    out, mutated = model.apply({'params': p, 'cache': cache}, encoded, chunk,   # chunk [B, T]
                               method='decode', decode=True, mutable=['cache'])

Each decoder block caches keys/values of its two self-attention layers (``wide_self_attention``,
``self_attention``) and the last 10 / 6 inputs of its causal convolutions (see
:mod:`lmjax.layers.evolved_transformer`); ``decode_positions/cache_index`` counts decoded tokens
for the default positions ``cache_index + arange(T)``.

Parameter tree (unrolled blocks; ``param_dtype``)::

    token_embed/embedding                               [V, E]   (vocab, embed)
    encoder_block_{i}/glu_{values,gates}/{kernel,bias}  [E, E]   (embed, mlp)
    encoder_block_{i}/conv_left/{kernel,bias}           [E, 4E]  (embed, mlp)
    encoder_block_{i}/conv_right/{kernel,bias}          [3, E, E/2] (None, embed, mlp)
    encoder_block_{i}/conv_separable/depthwise          [9, 4E]  (None, mlp)
    encoder_block_{i}/conv_separable/pointwise/...      [4E, E/2] (mlp, embed)
    encoder_block_{i}/attention/{query,key,value,out}   [E, H, E/H] / [H, E/H, E]
    encoder_block_{i}/mlp_wi, mlp_wo                    [E, 4E], [4E, E]
    encoder_block_{i}/*_norm/{scale,bias}               [E] or [4E] (conv_mid_norm)
    decoder_block_{i}/wide_self_attention/...           max(min(2H, 16), H) heads of width E/heads
    decoder_block_{i}/first_cross_attention/...         H heads
    decoder_block_{i}/conv_left/{depthwise,pointwise}   [11, E], [E, 2E]
    decoder_block_{i}/conv_right/{depthwise,pointwise}  [7, E], [E, E/2]
    decoder_block_{i}/conv_final/{depthwise,pointwise}  [7, 2E], [2E, E]
    decoder_block_{i}/{self,cross}_attention/...        H heads
    decoder_block_{i}/mlp_wi, mlp_mid_norm, mlp_wo      [E, 4E], [4E], [4E, E]
    encoder_norm, decoder_norm                          [E]
    output/kernel                                       [E, V]  (embed, vocab) -- untied only
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax import axes
from lmjax.layers import masks
from lmjax.layers.dense import DenseGeneral
from lmjax.layers.embeddings import Embed, sinusoidal_positions
from lmjax.layers.evolved_transformer import (
    ETBlockConfig,
    ETDecoderBlock,
    ETEncoderBlock,
    wide_attention_heads,
)
from lmjax.layers.norms import LayerNorm
from lmjax.models import parameters

_DTYPES = ("float32", "bfloat16", "float16")
MEENA_CONTEXT_TURNS = 7  # turns of context the encoder sees (Adiwardana et al. 2020, §2.4)


def t2t_max_timescale(embed_dim: int) -> float:
    """The ``max_timescale`` that makes ``sinusoidal_positions`` equal t2t's timing signal.

    t2t ``common_attention.get_timing_signal_1d`` spaces the ``E/2`` inverse frequencies as
    ``1e4 ** (-i / (E/2 - 1))``; ``sinusoidal_positions`` uses ``max ** (-i / (E/2))``, so
    ``max = 1e4 ** ((E/2) / (E/2 - 1))``.
    """
    half = embed_dim // 2
    return 1e4 ** (half / (half - 1)) if half > 1 else 1e4


@dataclasses.dataclass(frozen=True)
class MeenaConfig:
    """Hyper-parameters of a Meena (Evolved Transformer seq2seq) model.

    Attributes:
      vocab_size: V (Meena: 8K SentencePiece BPE).
      max_len: the longest encoder / decoder input (Meena: 128 tokens each) and KV cache size.
      embed_dim: E (Meena: 2560).
      num_heads: H of the standard attention layers (Meena: 32).
      wide_heads: heads of each decoder block's first self-attention; 0 = t2t's
        ``max(min(2H, 16), H)`` (32 for Meena; see ``wide_attention_heads`` for the spec's
        ``min(2H, 16)`` reading, which is ``wide_heads=16``).
      num_encoder_blocks: ET encoder blocks (Meena: 1).
      num_decoder_blocks: ET decoder blocks (Meena: 13).
      dropout_rate: dropout on embeddings, branches and sub-block outputs.
      attention_dropout: dropout on attention weights.
      layer_norm_eps: LayerNorm epsilon (t2t: 1e-6).
      tie_embeddings: output logits ``hidden @ token_embed^T`` (t2t's shared softmax weights);
        False adds an ``output`` kernel [E, V].
      pad_id: padding id (t2t / SentencePiece convention: 0).
      eos_id: end-of-sequence id (t2t: 1).
      decoder_start_id: first decoder input; targets are shifted right behind it (t2t: 0 = pad).
      dtype: compute dtype name; logits, softmax and norms are float32 regardless.
      param_dtype: parameter storage dtype name.
    """

    vocab_size: int = 8000
    max_len: int = 128
    embed_dim: int = 2560
    num_heads: int = 32
    wide_heads: int = 0
    num_encoder_blocks: int = 1
    num_decoder_blocks: int = 13
    dropout_rate: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-6
    tie_embeddings: bool = True
    pad_id: int = 0
    eos_id: int = 1
    decoder_start_id: int = 0
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self) -> None:
        problems = []
        for field in ("vocab_size", "max_len", "embed_dim", "num_heads", "num_encoder_blocks",
                      "num_decoder_blocks"):
            if getattr(self, field) <= 0:
                problems.append(f"{field}={getattr(self, field)} must be positive")
        if self.embed_dim > 0 and self.num_heads > 0:
            if self.embed_dim % 2:
                problems.append(f"embed_dim={self.embed_dim} must be even (the E/2 conv branches)")
            if self.embed_dim % self.num_heads:
                problems.append(f"embed_dim={self.embed_dim} is not divisible by num_heads="
                                f"{self.num_heads}; change one of them")
            else:
                wide = self.wide_heads or wide_attention_heads(self.num_heads)
                if self.wide_heads < 0 or self.embed_dim % wide:
                    problems.append(
                        f"wide_heads={self.wide_heads} gives {wide} heads, which must be "
                        f"positive and divide embed_dim={self.embed_dim}; change wide_heads "
                        "(0 = t2t's max(min(2 * num_heads, 16), num_heads))"
                    )
        for field in ("dropout_rate", "attention_dropout"):
            if not 0.0 <= getattr(self, field) < 1.0:
                problems.append(f"{field}={getattr(self, field)} must be in [0, 1)")
        for field in ("pad_id", "eos_id", "decoder_start_id"):
            if not 0 <= getattr(self, field) < self.vocab_size:
                problems.append(f"{field}={getattr(self, field)} must be in [0, vocab_size="
                                f"{self.vocab_size})")
        for field in ("dtype", "param_dtype"):
            if getattr(self, field) not in _DTYPES:
                problems.append(f"{field}={getattr(self, field)!r} must be one of {_DTYPES}")
        if problems:
            raise ValueError("Invalid MeenaConfig: " + "; ".join(problems) + ".")

    def block_config(self) -> ETBlockConfig:
        """The per-block hyper-parameters of the ET encoder and decoder blocks."""
        return ETBlockConfig(
            embed_dim=self.embed_dim,
            num_heads=self.num_heads,
            wide_heads=self.wide_heads,
            dropout_rate=self.dropout_rate,
            attention_dropout=self.attention_dropout,
            norm_eps=self.layer_norm_eps,
            dtype=jnp.dtype(self.dtype),
            param_dtype=jnp.dtype(self.param_dtype),
        )


PRESETS: dict[str, MeenaConfig] = {
    # Adiwardana et al. 2020 §2.2-2.3 (hidden, heads, vocab and lengths are paper figures).
    "meena": MeenaConfig(),
    # Meena's shape scaled down: E 512, 8 heads, 1 + 6 blocks, 8K vocab (54,785,536 parameters).
    "small": MeenaConfig(vocab_size=8000, embed_dim=512, num_heads=8, num_encoder_blocks=1,
                         num_decoder_blocks=6),
    "tiny": MeenaConfig(vocab_size=512, embed_dim=64, num_heads=4, num_encoder_blocks=1,
                        num_decoder_blocks=2, dropout_rate=0.0, attention_dropout=0.0),
}


def _default_positions(positions: jax.Array | None, batch: int, length: int) -> jax.Array:
    if positions is not None:
        return jnp.asarray(positions, jnp.int32)
    return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))


def cross_attention_mask(
    decoder_segment_ids: jax.Array | None,
    encoder_segment_ids: jax.Array | None,
    decoder_length: int,
) -> jax.Array | None:
    """Decoder segment k attends to encoder segment k; bool [B|1, 1, Ld, Le] or None.

    With only encoder segment ids, every decoder token sees every real encoder token; with only
    decoder ids, real decoder tokens see the whole encoder row.
    """
    if encoder_segment_ids is None and decoder_segment_ids is None:
        return None
    if decoder_segment_ids is None:
        return masks.key_padding_mask(encoder_segment_ids, decoder_length)
    if encoder_segment_ids is None:
        query_valid = jnp.asarray(decoder_segment_ids) != 0
        return query_valid[:, None, :, None]
    return masks.segment_mask(decoder_segment_ids, encoder_segment_ids)


class _DecodePositions(nn.Module):
    """Holds the decoded-token counter ``cache_index`` for the default decode positions."""

    @nn.compact
    def __call__(self, length: int) -> jax.Array:
        """Returns int32 [T] positions ``cache_index + arange(T)`` and advances the counter."""
        index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
        positions = index.value + jnp.arange(length, dtype=jnp.int32)
        if not self.is_initializing():
            index.value = index.value + length
        return positions


class Meena(nn.Module):
    """The Meena seq2seq model (see the module docstring for call, cache and parameters).

    Attributes:
      config: the model's ``MeenaConfig``.
    """

    config: MeenaConfig

    def setup(self) -> None:
        cfg = self.config
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        block = cfg.block_config()
        self.token_embed = Embed(
            cfg.vocab_size, cfg.embed_dim,
            embedding_init=nn.initializers.normal(stddev=cfg.embed_dim**-0.5),
            dtype=dtype, param_dtype=param_dtype,
        )
        self.encoder_blocks = [
            ETEncoderBlock(block, name=f"encoder_block_{i}") for i in range(cfg.num_encoder_blocks)
        ]
        self.decoder_blocks = [
            ETDecoderBlock(block, name=f"decoder_block_{i}") for i in range(cfg.num_decoder_blocks)
        ]
        self.encoder_norm = LayerNorm(epsilon=cfg.layer_norm_eps, dtype=dtype,
                                      param_dtype=param_dtype)
        self.decoder_norm = LayerNorm(epsilon=cfg.layer_norm_eps, dtype=dtype,
                                      param_dtype=param_dtype)
        if not cfg.tie_embeddings:
            self.output = DenseGeneral(cfg.vocab_size, kernel_axes=(axes.EMBED, axes.VOCAB),
                                       use_bias=False, dtype=dtype, param_dtype=param_dtype)
        self.decode_positions = _DecodePositions()
        self.embed_dropout = nn.Dropout(cfg.dropout_rate)

    def _embedded(self, ids: jax.Array, positions: jax.Array, deterministic: bool) -> jax.Array:
        """``sqrt(E) * table[ids] + timing(positions)``, dropout; [B, L] -> [B, L, E]."""
        cfg = self.config
        if ids.ndim != 2:
            raise ValueError(f"Meena expects token ids [batch, length], got shape {ids.shape}.")
        x = self.token_embed(ids) * jnp.asarray(math.sqrt(cfg.embed_dim), jnp.dtype(cfg.dtype))
        timing = sinusoidal_positions(positions, cfg.embed_dim,
                                      max_timescale=t2t_max_timescale(cfg.embed_dim),
                                      dtype=jnp.dtype(cfg.dtype))  # [B, L, E]
        x = x + timing
        x = self.embed_dropout(x, deterministic=deterministic)
        return nn.with_logical_constraint(x, (axes.BATCH, axes.LENGTH, axes.ACT_EMBED))

    def _check_length(self, length: int, what: str) -> None:
        if length > self.config.max_len:
            raise ValueError(
                f"{what} length {length} exceeds max_len={self.config.max_len}; truncate the "
                "inputs (Meena keeps the last 128 context tokens) or raise max_len."
            )

    def encode(
        self,
        encoder_inputs: jax.Array,
        *,
        encoder_segment_ids: jax.Array | None = None,
        encoder_positions: jax.Array | None = None,
        deterministic: bool = True,
    ) -> jax.Array:
        """Encodes the context: int32 [B, Le] -> [B, Le, E] (after the encoder's final norm)."""
        batch, length = encoder_inputs.shape
        self._check_length(length, "Encoder input")
        positions = _default_positions(encoder_positions, batch, length)
        x = self._embedded(encoder_inputs, positions, deterministic)  # [B, Le, E]
        mask = None if encoder_segment_ids is None else masks.segment_mask(encoder_segment_ids)
        for block in self.encoder_blocks:
            x = block(x, mask, encoder_segment_ids, deterministic)
        return self.encoder_norm(x)

    def decode(
        self,
        encoded: jax.Array,
        decoder_inputs: jax.Array,
        *,
        encoder_segment_ids: jax.Array | None = None,
        decoder_segment_ids: jax.Array | None = None,
        decoder_positions: jax.Array | None = None,
        deterministic: bool = True,
        decode: bool = False,
    ) -> dict[str, jax.Array]:
        """Runs the decoder on ``decoder_inputs`` int32 [B, Ld] (a chunk [B, T] when decoding).

        Returns:
          ``{'logits': float32 [B, Ld, V], 'hidden': [B, Ld, E]}``.
        """
        batch, length = decoder_inputs.shape
        if decode:
            if self.is_initializing():
                self._check_length(length, "The decode cache")
            default_positions = self.decode_positions(length)
            if decoder_positions is None:
                decoder_positions = jnp.broadcast_to(default_positions, (batch, length))
            self_mask = None  # the KV cache builds the causal / validity mask
        else:
            self._check_length(length, "Decoder input")
            self_mask = masks.decoder_mask(length, decoder_segment_ids)  # [B|1, 1, Ld, Ld]
        positions = _default_positions(decoder_positions, batch, length)
        x = self._embedded(decoder_inputs, positions, deterministic)  # [B, Ld, E]
        cross_mask = cross_attention_mask(decoder_segment_ids, encoder_segment_ids, length)
        for block in self.decoder_blocks:
            x = block(x, encoded, self_mask, cross_mask, decoder_segment_ids, deterministic,
                      decode)
        x = self.decoder_norm(x)  # [B, Ld, E]
        if self.config.tie_embeddings:
            logits = self.token_embed.attend(x)
        else:
            logits = jnp.asarray(self.output(x), jnp.float32)
        logits = nn.with_logical_constraint(logits, (axes.BATCH, axes.LENGTH, axes.ACT_VOCAB))
        return {"logits": logits, "hidden": x}

    def __call__(
        self,
        encoder_inputs: jax.Array,
        decoder_inputs: jax.Array,
        *,
        encoder_segment_ids: jax.Array | None = None,
        decoder_segment_ids: jax.Array | None = None,
        encoder_positions: jax.Array | None = None,
        decoder_positions: jax.Array | None = None,
        deterministic: bool = True,
        decode: bool = False,
    ) -> dict[str, jax.Array]:
        """Encodes then decodes; returns ``{'logits', 'hidden', 'encoded'}`` (see the contract)."""
        encoded = self.encode(
            encoder_inputs, encoder_segment_ids=encoder_segment_ids,
            encoder_positions=encoder_positions, deterministic=deterministic,
        )
        out = self.decode(
            encoded, decoder_inputs, encoder_segment_ids=encoder_segment_ids,
            decoder_segment_ids=decoder_segment_ids, decoder_positions=decoder_positions,
            deterministic=deterministic, decode=decode,
        )
        return {**out, "encoded": encoded}


Config = MeenaConfig  # the family protocol of lmjax.models: Config, PRESETS, Model
Model = Meena


def param_shapes(config: MeenaConfig) -> Any:
    """The parameter tree as ``jax.ShapeDtypeStruct`` leaves (no allocation, via eval_shape)."""
    model = Meena(config)
    abstract = jax.eval_shape(
        lambda key: model.init(key, jnp.zeros((1, 1), jnp.int32), jnp.zeros((1, 1), jnp.int32)),
        jax.random.key(0),
    )
    return nn.unbox(abstract["params"])


def count_params(config: MeenaConfig) -> int:
    """The number of parameters of a model built from ``config`` (no allocation)."""
    return parameters.param_count(param_shapes(config))


def shift_right(targets: jax.Array, decoder_start_id: int) -> jax.Array:
    """Decoder inputs: ``targets`` [B, L] shifted right by one with ``decoder_start_id`` first."""
    start = jnp.full((targets.shape[0], 1), decoder_start_id, targets.dtype)
    return jnp.concatenate([start, targets[:, :-1]], axis=1)
