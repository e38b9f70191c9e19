r"""TinyBERT general distillation (Jiao et al. 2020): a narrower, shallower student learns the
teacher's attention scores and hidden states layer by layer.

Train the teacher first (a run of ``bert.py``, with any overrides), then distil it::

    lmjax train --config experiments/encoders/bert.py:size=tiny --workdir runs/bert_tiny
    lmjax train --config experiments/encoders/tinybert.py:teacher=runs/bert_tiny \
        --workdir runs/tinybert_tiny

As in ``distilbert.py``, ``teacher=<workdir>`` builds the experiment from the teacher run's saved
config (its model becomes ``model.teacher``; its data and tokenizer are the student's). The
student starts from random weights (TinyBERT's general distillation does) and trains on the
intermediate-layer loss of ``general_distill.py``: the MSE between student layer i's and teacher
layer ``i*k + k - 1``'s pre-softmax attention scores plus the MSE between the student's hidden
states, projected by ``fit_dense`` to the teacher's width, and teacher representations ``i*k``
(k = teacher layers / student layers; representation 0 is the embedding output). The text is not
masked. Both terms should fall steadily; the prediction-layer stage
(``--config.objective.name=tinybert_prediction``, soft cross-entropy on the MLM logits) can
follow from the same teacher.

The tiny student is half the tiny teacher's depth and width (2 layers, 64 wide). ``size=4l``
distils BERT-base into TinyBERT-4 (4 layers, 312 wide, 14.5M parameters) and ``size=6l`` into
TinyBERT-6 (6 layers, 768 wide), batch 256 of 128 tokens, as the README::

    lmjax train --config experiments/encoders/tinybert.py:size=4l,teacher=runs/bert_base \
        --workdir runs/tinybert4

TinyBERT-4 should keep about 96% of BERT-base's GLUE score after task distillation (Table 1).
"""

import os

from lmjax import models
from lmjax.config import load_experiment, parse_experiment_arg
from lmjax.models.teacher_student import model_fields

# size -> (distilbert.py size of the teacher, student preset, teacher-student preset)
SIZES = {
    "tiny": ("tiny", "tiny", "bert-tiny-to-tinybert-tiny"),
    "4l": ("base", "4l-312", "bert-base-to-tinybert-4l"),
    "6l": ("base", "6l-768", "bert-base-to-tinybert-4l"),
}


def get_config(arg=None):
    """Returns the TinyBERT experiment; ``arg`` is ``'size=<tiny|4l|6l>,teacher=<workdir>'``."""
    arg = parse_experiment_arg(arg, size="tiny", teacher="")
    if arg.size not in SIZES:
        raise ValueError(
            f"tinybert.py: unknown size {arg.size!r}; choose one of {', '.join(SIZES)}."
        )
    teacher_size, student_preset, pair_preset = SIZES[arg.size]
    spec = f"distilbert.py:size={teacher_size}" + (f",teacher={arg.teacher}" if arg.teacher else "")
    config = load_experiment(os.path.join(os.path.dirname(__file__), spec))
    config.unlock()
    teacher = dict(models.make_config(config.model).teacher)
    fields = dict(vocab_size=teacher["vocab_size"], teacher_dim=teacher["embed_dim"])
    if arg.size == "tiny":  # half the tiny teacher's depth and width
        fields.update(
            max_len=teacher["max_len"],
            num_layers=teacher["num_layers"] // 2,
            embed_dim=teacher["embed_dim"] // 2,
            num_heads=teacher["num_heads"],
            mlp_dim=teacher["mlp_dim"] // 2,
            hidden_dropout=teacher["hidden_dropout"],
            attention_dropout=teacher["attention_dropout"],
        )
    student = models.config_dict("tinybert", student_preset, **fields)
    config.model = models.config_dict(
        "teacher_student",
        pair_preset,
        teacher=tuple(teacher.items()),
        student=model_fields(student),
        per_layer_outputs=True,
    )
    config.objective = dict(name="tinybert_intermediate")
    config.distillation.student_init = "random"
    opt = config.optimizer  # general_distill.py: BertAdam, lr 5e-5 (1e-3 for the tiny CPU run)
    opt.b2, opt.eps, opt.clip_grad_norm, opt.weight_decay = 0.999, 1e-6, 1.0, 0.01
    opt.learning_rate = 1e-3 if arg.size == "tiny" else 5e-5
    if arg.size != "tiny":
        config.train.global_batch = 256
        config.train.steps = 300_000
    return config.lock()
