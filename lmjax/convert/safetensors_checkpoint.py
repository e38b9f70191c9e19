"""Reading Hugging Face checkpoint directories: ``config.json`` and safetensors weights.

A Hugging Face model directory (what ``save_pretrained(..., safe_serialization=True)`` writes, or a
hub snapshot) holds ``config.json`` and either one ``model.safetensors`` or several shards listed by
``model.safetensors.index.json`` (``{"weight_map": {tensor_name: shard_file}}``). Tensors are read
with the ``safetensors`` package's NumPy API, so no PyTorch is needed; dtypes NumPy lacks
(bfloat16, float8) are read through the package's Flax API and returned as ``ml_dtypes`` NumPy
arrays. Nothing is downloaded: the directory must already be on disk.

Reference: ``huggingface/safetensors`` (``safe_open``), and ``transformers``'
``modeling_utils.py`` (``SAFE_WEIGHTS_NAME``, ``SAFE_WEIGHTS_INDEX_NAME``) for the file names.

The rest is what the ``hf_*`` importers share: readers of ``nn.Linear`` / LayerNorm, of BERT-family
embeddings, post-LN layers (``PostLNLayerNames``), MLM heads and config.json fields, the layer
stack, the check of stored tied copies and the final dtype cast and tree check.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open

from lmjax import models

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"

# safetensors dtype codes that safetensors' NumPy API cannot return.
_NON_NUMPY_DTYPES = ("BF16", "F8_E4M3", "F8_E5M2")


def hf_config(directory: str | os.PathLike) -> dict:
    """Returns the parsed ``config.json`` of a Hugging Face model directory.

    Raises:
      FileNotFoundError: naming the missing file and the directory's contents.
    """
    path = os.path.join(directory, CONFIG_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No {CONFIG_NAME} in {directory!s} (found: {_listing(directory)}). Pass the directory "
            "that save_pretrained wrote or a downloaded hub snapshot."
        )
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def safetensors_files(directory: str | os.PathLike) -> dict[str, str]:
    """Returns {tensor name: path of the safetensors file holding it} for a model directory.

    Reads ``model.safetensors.index.json`` when present (sharded checkpoints), else opens the
    single ``model.safetensors``.

    Raises:
      FileNotFoundError: when the directory has neither (e.g. only ``pytorch_model.bin``), or when
        the index names a shard that is not there.
    """
    index_path = os.path.join(directory, WEIGHTS_INDEX_NAME)
    single_path = os.path.join(directory, WEIGHTS_NAME)
    if os.path.isfile(index_path):
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index_path} has no 'weight_map' of tensor names to shard files.")
        files = {}
        for name, shard in weight_map.items():
            shard_path = os.path.join(directory, shard)
            if not os.path.isfile(shard_path):
                raise FileNotFoundError(
                    f"{WEIGHTS_INDEX_NAME} maps tensor {name!r} to {shard!r}, which is not in "
                    f"{directory!s}."
                )
            files[name] = shard_path
        return files
    if os.path.isfile(single_path):
        with safe_open(single_path, framework="numpy") as f:
            return {name: single_path for name in f.keys()}
    raise FileNotFoundError(
        f"No {WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME} in {directory!s} "
        f"(found: {_listing(directory)}). lmjax reads safetensors only: re-save the model with "
        "save_pretrained(path, safe_serialization=True)."
    )


def hf_tensors(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """Returns every tensor of a Hugging Face model directory as {name: NumPy array}.

    Shards are opened one at a time. bfloat16 / float8 tensors come back as ``ml_dtypes`` arrays.
    """
    by_file: dict[str, list[str]] = {}
    for name, path in safetensors_files(directory).items():
        by_file.setdefault(path, []).append(name)
    tensors = {}
    for path, names in by_file.items():
        with safe_open(path, framework="numpy") as f:
            awkward = [n for n in names if f.get_slice(n).get_dtype() in _NON_NUMPY_DTYPES]
            for name in names:
                if name not in awkward:
                    tensors[name] = np.asarray(f.get_tensor(name))
        if awkward:
            with safe_open(path, framework="flax") as f:
                for name in awkward:
                    tensors[name] = np.asarray(f.get_tensor(name))
    return tensors


def _listing(directory) -> str:
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return "<directory not readable>"
    return ", ".join(names) if names else "<empty>"


def stripped_prefix(tensors: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """Returns the tensors with a leading ``prefix`` (e.g. ``'transformer.'``) removed from names.

    Hugging Face ``*LMHeadModel`` checkpoints prefix the body's tensors with the base model's
    ``base_model_prefix`` while bare ``*Model`` checkpoints (and older hub files) do not; names
    without the prefix (e.g. ``lm_head.weight``) are kept as they are.
    """
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in tensors.items()}


class CheckpointTensors:
    """Hands out a checkpoint's tensors by name, checking shapes and remembering what was used.

    A converter takes every tensor it maps with :meth:`take`; afterwards :meth:`unused` lists the
    ones nothing took (besides the buffers ``skipped`` matches), so an unexpected tensor is an
    error instead of a silently dropped weight.

    Args:
      tensors: name -> array, as :func:`hf_tensors` returns them.
      directory: the checkpoint directory (for error messages).
      skipped: a pattern (``re.search``) of names that are buffers, not parameters.
      config_function: the function that builds a matching lmjax config (named in errors).
    """

    def __init__(self, tensors: Mapping[str, np.ndarray], directory: str, skipped: re.Pattern,
                 config_function: str):
        self._tensors = dict(tensors)
        self._used: set[str] = set()
        self.directory = directory
        self._skipped = skipped
        self._config_function = config_function

    def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Returns tensor ``name``, which must have ``shape``.

        Raises:
          ValueError: naming the tensor when it is missing or has another shape.
        """
        if name not in self._tensors:
            raise ValueError(
                f"Tensor {name!r} is missing from the checkpoint in {self.directory} "
                f"(it has {len(self._tensors)} tensors, e.g. {sorted(self._tensors)[:4]})."
            )
        array = self._tensors[name]
        if tuple(array.shape) != tuple(shape):
            raise ValueError(
                f"Tensor {name!r} has shape {tuple(array.shape)} but the lmjax config expects "
                f"{tuple(shape)}; build the config from this checkpoint ({self._config_function})."
            )
        self._used.add(name)
        return array

    def has(self, name: str) -> bool:
        """Returns whether the checkpoint holds tensor ``name``."""
        return name in self._tensors

    def unused(self) -> list[str]:
        """Returns the names no :meth:`take` asked for, buffers excluded, sorted."""
        return sorted(
            n for n in self._tensors if n not in self._used and not self._skipped.search(n)
        )


