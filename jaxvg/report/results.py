"""Experiment outputs: strict JSON, CSV, Markdown tables, and resumable sweeps.

Every experiment writes `results/NAME/` (DESIGN.md): `metrics.json` with the config, the seeds, the
environment (versions, device, host, time, git commit) and the results; a CSV; `summary.md`; and a
table printed to the terminal. This module holds those writers. It imports no jaxvg module that
computes anything, and no matplotlib (plots live in `jaxvg.plotting`).

JSON is strict (RFC 8259): NaN and ±Inf become `null`, because Python's default `NaN` token is not
JSON and breaks `jq`, JavaScript and most other readers. `np.asarray(values, dtype=float)` turns
the `null`s back into NaN. Every file is written atomically (a temporary file in the same
directory, then `os.replace`), so an interrupted run never leaves a half-written file behind.

Resumable sweeps: an experiment's `run(config, *, on_cell=None, done=...)` calls
`on_cell(key, cell)` after each finished cell (a shape group, a σ grid row, one activation...) and
skips the keys in `done`, reusing their stored values. `main` passes `cell_writer(out_dir)` and
`finished_cells(out_dir)`, so a rerun after an interruption does only the missing cells.

Example:
  >>> import math, tempfile
  >>> from jaxvg.report import results
  >>> out = tempfile.mkdtemp()
  >>> write = results.cell_writer(out)
  >>> write("tanh/depth=50", {"log10_gain": [-0.1, math.nan]})
  >>> results.finished_cells(out)
  {'tanh/depth=50': {'log10_gain': [-0.1, None]}}
  >>> print(results.format_table([{"activation": "tanh", "gain": -0.0123456}]))
  | activation |     gain |
  | :--------- | -------: |
  | tanh       | -0.01235 |
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import enum
import hashlib
import io
import json
import math
import os
import pathlib
import platform
import re
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "cell_writer",
    "environment",
    "finished_cells",
    "format_table",
    "read_json",
    "to_jsonable",
    "write_csv",
    "write_json",
    "write_metrics",
    "write_summary",
]

_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "jaxvg")
_REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- environment


def environment() -> dict[str, Any]:
    """Where and with what a result was produced: versions, device, host, time and git commit.

    Never raises for a missing piece: an uninstalled package reads `None`, and so does the git
    commit when git is absent or the package does not sit in a git checkout.

    Returns:
      A JSON-ready dict with keys `python`, `jax`, `jaxlib`, `flax`, `optax`, `numpy`, `jaxvg`
      (version strings or None), `platform` (OS string), `backend` (e.g. "cpu", "gpu", "tpu"),
      `device_kinds` (sorted distinct `device.device_kind` strings), `device_count`, `hostname`,
      `timestamp_utc` (ISO 8601, seconds, "+00:00"), `git_commit` (40 hex digits or None) and
      `git_dirty` (True when tracked files have uncommitted changes; None without git).

    Example:
      >>> from jaxvg.report import results
      >>> env = results.environment()
      >>> env["backend"] in {"cpu", "gpu", "tpu"} and env["device_count"] >= 1
      True
    """
    env: dict[str, Any] = {"python": platform.python_version()}
    for name in _PACKAGES:
        env[name] = _version(name)
    env["platform"] = platform.platform()
    try:
        import jax

        devices = jax.devices()
        env["backend"] = jax.default_backend()
        env["device_kinds"] = sorted({d.device_kind for d in devices})
        env["device_count"] = len(devices)
    except Exception:  # pragma: no cover - a broken jax install still lets results be written
        env.update(backend=None, device_kinds=[], device_count=0)
    env["hostname"] = socket.gethostname()
    env["timestamp_utc"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    env["git_commit"], env["git_dirty"] = _git_state(_REPO_ROOT)
    return env


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        pass
    try:  # a source checkout that is not pip-installed still has __version__
        module = __import__(name)
        return str(getattr(module, "__version__", None) or "") or None
    except Exception:
        return None


def _git_state(root: pathlib.Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout at `root`, or (None, None) without git or a checkout."""

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None or not re.fullmatch(r"[0-9a-f]{40}", commit):
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, (None if status is None else bool(status))


