"""Resumable sweeps: each finished cell is stored at once, checked when read back, keyed by config.

An experiment's `run(config, *, on_cell=None, done=...)` calls `on_cell(key, cell)` after each
finished cell (a shape group, a σ grid row, one activation...) and skips the keys in `done`,
reusing their stored values. `run_resumable(run, config, schema=...)` wires that up: it checks
that `config.out_dir` is writable, stores every cell as it finishes, and passes the cells already
stored for this config, so a rerun after an interruption does only the missing cells.

A stored cell is a JSON record `{"key", "config_key", "config", "cell", "sha256"}`:
- `sha256` is the checksum of the rest of the record (canonical JSON); a truncated, edited or
  otherwise corrupted file fails it.
- `config_key` (`jaxvg.report.config_key`) names the config that computed the cell; cells of a
  config live in `cells/config-<config_key>/`, so two runs with different configs into one
  directory never overwrite each other's cells, and a run reuses only its own config's cells.
- an optional `schema` (field -> type, or a callable) says what a valid cell holds.
A stored cell that is unreadable, fails its checksum or does not match the schema is not reused:
it is recomputed, with a `CellWarning` that names the file. Records are written atomically.

Hold `out_dir_lock(out_dir)` around computing and writing the outputs so that a second run into the
same directory stops at once instead of mixing its files with the first run's.

Example:
  >>> import math, tempfile
  >>> from jaxvg import report
  >>> out = tempfile.mkdtemp()
  >>> write = report.cell_writer(out)
  >>> write("tanh/depth=50", {"log10_gain": [-0.1, math.nan]})
  >>> report.finished_cells(out, schema={"log10_gain": list})
  {'tanh/depth=50': {'log10_gain': [-0.1, None]}}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import re
import types
import typing
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from jaxvg.report import files, provenance

try:  # POSIX; elsewhere out_dir_lock only checks that the directory is writable
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CellWarning",
    "cell_filename",
    "cell_writer",
    "finished_cells",
    "out_dir_lock",
    "run_resumable",
]

Schema = Mapping[str, Any] | Callable[[Any], Any]
_SAFE = re.compile(r"[^A-Za-z0-9._=+-]")
_CONFIG_DIR = "config-"


class CellWarning(UserWarning):
    """A stored cell is not reused (unreadable, corrupted, or not matching its schema)."""


def _out_dir(out_dir: Any) -> pathlib.Path:
    """A path, or a config with an `out_dir` field (experiments pass their config)."""
    if not isinstance(out_dir, str | os.PathLike) and hasattr(out_dir, "out_dir"):
        out_dir = out_dir.out_dir
    return files.as_path(out_dir, "out_dir")


def _cells_dir(out_dir: Any, config: Any, ignore: Iterable[str]) -> tuple[pathlib.Path, str | None]:
    cells = _out_dir(out_dir) / "cells"
    if config is None:
        return cells, None
    key = provenance.config_key(config, ignore=ignore)
    return cells / f"{_CONFIG_DIR}{key}", key


def cell_filename(key: str) -> str:
    """A safe, unique file name for cell `key`: unsafe characters become `_`, and a short hash of
    the key is appended whenever the name differs from the key (so "a/b" and "a_b" differ)."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"`key` must be a non-empty string, got {key!r}.")
    safe = _SAFE.sub("_", key)[:100]
    if safe != key or safe.startswith("."):
        safe = f"{safe.lstrip('.')}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    return f"{safe}.json"


