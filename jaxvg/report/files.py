"""Result files: strict JSON, atomic writes, and output paths checked before any work is done.

JSON is strict (RFC 8259): NaN and ±Inf become `null`, because Python's default `NaN` token is not
JSON and breaks `jq`, JavaScript and most other readers. `np.asarray(values, dtype=float)` turns
the `null`s back into NaN. Every file is written atomically (`open_atomic`: a temporary file in the
same directory, then `os.replace`), so an interrupted run never leaves a half-written file behind.

Paths are `str` or `os.PathLike`; an empty path ("") is refused with a ValueError, because it
would silently mean the working directory (and `f"{out}/x.csv"` the root directory). Call
`check_writable(out_dir)` before a long computation: an unwritable output directory is found in
milliseconds, not when the first result is stored.

Example:
  >>> import math, tempfile
  >>> from jaxvg import report
  >>> out = report.check_writable(tempfile.mkdtemp())
  >>> path = report.write_json(out / "m.json", {"gain": [-0.1, math.nan]})
  >>> report.read_json(path)
  {'gain': [-0.1, None]}
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import math
import os
import pathlib
import tempfile
from collections.abc import Iterator, Mapping
from typing import IO, Any

import numpy as np

__all__ = [
    "as_path",
    "check_writable",
    "open_atomic",
    "read_json",
    "to_jsonable",
    "write_json",
    "write_summary",
    "write_text",
]


def as_path(path: str | os.PathLike[str], name: str = "path") -> pathlib.Path:
    """`path` as a `pathlib.Path`, refusing what is not a usable path.

    Args:
      path: a `str` or `os.PathLike` (e.g. `pathlib.Path`), not empty.
      name: the argument name to put in error messages.
    Returns:
      `pathlib.Path(path)`.
    Raises:
      ValueError: if `path` is "" (it would mean the working directory).
      TypeError: if `path` is not a `str` or `os.PathLike` (bytes included).

    Example:
      >>> as_path("results/vanishing", "out_dir").parts
      ('results', 'vanishing')
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"`{name}` must be a str or os.PathLike path, got {type(path).__name__}: {path!r}.")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"`{name}` must be a str path, got {type(text).__name__}: {text!r}.")
    if not text:
        raise ValueError(
            f"`{name}` must be a non-empty path, got {text!r} (it would mean the working directory); "
            "pass a directory such as 'results/NAME'."
        )
    return pathlib.Path(text)


