"""Many nets at once (a leading nets axis: seeds, grid cells), in chunks that fit the device's memory.

`map_nets(fn, *stacked)` is `jax.vmap(fn)(*stacked)` computed `chunk` nets at a time, where
`chunk` = the memory budget // the bytes one net needs. The per-net bytes come from XLA's own
memory analysis of `fn` compiled for one net (temporaries + outputs + its inputs, which a chunk
slices out of the stacked arrays); the budget is `max_memory` when given, else a fraction of the
device's free memory: `memory_stats()` bytes_limit - bytes_in_use on accelerators, the host's
available memory on CPU (/proc/meminfo MemAvailable, else os.sysconf). (`jaxvg.scale.check_fits`
does the same for training sweeps from shapes; `scale` sits above `measure` in the import order,
so this module has its own small helper.)

Inside a trace (a caller's `jax.jit`) the chunks run as `lax.map(..., batch_size=chunk)`, a loop in
the compiled program that reuses one chunk's buffers; called eagerly, the same loop is jitted here.

Example:
  >>> import jax.numpy as jnp
  >>> from jaxvg.measure import nets
  >>> out = nets.map_nets(lambda w, x: jnp.tanh(x @ w).sum(), jnp.ones((6, 4, 4)), jnp.ones((6, 3, 4)),
  ...                     max_memory=200)
  >>> out.shape, nets.last_chunk()
  ((6,), 1)
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxvg import checks

__all__ = ["MEMORY_FRACTION", "chunk_size", "last_chunk", "map_nets", "memory_budget", "per_net_bytes"]

MEMORY_FRACTION = 0.5
"""Share of the device's free memory the chunked measures plan to use when `max_memory` is None."""

_LAST = {"chunk": None}


def memory_budget(max_memory: int | None = None, device: jax.Device | None = None) -> int:
    """Bytes a chunked measurement may use: `max_memory` when given, else `MEMORY_FRACTION` of the
    free memory of `device` (default the first local device): accelerators report memory_stats()
    (bytes_limit - bytes_in_use), CPU the host's available memory.

    Raises:
      ValueError: `max_memory` is not a positive integer.
    """
    if max_memory is not None:
        return checks.positive_int("max_memory", max_memory)
    device = jax.local_devices()[0] if device is None else device
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        free = int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    else:
        free = _host_available()
    return max(1, int(MEMORY_FRACTION * free))


def _host_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def per_net_bytes(fn: Callable[..., Any], *one_net: Any) -> int:
    """Bytes `fn` needs for one net: XLA's memory analysis of `jax.jit(fn)` compiled for one net's
    shapes (`one_net`: arrays or `jax.ShapeDtypeStruct`s), temporaries + outputs + arguments."""
    structs = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), one_net)
    return _per_net_bytes(fn, jax.tree.structure(structs), tuple(jax.tree.leaves(structs)))


@functools.lru_cache(maxsize=64)
def _per_net_bytes(fn, treedef, leaves) -> int:
    stats = jax.jit(fn).lower(*jax.tree.unflatten(treedef, list(leaves))).compile().memory_analysis()
    if stats is None:  # a backend without memory analysis: count the arguments and outputs only
        return sum(math.prod(s.shape) * s.dtype.itemsize for s in leaves)
    return int(stats.temp_size_in_bytes + stats.output_size_in_bytes + stats.argument_size_in_bytes)


def chunk_size(n_nets: int, per_net: int, budget: int) -> int:
    """How many of `n_nets` nets of `per_net` bytes each fit `budget` bytes at once (at least 1)."""
    return max(1, min(n_nets, budget // max(per_net, 1)))


def last_chunk() -> int | None:
    """The chunk size of the latest `map_nets` call (for tests and logs)."""
    return _LAST["chunk"]


def map_nets(fn: Callable[..., Any], *stacked: Any, max_memory: int | None = None) -> Any:
    """`jax.vmap(fn)(*stacked)`, run in chunks of nets that fit the memory budget.

    Args:
      fn: a function of one net's arguments (pytrees), returning a pytree of arrays.
      *stacked: its arguments with a leading nets axis (every leaf; the same length).
      max_memory: bytes the chunks may use; None: `memory_budget()`.
    Returns:
      The stacked results, equal to `jax.vmap(fn)(*stacked)` (to float rounding: XLA may order a
      chunked reduction differently).
    Raises:
      ValueError: leaves with different leading lengths, or a bad `max_memory`.
    """
    leaves = jax.tree.leaves(stacked)
    sizes = {jnp.shape(v)[0] if jnp.ndim(v) else None for v in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"every stacked argument needs the same leading nets axis, got lengths {sorted(map(str, sizes))}."
        )
    (n,) = sizes
    one = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a)[1:], jnp.result_type(a)), stacked)
    chunk = chunk_size(n, per_net_bytes(fn, *one), memory_budget(max_memory))
    _LAST["chunk"] = chunk
    tracing = any(isinstance(v, jax.core.Tracer) for v in leaves)
    if chunk >= n:
        return jax.vmap(fn)(*stacked) if tracing else _vmapped(fn)(*stacked)
    if tracing:
        return jax.lax.map(lambda a: fn(*a), stacked, batch_size=chunk)
    return _chunked(fn, chunk)(*stacked)


@functools.lru_cache(maxsize=32)
def _vmapped(fn):
    return jax.jit(jax.vmap(fn))  # eager callers: one compiled program, not op-by-op dispatch


@functools.lru_cache(maxsize=32)
def _chunked(fn, chunk):
    return jax.jit(lambda *a: jax.lax.map(lambda b: fn(*b), a, batch_size=chunk))
