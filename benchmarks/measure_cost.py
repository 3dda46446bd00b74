"""What jaxvg's exact measurements cost against plain autodiff: the public call, second call.

Ratios are measured in one run, interleaved (A B A B ...: both sides see the same machine load),
as the median of per-round ratios over `repeat` rounds; the run is split into `blocks` of rounds and
the spread is the range of the block medians (a noisy machine shows up there). Each ratio is given
in wall time and in process CPU time (`_cpu`: what this process spent, all threads; on a shared
machine it moves much less with other processes' load):

- `gradient_flow(model, x, y)` / a jitted `jax.value_and_grad` of the same mse loss (parameter
  gradients of the same model, its parameters passed as a flat list of arrays: the cheapest
  dispatch). Both sides trace their matmuls at the same precision ("highest"). Targets: <= 1.10,
  <= 1.3 at the host-bound 200 x 16 x 16. The CPU shapes are 50 x 256 x 256, 200 x 16 x 16 and
  200 x 128 x 128 (depth x width x batch; the depth-200 nets are one scanned stretch of identical
  blocks, `engine.SCAN_MIN_RUN`); `python -m benchmarks.analysis` times the jitted kernel at depth
  20/100 x width 128/512 (and PyTorch there).
- `Probe(model).gradient_flow(x, y)`: the reusable handle, same ratio.
- `jacobian_norms(method="exact")` / (N x one VJP chain h_0 -> h_L with one cotangent), N = dim h_L:
  target <= 1. Hutchinson k = 8 / one forward+backward (value_and_grad at the same batch):
  target <= 2.
- `jacobian_spectrum` (one example, all its SVD/QR work): seconds per call, reported (no target).
- Compile time (first call: trace + compile + one run; the persistent compilation cache off) of
  `gradient_flow` on a depth-1000 MLP and on 128 blocks of a period-2 pattern (tanh and relu blocks
  alternating: two graphdefs, scanned as a run of 64 identical pairs). Target <= 10 s each.

Threads: XLA runs single-threaded here (XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1", set unless XLA_FLAGS is already set): on a shared 2-core machine
multi-threaded timings collapse whenever another process takes a core.

Every ratio (wall time), the spectrum's seconds and the compile times are also ratio records
("ratios", with target and pass/miss; "smoke" under --quick), the rows `python -m benchmarks.run`
puts in its table; the CPU-time ratios stay in the JSON and the printed text.

Run:     python -m benchmarks.measure_cost              (the CPU sizes; a few minutes on 1 core)
         python -m benchmarks.measure_cost --quick      (tiny sizes, a smoke run)
         python -m benchmarks.measure_cost --preset accelerator   (GPU/TPU sizes)
         python -m benchmarks.measure_cost --only flow --flow-shapes 50x256x256 200x16x16
Writes:  OUT_DIR/measure_cost.json (default results/benchmarks; device, versions, flags, shapes,
         every timing, the ratio records) and prints a table.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # before jax starts; importing this module (tests) changes nothing
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import dataclasses  # noqa: E402
import inspect  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from typing import Any, ClassVar  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import jaxvg  # noqa: E402
from benchmarks import common  # noqa: E402
from jaxvg import checks, measure, report  # noqa: E402
from jaxvg.nn import activations, losses  # noqa: E402
from jaxvg.report import cli, experiment  # noqa: E402

NAME = "measure_cost"
OUT_FEATURES = 10
FLOW_TARGET = 1.10  # public gradient_flow / value_and_grad, every shape but the host-bound ones
HOST_BOUND_TARGETS = {"200x16x16": 1.3}  # shape -> its target (per-call host work dominates)
EXACT_TARGET = 1.0  # exact jacobian_norms / (N x one VJP chain)
HUTCHINSON_TARGET = 2.0  # Hutchinson k = 8 / one forward+backward
COMPILE_TARGET_S = 10.0  # first call of gradient_flow (trace + compile + one run), seconds


PARTS = ("flow", "jacobians", "spectrum", "compile")


@dataclasses.dataclass(frozen=True)
class Config:
    # depth x width x batch, gradient_flow ratios (depth 200: a scanned run, see engine.SCAN_MIN_RUN)
    flow_shapes: tuple[str, ...] = ("50x256x256", "200x16x16", "200x128x128")
    jacobian_shape: str = "20x128x32"  # depth x width x batch for the jacobian_norms ratios
    spectrum_shape: str = "20x128"  # depth x width for jacobian_spectrum (one example)
    compile_deep: str = "1000x64x32"  # depth x width x batch of the deep MLP whose compile time is timed
    compile_periodic: str = "64x64x32"  # pairs x width x batch: 2 * pairs blocks, tanh and relu alternating
    repeat: int = 21  # timed rounds per ratio
    blocks: int = 3  # the rounds are split into this many blocks (the spread: their medians' range)
    precision: str = "highest"  # matmul precision of both sides
    only: tuple[str, ...] = PARTS  # which measurements: flow, jacobians, spectrum, compile
    out_dir: str = "results/benchmarks"  # where measure_cost.json goes
    quick: bool = False  # tiny sizes and few rounds: a smoke run (its numbers mean nothing)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "accelerator": {
            "flow_shapes": ("50x1024x1024", "200x512x512", "1000x256x256", "50x4096x4096"),
            "jacobian_shape": "20x512x64",
            "spectrum_shape": "50x512",
            "compile_deep": "1000x256x256",
            "compile_periodic": "64x512x256",
            "repeat": 31,
        },
    }
    QUICK: ClassVar[dict[str, Any]] = {
        "flow_shapes": ("8x32x16", "200x16x16"),
        "jacobian_shape": "4x16x4",
        "spectrum_shape": "4x16",
        "compile_deep": "130x8x4",  # past the scan threshold (128), as depth 1000 is
        "compile_periodic": "2x8x4",
        "repeat": 6,
        "blocks": 2,
    }

    def __post_init__(self):
        experiment.apply_quick(self)
        experiment.check_common(self)
        shapes = experiment.check_tuple("flow_shapes", self.flow_shapes, lambda n, v: (dims(n, v, 3), v)[1])
        object.__setattr__(self, "flow_shapes", shapes)
        for name, n in (
            ("jacobian_shape", 3),
            ("spectrum_shape", 2),
            ("compile_deep", 3),
            ("compile_periodic", 3),
        ):
            dims(name, getattr(self, name), n)
        checks.positive_int("repeat", self.repeat)
        checks.positive_int("blocks", self.blocks)
        if self.repeat < self.blocks:
            raise ValueError(f"`repeat` must be >= `blocks` = {self.blocks}, got {self.repeat!r}.")
        measure.engine.check_precision(self.precision)
        only = experiment.check_tuple("only", self.only, lambda n, v: checks.choice(n, v, PARTS))
        object.__setattr__(self, "only", only)

    def shape(self, name: str) -> tuple[int, ...]:
        """A shape field as integers, e.g. `shape("jacobian_shape")` -> (20, 128, 32)."""
        return dims(name, getattr(self, name), 2 if name == "spectrum_shape" else 3)


def dims(name: str, text: Any, n: int) -> tuple[int, ...]:
    """`text` such as "50x256x256" as `n` positive integers; ValueError naming `name` otherwise."""
    parts = text.split("x") if isinstance(text, str) else []
    if len(parts) != n or not all(p.isdigit() and int(p) > 0 for p in parts):
        example = "x".join(["50", "256", "256"][:n])
        raise ValueError(
            f"`{name}` must be {n} positive integers joined by 'x' (e.g. {example!r}), got {text!r}."
        )
    return tuple(int(p) for p in parts)


# ------------------------------------------------------------------------------------------------
# Models and timing helpers
# ------------------------------------------------------------------------------------------------


def _mlp(depth: int, width: int, out: int | None = OUT_FEATURES) -> jaxvg.MLP:
    return jaxvg.MLP(width, width, depth, out, activation="tanh", rngs=nnx.Rngs(0))


class ActivationBlock(nnx.Module):
    """h -> phi(h @ W + b), phi from the activation registry (its name is part of the graphdef)."""

    def __init__(self, width: int, activation: str, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(width, width, rngs=rngs)
        self.activation = activations.get(activation)

    def __call__(self, h):
        return self.activation(self.linear(h))


class PeriodicNet(nnx.Module):
    """2 * pairs blocks of width `width`, alternating tanh and relu (two graphdefs: a period-2
    pattern), and a linear head."""

    def __init__(self, pairs: int, width: int, out: int, *, rngs: nnx.Rngs):
        self.blocks = nnx.List(
            [ActivationBlock(width, act, rngs=rngs) for _ in range(pairs) for act in ("tanh", "relu")]
        )
        self.head = nnx.Linear(width, out, rngs=rngs)

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def _data(batch: int, width: int, out: int = OUT_FEATURES) -> tuple[jax.Array, jax.Array]:
    return (
        jax.random.normal(jax.random.key(1), (batch, width)),
        jax.random.normal(jax.random.key(2), (batch, out)),
    )


def _kwargs(fn: Callable, **wanted: Any) -> dict[str, Any]:
    """The keyword arguments of `wanted` that `fn` takes (so that the script also times older code)."""
    params = inspect.signature(fn).parameters
    return {k: v for k, v in wanted.items() if k in params}


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def _timed_both(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call, waited for."""
    wall, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn())
    return time.perf_counter() - wall, time.process_time() - cpu


