r"""DistilBERT (Sanh et al. 2019): a student half as deep as its BERT teacher, initialised from
every other teacher layer and trained on the teacher's soft targets.

Train the teacher first (a run of ``bert.py``, with any overrides), then distil it::

    lmjax train --config experiments/encoders/bert.py:size=tiny --workdir runs/bert_tiny
    lmjax train --config experiments/encoders/distilbert.py:teacher=runs/bert_tiny \
        --workdir runs/distil_tiny

With ``teacher=<workdir>`` the experiment starts from the teacher run's saved config: the
teacher's model section becomes ``model.teacher``, the student is its half-depth DistilBERT of the
same width and vocabulary, and the data and tokenizer sections are the teacher's (the student
trains on the same text and reads the teacher's tokenizer, copied into its workdir). The run
loads the teacher's latest checkpoint, checks that its model is ``model.teacher``, copies the
embeddings, the MLM head and teacher layers into the student (0, 2, 4, 7, 9, 11 for 12 -> 6,
the reference ``extract_distilbert.py``; 0 and 3 for the tiny 4 -> 2), and then trains
only the student: the teacher is frozen in the optimizer and runs without dropout under
``stop_gradient``. The loss is the reference's ``5.0 x T^2 x KL(teacher_T || student_T) +
2.0 x MLM + 1.0 x (1 - cos)`` at temperature 2 (``distiller.py``, README command), with
RoBERTa-style dynamic masking of full-sentence rows (positions drawn uniformly: the reference's
``mlm_smoothing`` towards rare tokens is not implemented). The KL and cosine terms should fall and
the student's MLM loss approach the teacher's (in our 300-step run from the 1000-step tiny BERT:
KL 0.044 to 0.010, cosine 0.24 to 0.018, held-out MLM 5.386 against the teacher's 5.308).

``size=base`` distils BERT-base into the 66M-parameter DistilBERT with the reference's optimizer
(AdamW betas (0.9, 0.98), eps 1e-6, learning rate 5e-4, 5% warmup, no weight decay, gradient
clipping at 5, about 4000 rows per step)::

    lmjax train --config experiments/encoders/distilbert.py:size=base,teacher=runs/bert_base \
        --workdir runs/distilbert

It should keep about 97% of the teacher's GLUE score after fine-tuning (the paper's Table 1).
"""

import os

from lmjax import models
from lmjax.config import load_experiment, parse_experiment_arg
from lmjax.models.teacher_student import model_fields
from lmjax.train.trained_run import saved_run_config

# size -> (teacher experiment, student preset, teacher-student preset)
SIZES = {
    "tiny": ("bert.py:size=tiny", "tiny", "bert-tiny-to-distilbert-tiny"),
    "base": ("bert.py:size=base", "base", "bert-base-to-distilbert"),
}
STUDENT_FIELDS = ("vocab_size", "max_len", "embed_dim", "num_heads", "mlp_dim", "hidden_dropout",
                  "attention_dropout")


def teacher_experiment(size: str, teacher_workdir: str):
    """The teacher's experiment, unlocked: the saved config of the run in ``teacher_workdir``,
    or (none given) ``bert.py`` at ``size``, whose run must then be named at train time."""
    if teacher_workdir:
        config = saved_run_config(teacher_workdir, {})
        if config.model.family != "bert":
            raise ValueError(
                f"teacher={teacher_workdir!r} trained a {config.model.family!r} model; the "
                "distillation experiments take a BERT teacher (a run of bert.py)."
            )
    else:
        config = load_experiment(os.path.join(os.path.dirname(__file__), SIZES[size][0]))
    config.unlock()
    return config


def get_config(arg=None):
    """Returns the DistilBERT experiment; ``arg`` is ``'size=<tiny|base>,teacher=<workdir>'``."""
    arg = parse_experiment_arg(arg, size="tiny", teacher="")
    if arg.size not in SIZES:
        raise ValueError(
            f"distilbert.py: unknown size {arg.size!r}; choose one of {', '.join(SIZES)}."
        )
    _, student_preset, pair_preset = SIZES[arg.size]
    config = teacher_experiment(arg.size, arg.teacher)
    teacher = config.model
    student = models.config_dict(
        "distilbert",
        student_preset,
        num_layers=teacher.num_layers // 2,
        **{field: teacher[field] for field in STUDENT_FIELDS},
    )
    config.model = models.config_dict(
        "teacher_student", pair_preset, teacher=model_fields(teacher), student=model_fields(student)
    )
    config.objective = dict(
        name="distilbert", temperature=2.0, alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=1.0
    )
    config.data.sentence_pairs = "none"
    config.distillation = dict(
        # the trained teacher's workdir (required; set by the teacher= argument)
        teacher_workdir=os.path.abspath(arg.teacher) if arg.teacher else "",
        student_init="teacher_layers",  # or 'random'
    )
    opt = config.optimizer
    opt.b2, opt.weight_decay, opt.clip_grad_norm = 0.98, 0.0, 5.0
    opt.learning_rate = 5e-4
    opt.schedule = "warmup_linear"
    opt.warmup_steps = (config.train.get_ref("steps") * 0.05).to_int()
    if arg.size == "base":
        config.train.global_batch = 4096  # the reference: 50 accumulated batches of 5 x 16 GPUs
        config.train.steps = 100_000
    return config.lock()
