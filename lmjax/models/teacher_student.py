"""A frozen teacher and a trainable student in one module, for knowledge distillation.

One parameter tree ``{'teacher': ..., 'student': ...}`` lets the generic train step train a
distillation run like any other model (DESIGN.md: several networks in one state, nothing
special-cased in the loop). The teacher runs deterministically (no dropout, as the references'
``teacher.eval()``) and its outputs pass through ``jax.lax.stop_gradient``, so no gradient reaches
its parameters; the coordinator's optimizer also freezes ``params['teacher']`` and loads the
teacher checkpoint into it (``student_params_from_teacher`` then gives the student's starting
point).

References: Hinton et al. 2015 (soft targets); Sanh et al. 2019 (DistilBERT, HF
``examples/research_projects/distillation/distiller.py``: ``teacher.eval()`` under
``torch.no_grad()``); Jiao et al. 2020 (TinyBERT, ``general_distill.py``: teacher outputs
``.detach()``-ed).

Configs. ``teacher`` and ``student`` each describe a model the way ``lmjax.models.config_dict``
does ('family' + that family's Config fields). The frozen dataclass stores them hashably as
tuples of ``(field, value)`` pairs, 'family' first (list values become tuples); a dict or
ConfigDict given to the constructor is converted, and ``teacher_config()`` /
``student_config()`` return the family Config dataclasses. In an experiment::

    model = models.config_dict('teacher_student', 'bert-tiny-to-distilbert-tiny')
    # model.teacher is a tuple of pairs; replace it whole to change the teacher:
    model.teacher = teacher_student.model_fields(models.config_dict('bert', 'base'))

``per_layer_outputs=True`` makes both networks return per-layer outputs (``hidden_states``,
``attention_scores``; TinyBERT's losses need them). A ``bert`` teacher is then run as a
``lmjax.models.tinybert.TinyBERT`` with ``fit_dense=False``: the same parameter tree as
``lmjax.models.bert.BERT``, with per-layer outputs.

Call::

    out = TeacherStudent(config).apply({'params': p}, inputs, token_type_ids, attention_mask,
                                       deterministic=False, rngs={'dropout': key})
    out['student']   # the student's outputs (dropout as `deterministic` says)
    out['teacher']   # the teacher's outputs, deterministic, gradient-stopped
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from lmjax import models
from lmjax.models import distilbert, parameters, tinybert

ModelFields = tuple[tuple[str, Any], ...]
# Families with a per_layer_outputs field, and 'bert' (run as TinyBERT without fit_dense).
_PER_LAYER_FAMILIES = ("bert", "distilbert", "tinybert")


def model_fields(
    model_cfg: Mapping[str, Any] | ml_collections.ConfigDict | ModelFields,
) -> ModelFields:
    """A model config ('family' + Config fields) as hashable ``(field, value)`` pairs.

    'family' comes first; the other fields keep their order; list values become tuples.

    Raises:
      ValueError: if 'family' is missing.
    """
    if isinstance(model_cfg, ml_collections.ConfigDict):
        values = model_cfg.to_dict()
    elif isinstance(model_cfg, Mapping):
        values = dict(model_cfg)
    else:
        values = dict(model_cfg)  # pairs
    if "family" not in values:
        raise ValueError(
            f"A teacher / student model config needs a 'family' key (got {sorted(values)}); use "
            "lmjax.models.config_dict(family, preset)."
        )
    family = values.pop("family")
    fixed = lambda v: tuple(v) if isinstance(v, list) else v  # noqa: E731
    return (("family", family),) + tuple((k, fixed(v)) for k, v in values.items())


def _fields(family: str, preset: str, **overrides: Any) -> ModelFields:
    return model_fields(models.config_dict(family, preset, **overrides))


_TINY_BERT_TEACHER = _fields("bert", "tiny", vocab_size=2048, max_len=128, num_layers=4)


@dataclasses.dataclass(frozen=True)
class TeacherStudentConfig:
    """A teacher and a student model config (see the module docstring).

    Attributes:
      teacher: the teacher's model config as ``(field, value)`` pairs (a mapping is converted).
      student: the student's, likewise.
      per_layer_outputs: both networks also return per-layer outputs (TinyBERT's objective).
    """

    teacher: ModelFields = _TINY_BERT_TEACHER
    student: ModelFields = _fields("distilbert", "tiny")
    per_layer_outputs: bool = False

    def __post_init__(self) -> None:
        problems = []
        for role in ("teacher", "student"):
            try:
                object.__setattr__(self, role, model_fields(getattr(self, role)))
                config = self._config(role)
            except (ValueError, TypeError) as error:
                problems.append(f"{role}: {error}")
                continue
            family = dict(getattr(self, role))["family"]
            if self.per_layer_outputs and family not in _PER_LAYER_FAMILIES:
                problems.append(
                    f"{role} family {family!r} cannot return per-layer outputs; use one of "
                    f"{_PER_LAYER_FAMILIES} or per_layer_outputs=False"
                )
            if role == "student" and not getattr(config, "mlm_head", True):
                problems.append("the student needs mlm_head=True (the losses read its logits)")
        if not problems:
            t, s = self.teacher_config(), self.student_config()
            if t.vocab_size != s.vocab_size:
                problems.append(
                    f"teacher vocab_size={t.vocab_size} != student vocab_size={s.vocab_size}; "
                    "distillation compares logits over one vocabulary"
                )
        if problems:
            raise ValueError("Invalid TeacherStudentConfig: " + "; ".join(problems) + ".")

    def _config(self, role: str) -> Any:
        return models.make_config(dict(getattr(self, role)))

    def teacher_config(self) -> Any:
        """The teacher's family Config dataclass (e.g. ``BERTConfig``)."""
        return self._config("teacher")

    def student_config(self) -> Any:
        """The student's family Config dataclass (e.g. ``DistilBERTConfig``)."""
        return self._config("student")

    @property
    def teacher_family(self) -> str:
        return dict(self.teacher)["family"]

    @property
    def student_family(self) -> str:
        return dict(self.student)["family"]


PRESETS: dict[str, TeacherStudentConfig] = {
    # CPU scale: a 4-layer tiny BERT halved into a 2-layer tiny DistilBERT of the same width.
    "bert-tiny-to-distilbert-tiny": TeacherStudentConfig(),
    # Sanh et al. 2019: BERT-base -> DistilBERT (6 layers, initialised from layers 0,2,4,7,9,11).
    "bert-base-to-distilbert": TeacherStudentConfig(
        teacher=_fields("bert", "base"), student=_fields("distilbert", "base")
    ),
    # Jiao et al. 2020: general distillation of BERT-base into TinyBERT4 (312 wide, fit_dense).
    "bert-base-to-tinybert-4l": TeacherStudentConfig(
        teacher=_fields("bert", "base"),
        student=_fields("tinybert", "4l-312"),
        per_layer_outputs=True,
    ),
    # CPU scale TinyBERT: the tiny teacher, a 2-layer tiny TinyBERT (k = 4 / 2 = 2).
    "bert-tiny-to-tinybert-tiny": TeacherStudentConfig(
        teacher=_TINY_BERT_TEACHER,
        student=_fields("tinybert", "tiny"),
        per_layer_outputs=True,
    ),
}


def _network(family: str, config: Any, per_layer_outputs: bool, name: str) -> nn.Module:
    """The module of one role, with per-layer outputs switched on where asked."""
    if per_layer_outputs:
        if family == "bert":
            return tinybert.TinyBERT(
                tinybert.from_bert_config(config, fit_dense=False, per_layer_outputs=True),
                name=name,
            )
        config = dataclasses.replace(config, per_layer_outputs=True)
    return models.family_module(family).Model(config, name=name)


class TeacherStudent(nn.Module):
    """A teacher (frozen, deterministic, gradient-stopped) and a student (see the module docstring).

    Attributes:
      config: the ``TeacherStudentConfig``.
    """

    config: TeacherStudentConfig

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        token_type_ids: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        positions: jax.Array | None = None,
        deterministic: bool = True,
    ) -> dict[str, dict[str, jax.Array]]:
        """Runs both networks on the same inputs.

        Args:
          inputs: int [B, L] token ids.
          token_type_ids: int [B, L] (ignored by a DistilBERT network).
          attention_mask: [B, L], 1 = real token.
          positions: int [B, L] or None (each network's default).
          deterministic: the student's dropout switch; the teacher is always deterministic.

        Returns:
          ``{'student': student outputs, 'teacher': teacher outputs (stop_gradient)}``.
        """
        cfg = self.config
        kwargs = dict(token_type_ids=token_type_ids, attention_mask=attention_mask,
                      positions=positions)
        teacher = _network(
            cfg.teacher_family, cfg.teacher_config(), cfg.per_layer_outputs, "teacher"
        )
        student = _network(
            cfg.student_family, cfg.student_config(), cfg.per_layer_outputs, "student"
        )
        teacher_outputs = jax.lax.stop_gradient(teacher(inputs, deterministic=True, **kwargs))
        student_outputs = student(inputs, deterministic=deterministic, **kwargs)
        return {"student": student_outputs, "teacher": teacher_outputs}


