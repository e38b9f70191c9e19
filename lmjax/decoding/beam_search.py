"""Beam search with the KV cache of any lmjax decoder-only model (and, through
``lmjax.decoding.seq2seq``, of any encoder-decoder model).

GPT-3 decodes its free-form few-shot answers with "beam search with a beam width of 4 and a length
penalty of alpha = 0.6" (Brown et al. 2020, section 2.4). The length penalty is GNMT's
``((5 + |Y|) / 6) ** alpha`` (Wu et al. 2016, "Google's Neural Machine Translation System",
section 7, eq. 14), the same ``brevity_penalty`` as ``google-research/t5x:t5x/decoding.py``:
a finished hypothesis scores ``log P(Y | X) / ((5 + |Y|) / 6) ** alpha``, where ``|Y|`` counts the
new tokens, the end-of-sequence token included.

Two rule sets, chosen by ``early_stopping``:

**t5x rules** (``early_stopping=None``, the default), following the structure of t5x's
``beam_search`` (facts read there, code our own):

* ``alive`` beams: the ``W`` best hypotheses that have not emitted EOS, with their summed
  log-probabilities; at the start only beam 0 is live (the others hold ``NEG_INF`` so that the
  first step does not pick the same token ``W`` times).
* each step scores all ``W * V`` one-token extensions, keeps the best ``2 W`` (at most ``W`` of
  them end in EOS, so at least ``W`` live ones remain), moves the EOS-ending ones to the
  ``finished`` set (length-penalised, best ``W`` kept) and the best ``W`` others become the new
  alive beams. The KV cache rows are reordered to follow each new beam's parent.
* the loop stops after ``max_new_tokens`` tokens, or once no alive beam can still beat the worst
  finished one: with ``alpha >= 0`` an alive beam's best possible final score is its current
  log-probability divided by the largest penalty, that of ``max_new_tokens`` tokens.
* at the end the alive beams (cut by the length limit) compete with the finished ones, so a row
  without any EOS still returns ``W`` hypotheses.

**Hugging Face rules** (``early_stopping`` True, False or ``'never'``), the facts of
``transformers generation/utils.py::GenerationMixin._beam_search`` (v5) and its helpers
``_get_top_k_continuations``, ``_update_finished_beams``, ``_check_early_stop_heuristic`` and
``_beam_search_has_unfinished_sequences``:

* the same ``2 W`` candidates and alive beams, but only candidates ranked among the first ``W``
  of the ``2 W`` may finish; at the length limit every such candidate finishes (HF's
  ``MaxLengthCriteria`` hits every sequence), EOS or not, and the result is the finished set.
* HF's length penalty is ``generated_len ** length_penalty`` (``length_penalty_kind='hf'``),
  ``generated_len`` = new tokens including EOS: ``cur_len + 1 - decoder_prompt_len`` where the
  decoder prompt is the (padded) prompt for decoder-only models and the one
  ``decoder_start_token_id`` for encoder-decoder models, so the same count in both.
* a row is *closed* (takes no more finished hypotheses) once all its ``W`` finished slots are
  filled and its best alive beam's score ``log P / penalty(L)`` is no better than its worst
  finished score, where ``L`` is the number of tokens so far (``early_stopping`` False or True),
  or ``max_new_tokens`` when ``early_stopping == 'never'`` and the penalty exponent is > 0 (the
  exact bound). With ``early_stopping=True`` a row also closes as soon as it has ``W`` finished
  hypotheses. The loop ends when every row is closed or at the length limit.

``length_penalty_kind`` ('gnmt' or 'hf') and ``early_stopping`` are independent; HF's ``generate``
equals ``length_penalty_kind='hf'`` with its ``early_stopping`` value (its default is False).

The cache holds ``B * W`` rows (row ``b * W + w`` is beam ``w`` of prompt ``b``); the prompts are
prefilled once at batch ``B`` and each cache array is repeated ``W`` times along its batch axis.
Batch axes are found from the cache's shapes at two batch sizes, so scanned caches
(``[N, B, M, ...]``), unscanned ones (``[B, M, ...]``), scalar indices and an encoder output kept in
the cache (``[B, Le, E]``) are all handled.

Axis legend: B batch, W beams, T prompt length, N max new tokens, V vocab, M cache slots.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Union

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.decoding.generate import (
    checked_cache_length,
    checked_prompt_mask,
    decode_step_logits,
    empty_cache,
    prefill_logits,
)

Cache = Any
Params = Any

# Finite "minus infinity" (as t5x's NEG_INF): sums of it with real log-probabilities stay ordered
# and free of NaN.
NEG_INF = -1.0e7
LENGTH_PENALTY_KINDS = ("gnmt", "hf")
EARLY_STOPPING_MODES = (None, True, False, "never")


def gnmt_length_penalty(length, alpha) -> jax.Array:
    """Returns ``((5 + length) / 6) ** alpha`` (Wu et al. 2016, eq. 14; t5x ``brevity_penalty``).

    Args:
      length: the number of new tokens of a hypothesis (int or array).
      alpha: the length-penalty exponent; 0 = no penalty.
    """
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** jnp.asarray(alpha, jnp.float32)


def hf_length_penalty(length, alpha) -> jax.Array:
    """Returns ``length ** alpha``: HF's divisor of a finished hypothesis's log-probability.

    ``transformers generation/utils.py::_update_finished_beams``:
    ``topk_log_probs / ((cur_len + 1 - decoder_prompt_len) ** length_penalty)``.

    Args:
      length: the number of new tokens of a hypothesis, EOS included (>= 1).
      alpha: HF's ``length_penalty``; > 0 favours longer, < 0 shorter hypotheses, 0 = none.
    """
    return jnp.asarray(length, jnp.float32) ** jnp.asarray(alpha, jnp.float32)


def length_penalty_divisor(length, alpha, kind: str) -> jax.Array:
    """Returns the divisor of a hypothesis's log-probability: ``kind`` 'gnmt' or 'hf'."""
    if kind == "gnmt":
        return gnmt_length_penalty(length, alpha)
    if kind == "hf":
        return hf_length_penalty(length, alpha)
    raise ValueError(f"length_penalty_kind={kind!r}; choose one of {LENGTH_PENALTY_KINDS}.")


