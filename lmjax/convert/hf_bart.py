"""Hugging Face BART checkpoints -> lmjax BART config and parameters (``lmjax.models.bart``).

Reads a Hugging Face model directory (``config.json`` + safetensors, single file or sharded) of a
``BartForConditionalGeneration`` (tensors prefixed ``model.``, plus ``final_logits_bias`` [1, V])
or a bare ``BartModel`` (no prefix, no LM head: the lmjax logits then use the tied token table and
a zero ``final_logits_bias``) and returns ``(BartConfig, params)``. No PyTorch.

Name correspondences (HF ``transformers/models/bart/modeling_bart.py``; ``nn.Linear`` stores
``weight`` [out, in], so kernels are transposed; ``s`` = ``encoder`` or ``decoder``):

==============================================  ===============================================
HF                                               lmjax (layer i; scanned: stacked [N, ...])
==============================================  ===============================================
``shared.weight`` [V, E]                         ``token_embed/embedding``
``final_logits_bias`` [1, V]                     ``final_logits_bias`` [V] (zeros if absent)
``s.embed_positions.weight`` [P + 2, E]          ``s_embed/position_embed/embedding``
``s.layernorm_embedding.{weight,bias}``          ``s_embed/embed_norm/{scale,bias}``
``s.layers.i.self_attn.{q,k,v}_proj``            ``s/layers_i/attention/{query,key,value}``
                                                 kernel ``W^T`` -> [E, H, D], bias -> [H, D]
``s.layers.i.self_attn.out_proj``                ``s/layers_i/attention/out`` kernel [H, D, E]
``s.layers.i.self_attn_layer_norm``              ``s/layers_i/attention_norm``
``decoder.layers.i.encoder_attn.*``              ``decoder/layers_i/cross_attention/*``
``decoder.layers.i.encoder_attn_layer_norm``     ``decoder/layers_i/cross_attention_norm``
``s.layers.i.fc1`` [F, E] / ``fc2`` [E, F]       ``s/layers_i/mlp/wi`` [E, F] / ``mlp/wo`` [F, E]
``s.layers.i.final_layer_norm``                  ``s/layers_i/mlp_norm``
``{encoder,decoder}.embed_tokens.weight``,       tied copies of ``shared.weight``: checked equal
``lm_head.weight``                               when stored (older hub files store them)
==============================================  ===============================================

Heads: HF splits the E output features of q/k/v as (H, D) row-major, so feature ``c`` is head
``c // D``, dim ``c % D``. fairseq's ``encoder.version`` / ``decoder.version`` buffers are
skipped; any other unused tensor, a missing one or a shape mismatch raises a ``ValueError``
naming the tensor.

Unsupported configurations raise: ``model_type`` other than ``'bart'`` (mBART, PLBart, ...),
``normalize_before`` or ``add_final_layer_norm`` True (mBART's pre-LN layout with final
LayerNorms), ``normalize_embedding`` False, ``static_position_embeddings`` True,
``add_bias_logits`` True, different encoder / decoder head counts or FFN widths, and
activations outside ``HF_ACTIVATIONS``. LayerDrop (``encoder_layerdrop`` / ``decoder_layerdrop``)
is a training-time option lmjax does not implement; its value is ignored.

Axis legend: N layers, E embed, H heads, D head dim, F mlp, V vocab, P positions.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from lmjax.convert import safetensors_checkpoint as ckpt
from lmjax.models import bart

_SKIPPED = re.compile(r"(^|\.)(encoder|decoder)\.version$")
_PREFIX = "model."
_LAYER_NAMES = ckpt.PostLNLayerNames(
    query="self_attn.q_proj",
    key="self_attn.k_proj",
    value="self_attn.v_proj",
    out="self_attn.out_proj",
    attention_norm="self_attn_layer_norm",
    mlp_in="fc1",
    mlp_out="fc2",
    mlp_norm="final_layer_norm",
)
# config.json flags of the fairseq-derived BART family whose non-default value lmjax lacks.
_UNSUPPORTED_FLAGS = {
    "normalize_before": (False, "pre-LN layers (mBART)"),
    "add_final_layer_norm": (False, "final LayerNorms after the stacks (mBART)"),
    "normalize_embedding": (True, "no layernorm_embedding"),
    "static_position_embeddings": (False, "sinusoidal positions"),
    "add_bias_logits": (False, "a separate logits bias"),
}


def bart_config_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """Returns the ``BartConfig`` fields an HF ``bart`` config.json fixes.

    Args:
      config: the parsed config.json (HF ``BartConfig``, ``configuration_bart.py``).

    Raises:
      ValueError: for another model type and for what lmjax's BART does not implement (see the
        module docstring), naming every problem at once.
    """
    model_type = config.get("model_type")
    if model_type != "bart":
        raise ValueError(
            f"Unsupported Hugging Face model_type {model_type!r}; lmjax.convert.hf_bart reads "
            "'bart' only (mBART / PLBart / Marian use pre-LN layers or other positions)."
        )
    get = lambda key, default=None: config.get(key, default)  # noqa: E731
    problems = []
    for key, (supported, meaning) in _UNSUPPORTED_FLAGS.items():
        if key in config and bool(config[key]) != supported:
            problems.append(f"{key}={config[key]!r} ({meaning})")
    for enc, dec in (
        ("encoder_attention_heads", "decoder_attention_heads"),
        ("encoder_ffn_dim", "decoder_ffn_dim"),
    ):
        if get(enc) != get(dec):
            problems.append(f"{enc}={get(enc)} != {dec}={get(dec)} (lmjax BART shares them)")
    activation = get("activation_function", "gelu")
    if activation not in ckpt.HF_ACTIVATIONS:
        problems.append(
            f"activation_function {activation!r} (supported: {sorted(ckpt.HF_ACTIVATIONS)})"
        )
    if problems:
        raise ValueError(
            "This bart config uses what lmjax's BART does not implement: "
            + "; ".join(problems)
            + "."
        )
    large = bart.PRESETS["bart_large"]
    return dict(
        vocab_size=int(get("vocab_size", large.vocab_size)),
        max_positions=int(get("max_position_embeddings", large.max_positions)),
        embed_dim=int(get("d_model", large.embed_dim)),
        encoder_layers=int(get("encoder_layers", large.encoder_layers)),
        decoder_layers=int(get("decoder_layers", large.decoder_layers)),
        num_heads=int(get("encoder_attention_heads", large.num_heads)),
        mlp_dim=int(get("encoder_ffn_dim", large.mlp_dim)),
        activation=ckpt.HF_ACTIVATIONS[activation],
        scale_embedding=bool(get("scale_embedding", False)),
        dropout=float(get("dropout", large.dropout)),
        attention_dropout=float(get("attention_dropout", large.attention_dropout)),
        activation_dropout=float(get("activation_dropout", large.activation_dropout)),
        init_std=float(get("init_std", large.init_std)),
        pad_id=int(_token(get("pad_token_id"), large.pad_id)),
        bos_id=int(_token(get("bos_token_id"), large.bos_id)),
        eos_id=int(_token(get("eos_token_id"), large.eos_id)),
        decoder_start_id=int(_token(get("decoder_start_token_id"), large.decoder_start_id)),
    )


def _token(value: Any, default: int) -> int:
    """A config.json token id (None -> ``default``; a list, as some eos ids are -> its first)."""
    if value is None:
        return default
    if isinstance(value, (list, tuple)):
        return int(value[0])
    return int(value)


def bart_config_from_hf(directory: str | os.PathLike, **overrides: Any) -> bart.BartConfig:
    """Returns the ``BartConfig`` of an HF directory; ``overrides`` (e.g. ``scan_layers=False``,
    ``dtype='bfloat16'``, ``dropout=0.0``) win over the file."""
    fields = bart_config_fields(ckpt.hf_config(directory))
    fields.update(overrides)
    return bart.BartConfig(**fields)


def _attention_params(
    src: ckpt.CheckpointTensors, prefix: str, embed_dim: int, num_heads: int
) -> dict[str, Any]:
    """One ``BartAttention`` (``{prefix}.{q,k,v,out}_proj``) as lmjax attention parameters."""
    e, h = embed_dim, num_heads
    d = e // h
    params = {}
    for ours, theirs in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
        linear = ckpt.dense_params(src, f"{prefix}.{theirs}", e, e)
        params[ours] = {
            "kernel": linear["kernel"].reshape(e, h, d),  # [E, H, D]
            "bias": linear["bias"].reshape(h, d),  # [H, D]
        }
    out = ckpt.dense_params(src, f"{prefix}.out_proj", e, e)
    params["out"] = {"kernel": out["kernel"].reshape(h, d, e), "bias": out["bias"]}  # [H, D, E]
    return params


def _stack_params(
    src: ckpt.CheckpointTensors, prefix: str, cfg: bart.BartConfig, decoder: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``({position_embed, embed_norm}, stack parameters)`` of ``{prefix}`` (encoder / decoder)."""
    e = cfg.embed_dim
    embed = {
        "position_embed": {
            "embedding": src.take(
                f"{prefix}.embed_positions.weight", (cfg.max_positions + bart.POSITION_OFFSET, e)
            )
        },
        "embed_norm": ckpt.layer_norm_params(src, f"{prefix}.layernorm_embedding", e),
    }
    layers = []
    for i in range(cfg.decoder_layers if decoder else cfg.encoder_layers):
        layer_prefix = f"{prefix}.layers.{i}"
        layer = ckpt.post_ln_layer_params(
            src, layer_prefix, _LAYER_NAMES, e, cfg.num_heads, cfg.mlp_dim
        )
        if decoder:
            layer["cross_attention"] = _attention_params(
                src, f"{layer_prefix}.encoder_attn", e, cfg.num_heads
            )
            layer["cross_attention_norm"] = ckpt.layer_norm_params(
                src, f"{layer_prefix}.encoder_attn_layer_norm", e
            )
        layers.append(layer)
    return embed, ckpt.layer_stack(layers, cfg.scan_layers)


