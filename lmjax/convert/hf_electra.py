"""Hugging Face ELECTRA checkpoints -> lmjax ELECTRA parameters (``lmjax.models.electra``).

Reads HF ``ElectraForPreTraining`` (the discriminator, e.g. ``google/electra-small-discriminator``)
and ``ElectraForMaskedLM`` (the generator, ``google/electra-small-generator``) directories
(``config.json`` + safetensors) with NumPy, no PyTorch:

- ``load_hf_electra_discriminator(path)`` -> ``(ElectraDiscriminator, params)``;
- ``load_hf_electra_generator(path)`` -> ``(ElectraGenerator, params)``;
- ``load_hf_electra_pretraining(generator_path, discriminator_path)`` ->
  ``(ElectraPretraining, params)``: both networks in one tree with ONE set of embeddings.

Shared embeddings: the reference trains one ``electra/embeddings`` scope for both networks, but
the published HF pair stores it twice (each checkpoint is a complete model). The assembled tree
takes the discriminator's copy (the model people fine-tune); ``embedding_mismatch`` reports how far
the generator's copy is from it, and ``load_hf_electra_pretraining(..., check_shared=True)``
refuses a pair whose copies differ (not trained jointly).

A standalone network's config fills the other network's shape fields with its own (a discriminator
directory says nothing about its generator); they do not affect the standalone module.

Name correspondences (``nn.Linear`` weight [out, in] -> kernel [in, out]; encoder layers as in
``lmjax.convert.hf_bert``, under ``electra.encoder.layer.i``):

=====================================================  ==========================================
HF                                                      lmjax (standalone network)
=====================================================  ==========================================
``electra.embeddings.word_embeddings.weight`` [V, M]    ``embeddings/token_embed/embedding``
``electra.embeddings.position_embeddings.weight``       ``embeddings/position_embed/embedding``
``electra.embeddings.token_type_embeddings.weight``     ``embeddings/type_embed/embedding``
``electra.embeddings.LayerNorm``                        ``embeddings/embed_norm``
``electra.embeddings_project`` [W, M]                   ``embed_project`` kernel [M, W]
``electra.encoder.layer.i.*``                           ``encoder/layers[_i]/*``
``discriminator_predictions.dense`` [E, E]              ``head_transform``
``discriminator_predictions.dense_prediction`` [1, E]   ``head_out`` kernel [E, 1]
``generator_predictions.dense`` [M, G]                  ``mlm_transform`` kernel [G, M]
``generator_predictions.LayerNorm``                     ``mlm_norm``
``generator_lm_head.bias`` [V]                          ``mlm_bias``
``generator_lm_head.weight`` [V, M]                     tied: checked equal to the word table
=====================================================  ==========================================

Axis legend: V vocab, M embedding width, E discriminator width, G generator width, W either.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from lmjax.convert import safetensors_checkpoint as ckpt
from lmjax.models import electra

_SKIPPED = re.compile(r"(^|\.)embeddings\.(position_ids|token_type_ids)$")
_PREFIX = "electra."


def electra_shape_fields(
    config: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, int]]:
    """The shared ``ElectraConfig`` fields of an HF ``electra`` config.json, and the network shape
    (``num_layers``, ``width``, ``heads``, ``mlp``) it describes.

    Raises:
      ValueError: for another model_type, relative positions, a decoder configuration or an
        activation lmjax does not implement.
    """
    problems = []
    if config.get("model_type") != "electra":
        problems.append(f"model_type={config.get('model_type')!r} (expected 'electra')")
    problems += ckpt.encoder_config_problems(config, ckpt.HF_ACTIVATIONS, "gelu", "")
    if problems:
        raise ValueError(
            "This ELECTRA config uses what lmjax does not implement: " + "; ".join(problems) + "."
        )
    shared = ckpt.encoder_config_fields(config, ckpt.HF_ACTIVATIONS)
    shared["embedding_size"] = int(config.get("embedding_size", 128))
    shape = dict(
        num_layers=shared.pop("num_layers"), width=shared.pop("embed_dim"),
        heads=shared.pop("num_heads"), mlp=shared.pop("mlp_dim"),
    )
    return shared, shape


def _discriminator_fields(shape: Mapping[str, int]) -> dict[str, int]:
    return dict(num_layers=shape["num_layers"], embed_dim=shape["width"],
                num_heads=shape["heads"], mlp_dim=shape["mlp"])


def _generator_fields(shape: Mapping[str, int]) -> dict[str, int]:
    return dict(generator_num_layers=shape["num_layers"], generator_embed_dim=shape["width"],
                generator_num_heads=shape["heads"], generator_mlp_dim=shape["mlp"])


def _network_params(
    src: ckpt.CheckpointTensors, cfg: electra.ElectraConfig, shape: Mapping[str, int]
) -> dict[str, Any]:
    """Embeddings, ``embed_project`` and encoder of one HF ``electra.*`` body."""
    m, w = cfg.embedding_size, shape["width"]
    embeddings = ckpt.embedding_params(
        src, f"{_PREFIX}embeddings", cfg.vocab_size, cfg.max_len, m, cfg.type_vocab_size
    )
    params: dict[str, Any] = {"embeddings": embeddings}
    if m != w:
        params["embed_project"] = ckpt.dense_params(src, f"{_PREFIX}embeddings_project", m, w)
    layers = [
        ckpt.post_ln_layer_params(
            src, f"{_PREFIX}encoder.layer.{i}", ckpt.PostLNLayerNames(), w, shape["heads"],
            shape["mlp"],
        )
        for i in range(shape["num_layers"])
    ]
    params["encoder"] = ckpt.layer_stack(layers, cfg.scan_layers)
    return params


def _finish(src, params, cfg, expected, what, skip_unexpected):
    return ckpt.finished_params(
        src, params, cfg, expected, f"ELECTRA {what}", skip_unexpected,
        user=f"lmjax's ELECTRA {what}", checkpoint=f"{what} checkpoint",
    )


def electra_config_from_hf(
    directory: str | os.PathLike, **overrides: Any
) -> electra.ElectraConfig:
    """The ``ElectraConfig`` of one HF network directory (generator or discriminator): both the
    discriminator and the generator shape fields are the directory's network; ``overrides`` win."""
    shared, shape = electra_shape_fields(ckpt.hf_config(directory))
    fields = {**shared, **_discriminator_fields(shape), **_generator_fields(shape), **overrides}
    return electra.ElectraConfig(**fields)


