"""Language-model batches: packed rows, deterministic shuffling, resumable, one slice per host.

The train loop's three calls (see also ``lmjax.data.load_or_train_tokenizer``); with
``data.format = 'segments'`` they return encoder batches instead (``lmjax.data.segment_batches``:
``[CLS] A [SEP] B [SEP]`` rows, ``data.sentence_pairs`` 'none'/'nsp'/'sop')::

    tokenizer = load_or_train_tokenizer(config.tokenizer, open_documents(config.data,
                                        config.data.train_split), workdir)
    train = train_batches(config.data, tokenizer, config.train.global_batch)   # LMBatches
    evals = eval_batches(config.data, tokenizer, config.train.global_batch,
                         config.train.eval_batches)                          # list of batches
    batch = next(train)        # checkpoint extra: train.state(); on resume: train.restore(s)

Every batch is a dict of numpy arrays of shape [b, L], b = global_batch / process_count (the batch
contract in the coordinator's notes): ``inputs``, ``targets``, ``segment_ids``, ``positions``
(int32) and ``weights`` (float32); see ``lmjax.data.packing`` for what each holds.

**One global batch, sliced.** Every process walks the same global row stream (same documents,
same seeded order) and keeps rows ``[process_index * b, (process_index + 1) * b)`` of each global
batch, so the global batch is the same whatever the number of processes, and the iterator state
(a handful of ints) is the same on every process and can be saved by process 0 alone. The price
is that every process tokenizes the documents of the whole global batch; SentencePiece encodes
millions of tokens per second per core, which is far from a bottleneck at the scales lmjax targets
on one or a few hosts.

**Determinism and resumption.** Epoch ``e`` reads documents in the order
``EpochPermutation(n, shuffle_seed, e)``; :meth:`LMBatches.state` is the stream cursor
``(epoch, document, token)`` plus the batch count, and :meth:`LMBatches.restore` continues with
exactly the batches an uninterrupted iterator would have given, without replaying anything.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from lmjax.data.packing import BATCH_KEYS, DocumentTokenStream, packed_row
from lmjax.data.shuffle import check_iterator_state
from lmjax.data.sources import config_value, open_documents
from lmjax.data.tokenizers import Tokenizer

__all__ = ["LMBatches", "eval_batches", "train_batches"]

_STATE_KEYS = ("seed", "epoch", "document", "token", "batches")
_FORMATS = ("lm", "segments")


def _wants_segments(data_cfg: Any) -> bool:
    """True when ``data.format`` asks for encoder segment batches; absent means ``'lm'``."""
    data_format = config_value(data_cfg, "format", "lm") or "lm"
    if data_format not in _FORMATS:
        raise ValueError(
            f"data.format={data_format!r}: use 'lm' (packed language-model rows) or 'segments' "
            "([CLS] A [SEP] B [SEP] rows for encoders)."
        )
    return data_format == "segments"


def _process_slot(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    """Returns (process_index, process_count), asking JAX for any that is None."""
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} is not in [0, {process_count}).")
    return int(process_index), int(process_count)


class LMBatches(Iterator[dict[str, np.ndarray]]):
    """Iterator over this process's slice of packed language-model batches.

    Args:
        documents: Random-access documents, e.g. from ``open_documents``.
        tokenizer: Encodes documents; its ``eos_id`` ends each one, ``pad_id`` fills padding.
        seq_len: L, tokens per row.
        global_batch: Rows per global batch, divisible by ``process_count``.
        seed: The shuffle seed (``data.shuffle_seed``).
        shuffle: Shuffle documents every epoch (train) or read them in order (evaluation).
        repeat: Run for ever over epochs (train) or stop after one pass (evaluation; the last
            batch is padded with rows of zero weight).
        document_mask: Packed rows keep document boundaries (see ``lmjax.data.packing``).
        add_bos: Start each document with the tokenizer's ``bos_id``.
        process_index, process_count: This process's slot; None asks ``jax``.
        num_batches: Stop after this many batches (None: no limit).
    """

    def __init__(self, documents: Sequence[str], tokenizer: Tokenizer, *, seq_len: int,
                 global_batch: int, seed: int = 0, shuffle: bool = True, repeat: bool = True,
                 document_mask: bool = True, add_bos: bool = False,
                 process_index: int | None = None, process_count: int | None = None,
                 num_batches: int | None = None):
        if seq_len is None or int(seq_len) < 1:
            raise ValueError(f"data.seq_len={seq_len} must be a positive number of tokens.")
        self.process_index, self.process_count = _process_slot(process_index, process_count)
        if global_batch < 1 or global_batch % self.process_count:
            raise ValueError(
                f"train.global_batch={global_batch} must be a positive multiple of the "
                f"{self.process_count} processes; each process takes global_batch / "
                "process_count rows. Change the batch size."
            )
        if tokenizer.eos_id is None:
            raise ValueError(
                f"{tokenizer!r} has no end-of-text token to separate packed documents. Use a "
                "tokenizer with '</s>' or '<|endoftext|>' (trained SentencePiece models have one)."
            )
        if add_bos and tokenizer.bos_id is None:
            raise ValueError(f"data.add_bos=True but {tokenizer!r} has no BOS token; set it False.")
        self.seq_len = int(seq_len)
        self.global_batch = int(global_batch)
        self.per_process_batch = self.global_batch // self.process_count
        self.seed = int(seed)
        self.num_batches = num_batches
        self.document_mask = bool(document_mask)
        self._pad_id = tokenizer.pad_id
        self._stream = DocumentTokenStream(
            documents, tokenizer.encode, eos_id=tokenizer.eos_id,
            bos_id=tokenizer.bos_id if add_bos else None, seed=self.seed, shuffle=shuffle,
            repeat=repeat,
        )
        self._batches = 0

    def __iter__(self) -> LMBatches:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.num_batches is not None and self._batches >= self.num_batches:
            raise StopIteration
        first_row = self.process_index * self.per_process_batch
        rows = []
        ended = False
        for row in range(self.global_batch):
            chunks = [] if ended else self._stream.next_row_chunks(self.seq_len)
            if not chunks:
                if row == 0:
                    raise StopIteration  # the (non-repeating) stream has ended
                ended = True  # pad the rest of this last batch with zero-weight rows
            if first_row <= row < first_row + self.per_process_batch:
                rows.append(packed_row(chunks, self.seq_len, self._pad_id, self.document_mask))
        self._batches += 1
        return {key: np.stack([r[key] for r in rows]) for key in BATCH_KEYS}  # each [b, L]

    def state(self) -> dict[str, int]:
        """Returns the position as JSON-able ints: seed, epoch, document, token, batches."""
        return {"seed": self.seed, **self._stream.position(), "batches": self._batches}

    def restore(self, state: dict[str, Any]) -> None:
        """Continues from a :meth:`state` of an iterator over the same documents and seed.

        Raises:
            ValueError: The state lacks a key, or was saved with another shuffle seed.
        """
        check_iterator_state(state, _STATE_KEYS, self.seed, "LMBatches")
        self._stream.seek(int(state["epoch"]), int(state["document"]), int(state["token"]))
        self._batches = int(state["batches"])


def train_batches(data_cfg: Any, tokenizer: Tokenizer, global_batch: int, *,
                  process_index: int | None = None,
                  process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Returns the endless, shuffled training batches of ``data_cfg.train_split``.

    Args:
        data_cfg: The ``data`` config: source (and what ``open_documents`` reads), train_split,
            seq_len, document_mask, shuffle_seed, optional add_bos; optional format ('lm', the
            default, or 'segments': then sentence_pairs and short_seq_prob are read and a
            ``SegmentBatches`` comes back).
        tokenizer: From ``load_or_train_tokenizer``.
        global_batch: ``config.train.global_batch``.
        process_index, process_count: This process's slot; None asks ``jax``.

    Returns:
        ``LMBatches``, or ``lmjax.data.segment_batches.SegmentBatches`` for format 'segments'.
    """
    if _wants_segments(data_cfg):
        from lmjax.data.segment_batches import segment_train_batches  # it imports this module

        return segment_train_batches(data_cfg, tokenizer, global_batch,
                                     process_index=process_index, process_count=process_count)
    documents = open_documents(data_cfg, config_value(data_cfg, "train_split", "train"))
    return LMBatches(
        documents, tokenizer, seq_len=config_value(data_cfg, "seq_len"),
        global_batch=global_batch, seed=config_value(data_cfg, "shuffle_seed", 0),
        shuffle=True, repeat=True,
        document_mask=config_value(data_cfg, "document_mask", True),
        add_bos=config_value(data_cfg, "add_bos", False),
        process_index=process_index, process_count=process_count,
    )


