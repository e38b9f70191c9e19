"""Training metrics: a progress bar, a JSON-lines file and TensorBoard events (no TensorFlow).

:class:`MetricsLogger` is what the train loop talks to. Every :meth:`MetricsLogger.log` call

* appends one JSON object per line to ``<workdir>/metrics.jsonl``:
  ``{"split": "train", "step": 100, "time": <unix seconds>, "loss": 3.2, ...}``;
* writes each scalar to TensorBoard as ``<split>/<name>`` in ``<workdir>/tensorboard`` with
  tensorboardX (the event files TensorBoard reads; TensorFlow is not needed);
* moves a tqdm progress bar to ``step`` with the loss, tokens/s and tqdm's ETA.

``metrics.jsonl`` is appended to across restarts, so a resumed run logs some steps twice;
:func:`read_metrics` keeps, for each split, only the records of the latest attempt (a step that
goes backwards starts a new attempt and drops the old records from that step on).

A record may carry ``unigram_loss``, the cross-entropy of predicting every token with its corpus
frequency; :mod:`lmjax.train.plot` draws it as the baseline that a trained model must beat.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_SUBDIR = "tensorboard"
UNIGRAM_KEY = "unigram_loss"
TOKENS_PER_SECOND_KEY = "tokens_per_sec"


def _scalar(name: str, value: Any) -> float | int:
    """Returns a JSON-able Python number for a metric value (jax/numpy scalars included)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(
            f"Metric {name!r} has shape {array.shape}; log scalars only (reduce it first, e.g. "
            "with .mean())."
        )
    item = array.reshape(()).item()
    if not isinstance(item, numbers.Real):
        raise ValueError(f"Metric {name!r} is {item!r}, not a number.")
    if isinstance(item, numbers.Integral) and not isinstance(item, bool):
        return int(item)
    return float(item)


