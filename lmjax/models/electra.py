"""ELECTRA: a small MLM generator and a replaced-token-detection discriminator sharing embeddings.

Axis legend: B batch, L length, N layers, M embedding width (``embedding_size``), E discriminator
width, G generator width, H heads, D head dim, F mlp, V vocab, P positions, T token types.

References:
- Clark et al. 2020, "ELECTRA: Pre-training Text Encoders as Discriminators Rather Than
  Generators" §2 (generator + discriminator, shared embeddings §3.2, smaller generators §3.2,
  model sizes Appendix A).
- ``google-research/electra:run_pretraining.py`` (``PretrainingModel``: ``_get_masked_lm_output``,
  ``_get_fake_data``, ``_get_discriminator_output``, ``get_generator_config``) and
  ``model/modeling.py`` (``BertModel``: the ``electra/embeddings`` scope, ``embeddings_project``).
- Hugging Face ``transformers/models/electra/modeling_electra.py`` (``ElectraForPreTraining``,
  ``ElectraForMaskedLM``), whose parameter names ``lmjax.convert.hf_electra`` maps.

The model (``ElectraPretraining``, the family ``Model``)::

    e(ids) = LN(token_embed(ids) + position_embed(pos) + type_embed(types)); dropout   # [B, L, M]
    # generator, width G (embed_project only when M != G)
    g = post-LN encoder(embed_project_g(e(inputs)))                                  # [B, L, G]
    generator_logits = LN(gelu(mlm_transform(g))) @ token_embed^T + mlm_bias         # f32 [B, L, V]
    sampled = gumbel_sample(make_rng('sample'), stop_gradient(generator_logits))      # [B, L]
    discriminator_inputs = where(mlm_weights > 0, sampled, inputs)                    # [B, L]
    # discriminator, width E (embed_project only when M != E)
    h = post-LN encoder(embed_project_d(e(discriminator_inputs)))                    # [B, L, E]
    discriminator_logits = head_out(gelu(head_transform(h)))[..., 0]                 # f32 [B, L]

Shared parameters: as in the reference, the word, position and token-type tables and the embedding
LayerNorm (everything inside TF's ``electra/embeddings`` scope, with
``untied_generator_embeddings=False``) are ONE set of parameters used by both networks; each
network has its own ``embeddings_project``, encoder and head. The generator's MLM decoder is tied
to the shared word table. Hugging Face stores the two networks as two checkpoints, each with its
own copy of the embeddings (a jointly trained pair should hold the same values;
``lmjax.convert.hf_electra.embedding_mismatch`` measures it); the converter takes the
discriminator's copy.

Sampling: the generator's samples are drawn with the flax rng stream ``'sample'`` (pass
``rngs={'sample': key}``; with dropout also ``'dropout'``). The Gumbel-max sample is taken on
``stop_gradient`` logits, so no gradient flows from the discriminator's loss into the generator
(the reference samples inside ``tf.stop_gradient`` too). With ``mlm_weights=None`` nothing is
sampled and the discriminator reads ``inputs`` unchanged (no ``'sample'`` rng needed).

Call::

    model = ElectraPretraining(config)
    out = model.apply({'params': params}, inputs, token_type_ids=None, attention_mask=None,
                      mlm_weights=weights, positions=None, deterministic=True,
                      rngs={'sample': key})
    out['generator_logits']      # float32 [B, L, V]
    out['discriminator_logits']  # float32 [B, L]  (> 0: "replaced")
    out['discriminator_inputs']  # int32 [B, L]
    out['hidden']                # [B, L, E] the discriminator's encoder output

``ElectraGenerator(config)`` and ``ElectraDiscriminator(config)`` run one network alone (e.g. to
fine-tune the discriminator or to compare with HF ``ElectraForMaskedLM`` /
``ElectraForPreTraining``); alone, each owns an ``embeddings`` subtree. They return
``{'hidden', 'logits'}`` (generator: float32 [B, L, V]; discriminator: float32 [B, L]).

Parameter tree of ``ElectraPretraining`` (``scan_layers=True``; a standalone network has
``embeddings`` beside its own subtree). The shared width M always has the logical axis ``factor``
(as ALBERT's factorized table), never ``embed``: the base generator's ``embed_project`` is
[768, 256] and would otherwise name ``embed`` twice, which no sharding rule can satisfy::

    embeddings/token_embed/embedding              [V, M]        (vocab, factor)
    embeddings/position_embed/embedding           [P, M]        (position, factor)
    embeddings/type_embed/embedding               [T, M]        (type, factor)
    embeddings/embed_norm/{scale,bias}            [M]           (norm)
    generator/embed_project/{kernel [M, G], bias [G]}   (factor, embed)   -- if M != G
    generator/encoder/layers/...                  as ``lmjax.models.bert`` with E -> G
    generator/mlm_transform/{kernel [G, M], bias [M]}   (embed, factor)
    generator/mlm_norm/{scale,bias}               [M]           (norm)
    generator/mlm_bias                            [V]           (vocab)
    discriminator/embed_project/{kernel [M, E], bias [E]} (factor, embed) -- if M != E
    discriminator/encoder/layers/...              as ``lmjax.models.bert``
    discriminator/head_transform/{kernel [E, E], bias [E]} (embed, mlp)
    discriminator/head_out/{kernel [E, 1], bias [1]}       (embed, classes)

Initialisation as BERT: truncated normal ``init_std`` (0.02) for kernels and tables, zero biases.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax import axes
from lmjax.layers.dense import DenseGeneral
from lmjax.layers.embeddings import Embed, PositionEmbed, TypeEmbed
from lmjax.layers.mlp import activation_fn
from lmjax.layers.norms import LayerNorm
from lmjax.models import encoder_parts, parameters
from lmjax.objectives.replaced_token_detection import discriminator_inputs, gumbel_sample


@dataclasses.dataclass(frozen=True)
class ElectraConfig:
    """Hyper-parameters of an ELECTRA generator + discriminator pair.

    Attributes:
      vocab_size: V (BERT uncased 30522).
      max_len: P, rows of the learned position table.
      type_vocab_size: T, rows of the token-type table (0 = no table).
      embedding_size: M, width of the shared embeddings; projected to each network's width by
        its own ``embed_project`` when different (ELECTRA-small 128, base / large = E).
      num_layers: N of the discriminator.
      embed_dim: E, the discriminator's hidden_size.
      num_heads: the discriminator's heads (E / 64 in the released models).
      mlp_dim: the discriminator's intermediate_size (4E).
      generator_num_layers: the generator's depth (the reference: N × ``generator_layers`` = 1.0).
      generator_embed_dim: G, the generator's hidden_size (released: 256 for small, base, large).
      generator_num_heads: the generator's heads (released: 4).
      generator_mlp_dim: the generator's intermediate_size (released: 1024).
      activation: encoder, discriminator-head and generator-head activation ('gelu' = erf GELU;
        HF hard-codes 'gelu' in the generator head, the reference uses ``hidden_act``).
      layer_norm_eps: LayerNorm epsilon (1e-12).
      hidden_dropout: dropout on the embeddings and each sublayer output.
      attention_dropout: dropout on attention weights.
      init_std: truncated-normal std of kernels and tables (initializer_range 0.02).
      sampling_temperature: the generator's sampling temperature (the reference: 1.0).
      scan_layers: scan over layers (``encoder/layers`` [N, ...]) instead of unrolling.
      remat: rematerialisation policy of each block (see ``REMAT_POLICIES``).
      dtype: compute dtype name; logits and norms are float32 regardless.
      param_dtype: parameter storage dtype name.
    """

    vocab_size: int = 30522
    max_len: int = 512
    type_vocab_size: int = 2
    embedding_size: int = 128
    num_layers: int = 12
    embed_dim: int = 256
    num_heads: int = 4
    mlp_dim: int = 1024
    generator_num_layers: int = 12
    generator_embed_dim: int = 256
    generator_num_heads: int = 4
    generator_mlp_dim: int = 1024
    activation: str = "gelu"
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    init_std: float = 0.02
    sampling_temperature: float = 1.0
    scan_layers: bool = True
    remat: str = "none"
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self) -> None:
        sizes = ("vocab_size", "max_len", "embedding_size", "num_layers", "embed_dim", "num_heads",
                 "mlp_dim", "generator_num_layers", "generator_embed_dim", "generator_num_heads",
                 "generator_mlp_dim")
        widths = (("embed_dim", "num_heads"), ("generator_embed_dim", "generator_num_heads"))
        problems = encoder_parts.config_problems(self, sizes, widths, dropouts=False)
        if self.sampling_temperature <= 0:
            problems.append(f"sampling_temperature={self.sampling_temperature} must be > 0")
        if problems:
            raise ValueError("Invalid ElectraConfig: " + "; ".join(problems) + ".")


def generator_shape(embed_dim: int, fraction: float) -> dict[str, int]:
    """The generator fields of ``get_generator_config`` for a width ``fraction`` of ``embed_dim``.

    ``google-research/electra:run_pretraining.py``: hidden ``round(E × fraction)``, heads
    ``max(1, hidden // 64)``, intermediate ``4 × hidden``. (The released models' generators are
    256 wide, 4 heads, 1024 mlp at every size: small used fraction 1.0, base 1/3, large 1/4.)
    """
    hidden = int(round(embed_dim * fraction))
    if hidden <= 0:
        raise ValueError(f"fraction={fraction} of embed_dim={embed_dim} leaves no generator width.")
    return dict(
        generator_embed_dim=hidden,
        generator_num_heads=max(1, hidden // 64),
        generator_mlp_dim=4 * hidden,
    )


# ELECTRA README / util/training_utils.py and the HF google/electra-{size}-{generator,
# discriminator} configs: small 12 × 256 (M 128, 13.5M discriminator parameters; the paper rounds
# to 14M), base 12 × 768 (110M), large 24 × 1024 (335M); every released generator is 256 wide with
# 4 heads and mlp 1024, as deep as its discriminator, with the discriminator's embedding width.
_RELEASED_GENERATOR = dict(generator_embed_dim=256, generator_num_heads=4, generator_mlp_dim=1024)
PRESETS: dict[str, ElectraConfig] = {
    "tiny": ElectraConfig(
        vocab_size=2048, max_len=128, embedding_size=128, num_layers=2, embed_dim=128,
        num_heads=2, mlp_dim=512, generator_num_layers=2, **generator_shape(128, 0.25),
    ),
    "small": ElectraConfig(**_RELEASED_GENERATOR),
    "base": ElectraConfig(
        embedding_size=768, num_layers=12, embed_dim=768, num_heads=12, mlp_dim=3072,
        generator_num_layers=12, **_RELEASED_GENERATOR,
    ),
    "large": ElectraConfig(
        embedding_size=1024, num_layers=24, embed_dim=1024, num_heads=16, mlp_dim=4096,
        generator_num_layers=24, **_RELEASED_GENERATOR,
    ),
}


class ElectraEmbeddings(nn.Module):
    """The shared embeddings: word + position + type tables, LayerNorm and dropout, width M.

    Attributes:
      config: the ``ElectraConfig``.
    """

    config: ElectraConfig

    def setup(self) -> None:
        cfg = self.config
        w = axes.FACTOR  # M has its own logical axis (see the module docstring)
        init, dtypes = encoder_parts.truncated_normal(cfg), encoder_parts.dtypes(cfg)
        common = dict(embedding_init=init, **dtypes)
        m = cfg.embedding_size
        self.token_embed = Embed(cfg.vocab_size, m, table_axes=(axes.VOCAB, w), **common)
        self.position_embed = PositionEmbed(
            cfg.max_len, m, table_axes=(axes.POSITION, w), **common
        )
        if cfg.type_vocab_size:
            self.type_embed = TypeEmbed(
                cfg.type_vocab_size, m, table_axes=(axes.TYPE, w), **common
            )
        self.embed_norm = LayerNorm(epsilon=cfg.layer_norm_eps, **dtypes)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def __call__(
        self,
        inputs: jax.Array,
        token_type_ids: jax.Array | None,
        positions: jax.Array | None,
        deterministic: bool,
    ) -> jax.Array:
        """int [B, L] ids (types, positions default to zeros, arange) -> [B, L, M]."""
        encoder_parts.check_inputs("ELECTRA", inputs, self.config.max_len)
        if positions is None:
            positions = encoder_parts.arange_positions(inputs)
        x = self.token_embed(inputs) + self.position_embed(positions)  # [B, L, M]
        types = encoder_parts.token_types(inputs, token_type_ids, self.config.type_vocab_size)
        if types is not None:
            x = x + self.type_embed(types)
        x = self.embed_norm(x)
        return self.dropout(x, deterministic=deterministic)

    def attend(self, x: jax.Array) -> jax.Array:
        """Tied logits ``x @ token_embed^T``: [..., M] -> float32 [..., V]."""
        return self.token_embed.attend(x)


def _encode(
    cfg: ElectraConfig,
    x: jax.Array,
    attention_mask: jax.Array | None,
    deterministic: bool,
    *,
    width: int,
    heads: int,
    mlp: int,
    num_layers: int,
) -> jax.Array:
    """``embed_project`` (when M != width) and the post-LN encoder: [B, L, M] -> [B, L, width].

    Called inside a network's compact ``__call__``; the submodules are that network's.
    """
    if cfg.embedding_size != width:
        x = DenseGeneral(
            width, (axes.FACTOR, axes.EMBED), kernel_init=encoder_parts.truncated_normal(cfg),
            name="embed_project", **encoder_parts.dtypes(cfg),
        )(x)  # [B, L, width]
    x = nn.with_logical_constraint(x, (axes.BATCH, axes.LENGTH, axes.ACT_EMBED))
    mask = encoder_parts.encoder_mask(attention_mask, None, x.shape[1])
    block = encoder_parts.post_ln_block(cfg, width, heads, mlp)
    return encoder_parts.encode(cfg, block, x, mask, deterministic, num_layers)


def _embeddings(network: nn.Module) -> ElectraEmbeddings:
    """The network's ``shared_embeddings``, or its own ``embeddings`` subtree when it has none.

    Called inside the network's compact ``__call__``.
    """
    if network.shared_embeddings is not None:
        return network.shared_embeddings
    return ElectraEmbeddings(network.config, name="embeddings")


class ElectraGenerator(nn.Module):
    """The generator: a narrow post-LN encoder with a tied MLM head (HF ``ElectraForMaskedLM``).

    Attributes:
      config: the ``ElectraConfig`` (its ``generator_*`` fields give the shape).
      shared_embeddings: the ``ElectraEmbeddings`` to read (``ElectraPretraining`` passes its
        own); None = own an ``embeddings`` subtree (standalone use).
    """

    config: ElectraConfig
    shared_embeddings: ElectraEmbeddings | None = None

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        token_type_ids: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        positions: jax.Array | None = None,
        deterministic: bool = True,
    ) -> dict[str, jax.Array]:
        """Returns ``{'hidden': [B, L, G], 'logits': float32 [B, L, V]}``."""
        cfg = self.config
        embeddings = _embeddings(self)
        x = embeddings(inputs, token_type_ids, positions, deterministic)  # [B, L, M]
        x = _encode(
            cfg, x, attention_mask, deterministic, width=cfg.generator_embed_dim,
            heads=cfg.generator_num_heads, mlp=cfg.generator_mlp_dim,
            num_layers=cfg.generator_num_layers,
        )  # [B, L, G]
        logits = encoder_parts.mlm_logits(
            self, cfg, x, embeddings.attend, cfg.embedding_size, (axes.EMBED, axes.FACTOR)
        )  # f32 [B, L, V], the transform G -> M
        return {"hidden": x, "logits": logits}


class ElectraDiscriminator(nn.Module):
    """The discriminator: a post-LN encoder with a per-token "replaced?" head
    (HF ``ElectraForPreTraining``).

    Attributes:
      config: the ``ElectraConfig`` (``num_layers``, ``embed_dim``, ``num_heads``, ``mlp_dim``).
      shared_embeddings: as ``ElectraGenerator``'s.
    """

    config: ElectraConfig
    shared_embeddings: ElectraEmbeddings | None = None

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        token_type_ids: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        positions: jax.Array | None = None,
        deterministic: bool = True,
    ) -> dict[str, jax.Array]:
        """Returns ``{'hidden': [B, L, E], 'logits': float32 [B, L]}`` (logit > 0: replaced)."""
        cfg = self.config
        embeddings = _embeddings(self)
        x = embeddings(inputs, token_type_ids, positions, deterministic)  # [B, L, M]
        x = _encode(
            cfg, x, attention_mask, deterministic, width=cfg.embed_dim,
            heads=cfg.num_heads, mlp=cfg.mlp_dim, num_layers=cfg.num_layers,
        )  # [B, L, E]
        dense = dict(kernel_init=encoder_parts.truncated_normal(cfg), **encoder_parts.dtypes(cfg))
        h = DenseGeneral(cfg.embed_dim, (axes.EMBED, axes.MLP), name="head_transform", **dense)(x)
        h = activation_fn(cfg.activation)(h)  # [B, L, E]
        out = DenseGeneral(1, (axes.EMBED, axes.CLASSES), name="head_out", **dense)(h)  # [B, L, 1]
        return {"hidden": x, "logits": jnp.asarray(out[..., 0], jnp.float32)}


class ElectraPretraining(nn.Module):
    """Generator + discriminator with shared embeddings in one parameter tree (module docstring).

    Attributes:
      config: the ``ElectraConfig``.
    """

    config: ElectraConfig

    def setup(self) -> None:
        self.embeddings = ElectraEmbeddings(self.config)
        self.generator = ElectraGenerator(self.config, shared_embeddings=self.embeddings)
        self.discriminator = ElectraDiscriminator(self.config, shared_embeddings=self.embeddings)

    def __call__(
        self,
        inputs: jax.Array,
        token_type_ids: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        mlm_weights: jax.Array | None = None,
        positions: jax.Array | None = None,
        deterministic: bool = True,
    ) -> dict[str, jax.Array]:
        """Runs the generator, samples replacements, runs the discriminator.

        Args:
          inputs: int [B, L] the generator's masked inputs (``mlm.electra_masking``).
          token_type_ids: int [B, L] segment ids (default zeros).
          attention_mask: [B, L], 1 = real token, 0 = padding.
          mlm_weights: [B, L] > 0 at the predicted positions, where the generator's samples
            replace the input; None = sample nothing (the discriminator reads ``inputs``).
          positions: int [B, L] position ids (default arange).
          deterministic: disables dropout (pass ``rngs={'dropout': key}`` when False).

        Returns:
          ``{'generator_logits', 'discriminator_logits', 'discriminator_inputs', 'hidden'}``.
        """
        generator = self.generator(inputs, token_type_ids, attention_mask, positions, deterministic)
        generator_logits = generator["logits"]  # f32 [B, L, V]
        if mlm_weights is None:
            disc_inputs = inputs.astype(jnp.int32)
        else:
            sampled = gumbel_sample(
                self.make_rng("sample"), generator_logits,
                temperature=self.config.sampling_temperature,
            )  # int32 [B, L], from stop_gradient logits
            disc_inputs = discriminator_inputs(inputs.astype(jnp.int32), sampled, mlm_weights)
        discriminator = self.discriminator(
            disc_inputs, token_type_ids, attention_mask, positions, deterministic
        )
        return {
            "generator_logits": generator_logits,
            "discriminator_logits": discriminator["logits"],
            "discriminator_inputs": disc_inputs,
            "hidden": discriminator["hidden"],
        }


Config = ElectraConfig  # the family protocol of lmjax.models: Config, PRESETS, Model
Model = ElectraPretraining


def param_shapes(config: ElectraConfig) -> Any:
    """The ``ElectraPretraining`` parameter tree as ``jax.ShapeDtypeStruct`` leaves (eval_shape)."""
    return parameters.abstract_params(ElectraPretraining(config))


def count_params(config: ElectraConfig) -> int:
    """Parameters of generator + discriminator + the shared embeddings (counted once)."""
    return parameters.param_count(param_shapes(config))


def discriminator_param_shapes(config: ElectraConfig) -> Any:
    """The standalone ``ElectraDiscriminator``'s parameter tree (embeddings included)."""
    return parameters.abstract_params(ElectraDiscriminator(config))


