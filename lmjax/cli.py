"""The ``lmjax`` command: ``train``, ``finetune``, ``generate``, ``plot`` and ``prepare``.

Examples::

    lmjax train --config experiments/gpt/gpt2.py:size=tiny --config.train.steps=50 --workdir runs/x
    lmjax finetune --config experiments/finetune/docs.py:init=runs/bert_tiny --workdir runs/ft
    lmjax fewshot --workdir runs/x --shots 0,1,4 --num_examples 50
    lmjax generate --workdir runs/x --prompt 'def parse(' --max_new_tokens 64 --top_k 40
    lmjax plot runs/x --out runs/x/loss.png
    lmjax prepare --config experiments/gpt/demo.py --workdir runs/demo

``python -m lmjax ...`` is the same command. A multi-host run starts one process per host with
``--coordinator_address host:port --num_processes N --process_id i`` (or the ``LMJAX_COORDINATOR``,
``LMJAX_NUM_PROCESSES`` and ``LMJAX_PROCESS_ID`` environment variables); ``jax.distributed``
is initialised before anything else touches JAX.

Usage mistakes (unknown flags, bad config keys or values, a missing experiment file, data or a
tokenizer that does not fit the model) print one line and exit with status 2; a run that cannot
resume (e.g. a damaged checkpoint) prints one line and exits with status 1. Either way the
workdir's checkpoints and results are left as they were (``tests/test_bad_input.py``); set
``LMJAX_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from lmjax.config import ConfigError, apply_overrides, load_experiment, validate

USAGE_ERROR = 2
RUN_ERROR = 1
INTERRUPTED = 130  # the shell's status for Ctrl-C
DEBUG_ENV = "LMJAX_DEBUG"  # set to re-raise run errors with their traceback


class UsageError(Exception):
    """A mistake in the command line; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage dump) and exit with status 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    """Returns the parser of the ``lmjax`` command and its subcommands."""
    parser = _Parser(
        prog="lmjax", allow_abbrev=False,
        description="Train, sample from and plot language models defined by experiment files.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    train = commands.add_parser(
        "train", allow_abbrev=False,
        help="train an experiment (resumes from the workdir's latest checkpoint)",
        description="Train an experiment; extra --config.<key>=<value> flags override its fields.",
    )
    _add_config_flags(train)
    _add_distributed_flags(train)

    finetune = commands.add_parser(
        "finetune", allow_abbrev=False,
        help="fine-tune a pre-trained run on a task (resumes; keeps the best epoch)",
        description="Fine-tune the run named by the experiment's init.workdir on its task; extra "
        "--config.<key>=<value> flags override the experiment's fields.",
    )
    _add_config_flags(finetune)
    _add_distributed_flags(finetune)

    generate = commands.add_parser(
        "generate", allow_abbrev=False, help="sample from a trained run's latest checkpoint",
        description="Restore a run's checkpoint and tokenizer and print samples. Unset sampling "
        "flags default to the run's config.generate section.",
    )
    generate.add_argument("--workdir", required=True, help="the run directory to sample from")
    generate.add_argument("--prompt", help="the text to continue")
    generate.add_argument("--max_new_tokens", type=int, help="tokens to add to the prompt")
    generate.add_argument("--temperature", type=float, help="softmax temperature; 0 = greedy")
    generate.add_argument("--top_k", type=int, help="keep the k most likely tokens; 0 = off")
    generate.add_argument("--top_p", type=float, help="nucleus probability mass; 1 = off")
    generate.add_argument("--num_samples", type=int, help="how many continuations to print")
    generate.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    generate.add_argument("--step", type=int, help="checkpoint step to restore (default: latest)")

    fewshot = commands.add_parser(
        "fewshot", allow_abbrev=False,
        help="zero / one / few-shot evaluation of a trained causal LM (the GPT-3 protocol)",
        description="Score a trained run's latest checkpoint on the offline few-shot tasks "
        "(multiple choice by likelihood, free-form answers by decoding) and print the table.",
    )
    fewshot.add_argument("--workdir", required=True, help="the run directory to evaluate")
    fewshot.add_argument("--shots", default="0,1,4", help="demonstration counts, e.g. 0,1,4")
    fewshot.add_argument("--num_examples", type=int, default=50,
                         help="test examples per task (default 50)")
    fewshot.add_argument("--seed", type=int, default=0, help="demonstration sampling seed")
    fewshot.add_argument("--decoder", choices=("beam", "greedy"), default="beam",
                         help="free-form answers: beam search (width 4, length penalty 0.6) "
                         "or greedy")

    plot = commands.add_parser(
        "plot", allow_abbrev=False, help="plot a run's train/eval loss to a PNG",
        description="Write a PNG of train and eval loss against the step.",
    )
    plot.add_argument("workdir", help="the run directory (holds metrics.jsonl)")
    plot.add_argument("--out", help="PNG path (default: <workdir>/loss.png)")

    prepare = commands.add_parser(
        "prepare", allow_abbrev=False,
        help="prepare an experiment's data and tokenizer without training",
        description="Open the experiment's train and eval documents and train (or load) its "
        "tokenizer into the workdir, so that a later `lmjax train` starts at once.",
    )
    _add_config_flags(prepare)
    return parser


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, metavar="EXPERIMENT.py[:ARGS]",
        help="experiment file and its argument, e.g. experiments/gpt/gpt2.py:size=tiny",
    )
    parser.add_argument("--workdir", required=True, help="run directory (checkpoints, logs)")


