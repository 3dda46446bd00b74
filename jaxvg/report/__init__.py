"""Reporting: result files, provenance, resumable cells, tables, the command line, plots.

Modules: `files` (strict JSON, atomic writes, output paths checked first), `provenance`
(environment, config keys, metrics.json), `cells` (resumable sweep cells with checksums, schemas
and config keys; the output-directory lock), `tables` (CSV, Markdown tables), `cli`, `plotting`
(figures of jaxvg's results, `save`) and `figures` (the experiments' figures). The results helpers are re-exported here: `jaxvg.report.write_json`,
`jaxvg.report.run_resumable`, ...
"""

from jaxvg.report import cells as cells
from jaxvg.report import cli as cli
from jaxvg.report import figures as figures
from jaxvg.report import files as files
from jaxvg.report import plotting as plotting
from jaxvg.report import provenance as provenance
from jaxvg.report import tables as tables
from jaxvg.report.cells import CellWarning as CellWarning
from jaxvg.report.cells import cell_filename as cell_filename
from jaxvg.report.cells import cell_writer as cell_writer
from jaxvg.report.cells import finished_cells as finished_cells
from jaxvg.report.cells import out_dir_lock as out_dir_lock
from jaxvg.report.cells import run_resumable as run_resumable
from jaxvg.report.files import as_path as as_path
from jaxvg.report.files import check_writable as check_writable
from jaxvg.report.files import open_atomic as open_atomic
from jaxvg.report.files import read_json as read_json
from jaxvg.report.files import to_jsonable as to_jsonable
from jaxvg.report.files import write_json as write_json
from jaxvg.report.files import write_summary as write_summary
from jaxvg.report.files import write_text as write_text
from jaxvg.report.provenance import CONFIG_IGNORE as CONFIG_IGNORE
from jaxvg.report.provenance import config_dict as config_dict
from jaxvg.report.provenance import config_key as config_key
from jaxvg.report.provenance import environment as environment
from jaxvg.report.provenance import write_metrics as write_metrics
from jaxvg.report.tables import format_table as format_table
from jaxvg.report.tables import write_csv as write_csv
