"""Every experiment file and size loads, validates and describes a buildable model (no arrays)."""

import ast
import glob
import os

import pytest

from lmjax import axes, models
from lmjax.config import ConfigError, apply_overrides, load_experiment, validate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL_EXPERIMENT_FILES = sorted(
    os.path.relpath(path, REPO)
    for path in glob.glob(os.path.join(REPO, "experiments", "*", "*.py"))
    if not os.path.basename(path).startswith("_")
)
# Fine-tuning experiments start from a pre-training run: checked in their own tests below.
FINETUNE_DIR = "experiments/finetune/"
EXPERIMENT_FILES = [p for p in ALL_EXPERIMENT_FILES if not p.startswith(FINETUNE_DIR)]
FINETUNE_VARIANTS = {
    "experiments/finetune/docs.py": ["task=docs_package", "task=docs_consecutive",
                                     "task=docs_continuation,epochs=3,lr=3e-5"],
    "experiments/finetune/squad.py": ["version=1.1", "version=2.0,seq_len=128,doc_stride=32"],
}
VARIANTS = {
    "experiments/gpt/gpt1.py": ["size=tiny", "size=base", "size=tiny,recipe=finetune",
                                "size=base,recipe=finetune"],
    "experiments/gpt/gpt2.py": ["size=tiny", "size=small", "size=medium", "size=large", "size=xl"],
    "experiments/gpt/gpt3.py": ["size=tiny", "size=small", "size=medium", "size=large", "size=xl",
                                "size=2.7b", "size=6.7b", "size=13b", "size=175b",
                                "size=small,sparse=false"],
    "experiments/gpt/demo.py": [None, "steps=20"],
    "experiments/encoders/bert.py": ["size=tiny", "size=mini", "size=small", "size=medium",
                                     "size=base", "size=large"],
    "experiments/encoders/roberta.py": ["size=tiny", "size=base", "size=large"],
    "experiments/encoders/albert.py": ["size=tiny", "size=base", "size=large", "size=xlarge",
                                       "size=xxlarge"],
    "experiments/encoders/electra.py": ["size=tiny", "size=small", "size=base", "size=large"],
    "experiments/encoders/distilbert.py": ["size=tiny", "size=base"],
    "experiments/encoders/tinybert.py": ["size=tiny", "size=4l", "size=6l"],
}
# The objective each experiment file trains.
OBJECTIVES = {
    "bert.py": "mlm_nsp", "roberta.py": "mlm", "albert.py": "mlm_sop", "electra.py": "electra",
    "distilbert.py": "distilbert", "tinybert.py": "tinybert_intermediate",
}
SPECS = [
    path if arg is None else f"{path}:{arg}" for path, args in VARIANTS.items() for arg in args
]


def test_every_experiment_file_is_covered():
    assert EXPERIMENT_FILES == sorted(VARIANTS), "add the new experiment's variants to VARIANTS"
    finetune_files = [p for p in ALL_EXPERIMENT_FILES if p.startswith(FINETUNE_DIR)]
    assert finetune_files == sorted(FINETUNE_VARIANTS), "add them to FINETUNE_VARIANTS"