def cache_batch_axes(model: nn.Module, max_length: int) -> Any:
    """Returns, for each array of the model's cache, its batch axis (None when it has none).

    The cache is shaped at batch sizes 1 and 2 (``jax.eval_shape``, nothing allocated); the axis
    whose size changes is the batch axis.

    Raises:
      ValueError: when a cache array grows along more than one axis with the batch.
    """
    one = jax.eval_shape(lambda: empty_cache(model, 1, max_length))
    two = jax.eval_shape(lambda: empty_cache(model, 2, max_length))

    def batch_axis(a, b):
        changed = [i for i, (x, y) in enumerate(zip(a.shape, b.shape)) if x != y]
        if len(changed) > 1:
            raise ValueError(
                f"a cache array of shape {b.shape} changes along axes {changed} with the batch; "
                "beam search needs one batch axis per cache array."
            )
        return changed[0] if changed else None

    return jax.tree.map(batch_axis, one, two)


def beam_gathered_cache(cache: Cache, axes: Any, rows: jax.Array) -> Cache:
    """Returns the cache with its batch rows replaced by ``cache[rows]`` (scalars untouched).

    Args:
      cache: the model's cache collection.
      axes: ``cache_batch_axes`` of the same tree.
      rows: int32 [R], the source row of each new row.
    """
    return jax.tree.map(
        lambda leaf, axis: leaf if axis is None else jnp.take(leaf, rows, axis=axis),
        cache,
        axes,
    )


@flax.struct.dataclass
class BeamState:
    """The loop carry of ``beam_search``.

    Attributes:
      step: int32 scalar, number of new tokens chosen so far.
      logits: float32 [B, W, V], next-token logits of the alive beams.
      alive_sequences: int32 [B, W, T + N].
      alive_log_probs: float32 [B, W], summed log-probabilities of the alive beams' new tokens.
      alive_tokens: int32 [B, W], the alive beams' last token (fed at the next step).
      finished_sequences: int32 [B, W, T + N], finished hypotheses (pads after EOS).
      finished_scores: float32 [B, W], their length-penalised scores (``NEG_INF`` = empty slot).
      finished_filled: bool [B, W], whether the finished slot holds a hypothesis.
      open_rows: bool [B], HF rules: whether the row still takes finished hypotheses.
      positions: int32 [B * W], the position the next fed token will have.
      cache: the model's KV cache with B * W rows.
    """

    step: jax.Array
    logits: jax.Array
    alive_sequences: jax.Array
    alive_log_probs: jax.Array
    alive_tokens: jax.Array
    finished_sequences: jax.Array
    finished_scores: jax.Array
    finished_filled: jax.Array
    open_rows: jax.Array
    positions: jax.Array
    cache: Cache


def _top_k_gathered(scores: jax.Array, k: int, *arrays: jax.Array):
    """Returns (top-k scores [B, k], each array gathered at their indices along axis 1)."""
    top_scores, index = jax.lax.top_k(scores, k)  # [B, k]
    gathered = [
        jnp.take_along_axis(a, index.reshape(index.shape + (1,) * (a.ndim - 2)), axis=1)
        for a in arrays
    ]
    return top_scores, gathered


