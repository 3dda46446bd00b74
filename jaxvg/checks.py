"""Argument checks at the Python boundary: each raises an error that names the argument, the value
received and the valid choices or range. Never `assert` on user input.

A value of the wrong type (a string, None or a bool where a number is expected) raises
`ArgumentTypeError`, a TypeError that is also a ValueError, so that code catching either sees it;
a value of the right type out of range raises a ValueError. `check_memory` refuses, before anything
is allocated, a request that cannot fit in memory.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "ArgumentTypeError",
    "available_memory",
    "boolean",
    "check_memory",
    "choice",
    "converted",
    "finite_array",
    "format_bytes",
    "in_range",
    "nonnegative",
    "nonnegative_int",
    "positive",
    "positive_int",
    "real_array",
]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (e.g. a string where a number is expected).

    A TypeError, and also a ValueError so that callers written against the earlier
    ValueError keep catching it (numpy's `AxisError` is a ValueError and an IndexError the same way).
    """


def _type_name(value: Any) -> str:
    return type(value).__name__


def choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return `value` if it is one of `choices`, else raise a ValueError listing them (an
    `ArgumentTypeError` when every choice is a string and `value` is not)."""
    choices = list(choices)
    try:
        ok = value in choices
    except TypeError:  # e.g. an array compared with strings
        ok = False
    if not ok:
        message = f"`{name}` must be one of {sorted(map(str, choices))}, got {value!r}."
        if choices and all(isinstance(c, str) for c in choices) and not isinstance(value, str):
            raise ArgumentTypeError(message[:-1] + f" ({_type_name(value)}).")
        raise ValueError(message)
    return value


def boolean(name: str, value: Any) -> bool:
    """Return `value` if it is a bool (numpy bools too), else raise an `ArgumentTypeError`.

    Any non-empty string is truthy in Python, so `use_bias="no"` would silently mean True; only
    True and False are accepted.
    """
    if not isinstance(value, bool | np.bool_):
        raise ArgumentTypeError(f"`{name}` must be True or False, got {value!r} ({_type_name(value)}).")
    return bool(value)


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise ArgumentTypeError(f"`{name}` must be an integer >= {low}, got {value!r} ({_type_name(value)}).")
    if value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    return int(value)


def positive_int(name: str, value: Any) -> int:
    """Return `value` if it is an int >= 1 (bools rejected), else raise a ValueError (an
    `ArgumentTypeError` for a non-integer)."""
    return _check_int(name, value, 1)


def nonnegative_int(name: str, value: Any) -> int:
    """Return `value` if it is an int >= 0, else raise a ValueError (an `ArgumentTypeError` for a
    non-integer)."""
    return _check_int(name, value, 0)


def _check_real(name: str, value: Any, what: str) -> float:
    """`value` as a float if it is a real number (not a bool), else an ArgumentTypeError that reads
    "`name` {what}, got ...", e.g. what = "must be a finite number > 0"."""
    if isinstance(value, bool | np.bool_) or not _is_real(value):
        raise ArgumentTypeError(f"`{name}` {what}, got {value!r} ({_type_name(value)}).")
    return float(value)


def positive(name: str, value: Any) -> float:
    """Return `value` as a float if it is finite and > 0, else raise a ValueError (an
    `ArgumentTypeError` for a non-number)."""
    x = _check_real(name, value, "must be a finite number > 0")
    if not math.isfinite(x) or x <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}.")
    return x


def nonnegative(name: str, value: Any) -> float:
    """Return `value` as a float if it is finite and >= 0, else raise a ValueError (an
    `ArgumentTypeError` for a non-number)."""
    x = _check_real(name, value, "must be a finite number >= 0")
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")
    return x


def in_range(name: str, value: Any, low: float, high: float, *, high_inclusive: bool = False) -> float:
    """Return `value` as a float if low <= value < high (or <= high), else raise a ValueError (an
    `ArgumentTypeError` for a non-number)."""
    bracket = "]" if high_inclusive else ")"
    x = _check_real(name, value, f"must lie in [{low}, {high}{bracket}")
    ok = math.isfinite(x) and low <= x and (x <= high if high_inclusive else x < high)
    if not ok:
        raise ValueError(f"`{name}` must lie in [{low}, {high}{bracket}, got {value!r}.")
    return x


def real_array(name: str, value: Any) -> np.ndarray:
    """Return `value` as a numpy array of real numbers (bool, int or float entries), else raise an
    `ArgumentTypeError` naming its dtype (strings, objects, complex numbers, None)."""
    if value is None or isinstance(value, str | bytes):
        raise ArgumentTypeError(
            f"`{name}` must be an array of real numbers, got {value!r} ({_type_name(value)})."
        )
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as e:  # ragged nesting
        raise ArgumentTypeError(
            f"`{name}` must be an array of real numbers, got a {_type_name(value)} numpy cannot make an array "
            f"of ({e})."
        ) from None
    if arr.dtype.kind not in "biuf":
        raise ArgumentTypeError(
            f"`{name}` must be an array of real numbers, got {_type_name(value)} of dtype {arr.dtype}."
        )
    return arr


def finite_array(name: str, value: Any) -> np.ndarray:
    """Return `value` as a numpy array if it holds real numbers and every entry is finite, else
    raise: an `ArgumentTypeError` for strings, objects or complex numbers, a ValueError that says
    how many entries are NaN or infinite and where the first one is."""
    arr = real_array(name, value)
    if arr.dtype.kind == "f":
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


# --------------------------------------------------------------------------- memory


def format_bytes(n: float) -> str:
    """`n` bytes for a message, in binary units: "512 B", "1.5 GiB", "7.3 TiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def converted(convert: Any, value: Any, message: str) -> Any:
    """`convert(value)`, or an `ArgumentTypeError` with `message` (which names the argument, the
    value and the valid choices) when the conversion raises a TypeError or a ValueError."""
    try:
        return convert(value)
    except (TypeError, ValueError):
        raise ArgumentTypeError(message) from None


