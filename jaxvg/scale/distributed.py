"""Several hosts: start JAX's distributed runtime and assemble global arrays from every process.

JAX runs one Python process per host (or per GPU); all of them run the same program. Each process
calls `initialize` first, before any other JAX call, with the address of process 0's coordinator,
the number of processes and its own id. After that, `jax.devices()` lists every process's devices,
`jaxvg.scale.device_mesh(axis_name, scope="global")` spans them, and a jitted program over global
arrays (`global_array`) runs on all hosts at once, with XLA's collectives (NCCL on GPU, ICI on TPU,
Gloo over TCP on CPU) between them.

How to run a script that calls `jaxvg.scale.initialize()` first on two hosts (addresses are
examples; any free port, the same on every host)::

    # host 0 (its address 10.0.0.1 must be reachable from the other hosts)
    JAX_COORDINATOR_ADDRESS=10.0.0.1:8476 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 python my_sweep.py
    # host 1
    JAX_COORDINATOR_ADDRESS=10.0.0.1:8476 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1 python my_sweep.py

or pass the same values to `initialize(...)`. Environment variables read here:
JAX_COORDINATOR_ADDRESS ("host:port" of process 0; read by jax too), JAX_NUM_PROCESSES and
JAX_PROCESS_ID (read by jaxvg), JAX_LOCAL_DEVICE_IDS (comma-separated; read by jax). On Slurm,
Open MPI, Cloud TPU and Kubernetes jobs nothing needs to be set: `initialize()` with no arguments
lets jax detect the cluster. With no arguments, no variables and no cluster (or when JAX has
already run in this process and nothing was asked for), `initialize` does nothing and the program
runs as one process, so scripts may call it unconditionally.

On CPU the cross-process collectives are Gloo's (jax's default `jax_cpu_collectives_implementation`;
nothing to set): two processes on one machine over loopback (127.0.0.1 and a free port), each with
2 CPU devices, compute a sharded sum, a data-parallel gradient and a `jaxvg.scale.map_nets` sweep
over the 4-device global mesh equal to one process.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxvg import checks
from jaxvg.scale import devices

__all__ = ["Processes", "global_array", "initialize"]


@dataclasses.dataclass(frozen=True)
class Processes:
    """Where this process stands after `initialize`.

    Attributes:
      process_index: this process's id, 0..process_count-1 (`jax.process_index()`).
      process_count: number of processes (`jax.process_count()`).
      local_device_count: devices this process drives.
      device_count: devices over all processes.
    """

    process_index: int
    process_count: int
    local_device_count: int
    device_count: int


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: int | Sequence[int] | None = None,
    initialization_timeout: int = 300,
) -> Processes:
    """Start JAX's multi-process runtime (`jax.distributed.initialize`); a no-op for one process.

    Every process must call it, before any other JAX call (even `jax.devices()`), with the same
    `coordinator_address` and `num_processes` and its own `process_id`. Missing arguments come from
    JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, then from jax's cluster
    detection (Slurm, Open MPI, Cloud TPU, Kubernetes). Nothing given and nothing detected, or
    `num_processes=1`: single process, nothing is started. Calling it again after a successful
    start returns the current state.

    Args:
      coordinator_address: "host:port" of process 0, reachable from every process; process 0
        starts the coordinator service on that port.
      num_processes: number of processes, >= 1.
      process_id: this process's id in [0, num_processes).
      local_device_ids: restrict this process to these local devices (one GPU per process).
      initialization_timeout: seconds to wait for all processes to connect.
    Returns:
      `Processes` (process index and count, local and global device counts).
    Raises:
      ValueError: a malformed `coordinator_address` or environment value, or `process_id`
        outside [0, num_processes).
      RuntimeError: (from jax) when JAX already ran a computation in this process, or when the
        processes cannot connect within `initialization_timeout`.

    Example:
      >>> initialize(num_processes=1).process_count   # one process: nothing to start
      1
    """
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = _env_int("JAX_NUM_PROCESSES")
    if process_id is None and os.environ.get("JAX_PROCESS_ID"):
        process_id = _env_int("JAX_PROCESS_ID")
    if num_processes is not None:
        checks.positive_int("num_processes", num_processes)
    if process_id is not None:
        checks.nonnegative_int("process_id", process_id)
        if num_processes is not None and process_id >= num_processes:
            raise ValueError(f"`process_id` must lie in [0, {num_processes}), got {process_id!r}.")
    if coordinator_address is not None:
        host, _, port = coordinator_address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(
                f"`coordinator_address` must be 'host:port' (e.g. '10.0.0.1:8476'), got {coordinator_address!r}."
            )
    checks.positive_int("initialization_timeout", initialization_timeout)

    if jax.distributed.is_initialized() or num_processes == 1:
        return _processes()
    explicit = (coordinator_address, num_processes, process_id) != (None, None, None)
    try:
        jax.distributed.initialize(
            coordinator_address,
            num_processes,
            process_id,
            local_device_ids=local_device_ids,
            initialization_timeout=initialization_timeout,
        )
    except ValueError:
        if explicit:
            raise
        # No argument, no environment variable and no cluster detected: one process.
    except RuntimeError as e:
        if explicit or "must be called before" not in str(e):
            raise
        # Nothing asked for and JAX already started in this process: it stays one process.
    return _processes()


def global_array(local: Any, mesh: Mesh | None = None, axis_name: str = "nets") -> Any:
    """Assemble one global array from every process's block of rows.

    Process p passes its rows (the p-th block along the first axis, the same number on every
    process); the result is a global `jax.Array` of leading size sum over processes, sharded along
    `axis_name`, that jitted programs and `jaxvg.scale.map_nets(..., mesh=mesh)` take as input.
    With one process it is the array itself, placed on the mesh.

    Args:
      local: pytree of arrays, this process's rows, leading size divisible by its local devices.
      mesh: default `jaxvg.scale.device_mesh(axis_name, scope="global")`.
      axis_name: mesh axis to shard over.
    Returns:
      Pytree of global `jax.Array`s.
    Raises:
      ValueError: if a leaf is a scalar or its leading size is not divisible by the local devices.

    Example:
      >>> rows = np.arange(2.0 * jax.local_device_count())   # a multiple of this process's devices
      >>> global_array(rows).shape == rows.shape   # one process: the array itself
      True
    """
    mesh = devices.device_mesh(axis_name, scope="global") if mesh is None else mesh
    sharding = NamedSharding(mesh, P(axis_name))
    n_local = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)

    def one(path, leaf):
        leaf = np.asarray(leaf)
        if leaf.ndim == 0 or leaf.shape[0] % n_local:
            raise ValueError(
                f"`local{jax.tree_util.keystr(path)}` must have a leading size divisible by this process's "
                f"{n_local} devices, got shape {leaf.shape}."
            )
        return jax.make_array_from_process_local_data(sharding, leaf)

    return jax.tree_util.tree_map_with_path(one, local)


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}.") from None


def _processes() -> Processes:
    return Processes(
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        local_device_count=jax.local_device_count(),
        device_count=jax.device_count(),
    )