def _chosen(
    state: BeamState, prompt_length, alpha, eos_id, *, max_new_tokens, kind, early_stopping
) -> tuple[BeamState, jax.Array]:
    """Extends every alive beam by one token; updates the alive and finished sets.

    Returns:
      The new state (its cache not yet reordered) and int32 [B * W], the cache row of each new
      alive beam's parent.
    """
    batch, beams, vocab = state.logits.shape
    log_probs = jax.nn.log_softmax(state.logits.astype(jnp.float32), axis=-1)  # [B, W, V]
    candidates = (state.alive_log_probs[:, :, None] + log_probs).reshape(batch, beams * vocab)
    k = min(2 * beams, beams * vocab)
    top_log_probs, flat_index = jax.lax.top_k(candidates, k)  # [B, 2W]
    parents = flat_index // vocab  # [B, 2W]
    tokens = (flat_index % vocab).astype(jnp.int32)  # [B, 2W]
    sequences = jnp.take_along_axis(state.alive_sequences, parents[:, :, None], axis=1)
    column = prompt_length + state.step
    sequences = jax.lax.dynamic_update_slice(
        sequences, tokens[:, :, None], (jnp.int32(0), jnp.int32(0), column)
    )  # [B, 2W, T + N]
    ends = (tokens == eos_id) & (eos_id >= 0)  # [B, 2W]

    # New alive beams: the best W candidates that do not end in EOS.
    alive_scores = jnp.where(ends, NEG_INF, top_log_probs)
    alive_log_probs, (alive_sequences, alive_tokens, alive_parents) = _top_k_gathered(
        alive_scores, beams, sequences, tokens, parents
    )

    if early_stopping is None:  # t5x: every EOS-ending candidate may finish.
        may_finish = ends
    else:  # HF: only the first W of the 2W, EOS-ending or at the length limit, in open rows.
        at_limit = state.step + 1 >= max_new_tokens
        in_top_w = (jnp.arange(k) < beams)[None, :]  # [1, 2W]
        takes_more = state.open_rows
        if early_stopping is True:
            takes_more = takes_more & ~jnp.all(state.finished_filled, axis=1)
        may_finish = (ends | at_limit) & in_top_w & takes_more[:, None]
    penalty = length_penalty_divisor(state.step + 1, alpha, kind)
    new_scores = jnp.where(may_finish, top_log_probs / penalty, NEG_INF)
    finished_scores, (finished_sequences, finished_filled) = _top_k_gathered(
        jnp.concatenate([state.finished_scores, new_scores], axis=1),
        beams,
        jnp.concatenate([state.finished_sequences, sequences], axis=1),
        jnp.concatenate([state.finished_filled, may_finish], axis=1),
    )
    rows = (jnp.arange(batch)[:, None] * beams + alive_parents).reshape(-1)  # [B * W]
    return state.replace(
        step=state.step + 1,
        alive_sequences=alive_sequences,
        alive_log_probs=alive_log_probs,
        alive_tokens=alive_tokens,
        finished_sequences=finished_sequences,
        finished_scores=finished_scores,
        finished_filled=finished_filled,
    ), rows


def _hf_open_rows(state: BeamState, alpha, *, max_new_tokens, kind, early_stopping) -> jax.Array:
    """HF's ``_check_early_stop_heuristic`` after a step: which rows may still improve, bool [B].

    The best alive beam's score at the hypothetical length (the tokens so far, or
    ``max_new_tokens`` for ``early_stopping='never'`` with a positive exponent) against the worst
    finished score; a row with an empty finished slot stays open.
    """
    if early_stopping == "never":
        length = jnp.where(jnp.asarray(alpha) > 0.0, max_new_tokens, state.step)
    else:
        length = state.step
    best_possible = state.alive_log_probs[:, 0] / length_penalty_divisor(length, alpha, kind)
    worst_finished = jnp.min(state.finished_scores, axis=1)  # [B]
    improvable = ~jnp.all(state.finished_filled, axis=1) | (best_possible > worst_finished)
    return state.open_rows & improvable