def _ratio_stats(num: list[float], den: list[float], factor: float, blocks: int) -> tuple[float, list[float]]:
    per_round = [t / (factor * b) for t, b in zip(num, den, strict=True)]
    per_block = max(1, len(per_round) // blocks)
    meds = [statistics.median(per_round[i : i + per_block]) for i in range(0, len(per_round), per_block)]
    return statistics.median(per_round), [min(meds), max(meds)]


def interleaved(
    fns: dict[str, Callable[[], Any]], *, repeat: int, blocks: int, ratios: dict[str, tuple[str, float]]
) -> dict[str, Any]:
    """Time zero-argument callables in interleaved rounds (after one warm-up call each, timed apart
    as `first_call_s`): per name the median wall seconds (`_s`) and process CPU seconds (`_cpu_s`),
    and per ratio the median over rounds of t[num] / (factor * t[den]), wall (`name`) and CPU
    (`name_cpu`), each with the range of its block medians (`_spread`). CPU time is what the
    process itself spent (all its threads): on a shared machine it moves far less with other
    processes' load than wall time does.

    `ratios` maps a ratio name to (numerator name, factor); its denominator is the first name of
    `fns`. `name_round_range` is the min-max of the per-round wall ratios (the spread the other
    suites report, and the ratio records here).
    """
    names = list(fns)
    out: dict[str, Any] = {}
    for name in names:
        out[f"{name}_first_call_s"] = _timed(fns[name])
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeat):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            w, c = _timed_both(fns[name])
            wall[name].append(w)
            cpu[name].append(c)
    base = names[0]
    for name in names:
        out[f"{name}_s"] = statistics.median(wall[name])
        out[f"{name}_cpu_s"] = statistics.median(cpu[name])
    for rname, (num, factor) in ratios.items():
        out[rname], out[f"{rname}_spread"] = _ratio_stats(wall[num], wall[base], factor, blocks)
        per_round = [t / (factor * b) for t, b in zip(wall[num], wall[base], strict=True)]
        out[f"{rname}_round_range"] = [min(per_round), max(per_round)]
        out[f"{rname}_cpu"], out[f"{rname}_cpu_spread"] = _ratio_stats(cpu[num], cpu[base], factor, blocks)
    return out


