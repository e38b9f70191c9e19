"""Fine-tuning: a pre-trained backbone plus a task head, trained epoch by epoch, best kept.

``finetune(config, workdir)`` reads like its recipe::

    backbone = (imported_backbone(config.init.hf_dir) if config.init.hf_dir
                else pretrained_backbone(config.init))        # a `lmjax train` run: model, params, tokens
    task     = load_task(config.task)                  # examples, head kind, scorer
    fmt      = input_format(...)                       # BERT segments or GPT-1's transform
    model    = TaskModel(backbone + head)              # lmjax.models.heads, family 'task'
    state    = fresh state with params['backbone'] = the pre-trained params (or resumed)
    for epoch: train on a fresh shuffle, evaluate, checkpoint, keep the best epoch in best/

The train and eval steps are the generic ones (``lmjax.train.step``); the objective is the head's
loss (``lmjax.objectives.task_losses``: softmax cross-entropy, MSE, the multiple-choice softmax,
plus GPT-1's auxiliary language-modelling loss weighted by ``objective.lm_coef``). The learning
rate warms up over ``train.warmup_fraction`` of all steps (BERT 0.1, GPT-1 0.002) and follows
``optimizer.schedule`` after.

The workdir ends up like a pre-training run's (``config.json``, ``tokenizer/``,
``checkpoints/``, ``metrics.jsonl``), so ``lmjax.train.trained_run.load_trained_run`` reads it;
``best/`` holds the same for the best epoch by the task's main metric, and ``results.json`` every
epoch's scores. A killed run resumes from the start of the epoch after its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lmjax import data, models, objectives
from lmjax.config import ConfigError, config_to_json
from lmjax.data.finetune_tasks import EncodedSplit, FinetuneTask, load_task
from lmjax.data.task_examples import TextExample
from lmjax.data.task_inputs import EncoderFormat, GPT1Format, encoder_inputs, gpt1_inputs
from lmjax.models.gpt import GPT1_SPECIAL_TOKENS
from lmjax.models.teacher_student import model_fields
from lmjax.train import distributed
from lmjax.train import step as step_lib
from lmjax.train.checkpoints import Checkpointer, checkpoint_directory
from lmjax.train.logging import MetricsLogger
from lmjax.train.loop import build_mesh_and_rules, check_token_ids
from lmjax.train.optimizers import make_optimizer, make_schedule
from lmjax.train.state import abstract_train_state, init_state
from lmjax.train.trained_run import CONFIG_FILE, TOKENIZER_DIR, TrainedRun, load_trained_run

BEST_DIR = "best"
RESULTS_FILE = "results.json"
# Pre-training runs whose model is itself the network to fine-tune (an ELECTRA run's model is
# the generator + discriminator pair; the head reads the discriminator).
BACKBONE_FAMILIES = ("bert", "albert", "tinybert", "electra", "distilbert", "gpt")
HEAD_OBJECTIVE = {
    "classification": "classification",
    "regression": "regression",
    "multiple_choice": "multiple_choice",
    "span": "span_extraction",
}
ENCODER_INPUTS = ("inputs", "token_type_ids", "attention_mask")
DECODER_INPUTS = ("inputs", "attention_mask")
# Hugging Face model_type -> (lmjax family, lmjax.convert loader) for init.hf_dir.
HF_IMPORTS = {
    "bert": ("bert", "load_hf_bert"), "roberta": ("bert", "load_hf_bert"),
    "albert": ("albert", "load_hf_albert"), "distilbert": ("distilbert", "load_hf_distilbert"),
    "gpt2": ("gpt", "load_hf_gpt"), "openai-gpt": ("gpt", "load_hf_gpt"),
}
_SECTION_FIELDS = {
    "init": ("workdir", "hf_dir"),
    "task": ("name", "data_dir", "seq_len"),
    "head": ("feature", "classifier_dropout"),
    "objective": ("lm_coef",),
    "optimizer": ("name", "learning_rate", "schedule"),
    "train": ("epochs", "global_batch", "seed", "log_every", "warmup_fraction"),
}


def check_finetune_config(config: ml_collections.ConfigDict) -> None:
    """Raises ``ConfigError`` listing every missing section / field and bad number."""
    problems = []
    for section, fields in _SECTION_FIELDS.items():
        if section not in config:
            problems.append(f"missing section config.{section}")
            continue
        problems += [f"config.{section} lacks field {f}" for f in fields if f not in config[section]]
    for section in ("mesh", "rules"):
        if section not in config:
            problems.append(f"missing section config.{section}")
    if not problems:
        train = config.train
        if train.epochs < 1 or train.global_batch < 1:
            problems.append("config.train.epochs and config.train.global_batch must be >= 1")
        if not 0 <= train.warmup_fraction < 1:
            problems.append(f"config.train.warmup_fraction={train.warmup_fraction} must be in [0, 1)")
        if bool(config.init.workdir) == bool(config.init.hf_dir):
            problems.append(
                "config.init.workdir is empty; name the pre-training run to start from, e.g. "
                "experiments/finetune/docs.py:init=runs/bert_tiny (or set init.hf_dir to a "
                "Hugging Face model directory instead)"
                if not config.init.workdir else
                "config.init.workdir and config.init.hf_dir are both set; start from one of them"
            )
    if problems:
        raise ConfigError("Invalid fine-tuning config: " + "; ".join(problems))


# --------------------------------------------------------------------------------------------
# The pieces: backbone, input format, model, arrays.
# --------------------------------------------------------------------------------------------


def pretrained_backbone(init_cfg: Any) -> TrainedRun:
    """The pre-training run named by ``init.workdir`` (its model must be a plain backbone)."""
    run = load_trained_run(init_cfg.workdir, step=init_cfg.get("step") or None)
    family = run.config.model.family
    if family not in BACKBONE_FAMILIES:
        raise ValueError(
            f"{init_cfg.workdir} trained a {family!r} model; fine-tuning starts from a run of "
            f"one of {', '.join(BACKBONE_FAMILIES)} (a distillation run's student is not "
            "extracted into a run of its own yet)."
        )
    return run


def imported_backbone(hf_dir: str) -> TrainedRun:
    """Published weights from a local Hugging Face directory (``config.json``, safetensors and
    ``tokenizer.json`` or ``vocab.txt``), imported with ``lmjax.convert``, as a backbone."""
    from lmjax import convert

    model_type = convert.hf_config(hf_dir).get("model_type")
    if model_type not in HF_IMPORTS:
        raise ValueError(
            f"{hf_dir} holds a {model_type!r} model; init.hf_dir imports "
            f"{', '.join(sorted(HF_IMPORTS))} (ELECTRA: pre-train with lmjax or convert with "
            "lmjax.convert.load_hf_electra_pretraining)."
        )
    family, loader = HF_IMPORTS[model_type]
    model, params = getattr(convert, loader)(hf_dir)
    model_cfg = {"family": family}
    model_cfg.update({f.name: getattr(model.config, f.name)
                      for f in dataclasses.fields(model.config)})
    candidates = [("hf_json", "tokenizer.json"), ("wordpiece", "vocab.txt")]
    found = [(kind, os.path.join(hf_dir, name)) for kind, name in candidates
             if os.path.isfile(os.path.join(hf_dir, name))]
    if not found:
        raise FileNotFoundError(
            f"{hf_dir} has no tokenizer.json or vocab.txt; save the model's tokenizer there "
            "(tokenizer.save_pretrained) before fine-tuning from it."
        )
    kind, path = found[0]
    tokenizer_cfg = {"kind": kind, "path": os.path.abspath(path), "vocab_size": 0,
                     "do_lower_case": bool(convert.hf_config(hf_dir).get("do_lower_case", True))}
    tokenizer = data.loaded_tokenizer(kind, path, tokenizer_cfg["do_lower_case"])
    config = ml_collections.ConfigDict({"model": model_cfg, "tokenizer": tokenizer_cfg})
    return TrainedRun(config=config, model=model, params=params, tokenizer=tokenizer, step=0,
                      workdir=os.path.abspath(hf_dir))


def input_format(
    family: str, tokenizer: data.Tokenizer, backbone_vocab: int, seq_len: int
) -> tuple[EncoderFormat | GPT1Format, int]:
    """Returns ``(format, appended)``: the backbone's input format and how many special tokens
    were appended to its vocabulary (GPT-1's three when the tokenizer lacks them)."""
    if family != "gpt":
        special = data.encoder_special_ids(tokenizer)
        return EncoderFormat(special.cls_id, special.sep_id, special.pad_id, seq_len), 0
    try:
        ids = [tokenizer.id_of(piece) for piece in GPT1_SPECIAL_TOKENS]
        appended = 0
    except KeyError:  # e.g. imported GPT-1 / GPT-2 weights: new rows after the vocabulary
        ids = [backbone_vocab + i for i in range(len(GPT1_SPECIAL_TOKENS))]
        appended = len(GPT1_SPECIAL_TOKENS)
    return GPT1Format(*ids, pad_id=tokenizer.pad_id, seq_len=seq_len), appended


def task_model_config(
    config: Any, backbone_cfg: Any, task: FinetuneTask, fmt: Any, appended: int
) -> ml_collections.ConfigDict:
    """The ``model`` section of the fine-tuning run: family 'task' around the backbone."""
    backbone = backbone_cfg.to_dict()
    if appended:
        backbone["vocab_size"] += appended
    return ml_collections.ConfigDict({
        "family": "task",
        "backbone": model_fields(backbone),
        "head": task.head,
        "num_labels": task.num_labels,
        "feature": config.head.feature,  # 'auto': the family's usual feature (heads.py)
        "extract_id": fmt.extract_id if isinstance(fmt, GPT1Format) else -1,
        "combine_orderings": bool(task.symmetric and isinstance(fmt, GPT1Format)),
        # GPT-1's clf_pdrop noise shape broadcasts over the choices (train.py, ROCStories)
        "share_choice_dropout": bool(task.head == "multiple_choice"
                                     and isinstance(fmt, GPT1Format)),
        "classifier_dropout": float(config.head.classifier_dropout),
    })


def run_config(config: Any, backbone: TrainedRun, model_cfg: Any,
               fmt: EncoderFormat | GPT1Format, task: FinetuneTask,
               workdir: str) -> ml_collections.ConfigDict:
    """The experiment config with the run's ``model``, the backbone's ``tokenizer`` and the
    ``input_format`` added: what ``config.json`` holds, so ``load_trained_run`` rebuilds the
    fine-tuned model and ``fine_tuned_outputs`` encodes new examples as in training."""
    values = config.to_dict()
    values["model"] = model_cfg.to_dict()
    values["tokenizer"] = backbone.config.tokenizer.to_dict()
    if values["tokenizer"].get("path"):  # an imported tokenizer file: the run keeps a copy
        values["tokenizer"]["path"] = os.path.join(
            workdir, TOKENIZER_DIR, os.path.basename(values["tokenizer"]["path"]))
    values["input_format"] = dict(
        dataclasses.asdict(fmt), kind="gpt1" if isinstance(fmt, GPT1Format) else "segments",
        both_orderings=bool(task.symmetric and isinstance(fmt, GPT1Format)), head=task.head,
        label_names=list(task.label_names),
    )
    return ml_collections.ConfigDict(values)


def fine_tuned_outputs(run: TrainedRun, examples: Sequence[TextExample],
                       batch_size: int = 32) -> dict[str, np.ndarray]:
    """The head's outputs (``class_logits`` / ``choice_logits`` / ``prediction``) of a
    fine-tuned run (``load_trained_run(<workdir>/best)``) on new examples, encoded as in
    training; with ``'probabilities'`` (softmax over classes or choices) where they apply."""
    spec = run.config.input_format.to_dict()
    kind, both, head = spec.pop("kind"), spec.pop("both_orderings"), spec.pop("head")
    spec.pop("label_names")
    if kind == "gpt1":
        arrays = gpt1_inputs(examples, run.tokenizer, GPT1Format(**spec), both_orderings=both)
        names = DECODER_INPUTS
    else:
        arrays = encoder_inputs(examples, run.tokenizer, EncoderFormat(**spec))
        names = ENCODER_INPUTS
    apply = jax.jit(lambda params, inputs: run.model.apply({"params": params}, **inputs))
    pieces = []
    for start in range(0, len(examples), batch_size):
        inputs = {name: arrays[name][start : start + batch_size] for name in names}
        pieces.append(jax.device_get(apply(run.params, inputs)))
    outputs = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0] if k != "lm_logits"}
    if head != "regression":
        logits = outputs["choice_logits" if head == "multiple_choice" else "class_logits"]
        outputs["probabilities"] = np.asarray(jax.nn.softmax(logits, axis=-1))
    return outputs