def _add_distributed_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("multi-host")
    group.add_argument("--coordinator_address", help="host:port of process 0's coordinator")
    group.add_argument("--num_processes", type=int, help="number of processes in the run")
    group.add_argument("--process_id", type=int, help="this process's id, 0..num_processes-1")


# ----------------------------------------------------------------------------------------------
# Commands.
# ----------------------------------------------------------------------------------------------


def _initialize_distributed(args: argparse.Namespace) -> None:
    """Connects the processes of a multi-host run; must run before any other JAX call."""
    given = [args.coordinator_address, args.num_processes, args.process_id]
    from lmjax.train import distributed

    if all(value is None for value in given):
        try:
            distributed.initialize_from_environment()
        except ValueError as error:
            raise UsageError(str(error)) from None
        return
    if any(value is None for value in given):
        raise UsageError(
            "a multi-host run needs all of --coordinator_address, --num_processes and --process_id"
        )
    try:
        distributed.initialize_distributed(
            args.coordinator_address, args.num_processes, args.process_id
        )
    except ValueError as error:
        raise UsageError(str(error)) from None


def loaded_config(spec: str, overrides: Sequence[str]):
    """Returns the experiment's config with the overrides applied, validated.

    Raises:
        UsageError: for any problem in the experiment file, its argument or the overrides.
    """
    try:
        config = load_experiment(spec)
        apply_overrides(config, overrides)
        return validate(config)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    except ValueError as error:  # e.g. an unknown model preset or field from the model registry
        raise UsageError(f"{spec}: {error}") from None


def _check_mesh(config) -> None:
    """Builds the experiment's mesh and checks its rules on this machine's devices."""
    from lmjax.train import mesh as mesh_lib

    try:
        mesh = mesh_lib.build_mesh(config.mesh)
        mesh_lib.check_rules(config.rules, mesh)
    except ValueError as error:
        raise UsageError(f"config.mesh / config.rules: {error}") from None


