"""Evolved Transformer (ET) encoder and decoder blocks, with segment-aware and cached convolutions.

Axis legend: B batch, L length, T decode chunk, K kernel width, C conv channels, E embed (d),
H heads, F = 4E (the wide branch), Lk encoder length.

So et al. (2019), "The Evolved Transformer", arXiv:1901.11117, Figure 3; the block structure follows
``tensorflow/tensor2tensor:tensor2tensor/models/evolved_transformer.py``
(``evolved_transformer_encoder`` / ``evolved_transformer_decoder``). Every sub-block is
``x + dropout(op(norm(x)))`` (t2t ``layer_preprocess`` = 'n', ``layer_postprocess`` = 'da').

Encoder block (``ETEncoderBlock``)::

    1. GLU:            x += Dense_E(h) * sigmoid(Dense_E(h))                  h = norm(x)
    2. conv branches:  left  = relu(Dense_4E(h))                          h = norm(x) * valid
                       right = relu(Conv1D_{E/2, k3}(h)), zero-padded to 4E
                       g = norm_4E(left + right) * valid
                       x += SepConv_{E/2, k9}(g), zero-padded to E
    3. self-attention  (H heads)
    4. FFN:            x += Dense_E(relu(Dense_4E(h)))

Decoder block (``ETDecoderBlock``)::

    1. x += SelfAttn_{H' heads}(h) + CrossAttn_{H heads}(h, encoded)      h = norm(x)
       H' = max(min(2H, 16), H) (t2t ``_capped_double_heads``)
    2. conv branches:  left  = relu(SepConv_{2E, k11}(h))                 h = norm(x) * valid
                       right = SepConv_{E/2, k7}(h), zero-padded to 2E
                       g = norm_2E(left + right) * valid
                       x += SepConv_{E, k7}(g)
       causal: every conv sees only the current and earlier tokens (t2t: LEFT padding of 10 / 6 / 6)
    3. self-attention  (H heads, causal)
    4. enc-dec attention (H heads)
    5. FFN:            x += Dense_E(norm_4E(swish(Dense_4E(h))))

The stack ends with a final norm (t2t returns ``layer_preprocess(hidden_state)``); that norm lives
in the model (:mod:`lmjax.models.meena`).

**Convolutions and segments.** t2t zeroes padding positions before each conv; lmjax goes further so
that packed rows cannot leak between examples: a conv tap reading slot ``t + o`` for output slot
``t`` is used only when slot ``t + o`` exists and holds the same nonzero segment id as slot ``t``
(zero padding at row and segment edges). With one segment per row this is exactly t2t's behaviour.
The convs are computed as a sum over the K taps of shifted inputs ("windows"), which makes the
masking exact and the decoder's cache trivial.

**Decoding cache.** A causal conv of width K needs the last K-1 inputs. Each decoder block keeps,
in the 'cache' collection, ``conv_branches_inputs`` [B, 10, E] (shared by the k11 and k7 branch
convs, which read the same normalised input; t2t's ``_CONV_BRANCHES_FIRST_LAYER_NAME`` cache) and
``final_conv_inputs`` [B, 6, 2E] (t2t's ``_CONV_BRANCHES_SECOND_LAYER_NAME``), each with its int32
``..._segment_ids`` [B, K-1] (0 = nothing there). A chunk of T tokens is appended to the rolling
cache, the convs read the K-1+T rows, and the last K-1 rows are kept. While decoding, a cached row
counts when its stored segment id is nonzero, the same rule the KV cache applies to keys, so
token-by-token decoding equals the full (unpacked) decoder call. The self-attention layers use the
KV cache of :class:`lmjax.layers.attention.MultiHeadAttention`.

Parameters: convolution kernels are stored as ``[K, C_in, C_out]`` (standard) and ``depthwise``
``[K, C]`` + ``pointwise`` ``[C, C_out]`` (separable, Keras ``SeparableConv1D`` with depth
multiplier 1: no depthwise bias, one bias after the pointwise product). The kernel-width axis has
no logical name (``None``: never sharded). Channel axes: a kernel's input and output channels get
'embed' and 'mlp' (one of each, so no mesh axis is used twice); the E-wide side is 'embed' except
for the E/2 outputs read from a 4E or 2E input, which take 'embed' as the narrow side.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax import axes
from lmjax.layers.attention import MultiHeadAttention
from lmjax.layers.dense import DenseGeneral, Initializer, default_kernel_init
from lmjax.layers.norms import LayerNorm

# t2t evolved_transformer.py: _DECODER_LEFT_CONV_PADDING, _DECODER_RIGHT_CONV_PADDING,
# _DECODER_FINAL_CONV_PADDING.
DECODER_LEFT_CONV_WIDTH = 11
DECODER_RIGHT_CONV_WIDTH = 7
DECODER_FINAL_CONV_WIDTH = 7
ENCODER_STANDARD_CONV_WIDTH = 3
ENCODER_SEPARABLE_CONV_WIDTH = 9
WIDE_HEADS_CAP = 16


def wide_attention_heads(num_heads: int, cap: int = WIDE_HEADS_CAP) -> int:
    """Heads of the decoder's first (wide) self-attention: ``max(min(2 * H, cap), H)``.

    t2t ``evolved_transformer.py::_capped_double_heads`` ("twice the normal amount, until it
    reaches |cap| heads", and never fewer than ``num_heads``). Older t2t versions used
    ``max(16, num_heads)``. Both give 32 for Meena's 32 heads; lmjax's reference sheet
    (text-models.md §13) reads ``min(2H, 16)``, which would give 16: set
    ``ETBlockConfig.wide_heads=16`` for that reading. The parameter count is the same either way
    (the total query/key/value width is E whatever the head count).
    """
    return max(min(2 * num_heads, cap), num_heads)


@dataclasses.dataclass(frozen=True)
class ETBlockConfig:
    """Hyper-parameters shared by the ET encoder and decoder blocks.

    Attributes:
      embed_dim: E (t2t ``hidden_size``); must be even (the E/2 branches).
      num_heads: H of the standard attention layers; head width E / H.
      wide_heads: heads of the decoder's first self-attention; 0 = t2t's
        ``wide_attention_heads(num_heads)``.
      dropout_rate: dropout on every sub-block output and branch (t2t
        ``layer_prepostprocess_dropout``; lmjax also uses it for the FFN hidden ``relu_dropout``).
      attention_dropout: dropout on attention weights.
      norm_eps: LayerNorm epsilon (t2t ``norm_epsilon`` 1e-6).
      kernel_init: initialiser of dense / pointwise / conv kernels.
      dtype: compute dtype.
      param_dtype: storage dtype.
    """

    embed_dim: int
    num_heads: int
    wide_heads: int = 0
    dropout_rate: float = 0.0
    attention_dropout: float = 0.0
    norm_eps: float = 1e-6
    kernel_init: Initializer = default_kernel_init
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        problems = []
        if self.embed_dim <= 0 or self.embed_dim % 2:
            problems.append(f"embed_dim={self.embed_dim} must be a positive even number")
        elif self.embed_dim % self.num_heads:
            problems.append(f"embed_dim={self.embed_dim} is not divisible by num_heads="
                            f"{self.num_heads}")
        elif self.wide_heads < 0 or self.embed_dim % self.decoder_wide_heads:
            problems.append(
                f"embed_dim={self.embed_dim} is not divisible by the decoder's wide attention "
                f"heads {self.decoder_wide_heads} (wide_heads={self.wide_heads}; 0 = t2t's "
                "max(min(2 * num_heads, 16), num_heads)); change wide_heads or embed_dim"
            )
        if problems:
            raise ValueError("Invalid ETBlockConfig: " + "; ".join(problems) + ".")

    @property
    def decoder_wide_heads(self) -> int:
        """Heads of the decoder's first self-attention (``wide_heads`` or t2t's rule)."""
        return self.wide_heads if self.wide_heads > 0 else wide_attention_heads(self.num_heads)


# --- Convolution windows ---------------------------------------------------------------------


def _valid(segment_ids: jax.Array | None, batch: int, length: int) -> jax.Array:
    """int32 [B, L] segment ids, ones when None."""
    if segment_ids is None:
        return jnp.ones((batch, length), jnp.int32)
    return jnp.asarray(segment_ids, jnp.int32)


def same_padding_windows(
    x: jax.Array, segment_ids: jax.Array, kernel_size: int
) -> list[jax.Array]:
    """The K shifted copies of ``x`` a centred ('SAME') conv sums over, masked by segment.

    Window ``j`` holds ``x[t + j - (K-1)/2]`` at slot ``t`` where that slot exists and has the same
    nonzero segment id as ``t``, else zeros.

    Args:
      x: [B, L, C].
      segment_ids: int32 [B, L] (0 = padding).
      kernel_size: K, odd.

    Returns:
      K arrays [B, L, C].
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"A 'SAME' conv here needs an odd kernel_size, got {kernel_size}.")
    half = (kernel_size - 1) // 2
    length = x.shape[1]
    padded_x = jnp.pad(x, ((0, 0), (half, half), (0, 0)))  # [B, L + K - 1, C]
    padded_segments = jnp.pad(segment_ids, ((0, 0), (half, half)))  # [B, L + K - 1]
    windows = []
    for j in range(kernel_size):
        neighbour = padded_segments[:, j : j + length]  # [B, L]
        keep = (neighbour == segment_ids) & (neighbour != 0)
        windows.append(padded_x[:, j : j + length] * keep[..., None].astype(x.dtype))
    return windows


