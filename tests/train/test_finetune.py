"""``lmjax finetune`` end to end: tiny BERT and GPT pre-training runs fine-tuned on the offline
docs tasks through the generic train step, the best epoch kept, resumable, readable back."""

import glob
import json
import os

import jax
import numpy as np
import pytest

# The reference library builds the "published" weights: a test-only dependency, never skipped.
import torch  # noqa: E402
import transformers  # noqa: E402

from lmjax import convert
from lmjax.config import apply_overrides, load_experiment
from lmjax.data.finetune_tasks import load_task
from lmjax.train import finetune
from lmjax.train.trained_run import load_trained_run
from tests.tiny_runs import TINY_GPT_SHRINK, pretrained_tiny_run

# 16-word passages in 32-token rows, 64 training examples: batches of 32 (4 per fake device).
_FINETUNE = (
    "--config.task.seq_len=32",
    "--config.task.words_per_passage=16",
    "--config.task.max_train_examples=64",
    "--config.task.max_eval_examples=40",
    "--config.train.log_every=50",
)


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory, tiny_corpus):
    return pretrained_tiny_run(tmp_path_factory.mktemp("bert"), tiny_corpus,
                               "experiments/encoders/bert.py:size=tiny")


@pytest.fixture(scope="module")
def gpt1_run(tmp_path_factory, tiny_corpus):
    return pretrained_tiny_run(tmp_path_factory.mktemp("gpt1"), tiny_corpus,
                               "experiments/gpt/gpt1.py:size=tiny", *TINY_GPT_SHRINK)


def finetune_config(task, init, *extra):
    config = load_experiment(f"experiments/finetune/docs.py:task={task},init={init},epochs=2")
    apply_overrides(config, list(_FINETUNE) + list(extra))
    return config


def test_bert_fine_tunes_keeps_the_best_epoch_and_resumes(tmp_path, bert_run):
    config = finetune_config("docs_package", bert_run)
    result = finetune.finetune(config, str(tmp_path))
    assert [e["epoch"] for e in result["epochs"]] == [1, 2]
    for scores in result["epochs"]:
        assert 0.0 <= scores["accuracy"] <= 1.0 and 0.0 < scores["majority_baseline"] < 1.0
        # the objective's own accuracy over the padded eval batches equals the task scorer's
        assert scores["objective_accuracy"] == pytest.approx(scores["accuracy"], abs=1e-6)
    best = max(result["epochs"], key=lambda e: e["accuracy"])
    assert result["best_score"] == best["accuracy"] and result["best_epoch"] == best["epoch"]
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["best_epoch"] == result["best_epoch"]
    # the best epoch is a complete run directory: config, tokenizer, checkpoint
    run = load_trained_run(result["best_dir"])
    assert run.step == best["step"] and run.config.model.family == "task"
    pretrained_params = load_trained_run(bert_run).params
    assert jax.tree_util.tree_structure(run.params["backbone"]) == jax.tree_util.tree_structure(
        pretrained_params)
    # predictions of the loaded best run reproduce its validation accuracy
    evaluation = load_task(config.task).evaluation
    outputs = finetune.fine_tuned_outputs(run, evaluation, batch_size=16)
    np.testing.assert_allclose(outputs["probabilities"].sum(-1), 1.0, rtol=1e-5)
    predicted = outputs["class_logits"].argmax(-1)
    accuracy = np.mean(predicted == [e.label for e in evaluation])
    assert accuracy == pytest.approx(best["accuracy"], abs=1e-6)
    # a second call finds the last epoch done and leaves the results as they were
    again = finetune.finetune(config, str(tmp_path))
    assert again["epochs"] == result["epochs"]


def test_gpt1_multiple_choice_through_its_extract_token_with_the_auxiliary_lm_loss(tmp_path,
                                                                                   gpt1_run):
    # ROCStories' format: one `_start_ context _delimiter_ choice _classify_` row per choice
    config = finetune_config("docs_continuation", gpt1_run, "--config.train.epochs=1")
    result = finetune.finetune(config, str(tmp_path))
    assert result["task"] == "docs_continuation"
    scores = result["epochs"][0]
    assert 0.0 <= scores["accuracy"] <= 1.0
    assert np.isfinite(scores["objective_lm_loss"]) and scores["objective_lm_loss"] > 0
    run = load_trained_run(result["best_dir"])
    backbone = dict(run.config.model.backbone)
    assert run.config.model.feature in ("auto", "extract") and run.config.model.extract_id >= 0
    assert run.config.model.head == "multiple_choice" and run.config.model.share_choice_dropout
    # gpt1.py reserves _start_ / _delimiter_ / _classify_ in its tokenizer: no rows appended
    assert backbone["vocab_size"] == 384
    assert run.tokenizer.id_to_piece(run.config.model.extract_id) == "_classify_"


def test_bad_fine_tuning_configs_name_the_fix(tmp_path, bert_run):
    config = load_experiment("experiments/finetune/docs.py:task=docs_package")
    with pytest.raises(ValueError, match="init.workdir is empty"):
        finetune.finetune(config, str(tmp_path))
    with pytest.raises(ValueError, match="unknown task"):
        load_experiment("experiments/finetune/docs.py:task=docs_topic")
    config = finetune_config("docs_package", bert_run, "--config.train.global_batch=100000")
    with pytest.raises(ValueError, match="fewer than one batch"):
        finetune.finetune(config, str(tmp_path))
    assert not os.path.exists(tmp_path / "checkpoints")


