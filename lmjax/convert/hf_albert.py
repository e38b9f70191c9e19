"""Hugging Face ALBERT checkpoints -> lmjax ALBERT parameters (``lmjax.models.albert``).

Reads a Hugging Face model directory (``config.json`` + safetensors, single file or sharded) of an
``AlbertForPreTraining``, ``AlbertForMaskedLM`` or ``AlbertModel`` and returns the lmjax model
config (``albert_model_config`` / ``albert_config_from_hf``) and the parameter tree
(``albert_params_from_hf``). No PyTorch.

Which heads the lmjax model gets follows the tensors present: ``pooler`` if ``pooler.weight`` is
stored, ``mlm_head`` if ``predictions.*`` is, ``sop_head`` if ``sop_classifier.classifier`` is.

Name correspondences (HF ``transformers/models/albert/modeling_albert.py``; ``nn.Linear`` stores
``weight`` [out, in], so kernels are transposed; prefix ``albert.`` for the encoder of the task
models, none for a bare ``AlbertModel``; ``<g>`` = ``encoder.albert_layer_groups.{g}
.albert_layers.0``):

=====================================================  ============================================
HF                                                      lmjax
=====================================================  ============================================
``embeddings.word_embeddings.weight`` [V, M]            ``token_embed/embedding``
``encoder.embedding_hidden_mapping_in`` [E, M]          ``token_embed/projection`` kernel [M, E]
``embeddings.position_embeddings.weight`` [P, M]        ``position_embed/embedding``
``embeddings.token_type_embeddings.weight`` [T, M]      ``type_embed/embedding``
``embeddings.LayerNorm.{weight,bias}``                  ``embed_norm/{scale,bias}``
``<g>.attention.{query,key,value}`` [E, E]              ``encoder/layers_g/attention/{q,k,v}``
                                                        (query / key / value) kernel ``W^T`` ->
                                                        [E, H, D], bias -> [H, D]
``<g>.attention.dense``                                 ``.../attention/out`` kernel [H, D, E]
``<g>.attention.LayerNorm``                             ``.../attention_norm``
``<g>.ffn`` [F, E]                                      ``.../mlp/wi`` kernel [E, F]
``<g>.ffn_output`` [E, F]                               ``.../mlp/wo`` kernel [F, E]
``<g>.full_layer_layer_norm``                           ``.../mlp_norm``
``pooler`` [E, E]                                       ``pooler``
``predictions.dense`` [M, E]                            ``mlm_transform`` kernel [E, M]
``predictions.LayerNorm``                               ``mlm_norm``
``predictions.bias`` [V]                                ``mlm_bias``
``predictions.decoder.weight`` / ``.bias``              tied: checked equal (table / ``mlm_bias``)
``sop_classifier.classifier`` [2, E]                    ``sop`` kernel [E, 2]
=====================================================  ============================================

Groups: with ``num_hidden_groups`` G < ``num_hidden_layers`` N the lmjax stack holds one set of
block parameters per group, ``encoder/layers_{g}`` (no layer axis, in both layouts); with G = N
nothing is shared and the layout follows ``scan_layers`` (``encoder/layers`` [N, ...] or
``encoder/layers_{i}``), as for BERT. Only ``inner_group_num = 1`` is supported. HF picks layer
i's group with ``int(i / (N / G))`` in floating point (google-research/albert with
``int(i / N * G)``), which for a few (N, G) pairs (e.g. 18, 14) differs from lmjax's exact
``floor(i * G / N)``; such configs are rejected rather than converted to a model that computes
something else. No published checkpoint is affected (they all use G = 1).

Heads: HF splits the E output features of q/k/v as (H, D) row-major, so feature ``c`` is head
``c // D``, dim ``c % D``. Buffers (``embeddings.position_ids``, ``embeddings.token_type_ids``) are
skipped; any other unused tensor, a missing one or a shape mismatch raises a ``ValueError`` naming
the tensor.

Axis legend: N layers, G groups, E hidden, M embedding width, H heads, D head dim, F mlp,
V vocab, P positions, T token types.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import ml_collections

from lmjax import models
from lmjax.convert import safetensors_checkpoint as ckpt
from lmjax.layers.transformer import group_of_layer
from lmjax.models import albert

_PREFIX = "albert."
_SKIPPED = re.compile(r"(^|\.)embeddings\.(position_ids|token_type_ids)$")
# AlbertLayer's tensor names (modeling_albert.py), under <g> (see the module docstring).
_LAYER_NAMES = ckpt.PostLNLayerNames(
    query="attention.query", key="attention.key", value="attention.value",
    out="attention.dense", attention_norm="attention.LayerNorm",
    mlp_in="ffn", mlp_out="ffn_output", mlp_norm="full_layer_layer_norm",
)
# AlbertConfig's defaults (configuration_albert.py) for fields a config.json may leave out.
_DEFAULTS = dict(
    vocab_size=30000, max_position_embeddings=512, num_hidden_layers=12, hidden_size=4096,
    num_attention_heads=64, intermediate_size=16384, hidden_act="gelu_new",
    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
)


def _hf_group_mismatches(num_layers: int, num_groups: int) -> list[tuple[int, int, int]]:
    """(layer, HF group, lmjax group) for the layers whose group HF's float formula changes."""
    return [
        (i, int(i / (num_layers / num_groups)), group_of_layer(i, num_layers, num_groups))
        for i in range(num_layers)
        if int(i / (num_layers / num_groups)) != group_of_layer(i, num_layers, num_groups)
    ]


