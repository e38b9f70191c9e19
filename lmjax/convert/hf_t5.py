"""Hugging Face T5 / T5.1.1 / mT5 checkpoints -> lmjax T5 parameters (``lmjax.models.t5``).

Reads a Hugging Face model directory (``config.json`` + safetensors, single file or sharded) of a
``T5ForConditionalGeneration`` or ``MT5ForConditionalGeneration`` and returns the lmjax config
(``t5_config_from_hf`` / ``t5_model_config``) and the parameter tree (``t5_params_from_hf``) in the
scanned or unscanned layout the config asks for. No PyTorch.

Config (HF ``transformers/models/t5/configuration_t5.py``, ``mt5/configuration_mt5.py``):
``d_model`` -> ``embed_dim``, ``d_kv`` -> ``head_dim``, ``d_ff`` -> ``mlp_dim``, ``num_layers`` /
``num_decoder_layers`` -> the two depths, ``feed_forward_proj`` ('relu' T5 1.0, 'gated-gelu'
T5.1.1 / mT5, whose activation HF sets to 'gelu_new', the tanh GELU) -> ``activation``,
``relative_attention_num_buckets`` / ``relative_attention_max_distance``, ``layer_norm_epsilon``,
``dropout_rate``, ``pad_token_id``, ``eos_token_id``, ``decoder_start_token_id`` (default: the
pad id, as T5 does).

The output layer. T5 1.0 ties it to ``shared`` and scales the decoder output by
``d_model**-0.5``; T5.1.1 and mT5 checkpoints store a separate ``lm_head.weight`` and do not
scale. Which one a directory holds:

- the logits are scaled if config.json says ``scale_decoder_outputs`` (transformers >= 5), else,
  for ``t5``, unless ``tie_word_embeddings`` is false; ``mt5`` never scales (transformers 5
  ``MT5ForConditionalGeneration``; released mT5 checkpoints are untied);
- scaled -> ``tie_embeddings=True`` (a stored ``lm_head.weight`` must equal ``shared.weight``);
- unscaled -> ``tie_embeddings=False`` with ``lm_head`` = the stored ``lm_head.weight``, or a copy
  of ``shared.weight`` when none is stored (transformers 5 always ties the head and writes only
  ``shared.weight``: the copy reproduces its outputs exactly).

Name correspondences (``modeling_t5.py``: ``T5Stack``, ``T5Block``, ``T5Attention``; ``nn.Linear``
stores ``weight`` [out, in], so kernels are transposed; q/k/v split their H*D outputs as (H, D)
row-major; stack s in {encoder, decoder}, layer i; scanned: stacked [N, ...]):

=====================================================  ========================================
HF                                                      lmjax
=====================================================  ========================================
``shared.weight`` [V, E]                                ``token_embed/embedding``
``{s}.embed_tokens.weight``                             tied copy of ``shared``, checked equal
``{s}.block.0.layer.0.SelfAttention.``                  ``{s}_relative_bias/embedding`` [NB, H]
``relative_attention_bias.weight`` [NB, H]
``{s}.block.i.layer.0.layer_norm.weight``               ``{s}/layers_i/attention_norm/scale``
``{s}.block.i.layer.0.SelfAttention.{q,k,v}.weight``    ``.../attention/{query,key,value}/kernel``
  [H*D, E]                                                [E, H, D]
``{s}.block.i.layer.0.SelfAttention.o.weight``          ``.../attention/out/kernel`` [H, D, E]
``decoder.block.i.layer.1.layer_norm.weight``           ``decoder/layers_i/cross_attention_norm``
``decoder.block.i.layer.1.EncDecAttention.{q,k,v,o}``   ``decoder/layers_i/cross_attention/...``
``{s}.block.i.layer.-1.layer_norm.weight``              ``.../mlp_norm/scale``
``{s}.block.i.layer.-1.DenseReluDense.wi`` [F, E]       ``.../mlp/wi/kernel`` [E, F]
  (gated: ``wi_0`` / ``wi_1``)                            (``mlp/wi_0``, ``mlp/wi_1``)
``{s}.block.i.layer.-1.DenseReluDense.wo`` [E, F]       ``.../mlp/wo/kernel`` [F, E]
``{s}.final_layer_norm.weight``                         ``{s}_norm/scale``
``lm_head.weight`` [V, E]                               ``lm_head/kernel`` [E, V] (untied)
=====================================================  ========================================

``layer.-1`` is ``layer.1`` in the encoder and ``layer.2`` in the decoder. A stray
``decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight`` (old checkpoints; HF
ignores it) is skipped; any other unused tensor, a missing one or a shape mismatch raises a
``ValueError`` naming the tensor.

Axis legend: N layers, E embed, H heads, D head dim, F mlp, V vocab, NB buckets.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from lmjax import models
from lmjax.convert import safetensors_checkpoint as ckpt
from lmjax.models import t5

_PRESETS = {"t5": "t5_small", "mt5": "mt5_small"}
_SKIPPED = re.compile(r"^decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.")
# HF feed_forward_proj -> lmjax activation ('gated-gelu' is HF's special case for gelu_new).
FEED_FORWARD_PROJ = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "silu": "silu",
    "gated-gelu": "gated_gelu",
    "gated-gelu_new": "gated_gelu",
    "gated-silu": "gated_silu",
}
_HEAD = "lm_head.weight"


def _model_type(config: Mapping[str, Any]) -> str:
    model_type = config.get("model_type")
    if model_type not in _PRESETS:
        raise ValueError(
            f"Unsupported Hugging Face model_type {model_type!r}; lmjax.convert.hf_t5 reads "
            f"{sorted(_PRESETS)} (T5ForConditionalGeneration / MT5ForConditionalGeneration)."
        )
    return model_type


def scales_logits(config: Mapping[str, Any]) -> bool:
    """Whether the HF model multiplies the decoder output by ``d_model**-0.5`` before its head
    (see the module docstring)."""
    if "scale_decoder_outputs" in config:
        return bool(config["scale_decoder_outputs"])
    if _model_type(config) == "mt5":
        return False
    return config.get("tie_word_embeddings", True) is not False


def _token_id(config: Mapping[str, Any], key: str, default: int) -> int:
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ValueError(f"config.json {key}={value}: lmjax's T5 takes a single id.")
        value = value[0]
    return int(value)


def t5_config_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """Returns the ``T5Config`` fields an HF ``t5`` / ``mt5`` config.json fixes.

    Raises:
      ValueError: for an unsupported model type or ``feed_forward_proj``, or a config that is
        not an encoder-decoder.
    """
    _model_type(config)
    projection = config.get("feed_forward_proj", "relu")
    if projection not in FEED_FORWARD_PROJ:
        raise ValueError(
            f"feed_forward_proj={projection!r} is not supported by lmjax's T5; use one of "
            f"{sorted(FEED_FORWARD_PROJ)}."
        )
    if config.get("is_encoder_decoder", True) is False or config.get("is_decoder", False):
        raise ValueError(
            "This config is not an encoder-decoder (is_encoder_decoder=False or is_decoder=True); "
            "lmjax.convert.hf_t5 reads T5ForConditionalGeneration / "
            "MT5ForConditionalGeneration checkpoints."
        )
    missing = [k for k in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads")
               if k not in config]
    if missing:
        raise ValueError(f"config.json lacks {missing}; it is not a complete T5 config.")
    pad_id = _token_id(config, "pad_token_id", 0)
    num_layers = int(config["num_layers"])
    return dict(
        vocab_size=int(config["vocab_size"]),
        embed_dim=int(config["d_model"]),
        num_heads=int(config["num_heads"]),
        head_dim=int(config["d_kv"]),
        mlp_dim=int(config["d_ff"]),
        num_encoder_layers=num_layers,
        num_decoder_layers=int(config.get("num_decoder_layers") or num_layers),
        activation=FEED_FORWARD_PROJ[projection],
        tie_embeddings=scales_logits(config),
        dropout_rate=float(config.get("dropout_rate", 0.1)),
        relative_buckets=int(config.get("relative_attention_num_buckets", 32)),
        relative_max_distance=int(config.get("relative_attention_max_distance", 128)),
        norm_eps=float(config.get("layer_norm_epsilon", 1e-6)),
        pad_id=pad_id,
        eos_id=_token_id(config, "eos_token_id", 1),
        decoder_start_id=_token_id(config, "decoder_start_token_id", pad_id),
    )


def t5_model_config(directory: str | os.PathLike, **overrides: Any) -> ml_collections.ConfigDict:
    """Returns the lmjax model config (``family='t5'`` + every T5Config field) of a directory.

    ``overrides`` (e.g. ``scan_layers=False``, ``dtype='bfloat16'``, ``dropout_rate=0.0``) win.
    """
    config = ckpt.hf_config(directory)
    fields = t5_config_fields(config)
    fields.update(overrides)
    return models.config_dict("t5", _PRESETS[_model_type(config)], **fields)


def t5_config_from_hf(directory: str | os.PathLike, **overrides: Any) -> t5.T5Config:
    """Returns the ``T5Config`` dataclass of an HF directory (see ``t5_model_config``)."""
    return models.make_config(t5_model_config(directory, **overrides))


def _as_config(model_config: Any) -> t5.T5Config:
    if isinstance(model_config, t5.T5Config):
        return model_config
    return ckpt.family_config(model_config, "t5", t5.T5Config)


def _kernel(src: ckpt.CheckpointTensors, name: str, n_in: int, n_out: int) -> np.ndarray:
    """An ``nn.Linear`` without bias (``weight`` [out, in]) as a kernel [in, out]."""
    return src.take(f"{name}.weight", (n_out, n_in)).T


def _attention_params(
    src: ckpt.CheckpointTensors, prefix: str, cfg: t5.T5Config
) -> dict[str, Any]:
    """``{prefix}.{q,k,v,o}`` -> query/key/value kernels [E, H, D] and the out kernel [H, D, E]."""
    e, h, d = cfg.embed_dim, cfg.num_heads, cfg.head_dim
    params = {
        ours: {"kernel": _kernel(src, f"{prefix}.{theirs}", e, h * d).reshape(e, h, d)}
        for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v"))
    }
    params["out"] = {"kernel": _kernel(src, f"{prefix}.o", h * d, e).reshape(h, d, e)}
    return params


def _mlp_params(src: ckpt.CheckpointTensors, prefix: str, cfg: t5.T5Config) -> dict[str, Any]:
    e, f = cfg.embed_dim, cfg.mlp_dim
    inputs = ("wi_0", "wi_1") if cfg.activation.startswith("gated_") else ("wi",)
    params = {name: {"kernel": _kernel(src, f"{prefix}.{name}", e, f)} for name in inputs}
    params["wo"] = {"kernel": _kernel(src, f"{prefix}.wo", f, e)}  # [F, E]
    return params


def _norm(src: ckpt.CheckpointTensors, name: str, width: int) -> dict[str, np.ndarray]:
    return {"scale": src.take(f"{name}.weight", (width,))}


def _layer_params(
    src: ckpt.CheckpointTensors, stack: str, i: int, cfg: t5.T5Config
) -> dict[str, Any]:
    """One ``T5Block`` of ``stack`` ('encoder' / 'decoder') as an lmjax TransformerBlock tree."""
    e, block = cfg.embed_dim, f"{stack}.block.{i}.layer"
    params = {
        "attention_norm": _norm(src, f"{block}.0.layer_norm", e),
        "attention": _attention_params(src, f"{block}.0.SelfAttention", cfg),
    }
    ff = 1
    if stack == "decoder":
        params["cross_attention_norm"] = _norm(src, f"{block}.1.layer_norm", e)
        params["cross_attention"] = _attention_params(src, f"{block}.1.EncDecAttention", cfg)
        ff = 2
    params["mlp_norm"] = _norm(src, f"{block}.{ff}.layer_norm", e)
    params["mlp"] = _mlp_params(src, f"{block}.{ff}.DenseReluDense", cfg)
    return params


def t5_params_from_hf(
    directory: str | os.PathLike, model_config: Any = None, *, skip_unexpected: bool = False
) -> dict[str, Any]:
    """Returns lmjax T5 parameters (NumPy arrays) converted from an HF T5 / mT5 checkpoint.

    Args:
      directory: a Hugging Face ``t5`` / ``mt5`` model directory (safetensors).
      model_config: a ``T5Config`` or a ConfigDict / dict of its fields; default
        ``t5_model_config(directory)``. Its ``scan_layers`` picks the layout, its
        ``param_dtype`` the storage dtype, its ``tie_embeddings`` whether ``lm_head`` is read.
      skip_unexpected: ignore stored tensors the model does not use.

    Returns:
      The ``params`` tree for ``model.apply({'params': tree}, ...)``, matching
      ``lmjax.models.t5.param_shapes(config)`` in structure, shapes and dtype.

    Raises:
      ValueError: naming the tensor, for missing and unexpected tensors and shape mismatches,
        and for a scaled (tied) config whose stored ``lm_head.weight`` differs from the table.
    """
    directory = os.fspath(directory)
    hf = ckpt.hf_config(directory)
    _model_type(hf)
    cfg = _as_config(t5_model_config(directory) if model_config is None else model_config)
    src = ckpt.CheckpointTensors(ckpt.hf_tensors(directory), directory, _SKIPPED,
                                 "t5_model_config")
    v, e, h, nb = cfg.vocab_size, cfg.embed_dim, cfg.num_heads, cfg.relative_buckets

    table = src.take("shared.weight", (v, e))
    params: dict[str, Any] = {"token_embed": {"embedding": table}}
    for stack, depth in (("encoder", cfg.num_encoder_layers), ("decoder", cfg.num_decoder_layers)):
        ckpt.tied_copy_check(src, f"{stack}.embed_tokens.weight", table, "shared.weight", "T5")
        bias = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        params[f"{stack}_relative_bias"] = {"embedding": src.take(bias, (nb, h))}  # [NB, H]
        layers = [_layer_params(src, stack, i, cfg) for i in range(depth)]
        params[stack] = ckpt.layer_stack(layers, cfg.scan_layers)
        params[f"{stack}_norm"] = _norm(src, f"{stack}.final_layer_norm", e)
    if cfg.tie_embeddings:
        ckpt.tied_copy_check(src, _HEAD, table, "shared.weight (a tied, scaled T5 head)", "T5")
    else:
        head = src.take(_HEAD, (v, e)) if src.has(_HEAD) else table
        params["lm_head"] = {"kernel": np.array(head).T}  # [E, V], a copy when untied
    return ckpt.finished_params(
        src, params, cfg, t5.param_shapes(cfg), "T5", skip_unexpected,
        user="this lmjax T5 config",
    )


def import_hf_t5(directory: str | os.PathLike, **overrides: Any) -> tuple[t5.T5Config, dict]:
    """Returns ``(T5Config, params)`` of an HF T5 / mT5 directory (``overrides`` as in
    ``t5_model_config``).

    Example:
      >>> config, params = import_hf_t5('/data/t5-v1_1-small', scan_layers=False)
      >>> out = t5.T5(config).apply({'params': params}, enc_ids, dec_ids,
      ...                          encoder_segment_ids=attention_mask)
    """
    config = t5_config_from_hf(directory, **overrides)
    return config, t5_params_from_hf(directory, config)


def load_hf_t5(directory: str | os.PathLike, **overrides: Any) -> tuple[t5.T5, dict]:
    """Returns ``(model, params)``: the lmjax T5 described by an HF directory and its weights."""
    config, params = import_hf_t5(directory, **overrides)
    return t5.T5(config), params


__all__ = [
    "FEED_FORWARD_PROJ",
    "import_hf_t5",
    "load_hf_t5",
    "scales_logits",
    "t5_config_fields",
    "t5_config_from_hf",
    "t5_model_config",
    "t5_params_from_hf",
]
