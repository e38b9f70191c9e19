"""DistilBERT: a 6-layer post-LN BERT student without token types or pooler, and its initialisation
from a BERT teacher.

Axis legend: B batch, L length, N layers, E embed, H heads, D head dim (E / H), F mlp, V vocab,
P positions (max_len).

References:
- Sanh et al. 2019, "DistilBERT, a distilled version of BERT: smaller, faster, cheaper and
  lighter" §2-3 (half the layers, no token-type embeddings and no pooler, initialised by taking
  one layer out of two from the teacher).
- Hugging Face ``transformers/models/distilbert/modeling_distilbert.py`` (``Embeddings``,
  ``TransformerBlock``: ``sa_layer_norm(attn + x)`` then ``output_layer_norm(ffn + h)``, LayerNorm
  eps fixed at 1e-12; ``DistilBertForMaskedLM``: ``vocab_transform`` -> activation ->
  ``vocab_layer_norm`` -> ``vocab_projector`` tied to the word embeddings, with its own bias).
- ``examples/research_projects/distillation/scripts/extract_distilbert.py`` (teacher layers
  0, 2, 4, 7, 9, 11; see ``distilbert_params_from_bert``).

The model::

    x = LN(token_embed(inputs) + position_embed(positions)); dropout         # [B, L, E]
    x = num_layers post-LN blocks, bidirectional attention                  # hidden [B, L, E]
    logits = LN(gelu(mlm_transform(x))) @ token_embed^T + mlm_bias          # float32 [B, L, V]

Call (the encoder contract of ``lmjax.models``)::

    out = DistilBERT(config).apply({'params': params}, inputs, token_type_ids=None,
                                   attention_mask=None, positions=None, deterministic=True)
    out['hidden']            # [B, L, E]
    out['logits']            # float32 [B, L, V]            -- if config.mlm_head
    out['hidden_states']     # float32 [N + 1, B, L, E]     -- if config.per_layer_outputs
    out['attention_scores']  # float32 [N, B, H, L, L]      -- if config.per_layer_outputs

``token_type_ids`` is accepted and ignored (DistilBERT has no token-type table), so DistilBERT
runs under the same objectives as BERT (``model_inputs = ('inputs', 'token_type_ids',
'attention_mask')``). ``attention_mask`` [B, L] (1 = real token) masks padded keys, as HF does.
``hidden_states[0]`` is the embedding output and ``hidden_states[i]`` layer ``i``'s output;
``attention_scores[i]`` are layer ``i``'s pre-softmax scores ``q.k / sqrt(D)`` *before* masking
(padded keys hold their raw scores; losses mask them, see ``lmjax.objectives.distillation``).

Parameter tree (``scan_layers=True``; the names are BERT's, ``lmjax.models.bert``, so a BERT
teacher's tensors copy over one to one)::

    token_embed/embedding                      [V, E]        (vocab, embed)
    position_embed/embedding                   [P, E]        (position, embed)
    embed_norm/{scale,bias}                    [E]           (norm)
    encoder/layers/attention/{query,key,value}/kernel  [N, E, H, D]  (layers, embed, heads, kv)
    encoder/layers/attention/{query,key,value}/bias    [N, H, D]
    encoder/layers/attention/out/{kernel [N, H, D, E], bias [N, E]}
    encoder/layers/attention_norm/{scale,bias} [N, E]        HF sa_layer_norm
    encoder/layers/mlp/wi/{kernel [N, E, F], bias [N, F]}    HF ffn.lin1
    encoder/layers/mlp/wo/{kernel [N, F, E], bias [N, E]}    HF ffn.lin2
    encoder/layers/mlp_norm/{scale,bias}       [N, E]        HF output_layer_norm
    mlm_transform/{kernel [E, E], bias [E]}                  HF vocab_transform   -- if mlm_head
    mlm_norm/{scale,bias}                      [E]           HF vocab_layer_norm  -- if mlm_head
    mlm_bias                                   [V]           HF vocab_projector.bias

With ``scan_layers=False`` each ``encoder/layers/<path>`` [N, ...] is ``encoder/layers_{i}/<path>``.
Initialisation: truncated normal with std ``init_std`` (0.02) for kernels and tables (HF
DistilBERT draws N(0, 0.02); a from-scratch student is rarely the point: see
``distilbert_params_from_bert``), zeros for biases, ones / zeros for LayerNorms.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.layers.transformer import BlockConfig, stack_layer_params
from lmjax.models import encoder_parts, parameters

# extract_distilbert.py: the BERT-base layers the 6-layer student starts from.
REFERENCE_TEACHER_LAYERS = (0, 2, 4, 7, 9, 11)


@dataclasses.dataclass(frozen=True)
class DistilBERTConfig:
    """Hyper-parameters of a DistilBERT encoder (HF ``DistilBertConfig`` names in brackets).

    Attributes:
      vocab_size: V [vocab_size].
      max_len: P, rows of the learned position table [max_position_embeddings].
      num_layers: N [n_layers].
      embed_dim: E [dim].
      num_heads: H [n_heads]; the head width is ``embed_dim // num_heads``.
      mlp_dim: F [hidden_dim].
      activation: MLP and MLM-transform activation ('gelu' = exact erf GELU) [activation].
      layer_norm_eps: LayerNorm epsilon (HF hard-codes 1e-12).
      hidden_dropout: dropout on the embeddings and each sublayer output [dropout].
      attention_dropout: dropout on attention weights [attention_dropout].
      init_std: std of the truncated-normal init [initializer_range].
      pad_token_id: the padding id (documentation of the vocabulary; masks come from
        ``attention_mask``).
      mlm_head: the masked-LM head (transform, LayerNorm, tied projector + bias).
      per_layer_outputs: also return ``hidden_states`` and ``attention_scores`` (distillation).
      scan_layers: scan over layers (``encoder/layers`` [N, ...]) instead of unrolling.
      remat: rematerialisation policy of each block (see ``REMAT_POLICIES``).
      dtype: compute dtype name; logits, softmax and per-layer outputs are float32.
      param_dtype: parameter storage dtype name.
    """

    vocab_size: int = 30522
    max_len: int = 512
    num_layers: int = 6
    embed_dim: int = 768
    num_heads: int = 12
    mlp_dim: int = 3072
    activation: str = "gelu"
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    init_std: float = 0.02
    pad_token_id: int = 0
    mlm_head: bool = True
    per_layer_outputs: bool = False
    scan_layers: bool = True
    remat: str = "none"
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self) -> None:
        sizes = ("vocab_size", "max_len", "num_layers", "embed_dim", "num_heads", "mlp_dim")
        problems = encoder_parts.config_problems(self, sizes)
        if problems:
            raise ValueError("Invalid DistilBERTConfig: " + "; ".join(problems) + ".")

    @property
    def head_dim(self) -> int:
        """D = E / H."""
        return self.embed_dim // self.num_heads


# distilbert-base-uncased (HF hub config: 6 layers, dim 768, 12 heads, hidden_dim 3072, 66M).
# 'tiny' halves the 4-layer tiny BERT teacher of lmjax.models.teacher_student at its width.
PRESETS: dict[str, DistilBERTConfig] = {
    "tiny": DistilBERTConfig(
        vocab_size=2048, max_len=128, num_layers=2, embed_dim=128, num_heads=2, mlp_dim=512
    ),
    "base": DistilBERTConfig(),
}


class DistilBERT(nn.Module):
    """A DistilBERT encoder with an optional MLM head (see the module docstring).

    Attributes:
      config: the model's ``DistilBERTConfig``.
    """

    config: DistilBERTConfig

    def block_config(self) -> BlockConfig:
        """The per-layer hyper-parameters handed to the transformer stack (post-LN, biases)."""
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
        """Runs the encoder and its MLM head.

        Args:
          inputs: int [B, L] token ids.
          token_type_ids: ignored (DistilBERT has no token types); accepted so every encoder
            takes the same inputs.
          attention_mask: [B, L], 1 = real token, 0 = padding (padded keys are not attended).
          positions: int [B, L] position ids (default ``arange(L)``).
          segment_ids: int [B, L] document ids of packed rows (0 = padding); attention stays in
            the same nonzero segment.
          deterministic: disables dropout (pass ``rngs={'dropout': key}`` when False).

        Returns:
          ``{'hidden', 'logits'?, 'hidden_states'?, 'attention_scores'?}`` (module docstring).
        """
        del token_type_ids  # no token-type embeddings in DistilBERT
        cfg = self.config
        encoder_parts.check_inputs("DistilBERT", inputs, cfg.max_len)
        if positions is None:
            positions = encoder_parts.arange_positions(inputs)
        token_embed, x = encoder_parts.embed(cfg, inputs, positions, None, deterministic)
        mask = encoder_parts.encoder_mask(attention_mask, segment_ids, inputs.shape[1])
        per_layer = cfg.per_layer_outputs
        result = encoder_parts.encode(
            cfg, self.block_config(), x, mask, deterministic, per_layer_outputs=per_layer
        )
        outputs = encoder_parts.encoder_outputs(result, x, per_layer)
        if cfg.mlm_head:
            outputs["logits"] = encoder_parts.mlm_logits(
                self, cfg, outputs["hidden"], token_embed.attend
            )
        return outputs


Config = DistilBERTConfig  # the family protocol of lmjax.models: Config, PRESETS, Model
Model = DistilBERT


def param_shapes(config: DistilBERTConfig) -> Any:
    """The parameter tree as ``jax.ShapeDtypeStruct`` leaves (no allocation, via eval_shape)."""
    return parameters.abstract_params(DistilBERT(config))


def count_params(config: DistilBERTConfig) -> int:
    """The number of parameters of a model built from ``config`` (no allocation)."""
    return parameters.param_count(param_shapes(config))


def to_scanned_layout(params: Mapping[str, Any], num_layers: int) -> dict[str, Any]:
    """Unscanned parameters (``encoder/layers_{i}``) -> scanned (``encoder/layers`` [N, ...])."""
    return parameters.scanned_layout(params, "encoder", num_layers)


def to_unscanned_layout(params: Mapping[str, Any]) -> dict[str, Any]:
    """Scanned parameters (``encoder/layers`` [N, ...]) -> unscanned (``encoder/layers_{i}``)."""
    return parameters.unscanned_layout(params, "encoder")


def _teacher_layers(encoder: Mapping[str, Any]) -> list[Any]:
    """The teacher's per-layer parameter dicts, in order, from either scan layout."""
    if "layers" in encoder:
        return [
            jax.tree_util.tree_map(lambda leaf, i=i: leaf[i], encoder["layers"])
            for i in range(jax.tree_util.tree_leaves(encoder["layers"])[0].shape[0])
        ]
    count = sum(1 for name in encoder if name.startswith("layers_"))
    return [encoder[f"layers_{i}"] for i in range(count)]


