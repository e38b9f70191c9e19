r"""Fine-tuning a pre-trained encoder on SQuAD 1.1 or 2.0 (extractive question answering).

The task (``lmjax.data.squad_task``) reads TFDS ``squad/v1.1`` or ``squad/v2.0`` from a prepared
``data_dir``, cuts each question and its paragraph into ``[CLS] question [SEP] window [SEP]``
rows of ``seq_len`` tokens (windows ``doc_stride`` tokens apart when the paragraph does not fit),
trains BERT's span head (a start and an end logit per token) and after every epoch decodes each
question's best span over its windows and scores it with the official exact match and F1 (x100;
SQuAD 2.0 adds ``HasAns_*`` / ``NoAns_*`` and the best no-answer threshold). The best epoch by
F1 is kept in ``<workdir>/best``. Span extraction needs an encoder: ``init=`` names a BERT-family
run (``experiments/encoders/*.py``); a GPT run is refused.

Prepare the data once, where the network is reachable (no TensorFlow needed to read it)::

    tfds build squad/v1.1 --data_dir=/data/tfds --file_format=array_record
    tfds build squad/v2.0 --data_dir=/data/tfds --file_format=array_record

Run::

    lmjax train --config experiments/encoders/bert.py:size=base --workdir runs/bert_base
    lmjax finetune --workdir runs/bert_base_squad11 \
        --config experiments/finetune/squad.py:version=1.1,init=runs/bert_base,data_dir=/data/tfds
    lmjax finetune --workdir runs/bert_base_squad20 \
        --config experiments/finetune/squad.py:version=2.0,init=runs/bert_base,data_dir=/data/tfds

Published weights: ``hf=<directory>`` (instead of ``init=``) imports a local Hugging Face BERT /
RoBERTa / ALBERT / DistilBERT directory (safetensors, ``config.json`` and ``tokenizer.json`` or
``vocab.txt``) with ``lmjax.convert``; nothing is downloaded. With ``bert-base-uncased`` this is
the setting of the paper's numbers below.

Settings are BERT's SQuAD recipe (google-research/bert README, ``run_squad.py`` and
``optimization.py``): AdamW with weight decay 0.01, gradients clipped to norm 1, learning rate
3e-5 warmed up over the first 10% of the steps (``warmup_proportion`` 0.1) then decayed linearly
to 0, 2 epochs for v1.1 and for v2.0, ``max_seq_length`` 384, ``doc_stride`` 128,
``max_query_length`` 64, ``n_best_size`` 20, ``max_answer_length`` 30,
``null_score_diff_threshold`` 0.0 (the README tunes it on dev between -1.0 and -5.0; the scores
report the best one found, ``best_f1_threshold``). The README trains base with batch 12 on a
12 GB GPU and large with 24 on a TPU; the paper (section 4.2) uses batch 32 for v1.1 (3 epochs
at 5e-5) and 48 for v2.0 (2 epochs at 5e-5); here the batch is 32 (``batch=``).

A BERT-base backbone pre-trained as the paper's should reach about 88.5 F1 / 80.8 EM on the
SQuAD 1.1 dev set (Devlin et al. 2019, Table 2); BERT-large about 81.9 F1 / 78.7 EM on SQuAD 2.0
dev (Table 3). No SQuAD run of lmjax has been measured yet (this machine has no copy of the
data); ``tests/train/test_squad_finetune.py`` runs the whole path on hand-written examples in
the real format.
"""

import os

import ml_collections

from lmjax import axes
from lmjax.config import parse_experiment_arg
from lmjax.data.squad_task import SQUAD_TASKS


def get_config(arg=None):
    """Returns the experiment; ``arg``: ``'version=1.1|2.0,init=<workdir>,data_dir=<tfds dir>,
    seq_len=..,doc_stride=..,max_query_len=..,lr=..,epochs=..,batch=..'`` (``hf=<directory>``
    instead of ``init=`` starts from published Hugging Face weights)."""
    arg = parse_experiment_arg(arg, version="1.1", init="", hf="", data_dir="", seq_len=384,
                               doc_stride=128, max_query_len=64, lr=3e-5, epochs=2, batch=32)
    name = f"squad/v{arg.version.removeprefix('v')}"
    if name not in SQUAD_TASKS:
        raise ValueError(f"squad.py: unknown version={arg.version!r}; use 1.1 or 2.0.")
    config = ml_collections.ConfigDict()
    config.init = dict(workdir=os.path.abspath(arg.init) if arg.init else "", step=0,
                       hf_dir=os.path.abspath(arg.hf) if arg.hf else "")
    config.task = dict(
        name=name, data_dir=arg.data_dir, seq_len=int(arg.seq_len),
        doc_stride=int(arg.doc_stride), max_query_len=int(arg.max_query_len),
        max_answer_length=30,  # tokens
        null_score_diff_threshold=0.0,  # SQuAD 2.0: answer "" when null beats the span by more
        train_split="train", eval_split="validation",
        max_train_examples=0, max_eval_examples=0,  # 0 = the whole split
    )
    config.head = dict(feature="auto", classifier_dropout=0.1)  # the span head reads every token
    config.objective = dict(lm_coef=0.0)  # encoders only: no auxiliary LM loss
    config.optimizer = dict(
        name="adamw", learning_rate=float(arg.lr), b1=0.9, b2=0.999, eps=1e-6,
        weight_decay=0.01, weight_decay_mask="matrices", schedule="warmup_linear",
        warmup_steps=0, end_learning_rate_fraction=0.0, clip_grad_norm=1.0,
    )
    config.train = dict(epochs=int(arg.epochs), global_batch=int(arg.batch), seed=0,
                        log_every=50, warmup_fraction=0.1)
    config.mesh = [("data", -1), ("fsdp", 1), ("tensor", 1)]
    config.rules = [tuple(rule) for rule in axes.DEFAULT_RULES]
    config.lock()
    return config
