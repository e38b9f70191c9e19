"""ALBERT: a BERT encoder with a factorized embedding and parameters shared across layers.

Axis legend: B batch, L length, N layers, G layer groups, E hidden (the residual width,
``hidden_size``), M the small embedding width (``embedding_size``, 128), H heads, D head dim
(E / H), F mlp, V vocab, P positions (max_len), T token types, C classes (2 for SOP).

References:
- Lan et al. 2019, "ALBERT: A Lite BERT for Self-supervised Learning of Language
  Representations" (arXiv:1909.11942): §3.1 factorized embedding parameterization (V x M, then
  M -> E), cross-layer parameter sharing, the sentence-order prediction (SOP) loss; Table 1 sizes.
- ``google-research/albert:modeling.py``: ``embedding_lookup`` / ``embedding_postprocessor`` (word,
  position and token-type embeddings summed at width M, LayerNorm, dropout),
  ``transformer_model`` (``embedding_hidden_mapping_in``, ``group_idx = int(layer_idx /
  num_hidden_layers * num_hidden_groups)``, ``inner_group_num``), the pooler; and
  ``run_pretraining.py`` (``get_masked_lm_output``: dense E -> M, activation, LayerNorm, the
  decoder tied to the [V, M] table plus an output bias; ``get_sentence_order_output``).
- Hugging Face ``transformers/models/albert/modeling_albert.py`` and ``configuration_albert.py``
  (``hidden_act='gelu_new'``, the tanh GELU, dropout 0 for the v2 checkpoints).

The model::

    x = LN(token_embed(inputs) + position_embed(positions) + type_embed(types))  # [B, L, M]
    x = dropout(x); x = token_embed.project(x)                      # [B, L, E] (M -> E)
    x = num_layers post-LN blocks as BERT's, layer i using the parameters of group
        floor(i * G / N) (all layers share one set by default, G = 1)   # hidden [B, L, E]
    pooled = tanh(pooler(x[:, 0]))                                  # [B, E]  ([CLS])
    logits = LN(gelu_tanh(mlm_transform(x))) @ token_embed^T + mlm_bias  # float32 [B, L, V]
    sop_logits = sop(pooled)                                        # float32 [B, 2]

Only ``inner_group_num = 1`` is implemented (one transformer layer per group, what every
published ALBERT uses); the HF converter rejects other values. Text is tokenized with ALBERT's
SentencePiece ``.model`` (30000 pieces, ``[CLS]`` 2, ``[SEP]`` 3, ``<pad>`` 0, ``[MASK]`` 4);
the data pipeline, not this module, handles the tokenizer.

Call::

    model = ALBERT(config)
    out = model.apply({'params': params}, inputs, token_type_ids=None, attention_mask=None,
                      positions=None, segment_ids=None, deterministic=True,
                      rngs={'dropout': key})  # rngs only when deterministic=False
    out['hidden']      # [B, L, E] the encoder output
    out['pooled']      # [B, E]              -- if config.pooler
    out['logits']      # float32 [B, L, V]   -- if config.mlm_head
    out['sop_logits']  # float32 [B, 2]      -- if config.sop_head (0 = in order, 1 = swapped)

``token_type_ids``, ``attention_mask`` (1 = real token; padded keys are not attended),
``segment_ids`` (packed documents) and ``positions`` (default ``arange(L)``) mean what they mean
for :mod:`lmjax.models.bert`.

Parameter tree (the dtype is ``param_dtype``)::

    token_embed/embedding                      [V, M]        (vocab, factor)
    token_embed/projection/kernel              [M, E]        (factor, embed)
    token_embed/projection/bias                [E]           (embed)
    position_embed/embedding                   [P, M]        (position, factor)
    type_embed/embedding                       [T, M]        (type, factor)
    embed_norm/{scale,bias}                    [M]           (norm)
    encoder/layers_{g}/<block>                 g = 0 .. G-1, no layer axis   -- if G < N
    encoder/layers/<block>                     [N, ...]  -- if G == N and scan_layers
    encoder/layers_{i}/<block>                 i = 0 .. N-1  -- if G == N and not scan_layers
    pooler/kernel [E, E] (embed, mlp), pooler/bias [E] (mlp)              -- if pooler
    sop/kernel [E, 2] (embed, classes), sop/bias [2] (classes)            -- if sop_head
    mlm_transform/kernel [E, M] (embed, factor), mlm_transform/bias [M] (factor)  -- if mlm_head
    mlm_norm/{scale,bias}                      [M]           (norm)       -- if mlm_head
    mlm_bias                                   [V]           (vocab)      -- if mlm_head

``<block>`` is BERT's post-LN block: ``attention/{query,key,value}/kernel`` [E, H, D],
``attention/out/kernel`` [H, D, E] (+ biases), ``attention_norm``, ``mlp/wi`` [E, F],
``mlp/wo`` [F, E], ``mlp_norm``. A shared group is one set of block parameters applied to each of
its layers in turn (scanned with the parameters broadcast when ``scan_layers``), so the
parameter count does not grow with N.

Initialisation follows ``google-research/albert:modeling.py``: truncated normal with std
``init_std`` (0.02) for every kernel and table, zeros for biases, ones / zeros for LayerNorms.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax

from lmjax import axes
from lmjax.layers.embeddings import FactorizedEmbed, PositionEmbed, TypeEmbed
from lmjax.layers.norms import LayerNorm
from lmjax.layers.transformer import BlockConfig
from lmjax.models import encoder_parts, parameters


@dataclasses.dataclass(frozen=True)
class ALBERTConfig:
    """Hyper-parameters of an ALBERT encoder.

    Attributes:
      vocab_size: V, rows of the (tied) token embedding.
      max_len: P, rows of the learned position table.
      type_vocab_size: T, rows of the token-type table (0 = no table).
      embedding_size: M, the width of the factorized embedding tables (ALBERT: 128).
      num_layers: N (num_hidden_layers).
      num_groups: G (num_hidden_groups), 1 <= G <= N; layer i uses the parameters of group
        ``floor(i * G / N)``; G = 1 (ALBERT's default) shares one layer across the depth,
        G = N shares nothing (BERT with a factorized embedding).
      embed_dim: E (hidden_size).
      num_heads: H; the head width is ``embed_dim // num_heads``.
      mlp_dim: F (intermediate_size, 4E).
      activation: MLP and MLM-transform activation ('gelu_tanh' = HF 'gelu_new', ALBERT v2).
      layer_norm_eps: LayerNorm epsilon (1e-12).
      hidden_dropout: dropout on the embeddings and each sublayer output (v2: 0).
      attention_dropout: dropout on attention weights (v2: 0).
      init_std: std of the truncated-normal init of kernels and tables (initializer_range).
      pooler: the dense + tanh pooler on the first token ([CLS]).
      mlm_head: the masked-LM head (E -> M transform, LayerNorm, tied decoder + output bias).
      sop_head: the sentence-order head on the pooled output (needs ``pooler``).
      scan_layers: scan over layers (shared groups scan their repeats; unshared layers stack
        under ``encoder/layers`` [N, ...]) instead of unrolling.
      remat: rematerialisation policy of each block (see ``REMAT_POLICIES``).
      dtype: compute dtype name; logits, softmax and norms are float32 regardless.
      param_dtype: parameter storage dtype name.
    """

    vocab_size: int = 30000
    max_len: int = 512
    type_vocab_size: int = 2
    embedding_size: int = 128
    num_layers: int = 12
    num_groups: int = 1
    embed_dim: int = 768
    num_heads: int = 12
    mlp_dim: int = 3072
    activation: str = "gelu_tanh"
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    init_std: float = 0.02
    pooler: bool = True
    mlm_head: bool = True
    sop_head: bool = True
    scan_layers: bool = True
    remat: str = "none"
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self) -> None:
        sizes = ("vocab_size", "max_len", "embedding_size", "num_layers", "num_groups",
                 "embed_dim", "num_heads", "mlp_dim")
        problems = encoder_parts.config_problems(self, sizes)
        if self.num_groups > self.num_layers:
            problems.append(
                f"num_groups={self.num_groups} exceeds num_layers={self.num_layers}; use at most "
                "one group per layer (num_groups=num_layers shares nothing)"
            )
        if self.sop_head and not self.pooler:
            problems.append("sop_head=True needs pooler=True (SOP reads the pooled output)")
        if problems:
            raise ValueError("Invalid ALBERTConfig: " + "; ".join(problems) + ".")

    @property
    def head_dim(self) -> int:
        """D = E / H."""
        return self.embed_dim // self.num_heads


def _albert(num_layers: int, embed_dim: int, num_heads: int) -> ALBERTConfig:
    return ALBERTConfig(
        num_layers=num_layers, embed_dim=embed_dim, num_heads=num_heads, mlp_dim=4 * embed_dim
    )


# google-research/albert README and the v2 hub configs (HF albert/albert-*-v2 config.json):
# vocab 30000, embedding 128, one group, gelu_new, dropout 0. Parameter counts (count_params,
# equal to HF AlbertForPreTraining's): base 11.8M, large 17.8M, xlarge 59.0M, xxlarge 223.2M
# (Table 1 of the paper rounds the first three to 12M / 18M / 60M and states 235M for xxlarge).
PRESETS: dict[str, ALBERTConfig] = {
    "tiny": ALBERTConfig(
        vocab_size=2048,
        max_len=128,
        embedding_size=64,
        num_layers=2,
        embed_dim=128,
        num_heads=2,
        mlp_dim=512,
    ),
    "base": _albert(12, 768, 12),
    "large": _albert(24, 1024, 16),
    "xlarge": _albert(24, 2048, 16),
    "xxlarge": _albert(12, 4096, 64),
}


class ALBERT(nn.Module):
    """An ALBERT encoder with optional pooler, MLM and SOP heads (see the module docstring).

    Attributes:
      config: the model's ``ALBERTConfig``.
    """

    config: ALBERTConfig

    def block_config(self) -> BlockConfig:
        """The per-layer hyper-parameters handed to the transformer stack (BERT's post-LN block)."""
        return encoder_parts.post_ln_block(self.config)

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        token_type_ids: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        deterministic: bool = True,
    ) -> dict[str, jax.Array]:
        """Runs the encoder and its heads.

        Args:
          inputs: int [B, L] token ids.
          token_type_ids: int [B, L] segment A / B ids (default zeros).
          attention_mask: [B, L], 1 = real token, 0 = padding (padded keys are not attended).
          positions: int [B, L] position ids (default ``arange(L)``).
          segment_ids: int [B, L] document ids of packed rows (0 = padding); attention stays in
            the same nonzero segment.
          deterministic: disables dropout (pass ``rngs={'dropout': key}`` when False).

        Returns:
          ``{'hidden', 'pooled'?, 'logits'?, 'sop_logits'?}`` (see the module docstring).
        """
        cfg = self.config
        encoder_parts.check_inputs("ALBERT", inputs, cfg.max_len)
        if positions is None:
            positions = encoder_parts.arange_positions(inputs)
        init, common = encoder_parts.truncated_normal(cfg), encoder_parts.dtypes(cfg)
        token_embed = FactorizedEmbed(
            cfg.vocab_size,
            cfg.embedding_size,
            cfg.embed_dim,
            embedding_init=init,
            kernel_init=init,
            name="token_embed",
            **common,
        )
        small_axes = dict(embedding_init=init, **common)
        x = token_embed(inputs)  # [B, L, M]
        x = x + PositionEmbed(
            cfg.max_len,
            cfg.embedding_size,
            table_axes=(axes.POSITION, axes.FACTOR),
            name="position_embed",
            **small_axes,
        )(positions)
        types = encoder_parts.token_types(inputs, token_type_ids, cfg.type_vocab_size)
        if types is not None:
            x = x + TypeEmbed(
                cfg.type_vocab_size,
                cfg.embedding_size,
                table_axes=(axes.TYPE, axes.FACTOR),
                name="type_embed",
                **small_axes,
            )(types)
        x = LayerNorm(epsilon=cfg.layer_norm_eps, name="embed_norm", **common)(x)  # [B, L, M]
        x = nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)
        x = token_embed.project(x)  # [B, L, E]  (embedding_hidden_mapping_in)
        x = nn.with_logical_constraint(x, (axes.BATCH, axes.LENGTH, axes.ACT_EMBED))

        mask = encoder_parts.encoder_mask(attention_mask, segment_ids, inputs.shape[1])
        x = encoder_parts.encode(
            cfg, self.block_config(), x, mask, deterministic, num_groups=cfg.num_groups
        )  # [B, L, E]
        outputs = {"hidden": x}
        if cfg.pooler:
            outputs.update(encoder_parts.pooled_outputs(cfg, x, "sop" if cfg.sop_head else None))
        if cfg.mlm_head:
            outputs["logits"] = encoder_parts.mlm_logits(
                self, cfg, x, token_embed.attend, cfg.embedding_size, (axes.EMBED, axes.FACTOR)
            )  # [B, L, V], the transform E -> M
        return outputs


Config = ALBERTConfig  # the family protocol of lmjax.models: Config, PRESETS, Model
Model = ALBERT


def param_shapes(config: ALBERTConfig) -> Any:
    """The parameter tree as ``jax.ShapeDtypeStruct`` leaves (no allocation, via eval_shape)."""
    return parameters.abstract_params(ALBERT(config))


def count_params(config: ALBERTConfig) -> int:
    """The number of parameters of a model built from ``config`` (no allocation)."""
    return parameters.param_count(param_shapes(config))
