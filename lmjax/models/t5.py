"""T5, T5.1.1 and mT5: encoder-decoder transformers with bucketed relative position biases.

Axis legend: B batch, Le / Ld encoder / decoder length, T decode chunk, M cache length (= the init
dummy's decoder length), N layers, E embed (d_model), H heads, D head dim (d_kv), F mlp (d_ff),
V vocab, NB relative-position buckets.

References:
- T5: Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
  Transformer" §2.1 (pre-norm blocks with a scale-only norm and no biases, relative position
  buckets shared across layers, the output layer tied to the input embedding).
- T5.1.1: ``google-research/text-to-text-transfer-transformer`` ``released_checkpoints.md``
  (gated-GELU FFN, no dropout in pre-training, untied output layer); mT5: Xue et al. 2021,
  "mT5: A massively multilingual pre-trained text-to-text transformer" (T5.1.1 with a 250112 vocab).
- Code read for the facts: ``t5x/examples/t5/network.py`` (``Transformer``, ``Encoder``,
  ``Decoder``), ``t5x/examples/t5/layers.py`` (initialisers, the query-folded logit scale) and
  Hugging Face ``transformers/models/t5/modeling_t5.py`` (``T5Stack``,
  ``T5ForConditionalGeneration``: the tied head reads ``hidden * d_model**-0.5``).

The network::

    encoded = dropout(rms_norm(encoder_layers(dropout(embed(encoder_inputs)), enc_bias)))
    hidden  = dropout(rms_norm(decoder_layers(dropout(embed(decoder_inputs)), dec_bias, encoded)))
    logits  = (hidden * E**-0.5) @ embed^T     (tie_embeddings=True, T5 1.0)
            = hidden @ lm_head                 (tie_embeddings=False, T5.1.1 / mT5)

Every layer is pre-norm (``x + dropout(sublayer(rms_norm(x)))``) with attention logit scale 1.0
(the ``1/sqrt(D)`` lives in the query kernel's initialiser) and no biases; decoder layers add a
cross-attention sublayer without position bias. Each stack computes its relative bias once
(bidirectional buckets in the encoder, causal in the decoder; ``lmjax.layers.relative_position``)
and passes it to all of its layers. Dropout (``dropout_rate``) hits the embeddings, each
sublayer's output, the attention weights, the FFN hidden activations and each stack's output.

Call (the lmjax seq2seq contract)::

    model = T5(config)
    out = model.apply({'params': params}, encoder_inputs, decoder_inputs,
                      encoder_segment_ids=None, decoder_segment_ids=None,
                      encoder_positions=None, decoder_positions=None,
                      deterministic=True, decode=False)     # rngs={'dropout': k} when training
    out['logits']   # float32 [B, Ld, V]
    out['hidden']   # [B, Ld, E] decoder output after its final norm (what the logits read)
    out['encoded']  # [B, Le, E]
    encoded = model.apply(variables, encoder_inputs, method='encode')
    out = model.apply(variables, encoded, decoder_inputs, method='decode')  # logits, hidden

Segment ids int32: 0 = padding, equal nonzero ids = one example of a packed row. Encoder and
decoder self-attention stay inside a segment; decoder segment k attends to encoder segment k.
With ``decoder_segment_ids=None`` every decoder token attends to every nonzero encoder token.
Positions (default ``arange``) set the relative distances; within one segment of a packed row
arange and per-segment positions give the same distances.

KV-cache decoding (decoder self-attention only; cross-attention is recomputed from ``encoded``)::

    cache = model.init(key, jnp.zeros((B, Le), jnp.int32), jnp.zeros((B, M), jnp.int32),
                       decode=True)['cache']
    out, mutated = model.apply({'params': params, 'cache': cache}, encoded, chunk,  # [B, T]
                               method='decode', decode=True, mutable=['cache'])
    cache = mutated['cache']

The chunk's positions (default ``cache_index + arange(T)``) are stored in the cache
(``decoder_positions/cached_positions`` [B, M]), so the relative bias of a query against every
cached key uses the keys' own positions.

Parameter tree (``scan_layers=True``; unscanned: ``encoder/layers_{i}/...`` without N)::

    token_embed/embedding                             [V, E]          (vocab, embed)
    encoder_relative_bias/embedding                   [NB, H]         (None, heads)
    encoder/layers/attention_norm/scale               [N, E]          (layers, norm)
    encoder/layers/attention/{query,key,value}/kernel [N, E, H, D]    (layers, embed, heads, kv)
    encoder/layers/attention/out/kernel               [N, H, D, E]    (layers, heads, kv, embed)
    encoder/layers/mlp_norm/scale                     [N, E]          (layers, norm)
    encoder/layers/mlp/wi/kernel                      [N, E, F]       (layers, embed, mlp)
        (gated: mlp/wi_0/kernel and mlp/wi_1/kernel)
    encoder/layers/mlp/wo/kernel                      [N, F, E]       (layers, mlp, embed)
    encoder_norm/scale                                [E]             (norm)
    decoder_relative_bias/embedding                   [NB, H]         (None, heads)
    decoder/layers/...                                as the encoder, plus
    decoder/layers/cross_attention_norm/scale         [N, E]
    decoder/layers/cross_attention/{query,key,value,out}/kernel
    decoder_norm/scale                                [E]             (norm)
    lm_head/kernel                                    [E, V]          (embed, vocab) -- untied only
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax import axes
from lmjax.layers import masks
from lmjax.layers.dense import Initializer
from lmjax.layers.embeddings import Embed
from lmjax.layers.mlp import activation_fn
from lmjax.layers.norms import RMSNorm
from lmjax.layers.relative_position import RelativePositionBias, check_bucket_settings
from lmjax.layers.transformer import REMAT_POLICIES, BlockConfig, TransformerStack
from lmjax.models import parameters

_DTYPES = ("float32", "bfloat16", "float16")
_ACTIVATION_AXES = (axes.BATCH, axes.LENGTH, axes.ACT_EMBED)
# t5x/examples/t5/layers.py: dense kernels variance_scaling(1.0, 'fan_in', ...); the query's
# variance is further divided by D, folding attention's 1/sqrt(D) into the weights.
_FAN_IN = nn.initializers.variance_scaling(1.0, "fan_in", "normal")


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Hyper-parameters of a T5 / T5.1.1 / mT5 model.

    Attributes:
      vocab_size: V, rows of the shared token embedding (T5: 32128; mT5: 250112).
      embed_dim: E (``d_model``).
      num_heads: H.
      head_dim: D (``d_kv``; need not be E / H: T5 1.0 3B/11B use 128 with E 1024).
      mlp_dim: F (``d_ff``).
      num_encoder_layers: encoder depth.
      num_decoder_layers: decoder depth.
      activation: FFN activation, a name of :mod:`lmjax.layers.mlp`: 'relu' (T5 1.0) or
        'gated_gelu' (T5.1.1 / mT5: ``gelu_tanh(wi_0 x) * wi_1 x``, HF's 'gated-gelu').
      tie_embeddings: True (T5 1.0): logits ``(hidden * E**-0.5) @ embed^T``; False (T5.1.1 /
        mT5): a separate ``lm_head`` [E, V] and no scaling.
      dropout_rate: dropout everywhere (embeddings, sublayer outputs, attention weights, FFN
        hidden, stack outputs). T5 1.0: 0.1; T5.1.1 pre-training: 0.
      relative_buckets: NB, buckets of the relative position bias (32).
      relative_max_distance: distances from here on share the last bucket (128).
      norm_eps: RMSNorm epsilon (1e-6).
      pad_id: padding token (0).
      eos_id: end-of-sequence token (1).
      decoder_start_id: first decoder input (T5: 0, the pad token).
      scan_layers: scan each stack over its layers (``encoder/layers`` [N, ...]).
      remat: rematerialisation policy of each block (a key of ``REMAT_POLICIES``).
      dtype: compute dtype name; logits, softmax, norms and the bias are float32 regardless.
      param_dtype: parameter storage dtype name.
    """

    vocab_size: int = 32128
    embed_dim: int = 512
    num_heads: int = 8
    head_dim: int = 64
    mlp_dim: int = 2048
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    activation: str = "relu"
    tie_embeddings: bool = True
    dropout_rate: float = 0.1
    relative_buckets: int = 32
    relative_max_distance: int = 128
    norm_eps: float = 1e-6
    pad_id: int = 0
    eos_id: int = 1
    decoder_start_id: int = 0
    scan_layers: bool = True
    remat: str = "none"
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self) -> None:
        problems = []
        for field in (
            "vocab_size", "embed_dim", "num_heads", "head_dim", "mlp_dim", "num_encoder_layers",
            "num_decoder_layers",
        ):
            if getattr(self, field) <= 0:
                problems.append(f"{field}={getattr(self, field)} must be positive")
        if not 0.0 <= self.dropout_rate < 1.0:
            problems.append(f"dropout_rate={self.dropout_rate} must be in [0, 1)")
        if self.norm_eps <= 0:
            problems.append(f"norm_eps={self.norm_eps} must be positive")
        for field in ("pad_id", "eos_id", "decoder_start_id"):
            value = getattr(self, field)
            if not 0 <= value < self.vocab_size:
                problems.append(f"{field}={value} must be a token id in [0, vocab_size)")
        try:
            activation_fn(self.activation)
        except ValueError as error:
            problems.append(str(error).rstrip("."))
        for bidirectional in (True, False):
            try:
                check_bucket_settings(
                    self.relative_buckets, self.relative_max_distance, bidirectional
                )
            except ValueError as error:
                problems.append(
                    str(error)
                    .replace("num_buckets", "relative_buckets")
                    .replace("max_distance", "relative_max_distance")
                    .rstrip(".")
                )
                break
        if self.remat not in REMAT_POLICIES:
            problems.append(f"remat={self.remat!r} must be one of {sorted(REMAT_POLICIES)}")
        for field in ("dtype", "param_dtype"):
            if getattr(self, field) not in _DTYPES:
                problems.append(f"{field}={getattr(self, field)!r} must be one of {_DTYPES}")
        if problems:
            raise ValueError("Invalid T5Config: " + "; ".join(problems) + ".")


