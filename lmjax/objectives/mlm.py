"""Masked language modelling: BERT, RoBERTa, ALBERT n-gram and ELECTRA-generator masking; MLM and
MLM + NSP losses.

Axis legend: B batch, L length, V vocab.

Corruption functions map ``(key, batch) -> batch``. The batch holds ``'inputs'`` int [B, L] and
optionally ``'attention_mask'`` [B, L] (1 at real tokens; without it nothing is padding),
``'token_type_ids'``, ``'nsp_labels'`` int [B], and for whole-word masking ``'word_starts'`` (True
at the first piece of each word) or ``'word_ids'``. The result is the batch with ``'inputs'``
corrupted and two new keys:

- ``'mlm_targets'`` int [B, L]: the original ids (at every position);
- ``'mlm_weights'`` float32 [B, L]: 1.0 at the positions to predict, 0.0 elsewhere.

The predicted positions are marked densely over [B, L] rather than gathered into BERT's
``max_predictions_per_seq`` slots (``masked_lm_positions``/``masked_lm_weights``); the loss is the
same mean over predicted tokens. Special tokens (``special_ids``) and padding are never selected.

Dynamic masking (RoBERTa, ``fairseq:data/mask_tokens_dataset.py``) is ``mlm_corruption`` applied
in the train step with the step's key, so the mask changes every step and is reproducible from
(seed, step). Static masking (BERT's ``dupe_factor`` copies fixed at data-creation time) is
``static_masking``, for comparison.

Defaults are the BERT uncased WordPiece vocabulary: [PAD] 0, [CLS] 101, [SEP] 102, [MASK] 103,
30522 ids. Other vocabularies pass their own ids (``functools.partial`` or ``mlm_objective``).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from lmjax.objectives import masking
from lmjax.objectives.causal_lm import token_cross_entropy, weighted_token_loss

MODEL_INPUTS = ("inputs", "token_type_ids", "attention_mask")

BERT_PAD_ID = 0
BERT_CLS_ID = 101
BERT_SEP_ID = 102
BERT_MASK_ID = 103
BERT_VOCAB_SIZE = 30522
BERT_SPECIAL_IDS = (BERT_PAD_ID, BERT_CLS_ID, BERT_SEP_ID, BERT_MASK_ID)

SELECTIONS = ("fixed", "bernoulli")


def _with_targets(
    batch: dict[str, Any], corrupted: jax.Array, selected: jax.Array
) -> dict[str, Any]:
    out = dict(batch)
    out["mlm_targets"] = batch["inputs"]
    out["inputs"] = corrupted
    out["mlm_weights"] = selected.astype(jnp.float32)
    return out


def mlm_corruption(
    key: jax.Array,
    batch: dict[str, Any],
    *,
    mask_id: int = BERT_MASK_ID,
    vocab_size: int = BERT_VOCAB_SIZE,
    special_ids: Sequence[int] = BERT_SPECIAL_IDS,
    rate: float = 0.15,
    max_predictions: int | None = None,
    selection: str = "fixed",
    whole_word: bool = False,
    max_ngram: int = 1,
    mask_prob: float = 0.8,
    random_prob: float = 0.1,
    random_excludes_special: bool = False,
) -> dict[str, Any]:
    """BERT-style MLM corruption (80% [MASK], 10% random token, 10% kept).

    Selection (``selection``):

    - ``'fixed'``: ``min(max_predictions, max(1, round(n * rate)))`` positions per row, n the
      number of real tokens including [CLS]/[SEP], drawn uniformly without replacement among the
      candidates (BERT ``create_pretraining_data.py::create_masked_lm_predictions``). BERT used
      ``max_predictions`` 20 at length 128 and 80 at 512; ``None`` means no cap.
    - ``'bernoulli'``: every candidate independently with probability ``rate`` (Hugging Face
      ``DataCollatorForLanguageModeling``); ``max_predictions`` does not apply.

    ``whole_word`` selects words as units (all their pieces or none); with ``'fixed'`` a word that
    would exceed the budget is skipped, as in BERT's ``do_whole_word_mask``. ``max_ngram > 1``
    (with ``'fixed'``) selects ALBERT n-grams of whole words; see ``albert_ngram_corruption``.
    Every selected piece then decides on its own among [MASK] / random / kept.

    Args:
      key: PRNG key (the step's key for dynamic masking).
      batch: see the module docstring.
      mask_id: the [MASK] id.
      vocab_size: V; random replacements are drawn from ``[0, V)``.
      special_ids: ids never selected (and excluded from random replacements when
        ``random_excludes_special``).
      rate: the selection rate.
      max_predictions: cap on selected pieces per row (``'fixed'`` only).
      selection: ``'fixed'`` or ``'bernoulli'``.
      whole_word: select whole words (needs ``'word_starts'`` or ``'word_ids'``).
      max_ngram: longest n-gram in words (1: no n-grams).
      mask_prob: share of selected pieces replaced by [MASK].
      random_prob: share replaced by a random token (HF and BERT draw over the whole vocabulary).
      random_excludes_special: draw random replacements from the vocabulary minus ``special_ids``.

    Returns:
      The batch with ``'inputs'`` corrupted, ``'mlm_targets'`` and ``'mlm_weights'``.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"Unknown selection {selection!r}; expected one of {SELECTIONS}.")
    if max_ngram < 1:
        raise ValueError(f"max_ngram must be >= 1, got {max_ngram}.")
    if max_ngram > 1 and selection != "fixed":
        raise ValueError("N-gram masking is defined for selection='fixed' (ALBERT's budget).")
    inputs = batch["inputs"]
    if inputs.ndim != 2:
        raise ValueError(f"inputs must be [batch, length], got shape {inputs.shape}.")
    real = masking.real_token_mask(batch)  # [B, L]
    candidates = real & ~masking.special_token_mask(inputs, special_ids)  # [B, L]
    select_key, replace_key = jax.random.split(key)
    by_words = whole_word or max_ngram > 1
    word_starts = masking.word_starts_from_batch(batch) if by_words else None

    if selection == "bernoulli":
        if by_words:
            selected = masking.select_words_bernoulli(select_key, candidates, word_starts, rate)
        else:
            selected = masking.select_bernoulli(select_key, candidates, rate)
    else:
        count = masking.budget(jnp.sum(real, axis=-1), rate, max_predictions)  # [B]
        if by_words:
            selected, _ = masking.select_word_spans(
                select_key, candidates, word_starts, count, max_ngram
            )
        else:
            selected = masking.select_fixed_count(select_key, candidates, count)

    corrupted = masking.replace_selected(
        replace_key,
        inputs,
        selected,
        mask_id=mask_id,
        vocab_size=vocab_size,
        mask_prob=mask_prob,
        random_prob=random_prob,
        random_exclude=special_ids if random_excludes_special else (),
    )
    return _with_targets(batch, corrupted, selected)


