"""What jaxvg's exact measurements cost against plain autodiff: the public call, second call.

Ratios are measured in one run, interleaved (A B A B ...: both sides see the same machine load),
as the median of per-round ratios over `repeat` rounds; the run is split into `blocks` of rounds and
the spread is the range of the block medians (a noisy machine shows up there). Each ratio is given
in wall time and in process CPU time (`_cpu`: what this process spent, all threads; on a shared
machine it moves much less with other processes' load):

- `gradient_flow(model, x, y)` / a jitted `jax.value_and_grad` of the same mse loss (parameter
  gradients of the same model, its parameters passed as a flat list of arrays: the cheapest
  dispatch). Both sides trace their matmuls at the same precision ("highest"). Targets: <= 1.10,
  <= 1.3 at the host-bound 200 x 16 x 16.
- `Probe(model).gradient_flow(x, y)`: the reusable handle, same ratio.
- `jacobian_norms(method="exact")` / (N x one VJP chain h_0 -> h_L with one cotangent), N = dim h_L:
  target <= 1. Hutchinson k = 8 / one forward+backward (value_and_grad at the same batch):
  target <= 2.
- `jacobian_spectrum` (one example, all its SVD/QR work): seconds per call, reported.
- Compile time (first call: trace + compile + one run; the persistent compilation cache off) of
  `gradient_flow` on a depth-1000 MLP and on 128 blocks of a period-2 pattern (tanh and relu blocks
  alternating: two graphdefs, scanned as a run of 64 identical pairs). Target <= 10 s each.

Threads: XLA runs single-threaded here (XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1", set unless XLA_FLAGS is already set): on a shared 2-core machine
multi-threaded timings collapse whenever another process takes a core.

Run:     python -m benchmarks.measure_cost              (the CPU sizes; ~10-20 min on 1 core)
         python -m benchmarks.measure_cost --quick      (tiny sizes, a smoke run)
         python -m benchmarks.measure_cost --preset accelerator   (GPU/TPU sizes)
Writes:  results/benchmarks/measure_cost[_quick|_accelerator].json (device, versions, flags, shapes,
         every timing) and prints a table.
Standard library + jax/flax/jaxvg only (no import of other benchmark modules).
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # before jax starts; importing this module (tests) changes nothing
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import jaxvg  # noqa: E402
from jaxvg import measure  # noqa: E402
from jaxvg.nn import activations, losses  # noqa: E402

OUT_FEATURES = 10


@dataclasses.dataclass(frozen=True)
class Config:
    """One benchmark run.

    Attributes:
      name: preset name ("cpu", "quick", "accelerator"); names the JSON file.
      flow_shapes: (depth, width, batch) of the tanh MLPs for the gradient_flow ratios.
      jacobian_shape: (depth, width, batch) for the jacobian_norms ratios.
      spectrum_shape: (depth, width) for jacobian_spectrum (one example).
      compile_deep: (depth, width, batch) of the deep MLP whose compile time is measured.
      compile_periodic: (pairs, width, batch): 2 * pairs blocks alternating tanh and relu.
      repeat: timed rounds per ratio; blocks: the rounds are split into this many blocks (spread).
      precision: matmul precision of both sides.
    """

    name: str = "cpu"
    flow_shapes: tuple[tuple[int, int, int], ...] = (
        (50, 256, 256),
        (20, 128, 256),
        (20, 512, 256),
        (100, 128, 256),
        (100, 512, 256),
        (200, 16, 16),
    )
    jacobian_shape: tuple[int, int, int] = (20, 128, 32)
    spectrum_shape: tuple[int, int] = (20, 128)
    compile_deep: tuple[int, int, int] = (1000, 64, 32)
    compile_periodic: tuple[int, int, int] = (64, 64, 32)
    repeat: int = 21
    blocks: int = 3
    precision: str = "highest"


PRESETS = {
    "cpu": Config(),
    "quick": Config(
        name="quick",
        flow_shapes=((8, 32, 16), (200, 16, 16)),
        jacobian_shape=(4, 16, 4),
        spectrum_shape=(4, 16),
        compile_deep=(300, 8, 4),
        compile_periodic=(16, 8, 4),
        repeat=6,
        blocks=2,
    ),
    "accelerator": Config(
        name="accelerator",
        flow_shapes=((50, 1024, 1024), (200, 512, 512), (1000, 256, 256), (50, 4096, 4096)),
        jacobian_shape=(20, 512, 64),
        spectrum_shape=(50, 512),
        compile_deep=(1000, 256, 256),
        compile_periodic=(64, 512, 256),
        repeat=31,
        blocks=3,
    ),
}


def config_for(preset: str) -> Config:
    """The `Config` of a preset name; ValueError naming the choices otherwise."""
    if preset not in PRESETS:
        raise ValueError(f"`preset` must be one of {sorted(PRESETS)}, got {preset!r}.")
    return PRESETS[preset]


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
    `fns`.
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
    depth, width, batch = config.jacobian_shape
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
    depth, width = config.spectrum_shape
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
    for name, (model, batch, width) in {
        "deep_mlp": (_mlp(config.compile_deep[0], config.compile_deep[1]), config.compile_deep[2],
                     config.compile_deep[1]),
        "periodic_2": (PeriodicNet(config.compile_periodic[0], config.compile_periodic[1], OUT_FEATURES,
                                   rngs=nnx.Rngs(0)), config.compile_periodic[2], config.compile_periodic[1]),
    }.items():  # fmt: skip
        x, y = _data(batch, width)
        first = _timed(lambda model=model, x=x, y=y: measure.gradient_flow(model, x, y, **kw))
        second = _timed(lambda model=model, x=x, y=y: measure.gradient_flow(model, x, y, **kw))
        res[name] = {"blocks": len(model.blocks), "width": width, "batch": batch,
                     "first_call_s": first, "second_call_s": second}  # fmt: skip
    return res


def environment() -> dict[str, Any]:
    import flax

    dev = jax.devices()[0]
    return {
        "device": f"{dev.platform}:{getattr(dev, 'device_kind', '?')}",
        "devices": len(jax.devices()),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "jaxvg": getattr(jaxvg, "__version__", "?"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "cpu_count": os.cpu_count(),
        "loadavg_start": _loadavg(),
    }


def _loadavg() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def run(config: Config, *, only: Sequence[str] = ()) -> dict[str, Any]:
    """Every measurement of `config` (or those named in `only`: flow, jacobians, spectrum,
    compile); a JSON-ready dict."""
    jax.config.update("jax_enable_compilation_cache", False)
    want = set(only) or {"flow", "jacobians", "spectrum", "compile"}
    out: dict[str, Any] = {"config": dataclasses.asdict(config), "environment": environment()}
    if "compile" in want:
        out["compile"] = bench_compile(config)
    if "flow" in want:
        out["flow"] = [bench_flow(*shape, config) for shape in config.flow_shapes]
    if "jacobians" in want:
        out["jacobians"] = bench_jacobians(config)
    if "spectrum" in want:
        out["spectrum"] = bench_spectrum(config)
    out["environment"]["loadavg_end"] = _loadavg()
    return out


def table(result: dict[str, Any]) -> str:
    """The result as a short text table (median ratio [block-median range])."""
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
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument("--quick", action="store_true", help="the 'quick' preset (a smoke run)")
    parser.add_argument("--only", nargs="*", default=(), help="flow jacobians spectrum compile")
    parser.add_argument("--out", default=None, help="JSON path (default results/benchmarks/...)")
    parser.add_argument("--dry-run", action="store_true", help="print the config and exit")
    args = parser.parse_args(argv)
    config = config_for("quick" if args.quick else args.preset)
    if args.dry_run:
        print(json.dumps(dataclasses.asdict(config)))
        return {"config": dataclasses.asdict(config)}
    result = run(config, only=args.only)
    suffix = "" if config.name == "cpu" else f"_{config.name}"
    path = pathlib.Path(args.out or f"results/benchmarks/measure_cost{suffix}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(table(result))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
