"""Orbax checkpoints of a TrainState plus a JSON ``extra`` item, restorable onto any mesh.

Each step directory holds two items, written through Orbax's composite ``CheckpointManager``
(``args.Composite``): ``state``, the TrainState pytree (params, optimizer state, step) saved with
``PyTreeSave``, and ``extra``, a JSON document (the RNG seed/key data, the data iterator's
position and the config) saved with ``JsonSave``. Saves are asynchronous (the arrays are copied
off the device before :meth:`Checkpointer.save` returns, the write happens in the background) and
keep the newest ``keep`` steps. When to save is the caller's decision: every :meth:`Checkpointer.save` of a new step
writes it.

Orbax writes a step into ``<step>.orbax-checkpoint-tmp-<n>`` and renames it to ``<step>`` only once
every file is on disk, so a run killed mid-save leaves the previous checkpoints intact and the
half-written step invisible (``cleanup_tmp_directories`` removes it at the next start).

Restoring takes the *abstract* state, ``jax.ShapeDtypeStruct`` leaves carrying the shardings of the
current run, so a checkpoint written on one mesh (e.g. 8 devices on ``('data',)``) is read
straight into another layout (e.g. a ``(2, 4)`` mesh with different ``PartitionSpec``s). A step
whose files are truncated or missing raises :class:`CheckpointCorruptedError` naming the step directory and how to
fall back to the previous step; this module never deletes a checkpoint except through the keep-N
policy after a successful save.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint._src.tree import utils as orbax_tree_utils

STATE_ITEM = "state"
EXTRA_ITEM = "extra"
CHECKPOINT_SUBDIR = "checkpoints"

_log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used as asked; the message names the directory and the fix."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint (or not the requested step) exists in the directory."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's arrays do not match the structure or shapes of the state to restore."""


class CheckpointCorruptedError(CheckpointError):
    """A step directory is incomplete or damaged (truncated or deleted files)."""


def checkpoint_directory(workdir: str) -> str:
    """Returns the directory where a run in ``workdir`` keeps its checkpoints."""
    return os.path.join(os.path.abspath(workdir), CHECKPOINT_SUBDIR)


