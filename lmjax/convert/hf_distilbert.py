"""Hugging Face DistilBERT checkpoints -> lmjax DistilBERT parameters (``lmjax.models.distilbert``).

Reads a Hugging Face model directory (``config.json`` + safetensors, single or sharded) of a
``DistilBertForMaskedLM`` or a bare ``DistilBertModel`` and returns the lmjax model config
(``distilbert_model_config``) and parameter tree (``distilbert_params_from_hf``), in the scanned
or unscanned layout the config asks for. No PyTorch. ``mlm_head`` follows whether
``vocab_transform.*`` is stored.

Name correspondences (HF ``transformers/models/distilbert/modeling_distilbert.py``; ``nn.Linear``
stores ``weight`` [out, in], so kernels are transposed; prefix ``distilbert.`` in task models,
none in a bare ``DistilBertModel``):

==============================================  ===============================================
HF                                               lmjax (layer i; scanned: stacked [N, ...])
==============================================  ===============================================
``embeddings.word_embeddings.weight`` [V, E]     ``token_embed/embedding``
``embeddings.position_embeddings.weight`` [P, E] ``position_embed/embedding``
``embeddings.LayerNorm.{weight,bias}``           ``embed_norm/{scale,bias}``
``transformer.layer.i.attention.{q,k,v}_lin``    ``encoder/layers_i/attention/{query,key,value}``
                                                 kernel ``W^T`` -> [E, H, D], bias -> [H, D]
``transformer.layer.i.attention.out_lin``        ``.../attention/out`` kernel [H, D, E]
``transformer.layer.i.sa_layer_norm``            ``.../attention_norm``
``transformer.layer.i.ffn.lin1`` [F, E]          ``.../mlp/wi`` kernel [E, F]
``transformer.layer.i.ffn.lin2`` [E, F]          ``.../mlp/wo`` kernel [F, E]
``transformer.layer.i.output_layer_norm``        ``.../mlp_norm``
``vocab_transform``                              ``mlm_transform``
``vocab_layer_norm``                             ``mlm_norm``
``vocab_projector.bias`` [V]                     ``mlm_bias``
``vocab_projector.weight`` [V, E]                tied: checked equal to the word table
==============================================  ===============================================

HF splits the E output features of q/k/v as (H, D) row-major, so feature ``c`` is head
``c // D``, dim ``c % D``. The ``embeddings.position_ids`` buffer is skipped; any other unused
tensor, a missing one or a shape mismatch raises a ``ValueError`` naming the tensor.
``sinusoidal_pos_embds=True`` checkpoints store their fixed sinusoids as the position table, which
lmjax loads as a learned table (same forward values).

Axis legend: N layers, E embed, H heads, D head dim, F mlp, V vocab, P positions.
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
from lmjax.models import distilbert

# HF activation names (transformers/activations.py ACT2FN) -> lmjax names.
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "relu": "relu"}
_SKIPPED = re.compile(r"(^|\.)embeddings\.position_ids$")
_PREFIX = "distilbert."


def distilbert_config_fields(
    config: Mapping[str, Any], tensor_names: set[str] | None = None
) -> dict[str, Any]:
    """Returns the ``DistilBERTConfig`` fields an HF ``distilbert`` config.json fixes.

    Args:
      config: the parsed config.json.
      tensor_names: the checkpoint's tensor names; when given, ``mlm_head`` follows whether the
        MLM head (``vocab_transform``) is stored.

    Raises:
      ValueError: for another model type or an activation lmjax does not map.
    """
    if config.get("model_type") != "distilbert":
        raise ValueError(
            f"Unsupported Hugging Face model_type {config.get('model_type')!r}; "
            "lmjax.convert.hf_distilbert reads 'distilbert' (use hf_bert for bert / roberta)."
        )
    activation = config.get("activation", "gelu")
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"This distilbert config uses activation {activation!r}, which lmjax does not map "
            f"(supported: {sorted(_ACTIVATIONS)})."
        )
    get = config.get
    fields = dict(
        vocab_size=int(get("vocab_size")),
        max_len=int(get("max_position_embeddings")),
        num_layers=int(get("n_layers")),
        embed_dim=int(get("dim")),
        num_heads=int(get("n_heads")),
        mlp_dim=int(get("hidden_dim")),
        activation=_ACTIVATIONS[activation],
        layer_norm_eps=1e-12,  # hard-coded in modeling_distilbert.py
        hidden_dropout=float(get("dropout", 0.1)),
        attention_dropout=float(get("attention_dropout", 0.1)),
        init_std=float(get("initializer_range", 0.02)),
        pad_token_id=int(get("pad_token_id") or 0),
    )
    if tensor_names is not None:
        fields["mlm_head"] = "vocab_transform.weight" in set(tensor_names)
    return fields


def distilbert_model_config(
    directory: str | os.PathLike, **overrides: Any
) -> ml_collections.ConfigDict:
    """The lmjax model config (``family='distilbert'`` + every field) of an HF directory.

    The 'base' preset supplies unstated fields; ``overrides`` (e.g. ``scan_layers=False``) win.
    """
    fields = distilbert_config_fields(hf_config(directory), set(hf_tensors(directory)))
    fields.update(overrides)
    return models.config_dict("distilbert", "base", **fields)


def _dense(src: CheckpointTensors, name: str, n_in: int, n_out: int) -> dict[str, np.ndarray]:
    """An ``nn.Linear`` (weight [out, in]) as an lmjax kernel [in, out] and bias [out]."""
    return {
        "kernel": src.take(f"{name}.weight", (n_out, n_in)).T,
        "bias": src.take(f"{name}.bias", (n_out,)),
    }


def _layer_params(
    src: CheckpointTensors, p: str, cfg: distilbert.DistilBERTConfig
) -> dict[str, Any]:
    """One transformer layer's lmjax parameters (unscanned shapes) from HF tensors ``{p}.*``."""
    e, h, d, f = cfg.embed_dim, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
    attention = {}
    for ours, theirs in (("query", "q_lin"), ("key", "k_lin"), ("value", "v_lin")):
        linear = _dense(src, f"{p}.attention.{theirs}", e, e)
        attention[ours] = {
            "kernel": linear["kernel"].reshape(e, h, d),  # [E, H, D]
            "bias": linear["bias"].reshape(h, d),  # [H, D]
        }
    out = _dense(src, f"{p}.attention.out_lin", e, e)
    attention["out"] = {"kernel": out["kernel"].reshape(h, d, e), "bias": out["bias"]}  # [H, D, E]
    return {
        "attention": attention,
        "attention_norm": layer_norm_params(src, f"{p}.sa_layer_norm", e),
        "mlp": {
            "wi": _dense(src, f"{p}.ffn.lin1", e, f),  # [E, F]
            "wo": _dense(src, f"{p}.ffn.lin2", f, e),  # [F, E]
        },
        "mlp_norm": layer_norm_params(src, f"{p}.output_layer_norm", e),
    }


