r"""GPT-1 (Radford et al. 2018) pre-trained from scratch as a causal language model.

``size=base`` is the released model (/work/shared/specs/text-models.md section 1; reference
``openai/finetune-transformer-lm:train.py``): 12 post-LN layers, 768 wide, 12 heads, 3072 MLP,
512-token context, GELU, dropout 0.1, no final norm, N(0, 0.02) init. Its vocabulary is the 40478
BPE tokens plus GPT-1's three special tokens ``_start_``, ``_delimiter_``, ``_classify_``, which
are reserved here as SentencePiece user-defined symbols (so 40481 rows). ``size=tiny`` is the same
architecture at 4 layers x 256 wide with an 8192-token vocabulary, for a laptop CPU.

Everything else (data, tokenizer, evaluation and checkpoint cadence, mesh, rules, sampling) is
``gpt2.py``'s; this file changes only what GPT-1 does differently.

Optimizer and batch (``recipe=``):

* ``pretrain`` (default): the paper's pre-training, section 4.1 [P] (figures from the paper that
  no released code confirms): Adam, peak learning rate 2.5e-4, warmed up linearly from 0 over the
  first 2000 updates, then cosine-annealed to 0; a modified L2 of 0.01 (decoupled weight decay)
  on all weights but biases and gains; minibatches of 64 contiguous 512-token sequences for 100
  epochs. The paper gives no Adam betas, epsilon or clipping: these come from the reference
  ``train.py`` (0.9, 0.999, 1e-8, clip 1).
* ``finetune``: the fine-tuning settings of the reference ``train.py``: Adam with decoupled L2
  0.01 on matrices only, betas (0.9, 0.999), eps 1e-8, learning rate 6.25e-5 with
  ``warmup_linear`` (linear warm-up over 0.2% of the steps, then linear decay to 0), gradient
  clip 1, batches of 32 (8 per GPU on 4 GPUs) for 3 epochs.

The loop counts steps, not epochs: the base size's step count is the recipe's epochs of
BooksCorpus taken as 1.2B tokens [I] (985M words at ~1.2 BPE tokens each), e.g. 3.66M steps of
64 x 512 tokens for ``pretrain``. For another corpus set ``--config.train.steps`` to epochs x its
tokens / tokens per step; the ``finetune`` warm-up follows it.

The tiny size keeps the recipe's schedule shape but uses a learning rate of 1e-3 and
``gpt2.py``'s tiny batch (16 x 256 tokens, 2000 steps, 5% warm-up for ``pretrain``), which a
4-layer model needs to learn anything on a CPU.

Run::

    lmjax train --config experiments/gpt/gpt1.py:size=tiny --workdir runs/gpt1_tiny
    lmjax train --config experiments/gpt/gpt1.py:size=base --workdir runs/gpt1 \
        --config.data.source=tfds:<books corpus> --config.data.data_dir=/data/tfds

The tiny run should end far below the unigram baseline the loop logs. For scale: the 2-layer
``demo.py`` (a 2048-token vocabulary) goes from a 6.4 nats/token baseline to 4.8 in 600 steps;
per-token losses are not comparable across vocabulary sizes. The paper reports no
pre-training loss; a base run on BooksCorpus is judged by its fine-tuning results.
"""

import os

from lmjax import models
from lmjax.config import load_experiment, parse_experiment_arg
from lmjax.models.gpt import GPT1_SPECIAL_TOKENS, GPT1_VOCAB_WITH_SPECIALS

SIZES = {"tiny": "gpt1-tiny", "base": "gpt1"}
# recipe -> (epochs, global batch in 512-token sequences) of the base size.
RECIPES = {
    "pretrain": (100, 64),  # [P] section 4.1
    "finetune": (3, 32),  # [S] train.py: n_iter 3, n_batch 8 on each of 4 GPUs
}
BOOKSCORPUS_TOKENS = 1.2e9  # [I] 985M words (Zhu et al. 2015) at ~1.2 BPE tokens per word


def get_config(arg=None):
    """Returns the GPT-1 experiment; ``arg``: ``'size=<tiny|base>,recipe=<pretrain|finetune>'``."""
    arg = parse_experiment_arg(arg, size="tiny", recipe="pretrain")
    if arg.size not in SIZES:
        raise ValueError(f"gpt1.py: unknown size {arg.size!r}; choose one of {', '.join(SIZES)}.")
    if arg.recipe not in RECIPES:
        raise ValueError(
            f"gpt1.py: unknown recipe {arg.recipe!r}; choose one of {', '.join(RECIPES)}."
        )
    tiny = arg.size == "tiny"
    gpt2 = os.path.join(os.path.dirname(__file__), "gpt2.py")
    config = load_experiment(f"{gpt2}:size={'tiny' if tiny else 'small'}")

    overrides = {} if tiny else {"vocab_size": GPT1_VOCAB_WITH_SPECIALS}
    # Field by field, so that tokenizer.vocab_size keeps following model.vocab_size.
    config.model.update(models.config_dict("gpt", SIZES[arg.size], **overrides))
    config.tokenizer.user_defined_symbols = tuple(GPT1_SPECIAL_TOKENS)
    if not tiny:
        epochs, global_batch = RECIPES[arg.recipe]
        config.data.seq_len = config.model.max_len  # 512
        config.train.global_batch = global_batch
        config.train.steps = round(epochs * BOOKSCORPUS_TOKENS / (global_batch * 512))

    optimizer = config.optimizer  # gpt2.py's AdamW: no decay on vectors, gradients clipped at 1
    optimizer.b2 = 0.999
    optimizer.weight_decay = 0.01
    optimizer.end_learning_rate_fraction = 0.0
    if arg.recipe == "pretrain":
        optimizer.schedule = "warmup_cosine"
        optimizer.learning_rate = 1e-3 if tiny else 2.5e-4
        if not tiny:  # tiny keeps gpt2.py's warm-up over 5% of --config.train.steps
            optimizer.warmup_steps = 2000
    else:
        optimizer.schedule = "warmup_linear"
        optimizer.learning_rate = 1e-3 if tiny else 6.25e-5
        # train.py warms up over 0.2% of training; the reference follows --config.train.steps.
        optimizer.warmup_steps = (config.train.get_ref("steps") * 0.002).to_int()
    return config
