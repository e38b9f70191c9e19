r"""GPT-3 (Brown et al. 2020) trained from scratch as a causal language model.

Sizes (``size=``) follow the paper's Table 2.1 (/work/shared/specs/text-models.md section 12):
``small`` 125M, ``medium`` 350M, ``large`` 760M, ``xl`` 1.3B, ``2.7b``, ``6.7b``, ``13b``, ``175b``,
all with a 2048-token context and GPT-2's 50257-token vocabulary; ``tiny`` (4 layers x 256,
8192 tokens, 256 context) runs on a laptop CPU. The model presets explain the two rows of the
table made self-consistent (XL's heads, 13B's width).

Attention (``sparse=``): GPT-3 alternates dense layers with "locally banded sparse" layers
(section 2.1) [P]; ``sparse=true`` (default) makes every odd layer attend only to the
``model.local_window`` most recent tokens (256 [I]: the band width is unpublished), and
``sparse=false`` makes every layer dense, as MaxText's GPT-3 does.

Optimizer and batch, per the paper (section 2.3 and appendix B) [P]: Adam with betas (0.9, 0.95),
eps 1e-8, weight decay 0.1, gradient clip 1.0, linear warmup over 375M tokens, cosine decay to 10%
of the peak; the peak learning rate and batch (0.5M to 3.2M tokens) per size from Table 2.1, over a
300B-token budget. Not reproduced: the batch-size ramp over the first 4-12B tokens, and the
cosine ending at 260B tokens (here the decay spans the whole run). ``gpt2.py`` already trains with
these optimizer settings, so this file takes its config (data, tokenizer, optimizer, cadence, mesh,
rules, sampling) and changes only the model, the context, the batch, the step count, the warm-up
and the peak learning rate.

Run::

    lmjax train --config experiments/gpt/gpt3.py:size=tiny --workdir runs/gpt3_tiny
    lmjax train --config experiments/gpt/gpt3.py:size=small,sparse=false --workdir runs/gpt3 \
        --config.data.source=tfds:<corpus> --config.data.data_dir=/data/tfds \
        --config.tokenizer.kind=hf_json --config.tokenizer.path=/models/gpt2/tokenizer.json

The tiny run should end far below the unigram baseline the loop logs. For scale: the 2-layer
``demo.py`` (a 2048-token vocabulary) goes from a 6.4 nats/token baseline to 4.8 in 600 steps;
per-token losses are not comparable across vocabulary sizes. At full scale,
compare the validation curve with the paper's Figure 3.1 (on its own data mix). Sizes from
``xl`` up need the parameters sharded, e.g.
``--config.mesh="[('data', -1), ('fsdp', 8), ('tensor', 1)]"``, and ``--config.model.remat=full``.
"""

import os

from lmjax import models
from lmjax.config import load_experiment, parse_experiment_arg

# size -> (model preset, peak learning rate, global batch in 2048-token sequences), Table 2.1.
# The table's batches of 0.5M / 1M / 2M / 3.2M tokens are 256 / 512 / 1024 / 1536 sequences.
SIZES = {
    "tiny": ("gpt3-tiny", 1e-3, 16),
    "small": ("gpt3-small", 6.0e-4, 256),
    "medium": ("gpt3-medium", 3.0e-4, 256),
    "large": ("gpt3-large", 2.5e-4, 256),
    "xl": ("gpt3-xl", 2.0e-4, 512),
    "2.7b": ("gpt3-2.7b", 1.6e-4, 512),
    "6.7b": ("gpt3-6.7b", 1.2e-4, 1024),
    "13b": ("gpt3-13b", 1.0e-4, 1024),
    "175b": ("gpt3-175b", 0.6e-4, 1536),
}
TOKEN_BUDGET = 300e9
WARMUP_TOKENS = 375e6


def get_config(arg=None):
    """Returns the GPT-3 experiment; ``arg`` is ``'size=<tiny|small|...|175b>,sparse=<bool>'``."""
    arg = parse_experiment_arg(arg, size="tiny", sparse=True)
    if arg.size not in SIZES:
        raise ValueError(f"gpt3.py: unknown size {arg.size!r}; choose one of {', '.join(SIZES)}.")
    preset, learning_rate, global_batch = SIZES[arg.size]
    tiny = arg.size == "tiny"
    # tiny: gpt2.py's tiny run (16 x 256 tokens, 2000 steps, 5% warm-up) with GPT-3's layers.
    gpt2 = os.path.join(os.path.dirname(__file__), "gpt2.py")
    config = load_experiment(f"{gpt2}:size={'tiny' if tiny else 'small'}")
    # Field by field, so that tokenizer.vocab_size keeps following model.vocab_size.
    config.model.update(
        models.config_dict(
            "gpt", preset, attention_pattern="alternating_local" if arg.sparse else "dense"
        )
    )
    config.optimizer.learning_rate = learning_rate
    if not tiny:
        config.data.seq_len = config.model.max_len  # 2048
        tokens_per_step = global_batch * config.data.seq_len
        config.train.global_batch = global_batch
        config.train.steps = round(TOKEN_BUDGET / tokens_per_step)
        config.optimizer.warmup_steps = round(WARMUP_TOKENS / tokens_per_step)
    return config
