"""Host-side checks and views that every measure runs before tracing.

`check_x` (a batch axis and the model's input size), `check_loss` (a loss and its targets), `check_precision` (a matmul precision by any
of jax's names), the evaluation or training view of a model (`mode_view`, `has_active_dropout`) and
the RNG handling of a measure (`as_key`, `reseed`). `jaxvg.measure.engine` re-exports every name
here (`engine.check_x` and so on), where the measures read them.

Example:
  >>> from jaxvg.measure import host
  >>> host.check_precision("float32"), host.check_x_features(3, [[1.0, 2.0, 3.0]]).shape
  ('highest', (1, 3))
"""

from __future__ import annotations

import contextlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvg import checks
from jaxvg.nn import contracts, losses

__all__ = [
    "PRECISIONS",
    "as_key",
    "check_loss",
    "check_precision",
    "check_x",
    "check_x_features",
    "has_active_dropout",
    "mode_view",
    "precision_scope",
    "reseed",
]

PRECISIONS = ("default", "high", "highest")
"""Canonical matmul precisions (`jax.lax.Precision` names, lower case); `check_precision` also
accepts jax's aliases ("float32", "tensorfloat32", "bfloat16", "bfloat16_3x", "fastest") and
`jax.lax.Precision` members."""

_PRECISION_ALIASES = {
    "default": "default",
    "fastest": "default",
    "bfloat16": "default",
    "high": "high",
    "tensorfloat32": "high",
    "bfloat16_3x": "high",
    "highest": "highest",
    "float32": "highest",
}


def check_precision(precision: Any, name: str = "precision") -> str:
    """`precision` as a canonical name in `PRECISIONS` ("default", "high", "highest"), from a jax
    name or a `jax.lax.Precision`; `name` is the argument the error message names.

    Raises:
      ValueError: an unknown name; `jaxvg.checks.ArgumentTypeError` (a TypeError and a ValueError)
        for a value that is neither a string nor a `jax.lax.Precision`. The message names the
        argument, the value and the choices.
    """
    if isinstance(precision, jax.lax.Precision):
        return precision.name.lower()
    if isinstance(precision, str) and precision.lower() in _PRECISION_ALIASES:
        return _PRECISION_ALIASES[precision.lower()]
    error = ValueError if isinstance(precision, str) else checks.ArgumentTypeError
    raise error(
        f"`{name}` must be one of {sorted(_PRECISION_ALIASES)} or a jax.lax.Precision, got {precision!r}."
    )


def precision_scope(precision: str | None) -> contextlib.AbstractContextManager:
    """`jax.default_matmul_precision(precision)`, or no change when `precision` is None (a pure
    kernel called inside the caller's own precision scope)."""
    return contextlib.nullcontext() if precision is None else jax.default_matmul_precision(precision)


def mode_view(model: nnx.Module, train: bool) -> nnx.Module:
    """The model's evaluation view (`deterministic=True`, `use_running_average=True`) or, with
    `train=True`, its training view; the model itself is not changed."""
    return nnx.view(model, deterministic=not train, use_running_average=not train, raise_if_not_found=False)


def has_active_dropout(model: nnx.Module) -> bool:
    """Whether some `nnx.Dropout` of `model` has a rate > 0 and is not deterministic."""
    for _, m in nnx.iter_modules(model):
        if isinstance(m, nnx.Dropout) and m.rate > 0 and not m.deterministic:
            return True
    return False


def as_key(key: Any) -> jax.Array:
    """A typed `jax.random.key` from a typed key or a raw uint32[2] PRNGKey; TypeError otherwise."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if key.dtype == jnp.uint32 and key.shape[-1:] == (2,):
        return jax.random.wrap_key_data(key)
    raise TypeError(f"`key` must be a jax.random.key (or a raw uint32[2] PRNGKey), got {key!r}.")


def reseed(tree: Any, key: jax.Array) -> Any:
    """Replace every `nnx.RngKey` in `tree` by keys derived from `key` (fold_in by position; a stacked
    key array gets one key per entry) and every `nnx.RngCount` by 0: RNG use (dropout) then depends on
    `key`, not on the model's counters."""
    counter = iter(range(1, 1 << 30))

    def f(v):
        if isinstance(v, nnx.RngKey):
            k = jax.random.fold_in(key, next(counter))
            old = v[...]
            return v.replace(jax.random.split(k, old.shape) if old.ndim else k)
        if isinstance(v, nnx.RngCount):
            return v.replace(jnp.zeros_like(v[...]))
        return v

    return jax.tree.map(f, tree, is_leaf=lambda v: isinstance(v, nnx.Variable))


def check_x(model: contracts.BlockModel, x: Any) -> jax.Array:
    """`x` as a jax array with a leading batch axis and, where the model states its input size
    (`contracts.input_features`), that many features in its last axis.

    Raises:
      ValueError: no batch axis, or the wrong number of features.
    """
    return check_x_features(contracts.input_features(model), x)


def check_x_features(d_in: int | None, x: Any) -> jax.Array:
    """`check_x` given the model's input size `d_in` (None: unknown)."""
    if not isinstance(x, jax.Array):  # jax arrays as they are (no copy, no dispatch)
        if not hasattr(x, "shape"):  # array-likes go to jnp.asarray as they are; lists etc. via numpy
            x = np.asarray(x)
        x = jnp.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"`x` must have a leading batch axis, got shape {x.shape}.")
    if d_in is not None and x.shape[-1] != d_in:
        raise ValueError(
            f"`x` must have {d_in} features in its last axis (the model's input size), got shape {x.shape}."
        )
    return x


def check_loss(loss: Any, y: Any) -> None:
    """`loss` is a name in `jaxvg.nn.losses.LOSSES` (then targets `y` are required) or a callable.

    Raises:
      ValueError: an unknown loss name, or a named loss with `y` None.
      TypeError: `loss` neither a string nor a callable.
    """
    if isinstance(loss, str):
        checks.choice("loss", loss, losses.LOSSES)
        if y is None:
            raise ValueError(
                f"`y` is required for the named loss {loss!r}, got None; pass targets, or a callable `loss`."
            )
    elif not callable(loss):
        raise TypeError(f"`loss` must be one of {sorted(losses.LOSSES)} or a callable, got {loss!r}.")
