"""Evaluation metrics: held-out perplexity and the unigram baseline (more metrics join here)."""

from lmjax.eval.perplexity import (
    bits_per_token,
    perplexity,
    unigram_baseline_loss,
    unigram_baseline_loss_of_batches,
    unigram_log_probs,
)

__all__ = [
    "bits_per_token",
    "perplexity",
    "unigram_baseline_loss",
    "unigram_baseline_loss_of_batches",
    "unigram_log_probs",
]
