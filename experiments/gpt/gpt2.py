r"""GPT-2 (Radford et al. 2019) trained from scratch as a causal language model.

Sizes (``size=``), from ``openai/gpt-2`` and the Hugging Face hub configs
(/work/shared/specs/text-models.md section 2): ``small`` 124M (12 layers, 768 wide, 12 heads),
``medium`` 355M (24/1024/16), ``large`` 774M (36/1280/20), ``xl`` 1558M (48/1600/25), all with a
1024-token context and a 50257-token vocabulary; ``tiny`` (4/256/4, 8192 tokens, 256 context)
runs on a laptop CPU.

Run the tiny variant on the embedded Python-docs corpus (a SentencePiece BPE tokenizer is trained
into the workdir first)::

    lmjax train --config experiments/gpt/gpt2.py:size=tiny --workdir runs/gpt2_tiny
    lmjax generate --workdir runs/gpt2_tiny --prompt 'def read(self, size=-1)'

It should end with a held-out loss well below the unigram baseline that the loop logs. For
scale: its 2-layer cut-down ``experiments/gpt/demo.py`` (a 2048-token vocabulary) goes from a 6.4
nats/token baseline to 4.8 in 600 steps, in minutes on two CPU cores; this 4-layer, 256-wide size
costs roughly eight times as much per step, and per-token losses are not comparable across
vocabulary sizes.

A real GPT-2 run needs a WebText-like corpus prepared with TFDS and GPT-2's own tokenizer::

    lmjax train --config experiments/gpt/gpt2.py:size=small --workdir runs/gpt2_small \
        --config.data.source=tfds:<corpus> --config.data.data_dir=/data/tfds \
        --config.tokenizer.kind=hf_json --config.tokenizer.path=/models/gpt2/tokenizer.json

which, over the 300B-token budget below, should approach the roughly 2.9 nats/token that public
GPT-2-124M reproductions report on OpenWebText. GPT-2's paper publishes no optimizer settings
("the learning rate of each model was manually tuned"); the ones here are GPT-3's for the same
widths (Table 2.1: AdamW, betas (0.9, 0.95), weight decay 0.1, clip 1.0, 375M warmup tokens,
cosine to 10%) [I]. The batch is GPT-2's 512 sequences of 1024 tokens (paper section 2.3). Shard
the larger sizes with e.g. ``--config.mesh="[('data', -1), ('fsdp', 8), ('tensor', 1)]"`` and
``--config.model.remat=full``.
"""

import ml_collections

from lmjax import axes, models
from lmjax.config import parse_experiment_arg

# size -> (model preset, peak learning rate); learning rates of GPT-3 Table 2.1 for the same width.
SIZES = {
    "tiny": ("tiny", 1e-3),
    "small": ("gpt2", 6e-4),
    "medium": ("gpt2-medium", 3e-4),
    "large": ("gpt2-large", 2.5e-4),
    "xl": ("gpt2-xl", 2e-4),
}
TOKEN_BUDGET = 300e9  # GPT-3's training budget in tokens, used for the real sizes' step count
WARMUP_TOKENS = 375e6  # GPT-3's linear warmup


def get_config(arg=None):
    """Returns the GPT-2 experiment; ``arg`` is ``'size=<tiny|small|medium|large|xl>'``."""
    arg = parse_experiment_arg(arg, size="tiny")
    if arg.size not in SIZES:
        raise ValueError(f"gpt2.py: unknown size {arg.size!r}; choose one of {', '.join(SIZES)}.")
    preset, learning_rate = SIZES[arg.size]
    tiny = arg.size == "tiny"
    model = models.config_dict("gpt", preset)
    seq_len = 256 if tiny else model.max_len
    global_batch = 16 if tiny else 512
    steps = 2000 if tiny else round(TOKEN_BUDGET / (global_batch * seq_len))

    config = ml_collections.ConfigDict()
    config.model = model

    config.objective = dict(name="causal_lm")

    config.data = dict(
        # The embedded corpus; or 'tfds:<name>[/<config>]', 'text:<glob>', 'jsonl:<glob>'.
        source="python_docs",
        data_dir="",  # TFDS data_dir ('' = $LMJAX_DATA_DIR or ~/.cache/lmjax/tensorflow_datasets)
        train_split="train",
        eval_split="validation",
        seq_len=seq_len,  # tokens per packed row
        text_key="text",  # the text field of TFDS / JSONL records
        document_mask=True,  # attend only within a document of a packed row
        shuffle_seed=0,
    )

    config.tokenizer = dict(
        kind="sentencepiece",  # or 'hf_json' with path= a tokenizer.json (GPT-2's own BPE)
        path="",  # '' = train a SentencePiece model on the train split, cached in the workdir
        vocab_size=0,  # linked to model.vocab_size below
        model_type="bpe",
        byte_fallback=True,  # unseen characters become bytes, never <unk>
        character_coverage=1.0,
        user_defined_symbols=(),
    )
    config.tokenizer.vocab_size = config.model.get_ref("vocab_size")  # one override sets both

    config.optimizer = dict(
        name="adamw",
        learning_rate=learning_rate,
        b1=0.9,
        b2=0.95,
        eps=1e-8,
        weight_decay=0.1,
        weight_decay_mask="matrices",  # no decay on biases, norms and other vectors
        schedule="warmup_cosine",
        warmup_steps=round(WARMUP_TOKENS / (global_batch * seq_len)),
        end_learning_rate_fraction=0.1,
        clip_grad_norm=1.0,
    )

    config.train = dict(
        steps=steps,
        global_batch=global_batch,  # sequences per optimizer step, across all hosts
        grad_accum=1,  # micro-batches per step (global_batch must divide by it)
        seed=0,
        eval_every=200 if tiny else 2000,
        eval_batches=8 if tiny else 50,
        log_every=10 if tiny else 100,
        checkpoint_every=500 if tiny else 5000,
        keep_checkpoints=3,
    )

    if tiny:  # 5% of the run, following --config.train.steps (so short smoke runs stay valid)
        config.optimizer.warmup_steps = (config.train.get_ref("steps") * 0.05).to_int()

    config.mesh = [("data", -1), ("fsdp", 1), ("tensor", 1)]
    config.rules = [tuple(rule) for rule in axes.DEFAULT_RULES]

    config.generate = dict(
        prompt="def read(self, size=-1)\n",
        max_new_tokens=64,
        temperature=0.8,  # 0 = greedy
        top_k=40,  # 0 = off
        top_p=1.0,  # 1 = off
        num_samples=2,
    )
    return config.lock()
