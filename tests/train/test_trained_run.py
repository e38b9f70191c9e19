"""load_trained_run: a finished run's workdir back as (config, model, params, tokenizer, step)."""

import os
import shutil

import jax
import numpy as np
import pytest

from lmjax.config import config_to_json
from lmjax.decoding import generated_texts
from lmjax.train import loop
from lmjax.train.checkpoints import CheckpointNotFoundError
from lmjax.train.trained_run import load_trained_run, saved_run_config


def test_loaded_run_samples_what_the_loop_sampled(reference_run):
    workdir, summary = reference_run
    run = load_trained_run(workdir)
    assert run.step == summary["step"] == 4 and run.workdir == workdir
    assert run.config.train.steps == 4 and run.config.model.max_len == 32
    device = jax.local_devices()[0]
    leaves = jax.tree_util.tree_leaves(run.params)
    assert sum(leaf.size for leaf in leaves) == summary["parameters"]
    assert all(leaf.sharding.device_set == {device} for leaf in leaves)

    # Greedy decoding from the restored params reproduces the loop's samples.txt (the loop
    # sampled from the in-memory params, sharded over 8 devices).
    prompts = loop.sample_prompts(run.config, run.tokenizer)
    greedy = generated_texts(
        run.model, run.params, run.tokenizer, prompts, greedy=True,
        max_new_tokens=run.config.generate.max_new_tokens, truncate_prompts=True,
    )
    with open(summary["samples"], encoding="utf-8") as f:
        samples = f.read()
    for index, text in enumerate(greedy):
        assert f"=== prompt {index + 1}, greedy ===\n{text}\n" in samples


def test_earlier_step_loads_other_params(reference_run):
    workdir, _ = reference_run
    early, late = load_trained_run(workdir, step=2), load_trained_run(workdir)
    assert early.step == 2
    early_leaves = jax.tree_util.tree_leaves(early.params)
    late_leaves = jax.tree_util.tree_leaves(late.params)
    assert [a.shape for a in early_leaves] == [b.shape for b in late_leaves]
    assert any(not np.array_equal(a, b) for a, b in zip(early_leaves, late_leaves))


def test_missing_pieces_are_clear_errors(reference_run, tmp_path):
    workdir, _ = reference_run
    with pytest.raises(CheckpointNotFoundError, match=r"No checkpoint for step 3 .* 2, 4"):
        load_trained_run(workdir, step=3)
    empty = str(tmp_path / "empty")
    with pytest.raises(CheckpointNotFoundError,
                       match=rf"No checkpoints in {empty}/checkpoints; train first"):
        load_trained_run(empty)
    no_tokenizer = str(tmp_path / "no_tokenizer")
    shutil.copytree(workdir, no_tokenizer, ignore=shutil.ignore_patterns("tokenizer"))
    with pytest.raises(FileNotFoundError, match=r"has no trained tokenizer"):
        load_trained_run(no_tokenizer)


def test_saved_config_falls_back_to_config_json(tiny_run_config, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"holds no saved config"):
        saved_run_config(str(tmp_path), {})
    config = tiny_run_config("--config.train.steps=7")
    with open(os.path.join(tmp_path, loop.CONFIG_FILE), "w", encoding="utf-8") as f:
        f.write(config_to_json(config))
    assert saved_run_config(str(tmp_path), {}).train.steps == 7
    from_extra = saved_run_config(str(tmp_path), {"config": config_to_json(tiny_run_config())})
    assert from_extra.train.steps == 4
