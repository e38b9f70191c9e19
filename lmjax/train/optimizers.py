"""Learning-rate schedules and optimizers (AdamW, Adafactor, LAMB) from an experiment's config.

The ``optimizer`` block of an experiment (see ``lmjax/config.py``) holds::

    name ('adamw' | 'adafactor' | 'lamb'), learning_rate, b1, b2, eps, weight_decay,
    weight_decay_mask ('matrices' | 'all' | 'none'),
    schedule ('warmup_cosine' | 'warmup_linear' | 'warmup_rsqrt' | 'constant'), warmup_steps,
    end_learning_rate_fraction, clip_grad_norm (0 = off)

References:
    GPT-1 ``warmup_linear``: openai/finetune-transformer-lm ``opt.py`` (linear warmup over a
    fraction of training, then ``1 - t/T``), and its L2 applied only to matrices unless
    ``--vector_l2`` (``/work/shared/specs/text-models.md`` section 1).
    GPT-3: Adam (0.9, 0.95), cosine decay to 10% of the peak, clip 1.0, wd 0.1 (section 12).
    The inverse-square-root schedule: Vaswani et al. 2017, section 5.3; T5's ``rsqrt_decay``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("warmup_cosine", "warmup_linear", "warmup_rsqrt", "constant")
OPTIMIZERS = ("adamw", "adafactor", "lamb")
WEIGHT_DECAY_MASKS = ("matrices", "all", "none")

# Leaf names that never get weight decay under the 'matrices' mask, even when a scanned layer stack
# has given them a leading [N] axis (so they are 2-d): biases and norm scales.
_NO_DECAY_LEAF_NAMES = ("bias", "scale")


def _field(cfg: Any, name: str, default: Any) -> Any:
    """Returns ``cfg[name]`` for a ConfigDict or dict, or ``default`` when the field is absent."""
    if isinstance(cfg, dict):
        return cfg.get(name, default)
    return cfg.get(name, default) if hasattr(cfg, "get") else getattr(cfg, name, default)


def make_schedule(opt_cfg: Any, total_steps: int) -> optax.Schedule:
    """Returns the learning-rate schedule ``step -> lr`` the optimizer block asks for.

    Every schedule warms up linearly from 0 to ``learning_rate`` over ``warmup_steps``; then:

    * ``warmup_cosine``: cosine decay to ``end_learning_rate_fraction * learning_rate`` at
      ``total_steps``.
    * ``warmup_linear``: GPT-1's schedule. With ``x = step / total_steps`` and
      ``w = warmup_steps / total_steps`` the factor is ``x / w`` while ``x <= w`` and
      ``1 - x`` afterwards (not rescaled to start at 1 after warmup, as in the reference), with
      the decay floored at ``end_learning_rate_fraction``: ``f + (1 - f) * (1 - x)``.
    * ``warmup_rsqrt``: ``learning_rate * sqrt(warmup_steps / step)`` after warmup.
    * ``constant``: ``learning_rate`` after warmup.

    Args:
        opt_cfg: the experiment's ``optimizer`` block.
        total_steps: the number of training steps (``train.steps``).

    Raises:
        ValueError: on an unknown schedule name or inconsistent step counts.
    """
    name = _field(opt_cfg, "schedule", "warmup_cosine")
    peak = float(_field(opt_cfg, "learning_rate", 1e-3))
    warmup = int(_field(opt_cfg, "warmup_steps", 0))
    end_fraction = float(_field(opt_cfg, "end_learning_rate_fraction", 0.0))
    if name not in SCHEDULES:
        raise ValueError(
            f"optimizer.schedule={name!r} is not a known schedule; use one of "
            f"{', '.join(SCHEDULES)}."
        )
    if total_steps < 1:
        raise ValueError(f"train.steps={total_steps}; it must be at least 1.")
    if warmup < 0 or warmup > total_steps:
        raise ValueError(
            f"optimizer.warmup_steps={warmup} must lie in [0, train.steps={total_steps}]; "
            "lower warmup_steps or raise train.steps."
        )
    if not 0.0 <= end_fraction <= 1.0:
        raise ValueError(
            f"optimizer.end_learning_rate_fraction={end_fraction} must lie in [0, 1] (a fraction "
            "of the peak learning rate)."
        )

    def warmup_factor(step: jax.Array) -> jax.Array:
        return step / max(warmup, 1)

    def schedule(step: jax.Array) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        in_warmup = step < warmup
        if name == "warmup_cosine":
            decay_steps = max(total_steps - warmup, 1)
            progress = jnp.clip((step - warmup) / decay_steps, 0.0, 1.0)
            cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
            after = end_fraction + (1.0 - end_fraction) * cosine
        elif name == "warmup_linear":
            x = jnp.clip(step / total_steps, 0.0, 1.0)
            after = end_fraction + (1.0 - end_fraction) * (1.0 - x)
        elif name == "warmup_rsqrt":
            after = jnp.sqrt(max(warmup, 1) / jnp.maximum(step, 1.0))
        else:  # constant
            after = jnp.ones_like(step)
        return peak * jnp.where(in_warmup, warmup_factor(step), after)

    return schedule


def weight_decay_mask(kind: str) -> Callable[[Any], Any] | None:
    """Returns an optax mask function (params -> tree of bools) for the weight-decay policy.

    Args:
        kind: ``'matrices'``: decay parameters with at least 2 dimensions, except leaves named
            ``bias`` or ``scale`` (biases and norm scales of a scanned stack are 2-d but are still
            vectors per layer); ``'all'``: decay everything; ``'none'``: decay nothing.

    Returns:
        The mask function, or None for ``'all'`` (optax's "no mask").
    """
    if kind not in WEIGHT_DECAY_MASKS:
        raise ValueError(
            f"optimizer.weight_decay_mask={kind!r} is not known; use one of "
            f"{', '.join(WEIGHT_DECAY_MASKS)}."
        )
    if kind == "all":
        return None
    if kind == "none":
        return lambda params: jax.tree_util.tree_map(lambda _: False, params)

    def matrices_only(params: Any) -> Any:
        def decays(path, leaf) -> bool:
            last = path[-1]
            leaf_name = str(getattr(last, "key", getattr(last, "name", last)))
            return jnp.ndim(leaf) >= 2 and leaf_name not in _NO_DECAY_LEAF_NAMES

        return jax.tree_util.tree_map_with_path(decays, params)

    return matrices_only


def frozen_labels(frozen: Sequence[str]) -> Callable[[Any], Any]:
    """Returns an optax label function: ``'frozen'`` under the top-level params ``frozen``."""

    def labels(params: Any) -> Any:
        return {
            name: jax.tree_util.tree_map(
                lambda _, label="frozen" if name in frozen else "trained": label, subtree
            )
            for name, subtree in params.items()
        }

    return labels


def make_optimizer(
    opt_cfg: Any, total_steps: int, frozen: Sequence[str] = ()
) -> optax.GradientTransformation:
    """Returns the optax optimizer the experiment's ``optimizer`` block describes.

    The chain is global-norm clipping (when ``clip_grad_norm > 0``) followed by the optimizer with
    the schedule from ``make_schedule``. Weight decay is decoupled and scaled by the learning rate
    for all three optimizers (AdamW's convention; for Adafactor the decay rate is multiplied by the
    schedule so ``weight_decay`` means the same thing whichever optimizer is chosen).

    Args:
        opt_cfg: the experiment's ``optimizer`` block.
        total_steps: the number of training steps.
        frozen: top-level parameter names that are never updated (a distillation teacher): their
            updates are zero, they carry no optimizer state and no weight decay, and the gradient
            clipping norm is taken over the trained parameters only.

    Raises:
        ValueError: on an unknown optimizer or mask name, or a negative clip / decay.
    """
    name = _field(opt_cfg, "name", "adamw")
    if name not in OPTIMIZERS:
        raise ValueError(
            f"optimizer.name={name!r} is not a known optimizer; use one of {', '.join(OPTIMIZERS)}."
        )
    schedule = make_schedule(opt_cfg, total_steps)
    b1 = float(_field(opt_cfg, "b1", 0.9))
    b2 = float(_field(opt_cfg, "b2", 0.999))
    eps = float(_field(opt_cfg, "eps", 1e-8))
    weight_decay = float(_field(opt_cfg, "weight_decay", 0.0))
    clip = float(_field(opt_cfg, "clip_grad_norm", 0.0))
    mask = weight_decay_mask(_field(opt_cfg, "weight_decay_mask", "matrices"))
    if weight_decay < 0 or clip < 0:
        raise ValueError(
            f"optimizer.weight_decay={weight_decay} and optimizer.clip_grad_norm={clip} must be "
            ">= 0 (0 turns them off)."
        )

    if name == "adamw":
        core = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=mask)
    elif name == "lamb":
        core = optax.lamb(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=mask)
    else:
        decay_rate = (lambda count: weight_decay * schedule(count)) if weight_decay else None
        core = optax.adafactor(
            learning_rate=schedule, weight_decay_rate=decay_rate, weight_decay_mask=mask
        )
    trained = optax.chain(optax.clip_by_global_norm(clip), core) if clip > 0 else core
    if not frozen:
        return trained
    return optax.multi_transform(
        {"trained": trained, "frozen": optax.set_to_zero()}, frozen_labels(tuple(frozen))
    )
