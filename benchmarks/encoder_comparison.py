r"""BERT vs RoBERTa-style vs ALBERT vs ELECTRA at equal pre-training compute on the embedded corpus.

The comparison the papers make (RoBERTa §4, ALBERT §4.3, ELECTRA §3.3), at CPU scale: the four
tiny experiments of ``experiments/encoders`` (the same 4-layer, 128-wide encoder shape, 2048-piece
SentencePiece vocabulary, 128-token rows, batch 32) are each pre-trained for the number of steps
that spends the same training FLOPs as ``--budget_steps`` steps of BERT. A step's FLOPs are XLA's
own count for the compiled train step (``cost_analysis`` of the unrolled-layer program: the
generator and discriminator for ELECTRA, the shared layer applied every layer for ALBERT).

Each trained encoder is then frozen and probed: a linear classifier on its mean-pooled final
hidden states learns which standard-library package a 126-token passage of documentation comes
from (``lmjax.data.package_passages``: 8 packages, split by module; the pre-training saw these
texts, never their labels). A randomly initialised BERT of the same shape is probed too: the
floor that pre-training must clear. Held-out masked-token losses are printed next to the loss of
guessing each masked token by its training frequency (the unigram floor); they are not comparable
across rows (ELECTRA's generator is a quarter as wide, ALBERT masks n-grams), the probe accuracy
is.

Run::

    .venv/bin/python benchmarks/encoder_comparison.py --workdir runs/encoder_comparison

It trains the four runs (resuming or skipping any that are done), prints one markdown table and
writes ``comparison.md`` and ``pretraining_curves.png`` (MLM-type loss against training FLOPs) to
the workdir, then prints the command and the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time

import numpy as np

EXPERIMENTS = {
    "BERT (MLM + NSP)": "bert.py",
    "RoBERTa-style (MLM, dynamic, full sentences)": "roberta.py",
    "ALBERT (shared layer, n-gram MLM + SOP)": "albert.py",
    "ELECTRA (replaced-token detection)": "electra.py",
}
# The loss each objective logs for its masked-token prediction (ELECTRA: the generator's).
MLM_METRIC = {
    "bert.py": "mlm_loss", "roberta.py": "loss", "albert.py": "mlm_loss",
    "electra.py": "generator_loss",
}
HERE = os.path.dirname(os.path.abspath(__file__))
EXPERIMENT_DIR = os.path.join(os.path.dirname(HERE), "experiments", "encoders")


def experiment(name: str, overrides: list[str]):
    """The tiny variant of an encoder experiment file with ``--config.*`` overrides applied."""
    from lmjax.config import apply_overrides, load_experiment, validate

    config = load_experiment(os.path.join(EXPERIMENT_DIR, name) + ":size=tiny")
    apply_overrides(config, overrides)
    return validate(config)


def train_step_flops(config, workdir: str) -> float:
    """XLA's FLOP count of one compiled train step of ``config`` (layers unrolled, so that
    the count covers every layer rather than one pass of a scanned loop body)."""
    import jax

    from lmjax.config import apply_overrides
    from lmjax.train import loop
    from lmjax.train import step as step_lib
    from lmjax.train.state import abstract_train_state

    config = config.copy_and_resolve_references()
    apply_overrides(config, ["--config.model.scan_layers=false"])
    mesh, rules = loop.build_mesh_and_rules(config)
    tokenizer = loop.build_tokenizer(config, workdir)
    model, objective, tx, schedule = loop.build_model_and_optimizer(config, tokenizer)
    _, eval_batches = loop.build_batches(config, tokenizer)
    init_inputs = loop.model_init_inputs(objective, eval_batches[0])
    abstract_state, shardings = abstract_train_state(model, tx, init_inputs, mesh, rules)
    train_step = step_lib.make_train_step(model, objective, tx, schedule, mesh, rules, shardings)
    batch = step_lib.host_batch_to_global(eval_batches[0], mesh, rules)
    cost = train_step.lower(abstract_state, batch, jax.random.key(0)).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def trained(config, workdir: str) -> dict:
    """Trains ``config`` in ``workdir`` unless its last checkpoint is already the final step."""
    from lmjax.train import loop
    from lmjax.train.checkpoints import Checkpointer, checkpoint_directory

    directory = checkpoint_directory(workdir)
    if os.path.isdir(directory):
        with Checkpointer(directory, read_only=True) as ckpt:
            if ckpt.latest_step() == config.train.steps:
                return {"skipped": True}
    start = time.time()
    summary = loop.train(config, workdir)
    return dict(summary, seconds=time.time() - start)


def probe_features(model, params, rows: dict, batch_size: int = 64) -> np.ndarray:
    """Mean-pooled final hidden states of ``rows`` under ``params``."""
    import jax

    from lmjax.eval.linear_probe import mean_pooled_features

    @jax.jit
    def hidden_of(batch):
        inputs = {k: batch[k] for k in ("inputs", "token_type_ids", "attention_mask")}
        return model.apply({"params": params}, **inputs, deterministic=True)["hidden"]

    batches = (
        {k: v[i : i + batch_size] for k, v in rows.items() if k != "labels"}
        for i in range(0, len(rows["labels"]), batch_size)
    )
    return mean_pooled_features(hidden_of, batches)


def probe(model, params, task) -> float:
    """Held-out accuracy of a linear probe on the package task."""
    from lmjax.eval.linear_probe import fit_linear_probe, probe_accuracy

    train_x = probe_features(model, params, task.train)
    test_x = probe_features(model, params, task.test)
    fitted = fit_linear_probe(train_x, task.train["labels"], len(task.packages))
    return probe_accuracy(fitted, test_x, task.test["labels"])


def package_task(tokenizer, seq_len: int):
    """The package-classification passages of the whole corpus, in ``tokenizer``'s ids."""
    from lmjax.data import encoder_special_ids
    from lmjax.data.package_passages import package_passages
    from lmjax.data.python_docs import python_docs_records

    documents = [
        (record["source"].decode(), record["text"].decode())
        for split in ("train", "validation")
        for record in python_docs_records(split)
    ]
    return package_passages(documents, tokenizer, encoder_special_ids(tokenizer), seq_len=seq_len)