def causal_windows(
    history: jax.Array,
    history_segment_ids: jax.Array,
    x: jax.Array,
    segment_ids: jax.Array,
    *,
    match_segments: bool,
) -> list[jax.Array]:
    """The K shifted copies of ``[history; x]`` a causal conv of width K = H+1 sums over.

    Window ``j`` holds, at slot ``t`` of ``x``, row ``t + j`` of ``concat(history, x)`` (window
    K-1 is ``x`` itself), masked where that row's segment id is 0 or (``match_segments``) differs
    from slot ``t``'s.

    Args:
      history: [B, K-1, C] the inputs before ``x`` (zeros at the start of a row).
      history_segment_ids: int32 [B, K-1] (0 = no input there).
      x: [B, T, C].
      segment_ids: int32 [B, T].
      match_segments: require equal segment ids (full calls over packed rows); False only requires
        nonzero ones (decoding, like the KV cache's key validity).

    Returns:
      K arrays [B, T, C].
    """
    width = history.shape[1] + 1
    length = x.shape[1]
    rows = jnp.concatenate([jnp.asarray(history, x.dtype), x], axis=1)  # [B, K-1+T, C]
    row_segments = jnp.concatenate([history_segment_ids, segment_ids], axis=1)  # [B, K-1+T]
    windows = []
    for j in range(width):
        neighbour = row_segments[:, j : j + length]  # [B, T]
        keep = neighbour != 0
        if match_segments:
            keep = keep & (neighbour == segment_ids)
        windows.append(rows[:, j : j + length] * keep[..., None].astype(x.dtype))
    return windows


