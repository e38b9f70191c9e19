r"""Train-step throughput: lmjax's jitted train step against Hugging Face GPT-2 on PyTorch, same run.

Both frameworks train the same GPT-2 shape with AdamW in float32 on the CPU (PyTorch at 2 threads,
XLA:CPU with its own pool on the same cores). Each is kept alive in its own process and their
single training steps alternate, so both see the same machine state and neither's thread pool
spins beside the other's; the ratio is taken pair by pair (lmjax tokens/s over PyTorch tokens/s
for adjacent steps) and summarised by its median and range.
Separate-process comparisons on shared machines drift by ±10-35% and are not to be trusted.

Configurations (``--configs``):
    tiny   GPT-2, 4 layers, width 256, 4 heads, vocab 8192, sequence 256, batch 8
    124m   GPT-2 124M (12 layers, width 768, 12 heads, vocab 50257), sequence 256, batch 4

Run::

    .venv/bin/python benchmarks/train_throughput.py --configs tiny,124m --pairs 10

It prints one line per configuration with both frameworks' median tokens/s and the ratio, then the
command and the machine it ran on. Needs the test extras (torch, transformers): ``make test`` once,
or ``pip install -e '.[test]'``.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import platform
import shlex
import statistics
import sys
import time

import numpy as np


@dataclasses.dataclass(frozen=True)
class Shape:
    """One benchmark configuration: a GPT-2 shape and the batch it trains on."""

    name: str
    num_layers: int
    embed_dim: int
    num_heads: int
    vocab_size: int
    seq_len: int
    batch: int


SHAPES = {
    "tiny": Shape("tiny", 4, 256, 4, 8192, 256, 8),
    "124m": Shape("124m", 12, 768, 12, 50257, 256, 4),
}
LEARNING_RATE = 1e-4
DROPOUT = 0.1  # both frameworks train with GPT-2's dropout


def machine_description(torch_threads: int) -> str:
    """Returns the CPU model, core count and library versions of this machine."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    import jax
    import torch
    import transformers

    return (
        f"{cpu}; {os.cpu_count()} logical cores; {platform.platform()}; python {platform.python_version()}; "
        f"jax {jax.__version__} ({jax.devices()[0].platform}); torch {torch.__version__} "
        f"({torch_threads} threads); transformers {transformers.__version__}"
    )


def random_tokens(shape: Shape, seed: int) -> np.ndarray:
    """Returns int32 [batch, seq_len + 1] random token ids (inputs plus the shifted targets)."""
    return np.random.default_rng(seed).integers(0, shape.vocab_size, (shape.batch, shape.seq_len + 1),
                                                dtype=np.int32)


class LmjaxTrainer:
    """lmjax's generic train step (``lmjax.train.step``) on a GPT-2 of the given shape, one device."""

    def __init__(self, shape: Shape):
        import jax
        import ml_collections

        from lmjax import axes, models, objectives
        from lmjax.train import mesh as mesh_lib
        from lmjax.train import optimizers, step

        self._jax = jax
        model_cfg = models.config_dict(
            "gpt", "gpt2", vocab_size=shape.vocab_size, max_len=max(shape.seq_len, 256),
            num_layers=shape.num_layers, embed_dim=shape.embed_dim, num_heads=shape.num_heads,
            mlp_dim=4 * shape.embed_dim, embed_dropout=DROPOUT, attention_dropout=DROPOUT,
            residual_dropout=DROPOUT,
        )
        self.model = models.build(model_cfg)
        self.objective = objectives.get("causal_lm")
        opt_cfg = ml_collections.ConfigDict(dict(
            name="adamw", learning_rate=LEARNING_RATE, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
            weight_decay_mask="matrices", schedule="constant", warmup_steps=0,
            end_learning_rate_fraction=1.0, clip_grad_norm=0.0,
        ))
        tx = optimizers.make_optimizer(opt_cfg, total_steps=1_000_000)
        schedule = optimizers.make_schedule(opt_cfg, total_steps=1_000_000)
        self.mesh = mesh_lib.build_mesh([("data", 1), ("fsdp", 1), ("tensor", 1)], jax.devices()[:1])
        self.rules = mesh_lib.check_rules(axes.DEFAULT_RULES, self.mesh)
        tokens = random_tokens(shape, 0)
        init_inputs = {"inputs": jax.ShapeDtypeStruct(tokens[:, :-1].shape, np.int32)}
        self.state, shardings = step.init_state(self.model, tx, init_inputs, self.mesh, self.rules,
                                                jax.random.key(0))
        self.step_fn = step.make_train_step(self.model, self.objective, tx, schedule, self.mesh,
                                            self.rules, shardings)
        self.key = jax.random.key(1)
        self.count = 0

    def batch(self, tokens: np.ndarray) -> dict:
        """Returns the global causal-LM batch for [B, L+1] tokens (one document per row)."""
        from lmjax.train import step

        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        host = {
            "inputs": inputs, "targets": targets,
            "positions": np.broadcast_to(np.arange(inputs.shape[1], dtype=np.int32), inputs.shape).copy(),
            "segment_ids": np.ones_like(inputs), "weights": np.ones(inputs.shape, np.float32),
        }
        return step.host_batch_to_global(host, self.mesh, self.rules)

    def train_step(self, batch: dict) -> float:
        """Runs one optimizer step and returns its loss (blocking until it is computed)."""
        self.count += 1
        self.state, metrics = self.step_fn(self.state, batch, self._jax.random.fold_in(self.key, self.count))
        return float(metrics["loss"])


