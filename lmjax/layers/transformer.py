"""Transformer blocks and stacks: pre/post-LN, scan over layers, remat, shared layers, per-layer
attention windows.

Axis legend: B batch, L length, E embed, N layers, G layer groups.

``TransformerBlock`` is one self-attention + MLP layer (optionally with cross-attention between
them, for encoder-decoder decoders) in one of two norm placements:

- ``'post'`` (Vaswani et al., 2017; GPT-1 ``openai/finetune-transformer-lm:train.py`` ``block``;
  BERT): ``x = norm(x + drop(attn(x)))``, then ``x = norm(x + drop(mlp(x)))``.
- ``'pre'`` (GPT-2 ``openai/gpt-2:src/model.py`` ``block``; T5): ``x = x + drop(attn(norm(x)))``,
  then ``x = x + drop(mlp(norm(x)))``; the model adds a final norm after the stack.

Parameter names inside a block: ``attention_norm``, ``attention``, (``cross_attention_norm``,
``cross_attention``,) ``mlp_norm``, ``mlp``; the norm named for a sublayer is the one applied
before it (pre) or after its residual sum (post).

``TransformerStack`` applies ``num_layers`` blocks and can

(a) scan over layers with ``nn.scan``: one compiled block, parameters stacked under ``layers``
    with a leading ``'layers'`` logical axis [N, ...]; unscanned parameters are ``layers_0`` ...
    ``layers_{N-1}`` (``stack_layer_params`` / ``unstack_layer_params`` convert between the two);
(b) rematerialise each block (``remat`` in ``REMAT_POLICIES``);
(c) share parameters across depth in ``num_groups`` groups, layer ``i`` using group
    ``floor(i * G / N)`` (ALBERT, ``google-research/albert:modeling.py`` ``transformer_model``:
    ``group_idx = int(layer_idx / num_hidden_layers * num_hidden_groups)``, computed here in exact
    integer arithmetic); shared parameters are always ``layers_{g}`` [no layer axis], and with
    ``scan=True`` the repeats of each group are scanned with the parameters broadcast;
(d) take a per-layer local-attention ``windows`` tuple (0 = dense), e.g. GPT-3's alternating
    dense / locally banded layers (Brown et al., 2020, §2.1); under scan the windows travel as a
    scanned int32 array, so mixed patterns compile to one block;
(e) return per-layer outputs (``per_layer_outputs=True``; off by default, no parameter changes):
    the stack then returns ``(x, {'hidden_states': [N, B, L, E], 'attention_scores':
    float32 [N, B, H, L, L]})``, layer ``i``'s output and its self-attention's pre-softmax,
    unmasked scores (see ``lmjax.layers.attention.attention_scores``), stacked in layer order
    (scan outputs under ``scan=True``). Distillation losses read them (TinyBERT, Jiao et al.,
    2020, §3.1; DistilBERT's hidden-state cosine, Sanh et al., 2019, §3).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax import axes
from lmjax.layers.attention import MultiHeadAttention
from lmjax.layers.dense import Initializer, default_kernel_init
from lmjax.layers.mlp import MLP, activation_fn
from lmjax.layers.norms import NORMS, make_norm

NORM_PLACEMENTS = ("pre", "post")
# 'full' saves nothing (recompute the whole block); the others save matmul outputs.
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
_ACTIVATION_AXES = (axes.BATCH, axes.LENGTH, axes.ACT_EMBED)


@dataclasses.dataclass(frozen=True)
class BlockConfig:
    """Hyper-parameters of one transformer block.

    Attributes:
      num_heads: H.
      head_dim: D.
      mlp_dim: F.
      activation: MLP activation (see :mod:`lmjax.layers.mlp`).
      norm_placement: 'pre' or 'post'.
      norm_kind: 'layer' (LayerNorm) or 'rms' (RMSNorm).
      norm_eps: the norms' epsilon.
      use_bias: biases on attention and MLP projections.
      attention_dropout: dropout on attention weights.
      residual_dropout: dropout on each sublayer's output before the residual sum.
      mlp_dropout: dropout on the MLP hidden activations.
      logit_scale: attention logit scale (None = 1/sqrt(D)).
      cross_attention: add a cross-attention sublayer (encoder-decoder decoders).
      kernel_init: initialiser of q/k/v and MLP input kernels.
      out_kernel_init: initialiser of the attention out and MLP output kernels.
      bias_init: initialiser of biases.
      dtype: compute dtype.
      param_dtype: storage dtype.
      query_kernel_init: initialiser of the attention query kernels (default ``kernel_init``).
    """

    num_heads: int
    head_dim: int
    mlp_dim: int
    activation: str = "gelu"
    norm_placement: str = "pre"
    norm_kind: str = "layer"
    norm_eps: float = 1e-5
    use_bias: bool = True
    attention_dropout: float = 0.0
    residual_dropout: float = 0.0
    mlp_dropout: float = 0.0
    logit_scale: float | None = None
    cross_attention: bool = False
    kernel_init: Initializer = default_kernel_init
    out_kernel_init: Initializer = default_kernel_init
    bias_init: Initializer = nn.initializers.zeros_init()
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    query_kernel_init: Initializer | None = None

    def __post_init__(self) -> None:
        if self.norm_placement not in NORM_PLACEMENTS:
            raise ValueError(
                f"norm_placement={self.norm_placement!r}; choose one of {NORM_PLACEMENTS}."
            )
        if self.norm_kind not in NORMS:
            raise ValueError(f"norm_kind={self.norm_kind!r}; choose one of {sorted(NORMS)}.")
        activation_fn(self.activation)  # raises on an unknown name


class TransformerBlock(nn.Module):
    """One transformer layer (see the module docstring for the two norm placements).

    Attributes:
      config: the block's hyper-parameters.
      returns_carry: return ``(x, None)`` instead of ``x`` (the form ``nn.scan`` needs).
      per_layer_outputs: also return ``{'hidden_states': x, 'attention_scores': [B, H, L, L]}``
        (the self-attention's pre-softmax scores): ``(x, outputs)`` in place of ``x`` and of
        ``(x, None)``.
    """

    config: BlockConfig
    returns_carry: bool = False
    per_layer_outputs: bool = False

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array | None = None,
        bias: jax.Array | None = None,
        window: int | jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        encoded: jax.Array | None = None,
        encoder_mask: jax.Array | None = None,
        deterministic: bool = True,
        decode: bool = False,
    ) -> jax.Array | tuple[jax.Array, None]:
        """Applies the layer.

        Args:
          x: [B, L, E] the residual stream.
          mask: bool [B|1, 1, L, L] self-attention mask (None in decode mode: the cache masks).
          bias: float additive attention bias broadcastable to [B, H, L, L] (T5).
          window: local band width for self-attention (None/0 = dense); may be traced.
          segment_ids: decode only: [B, L] key validity stored in the KV cache.
          encoded: [B, Lk, E] encoder output for cross-attention.
          encoder_mask: bool [B, 1, L, Lk] cross-attention mask.
          deterministic: disables dropout.
          decode: use the KV cache.

        Returns:
          [B, L, E] (or ``(x, None)`` when ``returns_carry``; ``(x, outputs)`` when
          ``per_layer_outputs``).
        """
        cfg = self.config
        norm = lambda name: make_norm(  # noqa: E731
            cfg.norm_kind, cfg.norm_eps, cfg.dtype, cfg.param_dtype, name
        )
        attention = lambda name, **extra: MultiHeadAttention(  # noqa: E731
            num_heads=cfg.num_heads,
            head_dim=cfg.head_dim,
            use_bias=cfg.use_bias,
            dropout_rate=cfg.attention_dropout,
            logit_scale=cfg.logit_scale,
            kernel_init=cfg.kernel_init,
            out_kernel_init=cfg.out_kernel_init,
            bias_init=cfg.bias_init,
            dtype=cfg.dtype,
            param_dtype=cfg.param_dtype,
            query_kernel_init=cfg.query_kernel_init,
            name=name,
            **extra,
        )
        dropout = lambda h: nn.Dropout(cfg.residual_dropout)(  # noqa: E731
            h, deterministic=deterministic
        )
        pre = cfg.norm_placement == "pre"

        def sublayer(x, norm_name, fn):
            if pre:
                return x + dropout(fn(norm(norm_name)(x)))
            return norm(norm_name)(x + dropout(fn(x)))

        scores = []  # the self-attention's pre-softmax scores, when per_layer_outputs

        def self_attention(h):
            extra = dict(return_scores=True) if self.per_layer_outputs else {}
            out = attention("attention", **extra)(
                h,
                mask=mask,
                bias=bias,
                window=window,
                segment_ids=segment_ids,
                deterministic=deterministic,
                decode=decode,
            )
            if self.per_layer_outputs:
                out, layer_scores = out  # [B, L, E], float32 [B, H, L, L]
                scores.append(layer_scores)
            return out

        x = nn.with_logical_constraint(jnp.asarray(x, cfg.dtype), _ACTIVATION_AXES)
        x = sublayer(x, "attention_norm", self_attention)
        if cfg.cross_attention:
            if encoded is None:
                raise ValueError("This block has cross_attention=True; pass `encoded`.")
            x = sublayer(
                x,
                "cross_attention_norm",
                lambda h: attention("cross_attention")(
                    h, encoded, mask=encoder_mask, deterministic=deterministic
                ),
            )
        mlp = MLP(
            hidden_dim=cfg.mlp_dim,
            activation=cfg.activation,
            use_bias=cfg.use_bias,
            dropout_rate=cfg.mlp_dropout,
            kernel_init=cfg.kernel_init,
            out_kernel_init=cfg.out_kernel_init,
            bias_init=cfg.bias_init,
            dtype=cfg.dtype,
            param_dtype=cfg.param_dtype,
            name="mlp",
        )
        x = sublayer(x, "mlp_norm", lambda h: mlp(h, deterministic=deterministic))
        x = nn.with_logical_constraint(x, _ACTIVATION_AXES)
        if self.per_layer_outputs:
            return x, {"hidden_states": x, "attention_scores": scores[0]}
        return (x, None) if self.returns_carry else x


# Positions of the static arguments of TransformerBlock.__call__, counting `self` as 0.
_STATIC_ARGNUMS = (8, 9)
_SCANNED_COLLECTIONS = {"params": 0, "cache": 0, "intermediates": 0}


def group_of_layer(layer: int, num_layers: int, num_groups: int) -> int:
    """ALBERT's group of layer ``layer``: ``floor(layer * num_groups / num_layers)``."""
    return layer * num_groups // num_layers


class TransformerStack(nn.Module):
    """``num_layers`` transformer blocks (see the module docstring).

    Attributes:
      config: hyper-parameters shared by every block.
      num_layers: N.
      num_groups: G parameter groups shared across depth (0 = no sharing, every layer its own).
      scan: scan over layers with ``nn.scan``.
      remat: a key of ``REMAT_POLICIES``.
      windows: per-layer local window (0 = dense), length N; None = all dense.
      per_layer_outputs: return ``(x, {'hidden_states' [N, B, L, E], 'attention_scores'
        float32 [N, B, H, L, L]})`` instead of ``x`` (see the module docstring, (e)).
    """

    config: BlockConfig
    num_layers: int
    num_groups: int = 0
    scan: bool = False
    remat: str = "none"
    windows: tuple[int, ...] | None = None
    per_layer_outputs: bool = False

    def _check(self) -> None:
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat={self.remat!r}; choose one of {sorted(REMAT_POLICIES)}.")
        if self.windows is not None and len(self.windows) != self.num_layers:
            raise ValueError(
                f"windows has {len(self.windows)} entries for {self.num_layers} layers; "
                "give one window per layer (0 = dense)."
            )
        if not 0 <= self.num_groups <= self.num_layers:
            raise ValueError(
                f"num_groups={self.num_groups} must be in [0, num_layers={self.num_layers}] "
                "(0 = no sharing)."
            )

    def _block_class(self) -> type[TransformerBlock]:
        if self.remat == "none":
            return TransformerBlock
        return nn.remat(
            TransformerBlock,
            policy=REMAT_POLICIES[self.remat],
            prevent_cse=not self.scan,
            static_argnums=_STATIC_ARGNUMS,
        )

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array | None = None,
        bias: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        encoded: jax.Array | None = None,
        encoder_mask: jax.Array | None = None,
        deterministic: bool = True,
        decode: bool = False,
    ) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
        """Applies the stack to ``x`` [B, L, E]; the arguments are those of ``TransformerBlock``.

        Returns:
          [B, L, E]; with ``per_layer_outputs`` the pair ``(x, outputs)``, ``outputs`` holding
          ``'hidden_states'`` [N, B, L, E] and ``'attention_scores'`` float32 [N, B, H, L, L].
        """
        self._check()
        windows = self.windows or (0,) * self.num_layers
        sharing = 0 < self.num_groups < self.num_layers
        if sharing and decode:
            raise ValueError(
                "decode=True is not supported with shared layers (num_groups < num_layers): "
                "repeated calls of one shared block would share one KV cache."
            )
        block_class = self._block_class()
        args = (mask, bias)
        rest = (segment_ids, encoded, encoder_mask, deterministic, decode)
        if self.per_layer_outputs:
            return self._with_per_layer_outputs(block_class, x, windows, args, rest, sharing)
        if not sharing and not self.scan:
            for i in range(self.num_layers):
                x = block_class(self.config, name=f"layers_{i}")(x, *args, windows[i], *rest)
            return x
        if not sharing:
            return self._scan(block_class, x, windows, args, rest, "layers", share=False)
        groups = [
            [
                i
                for i in range(self.num_layers)
                if group_of_layer(i, self.num_layers, self.num_groups) == g
            ]
            for g in range(self.num_groups)
        ]
        for g, layers in enumerate(groups):
            group_windows = tuple(windows[i] for i in layers)
            if self.scan:
                x = self._scan(block_class, x, group_windows, args, rest, f"layers_{g}", share=True)
            else:
                block = block_class(self.config, name=f"layers_{g}")
                for window in group_windows:
                    x = block(x, *args, window, *rest)
        return x

    def _with_per_layer_outputs(
        self,
        block_class: type[TransformerBlock],
        x: jax.Array,
        windows: tuple[int, ...],
        args: tuple[Any, ...],
        rest: tuple[Any, ...],
        sharing: bool,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The ``per_layer_outputs`` path of ``__call__``: same blocks and parameter names, each
        also returning its output and attention scores, stacked [N, ...] in layer order."""
        if self.scan:
            if not sharing:
                return self._scan(block_class, x, windows, args, rest, "layers", share=False)
            pieces = []  # per group [N_g, ...]; groups are contiguous runs of layers
            for g in range(self.num_groups):
                group_windows = tuple(
                    windows[i]
                    for i in range(self.num_layers)
                    if group_of_layer(i, self.num_layers, self.num_groups) == g
                )
                x, outputs = self._scan(
                    block_class, x, group_windows, args, rest, f"layers_{g}", share=True
                )
                pieces.append(outputs)
            return x, jax.tree_util.tree_map(lambda *p: jnp.concatenate(p), *pieces)
        per_layer = []
        blocks: dict[str, TransformerBlock] = {}
        for i in range(self.num_layers):
            name = (
                f"layers_{group_of_layer(i, self.num_layers, self.num_groups)}"
                if sharing
                else f"layers_{i}"
            )
            if name not in blocks:
                blocks[name] = block_class(self.config, per_layer_outputs=True, name=name)
            x, outputs = blocks[name](x, *args, windows[i], *rest)
            per_layer.append(outputs)
        return x, jax.tree_util.tree_map(lambda *p: jnp.stack(p), *per_layer)

    def _scan(
        self,
        block_class: type[TransformerBlock],
        x: jax.Array,
        windows: tuple[int, ...],
        args: tuple[Any, ...],
        rest: tuple[Any, ...],
        name: str,
        share: bool,
    ) -> jax.Array:
        """Scans ``len(windows)`` applications of one block over ``x``.

        With ``share=False`` each step has its own parameters (stacked on a leading 'layers'
        axis); with ``share=True`` one set of parameters is broadcast to every step.
        """
        if len(set(windows)) == 1:
            window_axis, window_arg = nn.broadcast, windows[0]
        else:
            window_axis, window_arg = 0, jnp.asarray(windows, jnp.int32)  # [N]
        in_axes = (nn.broadcast, nn.broadcast, window_axis) + (nn.broadcast,) * len(rest)
        if share:
            scan_kwargs: Mapping[str, Any] = dict(
                variable_broadcast="params",
                variable_axes={"cache": 0, "intermediates": 0},
                split_rngs={"params": False, "dropout": True},
            )
        else:
            scan_kwargs = dict(
                variable_axes=_SCANNED_COLLECTIONS,
                split_rngs={"params": True, "dropout": True},
                metadata_params={nn.PARTITION_NAME: axes.LAYERS},
            )
        scanned = nn.scan(block_class, in_axes=in_axes, length=len(windows), **scan_kwargs)
        if self.per_layer_outputs:
            # The blocks' (x, outputs) pairs are (carry, scan output): outputs stack to [N, ...].
            return scanned(self.config, per_layer_outputs=True, name=name)(
                x, *args, window_arg, *rest
            )
        x, _ = scanned(self.config, returns_carry=True, name=name)(x, *args, window_arg, *rest)
        return x


def stack_layer_params(params: Mapping[str, Any], num_layers: int) -> dict[str, Any]:
    """Unscanned -> scanned layout: ``layers_0 .. layers_{N-1}`` become ``layers`` [N, ...].

    Works on one stack's parameter dict (e.g. ``params['decoder']``); other keys pass through.
    Plain arrays only (unbox ``nn.LogicallyPartitioned`` leaves first with ``nn.unbox``).
    """
    names = [f"layers_{i}" for i in range(num_layers)]
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"stack_layer_params: {missing} not in the parameters {sorted(params)}.")
    out = {k: v for k, v in params.items() if k not in names}
    out["layers"] = jax.tree_util.tree_map(
        lambda *leaves: jnp.stack(leaves), *(params[n] for n in names)
    )
    return out


def unstack_layer_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Scanned -> unscanned layout: ``layers`` [N, ...] becomes ``layers_0 .. layers_{N-1}``."""
    if "layers" not in params:
        raise KeyError(f"unstack_layer_params: no 'layers' in the parameters {sorted(params)}.")
    stacked = params["layers"]
    num_layers = jax.tree_util.tree_leaves(stacked)[0].shape[0]
    out = {k: v for k, v in params.items() if k != "layers"}
    for i in range(num_layers):
        out[f"layers_{i}"] = jax.tree_util.tree_map(lambda leaf, i=i: leaf[i], stacked)
    return out
