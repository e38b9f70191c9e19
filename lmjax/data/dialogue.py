"""Multi-turn dialogue data for Meena: conversations, (context, response) examples, seq2seq batches.

Adiwardana et al. (2020), "Towards a Human-like Open-Domain Chatbot", arXiv:2001.09977, §2.1 and
§2.4: each training example is a (context, response) pair taken from a multi-turn conversation; the
context is up to the 7 turns before the response, the response is the next turn; the encoder and
decoder see at most 128 tokens each. Meena's data (341 GB of public social-media conversations) is
not public; this module gives the same example layout over any conversations.

**Conversations.** :func:`read_conversations` reads JSON Lines, one conversation per line::

    {"turns": ["Hi!", "Hello, how are you?", "Good, thanks. You?"]}

A line that is not a JSON object with a ``"turns"`` list of at least two strings is an error
naming the file and line. Data configs point at them with ``data.source = 'dialogue:<glob>'``
(``{split}`` in the glob is filled with the split name; otherwise conversations are split by a
stable hash of ``<file>:<line>``, :mod:`lmjax.data.splits`).

**Offline default (NOT real dialogues).** Any other ``data.source`` (e.g. ``python_docs``, the
embedded corpus) is read with ``open_documents`` and each document's consecutive sentences
(:func:`lmjax.data.sentence_pairs.document_sentences`) become the "turns" of a pseudo-conversation
of at most ``max_turns`` turns (:func:`passage_conversations`). The model then learns to continue
documentation sentence by sentence. That exercises the whole pipeline end to end without a
network, but it is not conversational data and says nothing about dialogue quality (SSA).

**Examples** (:func:`dialogue_examples`). For every turn ``i >= 1`` of a conversation:

- context = turns ``max(0, i - context_turns) .. i - 1`` (Meena: ``context_turns = 7``), each
  tokenized, joined with ``separator_id`` BETWEEN turns (default: the tokenizer's EOS id, i.e.
  every context turn but the last ends with EOS), then truncated from the LEFT to ``encoder_len``
  tokens, so the most recent turns survive;
- response = turn ``i`` tokenized, truncated to ``decoder_len - 1`` tokens, plus EOS: the decoder
  targets. Decoder inputs are the targets shifted right behind ``decoder_start_id`` (default: the
  tokenizer's pad id, as t2t / T5 do).

**Batches** (:class:`DialogueBatches`): one example per row, padded at the end to fixed shapes:
``encoder_inputs`` [b, Le], ``encoder_segment_ids`` (1 real, 0 pad), ``decoder_inputs`` [b, Ld],
``decoder_targets``, ``decoder_segment_ids`` (int32) and ``decoder_weights`` (float32, 1 on real
targets). Epoch ``e`` reads the examples in the order ``EpochPermutation(num_examples, seed, e)``;
``state()`` / ``restore()`` hold ``(seed, epoch, example, batches)`` and continue exactly, like
:class:`lmjax.data.batches.LMBatches`. Every process walks the same global batches and keeps its
slice of rows.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from lmjax.data.batches import _process_slot
from lmjax.data.sentence_pairs import document_sentences
from lmjax.data.shuffle import EpochPermutation, check_iterator_state
from lmjax.data.sources import config_value, open_documents
from lmjax.data.splits import DEFAULT_VALIDATION_FRACTION, split_of_document
from lmjax.data.tokenizers import Tokenizer

__all__ = [
    "DIALOGUE_BATCH_KEYS",
    "DialogueBatches",
    "MEENA_CONTEXT_TURNS",
    "dialogue_eval_batches",
    "dialogue_examples",
    "dialogue_train_batches",
    "passage_conversations",
    "read_conversations",
]

MEENA_CONTEXT_TURNS = 7
DIALOGUE_SOURCE_PREFIX = "dialogue:"
DIALOGUE_BATCH_KEYS = ("encoder_inputs", "encoder_segment_ids", "decoder_inputs",
                       "decoder_targets", "decoder_segment_ids", "decoder_weights")
_STATE_KEYS = ("seed", "epoch", "example", "batches")

Conversation = tuple[str, ...]


# --- Conversations ---------------------------------------------------------------------------


def _conversation_of_line(line: str, where: str) -> Conversation:
    """Parses one JSONL line into its turns; errors name ``where`` (``file:line``)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where} is not valid JSON ({error}).") from None
    if not isinstance(record, dict) or "turns" not in record:
        found = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise ValueError(
            f'{where} has no "turns" field (found {found}); write one conversation per line as '
            '{"turns": ["first turn", "second turn", ...]}.'
        )
    turns = record["turns"]
    if not isinstance(turns, list) or not all(isinstance(t, str) for t in turns):
        raise ValueError(f'{where}: "turns" must be a list of strings, got {turns!r:.80}.')
    if len(turns) < 2:
        raise ValueError(
            f"{where} has {len(turns)} turn(s); a conversation needs at least two (a context "
            "and a response). Remove the line or add turns."
        )
    return tuple(turns)


