"""Logits processors and token choosers for autoregressive decoding.

Every function here is pure and jittable and works on the next-token logits of a batch,
float32 [B, V]. A processor maps logits to logits (masking what may not be sampled); a chooser
maps (key, logits) to int32 tokens [B]. ``processed_logits`` chains the processors in the order of
the reference sampler, ``next_tokens`` adds the choice; beam search, sample-and-rank and PPLM reuse
the same pieces.

Reference: ``openai/gpt-2:src/sample.py``. It divides the last position's logits by the temperature,
then truncates with ``top_k_logits`` (``k == 0`` means no truncation) or ``top_p_logits`` (nucleus
sampling: keep the most probable tokens whose *exclusive* cumulative probability is below ``p``,
i.e. the smallest set whose mass reaches ``p``), sets the removed logits to ``-1e10`` and draws with
``tf.multinomial``. lmjax differs in two small, documented ways:

* "off" values: ``top_k=0`` and ``top_p=1.0`` disable truncation (the reference uses
  ``top_p=0.0`` for off, since it applies *either* top-p or top-k); here both may be on, and then
  top-k runs first and top-p renormalises over what is left, as Hugging Face's processors do.
* ties: like the reference, truncation keeps every logit equal to the threshold, so tied values at
  the cut can keep a few more than ``k`` tokens.

Axis legend: B batch, V vocab.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

# The value written over removed logits (as the reference does). Finite, so log-softmax of a
# processed distribution stays NaN-free; far enough below any real logit that exp() underflows.
MASKED_LOGIT = -1e10


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
    """How one next token is chosen from the model's logits.

    Attributes:
      temperature: divides the logits before truncation and sampling; must be > 0 unless ``greedy``.
      top_k: keep the ``top_k`` largest logits; 0 = off.
      top_p: nucleus mass in (0, 1]; keep the smallest most-probable set reaching it; 1.0 = off.
      greedy: take the argmax (temperature, top-k and top-p do not change the argmax, so they are
        skipped).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False

    def __post_init__(self):
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an int >= 0 (0 = off), got {self.top_k!r}.")
        if not 0.0 < float(self.top_p) <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1.0 = off), got {self.top_p!r}.")
        if not self.greedy and not float(self.temperature) > 0.0:
            raise ValueError(
                f"temperature must be > 0 when sampling, got {self.temperature!r}; "
                "pass greedy=True for argmax decoding."
            )


def temperature_scaled_logits(logits: jax.Array, temperature) -> jax.Array:
    """Returns ``logits / temperature`` in float32 (reference: ``sample.py`` ``sample_sequence``).

    Args:
      logits: float [B, V].
      temperature: a positive Python float or a traced scalar.
    """
    logits = logits.astype(jnp.float32)
    if isinstance(temperature, (int, float)) and temperature == 1.0:
        return logits
    return logits / jnp.asarray(temperature, jnp.float32)


def top_k_filtered_logits(logits: jax.Array, k: int) -> jax.Array:
    """Returns the logits with everything below the k-th largest set to ``MASKED_LOGIT``.

    Reference: ``openai/gpt-2:src/sample.py`` ``top_k_logits``; ``k == 0`` returns the logits
    unchanged, ``k >= V`` keeps all. ``k`` must be a static Python int (``lax.top_k`` needs it).

    Args:
      logits: float [B, V].
      k: number of logits to keep per row.
    """
    if k == 0:
        return logits
    vocab = logits.shape[-1]
    if k >= vocab:
        return logits
    kth_largest = jax.lax.top_k(logits, k)[0][..., -1:]  # [B, 1]
    return jnp.where(logits < kth_largest, jnp.asarray(MASKED_LOGIT, logits.dtype), logits)


def top_p_filtered_logits(logits: jax.Array, p) -> jax.Array:
    """Returns the logits with everything outside the top-p nucleus set to ``MASKED_LOGIT``.

    The nucleus is the smallest set of most probable tokens whose total probability reaches ``p``:
    a token is kept when the probability mass of the tokens ranked strictly above it is < ``p``
    (reference: ``openai/gpt-2:src/sample.py`` ``top_p_logits``, an exclusive cumulative sum;
    Holtzman et al. 2019, "The Curious Case of Neural Text Degeneration", section 3.1). The most
    probable token is always kept. A static ``p >= 1.0`` returns the logits unchanged (no sort).

    Args:
      logits: float [B, V] (already temperature-scaled / top-k filtered if those apply).
      p: nucleus mass in (0, 1]; a Python float or a traced scalar.
    """
    if isinstance(p, (int, float)) and p >= 1.0:
        return logits
    sorted_logits = jnp.sort(logits.astype(jnp.float32), axis=-1)[..., ::-1]  # [B, V] descending
    sorted_probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_above = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs  # exclusive cumsum
    in_nucleus = mass_above < p
    in_nucleus = in_nucleus.at[..., 0].set(True)  # never empty, even for a tiny p
    # The smallest kept logit is the threshold; ties with it are kept too (as in the reference).
    threshold = jnp.min(jnp.where(in_nucleus, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits < threshold, jnp.asarray(MASKED_LOGIT, logits.dtype), logits)


def processed_logits(logits: jax.Array, options: SamplingOptions, temperature=None) -> jax.Array:
    """Returns the logits a sample is drawn from: temperature, then top-k, then top-p.

    Args:
      logits: float [B, V] next-token logits.
      options: the sampling options; its ``greedy`` flag is ignored here.
      temperature: overrides ``options.temperature`` (e.g. with a traced scalar, so a jitted
        caller need not recompile per temperature).

    Returns:
      float32 [B, V], removed entries equal to ``MASKED_LOGIT``.
    """
    temperature = options.temperature if temperature is None else temperature
    logits = temperature_scaled_logits(logits, temperature)
    logits = top_k_filtered_logits(logits, options.top_k)
    return top_p_filtered_logits(logits, options.top_p)


def greedy_tokens(logits: jax.Array) -> jax.Array:
    """Returns the argmax token of each row, int32 [B] (the first index on ties)."""
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def sampled_tokens(key: jax.Array, logits: jax.Array) -> jax.Array:
    """Returns one token per row drawn from ``softmax(logits)``, int32 [B].

    The reference draws with ``tf.multinomial(logits)``; ``jax.random.categorical`` samples the same
    distribution (Gumbel-max).
    """
    return jax.random.categorical(key, logits.astype(jnp.float32), axis=-1).astype(jnp.int32)


def next_tokens(
    key: Optional[jax.Array], logits: jax.Array, options: SamplingOptions, temperature=None
) -> jax.Array:
    """Returns the next token of each row, int32 [B], chosen as ``options`` say.

    Args:
      key: PRNG key for sampling (unused, may be None, when ``options.greedy``).
      logits: float [B, V] next-token logits.
      options: the sampling options.
      temperature: optional traced override of ``options.temperature``.
    """
    if options.greedy:
        return greedy_tokens(logits)
    if key is None:
        raise ValueError("next_tokens needs a PRNG key to sample; pass greedy=True for argmax.")
    return sampled_tokens(key, processed_logits(logits, options, temperature))


def token_log_probs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """Returns ``log softmax(logits)[token]`` per row, float32 [B].

    Used to score a decoded sequence under the model's own (unprocessed) distribution, e.g. for
    sample-and-rank (Meena, Adiwardana et al. 2020, section 4.3).

    Args:
      logits: float [B, V].
      tokens: int [B].
    """
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(log_probs, tokens[:, None].astype(jnp.int32), axis=-1)[:, 0]
