"""Many seeds at once: one vmapped `fit` program against a Python loop of runs and the per-step `nnx.jit` loop.

`seeds` nets (default 32) of one architecture (tanh MLP, `width` 64, `depth` 10 blocks, a linear head),
each from its own seed, train for `steps` (200) full-batch Adam steps on the same `batch` examples of
a teacher-student regression set (MSE). Four ways to run them:

- **vmapped fit**: `jaxvg.fit(factory, data, seeds=range(S), ...)`: every seed's init and
  training in one vmapped, scanned, jitted program (a whole warm call, init included).
- **loop of fits**: a Python loop of `fit(model_s, data, key=s, ...)`, one single-seed jitted run per
  seed (one compiled program, reused); the models are built before the timer starts.
- **nnx.jit per step**: the Flax tutorials' loop, per seed `nnx.Optimizer(model, tx, wrt=nnx.Param)`
  and `steps` calls of an `@nnx.jit` step (models and optimizers built before the timer starts, one
  shared `tx` so that the step compiles once).
- **vmapped plain scan** (the floor): a hand-written `jax.jit(jax.vmap(lax.scan(step)))` over the
  stacked `nnx.split` states with `optax.adam`: the least a vmapped program can do.

Times are medians over `repeat` interleaved rounds (each round runs every method once, in a rotated
order); ratios are medians of the per-round ratios, so a load that drifts on a shared machine
cancels. Compile time is reported apart.

Target: the vmapped program at least 10x faster than the per-step `nnx.jit` loop on CPU.

Run:    python -m benchmarks.seeds                 (defaults)
        python -m benchmarks.seeds --quick         (tiny shapes: a smoke run, what the tests run)
        python -m benchmarks.seeds --batch 32 --seeds 64
Writes: results/benchmarks/seeds.json (config, shapes, environment, timings, ratios); prints a
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

NAME = "seeds"
TARGET_NNX_OVER_VMAP = 10.0  # >= 10x faster than the per-step nnx.jit loop (CPU)


@dataclasses.dataclass(frozen=True)
class Config:
    seeds: int = 32  # nets, seeds 0..seeds-1
    width: int = 64  # units per block
    depth: int = 10  # blocks (hidden layers)
    in_features: int = 64  # input dimension d0
    out_features: int = 10  # head outputs
    batch: int = 64  # examples per step; the training set is this one batch (full-batch Adam)
    steps: int = 200  # optimizer steps per net
    log_every: int = 100  # fit's chunk length (steps per scanned chunk, between logged points)
    learning_rate: float = 1e-3  # Adam's learning rate
    repeat: int = 3  # interleaved timed rounds; medians are reported
    seed: int = 0  # data seed
    out_dir: str = "results/benchmarks"  # where NAME.json goes
    quick: bool = False  # tiny shapes and 2 rounds: a smoke run for tests/CI (its numbers mean nothing)

    QUICK: ClassVar[dict[str, Any]] = dict(
        seeds=3, width=8, depth=2, in_features=4, out_features=2, batch=8, steps=10, log_every=5, repeat=2
    )

    def __post_init__(self):
        experiment.apply_quick(self)
        for name in ("seeds", "width", "depth", "in_features", "out_features", "batch", "steps"):
            checks.positive_int(name, getattr(self, name))
        checks.positive_int("log_every", self.log_every)
        checks.positive_int("repeat", self.repeat)
        checks.positive("learning_rate", self.learning_rate)
        checks.nonnegative_int("seed", self.seed)


def run(config: Config, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time the four ways of training `seeds` nets; no I/O.

    Returns:
      A JSON-ready dict: "suite", "config" (the sizes run), "environment", "shapes", "methods" (per
      method: median seconds for all seeds, seconds per net-step, compile seconds, mean final loss,
      all round times), "ratios" (records with target, op and pass) and "rows" (the table).
    """
    log = log or (lambda m: None)
    seeds = list(range(config.seeds))
    x_np, y_np = loops.teacher_batch(config)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    flops = loops.matmul_flops(loops.layer_sizes(config), config.batch)
    net_steps = config.seeds * config.steps

    def factory(rngs: nnx.Rngs) -> nnx.Module:
        return loops.make_model(config, rngs)

    fit_kw = dict(
        loss=loops.LOSS, optimizer="adam", learning_rate=config.learning_rate, steps=config.steps,
        log_every=config.log_every, progress=False,
    )  # fmt: skip
    box: dict[str, Any] = {}

    # vmapped fit: the first call compiles.
    log(f"[seeds] compiling: vmapped fit ({config.seeds} seeds), single-seed fit, nnx.jit step, plain scan")

    def vmap_once():
        box["vmap"] = jaxvg.fit(factory, (x_np, y_np), seeds=seeds, **fit_kw)

    vmap_first = common.timed(vmap_once)
    vmap_loss = float(np.mean(box["vmap"].history["train/loss"][:, -1]))

    # loop of single-seed fits: one compile (the first), reused by every seed.
    def build() -> list[nnx.Module]:
        return [factory(nnx.Rngs(s)) for s in seeds]

    warm = factory(nnx.Rngs(0))
    loop_first = common.timed(lambda: jaxvg.fit(warm, (x_np, y_np), key=0, **fit_kw))

    def loop_once() -> float:
        nets = build()
        t0 = time.perf_counter()
        out = [jaxvg.fit(m, (x_np, y_np), key=s, **fit_kw) for s, m in zip(seeds, nets, strict=True)]
        seconds = time.perf_counter() - t0
        box["loop"] = float(np.mean([o.history["train/loss"][-1] for o in out]))
        return seconds

    # per-step nnx.jit loop: one shared tx, so the step compiles once.
    tx = loops.shared_adam(config.learning_rate)
    m0 = factory(nnx.Rngs(0))
    o0 = loops.nnx_setup(m0, tx)
    nnx_first = common.timed(lambda: loops.nnx_loop(m0, o0, x, y, 1))

    def nnx_once() -> float:
        nets = build()
        opts = [loops.nnx_setup(m, tx) for m in nets]
        t0 = time.perf_counter()
        for m, o in zip(nets, opts, strict=True):
            loops.nnx_loop(m, o, x, y, config.steps)
        seconds = time.perf_counter() - t0
        box["nnx"] = float(np.mean([loops.nnx_loss(m, x, y) for m in nets]))
        return seconds

    # vmapped plain scan over the stacked split states (the floor for a vmapped program).
    graphdef, params, rest = jaxvg.train.stack_models(build())
    ptx = optax.adam(config.learning_rate)
    opt_state = jax.vmap(ptx.init)(params)
    program = jax.jit(
        jax.vmap(loops.plain_scan_program(graphdef, ptx, config.steps), in_axes=(0, 0, 0, None, None))
    )
    t0 = time.perf_counter()
    compiled = program.lower(params, opt_state, rest, x, y).compile()
    scan_compile = time.perf_counter() - t0

    def scan_once():
        box["scan"] = jax.block_until_ready(compiled(params, opt_state, rest, x, y))

    scan_once()  # warm-up

    log(f"[seeds] {config.repeat} interleaved rounds of {config.seeds} seeds x {config.steps} steps")
    times = common.interleaved_seconds(
        {
            "vmapped_fit": lambda: common.timed(vmap_once),
            "loop_of_fits": loop_once,
            "nnx_jit": nnx_once,
            "vmapped_plain_scan": lambda: common.timed(scan_once),
        },
        config.repeat,
    )
    compile_of = {
        "vmapped_fit": max(vmap_first - statistics.median(times["vmapped_fit"]), 0.0),
        "loop_of_fits": max(loop_first - statistics.median(times["loop_of_fits"]) / config.seeds, 0.0),
        "nnx_jit": max(nnx_first - statistics.median(times["nnx_jit"]) / net_steps, 0.0),
        "vmapped_plain_scan": scan_compile,
    }
    loss_of = {
        "vmapped_fit": vmap_loss,
        "loop_of_fits": box["loop"],
        "nnx_jit": box["nnx"],
        "vmapped_plain_scan": float(np.mean(box["scan"][2])),
    }
    what = {
        "vmapped_fit": f"fit(factory, data, seeds=range({config.seeds})): one vmapped program, init included",
        "loop_of_fits": f"Python loop of {config.seeds} single-seed fit calls (one compiled program)",
        "nnx_jit": f"{config.seeds} x {config.steps} calls of a per-step @nnx.jit step + nnx.Optimizer",
        "vmapped_plain_scan": "hand-written jit(vmap(lax.scan)) over stacked nnx.split states + optax.adam",
    }
    methods = {}
    for name, all_times in times.items():
        seconds = statistics.median(all_times)
        methods[name] = {
            "what": what[name],
            "seconds_median": seconds,
            "seconds_min": min(all_times),
            "seconds_all": all_times,
            "seconds_per_net_step": seconds / net_steps,
            "net_steps_per_second": net_steps / seconds,
            "flop_per_second": flops["step"] * net_steps / seconds,
            "compile_seconds": compile_of[name],
            "mean_final_loss": loss_of[name],
        }

    def over(a: str, b: str) -> float:
        return common.paired_ratio(times[a], times[b])

    ratios = [
        common.ratio(NAME, f"nnx.jit per step / vmapped fit ({config.seeds} seeds)", over("nnx_jit", "vmapped_fit"),
                 target=TARGET_NNX_OVER_VMAP, op=">="),
        common.ratio(NAME, "loop of fits / vmapped fit", over("loop_of_fits", "vmapped_fit")),
        common.ratio(NAME, "vmapped fit / vmapped plain scan", over("vmapped_fit", "vmapped_plain_scan")),
    ]  # fmt: skip
    rows = [
        {
            "method": name,
            "seconds": m["seconds_median"],
            "net-steps/s": m["net_steps_per_second"],
            "GFLOP/s": m["flop_per_second"] / 1e9,
            "vs vmapped fit": over(name, "vmapped_fit"),
            "compile s": m["compile_seconds"],
            "mean final loss": m["mean_final_loss"],
        }
        for name, m in methods.items()
    ]
    shapes = {"seeds": config.seeds, "steps": config.steps, **loops.shapes(config)}
    return common.record(NAME, config, shapes=shapes, methods=methods, ratios=ratios, rows=rows,
                         timing=common.TIMING)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse flags, run, write results/benchmarks/seeds.json and print the tables."""
    return common.main(Config, run, argv)


if __name__ == "__main__":
    main()
