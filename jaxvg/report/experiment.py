"""What every experiment shares: `--quick` sizes, the reuse-a-stored-cell loop, and `main()`.

An experiment (`python -m experiments.NAME`) is a frozen dataclass `Config`, a `run(config, *,
on_cell=None, done={}, log=None)` that computes without file I/O, and a `report(config, res)` that
says what to write. This module turns those into the command line::

    @dataclasses.dataclass(frozen=True)
    class Config:
        seeds: int = 8  # nets per activation
        out_dir: str = "results/toy"  # where main() writes
        quick: bool = False  # fewer seeds (tests/CI)
        QUICK: ClassVar[dict[str, Any]] = {"seeds": 2}

        def __post_init__(self):
            experiment.apply_quick(self)  # first: validation sees the quick sizes
            checks.positive_int("seeds", self.seeds)

    def run(config, *, on_cell=None, done={}, log=None):
        cells = experiment.Cells(done, on_cell, log)
        for seed in range(config.seeds):
            cells.get(f"seed={seed}", {"seeds": config.seeds}, lambda: {"loss": 0.5})
        return {"cells": cells.cells, "computed": cells.computed}

    def report(config, res):
        return experiment.Outputs(results=res, summary="# toy", csv={"toy.csv": [...]})

    def main(argv=None):
        return experiment.main(Config, run, report, argv)

Cells: a sweep is a set of cells (a shape group, a sigma row, one activation...). `Cells.get`
reuses a cell from `done` (what an interrupted or earlier run stored, as
`jaxvg.report.cells.finished_cells` reads it) when the setup it was stored with equals the
current one, and otherwise computes it, stores its setup in it and hands it to `on_cell` at once.
Every cell goes through `files.to_jsonable`, so a cell just computed and one read back from
disk look the same (lists, NaN and +-Inf as None).

Schemas: every experiment states what a valid cell holds, `CELL_SCHEMA = cell_schema(fields,
shapes)`, and passes it to `Cells(..., schema=CELL_SCHEMA)` and `main(..., schema=CELL_SCHEMA)`. A
stored cell that lacks a field, holds a value of the wrong type (`[0.137]` for a float) or a list
of the wrong length (`[]` for one value per seed) is then never reused: `finished_cells` skips the
file with a `CellWarning` that names it, `Cells` skips a `done` entry with a `CellWarning` that
names its key, and the cell is recomputed, so a corrupted or hand-edited cell can neither crash a
rerun nor flow into the summary.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from jaxvg import checks
from jaxvg.report import cells as cell_store
from jaxvg.report import cli, files, provenance, tables

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "Cells",
    "Done",
    "Log",
    "OnCell",
    "Outputs",
    "apply_quick",
    "cell_schema",
    "check_common",
    "check_config",
    "check_tuple",
    "main",
]

T = TypeVar("T")
# the keyword arguments of every experiment's `run(config, *, on_cell=None, done=None, log=None)`
OnCell = Callable[[str, Any], None] | None  # called as on_cell(key, cell) when a cell is computed
Done = Mapping[str, Any] | None  # {key: cell} stored by an earlier run (`cell_store.finished_cells`)
Log = Callable[[str], None] | None  # progress printer


# --------------------------------------------------------------------------- --quick


def apply_quick(config: Any) -> None:
    """Give a config its class's `QUICK` sizes when `config.quick` is set; call it first in
    `__post_init__`.

    A field is left alone when the user chose it: when `jaxvg.report.cli.parse` builds the config,
    the fields set by explicit flags (`--quick --seeds 8` keeps 8 seeds, although 8 is the default);
    when the config is built in Python, the fields whose value differs from their default (Python
    cannot tell `seeds=8` from the default 8). Preset values are not the user's choice of a field:
    `--preset full --quick` is the full preset at quick sizes.

    Args:
      config: a dataclass instance (frozen or not) with a bool field `quick` and, on its class, a
        mapping `QUICK` of field name -> quick value.
    Raises:
      TypeError: `QUICK` names a field the config does not have.
    """
    quick = getattr(type(config), "QUICK", {})
    if not getattr(config, "quick", False) or not quick:
        return
    fields = {f.name: f for f in dataclasses.fields(config)}
    unknown = sorted(set(quick) - set(fields))
    if unknown:
        raise TypeError(f"{type(config).__name__}.QUICK sets unknown fields {unknown}.")
    given = cli.given_fields(config)
    for name, value in quick.items():
        chosen = name in given if given is not None else getattr(config, name) != _default(fields[name])
        if not chosen:
            object.__setattr__(config, name, value)


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


# --------------------------------------------------------------------------- config checks


def check_common(config: Any) -> None:
    """Check the fields every experiment config has: `quick` a bool and `out_dir` a non-empty path.

    Raises:
      TypeError: (`checks.ArgumentTypeError`, also a ValueError) a non-bool `quick` (any non-empty
        string is truthy) or an `out_dir` that is not a str or path.
      ValueError: an empty `out_dir` (it would write into the working directory and its parent).
    """
    checks.boolean("quick", getattr(config, "quick", False))
    if hasattr(config, "out_dir"):
        files.as_path(config.out_dir, "out_dir")


def check_tuple(name: str, value: Any, check_item: Callable[[str, Any], Any]) -> tuple:
    """`value` (a non-empty tuple or list) as a tuple of `check_item(name, item)` results.

    Raises:
      TypeError: (`checks.ArgumentTypeError`) a str, a scalar or anything else that is not a tuple
        or list, e.g. `depths=4` instead of `depths=(4,)`.
      ValueError: an empty tuple; and whatever `check_item` raises for an item.
    """
    if not isinstance(value, tuple | list):
        raise checks.ArgumentTypeError(
            f"`{name}` must be a non-empty tuple, e.g. {name}=({value!r},), got {value!r} ({type(value).__name__})."
        )
    if not value:
        raise ValueError(f"`{name}` must be a non-empty tuple, got {value!r}.")
    return tuple(check_item(name, item) for item in value)


def check_config(config: Any, config_cls: type) -> None:
    """Raise an `ArgumentTypeError` naming `config` unless it is a `config_cls` (what `run` takes)."""
    if not isinstance(config, config_cls):
        raise checks.ArgumentTypeError(
            f"`config` must be a {config_cls.__module__}.{config_cls.__name__}, got {type(config).__name__}: "
            f"build one with {config_cls.__name__}(...) (e.g. {config_cls.__name__}(quick=True))."
        )


# --------------------------------------------------------------------------- cell schemas


def cell_schema(
    fields: Mapping[str, Any],
    shapes: Callable[[Mapping[str, Any]], Mapping[str, tuple[int, ...]]] | None = None,
) -> Callable[[Any], None]:
    """A cell validator for `finished_cells(schema=...)`, `run_resumable`, `main` and `Cells`.

    Args:
      fields: field -> spec, as `jaxvg.report.cells.finished_cells` reads a mapping schema: a type
        (`float` accepts ints, `int` rejects bools), a union (`float | None`: NaN is stored as
        None), `list[spec]` (every item, nested for arrays), or a nested mapping (a dict holding
        at least those fields).
      shapes: optional `shapes(cell) -> {field: shape}`, called once `fields` match: each such
        field must be a nested list of exactly that shape (e.g. (seeds, depth + 1), with the sizes
        read from the cell's stored `setup`), so that `[]` where one value per seed belongs fails.
    Returns:
      `validate(cell)`, which raises ValueError (what is wrong, where) for an invalid cell.
    """
    if not isinstance(fields, Mapping):
        raise checks.ArgumentTypeError(
            f"`fields` must be a mapping field -> spec, got {type(fields).__name__}."
        )

    def validate(cell: Any) -> None:
        problem = cell_store._schema_problem(cell, fields)
        if problem is None and shapes is not None:
            for field, shape in shapes(cell).items():
                problem = _shape_problem(cell[field], tuple(shape), f"cell[{field!r}]")
                if problem:
                    break
        if problem:
            raise ValueError(problem)

    validate.fields = dict(fields)  # type: ignore[attr-defined]
    return validate


def _shape_problem(value: Any, shape: tuple[int, ...], where: str) -> str | None:
    """Why `value` is not a nested list of `shape` (None when it is)."""
    if not shape:
        return None
    if not isinstance(value, list) or len(value) != shape[0]:
        got = f"a list of length {len(value)}" if isinstance(value, list) else type(value).__name__
        return f"{where} must be a list of length {shape[0]} (shape {shape}), got {got}"
    for i, item in enumerate(value):
        problem = _shape_problem(item, shape[1:], f"{where}[{i}]")
        if problem:
            return problem
    return None


def _problem(cell: Any, schema: cell_store.Schema | None) -> str | None:
    if schema is None:
        return None
    if isinstance(schema, Mapping):
        return cell_store._schema_problem(cell, schema)
    try:
        ok = schema(cell)
    except (ValueError, TypeError, KeyError, IndexError) as e:
        return str(e)
    return "the validator returned False" if ok is False else None


# --------------------------------------------------------------------------- cells


class Cells:
    """The cells of one `run`: reused from `done` when their setup matches, else computed.

    Attributes:
      cells: {key: cell} in the order `get`/`add` saw them; every cell holds its `"setup"`.
      computed: the keys computed (not reused) in this run.
    """

    def __init__(
        self,
        done: Done = None,
        on_cell: OnCell = None,
        log: Log = None,
        *,
        schema: cell_store.Schema | None = None,
    ):
        if done is not None and not isinstance(done, Mapping):
            raise checks.ArgumentTypeError(
                f"`done` must be None or a mapping key -> cell (as `finished_cells` returns), got "
                f"{type(done).__name__}."
            )
        for name, fn in (("on_cell", on_cell), ("log", log)):
            if fn is not None and not callable(fn):
                raise checks.ArgumentTypeError(
                    f"`{name}` must be None or a callable, got {type(fn).__name__}."
                )
        self.done = done or {}
        self.on_cell = on_cell
        self.log = log
        self.schema = schema
        self.cells: dict[str, Any] = {}
        self.computed: list[str] = []

    def reuse(self, key: str, setup: Mapping[str, Any]) -> bool:
        """Keep `done[key]` (and return True) when it was stored with this `setup` and matches the
        schema; a cell with this setup that breaks the schema is not kept (a `CellWarning` names
        its key), so that it is recomputed."""
        old = self.done.get(key)
        if not (isinstance(old, Mapping) and old.get("setup") == files.to_jsonable(setup)):
            return False
        problem = _problem(old, self.schema)
        if problem:
            warnings.warn(
                f"stored cell {key!r} (given in `done`) is not reused: it does not match the schema: "
                f"{problem}; it will be recomputed.",
                cell_store.CellWarning,
                stacklevel=3,
            )
            return False
        self.cells[key] = dict(old)
        return True

    def add(self, key: str, setup: Mapping[str, Any], cell: Mapping[str, Any]) -> dict[str, Any]:
        """Record a newly computed cell (with its `setup`) and hand it to `on_cell`; returns the
        stored, JSON-ready cell."""
        stored = files.to_jsonable({**cell, "setup": setup})
        self.cells[key] = stored
        self.computed.append(key)
        if self.on_cell is not None:
            self.on_cell(key, stored)
        return stored

    def get(
        self,
        key: str,
        setup: Mapping[str, Any],
        compute: Callable[[], Mapping[str, Any]],
        *,
        describe: Callable[[Mapping[str, Any]], str] | None = None,
    ) -> dict[str, Any]:
        """The cell `key`: the stored one when its setup matches, else `compute()`, recorded by `add`.

        Args:
          key: the cell's key (stable across runs: it names the cell's file).
          setup: everything the cell's numbers depend on (JSON-ready after `to_jsonable`).
          compute: computes the cell (a mapping); called only when no matching cell is stored.
          describe: optional one-line summary of a computed cell for the progress log.
        """
        if self.reuse(key, setup):
            return self.cells[key]
        start = time.perf_counter()
        cell = self.add(key, setup, compute())
        if self.log is not None:
            note = f"  {describe(cell)}" if describe is not None else ""
            self.log(f"{key}: {time.perf_counter() - start:.1f} s{note}")
        return cell


# --------------------------------------------------------------------------- main


@dataclasses.dataclass(frozen=True)
class Outputs:
    """What an experiment's `main` writes to `out_dir` and prints.

    Attributes:
      results: the "results" entry of metrics.json (anything `files.to_jsonable` converts).
      summary: summary.md (Markdown, with the table); also printed.
      csv: {file name: rows}, each written as a CSV file.
      seeds: the seeds used, for metrics.json (a list or a count); default: 0..config.seeds-1.
      figure: draws the figure (called after everything else is written), saved as NAME.png.
      name: NAME of NAME.png (default: the last part of the config's module name, e.g. "vanishing").
    """

    results: Mapping[str, Any]
    summary: str
    csv: Mapping[str, Sequence[Mapping[str, Any]]] = dataclasses.field(default_factory=dict)
    seeds: Sequence[int] | int | None = None
    figure: Callable[[], Figure] | None = None
    name: str | None = None

    def __post_init__(self):
        """Check what `main` will write before it writes anything (an `ArgumentTypeError` names
        the field)."""
        if not isinstance(self.results, Mapping):
            raise checks.ArgumentTypeError(f"`results` must be a mapping, got {type(self.results).__name__}.")
        if not isinstance(self.summary, str):
            raise checks.ArgumentTypeError(
                f"`summary` must be a str (Markdown), got {type(self.summary).__name__}."
            )
        if not isinstance(self.csv, Mapping):
            raise checks.ArgumentTypeError(
                f"`csv` must be a mapping file name -> rows, got {type(self.csv).__name__}."
            )
        for file_name, rows in self.csv.items():
            if (
                not isinstance(file_name, str)
                or not file_name
                or "/" in file_name
                or file_name.startswith(".")
            ):
                raise ValueError(
                    f"`csv` keys must be plain file names (written inside out_dir), got {file_name!r}."
                )
            if isinstance(rows, str | Mapping) or not isinstance(rows, Sequence):
                raise checks.ArgumentTypeError(
                    f"`csv[{file_name!r}]` must be a sequence of rows (mappings), got {type(rows).__name__}."
                )
            for row in rows:
                if not isinstance(row, Mapping):
                    raise checks.ArgumentTypeError(
                        f"`csv[{file_name!r}]` must hold mappings column -> value, got a row {row!r:.60}."
                    )
        if self.seeds is not None and not isinstance(self.seeds, int | Sequence):
            raise checks.ArgumentTypeError(
                f"`seeds` must be None, a count or a list of ints, got {type(self.seeds).__name__}."
            )
        if self.figure is not None and not callable(self.figure):
            raise checks.ArgumentTypeError(
                f"`figure` must be None or a callable returning a Figure, got {type(self.figure).__name__}."
            )
        if self.name is not None and (not isinstance(self.name, str) or not self.name or "/" in self.name):
            raise ValueError(f"`name` must be None or a plain file name, got {self.name!r}.")


def _module_name(config_cls: type) -> str:
    """The last part of the name of the module that defines `config_cls` ("vanishing" for
    experiments.vanishing), also when it runs as `python -m experiments.vanishing` (`__main__`)."""
    module = sys.modules.get(config_cls.__module__)
    spec = getattr(module, "__spec__", None)
    return (spec.name if spec is not None else config_cls.__module__).rpartition(".")[2]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(
    config_cls: type[T],
    run: Callable[..., dict[str, Any]],
    report: Callable[[T, dict[str, Any]], Outputs],
    argv: Sequence[str] | None = None,
    *,
    schema: cell_store.Schema | None = None,
) -> dict[str, Any]:
    """The `main()` of every experiment: parse, check the output directory, run, write, print.

    1. `cli.parse(config_cls, argv)`;
    2. `jaxvg.report.check_writable(config.out_dir)`, so that a bad directory fails before the
       computing, and `jaxvg.report.out_dir_lock`, so that a second run into the same directory
       stops at once instead of mixing its files with this one's;
    3. `run(config, on_cell=..., done=..., log=...)` through `cell_store.run_resumable`: cells are
       written as they finish (atomically, under `cells/config-<config key>/`, so runs with other
       configs never share them) and the valid cells already on disk are reused; a stored cell that
       is corrupted or does not match `schema` is recomputed with a `CellWarning` naming its file.
       If `run` raises, the cells finished before are on disk for the next run;
    4. `report(config, res)` says what to write: metrics.json (config, seeds, environment,
       results), the CSV files, summary.md and NAME.png, each written atomically (a temporary
       file, then `os.replace`), all under the lock;
    5. prints the summary (with its table) and, last, the directory and the files written.

    Args:
      config_cls, run, report: the experiment's config class, `run` and `report`.
      argv: the command line (default `sys.argv[1:]`).
      schema: what a valid stored cell holds (`cell_schema(...)`, or a schema `finished_cells`
        takes); None reuses every cell whose checksum holds.
    Returns:
      What `run` returned.
    """
    config = cli.parse(config_cls, argv)
    out = files.check_writable(config.out_dir)
    with cell_store.out_dir_lock(out):
        return _run_and_write(config_cls, config, out, run, report, schema)


def _run_and_write(config_cls, config, out, run, report, schema):
    res = cell_store.run_resumable(run, config, log=_stderr, schema=schema)
    outputs = report(config, res)
    seeds = outputs.seeds if outputs.seeds is not None else list(range(getattr(config, "seeds", 0)))
    written = [provenance.write_metrics(out, config, outputs.results, seeds=seeds)]
    written += [tables.write_csv(out / name, rows) for name, rows in outputs.csv.items()]
    written.append(files.write_summary(out, outputs.summary))
    if outputs.figure is not None:
        from jaxvg.report import plotting

        png = out / f"{outputs.name or _module_name(config_cls)}.png"
        plotting.save(outputs.figure(), str(png))
        written.append(png)
    print(outputs.summary.rstrip("\n"))
    print(f"\nwrote {out}/: {', '.join(pathlib.Path(p).name for p in written)}")
    return res