class Conv1D(nn.Module):
    """A standard 1-D convolution over precomputed windows: ``sum_j windows[j] @ kernel[j] + bias``.

    Attributes:
      features: C_out.
      kernel_axes: logical names of the kernel [K, C_in, C_out] (the bias takes the last).
      activation: applied to the output (None = linear).
      kernel_init: initialiser of each tap's [C_in, C_out] slice.
      dtype: compute dtype.
      param_dtype: storage dtype.
    """

    features: int
    kernel_axes: tuple[str | None, str, str]
    activation: Callable[[jax.Array], jax.Array] | None = None
    kernel_init: Initializer = default_kernel_init
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, windows: Sequence[jax.Array]) -> jax.Array:
        """``windows``: K arrays [B, L, C_in] -> [B, L, C_out]."""
        width, channels = len(windows), windows[0].shape[-1]

        def init(key: jax.Array, shape: Sequence[int], dtype: Any) -> jax.Array:
            # fan-in of the whole receptive field, as Keras / TF conv initialisers use.
            flat = self.kernel_init(key, (shape[0] * shape[1], shape[2]), dtype)
            return flat.reshape(shape)

        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(init, self.kernel_axes),
            (width, channels, self.features),
            self.param_dtype,
        )
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(nn.initializers.zeros_init(), self.kernel_axes[-1:]),
            (self.features,),
            self.param_dtype,
        )
        kernel = jnp.asarray(kernel, self.dtype)
        y = sum(
            jnp.einsum("blc,cf->blf", jnp.asarray(w, self.dtype), kernel[j])
            for j, w in enumerate(windows)
        )  # [B, L, C_out]
        y = y + jnp.asarray(bias, self.dtype)
        return y if self.activation is None else self.activation(y)


