"""Reporting: results files (JSON/CSV, resumable cells), the command line, plots."""

from jaxvg.report import cli as cli
from jaxvg.report import plotting as plotting
from jaxvg.report import results as results
