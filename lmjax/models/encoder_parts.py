"""Shared pieces of the BERT-style encoders: post-LN block, embeddings, mask, pooler and heads.

BERT / RoBERTa (``bert.py``), ALBERT, DistilBERT, TinyBERT and ELECTRA build their post-LN block
config, learned embeddings, attention mask, pooler + 2-way sentence head (NSP / SOP), tied MLM head
and config checks from these functions.

Axis legend: B batch, L length, N layers, E embed, H heads, F mlp, M MLM-transform width (E, or
the factorized width of ALBERT / ELECTRA), V vocab, P positions, T token types.

The functions that create parameters (``embed``, ``encode``, ``pooled_outputs``, ``mlm_logits``)
are called from inside the family's ``@nn.compact`` ``__call__``: the submodules and parameters
they make belong to that module and keep their names (``token_embed``, ``encoder``, ``pooler``,
``nsp`` / ``sop``, ``mlm_transform``, ``mlm_norm``, ``mlm_bias``), so converters and checkpoints
see the same parameter trees as before. Each takes the family's config, read by field name
(``vocab_size``, ``embed_dim``, ``num_heads``, ``mlp_dim``, ``activation``, ``layer_norm_eps``,
``hidden_dropout``, ``attention_dropout``, ``init_std``, ``dtype``, ``param_dtype``, ...).

References: ``google-research/bert:modeling.py`` (``transformer_model``, ``embedding_lookup``,
``embedding_postprocessor``, ``create_attention_mask_from_input_mask``, the pooler in
``BertModel``) and ``run_pretraining.py`` (``get_masked_lm_output``, ``get_next_sentence_output``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax import axes
from lmjax.layers import masks
from lmjax.layers.dense import DenseGeneral
from lmjax.layers.embeddings import Embed, PositionEmbed, TypeEmbed
from lmjax.layers.mlp import activation_fn
from lmjax.layers.norms import LayerNorm
from lmjax.layers.transformer import REMAT_POLICIES, BlockConfig, TransformerStack

DTYPES = ("float32", "bfloat16", "float16")


def config_problems(
    cfg: Any,
    sizes: tuple[str, ...],
    widths: tuple[tuple[str, str], ...] = (("embed_dim", "num_heads"),),
    dropouts: bool = True,
) -> list[str]:
    """The checks every encoder config makes, as messages (empty when all pass).

    Args:
      cfg: the family config.
      sizes: the fields that must be positive.
      widths: (width, heads) field pairs; each width must be divisible by its heads.
      dropouts: also check ``hidden_dropout`` and ``attention_dropout`` lie in [0, 1).

    Returns:
      One message per failed check: sizes, divisibility, ``type_vocab_size`` (when the config
      has one), ``remat``, ``dtype`` / ``param_dtype``, dropouts, ``activation``.
    """
    value = lambda field: getattr(cfg, field)  # noqa: E731
    problems = [f"{f}={value(f)} must be positive" for f in sizes if value(f) <= 0]
    for width, heads in widths:
        if value(heads) > 0 and value(width) % value(heads):
            problems.append(f"{width}={value(width)} is not divisible by {heads}={value(heads)}")
    if getattr(cfg, "type_vocab_size", 0) < 0:
        problems.append(f"type_vocab_size={cfg.type_vocab_size} must be >= 0")
    if cfg.remat not in REMAT_POLICIES:
        problems.append(f"remat={cfg.remat!r} must be one of {sorted(REMAT_POLICIES)}")
    for field in ("dtype", "param_dtype"):
        if value(field) not in DTYPES:
            problems.append(f"{field}={value(field)!r} must be one of {DTYPES}")
    for field in ("hidden_dropout", "attention_dropout") if dropouts else ():
        if not 0.0 <= value(field) < 1.0:
            problems.append(f"{field}={value(field)} must be in [0, 1)")
    try:
        activation_fn(cfg.activation)
    except ValueError as error:
        problems.append(str(error))
    return problems


def truncated_normal(cfg: Any) -> nn.initializers.Initializer:
    """BERT's init of every kernel and table: truncated normal with std ``cfg.init_std``."""
    return nn.initializers.truncated_normal(stddev=cfg.init_std)


def dtypes(cfg: Any) -> dict[str, Any]:
    """``{'dtype', 'param_dtype'}`` of ``cfg``, the keyword arguments every layer takes."""
    return dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))