def _fake_run(directory, family):
    """A directory with the config.json of a pre-training run of ``family`` (what the
    fine-tuning experiments read to pick their recipe)."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        f.write('{"model": {"family": "%s"}}' % family)
    return str(directory)


@pytest.mark.parametrize("spec", [f"{path}:{arg}" for path, args in FINETUNE_VARIANTS.items()
                                  for arg in args])
@pytest.mark.parametrize("family", ["bert", "gpt"])
def test_finetune_experiment_loads_and_checks(spec, family, tmp_path):
    from lmjax.train.finetune import check_finetune_config

    init = _fake_run(tmp_path / "run", family)
    config = load_experiment(f"{spec},init={init}")
    check_finetune_config(config)
    assert config.is_locked and config.init.workdir == init
    assert config.mesh == [("data", -1), ("fsdp", 1), ("tensor", 1)]
    gpt1_recipe = family == "gpt" and "docs.py" in spec
    # GPT-1 train.py: warm-up over 0.2% and lm_coef 0.5; BERT run_classifier.py: 10%
    assert config.train.warmup_fraction == (0.002 if gpt1_recipe else 0.1)
    assert config.optimizer.schedule == "warmup_linear"
    with open(os.path.join(REPO, spec.split(":")[0])) as f:
        docstring = ast.get_docstring(ast.parse(f.read()))
    assert "lmjax finetune" in docstring and "should" in docstring


@pytest.mark.parametrize("spec", SPECS)
def test_experiment_loads_validates_and_builds_its_model_config(spec):
    config = validate(load_experiment(spec))
    assert config.is_locked
    path = spec.split(":")[0]
    assert config.objective.name == OBJECTIVES.get(os.path.basename(path), "causal_lm")
    if "/gpt/" in path or spec.endswith("size=tiny"):
        assert config.data.source == "python_docs"
    else:  # encoder sizes beyond tiny read prepared TFDS data
        assert config.data.source.startswith("tfds:")
    assert config.mesh == [("data", -1), ("fsdp", 1), ("tensor", 1)]
    assert config.rules == [tuple(rule) for rule in axes.DEFAULT_RULES]
    # DistilBERT's distiller.py clips at 5.0; every other recipe at 1.0.
    assert config.optimizer.clip_grad_norm == (5.0 if "distilbert" in spec else 1.0)
    assert config.optimizer.weight_decay_mask == "matrices"
    model_config = models.make_config(config.model)  # the frozen dataclass: checks every field
    if config.model.family == "teacher_student":  # the networks' configs live inside
        model_config = model_config.student_config()
    else:
        assert model_config.num_layers == config.model.num_layers
    assert config.tokenizer.vocab_size == model_config.vocab_size
    assert config.data.seq_len <= model_config.max_len


def test_docstrings_give_the_command_and_the_target():
    for path in EXPERIMENT_FILES:
        with open(os.path.join(REPO, path)) as f:
            docstring = ast.get_docstring(ast.parse(f.read()))
        assert docstring and f"lmjax train --config {path}" in docstring, path
        assert "should" in docstring, f"{path}: say what the run should reach"


@pytest.mark.parametrize("spec, layers, width, heads", [
    ("experiments/gpt/gpt2.py:size=small", 12, 768, 12),
    ("experiments/gpt/gpt2.py:size=xl", 48, 1600, 25),
    ("experiments/gpt/gpt1.py:size=base", 12, 768, 12),
    ("experiments/gpt/gpt3.py:size=175b", 96, 12288, 96),
])
def test_sizes_match_the_papers(spec, layers, width, heads):
    model = load_experiment(spec).model
    assert (model.num_layers, model.embed_dim, model.num_heads) == (layers, width, heads)
    assert model.mlp_dim == 4 * width


def test_gpt1_pretraining_recipe_is_the_default():
    config = load_experiment("experiments/gpt/gpt1.py:size=base")
    assert config.tokenizer.user_defined_symbols == ("_start_", "_delimiter_", "_classify_")
    assert config.model.vocab_size == config.tokenizer.vocab_size == 40478 + 3
    assert config.model.norm == "post" and not config.model.final_norm
    opt = config.optimizer
    settings = (opt.learning_rate, opt.schedule, opt.warmup_steps, opt.end_learning_rate_fraction)
    assert settings == (2.5e-4, "warmup_cosine", 2000, 0.0)  # paper section 4.1
    assert (opt.b2, opt.weight_decay) == (0.999, 0.01)
    assert (config.train.global_batch, config.data.seq_len) == (64, 512)
    # 100 epochs of ~1.2B BooksCorpus tokens, 64 x 512 tokens per step.
    assert config.train.steps == pytest.approx(100 * 1.2e9 / (64 * 512), abs=1)
    tiny = load_experiment("experiments/gpt/gpt1.py:size=tiny")
    assert (tiny.optimizer.schedule, tiny.optimizer.end_learning_rate_fraction) == (
        "warmup_cosine", 0.0
    )


def test_gpt1_finetune_recipe_has_the_reference_code_settings():
    config = load_experiment("experiments/gpt/gpt1.py:size=base,recipe=finetune")
    opt = config.optimizer
    settings = (opt.learning_rate, opt.schedule, opt.b2, opt.weight_decay)
    assert settings == (6.25e-5, "warmup_linear", 0.999, 0.01)
    assert config.train.global_batch == 32
    assert opt.warmup_steps == int(0.002 * config.train.steps)
    apply_overrides(config, ["--config.train.steps=10000"])
    assert config.optimizer.warmup_steps == 20  # 0.2% of the run follows the step count


def test_gpt1_and_gpt3_change_only_the_sections_that_differ_from_gpt2():
    gpt2 = load_experiment("experiments/gpt/gpt2.py:size=tiny")
    for spec in ("experiments/gpt/gpt1.py:size=tiny", "experiments/gpt/gpt3.py:size=tiny"):
        config = load_experiment(spec)
        for section in ("objective", "data", "train", "mesh", "rules", "generate"):
            assert config[section] == gpt2[section], f"{spec}: {section}"
        apply_overrides(config, ["--config.model.vocab_size=1000"])
        assert config.tokenizer.vocab_size == 1000  # still linked after the model swap


def test_gpt3_sparse_option_and_per_size_settings():
    sparse = load_experiment("experiments/gpt/gpt3.py:size=small")
    dense = load_experiment("experiments/gpt/gpt3.py:size=small,sparse=false")
    assert sparse.model.attention_pattern == "alternating_local"
    assert dense.model.attention_pattern == "dense"
    assert (sparse.optimizer.b2, sparse.optimizer.weight_decay) == (0.95, 0.1)
    big = load_experiment("experiments/gpt/gpt3.py:size=175b")
    assert big.optimizer.learning_rate == pytest.approx(0.6e-4)
    assert big.train.global_batch * big.data.seq_len == 1536 * 2048  # ~3.2M tokens
    assert sparse.train.global_batch * sparse.data.seq_len == 256 * 2048  # ~0.5M tokens


def test_gpt2_small_is_124m_parameters():
    from lmjax.models import gpt

    config = load_experiment("experiments/gpt/gpt2.py:size=small")
    assert gpt.count_params(models.make_config(config.model)) == pytest.approx(124.4e6, rel=0.01)


def test_tokenizer_vocab_follows_the_model_override():
    config = load_experiment("experiments/gpt/demo.py")
    apply_overrides(config, ["--config.model.vocab_size=1024"])
    assert config.tokenizer.vocab_size == 1024


def test_bad_experiment_arguments_are_config_errors():
    expected = "Unknown experiment argument 'sizes' \\(did you mean 'size'\\?\\)"
    with pytest.raises(ConfigError, match=expected):
        load_experiment("experiments/gpt/gpt2.py:sizes=small")
    with pytest.raises(ValueError, match="unknown size 'huge'; choose one of tiny, small"):
        load_experiment("experiments/gpt/gpt2.py:size=huge")
