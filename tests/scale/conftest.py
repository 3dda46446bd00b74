"""Fixtures for the scale tests: fresh Python processes, started one way.

Several devices (`--xla_force_host_platform_device_count`), several processes
(`jax.distributed`) and process-global settings (the compilation cache) exist only from the start
of a process, so those tests run Python in subprocesses through `run_python`.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]  # the repository root: the jaxvg under test


def _run_python(
    *commands: str | pathlib.Path | Sequence[str | pathlib.Path],
    env: Mapping[str, str | None] | None = None,
    timeout: float = 300,
    returncodes: Sequence[int] = (0,),
) -> list[str]:
    """Run Python processes at the same time and return their standard outputs.

    Each command is a code string (`python -c`), a script path, or a sequence (script path, then
    its arguments). Every process gets JAX_PLATFORMS=cpu, PYTHONPATH=the repository root, and
    `env` on top (a value None removes that variable). All are waited for (and killed when one
    times out); the test fails, with the output and errors of each failed process, when a return
    code is not in `returncodes`.
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
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