def discriminator_params_from_hf(
    directory: str | os.PathLike,
    config: electra.ElectraConfig | None = None,
    *,
    skip_unexpected: bool = False,
) -> dict[str, Any]:
    """``ElectraDiscriminator`` params (NumPy) from an HF ``ElectraForPreTraining`` directory.

    ``config`` (default ``electra_config_from_hf``) picks the layout (``scan_layers``) and
    ``param_dtype``. Raises ValueError naming a missing, unexpected or mis-shaped tensor.
    """
    directory = os.fspath(directory)
    cfg = config or electra_config_from_hf(directory)
    src = ckpt.CheckpointTensors(
        ckpt.hf_tensors(directory), directory, _SKIPPED, "electra_config_from_hf"
    )
    shape = dict(num_layers=cfg.num_layers, width=cfg.embed_dim, heads=cfg.num_heads,
                 mlp=cfg.mlp_dim)
    params = _network_params(src, cfg, shape)
    e = cfg.embed_dim
    params["head_transform"] = ckpt.dense_params(src, "discriminator_predictions.dense", e, e)
    params["head_out"] = ckpt.dense_params(src, "discriminator_predictions.dense_prediction", e, 1)
    return _finish(src, params, cfg, electra.discriminator_param_shapes(cfg), "discriminator",
                   skip_unexpected)


def generator_params_from_hf(
    directory: str | os.PathLike,
    config: electra.ElectraConfig | None = None,
    *,
    skip_unexpected: bool = False,
) -> dict[str, Any]:
    """``ElectraGenerator`` params (NumPy) from an HF ``ElectraForMaskedLM`` directory.

    The decoder ``generator_lm_head.weight``, when stored, must equal the word table (tied).
    """
    directory = os.fspath(directory)
    cfg = config or electra_config_from_hf(directory)
    hf = ckpt.hf_config(directory)
    if hf.get("hidden_act", "gelu") != "gelu" or cfg.activation != "gelu":
        # HF's ElectraGeneratorPredictions applies 'gelu' whatever hidden_act says; lmjax (like
        # the reference) applies config.activation, so only 'gelu' converts exactly.
        raise ValueError(
            f"hidden_act={hf.get('hidden_act')!r}: HF's generator head uses 'gelu' regardless, "
            "lmjax's uses config.activation; only 'gelu' generators convert exactly."
        )
    src = ckpt.CheckpointTensors(
        ckpt.hf_tensors(directory), directory, _SKIPPED, "electra_config_from_hf"
    )
    shape = dict(num_layers=cfg.generator_num_layers, width=cfg.generator_embed_dim,
                 heads=cfg.generator_num_heads, mlp=cfg.generator_mlp_dim)
    params = _network_params(src, cfg, shape)
    params.update(ckpt.mlm_head_params(  # mlm_transform [G, M]
        src, "ELECTRA", transform="generator_predictions.dense",
        norm="generator_predictions.LayerNorm", bias="generator_lm_head.bias",
        decoder="generator_lm_head", hidden=shape["width"], width=cfg.embedding_size,
        token_table=params["embeddings"]["token_embed"]["embedding"],
    ))
    return _finish(src, params, cfg, electra.generator_param_shapes(cfg), "generator",
                   skip_unexpected)


