"""Pre-training objectives: a corruption function and a loss function per objective.

An ``Objective`` bundles
- ``corrupt(key, batch) -> batch``: jittable, static shapes, run inside the train step from the
  step's key (identity for causal LM; MLM masking, span corruption, ... for other families);
- ``loss(outputs, batch) -> (loss, metrics)``: float32 loss and a dict of float32 scalars that
  includes ``'loss'``, ``'accuracy'`` and ``'num_tokens'``;
- ``model_inputs``: the batch keys passed to the model as keyword arguments.

The train step does, in effect::

    batch = objective.corrupt(key, batch)
    outputs = model.apply({'params': p}, **{k: batch[k] for k in objective.model_inputs}, ...)
    loss, metrics = objective.loss(outputs, batch)

Objectives are looked up by name with ``get``; a new one is one entry in ``OBJECTIVES`` (``name``
-> a zero-argument factory that imports its module lazily and returns the ``Objective``) or a
``register`` call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax


@dataclasses.dataclass(frozen=True)
class Objective:
    """A pre-training objective.

    Attributes:
      name: the name ``get`` knows it by.
      corrupt: ``(key, batch) -> batch``.
      loss: ``(outputs, batch) -> (loss, metrics)``.
      model_inputs: batch keys passed to the model as keyword arguments.
    """

    name: str
    corrupt: Callable[[jax.Array, dict[str, Any]], dict[str, Any]]
    loss: Callable[[dict[str, Any], dict[str, Any]], tuple[jax.Array, dict[str, jax.Array]]]
    model_inputs: tuple[str, ...]


def _causal_lm() -> Objective:
    from lmjax.objectives import causal_lm

    return Objective(
        name="causal_lm",
        corrupt=causal_lm.identity_corruption,
        loss=causal_lm.causal_lm_loss,
        model_inputs=causal_lm.MODEL_INPUTS,
    )


def _mlm() -> Objective:
    from lmjax.objectives import mlm

    # BERT's masking (fixed 15% budget, 80/10/10) on the BERT uncased vocabulary ids.
    return mlm.mlm_objective("mlm", nsp=False)


def _mlm_nsp() -> Objective:
    from lmjax.objectives import mlm

    return mlm.mlm_objective("mlm_nsp", nsp=True)


# name -> a zero-argument factory returning the Objective (imports stay lazy).
OBJECTIVES: dict[str, Callable[[], Objective]] = {
    "causal_lm": _causal_lm,
    "mlm": _mlm,
    "mlm_nsp": _mlm_nsp,
}


def register(name: str, factory: Callable[[], Objective]) -> None:
    """Adds an objective under ``name``; ``factory()`` must return an ``Objective``."""
    if name in OBJECTIVES:
        raise ValueError(f"An objective named {name!r} is already registered.")
    OBJECTIVES[name] = factory


def get(name: str) -> Objective:
    """The objective registered under ``name``.

    Raises:
      ValueError: naming the unknown objective and listing the known ones.
    """
    if name not in OBJECTIVES:
        raise ValueError(f"Unknown objective {name!r}; known objectives: {sorted(OBJECTIVES)}.")
    objective = OBJECTIVES[name]()
    if objective.name != name:
        raise ValueError(f"Objective factory for {name!r} returned one named {objective.name!r}.")
    return objective


def names() -> tuple[str, ...]:
    """The names of all registered objectives."""
    return tuple(sorted(OBJECTIVES))
