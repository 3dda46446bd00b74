"""What every benchmark suite shares: timing, ratio records, tables, the environment, JSON, `main`.

Not a suite itself. Timing rules: jitted code only, compile timed apart, medians over repeats
(steadier than the minimum on a shared machine), and every ratio measured within one run, over
interleaved rounds (each round runs every method once, in a rotated order), so that a load that
drifts on a shared machine hits all methods alike.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time
import timeit
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import jax

from jaxvg import report
from jaxvg.report import cli

T = TypeVar("T")
TIMING = "median over interleaved rounds; ratios are medians of per-round ratios"

# --------------------------------------------------------------------------- timing


def timed(fn: Callable[[], Any]) -> float:
    """Seconds of one call of `fn` (which must block until its work is done)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_seconds(fn: Callable[[], Any], *, repeat: int = 20, warmup: int = 1) -> float:
    """Median seconds of a blocking Python callable (e.g. PyTorch eager), after `warmup` calls."""
    for _ in range(warmup):
        fn()
    return statistics.median(timeit.repeat(fn, number=1, repeat=repeat))


def compile_and_seconds_per_call(fn: Callable[..., Any], *args: Any, repeat: int = 20) -> tuple[float, float]:
    """(compile seconds, median seconds per call) of `jax.jit(fn)(*args)`.

    The first call (trace + compile + one run) is timed apart as the compile time; then `repeat`
    timed calls, each waited for with `jax.block_until_ready`.
    """
    run, compile_s = jitted_run(fn, *args)
    return compile_s, median_seconds(run, repeat=repeat, warmup=0)


def jitted_run(fn: Callable[..., Any], *args: Any) -> tuple[Callable[[], Any], float]:
    """(a blocking no-argument call of `jax.jit(fn)(*args)`, the seconds of its first call).

    The first call traces, compiles and runs once: its time is what the suites report as compile
    time (it includes one run, negligible next to compiling at the sizes timed here).
    """
    jitted = jax.jit(fn)

    def run() -> Any:
        return jax.block_until_ready(jitted(*args))

    return run, timed(run)


def interleaved_seconds(runs: dict[str, Callable[[], float]], repeat: int) -> dict[str, list[float]]:
    """`repeat` rounds; each round calls every `runs[name]()` once, in an order rotated per round.

    Each callable does its own setup and returns the seconds of its timed part (`timed` for a
    plain call). Interleaving makes the ratio of two methods within one round (`paired_ratio`)
    robust to a load that drifts on a shared machine, which separate blocks of repeats are not.
    """
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeat):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(float(runs[name]()))
    return times


def interleaved_jitted(
    fns: dict[str, tuple[Callable[..., Any], tuple]], repeat: int
) -> dict[str, dict[str, float]]:
    """Jit and compile every `(fn, args)` (compile timed apart), then time them in interleaved
    rounds; per name: `compile_s` and `seconds`, the median seconds per call."""
    runs, out = {}, {}
    for name, (fn, args) in fns.items():
        run, compile_s = jitted_run(fn, *args)
        runs[name] = lambda run=run: timed(run)
        out[name] = {"compile_s": compile_s}
    for name, times in interleaved_seconds(runs, repeat).items():
        out[name]["seconds"] = statistics.median(times)
    return out


def paired_ratio(
    num: Sequence[float], den: Sequence[float], num_scale: float = 1.0, den_scale: float = 1.0
) -> float:
    """Median over rounds of (num[r] / num_scale) / (den[r] / den_scale)."""
    return statistics.median((a / num_scale) / (b / den_scale) for a, b in zip(num, den, strict=True))


# --------------------------------------------------------------------------- ratios and tables


def ratio(
    suite: str, name: str, value: float, *, target: float | None = None, op: str | None = None, note: str = ""
) -> dict[str, Any]:
    """One ratio record: `pass` is None without a target, else whether `value op target` holds."""
    if target is None:
        ok = None
    elif op == "<=":
        ok = bool(value <= target)
    elif op == ">=":
        ok = bool(value >= target)
    else:
        raise ValueError(f"`op` must be one of ['<=', '>='] with a target, got {op!r}.")
    return {"suite": suite, "name": name, "value": float(value), "target": target, "op": op, "pass": ok,
            "note": note}  # fmt: skip


def status(record: dict[str, Any]) -> str:
    """ "pass", "miss", or "" for a ratio without a target."""
    return "" if record["pass"] is None else ("pass" if record["pass"] else "miss")


def ratio_rows(ratios: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows for ratio records: suite, ratio, value, target, result."""
    return [
        {
            "suite": r["suite"],
            "ratio": r["name"],
            "value": r["value"],
            "target": "" if r["target"] is None else f"{r['op']} {r['target']:g}",
            "result": status(r),
        }
        for r in ratios
    ]


def table(result: dict[str, Any]) -> str:
    """A suite's Markdown tables: its `rows` (timings per method), then its ratios against targets."""
    return (
        report.format_table(result["rows"], floatfmt=".4g")
        + "\n\n"
        + report.format_table(ratio_rows(result["ratios"]), floatfmt=".3g")
    )


# --------------------------------------------------------------------------- environment, JSON, main


def environment() -> dict[str, Any]:
    """`jaxvg.report.report.environment()` plus the first device's kind, the matmul precision
    setting and the CPU threads available."""
    env = report.environment()
    env["device_kind"] = jax.devices()[0].device_kind
    # None: the backend's default (on GPUs, float32 matmuls may then use TF32)
    env["default_matmul_precision"] = getattr(jax.config, "jax_default_matmul_precision", None)
    env["cpu_count"] = os.cpu_count()
    env["cpu_affinity"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return env


def record(suite: str, config: Any, **entries: Any) -> dict[str, Any]:
    """A suite's JSON: {"suite", "config" (the sizes run), "environment", **entries}."""
    return {"suite": suite, "config": dataclasses.asdict(config), "environment": environment(), **entries}


def write(out_dir: str, result: dict[str, Any]) -> str:
    """Write `out_dir/SUITE.json` (SUITE = `result["suite"]`); returns its path."""
    return str(report.write_json(os.path.join(out_dir, f"{result['suite']}.json"), result))


def main(
    config_cls: type[T],
    run: Callable[..., dict[str, Any]],
    argv: Sequence[str] | None = None,
    *,
    show: Callable[[dict[str, Any]], str] = table,
) -> dict[str, Any]:
    """The `main()` of a suite: parse its flags, check `out_dir` is writable, run (progress to
    stderr), write `out_dir/SUITE.json`, print the table and, last, the path written."""
    config = cli.parse(config_cls, argv)
    report.check_writable(config.out_dir)
    result = run(config, log=lambda m: print(m, file=sys.stderr, flush=True))
    path = write(config.out_dir, result)
    env = result["environment"]
    print(f"## {result['suite']} ({env['device_kind']}, jax {env['jax']}, flax {env['flax']})\n")
    print(show(result))
    print(f"\nwrote {path}")
    return result
