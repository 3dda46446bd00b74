"""Argument checks of the public theory functions, made before tracing.

Every real argument (the variances, second moments, correlations) must be a real number, a
sequence of them or a real array; a string, None, a bool, a complex number or an object array
raises a TypeError, a NaN, an infinity or a value out of range a ValueError. Both name the
argument, show the value and say the valid range. Traced values (under jit or vmap) are checked for
their dtype only. Depths and widths are Python or numpy ints (not bools) within documented limits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxvg.nn import activations

MAX_DEPTH = 100_000  # most layers of `gradient_profile` and `jacobian_moments` (an up-front limit)
MAX_WIDTH = 10**9  # widest layer of `typical_log_rate`
MAX_PROFILE_ENTRIES = 10**8  # entries of one `gradient_profile` result (0.8 GB in float64)

VARIANCE = "a finite number >= 0 (a variance)"
SECOND_MOMENT = "a finite number > 0 (a second moment)"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_real(name: str, value: Any, ok: Callable[[np.ndarray], np.ndarray], what: str) -> None:
    """Raise unless `value` is a real scalar or array whose entries are finite and satisfy `ok`.

    Args:
      name: the argument's name, for the message.
      value: the argument.
      ok: elementwise predicate on the value as a float64 numpy array.
      what: the valid range in words, e.g. "a finite number >= 0 (a variance)".
    Raises:
      TypeError: `value` is not real (str, None, bool, complex, object), naming its type.
      ValueError: an entry is NaN, infinite or fails `ok`, naming the first such entry.
    """
    if isinstance(value, jax.core.Tracer):
        if not jnp.issubdtype(value.dtype, jnp.floating) and not jnp.issubdtype(value.dtype, jnp.integer):
            raise TypeError(f"`{name}` must be {what}, got a traced array of dtype {value.dtype}.")
        return
    wrong = value is None or isinstance(value, str | bytes | bool | np.bool_ | complex)
    arr = None
    if not wrong:
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError):  # ragged sequences
            wrong = True
    if wrong or arr is None or arr.dtype.kind not in "iuf":
        kind = type(value).__name__ if arr is None else f"{type(value).__name__} of dtype {arr.dtype}"
        raise TypeError(
            f"`{name}` must be {what}: a real number or an array of real numbers, got {_shown(value)} ({kind})."
        )
    arr = arr.astype(np.float64)
    bad = ~(np.isfinite(arr) & ok(arr))
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        shown = value if arr.ndim == 0 and isinstance(value, int | float) else arr[first].item()
        where = "" if arr.ndim == 0 else f" (entry {first})"
        raise ValueError(f"`{name}` must be {what}, got {shown!r}{where}.")


def checked_activation(activation: Any, sigma_w2: Any, sigma_b2: Any, **second_moments: Any):
    """The `Activation` for `activation`, after checking the variances and second moments.

    Args:
      activation: registry name, `Activation` or callable (`activations.get`).
      sigma_w2, sigma_b2: must be finite and >= 0.
      **second_moments: named arguments (q, q0) that must be finite and > 0.
    Returns:
      The resolved `activations.Activation`.
    Raises:
      TypeError, ValueError: as `check_real` and `activations.get`.
    """
    act = activations.get(activation)
    check_real("sigma_w2", sigma_w2, lambda a: a >= 0, VARIANCE)
    check_real("sigma_b2", sigma_b2, lambda a: a >= 0, VARIANCE)
    for name, value in second_moments.items():
        check_real(name, value, lambda a: a > 0, SECOND_MOMENT)
    return act


def bounded_int(name: str, value: Any, maximum: int) -> int:
    """`value` as an int if it is an int (not a bool) in [1, maximum], else a TypeError/ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(
            f"`{name}` must be an integer in [1, {maximum}], got {_shown(value)} ({type(value).__name__})."
        )
    if not 1 <= value <= maximum:
        raise ValueError(f"`{name}` must be an integer >= 1 and <= {maximum}, got {value!r}.")
    return int(value)


def check_entries(name: str, value: int, *args: Any, per_entry: int, maximum: int) -> None:
    """Raise a ValueError before computing if broadcast(args) x `per_entry` values exceed `maximum`."""
    shape = np.broadcast_shapes(*(np.shape(a) for a in args))
    entries = math.prod(shape) * per_entry
    if entries > maximum:
        raise ValueError(
            f"`{name}` = {value!r} with arguments of broadcast shape {shape} asks for {entries:.3g} values "
            f"({8 * entries / 1e9:.3g} GB in float64); at most {maximum:.0e}: pass fewer values or a smaller `{name}`."
        )


def float_args(*args: Any) -> tuple[jax.Array, ...]:
    """The (checked) arguments as jax arrays of one floating dtype, broadcast together."""
    args = tuple(jnp.asarray(a) if isinstance(a, list | tuple) else a for a in args)
    dtype = jnp.result_type(*args, float)
    return tuple(jnp.broadcast_arrays(*(jnp.asarray(a, dtype) for a in args)))
