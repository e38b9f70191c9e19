"""Hugging Face GPT-2 (``gpt2``) and GPT-1 (``openai-gpt``) checkpoints -> lmjax GPT parameters.

Reads a Hugging Face model directory (``config.json`` + safetensors, single file or sharded) and
returns (a) the lmjax model config (``lmjax_model_config``) and (b) the parameter tree of
``lmjax.models.gpt.GPT`` in the scanned or unscanned layout that config asks for
(``gpt_params_from_hf``). No PyTorch is needed.

Name and shape correspondences (HF ``transformers/models/gpt2/modeling_gpt2.py`` and
``transformers/models/openai/modeling_openai.py``; HF ``Conv1D`` stores weights [in, out], as
lmjax kernels are, so no transposes):

==========================================  ==============================================
HF (GPT-2 / openai-gpt)                      lmjax (per layer i; scanned: stacked [N, ...])
==========================================  ==============================================
``wte`` / ``tokens_embed.weight`` [V, E]     ``token_embed/embedding``
``wpe`` / ``positions_embed.weight`` [P, E]  ``position_embed/embedding``
``h.i.ln_1.{weight,bias}`` [E]               ``decoder/layers_i/attention_norm/{scale,bias}``
``h.i.attn.c_attn.weight`` [E, 3E]           columns split q | k | v, each [E, E] -> [E, H, D]
                                             ``.../attention/{query,key,value}/kernel``
``h.i.attn.c_attn.bias`` [3E]                split, each -> [H, D] ``.../{query,key,value}/bias``
``h.i.attn.c_proj.{weight [E, E], bias}``    ``.../attention/out/{kernel [H, D, E], bias}``
``h.i.ln_2.{weight,bias}``                   ``.../mlp_norm/{scale,bias}``
``h.i.mlp.c_fc.{weight [E, F], bias}``       ``.../mlp/wi/{kernel,bias}``
``h.i.mlp.c_proj.{weight [F, E], bias}``     ``.../mlp/wo/{kernel,bias}``
``ln_f.{weight,bias}`` (GPT-2 only)          ``final_norm/{scale,bias}``
``lm_head.weight``                           tied to the token table (checked equal if stored)
==========================================  ==============================================

Heads: HF reshapes the E columns of q/k/v as (H, D) row-major (``view(..., -1, head_dim)``), so
column ``c`` is head ``c // D``, dimension ``c % D``: a plain reshape. GPT-1's ``ln_1`` / ``ln_2``
are applied after the residual sums (post-LN, ``Block.forward``: ``n = ln_1(x + a)``), which is
what lmjax's ``attention_norm`` / ``mlp_norm`` mean when ``norm='post'``.

Names are accepted with or without the ``transformer.`` prefix (``*LMHeadModel`` vs bare
``*Model`` / older hub files). The causal-mask buffers older checkpoints stored
(``h.i.attn.bias``, ``h.i.attn.masked_bias``) are skipped. Any other unused tensor, any missing one
and any shape mismatch raise a ``ValueError`` naming the tensor.

GPT-1 vocabulary: HF ``openai-gpt`` has 40478 rows; the original fine-tuning code
(``openai/finetune-transformer-lm:train.py``) appends ``_start_``, ``_delimiter_``, ``_classify_``.
``added_token_rows=3`` appends that many rows drawn N(0, init_std) (as the reference initialises
them), giving ``vocab_size = 40478 + 3 = gpt.GPT1_VOCAB_WITH_SPECIALS``.

Axis legend: N layers, E embed, H heads, D head dim, F mlp, V vocab, P positions.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from lmjax import models
from lmjax.convert.safetensors_checkpoint import (
    CheckpointTensors,
    family_config,
    finished_params,
    hf_config,
    hf_tensors,
    layer_norm_params,
    layer_stack,
    stripped_prefix,
)
from lmjax.models import gpt

# HF activation names -> lmjax names (transformers/activations.py ACT2FN; openai-gpt's own
# ACT_FNS maps 'gelu' to gelu_new, the tanh approximation).
_GPT2_ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
    "linear": "linear",
}
_OPENAI_GPT_ACTIVATIONS = {"gelu": "gelu_tanh", "relu": "relu", "silu": "silu", "swish": "silu"}

# Per model type: the token / position table names, the final norm (None = none), the lmjax
# preset that supplies the fields HF configs do not carry, and the norm placement.
_LAYOUTS = {
    "gpt2": dict(
        token="wte.weight", position="wpe.weight", final_norm="ln_f", preset="gpt2", norm="pre"
    ),
    "openai-gpt": dict(
        token="tokens_embed.weight",
        position="positions_embed.weight",
        final_norm=None,
        preset="gpt1",
        norm="post",
    ),
}
# Non-parameter buffers some checkpoints carry.
_SKIPPED = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$|^position_ids$")


def _model_type(config: Mapping[str, Any]) -> str:
    model_type = config.get("model_type")
    if model_type not in _LAYOUTS:
        raise ValueError(
            f"Unsupported Hugging Face model_type {model_type!r}; lmjax.convert.hf_gpt reads "
            f"{sorted(_LAYOUTS)}."
        )
    return model_type


def gpt_config_fields(
    config: Mapping[str, Any], *, added_token_rows: int = 0
) -> dict[str, Any]:
    """Returns the ``GPTConfig`` fields that an HF ``gpt2`` / ``openai-gpt`` config.json fixes.

    Fields the HF config does not describe (``scan_layers``, ``remat``, dtypes,
    ``position_init_std``, ...) are left out, so the caller's preset keeps them.

    Args:
      config: the parsed config.json.
      added_token_rows: rows appended to the token table (GPT-1 special tokens).

    Raises:
      ValueError: for architectures lmjax's GPT does not implement (cross-attention, unscaled or
        layer-scaled attention, untied output embedding, unknown activation).
    """
    model_type = _model_type(config)
    get = config.get
    problems = []
    if model_type == "gpt2":
        activations, activation = _GPT2_ACTIVATIONS, get("activation_function", "gelu_new")
        if get("add_cross_attention", False):
            problems.append("add_cross_attention=True (GPT-2 as a seq2seq decoder)")
        if not get("scale_attn_weights", True):
            problems.append("scale_attn_weights=False")
        if get("scale_attn_by_inverse_layer_idx", False):
            problems.append("scale_attn_by_inverse_layer_idx=True")
        inner = get("n_inner")
    else:
        activations, activation = _OPENAI_GPT_ACTIVATIONS, get("afn", "gelu")
        inner = None
    if activation not in activations:
        problems.append(f"activation {activation!r} (supported: {sorted(activations)})")
    if not get("tie_word_embeddings", True):
        problems.append("tie_word_embeddings=False (lmjax GPT ties the output to the token table)")
    if problems:
        raise ValueError(
            f"This {model_type} config uses what lmjax's GPT does not implement: "
            + "; ".join(problems)
            + "."
        )
    embed_dim = int(get("n_embd"))
    return dict(
        vocab_size=int(get("vocab_size")) + int(added_token_rows),
        max_len=int(get("n_positions", get("n_ctx"))),
        num_layers=int(get("n_layer")),
        embed_dim=embed_dim,
        num_heads=int(get("n_head")),
        mlp_dim=int(inner) if inner else 4 * embed_dim,
        norm=_LAYOUTS[model_type]["norm"],
        final_norm=_LAYOUTS[model_type]["final_norm"] is not None,
        activation=activations[activation],
        layer_norm_eps=float(get("layer_norm_epsilon", 1e-5)),
        embed_dropout=float(get("embd_pdrop", 0.1)),
        attention_dropout=float(get("attn_pdrop", 0.1)),
        residual_dropout=float(get("resid_pdrop", 0.1)),
        init_std=float(get("initializer_range", 0.02)),
    )


def lmjax_model_config(
    directory: str | os.PathLike, *, added_token_rows: int = 0, **overrides: Any
) -> ml_collections.ConfigDict:
    """Returns the lmjax model config (``family='gpt'`` + every GPTConfig field) of an HF directory.

    The 'gpt2' preset supplies the fields config.json lacks for ``gpt2`` checkpoints, 'gpt1' for
    ``openai-gpt``; ``overrides`` (e.g. ``scan_layers=False``, ``dtype='bfloat16'``) win over both.

    Args:
      directory: a Hugging Face model directory (or hub snapshot) on disk.
      added_token_rows: rows appended to the token table (3 for GPT-1's special tokens).
      **overrides: GPTConfig fields to set.

    Returns:
      A locked ``ml_collections.ConfigDict`` for ``lmjax.models.build``.
    """
    config = hf_config(directory)
    fields = gpt_config_fields(config, added_token_rows=added_token_rows)
    fields.update(overrides)
    return models.config_dict("gpt", _LAYOUTS[_model_type(config)]["preset"], **fields)


def _layer_params(src: CheckpointTensors, i: int, cfg: gpt.GPTConfig) -> dict[str, Any]:
    """Returns one block's lmjax parameters (unscanned shapes) from HF tensors ``h.{i}.*``."""
    e, h, d, f = cfg.embed_dim, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
    p = f"h.{i}"
    qkv_kernel = src.take(f"{p}.attn.c_attn.weight", (e, 3 * e))  # [E, 3E]
    qkv_bias = src.take(f"{p}.attn.c_attn.bias", (3 * e,))  # [3E]
    attention = {
        name: {"kernel": kernel.reshape(e, h, d), "bias": bias.reshape(h, d)}  # [E, H, D], [H, D]
        for name, kernel, bias in zip(
            ("query", "key", "value"),
            np.split(qkv_kernel, 3, axis=1),
            np.split(qkv_bias, 3),
        )
    }
    attention["out"] = {
        "kernel": src.take(f"{p}.attn.c_proj.weight", (e, e)).reshape(h, d, e),  # [H, D, E]
        "bias": src.take(f"{p}.attn.c_proj.bias", (e,)),
    }
    mlp = {
        "wi": {
            "kernel": src.take(f"{p}.mlp.c_fc.weight", (e, f)),  # [E, F]
            "bias": src.take(f"{p}.mlp.c_fc.bias", (f,)),
        },
        "wo": {
            "kernel": src.take(f"{p}.mlp.c_proj.weight", (f, e)),  # [F, E]
            "bias": src.take(f"{p}.mlp.c_proj.bias", (e,)),
        },
    }
    return {
        "attention_norm": layer_norm_params(src, f"{p}.ln_1", e),
        "attention": attention,
        "mlp_norm": layer_norm_params(src, f"{p}.ln_2", e),
        "mlp": mlp,
    }


def gpt_params_from_hf(
    directory: str | os.PathLike,
    model_config=None,
    *,
    added_token_rows: int = 0,
    added_token_seed: int = 0,
    skip_unexpected: bool = False,
) -> dict[str, Any]:
    """Returns lmjax GPT parameters (plain NumPy arrays) converted from an HF checkpoint.

    Args:
      directory: a Hugging Face ``gpt2`` / ``openai-gpt`` model directory (safetensors).
      model_config: a ``GPTConfig``, or a ConfigDict / dict of its fields (``family`` optional);
        default: ``lmjax_model_config(directory, added_token_rows=added_token_rows)``. Its
        ``scan_layers`` picks the layout (``decoder/layers`` [N, ...] vs ``decoder/layers_{i}``)
        and its ``param_dtype`` the storage dtype.
      added_token_rows: rows to append to the token table (GPT-1 special tokens); the config's
        ``vocab_size`` must equal the checkpoint's plus this.
      added_token_seed: seed of the N(0, init_std) draw of the appended rows.
      skip_unexpected: ignore tensors the GPT does not use (e.g. a multiple-choice head) instead of
        raising.

    Returns:
      ``{'params'-collection tree}`` for ``model.apply({'params': tree}, ...)``, matching
      ``lmjax.models.gpt.param_shapes(config)`` in structure, shapes and dtype.

    Raises:
      ValueError: naming the tensor, for missing tensors, unexpected tensors and shape mismatches;
        or when the config's norm placement / final norm disagree with the checkpoint's type.
    """
    directory = os.fspath(directory)
    hf = hf_config(directory)
    model_type = _model_type(hf)
    layout = _LAYOUTS[model_type]
    if model_config is None:
        model_config = lmjax_model_config(directory, added_token_rows=added_token_rows)
    cfg = family_config(model_config, "gpt", gpt.GPTConfig)
    if cfg.norm != layout["norm"] or cfg.final_norm != (layout["final_norm"] is not None):
        raise ValueError(
            f"A {model_type} checkpoint needs norm={layout['norm']!r}, "
            f"final_norm={layout['final_norm'] is not None}; the config has norm={cfg.norm!r}, "
            f"final_norm={cfg.final_norm}."
        )
    tensors = stripped_prefix(hf_tensors(directory), "transformer.")
    src = CheckpointTensors(tensors, directory, _SKIPPED, "lmjax_model_config")

    base_vocab = cfg.vocab_size - added_token_rows
    token_table = src.take(layout["token"], (base_vocab, cfg.embed_dim))  # [V0, E]
    if src.has("lm_head.weight"):
        lm_head = src.take("lm_head.weight", (base_vocab, cfg.embed_dim))
        if not np.array_equal(lm_head, token_table):
            raise ValueError(
                "Tensor 'lm_head.weight' differs from the token embedding, but lmjax's GPT ties "
                "its output layer to the token table; this checkpoint cannot be converted exactly."
            )
    if added_token_rows:
        rng = np.random.default_rng(added_token_seed)
        extra = rng.normal(0.0, cfg.init_std, (added_token_rows, cfg.embed_dim))
        token_table = np.concatenate([token_table, extra.astype(token_table.dtype)])  # [V, E]
    params: dict[str, Any] = {
        "token_embed": {"embedding": token_table},
        "position_embed": {
            "embedding": src.take(layout["position"], (cfg.max_len, cfg.embed_dim))
        },
    }
    layers = [_layer_params(src, i, cfg) for i in range(cfg.num_layers)]
    params["decoder"] = layer_stack(layers, cfg.scan_layers)
    if layout["final_norm"] is not None:
        params["final_norm"] = layer_norm_params(src, layout["final_norm"], cfg.embed_dim)
    return finished_params(
        src, params, cfg, gpt.param_shapes(cfg), "GPT", skip_unexpected, user="lmjax's GPT"
    )


def load_hf_gpt(
    directory: str | os.PathLike,
    *,
    added_token_rows: int = 0,
    added_token_seed: int = 0,
    **overrides: Any,
) -> tuple[gpt.GPT, dict[str, Any]]:
    """Returns ``(model, params)``: the lmjax GPT described by an HF directory and its weights.

    Args:
      directory: a Hugging Face ``gpt2`` / ``openai-gpt`` model directory.
      added_token_rows: rows appended to the token table (GPT-1 special tokens).
      added_token_seed: seed for those rows.
      **overrides: GPTConfig fields (e.g. ``scan_layers=False``, ``dtype='bfloat16'``).

    Example:
      >>> model, params = load_hf_gpt('/data/gpt2')
      >>> logits = model.apply({'params': params}, tokens)['logits']
    """
    model_config = lmjax_model_config(directory, added_token_rows=added_token_rows, **overrides)
    params = gpt_params_from_hf(
        directory,
        model_config,
        added_token_rows=added_token_rows,
        added_token_seed=added_token_seed,
    )
    return models.build(model_config), params


def gpt_config_from_hf(directory: str | os.PathLike, **kwargs: Any) -> gpt.GPTConfig:
    """Returns the ``GPTConfig`` dataclass of an HF directory (see ``lmjax_model_config``)."""
    return models.make_config(lmjax_model_config(directory, **kwargs))


__all__ = [
    "gpt_config_fields",
    "gpt_config_from_hf",
    "gpt_params_from_hf",
    "lmjax_model_config",
    "load_hf_gpt",
]
