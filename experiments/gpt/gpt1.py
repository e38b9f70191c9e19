r"""GPT-1 (Radford et al. 2018) trained from scratch as a causal language model.

``size=base`` is the released model (/work/shared/specs/text-models.md section 1; reference
``openai/finetune-transformer-lm:train.py``): 12 post-LN layers, 768 wide, 12 heads, 3072 MLP,
512-token context, GELU, dropout 0.1, no final norm, N(0, 0.02) init. Its vocabulary is the 40478
BPE tokens plus GPT-1's three special tokens ``_start_``, ``_delimiter_``, ``_classify_``, which
are reserved here as SentencePiece user-defined symbols (so 40481 rows). ``size=tiny`` is the same
architecture at 4 layers x 256 wide with an 8192-token vocabulary, for a laptop CPU.

Optimizer (``recipe=``):

* ``finetune`` (default): the settings of the reference code ``train.py``: Adam with decoupled
  L2 0.01 on matrices only, betas (0.9, 0.999), eps 1e-8, learning rate 6.25e-5 with
  ``warmup_linear`` (linear warmup over 0.2% of the steps, then linear decay), gradient clip 1.
* ``pretrain``: the paper's pre-training (section 4.1) [P]: Adam at 2.5e-4 warmed up linearly
  over 2000 updates then cosine-annealed to 0, L2 0.01 on non-bias/gain weights, batches of 64
  contiguous 512-token sequences.

The tiny size keeps the recipe's schedule shape but uses a learning rate of 1e-3, which a
4-layer model needs to learn anything in a few thousand steps.

Run::

    lmjax train --config experiments/gpt/gpt1.py:size=tiny --workdir runs/gpt1_tiny
    lmjax train --config experiments/gpt/gpt1.py:size=base,recipe=pretrain --workdir runs/gpt1 \
        --config.data.source=tfds:<books corpus> --config.data.data_dir=/data/tfds

The tiny run should end far below the unigram baseline the loop logs. For scale: the 2-layer
``demo.py`` (a 2048-token vocabulary) goes from a 6.4 nats/token baseline to 4.8 in 600 steps;
per-token losses are not comparable across vocabulary sizes. The paper reports no
pre-training loss; a base run on BooksCorpus is judged by its fine-tuning results.
"""

import ml_collections

from lmjax import axes, models
from lmjax.config import parse_experiment_arg
from lmjax.models.gpt import GPT1_SPECIAL_TOKENS, GPT1_VOCAB_WITH_SPECIALS

SIZES = {"tiny": "gpt1-tiny", "base": "gpt1"}
RECIPES = ("finetune", "pretrain")


def get_config(arg=None):
    """Returns the GPT-1 experiment; ``arg``: ``'size=<tiny|base>,recipe=<finetune|pretrain>'``."""
    arg = parse_experiment_arg(arg, size="tiny", recipe="finetune")
    if arg.size not in SIZES:
        raise ValueError(f"gpt1.py: unknown size {arg.size!r}; choose one of {', '.join(SIZES)}.")
    if arg.recipe not in RECIPES:
        raise ValueError(
            f"gpt1.py: unknown recipe {arg.recipe!r}; choose one of {', '.join(RECIPES)}."
        )
    tiny = arg.size == "tiny"
    overrides = {} if tiny else {"vocab_size": GPT1_VOCAB_WITH_SPECIALS}
    config = ml_collections.ConfigDict()
    config.model = models.config_dict("gpt", SIZES[arg.size], **overrides)

    config.objective = dict(name="causal_lm")

    config.data = dict(
        source="python_docs",
        data_dir="",
        train_split="train",
        eval_split="validation",
        seq_len=256 if tiny else 512,
        text_key="text",
        document_mask=True,
        shuffle_seed=0,
    )

    config.tokenizer = dict(
        kind="sentencepiece",
        path="",
        vocab_size=0,  # linked to model.vocab_size below
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        user_defined_symbols=tuple(GPT1_SPECIAL_TOKENS),  # _start_, _delimiter_, _classify_
    )
    config.tokenizer.vocab_size = config.model.get_ref("vocab_size")

    config.train = dict(
        steps=2000 if tiny else 100_000,  # [I] the paper gives epochs (100), not steps
        global_batch=16 if tiny else 64,
        grad_accum=1,
        seed=0,
        eval_every=200 if tiny else 2000,
        eval_batches=8 if tiny else 50,
        log_every=10 if tiny else 100,
        checkpoint_every=500 if tiny else 5000,
        keep_checkpoints=3,
    )

    if arg.recipe == "finetune":
        optimizer = dict(
            learning_rate=1e-3 if tiny else 6.25e-5,
            schedule="warmup_linear",
            # train.py warms up over 0.2% of training; the reference follows --config.train.steps.
            warmup_steps=(config.train.get_ref("steps") * 0.002).to_int(),
            end_learning_rate_fraction=0.0,
        )
    else:
        optimizer = dict(
            learning_rate=1e-3 if tiny else 2.5e-4,
            schedule="warmup_cosine",
            # tiny: 5% of the run, following --config.train.steps
            warmup_steps=(config.train.get_ref("steps") * 0.05).to_int() if tiny else 2000,
            end_learning_rate_fraction=0.0,
        )
    config.optimizer = dict(
        name="adamw",  # Adam with decoupled L2, applied to matrices only
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        weight_decay=0.01,
        weight_decay_mask="matrices",
        clip_grad_norm=1.0,
        **optimizer,
    )

    config.mesh = [("data", -1), ("fsdp", 1), ("tensor", 1)]
    config.rules = [tuple(rule) for rule in axes.DEFAULT_RULES]

    config.generate = dict(
        prompt="def read(self, size=-1)\n",
        max_new_tokens=64,
        temperature=0.8,
        top_k=40,
        top_p=1.0,
        num_samples=2,
    )
    return config.lock()
