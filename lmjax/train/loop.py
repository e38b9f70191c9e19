"""The training driver: ``train(config, workdir) -> summary``, split into small steps.

``train`` reads like the recipe it runs::

    mesh, rules = build_mesh_and_rules(config)
    tokenizer  = build_tokenizer(config, workdir)          # trained once, on process 0
    model, objective, tx, schedule = build_model_and_optimizer(config, tokenizer)
    batches    = build_batches(config, tokenizer)          # this process's slice of each batch
    state ...  = init_or_restore_state(...)                # resumes from the latest checkpoint
    state      = train_loop(...)                           # log, eval, checkpoint
    summary    = finish_run(...)                           # baseline, samples, plot

A killed run restarted with the same command resumes from its latest checkpoint: the parameters,
optimizer state and step, the RNG key every step's key is folded from, and the data iterator's
position all come back, so the resumed run computes exactly the steps an uninterrupted one would
(``tests/train/test_resume.py``). The checkpoint restores onto the current mesh, whatever mesh
wrote it.

Multi-process runs (``lmjax.train.distributed``): every process runs this same code and feeds its
slice of each global batch; files (tokenizer, metrics, samples, plot, config.json) are written by
process 0, and the others wait at a barrier where they need the result.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from lmjax import data, models, objectives
from lmjax.config import config_to_json
from lmjax.decoding import generated_texts
from lmjax.eval.perplexity import unigram_baseline_loss_of_batches
from lmjax.train import distributed
from lmjax.train import mesh as mesh_lib
from lmjax.train import step as step_lib
from lmjax.train.checkpoints import Checkpointer, checkpoint_directory
from lmjax.train.logging import UNIGRAM_KEY, MetricsLogger
from lmjax.train.optimizers import make_optimizer, make_schedule
from lmjax.train.plot import plot_metrics
from lmjax.train.state import TrainState, abstract_train_state, init_state, parameter_count
from lmjax.train.trained_run import CONFIG_FILE, TOKENIZER_DIR, load_trained_run

SAMPLES_FILE = "samples.txt"
# Tokens used to fit the unigram baseline (a few hundred thousand is plenty for its 4 digits).
_UNIGRAM_FIT_TOKENS = 1 << 20
_DOCUMENT_PROMPTS = 2  # held-out documents whose first tokens also prompt the samples
_DOCUMENT_PROMPT_TOKENS = 8


@dataclasses.dataclass
class RunKeys:
    """The run's PRNG keys: ``params`` initialises the model; step s uses ``fold_in(step, s)``."""

    params: jax.Array
    step: jax.Array
    eval: jax.Array

    @classmethod
    def from_seed(cls, seed: int) -> RunKeys:
        params, step, eval_key = jax.random.split(jax.random.key(seed), 3)
        return cls(params=params, step=step, eval=eval_key)

    def step_key_data(self) -> list[int]:
        """Returns the step key's raw data (JSON-able) for the checkpoint."""
        return np.asarray(jax.random.key_data(self.step)).tolist()

    def with_step_key_data(self, key_data: Sequence[int]) -> RunKeys:
        """Returns these keys with the step key restored from a checkpoint's raw data."""
        step = jax.random.wrap_key_data(np.asarray(key_data, np.uint32))
        return dataclasses.replace(self, step=step)


# --------------------------------------------------------------------------------------------
# Building the pieces.
# --------------------------------------------------------------------------------------------


def build_mesh_and_rules(config: Any) -> tuple[jax.sharding.Mesh, mesh_lib.Rules]:
    """Returns the experiment's mesh over every device of every process, and its checked rules."""
    mesh = mesh_lib.build_mesh(config.mesh)
    return mesh, mesh_lib.check_rules(config.rules, mesh)


def build_tokenizer(config: Any, workdir: str) -> data.Tokenizer:
    """Returns the experiment's tokenizer, trained into ``workdir`` once (by process 0).

    The other processes wait at a barrier and then load the file process 0 wrote.
    """

    teacher_workdir = config.get("distillation", {}).get("teacher_workdir", "")
    if teacher_workdir and not config.tokenizer.path and distributed.is_main_process():
        copy_teacher_tokenizer(teacher_workdir, workdir)  # a student reads its teacher's tokens

    def load_or_train() -> data.Tokenizer:
        documents = (
            ()
            if config.tokenizer.path
            else data.open_documents(config.data, config.data.train_split)
        )
        return data.load_or_train_tokenizer(config.tokenizer, documents, workdir)

    tokenizer = load_or_train() if distributed.is_main_process() else None
    distributed.barrier("lmjax_tokenizer_ready")
    return tokenizer if tokenizer is not None else load_or_train()


