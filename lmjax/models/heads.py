"""Fine-tuning heads: any pre-trained backbone family plus one task head, in one parameter tree.

Axis legend: B batch, C choices (or the 2 orderings of a similarity pair), L length, E the
backbone's hidden width, K labels, V vocab.

One family, ``'task'``, wraps the network of any other family (the ``backbone``, described like
``lmjax.models.config_dict`` describes a model) and adds a small head. The parameter tree is::

    params['backbone']   exactly the backbone family's own tree (a pre-training checkpoint's
                         params drop in unchanged; see ``extended_vocab_params`` when the
                         fine-tuning format appends special tokens to the vocabulary)
    params['head']       feature_dense/{kernel [E, E] (embed, mlp), bias [E] (mlp)}  -- 'first'
                         classifier/{kernel [E, K'] (embed, classes), bias [K'] (classes)}

with K' = num_labels (classification, token classification), 1 (regression, multiple choice),
2 (span: start and end).

Heads (``head``) and outputs (all float32):

- 'classification': one feature per sequence -> ``class_logits`` [B, K];
- 'regression': one feature per sequence -> ``prediction`` [B];
- 'multiple_choice': one feature per (context, choice) sequence, inputs [B, C, L]
  -> ``choice_logits`` [B, C];
- 'span': every token's hidden state -> ``start_logits``, ``end_logits`` [B, L];
- 'token_classification': every token's hidden state -> ``token_logits`` [B, L, K];

plus ``lm_logits`` [B(, C), L, V] = the backbone's LM logits when the backbone is causal (GPT),
for GPT-1's auxiliary LM loss (``lmjax.objectives.task_losses``).

Features of the sequence heads (``feature``):

- ``'pooled'``: the backbone's pooler output (dense + tanh on [CLS]; BERT / ALBERT), then
  dropout and the classifier: BERT ``run_classifier.py::create_model`` and HF
  ``BertForMultipleChoice`` (per-choice pooled -> linear to 1 -> [B, C]).
- ``'first'``: the first token's hidden state through the head's own dense layer and
  ``feature_activation``, for families without a pooler, as HF's heads do: dropout -> dense ->
  activation -> dropout -> classifier. ``ElectraClassificationHead`` uses gelu,
  ``RobertaClassificationHead`` tanh, and ``DistilBertForSequenceClassification`` relu (its
  ``pre_classifier``; HF DistilBERT drops out only after the activation).
  ``feature_activation='none'`` skips the dense layer: the ELECTRA reference's head
  (``google-research/electra:model/modeling.py``: ``pooled_output = sequence_output[:, 0]``;
  ``finetune/classification/classification_tasks.py``: dropout 0.1, then one dense layer).
- ``'extract'``: GPT-1's feature, the hidden state at the ``extract_id`` token
  (``openai/finetune-transformer-lm:train.py``: ``argmax(X == clf_token)``, the first
  occurrence; a row without the token reads position 0), then dropout and the classifier.
- ``'auto'`` (default): 'tokens' for the per-token heads, 'extract' for a causal backbone,
  'pooled' for a backbone with a pooler, 'first' otherwise; ``feature_activation='auto'`` is gelu
  for ELECTRA, relu for DistilBERT, tanh otherwise (the HF heads above).

GPT-1 formats (Radford et al. 2018, §3.3): similarity runs both orderings of the pair
(``combine_orderings=True``: inputs [B, 2, L]) and ADDS their features before the classifier;
multiple choice (ROCStories) drops out the feature with one mask shared over the choices
(``share_choice_dropout=True``; the reference's ``clf_pdrop`` noise shape broadcasts over the
choice axis).

Backbone inputs: only the arguments the backbone family takes are passed. Encoders get
``token_type_ids`` and ``attention_mask``; a GPT takes no ``attention_mask``, so
``segment_ids`` defaults to ``attention_mask`` (padding, id 0, is neither attended nor
attending across rows). Passing an argument the backbone does not take is an error.

ELECTRA: the family's model is the generator + discriminator pair; the head reads the
discriminator's hidden states (``out['hidden']``) and the generator's outputs are unused, so
under ``jax.jit`` XLA drops its computation; its parameters stay in the tree (zero gradient) so
the pre-training checkpoint drops in unchanged.

Call::

    model = TaskModel(config)
    out = model.apply({'params': p}, inputs, token_type_ids=None, attention_mask=None,
                      positions=None, segment_ids=None, deterministic=True,
                      rngs={'dropout': key})  # rngs only when deterministic=False
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax import axes, models
from lmjax.layers.dense import DenseGeneral
from lmjax.layers.mlp import ACTIVATIONS
from lmjax.models import gpt, parameters
from lmjax.models.teacher_student import ModelFields, model_fields

HEADS = ("classification", "regression", "multiple_choice", "span", "token_classification")
TOKEN_HEADS = ("span", "token_classification")  # read every token's hidden state
FEATURES = ("auto", "pooled", "first", "extract", "tokens")
FEATURE_ACTIVATIONS = ("auto", "none", "tanh") + tuple(ACTIVATIONS)
CAUSAL_FAMILIES = ("gpt",)  # backbones whose 'logits' are next-token LM logits
_NOT_BACKBONES = ("task", "teacher_student")
_FIRST_TOKEN_ACTIVATIONS = {"electra": "gelu", "distilbert": "relu"}  # HF heads; others tanh
_DTYPES = ("float32", "bfloat16", "float16")


def _fields(family: str, preset: str, **overrides: Any) -> ModelFields:
    return model_fields(models.config_dict(family, preset, **overrides))


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """A backbone and a fine-tuning head (see the module docstring).

    Attributes:
      backbone: the pre-trained network's model config as ``(field, value)`` pairs, 'family'
        first (``teacher_student.model_fields``; a dict or ConfigDict is converted).
      head: one of ``HEADS``.
      num_labels: K for 'classification' and 'token_classification' (>= 2); unused by the
        other heads (regression and multiple choice score 1 value, span 2).
      feature: the sequence feature, one of ``FEATURES`` ('tokens' = the per-token heads).
      feature_activation: the activation after the head's dense layer of feature 'first'
        ('none' = no dense layer); 'auto' picks the HF head's (module docstring).
      extract_id: the token id whose hidden state feature 'extract' reads (GPT-1's
        ``_classify_``); -1 = unused.
      combine_orderings: inputs hold the two orderings of a pair on axis 1 ([B, 2, L]) and their
        features are added (GPT-1 similarity); classification and regression only.
      share_choice_dropout: one dropout mask for all choices of a multiple-choice example
        (GPT-1 ``clf_pdrop``); False drops out each choice independently (HF BERT).
      classifier_dropout: dropout rate on the feature (BERT and GPT-1: 0.1).
      dtype: the head's compute dtype name (outputs are float32 regardless).
      param_dtype: the head's parameter storage dtype name.
    """

    backbone: ModelFields = _fields("bert", "tiny")
    head: str = "classification"
    num_labels: int = 2
    feature: str = "auto"
    feature_activation: str = "auto"
    extract_id: int = -1
    combine_orderings: bool = False
    share_choice_dropout: bool = False
    classifier_dropout: float = 0.1
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self) -> None:
        problems = []
        try:
            object.__setattr__(self, "backbone", model_fields(self.backbone))
            backbone = self.backbone_config()
        except (ValueError, TypeError) as error:
            raise ValueError(f"Invalid TaskConfig: backbone: {error}") from None
        family = self.backbone_family
        if family in _NOT_BACKBONES:
            problems.append(f"backbone family {family!r} cannot be a backbone; use a single "
                            "network (e.g. 'bert', 'gpt', 'electra')")
        if self.head not in HEADS:
            problems.append(f"head={self.head!r} must be one of {HEADS}")
        elif self.head in ("classification", "token_classification") and self.num_labels < 2:
            problems.append(f"num_labels={self.num_labels} must be >= 2 for head={self.head!r} "
                            "(use head='regression' for one score)")
        if self.feature not in FEATURES:
            problems.append(f"feature={self.feature!r} must be one of {FEATURES}")
        if self.feature_activation not in FEATURE_ACTIVATIONS:
            problems.append(f"feature_activation={self.feature_activation!r} must be one of "
                            f"{FEATURE_ACTIVATIONS}")
        if not problems:
            problems += self._feature_problems(backbone)
        if self.combine_orderings and self.head not in ("classification", "regression"):
            problems.append(f"combine_orderings=True is GPT-1's similarity format, for head="
                            f"'classification' or 'regression'; head={self.head!r} needs "
                            "combine_orderings=False")
        if self.share_choice_dropout and self.head != "multiple_choice":
            problems.append(f"share_choice_dropout=True needs head='multiple_choice' (got "
                            f"{self.head!r}); set it False")
        if not 0.0 <= self.classifier_dropout < 1.0:
            problems.append(f"classifier_dropout={self.classifier_dropout} must be in [0, 1)")
        for field in ("dtype", "param_dtype"):
            if getattr(self, field) not in _DTYPES:
                problems.append(f"{field}={getattr(self, field)!r} must be one of {_DTYPES}")
        if problems:
            raise ValueError("Invalid TaskConfig: " + "; ".join(problems) + ".")

    def _feature_problems(self, backbone: Any) -> list[str]:
        """The problems of ``feature`` / ``feature_activation`` / ``extract_id`` together."""
        problems = []
        feature, family = self.resolved_feature, self.backbone_family
        if self.head in TOKEN_HEADS and feature != "tokens":
            problems.append(f"head={self.head!r} reads every token's hidden state; set "
                            f"feature='tokens' (or 'auto'), not {feature!r}")
        if self.head not in TOKEN_HEADS and feature == "tokens":
            problems.append(f"feature='tokens' is for the per-token heads {TOKEN_HEADS}; head="
                            f"{self.head!r} needs 'pooled', 'first', 'extract' or 'auto'")
        if feature == "pooled" and not getattr(backbone, "pooler", False):
            problems.append(
                f"feature='pooled' needs a backbone with a pooler, and the {family!r} backbone has "
                "none; use feature='first' (first token + dense), 'extract' (GPT-1) or 'auto'"
            )
        vocab_size = getattr(backbone, "vocab_size", self.extract_id + 1)
        if feature == "extract":
            if self.extract_id < 0:
                problems.append(
                    "feature='extract' reads the hidden state at the extract token; set "
                    "extract_id to its id (GPT-1: the appended '_classify_' token)"
                )
            elif self.extract_id >= vocab_size:
                problems.append(
                    f"extract_id={self.extract_id} is outside the backbone vocabulary "
                    f"(vocab_size={vocab_size}); enlarge the backbone's vocab_size for appended "
                    "special tokens (see extended_vocab_params)"
                )
        elif self.extract_id != -1:
            problems.append(f"extract_id={self.extract_id} is only read by feature='extract' "
                            f"(the feature is {feature!r}); set extract_id=-1")
        if feature != "first" and self.feature_activation not in ("auto", "none"):
            problems.append(f"feature_activation={self.feature_activation!r} is only used by "
                            f"feature='first' (the feature is {feature!r}); leave it 'auto'")
        return problems

    def backbone_config(self) -> Any:
        """The backbone family's Config dataclass (e.g. ``BERTConfig``)."""
        return models.make_config(dict(self.backbone))

    @property
    def backbone_family(self) -> str:
        return dict(self.backbone)["family"]

    @property
    def causal_backbone(self) -> bool:
        """Whether the backbone is a causal LM whose logits feed the auxiliary LM loss."""
        return self.backbone_family in CAUSAL_FAMILIES

    @property
    def grouped_inputs(self) -> bool:
        """Whether inputs are [B, C, L] (multiple choice, or the two orderings of a pair)."""
        return self.head == "multiple_choice" or self.combine_orderings

    @property
    def resolved_feature(self) -> str:
        """``feature`` with 'auto' resolved (see the module docstring)."""
        if self.feature != "auto":
            return self.feature
        if self.head in TOKEN_HEADS:
            return "tokens"
        if self.causal_backbone:
            return "extract"
        return "pooled" if getattr(self.backbone_config(), "pooler", False) else "first"

    @property
    def resolved_feature_activation(self) -> str:
        """``feature_activation`` with 'auto' resolved (HF's head of the backbone family)."""
        if self.feature_activation != "auto":
            return self.feature_activation
        return _FIRST_TOKEN_ACTIVATIONS.get(self.backbone_family, "tanh")