def albert_ngram_corruption(
    key: jax.Array,
    batch: dict[str, Any],
    *,
    max_ngram: int = 3,
    max_predictions: int | None = 20,
    **kwargs: Any,
) -> dict[str, Any]:
    """ALBERT's n-gram MLM (``google-research/albert:create_pretraining_data.py``).

    Spans of n = 1..``max_ngram`` whole words with p(n) proportional to 1/n (6/11, 3/11, 2/11 for
    3), BERT's budget (``max_predictions`` 20 in the ALBERT recipe) and 80/10/10. When the drawn
    span would exceed the budget, shorter spans at the same start are tried; a span overlapping
    one already taken is skipped. Spans do not wrap past the row's last word; like ALBERT's
    candidate list they may continue past a [SEP] into the next segment's words. Without
    ``'word_starts'``/``'word_ids'`` in the batch every piece counts as a word. Other keyword
    arguments as ``mlm_corruption``.
    """
    if "word_starts" not in batch and "word_ids" not in batch:
        batch = dict(batch, word_starts=jnp.ones(batch["inputs"].shape, bool))
    return mlm_corruption(
        key, batch, selection="fixed", max_ngram=max_ngram, max_predictions=max_predictions,
        **kwargs,
    )


def electra_masking(
    key: jax.Array,
    batch: dict[str, Any],
    *,
    mask_id: int = BERT_MASK_ID,
    special_ids: Sequence[int] = BERT_SPECIAL_IDS,
    rate: float = 0.15,
    max_predictions: int | None = None,
    mask_prob: float = 0.85,
    with_replacement: bool = True,
) -> dict[str, Any]:
    """ELECTRA's generator masking (``google-research/electra:pretrain/pretrain_helpers.py::mask``).

    ``N = max_predictions`` defaults to ``int((rate + 0.005) * L)`` (19 at L = 128); a row predicts
    ``max(1, min(N, round(n * rate)))`` draws, n its real-token count. 85% of the selected pieces
    become [MASK] and 15% stay unchanged; there is no random-token replacement.

    With ``with_replacement`` (the reference) the positions are N categorical draws over the
    candidates of which the first ``num_to_predict`` are kept, so a position can be drawn twice.
    Here a position drawn more than once is predicted once (weight 1.0; the reference's gathered
    form would count it once per draw) and makes one [MASK]/keep decision; a row therefore selects
    at most ``num_to_predict`` distinct positions. ``with_replacement=False`` selects exactly
    ``min(num_to_predict, #candidates)`` distinct positions.

    Returns:
      The batch with ``'inputs'`` masked, ``'mlm_targets'`` and ``'mlm_weights'``.
    """
    inputs = batch["inputs"]
    if inputs.ndim != 2:
        raise ValueError(f"inputs must be [batch, length], got shape {inputs.shape}.")
    length = inputs.shape[-1]
    num_draws = int((rate + 0.005) * length) if max_predictions is None else max_predictions
    real = masking.real_token_mask(batch)  # [B, L]
    candidates = real & ~masking.special_token_mask(inputs, special_ids)  # [B, L]
    count = masking.budget(jnp.sum(real, axis=-1), rate, num_draws)  # [B]
    select_key, replace_key = jax.random.split(key)
    if with_replacement:
        # Uniform draws over the candidates, as tf.random.categorical over log(candidate mask):
        # index r ~ U{0, ..., c - 1} into the row's candidate positions listed first.
        listed = jnp.argsort(~candidates, axis=-1, stable=True)  # [B, L] candidates first
        num_candidates = jnp.sum(candidates, axis=-1, keepdims=True)  # [B, 1]
        u = jax.random.uniform(select_key, (inputs.shape[0], num_draws))  # [B, N]
        r = jnp.minimum((u * num_candidates).astype(jnp.int32), jnp.maximum(num_candidates - 1, 0))
        draws = jnp.take_along_axis(listed, r, axis=-1)  # [B, N]
        kept = jnp.arange(num_draws)[None, :] < count[:, None]  # [B, N]
        rows = jnp.arange(inputs.shape[0])[:, None]  # [B, 1]
        drawn = jnp.zeros(inputs.shape, bool).at[rows, jnp.where(kept, draws, length)].set(
            True, mode="drop"
        )  # [B, L]; draws past num_to_predict point out of range and are dropped
        selected = candidates & drawn
    else:
        selected = masking.select_fixed_count(select_key, candidates, count)
    corrupted = masking.replace_selected(
        replace_key, inputs, selected, mask_id=mask_id, vocab_size=1, mask_prob=mask_prob,
        random_prob=0.0,
    )
    return _with_targets(batch, corrupted, selected)


