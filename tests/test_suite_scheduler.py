"""The suite's xdist scheduler (root conftest.py): a worker that crashes mid-file neither hangs the
session nor fails it when the crashed test passes on its rerun; the workers' rerun bookkeeping
socket sends each message at once."""

import pathlib
import socket
import subprocess
import sys
import textwrap
import tomllib
import types

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_a_crashed_worker_is_replaced_and_its_test_rerun(tmp_path):
    """Five files on two workers; the last file's second test kills its worker once (SIGSEGV, as
    jaxlib's cache writer has). That worker has finished a file before: xdist 3.8.0's own file
    scheduler re-sent the finished file as empty work and the session hung (the timeout here)."""
    addopts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    (tmp_path / "pyproject.toml").write_text(f"[tool.pytest.ini_options]\naddopts = {addopts!r}\n")
    (tmp_path / "conftest.py").write_text(textwrap.dedent(f"""
        import importlib.util
        spec = importlib.util.spec_from_file_location("root_conftest", {str(ROOT / "conftest.py")!r})
        root = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(root)
        pytest_xdist_make_scheduler = root.pytest_xdist_make_scheduler
    """))  # fmt: skip
    for name in "abcd":
        (tmp_path / f"test_{name}.py").write_text(
            "import time\n" + "".join(f"def test_{i}():\n    time.sleep(0.2)\n" for i in range(3))
        )
    (tmp_path / "test_z_crash.py").write_text(textwrap.dedent(f"""
        import os, pathlib, signal
        def test_before():
            pass
        def test_crash():
            marker = pathlib.Path({str(tmp_path / "crashed")!r})
            if not marker.exists():
                marker.write_text("once")
                os.kill(os.getpid(), signal.SIGSEGV)
        def test_after():
            pass
    """))  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-q", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    tail = proc.stdout[-2000:]
    assert (tmp_path / "crashed").exists(), tail
    assert "node down" in proc.stdout, tail
    assert proc.returncode == 0, tail
    assert "15 passed, 1 rerun" in tail, tail


def _nodelay(sock: socket.socket) -> bool:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_the_rerun_bookkeeping_socket_of_a_worker_sends_at_once(request):
    """The root conftest's `pytest_configure` turns Nagle's algorithm off on a worker's
    pytest-rerunfailures socket (each test waited 40 ms for a delayed ACK), and only there; when this
    test runs in an xdist worker, its own socket has it off."""
    root = next(  # the root conftest as pytest loaded it (not executed a second time)
        p
        for p in request.config.pluginmanager.get_plugins()
        if getattr(p, "__file__", None) == str(ROOT / "conftest.py")
    )
    for is_worker in (True, False):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            config = types.SimpleNamespace(failures_db=types.SimpleNamespace(sock=sock))
            if is_worker:
                config.workerinput = {}
            root.pytest_configure(config)
            assert _nodelay(sock) is is_worker
    root.pytest_configure(types.SimpleNamespace(workerinput={}))  # no rerun plugin: nothing to do
    sock = getattr(getattr(request.config, "failures_db", None), "sock", None)
    if hasattr(request.config, "workerinput") and isinstance(sock, socket.socket):
        assert _nodelay(sock)
