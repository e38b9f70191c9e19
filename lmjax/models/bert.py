"""BERT and RoBERTa: bidirectional post-LN transformer encoders with MLM and NSP heads.

Axis legend: B batch, L length, N layers, E embed, H heads, D head dim (E / H), F mlp, V vocab,
P positions (max_len), T token types, C classes (2 for NSP).

References:
- BERT: Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language
  Understanding" §3 and Appendix A; ``google-research/bert:modeling.py``
  (``embedding_postprocessor``, ``transformer_model``, pooler) and ``run_pretraining.py``
  (``get_masked_lm_output``, ``get_next_sentence_output``); Hugging Face
  ``transformers/models/bert/modeling_bert.py``.
- RoBERTa: Liu et al. 2019, "RoBERTa: A Robustly Optimized BERT Pretraining Approach" §4;
  ``fairseq/models/roberta/model.py`` and ``fairseq/utils.py`` (``make_positions``); Hugging Face
  ``transformers/models/roberta/modeling_roberta.py``. RoBERTa is a BERT configuration here: no
  NSP head, one token type, LayerNorm eps 1e-5, and fairseq's position ids.

The model::

    x = LN(token_embed(inputs) + position_embed(positions) + type_embed(token_type_ids)); dropout
    x = num_layers post-LN blocks, bidirectional attention (x = LN(x + drop(attn(x))),
        x = LN(x + drop(mlp(x))))                                          # hidden [B, L, E]
    pooled = tanh(pooler(x[:, 0]))                                         # [B, E]  ([CLS])
    logits = LN(gelu(mlm_transform(x))) @ token_embed^T + mlm_bias         # float32 [B, L, V]
    nsp_logits = nsp(pooled)                                               # float32 [B, 2]

Call::

    model = BERT(config)
    out = model.apply({'params': params}, inputs, token_type_ids=None, attention_mask=None,
                      positions=None, segment_ids=None, deterministic=True,
                      rngs={'dropout': key})  # rngs only when deterministic=False
    out['hidden']      # [B, L, E] the encoder output
    out['pooled']      # [B, E]              -- if config.pooler
    out['logits']      # float32 [B, L, V]   -- if config.mlm_head
    out['nsp_logits']  # float32 [B, 2]      -- if config.nsp_head

``token_type_ids`` int [B, L] default to zeros (segment A). ``attention_mask`` [B, L] (1 = real
token, 0 = padding) masks padded keys, as BERT's ``attention_mask`` does: every query, padded or
not, attends to the real keys. ``segment_ids`` [B, L] (packed rows: 0 = padding, equal nonzero
ids = one document) instead keeps attention inside a document; both may be given (ANDed).
``positions`` default to ``arange(L)`` (``position_convention='arange'``, BERT) or to
``fairseq_positions(inputs, pad_token_id)`` (``'fairseq'``, RoBERTa).

Parameter tree (``scan_layers=True``, the default; the dtype is ``param_dtype``)::

    token_embed/embedding                      [V, E]        (vocab, embed)
    position_embed/embedding                   [P, E]        (position, embed)
    type_embed/embedding                       [T, E]        (type, embed)
    embed_norm/{scale,bias}                    [E]           (norm)
    encoder/layers/attention/{query,key,value}/kernel  [N, E, H, D]  (layers, embed, heads, kv)
    encoder/layers/attention/{query,key,value}/bias    [N, H, D]     (layers, heads, kv)
    encoder/layers/attention/out/kernel        [N, H, D, E]  (layers, heads, kv, embed)
    encoder/layers/attention/out/bias          [N, E]        (layers, embed)
    encoder/layers/attention_norm/{scale,bias} [N, E]        (layers, norm)
    encoder/layers/mlp/wi/kernel               [N, E, F]     (layers, embed, mlp)
    encoder/layers/mlp/wi/bias                 [N, F]        (layers, mlp)
    encoder/layers/mlp/wo/kernel               [N, F, E]     (layers, mlp, embed)
    encoder/layers/mlp/wo/bias                 [N, E]        (layers, embed)
    encoder/layers/mlp_norm/{scale,bias}       [N, E]        (layers, norm)
    pooler/kernel [E, E] (embed, mlp), pooler/bias [E] (mlp)            -- if pooler
    mlm_transform/kernel [E, E] (embed, mlp), mlm_transform/bias [E] (mlp)  -- if mlm_head
    mlm_norm/{scale,bias}                      [E]           (norm)     -- if mlm_head
    mlm_bias                                   [V]           (vocab)    -- if mlm_head
    nsp/kernel [E, 2] (embed, classes), nsp/bias [2] (classes)          -- if nsp_head

With ``scan_layers=False`` each ``encoder/layers/<path>`` [N, ...] is ``encoder/layers_{i}/<path>``.
``attention_norm`` is BERT's ``attention.output.LayerNorm`` (after the attention residual sum) and
``mlp_norm`` its ``output.LayerNorm``. The MLM decoder is tied to ``token_embed`` and has its own
output bias (``cls.predictions.bias`` / RoBERTa ``lm_head.bias``).

Initialisation follows ``google-research/bert:modeling.py``: truncated normal with std
``init_std`` (0.02) for every kernel and table, zeros for biases, ones / zeros for LayerNorms.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.layers.transformer import BlockConfig
from lmjax.models import encoder_parts, parameters

POSITION_CONVENTIONS = ("arange", "fairseq")


def fairseq_positions(inputs: jax.Array, pad_token_id: int) -> jax.Array:
    """RoBERTa's position ids: real tokens count up from ``pad_token_id + 1``; pads keep the pad id.

    fairseq ``utils.make_positions`` and HF ``create_position_ids_from_input_ids`` number the
    non-pad tokens of each row ``1, 2, ...`` (a running count that skips pads) and add
    ``pad_token_id``; pad tokens get ``pad_token_id`` itself. With RoBERTa's ``<pad>`` = 1 the first
    real token has position 2, which is why the table has ``512 + 2 = 514`` rows.

    Args:
      inputs: int [B, L] token ids.
      pad_token_id: the padding id (RoBERTa: 1).

    Returns:
      int32 [B, L] position ids.
    """
    real = (inputs != pad_token_id).astype(jnp.int32)  # [B, L]
    return jnp.cumsum(real, axis=-1) * real + pad_token_id


@dataclasses.dataclass(frozen=True)
class BERTConfig:
    """Hyper-parameters of a BERT / RoBERTa encoder.

    Attributes:
      vocab_size: V, rows of the (tied) token embedding.
      max_len: P, rows of the learned position table (RoBERTa: 514 = 512 + pad offset).
      type_vocab_size: T, rows of the token-type table (BERT 2, RoBERTa 1; 0 = no table).
      num_layers: N.
      embed_dim: E (hidden_size).
      num_heads: H; the head width is ``embed_dim // num_heads``.
      mlp_dim: F (intermediate_size, 4E).
      activation: MLP and MLM-transform activation ('gelu' = exact erf GELU, HF's 'gelu').
      layer_norm_eps: LayerNorm epsilon (BERT 1e-12, RoBERTa 1e-5).
      hidden_dropout: dropout on the embeddings and each sublayer output (hidden_dropout_prob).
      attention_dropout: dropout on attention weights (attention_probs_dropout_prob).
      init_std: std of the truncated-normal init of kernels and tables (initializer_range).
      position_convention: 'arange' (BERT: positions 0..L-1) or 'fairseq' (RoBERTa: see
        ``fairseq_positions``); used when ``positions`` is not passed.
      pad_token_id: the padding id the 'fairseq' convention counts from (RoBERTa: 1).
      pooler: the dense + tanh pooler on the first token ([CLS] / <s>).
      mlm_head: the masked-LM head (transform, LayerNorm, tied decoder + output bias).
      nsp_head: the next-sentence head on the pooled output (needs ``pooler``).
      scan_layers: scan over layers (``encoder/layers`` [N, ...]) instead of unrolling.
      remat: rematerialisation policy of each block (see ``REMAT_POLICIES``).
      dtype: compute dtype name; logits, softmax and norms are float32 regardless.
      param_dtype: parameter storage dtype name.
    """

    vocab_size: int = 30522
    max_len: int = 512
    type_vocab_size: int = 2
    num_layers: int = 12
    embed_dim: int = 768
    num_heads: int = 12
    mlp_dim: int = 3072
    activation: str = "gelu"
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    init_std: float = 0.02
    position_convention: str = "arange"
    pad_token_id: int = 0
    pooler: bool = True
    mlm_head: bool = True
    nsp_head: bool = True
    scan_layers: bool = True
    remat: str = "none"
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self) -> None:
        sizes = ("vocab_size", "max_len", "num_layers", "embed_dim", "num_heads", "mlp_dim")
        problems = encoder_parts.config_problems(self, sizes, dropouts=False)
        if self.position_convention not in POSITION_CONVENTIONS:
            problems.append(
                f"position_convention={self.position_convention!r} must be one of "
                f"{POSITION_CONVENTIONS}"
            )
        if self.nsp_head and not self.pooler:
            problems.append("nsp_head=True needs pooler=True (NSP reads the pooled output)")
        if problems:
            raise ValueError("Invalid BERTConfig: " + "; ".join(problems) + ".")

    @property
    def head_dim(self) -> int:
        """D = E / H."""
        return self.embed_dim // self.num_heads


def _bert(num_layers: int, embed_dim: int, num_heads: int) -> BERTConfig:
    return BERTConfig(
        num_layers=num_layers, embed_dim=embed_dim, num_heads=num_heads, mlp_dim=4 * embed_dim
    )


def _roberta(num_layers: int, embed_dim: int, num_heads: int) -> BERTConfig:
    return BERTConfig(
        vocab_size=50265,
        max_len=514,
        type_vocab_size=1,
        num_layers=num_layers,
        embed_dim=embed_dim,
        num_heads=num_heads,
        mlp_dim=4 * embed_dim,
        layer_norm_eps=1e-5,
        position_convention="fairseq",
        pad_token_id=1,
        pooler=False,
        nsp_head=False,
    )


# BERT README (google-research/bert): base 12/768/12 (110M), large 24/1024/16 (340M), and the
# 24 miniatures (Turc et al. 2019) of which mini / small / medium are named here. RoBERTa
# (fairseq roberta/model.py): base and large as BERT, GPT-2 BPE vocabulary of 50265, no NSP and no
# pooler (fairseq has none; HF RobertaModel adds one, the converter keeps it when present).
PRESETS: dict[str, BERTConfig] = {
    "tiny": BERTConfig(
        vocab_size=8192, max_len=128, num_layers=2, embed_dim=128, num_heads=2, mlp_dim=512
    ),
    "mini": _bert(4, 256, 4),
    "small": _bert(4, 512, 8),
    "medium": _bert(8, 512, 8),
    "base": _bert(12, 768, 12),
    "large": _bert(24, 1024, 16),
    "roberta-base": _roberta(12, 768, 12),
    "roberta-large": _roberta(24, 1024, 16),
}


class BERT(nn.Module):
    """A BERT / RoBERTa encoder with optional pooler, MLM and NSP heads (see the module docstring).

    Attributes:
      config: the model's ``BERTConfig``.
    """

    config: BERTConfig

    def block_config(self) -> BlockConfig:
        """The per-layer hyper-parameters handed to the transformer stack."""
        return encoder_parts.post_ln_block(self.config)

    def default_positions(self, inputs: jax.Array) -> jax.Array:
        """int32 [B, L] positions of the config's ``position_convention``."""
        cfg = self.config
        if cfg.position_convention == "fairseq":
            return fairseq_positions(inputs, cfg.pad_token_id)
        return encoder_parts.arange_positions(inputs)

    def checked_positions(self, inputs: jax.Array, positions: jax.Array | None) -> jax.Array:
        """``positions`` or, when None, ``default_positions`` checked against ``max_len``."""
        cfg = self.config
        if positions is not None:
            return positions
        length = inputs.shape[1]
        if cfg.position_convention == "fairseq" and length + cfg.pad_token_id >= cfg.max_len:
            raise ValueError(
                f"Sequence length {length} needs fairseq positions up to "
                f"{length + cfg.pad_token_id} but max_len={cfg.max_len}; shorten the inputs."
            )
        return self.default_positions(inputs)

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
          positions: int [B, L] position ids (default: the config's ``position_convention``).
          segment_ids: int [B, L] document ids of packed rows (0 = padding); attention stays in
            the same nonzero segment.
          deterministic: disables dropout (pass ``rngs={'dropout': key}`` when False).

        Returns:
          ``{'hidden', 'pooled'?, 'logits'?, 'nsp_logits'?}`` (see the module docstring).
        """
        cfg = self.config
        encoder_parts.check_inputs("BERT", inputs, cfg.max_len)
        positions = self.checked_positions(inputs, positions)
        types = encoder_parts.token_types(inputs, token_type_ids, cfg.type_vocab_size)
        token_embed, x = encoder_parts.embed(cfg, inputs, positions, types, deterministic)
        mask = encoder_parts.encoder_mask(attention_mask, segment_ids, inputs.shape[1])
        x = encoder_parts.encode(cfg, self.block_config(), x, mask, deterministic)  # [B, L, E]
        outputs = {"hidden": x}
        if cfg.pooler:
            outputs.update(encoder_parts.pooled_outputs(cfg, x, "nsp" if cfg.nsp_head else None))
        if cfg.mlm_head:
            outputs["logits"] = encoder_parts.mlm_logits(self, cfg, x, token_embed.attend)
        return outputs


Config = BERTConfig  # the family protocol of lmjax.models: Config, PRESETS, Model
Model = BERT


def param_shapes(config: BERTConfig) -> Any:
    """The parameter tree as ``jax.ShapeDtypeStruct`` leaves (no allocation, via eval_shape)."""
    return parameters.abstract_params(BERT(config))


def count_params(config: BERTConfig) -> int:
    """The number of parameters of a model built from ``config`` (no allocation)."""
    return parameters.param_count(param_shapes(config))


def to_scanned_layout(params: Mapping[str, Any], num_layers: int) -> dict[str, Any]:
    """Unscanned parameters (``encoder/layers_{i}``) -> scanned (``encoder/layers`` [N, ...]).

    Accepts boxed (``nn.LogicallyPartitioned``) or plain leaves; returns plain arrays.
    """
    return parameters.scanned_layout(params, "encoder", num_layers)


def to_unscanned_layout(params: Mapping[str, Any]) -> dict[str, Any]:
    """Scanned parameters (``encoder/layers`` [N, ...]) -> unscanned (``encoder/layers_{i}``)."""
    return parameters.unscanned_layout(params, "encoder")