def host_rows(arrays: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    """This process's slice of the global batch made of ``rows``."""
    per_process = len(rows) // jax.process_count()
    mine = rows[jax.process_index() * per_process : (jax.process_index() + 1) * per_process]
    return {name: value[mine] for name, value in arrays.items()}


def padded_eval_batches(arrays: dict[str, np.ndarray], global_batch: int) -> list[np.ndarray]:
    """Row indices of the eval batches; the last is filled with row 0 at example weight 0."""
    n = len(arrays["example_weights"])
    batches = []
    for start in range(0, n, global_batch):
        rows = np.arange(start, start + global_batch)
        batches.append(np.where(rows < n, rows, n))  # index n = the zero-weight filler row
    return batches


def with_filler_row(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` plus one copy of row 0 whose example weight is 0 (fills the last eval batch)."""
    extended = {name: np.concatenate([value, value[:1]]) for name, value in arrays.items()}
    extended["example_weights"][-1] = 0.0
    return extended


# --------------------------------------------------------------------------------------------
# State, prediction, results.
# --------------------------------------------------------------------------------------------


def state_with_backbone(state, shardings, tx, model, init_inputs, backbone_params, key, mesh):
    """The fresh state with the pre-trained backbone parameters loaded (rows appended for new
    special tokens) and the optimizer state re-made for them."""
    from lmjax.models.heads import extended_vocab_params

    params = dict(jax.device_get(state.params))
    pretrained = jax.device_get(backbone_params)
    if jax.tree_util.tree_structure(pretrained) != jax.tree_util.tree_structure(
        params["backbone"]
    ) or any(a.shape != b.shape for a, b in zip(jax.tree_util.tree_leaves(pretrained),
                                                jax.tree_util.tree_leaves(params["backbone"]))):
        abstract = jax.eval_shape(lambda k: model.init(k, **init_inputs), key)["params"]
        pretrained = extended_vocab_params(pretrained, abstract["backbone"], key)
    params["backbone"] = pretrained
    params = jax.device_put(params, shardings.params)
    with jax.set_mesh(mesh):
        opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
    return state.replace(params=params, opt_state=opt_state)


def make_predict_step(model, model_inputs, mesh, rules, param_shardings):
    """``predict(params, batch) -> outputs`` jitted for the mesh (outputs replicated)."""
    from lmjax.train import mesh as mesh_lib

    def predict(params, batch):
        inputs = {name: batch[name] for name in model_inputs}
        outputs = model.apply({"params": params}, **inputs, deterministic=True)
        return {k: v for k, v in outputs.items() if k != "lm_logits"}  # [.., V]: not needed

    jitted = jax.jit(
        predict,
        in_shardings=(param_shardings, mesh_lib.batch_sharding(mesh, rules)),
        out_shardings=mesh_lib.replicated_sharding(mesh),
    )
    return step_lib.MeshBoundStep(jitted, mesh, rules)


def evaluate_split(split: EncodedSplit, global_batch, predict, eval_step, params, mesh, rules,
                   key) -> dict[str, float]:
    """The task's scores and the objective's eval metrics (``objective_<name>``) over every row
    of the evaluation split."""
    filled = with_filler_row(split.arrays)
    outputs, totals = [], {}
    for index, rows in enumerate(padded_eval_batches(split.arrays, global_batch)):
        batch = step_lib.host_batch_to_global(host_rows(filled, rows), mesh, rules)
        outputs.append(jax.device_get(predict(params, batch)))
        sums = jax.device_get(eval_step(params, batch, jax.random.fold_in(key, index)))
        for name, value in sums.items():
            totals[name] = totals.get(name, 0.0) + float(value)
    n = len(split.arrays["example_weights"])
    outputs = {name: np.concatenate([o[name] for o in outputs])[:n] for name in outputs[0]}
    scores = dict(split.score(outputs))
    means = step_lib.eval_means(totals)
    means["num_examples"] = means.pop("num_tokens")  # the task losses count examples
    scores.update({f"objective_{k}": v for k, v in means.items()})
    return scores


def examples_counted(metrics: dict[str, Any]) -> dict[str, Any]:
    """Train metrics with the step's ``num_tokens`` (which the sequence heads' losses fill with
    the number of examples) named ``num_examples``, so the bar does not report it as tokens/s."""
    metrics = dict(metrics)
    metrics["num_examples"] = metrics.pop("num_tokens")
    return metrics


def write_json_atomically(path: str, value: Any) -> None:
    """Writes ``value`` as JSON to ``path`` through a temporary file and a rename."""
    temporary = path + ".tmp"
    with open(temporary, "w") as f:
        json.dump(value, f, indent=1)
    os.replace(temporary, path)


def copy_run_files(config: Any, backbone: TrainedRun, directory: str) -> None:
    """Writes ``config.json`` and copies the backbone's tokenizer into ``directory``: the
    tokenizer a pre-training run trained (its ``tokenizer/``), or an imported tokenizer file."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, CONFIG_FILE), "w") as f:
        f.write(config_to_json(config))
    target = os.path.join(directory, TOKENIZER_DIR)
    source_file = backbone.config.tokenizer.get("path")
    if source_file:
        os.makedirs(target, exist_ok=True)
        shutil.copyfile(source_file, os.path.join(target, os.path.basename(source_file)))
        return
    source = os.path.join(backbone.workdir, TOKENIZER_DIR)
    if not os.path.isdir(target) and os.path.isdir(source):
        shutil.copytree(source, target)


@dataclasses.dataclass
class Progress:
    """What the JSON side of each checkpoint and ``results.json`` record."""

    epochs: list[dict] = dataclasses.field(default_factory=list)
    best_epoch: int = -1
    best_score: float = -float("inf")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def improved_by(self, score: float) -> bool:
        """Whether an epoch scoring ``score`` is the best so far. The first epoch always is,
        even with a NaN score (a regression head predicting a constant has no Pearson r); a
        NaN never beats a number, and any number beats a NaN."""
        if self.best_epoch < 0 or np.isnan(self.best_score):
            return True
        return not np.isnan(score) and score > self.best_score


# --------------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class FinetuneSetup:
    """Everything a fine-tuning run builds before its first step (see ``finetune_setup``)."""

    task: FinetuneTask
    backbone: TrainedRun
    run_config: ml_collections.ConfigDict
    model: Any
    objective: objectives.Objective
    model_inputs: tuple[str, ...]
    train_arrays: dict[str, np.ndarray]
    eval_split: EncodedSplit
    steps_per_epoch: int
    tx: Any
    schedule: Any

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.run_config.train.epochs

    def init_inputs(self) -> dict[str, jax.Array]:
        """One-row model inputs (zeros) for initialisation."""
        return {name: jnp.zeros((1,) + self.train_arrays[name].shape[1:],
                                self.train_arrays[name].dtype) for name in self.model_inputs}


def finetune_setup(config: ml_collections.ConfigDict, workdir: str) -> FinetuneSetup:
    """Loads the backbone and the task, encodes both splits in the backbone's format and builds
    the task model, its objective and the optimizer (warm-up over ``train.warmup_fraction``)."""
    backbone = (imported_backbone(config.init.hf_dir) if config.init.hf_dir
                else pretrained_backbone(config.init))
    task = load_task(config.task)
    tokenizer, family = backbone.tokenizer, backbone.config.model.family
    fmt, appended = input_format(family, tokenizer, backbone.config.model.vocab_size,
                                 config.task.seq_len)
    model_cfg = task_model_config(config, backbone.config.model, task, fmt, appended)
    model_inputs = DECODER_INPUTS if family == "gpt" else ENCODER_INPUTS
    lm_coef = float(config.objective.lm_coef) if family == "gpt" else 0.0
    objective = objectives.get(HEAD_OBJECTIVE[task.head], model_inputs=model_inputs,
                               lm_coef=lm_coef)
    train_arrays = task.encode(task.train, tokenizer, fmt, True).arrays
    eval_split = task.encode(task.evaluation, tokenizer, fmt, False)
    for arrays in (train_arrays, eval_split.arrays):
        check_token_ids({"inputs": arrays["inputs"]}, dict(model_cfg.backbone)["vocab_size"])
    train_rows = len(train_arrays["example_weights"])
    steps_per_epoch = train_rows // config.train.global_batch
    if steps_per_epoch < 1:
        raise ValueError(
            f"the task has {train_rows} training rows, fewer than one batch of "
            f"train.global_batch={config.train.global_batch}; lower the batch size."
        )
    total_steps = steps_per_epoch * config.train.epochs
    opt_cfg = ml_collections.ConfigDict(config.optimizer.to_dict())
    opt_cfg.warmup_steps = int(round(config.train.warmup_fraction * total_steps))
    return FinetuneSetup(
        task=task, backbone=backbone,
        run_config=run_config(config, backbone, model_cfg, fmt, task, workdir),
        model=models.build(model_cfg), objective=objective, model_inputs=model_inputs,
        train_arrays=train_arrays, eval_split=eval_split, steps_per_epoch=steps_per_epoch,
        tx=make_optimizer(opt_cfg, total_steps), schedule=make_schedule(opt_cfg, total_steps),
    )


def train_epoch(setup: FinetuneSetup, state, epoch: int, train_step, key, mesh, rules, logger):
    """Returns the state after one epoch over a fresh shuffle of the training rows (seeded by
    ``(train.seed, epoch)``; step ``s`` uses ``fold_in(key, s)``); the last partial batch is
    dropped."""
    cfg = setup.run_config.train
    order = np.random.default_rng([cfg.seed, epoch]).permutation(
        len(setup.train_arrays["example_weights"]))
    for index in range(setup.steps_per_epoch):
        step = epoch * setup.steps_per_epoch + index
        rows = order[index * cfg.global_batch : (index + 1) * cfg.global_batch]
        batch = step_lib.host_batch_to_global(host_rows(setup.train_arrays, rows), mesh, rules)
        state, metrics = train_step(state, batch, jax.random.fold_in(key, step))
        if (step + 1) % cfg.log_every == 0 or index == setup.steps_per_epoch - 1:
            logger.log(step + 1, examples_counted(jax.device_get(metrics)))
    return state


def finetune(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Fine-tunes (or resumes) the experiment ``config`` in ``workdir``; returns the results.

    Returns:
        ``{'task', 'epochs': [per-epoch eval scores], 'best_epoch', 'best_score', 'main_metric',
        'workdir', 'best_dir'}``.
    """
    check_finetune_config(config)
    workdir = os.path.abspath(workdir)
    mesh, rules = build_mesh_and_rules(config)
    setup = finetune_setup(config, workdir)
    task, model, tx = setup.task, setup.model, setup.tx
    keys = jax.random.split(jax.random.key(config.train.seed), 3)  # params, steps, eval
    init_inputs = setup.init_inputs()
    abstract, shardings = abstract_train_state(model, tx, init_inputs, mesh, rules)
    checkpointer = Checkpointer(checkpoint_directory(workdir), keep=1)
    best_checkpointer = Checkpointer(checkpoint_directory(os.path.join(workdir, BEST_DIR)), keep=1)
    logger = None
    try:
        if checkpointer.latest_step() is None:
            state, _ = init_state(model, tx, init_inputs, mesh, rules, keys[0], shardings)
            state = state_with_backbone(state, shardings, tx, model, init_inputs,
                                        setup.backbone.params, keys[0], mesh)
            progress = Progress()
        else:
            state, extra = checkpointer.restore(abstract)
            progress = Progress(**extra["progress"])
        if distributed.is_main_process():
            for directory in (workdir, os.path.join(workdir, BEST_DIR)):
                copy_run_files(setup.run_config, setup.backbone, directory)
        distributed.barrier("lmjax_finetune_files")
        logger = MetricsLogger(workdir, setup.total_steps, enabled=distributed.is_main_process())
        train_step = step_lib.make_train_step(model, setup.objective, tx, setup.schedule, mesh,
                                              rules, shardings)
        eval_step = step_lib.make_eval_step(model, setup.objective, mesh, rules, shardings.params)
        predict = make_predict_step(model, setup.model_inputs, mesh, rules, shardings.params)
        for epoch in range(int(state.step) // setup.steps_per_epoch, config.train.epochs):
            state = train_epoch(setup, state, epoch, train_step, keys[1], mesh, rules, logger)
            scores = evaluate_split(setup.eval_split, config.train.global_batch, predict,
                                    eval_step, state.params, mesh, rules, keys[2])
            logger.log(int(state.step), scores, split="eval")
            progress.epochs.append(dict(scores, epoch=epoch + 1, step=int(state.step)))
            extra = {"progress": progress.as_dict(), "config": config_to_json(setup.run_config)}
            if progress.improved_by(scores[task.main_metric]):
                progress.best_epoch, progress.best_score = epoch + 1, scores[task.main_metric]
                extra["progress"] = progress.as_dict()
                best_checkpointer.save(int(state.step), state, extra, force=True)
            checkpointer.save(int(state.step), state, extra, force=True)
            checkpointer.wait()
            best_checkpointer.wait()
            if distributed.is_main_process():
                write_json_atomically(os.path.join(workdir, RESULTS_FILE), dict(
                    progress.as_dict(), task=task.name, main_metric=task.main_metric))
    finally:
        checkpointer.close()
        best_checkpointer.close()
        if logger is not None:
            logger.close()
    return _reported_result(progress, task, workdir)


def _reported_result(progress: Progress, task: FinetuneTask, workdir: str) -> dict[str, Any]:
    """The run's result dict; process 0 prints its summary line."""
    result = dict(progress.as_dict(), task=task.name, main_metric=task.main_metric,
                  workdir=workdir, best_dir=os.path.join(workdir, BEST_DIR))
    if distributed.is_main_process():
        last = progress.epochs[-1] if progress.epochs else {}
        print(f"{task.name}: best {task.main_metric} {progress.best_score:.4f} at epoch "
              f"{progress.best_epoch}; last epoch {last.get(task.main_metric, float('nan')):.4f}"
              f"{_baseline_note(last)}; best checkpoint in {result['best_dir']}", flush=True)
    return result


def _baseline_note(scores: dict) -> str:
    baseline = scores.get("majority_baseline")
    return "" if baseline is None else f" (majority class {baseline:.4f})"
