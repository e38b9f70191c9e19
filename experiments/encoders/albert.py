r"""ALBERT (Lan et al. 2019): factorised embeddings, one shared layer, n-gram MLM and
sentence-order prediction.

ALBERT changes BERT in three ways (§3.1): the vocabulary embedding is 128 wide and projected up to
the hidden width, all layers share one set of parameters (``num_groups=1``), and next-sentence
prediction is replaced by sentence-order prediction (B is always A's true continuation, and half
the pairs are swapped). Its masking picks whole-word n-grams of 1-3 words with probabilities 6/11,
3/11 and 2/11 (``create_pretraining_data.py``, ``ngram=3``), within BERT's 20-per-row budget.

Run the tiny variant on the embedded corpus (``bert.py``'s tiny shape with a 64-wide vocabulary
embedding and one shared layer)::

    lmjax train --config experiments/encoders/albert.py:size=tiny --workdir runs/albert_tiny

Its MLM loss should fall steadily and its SOP accuracy rise above 50% (in our 1140-step run:
held-out MLM 6.04 at step 100 to 5.70, SOP accuracy 0.60); the README's encoder section has the
figures next to BERT's.

``size=base`` / ``large`` / ``xlarge`` / ``xxlarge`` are the v2 shapes (12M / 18M / 60M / 235M
parameters) with the README's recipe: LAMB at learning rate 0.00176, 3125 warmup steps, batch 4096
of 512 tokens for 125k steps, on Wikipedia prepared with TFDS and ALBERT's SentencePiece model::

    lmjax train --config experiments/encoders/albert.py:size=base --workdir runs/albert_base \
        --config.data.data_dir=/data/tfds --config.tokenizer.path=/models/albert/spiece.model

It should approach the SQuAD-ready ALBERT-base of the paper (MLM accuracy near 0.55 and SOP
accuracy near 0.9 at the end of pre-training, Table 5).
"""

import os

from lmjax import models
from lmjax.config import load_experiment, parse_experiment_arg

SIZES = ("tiny", "base", "large", "xlarge", "xxlarge")
# The tiny BERT's settings the tiny ALBERT takes over, so the two differ only in ALBERT's changes.
TINY_FIELDS = ("vocab_size", "max_len", "num_layers", "hidden_dropout", "attention_dropout")


def get_config(arg=None):
    """Returns the ALBERT experiment; ``arg`` is ``'size=<tiny|base|large|xlarge|xxlarge>'``."""
    arg = parse_experiment_arg(arg, size="tiny")
    if arg.size not in SIZES:
        raise ValueError(
            f"albert.py: unknown size {arg.size!r}; choose one of {', '.join(SIZES)}."
        )
    tiny = arg.size == "tiny"
    here = os.path.dirname(__file__)
    bert = "bert.py:size=tiny" if tiny else "bert.py:size=base"
    config = load_experiment(os.path.join(here, bert))
    config.unlock()
    overrides = {field: config.model[field] for field in TINY_FIELDS} if tiny else {}
    config.model = models.config_dict("albert", arg.size, **overrides)
    config.tokenizer.vocab_size = config.model.get_ref("vocab_size")
    config.objective = dict(name="mlm_sop", selection="fixed", max_ngram=3, max_predictions=20)
    config.data.sentence_pairs = "sop"
    if not tiny:
        config.data.seq_len = 512
        config.tokenizer.model_type = "unigram"
        config.optimizer.name = "lamb"
        config.optimizer.learning_rate = 0.00176
        config.optimizer.warmup_steps = 3125
        config.train.global_batch = 4096
        config.train.steps = 125_000
    return config.lock()
