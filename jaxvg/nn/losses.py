"""One loss registry, shared by analysis and training (the same names in `gradient_flow(..., loss=)` and `fit(..., loss=)`).

| name                   | outputs            | targets                                   |
|------------------------|--------------------|-------------------------------------------|
| "mse"                  | any shape          | same shape, float: mean of (out - y)^2    |
| "cross_entropy"        | (batch, ..., C)    | (batch, ...) integer labels in [0, C)     |
| "binary_cross_entropy" | (batch,) or (b, 1) | same shape as outputs, 0/1 (float or int) |

Every loss is a mean over the batch (for mse over all elements, for cross_entropy over every label
position, e.g. every token of (batch, seq, vocab) logits), so its value does not depend on the batch
size (or the sequence length).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvg import checks

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def _shape(name: str, value: Any) -> tuple[int, ...]:
    """The static shape of an array (or tracer); a TypeError naming `name` for anything else."""
    if isinstance(value, str | bytes) or value is None:
        raise checks.ArgumentTypeError(f"`{name}` must be an array, got {value!r} ({type(value).__name__}).")
    return tuple(jnp.shape(value))


def _same_shape(loss: str, outputs: Any, targets: Any, name: str = "targets") -> None:
    out, tgt = _shape("outputs", outputs), _shape(name, targets)
    if out != tgt:
        raise ValueError(
            f"`{name}` for loss={loss!r} must have the outputs' shape {out}, got {tgt} (no broadcasting: "
            "(batch, 1) outputs against (batch,) targets would average over batch^2 pairs; reshape, e.g. "
            "y[:, None])."
        )


def mse(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean over all elements of (outputs - targets)^2; shapes must match exactly (checked from the
    static shapes, also under jit: a ValueError names `targets`)."""
    _same_shape("mse", outputs, targets)
    return jnp.mean(jnp.square(outputs - targets))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy (natural log) of logits (batch, ..., classes) and integer labels
    (batch, ...): -log softmax(logits)[label] averaged over every label position.

    Logits (batch, classes) with labels (batch,) average over the examples; a sequence model's
    (batch, seq, vocab) logits with (batch, seq) labels average over all batch * seq tokens (each
    token weighs the same, whichever sequence it is in). Padding is not masked: a masked mean needs
    a callable loss(outputs, y).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxvg.nn import losses
      >>> probs = jnp.array([[[0.5, 0.5], [0.9, 0.1]], [[0.2, 0.8], [0.5, 0.5]]])  # (batch, seq, classes)
      >>> labels = jnp.array([[0, 0], [1, 1]])  # (batch, seq)
      >>> round(float(losses.cross_entropy(jnp.log(probs), labels)), 4)  # mean of -log p over 4 tokens
      0.4287

    Raises:
      ValueError: `labels` whose shape is not the logits' without the class axis, or logits without one.
      TypeError: non-integer `labels` (cast class labels stored as floats with `.astype(int)`).
    """
    out, lab = _shape("logits", logits), _shape("labels", labels)
    if len(out) < 1 or lab != out[:-1]:
        raise ValueError(
            f"`labels` for loss='cross_entropy' must be integer class labels of shape {out[:-1]} (the logits' "
            f"shape {out} without the class axis), got shape {lab}."
        )
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise checks.ArgumentTypeError(
            f"`labels` for loss='cross_entropy' must have an integer dtype, got {jnp.result_type(labels)}: "
            "pass class indices, e.g. labels.astype(int)."
        )
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean sigmoid cross-entropy (natural log) of logits and 0/1 labels of the same shape (checked
    from the static shapes: a ValueError names `labels`)."""
    _same_shape("binary_cross_entropy", logits, labels, "labels")
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.asarray(labels).astype(logits.dtype)))


LOSSES: dict[str, LossFn] = {
    "mse": mse,
    "cross_entropy": cross_entropy,
    "binary_cross_entropy": binary_cross_entropy,
}


def get(loss: str | LossFn) -> LossFn:
    """A loss function by name, or a callable `loss(outputs, targets) -> scalar` passed through.

    Raises:
      ValueError: unknown name (the message lists `LOSSES`); an `ArgumentTypeError` (a TypeError
        and a ValueError) for neither a string nor a callable.
    """
    if callable(loss):
        return loss
    if not isinstance(loss, str):
        raise checks.ArgumentTypeError(
            f"`loss` must be one of {sorted(LOSSES)} or a callable loss(outputs, targets) -> scalar, got "
            f"{loss!r} ({type(loss).__name__})."
        )
    checks.choice("loss", loss, LOSSES)
    return LOSSES[loss]


def accuracy(loss: str, outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Classification accuracy in [0, 1] for the classification losses; NaN for "mse".

    cross_entropy: argmax of logits; binary_cross_entropy: logit > 0.

    Raises:
      ValueError: `loss` is not a name in `LOSSES`.
    """
    checks.choice("loss", loss, LOSSES)
    if loss == "cross_entropy":
        return jnp.mean((jnp.argmax(outputs, axis=-1) == targets).astype(jnp.float32))
    if loss == "binary_cross_entropy":
        return jnp.mean(((outputs > 0) == (targets > 0.5)).astype(jnp.float32))
    return jnp.full((), jnp.nan, jnp.float32)


def check_targets(loss: str, targets, output_shape: tuple[int, ...], *, name: str = "y") -> None:
    """Check on the host, before tracing, that targets fit a named loss and the model's outputs.

    Args:
      loss: a name from `LOSSES` (callables are not checked).
      targets: the labels or regression targets (array-like).
      output_shape: the model's output shape for this batch, e.g. (batch, out_features).
      name: the argument name used in error messages.
    Raises:
      ValueError: shapes that do not match, labels out of range, non-integer class labels,
        non-0/1 binary labels, or NaN/Inf targets.
    """
    if callable(loss):
        return
    checks.choice("loss", loss, LOSSES)
    y = checks.finite_array(name, targets)
    out = tuple(output_shape)
    if loss == "mse":
        if y.shape != out:
            raise ValueError(
                f"`{name}` for loss='mse' must have the outputs' shape {out}, got {y.shape} "
                "(no broadcasting: reshape the targets, e.g. y[:, None])."
            )
    elif loss == "cross_entropy":
        if y.shape != out[:-1]:
            raise ValueError(
                f"`{name}` for loss='cross_entropy' must be integer labels of shape {out[:-1]}, got {y.shape}."
            )
        if y.size and (not np.all(np.equal(np.mod(y, 1), 0)) or y.min() < 0 or y.max() >= out[-1]):
            raise ValueError(
                f"`{name}` for loss='cross_entropy' must hold integer labels in [0, {out[-1]}), got values "
                f"in [{y.min()!r}, {y.max()!r}]."
            )
    elif loss == "binary_cross_entropy":
        if y.shape != out:
            raise ValueError(
                f"`{name}` for loss='binary_cross_entropy' must have the outputs' shape {out}, got {y.shape}."
            )
        if y.size and not np.all((y == 0) | (y == 1)):
            raise ValueError(
                f"`{name}` for loss='binary_cross_entropy' must hold 0/1 labels, got {np.unique(y)[:5]!r}."
            )