class TorchTrainer:
    """Hugging Face ``GPT2LMHeadModel`` with ``torch.optim.AdamW``, the same shape, float32, CPU."""

    def __init__(self, shape: Shape, threads: int):
        import torch
        import transformers

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        self._torch = torch
        config = transformers.GPT2Config(
            vocab_size=shape.vocab_size, n_positions=max(shape.seq_len, 256), n_embd=shape.embed_dim,
            n_layer=shape.num_layers, n_head=shape.num_heads, resid_pdrop=DROPOUT, embd_pdrop=DROPOUT,
            attn_pdrop=DROPOUT,
        )
        self.model = transformers.GPT2LMHeadModel(config).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)

    def batch(self, tokens: np.ndarray) -> object:
        """Returns the token tensor the model trains on (labels are shifted inside HF's loss)."""
        return self._torch.from_numpy(tokens[:, :-1].astype(np.int64))

    def train_step(self, batch: object) -> float:
        """Runs forward, backward and one AdamW update; returns the loss."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.model(input_ids=batch, labels=batch).loss
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def _trainer_worker(framework: str, shape: Shape, threads: int, connection) -> None:
    """Runs in its own process: builds one framework's trainer, then times a step per request."""
    trainer = LmjaxTrainer(shape) if framework == "lmjax" else TorchTrainer(shape, threads)
    batch = trainer.batch(random_tokens(shape, 1))
    connection.send("ready")
    while connection.recv() == "step":
        start = time.perf_counter()
        trainer.train_step(batch)  # blocks until the step's loss exists
        connection.send(time.perf_counter() - start)
    connection.close()


class TrainerProcess:
    """One framework's trainer kept alive in a child process and driven step by step."""

    def __init__(self, framework: str, shape: Shape, threads: int):
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_trainer_worker, args=(framework, shape, threads, child))
        self._process.start()
        if self._connection.recv() != "ready":
            raise RuntimeError(f"the {framework} trainer did not start")

    def step_seconds(self) -> float:
        """Returns the wall-clock seconds of one train step, timed inside the child."""
        self._connection.send("step")
        return self._connection.recv()

    def close(self) -> None:
        self._connection.send("stop")
        self._process.join(timeout=60)


def measure(shape: Shape, pairs: int, warmup: int, threads: int) -> dict:
    """Alternates single train steps of both frameworks and returns per-pair throughputs.

    Each framework runs in its own process, started one after the other so their set-ups do not
    overlap; only one of them computes at any moment.
    """
    trainers = {name: TrainerProcess(name, shape, threads) for name in ("lmjax", "torch")}
    try:
        for _ in range(warmup):  # the first lmjax call compiles; PyTorch allocates optimizer state
            for trainer in trainers.values():
                trainer.step_seconds()
        per_step_tokens = shape.batch * shape.seq_len
        rates = {"lmjax": [], "torch": []}
        ratios = []
        for pair in range(pairs):
            # Alternate which framework goes first so neither always follows the other.
            order = ("lmjax", "torch") if pair % 2 == 0 else ("torch", "lmjax")
            seconds = {name: trainers[name].step_seconds() for name in order}
            for name in rates:
                rates[name].append(per_step_tokens / seconds[name])
            ratios.append(seconds["torch"] / seconds["lmjax"])
    finally:
        for trainer in trainers.values():
            trainer.close()
    return {"lmjax": rates["lmjax"], "torch": rates["torch"], "ratio": ratios}


def summary_line(shape: Shape, result: dict) -> str:
    """Returns one line: the shape, both medians in tokens/s, and the ratio's median and range."""
    ratio = result["ratio"]
    return (
        f"{shape.name:5s} ({shape.num_layers}L/{shape.embed_dim}/vocab {shape.vocab_size}/"
        f"seq {shape.seq_len}/batch {shape.batch}): lmjax {statistics.median(result['lmjax']):8.0f} tok/s, "
        f"PyTorch+HF {statistics.median(result['torch']):8.0f} tok/s, ratio lmjax/PyTorch "
        f"median {statistics.median(ratio):.2f}x (min {min(ratio):.2f}, max {max(ratio):.2f}, "
        f"{len(ratio)} pairs)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="tiny,124m", help="comma-separated: " + ", ".join(SHAPES))
    parser.add_argument("--pairs", type=int, default=10, help="alternated step pairs per config")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per framework first")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.configs.split(",") if name.strip()]
    unknown = [name for name in names if name not in SHAPES]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; choose from {', '.join(SHAPES)}")
    for name in names:
        shape = SHAPES[name]
        print(summary_line(shape, measure(shape, args.pairs, args.warmup, args.threads)), flush=True)
    print("command:", " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    print("machine:", machine_description(args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
