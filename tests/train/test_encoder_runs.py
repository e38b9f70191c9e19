"""The encoder experiments end to end: each tiny experiment of ``experiments/encoders`` trains a
few steps through ``lmjax.train.loop.train`` on a small text corpus, and a teacher run is
distilled into DistilBERT and TinyBERT students."""

import os

import jax
import numpy as np
import pytest

from lmjax import models
from lmjax.config import apply_overrides, load_experiment, validate
from lmjax.models import teacher_student
from lmjax.train import loop
from lmjax.train.logging import read_metrics
from lmjax.train.trained_run import load_trained_run

# Shrinks a tiny encoder experiment to 2 layers, 32-token rows and 3 steps on the tiny corpus.
_ENCODER_OVERRIDES = (
    "--config.model.num_layers=2",
    "--config.data.source=text:{corpus}/{{split}}/*.txt",
    "--config.data.seq_len=32",
    "--config.tokenizer.vocab_size=384",
    "--config.train.steps=3",
    "--config.train.global_batch=8",
    "--config.train.eval_every=0",
    "--config.train.eval_batches=1",
    "--config.train.log_every=1",
    "--config.train.checkpoint_every=0",
)
# Keys each objective must log besides loss / accuracy / num_tokens.
_OBJECTIVE_METRICS = {
    "bert.py": ("mlm_loss", "nsp_loss", "nsp_accuracy"),
    "roberta.py": (),
    "albert.py": ("mlm_loss", "sop_loss", "sop_accuracy"),
    "electra.py": ("generator_loss", "discriminator_loss", "replaced_fraction", "replaced_recall"),
}


def encoder_config(tiny_corpus, file, *extra):
    config = load_experiment(f"experiments/encoders/{file}:size=tiny")
    overrides = [item.format(corpus=tiny_corpus) for item in _ENCODER_OVERRIDES]
    # The model section links the tokenizer's vocabulary.
    overrides = [o.replace("tokenizer.vocab_size", "model.vocab_size") for o in overrides]
    apply_overrides(config, overrides + list(extra))
    return validate(config)


def distillation_config(file, teacher_workdir, *extra):
    """``file`` built from the teacher run (its data, tokenizer and model), 3 steps."""
    config = load_experiment(f"experiments/encoders/{file}:teacher={teacher_workdir}")
    train_overrides = [o for o in _ENCODER_OVERRIDES if o.startswith("--config.train.")]
    apply_overrides(config, train_overrides + list(extra))
    return validate(config)


@pytest.fixture(scope="module")
def teacher_workdir(tmp_path_factory, tiny_corpus):
    """A 3-step tiny BERT run: the teacher of the distillation tests."""
    workdir = str(tmp_path_factory.mktemp("bert_teacher"))
    # The teacher must be the distillation experiments' model.teacher: keep its 4 layers.
    config = load_experiment("experiments/encoders/bert.py:size=tiny")
    overrides = [item.format(corpus=tiny_corpus) for item in _ENCODER_OVERRIDES]
    overrides = [o.replace("tokenizer.vocab_size", "model.vocab_size") for o in overrides
                 if "num_layers" not in o]
    apply_overrides(config, overrides)
    loop.train(validate(config), workdir)
    return workdir


@pytest.mark.parametrize("file", sorted(_OBJECTIVE_METRICS))
def test_tiny_encoder_experiment_trains(tmp_path, tiny_corpus, file):
    summary = loop.train(encoder_config(tiny_corpus, file), str(tmp_path))
    records = [r for r in read_metrics(str(tmp_path)) if r.get("split") == "train"]
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:
        for key in ("loss", "accuracy", "num_tokens") + _OBJECTIVE_METRICS[file]:
            assert np.isfinite(record[key]), (file, key)
    assert summary["step"] == 3 and np.isfinite(summary["final_eval_loss"])
    # An encoder has no next-token baseline and writes no samples.
    assert summary["unigram_baseline_loss"] is None and summary["samples"] is None
    assert os.listdir(summary["checkpoint_dir"]) == ["3"]