def copy_teacher_tokenizer(teacher_workdir: str, workdir: str) -> None:
    """Copies the tokenizer a teacher run trained into ``workdir`` (once), so the student uses
    the teacher's vocabulary and its own workdir stays self-contained."""
    source = os.path.join(os.path.abspath(teacher_workdir), TOKENIZER_DIR)
    target = os.path.join(workdir, TOKENIZER_DIR)
    if os.path.isdir(target):
        return
    if not os.path.isdir(source):
        raise FileNotFoundError(
            f"the teacher run {teacher_workdir} has no trained tokenizer ({source} is missing); "
            "point distillation.teacher_workdir at a workdir written by `lmjax train`, or set "
            "tokenizer.path to the teacher's tokenizer file."
        )
    shutil.copytree(source, target)


def check_vocab_fits(tokenizer_vocab_size: int, model_cfg: Any) -> None:
    """Raises when the tokenizer produces ids the model's embedding has no row for."""
    model_vocab = model_cfg.get("vocab_size")
    if model_vocab is not None and tokenizer_vocab_size > model_vocab:
        raise ValueError(
            f"the tokenizer has {tokenizer_vocab_size} tokens but the model's embedding has only "
            f"model.vocab_size={model_vocab} rows, so ids >= {model_vocab} would have no row. Set "
            f"--config.model.vocab_size={tokenizer_vocab_size} (or larger), or use a tokenizer "
            "with a smaller vocabulary."
        )


def model_vocab_size(model_cfg: Any) -> int:
    """Returns the number of token ids the model has embedding rows for (int32 max if unbounded)."""
    return int(model_cfg.get("vocab_size") or np.iinfo(np.int32).max)


def check_token_ids(host_batch: dict[str, np.ndarray], vocab_size: int) -> None:
    """Raises when a batch's ``inputs`` / ``targets`` hold an id outside ``[0, vocab_size)``.

    An out-of-range id would otherwise be clamped silently by the embedding lookup.
    """
    for name in ("inputs", "targets"):
        ids = host_batch.get(name)
        if ids is None or ids.size == 0:
            continue
        low, high = int(ids.min()), int(ids.max())
        if high >= vocab_size or low < 0:
            bad = np.unique(ids[(ids >= vocab_size) | (ids < 0)])[:5].tolist()
            raise ValueError(
                f"batch[{name!r}] holds token ids {bad} outside "
                f"[0, model.vocab_size={vocab_size}). "
                f"Set --config.model.vocab_size to at least {high + 1} (the tokenizer's vocabulary "
                "size), or fix the tokenizer / data that produced these ids."
            )


def build_objective(config: Any, tokenizer: data.Tokenizer) -> objectives.Objective:
    """Returns the experiment's objective, built from its ``objective`` section.

    Objectives that mask tokens get the tokenizer's ``mask_id``, ``vocab_size`` and
    ``special_ids`` (its [CLS] / [SEP] / [MASK] / [PAD] pieces; see
    ``objectives.VOCABULARY_OPTIONS``) unless the section sets them.
    """
    options = config.objective.to_dict()
    name = options.pop("name")
    wanted = objectives.VOCABULARY_OPTIONS.get(name, ())
    if wanted:
        special = data.encoder_special_ids(tokenizer)
        vocabulary = dict(
            mask_id=special.mask_id,
            vocab_size=tokenizer.vocab_size,
            special_ids=special.special_ids,
        )
        for option in wanted:
            options.setdefault(option, vocabulary[option])
    return objectives.get(name, **options)


def build_model_and_optimizer(config: Any, tokenizer: data.Tokenizer) -> tuple[Any, Any, Any, Any]:
    """Returns ``(model, objective, tx, schedule)``, after checking the vocabulary fits.

    A family may name top-level parameters its optimizer never updates (``FROZEN_PARAMS``, e.g.
    the teacher of ``teacher_student``).
    """
    check_vocab_fits(tokenizer.vocab_size, config.model)
    model = models.build(config.model)
    objective = build_objective(config, tokenizer)
    frozen = getattr(models.family_module(config.model.family), "FROZEN_PARAMS", ())
    schedule = make_schedule(config.optimizer, config.train.steps)
    tx = make_optimizer(config.optimizer, config.train.steps, frozen=frozen)
    return model, objective, tx, schedule