def _gpt1_tiny_fields() -> ModelFields:
    """gpt1-tiny with GPT-1's three special tokens appended to its vocabulary."""
    vocab = gpt.PRESETS["gpt1-tiny"].vocab_size + len(gpt.GPT1_SPECIAL_TOKENS)
    return _fields("gpt", "gpt1-tiny", vocab_size=vocab)


_TINY_GPT1_EXTRACT = gpt.PRESETS["gpt1-tiny"].vocab_size + 2  # '_classify_', the last special
_GPT1_EXTRACT = gpt.GPT1_VOCAB_WITH_SPECIALS - 1

PRESETS: dict[str, TaskConfig] = {
    # CPU scale: BERT's sequence classification on the pooled [CLS] (run_classifier.py).
    "tiny-bert-classification": TaskConfig(backbone=_fields("bert", "tiny"), feature="pooled"),
    "tiny-bert-multiple-choice": TaskConfig(
        backbone=_fields("bert", "tiny"), head="multiple_choice", feature="pooled"
    ),
    "tiny-bert-span": TaskConfig(backbone=_fields("bert", "tiny"), head="span"),
    "tiny-bert-token-classification": TaskConfig(
        backbone=_fields("bert", "tiny"), head="token_classification", num_labels=9
    ),
    "tiny-electra-classification": TaskConfig(backbone=_fields("electra", "tiny")),
    "tiny-distilbert-classification": TaskConfig(backbone=_fields("distilbert", "tiny")),
    "tiny-albert-classification": TaskConfig(backbone=_fields("albert", "tiny")),
    # CPU scale GPT-1: classification at the appended '_classify_' token, multiple choice with
    # a dropout mask shared over the choices, similarity over both orderings.
    "tiny-gpt-extract": TaskConfig(
        backbone=_gpt1_tiny_fields(), feature="extract", extract_id=_TINY_GPT1_EXTRACT
    ),
    "tiny-gpt-multiple-choice": TaskConfig(
        backbone=_gpt1_tiny_fields(), head="multiple_choice", feature="extract",
        extract_id=_TINY_GPT1_EXTRACT, share_choice_dropout=True,
    ),
    "tiny-gpt-similarity": TaskConfig(
        backbone=_gpt1_tiny_fields(), head="regression", feature="extract",
        extract_id=_TINY_GPT1_EXTRACT, combine_orderings=True,
    ),
    # Full size: BERT-base GLUE classification and GPT-1's ROCStories head (Radford et al. 2018).
    "bert-base-classification": TaskConfig(backbone=_fields("bert", "base"), feature="pooled"),
    "gpt1-multiple-choice": TaskConfig(
        backbone=_fields("gpt", "gpt1", vocab_size=gpt.GPT1_VOCAB_WITH_SPECIALS),
        head="multiple_choice", feature="extract", extract_id=_GPT1_EXTRACT,
        share_choice_dropout=True,
    ),
}