def masked_token_unigram_loss(config, tokenizer) -> float:
    """The held-out loss of guessing every masked token by its training frequency.

    Masking picks positions uniformly among the non-special real tokens, so this is the unigram
    model's mean loss over those tokens of the eval rows (fitted on 64 training batches).
    """
    from lmjax import data
    from lmjax.eval.perplexity import unigram_baseline_loss

    special = np.asarray(data.encoder_special_ids(tokenizer).special_ids)

    def tokens_and_weights(batches):
        inputs = np.concatenate([b["inputs"] for b in batches])
        real = np.concatenate([b["attention_mask"] for b in batches]) > 0
        return inputs, (real & ~np.isin(inputs, special)).astype(np.float64)

    train = data.train_batches(config.data, tokenizer, config.train.global_batch)
    fit_tokens, fit_weights = tokens_and_weights([next(train) for _ in range(64)])
    held_out = data.eval_batches(
        config.data, tokenizer, config.train.global_batch, config.train.eval_batches
    )
    eval_tokens, eval_weights = tokens_and_weights(held_out)
    return unigram_baseline_loss(
        fit_tokens, eval_tokens, tokenizer.vocab_size, fit_weights, eval_weights
    )


def last_eval(workdir: str) -> dict:
    from lmjax.train.logging import read_metrics

    evals = [r for r in read_metrics(workdir) if r.get("split") == "eval"]
    return evals[-1] if evals else {}


def random_init_probe(config, task) -> float:
    """The probe on a randomly initialised copy of ``config``'s model (the floor)."""
    import jax
    import jax.numpy as jnp
    import flax.linen as nn

    from lmjax import models

    model = models.build(config.model)
    shape = (1, config.data.seq_len)
    variables = model.init(
        {"params": jax.random.key(0), "sample": jax.random.key(0)},
        jnp.zeros(shape, jnp.int32), jnp.zeros(shape, jnp.int32), jnp.ones(shape, jnp.int32),
    )
    return probe(model, nn.meta.unbox(variables["params"]), task)


