"""Shared fixtures (the compilation cache and rank promotion are set in the root conftest.py).

The expensive ones are session-scoped, computed on first use and shared by the xdist workers: each
experiment's `--quick` run (`run(Config(quick=True))`; transformers: `main` with its cpu preset at
quick sizes, `TRANSFORMERS_CPU_ARGV`) and one `python -m benchmarks.run --quick`.
Under xdist a session fixture is per worker, so two workers that both need the vanishing quick run
would each compute it (about two CPU-minutes); `_once_per_session` makes the first worker that asks
compute it and pickle it under the session's shared temporary directory, and the others load it.
A worker that needs a run another worker is computing does not sit idle on the lock: it computes a
run nobody has started yet (the session needs every one of them:
`tests/test_readme_numbers.py` reads them all), then waits.

Tests that need a fresh Python process (several devices, several processes, a memory peak) start it
through `run_python`, the suite's one subprocess runner.
"""

import copy
import importlib
import os
import pathlib
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import filelock
import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

ROOT = pathlib.Path(__file__).resolve().parents[1]  # the repository root: the jaxvg under test


# name -> compute(request): every run `_once_per_session` shares, registered by `_shared_fixture`
_SHARED: dict[str, Callable[[pytest.FixtureRequest], Any]] = {}
_STARTED_HERE: set[str] = set()  # the runs this worker has computed or tried to, ahead of their tests


def _shared_path(request: pytest.FixtureRequest, name: str) -> pathlib.Path:
    root = request.getfixturevalue("tmp_path_factory").getbasetemp().parent / "shared"
    root.mkdir(exist_ok=True)
    return root / f"{name}.pkl"


def _compute_into(request: pytest.FixtureRequest, name: str, path: pathlib.Path) -> Any:
    """Under `path`'s lock (held by the caller): the pickled value, computed here if it is not there."""
    if path.exists():
        return pickle.loads(path.read_bytes())
    value = _SHARED[name](request)
    path.write_bytes(pickle.dumps(value))
    return value


def _compute_an_unstarted_run(request: pytest.FixtureRequest, skip: str) -> bool:
    """Compute one shared run that no worker has computed or started (not `skip`); False if none.
    An error here is left for the test that needs that run: it computes it again and fails there."""
    for name in _SHARED:
        path = _shared_path(request, name)
        if name == skip or name in _STARTED_HERE or path.exists():
            continue
        lock = filelock.FileLock(str(path) + ".lock")
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            continue
        _STARTED_HERE.add(name)
        try:
            if not path.exists():  # (another worker may have finished it since the check above)
                path.write_bytes(pickle.dumps(_SHARED[name](request)))
        except Exception:  # noqa: BLE001 - reported by the test that needs it
            pass
        finally:
            lock.release()
        return True
    return False


def _once_per_session(request: pytest.FixtureRequest, name: str) -> Any:
    """The shared run `name`, computed once per test session whatever the number of xdist workers.

    Without xdist (worker "master") it is just computed. Under xdist the value is pickled to
    `<session basetemp>/shared/NAME.pkl` by the first worker to ask, under a file lock. A worker
    that finds the lock taken computes another run that nobody has started
    (`_compute_an_unstarted_run`) and asks again; when none is left it waits on the lock and
    unpickles. A worker whose compute raises writes nothing, so the next one to ask computes again
    (and raises the same error in its own test).
    """
    worker = getattr(request.config, "workerinput", {}).get("workerid", "master")
    if worker == "master":
        return _SHARED[name](request)
    path = _shared_path(request, name)
    lock = filelock.FileLock(str(path) + ".lock")
    while True:
        try:
            with lock.acquire(timeout=0):
                return _compute_into(request, name, path)
        except filelock.Timeout:
            if not _compute_an_unstarted_run(request, skip=name):
                break
    with lock:
        return _compute_into(request, name, path)


def _shared_fixture(name: str, doc: str):
    """Register `compute(request)` (the decorated function) as the shared run `name` and return the
    session fixture `name` that serves it through `_once_per_session`."""

    def register(compute: Callable[[pytest.FixtureRequest], Any]):
        _SHARED[name] = compute

        def fixture(request):
            return _once_per_session(request, name)

        fixture.__name__ = fixture.__qualname__ = name
        fixture.__doc__ = doc
        return pytest.fixture(scope="session", name=name)(fixture)

    return register


def _quick_fixture(name: str):
    """A session fixture `NAME_quick`: `experiments.NAME.run(Config(quick=True))`, run once."""

    def compute(request):
        module = importlib.import_module(f"experiments.{name}")
        return module.run(module.Config(quick=True))

    doc = f"`experiments.{name}.run(Config(quick=True))`, once per session."
    return _shared_fixture(f"{name}_quick", doc)(compute)


