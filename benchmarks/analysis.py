"""Cost of jaxvg's exact, renormalised per-layer measurements against plain autodiff (and PyTorch).

Ratios are measured in one run on the current device (jitted code only, compile timed apart,
medians over repeats; every jax side at matmul precision "highest": gradient_flow's and
jacobian_norms' `precision=`, the baselines traced under `jax.default_matmul_precision`):
  - gradient_flow (the jitted kernel, `gradient_flow_from_split`; benchmarks.measure_cost times
    the public call) / jitted jax.value_and_grad of the same loss (parameter gradients), tanh MLPs at
    depth 20 and 100, width 128 and 512, batch 256 (`--preset accelerator`: the depth x width x
    batch shapes 50x1024x1024, 200x512x512, 1000x256x256, 50x4096x4096). Target <= 1.10.
  - exact jacobian_norms / N vmapped plain VJPs (its floor), and against a naive per-layer
    jax.jacrev loop (depth 20, width 128, batch 32; accelerator: width 512, batch 64); Hutchinson
    (k = 8, all layers) / a plain forward+backward at the same batch. Target <= 2.
  - when torch imports (benchmarks/torch_reference.py), on the same device (CUDA when jax runs on
    a GPU and torch sees one) with TF32 off: the same per-layer gradient norms in PyTorch eager
    (retained activations + torch.autograd.grad), reported as jax/torch, targets <= 0.8 (gradient
    flow) and <= 0.6 (Hutchinson); and through torch.compile (inductor; zero probes added to each
    h_l give dloss/dh_l), its first call (compile) timed apart, reported as jax/torch.compile with
    target <= 1.10: torch.compile removes eager's per-op dispatch and fuses, so the compiled
    measurement is a plain compiled forward+backward plus norms, the floor that value_and_grad is
    on the jax side, and gradient_flow is held to the same 1.10 against it. Nets deeper than
    `torch_compile_max_depth` (200) skip the compiled column (an unrolled depth-1000 graph compiles
    for very long); the row and the table say so. `--quick` turns torch.compile off (inductor took
    3-11 s per shape even at quick sizes; `--quick --torch-compile` keeps it).

Threads: both frameworks use ONE thread (XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1", set when this runs as `python -m benchmarks.analysis` unless
XLA_FLAGS is already set, and torch.set_num_threads(1)): on a shared 2-core machine multi-threaded
timings collapse when another process takes a core.

Run:    python -m benchmarks.analysis            (full sizes)
        python -m benchmarks.analysis --quick    (tiny sizes, a smoke run)
        python -m benchmarks.analysis --preset accelerator    (GPU/TPU sizes)
        python -m benchmarks.analysis --no-torch --depths 20 --widths 256
Writes: results/benchmarks/analysis.json (device, versions, thread and precision settings, shapes,
timings, ratios) and prints a table.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # one thread, set before jax starts (not when imported, e.g. by the tests)
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import dataclasses  # noqa: E402
import functools  # noqa: E402
import itertools  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from typing import Any, ClassVar  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import jaxvg  # noqa: E402
from benchmarks import common, torch_reference  # noqa: E402
from benchmarks.measure_cost import dims  # noqa: E402
from jaxvg import (
    checks,  # noqa: E402
    report,  # noqa: E402
)
from jaxvg.nn import losses  # noqa: E402
from jaxvg.report import experiment  # noqa: E402

NAME = "analysis"
OUT_FEATURES = 10
# ratio key -> (target, op, label); the targets stated in the module docstring
TARGETS = {
    "ratio_flow_over_value_and_grad": (1.10, "<=", "gradient_flow / value_and_grad"),
    "ratio_jax_over_torch": (0.8, "<=", "gradient_flow jax / torch eager"),
    "ratio_jax_over_torch_compile": (1.10, "<=", "gradient_flow jax / torch.compile"),
    "ratio_exact_over_plain_vjps": (None, None, "exact jacobian_norms / N plain VJPs"),
    "ratio_exact_over_naive_jacrev": (None, None, "exact jacobian_norms / naive jacrev loop"),
    "ratio_hutchinson_over_forward_backward": (2.0, "<=", "hutchinson k=8 / forward+backward"),
    "ratio_hutchinson_jax_over_torch": (0.6, "<=", "hutchinson jax / torch eager"),
}
FLOW_KEYS = ("ratio_flow_over_value_and_grad", "ratio_jax_over_torch", "ratio_jax_over_torch_compile")
# ratios whose jax side is the jitted kernel (`*_from_split`) with a public-call counterpart in
# benchmarks.measure_cost: their names say "jitted kernel"
KERNEL_KEYS = ("ratio_flow_over_value_and_grad", "ratio_hutchinson_over_forward_backward")
# matmul precision of every jax side: gradient_flow's default, and the baselines are traced under it
PRECISION = "highest"


@dataclasses.dataclass(frozen=True)
class Config:
    depths: tuple[int, ...] = (20, 100)  # gradient_flow: depths (every depth x width is timed)
    widths: tuple[int, ...] = (128, 512)  # gradient_flow: widths
    batch: int = 256  # gradient_flow: examples per call
    flow_shapes: tuple[str, ...] = ()  # gradient_flow: "DxWxB" shapes; if given, not depths x widths
    jacobian_depth: int = 20  # jacobian norms: blocks
    jacobian_width: int = 128  # jacobian norms: units per block
    jacobian_batch: int = 32  # jacobian norms: examples per call
    torch: bool = True  # also time PyTorch eager (one thread) when torch imports
    torch_compile: bool = True  # also time the same measurement through torch.compile (compile timed apart)
    torch_compile_max_depth: int = 200  # deeper nets skip torch.compile (unrolled: compiles for very long)
    out_dir: str = "results/benchmarks"  # where NAME.json goes
    quick: bool = False  # tiny sizes: a smoke run for tests/CI (its numbers mean nothing)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "accelerator": {
            "flow_shapes": ("50x1024x1024", "200x512x512", "1000x256x256", "50x4096x4096"),
            "jacobian_depth": 20,
            "jacobian_width": 512,
            "jacobian_batch": 64,
        },
    }
    # torch.compile is off at quick sizes: inductor took 3-11 s per shape here even for a depth-4
    # width-16 net (less with its on-disk cache warm), as long as the rest of a smoke run; the compiled
    # path's numbers are checked against gradient_flow by the tests of benchmarks.torch_reference.
    # `--quick --torch-compile` turns it on.
    QUICK: ClassVar[dict[str, Any]] = dict(
        depths=(4, 8), widths=(16,), batch=8, flow_shapes=(), jacobian_depth=4, jacobian_width=16,
        jacobian_batch=4, torch_compile=False,
    )  # fmt: skip

    def __post_init__(self):
        experiment.apply_quick(self)
        for name in ("depths", "widths"):
            if not getattr(self, name):
                raise ValueError(
                    f"`{name}` must be a non-empty tuple of integers >= 1, got {getattr(self, name)!r}."
                )
            for v in getattr(self, name):
                checks.positive_int(name, v)
        if not isinstance(self.flow_shapes, tuple | list):
            raise checks.ArgumentTypeError(
                f"`flow_shapes` must be a tuple of 'DEPTHxWIDTHxBATCH' strings, e.g. ('50x1024x1024',), "
                f"got {self.flow_shapes!r}."
            )
        object.__setattr__(self, "flow_shapes", tuple(self.flow_shapes))
        for shape in self.flow_shapes:
            dims("flow_shapes", shape, 3)
        for name in ("batch", "jacobian_depth", "jacobian_width", "jacobian_batch", "torch_compile_max_depth"):  # fmt: skip
            checks.positive_int(name, getattr(self, name))
        for name in ("torch", "torch_compile", "quick"):
            checks.boolean(name, getattr(self, name))

    def shapes(self) -> list[tuple[int, int, int]]:
        """(depth, width, batch) of every gradient_flow row: `flow_shapes`, else depths x widths."""
        if self.flow_shapes:
            return [dims("flow_shapes", shape, 3) for shape in self.flow_shapes]
        return [(d, w, self.batch) for d, w in itertools.product(self.depths, self.widths)]


def _mlp(depth: int, width: int, out: int | None, seed: int = 0) -> jaxvg.MLP:
    return jaxvg.MLP(width, width, depth, out, activation="tanh", rngs=nnx.Rngs(seed))


def _repeat(depth: int, width: int, batch: int) -> int:
    flops = 6 * depth * width * width * batch
    return 7 if flops > 2e10 else 15 if flops > 2e9 else 31


def _inputs(depth: int, width: int, batch: int) -> tuple[jaxvg.MLP, jax.Array, jax.Array]:
    """The tanh MLP (seed 0) and the (x, y) batch that every framework measures at this shape."""
    x = jax.random.normal(jax.random.key(1), (batch, width))
    y = jax.random.normal(jax.random.key(2), (batch, OUT_FEATURES))
    return _mlp(depth, width, OUT_FEATURES), x, y


def _at_precision(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` traced under `jax.default_matmul_precision(PRECISION)` (a baseline at the precision of
    the measurement it is compared with: no TF32 / bf16 passes on accelerators)."""

    @functools.wraps(fn)
    def wrapped(*args: Any) -> Any:
        with jax.default_matmul_precision(PRECISION):
            return fn(*args)

    return wrapped