def encoder_prefix(names: Sequence[str] | set[str], prefix: str) -> str:
    """Returns the encoder prefix stored names use: ``prefix`` (e.g. ``'bert.'``, task models) or
    ``''`` (a bare ``*Model`` checkpoint)."""
    return prefix if any(n.startswith(prefix) for n in names) else ""


def dense_params(
    src: CheckpointTensors, name: str, n_in: int, n_out: int
) -> dict[str, np.ndarray]:
    """Returns an ``nn.Linear`` (``weight`` [out, in]) as a kernel [in, out] and bias [out]."""
    return {
        "kernel": src.take(f"{name}.weight", (n_out, n_in)).T,
        "bias": src.take(f"{name}.bias", (n_out,)),
    }


def layer_norm_params(src: CheckpointTensors, name: str, width: int) -> dict[str, np.ndarray]:
    """Returns an lmjax LayerNorm's ``scale`` / ``bias`` from ``<name>.weight`` / ``.bias``."""
    return {
        "scale": src.take(f"{name}.weight", (width,)),
        "bias": src.take(f"{name}.bias", (width,)),
    }


def check_matches_model(params: Mapping, expected: Mapping, family: str) -> None:
    """Raises ValueError unless ``params`` has exactly ``expected``'s paths, shapes and dtypes.

    Args:
      params: the converted parameter tree (NumPy arrays).
      expected: the model's abstract parameter tree (``<family>.param_shapes(config)``).
      family: the model family's name, for the message.
    """
    def flat(tree):
        leaves = jax.tree_util.tree_leaves_with_path(tree)
        return {jax.tree_util.keystr(path): leaf for path, leaf in leaves}

    want, got = flat(expected), flat(params)
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    wrong = [
        f"{k}: converted {got[k].shape} {got[k].dtype}, model {want[k].shape} {want[k].dtype}"
        for k in sorted(set(got) & set(want))
        if tuple(got[k].shape) != tuple(want[k].shape) or got[k].dtype != want[k].dtype
    ]
    if missing or extra or wrong:
        raise ValueError(
            f"The converted parameters do not match lmjax's {family} parameter tree: "
            f"missing {missing}, unexpected {extra}, mismatched {wrong}."
        )


# HF activation names (transformers/activations.py ACT2FN) -> lmjax names, for the BERT family.
HF_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}


