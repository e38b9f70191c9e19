"""BART: a post-LN transformer encoder-decoder with learned positions and tied embeddings.

Axis legend: B batch, Le / Ld encoder / decoder length, T decode chunk, M cache slots, N layers,
E embed, H heads, D head dim (E / H), F mlp, V vocab, P positions (max_positions).

References:
- Lewis et al. 2020, "BART: Denoising Sequence-to-Sequence Pre-training for Natural Language
  Generation, Translation, and Comprehension" §2.1 (architecture: the standard transformer with
  GeLU, a LayerNorm on the embeddings, decoder cross-attention; base 6+6 layers, large 12+12).
- ``fairseq/models/bart/model.py`` (``bart_large_architecture``, ``bart_base_architecture``) and
  ``fairseq/modules/learned_positional_embedding.py`` (positions offset by ``padding_idx + 1``).
- Hugging Face ``transformers/models/bart/modeling_bart.py`` (``BartLearnedPositionalEmbedding``
  with ``offset = 2``, ``BartScaledWordEmbedding``, ``BartEncoderLayer``, ``BartDecoderLayer``,
  ``BartForConditionalGeneration`` and its ``final_logits_bias`` buffer).

The model::

    enc = LN_emb(token_embed(encoder_inputs) * s + enc_positions[p + 2]); dropout   # [B, Le, E]
    enc = encoder_layers post-LN blocks (x = LN(x + drop(attn(x))), x = LN(x + drop(mlp(x))))
    dec = LN_emb(token_embed(decoder_inputs) * s + dec_positions[p + 2]); dropout   # [B, Ld, E]
    dec = decoder_layers post-LN blocks: causal self-attn, cross-attn to enc, MLP, each
          followed by residual + LayerNorm                                     # hidden [B, Ld, E]
    logits = hidden @ token_embed^T + final_logits_bias                        # float32 [B, Ld, V]

``s`` is 1 (BART) or ``sqrt(E)`` (``scale_embedding``, mBART / HF ``config.scale_embedding``).
The position tables have ``max_positions + 2`` rows and position id ``p`` reads row ``p + 2``
(``POSITION_OFFSET``): fairseq reserved the first rows for ``padding_idx``; HF keeps the offset.
The token table is shared by the encoder, the decoder and the output projection.
``final_logits_bias`` [V] is a parameter here (HF: a buffer of ``BartForConditionalGeneration``,
zeros in the released checkpoints) applied under ``stop_gradient``, so training never changes it.

Call (the lmjax seq2seq contract)::

    model = BART(config)
    out = model.apply({'params': params}, encoder_inputs, decoder_inputs,
                      encoder_segment_ids=None, decoder_segment_ids=None,
                      encoder_positions=None, decoder_positions=None,
                      deterministic=True, decode=False, rngs={'dropout': key})  # rngs: training
    out['logits']   # float32 [B, Ld, V]
    out['hidden']   # [B, Ld, E] the decoder output (after the last block's LayerNorm)
    out['encoded']  # [B, Le, E]
    encoded = model.apply(variables, encoder_inputs, method='encode')
    out = model.apply(variables, encoded, decoder_inputs, method='decode')   # {'logits', 'hidden'}

Segment ids int32 [B, L]: 0 = padding, 1, 2, ... = examples packed in a row; attention stays in
the same nonzero segment (encoder self-attention, decoder causal self-attention, and
cross-attention: decoder segment k sees encoder segment k). None means every token is real and
belongs to segment 1, so ``decoder_segment_ids=None`` with padded ``encoder_segment_ids`` (1 =
real, 0 = pad) gives HF's ``attention_mask`` behaviour. Positions default to ``arange`` per row.

KV-cache decoding (decoder self-attention only; cross-attention keys / values are recomputed from
``encoded`` on every call)::

    cache = model.init(key, jnp.zeros((B, Le), jnp.int32), jnp.zeros((B, M), jnp.int32),
                       decode=True)['cache']
    out, mutated = model.apply({'params': params, 'cache': cache}, encoded, chunk,  # [B, T]
                               encoder_segment_ids=..., decode=True, method='decode',
                               mutable=['cache'])
    cache = mutated['cache']

Each call writes the chunk's T keys / values at the cache index; query ``t`` attends to cached
slots ``<=`` its own whose stored segment id is nonzero; positions default to
``cache_index + arange(T)`` (``decoder_embed/cache_index``).

Parameter tree (``scan_layers=True``, the default; the dtype is ``param_dtype``)::

    token_embed/embedding                              [V, E]        (vocab, embed)
    final_logits_bias                                  [V]           (vocab)
    encoder_embed/position_embed/embedding             [P + 2, E]    (position, embed)
    encoder_embed/embed_norm/{scale,bias}              [E]           (norm)
    encoder/layers/attention/{query,key,value}/kernel  [N, E, H, D]  (layers, embed, heads, kv)
    encoder/layers/attention/{query,key,value}/bias    [N, H, D]     (layers, heads, kv)
    encoder/layers/attention/out/{kernel,bias}         [N, H, D, E], [N, E]
    encoder/layers/attention_norm/{scale,bias}         [N, E]        (layers, norm)
    encoder/layers/mlp/wi/{kernel,bias}                [N, E, F], [N, F]
    encoder/layers/mlp/wo/{kernel,bias}                [N, F, E], [N, E]
    encoder/layers/mlp_norm/{scale,bias}               [N, E]
    decoder_embed/position_embed/embedding             [P + 2, E]
    decoder_embed/embed_norm/{scale,bias}              [E]
    decoder/layers/...                                 as encoder/layers, plus
    decoder/layers/cross_attention/...                 as attention
    decoder/layers/cross_attention_norm/{scale,bias}   [N, E]

With ``scan_layers=False`` each ``<stack>/layers/<path>`` [N, ...] is ``<stack>/layers_{i}/<path>``.
HF names: ``self_attn`` = attention, ``self_attn_layer_norm`` = attention_norm, ``encoder_attn``
= cross_attention, ``encoder_attn_layer_norm`` = cross_attention_norm, ``fc1`` / ``fc2`` =
mlp/wi / mlp/wo, ``final_layer_norm`` = mlp_norm, ``layernorm_embedding`` = embed_norm.

Initialisation follows HF ``BartPreTrainedModel._init_weights``: N(0, ``init_std``) for kernels
and tables, zeros for biases (the pad row of the token table is not zeroed here).
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
from lmjax.layers.embeddings import Embed, PositionEmbed
from lmjax.layers.norms import LayerNorm
from lmjax.layers.transformer import BlockConfig, TransformerStack
from lmjax.models import encoder_parts, parameters

# fairseq / HF BART: position id p reads row p + 2 of a [max_positions + 2, E] table.
POSITION_OFFSET = 2
_ACTIVATION_AXES = (axes.BATCH, axes.LENGTH, axes.ACT_EMBED)


@dataclasses.dataclass(frozen=True)
class BartConfig:
    """Hyper-parameters of a BART encoder-decoder (defaults: bart-large, as HF's BartConfig).

    Attributes:
      vocab_size: V, rows of the shared token table (GPT-2 BPE + specials: 50265).
      max_positions: P, the longest sequence; each position table has P + 2 rows.
      embed_dim: E (HF ``d_model``).
      encoder_layers: encoder depth.
      decoder_layers: decoder depth.
      num_heads: H in every attention layer; the head width is ``embed_dim // num_heads``.
      mlp_dim: F (HF ``encoder_ffn_dim`` = ``decoder_ffn_dim``).
      activation: MLP activation ('gelu' = exact erf GELU, HF's 'gelu').
      layer_norm_eps: epsilon of every LayerNorm (PyTorch's default 1e-5).
      scale_embedding: multiply token embeddings by sqrt(E) (mBART; BART: False).
      dropout: on the embeddings and each sublayer's output (HF ``dropout``).
      attention_dropout: on attention weights.
      activation_dropout: on the MLP hidden activations.
      init_std: std of the normal init of kernels and tables.
      pad_id: the padding token (``<pad>`` = 1).
      bos_id: ``<s>`` = 0.
      eos_id: ``</s>`` = 2.
      decoder_start_id: the first decoder input (``</s>`` = 2, fairseq's move_eos_to_beginning).
      scan_layers: scan over layers (``<stack>/layers`` [N, ...]) instead of unrolling.
      remat: rematerialisation policy of each block (see ``REMAT_POLICIES``).
      dtype: compute dtype name; logits, softmax and norms are float32 regardless.
      param_dtype: parameter storage dtype name.
    """

    vocab_size: int = 50265
    max_positions: int = 1024
    embed_dim: int = 1024
    encoder_layers: int = 12
    decoder_layers: int = 12
    num_heads: int = 16
    mlp_dim: int = 4096
    activation: str = "gelu"
    layer_norm_eps: float = 1e-5
    scale_embedding: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    init_std: float = 0.02
    pad_id: int = 1
    bos_id: int = 0
    eos_id: int = 2
    decoder_start_id: int = 2
    scan_layers: bool = True
    remat: str = "none"
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self) -> None:
        sizes = (
            "vocab_size", "max_positions", "embed_dim", "encoder_layers", "decoder_layers",
            "num_heads", "mlp_dim",
        )
        problems = encoder_parts.config_problems(self, sizes, dropouts=False)
        for field in ("dropout", "attention_dropout", "activation_dropout"):
            if not 0.0 <= getattr(self, field) < 1.0:
                problems.append(f"{field}={getattr(self, field)} must be in [0, 1)")
        if self.layer_norm_eps <= 0:
            problems.append(f"layer_norm_eps={self.layer_norm_eps} must be positive")
        for field in ("pad_id", "bos_id", "eos_id", "decoder_start_id"):
            if not 0 <= getattr(self, field) < max(self.vocab_size, 1):
                problems.append(
                    f"{field}={getattr(self, field)} must be a token id in [0, "
                    f"vocab_size={self.vocab_size})"
                )
        if problems:
            raise ValueError("Invalid BartConfig: " + "; ".join(problems) + ".")

    @property
    def head_dim(self) -> int:
        """D = E / H."""
        return self.embed_dim // self.num_heads

    @property
    def embed_scale(self) -> float:
        """The token-embedding multiplier: sqrt(E) with ``scale_embedding``, else 1."""
        return math.sqrt(self.embed_dim) if self.scale_embedding else 1.0


# fairseq bart/model.py: bart_base_architecture (6+6, 768, 12 heads, 3072) and
# bart_large_architecture (12+12, 1024, 16 heads, 4096); 'tiny' is for tests and laptops.
PRESETS: dict[str, BartConfig] = {
    "bart_base": BartConfig(
        embed_dim=768, encoder_layers=6, decoder_layers=6, num_heads=12, mlp_dim=3072
    ),
    "bart_large": BartConfig(),
    "tiny": BartConfig(
        vocab_size=512, max_positions=256, embed_dim=64, encoder_layers=2, decoder_layers=2,
        num_heads=4, mlp_dim=128,
    ),
}


def block_config(cfg: BartConfig, cross_attention: bool) -> BlockConfig:
    """The post-LN block of HF ``BartEncoderLayer`` (with cross-attention: ``BartDecoderLayer``)."""
    init = nn.initializers.normal(stddev=cfg.init_std)
    return BlockConfig(
        num_heads=cfg.num_heads,
        head_dim=cfg.head_dim,
        mlp_dim=cfg.mlp_dim,
        activation=cfg.activation,
        norm_placement="post",
        norm_kind="layer",
        norm_eps=cfg.layer_norm_eps,
        use_bias=True,
        attention_dropout=cfg.attention_dropout,
        residual_dropout=cfg.dropout,
        mlp_dropout=cfg.activation_dropout,
        cross_attention=cross_attention,
        kernel_init=init,
        out_kernel_init=init,
        bias_init=nn.initializers.zeros_init(),
        **encoder_parts.dtypes(cfg),
    )


def _ones_if_none(segment_ids: jax.Array | None, ids: jax.Array) -> jax.Array:
    """``segment_ids``, or int32 ones shaped like ``ids`` (every token real, one segment)."""
    return jnp.ones(ids.shape, jnp.int32) if segment_ids is None else segment_ids


def cross_attention_mask(
    decoder_segment_ids: jax.Array | None,
    encoder_segment_ids: jax.Array | None,
    decoder_length: int,
    encoder_length: int,
) -> jax.Array | None:
    """Decoder segment k attends to encoder segment k (a missing side is all segment 1).

    Returns:
      bool [B, 1, Ld, Le], or None when both are None (no restriction).
    """
    if decoder_segment_ids is None and encoder_segment_ids is None:
        return None
    if decoder_segment_ids is None:
        decoder_segment_ids = jnp.ones((encoder_segment_ids.shape[0], decoder_length), jnp.int32)
    if encoder_segment_ids is None:
        encoder_segment_ids = jnp.ones((decoder_segment_ids.shape[0], encoder_length), jnp.int32)
    return masks.segment_mask(decoder_segment_ids, encoder_segment_ids)


class BartEmbeddings(nn.Module):
    """One stack's learned positions and ``layernorm_embedding``, plus the decode position index.

    ``x = dropout(LN(tokens + table[positions + 2]))``. In decode mode the module keeps the cache
    variable ``cache_index`` (tokens already written), from which default positions are counted.

    Attributes:
      config: the model's ``BartConfig``.
    """

    config: BartConfig

    @nn.compact
    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array | None,
        deterministic: bool,
        decode: bool = False,
    ) -> jax.Array:
        """Adds positions to scaled token embeddings ``tokens`` [B, L, E]; returns [B, L, E]."""
        cfg = self.config
        common = encoder_parts.dtypes(cfg)
        batch, length = tokens.shape[:2]
        if decode:
            cache_index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
            if positions is None:
                positions = cache_index.value + jnp.arange(length, dtype=jnp.int32)
                positions = jnp.broadcast_to(positions, (batch, length))
            if not self.is_initializing():
                cache_index.value = cache_index.value + length
        elif positions is None:
            positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
        table = PositionEmbed(
            cfg.max_positions + POSITION_OFFSET,
            cfg.embed_dim,
            embedding_init=nn.initializers.normal(stddev=cfg.init_std),
            name="position_embed",
            **common,
        )
        x = tokens + table(positions + POSITION_OFFSET)  # [B, L, E]
        x = LayerNorm(epsilon=cfg.layer_norm_eps, name="embed_norm", **common)(x)
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        return nn.with_logical_constraint(x, _ACTIVATION_AXES)


class BART(nn.Module):
    """A BART encoder-decoder (see the module docstring for call, cache and parameters).

    Attributes:
      config: the model's ``BartConfig``.
    """

    config: BartConfig

    def setup(self) -> None:
        cfg = self.config
        common = encoder_parts.dtypes(cfg)
        self.token_embed = Embed(
            cfg.vocab_size,
            cfg.embed_dim,
            embedding_init=nn.initializers.normal(stddev=cfg.init_std),
            **common,
        )
        self.final_logits_bias = self.param(
            "final_logits_bias",
            nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes.VOCAB,)),
            (cfg.vocab_size,),
            common["param_dtype"],
        )
        self.encoder_embed = BartEmbeddings(cfg)
        self.decoder_embed = BartEmbeddings(cfg)
        stack = dict(scan=cfg.scan_layers, remat=cfg.remat)
        self.encoder = TransformerStack(
            block_config(cfg, cross_attention=False), num_layers=cfg.encoder_layers, **stack
        )
        self.decoder = TransformerStack(
            block_config(cfg, cross_attention=True), num_layers=cfg.decoder_layers, **stack
        )

    def _check_ids(self, ids: jax.Array, what: str, limit: bool = True) -> None:
        if ids.ndim != 2:
            raise ValueError(f"BART expects {what} [batch, length], got shape {ids.shape}.")
        if limit and ids.shape[1] > self.config.max_positions:
            raise ValueError(
                f"{what} has length {ids.shape[1]} > max_positions={self.config.max_positions}; "
                "shorten it or build the model with a larger max_positions."
            )

    def _embed_tokens(self, ids: jax.Array) -> jax.Array:
        x = self.token_embed(ids)  # [B, L, E]
        if self.config.scale_embedding:
            x = x * jnp.asarray(self.config.embed_scale, x.dtype)
        return x

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
          encoder_segment_ids: int32 [B, Le], 0 = padding; None = all real, one segment.
          encoder_positions: int32 [B, Le] position ids (default arange per row).
          deterministic: disables dropout (pass ``rngs={'dropout': key}`` when False).

        Returns:
          encoded [B, Le, E].
        """
        self._check_ids(encoder_inputs, "encoder_inputs")
        x = self.encoder_embed(
            self._embed_tokens(encoder_inputs), encoder_positions, deterministic
        )  # [B, Le, E]
        mask = None if encoder_segment_ids is None else masks.segment_mask(encoder_segment_ids)
        return self.encoder(x, mask, None, None, None, None, deterministic, False)  # [B, Le, E]

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
        """Runs the decoder on ``encoded`` and the output projection.

        Args:
          encoded: [B, Le, E] the encoder output.
          decoder_inputs: int32 [B, Ld] (a chunk [B, T] when decoding) token ids, starting with
            ``decoder_start_id``.
          encoder_segment_ids: int32 [B, Le] as given to ``encode`` (masks cross-attention).
          decoder_segment_ids: int32 [B, Ld]; 0 = padding. In decode mode they are stored in the
            KV cache as key validity (nonzero = attendable; None stores ones).
          decoder_positions: int32 [B, Ld] (default arange, or cache_index + arange(T)).
          deterministic: disables dropout.
          decode: use and update the decoder's KV cache (``mutable=['cache']``).

        Returns:
          ``{'logits': float32 [B, Ld, V], 'hidden': [B, Ld, E]}``.
        """
        # a decode chunk is not checked: the cache's slots (checked at init) bound the positions
        self._check_ids(decoder_inputs, "decoder_inputs", not decode or self.is_initializing())
        if encoded.ndim != 3 or encoded.shape[0] != decoder_inputs.shape[0]:
            raise ValueError(
                f"encoded must be [batch, encoder_length, embed] with the decoder's batch "
                f"{decoder_inputs.shape[0]}, got shape {encoded.shape}."
            )
        length = decoder_inputs.shape[1]
        x = self.decoder_embed(
            self._embed_tokens(decoder_inputs), decoder_positions, deterministic, decode
        )  # [B, Ld, E]
        cross_mask = cross_attention_mask(
            decoder_segment_ids, encoder_segment_ids, length, encoded.shape[1]
        )  # [B, 1, Ld, Le] or None
        if decode:
            self_mask = None  # the KV cache builds the causal / validity mask
        else:
            self_mask = masks.decoder_mask(length, decoder_segment_ids)  # [B|1, 1, Ld, Ld]
        x = self.decoder(
            x,
            self_mask,
            None,
            decoder_segment_ids if decode else None,
            encoded,
            cross_mask,
            deterministic,
            decode,
        )  # [B, Ld, E]
        bias = jax.lax.stop_gradient(jnp.asarray(self.final_logits_bias, jnp.float32))
        logits = self.token_embed.attend(x) + bias  # float32 [B, Ld, V]
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
        """Encodes ``encoder_inputs`` [B, Le] and decodes ``decoder_inputs`` [B, Ld].

        The arguments are those of ``encode`` and ``decode``.

        Returns:
          ``{'logits': float32 [B, Ld, V], 'hidden': [B, Ld, E], 'encoded': [B, Le, E]}``.
        """
        encoded = self.encode(
            encoder_inputs,
            encoder_segment_ids=encoder_segment_ids,
            encoder_positions=encoder_positions,
            deterministic=deterministic,
        )
        outputs = self.decode(
            encoded,
            decoder_inputs,
            encoder_segment_ids=encoder_segment_ids,
            decoder_segment_ids=decoder_segment_ids,
            decoder_positions=decoder_positions,
            deterministic=deterministic,
            decode=decode,
        )
        return {**outputs, "encoded": encoded}


Config = BartConfig  # the family protocol of lmjax.models: Config, PRESETS, Model
Model = BART


def param_shapes(config: BartConfig) -> Any:
    """The parameter tree as ``jax.ShapeDtypeStruct`` leaves (no allocation, via eval_shape)."""
    model = BART(config)
    ids = jnp.zeros((1, 1), jnp.int32)
    abstract = jax.eval_shape(lambda key: model.init(key, ids, ids), jax.random.key(0))
    return nn.unbox(abstract["params"])


def count_params(config: BartConfig) -> int:
    """The number of parameters (``final_logits_bias`` included) of ``BART(config)``."""
    return parameters.param_count(param_shapes(config))


def shift_right(targets: jax.Array, decoder_start_id: int, pad_id: int | None = None) -> jax.Array:
    """Decoder inputs from targets: ``decoder_start_id`` first, the last target dropped.

    fairseq ``data_utils.collate_tokens(move_eos_to_beginning=True)`` / HF
    ``modeling_bart.py::shift_tokens_right``; with ``pad_id`` given, -100 label ids become pads.

    Args:
      targets: int [B, L].
      decoder_start_id: the first decoder input (BART: eos = 2).
      pad_id: replaces -100 (ignored-label) entries when given.

    Returns:
      int32 [B, L].
    """
    targets = jnp.asarray(targets, jnp.int32)
    start = jnp.full((targets.shape[0], 1), decoder_start_id, jnp.int32)
    shifted = jnp.concatenate([start, targets[:, :-1]], axis=1)
    if pad_id is not None:
        shifted = jnp.where(shifted == -100, pad_id, shifted)
    return shifted