def albert_config_fields(
    config: Mapping[str, Any], tensor_names: set[str] | None = None
) -> dict[str, Any]:
    """Returns the ``ALBERTConfig`` fields that an HF ``albert`` config.json fixes.

    Args:
      config: the parsed config.json.
      tensor_names: the checkpoint's tensor names; when given, ``pooler``, ``mlm_head`` and
        ``sop_head`` follow which heads are stored.

    Raises:
      ValueError: for another model type, or what lmjax's ALBERT does not implement
        (``inner_group_num`` > 1, relative positions, an unknown activation, a group assignment
        on which HF and google-research/albert disagree).
    """
    if config.get("model_type") != "albert":
        raise ValueError(
            f"Unsupported Hugging Face model_type {config.get('model_type')!r}; "
            "lmjax.convert.hf_albert reads 'albert' (use hf_bert for bert / roberta)."
        )
    get = config.get
    num_layers = int(get("num_hidden_layers", 12))
    num_groups = int(get("num_hidden_groups", 1))
    problems = []
    if int(get("inner_group_num", 1)) != 1:
        problems.append(f"inner_group_num={get('inner_group_num')} (only 1 is implemented)")
    problems += ckpt.encoder_config_problems(
        config, ckpt.HF_ACTIVATIONS, _DEFAULTS["hidden_act"]
    )
    if 0 < num_groups <= num_layers and _hf_group_mismatches(num_layers, num_groups):
        problems.append(
            f"num_hidden_groups={num_groups} with num_hidden_layers={num_layers}: HF assigns "
            "(layer, group) pairs differently from lmjax's exact floor(i * G / N) for "
            + ", ".join(f"layer {i}: HF {h}, lmjax {o}"
                        for i, h, o in _hf_group_mismatches(num_layers, num_groups))
        )
    if problems:
        raise ValueError(
            "This albert config uses what lmjax's ALBERT does not implement: "
            + "; ".join(problems)
            + "."
        )
    fields = ckpt.encoder_config_fields(config, ckpt.HF_ACTIVATIONS, _DEFAULTS)
    fields.update(embedding_size=int(get("embedding_size", 128)), num_groups=num_groups)
    if tensor_names is not None:
        names = set(tensor_names)
        prefix = ckpt.encoder_prefix(names, _PREFIX)
        fields["pooler"] = f"{prefix}pooler.weight" in names
        fields["mlm_head"] = any(n.startswith("predictions.") for n in names)
        fields["sop_head"] = "sop_classifier.classifier.weight" in names
    return fields


def albert_model_config(
    directory: str | os.PathLike, **overrides: Any
) -> ml_collections.ConfigDict:
    """Returns the lmjax model config (``family='albert'`` + every ALBERTConfig field).

    The 'base' preset supplies unstated fields; ``overrides`` (e.g. ``scan_layers=False``,
    ``dtype='bfloat16'``) win over both.
    """
    fields = albert_config_fields(ckpt.hf_config(directory), set(ckpt.hf_tensors(directory)))
    fields.update(overrides)
    return models.config_dict("albert", "base", **fields)


def albert_config_from_hf(directory: str | os.PathLike, **overrides: Any) -> albert.ALBERTConfig:
    """Returns the ``ALBERTConfig`` dataclass of an HF directory (see ``albert_model_config``)."""
    return models.make_config(albert_model_config(directory, **overrides))


