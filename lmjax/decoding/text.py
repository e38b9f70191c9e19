"""Text in, text out: encode prompts, left-pad them, ``generate``, cut at EOS and decode.

The one place that turns strings into token batches for :func:`lmjax.decoding.generate` and
the generated tokens back into strings; the train loop's ``samples.txt``, ``lmjax generate`` and
the notebooks all call :func:`generated_texts`.

The tokenizer is duck-typed (this package sits above ``lmjax.data`` in the layer map): anything
with ``encode(str) -> list[int]``, ``decode(list[int]) -> str`` and the ``pad_id``, ``bos_id``
and ``eos_id`` attributes (``None`` where the vocabulary has no such token) will do, e.g.
``lmjax.data.SentencePieceTokenizer``.

Axis legend: P prompts, T longest prompt, N new tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Protocol

import jax
import numpy as np

from lmjax.decoding.generate import generate


class TextTokenizer(Protocol):
    """What :func:`generated_texts` needs of a tokenizer."""

    pad_id: int
    bos_id: Optional[int]
    eos_id: Optional[int]

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


def left_padded_prompts(
    prompt_ids: Sequence[Sequence[int]], pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Returns int32 [P, T] prompts left-padded with ``pad_id`` and their int32 [P, T] mask.

    Left padding puts every prompt's last token in the last column, which is what
    :func:`lmjax.decoding.generate` expects (the mask is 1 on real tokens, 0 on pads).

    Raises:
        ValueError: when there are no prompts or one of them is empty.
    """
    if not prompt_ids:
        raise ValueError("no prompts to pad; pass at least one non-empty prompt.")
    empty = [index for index, ids in enumerate(prompt_ids) if len(ids) == 0]
    if empty:
        raise ValueError(f"prompts {empty} have no tokens; every prompt needs at least one.")
    width = max(len(ids) for ids in prompt_ids)
    tokens = np.full((len(prompt_ids), width), pad_id, np.int32)  # [P, T]
    mask = np.zeros((len(prompt_ids), width), np.int32)  # [P, T]
    for row, ids in enumerate(prompt_ids):
        tokens[row, width - len(ids) :] = ids
        mask[row, width - len(ids) :] = 1
    return tokens, mask


def model_max_len(model: Any) -> Optional[int]:
    """Returns the positions of ``model`` (its ``config.max_len``), or None when unbounded."""
    max_len = getattr(getattr(model, "config", None), "max_len", None)
    return int(max_len) if max_len else None


def prompt_token_ids(
    tokenizer: TextTokenizer,
    prompts: Sequence[str],
    max_new_tokens: int,
    max_len: Optional[int] = None,
    truncate_prompts: bool = False,
) -> list[list[int]]:
    """Returns each prompt's token ids, checked to leave room for ``max_new_tokens``.

    An empty prompt (or one that encodes to nothing) becomes the BOS token, so a model can be
    sampled unconditionally.

    Args:
        tokenizer: encodes the prompts (see :class:`TextTokenizer`).
        prompts: the prompt strings.
        max_new_tokens: N, the tokens that will be generated after each prompt.
        max_len: the model's positions (None = unbounded); a prompt of T tokens needs
            ``T + N <= max_len``.
        truncate_prompts: keep each too-long prompt's last ``max_len - N`` tokens instead of
            raising.

    Raises:
        ValueError: a prompt encodes to nothing and the tokenizer has no BOS token; a prompt
            is too long and ``truncate_prompts`` is off; or ``max_new_tokens`` leaves no room
            for even a one-token prompt.
    """
    if truncate_prompts and max_len is not None and max_new_tokens >= max_len:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's "
            f"{max_len} positions; generate at most {max_len - 1} new tokens."
        )
    all_ids = []
    for index, prompt in enumerate(prompts):
        ids = list(tokenizer.encode(prompt))
        if not ids:
            if tokenizer.bos_id is None:
                raise ValueError(
                    f"prompt {index} ({prompt!r}) encodes to no tokens and the tokenizer has no "
                    "BOS token to start from; pass a non-empty prompt."
                )
            ids = [tokenizer.bos_id]
        if max_len is not None and len(ids) + max_new_tokens > max_len:
            if not truncate_prompts:
                raise ValueError(
                    f"the prompt ({len(ids)} tokens) plus max_new_tokens={max_new_tokens} "
                    f"exceeds the model's {max_len} positions; shorten the prompt or generate "
                    "fewer tokens."
                )
            ids = ids[len(ids) + max_new_tokens - max_len :]
        all_ids.append(ids)
    return all_ids


def text_until_eos(
    tokenizer: TextTokenizer, prompt_ids: Sequence[int], new_ids: Sequence[int]
) -> str:
    """Returns the decoded prompt followed by the new tokens before the first EOS (dropped)."""
    new_ids = list(new_ids)
    if tokenizer.eos_id is not None and tokenizer.eos_id in new_ids:
        new_ids = new_ids[: new_ids.index(tokenizer.eos_id)]
    return tokenizer.decode(list(prompt_ids) + new_ids)


def generated_texts(
    model: Any,
    params: Any,
    tokenizer: TextTokenizer,
    prompts: Sequence[str],
    key: Optional[jax.Array] = None,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    truncate_prompts: bool = False,
) -> list[str]:
    """Returns each prompt followed by its continuation, cut before the end-of-text token.

    All prompts are decoded together in one batch (left-padded, see
    :func:`left_padded_prompts`); a padded prompt continues exactly as it would alone. To draw
    several samples of one prompt, repeat it in ``prompts``: every row samples its own tokens.

    Args:
        model: an lmjax decoder-only model following the KV-cache contract.
        params: its ``'params'`` collection, addressable by this process.
        tokenizer: encodes the prompts and decodes the results (see :class:`TextTokenizer`).
        prompts: P prompt strings; an empty one starts from the BOS token.
        key: PRNG key for sampling; unused (may be None) when decoding greedily.
        max_new_tokens: N, how many tokens to add at most (fewer when EOS comes first).
        temperature: divides the logits; 0 decodes greedily, like ``greedy=True``.
        top_k: keep the k most likely tokens; 0 = off.
        top_p: nucleus probability mass; 1.0 = off.
        greedy: argmax decoding (ignores key, temperature, top_k and top_p).
        truncate_prompts: keep the last tokens of prompts too long for the model's positions
            instead of raising.

    Returns:
        P strings: ``decode(prompt tokens + new tokens before EOS)``.

    Raises:
        ValueError: for prompts that do not fit the model (see :func:`prompt_token_ids`) or
            sampling options :func:`lmjax.decoding.generate` rejects.

    Example:
        >>> generated_texts(model, params, tokenizer, ['def read(self', 'import'],
        ...                 jax.random.key(0), max_new_tokens=20, top_k=40)
    """
    greedy = greedy or temperature == 0
    prompt_ids = prompt_token_ids(
        tokenizer, prompts, max_new_tokens, model_max_len(model), truncate_prompts
    )
    tokens, mask = left_padded_prompts(prompt_ids, tokenizer.pad_id)  # [P, T]
    sequences = generate(
        model,
        params,
        tokens,
        mask,
        None if greedy else key,
        max_new_tokens,
        temperature=1.0 if greedy else temperature,
        top_k=top_k,
        top_p=top_p,
        greedy=greedy,
        eos_id=tokenizer.eos_id,
        pad_id=tokenizer.pad_id,
    )
    new_tokens = np.asarray(sequences)[:, tokens.shape[1] :]  # [P, N]
    return [
        text_until_eos(tokenizer, ids, new) for ids, new in zip(prompt_ids, new_tokens.tolist())
    ]
