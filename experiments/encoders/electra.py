r"""ELECTRA (Clark et al. 2020): a small generator fills masked positions, a discriminator learns
to tell every token whether it was replaced.

One model holds both networks (``lmjax.models.electra.ElectraPretraining``), sharing the embedding
tables, so the generic train step trains them together with one optimizer. In each step the
generator's input is masked by ELECTRA's own rule (15% of the tokens, 85% [MASK] / 15% unchanged,
no random tokens), its samples (Gumbel-max, no gradient into the generator) are written into the
masked positions, and the loss is ``MLM + 50 x discriminator`` (``run_pretraining.py``); a
correctly sampled token counts as original.

Run the tiny variant on the embedded corpus (``bert.py``'s tiny shape as the discriminator, a
generator a quarter as wide)::

    lmjax train --config experiments/encoders/electra.py:size=tiny --workdir runs/electra_tiny

The generator's masked-token loss should fall steadily (held-out 5.91 at step 100 to 5.20 at
step 909 in our run). The discriminator's accuracy on the replaced tokens (``replaced_recall``)
starts at 0, the always-"original" answer, and should rise above it once the encoder reads
context; in our CPU runs (up to 2000 steps) it had not yet (recall 0.001, accuracy equal to
``1 - replaced_fraction``): the README's encoder section has the figures.

``size=small`` is ELECTRA-Small (14M) with the paper's recipe (Appendix A: Adam at 5e-4, 10k
warmup steps, linear decay, weight decay 0.01, batch 128 of 128 tokens for 1M steps);
``base`` (110M) and ``large`` (335M) use 2e-4 with batch 256 / 2048 of 512 tokens::

    lmjax train --config experiments/encoders/electra.py:size=small --workdir runs/electra_small \
        --config.data.data_dir=/data/tfds \
        --config.tokenizer.kind=wordpiece --config.tokenizer.path=/models/bert/vocab.txt

ELECTRA-Small should reach a GLUE dev score near 79.9 after fine-tuning (Table 8).
"""

import os

from lmjax import models
from lmjax.config import load_experiment, parse_experiment_arg

# size -> (preset, learning rate, global batch, sequence length, steps)
SIZES = {
    "tiny": ("tiny", None, None, None, None),
    "small": ("small", 5e-4, 128, 128, 1_000_000),
    "base": ("base", 2e-4, 256, 512, 766_000),
    "large": ("large", 2e-4, 2048, 512, 400_000),
}
TINY_FIELDS = ("vocab_size", "max_len", "num_layers", "hidden_dropout", "attention_dropout")


def get_config(arg=None):
    """Returns the ELECTRA experiment; ``arg`` is ``'size=<tiny|small|base|large>'``."""
    arg = parse_experiment_arg(arg, size="tiny")
    if arg.size not in SIZES:
        raise ValueError(
            f"electra.py: unknown size {arg.size!r}; choose one of {', '.join(SIZES)}."
        )
    preset, learning_rate, batch, seq_len, steps = SIZES[arg.size]
    tiny = arg.size == "tiny"
    here = os.path.dirname(__file__)
    bert = "bert.py:size=tiny" if tiny else "bert.py:size=base"
    config = load_experiment(os.path.join(here, bert))
    config.unlock()
    if tiny:
        overrides = {field: config.model[field] for field in TINY_FIELDS}
        overrides["generator_num_layers"] = overrides["num_layers"]  # as deep as the discriminator
        config.model = models.config_dict("electra", preset, **overrides)
    else:
        config.model = models.config_dict("electra", preset)
        config.optimizer.learning_rate = learning_rate
        config.train.global_batch = batch
        config.data.seq_len = seq_len
        config.train.steps = steps
    config.tokenizer.vocab_size = config.model.get_ref("vocab_size")
    config.objective = dict(name="electra", rate=0.15, mask_prob=0.85, discriminator_weight=50.0)
    # ELECTRA's rows (build_pretraining_dataset.py) have no sentence-level task.
    config.data.sentence_pairs = "none"
    return config.lock()