def run_train(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    """``lmjax train``: loads, overrides and validates the config, then runs the train loop."""
    _initialize_distributed(args)
    config = loaded_config(args.config, overrides)
    _check_mesh(config)
    from lmjax.train import loop
    from lmjax.train.checkpoints import CheckpointError

    try:
        loop.train(config, args.workdir)  # prints its own summary line on process 0
    except CheckpointError:
        raise  # reported by main() with exit status 1
    except (ValueError, FileNotFoundError) as error:  # found while building the run: data, vocab
        if os.environ.get(DEBUG_ENV) or isinstance(error, io.UnsupportedOperation):
            raise
        raise UsageError(f"{error} (set {DEBUG_ENV}=1 for the traceback)") from None
    return 0


def run_finetune(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    """``lmjax finetune``: loads and overrides the fine-tuning experiment, then runs it."""
    _initialize_distributed(args)
    try:
        config = load_experiment(args.config)
        apply_overrides(config, overrides)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    except ValueError as error:
        raise UsageError(f"{args.config}: {error}") from None
    from lmjax.train import finetune
    from lmjax.train.checkpoints import CheckpointError

    try:
        finetune.finetune(config, args.workdir)  # prints its own summary line on process 0
    except CheckpointError:
        raise
    except (ValueError, FileNotFoundError, KeyError) as error:
        if os.environ.get(DEBUG_ENV):
            raise
        raise UsageError(f"{error} (set {DEBUG_ENV}=1 for the traceback)") from None
    return 0


def run_fewshot(args: argparse.Namespace) -> int:
    """``lmjax fewshot``: prints the zero / one / few-shot table of a trained run."""
    try:
        shots = tuple(int(k) for k in args.shots.split(","))
    except ValueError:
        raise UsageError(f"--shots={args.shots!r}: give comma-separated counts, e.g. 0,1,4") from None
    from lmjax.eval.few_shot import evaluate_trained_run

    try:
        table = evaluate_trained_run(args.workdir, shots, args.num_examples, args.seed,
                                     free_form_decoder=args.decoder)
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None
    print(table)
    return 0


def run_prepare(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    """``lmjax prepare``: opens the documents and trains (or loads) the tokenizer."""
    config = loaded_config(args.config, overrides)
    from lmjax import data

    try:
        train_docs = data.open_documents(config.data, config.data.train_split)
        eval_docs = data.open_documents(config.data, config.data.eval_split)
        tokenizer = data.load_or_train_tokenizer(config.tokenizer, train_docs, args.workdir)
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None
    print(
        f"{config.data.source}: {len(train_docs)} train / {len(eval_docs)} eval documents; "
        f"tokenizer vocab_size {tokenizer.vocab_size} in {os.path.abspath(args.workdir)}"
    )
    return 0


def run_plot(args: argparse.Namespace) -> int:
    """``lmjax plot``: writes the loss PNG and prints its path."""
    from lmjax.train.plot import plot_metrics

    try:
        print(plot_metrics(args.workdir, args.out))
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from None
    return 0


def generate_settings(config, args: argparse.Namespace) -> dict[str, Any]:
    """Returns the sampling settings: the flags given, else the run's ``config.generate``.

    Raises:
        UsageError: when a setting is out of range.
    """
    names = ("prompt", "max_new_tokens", "temperature", "top_k", "top_p", "num_samples")
    settings = {
        name: config.generate[name] if getattr(args, name) is None else getattr(args, name)
        for name in names
    }
    if (
        settings["max_new_tokens"] < 0 or settings["temperature"] < 0 or settings["top_k"] < 0
        or not 0 < settings["top_p"] <= 1 or settings["num_samples"] < 1
    ):
        raise UsageError(
            "sampling flags out of range: need --max_new_tokens >= 0, --temperature >= 0, "
            "--top_k >= 0, 0 < --top_p <= 1 and --num_samples >= 1"
        )
    return settings


def run_generate(args: argparse.Namespace) -> int:
    """``lmjax generate``: restores the run's params and tokenizer and prints samples.

    The parameters are restored alone onto one local device
    (:func:`lmjax.train.trained_run.load_trained_run`) and sampled with
    :func:`lmjax.decoding.generated_texts`; a temperature of 0 decodes greedily.
    """
    import jax

    from lmjax.decoding import generated_texts
    from lmjax.train.trained_run import load_trained_run

    try:
        run = load_trained_run(args.workdir, args.step)
        if run.config.objective.name != "causal_lm":
            raise ValueError(
                f"{args.workdir} trained a {run.config.model.family!r} model with the "
                f"{run.config.objective.name!r} objective; `lmjax generate` continues text with "
                "language models trained with 'causal_lm' (the GPT experiments)."
            )
        settings = generate_settings(run.config, args)
        texts = generated_texts(
            run.model, run.params, run.tokenizer,
            [settings["prompt"]] * settings["num_samples"], jax.random.key(args.seed),
            settings["max_new_tokens"], temperature=settings["temperature"],
            top_k=settings["top_k"], top_p=settings["top_p"],
        )
    except (FileNotFoundError, ValueError) as error:  # incl. CheckpointNotFoundError
        raise UsageError(str(error)) from None
    for index, text in enumerate(texts):
        print(f"=== sample {index + 1} (step {run.step}) ===")
        print(text)
    return 0


# ----------------------------------------------------------------------------------------------
# Entry point.
# ----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``lmjax`` command line; returns the exit status.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 2 for a usage or config mistake, 1 when a run cannot continue.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        if args.command in ("train", "prepare", "finetune"):
            run = {"train": run_train, "prepare": run_prepare, "finetune": run_finetune}
            return run[args.command](args, extras)
        if extras:
            raise UsageError(
                f"unrecognized arguments: {' '.join(extras)} (see `lmjax {args.command} --help`)"
            )
        if args.command == "plot":
            return run_plot(args)
        if args.command == "fewshot":
            return run_fewshot(args)
        return run_generate(args)
    except UsageError as error:
        print(f"lmjax: error: {_one_line_message(error)}", file=sys.stderr)
        return USAGE_ERROR
    except _run_errors() as error:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"lmjax: error: {_one_line_message(error)}", file=sys.stderr)
        return RUN_ERROR
    except KeyboardInterrupt:  # the loop has closed its checkpointer: finished saves are kept
        print("lmjax: interrupted", file=sys.stderr)
        return INTERRUPTED


def _one_line_message(error: BaseException) -> str:
    """Returns the error's message as one line: its lines joined by spaces, indentation dropped.

    Some messages lay out their fix over several lines (e.g. a TFDS dataset that is not
    prepared); the command prints every error as a single ``lmjax: error:`` line.
    """
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def _run_errors() -> tuple[type[BaseException], ...]:
    """Returns the errors that stop a run for a reason the user fixes (printed as one line)."""
    from lmjax.train.checkpoints import CheckpointError

    return (CheckpointError,)