def _backbone_kwargs(
    module: type[nn.Module], family: str, given: dict[str, jax.Array | None]
) -> dict[str, jax.Array]:
    """The given backbone arguments the backbone's ``__call__`` takes (module docstring).

    Raises:
      ValueError: for a given argument the backbone does not take.
    """
    takes = set(inspect.signature(module.__call__).parameters)
    given = dict(given)
    if "attention_mask" not in takes and given.get("attention_mask") is not None:
        if "segment_ids" in takes and given.get("segment_ids") is None:
            given["segment_ids"] = jnp.asarray(given["attention_mask"], jnp.int32)
        given["attention_mask"] = None  # the padding is in segment_ids
    kwargs = {}
    for name, value in given.items():
        if value is None:
            continue
        if name not in takes:
            raise ValueError(
                f"The {family!r} backbone takes no {name!r}; drop it from the objective's "
                "model_inputs."
            )
        kwargs[name] = value
    return kwargs


def _feature_activation(name: str) -> Any:
    return jnp.tanh if name == "tanh" else ACTIVATIONS[name]


class TaskHead(nn.Module):
    """The head on the backbone's outputs (``params['head']``; see the module docstring).

    Attributes:
      config: the ``TaskConfig``.
    """

    config: TaskConfig

    def _dense(self, features: int, kernel_axes: tuple[str, str], name: str) -> DenseGeneral:
        """A head layer, initialised as the backbone (GPT: normal, encoders: truncated normal)."""
        std = getattr(self.config.backbone_config(), "init_std", 0.02)
        initializer = nn.initializers.normal if self.config.causal_backbone else (
            nn.initializers.truncated_normal)
        init = initializer(stddev=std)
        return DenseGeneral(
            features, kernel_axes, kernel_init=init, dtype=jnp.dtype(self.config.dtype),
            param_dtype=jnp.dtype(self.config.param_dtype), name=name,
        )

    @nn.compact
    def __call__(
        self,
        backbone_outputs: dict[str, jax.Array],
        inputs: jax.Array,
        num_groups: int,
        deterministic: bool,
    ) -> dict[str, jax.Array]:
        """Maps the backbone's outputs to the head's outputs.

        Args:
          backbone_outputs: the backbone's outputs on [N, L] rows, N = B * num_groups.
          inputs: int [N, L] the backbone's token ids (for feature 'extract').
          num_groups: C for grouped inputs, 1 otherwise.
          deterministic: disables dropout.

        Returns:
          the head's outputs (module docstring), float32.
        """
        cfg = self.config
        hidden = backbone_outputs["hidden"]  # [N, L, E]
        dropout = nn.Dropout(cfg.classifier_dropout)
        if cfg.head == "span":
            logits = self._dense(2, (axes.EMBED, axes.CLASSES), "classifier")(hidden)  # [N, L, 2]
            logits = jnp.asarray(logits, jnp.float32)
            return {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}
        if cfg.head == "token_classification":
            hidden = dropout(hidden, deterministic=deterministic)
            logits = self._dense(cfg.num_labels, (axes.EMBED, axes.CLASSES), "classifier")(hidden)
            return {"token_logits": jnp.asarray(logits, jnp.float32)}  # [N, L, K]

        feature = self._sequence_feature(backbone_outputs, inputs)  # [N, E]
        feature = feature.reshape((-1, num_groups) + feature.shape[1:])  # [B, C, E]
        if cfg.combine_orderings:
            feature = jnp.sum(feature, axis=1, keepdims=True)  # [B, 1, E]
        if cfg.share_choice_dropout:
            dropout = nn.Dropout(cfg.classifier_dropout, broadcast_dims=(1,))
        activation = cfg.resolved_feature_activation
        if cfg.resolved_feature == "first" and activation != "none":
            feature = dropout(feature, deterministic=deterministic)
            dense = self._dense(feature.shape[-1], (axes.EMBED, axes.MLP), "feature_dense")
            feature = _feature_activation(activation)(dense(feature))  # [B, C, E]
        feature = dropout(feature, deterministic=deterministic)
        width = cfg.num_labels if cfg.head == "classification" else 1
        logits = self._dense(width, (axes.EMBED, axes.CLASSES), "classifier")(feature)
        logits = jnp.asarray(logits, jnp.float32)  # [B, C, K or 1]
        if cfg.head == "multiple_choice":
            return {"choice_logits": logits[..., 0]}  # [B, C]
        if cfg.head == "regression":
            return {"prediction": logits[:, 0, 0]}  # [B]
        return {"class_logits": logits[:, 0]}  # [B, K]

    def _sequence_feature(
        self, backbone_outputs: dict[str, jax.Array], inputs: jax.Array
    ) -> jax.Array:
        """One vector per row: [N, E]."""
        feature = self.config.resolved_feature
        hidden = backbone_outputs["hidden"]  # [N, L, E]
        if feature == "pooled":
            return backbone_outputs["pooled"]
        if feature == "first":
            return hidden[:, 0]
        position = jnp.argmax(inputs == self.config.extract_id, axis=-1)  # [N], first occurrence
        return jnp.take_along_axis(hidden, position[:, None, None], axis=1)[:, 0]  # [N, E]


