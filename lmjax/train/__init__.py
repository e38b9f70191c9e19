"""Training: state, optimizers, mesh, the generic step, checkpoints, the loop, logging, plots,
and loading a finished run back for inference (``lmjax.train.trained_run``).

Import the submodule you need (``lmjax.train.loop``, ``lmjax.train.checkpoints``, ...); this package
imports nothing itself so that ``lmjax plot`` and friends stay quick and light.
"""