# --------------------------------------------------------------------------- JSON


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
      >>> from jaxvg.report import results
      >>> results.to_jsonable({"x": np.array([1.0, np.nan]), "n": np.int32(3), "t": (1, 2)})
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

    The text goes to a temporary file in the same directory, which then replaces `path`
    (`os.replace`, atomic on POSIX and Windows): a reader sees the old file or the new one, never
    half of one. Parent directories are created.

    Args:
      path: destination file.
      obj: anything `to_jsonable` converts.

    Returns:
      `path` as a `pathlib.Path`.

    Raises:
      TypeError: if `obj` holds something `to_jsonable` cannot convert (nothing is written).
    """
    text = json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n"
    return _write_text_atomic(path, text)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by `write_json` (nulls stay None).

    Raises:
      FileNotFoundError: if `path` does not exist.
      json.JSONDecodeError: if it is not valid JSON.
    """
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_text_atomic(path: str | os.PathLike, text: str) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def write_metrics(
    out_dir: str | os.PathLike,
    config: Any,
    results: Mapping[str, Any],
    *,
    seeds: Sequence[int] | int | None = None,
) -> pathlib.Path:
    """Write `out_dir/metrics.json` = {"config", "seeds", "environment", "results"}.

    Args:
      out_dir: the experiment's output directory (created if missing).
      config: the experiment's dataclass config (stored as `dataclasses.asdict`), or a mapping.
      results: the experiment's results (anything `to_jsonable` converts).
      seeds: the seeds used (a list, a count, or None).

    Returns:
      The path of the written `metrics.json`.

    Raises:
      TypeError: if `config` is neither a dataclass instance nor a mapping.
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config_dict = dataclasses.asdict(config)
    elif isinstance(config, Mapping):
        config_dict = dict(config)
    else:
        raise TypeError(f"`config` must be a dataclass instance or a mapping, got {type(config).__name__}.")
    payload = {"config": config_dict, "seeds": seeds, "environment": environment(), "results": results}
    return write_json(pathlib.Path(out_dir) / "metrics.json", payload)


# --------------------------------------------------------------------------- CSV and tables


def _columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(map(str, row)))
    return list(columns)


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> pathlib.Path:
    """Write `rows` as a CSV file, atomically; the columns are the union of the rows' keys.

    Columns appear in first-seen order (the first row's keys, then new keys of later rows); a
    missing value is an empty field. Floats are written with `repr` (round-trip exact); NaN as
    `nan`, ±Inf as `inf`/`-inf` (what pandas and numpy read); None as empty; arrays, lists and
    dicts as JSON text.

    Args:
      path: destination file (parents created).
      rows: a sequence of mappings.

    Returns:
      `path` as a `pathlib.Path`.
    """
    rows = list(rows)
    columns = _columns(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        row = {str(k): v for k, v in row.items()}
        writer.writerow([_csv_value(row.get(c)) for c in columns])
    return _write_text_atomic(path, buf.getvalue())


def _csv_value(value: Any) -> str:
    value = _scalar(value)
    if value is None:
        return ""
    if isinstance(value, bool | str):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, int):
        return str(value)
    return json.dumps(to_jsonable(value), allow_nan=False)


def _scalar(value: Any) -> Any:
    """numpy/jax 0-d values -> Python scalars; everything else unchanged."""
    if isinstance(value, np.generic):
        return value.item()
    array = _as_numpy(value) if not isinstance(value, np.ndarray) else value
    if array is not None and array.ndim == 0:
        return array.item()
    return value


def format_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    floatfmt: str = ".4g",
) -> str:
    """An aligned text table that is also a GitHub-Markdown table.

    Numbers are right-aligned (`---:`), text left-aligned (`:---`); floats use `floatfmt`
    (`format(x, floatfmt)`), NaN prints as `nan`, None and missing values as empty cells; `|` in
    text is escaped. A column is numeric when all its non-empty values are numbers (bools are text).

    Args:
      rows: a sequence of mappings, one per table row.
      columns: the columns to show, in order (default: the union of the rows' keys, first-seen).
      floatfmt: format spec for floats, e.g. ".4g", ".3f", "+.2f".

    Returns:
      The table as one string (lines joined by "\\n", no trailing newline); "" when there are no
      rows and no columns.
    """
    rows = list(rows)
    columns = [str(c) for c in columns] if columns is not None else _columns(rows)
    if not columns:
        return ""
    cells = [[_table_cell(_scalar(row.get(c)), floatfmt) for c in columns] for row in rows]
    numeric = [_is_numeric_column([_scalar(row.get(c)) for row in rows]) for c in columns]
    header = [c.replace("|", "\\|") for c in columns]
    widths = [max([len(header[j]), 4] + [len(r[j]) for r in cells]) for j in range(len(columns))]
    rules = [
        ("-" * (w - 1) + ":") if num else (":" + "-" * (w - 1))
        for w, num in zip(widths, numeric, strict=True)
    ]
    out = [_table_line(header, widths, numeric), "| " + " | ".join(rules) + " |"]
    out += [_table_line(r, widths, numeric) for r in cells]
    return "\n".join(out)


def _is_numeric_column(values: Sequence[Any]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present)


def _table_line(parts: Sequence[str], widths: Sequence[int], numeric: Sequence[bool]) -> str:
    padded = [p.rjust(w) if num else p.ljust(w) for p, w, num in zip(parts, widths, numeric, strict=True)]
    return "| " + " | ".join(padded) + " |"


def _table_cell(value: Any, floatfmt: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return format(value, floatfmt) if math.isfinite(value) else str(value)
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        value = json.dumps(to_jsonable(value), allow_nan=False)
    return value.replace("|", "\\|").replace("\n", " ")


def write_summary(out_dir: str | os.PathLike, text: str) -> pathlib.Path:
    """Write `text` (Markdown) to `out_dir/summary.md`, atomically; returns the path."""
    if not text.endswith("\n"):
        text += "\n"
    return _write_text_atomic(pathlib.Path(out_dir) / "summary.md", text)


# --------------------------------------------------------------------------- resumable sweeps

_SAFE = re.compile(r"[^A-Za-z0-9._=+-]")


def _out_dir(out_dir: Any) -> pathlib.Path:
    """Accept a path or a config with an `out_dir` field (STYLE.md B6 passes the config)."""
    if not isinstance(out_dir, str | os.PathLike) and hasattr(out_dir, "out_dir"):
        out_dir = out_dir.out_dir
    return pathlib.Path(out_dir)


def cell_filename(key: str) -> str:
    """A safe, unique file name for cell `key`: unsafe characters become `_`, and a short hash of
    the key is appended whenever the name differs from the key (so "a/b" and "a_b" differ)."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"`key` must be a non-empty string, got {key!r}.")
    safe = _SAFE.sub("_", key)[:100]
    if safe != key or safe.startswith("."):
        safe = f"{safe.lstrip('.')}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    return f"{safe}.json"


def cell_writer(out_dir: str | os.PathLike | Any) -> Callable[[str, Any], None]:
    """A callback `on_cell(key, cell)` that stores each finished sweep cell at once.

    Each cell goes to `out_dir/cells/<safe key>.json` (atomic write) as
    `{"key": key, "cell": to_jsonable(cell)}`; the stored key, not the file name, identifies it.

    Args:
      out_dir: the experiment's output directory, or a config with an `out_dir` field.

    Returns:
      `on_cell(key: str, cell) -> None`. It raises ValueError for an empty or non-string key and
      TypeError for a cell that `to_jsonable` cannot convert.
    """
    cells_dir = _out_dir(out_dir) / "cells"

    def on_cell(key: str, cell: Any) -> None:
        write_json(cells_dir / cell_filename(key), {"key": key, "cell": cell})

    return on_cell


def finished_cells(out_dir: str | os.PathLike | Any) -> dict[str, Any]:
    """The cells that `cell_writer(out_dir)` stored: {key: cell}, as JSON (arrays are lists, NaN
    is None).

    A missing directory gives {}. Temporary files of an interrupted write, unreadable or corrupt
    files, and files that are not cell records are skipped silently: their cells are recomputed.

    Args:
      out_dir: the experiment's output directory, or a config with an `out_dir` field.
    """
    cells_dir = _out_dir(out_dir) / "cells"
    if not cells_dir.is_dir():
        return {}
    cells: dict[str, Any] = {}
    for path in sorted(cells_dir.glob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            record = read_json(path)
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if isinstance(record, dict) and isinstance(record.get("key"), str) and "cell" in record:
            cells[record["key"]] = record["cell"]
    return cells


def run_resumable(run: Callable[..., Any], config: Any, *, log: Callable[[str], None] | None = None) -> Any:
    """Call an experiment's `run(config, on_cell=..., done=...)` so that its cells are stored under
    `config.out_dir/cells/` as they finish and the ones already there are reused.

    This is the resume half of every experiment's `main`: a rerun after an interruption skips the
    finished cells. `log` (e.g. a print to stderr) is passed on as `run(..., log=log)` when given.
    """
    kwargs: dict[str, Any] = {"on_cell": cell_writer(config.out_dir), "done": finished_cells(config.out_dir)}
    if log is not None:
        kwargs["log"] = log
    return run(config, **kwargs)
