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

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lmjax import models
from lmjax.convert.safetensors_checkpoint import (
    CheckpointTensors,
    check_matches_model,
    hf_config,
    hf_tensors,
    layer_norm_params,
)
from lmjax.layers.transformer import group_of_layer
from lmjax.models import albert

_PREFIX = "albert."
# HF activation names (transformers/activations.py ACT2FN) -> lmjax names.
_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
_SKIPPED = re.compile(r"(^|\.)embeddings\.(position_ids|token_type_ids)$")


def _encoder_prefix(names: set[str]) -> str:
    """The encoder prefix the stored names use: ``albert.`` (task models) or '' (bare models)."""
    return _PREFIX if any(n.startswith(_PREFIX) for n in names) else ""


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
    if get("position_embedding_type", "absolute") != "absolute":
        problems.append(f"position_embedding_type={get('position_embedding_type')!r}")
    activation = get("hidden_act", "gelu_new")
    if activation not in _ACTIVATIONS:
        problems.append(f"hidden_act {activation!r} (supported: {sorted(_ACTIVATIONS)})")
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
    fields = dict(
        vocab_size=int(get("vocab_size", 30000)),
        max_len=int(get("max_position_embeddings", 512)),
        type_vocab_size=int(get("type_vocab_size", 2)),
        embedding_size=int(get("embedding_size", 128)),
        num_layers=num_layers,
        num_groups=num_groups,
        embed_dim=int(get("hidden_size", 4096)),
        num_heads=int(get("num_attention_heads", 64)),
        mlp_dim=int(get("intermediate_size", 16384)),
        activation=_ACTIVATIONS[activation],
        layer_norm_eps=float(get("layer_norm_eps", 1e-12)),
        hidden_dropout=float(get("hidden_dropout_prob", 0.0)),
        attention_dropout=float(get("attention_probs_dropout_prob", 0.0)),
        init_std=float(get("initializer_range", 0.02)),
    )
    if tensor_names is not None:
        names = set(tensor_names)
        prefix = _encoder_prefix(names)
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
    fields = albert_config_fields(hf_config(directory), set(hf_tensors(directory)))
    fields.update(overrides)
    return models.config_dict("albert", "base", **fields)


def albert_config_from_hf(directory: str | os.PathLike, **overrides: Any) -> albert.ALBERTConfig:
    """Returns the ``ALBERTConfig`` dataclass of an HF directory (see ``albert_model_config``)."""
    return models.make_config(albert_model_config(directory, **overrides))


def _dense(src: CheckpointTensors, name: str, n_in: int, n_out: int) -> dict[str, np.ndarray]:
    """An ``nn.Linear`` (weight [out, in]) as an lmjax kernel [in, out] and bias [out]."""
    return {
        "kernel": src.take(f"{name}.weight", (n_out, n_in)).T,
        "bias": src.take(f"{name}.bias", (n_out,)),
    }


def _layer_params(src: CheckpointTensors, p: str, cfg: albert.ALBERTConfig) -> dict[str, Any]:
    """One shared layer's lmjax parameters (unscanned shapes) from HF tensors ``{p}.*``."""
    e, h, d, f = cfg.embed_dim, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
    attention = {}
    for name in ("query", "key", "value"):
        linear = _dense(src, f"{p}.attention.{name}", e, e)
        attention[name] = {
            "kernel": linear["kernel"].reshape(e, h, d),  # [E, H, D]
            "bias": linear["bias"].reshape(h, d),  # [H, D]
        }
    out = _dense(src, f"{p}.attention.dense", e, e)
    attention["out"] = {"kernel": out["kernel"].reshape(h, d, e), "bias": out["bias"]}  # [H, D, E]
    return {
        "attention": attention,
        "attention_norm": layer_norm_params(src, f"{p}.attention.LayerNorm", e),
        "mlp": {
            "wi": _dense(src, f"{p}.ffn", e, f),  # [E, F]
            "wo": _dense(src, f"{p}.ffn_output", f, e),  # [F, E]
        },
        "mlp_norm": layer_norm_params(src, f"{p}.full_layer_layer_norm", e),
    }