def curves_plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmjax.train.logging import read_metrics

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        metric = MLM_METRIC[row["file"]]
        points = [
            (r["step"] * row["flops_per_step"], r[metric])
            for r in read_metrics(row["workdir"])
            if r.get("split", "train") == "train" and metric in r
        ]
        if points:
            x, y = zip(*points)
            ax.plot(x, y, label=f"{row['name']} [{metric}]")
    ax.set_xlabel("training FLOPs (XLA count)")
    ax.set_ylabel("masked-token loss (nats)")
    ax.set_title("Pre-training at equal compute on the embedded corpus")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/encoder_comparison")
    parser.add_argument("--budget_steps", type=int, default=300,
                        help="BERT's steps; the others get the same training FLOPs")
    parser.add_argument("--override", action="append", default=[],
                        help="--config.* override applied to every experiment (repeatable)")
    args = parser.parse_args(argv)
    from lmjax.train.trained_run import load_trained_run

    os.makedirs(args.workdir, exist_ok=True)
    rows = []
    for name, file in EXPERIMENTS.items():
        workdir = os.path.join(os.path.abspath(args.workdir), file.removesuffix(".py"))
        config = experiment(file, args.override)
        rows.append(dict(name=name, file=file, workdir=workdir,
                         flops_per_step=train_step_flops(config, workdir)))
    budget = args.budget_steps * rows[0]["flops_per_step"]
    for row in rows:
        steps = max(1, round(budget / row["flops_per_step"]))
        overrides = args.override + [f"--config.train.steps={steps}"]
        row["steps"] = steps
        row["run"] = trained(experiment(row["file"], overrides), row["workdir"])
        row["eval"] = last_eval(row["workdir"])
        run = load_trained_run(row["workdir"])
        task = package_task(run.tokenizer, run.config.data.seq_len)
        row["probe"] = probe(run.model, run.params, task)
        row["task"] = task
    first = load_trained_run(rows[0]["workdir"])
    floor = random_init_probe(first.config, rows[0]["task"])
    unigram = masked_token_unigram_loss(first.config, first.tokenizer)
    test_labels = rows[0]["task"].test["labels"]
    chance = float(np.bincount(test_labels).max() / len(test_labels))

    lines = [
        "| pre-training (tiny, 4 x 128) | steps | train GFLOPs | held-out masked-token loss "
        "| other held-out metric | linear probe accuracy |",
        "|---|---|---|---|---|---|",
    ]
    other = {"bert.py": "nsp_accuracy", "albert.py": "sop_accuracy",
             "electra.py": "replaced_recall", "roberta.py": "accuracy"}
    for row in rows:
        ev = row["eval"]
        metric = MLM_METRIC[row["file"]]
        lines.append(
            f"| {row['name']} | {row['steps']} | {row['steps'] * row['flops_per_step'] / 1e9:.0f} "
            f"| {ev.get(metric, float('nan')):.3f} ({metric}) "
            f"| {other[row['file']]} {ev.get(other[row['file']], float('nan')):.3f} "
            f"| {row['probe']:.3f} |"
        )
    lines.append(
        f"| unigram frequencies / random-init BERT (floors) | 0 | 0 | {unigram:.3f} | - "
        f"| {floor:.3f} |"
    )
    lines.append("")
    lines.append(
        f"Probe: {len(rows[0]['task'].train['labels'])} training / {len(test_labels)} held-out "
        f"passages of {len(rows[0]['task'].packages)} packages; majority-class accuracy "
        f"{chance:.3f}."
    )
    table = "\n".join(lines)
    print(table)
    with open(os.path.join(args.workdir, "comparison.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.workdir, "comparison.json"), "w") as f:
        json.dump([{k: v for k, v in r.items() if k not in ("task", "run")} for r in rows], f,
                  indent=2, default=str)
    curves_plot(rows, os.path.join(args.workdir, "pretraining_curves.png"))
    import jax

    print(f"\ncommand: {' '.join(shlex.quote(a) for a in [sys.executable] + sys.argv)}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{platform.platform()}, jax {jax.__version__} ({jax.devices()[0].platform})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
