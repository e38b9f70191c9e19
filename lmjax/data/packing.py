"""Packing tokenized documents into fixed-length rows with document boundaries.

The documents of an epoch, each tokenized as ``[BOS] tokens EOS`` (BOS optional), are read as one
continuous token stream (GPT's "contiguous text", Radford et al. 2018, section 4.1; GPT-2's
``<|endoftext|>`` separators). Row ``k`` holds stream tokens ``[k*L, k*L + L]`` (``L + 1`` tokens):
``inputs`` are the first ``L``, ``targets`` the last ``L``. Consecutive rows overlap by one token,
so every stream token after the first is a target exactly once and no row is padded until the
stream ends.

Per row, shapes [L]:

* ``segment_ids``: 1, 2, ... numbering the documents in the row's inputs (a document continuing
  from the previous row is segment 1); 0 marks padding.
* ``positions``: restart at 0 where each document starts and at the start of the row (attention
  cannot see the previous row, so a continuing document restarts too).
* ``weights``: 1.0 where the target is the next token of the same document, 0.0 where it belongs
  to the next document (after EOS) or is padding, so no cross-document target is trained.

With ``document_mask=False`` a row is one stream: a single segment, positions ``0..L-1``, and every
real target weighted 1 (EOS -> next document's first token is trained, as in GPT-2).

:class:`DocumentTokenStream` walks the stream lazily (one document tokenized at a time, so a
C4-sized source costs nothing up front) and its position is three ints, which is what makes the
batch iterator resumable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lmjax.data.shuffle import EpochPermutation

__all__ = ["BATCH_KEYS", "DocumentTokenStream", "packed_row"]

BATCH_KEYS = ("inputs", "targets", "segment_ids", "positions", "weights")


def packed_row(
    chunks: Sequence[np.ndarray], seq_len: int, pad_id: int, document_mask: bool = True
) -> dict[str, np.ndarray]:
    """Returns one packed row: ``inputs``, ``targets``, ``segment_ids``, ``positions``, ``weights``.

    Args:
        chunks: Consecutive pieces of the token stream, each from a single document and in
            stream order (the first may continue a document begun in an earlier row); together at
            most ``seq_len + 1`` tokens.
        seq_len: L, the row length.
        pad_id: Token id written into padding positions of ``inputs`` and ``targets``.
        document_mask: Number documents and restart positions (True), or one stream (False).

    Returns:
        int32 arrays [L] and float32 ``weights`` [L], as described in the module docstring.
    """
    lengths = [len(c) for c in chunks]
    total = sum(lengths)
    if total > seq_len + 1:
        raise ValueError(f"Chunks hold {total} tokens; a row of length {seq_len} takes at most "
                         f"{seq_len + 1}.")
    tokens = np.full(seq_len + 1, pad_id, np.int32)  # [L+1]
    segments = np.zeros(seq_len + 1, np.int32)  # [L+1], 0 = padding
    positions = np.zeros(seq_len + 1, np.int32)  # [L+1]
    start = 0
    for segment, chunk in enumerate(chunks, start=1):
        end = start + len(chunk)
        tokens[start:end] = chunk
        segments[start:end] = segment if document_mask else 1
        positions[start:end] = np.arange(len(chunk)) if document_mask else np.arange(start, end)
        start = end
    # A target is trained when it is a real token of the same segment as its input.
    same_document = (segments[:-1] == segments[1:]) & (segments[1:] > 0)  # [L]
    return {
        "inputs": tokens[:-1],
        "targets": tokens[1:],
        "segment_ids": segments[:-1],
        "positions": positions[:-1],
        "weights": same_document.astype(np.float32),
    }


class DocumentTokenStream:
    """A resumable cursor over the token stream of ``documents``, epoch after epoch.

    Epoch ``e`` reads the documents in the order ``EpochPermutation(n, seed, e, shuffle)``. The
    position is ``(epoch, document, token)``: the epoch, the index into that epoch's order, and
    the offset inside that document's tokens.

    Args:
        documents: Random-access documents (``Sequence[str]``).
        encode: Text -> token ids (without BOS/EOS).
        eos_id: Appended to every document.
        bos_id: Prepended to every document when not None.
        seed: The shuffle seed.
        shuffle: Shuffle each epoch (train) or read in order (evaluation).
        repeat: Go on to the next epoch (train) or end after one (evaluation).
    """

    def __init__(self, documents: Sequence[str], encode: Callable[[str], list[int]], eos_id: int,
                 bos_id: int | None = None, seed: int = 0, shuffle: bool = True,
                 repeat: bool = True):
        if len(documents) == 0:
            raise ValueError("No documents to read: the source split is empty.")
        self._documents = documents
        self._encode = encode
        self._eos_id = int(eos_id)
        self._bos_id = None if bos_id is None else int(bos_id)
        self._seed = int(seed)
        self._shuffle = shuffle
        self._repeat = repeat
        self._order = EpochPermutation(len(documents), self._seed, 0, shuffle)
        self._cached: tuple[tuple[int, int], np.ndarray] | None = None
        self.epoch, self.document, self.token = 0, 0, 0

    def position(self) -> dict[str, int]:
        """Returns the cursor: ``{'epoch', 'document', 'token'}``."""
        return {"epoch": self.epoch, "document": self.document, "token": self.token}

    def seek(self, epoch: int, document: int, token: int) -> None:
        """Moves the cursor to a position returned by :meth:`position`."""
        if epoch < 0 or not 0 <= document <= len(self._documents) or token < 0:
            raise ValueError(f"Position (epoch={epoch}, document={document}, token={token}) is "
                             f"outside a stream of {len(self._documents)} documents.")
        self.epoch, self.document, self.token = int(epoch), int(document), int(token)

    def _document_tokens(self, epoch: int, document: int) -> np.ndarray:
        """Returns ``[BOS] ids EOS`` of the ``document``-th document of ``epoch`` (memoised)."""
        if self._cached is not None and self._cached[0] == (epoch, document):
            return self._cached[1]
        if self._order.epoch != epoch:
            self._order = EpochPermutation(len(self._documents), self._seed, epoch, self._shuffle)
        ids = self._encode(self._documents[self._order[document]])
        prefix = [] if self._bos_id is None else [self._bos_id]
        tokens = np.asarray(prefix + list(ids) + [self._eos_id], np.int32)
        self._cached = ((epoch, document), tokens)
        return tokens

    def _normalised(self, epoch: int, document: int) -> tuple[int, int] | None:
        """Carries a position past the last document into the next epoch; None at the end."""
        if document < len(self._documents):
            return epoch, document
        if not self._repeat:
            return None
        return epoch + 1, 0

    def next_row_chunks(self, seq_len: int) -> list[np.ndarray]:
        """Returns the chunks of the next row (``seq_len + 1`` tokens) and advances by ``seq_len``.

        Fewer tokens come back only when a non-repeating stream runs out; an empty list means it
        has ended (a lone last token, which would have no target, is not returned).
        """
        chunks: list[np.ndarray] = []
        needed = seq_len + 1
        epoch, document, token = self.epoch, self.document, self.token
        next_start = None  # the cursor after seq_len tokens: where the row's last token sits
        while needed > 0:
            place = self._normalised(epoch, document)
            if place is None:
                break
            epoch, document = place
            tokens = self._document_tokens(epoch, document)
            taken = tokens[token:token + needed]
            if next_start is None and len(taken) >= needed:
                next_start = (epoch, document, token + needed - 1)
            chunks.append(taken)
            needed -= len(taken)
            token += len(taken)
            if token >= len(tokens):
                document, token = document + 1, 0
        chunks = [c for c in chunks if len(c)]
        if next_start is None:  # the stream ended inside this row
            next_start = (epoch, document, token)
            if sum(len(c) for c in chunks) <= 1:
                chunks = []
        self.epoch, self.document, self.token = next_start
        return chunks
