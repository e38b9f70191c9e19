"""A trained run, loaded back from its workdir for inference: config, model, params, tokenizer.

:func:`lmjax.train.loop.train` leaves in its workdir everything needed to use the model later:
``config.json`` (and the same config in every checkpoint's JSON ``extra``), the tokenizer it
trained (``tokenizer/``) and the Orbax checkpoints (``checkpoints/<step>``).
:func:`load_trained_run` reads them back::

    run = load_trained_run('runs/demo')
    texts = lmjax.decoding.generated_texts(run.model, run.params, run.tokenizer,
                                           ['def read(self'], jax.random.key(0), 40, top_k=40)

Only the parameters are restored (no optimizer state), onto ONE local device with every mesh axis
of the run's ``config.mesh`` set to size 1: the run's rules still resolve, nothing is split, and a
run trained on a pod slice loads on a laptop (if its parameters fit in one device's memory).
``lmjax generate`` and the notebooks use it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lmjax import data, models
from lmjax.config import config_from_json
from lmjax.train import mesh as mesh_lib
from lmjax.train.checkpoints import Checkpointer, CheckpointNotFoundError, checkpoint_directory

CONFIG_FILE = "config.json"  # written by lmjax.train.loop beside the checkpoints
TOKENIZER_DIR = "tokenizer"  # where lmjax.data caches a tokenizer trained for the run


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A run restored for inference (see :func:`load_trained_run`).

    Attributes:
        config: the experiment config the run was trained with.
        model: the linen module built from ``config.model``.
        params: the ``'params'`` collection of checkpoint ``step``, on one local device.
        tokenizer: the tokenizer the run trained with.
        step: the checkpoint step the params come from.
        workdir: the run directory (absolute).
    """

    config: ml_collections.ConfigDict
    model: nn.Module
    params: Any
    tokenizer: data.Tokenizer
    step: int
    workdir: str


def saved_run_config(workdir: str, extra: dict[str, Any]) -> ml_collections.ConfigDict:
    """Returns the config a run was trained with: from a checkpoint's extra, else config.json.

    Args:
        workdir: the run directory.
        extra: the JSON ``extra`` of one of its checkpoints
            (:meth:`lmjax.train.checkpoints.Checkpointer.restore_extra`).

    Raises:
        FileNotFoundError: when neither holds a config.
    """
    saved = extra.get("config")
    if saved:
        return config_from_json(saved)
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return config_from_json(f.read())
    raise FileNotFoundError(
        f"{workdir} holds no saved config (neither in the checkpoint nor {CONFIG_FILE}); "
        "was it written by `lmjax train`?"
    )


def saved_run_tokenizer(config: ml_collections.ConfigDict, workdir: str) -> data.Tokenizer:
    """Returns the tokenizer a run trained with: its ``tokenizer.path``, or the workdir's cache.

    Raises:
        FileNotFoundError: when the run trained its own tokenizer and the workdir lacks it.
    """
    cache = os.path.join(workdir, TOKENIZER_DIR)
    if not config.tokenizer.path and not os.path.isdir(cache):
        raise FileNotFoundError(
            f"{workdir} has no trained tokenizer ({cache} is missing); sample from the workdir "
            "that `lmjax train` wrote."
        )
    return data.load_or_train_tokenizer(config.tokenizer, (), workdir)


def one_device_abstract_params(
    model: nn.Module, config: ml_collections.ConfigDict, device: Optional[jax.Device] = None
) -> Any:
    """Returns the model's params as ``jax.ShapeDtypeStruct`` leaves placed on one device.

    The run's mesh axes all get size 1 on ``device`` (default: the first local device), so the
    run's rules resolve and every parameter is whole on that device. Nothing is initialised:
    shapes come from ``jax.eval_shape`` of ``model.init``.
    """
    device = device if device is not None else jax.local_devices()[0]
    # A family may need grouped dummy inputs (lmjax.models.heads: [1, choices, 1]).
    shape_of = getattr(models.family_module(config.model.family), "init_input_shape", None)
    shape = shape_of(model.config) if shape_of else (1, 1)
    mesh = mesh_lib.build_mesh([(row[0], 1) for row in config.mesh], devices=[device])
    rules = mesh_lib.check_rules(config.rules, mesh)
    with nn.logical_axis_rules(rules):
        boxed = jax.eval_shape(
            lambda key: model.init(
                {"params": key, "dropout": key, "sample": key},
                jnp.zeros(shape, jnp.int32),
                deterministic=True,
            )["params"],
            jax.random.key(0),
        )
    shardings = mesh_lib.logical_shardings(boxed, mesh, rules)
    return jax.tree_util.tree_map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        nn.meta.unbox(boxed),
        shardings,
    )


def load_trained_run(workdir: str, step: Optional[int] = None) -> TrainedRun:
    """Returns the run in ``workdir`` restored for inference: config, model, params, tokenizer.

    Args:
        workdir: a run directory written by :func:`lmjax.train.loop.train` (``lmjax train``).
        step: the checkpoint step to restore; None = the newest.

    Returns:
        A :class:`TrainedRun` whose params sit on one local device.

    Raises:
        lmjax.train.checkpoints.CheckpointNotFoundError: the workdir has no checkpoints, or not
            the requested step (the message says how to train one / lists the steps).
        FileNotFoundError: the workdir lacks the saved config or the trained tokenizer.
        lmjax.train.checkpoints.CheckpointCorruptedError: the step's files are damaged.
        lmjax.train.checkpoints.CheckpointMismatchError: the saved params do not fit the model
            the saved config builds.
    """
    workdir_given = workdir
    workdir = os.path.abspath(workdir)
    directory = checkpoint_directory(workdir)
    if not os.path.isdir(directory):
        raise CheckpointNotFoundError(
            f"No checkpoints in {directory}; train first with "
            f"`lmjax train --config <experiment.py> --workdir {workdir_given}`."
        )
    with Checkpointer(directory, read_only=True) as ckpt:
        step = ckpt.latest_step() if step is None else int(step)
        extra = ckpt.restore_extra(step)  # raises for a missing step (or when there is none)
        config = saved_run_config(workdir, extra)
        tokenizer = saved_run_tokenizer(config, workdir)
        model = models.build(config.model)
        params = ckpt.restore_params(one_device_abstract_params(model, config), step)
    return TrainedRun(
        config=config, model=model, params=params, tokenizer=tokenizer, step=step, workdir=workdir
    )
