"""``lmjax.train.loop.train`` end to end on a tiny run, and the loop's input checks."""

import json
import os

import numpy as np
import pytest

from lmjax import data
from lmjax.train import loop


def test_uninterrupted_run_writes_everything_it_promises(reference_run, tiny_run_config, records):
    workdir, summary = reference_run
    config = tiny_run_config()
    train = records(workdir)
    assert sorted(train) == [1, 2, 3, 4]  # log_every=1
    assert all(np.isfinite(r["loss"]) for r in train.values())
    assert train[4]["loss"] < train[1]["loss"]
    assert train[1]["num_tokens"] > 0 and train[1]["learning_rate"] == pytest.approx(3e-3)

    evals = records(workdir, "eval")
    assert sorted(evals) == [3, 4]  # eval_every=3, and at the end
    final = evals[4]
    assert "unigram_loss" not in evals[3]
    assert final["loss"] == pytest.approx(summary["final_eval_loss"])
    assert final["unigram_loss"] == pytest.approx(summary["unigram_baseline_loss"])
    assert 0 < summary["unigram_baseline_loss"] < np.log(config.model.vocab_size)
    assert summary["step"] == 4 and summary["parameters"] > 0

    assert summary["checkpoint_dir"] == os.path.join(workdir, "checkpoints")
    assert sorted(os.listdir(summary["checkpoint_dir"])) == ["2", "4"]  # every 2 steps and the end
    assert (
        summary["plot"] == os.path.join(workdir, "loss.png")
        and os.path.getsize(summary["plot"]) > 0
    )
    with open(summary["samples"], encoding="utf-8") as f:
        samples = f.read()
    assert "=== prompt 1, greedy ===" in samples and "=== prompt 1, sample 1 (" in samples
    assert config.generate.prompt.strip() in samples
    with open(os.path.join(workdir, loop.CONFIG_FILE), encoding="utf-8") as f:
        assert json.load(f)["train"]["steps"] == 4
    assert os.path.isfile(os.path.join(workdir, "tokenizer", "sentencepiece.model"))


def test_token_id_beyond_the_model_vocabulary_is_a_clear_error(reference_run, tiny_run_config):
    workdir, _ = reference_run
    config = tiny_run_config()
    tokenizer = data.load_or_train_tokenizer(
        config.tokenizer, (), workdir
    )  # the run's cached model
    batch = next(data.train_batches(config.data, tokenizer, 16))
    largest = int(batch["inputs"].max())
    loop.check_token_ids(batch, largest + 1)  # fits exactly
    with pytest.raises(
        ValueError,
        match=rf"batch\['inputs'\] holds token ids \[{largest}\] outside "
        rf"\[0, model.vocab_size={largest}\).*--config.model.vocab_size "
        rf"to at least {largest + 1}",
    ):
        loop.check_token_ids(batch, largest)


def test_tokenizer_larger_than_the_model_vocabulary_is_a_clear_error():
    loop.check_vocab_fits(384, {"vocab_size": 384})
    with pytest.raises(
        ValueError, match=r"384 tokens but .* model.vocab_size=256 .*--config.model.vocab_size=384"
    ):
        loop.check_vocab_fits(384, {"vocab_size": 256})


def test_model_init_inputs_come_from_the_objective_and_batch(tiny_run_config):
    from lmjax import objectives

    batch = {
        "inputs": np.zeros((4, 32), np.int32),
        "targets": np.zeros((4, 32), np.int32),
        "positions": np.zeros((4, 32), np.int32),
        "segment_ids": np.ones((4, 32), np.int32),
        "weights": np.ones((4, 32), np.float32),
    }
    inputs = loop.model_init_inputs(objectives.get("causal_lm"), batch)
    assert sorted(inputs) == ["inputs", "positions", "segment_ids"]
    assert inputs["inputs"].shape == (1, 32)
    del batch["segment_ids"]
    with pytest.raises(ValueError, match=r"feeds the model \['segment_ids'\]"):
        loop.model_init_inputs(objectives.get("causal_lm"), batch)
