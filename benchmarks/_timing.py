"""Timing helpers shared by the benchmarks (STYLE.md B8): jitted code only, compile timed apart,
the median over repeats (steadier than the minimum on a shared machine)."""

from __future__ import annotations

import platform
import statistics
import time
import timeit
from collections.abc import Callable
from typing import Any

import jax


def compile_and_seconds_per_call(fn: Callable[..., Any], *args: Any, repeat: int = 20) -> tuple[float, float]:
    """(compile seconds, median seconds per call) of `jax.jit(fn)(*args)`.

    The first call (trace + compile + one run) is timed apart as the compile time; then `repeat`
    timed calls, each waited for with `jax.block_until_ready`.
    """
    jitted = jax.jit(fn)
    start = time.perf_counter()
    jax.block_until_ready(jitted(*args))
    compile_s = time.perf_counter() - start
    times = timeit.repeat(lambda: jax.block_until_ready(jitted(*args)), number=1, repeat=repeat)
    return compile_s, statistics.median(times)


def seconds_per_call(fn: Callable[..., Any], *args: Any, repeat: int = 20) -> float:
    """Median seconds per call of `jax.jit(fn)(*args)`, compile excluded."""
    return compile_and_seconds_per_call(fn, *args, repeat=repeat)[1]


def median_seconds(fn: Callable[[], Any], *, repeat: int = 20, warmup: int = 1) -> float:
    """Median seconds of a plain Python callable (e.g. PyTorch eager), after `warmup` calls."""
    for _ in range(warmup):
        fn()
    return statistics.median(timeit.repeat(fn, number=1, repeat=repeat))


def environment() -> dict[str, Any]:
    """Device kind, platform and versions, for the JSON output."""
    import flax

    dev = jax.devices()[0]
    return {
        "device": f"{dev.platform}:{getattr(dev, 'device_kind', '?')}",
        "devices": len(jax.devices()),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }


def interleaved_seconds(
    fns: dict[str, tuple[Callable[..., Any], tuple]], *, repeat: int = 20
) -> dict[str, dict[str, float]]:
    """Jit and compile every `fn` (compile timed apart), then time them in interleaved rounds
    (A B C A B C ...) so that all see the same machine load; per name: compile seconds and the median
    seconds per call. Ratios of these medians are what the benchmarks report."""
    jitted, out = {}, {}
    for name, (fn, args) in fns.items():
        jitted[name] = (jax.jit(fn), args)
        start = time.perf_counter()
        jax.block_until_ready(jitted[name][0](*args))
        out[name] = {"compile_s": time.perf_counter() - start}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, (fn, args) in jitted.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - start)
    for name in fns:
        out[name]["seconds"] = statistics.median(times[name])
    return out