class TaskModel(nn.Module):
    """A pre-trained backbone and a fine-tuning head (see the module docstring).

    Attributes:
      config: the ``TaskConfig``.
    """

    config: TaskConfig

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        token_type_ids: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        deterministic: bool = True,
    ) -> dict[str, jax.Array]:
        """Runs the backbone and the head.

        Args:
          inputs: int [B, L] token ids, or [B, C, L] for multiple choice and
            ``combine_orderings`` (C = 2 orderings).
          token_type_ids: int, inputs' shape; segment A / B ids (encoders).
          attention_mask: inputs' shape, 1 = real token, 0 = padding (a GPT backbone gets it as
            ``segment_ids`` when those are not given).
          positions: int, inputs' shape; position ids (default: the backbone's).
          segment_ids: int, inputs' shape; packed-row document ids (0 = padding).
          deterministic: disables dropout (pass ``rngs={'dropout': key}`` when False).

        Returns:
          the head's outputs and, for a causal backbone, ``lm_logits`` (module docstring).
        """
        cfg = self.config
        rank = 3 if cfg.grouped_inputs else 2
        if inputs.ndim != rank:
            layout = "[batch, choices, length]" if rank == 3 else "[batch, length]"
            raise ValueError(
                f"head={cfg.head!r} (combine_orderings={cfg.combine_orderings}) expects inputs "
                f"{layout}, got shape {inputs.shape}."
            )
        if cfg.combine_orderings and inputs.shape[1] != 2:
            raise ValueError(f"combine_orderings=True expects inputs [batch, 2 orderings, "
                             f"length], got shape {inputs.shape}.")
        given = dict(token_type_ids=token_type_ids, attention_mask=attention_mask,
                     positions=positions, segment_ids=segment_ids)  # each inputs' shape
        for name, value in given.items():
            if value is not None and value.shape != inputs.shape:
                raise ValueError(f"{name} has shape {value.shape}; inputs have {inputs.shape}.")
        num_groups = inputs.shape[1] if cfg.grouped_inputs else 1
        flat = lambda x: None if x is None else x.reshape((-1, x.shape[-1]))  # noqa: E731
        inputs = flat(inputs)  # [N, L], N = B * C
        given = {name: flat(value) for name, value in given.items()}

        module = models.family_module(cfg.backbone_family).Model
        backbone = module(cfg.backbone_config(), name="backbone")
        kwargs = _backbone_kwargs(module, cfg.backbone_family, given)
        backbone_outputs = backbone(inputs, deterministic=deterministic, **kwargs)
        outputs = TaskHead(cfg, name="head")(backbone_outputs, inputs, num_groups, deterministic)
        if cfg.causal_backbone:
            lm_logits = jnp.asarray(backbone_outputs["logits"], jnp.float32)  # [N, L, V]
            if cfg.grouped_inputs:
                lm_logits = lm_logits.reshape((-1, num_groups) + lm_logits.shape[1:])
            outputs["lm_logits"] = lm_logits  # [B(, C), L, V]
        return outputs


