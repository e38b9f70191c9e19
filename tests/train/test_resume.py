"""Resumption: kill -9 and restart, restore onto another mesh, and a damaged checkpoint.

Each run is the tiny 4-step demo run (tests/conftest.py: checkpoints at steps 2 and 4,
dropout on) compared step for step with the uninterrupted ``reference_run`` on 8 devices.
"""

import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from lmjax.train import loop
from lmjax.train.checkpoints import CheckpointCorruptedError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _committed_steps(workdir):
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def _subprocess_env(tmp_path):
    env = dict(os.environ)
    # The killed run and its restart share compiled programs, so the restart does not recompile.
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "jax_cache")
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return env


def _records_logged_after(metrics_path, offset):
    """Returns ``{split: {step: record}}`` of the metrics.jsonl lines after byte ``offset``."""
    with open(metrics_path, "rb") as f:
        f.seek(offset)
        lines = f.read().decode("utf-8").splitlines()
    logged = {}
    for line in lines:
        record = json.loads(line)
        logged.setdefault(record["split"], {})[record["step"]] = record
    return logged


def _assert_same_train_losses(records, workdir, reference_workdir, steps, atol):
    got, want = records(workdir), records(reference_workdir)
    assert sorted(got) == list(steps), f"logged steps {sorted(got)}"
    np.testing.assert_allclose(
        [got[s]["loss"] for s in steps], [want[s]["loss"] for s in steps], rtol=0, atol=atol
    )


@pytest.mark.slow
def test_kill_9_then_restart_gives_the_uninterrupted_losses(
    tmp_path, reference_run, tiny_run_overrides, records, train_command
):
    reference_workdir, _ = reference_run
    workdir = str(tmp_path / "killed_run")
    # No samples: they are the reference run's to check, and compiling the decoder costs time.
    command = train_command(workdir, *tiny_run_overrides, "--config.generate.max_new_tokens=0")
    env = _subprocess_env(tmp_path)
    log_path = tmp_path / "killed_run.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while (
            process.poll() is None and not _committed_steps(workdir) and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        still_running = process.poll() is None
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert still_running, (
        f"the run ended before a checkpoint appeared; log:\n{log_path.read_text()[-3000:]}"
    )
    assert process.returncode == -signal.SIGKILL
    # Usually only step 2 is committed by the time the kill lands; when the run got further, the
    # step-4 save may be committed too. Either way the restart resumes from the newest one.
    committed = _committed_steps(workdir)
    assert committed in ([2], [2, 4]), committed
    restored = committed[-1]
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    killed_run_bytes = os.path.getsize(metrics_path)

    restarted = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    _assert_same_train_losses(records, workdir, reference_workdir, [1, 2, 3, 4], atol=1e-6)
    # The restart trained exactly the steps after the restored one (step 1 never again), with the
    # uninterrupted run's losses, and its evaluations (step 3 when it trained it, and the final
    # one) match the uninterrupted run's too.
    resumed = _records_logged_after(metrics_path, killed_run_bytes)
    for split, steps, atol in (
        ("train", list(range(restored + 1, 5)), 1e-6),
        ("eval", [3, 4] if restored < 3 else [4], 1e-5),
    ):
        got, want = resumed.get(split, {}), records(reference_workdir, split)
        assert sorted(got) == steps, f"the restart logged {split} steps {sorted(got)}"
        np.testing.assert_allclose(
            [got[s]["loss"] for s in steps], [want[s]["loss"] for s in steps], rtol=0, atol=atol
        )


def _copy_of_run_from_step_2(reference_workdir, destination):
    """Copies a finished run without its step-4 checkpoint and metrics: it resumes from step 2."""
    shutil.copytree(reference_workdir, destination)
    shutil.rmtree(os.path.join(destination, "checkpoints", "4"))
    os.remove(os.path.join(destination, "metrics.jsonl"))
    return str(destination)


@pytest.mark.slow
def test_checkpoint_from_8_1_1_restores_on_2_2_2_and_trains_on(
    tmp_path, reference_run, tiny_run_config, records
):
    reference_workdir, _ = reference_run
    workdir = _copy_of_run_from_step_2(reference_workdir, tmp_path / "resharded")
    config = tiny_run_config(
        "--config.mesh=[('data', 2), ('fsdp', 2), ('tensor', 2)]",
        "--config.generate.max_new_tokens=0",
    )
    loop.train(config, workdir)
    _assert_same_train_losses(records, workdir, reference_workdir, [3, 4], atol=1e-5)


# Orbax abandons the reads of the other arrays when one fails; their coroutines are never awaited.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_truncated_checkpoint_is_a_clear_error_and_keeps_earlier_ones(
    tmp_path, reference_run, tiny_run_config
):
    reference_workdir, _ = reference_run
    workdir = str(tmp_path / "damaged")
    shutil.copytree(reference_workdir, workdir)
    state_dir = os.path.join(workdir, "checkpoints", "4", "state")
    files = [os.path.join(root, name) for root, _, names in os.walk(state_dir) for name in names]
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:
        f.truncate(os.path.getsize(largest) // 2)

    with pytest.raises(
        CheckpointCorruptedError, match=r"(?s)step 4 .* truncated or corrupted.*steps 2\)"
    ):
        loop.train(tiny_run_config(), workdir)
    assert _committed_steps(workdir) == [2, 4]
    for root, _, names in os.walk(os.path.join(reference_workdir, "checkpoints", "2")):
        for name in names:
            original = os.path.join(root, name)
            copy = os.path.join(workdir, os.path.relpath(original, reference_workdir))
            with open(original, "rb") as a, open(copy, "rb") as b:
                assert a.read() == b.read(), f"{copy} changed"
