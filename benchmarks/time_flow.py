"""Cost of the exact gradient flow through time against plain autodiff of the same scanned RNN.

Measured in one run on the current device (compile timed apart; `repeat` interleaved rounds, each
calling every method once in a rotated order; a ratio is the median of the per-round ratios, its
spread their min-max):
  - `jaxvg.time_flow(model, xs, y)`, the PUBLIC function on its second and later calls (host checks,
    the split of the cell/embed/head and the cached program included), against
  - a jitted `jax.value_and_grad` of the MSE of the same `jaxvg.nn.RNN` (its `lax.scan` forward)
    with respect to all parameters: what a training step differentiates.
Shapes: T = 1000, hidden 256, batch 64, 8 input features, a tanh RNN (and, for information, an
LSTM). Target: time_flow <= 1.2 x value_and_grad for the tanh RNN. Also reported: the jitted
`time_flow_from_split` kernel alone (no host work).

Threads: as a script (`python -m benchmarks.time_flow`, which is how `benchmarks.run` starts it),
XLA runs on ONE thread (XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1", unless XLA_FLAGS is already set), as benchmarks/analysis.py does:
on a shared 2-core machine multi-threaded timings collapse when another process takes a core.

Run:    python -m benchmarks.time_flow            (these shapes; a few minutes on one CPU core)
        python -m benchmarks.time_flow --quick    (T = 100, hidden 32: a smoke run)
        python -m benchmarks.time_flow --preset accelerator   (hidden 1024, batch 256)
Writes: results/benchmarks/time_flow.json (device, versions, thread settings, shapes, timings, ratios
with pass/miss) and prints a table.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # before jax starts; importing this module (tests) changes nothing
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import dataclasses  # noqa: E402
import statistics  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from typing import Any, ClassVar  # noqa: E402

import jax  # noqa: E402
from flax import nnx  # noqa: E402

import jaxvg  # noqa: E402
from benchmarks import common  # noqa: E402
from jaxvg import checks  # noqa: E402
from jaxvg.nn import losses  # noqa: E402
from jaxvg.nn.rnn import CELLS, RNN  # noqa: E402
from jaxvg.report import experiment  # noqa: E402

NAME = "time_flow"
TARGET = 1.2  # time_flow / value_and_grad of the tanh RNN
TARGET_CELL = "tanh"


@dataclasses.dataclass(frozen=True)
class Config:
    cells: tuple[str, ...] = ("tanh", "lstm")  # RNN cells to time (the target is on tanh)
    length: int = 1000  # sequence length T
    hidden: int = 256  # hidden units
    batch: int = 64  # sequences per call
    features: int = 8  # input features per step
    repeat: int = 7  # interleaved timed rounds; medians are reported
    out_dir: str = "results/benchmarks"  # where NAME.json goes
    quick: bool = False  # T = 100, hidden 32, batch 16, 3 rounds: a smoke run (its numbers mean nothing)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "accelerator": {"hidden": 1024, "batch": 256, "repeat": 11}
    }
    QUICK: ClassVar[dict[str, Any]] = {"length": 100, "hidden": 32, "batch": 16, "repeat": 3}

    def __post_init__(self):
        experiment.apply_quick(self)
        experiment.check_common(self)
        cells = experiment.check_tuple("cells", self.cells, lambda name, c: checks.choice(name, c, CELLS))
        object.__setattr__(self, "cells", cells)
        for name in ("length", "hidden", "batch", "features"):
            checks.positive_int(name, getattr(self, name))
        if checks.positive_int("repeat", self.repeat) < 2:
            raise ValueError(f"`repeat` must be an integer >= 2 (medians over rounds), got {self.repeat!r}.")


def measure(cell: str, config: Config) -> dict[str, Any]:
    """Timings of value_and_grad, the public time_flow and its kernel for one net, in interleaved
    rounds; per method `compile_s` (first call), `seconds` (median) and `seconds_all`."""
    model = RNN(config.features, config.hidden, 1, cell=cell, rngs=nnx.Rngs(0))
    kx, ky = jax.random.split(jax.random.key(0))
    xs = jax.random.normal(kx, (config.batch, config.length, config.features))
    y = jax.random.normal(ky, (config.batch, 1))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    mse = losses.get("mse")

    @jax.jit
    def value_and_grad(params, xs, y):
        return jax.value_and_grad(lambda p: mse(nnx.merge(graphdef, p, rest, copy=True)(xs), y))(params)

    kernel = jax.jit(lambda p, xs, y: jaxvg.measure.time_flow_from_split(graphdef, (p, rest), xs, y))
    calls: dict[str, Callable[[], Any]] = {
        "value_and_grad": lambda: jax.block_until_ready(value_and_grad(params, xs, y)),
        "time_flow": lambda: jax.block_until_ready(jaxvg.time_flow(model, xs, y)),
        "time_flow_kernel": lambda: jax.block_until_ready(kernel(params, xs, y)),
    }
    methods = {name: {"compile_s": common.timed(call)} for name, call in calls.items()}
    times = common.interleaved_seconds(
        {n: (lambda c=c: common.timed(c)) for n, c in calls.items()}, config.repeat
    )
    for name, seconds in times.items():
        methods[name].update(seconds=statistics.median(seconds), seconds_all=seconds)
    return methods


def run(config: Config, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time every cell of `config`; the suite's JSON-ready record (no I/O)."""
    log = log or (lambda m: None)
    shape = f"T={config.length}, hidden {config.hidden}, batch {config.batch}"
    per_cell, ratios, rows = {}, [], []
    for cell in config.cells:
        log(f"[{NAME}] {cell}: {shape}, {config.repeat} interleaved rounds")
        m = measure(cell, config)
        per_cell[cell] = m
        target = {"target": TARGET, "op": "<="} if cell == TARGET_CELL else {}
        for num, label in (("time_flow", "time_flow"), ("time_flow_kernel", "time_flow kernel")):
            ratios.append(
                common.ratio_of_rounds(
                    NAME, f"{label} / value_and_grad ({cell} RNN, {shape})",
                    m[num]["seconds_all"], m["value_and_grad"]["seconds_all"], quick=config.quick,
                    **(target if num == "time_flow" else {}),
                )
            )  # fmt: skip
        for name, v in m.items():
            rows.append(
                {"cell": cell, "method": name, "ms": v["seconds"] * 1e3, "first call s": v["compile_s"]}
            )
    return common.record(NAME, config, methods=per_cell, ratios=ratios, rows=rows, timing=common.TIMING)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse flags, run, write results/benchmarks/time_flow.json and print the tables."""
    return common.main(Config, run, argv)


if __name__ == "__main__":
    main()