class SeparableConv1D(nn.Module):
    """Depthwise (per channel, width K) then pointwise (dense C -> C_out) convolution.

    Keras ``SeparableConv1D`` with ``depth_multiplier=1``: ``depthwise`` [K, C] (no bias), then
    ``pointwise`` [C, C_out] with a bias, then the activation.

    Attributes:
      features: C_out.
      channel_axis: logical name of the input channel axis C ('embed' or 'mlp').
      out_axis: logical name of C_out.
      activation: applied to the output (None = linear).
      kernel_init: initialiser of the pointwise kernel.
      dtype: compute dtype.
      param_dtype: storage dtype.
    """

    features: int
    channel_axis: str
    out_axis: str
    activation: Callable[[jax.Array], jax.Array] | None = None
    kernel_init: Initializer = default_kernel_init
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, windows: Sequence[jax.Array]) -> jax.Array:
        """``windows``: K arrays [B, L, C] -> [B, L, C_out]."""
        width, channels = len(windows), windows[0].shape[-1]
        depthwise = self.param(
            "depthwise",
            nn.with_logical_partitioning(
                nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                                 in_axis=0, out_axis=1),
                (None, self.channel_axis),
            ),
            (width, channels),
            self.param_dtype,
        )
        depthwise = jnp.asarray(depthwise, self.dtype)
        y = sum(jnp.asarray(w, self.dtype) * depthwise[j] for j, w in enumerate(windows))
        y = DenseGeneral(
            self.features,
            kernel_axes=(self.channel_axis, self.out_axis),
            kernel_init=self.kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="pointwise",
        )(y)  # [B, L, C_out]
        return y if self.activation is None else self.activation(y)


def _pad_channels(x: jax.Array, width: int) -> jax.Array:
    """Zero-pads the last axis of ``x`` up to ``width`` (t2t's ``tf.pad`` of the narrow branch)."""
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, width - x.shape[-1])])


# --- Blocks ----------------------------------------------------------------------------------


class _ETSublayers(nn.Module):
    """Shared helpers of the two blocks (norm, dense, attention, dropout factories)."""

    config: ETBlockConfig

    def _norm(self, name: str) -> LayerNorm:
        cfg = self.config
        return LayerNorm(epsilon=cfg.norm_eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                         name=name)

    def _dense(self, features: int, kernel_axes: tuple[str, str], name: str) -> DenseGeneral:
        cfg = self.config
        return DenseGeneral(features, kernel_axes=kernel_axes, kernel_init=cfg.kernel_init,
                            dtype=cfg.dtype, param_dtype=cfg.param_dtype, name=name)

    def _attention(self, num_heads: int, name: str) -> MultiHeadAttention:
        cfg = self.config
        # t2t common_attention.multihead_attention: no biases; total key/value width E.
        return MultiHeadAttention(
            num_heads=num_heads, head_dim=cfg.embed_dim // num_heads, use_bias=False,
            dropout_rate=cfg.attention_dropout, kernel_init=cfg.kernel_init,
            out_kernel_init=cfg.kernel_init, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
            name=name,
        )

    def _dropout(self, x: jax.Array, deterministic: bool) -> jax.Array:
        return nn.Dropout(self.config.dropout_rate)(x, deterministic=deterministic)

    def _masked(self, x: jax.Array, segment_ids: jax.Array) -> jax.Array:
        """Zeroes padding positions (t2t: ``hidden_state *= nonpadding``)."""
        return x * (segment_ids != 0)[..., None].astype(x.dtype)