def bart_params_from_hf(
    directory: str | os.PathLike,
    config: bart.BartConfig | None = None,
    *,
    skip_unexpected: bool = False,
) -> dict[str, Any]:
    """Returns lmjax BART parameters (NumPy arrays) converted from an HF BART checkpoint.

    Args:
      directory: an HF ``BartForConditionalGeneration`` or ``BartModel`` directory (safetensors).
      config: the ``BartConfig`` to convert for (default ``bart_config_from_hf(directory)``);
        its ``scan_layers`` picks the layout and its ``param_dtype`` the storage dtype.
      skip_unexpected: ignore stored tensors BART does not use (e.g. a classification head).

    Returns:
      The ``params`` tree for ``BART(config).apply({'params': tree}, ...)``, matching
      ``lmjax.models.bart.param_shapes(config)`` in structure, shapes and dtype.

    Raises:
      ValueError: naming the tensor, for missing and unexpected tensors, shape mismatches and
        tied copies that differ from ``shared.weight``.
    """
    directory = os.fspath(directory)
    cfg = bart_config_from_hf(directory) if config is None else config
    tensors = ckpt.hf_tensors(directory)
    prefix = ckpt.encoder_prefix(set(tensors), _PREFIX)
    src = ckpt.CheckpointTensors(tensors, directory, _SKIPPED, "bart_config_from_hf")
    v, e = cfg.vocab_size, cfg.embed_dim

    # The shared table; checkpoints saved with untied copies only may lack shared.weight.
    table_name = f"{prefix}shared.weight"
    if not src.has(table_name) and src.has(f"{prefix}encoder.embed_tokens.weight"):
        table_name = f"{prefix}encoder.embed_tokens.weight"
    table = src.take(table_name, (v, e))
    for copy in (
        f"{prefix}encoder.embed_tokens.weight",
        f"{prefix}decoder.embed_tokens.weight",
        "lm_head.weight",
    ):
        ckpt.tied_copy_check(src, copy, table, "the shared token embeddings", "BART")
    if src.has("final_logits_bias"):
        final_bias = src.take("final_logits_bias", (1, v))[0]  # [V]
    else:
        final_bias = np.zeros((v,), np.float32)  # BartModel: no LM head

    params: dict[str, Any] = {"token_embed": {"embedding": table}, "final_logits_bias": final_bias}
    for stack, decoder in (("encoder", False), ("decoder", True)):
        embed, layers = _stack_params(src, f"{prefix}{stack}", cfg, decoder)
        params[f"{stack}_embed"] = embed
        params[stack] = layers
    return ckpt.finished_params(
        src, params, cfg, bart.param_shapes(cfg), "BART", skip_unexpected,
        user="lmjax BART",
    )


def load_hf_bart(
    directory: str | os.PathLike, *, skip_unexpected: bool = False, **overrides: Any
) -> tuple[bart.BartConfig, dict[str, Any]]:
    """Returns ``(config, params)``: the ``BartConfig`` of an HF directory and its weights.

    Example:
      >>> config, params = load_hf_bart('/data/bart-base', dropout=0.0)
      >>> out = bart.BART(config).apply({'params': params}, enc_ids, dec_ids,
      ...                               encoder_segment_ids=attention_mask)
    """
    config = bart_config_from_hf(directory, **overrides)
    params = bart_params_from_hf(directory, config, skip_unexpected=skip_unexpected)
    return config, params


__all__ = [
    "bart_config_fields",
    "bart_config_from_hf",
    "bart_params_from_hf",
    "load_hf_bart",
]