class MetricsLogger:
    """Logs scalar metrics to a tqdm bar, ``metrics.jsonl`` and TensorBoard.

    Only the main process should write (pass ``enabled=jax.process_index() == 0``); a disabled
    logger accepts every call and does nothing.

    Args:
        workdir: the run directory (created if missing).
        total_steps: the step count at which training ends (sets the bar's length and ETA).
        enabled: write anything at all.
        progress_bar: show the tqdm bar (on stderr); the files are written either way.
    """

    def __init__(self, workdir: str, total_steps: int, enabled: bool = True,
                 progress_bar: bool = True):
        self.workdir = os.path.abspath(workdir)
        self.total_steps = int(total_steps)
        self.enabled = bool(enabled)
        self._show_bar = progress_bar
        self._bar = None
        self._writer = None
        self._file = None
        self._last_train: tuple[int, float] | None = None  # (step, monotonic time) last logged
        if not self.enabled:
            return
        os.makedirs(self.workdir, exist_ok=True)
        self._file = open(os.path.join(self.workdir, METRICS_FILE), "a", encoding="utf-8")
        from tensorboardX import SummaryWriter  # imported lazily: only the writer needs it

        self._writer = SummaryWriter(logdir=os.path.join(self.workdir, TENSORBOARD_SUBDIR),
                                     flush_secs=30)

    @property
    def metrics_path(self) -> str:
        """Returns the path of the JSON-lines metrics file."""
        return os.path.join(self.workdir, METRICS_FILE)

    def log(self, step: int, metrics: Mapping[str, Any], split: str = "train") -> dict | None:
        """Records the scalar ``metrics`` of ``step`` under ``split`` ('train', 'eval', ...).

        For a 'train' record without ``tokens_per_sec``, the throughput is derived from
        ``num_tokens`` (tokens in one step) times the steps since the previous train record,
        over the wall time since then (not counting the time of records of other splits, such as
        an evaluation, logged in between).

        Args:
            step: the training step the metrics belong to.
            metrics: scalar values (Python, numpy or jax scalars); a ``loss`` key feeds the bar.
            split: the record's split; TensorBoard tags are ``<split>/<name>``.

        Returns:
            The record written (``None`` when disabled).

        Raises:
            ValueError: for a non-scalar metric or a metric named ``split``/``step``/``time``.
        """
        if not self.enabled:
            return None
        step = int(step)
        values = {}
        for name, value in metrics.items():
            if name in ("split", "step", "time"):
                raise ValueError(
                    f"Metric name {name!r} is reserved for the record itself; rename it."
                )
            values[name] = _scalar(name, value)
        now = time.monotonic()
        if split == "train":
            if TOKENS_PER_SECOND_KEY not in values and "num_tokens" in values and self._last_train:
                last_step, last_time = self._last_train
                if step > last_step and now > last_time:
                    values[TOKENS_PER_SECOND_KEY] = (
                        values["num_tokens"] * (step - last_step) / (now - last_time)
                    )
            self._last_train = (step, now)
        record = {"split": split, "step": step, "time": time.time(), **values}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for name, value in values.items():
            self._writer.add_scalar(f"{split}/{name}", value, global_step=step)
        self._update_bar(step, values, split)
        if split != "train":
            self._writer.flush()
            if self._last_train is not None:  # the eval's own time is not training time
                self._last_train = (self._last_train[0], time.monotonic())
        return record

    def log_text(self, step: int, tag: str, text: str) -> None:
        """Writes text (e.g. generated samples) to TensorBoard and prints it above the bar."""
        if not self.enabled:
            return
        self._writer.add_text(tag, text, global_step=int(step))
        self._print(f"[step {int(step)}] {tag}:\n{text}")

    def flush(self) -> None:
        """Forces the metrics file and the TensorBoard events to disk."""
        if self.enabled:
            self._file.flush()
            self._writer.flush()

    def close(self) -> None:
        """Flushes and closes the files and the bar; safe to call twice."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._file is not None:
            self._file.close()
            self._file = None
        self.enabled = False

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------

    def _print(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def _update_bar(self, step: int, values: dict, split: str) -> None:
        if not self._show_bar:
            return
        if split != "train":
            shown = ", ".join(f"{k} {_short(v)}" for k, v in values.items())
            self._print(f"step {step} {split}: {shown}")
            return
        if self._bar is None:
            from tqdm.auto import tqdm

            # Starting the bar at the first logged step (e.g. after a resume) keeps the ETA honest.
            self._bar = tqdm(total=self.total_steps, initial=step, unit="step",
                             dynamic_ncols=True, mininterval=1.0)
        postfix = {}
        if "loss" in values:
            postfix["loss"] = _short(values["loss"])
        if TOKENS_PER_SECOND_KEY in values:
            postfix["tok/s"] = f"{values[TOKENS_PER_SECOND_KEY]:,.0f}"
        self._bar.set_postfix(postfix, refresh=False)  # shown by the update below
        self._bar.update(max(0, step - self._bar.n))
        if self._bar.n >= self.total_steps:  # training is over: stop the clock and the ETA
            self._bar.close()
            self._bar = None


def _short(value: float | int) -> str:
    if isinstance(value, int) or (abs(value) >= 100 and float(value).is_integer()):
        return str(int(value))  # counts such as num_tokens
    if value != 0 and math.isfinite(value) and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4f}"


def read_metrics(workdir: str) -> list[dict]:
    """Returns the records of ``<workdir>/metrics.jsonl``, keeping each split's latest attempt.

    A restarted run appends records again from its checkpoint's step; when a split's step goes
    backwards, the earlier records from that step on belong to the abandoned attempt and are
    dropped. A torn last line (a run killed mid-write) is skipped.

    Args:
        workdir: the run directory.

    Returns:
        The records in file order (each a dict with ``split``, ``step``, ``time`` and metrics).

    Raises:
        FileNotFoundError: if the run has no metrics file yet (the message says how to make one).
    """
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No {METRICS_FILE} in {workdir}; train first with "
            f"`lmjax train --config <experiment.py> --workdir {workdir}`."
        )
    kept: list[dict] = []
    last_step: dict[str, float] = {}
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) - 1:
                continue  # a run killed mid-write leaves a torn last line
            raise ValueError(f"{path} line {number + 1} is not JSON: {line[:80]!r}") from None
        if not isinstance(record, dict) or "step" not in record:
            continue
        split = record.get("split", "train")
        if record["step"] <= last_step.get(split, -math.inf):
            kept = [
                r for r in kept if r.get("split", "train") != split or r["step"] < record["step"]
            ]
        last_step[split] = record["step"]
        kept.append(record)
    return kept