def check_writable(out_dir: str | os.PathLike[str]) -> pathlib.Path:
    """Create `out_dir` if needed and prove that files can be written there, before any work.

    Writes and removes a probe file, so a read-only, full or uncreatable directory is found now
    and not after the first hours of a sweep.

    Args:
      out_dir: the output directory (parents are created).
    Returns:
      `out_dir` as a `pathlib.Path`.
    Raises:
      ValueError: if `out_dir` is "".
      OSError: (the subclass for its errno, e.g. PermissionError, NotADirectoryError) naming the
        directory and the reason when it cannot be created or written.

    Example:
      >>> import tempfile, pathlib
      >>> check_writable(pathlib.Path(tempfile.mkdtemp()) / "new" / "dir").is_dir()
      True
    """
    path = as_path(out_dir, "out_dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = e.strerror or str(e)
        message = (
            f"output directory {str(path)!r} cannot be written ({reason}); choose another `out_dir` "
            "or fix its permissions. Nothing was computed."
        )
        raise (OSError(e.errno, message) if e.errno else OSError(message)) from e
    return path


@contextlib.contextmanager
def open_atomic(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file next to `path` that replaces `path` only when the block succeeds.

    A reader sees the old file or the new one, never half of one: the text goes to a temporary
    file in the same directory, is flushed to disk, and then `os.replace`s `path` (atomic on POSIX
    and Windows). On any exception (KeyboardInterrupt included) the temporary file is removed and
    `path` is untouched. Parent directories are created.

    Args:
      path: destination file.
      mode: "w" (text, UTF-8, newlines as written) or "wb" (binary).
    Yields:
      The open temporary file.
    Raises:
      ValueError: if `path` is "" or `mode` is not "w" or "wb".

    Example:
      >>> import tempfile, pathlib
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
      >>> with open_atomic(path) as f:
      ...     _ = f.write("done")
      >>> path.read_text()
      'done'
    """
    path = as_path(path)
    if mode not in ("w", "wb"):
        raise ValueError(f"`mode` must be one of ['w', 'wb'], got {mode!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        text = {"encoding": "utf-8", "newline": ""} if mode == "w" else {}
        with os.fdopen(fd, mode, **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike[str], text: str) -> pathlib.Path:
    """Write `text` (UTF-8) to `path` atomically (`open_atomic`); returns `path` as a Path."""
    with open_atomic(path) as f:
        f.write(text)
    return pathlib.Path(path)


def to_jsonable(obj: Any) -> Any:
    """Convert `obj` to plain Python that `json.dumps(..., allow_nan=False)` accepts.

    numpy and jax arrays become nested lists; numpy scalars become Python scalars; NaN and ±Inf
    become None (strict JSON); dataclasses (including `flax.struct.dataclass` results such as
    `GradientFlow`) become dicts of their fields; mappings become dicts with string keys; tuples,
    lists and sets become lists; paths become strings; enums become their values; jax PRNG keys
    become their raw key data.

    Args:
      obj: any nesting of the above.

    Returns:
      The converted object (new containers; `obj` is not modified).

    Raises:
      TypeError: for an object of another type (its type is named).

    Example:
      >>> import numpy as np
      >>> from jaxvg import report
      >>> report.to_jsonable({"x": np.array([1.0, np.nan]), "n": np.int32(3), "t": (1, 2)})
      {'x': [1.0, None], 'n': 3, 't': [1, 2]}
    """
    if obj is None:
        return None
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, int) and not isinstance(obj, enum.Enum):
        return int(obj)
    if isinstance(obj, float):  # np.float64 is a float subclass: return a plain float
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        if isinstance(obj, np.complexfloating):
            raise TypeError(f"Cannot convert complex value {obj!r} to JSON.")
        return to_jsonable(obj.item())
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {_json_key(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return [to_jsonable(v) for v in sorted(obj, key=repr)]
    array = _as_numpy(obj)
    if array is not None:
        if array.dtype.kind == "c":
            raise TypeError(f"Cannot convert complex array of dtype {array.dtype} to JSON.")
        if array.dtype.kind == "O":
            return [to_jsonable(v) for v in array.tolist()]
        if array.dtype.kind in "biu":
            return array.tolist()
        values = array.astype(np.float64)  # float16/bfloat16 too
        if np.isfinite(values).all():
            return values.tolist()
        return _nonfinite_to_none(values.tolist())
    raise TypeError(f"Cannot convert {type(obj).__module__}.{type(obj).__qualname__} to JSON: {obj!r:.80}")


def _nonfinite_to_none(value: Any) -> Any:
    if isinstance(value, list):
        return [_nonfinite_to_none(v) for v in value]
    return value if math.isfinite(value) else None


def _as_numpy(obj: Any) -> np.ndarray | None:
    if isinstance(obj, np.ndarray):
        return obj
    try:
        import jax
    except ImportError:  # pragma: no cover
        return None
    if isinstance(obj, jax.Array):
        if jax.dtypes.issubdtype(obj.dtype, jax.dtypes.prng_key):
            obj = jax.random.key_data(obj)
        return np.asarray(obj)
    return None


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, np.generic):
        key = key.item()
    if isinstance(key, enum.Enum):
        key = key.value
    return str(key)


def write_json(path: str | os.PathLike, obj: Any) -> pathlib.Path:
    """Write `to_jsonable(obj)` as indented strict JSON to `path`, atomically.

    Atomic (`open_atomic`): a reader sees the old file or the new one, never half of one. Parent
    directories are created.

    Args:
      path: destination file.
      obj: anything `to_jsonable` converts.

    Returns:
      `path` as a `pathlib.Path`.

    Raises:
      TypeError: if `obj` holds something `to_jsonable` cannot convert (nothing is written).
      ValueError: if `path` is "".
    """
    path = as_path(path)
    try:
        jsonable = to_jsonable(obj)
    except TypeError as err:
        raise TypeError(f"`obj` cannot be written as JSON to {str(path)!r}: {err}") from err
    text = json.dumps(jsonable, indent=2, allow_nan=False) + "\n"
    return write_text(path, text)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by `write_json` (nulls stay None).

    Raises:
      ValueError: if `path` is "".
      FileNotFoundError: if `path` does not exist.
      json.JSONDecodeError: if it is not valid JSON.
    """
    with as_path(path).open(encoding="utf-8") as f:
        return json.load(f)


def write_summary(out_dir: str | os.PathLike, text: str) -> pathlib.Path:
    """Write `text` (Markdown) to `out_dir/summary.md`, atomically; returns the path.

    Raises:
      TypeError: if `text` is not a str.
      ValueError: if `out_dir` is "".
    """
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str (the Markdown summary), got {type(text).__name__}.")
    if not text.endswith("\n"):
        text += "\n"
    return write_text(as_path(out_dir, "out_dir") / "summary.md", text)


def _scalar(value: Any) -> Any:
    """numpy/jax 0-d values -> Python scalars; everything else unchanged."""
    if isinstance(value, np.generic):
        return value.item()
    array = _as_numpy(value) if not isinstance(value, np.ndarray) else value
    if array is not None and array.ndim == 0:
        return array.item()
    return value
