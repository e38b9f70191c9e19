r"""Fine-tuning a pre-trained run on an offline task built from the embedded corpus.

The tasks (``task=``; ``lmjax.data.docs_tasks``) need no download and carry real labels:
``docs_package`` (which standard-library package a passage documents, 8 classes),
``docs_consecutive`` (does passage B follow passage A, 2 classes) and ``docs_continuation``
(which of 4 passages continues the context). ``init=`` names the pre-training run: a BERT-family
run (``experiments/encoders/*.py``) fine-tunes through BERT's heads on ``[CLS] a [SEP] (b [SEP])``
rows; a GPT run (``experiments/gpt/gpt1.py``) through GPT-1's extract-token head on
``_start_ a (_delimiter_ b) _classify_`` rows with the auxiliary LM loss (weight 0.5).

Run::

    lmjax train --config experiments/encoders/bert.py:size=tiny --workdir runs/bert_tiny
    lmjax finetune --config experiments/finetune/docs.py:task=docs_package,init=runs/bert_tiny \
        --workdir runs/bert_tiny_package

    lmjax train --config experiments/gpt/gpt1.py:size=tiny --workdir runs/gpt1_tiny
    lmjax finetune --config experiments/finetune/docs.py:task=docs_package,init=runs/gpt1_tiny \
        --workdir runs/gpt1_tiny_package

Published weights: ``hf=<directory>`` (instead of ``init=``) imports a local Hugging Face BERT /
RoBERTa / ALBERT / DistilBERT / GPT-2 / openai-gpt directory (safetensors, ``config.json`` and
``tokenizer.json`` or ``vocab.txt``) with ``lmjax.convert``; nothing is downloaded.

Settings: BERT's fine-tuning recipe (``run_classifier.py``: AdamW, weight decay 0.01, 10% warm-up
then linear decay, batch 32) and GPT-1's (``train.py``: Adam with decoupled weight decay 0.01,
``warmup_linear`` over 0.2% of the steps, clip 1, batch 32, lm_coef 0.5). The papers' learning
rates (BERT 2e-5..5e-5, GPT-1 6.25e-5) suit models pre-trained for days; the tiny CPU runs here
were pre-trained for minutes and fine-tune at 5e-4 for 10 epochs (``lr=`` and ``epochs=`` change
them), chosen over 1e-4 x 5 epochs on the validation split as BERT's paper chooses on dev.

What it should reach (``docs_package``: 944 training / 273 validation passages, majority class
0.220 of the validation split), measured on this project's 2-core CPU machine: from the default
``bert.py:size=tiny`` run (300 steps), best validation accuracy **0.729** (epoch 10; 3 min 36 s);
from a ``gpt1.py:size=tiny`` run narrowed to BERT tiny's shape (4 x 128, 2048 pieces, 128-token
rows, batch 32, 1000 steps), **0.846** (epoch 6; 3 min 0 s) through the extract-token head. At 1e-4 x 5 epochs the
same BERT run stays at the majority class and the GPT-1 run reaches 0.315.
"""

import json
import os

import ml_collections

from lmjax import axes
from lmjax.config import parse_experiment_arg
from lmjax.data.docs_tasks import DOCS_TASKS

# Each passage is about 48 words; a 128-token row holds one, a pair row two shorter ones.
WORDS_PER_PASSAGE = {"docs_package": 48, "docs_consecutive": 24, "docs_continuation": 24}


def backbone_family(init: str, hf: str = "") -> str:
    """The model family of the pre-training run in ``init``, or 'gpt' / 'encoder' for a
    Hugging Face directory ``hf`` ('' when neither is given)."""
    if hf:
        with open(os.path.join(hf, "config.json")) as f:
            return "gpt" if json.load(f).get("model_type") in ("gpt2", "openai-gpt") else "encoder"
    if not init:
        return ""
    path = os.path.join(init, "config.json")
    if not os.path.isfile(path):
        raise ValueError(
            f"init={init!r} has no config.json; name a workdir written by `lmjax train`."
        )
    with open(path) as f:
        return json.load(f)["model"]["family"]


def get_config(arg=None):
    """Returns the experiment; ``arg``: ``'task=<docs task>,init=<workdir>,lr=..,epochs=..'``
    (``hf=<directory>`` instead of ``init=`` starts from published Hugging Face weights)."""
    arg = parse_experiment_arg(arg, task="docs_package", init="", hf="", lr=5e-4, epochs=10,
                               seq_len=128)
    if arg.task not in DOCS_TASKS:
        raise ValueError(f"docs.py: unknown task {arg.task!r}; choose one of {DOCS_TASKS}.")
    gpt = backbone_family(arg.init, arg.hf) == "gpt"
    config = ml_collections.ConfigDict()
    config.init = dict(workdir=os.path.abspath(arg.init) if arg.init else "", step=0,
                       hf_dir=os.path.abspath(arg.hf) if arg.hf else "")
    config.task = dict(name=arg.task, data_dir="", seq_len=arg.seq_len,
                       words_per_passage=WORDS_PER_PASSAGE[arg.task], seed=0,
                       max_train_examples=0, max_eval_examples=0)  # 0 = the whole split
    config.head = dict(feature="auto", classifier_dropout=0.1)
    config.objective = dict(lm_coef=0.5)  # GPT-1's auxiliary LM weight; encoders ignore it
    config.optimizer = dict(
        name="adamw", learning_rate=float(arg.lr), b1=0.9, b2=0.999,
        eps=1e-8 if gpt else 1e-6, weight_decay=0.01, weight_decay_mask="matrices",
        schedule="warmup_linear", warmup_steps=0, end_learning_rate_fraction=0.0,
        clip_grad_norm=1.0 if gpt else 0.0,
    )
    config.train = dict(epochs=int(arg.epochs), global_batch=32, seed=0, log_every=10,
                        warmup_fraction=0.002 if gpt else 0.1)
    config.mesh = [("data", -1), ("fsdp", 1), ("tensor", 1)]
    config.rules = [tuple(rule) for rule in axes.DEFAULT_RULES]
    config.lock()
    return config
