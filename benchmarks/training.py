"""Training-loop speed: jaxvg's `fit` against a plain-JAX `lax.scan` floor and the per-step `nnx.jit` loop.

The loops train the same MLP (tanh, LeCun normal; `width` units x `depth` blocks, a linear head) on
the same full batch of a teacher-student regression set (`jaxvg.train.data.load("teacher")`, noisy labels,
MSE loss) with the same optimizer (Adam, lr 1e-3), for `steps` steps each, from the same weights:

- **fit chunks**: what `jaxvg.train.training.fit` runs between its setup and its history assembly: its
  compiled chunk program (`log_every` steps under `lax.scan`, with fit's finiteness checks, kernel
  gradient norms and a train-loss evaluation per chunk) over the same chunk boundaries, with the
  host loop between chunks. Driven through private names of `jaxvg.training` (see
  `fit_chunks_runner`); this is the loop the 1.1x target is about.
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

Target (issue 5): fit's loop within 1.1x the plain scan (`fit chunks / plain scan <= 1.1`).

Run:    python -m benchmarks.training                 (defaults: about a minute on 2 idle CPU cores)
        python -m benchmarks.training --quick         (tiny shapes, what tests/test_benchmarks.py runs)
        python -m benchmarks.training --preset accelerator     (width 1024, batch 1024, 8192^3 matmul)
Writes: results/benchmarks/training.json (config, shapes, environment, timings, ratios); prints a
Markdown table.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks import _timing
from jaxvg import checks
from jaxvg.nn import losses, models
from jaxvg.report import results
from jaxvg.train import data
from jaxvg.train import training as jaxvg_training

NAME = "training"
LOSS = "mse"
TARGET_FIT_OVER_SCAN = 1.1  # issue 5: jaxvg's loop within 1.1x of the plain-JAX scan

# --quick: tiny shapes and few repeats (a smoke run; its numbers mean nothing).
QUICK = dict(
    width=16, depth=2, in_features=8, out_features=2, batch=8, steps=20, log_every=10, repeat=2,
    nnx_steps=None, matmul_size=64,
)  # fmt: skip


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
    quick: bool = False  # tiny shapes and 2 repeats: a smoke run for tests/CI

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "accelerator": dict(
            width=1024, batch=1024, steps=1000, log_every=250, repeat=5, nnx_steps=200, matmul_size=8192
        ),
    }

    def __post_init__(self):
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


def effective(config: Config) -> Config:
    """The config actually run: `QUICK` sizes replace the defaults when `config.quick` is set."""
    return dataclasses.replace(config, **QUICK) if config.quick else config


# ----------------------------------------------------------------------------- shared helpers


def median_seconds(fn: Callable[[], Any], repeat: int) -> tuple[float, list[float]]:
    """(median, all) wall seconds of `repeat` calls of `fn`; `fn` must block until its work is done."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def interleaved_seconds(runs: dict[str, Callable[[], float]], repeat: int) -> dict[str, list[float]]:
    """`repeat` rounds; each round calls every `runs[name]()` once, in an order rotated per round.

    Each callable does its own setup and returns the seconds of its timed part. Interleaving makes
    the ratio of two methods within one round (`paired_ratio`) robust to a load that drifts on a
    shared machine, which separate blocks of repeats are not.
    """
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeat):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(float(runs[name]()))
    return times


def paired_ratio(
    num: Sequence[float], den: Sequence[float], num_scale: float = 1.0, den_scale: float = 1.0
) -> float:
    """Median over rounds of (num[r] / num_scale) / (den[r] / den_scale)."""
    return statistics.median((a / num_scale) / (b / den_scale) for a, b in zip(num, den, strict=True))