def _t5_1_0(embed_dim: int, num_heads: int, head_dim: int, num_layers: int, mlp_dim: int):
    return T5Config(
        embed_dim=embed_dim, num_heads=num_heads, head_dim=head_dim, mlp_dim=mlp_dim,
        num_encoder_layers=num_layers, num_decoder_layers=num_layers,
    )


def _t5_1_1(embed_dim: int, num_heads: int, num_layers: int, mlp_dim: int, vocab: int = 32128):
    return T5Config(
        vocab_size=vocab, embed_dim=embed_dim, num_heads=num_heads, head_dim=64,
        mlp_dim=mlp_dim, num_encoder_layers=num_layers, num_decoder_layers=num_layers,
        activation="gated_gelu", tie_embeddings=False, dropout_rate=0.0,
    )


MT5_VOCAB = 250112
# Sizes: t5x gin files (t5_1_0/*.gin, t5_1_1/*.gin, mt5/*.gin); the text-models spec §11 table.
PRESETS: dict[str, T5Config] = {
    "t5_small": _t5_1_0(512, 8, 64, 6, 2048),
    "t5_base": _t5_1_0(768, 12, 64, 12, 3072),
    "t5_large": _t5_1_0(1024, 16, 64, 24, 4096),
    "t5_3b": _t5_1_0(1024, 32, 128, 24, 16384),
    "t5_11b": _t5_1_0(1024, 128, 128, 24, 65536),
    "t5_1_1_small": _t5_1_1(512, 6, 8, 1024),
    "t5_1_1_base": _t5_1_1(768, 12, 12, 2048),
    "t5_1_1_large": _t5_1_1(1024, 16, 24, 2816),
    "t5_1_1_xl": _t5_1_1(2048, 32, 24, 5120),
    "t5_1_1_xxl": _t5_1_1(4096, 64, 24, 10240),
    "mt5_small": _t5_1_1(512, 6, 8, 1024, MT5_VOCAB),
    "mt5_base": _t5_1_1(768, 12, 12, 2048, MT5_VOCAB),
    "mt5_large": _t5_1_1(1024, 16, 24, 2816, MT5_VOCAB),
    "mt5_xl": _t5_1_1(2048, 32, 24, 5120, MT5_VOCAB),
    "mt5_xxl": _t5_1_1(4096, 64, 24, 10240, MT5_VOCAB),
    # Small presets for tests and CPU demos (T5.1.1 style, and a T5 1.0 style twin).
    "tiny": T5Config(
        vocab_size=512, embed_dim=64, num_heads=4, head_dim=16, mlp_dim=128,
        num_encoder_layers=2, num_decoder_layers=2, activation="gated_gelu",
        tie_embeddings=False, dropout_rate=0.0,
    ),
    "tiny_v1_0": T5Config(
        vocab_size=512, embed_dim=64, num_heads=4, head_dim=16, mlp_dim=128,
        num_encoder_layers=2, num_decoder_layers=2,
    ),
}