class ETEncoderBlock(_ETSublayers):
    """One Evolved Transformer encoder block (see the module docstring)."""

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array | None,
        segment_ids: jax.Array | None = None,
        deterministic: bool = True,
    ) -> jax.Array:
        """Applies the block.

        Args:
          x: [B, L, E].
          mask: bool [B|1, 1, L, L] self-attention mask (True = attend) or None.
          segment_ids: int32 [B, L] (0 = padding) or None (all one segment).
          deterministic: disables dropout.

        Returns:
          [B, L, E].
        """
        cfg = self.config
        embed, wide, half = cfg.embed_dim, 4 * cfg.embed_dim, cfg.embed_dim // 2
        segments = _valid(segment_ids, x.shape[0], x.shape[1])

        # 1. Gated linear unit.
        h = self._norm("glu_norm")(x)
        values = self._dense(embed, (axes.EMBED, axes.MLP), "glu_values")(h)
        gates = jax.nn.sigmoid(self._dense(embed, (axes.EMBED, axes.MLP), "glu_gates")(h))
        x = x + self._dropout(values * gates, deterministic)

        # 2. Convolution branches.
        h = self._masked(self._norm("conv_norm")(x), segments)  # [B, L, E]
        left = jax.nn.relu(self._dense(wide, (axes.EMBED, axes.MLP), "conv_left")(h))  # [B, L, 4E]
        right = Conv1D(
            half, (None, axes.EMBED, axes.MLP), activation=jax.nn.relu,
            kernel_init=cfg.kernel_init, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
            name="conv_right",
        )(same_padding_windows(h, segments, ENCODER_STANDARD_CONV_WIDTH))  # [B, L, E/2]
        h = self._dropout(left, deterministic) + _pad_channels(
            self._dropout(right, deterministic), wide
        )  # [B, L, 4E]
        h = self._masked(self._norm("conv_mid_norm")(h), segments)
        h = SeparableConv1D(
            half, axes.MLP, axes.EMBED, kernel_init=cfg.kernel_init, dtype=cfg.dtype,
            param_dtype=cfg.param_dtype, name="conv_separable",
        )(same_padding_windows(h, segments, ENCODER_SEPARABLE_CONV_WIDTH))  # [B, L, E/2]
        x = x + self._dropout(_pad_channels(h, embed), deterministic)

        # 3. Self-attention.
        h = self._norm("attention_norm")(x)
        h = self._attention(cfg.num_heads, "attention")(h, mask=mask, deterministic=deterministic)
        x = x + self._dropout(h, deterministic)

        # 4. Feed-forward.
        h = self._norm("mlp_norm")(x)
        h = jax.nn.relu(self._dense(wide, (axes.EMBED, axes.MLP), "mlp_wi")(h))  # [B, L, 4E]
        h = self._dense(embed, (axes.MLP, axes.EMBED), "mlp_wo")(self._dropout(h, deterministic))
        x = x + self._dropout(h, deterministic)
        return nn.with_logical_constraint(x, (axes.BATCH, axes.LENGTH, axes.ACT_EMBED))