# ------------------------------------------------------------------------------------------------
# JAX
def bench_flow(depth: int, width: int, batch: int) -> dict[str, Any]:
    model, x, y = _inputs(depth, width, batch)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    repeat = _repeat(depth, width, batch)

    def value_and_grad(p, x, y):
        return jax.value_and_grad(lambda p: losses.mse(nnx.merge(graphdef, p, rest, copy=True)(x), y))(p)

    def flow(p, x, y):
        return jaxvg.measure.gradient_flow_from_split(
            graphdef, (p, rest), x, y, loss="mse", precision=PRECISION
        )

    timed = common.interleaved_jitted(
        {"value_and_grad": (_at_precision(value_and_grad), (params, x, y)), "flow": (flow, (params, x, y))},
        repeat,
    )
    c_base, t_base = timed["value_and_grad"]["compile_s"], timed["value_and_grad"]["seconds"]
    c_flow, t_flow = timed["flow"]["compile_s"], timed["flow"]["seconds"]
    per_round = common.paired_ratios(timed["flow"]["seconds_all"], timed["value_and_grad"]["seconds_all"])
    t_public = common.median_seconds(
        lambda: jax.block_until_ready(jaxvg.gradient_flow(model, x, y, precision=PRECISION)),
        repeat=max(3, repeat // 2),
        warmup=1,
    )
    return {
        "depth": depth,
        "width": width,
        "batch": batch,
        "loop": "scan" if depth >= jaxvg.measure.engine.SCAN_MIN_RUN else "unrolled",
        "value_and_grad_s": t_base,
        "gradient_flow_s": t_flow,
        "gradient_flow_public_call_s": t_public,
        "gradient_flow_s_all": timed["flow"]["seconds_all"],
        "ratio_flow_over_value_and_grad": t_flow / t_base,
        "ratio_flow_over_value_and_grad_spread": [min(per_round), max(per_round)],
        "compile_value_and_grad_s": c_base,
        "compile_gradient_flow_s": c_flow,
    }


def _blocks_fn(model):
    """h_0 -> h_L through the blocks (eval mode), as a pure function of the state."""
    graphdef, state = nnx.split(
        nnx.view(model, deterministic=True, use_running_average=True, raise_if_not_found=False)
    )

    def tail(state, h, start):
        m = nnx.merge(graphdef, state, copy=True)
        for block in list(m.blocks)[start:]:
            h = block(h)
        return h

    return graphdef, state, tail


def bench_jacobians(depth: int, width: int, batch: int) -> dict[str, Any]:
    model, x, y = _inputs(depth, width, batch)
    graphdef, state, tail = _blocks_fn(model)
    repeat = 31

    def exact(state, x):
        return jaxvg.measure.jacobian_norms_from_split(
            graphdef, state, x, method="exact", precision=PRECISION
        )

    def hutchinson(state, x):
        return jaxvg.measure.jacobian_norms_from_split(
            graphdef, state, x, method="hutchinson", num_probes=8, key=jax.random.key(0), precision=PRECISION
        )

    def plain_vjps(state, x):  # N vmapped VJPs of h_0 -> h_L: the floor of the exact method
        h_l, vjp = jax.vjp(lambda h: tail(state, h, 0), x)
        basis = jnp.broadcast_to(jnp.eye(width)[:, None, :], (width, batch, width))
        return jax.vmap(lambda c: vjp(c)[0])(basis)

    probes = jax.random.rademacher(jax.random.key(0), (8, batch, width), dtype=x.dtype)

    def plain_vjps_k8(state, x):  # 8 vmapped plain VJPs: the floor of Hutchinson k = 8
        h_l, vjp = jax.vjp(lambda h: tail(state, h, 0), x)
        return jax.vmap(lambda c: vjp(c)[0])(probes)

    def naive_jacrev(state, x):  # per layer l: per-example jacrev of h_l -> h_L, then the norm
        m = nnx.merge(graphdef, state, copy=True)
        hs = [x]
        for block in m.blocks:
            hs.append(block(hs[-1]))
        out = []
        for layer in range(depth + 1):
            jac = jax.vmap(jax.jacrev(lambda h, layer=layer: tail(state, h[None], layer)[0]))(hs[layer])
            out.append(jnp.log10(jnp.linalg.norm(jac.reshape(batch, -1), axis=-1)))
        return jnp.stack(out, axis=1)

    gdp, params, rest = nnx.split(model, nnx.Param, ...)

    def forward_backward(p, x, y):
        return jax.value_and_grad(lambda p: losses.mse(nnx.merge(gdp, p, rest, copy=True)(x), y))(p)

    timed = common.interleaved_jitted(
        {
            "jacobian_norms_exact": (exact, (state, x)),
            "plain_vmapped_vjps": (_at_precision(plain_vjps), (state, x)),
            "jacobian_norms_hutchinson_k8": (hutchinson, (state, x)),
            "plain_vmapped_vjps_k8": (_at_precision(plain_vjps_k8), (state, x)),
            "forward_backward": (_at_precision(forward_backward), (params, x, y)),
        },
        repeat,
    )
    timed.update(
        common.interleaved_jitted({"naive_jacrev_loop": (_at_precision(naive_jacrev), (state, x))}, 3)
    )
    res = {"depth": depth, "width": width, "batch": batch}
    for name, t in timed.items():
        res[f"{name}_s"] = t["seconds"]
        res[f"compile_{name}_s"] = t["compile_s"]
    res["jacobian_norms_hutchinson_k8_s_all"] = timed["jacobian_norms_hutchinson_k8"]["seconds_all"]
    res["ratio_exact_over_plain_vjps"] = res["jacobian_norms_exact_s"] / res["plain_vmapped_vjps_s"]
    res["ratio_exact_over_naive_jacrev"] = res["jacobian_norms_exact_s"] / res["naive_jacrev_loop_s"]
    res["ratio_hutchinson_over_forward_backward"] = (
        res["jacobian_norms_hutchinson_k8_s"] / res["forward_backward_s"]
    )
    # spreads: min-max of the per-round ratios where both were timed in the same rounds; the
    # naive jacrev loop is timed in rounds of its own (interquartile, `common.unpaired_spread`)
    for key, a, b in (
        ("ratio_exact_over_plain_vjps", "jacobian_norms_exact", "plain_vmapped_vjps"),
        ("ratio_hutchinson_over_forward_backward", "jacobian_norms_hutchinson_k8", "forward_backward"),
    ):
        per_round = common.paired_ratios(timed[a]["seconds_all"], timed[b]["seconds_all"])
        res[f"{key}_spread"] = [min(per_round), max(per_round)]
    res["ratio_exact_over_naive_jacrev_spread"] = list(
        common.unpaired_spread(
            timed["jacobian_norms_exact"]["seconds_all"], timed["naive_jacrev_loop"]["seconds_all"]
        )
    )
    return res


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def run(config: Config, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time gradient_flow and the Jacobian norms against their floors (and PyTorch); no I/O.

    Returns:
      A JSON-ready dict: "suite", "config", "environment", "threads", "torch" (version or None),
      "precision" (jax's, and torch's settings: device, TF32 flags, threads), "flow" (one row per
      shape), "jacobians", "ratios" (records with target, op, pass).
    """
    log = log or (lambda m: None)
    torch = torch_reference.load(threads=1) if config.torch else None
    result = common.record(
        NAME,
        config,
        threads={
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
            "torch_num_threads": torch.get_num_threads() if torch else None,
            "cpu_count": os.cpu_count(),
            "load_average_at_start": list(os.getloadavg()),
        },
        torch=torch.__version__ if torch else None,
        precision={
            "jax": f"{PRECISION}: gradient_flow / jacobian_norms precision=, baselines traced under "
            f"jax.default_matmul_precision({PRECISION!r})",
            "torch": torch_reference.settings(torch) if torch else None,
        },
        flow=[],
        jacobians=None,
    )
    start = time.perf_counter()
    for depth, width, batch in config.shapes():
        log(f"[analysis] gradient_flow depth={depth} width={width} batch={batch}")
        row = bench_flow(depth, width, batch)
        if torch:
            _torch_flow(torch, config, row, log)
        result["flow"].append(row)
    jac_shape = (config.jacobian_depth, config.jacobian_width, config.jacobian_batch)
    log("[analysis] jacobian_norms depth={} width={} batch={}".format(*jac_shape))
    jac = bench_jacobians(*jac_shape)
    if torch:
        model, x, _ = _inputs(*jac_shape)
        torch_times = torch_reference.bench_hutchinson(torch, model, x)
        jac["torch_hutchinson_k8_s"] = statistics.median(torch_times)
        jac["torch_hutchinson_k8_s_all"] = torch_times
        jac["ratio_hutchinson_jax_over_torch"] = (
            jac["jacobian_norms_hutchinson_k8_s"] / jac["torch_hutchinson_k8_s"]
        )
        jac["ratio_hutchinson_jax_over_torch_spread"] = list(
            common.unpaired_spread(jac["jacobian_norms_hutchinson_k8_s_all"], torch_times)
        )
    result["jacobians"] = jac
    result["threads"]["load_average_at_end"] = list(os.getloadavg())
    result["wall_seconds"] = time.perf_counter() - start
    result["ratios"] = ratios(result)
    return result


def _torch_flow(torch: Any, config: Config, row: dict[str, Any], log: Callable[[str], None]) -> None:
    """Add PyTorch eager and torch.compile (unless off or deeper than `torch_compile_max_depth`:
    then `torch_compile_skipped` says why) at the row's shape to a gradient_flow row, with the
    jax/torch ratios."""
    depth, width, batch = row["depth"], row["width"], row["batch"]
    compile: bool | str = True
    if not config.torch_compile:
        compile = "off (torch_compile=False)"
    elif depth > config.torch_compile_max_depth:
        compile = (f"skipped: depth {depth} > torch_compile_max_depth {config.torch_compile_max_depth} "
                   "(an unrolled graph that deep compiles for very long)")  # fmt: skip
        log(f"[analysis] torch.compile {compile}")
    model, x, y = _inputs(depth, width, batch)
    row.update(
        torch_reference.bench_flow(torch, model, x, y, repeat=_repeat(depth, width, batch), compile=compile)
    )
    for key, name in (("ratio_jax_over_torch", "torch_gradient_flow"),
                      ("ratio_jax_over_torch_compile", "torch_compile_gradient_flow")):  # fmt: skip
        if f"{name}_s" in row:
            row[key] = row["gradient_flow_s"] / row[f"{name}_s"]
            row[f"{key}_spread"] = list(
                common.unpaired_spread(row["gradient_flow_s_all"], row[f"{name}_s_all"])
            )


def ratios(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Ratio records (`common.ratio`, with the targets in `TARGETS`) from the "flow" rows and the
    "jacobians" entry of a result."""
    records = []
    quick = bool((result.get("config") or {}).get("quick"))
    for row in result.get("flow") or []:
        shape = f"depth {row.get('depth')}, width {row.get('width')}, batch {row.get('batch')}"
        if row.get("loop"):
            shape += f", {row['loop']}"
        records += _ratios(row, FLOW_KEYS, shape, quick)
    jac = result.get("jacobians") or {}
    shape = f"depth {jac.get('depth')}, width {jac.get('width')}, batch {jac.get('batch')}"
    return records + _ratios(jac, [k for k in TARGETS if k not in FLOW_KEYS], shape, quick)


def _ratios(entry: dict[str, Any], keys: Sequence[str], shape: str, quick: bool) -> list[dict[str, Any]]:
    out = []
    for key in keys:
        if entry.get(key) is not None:
            target, op, label = TARGETS[key]
            where = f"{shape}, jitted kernel" if key in KERNEL_KEYS else shape
            out.append(common.ratio(NAME, f"{label} ({where})", entry[key], target=target, op=op,
                                    spread=entry.get(f"{key}_spread"), quick=quick))  # fmt: skip
    return out


def table(result: dict[str, Any]) -> str:
    lines = [
        "gradient_flow vs jax.value_and_grad (median s/call; ratio target <= 1.10); PyTorch eager and "
        "torch.compile (tc) of the same per-layer norms (jax/torch target <= 0.8, jax/tc <= 1.10)",
        f"{'depth':>5} {'width':>5} {'batch':>5} {'loop':>8} {'v&g s':>9} {'flow s':>9} {'ratio':>6} "
        f"{'compile v&g':>11} {'compile flow':>12} {'torch s':>9} {'jax/torch':>9} {'tc s':>9} "
        f"{'jax/tc':>6} {'compile tc':>10}",
    ]
    skipped = []
    for r in result["flow"]:
        torch_s, tc_s = r.get("torch_gradient_flow_s"), r.get("torch_compile_gradient_flow_s")
        line = (
            f"{r['depth']:>5} {r['width']:>5} {r['batch']:>5} {r['loop']:>8} {r['value_and_grad_s']:>9.4f} "
            f"{r['gradient_flow_s']:>9.4f} {r['ratio_flow_over_value_and_grad']:>6.2f} "
            f"{r['compile_value_and_grad_s']:>11.1f} {r['compile_gradient_flow_s']:>12.1f} "
            + (f"{torch_s:>9.4f} {r['ratio_jax_over_torch']:>9.2f}" if torch_s else f"{'-':>9} {'-':>9}")
        )
        if tc_s:
            line += f" {tc_s:>9.4f} {r['ratio_jax_over_torch_compile']:>6.2f} {r['torch_compile_first_call_s']:>10.1f}"
        elif torch_s:
            why = r["torch_compile_skipped"]
            line += f" {why.split()[0].rstrip(':'):>9} {'-':>6} {'-':>10}"
            skipped.append(
                f"  torch.compile {why}" + ("" if why.startswith("off") else f", width {r['width']}")
            )
        lines.append(line)
    lines += sorted(set(skipped), key=skipped.index)
    j = result["jacobians"]
    lines += [
        "",
        f"jacobian norms, depth {j['depth']}, width {j['width']}, batch {j['batch']} (median s/call)",
        f"  exact jacobian_norms          {j['jacobian_norms_exact_s']:.4f}",
        f"  N vmapped plain VJPs (floor)  {j['plain_vmapped_vjps_s']:.4f}   exact/floor = {j['ratio_exact_over_plain_vjps']:.2f}",
        f"  naive per-layer jacrev loop   {j['naive_jacrev_loop_s']:.4f}   exact/naive = {j['ratio_exact_over_naive_jacrev']:.3f}",
        f"  hutchinson k=8, all layers    {j['jacobian_norms_hutchinson_k8_s']:.4f}",
        f"  8 vmapped plain VJPs (floor)  {j['plain_vmapped_vjps_k8_s']:.4f}   hutchinson/floor = "
        f"{j['jacobian_norms_hutchinson_k8_s'] / j['plain_vmapped_vjps_k8_s']:.2f}",
        f"  plain forward+backward        {j['forward_backward_s']:.4f}   hutchinson/fwd+bwd = "
        f"{j['ratio_hutchinson_over_forward_backward']:.2f} (target <= 2)",
    ]
    if "torch_hutchinson_k8_s" in j:
        lines.append(
            f"  torch eager hutchinson k=8    {j['torch_hutchinson_k8_s']:.4f}   jax/torch = "
            f"{j['ratio_hutchinson_jax_over_torch']:.2f} (target <= 0.6)"
        )
    env, thr = result["environment"], result["threads"]
    lines += [
        "",
        f"device {env['device_kind']}, jax {env['jax']}, flax {env['flax']}, torch "
        f"{result['torch'] or 'not installed (pip install -e .[bench]: the jax/torch rows)'}; "
        f"XLA_FLAGS={thr['XLA_FLAGS']!r}, torch threads {thr['torch_num_threads']}, torch device "
        f"{(result.get('precision') or {}).get('torch', {}) and result['precision']['torch']['device']}; "
        f"matmul precision {PRECISION} (torch TF32 off); "
        f"load average {thr['load_average_at_start'][0]:.1f} -> {thr['load_average_at_end'][0]:.1f} on {thr['cpu_count']} cores",
    ]
    ratio_table = report.format_table(common.ratio_rows(result["ratios"]), floatfmt=".3g")
    return "\n".join(lines) + "\n\n" + ratio_table


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse flags, run, write results/benchmarks/analysis.json and print the tables."""
    return common.main(Config, run, argv, show=table)


if __name__ == "__main__":
    main()
