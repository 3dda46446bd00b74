"""Shared fixtures (the compilation cache and rank promotion are set in the root conftest.py).

The expensive ones are session-scoped and computed on first use: each experiment's `--quick` run
(`run(Config(quick=True))`) and one `python -m benchmarks.run --quick`, so that every test file
(and every test within one) that needs them shares a single computation.
"""

import copy
import importlib

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


def _quick_run(name: str):
    """`experiments.NAME.run(Config(quick=True))`."""
    module = importlib.import_module(f"experiments.{name}")
    return module.run(module.Config(quick=True))


@pytest.fixture
def x64():
    """Float64 for the duration of one test (brute-force references)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def xor_quick():
    """`experiments.xor.run(Config(quick=True))`."""
    return _quick_run("xor")


@pytest.fixture(scope="session")
def vanishing_quick():
    """`experiments.vanishing.run(Config(quick=True))`."""
    return _quick_run("vanishing")


@pytest.fixture(scope="session")
def remedies_quick():
    """(config, result, {key: cell as `on_cell` received it}) of `experiments.remedies`' quick run."""
    from experiments import remedies

    config = remedies.Config(quick=True)
    stored = {}
    res = remedies.run(config, on_cell=lambda key, cell: stored.__setitem__(key, copy.deepcopy(cell)))
    return config, res, stored


@pytest.fixture(scope="session")
def phase_diagram_quick():
    """`experiments.phase_diagram.run(Config(quick=True))`."""
    return _quick_run("phase_diagram")


@pytest.fixture(scope="session")
def isometry_quick():
    """`experiments.isometry.run(Config(quick=True))`."""
    return _quick_run("isometry")


@pytest.fixture(scope="session")
def benchmarks_quick(tmp_path_factory):
    """(run.json dict, output directory) of one `python -m benchmarks.run --quick` (all suites,
    each in its own subprocess)."""
    from benchmarks import run

    out_dir = tmp_path_factory.mktemp("bench")
    return run.main(["--quick", "--out-dir", str(out_dir)]), out_dir