def _flat_value_and_grad(model: nnx.Module, precision: str) -> tuple[Callable, list[jax.Array]]:
    """A jitted value_and_grad of the mse loss over the model's parameters passed as a flat list."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    leaves, treedef = jax.tree.flatten(params)

    def loss(leaves, x, y):
        p = jax.tree.unflatten(treedef, leaves)
        with jax.default_matmul_precision(precision):
            return losses.mse(nnx.merge(graphdef, p, rest, copy=True)(x), y)

    return jax.jit(jax.value_and_grad(loss)), leaves


# ------------------------------------------------------------------------------------------------
# The measurements
# ------------------------------------------------------------------------------------------------


def bench_flow(depth: int, width: int, batch: int, config: Config) -> dict[str, Any]:
    model = _mlp(depth, width)
    x, y = _data(batch, width)
    vg, leaves = _flat_value_and_grad(model, config.precision)
    kw = _kwargs(measure.gradient_flow, precision=config.precision)
    fns = {
        "value_and_grad": lambda: vg(leaves, x, y),
        "gradient_flow": lambda: measure.gradient_flow(model, x, y, **kw),
    }
    ratios = {"ratio_gradient_flow": ("gradient_flow", 1.0)}
    if hasattr(measure, "Probe"):
        probe = measure.Probe(model)
        fns["probe"] = lambda: probe.gradient_flow(x, y, **kw)
        ratios["ratio_probe"] = ("probe", 1.0)
    res = {"depth": depth, "width": width, "batch": batch}
    res.update(interleaved(fns, repeat=_repeat(config, depth, width, batch), blocks=config.blocks,
                           ratios=ratios))  # fmt: skip
    return res


def _repeat(config: Config, depth: int, width: int, batch: int) -> int:
    flops = 6 * depth * width * width * batch
    return max(config.blocks * 2, config.repeat // 2) if flops > 3e10 else config.repeat


def bench_jacobians(config: Config) -> dict[str, Any]:
    depth, width, batch = config.shape("jacobian_shape")
    model = _mlp(depth, width, None)
    x, y = _data(batch, width, width)
    gd, state = nnx.split(model)
    prec = config.precision

    def chain(state, x, ct):  # one plain VJP chain h_0 -> h_L, one cotangent
        def tail(h):
            with jax.default_matmul_precision(prec):
                return nnx.merge(gd, state, copy=True)(h)

        out, vjp = jax.vjp(tail, x)
        return vjp(ct)[0]

    chain_j = jax.jit(chain)
    ct = jnp.ones((batch, width)) / jnp.sqrt(batch * width)
    vg, leaves = _flat_value_and_grad(model, prec)
    kw = _kwargs(measure.jacobian_norms, precision=prec)
    key = jax.random.key(0)
    exact = interleaved(
        {
            "vjp_chain": lambda: chain_j(state, x, ct),
            "jacobian_norms_exact": lambda: measure.jacobian_norms(model, x, **kw),
        },
        repeat=max(config.blocks * 2, config.repeat // 2),
        blocks=config.blocks,
        ratios={"ratio_exact_over_n_vjp_chains": ("jacobian_norms_exact", float(width))},
    )
    hutch = interleaved(
        {
            "forward_backward": lambda: vg(leaves, x, y),
            "jacobian_norms_hutchinson_k8": lambda: measure.jacobian_norms(
                model, x, method="hutchinson", num_probes=8, key=key, **kw
            ),
        },
        repeat=config.repeat,
        blocks=config.blocks,
        ratios={"ratio_hutchinson_k8_over_forward_backward": ("jacobian_norms_hutchinson_k8", 1.0)},
    )
    return {"depth": depth, "width": width, "batch": batch, **exact, **hutch}


def bench_spectrum(config: Config) -> dict[str, Any]:
    depth, width = config.shape("spectrum_shape")
    model = _mlp(depth, width, None)
    x = jax.random.normal(jax.random.key(3), (width,))
    kw = _kwargs(measure.jacobian_spectrum, precision=config.precision)
    first = _timed(lambda: measure.jacobian_spectrum(model, x, layers=(0,), **kw))
    times = [_timed(lambda: measure.jacobian_spectrum(model, x, layers=(0,), **kw)) for _ in range(7)]
    return {"depth": depth, "width": width, "first_call_s": first, "seconds": statistics.median(times),
            "spread": [min(times), max(times)]}  # fmt: skip


def bench_compile(config: Config) -> dict[str, Any]:
    res = {}
    kw = _kwargs(measure.gradient_flow, precision=config.precision)
    (deep, deep_width, deep_batch), (pairs, per_width, per_batch) = (
        config.shape("compile_deep"), config.shape("compile_periodic"))  # fmt: skip
    for name, (model, batch, width) in {
        "deep_mlp": (_mlp(deep, deep_width), deep_batch, deep_width),
        "periodic_2": (PeriodicNet(pairs, per_width, OUT_FEATURES, rngs=nnx.Rngs(0)), per_batch, per_width),
    }.items():
        x, y = _data(batch, width)
        first = _timed(lambda model=model, x=x, y=y: measure.gradient_flow(model, x, y, **kw))
        second = _timed(lambda model=model, x=x, y=y: measure.gradient_flow(model, x, y, **kw))
        res[name] = {"blocks": len(model.blocks), "width": width, "batch": batch,
                     "first_call_s": first, "second_call_s": second}  # fmt: skip
    return res


def environment() -> dict[str, Any]:
    """`common.environment()` (what every suite records: versions, backend, device kind, CPU
    threads, git commit, XLA_FLAGS: the thread pinning) plus this script's: the device as
    "platform:kind" and the load average at the start."""
    dev = jax.devices()[0]
    return {
        **common.environment(),
        "device": f"{dev.platform}:{getattr(dev, 'device_kind', '?')}",
        "loadavg_start": _loadavg(),
    }


def _loadavg() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def run(config: Config) -> dict[str, Any]:
    """The measurements named in `config.only` (flow, jacobians, spectrum, compile); a JSON-ready
    dict. The persistent compilation cache is off while it runs (every first call compiles) and
    restored after, so that a caller in the same process (the tests) keeps its cache."""
    cache = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        want = set(config.only)
        out = {**common.record(NAME, config), "environment": environment()}
        if "compile" in want:
            out["compile"] = bench_compile(config)
        if "flow" in want:
            out["flow"] = [bench_flow(*dims("flow_shapes", s, 3), config) for s in config.flow_shapes]
        if "jacobians" in want:
            out["jacobians"] = bench_jacobians(config)
        if "spectrum" in want:
            out["spectrum"] = bench_spectrum(config)
    finally:
        jax.config.update("jax_enable_compilation_cache", cache)
    out["environment"]["loadavg_end"] = _loadavg()
    out["ratios"] = ratios(out)
    return out


def flow_target(shape: str) -> float:
    """The target of public gradient_flow / value_and_grad at `shape` ("DxWxB")."""
    return HOST_BOUND_TARGETS.get(shape, FLOW_TARGET)


def ratios(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The ratio records (`common.ratio`: value, target, pass, spread) of a result: per flow shape
    the public `gradient_flow` and `Probe.gradient_flow` over `value_and_grad`, exact
    `jacobian_norms` over N one-cotangent VJP chains, Hutchinson k=8 over forward+backward (wall
    time, min-max of the per-round ratios), `jacobian_spectrum` seconds per call (min-max of its
    calls) and the two compile times (one first call each: no spread)."""
    quick = bool(result["config"].get("quick"))

    def rec(name, value, spread=None, target=None):
        return common.ratio(NAME, name, value, target=target, op="<=" if target is not None else None,
                            spread=spread, quick=quick)  # fmt: skip

    out = []
    for row in result.get("flow", []):
        dims_text = f"depth {row['depth']}, width {row['width']}, batch {row['batch']}"
        target = flow_target(f"{row['depth']}x{row['width']}x{row['batch']}")
        out.append(rec(f"gradient_flow public call / value_and_grad ({dims_text})",
                       row["ratio_gradient_flow"], row["ratio_gradient_flow_round_range"], target))  # fmt: skip
        if "ratio_probe" in row:
            out.append(rec(f"Probe.gradient_flow / value_and_grad ({dims_text})",
                           row["ratio_probe"], row["ratio_probe_round_range"]))  # fmt: skip
    if "jacobians" in result:
        j = result["jacobians"]
        dims_text = f"depth {j['depth']}, width {j['width']}, batch {j['batch']}"
        key = "ratio_exact_over_n_vjp_chains"
        out.append(rec(f"exact jacobian_norms public call / N x one VJP chain ({dims_text}, N = {j['width']})",
                       j[key], j[f"{key}_round_range"], EXACT_TARGET))  # fmt: skip
        key = "ratio_hutchinson_k8_over_forward_backward"
        out.append(rec(f"hutchinson k=8 public call / forward+backward ({dims_text})",
                       j[key], j[f"{key}_round_range"], HUTCHINSON_TARGET))  # fmt: skip
    if "spectrum" in result:
        s = result["spectrum"]
        out.append(rec(f"jacobian_spectrum seconds per call (depth {s['depth']}, width {s['width']}, one example)",
                       s["seconds"], s["spread"]))  # fmt: skip
    for name, c in result.get("compile", {}).items():
        what = (f"depth-{c['blocks']} MLP" if name == "deep_mlp"
                else f"{c['blocks']} blocks, period-2 tanh/relu pattern")  # fmt: skip
        out.append(rec(f"gradient_flow compile seconds, first call ({what}, width {c['width']}, batch {c['batch']})",
                       c["first_call_s"], None, COMPILE_TARGET_S))  # fmt: skip
    return out


