"""Argument checks at the Python boundary: each raises a ValueError that names the argument,
the value received and the valid choices or range (STYLE.md B5). Never `assert` on user input."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np


def choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return `value` if it is one of `choices`, else raise a ValueError listing them."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {sorted(map(str, choices))}, got {value!r}.")
    return value


def positive_int(name: str, value: Any) -> int:
    """Return `value` if it is an int >= 1 (bools rejected), else raise a ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    return int(value)


def nonnegative_int(name: str, value: Any) -> int:
    """Return `value` if it is an int >= 0, else raise a ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"`{name}` must be an integer >= 0, got {value!r}.")
    return int(value)


def positive(name: str, value: Any) -> float:
    """Return `value` as a float if it is finite and > 0, else raise a ValueError."""
    if isinstance(value, bool) or not _is_real(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}.")
    return float(value)


def nonnegative(name: str, value: Any) -> float:
    """Return `value` as a float if it is finite and >= 0, else raise a ValueError."""
    if isinstance(value, bool) or not _is_real(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")
    return float(value)


def in_range(name: str, value: Any, low: float, high: float, *, high_inclusive: bool = False) -> float:
    """Return `value` as a float if low <= value < high (or <= high), else raise a ValueError."""
    ok = _is_real(value) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and low <= value and (value <= high if high_inclusive else value < high)
    if not ok:
        bracket = "]" if high_inclusive else ")"
        raise ValueError(f"`{name}` must lie in [{low}, {high}{bracket}, got {value!r}.")
    return float(value)


def finite_array(name: str, value: Any) -> np.ndarray:
    """Return `value` as a numpy array if every entry is finite, else raise a ValueError that
    says how many entries are NaN or infinite and where the first one is."""
    arr = np.asarray(value)
    if arr.dtype.kind in "fc":
        bad = ~np.isfinite(arr)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"`{name}` must be finite, got {int(bad.sum())} NaN/Inf entries "
                f"(first at index {first}: {arr[first]!r})."
            )
    return arr


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating)