def _as_albert_config(model_config) -> albert.ALBERTConfig:
    if isinstance(model_config, albert.ALBERTConfig):
        return model_config
    values = dict(model_config.to_dict() if hasattr(model_config, "to_dict") else model_config)
    values.setdefault("family", "albert")
    if values["family"] != "albert":
        raise ValueError(f"model_config is for family {values['family']!r}, not 'albert'.")
    return models.make_config(values)


def _tied(src: CheckpointTensors, name: str, expected: np.ndarray, what: str) -> None:
    """Checks that a stored tied copy (decoder weight / bias) equals what lmjax ties it to."""
    if src.has(name) and not np.array_equal(src.take(name, expected.shape), expected):
        raise ValueError(
            f"Tensor {name!r} differs from {what}, but lmjax's ALBERT ties them; this "
            "checkpoint cannot be converted exactly."
        )


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
    hf = hf_config(directory)
    if model_config is None:
        model_config = albert_model_config(directory)
    cfg = _as_albert_config(model_config)
    hf_groups = int(hf.get("num_hidden_groups", 1))
    if cfg.num_groups != hf_groups:
        raise ValueError(
            f"model_config.num_groups={cfg.num_groups} but the checkpoint in {directory} has "
            f"num_hidden_groups={hf_groups}; build the config with albert_model_config."
        )
    tensors = hf_tensors(directory)
    prefix = _encoder_prefix(set(tensors))
    src = CheckpointTensors(tensors, directory, _SKIPPED, "albert_model_config")
    e, m, v = cfg.embed_dim, cfg.embedding_size, cfg.vocab_size

    emb = f"{prefix}embeddings"
    token_table = src.take(f"{emb}.word_embeddings.weight", (v, m))  # [V, M]
    params: dict[str, Any] = {
        "token_embed": {
            "embedding": token_table,
            "projection": _dense(src, f"{prefix}encoder.embedding_hidden_mapping_in", m, e),
        },
        "position_embed": {
            "embedding": src.take(f"{emb}.position_embeddings.weight", (cfg.max_len, m))
        },
        "embed_norm": layer_norm_params(src, f"{emb}.LayerNorm", m),
    }
    if cfg.type_vocab_size:
        params["type_embed"] = {
            "embedding": src.take(f"{emb}.token_type_embeddings.weight", (cfg.type_vocab_size, m))
        }
    groups = [
        _layer_params(src, f"{prefix}encoder.albert_layer_groups.{g}.albert_layers.0", cfg)
        for g in range(cfg.num_groups)
    ]
    if cfg.num_groups == cfg.num_layers and cfg.scan_layers:
        params["encoder"] = {"layers": jax.tree.map(lambda *xs: np.stack(xs), *groups)}  # [N, ...]
    else:
        params["encoder"] = {f"layers_{g}": group for g, group in enumerate(groups)}
    if cfg.pooler:
        params["pooler"] = _dense(src, f"{prefix}pooler", e, e)
    if cfg.sop_head:
        params["sop"] = _dense(src, "sop_classifier.classifier", e, 2)  # kernel [E, 2]
    if cfg.mlm_head:
        params["mlm_transform"] = _dense(src, "predictions.dense", e, m)  # [E, M]
        params["mlm_norm"] = layer_norm_params(src, "predictions.LayerNorm", m)
        params["mlm_bias"] = src.take("predictions.bias", (v,))
        _tied(src, "predictions.decoder.weight", token_table, "the word embeddings")
        _tied(src, "predictions.decoder.bias", params["mlm_bias"], "predictions.bias")

    if src.unused() and not skip_unexpected:
        raise ValueError(
            f"The checkpoint in {directory} has tensors this lmjax ALBERT config does not use: "
            f"{src.unused()}. Pass skip_unexpected=True to ignore them, or enable the matching "
            "head (pooler / mlm_head / sop_head)."
        )
    param_dtype = np.dtype(jnp.dtype(cfg.param_dtype))
    params = jax.tree.map(lambda x: np.asarray(x, dtype=param_dtype), params)
    check_matches_model(params, albert.param_shapes(cfg), "ALBERT")
    return params


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