def table(result: dict[str, Any]) -> str:
    """The result as short text lines (median ratio [block-median range], CPU-time ratio), then
    the table of its ratio records (target, pass/miss or smoke, min-max of the per-round ratios)."""
    lines = [f"device {result['environment']['device']}, jax {result['environment']['jax']}, "
             f"flax {result['environment']['flax']}"]  # fmt: skip

    def r(d, k):
        lo, hi = d[f"{k}_spread"]
        text = f"{d[k]:.3f} [{lo:.3f}-{hi:.3f}]"
        if f"{k}_cpu" in d:
            lo, hi = d[f"{k}_cpu_spread"]
            text += f" cpu {d[f'{k}_cpu']:.3f} [{lo:.3f}-{hi:.3f}]"
        return text

    for row in result.get("flow", []):
        probe = f"   probe {r(row, 'ratio_probe')}" if "ratio_probe" in row else ""
        lines.append(
            f"gradient_flow {row['depth']}x{row['width']}x{row['batch']}: {r(row, 'ratio_gradient_flow')}"
            f"  ({row['gradient_flow_s'] * 1e3:.2f} vs {row['value_and_grad_s'] * 1e3:.2f} ms){probe}"
        )
    if "jacobians" in result:
        j = result["jacobians"]
        lines.append(f"jacobian_norms exact / (N x VJP chain) {j['depth']}x{j['width']}x{j['batch']}: "
                     f"{r(j, 'ratio_exact_over_n_vjp_chains')}")  # fmt: skip
        lines.append(f"jacobian_norms hutchinson k=8 / forward+backward: "
                     f"{r(j, 'ratio_hutchinson_k8_over_forward_backward')}")  # fmt: skip
    if "spectrum" in result:
        s = result["spectrum"]
        lines.append(f"jacobian_spectrum {s['depth']}x{s['width']}: {s['seconds'] * 1e3:.1f} ms "
                     f"[{s['spread'][0] * 1e3:.1f}-{s['spread'][1] * 1e3:.1f}]")  # fmt: skip
    for name, c in result.get("compile", {}).items():
        lines.append(f"compile {name} ({c['blocks']} blocks, width {c['width']}): first call "
                     f"{c['first_call_s']:.2f} s, second {c['second_call_s'] * 1e3:.1f} ms")  # fmt: skip
    if result.get("ratios"):
        lines += ["", report.format_table(common.ratio_rows(result["ratios"]), floatfmt=".3g")]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse flags (`jaxvg.report.cli`: one per field, `--preset accelerator`, `--quick`), run, write
    OUT_DIR/measure_cost.json and print the table."""
    config = cli.parse(Config, argv)
    report.check_writable(config.out_dir)
    result = run(config)
    path = report.write_json(os.path.join(config.out_dir, "measure_cost.json"), result)
    print(table(result))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