def build_batches(config: Any, tokenizer: data.Tokenizer) -> tuple[data.LMBatches, list[dict]]:
    """Returns this process's training iterator and its slices of the fixed eval batches."""
    train_batches = data.train_batches(config.data, tokenizer, config.train.global_batch)
    eval_batches = data.eval_batches(
        config.data, tokenizer, config.train.global_batch, config.train.eval_batches
    )
    return train_batches, eval_batches


def model_init_inputs(
    objective: Any, host_batch: dict[str, np.ndarray]
) -> dict[str, jax.ShapeDtypeStruct]:
    """Returns one-row shapes of the model's keyword inputs after the objective's corruption."""
    one_row = {k: jax.ShapeDtypeStruct((1,) + v.shape[1:], v.dtype) for k, v in host_batch.items()}
    corrupted = jax.eval_shape(objective.corrupt, jax.random.key(0), one_row)
    missing = [name for name in objective.model_inputs if name not in corrupted]
    if missing:
        raise ValueError(
            f"objective {objective.name!r} feeds the model {missing}, which the batches "
            f"(keys {sorted(corrupted)}) do not have; use data that provides them."
        )
    return {name: corrupted[name] for name in objective.model_inputs}


# --------------------------------------------------------------------------------------------
# State: fresh or resumed.
# --------------------------------------------------------------------------------------------


def init_or_restore_state(
    config: Any,
    model: Any,
    tx: Any,
    init_inputs: dict[str, jax.ShapeDtypeStruct],
    mesh: jax.sharding.Mesh,
    rules: mesh_lib.Rules,
    checkpointer: Checkpointer,
    train_batches: data.LMBatches,
) -> tuple[TrainState, TrainState, RunKeys]:
    """Returns ``(state, state_shardings, keys)``: restored from the latest checkpoint, or fresh.

    On resume the data iterator is moved to the checkpoint's position and the step key comes from
    the checkpoint, so the following steps see the batches and keys an uninterrupted run would.
    """
    keys = RunKeys.from_seed(config.train.seed)
    abstract_state, shardings = abstract_train_state(model, tx, init_inputs, mesh, rules)
    if checkpointer.latest_step() is None:
        state, shardings = init_state(model, tx, init_inputs, mesh, rules, keys.params, shardings)
        if "distillation" in config:
            state = distillation_start(config, state, tx, shardings, mesh)
        return state, shardings, keys
    state, extra = checkpointer.restore(abstract_state)
    train_batches.restore(extra["data"])
    return state, shardings, keys.with_step_key_data(extra["step_key"])


def distillation_start(
    config: Any, state: TrainState, tx: Any, shardings: TrainState, mesh: jax.sharding.Mesh
) -> TrainState:
    """Returns the fresh state of a teacher -> student run: the teacher's trained parameters
    loaded from ``distillation.teacher_workdir``, the student initialised from them when
    ``distillation.student_init == 'teacher_layers'`` (DistilBERT), the optimizer state re-made.
    """
    from lmjax.models import teacher_student

    teacher = teacher_run(config)
    params = dict(jax.device_get(state.params))
    params["teacher"] = jax.device_get(teacher.params)
    if config.distillation.student_init == "teacher_layers":
        student = teacher_student.student_params_from_teacher(
            models.make_config(config.model), params["teacher"]
        )
        if student is None:
            raise ValueError(
                "distillation.student_init='teacher_layers' but this student has no mapping from "
                "teacher layers (TinyBERT students start from random weights); set "
                "--config.distillation.student_init=random."
            )
        params["student"] = student
    elif config.distillation.student_init != "random":
        raise ValueError(
            f"distillation.student_init={config.distillation.student_init!r}: use "
            "'teacher_layers' or 'random'."
        )
    params = jax.device_put(params, shardings.params)
    with jax.set_mesh(mesh):
        opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
    return state.replace(params=params, opt_state=opt_state)


