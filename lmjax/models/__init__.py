"""Model families and the registry that builds them from configs.

Every family lives in ``lmjax/models/<family>.py`` and exposes three names (the family protocol):

- ``Config``: a frozen ``dataclasses.dataclass`` whose fields all have defaults;
- ``PRESETS``: ``dict[str, Config]`` of named sizes (e.g. ``'gpt2-medium'``, ``'tiny'``);
- ``Model``: the linen module class, constructed as ``Model(config)``.

A family joins the registry with one line in ``FAMILIES`` below (or ``register_family`` from
outside lmjax). Experiments describe a model as a flat ConfigDict: ``family`` plus exactly the
family Config's fields::

    cfg = models.config_dict('gpt', 'gpt2', dropout=...)   # full field set, locked
    cfg.num_layers = 6                                       # type-checked by ConfigDict
    model = models.build(cfg)                                # -> lmjax.models.gpt.GPT
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import flax.linen as nn
import ml_collections

# family name -> module path. Families are imported lazily, on first use.
FAMILIES: dict[str, str] = {
    "gpt": "lmjax.models.gpt",
    "bert": "lmjax.models.bert",
    "albert": "lmjax.models.albert",
    "electra": "lmjax.models.electra",
    "distilbert": "lmjax.models.distilbert",
    "tinybert": "lmjax.models.tinybert",
    "teacher_student": "lmjax.models.teacher_student",
    "task": "lmjax.models.heads",
    "t5": "lmjax.models.t5",
    "bart": "lmjax.models.bart",
    "meena": "lmjax.models.meena",
}


def register_family(name: str, module_path: str) -> None:
    """Adds a family whose module exposes ``Config``, ``PRESETS`` and ``Model``."""
    if name in FAMILIES and FAMILIES[name] != module_path:
        raise ValueError(f"Model family {name!r} is already registered as {FAMILIES[name]!r}.")
    FAMILIES[name] = module_path


def family_module(family: str) -> ModuleType:
    """Imports and returns the module of ``family``."""
    if family not in FAMILIES:
        raise ValueError(f"Unknown model family {family!r}; known families: {sorted(FAMILIES)}.")
    module = importlib.import_module(FAMILIES[family])
    for name in ("Config", "PRESETS", "Model"):
        if not hasattr(module, name):
            raise TypeError(f"Model family module {module.__name__} does not define {name!r}.")
    return module


def presets(family: str) -> dict[str, Any]:
    """The named presets of ``family``."""
    return dict(family_module(family).PRESETS)


def config_fields(family: str) -> tuple[str, ...]:
    """The names of the fields of ``family``'s Config, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(family_module(family).Config))


def config_dict(family: str, preset: str, **overrides: Any) -> ml_collections.ConfigDict:
    """A locked ConfigDict with ``family`` and every field of the preset, overrides applied.

    Args:
      family: a key of ``FAMILIES`` (e.g. 'gpt').
      preset: a key of the family's ``PRESETS`` (e.g. 'gpt2', 'tiny').
      **overrides: field values replacing the preset's; validated by building the Config.

    Returns:
      ``ConfigDict({'family': family, <field>: <value>, ...})``; tuples stay tuples.

    Raises:
      ValueError: for an unknown family, preset or field, or values the Config rejects.
    """
    module = family_module(family)
    if preset not in module.PRESETS:
        raise ValueError(
            f"Unknown {family!r} preset {preset!r}; known presets: {sorted(module.PRESETS)}."
        )
    _check_fields(family, overrides)
    config = dataclasses.replace(module.PRESETS[preset], **overrides)
    values = {"family": family}
    values.update({f.name: getattr(config, f.name) for f in dataclasses.fields(config)})
    result = ml_collections.ConfigDict(values)
    result.lock()
    return result


def _check_fields(family: str, keys: Any) -> None:
    valid = config_fields(family)
    unknown = [k for k in keys if k not in valid]
    if unknown:
        raise ValueError(
            f"Unknown field(s) {unknown} for model family {family!r}; valid fields: "
            f"{', '.join(valid)}."
        )


def _as_plain_dict(model_cfg: Mapping[str, Any] | ml_collections.ConfigDict) -> dict[str, Any]:
    if isinstance(model_cfg, ml_collections.ConfigDict):
        return model_cfg.to_dict()
    if isinstance(model_cfg, Mapping):
        return dict(model_cfg)
    raise TypeError(f"A model config must be a ConfigDict or a mapping, got {type(model_cfg)}.")


def make_config(model_cfg: Mapping[str, Any] | ml_collections.ConfigDict) -> Any:
    """The family Config dataclass described by ``model_cfg`` ('family' + Config fields).

    Fields missing from ``model_cfg`` take the Config's defaults; lists become tuples.

    Raises:
      ValueError: if 'family' is missing or unknown, or a key is not a field of the family.
    """
    values = _as_plain_dict(model_cfg)
    if "family" not in values:
        raise ValueError(
            f"The model config has no 'family' key (keys: {sorted(values)}); add e.g. "
            f"family='gpt' (known families: {sorted(FAMILIES)})."
        )
    family = values.pop("family")
    module = family_module(family)
    _check_fields(family, values)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return module.Config(**values)


def build(model_cfg: Mapping[str, Any] | ml_collections.ConfigDict) -> nn.Module:
    """Builds the linen module of the family named by ``model_cfg['family']``.

    Args:
      model_cfg: a ConfigDict or dict holding 'family' and (a subset of) the family Config's
        fields, e.g. ``config_dict('gpt', 'tiny')``.

    Returns:
      ``Model(Config(**fields))`` of that family, e.g. a ``lmjax.models.gpt.GPT``.
    """
    values = _as_plain_dict(model_cfg)
    config = make_config(values)
    return family_module(values["family"]).Model(config)
