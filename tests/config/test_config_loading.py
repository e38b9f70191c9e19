"""lmjax.config: experiment arguments and loading, overrides and their errors, validation, JSON."""

import textwrap

import ml_collections
import pytest

from lmjax import config as config_lib
from lmjax.config import (
    ConfigError,
    apply_overrides,
    load_experiment,
    parse_experiment_arg,
    validate,
)


def _experiment_config():
    """A small config with the full experiment layout (no model registry needed)."""
    config = ml_collections.ConfigDict()
    config.model = dict(family="gpt", vocab_size=64, max_len=32, num_layers=2, remat="none")
    config.objective = dict(name="causal_lm")
    config.data = dict(source="python_docs", data_dir="", train_split="train",
                       eval_split="validation", seq_len=16, text_key="text", document_mask=True,
                       shuffle_seed=0, max_documents=ml_collections.config_dict.placeholder(int))
    config.tokenizer = dict(kind="sentencepiece", path="", vocab_size=64, model_type="bpe",
                            byte_fallback=True, character_coverage=1.0, user_defined_symbols=())
    config.optimizer = dict(name="adamw", learning_rate=1e-3, b1=0.9, b2=0.95, eps=1e-8,
                            weight_decay=0.1, weight_decay_mask="matrices",
                            schedule="warmup_cosine", warmup_steps=10,
                            end_learning_rate_fraction=0.1, clip_grad_norm=1.0)
    config.train = dict(steps=100, global_batch=8, grad_accum=1, seed=0, eval_every=50,
                        eval_batches=2, log_every=10, checkpoint_every=50, keep_checkpoints=2,
                        restore_from=None)
    config.mesh = [("data", -1), ("fsdp", 1), ("tensor", 1)]
    config.rules = [("batch", ("data", "fsdp")), ("embed", "fsdp"), ("kv", None)]
    config.generate = dict(prompt="def", max_new_tokens=8, temperature=0.8, top_k=40, top_p=1.0,
                           num_samples=1)
    return config.lock()


# --- experiment arguments ---------------------------------------------------------------------


def test_parse_experiment_arg_types_and_defaults():
    arg = parse_experiment_arg("size=small, sparse=false,steps=30,lr=3e-4",
                               size="tiny", sparse=True, steps=10, lr=1e-3)
    assert (arg.size, arg.sparse, arg.steps, arg.lr) == ("small", False, 30, 3e-4)
    assert parse_experiment_arg(None, size="tiny").size == "tiny"
    assert parse_experiment_arg("", size="tiny").size == "tiny"
    with pytest.raises(AttributeError):
        parse_experiment_arg(None, size="tiny").unknown  # locked: no silent new keys


@pytest.mark.parametrize("arg, message", [
    ("sise=small",
     "Unknown experiment argument 'sise' (did you mean 'size'?); this experiment accepts: size, "
     "sparse"),
    ("size", "Experiment argument 'size' has no '='; write it as key=value, e.g. size=tiny"),
    ("sparse=maybe", "experiment argument 'sparse' expects a bool, got 'maybe'"),
])
def test_parse_experiment_arg_errors(arg, message):
    with pytest.raises(ConfigError) as info:
        parse_experiment_arg(arg, size="tiny", sparse=True)
    assert message in str(info.value)


def test_load_experiment_passes_the_argument_and_locks(tmp_path):
    path = tmp_path / "exp.py"
    path.write_text(textwrap.dedent("""
        import ml_collections
        from lmjax.config import parse_experiment_arg

        def get_config(arg=None):
            arg = parse_experiment_arg(arg, size='tiny', layers=2)
            return ml_collections.ConfigDict(dict(size=arg.size, layers=arg.layers))
    """))
    config = load_experiment(f"{path}:size=big,layers=4")
    assert (config.size, config.layers) == ("big", 4)
    assert config.is_locked
    assert load_experiment(str(path)).size == "tiny"
    assert config_lib.split_experiment_spec("a/b.py:x=1,y=2") == ("a/b.py", "x=1,y=2")
    assert config_lib.split_experiment_spec("a/b.py") == ("a/b.py", None)


