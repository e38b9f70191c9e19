"""Text-to-text multi-task mixing (T5, Raffel et al. 2020, section 3.5.2; mT5, Xue et al. 2021,
section 2) and seq2seq batches of text pairs.

Every task is text to text: an example is ``(input_text, target_text)`` and the task is named
by a prefix on the input (``"translate English to German: ..."``, ``"cola sentence: ..."``).
A mixture draws the task of each example at random with the rates of
``seqio.mixing_rate_num_examples`` (``t5/data/utils.py::rate_num_examples``)::

    rate_i = min(n_i * scale, maximum) ** (1 / temperature)        (normalised to sum to 1)

``temperature=1`` with a ``maximum`` ("K") is T5's examples-proportional mixing with an
artificial data-set size limit; ``temperature > 1`` flattens the distribution toward equal
mixing. mT5 samples its languages with ``p(L) ∝ |L|**α``, α = 0.3, i.e. ``temperature = 1/0.3``
(``multilingual_t5/tasks.py``: ``rate_num_examples(temperature=1.0 / 0.3)``).

:class:`TaskMixture` is deterministic and resumable: the task of example ``i`` depends only on
``(seed, i)``, each task reads its examples in a per-epoch shuffled order
(:class:`lmjax.data.shuffle.EpochPermutation`) or from a stream, and ``state()`` / ``restore()``
are a few ints. :func:`text_to_text_batch` tokenizes pairs into the seq2seq batch of
``lmjax.objectives`` (``encoder_inputs``, ``decoder_inputs``, ... ; EOS appended after
truncation, as seqio's ``append_eos_after_trim``). :class:`MixtureBatches` chains the two.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from lmjax.data.shuffle import EpochPermutation, check_iterator_state

__all__ = [
    "MixtureBatches",
    "MixtureExample",
    "TaskMixture",
    "TextTask",
    "mixing_rates",
    "rate_num_examples",
    "text_to_text_batch",
]

SEQ2SEQ_BATCH_KEYS = (
    "encoder_inputs",
    "encoder_segment_ids",
    "decoder_inputs",
    "decoder_targets",
    "decoder_segment_ids",
    "decoder_weights",
)
# mT5's language-sampling exponent (Xue et al. 2021, section 2): temperature 1 / 0.3.
MT5_ALPHA = 0.3
_DRAWS_PER_BLOCK = 1024  # task choices are drawn in blocks of this many examples
_STATE_KEYS = ("seed", "examples", "tasks", "positions")

TextPair = tuple[str, str]


class MixtureExample(NamedTuple):
    """One mixed example: ``inputs`` (with the task prefix), ``targets`` and the task name."""

    inputs: str
    targets: str
    task: str


@dataclasses.dataclass(frozen=True)
class TextTask:
    """A text-to-text task.

    Attributes:
      name: the task's name (reported with each example).
      prefix: prepended to every input as ``f"{prefix}: {input}"``; ``""`` adds nothing.
      examples: ``(input_text, target_text)`` pairs as a sequence (read in a shuffled order,
        repeated), a zero-argument function returning a fresh iterable (a stream, restarted when
        it ends), or a one-shot iterator (the mixture ends when it does; restoring it can only
        move forward).
      num_examples: the size used for the mixing rate; defaults to ``len(examples)`` for a
        sequence and is required otherwise.
    """

    name: str
    prefix: str
    examples: Sequence[TextPair] | Callable[[], Iterable[TextPair]] | Iterator[TextPair]
    num_examples: int | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"TextTask.name must be a non-empty string, got {self.name!r}.")
        if not isinstance(self.prefix, str):
            raise ValueError(f"TextTask {self.name!r}: prefix must be a string, got "
                             f"{self.prefix!r}.")
        if isinstance(self.examples, (str, bytes)) or not (
            _is_sequence(self.examples) or callable(self.examples)
            or isinstance(self.examples, Iterator)
        ):
            raise ValueError(
                f"TextTask {self.name!r}: examples must be a list of (input, target) pairs, a "
                f"function returning an iterable of them, or an iterator; got "
                f"{type(self.examples).__name__}."
            )
        if self.num_examples is None and not _is_sequence(self.examples):
            raise ValueError(
                f"TextTask {self.name!r}: a streamed task needs num_examples (its size, for "
                "the mixing rate)."
            )
        if self.num_examples is not None and self.num_examples < 0:
            raise ValueError(f"TextTask {self.name!r}: num_examples must be >= 0, got "
                             f"{self.num_examples}.")
        if _is_sequence(self.examples) and len(self.examples) == 0:
            raise ValueError(f"TextTask {self.name!r} has no examples.")

    @property
    def size(self) -> int:
        """The number of examples the mixing rate counts."""
        return int(self.num_examples if self.num_examples is not None else len(self.examples))


def _is_sequence(examples: Any) -> bool:
    return isinstance(examples, Sequence) and not isinstance(examples, (str, bytes))


def rate_num_examples(
    num_examples: float, *, maximum: float | None = None, temperature: float = 1.0,
    scale: float = 1.0,
) -> float:
    """The (unnormalised) mixing rate of a task of ``num_examples`` examples:
    ``min(num_examples * scale, maximum) ** (1 / temperature)``
    (``seqio.mixing_rate_num_examples`` / ``t5/data/utils.py::rate_num_examples``).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (1 = proportional; mT5: 1/0.3), got "
                         f"{temperature}.")
    if num_examples < 0 or scale < 0:
        raise ValueError(f"num_examples ({num_examples}) and scale ({scale}) must be >= 0.")
    rate = float(num_examples) * float(scale)
    if maximum is not None:
        if not maximum > 0:
            raise ValueError(f"maximum must be > 0 (T5 used 2**19 .. 2**21), got {maximum}.")
        rate = min(rate, float(maximum))
    return rate ** (1.0 / float(temperature))