def timed(fn: Callable[[], Any]) -> float:
    """Seconds of one call of `fn` (which must block until its work is done)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def matmul_flops(sizes: Sequence[int], batch: int) -> dict[str, int]:
    """Matmul FLOPs of one training step of an MLP with layer sizes `sizes` (input, ..., output).

    forward = 2 B sum_l fan_in_l fan_out_l; backward = 2 x forward (input and weight gradients);
    step = forward + backward = 6 B sum fan_in fan_out.
    """
    macs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    forward = 2 * batch * macs
    return {"forward": forward, "backward": 2 * forward, "step": 3 * forward}


def matmul_ceiling(n: int, repeat: int) -> dict[str, float]:
    """FLOP/s of one jitted n x n x n float32 matmul (2 n^3 FLOP): `benchmarks._timing`'s median
    over `repeat` (at least 3) calls, compile (first call) timed apart."""
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    compile_s, sec = _timing.compile_and_seconds_per_call(jnp.matmul, a, b, repeat=max(repeat, 3))
    return {
        "n": n,
        "flop": 2 * n**3,
        "seconds": sec,
        "flop_per_second": 2 * n**3 / sec,
        "compile_seconds": compile_s,
    }


def plain_scan_program(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, steps: int) -> Callable:
    """The floor: `run(params, opt_state, rest, x, y) -> (params, opt_state, final_loss)`, `steps`
    plain steps under `lax.scan` (value_and_grad through `nnx.merge`, optax update), not jitted."""
    loss_fn = losses.get(LOSS)

    def loss_of(params, rest, x, y):
        return loss_fn(nnx.merge(graphdef, params, rest)(x), y)

    def run(params, opt_state, rest, x, y):
        def step(carry, _):
            p, s = carry
            loss, grads = jax.value_and_grad(loss_of)(p, rest, x, y)
            updates, s = tx.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), loss

        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), None, length=steps)
        return params, opt_state, loss_of(params, rest, x, y)

    return run


def _nnx_loss(model, x, y):
    return losses.get(LOSS)(model(x), y)


@nnx.jit
def nnx_train_step(model: nnx.Module, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> jax.Array:
    """The Flax tutorials' step: `nnx.value_and_grad`, then `optimizer.update(model, grads)` in place."""
    loss, grads = nnx.value_and_grad(_nnx_loss)(model, x, y)
    optimizer.update(model, grads)
    return loss


def nnx_loop(
    model: nnx.Module, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array, steps: int
) -> jax.Array:
    """`steps` calls of the per-step `nnx.jit` step, training `model` in place; blocks on the last loss."""
    loss = None
    for _ in range(steps):
        loss = nnx_train_step(model, optimizer, x, y)
    return jax.block_until_ready(loss)


@nnx.jit
def nnx_loss(model: nnx.Module, x: jax.Array, y: jax.Array) -> jax.Array:
    """The training loss of `model` on (x, y), jitted (evaluated outside the timed loops)."""
    return _nnx_loss(model, x, y)


@functools.lru_cache(maxsize=8)
def shared_adam(learning_rate: float) -> optax.GradientTransformation:
    """One `optax.adam(learning_rate)` object per learning rate, shared by every per-step loop."""
    return optax.adam(learning_rate)


def nnx_setup(model: nnx.Module, tx: optax.GradientTransformation) -> nnx.Optimizer:
    """The tutorials' optimizer, `nnx.Optimizer(model, tx, wrt=nnx.Param)`.

    Pass one `tx` object to every model: the transformation is static in the optimizer's graph, and
    a fresh `optax.adam(...)` per model (another closure, unequal) makes `nnx.jit` compile the step
    again for every model (2-4 s each on a 2-core CPU).
    """
    return nnx.Optimizer(model, tx, wrt=nnx.Param)


def fit_chunks_runner(model: nnx.Module, data: Any, **fit_kw: Any) -> Callable[[], dict[str, Any]] | None:
    """The scanned chunks of `fit(model, data, **fit_kw)` alone, as a blocking callable.

    It drives jaxvg.training's compiled chunk program over the same chunk boundaries as `fit`, with
    the host loop between chunks (fetching each chunk's log and the divergence flags) as in `fit`,
    but with the per-call setup (argument validation, `nnx.split`, the optimizer-state init) done
    once, outside, and no history assembly or unstacking. The difference to a whole `fit` call is
    fit's fixed per-call overhead. Uses private names of `jaxvg.training` (`_validate`,
    `_programs`, `_initial_state`, `_data_key`); returns None when they are not there (the suite
    then reports the whole call only). Calls return the last chunk's log.
    """
    T = jaxvg_training
    if not all(hasattr(T, n) for n in ("_validate", "_programs", "_initial_state", "_data_key")):
        return None
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params, rest = jax.tree.map(lambda a: jnp.asarray(a)[None], (params, rest))
    keys = T._data_key(0)[None]
    spec, arrays, lr, _, _ = T._validate(
        graphdef, params, rest, data, keys, fit_kw["loss"], fit_kw["optimizer"], fit_kw["learning_rate"],
        fit_kw["steps"], None, "constant", 0, None, fit_kw["log_every"], None, "raise", None,
    )  # fmt: skip
    program = T._programs(spec)
    state0 = T._initial_state(spec, params, rest, int(arrays["x"].shape[0]))
    starts = [*range(0, spec.steps, spec.log_every), spec.steps]

    def chunks() -> dict[str, Any]:
        state, log = state0, None
        for start in starts:
            state, log, _ = program(state, lr, keys, jnp.int32(start), arrays)
            log = jax.device_get(log)
            if np.asarray(jax.device_get(state.diverged)).any():
                break
        return log

    return chunks


