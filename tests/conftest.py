"""Shared fixtures (the compilation cache and rank promotion are set in the root conftest.py).

The expensive ones are session-scoped, computed on first use and shared by the xdist workers: each
experiment's `--quick` run (`run(Config(quick=True))`; transformers: `main` with its cpu preset at
quick sizes, `TRANSFORMERS_CPU_ARGV`) and one `python -m benchmarks.run --quick`.
Under xdist a session fixture is per worker, so two workers that both need the vanishing quick run
would each compute it (about two CPU-minutes); `_once_per_session` makes the first worker that asks
compute it and pickle it under the session's shared temporary directory, and the others wait for it
(a file lock) and load it.
"""

import copy
import importlib
import pickle
from collections.abc import Callable
from typing import Any

import filelock
import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


def _once_per_session(request: pytest.FixtureRequest, name: str, compute: Callable[[], Any]) -> Any:
    """`compute()` once per test session, whatever the number of xdist workers.

    Without xdist (worker "master") it is just `compute()`. Under xdist the value is pickled to
    `<session basetemp>/shared/NAME.pkl` by the first worker to ask, under a file lock; the others
    wait on the lock and unpickle it. A worker whose compute raises writes nothing, so the next one
    to ask computes again (and raises the same error in its own test).
    """
    worker = getattr(request.config, "workerinput", {}).get("workerid", "master")
    if worker == "master":
        return compute()
    root = request.getfixturevalue("tmp_path_factory").getbasetemp().parent / "shared"
    root.mkdir(exist_ok=True)
    path = root / f"{name}.pkl"
    with filelock.FileLock(str(path) + ".lock"):
        if path.exists():
            return pickle.loads(path.read_bytes())
        value = compute()
        path.write_bytes(pickle.dumps(value))
        return value


def _quick_fixture(name: str):
    """A session fixture `NAME_quick`: `experiments.NAME.run(Config(quick=True))`, run once."""

    def compute():
        module = importlib.import_module(f"experiments.{name}")
        return module.run(module.Config(quick=True))

    def fixture(request):
        return _once_per_session(request, f"{name}_quick", compute)

    fixture.__name__ = fixture.__qualname__ = f"{name}_quick"
    fixture.__doc__ = f"`experiments.{name}.run(Config(quick=True))`, once per session."
    return pytest.fixture(scope="session", name=f"{name}_quick")(fixture)


xor_quick = _quick_fixture("xor")
vanishing_quick = _quick_fixture("vanishing")
phase_diagram_quick = _quick_fixture("phase_diagram")
isometry_quick = _quick_fixture("isometry")
through_time_quick = _quick_fixture("through_time")

# `python -m experiments.transformers --preset cpu` at the quick sizes (d_model 16, init depths 2
# and 8, rank depth 8, training at depth 2 for 100 steps): the cpu preset's own learning rate
# (3e-3), warmup (50 steps) and logging interval (20 steps) and batch size (32) are kept
TRANSFORMERS_CPU_ARGV = ["--preset", "cpu", "--d-model", "16", "--heads", "2", "--seq-len", "6", "--vocab", "6",
                         "--init-depths", "2", "8", "--init-seeds", "2", "--init-batch", "8", "--rank-depth", "8",
                         "--train-depths", "2", "--n-train", "256", "--steps", "100"]  # fmt: skip


@pytest.fixture
def x64():
    """Float64 for the duration of one test (brute-force references)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def remedies_quick(request):
    """(config, result, {key: cell as `on_cell` received it}) of `experiments.remedies`' quick run."""
    from experiments import remedies

    def compute():
        config = remedies.Config(quick=True)
        stored = {}
        res = remedies.run(config, on_cell=lambda key, cell: stored.__setitem__(key, copy.deepcopy(cell)))
        return config, res, stored

    return _once_per_session(request, "remedies_quick", compute)


@pytest.fixture(scope="session")
def transformers_cpu(request, tmp_path_factory):
    """(config, result, {key: stored cell}, output directory) of `experiments.transformers.main`
    with `TRANSFORMERS_CPU_ARGV`: the cpu preset run end to end (all three parts, the five trained
    variants), shared by the transformers tests and the preset dry runs."""
    from experiments import transformers
    from jaxvg import report
    from jaxvg.report import cli

    def compute():
        out_dir = tmp_path_factory.mktemp("transformers_cpu")
        argv = [*TRANSFORMERS_CPU_ARGV, "--out-dir", str(out_dir)]
        res = transformers.main(argv)
        config = cli.parse(transformers.Config, argv)
        return config, res, report.finished_cells(out_dir, config=config), out_dir

    return _once_per_session(request, "transformers_cpu", compute)


@pytest.fixture(scope="session")
def benchmarks_quick(request, tmp_path_factory):
    """(run.json dict, output directory) of one `python -m benchmarks.run --quick` (all suites,
    each in its own subprocess)."""
    from benchmarks import run

    def compute():
        out_dir = tmp_path_factory.mktemp("bench")
        return run.main(["--quick", "--out-dir", str(out_dir)]), out_dir

    return _once_per_session(request, "benchmarks_quick", compute)