def eval_batches(data_cfg: Any, tokenizer: Tokenizer, global_batch: int,
                 num_batches: int | None, *, process_index: int | None = None,
                 process_count: int | None = None) -> list[dict[str, np.ndarray]]:
    """Returns the fixed evaluation batches: ``data_cfg.eval_split`` in order, unshuffled.

    The held-out documents are packed like training rows, read once from the start, and cut
    after ``num_batches`` batches. When the split holds fewer tokens, fewer batches come back
    (the last one padded with zero-weight rows), so every held-out target is counted at most once.

    Args:
        data_cfg: The ``data`` config (eval_split, seq_len, document_mask, ...).
        tokenizer: The training tokenizer.
        global_batch: Rows per global batch (each process gets its slice).
        num_batches: ``config.train.eval_batches``; None or 0 = the whole split.
        process_index, process_count: This process's slot; None asks ``jax``.

    With ``data_cfg.format == 'segments'`` the batches are encoder segment batches, built with seed
    0 from the split in order (``segment_batches.segment_eval_batches``; an incomplete last
    global batch is dropped there).

    Raises:
        ValueError: The split yields no batch at all.
    """
    if _wants_segments(data_cfg):
        from lmjax.data.segment_batches import segment_eval_batches  # it imports this module

        return segment_eval_batches(data_cfg, tokenizer, global_batch, num_batches,
                                    process_index=process_index, process_count=process_count)
    split = config_value(data_cfg, "eval_split", "validation")
    documents = open_documents(data_cfg, split)
    batches = list(LMBatches(
        documents, tokenizer, seq_len=config_value(data_cfg, "seq_len"),
        global_batch=global_batch, seed=0, shuffle=False, repeat=False,
        document_mask=config_value(data_cfg, "document_mask", True),
        add_bos=config_value(data_cfg, "add_bos", False),
        process_index=process_index, process_count=process_count,
        num_batches=num_batches or None,
    ))
    if not batches:
        source = config_value(data_cfg, "source")
        raise ValueError(f"The eval split {split!r} of {source!r} gave no batch.")
    return batches