Config = TeacherStudentConfig  # the family protocol of lmjax.models: Config, PRESETS, Model
Model = TeacherStudent
# Top-level parameters the train loop's optimizer never updates (no update, no optimizer state,
# no weight decay): the teacher is loaded from its own run and stays as it was trained.
FROZEN_PARAMS = ("teacher",)


def param_shapes(config: TeacherStudentConfig) -> Any:
    """The parameter tree ``{'teacher', 'student'}`` as ``jax.ShapeDtypeStruct`` leaves."""
    return parameters.abstract_params(TeacherStudent(config))


def count_params(config: TeacherStudentConfig) -> int:
    """The number of parameters of teacher and student together (no allocation)."""
    return parameters.param_count(param_shapes(config))


def student_params_from_teacher(
    config: TeacherStudentConfig, teacher_params: Mapping[str, Any], **kwargs: Any
) -> dict[str, Any] | None:
    """The student's initial parameters derived from the teacher's, or None (keep random init).

    - DistilBERT student, BERT teacher: ``distilbert.distilbert_params_from_bert`` with the
      reference layers (0, 2, 4, 7, 9, 11) for 12 -> 6 and ``distilbert.teacher_layer_choice``
      otherwise (e.g. 4 -> 2: (0, 3)); ``kwargs`` (``layers``, ``vocab_transform``,
      ``student_params``) go to it. The result has the student config's scan layout.
    - TinyBERT (or any other) student: None; TinyBERT's general distillation starts from a
      random student (Jiao et al. 2020, §4.1).

    Args:
      config: the teacher-student config.
      teacher_params: the teacher's parameter tree (``params['teacher']``), either scan layout.

    Raises:
      ValueError: for a DistilBERT student whose teacher is not a BERT, or mismatched shapes.
    """
    if config.student_family != "distilbert":
        return None
    if config.teacher_family not in ("bert", "tinybert"):
        raise ValueError(
            f"A DistilBERT student is initialised from a BERT teacher; the teacher family is "
            f"{config.teacher_family!r}. Keep the random init instead."
        )
    teacher_cfg, student_cfg = config.teacher_config(), config.student_config()
    if teacher_cfg.embed_dim != student_cfg.embed_dim or teacher_cfg.mlp_dim != student_cfg.mlp_dim:
        raise ValueError(
            f"Copying teacher layers needs equal widths: teacher embed_dim/mlp_dim "
            f"{teacher_cfg.embed_dim}/{teacher_cfg.mlp_dim}, student "
            f"{student_cfg.embed_dim}/{student_cfg.mlp_dim}."
        )
    kwargs.setdefault(
        "layers",
        distilbert.teacher_layer_choice(teacher_cfg.num_layers, student_cfg.num_layers),
    )
    kwargs.setdefault("scan_layers", student_cfg.scan_layers)
    params = distilbert.distilbert_params_from_bert(teacher_params, **kwargs)
    expected = distilbert.param_shapes(student_cfg)
    got = jax.tree_util.tree_map(lambda x: x.shape, params)
    want = jax.tree_util.tree_map(lambda x: x.shape, expected)
    if got != want:
        raise ValueError(
            "The parameters copied from the teacher do not fit the student config (check "
            "vocab_size, max_len, num_heads and the number of layers chosen)."
        )
    return params


__all__ = [
    "Config",
    "Model",
    "PRESETS",
    "TeacherStudent",
    "TeacherStudentConfig",
    "count_params",
    "model_fields",
    "param_shapes",
    "student_params_from_teacher",
]
