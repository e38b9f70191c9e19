"""Encoder batches: ``[CLS] A [SEP] B [SEP]`` rows, token types, word starts, sentence labels.

The batch of an encoder objective (BERT, ALBERT, RoBERTa, ELECTRA, ...), one dict of numpy arrays
per step, ``b = global_batch / process_count`` rows for this process:

====================  ============  ===========================================================
``'inputs'``          int32 [b, L]  ``[CLS] A [SEP] B [SEP]`` then ``pad_id`` (FULL-SENTENCES:
                                    ``[CLS] X [SEP]``)
``'token_type_ids'``  int32 [b, L]  0 over ``[CLS] A [SEP]``, 1 over ``B [SEP]``, 0 in padding
``'attention_mask'``  int32 [b, L]  1 on real tokens, 0 on padding
``'word_starts'``     bool [b, L]   True where a word begins (whole-word masking); True on
                                    ``[CLS]``/``[SEP]``, False on padding
``'nsp_labels'``      int32 [b]     ``sentence_pairs='nsp'``: 0 = B follows A, 1 = B random
``'sop_labels'``      int32 [b]     ``sentence_pairs='sop'``: 0 = in order, 1 = swapped
====================  ============  ===========================================================

What goes in A and B is ``lmjax.data.sentence_pairs``. Masking is not done here: the objectives
corrupt the batch on device (dynamic masking, as RoBERTa; Liu et al. 2019, section 4.1).

``word_starts`` combines :func:`~lmjax.data.encoder_vocab.word_start_table` (``'▁'`` pieces,
pieces without ``##``, specials) with what one id cannot tell: the first token of each sentence
and of each segment, and the token after a piece that ends in whitespace.

As :class:`~lmjax.data.batches.LMBatches`: every process walks the same global stream of
instances and keeps its rows ``[process_index * b, (process_index + 1) * b)``; :meth:`state` is
a handful of ints (seed, epoch, document position, item in that document, batch count), the same
on every process, and :meth:`restore` continues with exactly the batches an uninterrupted
iterator would give. A non-repeating (evaluation) stream drops its last, incomplete global batch,
so that every row of every batch is a real instance with a real sentence label.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from lmjax.data.batches import _process_slot
from lmjax.data.encoder_vocab import (
    EncoderSpecialIds,
    encoder_special_ids,
    space_end_table,
    word_start_table,
)
from lmjax.data.sentence_pairs import (
    SENTENCE_PAIR_TASKS,
    EncodedCorpus,
    FullSentenceStream,
    SegmentPair,
    SentencePairStream,
)
from lmjax.data.shuffle import check_iterator_state
from lmjax.data.sources import config_value, open_documents
from lmjax.data.tokenizers import Tokenizer

__all__ = [
    "SEGMENT_BATCH_KEYS",
    "SegmentBatches",
    "segment_eval_batches",
    "segment_row",
    "segment_train_batches",
]

SEGMENT_BATCH_KEYS = ("inputs", "token_type_ids", "attention_mask", "word_starts")
_LABEL_KEYS = {"nsp": "nsp_labels", "sop": "sop_labels", "none": None}
_STATE_KEYS = ("seed", "epoch", "document", "item", "batches")


def segment_row(pair: SegmentPair, seq_len: int, specials: EncoderSpecialIds,
                word_starts: np.ndarray, space_ends: np.ndarray) -> dict[str, np.ndarray]:
    """Lays out one instance as ``[CLS] A [SEP] B [SEP]`` (no B part when B is empty), padded.

    Args:
        pair: The instance; it must fit: ``len(A) + len(B) + 3 <= seq_len`` (``+ 2`` without B).
        seq_len: L.
        specials: The ``[CLS]``/``[SEP]``/``[PAD]`` ids.
        word_starts, space_ends: bool [V], from ``word_start_table`` / ``space_end_table``.

    Returns:
        ``inputs``, ``token_type_ids``, ``attention_mask`` (int32 [L]) and ``word_starts``
        (bool [L]).
    """
    cls, sep = np.array([specials.cls_id], np.int32), np.array([specials.sep_id], np.int32)
    parts = [cls, pair.tokens_a, sep]
    starts = [np.ones(1, bool), pair.starts_a, np.ones(1, bool)]
    if len(pair.tokens_b):
        parts += [pair.tokens_b, sep]
        starts += [pair.starts_b, np.ones(1, bool)]
    real = np.concatenate(parts).astype(np.int32)
    n = len(real)
    if n > seq_len:
        raise ValueError(f"An instance of {n} tokens does not fit data.seq_len={seq_len}.")
    first_of_b = len(pair.tokens_a) + 2
    inputs = np.full([seq_len], specials.pad_id, np.int32)
    inputs[:n] = real
    token_types = np.zeros([seq_len], np.int32)
    if len(pair.tokens_b):
        token_types[first_of_b:n] = 1
    mask = np.zeros([seq_len], np.int32)
    mask[:n] = 1
    starts_real = word_starts[real] | np.concatenate(starts)
    starts_real[1:] |= space_ends[real[:-1]]
    row_starts = np.zeros([seq_len], bool)
    row_starts[:n] = starts_real
    return {"inputs": inputs, "token_type_ids": token_types, "attention_mask": mask,
            "word_starts": row_starts}


class SegmentBatches(Iterator[dict[str, np.ndarray]]):
    """Iterator over this process's slice of encoder batches (see the module docstring).

    Args:
        documents: Random-access documents, e.g. from ``open_documents``.
        tokenizer: Needs ``[CLS] [SEP] [MASK] [PAD]`` pieces (or ``<s> </s> <mask> <pad>``).
        seq_len: L, tokens per row.
        global_batch: Rows per global batch, divisible by ``process_count``.
        sentence_pairs: ``'nsp'`` (BERT), ``'sop'`` (ALBERT) or ``'none'`` (RoBERTa
            FULL-SENTENCES).
        short_seq_prob: Share of documents whose pairs target a random shorter length (BERT 0.1).
        seed: The shuffle seed (``data.shuffle_seed``); also seeds every pair choice.
        shuffle: Shuffle documents every epoch (train) or read them in order (evaluation).
        repeat: Run for ever over epochs (train) or stop after one pass (evaluation).
        process_index, process_count: This process's slot; None asks ``jax``.
        num_batches: Stop after this many batches (None: no limit).
    """

    def __init__(self, documents: Sequence[str], tokenizer: Tokenizer, *, seq_len: int,
                 global_batch: int, sentence_pairs: str = "nsp", short_seq_prob: float = 0.1,
                 seed: int = 0, shuffle: bool = True, repeat: bool = True,
                 process_index: int | None = None, process_count: int | None = None,
                 num_batches: int | None = None):
        if sentence_pairs not in SENTENCE_PAIR_TASKS:
            raise ValueError(
                f"data.sentence_pairs={sentence_pairs!r}: use 'nsp' (BERT), 'sop' (ALBERT) or "
                "'none' (RoBERTa FULL-SENTENCES)."
            )
        if seq_len is None or int(seq_len) < (5 if sentence_pairs != "none" else 3):
            raise ValueError(
                f"data.seq_len={seq_len} is too short for [CLS] A [SEP] B [SEP] rows; use at "
                "least 5 (3 for sentence_pairs='none')."
            )
        self.process_index, self.process_count = _process_slot(process_index, process_count)
        if global_batch < 1 or global_batch % self.process_count:
            raise ValueError(
                f"train.global_batch={global_batch} must be a positive multiple of the "
                f"{self.process_count} processes; each process takes global_batch / "
                "process_count rows. Change the batch size."
            )
        self.specials = encoder_special_ids(tokenizer)
        self.seq_len = int(seq_len)
        self.global_batch = int(global_batch)
        self.per_process_batch = self.global_batch // self.process_count
        self.sentence_pairs = sentence_pairs
        self.seed = int(seed)
        self.num_batches = num_batches
        self._word_starts = word_start_table(tokenizer)
        self._space_ends = space_end_table(tokenizer)
        corpus = EncodedCorpus(documents, tokenizer.encode)
        if sentence_pairs == "none":
            self._stream = FullSentenceStream(
                corpus, max_tokens=self.seq_len - 2, sep_id=self.specials.sep_id,
                seed=self.seed, shuffle=shuffle, repeat=repeat)
            self._next = self._stream.next_row
        else:
            self._stream = SentencePairStream(
                corpus, task=sentence_pairs, max_num_tokens=self.seq_len - 3,
                short_seq_prob=short_seq_prob, seed=self.seed, shuffle=shuffle, repeat=repeat)
            self._next = self._stream.next_pair
        self._batches = 0

    @property
    def label_key(self) -> str | None:
        """``'nsp_labels'``, ``'sop_labels'`` or None (FULL-SENTENCES)."""
        return _LABEL_KEYS[self.sentence_pairs]

    def __iter__(self) -> SegmentBatches:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.num_batches is not None and self._batches >= self.num_batches:
            raise StopIteration
        first_row = self.process_index * self.per_process_batch
        pairs = []
        for row in range(self.global_batch):
            pair = self._next()
            if pair is None:
                raise StopIteration  # the (non-repeating) stream ended: the last batch is dropped
            if first_row <= row < first_row + self.per_process_batch:
                pairs.append(pair)
        rows = [segment_row(p, self.seq_len, self.specials, self._word_starts, self._space_ends)
                for p in pairs]
        batch = {key: np.stack([r[key] for r in rows]) for key in SEGMENT_BATCH_KEYS}  # [b, L]
        if self.label_key is not None:
            batch[self.label_key] = np.array([p.label for p in pairs], np.int32)  # [b]
        self._batches += 1
        return batch

    def state(self) -> dict[str, int]:
        """Returns the position as JSON-able ints: seed, epoch, document, item, batches."""
        return {"seed": self.seed, **self._stream.position(), "batches": self._batches}

    def restore(self, state: dict[str, Any]) -> None:
        """Continues from a :meth:`state` of an iterator over the same documents and options.

        Raises:
            ValueError: The state lacks a key, or was saved with another shuffle seed.
        """
        check_iterator_state(state, _STATE_KEYS, self.seed, "SegmentBatches")
        self._stream.seek(int(state["epoch"]), int(state["document"]), int(state["item"]))
        self._batches = int(state["batches"])


def _segment_options(data_cfg: Any) -> dict[str, Any]:
    return {
        "seq_len": config_value(data_cfg, "seq_len"),
        "sentence_pairs": config_value(data_cfg, "sentence_pairs", "none"),
        "short_seq_prob": config_value(data_cfg, "short_seq_prob", 0.1),
    }


def segment_train_batches(data_cfg: Any, tokenizer: Tokenizer, global_batch: int, *,
                          process_index: int | None = None,
                          process_count: int | None = None) -> SegmentBatches:
    """The endless, shuffled encoder batches of ``data_cfg.train_split``.

    Keys read: train_split, seq_len, shuffle_seed, sentence_pairs (default ``'none'``),
    short_seq_prob (default 0.1), and what ``open_documents`` reads.
    """
    documents = open_documents(data_cfg, config_value(data_cfg, "train_split", "train"))
    return SegmentBatches(
        documents, tokenizer, global_batch=global_batch,
        seed=config_value(data_cfg, "shuffle_seed", 0), shuffle=True, repeat=True,
        process_index=process_index, process_count=process_count, **_segment_options(data_cfg),
    )


def segment_eval_batches(data_cfg: Any, tokenizer: Tokenizer, global_batch: int,
                         num_batches: int | None, *, process_index: int | None = None,
                         process_count: int | None = None) -> list[dict[str, np.ndarray]]:
    """The fixed evaluation batches: ``data_cfg.eval_split`` in order, seed 0, one pass.

    Raises:
        ValueError: The split does not fill one global batch.
    """
    split = config_value(data_cfg, "eval_split", "validation")
    batches = list(SegmentBatches(
        open_documents(data_cfg, split), tokenizer, global_batch=global_batch, seed=0,
        shuffle=False, repeat=False, process_index=process_index, process_count=process_count,
        num_batches=num_batches or None, **_segment_options(data_cfg),
    ))
    if not batches:
        raise ValueError(
            f"The eval split {split!r} of {config_value(data_cfg, 'source')!r} does not fill one "
            f"global batch of {global_batch} rows; lower train.global_batch or data.seq_len."
        )
    return batches
