"""Cost of the exact gradient flow through time against plain autodiff of the same scanned RNN.

Measured in one run on the current device (compile timed apart, medians over repeats):
  - `jaxvg.time_flow(model, xs, y)`, the PUBLIC function on its second and later calls (host checks,
    the split of the cell/embed/head and the cached program included), against
  - a jitted `jax.value_and_grad` of the MSE of the same `jaxvg.nn.RNN` (its `lax.scan` forward)
    with respect to all parameters: what a training step differentiates.
Shapes: T = 1000, hidden 256, batch 64, 8 input features, a tanh RNN (and, for
information, an LSTM). Target: time_flow <= 1.2 x value_and_grad. Also reported: the jitted
`time_flow_from_split` kernel alone (no host work).

Threads: XLA runs on ONE thread (XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1", set here unless XLA_FLAGS is already set), as benchmarks/analysis.py
does: on a shared 2-core machine multi-threaded timings collapse when another process takes a core.

Run:    python -m benchmarks.time_flow            (these shapes; a few minutes on one CPU core)
        python -m benchmarks.time_flow --quick    (T = 100, hidden 32: a smoke run)
Writes: results/benchmarks/time_flow.json (device, versions, thread settings, shapes, timings, ratios,
pass/miss) and prints a table.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import timeit  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import flax  # noqa: E402
import jax  # noqa: E402
from flax import nnx  # noqa: E402

import jaxvg  # noqa: E402
from jaxvg.nn import losses  # noqa: E402
from jaxvg.nn.rnn import RNN  # noqa: E402

TARGET = 1.2


def _median(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """(first call seconds: trace + compile + run, median seconds of `repeat` later calls)."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times = timeit.repeat(lambda: jax.block_until_ready(fn()), number=1, repeat=repeat)
    return first, statistics.median(times)


def measure(cell: str, T: int, hidden: int, batch: int, features: int, repeat: int) -> dict[str, Any]:
    """Timings of value_and_grad, the public time_flow and its kernel for one net."""
    model = RNN(features, hidden, 1, cell=cell, rngs=nnx.Rngs(0))
    kx, ky = jax.random.split(jax.random.key(0))
    xs = jax.random.normal(kx, (batch, T, features))
    y = jax.random.normal(ky, (batch, 1))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    mse = losses.get("mse")

    @jax.jit
    def value_and_grad(params, xs, y):
        return jax.value_and_grad(lambda p: mse(nnx.merge(graphdef, p, rest, copy=True)(xs), y))(params)

    kernel = jax.jit(lambda p, xs, y: jaxvg.measure.time_flow_from_split(graphdef, (p, rest), xs, y))
    vg_first, vg = _median(lambda: value_and_grad(params, xs, y), repeat)
    tf_first, tf = _median(lambda: jaxvg.time_flow(model, xs, y), repeat)
    k_first, k = _median(lambda: kernel(params, xs, y), repeat)
    return {
        "cell": cell,
        "T": T,
        "hidden": hidden,
        "batch": batch,
        "features": features,
        "value_and_grad_s": vg,
        "time_flow_s": tf,
        "time_flow_kernel_s": k,
        "first_call_s": {"value_and_grad": vg_first, "time_flow": tf_first, "kernel": k_first},
        "ratio": tf / vg,
        "kernel_ratio": k / vg,
        "target": TARGET,
        "verdict": "pass" if tf / vg <= TARGET else "miss",
    }


def environment() -> dict[str, Any]:
    dev = jax.devices()[0]
    return {
        "device_kind": dev.device_kind,
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T = 100, hidden 32, batch 16: a smoke run")
    parser.add_argument("--repeat", type=int, default=None, help="timed calls per measurement")
    parser.add_argument("--cells", nargs="+", default=["tanh", "lstm"], help="RNN cells to time")
    parser.add_argument("--out", default="results/benchmarks/time_flow.json", help="JSON output path")
    args = parser.parse_args(argv)
    T, hidden, batch = (100, 32, 16) if args.quick else (1000, 256, 64)
    repeat = args.repeat or (3 if args.quick else 7)
    rows = [measure(cell, T, hidden, batch, 8, repeat) for cell in args.cells]
    result = {"environment": environment(), "target": TARGET, "rows": rows}
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"{'cell':6} {'T':>5} {'hidden':>6} {'batch':>5} {'v&g s':>8} {'time_flow s':>11} {'ratio':>6} "
          f"{'kernel':>7}  target {TARGET}")  # fmt: skip
    for r in rows:
        print(f"{r['cell']:6} {r['T']:5d} {r['hidden']:6d} {r['batch']:5d} {r['value_and_grad_s']:8.3f} "
              f"{r['time_flow_s']:11.3f} {r['ratio']:6.2f} {r['kernel_ratio']:7.2f}  {r['verdict']}")  # fmt: skip
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