@functools.partial(
    jax.jit,
    static_argnames=("model", "beam_size", "max_new_tokens", "length_penalty_kind",
                     "early_stopping"),
)
def beams_and_scores(
    model, params, prompts, prompt_mask, alpha, eos_id, pad_id, cache=None, *, beam_size,
    max_new_tokens, length_penalty_kind="gnmt", early_stopping=None,
):
    """The jitted search of ``beam_search`` (arguments checked by the callers).

    ``cache`` (optional) is the empty cache for B rows and T + N - 1 slots, possibly holding
    more than the decoder's keys (the encoder output of ``lmjax.decoding.seq2seq``); None =
    ``empty_cache``.

    Returns:
      (int32 [B, W, T + N] sequences, float32 [B, W] scores), best first.
    """
    batch, prompt_length = prompts.shape
    beams = beam_size
    kind = length_penalty_kind
    slots = prompt_length + max_new_tokens - 1
    axes = cache_batch_axes(model, slots)
    if cache is None:
        cache = empty_cache(model, batch, slots)
    logits, cache = prefill_logits(model, params, cache, prompts, prompt_mask)  # [B, V]
    cache = beam_gathered_cache(cache, axes, jnp.repeat(jnp.arange(batch), beams))
    prompt_lengths = jnp.sum((prompt_mask != 0).astype(jnp.int32), axis=1)  # [B]
    sequences = jnp.concatenate(
        [prompts.astype(jnp.int32), jnp.full((batch, max_new_tokens), pad_id, jnp.int32)], axis=1
    )  # [B, T + N]
    state = BeamState(
        step=jnp.int32(0),
        logits=jnp.broadcast_to(logits[:, None], (batch, beams, logits.shape[-1])),
        alive_sequences=jnp.broadcast_to(sequences[:, None], (batch, beams, sequences.shape[1])),
        alive_log_probs=jnp.where(jnp.arange(beams) == 0, 0.0, NEG_INF)[None].repeat(batch, 0),
        alive_tokens=jnp.zeros((batch, beams), jnp.int32),
        finished_sequences=jnp.broadcast_to(
            sequences[:, None], (batch, beams, sequences.shape[1])
        ),
        finished_scores=jnp.full((batch, beams), NEG_INF, jnp.float32),
        finished_filled=jnp.zeros((batch, beams), bool),
        open_rows=jnp.ones((batch,), bool),
        positions=jnp.repeat(prompt_lengths, beams),
        cache=cache,
    )
    rules = dict(max_new_tokens=max_new_tokens, kind=kind, early_stopping=early_stopping)

    def chosen_with_cache(state: BeamState) -> BeamState:
        state, rows = _chosen(state, prompt_length, alpha, eos_id, **rules)
        if early_stopping is not None:
            state = state.replace(open_rows=_hf_open_rows(state, alpha, **rules))
        return state.replace(cache=beam_gathered_cache(state.cache, axes, rows))

    state = chosen_with_cache(state)
    largest_penalty = length_penalty_divisor(max_new_tokens, alpha, kind)

    def should_continue(state: BeamState) -> jax.Array:
        if early_stopping is not None:
            going = jnp.any(state.open_rows)
            if early_stopping is True:
                going = going & ~jnp.all(state.finished_filled)
            return (state.step < max_new_tokens) & going
        best_alive = state.alive_log_probs[:, 0] / largest_penalty  # [B], upper bound
        worst_finished = state.finished_scores[:, -1]  # [B]; NEG_INF while a slot is empty
        search_over = jnp.all(worst_finished > best_alive)
        return (state.step < max_new_tokens) & ~search_over

    def fed_and_chosen(state: BeamState) -> BeamState:
        logits, cache = decode_step_logits(
            model, params, state.cache, state.alive_tokens.reshape(-1), state.positions
        )
        state = state.replace(
            logits=logits.reshape(batch, beams, -1), cache=cache, positions=state.positions + 1
        )
        return chosen_with_cache(state)

    state = jax.lax.while_loop(should_continue, fed_and_chosen, state)
    if early_stopping is not None:  # HF: the length limit already moved the alive beams over.
        return state.finished_sequences, state.finished_scores

    # t5x: the alive beams, cut by the length limit, compete with the finished ones.
    alive_scores = state.alive_log_probs / length_penalty_divisor(state.step, alpha, kind)
    scores, (sequences,) = _top_k_gathered(
        jnp.concatenate([state.finished_scores, alive_scores], axis=1),
        beams,
        jnp.concatenate([state.finished_sequences, state.alive_sequences], axis=1),
    )
    return sequences, scores


