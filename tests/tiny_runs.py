"""Tiny pre-training runs that the fine-tuning tests start from (2 steps on the tiny corpus)."""

from lmjax.config import apply_overrides, load_experiment, validate
from lmjax.train import loop

# 2 layers, 32-token rows, a 384-piece vocabulary, 2 steps of 8 rows, no eval or checkpoints
# but the last ('{corpus}' is the tiny_corpus fixture's directory).
TINY_PRETRAIN = (
    "--config.model.num_layers=2",
    "--config.data.source=text:{corpus}/{{split}}/*.txt",
    "--config.data.seq_len=32",
    "--config.model.vocab_size=384",
    "--config.train.steps=2",
    "--config.train.global_batch=8",
    "--config.train.eval_every=0",
    "--config.train.eval_batches=1",
    "--config.train.log_every=1",
    "--config.train.checkpoint_every=0",
)
# Narrows a GPT experiment's model to the tiny rows above.
TINY_GPT_SHRINK = (
    "--config.model.max_len=32",
    "--config.model.embed_dim=64",
    "--config.model.mlp_dim=128",
    "--config.model.num_heads=2",
)


def pretrained_tiny_run(workdir, tiny_corpus, experiment, *extra):
    """Trains ``experiment`` with ``TINY_PRETRAIN`` (+ ``extra``) into ``workdir``; returns it."""
    config = load_experiment(experiment)
    apply_overrides(config, [o.format(corpus=tiny_corpus) for o in TINY_PRETRAIN] + list(extra))
    loop.train(validate(config), str(workdir))
    return str(workdir)