class Checkpointer:
    """Saves and restores (TrainState, extra JSON) pairs with Orbax, keeping the newest N steps.

    Example::

        ckpt = Checkpointer(checkpoint_directory(workdir), keep=3)
        if ckpt.latest_step() is not None:
            state, extra = ckpt.restore(abstract_state)   # ShapeDtypeStructs with shardings
        ...
        ckpt.save(step, state, {'data': batches.state(), 'config': config.to_json()})
        ckpt.close()                                        # waits for the last async save

    Args:
        directory: where the step directories live (created if missing).
        keep: how many of the newest steps to keep (older ones are deleted after a save succeeds).
        async_save: write in a background thread (True) or block until written (False).
        read_only: only restore (e.g. sampling from a run that may still be training): never
            creates, saves, deletes, or cleans up another process's half-written step.
    """

    def __init__(self, directory: str, keep: int = 3, async_save: bool = True,
                 read_only: bool = False):
        if keep < 1:
            raise ValueError(f"keep must be >= 1 to keep any checkpoint, got {keep}.")
        self.directory = os.path.abspath(os.fspath(directory))
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise CheckpointError(
                f"Checkpoint path {self.directory} is a file, not a directory; "
                "move it away or choose another --workdir."
            )
        if read_only and not os.path.isdir(self.directory):
            raise CheckpointNotFoundError(
                f"No checkpoint directory {self.directory}; train first, or point --workdir at a "
                "run that saved checkpoints."
            )
        self.read_only = read_only
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else keep,
            enable_async_checkpointing=async_save,
            # Removes only half-written '<step>.orbax-checkpoint-tmp*' dirs of a killed run.
            cleanup_tmp_directories=not read_only,
            create=not read_only,
        )  # (Orbax's own read_only option only adds start-up warnings; save() guards instead.)
        # Naming the handler of each item lets Orbax read their metadata at start-up (no warnings).
        registry = ocp.handlers.create_default_handler_registry(
            **{
                STATE_ITEM: ocp.handlers.PyTreeCheckpointHandler(),
                EXTRA_ITEM: ocp.handlers.JsonCheckpointHandler(),
            }
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, handler_registry=registry
        )
        self._closed = False

    # ------------------------------------------------------------------------------------------
    # Queries.
    # ------------------------------------------------------------------------------------------

    def latest_step(self) -> int | None:
        """Returns the newest committed step, or None when there is no checkpoint."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Returns every committed step, oldest first."""
        return sorted(self._manager.all_steps())

    def step_directory(self, step: int) -> str:
        """Returns the directory that holds (or will hold) ``step``."""
        return os.path.join(self.directory, str(step))

    # ------------------------------------------------------------------------------------------
    # Saving.
    # ------------------------------------------------------------------------------------------

    def save(self, step: int, state: Any, extra: Mapping[str, Any], force: bool = False) -> bool:
        """Starts saving ``state`` and ``extra`` as ``step``; returns whether a save started.

        A step that is already saved is never overwritten (returns False). A step older than the
        newest checkpoint is skipped (returns False) unless ``force`` is set, which is for a run
        that deliberately restored an earlier step and trains on from there.

        Args:
            step: the training step the state belongs to (>= 0).
            state: the TrainState (any pytree of jax.Arrays / numpy arrays / scalars).
            extra: a JSON-serialisable dict (RNG seed or key data as lists, data iterator
                position, the config as JSON text, ...).
            force: also save a step older than the latest checkpoint.

        Returns:
            True if a save was started (it may still be running: see :meth:`wait`).

        Raises:
            TypeError: if ``extra`` is not JSON-serialisable (names the offending key).
            ValueError: for a negative step.
        """
        self._check_open()
        if self.read_only:
            raise CheckpointError(f"Checkpointer for {self.directory} is read-only; cannot save.")
        step = int(step)
        if step < 0:
            raise ValueError(f"Checkpoint step must be >= 0, got {step}.")
        extra = _checked_json_dict(extra)
        steps = self._manager.all_steps()
        if step in steps:
            return False
        latest = max(steps) if steps else None
        if latest is not None and step < latest and not force:
            _log.warning(
                "Not saving step %d: %s already holds the newer step %d (pass force=True to save "
                "it anyway).", step, self.directory, latest,
            )
            return False
        args = ocp.args.Composite(
            **{STATE_ITEM: ocp.args.PyTreeSave(state), EXTRA_ITEM: ocp.args.JsonSave(extra)}
        )
        # The caller decides the interval, so bypass Orbax's own save-interval policy.
        return bool(self._manager.save(step, args=args, force=True))

    def wait(self) -> None:
        """Blocks until every started save is on disk (re-raises a failed background save)."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases Orbax's resources; safe to call twice."""
        if not self._closed:
            self._closed = True
            self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------
    # Restoring.
    # ------------------------------------------------------------------------------------------

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores a step onto the shardings of ``abstract_state``.

        Args:
            abstract_state: a pytree with the TrainState's structure whose leaves are
                ``jax.ShapeDtypeStruct`` with a ``sharding`` (e.g. ``NamedSharding``) for the
                current mesh; leaves without a sharding come back as numpy arrays.
            step: the step to restore; None restores the newest.

        Returns:
            ``(state, extra)``: the state with the structure and shardings of ``abstract_state``,
            and the extra JSON dict saved with it.

        Raises:
            CheckpointNotFoundError: no checkpoint, or no such step.
            CheckpointMismatchError: the saved arrays do not match ``abstract_state``.
            CheckpointCorruptedError: the step's files are truncated, missing or unreadable.
        """
        step = self._resolve_step(step)
        self._check_matches(step, abstract_state, partial=False)
        restored = self._restore_items(
            step,
            **{
                STATE_ITEM: ocp.args.PyTreeRestore(
                    item=abstract_state,
                    restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state),
                ),
                EXTRA_ITEM: ocp.args.JsonRestore(),
            },
        )
        return restored[STATE_ITEM], dict(restored[EXTRA_ITEM])

    def restore_params(self, abstract_params: Any, step: int | None = None) -> Any:
        """Restores only ``state.params`` (no optimizer state), e.g. for generation.

        Args:
            abstract_params: the params pytree as ``jax.ShapeDtypeStruct`` leaves with shardings.
            step: the step to restore; None restores the newest.

        Returns:
            The params, laid out as ``abstract_params`` asks.

        Raises:
            The same errors as :meth:`restore`.
        """
        step = self._resolve_step(step)
        target = {"params": abstract_params}
        self._check_matches(step, target, partial=True)
        restored = self._restore_items(
            step,
            **{
                STATE_ITEM: ocp.args.PyTreeRestore(
                    item=target,
                    restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                    partial_restore=True,
                )
            },
        )
        return restored[STATE_ITEM]["params"]

    def restore_extra(self, step: int | None = None) -> dict:
        """Returns the extra JSON dict of a step (the newest by default) without reading arrays."""
        step = self._resolve_step(step)
        restored = self._restore_items(step, **{EXTRA_ITEM: ocp.args.JsonRestore()})
        return dict(restored[EXTRA_ITEM])

    # ------------------------------------------------------------------------------------------
    # Internals.
    # ------------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise CheckpointError(f"Checkpointer for {self.directory} is closed; create a new one.")

    def _resolve_step(self, step: int | None) -> int:
        self._check_open()
        steps = self.all_steps()
        if not steps:
            raise CheckpointNotFoundError(
                f"No checkpoint in {self.directory}; start a fresh run, or point --workdir at a "
                "run that saved checkpoints."
            )
        if step is None:
            return steps[-1]
        if int(step) not in steps:
            raise CheckpointNotFoundError(
                f"No checkpoint for step {step} in {self.directory}; available steps: "
                f"{', '.join(map(str, steps))}."
            )
        return int(step)

    def _corrupted_message(self, step: int, error: BaseException) -> str:
        step_dir = self.step_directory(step)
        earlier = [s for s in self.all_steps() if s < step]
        lines = str(error).strip().splitlines()
        reason = type(error).__name__ + (f": {lines[0][:300]}" if lines else "")
        if earlier:
            fallback = (
                f"Earlier checkpoints are untouched (steps {', '.join(map(str, earlier))}). To "
                f"resume from step {earlier[-1]}, move the damaged step aside: "
                f"mv {step_dir} {step_dir}.corrupt (or restore step={earlier[-1]} explicitly)."
            )
        else:
            fallback = (
                f"There is no earlier checkpoint; move {step_dir} aside to start the run afresh."
            )
        return (
            f"Checkpoint step {step} in {step_dir} is truncated or corrupted and cannot be "
            f"restored ({reason}). {fallback}"
        )

    def _restore_items(self, step: int, **item_args: ocp.args.CheckpointArgs) -> Any:
        _silence_late_closed_loop_callbacks()
        try:
            return self._manager.restore(step, args=ocp.args.Composite(**item_args))
        except CheckpointError:
            raise
        except Exception as error:  # Orbax/TensorStore raise many types for damaged files.
            raise CheckpointCorruptedError(self._corrupted_message(step, error)) from error

    def _check_matches(self, step: int, target: Any, partial: bool) -> None:
        """Compares the saved array shapes with ``target`` before reading any array data."""
        try:
            metadata = self._manager.item_metadata(step)[STATE_ITEM]
        except Exception:  # pylint: disable=broad-except
            return  # unreadable metadata: the restore itself reports the damage precisely
        tree = getattr(metadata, "tree", metadata)
        if tree is None:
            return
        saved = {
            tuple(str(part) for part in path): leaf
            for path, leaf in orbax_tree_utils.to_flat_dict(tree).items()
        }
        wanted = {
            tuple(str(orbax_tree_utils.get_key_name(key)) for key in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]
        }
        problems = []
        missing = sorted(".".join(path) for path in wanted if path not in saved)
        if missing:
            problems.append(f"not in the checkpoint: {', '.join(missing[:5])}")
        if not partial:
            unexpected = sorted(".".join(path) for path in saved if path not in wanted)
            if unexpected:
                listed = ", ".join(unexpected[:5])
                problems.append(f"in the checkpoint but not in the state: {listed}")
        for path, leaf in wanted.items():
            saved_shape = getattr(saved.get(path), "shape", None)
            wanted_shape = getattr(leaf, "shape", None)
            if saved_shape is not None and wanted_shape is not None:
                if tuple(saved_shape) != tuple(wanted_shape):
                    problems.append(
                        f"{'.'.join(path)} is {tuple(saved_shape)} in the checkpoint but "
                        f"{tuple(wanted_shape)} here"
                    )
        if problems:
            raise CheckpointMismatchError(
                f"Checkpoint step {step} in {self.step_directory(step)} does not match the state "
                f"being restored ({'; '.join(problems[:6])}). The model or optimizer config "
                "differs from the run that wrote it: restore with that run's config, or use a "
                "fresh --workdir."
            )


def _silence_late_closed_loop_callbacks() -> None:
    """Drops the 'Event loop is closed' noise a failed restore leaves behind.

    When a restore fails part-way, TensorStore completes its outstanding reads after Orbax has
    closed the asyncio loop that awaited them; each completion then reports an unraisable
    ``RuntimeError('Event loop is closed')`` with a traceback, burying the one clear error this
    module raises. This chains a ``sys.unraisablehook`` that drops exactly those reports.
    """
    previous = sys.unraisablehook
    if getattr(previous, "_lmjax_drops_closed_loop", False):
        return

    def hook(report):
        value = report.exc_value
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        previous(report)

    hook._lmjax_drops_closed_loop = True
    sys.unraisablehook = hook


def _checked_json_dict(extra: Mapping[str, Any]) -> dict:
    """Returns ``extra`` as a dict after checking it is JSON-serialisable, naming a bad key."""
    if not isinstance(extra, Mapping):
        raise TypeError(f"extra must be a dict of JSON values, got {type(extra).__name__}.")
    extra = dict(extra)
    try:
        json.dumps(extra)
    except (TypeError, ValueError):
        for key, value in extra.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError) as error:
                raise TypeError(
                    f"extra[{key!r}] is not JSON-serialisable ({error}); convert arrays with "
                    ".tolist() and configs with config.to_json()."
                ) from None
        raise TypeError("extra must have string keys and JSON values.") from None
    return extra
