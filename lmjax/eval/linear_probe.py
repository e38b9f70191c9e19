"""Linear probes: how much a frozen encoder's features say about a label.

A probe is a multinomial logistic regression fitted on fixed features (Alain & Bengio 2016,
"Understanding intermediate layers using linear classifier probes"); its held-out accuracy
measures what a representation makes linearly readable, without the confounds of fine-tuning.

* ``mean_pooled_features`` averages an encoder's final hidden states over the real tokens of each
  row (every encoder has them; BERT's and ALBERT's pooler is trained on NSP / SOP and RoBERTa and
  ELECTRA have none, so the mean is the feature all four share).
* ``fit_linear_probe`` standardises the features with the training set's statistics and fits the
  weights by full-batch L-BFGS on the mean cross-entropy plus an L2 penalty (the optimisation is
  convex, so the result does not depend on a learning-rate schedule).
* ``probe_accuracy`` is the fraction of held-out rows the probe labels correctly.

Axis legend: N rows, E feature width, C classes, L length.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["LinearProbe", "fit_linear_probe", "mean_pooled_features", "probe_accuracy"]


@dataclasses.dataclass(frozen=True)
class LinearProbe:
    """A fitted probe: ``argmax(((x - mean) / std) @ weights + bias)``.

    Attributes:
        mean, std: float32 [E] feature statistics of the training rows.
        weights: float32 [E, C].
        bias: float32 [C].
    """

    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray
    bias: np.ndarray

    def logits(self, features: np.ndarray) -> np.ndarray:
        """float32 [N, C] class scores of ``features`` [N, E]."""
        standardised = (np.asarray(features, np.float32) - self.mean) / self.std
        return standardised @ self.weights + self.bias

    def predict(self, features: np.ndarray) -> np.ndarray:
        """int [N] predicted classes."""
        return np.argmax(self.logits(features), axis=-1)


def mean_pooled_features(
    hidden_of: Callable[[dict[str, np.ndarray]], jax.Array],
    batches: Iterable[dict[str, np.ndarray]],
) -> np.ndarray:
    """float32 [N, E]: each row's final hidden states averaged over its real tokens.

    Args:
        hidden_of: ``batch -> hidden`` [B, L, E] (e.g. a jitted ``model.apply`` returning
            ``outputs['hidden']``).
        batches: dicts with ``'attention_mask'`` [B, L] (1 = real token) and the model's inputs.
    """
    pooled = []
    for batch in batches:
        hidden = np.asarray(hidden_of(batch), np.float32)  # [B, L, E]
        mask = np.asarray(batch["attention_mask"], np.float32)[..., None]  # [B, L, 1]
        pooled.append((hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0))
    return np.concatenate(pooled, axis=0)


def fit_linear_probe(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    l2: float = 1e-3,
    iterations: int = 300,
) -> LinearProbe:
    """Fits a multinomial logistic regression on ``features`` [N, E] and ``labels`` int [N].

    The loss is ``mean CE + l2 * |weights|^2`` on standardised features, minimised by L-BFGS
    (``optax.lbfgs`` with its zoom line search) from zeros.

    Raises:
        ValueError: on mismatched shapes or labels outside ``[0, num_classes)``.
    """
    features = np.asarray(features, np.float32)
    labels = np.asarray(labels)
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(
            f"features must be [N, E] and labels [N]; got {features.shape} and {labels.shape}."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}); got {labels.min()}..{labels.max()}."
        )
    mean = features.mean(axis=0)
    std = features.std(axis=0) + 1e-6
    x = jnp.asarray((features - mean) / std)  # [N, E]
    y = jnp.asarray(labels, jnp.int32)  # [N]

    def loss(params):
        logits = x @ params["weights"] + params["bias"]  # [N, C]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return ce + l2 * jnp.sum(params["weights"] ** 2)

    params = {
        "weights": jnp.zeros((features.shape[1], num_classes), jnp.float32),
        "bias": jnp.zeros((num_classes,), jnp.float32),
    }
    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    @jax.jit
    def run(params):
        def step(carry, _):
            params, state = carry
            value, grad = value_and_grad(params, state=state)
            updates, state = solver.update(
                grad, state, params, value=value, grad=grad, value_fn=loss
            )
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, solver.init(params)), None, iterations)
        return params

    fitted = jax.device_get(run(params))
    return LinearProbe(
        mean=mean, std=std, weights=np.asarray(fitted["weights"]), bias=np.asarray(fitted["bias"])
    )


def probe_accuracy(probe: LinearProbe, features: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of rows whose predicted class equals ``labels``."""
    return float(np.mean(probe.predict(features) == np.asarray(labels)))