# Parameter counts of the released checkpoints (Hugging Face T5ForConditionalGeneration /
# MT5ForConditionalGeneration; a tied table counted once).
PUBLISHED_PARAMS = {"t5_small": 60_506_624, "t5_1_1_small": 76_961_152, "mt5_small": 300_176_768}


class OutputHead(nn.Module):
    """The untied output projection ``hidden @ kernel`` [E, V], logits in float32.

    Attributes:
      vocab_size: V.
      kernel_init: initialiser (t5x ``logits_dense``: fan-in variance scaling).
      dtype: compute dtype of the matmul inputs (accumulated in float32).
      param_dtype: storage dtype.
    """

    vocab_size: int
    kernel_init: Initializer = _FAN_IN
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[..., E] -> float32 [..., V]."""
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(self.kernel_init, (axes.EMBED, axes.VOCAB)),
            (x.shape[-1], self.vocab_size),
            self.param_dtype,
        )
        return jnp.einsum(
            "...e,ev->...v",
            jnp.asarray(x, self.dtype),
            jnp.asarray(kernel, self.dtype),
            preferred_element_type=jnp.float32,
        )


class DecodePositions(nn.Module):
    """The decoder's position bookkeeping under ``decode=True`` (cache collection).

    Keeps ``cache_index`` [] and ``cached_positions`` int32 [B, M]: each chunk's positions
    (default ``cache_index + arange(T)``) are written at its slots, so the causal relative bias
    of a query against every cached key uses both tokens' positions.
    """

    @nn.compact
    def __call__(
        self, positions: jax.Array | None, batch: int, length: int
    ) -> tuple[jax.Array, jax.Array]:
        """Returns (query positions [B, T], key positions [B, M]) and advances the cache.

        During ``init`` (which sizes the cache: M = the dummy's length) both are the chunk's own.
        """
        initializing = self.is_initializing()
        if not initializing and not self.has_variable("cache", "cache_index"):
            raise ValueError(
                "decode=True needs a KV cache: create it with model.init(key, "
                "jnp.zeros((batch, encoder_len), jnp.int32), jnp.zeros((batch, max_decode_len), "
                "jnp.int32), decode=True)['cache'] and pass it with mutable=['cache']."
            )
        cache_index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
        cached = self.variable("cache", "cached_positions", jnp.zeros, (batch, length), jnp.int32)
        index = cache_index.value
        if positions is None:
            positions = index + jnp.arange(length, dtype=jnp.int32)
        positions = jnp.broadcast_to(jnp.asarray(positions, jnp.int32), (batch, length))
        if initializing:
            return positions, positions
        if cached.value.shape[0] != batch:
            raise ValueError(
                f"The decoder cache was built for batch {cached.value.shape[0]} but the chunk has "
                f"batch {batch}; re-initialise the cache with the decoding batch size."
            )
        cached.value = jax.lax.dynamic_update_slice(cached.value, positions, (0, index))
        cache_index.value = index + length
        return positions, cached.value  # [B, T], [B, M]


def cross_attention_mask(
    decoder_segment_ids: jax.Array | None, encoder_segment_ids: jax.Array | None, length: int
) -> jax.Array | None:
    """Which encoder tokens each decoder token attends to (bool [B, 1, Ld, Le] or None).

    Both given: same nonzero segment. Only the encoder's: every nonzero encoder token. Neither
    (or only the decoder's: the encoder has no padding): no restriction.
    """
    if encoder_segment_ids is None:
        return None
    if decoder_segment_ids is None:
        return masks.key_padding_mask(encoder_segment_ids, length)
    return masks.segment_mask(decoder_segment_ids, encoder_segment_ids)


def _check_tokens(ids: jax.Array, what: str) -> None:
    if ids.ndim != 2:
        raise ValueError(f"T5 expects {what} [batch, length], got shape {ids.shape}.")


class T5(nn.Module):
    """A T5 encoder-decoder (see the module docstring for call, cache and parameters).

    Attributes:
      config: the model's ``T5Config``.
    """

    config: T5Config

    def block_config(self, cross_attention: bool) -> BlockConfig:
        """The per-layer hyper-parameters of the encoder (False) or decoder (True) stack."""
        cfg = self.config
        return BlockConfig(
            num_heads=cfg.num_heads,
            head_dim=cfg.head_dim,
            mlp_dim=cfg.mlp_dim,
            activation=cfg.activation,
            norm_placement="pre",
            norm_kind="rms",
            norm_eps=cfg.norm_eps,
            use_bias=False,
            attention_dropout=cfg.dropout_rate,
            residual_dropout=cfg.dropout_rate,
            mlp_dropout=cfg.dropout_rate,
            logit_scale=1.0,
            cross_attention=cross_attention,
            kernel_init=_FAN_IN,
            out_kernel_init=_FAN_IN,
            query_kernel_init=nn.initializers.variance_scaling(
                1.0 / cfg.head_dim, "fan_in", "normal"
            ),
            dtype=jnp.dtype(cfg.dtype),
            param_dtype=jnp.dtype(cfg.param_dtype),
        )

    def setup(self) -> None:
        cfg = self.config
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        # HF T5 init: embedding N(0, 1); bias tables N(0, E**-0.5).
        self.token_embed = Embed(
            cfg.vocab_size,
            cfg.embed_dim,
            embedding_init=nn.initializers.normal(stddev=1.0),
            dtype=dtype,
            param_dtype=param_dtype,
        )
        bias = dict(
            num_heads=cfg.num_heads,
            num_buckets=cfg.relative_buckets,
            max_distance=cfg.relative_max_distance,
            embedding_init=nn.initializers.normal(stddev=cfg.embed_dim**-0.5),
            dtype=dtype,
            param_dtype=param_dtype,
        )
        stack = dict(scan=cfg.scan_layers, remat=cfg.remat)
        norm = dict(epsilon=cfg.norm_eps, dtype=dtype, param_dtype=param_dtype)
        self.encoder_relative_bias = RelativePositionBias(bidirectional=True, **bias)
        self.encoder = TransformerStack(
            self.block_config(False), num_layers=cfg.num_encoder_layers, **stack
        )
        self.encoder_norm = RMSNorm(**norm)
        self.decoder_relative_bias = RelativePositionBias(bidirectional=False, **bias)
        self.decoder = TransformerStack(
            self.block_config(True), num_layers=cfg.num_decoder_layers, **stack
        )
        self.decoder_norm = RMSNorm(**norm)
        self.decoder_positions = DecodePositions()
        if not cfg.tie_embeddings:
            self.lm_head = OutputHead(cfg.vocab_size, dtype=dtype, param_dtype=param_dtype)
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def encode(
        self,
        encoder_inputs: jax.Array,
        *,
        encoder_segment_ids: jax.Array | None = None,
        encoder_positions: jax.Array | None = None,
        deterministic: bool = True,
    ) -> jax.Array:
        """Runs the encoder.

        Args:
          encoder_inputs: int32 [B, Le] token ids.
          encoder_segment_ids: int32 [B, Le]; 0 = padding (None: all one segment).
          encoder_positions: int32 [B, Le] (default arange) for the relative bias.
          deterministic: disables dropout (pass ``rngs={'dropout': key}`` when False).

        Returns:
          [B, Le, E] in the compute dtype.
        """
        _check_tokens(encoder_inputs, "encoder_inputs")
        length = encoder_inputs.shape[1]
        positions = jnp.arange(length) if encoder_positions is None else encoder_positions
        bias = self.encoder_relative_bias(positions, positions)  # float32 [1|B, H, Le, Le]
        mask = None if encoder_segment_ids is None else masks.segment_mask(encoder_segment_ids)
        x = self.dropout(self.token_embed(encoder_inputs), deterministic=deterministic)
        x = nn.with_logical_constraint(x, _ACTIVATION_AXES)  # [B, Le, E]
        x = self.encoder(x, mask, bias, None, None, None, deterministic, False)
        return self.dropout(self.encoder_norm(x), deterministic=deterministic)  # [B, Le, E]

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
        """Runs the decoder on ``encoded`` and returns its logits and final hidden states.

        Args:
          encoded: [B, Le, E] the encoder output.
          decoder_inputs: int32 [B, Ld] (decoding: a chunk [B, T]), targets shifted right with
            ``decoder_start_id`` first.
          encoder_segment_ids: int32 [B, Le] of ``encoded``; 0 = padding.
          decoder_segment_ids: int32 [B, Ld]; in decode mode stored as key validity.
          decoder_positions: int32 [B, Ld] (default arange; decoding: cache_index + arange(T)).
          deterministic: disables dropout.
          decode: use and update the KV cache (``mutable=['cache']``).

        Returns:
          ``{'logits': float32 [B, Ld, V], 'hidden': [B, Ld, E]}``.
        """
        _check_tokens(decoder_inputs, "decoder_inputs")
        batch, length = decoder_inputs.shape
        if decode:
            query_positions, key_positions = self.decoder_positions(
                decoder_positions, batch, length
            )  # [B, T], [B, M]
            self_mask, stored_segments = None, decoder_segment_ids  # the cache masks
        else:
            query_positions = key_positions = (
                jnp.arange(length) if decoder_positions is None else decoder_positions
            )
            self_mask, stored_segments = masks.decoder_mask(length, decoder_segment_ids), None
        bias = self.decoder_relative_bias(query_positions, key_positions)  # [1|B, H, Ld, Lk]
        encoder_mask = cross_attention_mask(decoder_segment_ids, encoder_segment_ids, length)
        x = self.dropout(self.token_embed(decoder_inputs), deterministic=deterministic)
        x = nn.with_logical_constraint(x, _ACTIVATION_AXES)  # [B, Ld, E]
        x = self.decoder(
            x, self_mask, bias, stored_segments, encoded, encoder_mask, deterministic, decode
        )
        hidden = self.dropout(self.decoder_norm(x), deterministic=deterministic)  # [B, Ld, E]
        if self.config.tie_embeddings:
            logits = self.token_embed.attend(hidden * self.config.embed_dim**-0.5)
        else:
            logits = self.lm_head(hidden)
        logits = nn.with_logical_constraint(logits, (axes.BATCH, axes.LENGTH, axes.ACT_VOCAB))
        return {"logits": logits, "hidden": hidden}  # float32 [B, Ld, V], [B, Ld, E]

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
        """``encode`` then ``decode``; returns ``{'logits', 'hidden', 'encoded'}``."""
        encoded = self.encode(
            encoder_inputs,
            encoder_segment_ids=encoder_segment_ids,
            encoder_positions=encoder_positions,
            deterministic=deterministic,
        )
        out = self.decode(
            encoded,
            decoder_inputs,
            encoder_segment_ids=encoder_segment_ids,
            decoder_segment_ids=decoder_segment_ids,
            decoder_positions=decoder_positions,
            deterministic=deterministic,
            decode=decode,
        )
        return {**out, "encoded": encoded}


Config = T5Config  # the family protocol of lmjax.models: Config, PRESETS, Model
Model = T5


def param_shapes(config: T5Config) -> Any:
    """The parameter tree as ``jax.ShapeDtypeStruct`` leaves (no allocation, via eval_shape)."""
    dummy = jnp.zeros((1, 1), jnp.int32)
    abstract = jax.eval_shape(
        lambda key: T5(config).init(key, dummy, dummy), jax.random.key(0)
    )
    return nn.unbox(abstract["params"])


def count_params(config: T5Config) -> int:
    """The number of parameters of a model built from ``config`` (no allocation)."""
    return parameters.param_count(param_shapes(config))


def to_scanned_layout(params: Mapping[str, Any], config: T5Config) -> dict[str, Any]:
    """Unscanned (``encoder/layers_{i}``, ``decoder/layers_{i}``) -> scanned (``layers`` [N, ...])
    parameters; boxed or plain leaves in, plain arrays out."""
    params = parameters.scanned_layout(params, "encoder", config.num_encoder_layers)
    return parameters.scanned_layout(params, "decoder", config.num_decoder_layers)


def to_unscanned_layout(params: Mapping[str, Any]) -> dict[str, Any]:
    """Scanned (``encoder/layers``, ``decoder/layers`` [N, ...]) -> unscanned parameters."""
    return parameters.unscanned_layout(parameters.unscanned_layout(params, "encoder"), "decoder")


def shift_right(targets: jax.Array, decoder_start_id: int) -> jax.Array:
    """Decoder inputs from targets [B, L]: ``decoder_start_id`` first, the last target dropped."""
    start = jnp.full((targets.shape[0], 1), decoder_start_id, targets.dtype)
    return jnp.concatenate([start, targets[:, :-1]], axis=1)