Config = TaskConfig  # the family protocol of lmjax.models: Config, PRESETS, Model
Model = TaskModel


def param_shapes(config: TaskConfig) -> Any:
    """The parameter tree ``{'backbone', 'head'}`` as ``jax.ShapeDtypeStruct`` leaves."""
    return nn.unbox(abstract_task_params(config))


def count_params(config: TaskConfig) -> int:
    """The number of parameters of backbone and head together (no allocation)."""
    return parameters.param_count(param_shapes(config))


def init_input_shape(config: TaskConfig) -> tuple[int, ...]:
    """The shape of the smallest ``inputs`` that initialises ``TaskModel(config)``: [1, 2, 1]
    when rows come in groups (choices, orderings), else [1, 1] (the family protocol's optional
    hook; ``lmjax.train.trained_run`` asks for it)."""
    return (1, 2, 1) if config.grouped_inputs else (1, 1)


def abstract_task_params(config: TaskConfig) -> Any:
    """The boxed abstract parameters of ``TaskModel(config)`` (``nn.LogicallyPartitioned``
    leaves holding ``jax.ShapeDtypeStruct`` values, with their logical axis names)."""
    shape = init_input_shape(config)
    abstract = jax.eval_shape(
        lambda key: TaskModel(config).init(key, jnp.zeros(shape, jnp.int32)), jax.random.key(0)
    )
    return abstract["params"]