def encoder_config_problems(
    config: Mapping[str, Any], activations: Mapping[str, str], default_activation: str,
    decoder_note: str | None = None,
) -> list[str]:
    """Returns what a BERT-family config.json asks for that lmjax's encoders do not implement.

    Checks ``position_embedding_type`` (only ``'absolute'``), with ``decoder_note`` set also
    ``is_decoder`` / ``add_cross_attention`` (the note follows the problem's name), and that
    ``hidden_act`` (default ``default_activation``) is a key of ``activations``.
    """
    get = config.get
    problems = []
    if get("position_embedding_type", "absolute") != "absolute":
        problems.append(f"position_embedding_type={get('position_embedding_type')!r}")
    if decoder_note is not None and (get("is_decoder", False) or get("add_cross_attention", False)):
        problems.append("is_decoder / add_cross_attention" + decoder_note)
    activation = get("hidden_act", default_activation)
    if activation not in activations:
        problems.append(f"hidden_act {activation!r} (supported: {sorted(activations)})")
    return problems


def encoder_config_fields(
    config: Mapping[str, Any], activations: Mapping[str, str], defaults: Mapping | None = None
) -> dict[str, Any]:
    """Returns the lmjax encoder config fields a BERT / ALBERT / ELECTRA config.json fixes.

    The HF names are those of ``BertConfig`` (``transformers/models/bert/configuration_bert.py``),
    which ``AlbertConfig`` and ``ElectraConfig`` share. ``defaults`` maps HF names to values for
    keys the file may leave out (``hidden_act`` included); without one a missing size raises.
    """
    defaults = {
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02, "hidden_act": "gelu",
        **(defaults or {}),
    }

    def get(key):
        return config.get(key, defaults.get(key))

    return dict(
        vocab_size=int(get("vocab_size")),
        max_len=int(get("max_position_embeddings")),
        type_vocab_size=int(get("type_vocab_size")),
        num_layers=int(get("num_hidden_layers")),
        embed_dim=int(get("hidden_size")),
        num_heads=int(get("num_attention_heads")),
        mlp_dim=int(get("intermediate_size")),
        activation=activations[get("hidden_act")],
        layer_norm_eps=float(get("layer_norm_eps")),
        hidden_dropout=float(get("hidden_dropout_prob")),
        attention_dropout=float(get("attention_probs_dropout_prob")),
        init_std=float(get("initializer_range")),
    )


def family_config(model_config, family: str, config_class: type) -> Any:
    """Returns ``model_config`` (a ``config_class``, a ConfigDict or a dict of its fields, with
    ``family`` optional) as a ``config_class`` instance.

    Raises:
      ValueError: when the fields name another family.
    """
    if isinstance(model_config, config_class):
        return model_config
    values = dict(model_config.to_dict() if hasattr(model_config, "to_dict") else model_config)
    values.setdefault("family", family)
    if values["family"] != family:
        raise ValueError(f"model_config is for family {values['family']!r}, not {family!r}.")
    return models.make_config(values)


def embedding_params(
    src: CheckpointTensors, prefix: str, vocab_size: int, max_len: int, width: int,
    type_vocab_size: int = 0,
) -> dict[str, Any]:
    """Returns the lmjax embeddings of a BERT-family ``{prefix}.*`` (``BertEmbeddings`` in
    ``modeling_bert.py``): ``token_embed``, ``position_embed``, ``embed_norm`` and, when
    ``type_vocab_size`` > 0, ``type_embed``; every table is [rows, width]."""
    params: dict[str, Any] = {
        "token_embed": {"embedding": src.take(f"{prefix}.word_embeddings.weight",
                                              (vocab_size, width))},
        "position_embed": {"embedding": src.take(f"{prefix}.position_embeddings.weight",
                                                 (max_len, width))},
        "embed_norm": layer_norm_params(src, f"{prefix}.LayerNorm", width),
    }
    if type_vocab_size:
        params["type_embed"] = {"embedding": src.take(f"{prefix}.token_type_embeddings.weight",
                                                      (type_vocab_size, width))}
    return params


@dataclasses.dataclass(frozen=True)
class PostLNLayerNames:
    """The HF tensor names, relative to the layer, of one post-LN encoder layer.

    The defaults are ``BertLayer``'s (``transformers/models/bert/modeling_bert.py``, also ELECTRA
    and RoBERTa); ``AlbertLayer`` (``albert/modeling_albert.py``) and DistilBERT's
    ``TransformerBlock`` (``distilbert/modeling_distilbert.py``) name the same pieces otherwise.
    """

    query: str = "attention.self.query"
    key: str = "attention.self.key"
    value: str = "attention.self.value"
    out: str = "attention.output.dense"
    attention_norm: str = "attention.output.LayerNorm"
    mlp_in: str = "intermediate.dense"
    mlp_out: str = "output.dense"
    mlp_norm: str = "output.LayerNorm"