def mixing_rates(
    num_examples: Sequence[float], *, maximum: float | None = None, temperature: float = 1.0,
    scale: float = 1.0,
) -> np.ndarray:
    """float64 [T]: ``rate_num_examples`` of every task, normalised to sum to 1.

    Raises:
      ValueError: no tasks, or every rate is 0.
    """
    rates = np.array(
        [rate_num_examples(n, maximum=maximum, temperature=temperature, scale=scale)
         for n in num_examples],
        np.float64,
    )
    if rates.size == 0 or not rates.sum() > 0:
        raise ValueError(f"Mixing rates {rates.tolist()} from sizes {list(num_examples)}: at "
                         "least one task needs a positive size.")
    return rates / rates.sum()


class _TaskReader:
    """Reads one task's examples in order; its position is ``(epoch, offset)``."""

    def __init__(self, task: TextTask, seed: int, shuffle: bool):
        self.task = task
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.offset = 0, 0
        self._iterator: Iterator[TextPair] | None = None
        self._order: EpochPermutation | None = None
        if not _is_sequence(task.examples):
            self._iterator = iter(task.examples() if callable(task.examples) else task.examples)

    def next_pair(self) -> TextPair:
        examples = self.task.examples
        if _is_sequence(examples):
            if self.offset == len(examples):
                self.epoch, self.offset = self.epoch + 1, 0
            if self._order is None or self._order.epoch != self.epoch:
                self._order = EpochPermutation(len(examples), self.seed, self.epoch, self.shuffle)
            pair = examples[self._order[self.offset]]
        else:
            try:
                pair = next(self._iterator)
            except StopIteration:
                if not callable(examples):
                    raise
                self.epoch, self.offset = self.epoch + 1, 0
                self._iterator = iter(examples())
                try:
                    pair = next(self._iterator)
                except StopIteration:
                    raise ValueError(f"Task {self.task.name!r}: its examples function returned "
                                     "an empty iterable.") from None
        self.offset += 1
        return _checked_pair(pair, self.task.name)

    def seek(self, epoch: int, offset: int) -> None:
        examples = self.task.examples
        if _is_sequence(examples):
            self.epoch, self.offset = epoch, offset
            return
        if callable(examples):
            self._iterator = iter(examples())
            self.epoch, self.offset = epoch, 0
        elif (epoch, offset) < (self.epoch, self.offset) or epoch != self.epoch:
            raise ValueError(
                f"Task {self.task.name!r} reads a one-shot iterator at ({self.epoch}, "
                f"{self.offset}) and cannot go back to ({epoch}, {offset}); give the task a "
                "list or a function returning a fresh iterator to restore it."
            )
        for _ in range(offset - self.offset):
            if next(self._iterator, None) is None:
                raise ValueError(f"Task {self.task.name!r} has fewer than {offset} examples "
                                 "per pass; the state does not belong to these tasks.")
        self.offset = offset


def _checked_pair(pair: Any, task_name: str) -> TextPair:
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(text, str) for text in pair)):
        raise ValueError(f"Task {task_name!r} gave {pair!r}; examples must be "
                         "(input_text, target_text) string pairs.")
    return pair[0], pair[1]


