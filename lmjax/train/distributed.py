"""Multi-process (multi-host) runs on JAX's own multi-controller runtime.

Every process runs the same program. ``initialize_distributed`` connects them through
``jax.distributed.initialize`` (before any other JAX call); from then on ``jax.devices()`` lists
every process's devices, a mesh spans them all, and each process feeds only its slice of the global
batch (``lmjax.train.step.host_batch_to_global``). Work that writes files (tokenizer training,
logs, samples, plots) runs on the main process; ``barrier`` makes the others wait for it.

On CPU (tests, laptops), cross-process collectives go through Gloo
(``jax_cpu_collectives_implementation='gloo'``), set here explicitly so that a changed JAX default
cannot silently turn the collectives off.

Environment variables read by ``initialize_from_environment`` (for ``python -m lmjax train``):
    LMJAX_COORDINATOR   host:port of process 0's coordinator service (e.g. 127.0.0.1:12345)
    LMJAX_NUM_PROCESSES the number of processes
    LMJAX_PROCESS_ID    this process's id, 0 .. num_processes - 1
"""

from __future__ import annotations

import os
import socket

import jax
from jax.experimental import multihost_utils

COORDINATOR_ENV = "LMJAX_COORDINATOR"
NUM_PROCESSES_ENV = "LMJAX_NUM_PROCESSES"
PROCESS_ID_ENV = "LMJAX_PROCESS_ID"


def initialize_distributed(
    coordinator_address: str, num_processes: int, process_id: int, timeout_s: int = 300
) -> None:
    """Connects this process to the others; call once, before any other JAX computation.

    Args:
        coordinator_address: ``host:port`` where process 0 serves the coordinator.
        num_processes: how many processes take part (1 makes this a no-op).
        process_id: this process's id in ``[0, num_processes)``.
        timeout_s: how long to wait for every process to connect.

    Raises:
        ValueError: on an id outside ``[0, num_processes)`` or a malformed address.
    """
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(
            f"process_id={process_id} must lie in [0, num_processes={num_processes}); give each "
            "process a distinct id 0, 1, ..., num_processes - 1."
        )
    if num_processes == 1:
        return
    if ":" not in coordinator_address:
        raise ValueError(
            f"coordinator address {coordinator_address!r} needs a port, e.g. '10.0.0.1:12345'."
        )
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=timeout_s,
    )


def initialize_from_environment() -> bool:
    """Calls ``initialize_distributed`` when the LMJAX_* variables ask for several processes.

    Returns:
        True when a multi-process runtime was started.

    Raises:
        ValueError: when only some of the variables are set, or they are not integers.
    """
    values = {
        name: os.environ.get(name) for name in (COORDINATOR_ENV, NUM_PROCESSES_ENV, PROCESS_ID_ENV)
    }
    if all(v is None for v in values.values()):
        return False
    missing = [name for name, v in values.items() if v is None]
    if missing:
        raise ValueError(
            f"multi-process run: set all of {COORDINATOR_ENV}, {NUM_PROCESSES_ENV} and "
            f"{PROCESS_ID_ENV}; missing {', '.join(missing)}."
        )
    try:
        num_processes = int(values[NUM_PROCESSES_ENV])
        process_id = int(values[PROCESS_ID_ENV])
    except ValueError:
        raise ValueError(
            f"{NUM_PROCESSES_ENV}={values[NUM_PROCESSES_ENV]!r} and {PROCESS_ID_ENV}="
            f"{values[PROCESS_ID_ENV]!r} must be integers."
        ) from None
    initialize_distributed(values[COORDINATOR_ENV], num_processes, process_id)
    return num_processes > 1


def is_main_process() -> bool:
    """Returns True on the process that writes files (process 0)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Blocks until every process reaches the barrier called ``name`` (no-op with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def free_local_port() -> int:
    """Returns a TCP port on 127.0.0.1 that is free now (for a single-machine coordinator)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