def post_ln_layer_params(
    src: CheckpointTensors, prefix: str, names: PostLNLayerNames, embed_dim: int, num_heads: int,
    mlp_dim: int,
) -> dict[str, Any]:
    """Returns one post-LN encoder layer's lmjax parameters (unscanned) from ``{prefix}.<name>``.

    HF splits the E output features of q/k/v as (H, D) row-major (``view(..., H, D)``), so
    feature ``c`` is head ``c // D``, dim ``c % D``: query / key / value kernels become
    [E, H, D] (biases [H, D]), the output kernel [H, D, E], ``mlp/wi`` [E, F], ``mlp/wo`` [F, E].
    """
    e, h, f = embed_dim, num_heads, mlp_dim
    d = e // h
    attention = {}
    for ours in ("query", "key", "value"):
        linear = dense_params(src, f"{prefix}.{getattr(names, ours)}", e, e)
        attention[ours] = {
            "kernel": linear["kernel"].reshape(e, h, d),  # [E, H, D]
            "bias": linear["bias"].reshape(h, d),  # [H, D]
        }
    out = dense_params(src, f"{prefix}.{names.out}", e, e)
    attention["out"] = {"kernel": out["kernel"].reshape(h, d, e), "bias": out["bias"]}  # [H, D, E]
    return {
        "attention": attention,
        "attention_norm": layer_norm_params(src, f"{prefix}.{names.attention_norm}", e),
        "mlp": {
            "wi": dense_params(src, f"{prefix}.{names.mlp_in}", e, f),  # [E, F]
            "wo": dense_params(src, f"{prefix}.{names.mlp_out}", f, e),  # [F, E]
        },
        "mlp_norm": layer_norm_params(src, f"{prefix}.{names.mlp_norm}", e),
    }


def layer_stack(layers: Sequence[Mapping[str, Any]], scanned: bool) -> dict[str, Any]:
    """Returns per-layer trees as ``{'layers': [N, ...]}`` if ``scanned``, else ``layers_{i}``."""
    if scanned:
        return {"layers": jax.tree.map(lambda *xs: np.stack(xs), *layers)}  # [N, ...]
    return {f"layers_{i}": layer for i, layer in enumerate(layers)}


def tied_copy_check(
    src: CheckpointTensors, name: str, expected: np.ndarray, what: str, family: str
) -> None:
    """Takes the stored tied copy ``name`` (e.g. a decoder weight), if any, and checks it.

    Raises:
      ValueError: when it differs from ``expected`` (``what``), which lmjax's ``family`` ties it to.
    """
    if src.has(name) and not np.array_equal(src.take(name, expected.shape), expected):
        raise ValueError(
            f"Tensor {name!r} differs from {what}, but lmjax's {family} ties them; this "
            "checkpoint cannot be converted exactly."
        )


def mlm_head_params(
    src: CheckpointTensors, family: str, *, transform: str, norm: str, bias: str, decoder: str,
    hidden: int, width: int, token_table: np.ndarray,
) -> dict[str, Any]:
    """Returns an MLM head's ``mlm_transform`` [hidden, width], ``mlm_norm`` and ``mlm_bias`` [V].

    The head is ``BertLMPredictionHead`` (``modeling_bert.py``) or its ALBERT / DistilBERT /
    ELECTRA-generator twin: ``transform`` (``nn.Linear``), ``norm``, then ``decoder`` tied to the
    word table ``token_table`` [V, width]. Stored copies ``{decoder}.weight`` and, unless it is
    ``bias`` itself, ``{decoder}.bias`` are checked with :func:`tied_copy_check`.
    """
    params = {
        "mlm_transform": dense_params(src, transform, hidden, width),
        "mlm_norm": layer_norm_params(src, norm, width),
        "mlm_bias": src.take(bias, token_table.shape[:1]),
    }
    tied_copy_check(src, f"{decoder}.weight", token_table, "the word embeddings", family)
    if f"{decoder}.bias" != bias:
        tied_copy_check(src, f"{decoder}.bias", params["mlm_bias"], bias, family)
    return params


def finished_params(
    src: CheckpointTensors, params: Mapping, cfg: Any, expected: Mapping, family: str,
    skip_unexpected: bool, *, user: str, hint: str = "", checkpoint: str = "checkpoint",
) -> dict[str, Any]:
    """Returns ``params`` cast to ``cfg.param_dtype`` once no tensor is left over and the tree
    matches ``expected`` (see :func:`check_matches_model`).

    Raises:
      ValueError: for unused tensors (unless ``skip_unexpected``): "The <checkpoint> in <dir> has
        tensors <user> does not use: [...]. Pass skip_unexpected=True to ignore them<hint>."
    """
    if src.unused() and not skip_unexpected:
        raise ValueError(
            f"The {checkpoint} in {src.directory} has tensors {user} does not use: "
            f"{src.unused()}. Pass skip_unexpected=True to ignore them{hint}."
        )
    dtype = np.dtype(jnp.dtype(cfg.param_dtype))
    params = jax.tree.map(lambda x: np.asarray(x, dtype=dtype), params)
    check_matches_model(params, expected, family)
    return params
