"""lmjax.models: build / config_dict / make_config and the family registry."""

import dataclasses
import sys
import types

import flax.linen as nn
import ml_collections
import pytest

from lmjax import models
from lmjax.models import gpt


def test_config_dict_has_every_field_and_is_locked():
    cfg = models.config_dict("gpt", "gpt2-medium", dtype="bfloat16")
    fields = [f.name for f in dataclasses.fields(gpt.GPTConfig)]
    assert set(cfg.keys()) == {"family", *fields}
    assert cfg.family == "gpt" and cfg.num_layers == 24 and cfg.dtype == "bfloat16"
    with pytest.raises(AttributeError):
        cfg.not_a_field = 1  # locked: typos fail
    with pytest.raises(TypeError):
        cfg.num_layers = "twelve"  # type-checked


def test_build_returns_the_family_module():
    cfg = models.config_dict("gpt", "tiny")
    cfg.num_layers = 2
    model = models.build(cfg)
    assert isinstance(model, gpt.GPT)
    assert model.config == dataclasses.replace(gpt.PRESETS["tiny"], num_layers=2)
    # A plain dict with a subset of fields takes the Config's defaults for the rest.
    assert models.build({"family": "gpt", "num_layers": 3}).config == gpt.GPTConfig(num_layers=3)


def test_unknown_keys_are_errors_that_list_valid_fields():
    with pytest.raises(ValueError, match=r"\['n_layer'\].*valid fields: vocab_size, max_len"):
        models.build({"family": "gpt", "n_layer": 3})
    with pytest.raises(ValueError, match="n_layer"):
        models.config_dict("gpt", "gpt2", n_layer=3)
    with pytest.raises(ValueError, match="no 'family' key"):
        models.build({"num_layers": 3})
    with pytest.raises(ValueError, match="known families"):
        models.build({"family": "gpt5"})
    with pytest.raises(ValueError, match="known presets"):
        models.config_dict("gpt", "gpt4")
    with pytest.raises(ValueError, match="norm='side'"):
        models.config_dict("gpt", "gpt2", norm="side")


def test_registry_plugs_in_new_families_and_keeps_tuples():
    @dataclasses.dataclass(frozen=True)
    class ToyConfig:
        widths: tuple[int, ...] = (4, 8)
        name: str = "toy"

    class Toy(nn.Module):
        config: ToyConfig

    module = types.ModuleType("toy_family_for_tests")
    module.Config, module.Model = ToyConfig, Toy
    module.PRESETS = {"small": ToyConfig(), "big": ToyConfig(widths=(16, 32, 64))}
    sys.modules[module.__name__] = module
    models.register_family("toy", module.__name__)
    try:
        cfg = models.config_dict("toy", "big")
        assert isinstance(cfg, ml_collections.ConfigDict)
        assert cfg.widths == (16, 32, 64) and isinstance(cfg.widths, tuple)
        built = models.build({"family": "toy", "widths": [1, 2]})  # a list from a CLI
        assert isinstance(built, Toy) and built.config.widths == (1, 2)
        assert set(models.presets("toy")) == {"small", "big"}
        with pytest.raises(ValueError, match="already registered"):
            models.register_family("toy", "elsewhere")
    finally:
        del models.FAMILIES["toy"]
        del sys.modules[module.__name__]