def teacher_run(config: Any) -> Any:
    """Returns the trained teacher run named by ``distillation.teacher_workdir``, checked
    against the experiment's ``model.teacher``."""
    workdir = config.distillation.teacher_workdir
    if not workdir:
        raise ValueError(
            "distillation.teacher_workdir is empty; train the teacher first and name its "
            "workdir in the experiment argument, e.g. "
            "--config experiments/encoders/distilbert.py:teacher=runs/<teacher>."
        )
    from lmjax.models import teacher_student

    run = load_trained_run(workdir)
    trained = dict(teacher_student.model_fields(run.config.model))
    wanted = dict(models.make_config(config.model).teacher)
    differing = sorted(k for k in set(trained) | set(wanted) if trained.get(k) != wanted.get(k))
    if differing:
        listed = ", ".join(f"{k}: run {trained.get(k)!r} vs config {wanted.get(k)!r}"
                           for k in differing)
        raise ValueError(
            f"the teacher trained in {workdir} is not the experiment's model.teacher ({listed}); "
            "build the experiment from the teacher run (e.g. distilbert.py:teacher=<workdir>) "
            "so that model.teacher is the run's model section."
        )
    return run


def checkpoint_extra(config: Any, keys: RunKeys, train_batches: data.LMBatches) -> dict[str, Any]:
    """Returns the JSON side of a checkpoint: the step key, the data position and the config."""
    return {
        "step_key": keys.step_key_data(),
        "seed": int(config.train.seed),
        "data": train_batches.state(),
        "config": config_to_json(config),
    }


# --------------------------------------------------------------------------------------------
# Training and evaluation.
# --------------------------------------------------------------------------------------------


def evaluate(
    eval_step: step_lib.MeshBoundStep,
    params: Any,
    eval_batches: list[dict[str, np.ndarray]],
    mesh: jax.sharding.Mesh,
    rules: mesh_lib.Rules,
    key: jax.Array,
) -> dict[str, float]:
    """Returns per-token eval metrics over all eval batches (exact: sums, then one division)."""
    totals: dict[str, float] = {}
    for index, host_batch in enumerate(eval_batches):
        batch = step_lib.host_batch_to_global(host_batch, mesh, rules)
        sums = jax.device_get(eval_step(params, batch, jax.random.fold_in(key, index)))
        for name, value in sums.items():
            totals[name] = totals.get(name, 0.0) + float(value)
    return step_lib.eval_means(totals)


def train_loop(
    config: Any,
    state: TrainState,
    train_step: step_lib.MeshBoundStep,
    eval_step: step_lib.MeshBoundStep,
    train_batches: Iterator[dict[str, np.ndarray]],
    eval_batches: list[dict[str, np.ndarray]],
    keys: RunKeys,
    mesh: jax.sharding.Mesh,
    rules: mesh_lib.Rules,
    checkpointer: Checkpointer,
    logger: MetricsLogger,
) -> TrainState:
    """Returns the state after training from ``state.step`` to ``config.train.steps``.

    Step ``s`` (0-based) trains on the next batch with key ``fold_in(keys.step, s)``; metrics are
    logged under the number of updates done (``s + 1``) every ``log_every`` updates, eval runs every
    ``eval_every`` and checkpoints are started every ``checkpoint_every`` (both also at the end, by
    ``train``).
    """
    cfg = config.train
    vocab_size = model_vocab_size(config.model)
    for step in range(int(state.step), cfg.steps):
        host_batch = next(train_batches)
        check_token_ids(host_batch, vocab_size)
        batch = step_lib.host_batch_to_global(host_batch, mesh, rules)
        state, metrics = train_step(state, batch, jax.random.fold_in(keys.step, step))
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            logger.log(done, jax.device_get(metrics))
        if cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.steps:
            logger.log(
                done,
                evaluate(eval_step, state.params, eval_batches, mesh, rules, keys.eval),
                split="eval",
            )
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done != cfg.steps:
            checkpointer.save(done, state, checkpoint_extra(config, keys, train_batches))
    return state


# --------------------------------------------------------------------------------------------
# The end of a run: baseline, samples, plot, summary.
# --------------------------------------------------------------------------------------------


