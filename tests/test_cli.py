"""The lmjax command line: one-line errors with exit status 2, and the wiring of each command."""

import glob
import os
import re
import shutil
import subprocess
import sys
import types

import pytest

import lmjax.train
from lmjax import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = "experiments/gpt/demo.py"


def _run_main(capture, argv):
    """Returns (exit status, stdout, stderr) of ``lmjax <argv>``; ``capture`` is capsys or capfd."""
    status = cli.main(argv)
    printed = capture.readouterr()
    return status, printed.out, printed.err


def _assert_one_line_error(err, fragment):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lmjax: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("argv, fragment", [
    ([], "the following arguments are required: COMMAND"),
    (["fly"], "invalid choice: 'fly'"),
    (["train", "--workdir", "x"], "the following arguments are required: --config"),
    (["train", "--config", DEMO, "--workdir", "x", "--bogus"], "Unexpected argument '--bogus'"),
    (["train", "--config", DEMO, "--workdir", "x", "--config.train.setps=3"],
     "Unknown config key --config.train.setps (section config.train exists); did you mean "
     "--config.train.steps"),
    (["train", "--config", DEMO, "--workdir", "x", "--config.train.steps", "many"],
     "--config.train.steps expects an int, got 'many'"),
    (["train", "--config", f"{DEMO}:stepz=3", "--workdir", "x"],
     "Unknown experiment argument 'stepz'"),
    (["train", "--config", "experiments/gpt/gpt2.py:size=huge", "--workdir", "x"],
     "unknown size 'huge'"),
    (["train", "--config", "experiments/nope.py", "--workdir", "x"],
     "Experiment file 'experiments/nope.py' not found"),
    (["train", "--config", DEMO, "--workdir", "x", "--config.train.grad_accum=3"],
     "must be divisible by config.train.grad_accum (3)"),
    (["train", "--config", DEMO, "--workdir", "x", "--num_processes", "2"],
     "a multi-host run needs all of --coordinator_address, --num_processes and --process_id"),
    (["train", "--config", DEMO, "--workdir", "x", "--config.data.source=text:/nonexistent/*.txt"],
     "LMJAX_DEBUG=1"),
    (["prepare", "--config", DEMO, "--workdir", "x", "--config.data.source=text:/no/*.txt"],
     "/no/*.txt"),
    (["plot", "/nonexistent/run"], "No metrics.jsonl in /nonexistent/run"),
    (["plot", "/nonexistent/run", "--extra"], "unrecognized arguments: --extra"),
    (["generate", "--workdir", "/nonexistent/run"],
     "No checkpoints in /nonexistent/run/checkpoints"),
    (["generate", "--workdir", "x", "--top_k", "many"],
     "argument --top_k: invalid int value: 'many'"),
    (["fewshot", "--workdir", "x", "--shots", "a,b"], "--shots='a,b': give comma-separated"),
    (["fewshot", "--workdir", "/nonexistent/run"], "No checkpoints in /nonexistent/run"),
    (["finetune", "--config", "experiments/finetune/docs.py:task=nope", "--workdir", "x"],
     "unknown task 'nope'"),
    (["finetune", "--config", "experiments/finetune/docs.py", "--workdir", "x"],
     "config.init.workdir is empty"),
])
def test_usage_errors_print_one_line_and_exit_2(capsys, monkeypatch, tmp_path, argv, fragment):
    monkeypatch.chdir(tmp_path)  # relative workdirs land in the test's directory
    status, _, err = _run_main(capsys, argv)
    assert status == 2
    _assert_one_line_error(err, fragment)


