"""Logical axis names, defined once, and the default rule table that maps them onto a mesh.

Every parameter in lmjax carries logical axis names (``nn.with_logical_partitioning``) and
activations are constrained at block boundaries (``nn.with_logical_constraint``). An experiment maps
the logical names onto mesh axes with a rule table, e.g.::

    config.mesh = [('data', -1), ('fsdp', 1), ('tensor', 1)]
    config.rules = [('batch', ('data', 'fsdp')), ('embed', 'fsdp'), ('mlp', 'tensor'), ...]

Axis legend used in shape comments across lmjax:
    B batch, L length, H heads, D head dim, E embed, F mlp, V vocab, P max positions, N layers.
"""

from __future__ import annotations

# --- Parameter axes -------------------------------------------------------------------------
VOCAB = "vocab"  # V: token-embedding rows / output logits
EMBED = "embed"  # E: the residual-stream width
MLP = "mlp"  # F: the feed-forward hidden width
HEADS = "heads"  # H: attention heads
KV = "kv"  # D: the per-head width
POSITION = "position"  # P: rows of a learned position table
LAYERS = "layers"  # N: the stacked-layer axis of a scanned stack
NORM = "norm"  # the width of a norm's scale / bias (never sharded)
TYPE = "type"  # rows of a segment / token-type table (never sharded)
FACTOR = "factor"  # the small width of a factorized embedding (ALBERT's E)
CLASSES = "classes"  # outputs of a small classification head (BERT NSP; never sharded)

# --- Activation axes ------------------------------------------------------------------------
BATCH = "batch"
LENGTH = "length"
ACT_EMBED = "activation_embed"
ACT_MLP = "activation_mlp"
ACT_HEADS = "activation_heads"
ACT_KV = "activation_kv"
ACT_VOCAB = "activation_vocab"

ALL = (
    VOCAB, EMBED, MLP, HEADS, KV, POSITION, LAYERS, NORM, TYPE, FACTOR, CLASSES,
    BATCH, LENGTH, ACT_EMBED, ACT_MLP, ACT_HEADS, ACT_KV, ACT_VOCAB,
)

# The default table for a ('data', 'fsdp', 'tensor') mesh: data parallelism over the batch,
# FSDP shards parameters along their embed axis, tensor parallelism splits heads / mlp / vocab.
DEFAULT_MESH = (("data", -1), ("fsdp", 1), ("tensor", 1))
DEFAULT_RULES = (
    (BATCH, ("data", "fsdp")),
    (LENGTH, None),
    (VOCAB, "tensor"),
    (EMBED, "fsdp"),
    (MLP, "tensor"),
    (HEADS, "tensor"),
    (KV, None),
    (POSITION, None),
    (LAYERS, None),
    (NORM, None),
    (TYPE, None),
    (FACTOR, None),
    (CLASSES, None),
    (ACT_EMBED, None),
    (ACT_MLP, "tensor"),
    (ACT_HEADS, "tensor"),
    (ACT_KV, None),
    (ACT_VOCAB, "tensor"),
)