def unigram_baseline(config: Any, tokenizer: data.Tokenizer) -> float:
    """Returns the held-out loss of a unigram model fitted on training batches (nats/token).

    Uses whole global batches (not this process's slice); call it on one process.
    """
    tokens_per_batch = config.train.global_batch * config.data.seq_len
    num_fit = max(1, min(64, _UNIGRAM_FIT_TOKENS // tokens_per_batch))
    fit = data.train_batches(
        config.data, tokenizer, config.train.global_batch, process_index=0, process_count=1
    )
    held_out = data.eval_batches(
        config.data,
        tokenizer,
        config.train.global_batch,
        config.train.eval_batches,
        process_index=0,
        process_count=1,
    )
    return unigram_baseline_loss_of_batches(
        (next(fit) for _ in range(num_fit)), held_out, tokenizer.vocab_size
    )


def sample_prompts(config: Any, tokenizer: data.Tokenizer) -> list[str]:
    """Returns the sample prompts: ``generate.prompt`` and the openings of held-out documents.

    Each opening is the text of a document's first few tokens. With neither, the prompt is
    empty (the model starts from the BOS token), or there is none when the tokenizer has no BOS.
    """
    prompts = [config.generate.prompt] if config.generate.prompt else []
    documents = data.open_documents(config.data, config.data.eval_split)
    for document in documents[:_DOCUMENT_PROMPTS]:
        prompts.append(tokenizer.decode(tokenizer.encode(document)[:_DOCUMENT_PROMPT_TOKENS]))
    prompts = [p for p in prompts if tokenizer.encode(p)]
    if not prompts and tokenizer.bos_id is not None:
        prompts = [""]
    return prompts


def generated_samples(
    config: Any, model: Any, params: Any, tokenizer: data.Tokenizer, key: jax.Array
) -> str:
    """Returns greedy and sampled continuations of the sample prompts, as text for samples.txt.

    Prompts too long for the model keep their last tokens; ``generate.max_new_tokens`` is cut to
    ``model.max_len - 1`` so that every prompt keeps at least one. ``params`` must be
    addressable by this process (see ``_params_on_this_process``).
    """
    gen = config.generate
    prompts = sample_prompts(config, tokenizer)
    if not prompts:
        return "(no prompt: generate.prompt is empty and the tokenizer has no BOS token)\n"
    max_len = config.model.get("max_len")
    common = dict(
        max_new_tokens=min(gen.max_new_tokens, max_len - 1) if max_len else gen.max_new_tokens,
        truncate_prompts=True,
    )
    greedy = generated_texts(model, params, tokenizer, prompts, greedy=True, **common)
    repeats = gen.num_samples
    sampled = generated_texts(
        model,
        params,
        tokenizer,
        [prompt for prompt in prompts for _ in range(repeats)],
        key,
        temperature=gen.temperature,
        top_k=gen.top_k,
        top_p=gen.top_p,
        **common,
    )
    settings = f"temperature {gen.temperature}, top_k {gen.top_k}, top_p {gen.top_p}"
    parts = []
    for index in range(len(prompts)):
        parts.append(f"=== prompt {index + 1}, greedy ===\n{greedy[index]}\n")
        for sample in range(repeats):
            parts.append(
                f"=== prompt {index + 1}, sample {sample + 1} ({settings}) ===\n"
                f"{sampled[index * repeats + sample]}\n"
            )
    return "\n".join(parts)


def _params_on_this_process(params: Any) -> Any:
    """Returns params this process can compute with alone (gathered to host when multi-process)."""
    if jax.process_count() == 1:
        return params
    return multihost_utils.process_allgather(params, tiled=True)


def finish_run(
    config: Any,
    workdir: str,
    model: Any,
    state: TrainState,
    tokenizer: data.Tokenizer,
    final_eval: dict[str, float],
    keys: RunKeys,
    logger: MetricsLogger,
) -> dict[str, Any]:
    """Logs the final eval and unigram baseline, writes samples and plot; returns the summary.

    Every process must call it (gathering the params for sampling is collective); files are written
    by the main process only.
    """
    main = distributed.is_main_process()
    step = int(state.step)
    causal = config.objective.name == "causal_lm"
    baseline = unigram_baseline(config, tokenizer) if main and causal else None
    extra = {UNIGRAM_KEY: baseline} if baseline is not None else {}
    logger.log(step, dict(final_eval, **extra), split="eval")
    logger.flush()
    samples = causal and "generate" in config and config.generate.max_new_tokens > 0
    params = _params_on_this_process(state.params) if samples else None
    samples_path = plot_path = None
    if main:
        if params is not None:
            samples_path = os.path.join(workdir, SAMPLES_FILE)
            text = generated_samples(
                config, model, params, tokenizer, jax.random.fold_in(keys.eval, step)
            )
            with open(samples_path, "w", encoding="utf-8") as f:
                f.write(text)
        plot_path = plot_metrics(workdir)
    distributed.barrier("lmjax_run_finished")
    return {
        "workdir": workdir,
        "step": step,
        "parameters": parameter_count(state.params),
        "final_eval_loss": final_eval.get("loss"),
        "final_eval_accuracy": final_eval.get("accuracy"),
        "unigram_baseline_loss": baseline,
        "checkpoint_dir": checkpoint_directory(workdir),
        "metrics": logger.metrics_path,
        "plot": plot_path,
        "samples": samples_path,
    }


def _write_config(config: Any, workdir: str) -> None:
    """Writes the run's config as JSON (main process), for ``lmjax generate`` and for readers."""
    if distributed.is_main_process():
        with open(os.path.join(workdir, CONFIG_FILE), "w", encoding="utf-8") as f:
            f.write(json.dumps(json.loads(config_to_json(config)), indent=2, sort_keys=True))


def train(config: Any, workdir: str) -> dict[str, Any]:
    """Trains (or resumes) the experiment ``config`` in ``workdir`` and returns a summary.

    Args:
        config: a validated experiment config (``lmjax.config``): model, objective, data,
            tokenizer, optimizer, train, mesh, rules, generate.
        workdir: the run directory: tokenizer, checkpoints, metrics.jsonl, TensorBoard events,
            samples.txt, loss.png and config.json end up here.

    Returns:
        ``{'workdir', 'step', 'parameters', 'final_eval_loss', 'final_eval_accuracy',
        'unigram_baseline_loss', 'checkpoint_dir', 'metrics', 'plot', 'samples'}`` (the baseline,
        plot and samples are None on processes other than 0).

    Raises:
        ValueError: on a tokenizer that does not fit the model, token ids outside the vocabulary,
            a mesh or rules problem, or a batch that does not split over the mesh.
        lmjax.train.checkpoints.CheckpointCorruptedError: when the latest checkpoint is damaged
            (the message names it and how to fall back to the previous one).
    """
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    # Every check that can run does so before the run writes to the workdir (the tokenizer is
    # trained only when missing), so bad input leaves earlier checkpoints and results as they were.
    mesh, rules = build_mesh_and_rules(config)
    tokenizer = build_tokenizer(config, workdir)
    model, objective, tx, schedule = build_model_and_optimizer(config, tokenizer)
    train_batches, eval_batches = build_batches(config, tokenizer)
    for host_batch in eval_batches:
        check_token_ids(host_batch, model_vocab_size(config.model))
    init_inputs = model_init_inputs(objective, eval_batches[0])

    checkpointer = Checkpointer(checkpoint_directory(workdir), keep=config.train.keep_checkpoints)
    logger = None
    try:
        state, shardings, keys = init_or_restore_state(
            config, model, tx, init_inputs, mesh, rules, checkpointer, train_batches
        )  # a damaged or mismatched checkpoint stops the run here
        _write_config(config, workdir)
        logger = MetricsLogger(workdir, config.train.steps, enabled=distributed.is_main_process())
        train_step = step_lib.make_train_step(
            model,
            objective,
            tx,
            schedule,
            mesh,
            rules,
            shardings,
            grad_accum=config.train.grad_accum,
        )
        eval_step = step_lib.make_eval_step(model, objective, mesh, rules, shardings.params)
        state = train_loop(
            config,
            state,
            train_step,
            eval_step,
            train_batches,
            eval_batches,
            keys,
            mesh,
            rules,
            checkpointer,
            logger,
        )
        checkpointer.save(int(state.step), state, checkpoint_extra(config, keys, train_batches))
        final_eval = evaluate(eval_step, state.params, eval_batches, mesh, rules, keys.eval)
        checkpointer.wait()
        summary = finish_run(config, workdir, model, state, tokenizer, final_eval, keys, logger)
    finally:
        checkpointer.close()
        if logger is not None:
            logger.close()
    if distributed.is_main_process():
        baseline = summary["unigram_baseline_loss"]
        compared = "" if baseline is None else f" (unigram baseline {baseline:.4f})"
        samples = "" if summary["samples"] is None else f", samples {summary['samples']}"
        print(
            f"step {summary['step']}: eval loss {summary['final_eval_loss']:.4f}{compared}; "
            f"checkpoints {summary['checkpoint_dir']}, plot {summary['plot']}{samples}",
            flush=True,
        )
    return summary
