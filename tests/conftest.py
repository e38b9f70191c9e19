"""Test setup: eight fake CPU devices, set before JAX is imported anywhere; tiny-run fixtures.

The fixtures here describe one tiny training run of ``experiments/gpt/demo.py`` on a text corpus
of standard-library docstrings; the train, resume and bad-input tests all run it.
"""

import ast
import glob
import os
import sys
import sysconfig

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Command-line overrides that shrink experiments/gpt/demo.py to the same tiny GPT on a text corpus
# ('{corpus}' is filled in by the ``tiny_run_overrides`` fixture). Dropout is on, so runs that
# must match also prove that every step draws the same dropout key.
_RUN_OVERRIDES = (
    "--config.model.vocab_size=384",
    "--config.model.max_len=32",
    "--config.model.embed_dim=64",
    "--config.model.mlp_dim=128",
    "--config.model.residual_dropout=0.1",
    "--config.data.source=text:{corpus}/{{split}}/*.txt",
    "--config.data.seq_len=32",
    "--config.optimizer.schedule=constant",
    "--config.optimizer.warmup_steps=0",
    "--config.train.steps=4",
    "--config.train.global_batch=16",
    "--config.train.eval_every=3",
    "--config.train.eval_batches=1",
    "--config.train.log_every=1",
    "--config.train.checkpoint_every=2",
    "--config.generate.max_new_tokens=4",
    "--config.generate.num_samples=1",
)
DEMO_EXPERIMENT = "experiments/gpt/demo.py"


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """Returns a directory with ``train/`` and ``validation/`` text files of stdlib docstrings."""
    root = tmp_path_factory.mktemp("corpus")
    for split in ("train", "validation"):
        os.makedirs(root / split)
    written = 0
    for path in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py"))):
        try:
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        docstrings = [
            ast.get_docstring(node)
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node)
        ]
        if not docstrings:
            continue
        split = "validation" if written % 8 == 0 else "train"
        with open(root / split / (os.path.basename(path) + ".txt"), "w", encoding="utf-8") as f:
            f.write("\n\n".join(docstrings)[:3000])
        written += 1
        if written == 40:
            break
    assert written == 40, "the standard library should have 40 modules with docstrings"
    return str(root)


@pytest.fixture(scope="session")
def tiny_run_overrides(tiny_corpus):
    """Returns the ``--config.*`` overrides that make demo.py a 4-step run of the tiny GPT."""
    return [item.format(corpus=tiny_corpus) for item in _RUN_OVERRIDES]


@pytest.fixture(scope="session")
def tiny_run_config(tiny_run_overrides):
    """Returns a factory ``(*extra_overrides) -> config`` of the tiny demo run."""
    from lmjax.config import apply_overrides, load_experiment, validate

    def make(*extra):
        config = load_experiment(DEMO_EXPERIMENT)
        apply_overrides(config, list(tiny_run_overrides) + list(extra))
        return validate(config)

    return make


@pytest.fixture(scope="session")
def train_command():
    """Returns ``(workdir, *args) -> argv`` of ``python -m lmjax train`` of demo.py in workdir."""

    def make(workdir, *args):
        return [
            sys.executable,
            "-m",
            "lmjax",
            "train",
            "--config",
            DEMO_EXPERIMENT,
            "--workdir",
            str(workdir),
            *args,
        ]

    return make