def test_load_experiment_errors(tmp_path):
    with pytest.raises(ConfigError, match="Experiment file 'nope/missing.py' not found"):
        load_experiment("nope/missing.py:size=tiny")
    with pytest.raises(ConfigError, match="is not a .py file"):
        load_experiment("experiments/gpt/gpt2")
    (tmp_path / "no_get_config.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="defines no get_config"):
        load_experiment(str(tmp_path / "no_get_config.py"))
    (tmp_path / "returns_dict.py").write_text("def get_config(arg=None):\n    return {}\n")
    with pytest.raises(ConfigError, match="returned dict; it must return an ml_collections"):
        load_experiment(str(tmp_path / "returns_dict.py"))


# --- overrides ------------------------------------------------------------------------------


def test_overrides_parse_to_the_field_types():
    config = _experiment_config()
    apply_overrides(config, [
        "--config.train.steps=50",
        "--config.optimizer.learning_rate", "3e-4",
        "--config.data.document_mask=False",
        "--config.tokenizer.user_defined_symbols=('<a>', '<b>')",
        "--config.mesh=[('data', 2), ('fsdp', 4)]",
        "--config.data.source", "text:/corpus/*.txt",
        "--config.optimizer.warmup_steps=1e2",
        "--config.data.max_documents=12",
        "--config.train.restore_from=runs/old",
        "--config.model.vocab_size=128",
        "--config.optimizer.weight_decay=0",
    ])
    assert config.train.steps == 50 and isinstance(config.train.steps, int)
    assert config.optimizer.learning_rate == 3e-4
    assert config.data.document_mask is False
    assert config.tokenizer.user_defined_symbols == ("<a>", "<b>")
    assert config.mesh == [("data", 2), ("fsdp", 4)]
    assert config.data.source == "text:/corpus/*.txt"
    assert config.optimizer.warmup_steps == 100
    assert config.data.max_documents == 12  # a typed placeholder
    assert config.train.restore_from == "runs/old"  # a None field takes a literal or the text
    assert config.optimizer.weight_decay == 0.0 and isinstance(config.optimizer.weight_decay, float)
    apply_overrides(config, ["--config.data.document_mask"])
    assert config.data.document_mask is True  # a bare bool flag means True
    fresh = apply_overrides(_experiment_config(), ["--config.data.max_documents=none"])
    assert fresh.data.max_documents is None


def test_unknown_key_names_the_full_key_and_suggests():
    config = _experiment_config()
    with pytest.raises(ConfigError) as info:
        apply_overrides(config, ["--config.train.setps=5"])
    message = str(info.value)
    assert message.startswith(
        "Unknown config key --config.train.setps (section config.train exists)"
    )
    assert "did you mean --config.train.steps" in message
    with pytest.raises(ConfigError, match="did you mean --config.optimizer.learning_rate"):
        apply_overrides(config, ["--config.train.learning_rate=1"])
    with pytest.raises(ConfigError, match="--config.nothing.here; top-level sections are: data"):
        apply_overrides(config, ["--config.nothing.here=1"])


@pytest.mark.parametrize("override, message", [
    ("--config.train.steps=ten", "--config.train.steps expects an int, got 'ten'; e.g. 100"),
    ("--config.train.steps=1.5", "--config.train.steps expects an int, got '1.5'"),
    ("--config.optimizer.learning_rate=fast",
     "--config.optimizer.learning_rate expects a float, got 'fast'"),
    ("--config.data.document_mask=maybe",
     "--config.data.document_mask expects a bool, got 'maybe'"),
    ("--config.tokenizer.user_defined_symbols=<a>",
     "--config.tokenizer.user_defined_symbols expects a tuple literal, got '<a>'"),
    ("--config.train.steps=None", "--config.train.steps expects an int, got 'None'"),
    ("--config.data.max_documents=many", "--config.data.max_documents expects an int, got 'many'"),
])
def test_wrong_type_names_key_type_and_value(override, message):
    with pytest.raises(ConfigError) as info:
        apply_overrides(_experiment_config(), [override])
    assert message in str(info.value)


def test_override_token_errors():
    config = _experiment_config()
    with pytest.raises(ConfigError, match="--config.train is a section, not a field"):
        apply_overrides(config, ["--config.train=3"])
    with pytest.raises(ConfigError, match="Unexpected argument '--steps=3'"):
        apply_overrides(config, ["--steps=3"])
    with pytest.raises(ConfigError, match="--config.train.steps has no value"):
        apply_overrides(config, ["--config.train.steps", "--config.train.seed=1"])
    with pytest.raises(ConfigError, match="not a valid key"):
        apply_overrides(config, ["--config..steps=1"])


# --- validation -----------------------------------------------------------------------------


def test_validate_accepts_a_good_config():
    assert validate(_experiment_config()) is not None


@pytest.mark.parametrize("override, message", [
    ("--config.train.grad_accum=3",
     "config.train.global_batch (8) must be divisible by config.train.grad_accum (3)"),
    ("--config.train.steps=0", "config.train.steps must be > 0, got 0"),
    ("--config.optimizer.schedule=cosine", "config.optimizer.schedule is 'cosine'"),
    ("--config.optimizer.name=adam", "config.optimizer.name is 'adam' (did you mean 'adamw'?)"),
    ("--config.tokenizer.vocab_size=100",
     "config.tokenizer.vocab_size (100) exceeds config.model.vocab_size (64)"),
    ("--config.data.seq_len=64", "config.data.seq_len (64) exceeds config.model.max_len (32)"),
    ("--config.data.source=wikipedia", "config.data.source is 'wikipedia'"),
    ("--config.generate.top_p=0", "config.generate.top_p must be in (0, 1], got 0.0"),
    ("--config.mesh=[('data', -1), ('fsdp', -1)]",
     "config.mesh may give size -1 (all remaining devices) to one axis only"),
    ("--config.mesh=[('data', 0)]", "config.mesh entry ('data', 0) must be (axis_name, size)"),
    ("--config.rules=[('batch', 3)]",
     "config.rules entry ('batch', 3) must be (logical_name, mesh_axis | tuple | None)"),
    ("--config.tokenizer.kind=hf_json",
     "config.tokenizer.kind is 'hf_json' but config.tokenizer.path is empty"),
])
def test_validate_names_the_problem(override, message):
    config = apply_overrides(_experiment_config(), [override])
    with pytest.raises(ConfigError) as info:
        validate(config)
    assert message in str(info.value)


def test_validate_lists_every_problem_and_missing_sections():
    config = apply_overrides(
        _experiment_config(), ["--config.train.steps=0", "--config.train.log_every=0"]
    )
    with pytest.raises(ConfigError) as info:
        validate(config)
    assert "config.train.steps must be > 0" in str(info.value)
    assert "config.train.log_every must be > 0" in str(info.value)
    partial = ml_collections.ConfigDict({"model": {"family": "gpt"}, "train": {"steps": 1}})
    with pytest.raises(ConfigError) as info:
        validate(partial)
    assert "missing section config.optimizer" in str(info.value)
    assert "config.train lacks field(s) global_batch" in str(info.value)


def test_choices_match_the_train_package():
    from lmjax.train import optimizers

    assert set(config_lib.SCHEDULES) == set(optimizers.SCHEDULES)
    assert set(config_lib.OPTIMIZER_NAMES) == set(optimizers.OPTIMIZERS)
    assert set(config_lib.WEIGHT_DECAY_MASKS) == set(optimizers.WEIGHT_DECAY_MASKS)


# --- JSON -----------------------------------------------------------------------------------


def test_json_round_trip_keeps_tables_and_tuples():
    config = _experiment_config()
    apply_overrides(config, ["--config.tokenizer.user_defined_symbols=('<a>',)"])
    restored = config_lib.config_from_json(config_lib.config_to_json(config))
    assert restored.mesh == config.mesh
    assert restored.rules == config.rules
    assert restored.tokenizer.user_defined_symbols == ("<a>",)
    assert restored.train.to_dict() == config.train.to_dict()
    assert restored.is_locked
    apply_overrides(restored, ["--config.train.steps=7"])  # still typed after the round trip
    assert restored.train.steps == 7