def read_conversations(
    pattern: str,
    split: str | None = None,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
) -> list[Conversation]:
    """Reads the conversations of the JSONL files matching ``pattern`` (blank lines skipped).

    Args:
        pattern: a glob; ``{split}`` in it is replaced by ``split``.
        split: None keeps every conversation; otherwise, when the glob has no ``{split}``, the
            conversations whose ``<file>:<line>`` name hashes into ``split`` ('train' or
            'validation', see :mod:`lmjax.data.splits`).
        validation_fraction: the held-out share of the hash split.

    Returns:
        The conversations in file (sorted) and line order.

    Raises:
        FileNotFoundError: nothing matches the glob.
        ValueError: a bad line (the message names file and line), or no conversation is left.
    """
    explicit_split = "{split}" in pattern
    if explicit_split:
        if split is None:
            raise ValueError(f"The glob {pattern!r} has '{{split}}'; pass the split to read.")
        pattern = pattern.replace("{split}", split)
    paths = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    if not paths:
        raise FileNotFoundError(f"No dialogue file matches {pattern!r}; check the glob.")
    root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    conversations = []
    for path in paths:
        name = os.path.relpath(os.path.abspath(path), root)
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                conversation = _conversation_of_line(line, f"{path}:{number}")
                if (split is None or explicit_split
                        or split_of_document(f"{name}:{number}", validation_fraction) == split):
                    conversations.append(conversation)
    if not conversations:
        raise ValueError(
            f"The dialogue files {pattern!r} hold no conversation for split {split!r}."
        )
    return conversations


def passage_conversations(documents: Sequence[str], max_turns: int = 16) -> list[Conversation]:
    """Pseudo-conversations: consecutive sentences of each document as turns (NOT real dialogue).

    Each document's sentences are cut into runs of at most ``max_turns``; runs of fewer than two
    sentences are dropped.

    Args:
        documents: texts, e.g. ``open_documents(data_cfg, split)`` of the embedded corpus.
        max_turns: the longest pseudo-conversation (Meena's interactive chats: 14-28 turns).

    Returns:
        The pseudo-conversations in document order.
    """
    if max_turns < 2:
        raise ValueError(f"max_turns={max_turns} must be at least 2 (a context and a response).")
    conversations = []
    for document in documents:
        sentences = document_sentences(document)
        for start in range(0, len(sentences), max_turns):
            run = sentences[start : start + max_turns]
            if len(run) >= 2:
                conversations.append(tuple(run))
    return conversations


# --- Examples --------------------------------------------------------------------------------


def dialogue_examples(
    conversation: Sequence[str],
    encode: Callable[[str], list[int]],
    *,
    separator_id: int,
    eos_id: int,
    encoder_len: int = 128,
    decoder_len: int = 128,
    context_turns: int = MEENA_CONTEXT_TURNS,
) -> list[tuple[list[int], list[int]]]:
    """The (context ids, target ids) examples of one conversation, one per turn after the first.

    Args:
        conversation: its turns.
        encode: text -> ids (no BOS/EOS).
        separator_id: the id put between context turns.
        eos_id: ends every target.
        encoder_len: the context keeps its LAST ``encoder_len`` tokens.
        decoder_len: the target keeps the response's first ``decoder_len - 1`` tokens, then EOS.
        context_turns: turns of context before each response (Meena: 7).

    Returns:
        ``[(context, targets), ...]`` for responses ``1 .. len(conversation) - 1``.
    """
    encoded = [list(encode(turn)) for turn in conversation]
    examples = []
    for i in range(1, len(encoded)):
        context: list[int] = []
        for j in range(max(0, i - context_turns), i):
            if context:
                context.append(separator_id)
            context.extend(encoded[j])
        targets = encoded[i][: decoder_len - 1] + [eos_id]
        examples.append((context[-encoder_len:], targets))
    return examples


def _padded(ids: Sequence[int], length: int, pad_id: int) -> np.ndarray:
    row = np.full((length,), pad_id, np.int32)
    row[: len(ids)] = ids
    return row