class ETDecoderBlock(_ETSublayers):
    """One Evolved Transformer decoder block (see the module docstring), strictly causal."""

    def _causal_conv_windows(
        self,
        name: str,
        h: jax.Array,
        segments: jax.Array,
        width: int,
        decode: bool,
    ) -> list[jax.Array]:
        """Windows of a causal conv of ``width``; in decode mode read and roll the conv cache."""
        batch, _, channels = h.shape
        zeros = jnp.zeros((batch, width - 1, channels), h.dtype)
        zero_segments = jnp.zeros((batch, width - 1), jnp.int32)
        if not decode:
            return causal_windows(zeros, zero_segments, h, segments, match_segments=True)
        initializing = self.is_initializing()
        if not initializing and not self.has_variable("cache", f"{name}_inputs"):
            raise ValueError(
                "decode=True needs the decoder cache: create it with model.init(key, "
                "encoder_dummy, jnp.zeros((batch, max_len), jnp.int32), decode=True) and pass "
                "{'params': ..., 'cache': variables['cache']} with mutable=['cache']."
            )
        cached = self.variable("cache", f"{name}_inputs", jnp.zeros, zeros.shape, self.config.dtype)
        cached_segments = self.variable(
            "cache", f"{name}_segment_ids", jnp.zeros, zero_segments.shape, jnp.int32
        )
        if initializing:
            return causal_windows(zeros, zero_segments, h, segments, match_segments=True)
        windows = causal_windows(
            cached.value, cached_segments.value, h, segments, match_segments=False
        )
        rows = jnp.concatenate([cached.value, jnp.asarray(h, self.config.dtype)], axis=1)
        row_segments = jnp.concatenate([cached_segments.value, segments], axis=1)
        cached.value = rows[:, -(width - 1) :]  # [B, K-1, C]
        cached_segments.value = row_segments[:, -(width - 1) :]
        return windows

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        encoded: jax.Array,
        self_mask: jax.Array | None,
        cross_mask: jax.Array | None,
        segment_ids: jax.Array | None = None,
        deterministic: bool = True,
        decode: bool = False,
    ) -> jax.Array:
        """Applies the block.

        Args:
          x: [B, L, E] decoder states (a chunk [B, T, E] when decoding).
          encoded: [B, Lk, E] encoder output.
          self_mask: bool causal self-attention mask [B|1, 1, L, L]; None when decoding (the KV
            cache builds it).
          cross_mask: bool [B|1, 1, L, Lk] or None.
          segment_ids: int32 [B, L] decoder segment ids (0 = padding) or None. When decoding they
            are stored in the KV and conv caches (nonzero = a real token).
          deterministic: disables dropout.
          decode: use and update the KV and conv caches (``mutable=['cache']``).

        Returns:
          [B, L, E].
        """
        cfg = self.config
        embed, wide, half = cfg.embed_dim, 2 * cfg.embed_dim, cfg.embed_dim // 2
        segments = _valid(segment_ids, x.shape[0], x.shape[1])
        cache_segments = segment_ids if decode else None

        # 1. Wide self-attention + enc-dec attention, both added to the residual.
        h = self._norm("first_attention_norm")(x)
        left = self._attention(cfg.decoder_wide_heads, "wide_self_attention")(
            h, mask=self_mask, segment_ids=cache_segments, deterministic=deterministic,
            decode=decode,
        )
        right = self._attention(cfg.num_heads, "first_cross_attention")(
            h, encoded, mask=cross_mask, deterministic=deterministic
        )
        x = x + self._dropout(left, deterministic) + self._dropout(right, deterministic)

        # 2. Causal separable convolution branches.
        h = self._masked(self._norm("conv_norm")(x), segments)  # [B, L, E]
        windows = self._causal_conv_windows(
            "conv_branches", h, segments, DECODER_LEFT_CONV_WIDTH, decode
        )  # 11 windows; the k7 branch reads the last 7
        left = SeparableConv1D(
            wide, axes.EMBED, axes.MLP, activation=jax.nn.relu, kernel_init=cfg.kernel_init,
            dtype=cfg.dtype, param_dtype=cfg.param_dtype, name="conv_left",
        )(windows)  # [B, L, 2E]
        right = SeparableConv1D(
            half, axes.EMBED, axes.MLP, kernel_init=cfg.kernel_init, dtype=cfg.dtype,
            param_dtype=cfg.param_dtype, name="conv_right",
        )(windows[DECODER_LEFT_CONV_WIDTH - DECODER_RIGHT_CONV_WIDTH :])  # [B, L, E/2]
        h = self._dropout(left, deterministic) + _pad_channels(
            self._dropout(right, deterministic), wide
        )  # [B, L, 2E]
        h = self._masked(self._norm("conv_mid_norm")(h), segments)
        windows = self._causal_conv_windows(
            "final_conv", h, segments, DECODER_FINAL_CONV_WIDTH, decode
        )
        h = SeparableConv1D(
            embed, axes.MLP, axes.EMBED, kernel_init=cfg.kernel_init, dtype=cfg.dtype,
            param_dtype=cfg.param_dtype, name="conv_final",
        )(windows)  # [B, L, E]
        x = x + self._dropout(h, deterministic)

        # 3. Self-attention.
        h = self._norm("self_attention_norm")(x)
        h = self._attention(cfg.num_heads, "self_attention")(
            h, mask=self_mask, segment_ids=cache_segments, deterministic=deterministic,
            decode=decode,
        )
        x = x + self._dropout(h, deterministic)

        # 4. Enc-dec attention.
        h = self._norm("cross_attention_norm")(x)
        h = self._attention(cfg.num_heads, "cross_attention")(
            h, encoded, mask=cross_mask, deterministic=deterministic
        )
        x = x + self._dropout(h, deterministic)

        # 5. Swish feed-forward with a norm between its two layers.
        h = self._norm("mlp_norm")(x)
        h = jax.nn.swish(self._dense(4 * embed, (axes.EMBED, axes.MLP), "mlp_wi")(h))
        h = self._norm("mlp_mid_norm")(self._dropout(h, deterministic))  # [B, L, 4E]
        h = self._dense(embed, (axes.MLP, axes.EMBED), "mlp_wo")(h)
        x = x + self._dropout(h, deterministic)
        return nn.with_logical_constraint(x, (axes.BATCH, axes.LENGTH, axes.ACT_EMBED))
