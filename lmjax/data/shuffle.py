"""A different pseudo-random order of the documents for every epoch, computed one index at a time.

``EpochPermutation(n, seed, epoch)[i]`` is the document read ``i``-th in ``epoch``. It is a
bijection of ``[0, n)`` fixed by ``(seed, epoch)``, built as a balanced Feistel network over the
smallest even-bit power-of-two domain that holds ``n`` and restricted to ``[0, n)`` by cycle-walking
(Black & Rogaway, "Ciphers with Arbitrary Finite Domains", CT-RSA 2002). Unlike
``np.random.default_rng([seed, epoch]).permutation(n)`` it holds no array of ``n`` indices (C4 has
365 M documents: 2.9 GB per epoch as int64) and any position costs O(1), so resuming at document
``i`` of an epoch replays nothing. The round keys come from ``np.random.SeedSequence([seed,
epoch])``, whose output numpy keeps stable across versions.
"""

from __future__ import annotations

import numpy as np

__all__ = ["EpochPermutation", "check_iterator_state"]

_MASK64 = (1 << 64) - 1
_ROUNDS = 6


def _mixed64(x: int) -> int:
    """SplitMix64's finaliser (Steele et al., OOPSLA 2014): a 64-bit avalanche mix of ``x``."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class EpochPermutation:
    """The order in which ``n`` documents are read in one epoch (a pseudo-random bijection).

    Args:
        n: Number of documents (>= 0).
        seed: The data shuffle seed.
        epoch: The epoch number; every epoch gets an independent order.
        shuffle: False gives the identity order (evaluation, or unshuffled reading).
    """

    def __init__(self, n: int, seed: int, epoch: int, shuffle: bool = True):
        if n < 0:
            raise ValueError(f"A permutation of n={n} documents: n must be >= 0.")
        self.n = int(n)
        self.seed, self.epoch = int(seed), int(epoch)
        self.shuffle = bool(shuffle) and self.n > 1
        half_bits = max(1, ((self.n - 1).bit_length() + 1) // 2)
        self._half_bits = half_bits
        self._half_mask = (1 << half_bits) - 1
        keys = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(_ROUNDS, np.uint64)
        self._round_keys = tuple(int(k) for k in keys)

    def __len__(self) -> int:
        return self.n

    def _feistel(self, x: int) -> int:
        """One pass of the network: a bijection of ``[0, 4**half_bits)``."""
        left, right = x >> self._half_bits, x & self._half_mask
        for key in self._round_keys:
            left, right = right, left ^ (_mixed64(right ^ key) & self._half_mask)
        return (left << self._half_bits) | right

    def __getitem__(self, index: int) -> int:
        index = int(index)
        if not 0 <= index < self.n:
            raise IndexError(f"Position {index} outside an epoch of {self.n} documents.")
        if not self.shuffle:
            return index
        value = self._feistel(index)
        while value >= self.n:  # cycle-walk back into [0, n); at most ~4 passes on average
            value = self._feistel(value)
        return value

    def __repr__(self) -> str:
        return f"EpochPermutation(n={self.n}, shuffle={self.shuffle})"


def check_iterator_state(state: dict, keys: tuple[str, ...], seed: int, owner: str) -> None:
    """Raises unless ``state`` (a data iterator's ``state()``) has ``keys`` and ``seed``.

    Args:
        state: the state to restore.
        keys: the keys the iterator's ``state()`` returns.
        seed: the restoring iterator's shuffle seed.
        owner: the iterator's class name, for the message.

    Raises:
        ValueError: a key is missing, or the state was saved with another shuffle seed (restoring
            it would not continue the same batches).
    """
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(
            f"Data iterator state {state!r} lacks {missing}; pass a dict returned by "
            f"{owner}.state()."
        )
    if int(state["seed"]) != seed:
        raise ValueError(
            f"The data state was saved with shuffle seed {state['seed']} but this iterator "
            f"uses {seed}; restoring would not continue the same batches. Use the same "
            "data.shuffle_seed as the run being resumed."
        )
