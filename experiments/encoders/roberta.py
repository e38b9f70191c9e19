r"""RoBERTa-style pre-training (Liu et al. 2019): MLM only, dynamic masking, FULL-SENTENCES rows.

RoBERTa is BERT trained differently (§4): no next-sentence prediction, rows packed with whole
sentences up to the length and allowed to cross document boundaries (``sample_break_mode:
complete``), the mask drawn afresh for every batch, bigger batches and a higher learning rate.
Here the mask is drawn in the train step from the step's key, so it is new in every step and the
same again when a step is recomputed after a restart.

Run the tiny variant on the embedded corpus (the model is ``bert.py``'s tiny BERT without the NSP
head, so the two runs differ only in the recipe)::

    lmjax train --config experiments/encoders/roberta.py:size=tiny --workdir runs/roberta_tiny

Its MLM loss should fall like the BERT run's; the README's encoder table compares them.

``size=base`` / ``large`` are RoBERTa's shapes (``roberta-base`` preset: 50265 GPT-2 BPE pieces,
fairseq's position offset, one token type) with fairseq's ``base.yaml`` recipe: Adam betas
(0.9, 0.98), eps 1e-6, weight decay 0.01, learning rate 5e-4 with 10k warmup and linear decay,
batch 2048 of 512 tokens for 125k updates, on TFDS C4::

    lmjax train --config experiments/encoders/roberta.py:size=base --workdir runs/roberta_base \
        --config.data.data_dir=/data/tfds \
        --config.tokenizer.kind=hf_json --config.tokenizer.path=/models/roberta/tokenizer.json

It should approach the validation perplexity of about 3.7 (MLM loss near 1.3) that the paper's
base-size ablations report at this budget.
"""

import os

from lmjax import models
from lmjax.config import load_experiment, parse_experiment_arg

SIZES = {"tiny": "tiny", "base": "roberta-base", "large": "roberta-large"}


def get_config(arg=None):
    """Returns the RoBERTa experiment; ``arg`` is ``'size=<tiny|base|large>'``."""
    arg = parse_experiment_arg(arg, size="tiny")
    if arg.size not in SIZES:
        raise ValueError(
            f"roberta.py: unknown size {arg.size!r}; choose one of {', '.join(SIZES)}."
        )
    tiny = arg.size == "tiny"
    bert = "bert.py:size=tiny" if tiny else "bert.py:size=base"
    config = load_experiment(os.path.join(os.path.dirname(__file__), bert))
    config.unlock()
    if tiny:
        fields = {k: v for k, v in config.model.to_dict().items() if k != "family"}
        fields.update(nsp_head=False)
        config.model = models.config_dict("bert", "tiny", **fields)
    else:
        config.model = models.config_dict("bert", SIZES[arg.size])
        config.data.seq_len = 512
        config.data.source = "tfds:c4/en"
        config.train.global_batch = 2048
        config.train.steps = 125_000
        config.optimizer.learning_rate = 5e-4 if arg.size == "base" else 4e-4
        config.optimizer.b2 = 0.98
    config.tokenizer.vocab_size = config.model.get_ref("vocab_size")
    # RoBERTa's masking (mask_tokens_dataset.py): 15% of the non-special tokens, 80/10/10, no cap.
    config.objective = dict(name="mlm", selection="fixed", max_predictions=None)
    config.data.sentence_pairs = "none"
    return config.lock()