def _checksum(record: Mapping[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def cell_writer(
    out_dir: str | os.PathLike[str] | Any,
    *,
    config: Any = None,
    ignore: Iterable[str] = provenance.CONFIG_IGNORE,
) -> Callable[[str, Any], None]:
    """A callback `on_cell(key, cell)` that stores each finished sweep cell at once, atomically.

    Each cell goes to `out_dir/cells/<safe key>.json`, or with `config` to
    `out_dir/cells/config-<config_key>/<safe key>.json`, as a record with the key, the config key
    and fields, the cell (`to_jsonable`) and its SHA-256 checksum; the stored key, not the file
    name, identifies it.

    Args:
      out_dir: the experiment's output directory, or a config with an `out_dir` field.
      config: the config that computes the cells (a dataclass instance or mapping); None stores
        them unkeyed (any config may then reuse them, after its own checks).
      ignore: config fields left out of the config key (`jaxvg.report.config_key`).

    Returns:
      `on_cell(key: str, cell) -> None`. It raises ValueError for an empty or non-string key and
      TypeError for a cell that `to_jsonable` cannot convert.
    Raises:
      ValueError: if `out_dir` is "".
      TypeError: if `config` cannot be hashed (see `config_key`).
    """
    cells_dir, ckey = _cells_dir(out_dir, config, ignore)
    fields = None if config is None else files.to_jsonable(provenance.config_dict(config))

    def on_cell(key: str, cell: Any) -> None:
        name = cell_filename(key)
        record: dict[str, Any] = {"key": key, "config_key": ckey}
        if fields is not None:
            record["config"] = fields
        record["cell"] = files.to_jsonable(cell)
        record["sha256"] = _checksum(record)
        files.write_json(cells_dir / name, record)

    return on_cell


def finished_cells(
    out_dir: str | os.PathLike[str] | Any,
    *,
    config: Any = None,
    ignore: Iterable[str] = provenance.CONFIG_IGNORE,
    schema: Schema | None = None,
) -> dict[str, Any]:
    """The valid cells that `cell_writer` stored: {key: cell}, as JSON (arrays are lists, NaN None).

    With `config`, the cells stored for that config (`cell_writer(out_dir, config=config)`) and the
    unkeyed ones (`cell_writer(out_dir)`; a keyed cell wins over an unkeyed one with the same key).
    Without, every stored cell; then a key stored by several configs is ambiguous (ValueError).

    A stored cell is skipped, so that it is recomputed, with a `CellWarning` naming the file, when
    the file is unreadable or not JSON, is not a cell record, fails its checksum (corrupted or
    edited, or written without one), or does not match `schema`. A missing directory gives {}.
    Temporary files of an interrupted write (names starting with ".") are ignored.

    Args:
      out_dir: the experiment's output directory, or a config with an `out_dir` field.
      config: the config whose cells to read (see above); None for all.
      ignore: config fields left out of the config key, as given to `cell_writer`.
      schema: what a valid cell holds; either a mapping field -> spec, where a cell must be a dict
        with every field and spec is a type (`float` accepts ints, no spec accepts bools unless it
        names `bool`), a union (`float | None`: NaN is stored as None), `list[spec]` (every item),
        or a nested mapping; or a callable `validate(cell)` that returns False or raises
        ValueError, TypeError, KeyError or IndexError for an invalid cell.
    Raises:
      ValueError: if `out_dir` is "", or (without `config`) cells of different configs share a key.
      TypeError: if `schema` is neither a mapping nor a callable, or names a spec it cannot check.
    """
    if schema is not None and not (isinstance(schema, Mapping) or callable(schema)):
        raise TypeError(f"`schema` must be a mapping of field -> type or a callable, got {schema!r}.")
    cells_dir, ckey = _cells_dir(out_dir, config, ignore)
    base = _out_dir(out_dir) / "cells"
    if ckey is None:
        dirs = [base, *sorted(p for p in base.glob(f"{_CONFIG_DIR}*") if p.is_dir())]
    else:
        dirs = [base, cells_dir]  # the unkeyed cells first: the config's own cells override them
    cells: dict[str, Any] = {}
    owner: dict[str, str | None] = {}
    for directory in dirs:
        for path in sorted(directory.glob("*.json")) if directory.is_dir() else ():
            if path.name.startswith("."):
                continue
            record, problem = _read_record(path, schema)
            if problem:
                warnings.warn(
                    f"stored cell {path} is not reused: {problem}; it will be recomputed.", CellWarning, 2
                )
                continue
            key, stored_ckey = record["key"], record["config_key"]
            if ckey is not None and stored_ckey not in (None, ckey):
                warnings.warn(
                    f"stored cell {path} is not reused: it belongs to config {stored_ckey}, not {ckey}.",
                    CellWarning,
                    2,
                )
                continue
            if ckey is None and owner.get(key) not in (None, stored_ckey) and stored_ckey is not None:
                raise ValueError(
                    f"cells of configs {owner[key]} and {stored_ckey} in {base} share key {key!r}; pass "
                    "`config=` to read one config's cells."
                )
            cells[key], owner[key] = record["cell"], stored_ckey
    return cells


def _read_record(path: pathlib.Path, schema: Schema | None) -> tuple[dict[str, Any], str | None]:
    """(record, None) for a valid cell record, else ({}, why not)."""
    try:
        record = files.read_json(path)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return {}, f"unreadable or not JSON ({type(e).__name__}: {e})"
    if not isinstance(record, dict) or not isinstance(record.get("key"), str) or "cell" not in record:
        return {}, "not a cell record (a JSON object with `key` and `cell`)"
    if "sha256" not in record:
        return {}, "no checksum (written by an older jaxvg, or by hand)"
    if record["sha256"] != _checksum(record):
        return {}, "checksum mismatch (the file was corrupted or edited)"
    record.setdefault("config_key", None)
    if schema is not None:
        problem = _schema_problem(record["cell"], schema)
        if problem:
            return {}, f"does not match the schema: {problem}"
    return record, None


def _schema_problem(cell: Any, schema: Schema) -> str | None:
    if isinstance(schema, Mapping):
        return _spec_problem(cell, schema, "cell")
    try:
        ok = schema(cell)
    except (ValueError, TypeError, KeyError, IndexError) as e:
        return f"{type(e).__name__}: {e}"
    return "the validator returned False" if ok is False else None


def _spec_problem(value: Any, spec: Any, where: str) -> str | None:
    """Why `value` does not match `spec` (see `finished_cells`), or None when it does."""
    if isinstance(spec, Mapping):
        if not isinstance(value, dict):
            return f"{where} must be an object, got {_describe(value)}"
        for field, sub in spec.items():
            if field not in value:
                return f"{where} lacks the field {field!r}"
            problem = _spec_problem(value[field], sub, f"{where}[{field!r}]")
            if problem:
                return problem
        return None
    origin, args = typing.get_origin(spec), typing.get_args(spec)
    if origin in (types.UnionType, typing.Union) or isinstance(spec, tuple):
        options = args if origin is not None else spec
        if any(_spec_problem(value, option, where) is None for option in options):
            return None
        return f"{where} must be {_name(spec)}, got {_describe(value)}"
    if origin is list:
        if not isinstance(value, list):
            return f"{where} must be {_name(spec)}, got {_describe(value)}"
        for i, item in enumerate(value):
            problem = _spec_problem(item, args[0], f"{where}[{i}]") if args else None
            if problem:
                return problem
        return None
    if spec is None or spec is type(None):
        ok = value is None
    elif spec is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif spec is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(spec, type):
        ok = isinstance(value, spec)
    else:
        raise TypeError(
            f"`schema` entry for {where} must be a type, a union, list[...] or a mapping, got {spec!r}."
        )
    return None if ok else f"{where} must be {_name(spec)}, got {_describe(value)}"


def _name(spec: Any) -> str:
    if isinstance(spec, tuple):
        return " | ".join(map(_name, spec))
    return spec.__name__ if isinstance(spec, type) else str(spec)


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {json.dumps(value)[:60]}"


def run_resumable(
    run: Callable[..., Any],
    config: Any,
    *,
    log: Callable[[str], None] | None = None,
    schema: Schema | None = None,
    ignore: Iterable[str] = provenance.CONFIG_IGNORE,
) -> Any:
    """Call an experiment's `run(config, on_cell=..., done=...)` so that its cells are stored under
    `config.out_dir/cells/config-<config_key>/` as they finish and the valid ones already there are
    reused.

    The resume half of every experiment's `main`: `config.out_dir` is checked to be writable first
    (`check_writable`, before any work); a rerun after an interruption skips the finished cells;
    a cell that is corrupted or does not match `schema` is recomputed with a `CellWarning`. `log`
    (e.g. a print to stderr) is passed on as `run(..., log=log)` when given.

    Args:
      run: the experiment's `run(config, *, on_cell, done[, log])`.
      config: its config, with an `out_dir` field.
      log: optional message callback for `run`.
      schema: what a valid stored cell holds (see `finished_cells`).
      ignore: config fields that do not change the cells (left out of the config key).
    Returns:
      What `run` returns.
    Raises:
      TypeError: if `config` has no `out_dir`.
      ValueError: if `config.out_dir` is "".
      OSError: if `config.out_dir` cannot be created or written.
    """
    if not hasattr(config, "out_dir"):
        raise TypeError(f"`config` must have an `out_dir` field, got {type(config).__name__}.")
    out_dir = files.check_writable(config.out_dir)
    kwargs: dict[str, Any] = {
        "on_cell": cell_writer(out_dir, config=config, ignore=ignore),
        "done": finished_cells(out_dir, config=config, ignore=ignore, schema=schema),
    }
    if log is not None:
        kwargs["log"] = log
    return run(config, **kwargs)


@contextlib.contextmanager
def out_dir_lock(out_dir: str | os.PathLike[str] | Any) -> Iterator[pathlib.Path]:
    """Hold an exclusive lock on an output directory for the duration of a `with` block.

    A second run into the same directory (another process, or this one) fails at once with a
    RuntimeError that names the directory and the process holding it, instead of interleaving its
    cells and output files with the first run's. The lock is the operating system's (`flock` on
    `out_dir/.lock`), so it disappears with the process that held it, even after a crash. Where
    `fcntl` does not exist (Windows) only the writability check is made.

    Args:
      out_dir: the output directory (created if missing), or a config with an `out_dir` field.
    Yields:
      `out_dir` as a `pathlib.Path`.
    Raises:
      RuntimeError: if another run holds the lock.
      ValueError, OSError: as `check_writable`.
    """
    path = files.check_writable(_out_dir(out_dir))
    if fcntl is None:  # pragma: no cover
        yield path
        return
    fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise RuntimeError(
                f"another run (process {holder}) is writing to {str(path)!r}; wait for it to finish or "
                "choose another `out_dir`."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