def load_hf_electra_discriminator(
    directory: str | os.PathLike, **overrides: Any
) -> tuple[electra.ElectraDiscriminator, dict[str, Any]]:
    """``(ElectraDiscriminator, params)`` of an HF ``ElectraForPreTraining`` directory.

    Example:
      >>> model, params = load_hf_electra_discriminator('/data/electra-small-discriminator')
      >>> out = model.apply({'params': params}, ids, token_type_ids=types, attention_mask=mask)
      >>> out['logits']  # float32 [B, L], > 0 = replaced
    """
    cfg = electra_config_from_hf(directory, **overrides)
    return electra.ElectraDiscriminator(cfg), discriminator_params_from_hf(directory, cfg)


def load_hf_electra_generator(
    directory: str | os.PathLike, **overrides: Any
) -> tuple[electra.ElectraGenerator, dict[str, Any]]:
    """``(ElectraGenerator, params)`` of an HF ``ElectraForMaskedLM`` directory."""
    cfg = electra_config_from_hf(directory, **overrides)
    return electra.ElectraGenerator(cfg), generator_params_from_hf(directory, cfg)


def embedding_mismatch(generator: Mapping[str, Any], discriminator: Mapping[str, Any]) -> float:
    """Max |difference| between two standalone networks' ``embeddings`` subtrees."""
    diffs = jax.tree.map(
        lambda a, b: float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)))),
        dict(generator["embeddings"]), dict(discriminator["embeddings"]),
    )
    return max(jax.tree_util.tree_leaves(diffs), default=0.0)


def load_hf_electra_pretraining(
    generator_directory: str | os.PathLike,
    discriminator_directory: str | os.PathLike,
    *,
    check_shared: bool = False,
    **overrides: Any,
) -> tuple[electra.ElectraPretraining, dict[str, Any]]:
    """``(ElectraPretraining, params)`` from an HF generator + discriminator pair.

    The shared embeddings are taken from the discriminator (published pairs store them twice).

    Args:
      generator_directory: an HF ``ElectraForMaskedLM`` directory.
      discriminator_directory: an HF ``ElectraForPreTraining`` directory.
      check_shared: raise unless the two embedding copies are identical.
      **overrides: ``ElectraConfig`` fields (e.g. ``scan_layers=False``, ``dtype='bfloat16'``).

    Raises:
      ValueError: when the two configs disagree on a shared field (vocabulary, positions, types,
        embedding width, LayerNorm epsilon), or (``check_shared``) on the embedding values.
    """
    gen_shared, gen_shape = electra_shape_fields(ckpt.hf_config(generator_directory))
    disc_shared, disc_shape = electra_shape_fields(ckpt.hf_config(discriminator_directory))
    keys = ("vocab_size", "max_len", "type_vocab_size", "embedding_size", "layer_norm_eps")
    differ = {k: (gen_shared[k], disc_shared[k]) for k in keys if gen_shared[k] != disc_shared[k]}
    if differ:
        raise ValueError(
            f"The generator and discriminator configs disagree on shared fields "
            f"(generator, discriminator): {differ}; they are not one ELECTRA pair."
        )
    cfg = electra.ElectraConfig(
        **{**disc_shared, **_discriminator_fields(disc_shape), **_generator_fields(gen_shape),
           **overrides}
    )
    generator = generator_params_from_hf(generator_directory, cfg)
    discriminator = discriminator_params_from_hf(discriminator_directory, cfg)
    if check_shared and embedding_mismatch(generator, discriminator) != 0.0:
        raise ValueError(
            f"The generator's embeddings differ from the discriminator's by up to "
            f"{embedding_mismatch(generator, discriminator)}; pass check_shared=False to use the "
            "discriminator's for both."
        )
    params = electra.join_params(generator, discriminator)
    ckpt.check_matches_model(params, electra.param_shapes(cfg), "ELECTRA pre-training")
    return electra.ElectraPretraining(cfg), params


__all__ = [
    "discriminator_params_from_hf",
    "electra_config_from_hf",
    "electra_shape_fields",
    "embedding_mismatch",
    "generator_params_from_hf",
    "load_hf_electra_discriminator",
    "load_hf_electra_generator",
    "load_hf_electra_pretraining",
]