def albert_params_from_hf(
    directory: str | os.PathLike, model_config=None, *, skip_unexpected: bool = False
) -> dict[str, Any]:
    """Returns lmjax ALBERT parameters (NumPy arrays) converted from an HF ALBERT checkpoint.

    Args:
      directory: a Hugging Face ``albert`` model directory (safetensors).
      model_config: an ``ALBERTConfig`` or a ConfigDict / dict of its fields; default
        ``albert_model_config(directory)``. Its ``num_groups`` and ``scan_layers`` pick the
        layout, its ``param_dtype`` the storage dtype and its head flags which heads are read.
      skip_unexpected: ignore stored tensors the model does not use (e.g. a classifier head).

    Returns:
      The ``params`` tree for ``model.apply({'params': tree}, ...)``, matching
      ``lmjax.models.albert.param_shapes(config)`` in structure, shapes and dtype.

    Raises:
      ValueError: naming the tensor, for missing and unexpected tensors and shape mismatches.
    """
    directory = os.fspath(directory)
    hf = ckpt.hf_config(directory)
    if model_config is None:
        model_config = albert_model_config(directory)
    cfg = ckpt.family_config(model_config, "albert", albert.ALBERTConfig)
    hf_groups = int(hf.get("num_hidden_groups", 1))
    if cfg.num_groups != hf_groups:
        raise ValueError(
            f"model_config.num_groups={cfg.num_groups} but the checkpoint in {directory} has "
            f"num_hidden_groups={hf_groups}; build the config with albert_model_config."
        )
    tensors = ckpt.hf_tensors(directory)
    prefix = ckpt.encoder_prefix(set(tensors), _PREFIX)
    src = ckpt.CheckpointTensors(tensors, directory, _SKIPPED, "albert_model_config")
    e, m, v = cfg.embed_dim, cfg.embedding_size, cfg.vocab_size

    params = ckpt.embedding_params(
        src, f"{prefix}embeddings", v, cfg.max_len, m, cfg.type_vocab_size
    )  # tables [rows, M]
    token_table = params["token_embed"]["embedding"]  # [V, M]
    params["token_embed"]["projection"] = ckpt.dense_params(
        src, f"{prefix}encoder.embedding_hidden_mapping_in", m, e
    )
    groups = [
        ckpt.post_ln_layer_params(
            src, f"{prefix}encoder.albert_layer_groups.{g}.albert_layers.0", _LAYER_NAMES, e,
            cfg.num_heads, cfg.mlp_dim,
        )
        for g in range(cfg.num_groups)
    ]
    # Shared groups have no layer axis (layers_{g}) in both layouts.
    scanned = cfg.num_groups == cfg.num_layers and cfg.scan_layers
    params["encoder"] = ckpt.layer_stack(groups, scanned)
    if cfg.pooler:
        params["pooler"] = ckpt.dense_params(src, f"{prefix}pooler", e, e)
    if cfg.sop_head:
        params["sop"] = ckpt.dense_params(src, "sop_classifier.classifier", e, 2)  # kernel [E, 2]
    if cfg.mlm_head:
        params.update(ckpt.mlm_head_params(  # mlm_transform [E, M]
            src, "ALBERT", transform="predictions.dense", norm="predictions.LayerNorm",
            bias="predictions.bias", decoder="predictions.decoder", hidden=e, width=m,
            token_table=token_table,
        ))
    return ckpt.finished_params(
        src, params, cfg, albert.param_shapes(cfg), "ALBERT", skip_unexpected,
        user="this lmjax ALBERT config",
        hint=", or enable the matching head (pooler / mlm_head / sop_head)",
    )


def load_hf_albert(directory: str | os.PathLike, **overrides: Any) -> tuple[albert.ALBERT, dict]:
    """Returns ``(model, params)``: the lmjax ALBERT described by an HF directory and its weights.

    ``model.config`` is the ``ALBERTConfig``; ``overrides`` are ALBERTConfig fields.

    Example:
      >>> model, params = load_hf_albert('/data/albert-base-v2')
      >>> out = model.apply({'params': params}, ids, token_type_ids=types, attention_mask=mask)
      >>> out['sop_logits']  # [B, 2]
    """
    model_config = albert_model_config(directory, **overrides)
    return models.build(model_config), albert_params_from_hf(directory, model_config)


__all__ = [
    "albert_config_fields",
    "albert_config_from_hf",
    "albert_model_config",
    "albert_params_from_hf",
    "load_hf_albert",
]
