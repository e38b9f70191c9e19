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
from typing import Mapping

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
