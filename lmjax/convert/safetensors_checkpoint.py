"""Reading Hugging Face checkpoint directories: ``config.json`` and safetensors weights.

A Hugging Face model directory (what ``save_pretrained(..., safe_serialization=True)`` writes, or a
hub snapshot) holds ``config.json`` and either one ``model.safetensors`` or several shards listed by
``model.safetensors.index.json`` (``{"weight_map": {tensor_name: shard_file}}``). Tensors are read
with the ``safetensors`` package's NumPy API, so no PyTorch is needed; dtypes NumPy lacks
(bfloat16, float8) are read through the package's Flax API and returned as ``ml_dtypes`` NumPy
arrays. Nothing is downloaded: the directory must already be on disk.

Reference: ``huggingface/safetensors`` (``safe_open``), and ``transformers``'
``modeling_utils.py`` (``SAFE_WEIGHTS_NAME``, ``SAFE_WEIGHTS_INDEX_NAME``) for the file names.
"""

from __future__ import annotations

import json
import os
import re
from typing import Mapping

import jax
import numpy as np
from safetensors import safe_open

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
        self._directory = directory
        self._skipped = skipped
        self._config_function = config_function

    def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Returns tensor ``name``, which must have ``shape``.

        Raises:
          ValueError: naming the tensor when it is missing or has another shape.
        """
        if name not in self._tensors:
            raise ValueError(
                f"Tensor {name!r} is missing from the checkpoint in {self._directory} "
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