def _path_name(path: tuple[Any, ...]) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in path)


def extended_vocab_params(
    backbone_params: Mapping[str, Any],
    abstract_params: Mapping[str, Any],
    key: jax.Array,
    stddev: float = 0.02,
) -> dict[str, Any]:
    """Pre-trained backbone params grown to a backbone with appended special tokens.

    GPT-1's fine-tuning format appends ``_start_``, ``_delimiter_`` and ``_classify_`` after the
    pre-trained vocabulary, initialised N(0, 0.02) (``openai/finetune-transformer-lm:train.py``:
    the ``we`` matrix gets ``n_special`` new rows). The task model is built with the larger
    ``vocab_size``; this function pads every pre-trained leaf whose logical axes include
    'vocab' along that axis: N(0, ``stddev``) rows for tables, zeros for 1-D (bias) leaves. The
    pre-trained rows are unchanged.

    Args:
      backbone_params: the pre-trained backbone tree (plain or boxed leaves).
      abstract_params: the larger backbone's boxed abstract tree, e.g.
        ``abstract_task_params(config)['backbone']``; its ``nn.Partitioned`` metadata names the
        axes.
      key: PRNG key of the new rows.
      stddev: the new rows' std.

    Returns:
      plain arrays in the abstract tree's structure and shapes.

    Raises:
      ValueError: for a missing or extra leaf, or a shape that differs other than along 'vocab'
        by appended rows.
    """
    is_boxed = lambda x: isinstance(x, nn.Partitioned)  # noqa: E731
    targets, structure = jax.tree_util.tree_flatten_with_path(abstract_params, is_leaf=is_boxed)
    flat_sources = jax.tree_util.tree_flatten_with_path(nn.unbox(backbone_params))[0]
    sources = {_path_name(p): v for p, v in flat_sources}
    target_names = [_path_name(p) for p, _ in targets]
    missing = sorted(set(target_names) - set(sources))
    extra = sorted(set(sources) - set(target_names))
    if missing or extra:
        raise ValueError(
            f"The pre-trained backbone params do not match the task model's backbone tree: "
            f"missing {missing[:5]}, unexpected {extra[:5]}; check the backbone config (layers, "
            "scan_layers, heads) against the checkpoint's."
        )
    leaves = [
        _padded_leaf(name, jnp.asarray(sources[name]), target, jax.random.fold_in(key, i), stddev)
        for i, (name, (_, target)) in enumerate(zip(target_names, targets))
    ]
    return jax.tree_util.tree_unflatten(structure, leaves)


