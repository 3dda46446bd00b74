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


def _quick_fixture(name: str):
    """A session fixture `NAME_quick`: `experiments.NAME.run(Config(quick=True))`, run on first use."""

    def fixture():
        module = importlib.import_module(f"experiments.{name}")
        return module.run(module.Config(quick=True))

    fixture.__name__ = fixture.__qualname__ = f"{name}_quick"
    fixture.__doc__ = f"`experiments.{name}.run(Config(quick=True))`."
    return pytest.fixture(scope="session", name=f"{name}_quick")(fixture)


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