def post_ln_block(
    cfg: Any, width: int | None = None, heads: int | None = None, mlp: int | None = None
) -> BlockConfig:
    """BERT's post-LN block: LayerNorm after each residual sum, biases, GELU MLP.

    Args:
      cfg: the family config.
      width: the block's width E (default ``cfg.embed_dim``).
      heads: its heads H (default ``cfg.num_heads``); the head width is ``width // heads``.
      mlp: its MLP width F (default ``cfg.mlp_dim``).

    Returns:
      The ``BlockConfig`` of each layer of the stack.
    """
    width = cfg.embed_dim if width is None else width
    heads = cfg.num_heads if heads is None else heads
    return BlockConfig(
        num_heads=heads,
        head_dim=width // heads,
        mlp_dim=cfg.mlp_dim if mlp is None else mlp,
        activation=cfg.activation,
        norm_placement="post",
        norm_kind="layer",
        norm_eps=cfg.layer_norm_eps,
        use_bias=True,
        attention_dropout=cfg.attention_dropout,
        residual_dropout=cfg.hidden_dropout,
        mlp_dropout=0.0,
        kernel_init=truncated_normal(cfg),
        out_kernel_init=truncated_normal(cfg),
        bias_init=nn.initializers.zeros_init(),
        **dtypes(cfg),
    )


def check_inputs(family: str, inputs: jax.Array, max_len: int) -> None:
    """Raises ValueError unless ``inputs`` is [B, L] with L <= ``max_len``."""
    if inputs.ndim != 2:
        raise ValueError(f"{family} expects inputs [batch, length], got shape {inputs.shape}.")
    if inputs.shape[1] > max_len:
        raise ValueError(
            f"Sequence length {inputs.shape[1]} exceeds max_len={max_len}; shorten the inputs or "
            "build the model with a larger max_len."
        )


def arange_positions(inputs: jax.Array) -> jax.Array:
    """int32 [B, L] positions ``0 .. L-1`` of every row of int [B, L] ``inputs``."""
    return jnp.broadcast_to(jnp.arange(inputs.shape[1], dtype=jnp.int32), inputs.shape)


def token_types(
    inputs: jax.Array, token_type_ids: jax.Array | None, type_vocab_size: int
) -> jax.Array | None:
    """int [B, L] token types (default zeros, segment A), or None when there is no type table."""
    if not type_vocab_size:
        return None
    return jnp.zeros(inputs.shape, jnp.int32) if token_type_ids is None else token_type_ids


def encoder_mask(
    padding: jax.Array | None, segment_ids: jax.Array | None, length: int
) -> jax.Array | None:
    """The encoder's mask from a padding mask and / or packed-row segment ids.

    Args:
      padding: [B, L] 1 = real token, 0 = padding (padded keys are not attended), or None.
      segment_ids: int [B, L] document ids (0 = padding; attention stays in a segment), or None.
      length: L.

    Returns:
      bool [B, 1, L, L], both masks ANDed, or None when neither is given.
    """
    return masks.combine_masks(
        None if padding is None else masks.key_padding_mask(padding, length),
        None if segment_ids is None else masks.segment_mask(segment_ids),
    )


def embed(
    cfg: Any,
    inputs: jax.Array,
    positions: jax.Array,
    token_type_ids: jax.Array | None,
    deterministic: bool,
) -> tuple[Embed, jax.Array]:
    """BERT's embeddings: LN(token + position (+ type)), dropout (``embedding_postprocessor``).

    Creates ``token_embed``, ``position_embed``, ``type_embed`` (when ``token_type_ids`` is given)
    and ``embed_norm`` in the calling module.

    Args:
      cfg: the family config (``vocab_size``, ``max_len``, ``embed_dim``, ``type_vocab_size``).
      inputs: int [B, L] token ids.
      positions: int [B, L] position ids.
      token_type_ids: int [B, L] token types, or None for no type table.
      deterministic: disables dropout.

    Returns:
      ``(token_embed, x)``: the token table (for the tied MLM decoder) and x [B, L, E].
    """
    init, common = truncated_normal(cfg), dtypes(cfg)
    token_embed = Embed(
        cfg.vocab_size, cfg.embed_dim, embedding_init=init, name="token_embed", **common
    )
    x = token_embed(inputs)  # [B, L, E]
    x = x + PositionEmbed(
        cfg.max_len, cfg.embed_dim, embedding_init=init, name="position_embed", **common
    )(positions)
    if token_type_ids is not None:
        x = x + TypeEmbed(
            cfg.type_vocab_size, cfg.embed_dim, embedding_init=init, name="type_embed", **common
        )(token_type_ids)
    x = LayerNorm(epsilon=cfg.layer_norm_eps, name="embed_norm", **common)(x)
    x = nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)
    return token_embed, nn.with_logical_constraint(x, (axes.BATCH, axes.LENGTH, axes.ACT_EMBED))


def encode(
    cfg: Any,
    block: BlockConfig,
    x: jax.Array,
    mask: jax.Array | None,
    deterministic: bool,
    num_layers: int | None = None,
    **stack_kwargs: Any,
) -> Any:
    """Runs the ``encoder`` stack (created in the calling module) on x [B, L, E].

    Args:
      cfg: the family config (``num_layers``, ``scan_layers``, ``remat``).
      block: each layer's ``BlockConfig``.
      x: [B, L, E] embedded inputs.
      mask: bool [B, 1, L, L] or None.
      deterministic: disables dropout.
      num_layers: the depth (default ``cfg.num_layers``).
      **stack_kwargs: further ``TransformerStack`` fields (``num_groups``, ``per_layer_outputs``).

    Returns:
      [B, L, E], or ``([B, L, E], per-layer dict)`` with ``per_layer_outputs=True``.
    """
    return TransformerStack(
        block,
        num_layers=cfg.num_layers if num_layers is None else num_layers,
        scan=cfg.scan_layers,
        remat=cfg.remat,
        name="encoder",
        **stack_kwargs,
    )(x, mask, None, None, None, None, deterministic, False)