def test_mesh_that_does_not_fit_the_devices_is_a_usage_error(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    status, _, err = _run_main(capsys, [
        "train", "--config", DEMO, "--workdir", "x",
        "--config.mesh=[('data', 3), ('fsdp', 1), ('tensor', 1)]",
    ])
    assert status == 2
    _assert_one_line_error(err, "config.mesh / config.rules:")


def test_train_passes_the_overridden_config_to_the_loop(capsys, monkeypatch, tmp_path):
    calls = []

    def fake_train(config, workdir):
        calls.append((config, workdir))
        return {"final_step": config.train.steps, "eval_loss": 1.5}

    fake_loop = types.ModuleType("lmjax.train.loop")
    fake_loop.train = fake_train
    monkeypatch.setitem(sys.modules, "lmjax.train.loop", fake_loop)
    monkeypatch.setattr(lmjax.train, "loop", fake_loop, raising=False)
    workdir = str(tmp_path / "run")
    status, _, _ = _run_main(capsys, [
        "train", "--config", f"{DEMO}:steps=40", "--workdir", workdir,
        "--config.optimizer.learning_rate", "1e-3", "--config.train.log_every=5",
    ])
    assert status == 0
    (config, passed_workdir), = calls
    assert passed_workdir == workdir
    assert (config.train.steps, config.train.log_every) == (40, 5)
    assert config.optimizer.learning_rate == 1e-3
    assert config.is_locked


def test_run_errors_print_one_line_and_exit_1(capsys, monkeypatch, tmp_path):
    from lmjax.train.checkpoints import CheckpointCorruptedError

    def broken_train(config, workdir):
        raise CheckpointCorruptedError("Checkpoint step 20 in runs/x/checkpoints/20 is truncated")

    fake_loop = types.ModuleType("lmjax.train.loop")
    fake_loop.train = broken_train
    monkeypatch.setitem(sys.modules, "lmjax.train.loop", fake_loop)
    monkeypatch.setattr(lmjax.train, "loop", fake_loop, raising=False)
    monkeypatch.chdir(tmp_path)
    status, _, err = _run_main(capsys, ["train", "--config", DEMO, "--workdir", "x"])
    assert status == 1
    _assert_one_line_error(err, "Checkpoint step 20 in runs/x/checkpoints/20 is truncated")
    monkeypatch.setenv(cli.DEBUG_ENV, "1")  # asks for the traceback instead
    with pytest.raises(CheckpointCorruptedError, match="is truncated"):
        cli.main(["train", "--config", DEMO, "--workdir", "x"])


def test_plot_command_writes_the_png(capsys, tmp_path):
    from lmjax.train.logging import MetricsLogger

    with MetricsLogger(str(tmp_path), total_steps=3, progress_bar=False) as logger:
        for step in (1, 2, 3):
            logger.log(step, {"loss": 4.0 - step})
    out_path = str(tmp_path / "curve.png")
    status, out, _ = _run_main(capsys, ["plot", str(tmp_path), "--out", out_path])
    assert status == 0
    assert out.strip() == out_path
    with open(out_path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_python_dash_m_lmjax(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO)
    ok = subprocess.run([sys.executable, "-m", "lmjax", "generate", "--help"], cwd=tmp_path,
                        env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0
    for flag in ("--prompt", "--max_new_tokens", "--temperature", "--top_k", "--top_p",
                 "--num_samples", "--seed"):
        assert flag in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "lmjax", "train", "--config", DEMO, "--workdir",
                          str(tmp_path), "--config.train.stepss=1"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    _assert_one_line_error(bad.stderr, "did you mean --config.train.steps")


# --- end to end: a 2-step demo run, then sampling and plotting from its workdir ---------------

_TINY_RUN = [
    "--config.train.eval_batches=1", "--config.model.vocab_size=512",
    "--config.generate.max_new_tokens=0",  # the run writes no samples: keeps the test quick
]


def _check_generate_plot_and_prepare(capfd, workdir):
    status, out, err = _run_main(capfd, [
        "generate", "--workdir", workdir, "--prompt", "def read(self",
        "--max_new_tokens", "6", "--num_samples", "2", "--top_k", "5", "--seed", "1",
    ])
    assert status == 0, err
    assert out.count("=== sample") == 2 and "(step 2)" in out
    assert out.count("def read(self") == 2
    status, out, _ = _run_main(capfd, [
        "generate", "--workdir", workdir, "--temperature", "0", "--max_new_tokens", "3",
    ])
    assert status == 0 and out.count("=== sample") == 2  # greedy; num_samples from config.generate
    status, _, err = _run_main(
        capfd, ["generate", "--workdir", workdir, "--max_new_tokens", "500"]
    )
    assert status == 2
    _assert_one_line_error(err, "exceeds the model's 128 positions")
    status, _, err = _run_main(capfd, ["generate", "--workdir", workdir, "--step", "1"])
    assert status == 2
    _assert_one_line_error(err, "No checkpoint for step 1")
    status, out, _ = _run_main(capfd, ["plot", workdir])
    assert status == 0 and out.strip().endswith("loss.png")
    status, out, err = _run_main(capfd, [
        "fewshot", "--workdir", workdir, "--shots", "0,1", "--num_examples", "2",
        "--decoder", "greedy",
    ])
    assert status == 0, err
    assert "few-shot evaluation of" in out and "multiple" in out and "free" in out
    status, out, _ = _run_main(
        capfd, ["prepare", "--config", DEMO, "--workdir", workdir, *_TINY_RUN]
    )
    assert status == 0  # the tokenizer cached by the run is reused
    assert re.search(r"python_docs: \d+ train / \d+ eval documents; tokenizer vocab_size 512",
                     out)


def _check_damaged_checkpoint_stops_resume_and_generate(capfd, trained_workdir, workdir):
    shutil.copytree(trained_workdir, workdir)
    step_dir = os.path.join(workdir, "checkpoints", "2")
    for path in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True):
        with open(path, "r+b") as f:
            f.truncate(1)
    status, _, err = _run_main(capfd, [
        "train", "--config", f"{DEMO}:steps=3", "--workdir", workdir, *_TINY_RUN,
    ])
    assert status == 1
    _assert_one_line_error(err, f"Checkpoint step 2 in {step_dir} is truncated or corrupted")
    assert os.path.isdir(step_dir)  # nothing was deleted
    status, _, err = _run_main(capfd, ["generate", "--workdir", workdir])
    assert status == 1
    _assert_one_line_error(err, "is truncated or corrupted")


def test_train_then_generate_plot_prepare_and_resume_from_damage(capfd, tmp_path):
    """One 2-step demo run (the expensive part), then every command against its workdir.

    ``capfd``, not ``capfd``: SentencePiece training writes to the real stdout file descriptor.
    """
    workdir = str(tmp_path / "demo")
    status, out, err = _run_main(capfd, [
        "train", "--config", f"{DEMO}:steps=2", "--workdir", workdir, *_TINY_RUN,
    ])
    assert status == 0, err
    assert "step 2: eval loss" in out
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "2"))
    _check_generate_plot_and_prepare(capfd, workdir)
    damaged = str(tmp_path / "damaged")
    _check_damaged_checkpoint_stops_resume_and_generate(capfd, workdir, damaged)


def test_multi_host_flags_initialize_jax_distributed_first(capsys, monkeypatch):
    from lmjax.train import distributed

    events = []
    def record_init(address, count, index):
        events.append(("init", address, count, index))

    def record_load(spec):
        events.append("load")
        return real_load(spec)

    real_load = cli.load_experiment
    monkeypatch.setattr(distributed, "initialize_distributed", record_init)
    monkeypatch.setattr(cli, "load_experiment", record_load)
    fake_loop = types.ModuleType("lmjax.train.loop")
    fake_loop.train = lambda config, workdir: events.append("train") or {}
    monkeypatch.setitem(sys.modules, "lmjax.train.loop", fake_loop)
    monkeypatch.setattr(lmjax.train, "loop", fake_loop, raising=False)
    status, _, _ = _run_main(capsys, [
        "train", "--config", DEMO, "--workdir", "unused", "--coordinator_address", "10.0.0.1:1234",
        "--num_processes", "4", "--process_id", "3",
    ])
    assert status == 0
    assert events == [("init", "10.0.0.1:1234", 4, 3), "load", "train"]
