"""The session's shared runs (tests/conftest.py): a worker that needs a run another worker is
computing computes a run nobody has started instead of waiting on the lock."""

import pathlib
import subprocess
import sys
import textwrap
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_a_worker_that_would_wait_computes_another_run(tmp_path):
    """Two files on two workers, both asking for the shared runs a then b (3 s each). They start
    together (a barrier): one worker takes a, the other finds a's lock taken and computes b, so each
    run is computed once, by different workers. With a waiting lock the second worker idled while
    the first computed a, then b."""
    addopts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    (tmp_path / "pyproject.toml").write_text(f"[tool.pytest.ini_options]\naddopts = {addopts!r}\n")
    (tmp_path / "conftest.py").write_text(textwrap.dedent(f"""
        import importlib.util, os, pathlib, time
        import pytest
        spec = importlib.util.spec_from_file_location("tests_conftest", {str(ROOT / "tests" / "conftest.py")!r})
        shared = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(shared)
        OUT = pathlib.Path({str(tmp_path)!r})

        def _run(name):
            def compute(request):
                worker = request.config.workerinput["workerid"]
                (OUT / f"computed_{{name}}_{{worker}}").write_text("")
                time.sleep(3)
                return name.upper()
            return compute

        shared._SHARED.clear()  # the suite's own runs are not this project's
        for name in "ab":
            shared._SHARED[name] = _run(name)

        @pytest.fixture
        def barrier(request):
            (OUT / f"started_{{request.config.workerinput['workerid']}}").write_text("")
            deadline = time.time() + 60
            while len(list(OUT.glob("started_*"))) < 2:
                assert time.time() < deadline, "the other worker never started"
                time.sleep(0.05)
    """))  # fmt: skip
    for i in (1, 2):
        (tmp_path / f"test_{i}.py").write_text(textwrap.dedent("""
            from conftest import shared
            def test_both_runs(barrier, request):
                assert shared._once_per_session(request, "a") == "A"
                assert shared._once_per_session(request, "b") == "B"
        """))  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-q", "-p", "no:randomly", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    tail = proc.stdout[-2000:]
    assert proc.returncode == 0, tail
    assert "2 passed" in tail, tail
    computed = sorted(p.name for p in tmp_path.glob("computed_*"))
    assert len(computed) == 2, computed  # each run once
    assert {c.split("_")[1] for c in computed} == {"a", "b"}, computed
    assert len({c.split("_")[2] for c in computed}) == 2, f"one worker computed both: {computed}"