def test_electra_labels_replacements_against_the_original_tokens(tmp_path, tiny_corpus):
    loop.train(encoder_config(tiny_corpus, "electra.py"), str(tmp_path))
    record = [r for r in read_metrics(str(tmp_path)) if r.get("split") == "train"][-1]
    # Replaced tokens are a subset of the ~15% predicted ones (some samples equal the original).
    assert 0.0 < record["replaced_fraction"] <= 0.2
    assert 0.0 <= record["replaced_recall"] <= 1.0


def test_distilbert_student_starts_from_teacher_layers_and_the_teacher_stays_frozen(
    tmp_path, tiny_corpus, teacher_workdir
):
    config = distillation_config(
        "distilbert.py", teacher_workdir,
        "--config.optimizer.schedule=constant",
        "--config.optimizer.learning_rate=1e-12",  # the student barely moves from its init
    )
    summary = loop.train(config, str(tmp_path))
    assert summary["step"] == 3
    teacher = load_trained_run(teacher_workdir)
    run = load_trained_run(str(tmp_path))
    # The teacher's parameters are the trained teacher's, bit for bit, after 3 steps.
    jax.tree_util.tree_map(
        np.testing.assert_array_equal, run.params["teacher"], teacher.params
    )
    # The student began as teacher layers (0, 3) of the 4-layer teacher.
    expected = teacher_student.student_params_from_teacher(
        models.make_config(config.model), jax.device_get(teacher.params)
    )
    jax.tree_util.tree_map(
        lambda got, want: np.testing.assert_allclose(got, want, atol=1e-8),
        jax.device_get(run.params["student"]), expected,
    )
    # The student reads the teacher's tokenizer, copied into its own workdir.
    assert os.path.isfile(os.path.join(str(tmp_path), "tokenizer", "sentencepiece.model"))
    records = [r for r in read_metrics(str(tmp_path)) if r.get("split") == "train"]
    assert all(np.isfinite(r["loss"]) for r in records)


def test_tinybert_general_distillation_trains_a_random_student(
    tmp_path, tiny_corpus, teacher_workdir
):
    config = distillation_config("tinybert.py", teacher_workdir)
    loop.train(config, str(tmp_path))
    records = [r for r in read_metrics(str(tmp_path)) if r.get("split") == "train"]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in records)
    teacher = load_trained_run(teacher_workdir)
    run = load_trained_run(str(tmp_path))
    jax.tree_util.tree_map(np.testing.assert_array_equal, run.params["teacher"], teacher.params)


def test_distillation_without_a_teacher_run_is_a_clear_error(tmp_path, tiny_corpus):
    config = load_experiment("experiments/encoders/distilbert.py")
    apply_overrides(config, [f"--config.data.source=text:{tiny_corpus}/{{split}}/*.txt"])
    with pytest.raises(ValueError, match="distillation.teacher_workdir is empty.*:teacher="):
        loop.train(validate(config), str(tmp_path))


def test_teacher_that_is_not_model_teacher_is_a_clear_error(
    tmp_path, tiny_corpus, teacher_workdir
):
    config = distillation_config("distilbert.py", teacher_workdir)
    config.unlock()
    fields = dict(config.model.teacher)
    fields["num_heads"] = 4
    config.model.teacher = tuple(fields.items())
    with pytest.raises(ValueError, match=r"is not the experiment's model.teacher \(num_heads"):
        loop.train(config, str(tmp_path))


def test_tokenizer_without_mask_piece_is_a_clear_error(tmp_path, tiny_corpus):
    config = encoder_config(tiny_corpus, "bert.py", "--config.tokenizer.user_defined_symbols=[]")
    with pytest.raises(ValueError, match=r"\[MASK\].*user_defined_symbols"):
        loop.train(config, str(tmp_path))


def test_generate_from_an_encoder_run_is_a_clear_error(teacher_workdir, capsys):
    from lmjax import cli

    assert cli.main(["generate", "--workdir", teacher_workdir, "--prompt", "def"]) == 2
    err = capsys.readouterr().err
    assert "trained a 'bert' model with the 'mlm_nsp' objective" in err
    assert len(err.strip().splitlines()) == 1
