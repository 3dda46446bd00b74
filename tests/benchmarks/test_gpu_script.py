"""benchmarks/gpu.sh, the one-call script for a session lent an accelerator: it refuses a CPU-only
jax and says why (a CPU run must not be mistaken for a GPU one), and with ALLOW_CPU=1 it runs a
quick suite end to end, leaving the environment, the log and the suite's JSON in $OUT. An unrun
script is a broken script: no session so far has had a GPU to run it on.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("timeout") is None,
    reason="needs bash and coreutils' timeout",
)


def _gpu_sh(out: pathlib.Path, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, **env}
    return subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh")],
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_refuses_a_cpu_only_jax_and_says_why(tmp_path):
    done = _gpu_sh(tmp_path / "out", ALLOW_CPU="0")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "gpu.sh: jax sees no accelerator (backend cpu)" in done.stdout
    env = (tmp_path / "out" / "env.txt").read_text()
    assert "backend cpu" in env and "| flax " in env  # what the machine had, recorded before refusing
    assert not (tmp_path / "out" / "run.json").exists()


def test_runs_a_quick_suite_end_to_end_when_a_cpu_is_allowed(tmp_path):
    out = tmp_path / "out"
    done = _gpu_sh(out, ALLOW_CPU="1", BENCH_ARGS="--quick --suites time_flow", LIMIT="400")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert {"env.txt", "log.txt", "time_flow.json", "run.json"} <= {p.name for p in out.iterdir()}
    run = json.loads((out / "run.json").read_text())
    assert list(run["suites"]) == ["time_flow"] and run["suites"]["time_flow"]["error"] is None
    assert run["ratios"] and all(r["name"].startswith("time_flow") for r in run["ratios"])
    assert "gpu.sh: exit status 0" in (out / "log.txt").read_text()