# `python -m experiments.transformers --preset cpu` at the quick sizes (d_model 16, init depths 2
# and 8, rank depth 8, training at depth 2 for 100 steps): the cpu preset's own learning rate
# (3e-3), warmup (50 steps) and logging interval (20 steps) and batch size (32) are kept
TRANSFORMERS_CPU_ARGV = ["--preset", "cpu", "--d-model", "16", "--heads", "2", "--seq-len", "6", "--vocab", "6",
                         "--init-depths", "2", "8", "--init-seeds", "2", "--init-batch", "8", "--rank-depth", "8",
                         "--train-depths", "2", "--n-train", "256", "--steps", "100"]  # fmt: skip


def _run_python(
    *commands: str | pathlib.Path | Sequence[str | pathlib.Path],
    env: Mapping[str, str | None] | None = None,
    timeout: float = 300,
    returncodes: Sequence[int] = (0,),
) -> list[str]:
    """Run Python processes at the same time and return their standard outputs.

    Each command is a code string (`python -c`), a script path, or a sequence of Python's
    arguments (a script path, or "-c" and code, then the script's arguments). Every process gets
    JAX_PLATFORMS=cpu, PYTHONPATH=the repository root, and `env` on top (a value None removes that
    variable). All are waited for (and killed when one times out); the test fails, with the output
    and errors of each failed process, when a return code is not in `returncodes`.
    """
    base = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    for name, value in (env or {}).items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    argvs = []
    for command in commands:
        if isinstance(command, str):
            argvs.append([sys.executable, "-c", command])
        elif isinstance(command, pathlib.Path):
            argvs.append([sys.executable, str(command)])
        else:
            argvs.append([sys.executable, *map(str, command)])
    # Output goes to files, not pipes: a process blocked on a full pipe while another waits for it
    # in a collective would never finish.
    outs = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in argvs]
    procs = [
        subprocess.Popen(argv, env=base, cwd=ROOT, stdout=out, stderr=err, text=True)
        for argv, (out, err) in zip(argvs, outs, strict=True)
    ]
    try:
        for proc in procs:
            proc.wait(timeout=timeout)
    finally:
        for proc in procs:  # only the processes started here
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    logs = []
    for out, err in outs:
        logs.append((_read(out), _read(err)))
    failed = [i for i, proc in enumerate(procs) if proc.returncode not in returncodes]
    assert not failed, "\n".join(
        f"process {i} ({' '.join(argvs[i][1:])[:200]}) exited {procs[i].returncode}:\n"
        f"{logs[i][0]}\n{logs[i][1]}"
        for i in failed
    )
    return [stdout for stdout, _ in logs]


def _read(file) -> str:
    with file:
        file.seek(0)
        return file.read()


@pytest.fixture(scope="session")
def run_python():
    """`run_python(*commands, env=None, timeout=300, returncodes=(0,)) -> list of stdouts`."""
    return _run_python


@pytest.fixture
def x64():
    """Float64 for the duration of one test (brute-force references)."""
    with jax.enable_x64(True):
        yield


# registered longest first (CPU-seconds of a cold run on 2 cores: 100, 76, 51, 46, 17, 17, 14, 4),
# the order in which a worker that would wait starts the runs nobody has started
through_time_quick = _quick_fixture("through_time")


@_shared_fixture(
    "transformers_cpu",
    """(config, result, {key: stored cell}, output directory) of `experiments.transformers.main`
    with `TRANSFORMERS_CPU_ARGV`: the cpu preset run end to end (all three parts, the five trained
    variants), shared by the transformers tests and the preset dry runs.""",
)
def transformers_cpu(request):
    from experiments import transformers
    from jaxvg import report
    from jaxvg.report import cli

    out_dir = request.getfixturevalue("tmp_path_factory").mktemp("transformers_cpu")
    argv = [*TRANSFORMERS_CPU_ARGV, "--out-dir", str(out_dir)]
    res = transformers.main(argv)
    config = cli.parse(transformers.Config, argv)
    return config, res, report.finished_cells(out_dir, config=config), out_dir


@_shared_fixture(
    "remedies_quick",
    "(config, result, {key: cell as `on_cell` received it}) of `experiments.remedies`' quick run.",
)
def remedies_quick(request):
    from experiments import remedies

    config = remedies.Config(quick=True)
    stored = {}
    res = remedies.run(config, on_cell=lambda key, cell: stored.__setitem__(key, copy.deepcopy(cell)))
    return config, res, stored


@_shared_fixture(
    "benchmarks_quick",
    """(run.json dict, output directory) of one `python -m benchmarks.run --quick` (all suites,
    each in its own subprocess).""",
)
def benchmarks_quick(request):
    from benchmarks import run

    out_dir = request.getfixturevalue("tmp_path_factory").mktemp("bench")
    return run.main(["--quick", "--out-dir", str(out_dir)]), out_dir


phase_diagram_quick = _quick_fixture("phase_diagram")
isometry_quick = _quick_fixture("isometry")
vanishing_quick = _quick_fixture("vanishing")
xor_quick = _quick_fixture("xor")
