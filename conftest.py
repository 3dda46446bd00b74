"""Root conftest, loaded before any test or doctest in jaxvg/ and tests/.

Rank promotion raises (equinox, diffrax, neural-tangents and nanodo all do this).
JAX's persistent compilation cache is on for the suite (set before jax starts): a warm cache cut the
CPU time of tests/test_models.py 2.6x and of the sweep tests 3.3x; a cold one (a fresh CI clone) costs
nothing measurable. Set JAX_COMPILATION_CACHE_DIR yourself to move it. Every program is cached
(threshold 0): the CLI tests run the experiments and benchmarks in subprocesses, which recompile
the same small programs; a clean-clone run with the cache off had done 12 % of the tests after 16
minutes, one caching only programs that took >= 0.5 s to compile (and scheduling with --dist
loadgroup) 8 %, against about 85 % after 18 minutes with every program cached. jaxlib 0.10.2
aborted a worker twice while serialising one test's executable for the cache; that test
(`test_small_net_learns_spirals`) switches cache writes off.

The suite compiles some 2000 small programs, and on CPU most of their compile time is LLVM's
optimiser: the tests run XLA's CPU backend at LLVM optimisation level 0
(`--xla_backend_optimization_level=0`, unless XLA_FLAGS already sets a level; subprocesses inherit
it). The algorithms are the same, the rounding of some float32 results is not always bit-equal to
-O2's (how a loop is vectorised): two tests had ulp-tight float32 tolerances and now allow float32
rounding (tests/theory/test_spectra.py's depth-50 product, tests/measure/test_nets.py's chunked
vmap), as another CPU or a GPU would need. Measured on 2 idle cores, cold cache, `pytest -n 2
--durations=0` on 2026-12-02: the whole suite 1580 s at -O2 against 1218 s at -O0 (3026 against
2278 worker-seconds); the remedies quick run 192 -> 101 s, transformers' cpu run 201 -> 110 s, the
through_time quick run alone 169 -> 137 s. Users' programs keep XLA's default level.

The rest of that compile time was XLA's new CPU fusion emitters (MLIR): the tests also run the
legacy loop emitters (`--xla_cpu_use_fusion_emitters=false`). tests/measure/test_time_flow.py alone,
one process, cold cache, 2026-12-03: 63.6 s at -O0 (48.9 s of it backend compilation, 568
programs) against 34.0 s (20.0 s) with the flag; -O2 with the flag 59.0 s. The whole suite, cold
clone, same machine within the hour: 929 s (1617 CPU-seconds) against 655 s (1096). Float32
results can differ in the last bits between the two code generators (fusion decides the order of
some sums), as between two CPUs: tests compare two programs to float32 rounding, not bit for bit.
Each flag is added only when XLA_FLAGS does not set it and the installed jaxlib knows it (an unknown
flag aborts the process).

Under `-n 2` each test file runs whole in one worker (`--dist loadfile`, pyproject.toml's addopts):
with xdist's default per-test distribution both workers traced and compiled most files' programs
(the persistent cache spares a compile only once the other worker has written it, never the
tracing). A cold clone on 2 idle cores, 2026-12-02: 922 s wall and 1610 CPU-seconds, against about
1250 s and 2300 CPU-seconds per test.

A worker that crashes (jaxlib 0.10.2 has segfaulted in `put_executable_and_time`, serialising an
executable for the cache, on a different test each time and not reproducibly) must not hang the
session: xdist 3.8.0's file scheduler re-queues every file the dead worker had, finished ones too,
and sends a finished file to a live worker as an empty batch, after which that worker waits for work
that never comes and the session never ends (it hung a whole-suite run on 2026-12-02). It also cannot
put the crashed test back for pytest-rerunfailures (`--reruns 1 --only-rerun 'crashed while
running'`), so the crash would count as a failure. `_CrashSafeFileScheduling` does both;
tests/test_suite_scheduler.py crashes a worker in a small project and checks the session ends, the
test reruns and passes.
"""

import os
import pathlib
import socket

os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(pathlib.Path(__file__).resolve().parent / ".jax_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def _xla_flags_known(names: tuple[str, ...]) -> set[str]:
    """Those of `names` that the installed jaxlib has as XLA flags (an unknown flag in XLA_FLAGS
    aborts the process): the names found among its libraries' strings, in one memory-mapped pass
    over them (~0.2 s)."""
    import importlib.util
    import mmap

    spec = importlib.util.find_spec("jaxlib")
    if spec is None or spec.origin is None:
        return set()
    known: set[str] = set()
    for library in pathlib.Path(spec.origin).parent.glob("*.so*"):
        with open(library, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            known.update(name for name in names if name not in known and data.find(name.encode()) >= 0)
        if len(known) == len(names):
            break
    return known


def _add_xla_flags(**flags: str) -> None:
    """Append `--name=value` to XLA_FLAGS for each flag that XLA_FLAGS does not set and jaxlib has."""
    current = os.environ.get("XLA_FLAGS", "")
    wanted = tuple(name for name in flags if name not in current)
    known = _xla_flags_known(wanted) if wanted else set()
    added = [f"--{name}={flags[name]}" for name in wanted if name in known]
    if added:
        os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()


_add_xla_flags(xla_backend_optimization_level="0", xla_cpu_use_fusion_emitters="false")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    """Under xdist, pytest-rerunfailures' worker asks the controller for each test's rerun count
    over a local TCP socket: one unanswered "set" and then the next test's "get", each a small
    write. With Nagle's algorithm on, the "get" waits for the controller's delayed ACK of the
    "set" (40 ms on Linux): 936 fast tests took 49.5 s on 2 workers against 12.7 s without the
    plugin (2026-12-03). `TCP_NODELAY` on the worker's socket sends each message at once."""
    db = getattr(config, "failures_db", None)
    sock = getattr(db, "sock", None)
    if hasattr(config, "workerinput") and isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` (the suite's default) with `_CrashSafeFileScheduling`; others unchanged."""
    if config.getvalue("dist") != "loadfile":
        return None
    return _crash_safe_file_scheduling()(config, log)


def _crash_safe_file_scheduling():
    """xdist's `LoadFileScheduling`, fixed for a worker that dies mid-file (see the docstring above)."""
    from xdist.scheduler import LoadFileScheduling

    class _CrashSafeFileScheduling(LoadFileScheduling):
        def remove_node(self, node):
            # Only files with tests still to run go back to the queue.
            work = self.assigned_work[node]
            for scope in [scope for scope, unit in work.items() if all(unit.values())]:
                del work[scope]
            return super().remove_node(node)

        def mark_test_pending(self, item):
            # `remove_node` has re-queued (or already re-assigned) the crashed test's file with the
            # test not done: mark it so and pytest-rerunfailures reports a rerun, not a failure.
            scope = self._split_scope(item)
            units = [self.workqueue.get(scope), *(work.get(scope) for work in self.assigned_work.values())]
            for unit in units:
                if unit is not None and item in unit:
                    unit[item] = False
                    return
            raise NotImplementedError(f"{item} is in no pending file")

    return _CrashSafeFileScheduling