def _padded_leaf(name: str, source: jax.Array, target: Any, key: jax.Array, stddev: float):
    """``source`` padded along its 'vocab' axis to ``target``'s shape (extended_vocab_params)."""
    names = tuple(target.names) if isinstance(target, nn.Partitioned) else ()
    shape, dtype = tuple(nn.unbox(target).shape), nn.unbox(target).dtype
    if source.shape == shape:
        return source.astype(dtype)
    axis = names.index(axes.VOCAB) if axes.VOCAB in names else None
    others_match = (
        axis is not None
        and source.ndim == len(shape)
        and all(s == t for i, (s, t) in enumerate(zip(source.shape, shape)) if i != axis)
    )
    if not others_match or source.shape[axis] > shape[axis]:
        raise ValueError(
            f"Parameter {name!r}: pre-trained shape {source.shape} does not fit the task model's "
            f"{shape} (logical axes {names}); only appended rows along 'vocab' are filled in. "
            "Check the backbone config against the checkpoint's."
        )
    pad_shape = list(shape)
    pad_shape[axis] = shape[axis] - source.shape[axis]
    if source.ndim == 1:
        new_rows = jnp.zeros(pad_shape, dtype)
    else:
        new_rows = stddev * jax.random.normal(key, pad_shape, dtype)
    return jnp.concatenate([source.astype(dtype), new_rows], axis=axis)


__all__ = [
    "Config",
    "HEADS",
    "Model",
    "PRESETS",
    "TaskConfig",
    "TaskHead",
    "TaskModel",
    "abstract_task_params",
    "count_params",
    "extended_vocab_params",
    "param_shapes",
]
