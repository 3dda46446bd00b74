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
`jaxvg.report.cell_store.finished_cells` reads it) when the setup it was stored with equals the
current one, and otherwise computes it, stores its setup in it and hands it to `on_cell` at once.
Every cell goes through `files.to_jsonable`, so a cell just computed and one read back from
disk look the same (lists, NaN and +-Inf as None).
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from jaxvg.report import cells as cell_store
from jaxvg.report import cli, files, provenance, tables

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Cells", "Done", "Log", "OnCell", "Outputs", "apply_quick", "main"]

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


# --------------------------------------------------------------------------- cells


class Cells:
    """The cells of one `run`: reused from `done` when their setup matches, else computed.

    Attributes:
      cells: {key: cell} in the order `get`/`add` saw them; every cell holds its `"setup"`.
      computed: the keys computed (not reused) in this run.
    """

    def __init__(self, done: Done = None, on_cell: OnCell = None, log: Log = None):
        self.done = done or {}
        self.on_cell = on_cell
        self.log = log
        self.cells: dict[str, Any] = {}
        self.computed: list[str] = []

    def reuse(self, key: str, setup: Mapping[str, Any]) -> bool:
        """Keep `done[key]` (and return True) when it was stored with this `setup`."""
        old = self.done.get(key)
        if isinstance(old, Mapping) and old.get("setup") == files.to_jsonable(setup):
            self.cells[key] = dict(old)
            return True
        return False

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
) -> dict[str, Any]:
    """The `main()` of every experiment: parse, check the output directory, run, write, print.

    1. `cli.parse(config_cls, argv)`;
    2. `jaxvg.report.check_writable(config.out_dir)`, so that a bad directory fails before the
       computing, and `jaxvg.report.out_dir_lock`, so that a second run into the same directory
       stops at once instead of mixing its files with this one's;
    3. `run(config, on_cell=..., done=..., log=...)` through `cell_store.run_resumable`: cells are
       written as they finish and the cells already on disk are reused;
    4. `report(config, res)` says what to write: metrics.json (config, seeds, environment,
       results), the CSV files, summary.md and NAME.png;
    5. prints the summary (with its table) and, last, the directory and the files written.

    Returns:
      What `run` returned.
    """
    config = cli.parse(config_cls, argv)
    out = files.check_writable(config.out_dir)
    with cell_store.out_dir_lock(out):
        return _run_and_write(config_cls, config, out, run, report)


def _run_and_write(config_cls, config, out, run, report):
    res = cell_store.run_resumable(run, config, log=_stderr)
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