def count_discriminator_params(config: ElectraConfig) -> int:
    """Parameters of the discriminator alone, embeddings included (the published model sizes:
    ELECTRA-small 13.5M, base 110M, large 335M)."""
    return parameters.param_count(discriminator_param_shapes(config))


def generator_param_shapes(config: ElectraConfig) -> Any:
    """The standalone ``ElectraGenerator``'s parameter tree (embeddings included)."""
    return parameters.abstract_params(ElectraGenerator(config))


def count_generator_params(config: ElectraConfig) -> int:
    """Parameters of the generator alone, embeddings included."""
    return parameters.param_count(generator_param_shapes(config))


def split_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``ElectraPretraining`` params -> (generator, discriminator) standalone param trees.

    Each standalone tree gets the shared ``embeddings`` (the same arrays, not copies).
    """
    shared = params["embeddings"]
    return (
        {"embeddings": shared, **params["generator"]},
        {"embeddings": shared, **params["discriminator"]},
    )


def join_params(
    generator: Mapping[str, Any], discriminator: Mapping[str, Any]
) -> dict[str, Any]:
    """Standalone (generator, discriminator) params -> ``ElectraPretraining`` params.

    The shared embeddings are the discriminator's (the generator's ``embeddings`` are dropped).
    """
    return {
        "embeddings": discriminator["embeddings"],
        "generator": {k: v for k, v in generator.items() if k != "embeddings"},
        "discriminator": {k: v for k, v in discriminator.items() if k != "embeddings"},
    }