def distilbert_params_from_bert(
    bert_params: Mapping[str, Any],
    layers: Sequence[int] = REFERENCE_TEACHER_LAYERS,
    *,
    vocab_transform: bool = True,
    student_params: Mapping[str, Any] | None = None,
    scan_layers: bool = True,
) -> dict[str, Any]:
    """DistilBERT parameters initialised from an lmjax BERT teacher (Sanh et al. 2019, §3).

    Follows ``extract_distilbert.py``: the word and position tables and the embedding LayerNorm
    are copied; student layer ``j`` is a copy of teacher layer ``layers[j]`` (q/k/v, attention
    output, both LayerNorms, both MLP dense layers); the MLM projector's bias comes from the
    teacher's ``cls.predictions.bias`` (lmjax ``mlm_bias``; the projector weight is the tied word
    table, copied with it). The reference copies the MLM transform and its LayerNorm only with
    ``--vocab_transform``: ``vocab_transform=True`` (the default here, so the whole tree comes
    from the teacher) copies ``mlm_transform`` / ``mlm_norm`` too; with False they are taken
    from ``student_params`` (the student's random init), as the reference leaves them.
    The teacher's token-type table, pooler and NSP head have no place in DistilBERT and are
    dropped (the reference drops them too).

    Args:
      bert_params: an lmjax BERT parameter tree (``lmjax.models.bert``), scanned
        (``encoder/layers`` [N, ...]) or unscanned (``encoder/layers_{i}``), boxed or plain.
      layers: the teacher layers, in order, that become the student's layers 0, 1, ...; the
        reference's (0, 2, 4, 7, 9, 11) for BERT-base, e.g. (0, 3) or (1, 3) for a 4-layer
        teacher and a 2-layer student.
      vocab_transform: copy the MLM transform and its LayerNorm (see above).
      student_params: the student's own parameters, needed for what is not copied
        (``vocab_transform=False``); other entries are ignored.
      scan_layers: the layout of the result (``DistilBERTConfig.scan_layers``).

    Returns:
      A plain-array DistilBERT parameter tree with ``len(layers)`` layers.

    Raises:
      ValueError: for a layer index out of range, a teacher without an MLM head, or
        ``vocab_transform=False`` without ``student_params``.
    """
    teacher = nn.unbox(bert_params)
    teacher_layers = _teacher_layers(teacher["encoder"])
    bad = [i for i in layers if not 0 <= int(i) < len(teacher_layers)]
    if bad or not layers:
        raise ValueError(
            f"layers={tuple(layers)} must be a non-empty list of teacher layer indices in "
            f"[0, {len(teacher_layers)}); the teacher has {len(teacher_layers)} layers."
        )
    if "mlm_bias" not in teacher:
        raise ValueError(
            "The teacher parameters have no MLM head (mlm_bias); DistilBERT copies its MLM "
            "projector bias from the teacher. Load a BERT checkpoint with its MLM head."
        )
    if not vocab_transform and student_params is None:
        raise ValueError(
            "vocab_transform=False keeps the student's own MLM transform; pass student_params "
            "(e.g. DistilBERT(config).init(...)['params'])."
        )
    copy = lambda tree: jax.tree_util.tree_map(jnp.asarray, tree)  # noqa: E731
    chosen = [copy(teacher_layers[int(i)]) for i in layers]
    encoder = (
        stack_layer_params({f"layers_{j}": p for j, p in enumerate(chosen)}, len(chosen))
        if scan_layers
        else {f"layers_{j}": p for j, p in enumerate(chosen)}
    )
    params: dict[str, Any] = {
        "token_embed": copy(teacher["token_embed"]),
        "position_embed": copy(teacher["position_embed"]),
        "embed_norm": copy(teacher["embed_norm"]),
        "encoder": encoder,
        "mlm_bias": jnp.asarray(teacher["mlm_bias"]),
    }
    head_source = teacher if vocab_transform else nn.unbox(student_params)
    params["mlm_transform"] = copy(head_source["mlm_transform"])
    params["mlm_norm"] = copy(head_source["mlm_norm"])
    return params


def teacher_layer_choice(teacher_layers: int, student_layers: int) -> tuple[int, ...]:
    """A default layer choice for ``distilbert_params_from_bert``: layers spread evenly from the
    teacher's first to its last, ``round(j * (N_t - 1) / (N_s - 1))`` (one student layer: the
    last). For 12 -> 6 this is the reference's (0, 2, 4, 7, 9, 11); for 4 -> 2 it is (0, 3). The
    rule is lmjax's generalisation; the reference hard-codes the 12 -> 6 list.
    """
    if student_layers <= 0 or student_layers > teacher_layers:
        raise ValueError(
            f"student_layers={student_layers} must be in [1, teacher_layers={teacher_layers}]."
        )
    if student_layers == 1:
        return (teacher_layers - 1,)
    spread = np.round(np.arange(student_layers) * (teacher_layers - 1) / (student_layers - 1))
    return tuple(int(i) for i in spread)


__all__ = [
    "REFERENCE_TEACHER_LAYERS",
    "Config",
    "DistilBERT",
    "DistilBERTConfig",
    "Model",
    "PRESETS",
    "count_params",
    "distilbert_params_from_bert",
    "param_shapes",
    "teacher_layer_choice",
    "to_scanned_layout",
    "to_unscanned_layout",
]
