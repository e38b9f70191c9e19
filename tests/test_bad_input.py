"""Bad input to ``lmjax train`` on a trained run's workdir: one clear line, and nothing is lost.

One tiny demo run through ``lmjax.cli.main`` (4 steps, checkpoints at steps 2 and 4, samples, a
plot), then, on that same workdir, each bad input of the issue given to ``python -m lmjax train``
(a subprocess, so that stderr is exactly what a user sees, library log lines included): an unknown
config key, a tokenizer with more ids than the model has embedding rows, an empty corpus file, a
TFDS ``data_dir`` that does not exist, and a truncated file in the newest checkpoint. Each must
exit with a non-zero status and print ONE stderr line that names the problem and the fix (no
traceback), and every file of the workdir (checkpoints, metrics.jsonl, config.json, samples, plot,
tokenizer, TensorBoard events) must be byte-identical afterwards, with no file added or removed.
"""

import hashlib
import os
import subprocess
import sys

from lmjax import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = "experiments/gpt/demo.py"
RESULT_FILES = (
    "metrics.jsonl", "config.json", "samples.txt", "loss.png", "tokenizer/sentencepiece.model",
)


def _file_digests(workdir):
    """Returns ``{path relative to workdir: sha256 hex digest}`` of every file under ``workdir``."""
    digests = {}
    for root, _, names in os.walk(workdir):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, workdir)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def _bad_run_problems(case, status, err, want_status, fragments, before, after):
    """Returns what is wrong with one bad run's exit status, stderr and effect on the workdir."""
    problems = []
    if status != want_status:
        problems.append(f"exit status {status}, expected {want_status}")
    lines = err.strip().splitlines()
    if len(lines) != 1 or not lines[0].startswith("lmjax: error: ") or "Traceback" in err:
        problems.append(f"stderr is not one 'lmjax: error:' line:\n{err[-3000:]}")
    else:
        problems += [f"stderr lacks {f!r}: {lines[0]}" for f in fragments if f not in lines[0]]
    changed = sorted(p for p in before.keys() & after.keys() if before[p] != after[p])
    added, removed = sorted(after.keys() - before.keys()), sorted(before.keys() - after.keys())
    for what, paths in (("changed", changed), ("added", added), ("removed", removed)):
        if paths:
            problems.append(f"{what} in the workdir: {', '.join(paths)}")
    return [f"{case}: {problem}" for problem in problems]


def test_bad_input_is_one_clear_line_and_keeps_checkpoints_and_results(
    capfd, tmp_path, tiny_run_overrides
):
    workdir = str(tmp_path / "run")
    train = ["train", "--config", DEMO, "--workdir", workdir, *tiny_run_overrides]
    status = cli.main(train)
    assert status == 0, capfd.readouterr().err[-3000:]
    capfd.readouterr()  # the run's own output (SentencePiece writes to the stdout descriptor)
    checkpoints = os.path.join(workdir, "checkpoints")
    assert sorted(os.listdir(checkpoints)) == ["2", "4"]
    for name in RESULT_FILES:
        assert os.path.getsize(os.path.join(workdir, name)) > 0, name

    empty_file = tmp_path / "empty.txt"
    empty_file.write_text("")
    missing_dir = str(tmp_path / "no_tfds_here")
    tokenizer_file = os.path.join(workdir, "tokenizer", "sentencepiece.model")  # 384 pieces
    step_dir = os.path.join(checkpoints, "4")
    cases = [
        ("unknown config key", ["--config.train.stpes=5"], 2,
         ["Unknown config key --config.train.stpes", "did you mean --config.train.steps"]),
        ("token ids >= the model's vocabulary",
         [f"--config.tokenizer.path={tokenizer_file}", "--config.model.vocab_size=256"], 2,
         ["the tokenizer has 384 tokens but the model's embedding has only "
          "model.vocab_size=256 rows", "Set --config.model.vocab_size=384"]),
        ("empty corpus file", [f"--config.data.source=text:{empty_file}"], 2,
         [f"{empty_file} (matched by data.source='text:{empty_file}') is empty",
          "Remove it or narrow the glob"]),
        ("missing TFDS data_dir",
         ["--config.data.source=tfds:lm1b", f"--config.data.data_dir={missing_dir}"], 2,
         [f"'lm1b' (split 'train') is not usable from data_dir '{missing_dir}': that directory "
          "does not exist", f"tfds build lm1b --data_dir={missing_dir}"]),
        # Asks for more steps, so a config.json written before the restore failed would differ.
        ("truncated checkpoint", ["--config.train.steps=6"], 1,
         [f"Checkpoint step 4 in {step_dir} is truncated or corrupted",
          f"mv {step_dir} {step_dir}.corrupt"]),
    ]
    failures = []
    for case, extra, want_status, fragments in cases:
        if case == "truncated checkpoint":
            state_files = [
                os.path.join(root, name)
                for root, _, names in os.walk(os.path.join(step_dir, "state"))
                for name in names
            ]
            largest = max(state_files, key=os.path.getsize)
            with open(largest, "r+b") as f:
                f.truncate(os.path.getsize(largest) // 2)
        before = _file_digests(workdir)
        bad_run = subprocess.run(
            [sys.executable, "-m", "lmjax", *train, *extra],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )
        failures += _bad_run_problems(
            case, bad_run.returncode, bad_run.stderr, want_status, fragments, before,
            _file_digests(workdir),
        )
    assert not failures, "\n".join(failures)
