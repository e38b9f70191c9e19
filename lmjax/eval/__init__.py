"""Evaluation: perplexity and the unigram baseline, GLUE and SQuAD metrics as their official
scorers define them, SQuAD span decoding (``squad_decoding``), linear probes (``linear_probe``)
and the few-shot in-context harness (``few_shot``)."""

from lmjax.eval.glue_metrics import (
    GLUE_TASK_METRICS,
    accuracy,
    binary_f1,
    glue_scores,
    matthews_correlation,
    pearson,
    spearman,
)
from lmjax.eval.perplexity import (
    bits_per_token,
    perplexity,
    unigram_baseline_loss,
    unigram_baseline_loss_of_batches,
    unigram_log_probs,
)
from lmjax.eval.squad_metrics import (
    best_null_threshold,
    exact_match,
    normalize_answer,
    squad_scores,
    token_f1,
)

__all__ = [
    "GLUE_TASK_METRICS",
    "accuracy",
    "best_null_threshold",
    "binary_f1",
    "bits_per_token",
    "exact_match",
    "glue_scores",
    "matthews_correlation",
    "normalize_answer",
    "pearson",
    "perplexity",
    "spearman",
    "squad_scores",
    "token_f1",
    "unigram_baseline_loss",
    "unigram_baseline_loss_of_batches",
    "unigram_log_probs",
]