def make_model(config: Any, rngs: nnx.Rngs) -> models.MLP:
    return models.MLP(config.in_features, config.width, config.depth, config.out_features, rngs=rngs)


def teacher_batch(config: Any) -> tuple[np.ndarray, np.ndarray]:
    """`config.batch` examples of the teacher-student regression set, noisy labels (float32 x and y)."""
    ds = data.load(
        "teacher",
        seed=config.seed,
        in_features=config.in_features,
        out_features=config.out_features,
        n_train=config.batch,
        n_test=1,
        noise=1.0,  # unit-variance label noise: the loss stays away from 0 (and from subnormals)
    )
    return np.asarray(ds.x_train), np.asarray(ds.y_train)


def ratio(suite: str, name: str, value: float, *, target: float | None = None, op: str | None = None,
          note: str = "") -> dict[str, Any]:  # fmt: skip
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


def environment() -> dict[str, Any]:
    """`jaxvg.report.results.environment()` plus the first device's kind, the matmul precision setting and
    the CPU threads available."""
    env = results.environment()
    env["device_kind"] = jax.devices()[0].device_kind
    # None: the backend's default (on GPUs, float32 matmuls may then use TF32)
    env["default_matmul_precision"] = getattr(jax.config, "jax_default_matmul_precision", None)
    env["cpu_count"] = os.cpu_count()
    env["cpu_affinity"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return env


def status(record: dict[str, Any]) -> str:
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
    cfg = effective(config)
    nnx_steps = cfg.nnx_steps or cfg.steps
    x_np, y_np = teacher_batch(cfg)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    sizes = [cfg.in_features] + [cfg.width] * cfg.depth + [cfg.out_features]
    flops = matmul_flops(sizes, cfg.batch)
    model = make_model(cfg, nnx.Rngs(cfg.seed))
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(nnx.state(model, nnx.Param)))

    log(f"[training] matmul ceiling, n = {cfg.matmul_size}")
    ceiling = matmul_ceiling(cfg.matmul_size, cfg.repeat)

    # fit: the first call compiles (and runs); later calls reuse the cached program.
    log("[training] compiling: fit, plain scan, nnx.jit step")
    fit_kw = dict(
        loss=LOSS, optimizer="adam", learning_rate=cfg.learning_rate, steps=cfg.steps,
        log_every=cfg.log_every, progress=False,
    )  # fmt: skip
    box: dict[str, Any] = {}

    def fit_once():
        box["fit"] = jaxvg_training.fit(model, (x_np, y_np), **fit_kw)

    fit_first = timed(fit_once)
    fit_loss = float(box["fit"].history["train/loss"][-1])
    chunks = fit_chunks_runner(model, (x_np, y_np), **fit_kw)
    if chunks is not None:
        chunks_loss = float(np.asarray(chunks()["train/loss"])[0])  # warm-up; the loss logged at `steps`

    # plain scan floor: same split state, same optax update, nothing else.
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(cfg.learning_rate)
    opt_state = tx.init(params)
    program = jax.jit(plain_scan_program(graphdef, tx, cfg.steps))
    t0 = time.perf_counter()
    compiled = program.lower(params, opt_state, rest, x, y).compile()
    scan_compile = time.perf_counter() - t0

    def scan_once():
        box["scan"] = jax.block_until_ready(compiled(params, opt_state, rest, x, y))

    scan_first = timed(scan_once)
    scan_loss = float(box["scan"][2])

    # per-step nnx.jit loop: the first step compiles; every timed run starts from a fresh model and
    # optimizer, built outside the timer.
    nnx_tx = shared_adam(cfg.learning_rate)  # one transformation for every model (see nnx_setup)
    m0 = make_model(cfg, nnx.Rngs(cfg.seed))
    o0 = nnx_setup(m0, nnx_tx)
    nnx_first = timed(lambda: nnx_loop(m0, o0, x, y, 1))
    nnx_losses: list[float] = []

    def nnx_once() -> float:
        m = make_model(cfg, nnx.Rngs(cfg.seed))
        opt = nnx_setup(m, nnx_tx)
        seconds = timed(lambda: nnx_loop(m, opt, x, y, nnx_steps))
        nnx_losses.append(float(nnx_loss(m, x, y)))
        return seconds

    log(
        f"[training] {cfg.repeat} interleaved rounds: fit and plain scan {cfg.steps} steps, nnx.jit {nnx_steps}"
    )
    runs = {"fit": lambda: timed(fit_once), "plain_scan": lambda: timed(scan_once), "nnx_jit": nnx_once}
    if chunks is not None:
        runs = {"fit_chunks": lambda: timed(chunks), **runs}
    times = interleaved_seconds(runs, cfg.repeat)
    steps_of = {"fit_chunks": cfg.steps, "fit": cfg.steps, "plain_scan": cfg.steps, "nnx_jit": nnx_steps}
    first_of = {"plain_scan": scan_first, "nnx_jit": nnx_first}
    loss_of = {"fit": fit_loss, "plain_scan": scan_loss, "nnx_jit": nnx_losses[0]}
    if chunks is not None:
        loss_of["fit_chunks"] = chunks_loss
    what = {
        "fit_chunks": "jaxvg.train.training.fit's scanned chunks and host loop alone (setup outside the timer)",
        "fit": "jaxvg.train.training.fit, whole warm call (setup + scanned chunks + host loop + history)",
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
        return paired_ratio(times[a], times[b], steps_of[a], steps_of[b])

    fit_key = "fit_chunks" if chunks is not None else "fit"
    ratios = [
        ratio(NAME, f"{'fit chunks' if chunks is not None else 'fit'} / plain scan (time per step)",
              per_step_ratio(fit_key, "plain_scan"), target=TARGET_FIT_OVER_SCAN, op="<="),
        ratio(NAME, "nnx.jit per step / plain scan (time per step)", per_step_ratio("nnx_jit", "plain_scan")),
        ratio(NAME, f"nnx.jit per step / {'fit chunks' if chunks is not None else 'fit'} (time per step)",
              per_step_ratio("nnx_jit", fit_key)),
        ratio(NAME, f"fit FLOP/s / matmul ceiling ({'chunks' if chunks is not None else 'whole call'})",
              methods[fit_key]["fraction_of_ceiling"]),
    ]  # fmt: skip
    overhead = None
    if chunks is not None:
        ratios.insert(1, ratio(NAME, f"fit whole call / plain scan ({cfg.steps} steps)",
                               per_step_ratio("fit", "plain_scan")))  # fmt: skip
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
            "loop": f"matmul {cfg.matmul_size}^3 (ceiling)",
            "GFLOP/s": ceiling["flop_per_second"] / 1e9,
            "of ceiling": 1.0,
            "compile s": ceiling["compile_seconds"],
        }
    )
    return {
        "suite": NAME,
        "config": dataclasses.asdict(cfg),
        "environment": environment(),
        "shapes": {
            "layer_sizes": sizes,
            "batch": cfg.batch,
            "param_count": n_params,
            "dtype": "float32",
            "flop_per_step": flops["step"],
            "flop_forward": flops["forward"],
            "loss": LOSS,
            "optimizer": "adam",
            "data": f"teacher regression, {cfg.batch} examples, full batch every step",
        },
        "ceiling": ceiling,
        "methods": methods,
        "fit_fixed_overhead_seconds": overhead,  # per fit call: median over rounds of (whole call - chunks)
        "ratios": ratios,
        "rows": rows,
        "timing": "median over interleaved rounds; ratios are medians of per-round ratios",
    }


def table(result: dict[str, Any]) -> str:
    """The suite's Markdown tables: per-loop timings, then the ratios against their targets."""
    return (
        results.format_table(result["rows"], floatfmt=".4g")
        + "\n\n"
        + results.format_table(ratio_rows(result["ratios"]), floatfmt=".3g")
    )


def write(config: Config, result: dict[str, Any]) -> str:
    """Write `out_dir/NAME.json`; returns its path."""
    return str(results.write_json(os.path.join(config.out_dir, f"{result['suite']}.json"), result))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse flags, run, write results/benchmarks/training.json and print the table."""
    from jaxvg.report import cli

    config = cli.parse(Config, argv)
    result = run(config, log=lambda m: print(m, file=sys.stderr))
    path = write(config, result)
    env = result["environment"]
    print(f"## training ({env['device_kind']}, jax {env['jax']}, flax {env['flax']}; {path})\n")
    print(table(result))
    return result


if __name__ == "__main__":
    main()
