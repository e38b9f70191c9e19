"""Perplexity, bits per token, and the unigram baseline a language model must beat.

A trained LM's held-out loss means little alone; the cross-entropy of a *unigram* model (token
frequencies from the training data, no context) is the floor any model that uses context should
clear by a wide margin. It is fitted with add-one (Laplace) smoothing, so that held-out tokens never
seen in training have finite loss (Jurafsky & Martin, "Speech and Language Processing", 3rd ed.,
section 3.5.1):

    p(v) = (count(v) + 1) / (N + V)

and evaluated on held-out targets with the same weights as the LM loss (``batch['weights']``:
padding and cross-document targets do not count), in nats per token.

    perplexity = exp(mean NLL),   bits per token = mean NLL / ln 2
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

__all__ = [
    "bits_per_token",
    "perplexity",
    "unigram_baseline_loss",
    "unigram_baseline_loss_of_batches",
    "unigram_log_probs",
]


def _checked_tokens(tokens: np.ndarray, weights: np.ndarray | None, vocab_size: int,
                    what: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns flat int64 tokens and float64 weights, checking ids are in [0, vocab_size)."""
    tokens = np.asarray(tokens).reshape(-1).astype(np.int64)
    weights = (np.ones(tokens.shape, np.float64) if weights is None
               else np.asarray(weights, np.float64).reshape(-1))
    if weights.shape != tokens.shape:
        raise ValueError(f"{what}: {weights.size} weights for {tokens.size} tokens; pass weights "
                         "of the same shape as the tokens.")
    counted = tokens[weights > 0]
    if counted.size and (counted.min() < 0 or counted.max() >= vocab_size):
        raise ValueError(f"{what}: token ids span [{counted.min()}, {counted.max()}], outside "
                         f"[0, vocab_size={vocab_size}). Pass the tokenizer's vocab_size.")
    return tokens, weights


def unigram_log_probs(tokens: np.ndarray, vocab_size: int,
                      weights: np.ndarray | None = None) -> np.ndarray:
    """Returns log p(v) [V] of an add-one-smoothed unigram model fitted on ``tokens``.

    Args:
        tokens: Training token ids, any shape.
        vocab_size: V; every id gets a pseudo-count of 1.
        weights: Optional per-token weights (same shape); a token counts ``weight`` times, so
            zero-weight padding is ignored.
    """
    tokens, weights = _checked_tokens(tokens, weights, vocab_size, "unigram fit")
    counts = np.bincount(tokens[weights > 0], weights=weights[weights > 0], minlength=vocab_size)
    return np.log(counts + 1.0) - np.log(counts.sum() + vocab_size)  # [V]


def unigram_baseline_loss(train_tokens: np.ndarray, eval_targets: np.ndarray, vocab_size: int,
                          train_weights: np.ndarray | None = None,
                          eval_weights: np.ndarray | None = None) -> float:
    """Returns the unigram model's weighted mean cross-entropy (nats/token) on ``eval_targets``.

    Args:
        train_tokens: Tokens to fit the unigram model on (e.g. training batches' ``targets``).
        eval_targets: Held-out targets, any shape (e.g. eval batches' ``targets``).
        vocab_size: The tokenizer's vocabulary size.
        train_weights: Weights of ``train_tokens`` (e.g. ``batch['weights']``), or None.
        eval_weights: Weights of ``eval_targets``, as in the LM loss, or None for all ones.

    Raises:
        ValueError: No held-out target has positive weight, or an id is out of range.
    """
    log_probs = unigram_log_probs(train_tokens, vocab_size, train_weights)
    targets, weights = _checked_tokens(eval_targets, eval_weights, vocab_size, "unigram eval")
    total_weight = weights.sum()
    if total_weight <= 0:
        raise ValueError("No held-out target has positive weight: nothing to evaluate.")
    nll = -log_probs[np.where(weights > 0, targets, 0)]  # masked ids read a dummy entry
    return float((weights * nll).sum() / total_weight)


def unigram_baseline_loss_of_batches(fit_batches: Iterable[Mapping[str, np.ndarray]],
                                     eval_batches: Iterable[Mapping[str, np.ndarray]],
                                     vocab_size: int) -> float:
    """Returns :func:`unigram_baseline_loss` fitted on ``fit_batches``, scored on ``eval_batches``.

    Both are finite iterables of LM batches (``targets`` and ``weights`` are used), e.g. a few
    hundred training batches and the list from ``lmjax.data.eval_batches``.
    """
    fit = list(fit_batches)
    held_out = list(eval_batches)
    if not fit or not held_out:
        raise ValueError("unigram baseline: pass at least one fit batch and one eval batch.")
    return unigram_baseline_loss(
        np.concatenate([np.ravel(b["targets"]) for b in fit]),
        np.concatenate([np.ravel(b["targets"]) for b in held_out]),
        vocab_size,
        train_weights=np.concatenate([np.ravel(b["weights"]) for b in fit]),
        eval_weights=np.concatenate([np.ravel(b["weights"]) for b in held_out]),
    )


def perplexity(nll_sum: float, num_tokens: float) -> float:
    """Returns exp(nll_sum / num_tokens): the perplexity of a summed NLL (nats) over tokens."""
    if num_tokens <= 0:
        raise ValueError(f"perplexity over num_tokens={num_tokens}: need at least one token.")
    return math.exp(nll_sum / num_tokens)


def bits_per_token(nll_sum: float, num_tokens: float) -> float:
    """Returns the mean NLL in bits: nll_sum / num_tokens / ln 2."""
    if num_tokens <= 0:
        raise ValueError(f"bits_per_token over num_tokens={num_tokens}: need at least one token.")
    return nll_sum / num_tokens / math.log(2.0)
