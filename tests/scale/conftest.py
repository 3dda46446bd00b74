"""Fixtures for the scale tests (the subprocess runner `run_python` is in tests/conftest.py).

Several devices (`--xla_force_host_platform_device_count`), several processes
(`jax.distributed`) and process-global settings (the compilation cache) exist only from the start
of a process, so those tests run Python in subprocesses through `run_python`.
"""

from __future__ import annotations

import socket

import pytest


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
