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

Objectives are built by name with ``get(name, **options)``, the options being the rest of the
experiment's ``objective`` section; a new one is one entry in ``OBJECTIVES`` (``name`` -> a
factory that imports its module lazily and returns the ``Objective``) or a ``register`` call.
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


def _causal_lm(**options: Any) -> Objective:
    from lmjax.objectives import causal_lm

    if options:
        raise ValueError(f"objective 'causal_lm' takes no options, got {sorted(options)}.")
    return Objective(
        name="causal_lm",
        corrupt=causal_lm.identity_corruption,
        loss=causal_lm.causal_lm_loss,
        model_inputs=causal_lm.MODEL_INPUTS,
    )


def _mlm_family(name: str, sentence_task: str | None) -> Callable[..., Objective]:
    def factory(**options: Any) -> Objective:
        from lmjax.objectives import mlm

        return mlm.mlm_objective(name, sentence_task=sentence_task, **options)

    return factory


def _electra(**options: Any) -> Objective:
    from lmjax.objectives import replaced_token_detection

    return replaced_token_detection.electra_objective(**options)


def _distillation(kind: str) -> Callable[..., Objective]:
    def factory(**options: Any) -> Objective:
        from lmjax.objectives import distillation, mlm

        masking = {k: v for k, v in options.items() if k in mlm.MASKING_OPTIONS}
        loss_options = {k: v for k, v in options.items() if k not in mlm.MASKING_OPTIONS}
        return distillation.distillation_objective(kind, loss_options=loss_options, **masking)

    return factory


def _seq2seq(module: str, factory_name: str) -> Callable[..., Objective]:
    def factory(**options: Any) -> Objective:
        import importlib

        built = getattr(importlib.import_module(f"lmjax.objectives.{module}"), factory_name)
        return built(**options)

    return factory


def _task(head: str) -> Callable[..., Objective]:
    def factory(*, model_inputs: Any, lm_coef: float = 0.0) -> Objective:
        from lmjax.objectives import task_losses

        return task_losses.task_objective(head, model_inputs=model_inputs, lm_coef=lm_coef)

    return factory


# name -> a factory taking the objective's options as keywords (imports stay lazy). Without
# options the MLM family masks the BERT uncased vocabulary (mask 103, 30522 ids).
OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "causal_lm": _causal_lm,
    "mlm": _mlm_family("mlm", None),
    "mlm_nsp": _mlm_family("mlm_nsp", "nsp"),
    "mlm_sop": _mlm_family("mlm_sop", "sop"),
    "electra": _electra,
    "distilbert": _distillation("distilbert"),
    "tinybert_intermediate": _distillation("tinybert_intermediate"),
    "tinybert_prediction": _distillation("tinybert_prediction"),
    # Encoder-decoder denoising (T5 span corruption and prefix LM; BART's fairseq noises). Their
    # vocabulary options (sentinel / eos / pad / mask ids) are set by the caller for now.
    "span_corruption": _seq2seq("span_corruption", "span_corruption_objective"),
    "prefix_lm": _seq2seq("prefix_lm", "prefix_lm_objective"),
    "bart_denoising": _seq2seq("bart_denoising", "bart_denoising_objective"),
    # Fine-tuning heads (lmjax.models.heads); options model_inputs (required) and lm_coef.
    "classification": _task("classification"),
    "regression": _task("regression"),
    "multiple_choice": _task("multiple_choice"),
    "span_extraction": _task("span"),
    "token_classification": _task("token_classification"),
}
# Objectives that mask tokens -> the vocabulary options their factory takes; the train loop fills
# them from the tokenizer (``mask_id``, ``vocab_size``, ``special_ids``) unless the experiment
# sets them. ELECTRA's masking never draws random tokens, so it takes no ``vocab_size``.
_BERT_VOCABULARY = ("mask_id", "vocab_size", "special_ids")
VOCABULARY_OPTIONS: dict[str, tuple[str, ...]] = {
    "mlm": _BERT_VOCABULARY,
    "mlm_nsp": _BERT_VOCABULARY,
    "mlm_sop": _BERT_VOCABULARY,
    "electra": ("mask_id", "special_ids"),
    "distilbert": _BERT_VOCABULARY,
}


def register(
    name: str, factory: Callable[..., Objective], *, vocabulary_options: tuple[str, ...] = ()
) -> None:
    """Adds an objective; ``factory(**options)`` must return an ``Objective`` named ``name``.

    ``vocabulary_options``: which of ``mask_id``, ``vocab_size`` and ``special_ids`` the factory
    takes; the train loop fills them from the tokenizer.
    """
    if name in OBJECTIVES:
        raise ValueError(f"An objective named {name!r} is already registered.")
    OBJECTIVES[name] = factory
    if vocabulary_options:
        VOCABULARY_OPTIONS[name] = tuple(vocabulary_options)


def get(name: str, **options: Any) -> Objective:
    """The objective registered under ``name``, built with ``options`` (the experiment's
    ``objective`` section without ``name``).

    Raises:
      ValueError: naming the unknown objective and listing the known ones, or an option the
        objective does not take.
    """
    if name not in OBJECTIVES:
        raise ValueError(f"Unknown objective {name!r}; known objectives: {sorted(OBJECTIVES)}.")
    try:
        objective = OBJECTIVES[name](**options)
    except TypeError as error:  # an option the factory's signature does not name
        raise ValueError(f"objective {name!r}: {error}; check the objective section.") from None
    if objective.name != name:
        raise ValueError(f"Objective factory for {name!r} returned one named {objective.name!r}.")
    return objective


def names() -> tuple[str, ...]:
    """The names of all registered objectives."""
    return tuple(sorted(OBJECTIVES))