class TaskMixture:
    """An endless, deterministic, resumable stream of text-to-text examples from several tasks.

    Example ``i``'s task is drawn with probability ``rates[t]`` from a generator seeded by
    ``(seed, i // 1024)``; the example is that task's next one, ``inputs`` prefixed with
    ``f"{prefix}: "``.

    Args:
      tasks: the tasks (distinct names).
      maximum: the per-task size cap ("K", T5 section 3.5.2); None = no cap.
      temperature: the mixing temperature (1: proportional; mT5: ``1 / MT5_ALPHA``).
      scale: multiplies every size before the cap.
      rates: explicit per-task rates (any positive scale) instead of the formula.
      seed: the mixing and shuffling seed.
      shuffle: shuffle the order of list-backed tasks every epoch.
    """

    def __init__(
        self,
        tasks: Sequence[TextTask],
        *,
        maximum: float | None = None,
        temperature: float = 1.0,
        scale: float = 1.0,
        rates: Sequence[float] | None = None,
        seed: int = 0,
        shuffle: bool = True,
    ):
        tasks = tuple(tasks)
        if not tasks or not all(isinstance(t, TextTask) for t in tasks):
            raise ValueError("TaskMixture needs a non-empty sequence of TextTask.")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"Task names must be distinct, got {names}.")
        if rates is None:
            self.rates = mixing_rates([t.size for t in tasks], maximum=maximum,
                                      temperature=temperature, scale=scale)
        else:
            given = np.asarray(rates, np.float64)
            if given.shape != (len(tasks),) or (given < 0).any() or not given.sum() > 0:
                raise ValueError(f"rates {list(rates)} must be {len(tasks)} non-negative numbers "
                                 "with a positive sum, one per task.")
            self.rates = given / given.sum()
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed}.")
        self.tasks = tasks
        self.seed = int(seed)
        self._cumulative = np.cumsum(self.rates)
        self._cumulative[-1] = 1.0
        task_seeds = np.random.SeedSequence([self.seed, 1]).generate_state(len(tasks), np.uint32)
        self._readers = [_TaskReader(t, int(s), shuffle) for t, s in zip(tasks, task_seeds)]
        self._examples = 0
        self._block: tuple[int, np.ndarray] | None = None

    def task_of_example(self, index: int) -> int:
        """The task index of example ``index`` (a pure function of ``(seed, index)``)."""
        block, within = divmod(int(index), _DRAWS_PER_BLOCK)
        if self._block is None or self._block[0] != block:
            uniforms = np.random.default_rng([self.seed, 0, block]).random(_DRAWS_PER_BLOCK)
            choices = np.searchsorted(self._cumulative, uniforms, side="right")
            self._block = (block, np.minimum(choices, len(self.tasks) - 1))
        return int(self._block[1][within])

    def __iter__(self) -> TaskMixture:
        return self

    def __next__(self) -> MixtureExample:
        task = self.task_of_example(self._examples)
        inputs, targets = self._readers[task].next_pair()  # StopIteration ends the mixture
        self._examples += 1
        prefix = self.tasks[task].prefix
        return MixtureExample(f"{prefix}: {inputs}" if prefix else inputs, targets,
                              self.tasks[task].name)

    def state(self) -> dict[str, Any]:
        """JSON-able position: seed, examples emitted, task names, per-task (epoch, offset)."""
        return {
            "seed": self.seed,
            "examples": self._examples,
            "tasks": [t.name for t in self.tasks],
            "positions": [[r.epoch, r.offset] for r in self._readers],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continues from a :meth:`state` of a mixture of the same tasks and seed.

        Raises:
          ValueError: a missing key, another seed or other tasks, or a one-shot iterator task
            that would have to go back.
        """
        check_iterator_state(state, _STATE_KEYS, self.seed, "TaskMixture")
        names = [t.name for t in self.tasks]
        if list(state["tasks"]) != names:
            raise ValueError(f"The state was saved for tasks {list(state['tasks'])}, this "
                             f"mixture has {names}; restore with the same tasks in that order.")
        for reader, (epoch, offset) in zip(self._readers, state["positions"]):
            reader.seek(int(epoch), int(offset))
        self._examples = int(state["examples"])


def _encoded(tokenizer: Any, text: str, length: int, eos_id: int) -> list[int]:
    return list(tokenizer.encode(text))[: length - 1] + [eos_id]


def text_to_text_batch(
    pairs: Sequence[Sequence[str]],
    tokenizer: Any,
    *,
    inputs_length: int,
    targets_length: int,
    decoder_start_id: int = 0,
) -> dict[str, np.ndarray]:
    """Tokenizes ``(input_text, target_text)`` pairs into a padded seq2seq batch.

    Each text becomes ``encode(text)[:length - 1] + [EOS]`` (seqio's ``append_eos_after_trim``),
    padded with ``tokenizer.pad_id``; the decoder inputs are the targets shifted right with
    ``decoder_start_id`` first (T5: 0, the pad id).

    Args:
      pairs: [B] items whose first two fields are the input and target texts (a 2-tuple or a
        :class:`MixtureExample`).
      tokenizer: an ``lmjax.data.Tokenizer`` (``encode``, ``eos_id``, ``pad_id``).
      inputs_length, targets_length: Le and Ld (static).
      decoder_start_id: the first decoder input.

    Returns:
      numpy ``encoder_inputs`` / ``encoder_segment_ids`` int32 [B, Le], ``decoder_inputs`` /
      ``decoder_targets`` / ``decoder_segment_ids`` int32 and ``decoder_weights`` float32
      [B, Ld] (segment id 1 on real tokens, 0 on padding).

    Raises:
      ValueError: the tokenizer has no EOS, a length < 2, or an item is not a text pair.
    """
    eos_id, pad_id = tokenizer.eos_id, tokenizer.pad_id
    if eos_id is None:
        raise ValueError(f"{tokenizer!r} has no EOS piece; seq2seq batches end every text with "
                         "EOS. Use a tokenizer with an end-of-sequence id.")
    if inputs_length < 2 or targets_length < 2:
        raise ValueError(f"inputs_length ({inputs_length}) and targets_length "
                         f"({targets_length}) must be >= 2 (a token and EOS).")
    batch = {
        "encoder_inputs": np.full((len(pairs), inputs_length), pad_id, np.int32),
        "encoder_segment_ids": np.zeros((len(pairs), inputs_length), np.int32),
        "decoder_targets": np.full((len(pairs), targets_length), pad_id, np.int32),
        "decoder_segment_ids": np.zeros((len(pairs), targets_length), np.int32),
    }
    for row, pair in enumerate(pairs):
        if isinstance(pair, str) or len(pair) < 2 or not all(
            isinstance(text, str) for text in pair[:2]
        ):
            raise ValueError(f"Item {row} is {pair!r}; expected (input_text, target_text).")
        for text, ids_key, segments_key, length in (
            (pair[0], "encoder_inputs", "encoder_segment_ids", inputs_length),
            (pair[1], "decoder_targets", "decoder_segment_ids", targets_length),
        ):
            ids = _encoded(tokenizer, text, length, eos_id)
            batch[ids_key][row, : len(ids)] = ids
            batch[segments_key][row, : len(ids)] = 1
    targets = batch["decoder_targets"]
    batch["decoder_inputs"] = np.concatenate(
        [np.full((len(pairs), 1), decoder_start_id, np.int32), targets[:, :-1]], axis=1
    )
    batch["decoder_weights"] = (batch["decoder_segment_ids"] > 0).astype(np.float32)
    return {key: batch[key] for key in SEQ2SEQ_BATCH_KEYS}


class MixtureBatches:
    """Batches of a :class:`TaskMixture`, tokenized by :func:`text_to_text_batch`; resumable.

    Args:
      mixture: the example stream.
      tokenizer: an ``lmjax.data.Tokenizer``.
      batch_size: rows per batch.
      inputs_length, targets_length, decoder_start_id: as in :func:`text_to_text_batch`.
    """

    def __init__(self, mixture: TaskMixture, tokenizer: Any, batch_size: int, *,
                 inputs_length: int, targets_length: int, decoder_start_id: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.mixture, self.tokenizer, self.batch_size = mixture, tokenizer, int(batch_size)
        self._lengths = dict(inputs_length=inputs_length, targets_length=targets_length,
                             decoder_start_id=decoder_start_id)

    def __iter__(self) -> MixtureBatches:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        examples = [next(self.mixture) for _ in range(self.batch_size)]
        return text_to_text_batch(examples, self.tokenizer, **self._lengths)

    def state(self) -> dict[str, Any]:
        """The mixture's state (batches hold a whole number of examples)."""
        return self.mixture.state()

    def restore(self, state: dict[str, Any]) -> None:
        """Continues from a :meth:`state` (see :meth:`TaskMixture.restore`)."""
        self.mixture.restore(state)
