"""Shared fixtures (the compilation cache and rank promotion are set in the root conftest.py).

The expensive ones are session-scoped and computed on first use: each experiment's `--quick` run
(`run(Config(quick=True))`) and one `python -m benchmarks.run --quick`, so that every test file
(and every test within one) that needs them shares a single computation. Under `pytest -n`
(`--dist loadgroup`, set in pyproject.toml) every test that uses them runs on one worker, and every
test of a module with an expensive module fixture on one worker: a session or module fixture is
computed once per worker that needs it, and the quick runs are most of the suite's time.
"""

import copy
import importlib

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


def _quick_fixture(name: str):
    """A session fixture `NAME_quick`: `experiments.NAME.run(Config(quick=True))`, run on first use."""

    def fixture():
        module = importlib.import_module(f"experiments.{name}")
        return module.run(module.Config(quick=True))

    fixture.__name__ = fixture.__qualname__ = f"{name}_quick"
    fixture.__doc__ = f"`experiments.{name}.run(Config(quick=True))`."
    return pytest.fixture(scope="session", name=f"{name}_quick")(fixture)


QUICK_FIXTURES = frozenset(
    {"xor_quick", "vanishing_quick", "phase_diagram_quick", "isometry_quick", "remedies_quick", "benchmarks_quick"}
)
# test files whose tests share an expensive module-scoped fixture (their own quick run), and the
# file whose tests ask for the session's quick runs through `request.getfixturevalue`
MODULE_GROUPS = {"test_through_time.py": "through_time", "test_transformers.py": "transformers"}
DYNAMIC_QUICK_USERS = {"test_stored_cells.py"}


def pytest_collection_modifyitems(config, items):
    """Pin the users of one expensive fixture to one xdist worker (`xdist_group`, honoured by
    `--dist loadgroup`; without xdist the mark does nothing)."""
    for item in items:
        name = item.path.name
        uses_quick = QUICK_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if uses_quick or (name in DYNAMIC_QUICK_USERS and item.get_closest_marker("slow")):
            item.add_marker(pytest.mark.xdist_group("quick_runs"))
        elif name in MODULE_GROUPS:
            item.add_marker(pytest.mark.xdist_group(MODULE_GROUPS[name]))


xor_quick = _quick_fixture("xor")
vanishing_quick = _quick_fixture("vanishing")
phase_diagram_quick = _quick_fixture("phase_diagram")
isometry_quick = _quick_fixture("isometry")


@pytest.fixture
def x64():
    """Float64 for the duration of one test (brute-force references)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def remedies_quick():
    """(config, result, {key: cell as `on_cell` received it}) of `experiments.remedies`' quick run."""
    from experiments import remedies

    config = remedies.Config(quick=True)
    stored = {}
    res = remedies.run(config, on_cell=lambda key, cell: stored.__setitem__(key, copy.deepcopy(cell)))
    return config, res, stored


@pytest.fixture(scope="session")
def benchmarks_quick(tmp_path_factory):
    """(run.json dict, output directory) of one `python -m benchmarks.run --quick` (all suites,
    each in its own subprocess)."""
    from benchmarks import run

    out_dir = tmp_path_factory.mktemp("bench")
    return run.main(["--quick", "--out-dir", str(out_dir)]), out_dir
