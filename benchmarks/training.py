"""Training-loop speed: jaxvg's `fit` against a plain-JAX `lax.scan` floor and the per-step `nnx.jit` loop.

The loops train the same MLP (tanh, LeCun normal; `width` units x `depth` blocks, a linear head) on
the same full batch of a teacher-student regression set (`jaxvg.train.data.load("teacher")`, noisy labels,
MSE loss) with the same optimizer (Adam, lr 1e-3), for `steps` steps each, from the same weights:

- **fit chunks**: what `jaxvg.fit` runs between its setup and its history assembly: its
  compiled chunk program (`log_every` steps under `lax.scan`, with fit's finiteness checks, kernel
  gradient norms and a train-loss evaluation per chunk) over the same chunk boundaries, with the
  host loop between chunks (see `fit_chunks_runner`); this is the loop the 1.1x target is about.
- **fit**: one whole warm `fit(model, (x, y), ...)` call (its program cached by a first call):
  also fit's fixed per-call work (argument validation with `jax.eval_shape`, `nnx.split`, the
  optimizer-state init, the history, the output modules). Reported with the per-call overhead,
  `fit_fixed_overhead_seconds` = median over rounds of (whole call - chunks).
- **plain scan** (the floor): a hand-written `jax.jit` program, `lax.scan` over `steps` steps of
  `jax.value_and_grad` through `nnx.merge(graphdef, params, rest)` and `optax.adam` on the state of
  `nnx.split(model, nnx.Param, ...)`. Nothing but the step itself.
- **nnx.jit per step**: the Flax tutorials' loop, `nnx.Optimizer(model, optax.adam(lr),
  wrt=nnx.Param)` and an `@nnx.jit` step with `nnx.value_and_grad` and `optimizer.update(model,
  grads)`, called from Python once per step (`nnx_steps` steps per timed run).

Achieved FLOP/s counts the MLP's matmuls only: forward 2 B sum(fan_in fan_out) over the blocks and
the head, backward twice that, i.e. 6 B sum(fan_in fan_out) per step (biases, activations and the
optimizer are not counted). The ceiling is the FLOP/s of one jitted n x n x n float32 matmul
(2 n^3 FLOP, default matmul precision) measured in the same process. Timing: `repeat` interleaved
rounds, each running every loop once in a rotated order; a loop's time is its median over rounds,
a ratio the median over rounds of the per-round ratio (robust to a load that drifts on a shared
machine). Compile time is reported apart (plain scan: `lower().compile()` timed; fit: first call
minus the median warm call; nnx.jit: first step minus the median step).

Target: fit's loop within 1.1x the plain scan (`fit chunks / plain scan <= 1.1`).

Run:    python -m benchmarks.training                 (defaults)
        python -m benchmarks.training --quick         (tiny shapes: a smoke run, what the tests run)
        python -m benchmarks.training --preset accelerator     (width 1024, batch 1024, 8192^3 matmul)
Writes: results/benchmarks/training.json (config, shapes, environment, timings, ratios); prints a
Markdown table.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxvg
from benchmarks import common, loops
from jaxvg import checks
from jaxvg.report import experiment

NAME = "training"
TARGET_FIT_OVER_SCAN = 1.1  # jaxvg's loop within 1.1x of the plain-JAX scan


@dataclasses.dataclass(frozen=True)
class Config:
    width: int = 128  # units per block
    depth: int = 10  # blocks (hidden layers)
    in_features: int = 64  # input dimension d0
    out_features: int = 10  # head outputs
    batch: int = 128  # examples per step; the training set is this one batch (full-batch Adam)
    steps: int = 300  # optimizer steps per timed run
    log_every: int = 100  # fit's chunk length (steps per scanned chunk, between logged points)
    learning_rate: float = 1e-3  # Adam's learning rate
    repeat: int = 7  # interleaved timed rounds; medians are reported
    nnx_steps: int | None = 100  # steps per timed run of the per-step nnx.jit loop (None: `steps`)
    matmul_size: int = 1024  # n of the n x n x n float32 matmul that gives the FLOP/s ceiling
    seed: int = 0  # init and data seed
    out_dir: str = "results/benchmarks"  # where NAME.json goes
    quick: bool = False  # tiny shapes and 2 repeats: a smoke run for tests/CI (its numbers mean nothing)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "accelerator": dict(
            width=1024, batch=1024, steps=1000, log_every=250, repeat=5, nnx_steps=200, matmul_size=8192
        ),
    }
    QUICK: ClassVar[dict[str, Any]] = dict(
        width=16, depth=2, in_features=8, out_features=2, batch=8, steps=20, log_every=10, repeat=2,
        nnx_steps=None, matmul_size=64,
    )  # fmt: skip

    def __post_init__(self):
        experiment.apply_quick(self)
        for name in (
            "width",
            "depth",
            "in_features",
            "out_features",
            "batch",
            "steps",
            "log_every",
            "repeat",
        ):
            checks.positive_int(name, getattr(self, name))
        checks.positive_int("matmul_size", self.matmul_size)
        if self.nnx_steps is not None:
            checks.positive_int("nnx_steps", self.nnx_steps)
        checks.positive("learning_rate", self.learning_rate)
        checks.nonnegative_int("seed", self.seed)


def matmul_ceiling(n: int, repeat: int) -> dict[str, float]:
    """FLOP/s of one jitted n x n x n float32 matmul (2 n^3 FLOP): the median over `repeat` (at
    least 3) calls, compile (first call) timed apart."""
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    compile_s, sec = common.compile_and_seconds_per_call(jnp.matmul, a, b, repeat=max(repeat, 3))
    return {
        "n": n,
        "flop": 2 * n**3,
        "seconds": sec,
        "flop_per_second": 2 * n**3 / sec,
        "compile_seconds": compile_s,
    }


def fit_chunks_runner(model: nnx.Module, data: Any, **fit_kw: Any) -> Callable[[], dict[str, Any]]:
    """The scanned chunks of `fit(model, data, **fit_kw)` alone, as a blocking callable.

    It drives fit's compiled chunk program over the same chunk boundaries as `fit`, with the host
    loop between chunks (fetching each chunk's log and the divergence flags) as in `fit`, but with
    the per-call setup (argument validation, `nnx.split`, the optimizer-state init) done once,
    outside, and no history assembly or unstacking. The difference to a whole `fit` call is fit's
    fixed per-call overhead. Built on the public `jaxvg.train.Trainer` (compile once, run many).
    Calls return the last chunk's log.
    """
    from jaxvg import train

    graphdef, params, rest = train.stack_models([model])
    trainer = train.Trainer(graphdef, params, rest, data, train.TrainConfig(**{**fit_kw, "progress": False}))
    state0 = trainer.init_state(params, rest)
    keys = train.data_keys([0])  # what fit(model, key=0) uses

    def chunks() -> dict[str, Any]:
        return trainer.run(state0, keys).logs[-1]

    return chunks


# ----------------------------------------------------------------------------- the benchmark


def run(config: Config, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time the three loops (interleaved rounds) and the matmul ceiling; no I/O.

    Returns:
      A JSON-ready dict: "suite", "config" (the sizes run), "environment", "shapes", "ceiling"
      (matmul FLOP/s), "methods" (per loop: seconds per step, steps/s, FLOP/s, fraction of the
      ceiling, compile seconds, final loss, all round times), "ratios" (records with target, op
      and pass) and "rows" (the table).
    """
    log = log or (lambda m: None)
    nnx_steps = config.nnx_steps or config.steps
    x_np, y_np = loops.teacher_batch(config)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    flops = loops.matmul_flops(loops.layer_sizes(config), config.batch)
    model = loops.make_model(config, nnx.Rngs(config.seed))
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(nnx.state(model, nnx.Param)))

    log(f"[training] matmul ceiling, n = {config.matmul_size}")
    ceiling = matmul_ceiling(config.matmul_size, config.repeat)

    # fit: the first call compiles (and runs); later calls reuse the cached program.
    log("[training] compiling: fit, plain scan, nnx.jit step")
    fit_kw = dict(
        loss=loops.LOSS, optimizer="adam", learning_rate=config.learning_rate, steps=config.steps,
        log_every=config.log_every, progress=False,
    )  # fmt: skip
    box: dict[str, Any] = {}

    def fit_once():
        box["fit"] = jaxvg.fit(model, (x_np, y_np), **fit_kw)

    fit_first = common.timed(fit_once)
    fit_loss = float(box["fit"].history["train/loss"][-1])
    chunks = fit_chunks_runner(model, (x_np, y_np), **fit_kw)
    chunks_loss = float(np.asarray(chunks()["train/loss"])[0])  # warm-up; the loss logged at `steps`

    # plain scan floor: same split state, same optax update, nothing else.
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(config.learning_rate)
    opt_state = tx.init(params)
    program = jax.jit(loops.plain_scan_program(graphdef, tx, config.steps))
    t0 = time.perf_counter()
    compiled = program.lower(params, opt_state, rest, x, y).compile()
    scan_compile = time.perf_counter() - t0

    def scan_once():
        box["scan"] = jax.block_until_ready(compiled(params, opt_state, rest, x, y))

    scan_first = common.timed(scan_once)
    scan_loss = float(box["scan"][2])

    # per-step nnx.jit loop: the first step compiles; every timed run starts from a fresh model and
    # optimizer, built outside the timer.
    nnx_tx = loops.shared_adam(config.learning_rate)  # one transformation for every model (see nnx_setup)
    m0 = loops.make_model(config, nnx.Rngs(config.seed))
    o0 = loops.nnx_setup(m0, nnx_tx)
    nnx_first = common.timed(lambda: loops.nnx_loop(m0, o0, x, y, 1))
    nnx_losses: list[float] = []

    def nnx_once() -> float:
        m = loops.make_model(config, nnx.Rngs(config.seed))
        opt = loops.nnx_setup(m, nnx_tx)
        seconds = common.timed(lambda: loops.nnx_loop(m, opt, x, y, nnx_steps))
        nnx_losses.append(float(loops.nnx_loss(m, x, y)))
        return seconds

    log(
        f"[training] {config.repeat} interleaved rounds: fit and plain scan {config.steps} steps, nnx.jit {nnx_steps}"
    )
    runs = {
        "fit_chunks": lambda: common.timed(chunks),
        "fit": lambda: common.timed(fit_once),
        "plain_scan": lambda: common.timed(scan_once),
        "nnx_jit": nnx_once,
    }
    times = common.interleaved_seconds(runs, config.repeat)
    steps_of = {
        "fit_chunks": config.steps,
        "fit": config.steps,
        "plain_scan": config.steps,
        "nnx_jit": nnx_steps,
    }
    first_of = {"plain_scan": scan_first, "nnx_jit": nnx_first}
    loss_of = {"fit_chunks": chunks_loss, "fit": fit_loss, "plain_scan": scan_loss, "nnx_jit": nnx_losses[0]}
    what = {
        "fit_chunks": "jaxvg.fit's scanned chunks and host loop alone (setup outside the timer)",
        "fit": "jaxvg.fit, whole warm call (setup + scanned chunks + host loop + history)",
        "plain_scan": "hand-written jax.jit(lax.scan) over nnx.split state + optax.adam",
        "nnx_jit": "per-step @nnx.jit + nnx.Optimizer(model, tx, wrt=nnx.Param), Python loop",
    }
    methods = {}
    for name, all_times in times.items():
        seconds = statistics.median(all_times)
        per_step = seconds / steps_of[name]
        if name == "plain_scan":  # timed lower().compile()
            compile_s = scan_compile
        elif name in ("fit", "fit_chunks"):  # one program: first whole fit call minus a warm one
            compile_s = max(fit_first - statistics.median(times["fit"]), 0.0)
        else:  # first single step minus a warm step
            compile_s = max(first_of[name] - per_step, 0.0)
        methods[name] = {
            "what": what[name],
            "steps": steps_of[name],
            "seconds_median": seconds,
            "seconds_min": min(all_times),
            "seconds_all": all_times,
            "seconds_per_step": per_step,
            "steps_per_second": 1.0 / per_step,
            "flop_per_second": flops["step"] / per_step,
            "fraction_of_ceiling": flops["step"] / per_step / ceiling["flop_per_second"],
            "compile_seconds": compile_s,
            "final_loss": loss_of[name],
        }

    def per_step_ratio(a: str, b: str) -> float:
        return common.paired_ratio(times[a], times[b], steps_of[a], steps_of[b])

    ratios = [
        common.ratio(NAME, "fit chunks / plain scan (time per step)",
              per_step_ratio("fit_chunks", "plain_scan"), target=TARGET_FIT_OVER_SCAN, op="<="),
        common.ratio(NAME, f"fit whole call / plain scan ({config.steps} steps)", per_step_ratio("fit", "plain_scan")),
        common.ratio(NAME, "nnx.jit per step / plain scan (time per step)", per_step_ratio("nnx_jit", "plain_scan")),
        common.ratio(NAME, "nnx.jit per step / fit chunks (time per step)", per_step_ratio("nnx_jit", "fit_chunks")),
        common.ratio(NAME, "fit FLOP/s / matmul ceiling (chunks)", methods["fit_chunks"]["fraction_of_ceiling"]),
    ]  # fmt: skip
    overhead = statistics.median(a - b for a, b in zip(times["fit"], times["fit_chunks"], strict=True))
    rows = [
        {
            "loop": name,
            "steps": m["steps"],
            "steps/s": m["steps_per_second"],
            "ms/step": 1e3 * m["seconds_per_step"],
            "GFLOP/s": m["flop_per_second"] / 1e9,
            "of ceiling": m["fraction_of_ceiling"],
            "vs plain scan": per_step_ratio(name, "plain_scan"),
            "compile s": m["compile_seconds"],
            "final loss": m["final_loss"],
        }
        for name, m in methods.items()
    ]
    rows.append(
        {
            "loop": f"matmul {config.matmul_size}^3 (ceiling)",
            "GFLOP/s": ceiling["flop_per_second"] / 1e9,
            "of ceiling": 1.0,
            "compile s": ceiling["compile_seconds"],
        }
    )
    return common.record(
        NAME,
        config,
        shapes={**loops.shapes(config), "param_count": n_params},
        ceiling=ceiling,
        methods=methods,
        fit_fixed_overhead_seconds=overhead,  # per fit call: median over rounds of (whole call - chunks)
        ratios=ratios,
        rows=rows,
        timing=common.TIMING,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse flags, run, write results/benchmarks/training.json and print the tables."""
    return common.main(Config, run, argv)


if __name__ == "__main__":
    main()