def available_memory(*, host: bool = False, device: Any = None) -> tuple[int, str]:
    """Memory free for new arrays, and where the number comes from.

    With `host=False`, `device` (default jax's first local device): an accelerator's
    `memory_stats()` (bytes_limit - bytes_in_use); CPU devices keep their arrays in host memory, so
    for them (and with `host=True`, for numpy arrays) the host's available memory (MemAvailable from
    /proc/meminfo, else os.sysconf's available physical pages). `jaxvg.scale.available_bytes`
    is this function for a given device.

    Returns:
      (bytes, source), source a short description such as "GPU memory_stats" or "host MemAvailable".
    """
    if not host:
        if device is None:
            import jax

            device = jax.local_devices()[0]
        stats = device.memory_stats() if hasattr(device, "memory_stats") else None
        if stats and "bytes_limit" in stats:
            free = int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
            return free, f"{device.platform.upper()} memory_stats"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "host MemAvailable (/proc/meminfo)"
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "host available pages (os.sysconf)"
    except (ValueError, OSError, AttributeError):  # pragma: no cover - no way to tell: do not refuse
        return 2**63 - 1, "unknown (not checked)"


def check_memory(nbytes: float, what: str, fix: str, *, host: bool = False) -> None:
    """Raise a ValueError before allocating when `nbytes` exceed the memory available.

    Args:
      nbytes: the estimated size of the request, in bytes.
      what: the request in words, naming its arguments in backticks and their values, e.g.
        "`n_train` = 10000000000 examples of 2 features".
      fix: what to change, e.g. "pass a smaller `n_train`".
      host: compare with the host's memory (numpy arrays) instead of the default device's.
    Raises:
      ValueError: "{what} needs about {nbytes}, more than the {free} available ({source}): {fix}."
    """
    free, source = available_memory(host=host)
    if nbytes > free:
        raise ValueError(
            f"{what} needs about {format_bytes(nbytes)} ({nbytes:.3g} bytes), more than the "
            f"{format_bytes(free)} available ({source}): {fix}."
        )