def _as_config(model_config) -> distilbert.DistilBERTConfig:
    if isinstance(model_config, distilbert.DistilBERTConfig):
        return model_config
    values = dict(model_config.to_dict() if hasattr(model_config, "to_dict") else model_config)
    values.setdefault("family", "distilbert")
    if values["family"] != "distilbert":
        raise ValueError(f"model_config is for family {values['family']!r}, not 'distilbert'.")
    return models.make_config(values)


def distilbert_params_from_hf(
    directory: str | os.PathLike, model_config=None, *, skip_unexpected: bool = False
) -> dict[str, Any]:
    """Returns lmjax DistilBERT parameters (NumPy arrays) converted from an HF checkpoint.

    Args:
      directory: a Hugging Face ``distilbert`` model directory (safetensors).
      model_config: a ``DistilBERTConfig`` or a ConfigDict / dict of its fields; default
        ``distilbert_model_config(directory)``. Its ``scan_layers`` picks the layout, its
        ``param_dtype`` the storage dtype and ``mlm_head`` whether the head is read.
      skip_unexpected: ignore stored tensors the model does not use (e.g. a classifier head).

    Returns:
      The ``params`` tree, matching ``distilbert.param_shapes(config)`` exactly.

    Raises:
      ValueError: naming the tensor, for missing and unexpected tensors and shape mismatches.
    """
    directory = os.fspath(directory)
    if model_config is None:
        model_config = distilbert_model_config(directory)
    cfg = _as_config(model_config)
    tensors = hf_tensors(directory)
    prefix = _PREFIX if any(n.startswith(_PREFIX) for n in tensors) else ""
    src = CheckpointTensors(tensors, directory, _SKIPPED, "distilbert_model_config")
    e, v = cfg.embed_dim, cfg.vocab_size

    emb = f"{prefix}embeddings"
    token_table = src.take(f"{emb}.word_embeddings.weight", (v, e))  # [V, E]
    params: dict[str, Any] = {
        "token_embed": {"embedding": token_table},
        "position_embed": {
            "embedding": src.take(f"{emb}.position_embeddings.weight", (cfg.max_len, e))
        },
        "embed_norm": layer_norm_params(src, f"{emb}.LayerNorm", e),
    }
    layers = [
        _layer_params(src, f"{prefix}transformer.layer.{i}", cfg) for i in range(cfg.num_layers)
    ]
    if cfg.scan_layers:
        params["encoder"] = {"layers": jax.tree.map(lambda *xs: np.stack(xs), *layers)}  # [N, ...]
    else:
        params["encoder"] = {f"layers_{i}": layer for i, layer in enumerate(layers)}
    if cfg.mlm_head:
        params["mlm_transform"] = _dense(src, "vocab_transform", e, e)
        params["mlm_norm"] = layer_norm_params(src, "vocab_layer_norm", e)
        params["mlm_bias"] = src.take("vocab_projector.bias", (v,))
        if src.has("vocab_projector.weight"):
            stored = src.take("vocab_projector.weight", (v, e))
            if not np.array_equal(stored, token_table):
                raise ValueError(
                    "Tensor 'vocab_projector.weight' differs from the word embeddings, but "
                    "lmjax's DistilBERT ties them; this checkpoint cannot be converted exactly."
                )

    if src.unused() and not skip_unexpected:
        raise ValueError(
            f"The checkpoint in {directory} has tensors this lmjax DistilBERT config does not "
            f"use: {src.unused()}. Pass skip_unexpected=True to ignore them, or set "
            "mlm_head=True."
        )
    param_dtype = np.dtype(jnp.dtype(cfg.param_dtype))
    params = jax.tree.map(lambda x: np.asarray(x, dtype=param_dtype), params)
    check_matches_model(params, distilbert.param_shapes(cfg), "DistilBERT")
    return params


def load_hf_distilbert(
    directory: str | os.PathLike, **overrides: Any
) -> tuple[distilbert.DistilBERT, dict]:
    """Returns ``(model, params)``: the lmjax DistilBERT of an HF directory and its weights.

    Example:
      >>> model, params = load_hf_distilbert('/data/distilbert-base-uncased')
      >>> out = model.apply({'params': params}, ids, attention_mask=mask)
    """
    model_config = distilbert_model_config(directory, **overrides)
    return models.build(model_config), distilbert_params_from_hf(directory, model_config)


__all__ = [
    "distilbert_config_fields",
    "distilbert_model_config",
    "distilbert_params_from_hf",
    "load_hf_distilbert",
]
