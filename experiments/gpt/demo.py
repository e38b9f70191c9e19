r"""The CPU demo: a 2-layer GPT-2 learns the embedded Python-docs corpus in a few minutes.

This is ``gpt2.py:size=tiny`` shrunk to what two CPU cores train in well under ten minutes: 2
pre-LN layers, 128 wide, 4 heads, a 2048-token SentencePiece BPE vocabulary trained into the
workdir, 128-token packed rows, 16 rows per step, no dropout, and a higher learning rate.

Run it, sample from it, and plot its curves::

    lmjax train --config experiments/gpt/demo.py --workdir runs/demo
    lmjax generate --workdir runs/demo --prompt 'def read(self, size=-1)'
    lmjax plot runs/demo

What it should reach: the loop logs the unigram baseline of the held-out split (the loss of
predicting every token by its training frequency, about 6.4 nats/token here). The final held-out
loss should be clearly below it: 3.83 nats/token after the 1500 steps in our run, whose whole
command (corpus, tokenizer, compilation, 3 minutes of training, samples, plot) took 3 min 34 s on
two otherwise idle CPU cores (the 600-step run reached 4.82 in 1 min 22 s of training). Samples should look like docstrings (``def`` headers,
prose about arguments and return values) without being correct Python.
"""

import os

from lmjax.config import load_experiment, parse_experiment_arg


def get_config(arg=None):
    """Returns the demo experiment; ``arg`` may set ``steps=<int>`` (default 1500)."""
    arg = parse_experiment_arg(arg, steps=1500)
    config = load_experiment(os.path.join(os.path.dirname(__file__), "gpt2.py") + ":size=tiny")

    model = config.model
    model.vocab_size = 2048  # also sets config.tokenizer.vocab_size (a shared reference)
    model.max_len = 128
    model.num_layers = 2
    model.embed_dim = 128
    model.num_heads = 4
    model.mlp_dim = 512
    model.embed_dropout = 0.0
    model.attention_dropout = 0.0
    model.residual_dropout = 0.0

    config.data.seq_len = 128

    config.train.steps = arg.steps
    config.optimizer.learning_rate = 3e-3
    # 8% of the run (120 of 1500 steps), following --config.train.steps.
    config.optimizer.warmup_steps = (config.train.get_ref("steps") * 0.08).to_int()
    config.optimizer.end_learning_rate_fraction = 0.1

    config.train.global_batch = 16
    config.train.eval_every = 100
    config.train.eval_batches = 4
    config.train.log_every = 10
    config.train.checkpoint_every = 200

    config.generate.max_new_tokens = 48
    return config
