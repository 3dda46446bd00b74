"""Run every bad-input table and count the outcomes: clear / unclear / internal error / silently accepted.

    python -m tests.probe_bad_inputs            (from the repository root; -v lists every non-clear case)

Tables: `tests/test_bad_inputs.py` (nn, train, data, losses, the experiment and benchmark command
lines, the experiment configs and `main`, the report writers) and the theory tables
(`BAD_INPUTS` of tests/theory/test_{maps,depth,spectra}.py); the report writers of files, tables,
provenance, cells and plotting and the theory tables are counted as "[other owner]". "clear": the expected exception type,
a message that matches the table's regex and names the argument; "unclear": another ValueError,
TypeError, OSError or exit, or a message that does not match; "internal error": any other
exception; "silently accepted": nothing raised. Exit status 1 when a case of ours (not an other
owner's) is in the last two columns.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import warnings
from collections import Counter

from tests import test_bad_inputs as tables
from tests.test_bad_inputs import OUTCOMES, Case, classify

THEORY_MODULES = ("tests.theory.test_maps", "tests.theory.test_depth", "tests.theory.test_spectra")


def theory_cases() -> list[Case]:
    """The theory tables as `Case`s (each row: argument, value, error, regex; see tests/theory/_shared.py)."""
    from tests.theory import _shared

    cases = []
    for name in THEORY_MODULES:
        module = importlib.import_module(name)
        for fn, positional, keywords, rows in module.BAD_INPUTS.values():
            for arg, value, error, match in rows:
                call = lambda f=fn, p=positional, k=keywords, a=arg, v=value: _shared.call_with(f, p, k, a, v)  # noqa: E731
                cases.append(Case(f"theory.{fn.__name__}", arg, value, call, error, match))
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="list every case that is not clear")
    verbose = parser.parse_args(argv).verbose
    ours = tables.all_tables(lambda: tempfile.mkdtemp(prefix="jaxvg-probe-"))
    others = {
        **tables.other_tables(lambda: tempfile.mkdtemp(prefix="jaxvg-probe-")),
        "theory": theory_cases(),
    }
    groups = {**ours, **{f"{name} [other owner]": cases for name, cases in others.items()}}
    counts: dict[str, Counter] = {}
    problems = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy overflow warnings and the like: the outcome counts
        for group, cases in groups.items():
            counts[group] = Counter()
            for case in cases:
                outcome, what = classify(case)
                counts[group][outcome] += 1
                if outcome != "clear":
                    problems.append((group, case, outcome, what))
    width = max(map(len, groups))
    header = f"{'entry point':<{width}}  " + "  ".join(f"{o:>17}" for o in OUTCOMES)
    print(header)
    print("-" * len(header))
    total: Counter = Counter()
    for group, counter in counts.items():
        total.update(counter)
        print(f"{group:<{width}}  " + "  ".join(f"{counter[o]:>17}" for o in OUTCOMES))
    print("-" * len(header))
    print(f"{'all':<{width}}  " + "  ".join(f"{total[o]:>17}" for o in OUTCOMES))
    for group, case, outcome, what in problems if verbose else ():
        print(f"\n[{outcome}] {case.id} ({group}): {what}\n  expected {case.error.__name__} /{case.match}/")
    ours_bad = sum(counts[g][o] for g in ours for o in OUTCOMES[2:])
    return 1 if ours_bad else 0


if __name__ == "__main__":
    sys.exit(main())