def static_masking(
    key: jax.Array, batch: dict[str, Any], dupe_factor: int, **kwargs: Any
) -> dict[str, Any]:
    """BERT's static masking: ``dupe_factor`` fixed masked copies of the batch.

    ``create_pretraining_data.py`` masks each document ``dupe_factor`` times (10 for BERT, 40 for
    ALBERT) once, before training. Copy ``d`` uses ``jax.random.fold_in(key, d)``; the result
    stacks the copies copy-major along the batch axis, so every array of the batch with a leading
    batch axis becomes ``[dupe_factor * B, ...]``. Keyword arguments go to ``mlm_corruption``.
    """
    if dupe_factor < 1:
        raise ValueError(f"dupe_factor must be >= 1, got {dupe_factor}.")
    copies = [
        mlm_corruption(jax.random.fold_in(key, d), batch, **kwargs) for d in range(dupe_factor)
    ]
    return {name: jnp.concatenate([c[name] for c in copies], axis=0) for name in copies[0]}


def mlm_loss(
    outputs: dict[str, jax.Array], batch: dict[str, jax.Array]
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean cross-entropy over the predicted positions (BERT ``get_masked_lm_output``).

    Args:
      outputs: ``'logits'`` [B, L, V] (cast to float32).
      batch: ``'mlm_targets'`` int [B, L] and ``'mlm_weights'`` float32 [B, L].

    Returns:
      ``(loss, metrics)``: ``loss = sum(w * nll) / sum(w)`` (0 when no position is predicted);
      float32 metrics ``loss``, ``accuracy`` (weighted argmax hits) and ``num_tokens``
      (``sum(w)``).
    """
    logits = outputs["logits"]
    targets = batch["mlm_targets"]
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits {logits.shape} and mlm_targets {targets.shape} disagree on [batch, length]."
        )
    weights = jnp.asarray(batch["mlm_weights"], jnp.float32)  # [B, L]
    return weighted_token_loss(logits, targets, weights)


def _mlm_plus_sentence_loss(
    outputs: dict[str, jax.Array], batch: dict[str, jax.Array], task: str
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """MLM loss + the sentence-level cross-entropy of ``task`` ('nsp' or 'sop')."""
    mlm, metrics = mlm_loss(outputs, batch)
    sentence_logits = jnp.asarray(outputs[f"{task}_logits"], jnp.float32)  # [B, 2]
    labels = batch[f"{task}_labels"]  # [B]
    if sentence_logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"{task}_logits {sentence_logits.shape} and {task}_labels {labels.shape} disagree."
        )
    sentence = jnp.mean(token_cross_entropy(sentence_logits, labels))
    hits = jnp.asarray(jnp.argmax(sentence_logits, -1) == labels, jnp.float32)
    loss = mlm + sentence
    metrics = dict(metrics, loss=loss, mlm_loss=mlm)
    metrics[f"{task}_loss"] = sentence
    metrics[f"{task}_accuracy"] = jnp.mean(hits)
    return loss, metrics


def mlm_nsp_loss(
    outputs: dict[str, jax.Array], batch: dict[str, jax.Array]
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """BERT's pre-training loss: MLM loss + next-sentence cross-entropy (``run_pretraining.py``).

    Args:
      outputs: ``'logits'`` [B, L, V] and ``'nsp_logits'`` [B, 2].
      batch: as ``mlm_loss`` plus ``'nsp_labels'`` int [B] (0 = B follows A, 1 = random B).

    Returns:
      ``(loss, metrics)`` with ``loss = mlm + nsp``; metrics ``loss``, ``accuracy`` and
      ``num_tokens`` (of the MLM part), ``mlm_loss``, ``nsp_loss``, ``nsp_accuracy``.
    """
    return _mlm_plus_sentence_loss(outputs, batch, "nsp")


def mlm_sop_loss(
    outputs: dict[str, jax.Array], batch: dict[str, jax.Array]
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """ALBERT's pre-training loss: MLM loss + sentence-order cross-entropy (Lan et al. 2019 §3.1).

    As ``mlm_nsp_loss`` with ``'sop_logits'`` / ``'sop_labels'`` (0 = in order, 1 = swapped);
    metrics ``sop_loss`` and ``sop_accuracy``.
    """
    return _mlm_plus_sentence_loss(outputs, batch, "sop")


SENTENCE_TASKS = {None: mlm_loss, "nsp": mlm_nsp_loss, "sop": mlm_sop_loss}
MASKING_OPTIONS = tuple(
    name for name in inspect.signature(mlm_corruption).parameters if name not in ("key", "batch")
)


def check_masking_options(objective_name: str, options: dict[str, Any]) -> None:
    """Raises a ValueError naming any option ``mlm_corruption`` does not take."""
    unknown = sorted(set(options) - set(MASKING_OPTIONS))
    if unknown:
        raise ValueError(
            f"objective {objective_name!r} has no option(s) {unknown}; its masking options are "
            f"{', '.join(MASKING_OPTIONS)}."
        )


def mlm_objective(name: str = "mlm", *, sentence_task: str | None = None, **masking_kwargs: Any):
    """An ``Objective``: ``mlm_corruption`` configured by ``masking_kwargs`` (vocabulary ids,
    selection, whole words, n-grams, ...) and the MLM loss, plus NSP (``sentence_task='nsp'``,
    BERT) or SOP (``'sop'``, ALBERT) when asked.

    ``lmjax.objectives.get('mlm', mask_id=..., vocab_size=..., special_ids=...)`` builds one; the
    train loop fills the vocabulary ids from the tokenizer.
    """
    from lmjax.objectives import Objective

    if sentence_task not in SENTENCE_TASKS:
        raise ValueError(
            f"sentence_task={sentence_task!r}: use None, 'nsp' (BERT) or 'sop' (ALBERT)."
        )
    check_masking_options(name, masking_kwargs)
    if "special_ids" in masking_kwargs:
        masking_kwargs["special_ids"] = tuple(int(i) for i in masking_kwargs["special_ids"])

    def corrupt(key: jax.Array, batch: dict[str, Any]) -> dict[str, Any]:
        return mlm_corruption(key, batch, **masking_kwargs)

    return Objective(
        name=name,
        corrupt=corrupt,
        loss=SENTENCE_TASKS[sentence_task],
        model_inputs=MODEL_INPUTS,
    )
