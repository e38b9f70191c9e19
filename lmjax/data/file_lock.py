"""An exclusive lock on a file, so that several processes on one machine build a thing once.

Used where two processes may ask for the same derived artefact at the same time (the embedded
corpus in a TFDS ``data_dir``, a tokenizer trained into a workdir): the first to take the lock
builds the artefact and publishes it with an atomic rename; the others block on the lock and then
find it built.

The lock is POSIX ``fcntl.flock``: the kernel releases it when the holder exits, even on a crash.
It serialises processes on one machine and on file systems with a working ``flock`` (local disks,
most NFS setups); it is not a lock on object stores such as GCS.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

__all__ = ["held_file_lock"]


@contextlib.contextmanager
def held_file_lock(
    lock_path: str | os.PathLike[str], timeout_s: float | None = None
) -> Iterator[str]:
    """Holds an exclusive lock on ``lock_path`` for the duration of the ``with`` block.

    Args:
        lock_path: The lock file; it and its parent directory are created if missing. The file is
            left in place afterwards (deleting it would let two processes lock different inodes).
        timeout_s: Give up after this many seconds with ``TimeoutError``; ``None`` waits for ever.

    Yields:
        The lock file's path, as a string.

    Raises:
        TimeoutError: When another process held the lock for longer than ``timeout_s``; the
            message names the lock file so that a stuck holder can be found.
    """
    lock_path = os.fspath(lock_path)
    os.makedirs(os.path.dirname(os.path.abspath(lock_path)), exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o664)
    try:
        if timeout_s is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"Waited {timeout_s:.0f} s for the lock {lock_path!r}, which another "
                            "process holds. Wait for that process to finish, or stop it if it is "
                            "stuck."
                        ) from None
                    time.sleep(0.1)
        yield lock_path
    finally:
        os.close(fd)  # closing the descriptor releases the flock
