"""Tests for jaxvg.scale.distributed: two processes on loopback together equal one process."""

from __future__ import annotations

import _multiprocess_check
import jax
import numpy as np
import pytest

from jaxvg import scale
from jaxvg.scale import distributed


def test_two_processes_on_loopback_equal_one_process(tmp_path, x64, run_python, free_port):
    """2 processes x 2 CPU devices (a 4-device global mesh, Gloo over 127.0.0.1) compute a sharded
    sum, a data-parallel gradient and a map_nets sweep from their own halves of the data; both
    hold the same global results as this single process computing everything on 1 device.
    Float64; rtol 1e-10 (the sums are taken in another order: measured 5e-15)."""
    want = _multiprocess_check.compute()
    n, local_devices = 2, 2
    commands = [
        (_multiprocess_check.PATH, i, n, free_port, tmp_path / f"p{i}.npz", local_devices) for i in range(n)
    ]
    run_python(*commands, env={"XLA_FLAGS": None}, timeout=240)  # each worker sets its own devices
    results = [dict(np.load(tmp_path / f"p{i}.npz")) for i in range(n)]
    assert len(results) == n
    for got in results:
        assert int(got.pop("device_count")) == 4
        assert sorted(got) == sorted(want)
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-10, err_msg=key)
    assert want["sum"] == pytest.approx(np.sum(np.arange(32.0) / 7), rel=1e-12)
    assert np.all(np.abs(want["sweep_grad_b"]).sum(axis=1) > 0)  # per-net gradients, not summed


def test_initialize_without_anything_is_a_single_process_noop(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(var, raising=False)
    info = distributed.initialize()
    assert info == distributed.Processes(0, 1, jax.local_device_count(), jax.device_count())
    assert not jax.distributed.is_initialized()
    assert distributed.initialize(num_processes=1).process_count == 1


@pytest.mark.parametrize(
    ("kwargs", "env", "match"),
    [
        ({"num_processes": 2, "process_id": 2}, {}, r"`process_id` must lie in \[0, 2\), got 2"),
        ({"num_processes": 0}, {}, "`num_processes` must be an integer >= 1"),
        ({"coordinator_address": "localhost"}, {}, "`coordinator_address` must be 'host:port'"),
        (
            {},
            {"JAX_NUM_PROCESSES": "two"},
            "environment variable JAX_NUM_PROCESSES must be an integer, got 'two'",
        ),
        ({}, {"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "5"}, r"`process_id` must lie in \[0, 2\), got 5"),
    ],
)
def test_initialize_errors(monkeypatch, kwargs, env, match):
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=match):
        distributed.initialize(**kwargs)


def test_initialize_after_jax_started_names_the_problem(monkeypatch, free_port):
    """Asked for several processes after JAX already ran: jax's RuntimeError, not a silent no-op."""
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(var, raising=False)
    jax.devices()
    with pytest.raises(RuntimeError, match="must be called before"):
        distributed.initialize(f"127.0.0.1:{free_port}", 2, 0, initialization_timeout=1)


def test_global_array_single_process_and_errors():
    """One process: the array itself, split over this process's devices (1, or 8 with XLA_FLAGS)."""
    n_local = jax.local_device_count()
    rows = np.arange(4.0 * n_local).reshape(2 * n_local, 2)
    a = distributed.global_array({"w": rows})
    np.testing.assert_array_equal(a["w"], rows)
    assert a["w"].sharding.spec == jax.sharding.PartitionSpec("nets")
    assert len(a["w"].sharding.device_set) == n_local
    with pytest.raises(ValueError, match=r"`local\['s'\]` must have a leading size"):
        distributed.global_array({"s": np.float32(1.0)})
    mesh = scale.device_mesh("batch", scope="global")
    b = scale.global_array(rows, mesh, "batch")
    assert b.sharding.spec == jax.sharding.PartitionSpec("batch")
    if n_local > 1:  # only several devices can refuse a size
        with pytest.raises(ValueError, match=rf"divisible by this process's {n_local} devices"):
            distributed.global_array(rows[: n_local + 1])