def encoder_outputs(result: Any, embedded: jax.Array, per_layer: bool) -> dict[str, jax.Array]:
    """``{'hidden', 'hidden_states'?, 'attention_scores'?}`` from ``encode``'s result.

    Args:
      result: [B, L, E], or ``([B, L, E], per-layer dict)`` when ``per_layer``.
      embedded: [B, L, E] the stack's input (``hidden_states[0]``).
      per_layer: whether ``result`` carries the per-layer outputs.

    Returns:
      ``hidden`` [B, L, E]; with ``per_layer`` also float32 ``hidden_states`` [N + 1, B, L, E]
      and ``attention_scores`` float32 [N, B, H, L, L].
    """
    outputs: dict[str, jax.Array] = {}
    if per_layer:
        result, layers = result  # [B, L, E], {[N, B, L, E], [N, B, H, L, L]}
        outputs["hidden_states"] = jnp.concatenate(
            [embedded[None], layers["hidden_states"]]
        ).astype(jnp.float32)  # [N + 1, B, L, E]
        outputs["attention_scores"] = layers["attention_scores"]  # f32 [N, B, H, L, L]
    outputs["hidden"] = result  # [B, L, E]
    return outputs


def pooled_outputs(cfg: Any, x: jax.Array, head: str | None) -> dict[str, jax.Array]:
    """The pooler (dense + tanh on the first token) and an optional 2-way sentence head.

    Creates ``pooler`` and, when ``head`` is given, ``<head>`` (e.g. ``nsp``, ``sop``) in the
    calling module.

    Args:
      cfg: the family config (``embed_dim``).
      x: [B, L, E] the encoder output.
      head: the sentence head's name, or None for none.

    Returns:
      ``{'pooled': [B, E], '<head>_logits': float32 [B, 2]?}``.
    """
    init, common = truncated_normal(cfg), dtypes(cfg)
    pooler = DenseGeneral(
        cfg.embed_dim, (axes.EMBED, axes.MLP), kernel_init=init, name="pooler", **common
    )
    pooled = jnp.tanh(pooler(x[:, 0]))  # [B, E] from the first token ([CLS] / <s>)
    outputs = {"pooled": pooled}
    if head is not None:
        logits = DenseGeneral(
            2, (axes.EMBED, axes.CLASSES), kernel_init=init, name=head, **common
        )(pooled)  # [B, 2]
        outputs[f"{head}_logits"] = jnp.asarray(logits, jnp.float32)
    return outputs


def mlm_logits(
    module: nn.Module,
    cfg: Any,
    x: jax.Array,
    attend: Callable[[jax.Array], jax.Array],
    width: int | None = None,
    kernel_axes: tuple[str, str] = (axes.EMBED, axes.MLP),
) -> jax.Array:
    """The masked-LM head: LN(act(mlm_transform(x))) through the tied decoder, + ``mlm_bias``.

    Creates ``mlm_transform``, ``mlm_norm`` and the ``mlm_bias`` parameter in ``module``.

    Args:
      module: the calling module (owner of ``mlm_bias``).
      cfg: the family config (``vocab_size``, ``embed_dim``, ``activation``).
      x: [B, L, E] the encoder output.
      attend: the tied decoder, [B, L, M] -> float32 [B, L, V] (``token_embed.attend``).
      width: M, the transform's output width (default ``cfg.embed_dim``).
      kernel_axes: the transform kernel's logical axes ((embed, factor) when M is factorized).

    Returns:
      float32 [B, L, V] logits.
    """
    common = dtypes(cfg)
    transform = DenseGeneral(
        cfg.embed_dim if width is None else width,
        kernel_axes,
        kernel_init=truncated_normal(cfg),
        name="mlm_transform",
        **common,
    )
    h = activation_fn(cfg.activation)(transform(x))  # [B, L, M]
    h = LayerNorm(epsilon=cfg.layer_norm_eps, name="mlm_norm", **common)(h)  # [B, L, M]
    mlm_bias = module.param(
        "mlm_bias",
        nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes.VOCAB,)),
        (cfg.vocab_size,),
        common["param_dtype"],
    )
    logits = attend(h) + jnp.asarray(mlm_bias, jnp.float32)  # f32 [B, L, V]
    return nn.with_logical_constraint(logits, (axes.BATCH, axes.LENGTH, axes.ACT_VOCAB))
