"""Two processes x 4 fake CPU devices, connected by jax.distributed on loopback, train like one.

Both processes run ``python -m lmjax train`` on the same workdir (``--coordinator_address
127.0.0.1:<free port> --num_processes 2 --process_id i``); each feeds its half of every global
batch, CPU collectives go through Gloo. The per-step losses must equal those of the
single-process 8-device ``reference_run`` (same config, same seed), and process 0 alone writes the
metrics, samples and plot.
"""

import os
import re
import subprocess

import numpy as np
import pytest

from lmjax.train.distributed import free_local_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_DEVICE_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count=\d+")


def _env_with_devices(count):
    env = dict(os.environ)
    flags = _DEVICE_COUNT_FLAG.sub("", env.get("XLA_FLAGS", ""))
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    return env


@pytest.mark.slow
def test_two_processes_train_to_the_single_process_losses(
    tmp_path, reference_run, tiny_run_overrides, records, train_command
):
    reference_workdir, _ = reference_run
    workdir = str(tmp_path / "two_processes")
    port = free_local_port()
    processes, logs = [], []
    for process_id in range(2):
        log = open(tmp_path / f"process_{process_id}.log", "w")
        logs.append(log)
        command = train_command(
            workdir,
            "--coordinator_address",
            f"127.0.0.1:{port}",
            "--num_processes",
            "2",
            "--process_id",
            str(process_id),
            *tiny_run_overrides,
        )
        processes.append(
            subprocess.Popen(
                command, cwd=REPO, env=_env_with_devices(4), stdout=log, stderr=subprocess.STDOUT
            )
        )
    try:
        codes = [p.wait(timeout=420) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
        for log in logs:
            log.close()
    outputs = [(tmp_path / f"process_{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], "\n\n".join(o[-3000:] for o in outputs)

    got, want = records(workdir), records(reference_workdir)
    assert sorted(got) == [1, 2, 3, 4]
    np.testing.assert_allclose(
        [got[s]["loss"] for s in got], [want[s]["loss"] for s in got], rtol=0, atol=1e-5
    )
    assert got[1]["num_tokens"] == want[1]["num_tokens"]  # both halves of the batch were fed
    # Only process 0 wrote the files; the checkpoints hold both processes' shards.
    assert os.path.isfile(os.path.join(workdir, "samples.txt"))
    assert os.path.isfile(os.path.join(workdir, "loss.png"))
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        assert sum('"split": "train"' in line for line in f) == 4  # not written twice
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