def _hf_bert_directory(directory):
    """A randomly initialised tiny HF BERT saved as safetensors with a character WordPiece
    vocab.txt: 'published weights' made offline."""
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *(f"##{c}" for c in letters),
             *".,:;()[]'\"_=-+*/<>"]
    os.makedirs(directory)
    with open(os.path.join(directory, "vocab.txt"), "w") as f:
        f.write("".join(piece + "\n" for piece in vocab))
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertForPreTraining(config).save_pretrained(directory, safe_serialization=True)
    return str(directory)


def test_fine_tuning_starts_from_imported_hugging_face_weights(tmp_path):
    hf_dir = _hf_bert_directory(tmp_path / "hf_bert")
    config = load_experiment(f"experiments/finetune/docs.py:task=docs_package,hf={hf_dir},"
                             "epochs=1,lr=1e-12")
    apply_overrides(config, list(_FINETUNE))
    result = finetune.finetune(config, str(tmp_path / "ft"))
    run = load_trained_run(result["best_dir"])
    assert dict(run.config.model.backbone)["family"] == "bert"
    assert os.path.isfile(tmp_path / "ft" / "tokenizer" / "vocab.txt")  # the run keeps a copy
    # at a learning rate of 1e-12 the backbone is still the imported one
    _, imported = convert.load_hf_bert(hf_dir)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
                           jax.device_get(run.params["backbone"]), imported)


def test_glue_tasks_fine_tune_through_the_same_path(tmp_path, bert_run):
    task, metrics = "glue/stsb", ("pearson", "spearman", "score")  # the regression head
    import tensorflow_datasets as tfds
    import tensorflow_datasets.text.glue  # noqa: F401  registers glue/* for the mock

    config = load_experiment(f"experiments/finetune/docs.py:init={bert_run},epochs=1")
    apply_overrides(config, list(_FINETUNE))
    config.task.name = task  # the docs experiment's sections, pointed at a GLUE task
    config.task.data_dir = str(tmp_path / "tfds")
    with tfds.testing.mock_data(num_examples=40):
        result = finetune.finetune(config, str(tmp_path / "ft"))
    scores = result["epochs"][0]
    for name in metrics:
        assert name in scores and (np.isfinite(scores[name]) or name != "score" and
                                   np.isnan(scores[name]))  # a constant prediction: nan r
    run = load_trained_run(result["best_dir"])
    assert run.config.model.head == "regression" and run.config.input_format.head == "regression"


def _hf_gpt2_directory(directory, texts):
    """A randomly initialised tiny HF GPT-2 with a byte-level BPE tokenizer.json: published
    weights whose vocabulary has no GPT-1 special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    os.makedirs(directory)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.save(os.path.join(directory, "tokenizer.json"))
    config = transformers.GPT2Config(vocab_size=bpe.get_vocab_size(), n_positions=32, n_embd=32,
                                     n_layer=2, n_head=2)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(directory, safe_serialization=True)
    return str(directory), bpe.get_vocab_size()


def test_gpt_without_gpt1_specials_gets_three_new_embedding_rows(tmp_path, tiny_corpus):
    texts = [open(path).read() for path in sorted(glob.glob(f"{tiny_corpus}/train/*.txt"))]
    hf_dir, vocab = _hf_gpt2_directory(tmp_path / "hf_gpt2", texts)
    config = load_experiment(f"experiments/finetune/docs.py:task=docs_package,hf={hf_dir},"
                             "epochs=1,lr=1e-12")
    apply_overrides(config, list(_FINETUNE))
    assert config.train.warmup_fraction == 0.002  # GPT-1's recipe for a GPT backbone
    result = finetune.finetune(config, str(tmp_path / "ft"))
    run = load_trained_run(result["best_dir"])
    assert dict(run.config.model.backbone)["vocab_size"] == vocab + 3
    assert run.config.model.extract_id == vocab + 2  # _start_, _delimiter_, _classify_ appended
    # the imported rows are kept, the 3 new ones are drawn (lr 1e-12: nothing moved)
    _, imported = convert.load_hf_gpt(hf_dir)
    tuned = jax.device_get(run.params["backbone"])
    widened = 0
    for old, new in zip(jax.tree_util.tree_leaves(imported), jax.tree_util.tree_leaves(tuned)):
        if old.shape != new.shape:
            assert new.shape[0] == old.shape[0] + 3
            np.testing.assert_allclose(new[: old.shape[0]], old, atol=1e-6)
            assert 0.0 < np.std(new[old.shape[0]:]) < 0.1
            widened += 1
        else:
            np.testing.assert_allclose(new, old, atol=1e-6)
    assert widened >= 1


def test_best_epoch_rule_handles_nan_scores():
    progress = finetune.Progress()
    assert progress.improved_by(float("nan"))  # the first epoch is kept whatever it scores
    progress.best_epoch, progress.best_score = 1, float("nan")
    assert progress.improved_by(0.1)  # a number beats NaN
    progress.best_epoch, progress.best_score = 2, 0.5
    assert not progress.improved_by(float("nan")) and not progress.improved_by(0.5)
    assert progress.improved_by(0.6)
