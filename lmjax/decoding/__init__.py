"""Decoding for lmjax models: logits processors, the KV-cache step, ``generate``, beam search,
encoder-decoder decoding and Meena's sample-and-rank.

``sampling``  pure, jittable processors (temperature, top-k, top-p) and token choosers.
``generate``  prefill + one jitted ``while_loop`` over new tokens with the model's KV cache.
``beam_search``      beam search (t5x's GNMT penalty or Hugging Face's rules).
``seq2seq``          the same loops for encoder-decoder models (T5, BART, Meena).
``sample_and_rank``  Meena's N samples at temperature T, the most likely one kept.
``text``      strings in, strings out: ``generated_texts`` encodes, pads, generates and decodes.
"""

from lmjax.decoding.generate import (
    DecodeState,
    decode_step_logits,
    decoded_state,
    emitted,
    empty_cache,
    generate,
    generate_with_scores,
    prefill_logits,
    prompt_positions,
)
from lmjax.decoding.sample_and_rank import RankedSamples, sample_and_rank, seq2seq_sample_and_rank
from lmjax.decoding.sampling import (
    MASKED_LOGIT,
    SamplingOptions,
    greedy_tokens,
    next_tokens,
    processed_logits,
    sampled_tokens,
    temperature_scaled_logits,
    token_log_probs,
    top_k_filtered_logits,
    top_p_filtered_logits,
)
from lmjax.decoding.seq2seq import (
    ConditionedDecoder,
    seq2seq_beam_search,
    seq2seq_generate,
    seq2seq_generate_with_scores,
)
from lmjax.decoding.text import (
    TextTokenizer,
    generated_texts,
    left_padded_prompts,
    prompt_token_ids,
    text_until_eos,
)

__all__ = [
    "ConditionedDecoder",
    "RankedSamples",
    "sample_and_rank",
    "seq2seq_beam_search",
    "seq2seq_generate",
    "seq2seq_generate_with_scores",
    "seq2seq_sample_and_rank",
    "DecodeState",
    "MASKED_LOGIT",
    "SamplingOptions",
    "TextTokenizer",
    "decode_step_logits",
    "decoded_state",
    "emitted",
    "empty_cache",
    "generate",
    "generate_with_scores",
    "generated_texts",
    "greedy_tokens",
    "left_padded_prompts",
    "next_tokens",
    "prefill_logits",
    "processed_logits",
    "prompt_positions",
    "prompt_token_ids",
    "sampled_tokens",
    "temperature_scaled_logits",
    "text_until_eos",
    "token_log_probs",
    "top_k_filtered_logits",
    "top_p_filtered_logits",
]