class DialogueBatches(Iterator[dict[str, np.ndarray]]):
    """This process's slice of seq2seq batches of (context, response) examples.

    Args:
        conversations: the conversations (see :func:`read_conversations`).
        tokenizer: encodes turns; its ``eos_id`` ends responses, ``pad_id`` fills padding.
        encoder_len: Le (Meena: 128).
        decoder_len: Ld (Meena: 128).
        global_batch: rows per global batch, divisible by ``process_count``.
        seed: the shuffle seed.
        shuffle: shuffle the examples every epoch (train) or read them in order (evaluation).
        repeat: run for ever (train) or stop after one pass, padding the last batch with
            zero-weight rows (evaluation).
        context_turns: turns of context (Meena: 7).
        separator_id: the id between context turns (default: the tokenizer's EOS id).
        decoder_start_id: the first decoder input (default: the tokenizer's pad id).
        process_index, process_count: this process's slot; None asks ``jax``.
        num_batches: stop after this many batches (None: no limit).
    """

    def __init__(self, conversations: Sequence[Sequence[str]], tokenizer: Tokenizer, *,
                 encoder_len: int = 128, decoder_len: int = 128, global_batch: int,
                 seed: int = 0, shuffle: bool = True, repeat: bool = True,
                 context_turns: int = MEENA_CONTEXT_TURNS, separator_id: int | None = None,
                 decoder_start_id: int | None = None, process_index: int | None = None,
                 process_count: int | None = None, num_batches: int | None = None):
        if tokenizer.eos_id is None:
            raise ValueError(f"{tokenizer!r} has no EOS token to end responses; use one that has.")
        for name, value in (("encoder_len", encoder_len), ("decoder_len", decoder_len),
                            ("context_turns", context_turns)):
            if value is None or int(value) < 1:
                raise ValueError(f"{name}={value} must be a positive integer.")
        self.process_index, self.process_count = _process_slot(process_index, process_count)
        if global_batch < 1 or global_batch % self.process_count:
            raise ValueError(
                f"global_batch={global_batch} must be a positive multiple of the "
                f"{self.process_count} processes; change the batch size."
            )
        self.conversations = [tuple(c) for c in conversations]
        counts = np.array([max(len(c) - 1, 0) for c in self.conversations], np.int64)
        self._ends = np.cumsum(counts)  # example k belongs to the first conversation whose end > k
        self.num_examples = int(self._ends[-1]) if len(counts) else 0
        if self.num_examples == 0:
            raise ValueError("The conversations give no example: each needs at least two turns.")
        self.tokenizer = tokenizer
        self.encoder_len, self.decoder_len = int(encoder_len), int(decoder_len)
        self.global_batch = int(global_batch)
        self.per_process_batch = self.global_batch // self.process_count
        self.seed, self.shuffle, self.repeat = int(seed), bool(shuffle), bool(repeat)
        self.context_turns = int(context_turns)
        self.separator_id = tokenizer.eos_id if separator_id is None else int(separator_id)
        self.decoder_start_id = tokenizer.pad_id if decoder_start_id is None else int(
            decoder_start_id)
        self.num_batches = num_batches
        self._epoch, self._example, self._batches = 0, 0, 0
        self._permutation = EpochPermutation(self.num_examples, self.seed, 0, self.shuffle)

    def __iter__(self) -> DialogueBatches:
        return self

    def example(self, index: int) -> tuple[list[int], list[int]]:
        """The (context, targets) ids of example ``index`` (in unshuffled order)."""
        conversation = int(np.searchsorted(self._ends, index, side="right"))
        start = int(self._ends[conversation - 1]) if conversation else 0
        turn = index - start + 1  # the response turn
        turns = self.conversations[conversation][max(0, turn - self.context_turns) : turn + 1]
        return dialogue_examples(
            turns, self.tokenizer.encode, separator_id=self.separator_id,
            eos_id=self.tokenizer.eos_id, encoder_len=self.encoder_len,
            decoder_len=self.decoder_len, context_turns=self.context_turns,
        )[-1]

    def _next_index(self) -> int | None:
        """The next example index of the stream, or None when a one-pass stream has ended."""
        if self._example >= self.num_examples:
            if not self.repeat:
                return None
            self._epoch, self._example = self._epoch + 1, 0
        if self._permutation.epoch != self._epoch:
            self._permutation = EpochPermutation(self.num_examples, self.seed, self._epoch,
                                                 self.shuffle)
        index = self._permutation[self._example]
        self._example += 1
        return index

    def _row(self, index: int | None) -> dict[str, np.ndarray]:
        pad = self.tokenizer.pad_id
        if index is None:
            context, targets = [], []
        else:
            context, targets = self.example(index)
        inputs = ([self.decoder_start_id] + targets[:-1]) if targets else []
        return {
            "encoder_inputs": _padded(context, self.encoder_len, pad),
            "encoder_segment_ids": _padded([1] * len(context), self.encoder_len, 0),
            "decoder_inputs": _padded(inputs, self.decoder_len, pad),
            "decoder_targets": _padded(targets, self.decoder_len, pad),
            "decoder_segment_ids": _padded([1] * len(targets), self.decoder_len, 0),
            "decoder_weights": _padded([1] * len(targets), self.decoder_len, 0).astype(
                np.float32),
        }

    def __next__(self) -> dict[str, np.ndarray]:
        if self.num_batches is not None and self._batches >= self.num_batches:
            raise StopIteration
        first_row = self.process_index * self.per_process_batch
        rows = []
        for row in range(self.global_batch):
            index = self._next_index()
            if index is None and row == 0:
                raise StopIteration
            if first_row <= row < first_row + self.per_process_batch:
                rows.append(self._row(index))
        self._batches += 1
        return {key: np.stack([r[key] for r in rows]) for key in DIALOGUE_BATCH_KEYS}

    def state(self) -> dict[str, int]:
        """The position as JSON-able ints: seed, epoch, example, batches."""
        return {"seed": self.seed, "epoch": self._epoch, "example": self._example,
                "batches": self._batches}

    def restore(self, state: dict[str, Any]) -> None:
        """Continues from a :meth:`state` of an iterator over the same conversations and seed.

        Raises:
            ValueError: the state lacks a key, was saved with another seed, or points past the
                examples.
        """
        check_iterator_state(state, _STATE_KEYS, self.seed, "DialogueBatches")
        if not 0 <= int(state["example"]) <= self.num_examples:
            raise ValueError(
                f"The state's example {state['example']} is outside these "
                f"{self.num_examples} examples; restore with the same conversations."
            )
        self._epoch, self._example = int(state["epoch"]), int(state["example"])
        self._batches = int(state["batches"])


