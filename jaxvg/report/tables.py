"""Tables: CSV files and aligned text tables that are also GitHub Markdown.

Example:
  >>> from jaxvg import report
  >>> print(report.format_table([{"activation": "tanh", "gain": -0.0123456}]))
  | activation |     gain |
  | :--------- | -------: |
  | tanh       | -0.01235 |
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jaxvg.report import files

__all__ = ["format_table", "write_csv"]


def _columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(map(str, row)))
    return list(columns)


def _checked_rows(rows: Any) -> list[Mapping[str, Any]]:
    """`rows` as a list, or a TypeError naming `rows` unless it is a sequence of mappings."""
    if isinstance(rows, str | bytes | Mapping) or not isinstance(rows, Iterable):
        raise TypeError(f"`rows` must be a sequence of mappings (one per row), got {type(rows).__name__}.")
    rows = list(rows)
    bad = next((r for r in rows if not isinstance(r, Mapping)), None)
    if bad is not None:
        raise TypeError(
            f"`rows` must be a sequence of mappings (one per row), got an element {bad!r:.40} "
            f"({type(bad).__name__})."
        )
    return rows


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

    Raises:
      ValueError: if `path` is "".
    """
    path = files.as_path(path)
    rows = _checked_rows(rows)
    columns = _columns(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        row = {str(k): v for k, v in row.items()}
        writer.writerow([_csv_value(row.get(c)) for c in columns])
    return files.write_text(path, buf.getvalue())


def _csv_value(value: Any) -> str:
    value = files._scalar(value)
    if value is None:
        return ""
    if isinstance(value, bool | str):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, int):
        return str(value)
    return json.dumps(files.to_jsonable(value), allow_nan=False)


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
    rows = _checked_rows(rows)
    columns = [str(c) for c in columns] if columns is not None else _columns(rows)
    if not columns:
        return ""
    cells = [[_table_cell(files._scalar(row.get(c)), floatfmt) for c in columns] for row in rows]
    numeric = [_is_numeric_column([files._scalar(row.get(c)) for row in rows]) for c in columns]
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
        value = json.dumps(files.to_jsonable(value), allow_nan=False)
    return value.replace("|", "\\|").replace("\n", " ")