def checked_beam_options(
    beam_size, max_new_tokens, length_penalty, length_penalty_kind, early_stopping
) -> None:
    """Raises ValueError naming the bad beam-search option and the fix."""
    if not isinstance(beam_size, (int, np.integer)) or beam_size < 1:
        raise ValueError(f"beam_size must be an int >= 1, got {beam_size!r}.")
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}.")
    if length_penalty_kind not in LENGTH_PENALTY_KINDS:
        raise ValueError(
            f"length_penalty_kind={length_penalty_kind!r}; choose one of {LENGTH_PENALTY_KINDS} "
            "('gnmt': ((5 + n) / 6) ** alpha as t5x; 'hf': n ** alpha as transformers)."
        )
    if not any(early_stopping is mode for mode in EARLY_STOPPING_MODES[:3]) and (
        early_stopping != "never"
    ):
        raise ValueError(
            f"early_stopping={early_stopping!r}; choose None (t5x rules) or True, False, 'never' "
            "(Hugging Face rules)."
        )
    if not np.isfinite(float(length_penalty)):
        raise ValueError(f"length_penalty must be finite, got {length_penalty!r}.")
    if early_stopping is None and not float(length_penalty) >= 0.0:
        raise ValueError(
            f"length_penalty must be >= 0 (GPT-3 uses 0.6; 0 = none), got {length_penalty!r}; "
            "a negative exponent needs Hugging Face rules (early_stopping=False/True/'never')."
        )


def beam_search(
    model: nn.Module,
    params: Params,
    prompts,
    prompt_mask=None,
    *,
    beam_size: int = 4,
    max_new_tokens: int,
    length_penalty: float = 0.6,
    eos_id: Optional[int] = None,
    pad_id: int = 0,
    length_penalty_kind: str = "gnmt",
    early_stopping: Union[None, bool, str] = None,
) -> tuple[jax.Array, jax.Array]:
    """Returns the ``beam_size`` best continuations of each prompt and their scores.

    One prefill call over the (left-padded) prompts, then one jitted ``lax.while_loop`` that
    extends all beams by a token per step through the KV cache (see the module docstring).
    Compiles once per (model, B, T, beam_size, max_new_tokens, rules); the params, prompts,
    length penalty, eos_id and pad_id are traced. References: Wu et al. 2016 (length penalty);
    ``google-research/t5x:t5x/decoding.py`` ``beam_search`` and ``brevity_penalty``;
    ``transformers generation/utils.py::GenerationMixin._beam_search``.

    Args:
      model: an lmjax decoder-only module following the KV-cache contract.
      params: its ``'params'`` collection.
      prompts: int [B, T] token ids, LEFT-padded.
      prompt_mask: [B, T], nonzero on real tokens; None = all real.
      beam_size: W >= 1, hypotheses kept per prompt.
      max_new_tokens: N >= 1, the most tokens a hypothesis adds.
      length_penalty: the exponent alpha; 0 ranks by summed log-probability. t5x rules need
        alpha >= 0.
      eos_id: a hypothesis ends after emitting this token (kept); None = only the length limit.
      pad_id: written after a hypothesis's EOS.
      length_penalty_kind: 'gnmt' (``((5 + n) / 6) ** alpha``, t5x / GPT-3) or 'hf'
        (``n ** alpha``, transformers), n = new tokens including EOS.
      early_stopping: None = t5x rules; True, False or 'never' = Hugging Face's rules with its
        ``early_stopping`` of that value (see the module docstring). HF ``generate(num_beams=W,
        length_penalty=a, early_stopping=e, max_new_tokens=N, do_sample=False)`` is
        ``length_penalty_kind='hf', early_stopping=e``.

    Returns:
      (int32 [B, W, T + N] prompts followed by the new tokens, best first; float32 [B, W] scores
      ``log P(new tokens | prompt) / penalty(length)``). When fewer than W distinct hypotheses
      exist (W > V ** N), the extra slots score about ``NEG_INF``.

    Raises:
      ValueError: for a bad beam size, length, penalty, rule set or prompt padding.

    Example:
      >>> tokens, scores = beam_search(model, params, prompts, mask, max_new_tokens=8)
      >>> best = tokens[:, 0, prompts.shape[1]:]   # [B, N]
    """
    checked_beam_options(
        beam_size, max_new_tokens, length_penalty, length_penalty_kind, early_stopping
    )
    prompts = jnp.asarray(prompts, jnp.int32)
    prompt_mask = checked_prompt_mask(prompts, prompt_mask)
    checked_cache_length(model, prompts.shape[1], max_new_tokens)
    return beams_and_scores(
        model,
        params,
        prompts,
        prompt_mask,
        jnp.float32(length_penalty),
        jnp.int32(-1 if eos_id is None else eos_id),
        jnp.int32(pad_id),
        beam_size=int(beam_size),
        max_new_tokens=int(max_new_tokens),
        length_penalty_kind=length_penalty_kind,
        early_stopping=early_stopping,
    )