def open_conversations(data_cfg: Any, split: str) -> list[Conversation]:
    """``data.source = 'dialogue:<glob>'`` read as JSONL conversations, else pseudo-conversations
    from ``open_documents`` (see the module docstring: those are NOT real dialogues)."""
    source = config_value(data_cfg, "source", "")
    if isinstance(source, str) and source.startswith(DIALOGUE_SOURCE_PREFIX):
        fraction = config_value(data_cfg, "validation_fraction", DEFAULT_VALIDATION_FRACTION)
        return read_conversations(source[len(DIALOGUE_SOURCE_PREFIX):], split, fraction)
    documents = open_documents(data_cfg, split)
    return passage_conversations(documents, config_value(data_cfg, "max_turns", 16))


def _batches_from_config(data_cfg: Any, tokenizer: Tokenizer, global_batch: int, split: str,
                         **kwargs: Any) -> DialogueBatches:
    return DialogueBatches(
        open_conversations(data_cfg, split), tokenizer,
        encoder_len=config_value(data_cfg, "encoder_len", 128),
        decoder_len=config_value(data_cfg, "decoder_len", 128),
        global_batch=global_batch,
        context_turns=config_value(data_cfg, "context_turns", MEENA_CONTEXT_TURNS),
        separator_id=config_value(data_cfg, "separator_id", None),
        decoder_start_id=config_value(data_cfg, "decoder_start_id", None),
        **kwargs,
    )


def dialogue_train_batches(data_cfg: Any, tokenizer: Tokenizer, global_batch: int, *,
                           process_index: int | None = None,
                           process_count: int | None = None) -> DialogueBatches:
    """The endless, shuffled training batches of ``data_cfg.train_split``.

    Keys read from ``data_cfg``: source, train_split, shuffle_seed, encoder_len, decoder_len,
    context_turns, separator_id, decoder_start_id, max_turns (pseudo-conversations),
    validation_fraction, and what ``open_documents`` reads.
    """
    return _batches_from_config(
        data_cfg, tokenizer, global_batch, config_value(data_cfg, "train_split", "train"),
        seed=config_value(data_cfg, "shuffle_seed", 0), shuffle=True, repeat=True,
        process_index=process_index, process_count=process_count,
    )


def dialogue_eval_batches(data_cfg: Any, tokenizer: Tokenizer, global_batch: int,
                          num_batches: int | None, *, process_index: int | None = None,
                          process_count: int | None = None) -> list[dict[str, np.ndarray]]:
    """The fixed evaluation batches: ``data_cfg.eval_split`` in order, each example once (the last
    batch padded with zero-weight rows), cut after ``num_batches`` (None or 0: all)."""
    return list(_batches_from_config(
        data_cfg, tokenizer, global_batch, config_value(data_cfg, "eval_split", "validation"),
        seed=0, shuffle=False, repeat=False, process_index=process_index,
        process_count=process_count, num_batches=num_batches or None,
    ))
