"""Cost of jaxvg's exact, renormalised per-layer measurements against plain autodiff (and PyTorch).

Ratios are measured in one run on the current device (jitted code only, compile timed apart,
medians over repeats):
  - gradient_flow / jitted jax.value_and_grad of the same loss (parameter gradients), tanh MLPs at
    depth 20 and 100, width 128 and 512, batch 256. Target <= 1.10.
  - exact jacobian_norms / N vmapped plain VJPs (its floor), and against a naive per-layer
    jax.jacrev loop (depth 20, width 128, batch 32); Hutchinson (k = 8, all layers) / a plain
    forward+backward at the same batch. Target <= 2.
  - when torch imports: the same per-layer gradient measurement in PyTorch eager (retained
    activations + torch.autograd.grad) on the same shapes, reported as jax/torch. Targets <= 0.8
    (gradient flow) and <= 0.6 (Hutchinson).

Threads: both frameworks use ONE thread (XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1", set when this runs as `python -m benchmarks.analysis` unless
XLA_FLAGS is already set, and torch.set_num_threads(1)): on a shared 2-core machine multi-threaded
timings collapse when another process takes a core.

Run:    python -m benchmarks.analysis            (full sizes)
        python -m benchmarks.analysis --quick    (tiny sizes, a smoke run)
        python -m benchmarks.analysis --no-torch --depths 20 --widths 256
Writes: results/benchmarks/analysis.json (device, versions, thread settings, shapes, timings,
ratios) and prints a table.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # one thread, set before jax starts (not when imported, e.g. by the tests)
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import dataclasses  # noqa: E402
import itertools  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from typing import Any, ClassVar  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import jaxvg  # noqa: E402
from benchmarks import common  # noqa: E402
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
    "ratio_exact_over_plain_vjps": (None, None, "exact jacobian_norms / N plain VJPs"),
    "ratio_exact_over_naive_jacrev": (None, None, "exact jacobian_norms / naive jacrev loop"),
    "ratio_hutchinson_over_forward_backward": (2.0, "<=", "hutchinson k=8 / forward+backward"),
    "ratio_hutchinson_jax_over_torch": (0.6, "<=", "hutchinson jax / torch eager"),
}
FLOW_KEYS = ("ratio_flow_over_value_and_grad", "ratio_jax_over_torch")


@dataclasses.dataclass(frozen=True)
class Config:
    depths: tuple[int, ...] = (20, 100)  # gradient_flow: depths (every depth x width is timed)
    widths: tuple[int, ...] = (128, 512)  # gradient_flow: widths
    batch: int = 256  # gradient_flow: examples per call
    jacobian_depth: int = 20  # jacobian norms: blocks
    jacobian_width: int = 128  # jacobian norms: units per block
    jacobian_batch: int = 32  # jacobian norms: examples per call
    torch: bool = True  # also time PyTorch eager (one thread) when torch imports
    out_dir: str = "results/benchmarks"  # where NAME.json goes
    quick: bool = False  # tiny sizes: a smoke run for tests/CI (its numbers mean nothing)

    QUICK: ClassVar[dict[str, Any]] = dict(
        depths=(4, 8), widths=(16,), batch=8, jacobian_depth=4, jacobian_width=16, jacobian_batch=4
    )

    def __post_init__(self):
        experiment.apply_quick(self)
        for name in ("depths", "widths"):
            if not getattr(self, name):
                raise ValueError(
                    f"`{name}` must be a non-empty tuple of integers >= 1, got {getattr(self, name)!r}."
                )
            for v in getattr(self, name):
                checks.positive_int(name, v)
        for name in ("batch", "jacobian_depth", "jacobian_width", "jacobian_batch"):
            checks.positive_int(name, getattr(self, name))


def _mlp(depth: int, width: int, out: int | None, seed: int = 0) -> jaxvg.MLP:
    return jaxvg.MLP(width, width, depth, out, activation="tanh", rngs=nnx.Rngs(seed))


def _repeat(depth: int, width: int, batch: int) -> int:
    flops = 6 * depth * width * width * batch
    return 7 if flops > 2e10 else 15 if flops > 2e9 else 31


# ------------------------------------------------------------------------------------------------
# JAX
# ------------------------------------------------------------------------------------------------


def bench_flow(depth: int, width: int, batch: int) -> dict[str, Any]:
    model = _mlp(depth, width, OUT_FEATURES)
    x = jax.random.normal(jax.random.key(1), (batch, width))
    y = jax.random.normal(jax.random.key(2), (batch, OUT_FEATURES))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    repeat = _repeat(depth, width, batch)

    def value_and_grad(p, x, y):
        return jax.value_and_grad(lambda p: losses.mse(nnx.merge(graphdef, p, rest, copy=True)(x), y))(p)

    def flow(p, x, y):
        return jaxvg.measure.gradient_flow_from_split(graphdef, (p, rest), x, y, loss="mse")

    timed = common.interleaved_jitted(
        {"value_and_grad": (value_and_grad, (params, x, y)), "flow": (flow, (params, x, y))}, repeat
    )
    c_base, t_base = timed["value_and_grad"]["compile_s"], timed["value_and_grad"]["seconds"]
    c_flow, t_flow = timed["flow"]["compile_s"], timed["flow"]["seconds"]
    t_public = common.median_seconds(
        lambda: jax.block_until_ready(jaxvg.gradient_flow(model, x, y)),
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
        "ratio_flow_over_value_and_grad": t_flow / t_base,
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
    model = _mlp(depth, width, OUT_FEATURES)
    x = jax.random.normal(jax.random.key(1), (batch, width))
    y = jax.random.normal(jax.random.key(2), (batch, OUT_FEATURES))
    graphdef, state, tail = _blocks_fn(model)
    repeat = 31

    def exact(state, x):
        return jaxvg.measure.jacobian_norms_from_split(graphdef, state, x, method="exact")

    def hutchinson(state, x):
        return jaxvg.measure.jacobian_norms_from_split(
            graphdef, state, x, method="hutchinson", num_probes=8, key=jax.random.key(0)
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
            "plain_vmapped_vjps": (plain_vjps, (state, x)),
            "jacobian_norms_hutchinson_k8": (hutchinson, (state, x)),
            "plain_vmapped_vjps_k8": (plain_vjps_k8, (state, x)),
            "forward_backward": (forward_backward, (params, x, y)),
        },
        repeat,
    )
    timed.update(common.interleaved_jitted({"naive_jacrev_loop": (naive_jacrev, (state, x))}, 3))
    res = {"depth": depth, "width": width, "batch": batch}
    for name, t in timed.items():
        res[f"{name}_s"] = t["seconds"]
        res[f"compile_{name}_s"] = t["compile_s"]
    res["ratio_exact_over_plain_vjps"] = res["jacobian_norms_exact_s"] / res["plain_vmapped_vjps_s"]
    res["ratio_exact_over_naive_jacrev"] = res["jacobian_norms_exact_s"] / res["naive_jacrev_loop_s"]
    res["ratio_hutchinson_over_forward_backward"] = (
        res["jacobian_norms_hutchinson_k8_s"] / res["forward_backward_s"]
    )
    return res


# ------------------------------------------------------------------------------------------------
# PyTorch eager (optional)
# ------------------------------------------------------------------------------------------------


def _torch_layers(model, torch):
    def t(v):
        return torch.from_numpy(np.asarray(v, dtype=np.float32).copy())

    layers = [(t(b.linear.kernel[...]), t(b.linear.bias[...])) for b in model.blocks]
    head = (t(model.head.kernel[...]), t(model.head.bias[...])) if model.head is not None else None
    for w, b in layers + ([head] if head else []):
        w.requires_grad_(True)
        b.requires_grad_(True)
    return layers, head


def _torch_forward(torch, layers, x):
    """[h_0, ..., h_L] of the tanh blocks in PyTorch, h_0 = x requiring its gradient."""
    hs = [x.clone().requires_grad_(True)]
    for w, b in layers:
        hs.append(torch.tanh(hs[-1] @ w + b))
    return hs


def bench_torch_flow(torch, depth: int, width: int, batch: int) -> dict[str, Any]:
    model = _mlp(depth, width, OUT_FEATURES)
    layers, head = _torch_layers(model, torch)
    params = [p for wb in layers for p in wb]
    x = torch.from_numpy(np.asarray(jax.random.normal(jax.random.key(1), (batch, width))).copy())
    y = torch.from_numpy(np.asarray(jax.random.normal(jax.random.key(2), (batch, OUT_FEATURES))).copy())

    def flow():
        hs = _torch_forward(torch, layers, x)
        loss = torch.mean((hs[-1] @ head[0] + head[1] - y) ** 2)
        grads = torch.autograd.grad(loss, hs + params)
        act = torch.log10(torch.stack([g.norm() for g in grads[: depth + 1]]))
        par = torch.log10(torch.stack([torch.sqrt(gw.square().sum() + gb.square().sum())
                                       for gw, gb in zip(grads[depth + 1 :: 2], grads[depth + 2 :: 2], strict=True)]))  # fmt: skip
        return act.detach().numpy(), par.detach().numpy()

    t = common.median_seconds(flow, repeat=_repeat(depth, width, batch), warmup=2)
    return {"depth": depth, "width": width, "batch": batch, "torch_gradient_flow_s": t}


def bench_torch_hutchinson(torch, depth: int, width: int, batch: int, k: int = 8) -> float:
    model = _mlp(depth, width, OUT_FEATURES)
    layers, _ = _torch_layers(model, torch)
    x = torch.from_numpy(np.asarray(jax.random.normal(jax.random.key(1), (batch, width))).copy())
    probes = torch.randint(0, 2, (k, batch, width)).float() * 2 - 1

    def hutchinson():
        hs = _torch_forward(torch, layers, x)
        sq = torch.zeros(depth + 1, batch)
        for u in probes:
            grads = torch.autograd.grad(hs[-1], hs[:-1], grad_outputs=u, retain_graph=True)
            sq[:-1] += torch.stack([g.square().sum(-1) for g in grads])
        sq[-1] = width * k
        return (0.5 * torch.log10(sq / k)).detach().numpy()

    return common.median_seconds(hutchinson, repeat=10, warmup=2)


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def run(config: Config, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time gradient_flow and the Jacobian norms against their floors (and PyTorch); no I/O.

    Returns:
      A JSON-ready dict: "suite", "config", "environment", "threads", "torch" (version or None),
      "flow" (one row per depth x width), "jacobians", "ratios" (records with target, op, pass).
    """
    log = log or (lambda m: None)
    torch = None
    if config.torch:
        try:
            import torch  # noqa: F401  (optional; never a jaxvg dependency)

            torch.set_num_threads(1)
        except ImportError:
            torch = None
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
        flow=[],
        jacobians=None,
    )
    start = time.perf_counter()
    for depth, width in itertools.product(config.depths, config.widths):
        log(f"[analysis] gradient_flow depth={depth} width={width} batch={config.batch}")
        row = bench_flow(depth, width, config.batch)
        if torch:
            row.update(bench_torch_flow(torch, depth, width, config.batch))
            row["ratio_jax_over_torch"] = row["gradient_flow_s"] / row["torch_gradient_flow_s"]
        result["flow"].append(row)
    jac_shape = (config.jacobian_depth, config.jacobian_width, config.jacobian_batch)
    log("[analysis] jacobian_norms depth={} width={} batch={}".format(*jac_shape))
    jac = bench_jacobians(*jac_shape)
    if torch:
        jac["torch_hutchinson_k8_s"] = bench_torch_hutchinson(torch, *jac_shape)
        jac["ratio_hutchinson_jax_over_torch"] = (
            jac["jacobian_norms_hutchinson_k8_s"] / jac["torch_hutchinson_k8_s"]
        )
    result["jacobians"] = jac
    result["threads"]["load_average_at_end"] = list(os.getloadavg())
    result["wall_seconds"] = time.perf_counter() - start
    result["ratios"] = ratios(result)
    return result


def ratios(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Ratio records (`common.ratio`, with the targets in `TARGETS`) from the "flow" rows and the
    "jacobians" entry of a result."""
    records = []
    for row in result.get("flow") or []:
        shape = f"depth {row.get('depth')}, width {row.get('width')}, batch {row.get('batch')}"
        if row.get("loop"):
            shape += f", {row['loop']}"
        records += _ratios(row, FLOW_KEYS, shape)
    jac = result.get("jacobians") or {}
    shape = f"depth {jac.get('depth')}, width {jac.get('width')}, batch {jac.get('batch')}"
    return records + _ratios(jac, [k for k in TARGETS if k not in FLOW_KEYS], shape)


def _ratios(entry: dict[str, Any], keys: Sequence[str], shape: str) -> list[dict[str, Any]]:
    out = []
    for key in keys:
        if entry.get(key) is not None:
            target, op, label = TARGETS[key]
            out.append(common.ratio(NAME, f"{label} ({shape})", entry[key], target=target, op=op))
    return out


def table(result: dict[str, Any]) -> str:
    lines = [
        "gradient_flow vs jax.value_and_grad (median s/call; ratio target <= 1.10; jax/torch target <= 0.8)",
        f"{'depth':>5} {'width':>5} {'batch':>5} {'loop':>8} {'v&g s':>9} {'flow s':>9} {'ratio':>6} "
        f"{'compile v&g':>11} {'compile flow':>12} {'torch s':>9} {'jax/torch':>9}",
    ]
    for r in result["flow"]:
        torch_s = r.get("torch_gradient_flow_s")
        lines.append(
            f"{r['depth']:>5} {r['width']:>5} {r['batch']:>5} {r['loop']:>8} {r['value_and_grad_s']:>9.4f} "
            f"{r['gradient_flow_s']:>9.4f} {r['ratio_flow_over_value_and_grad']:>6.2f} "
            f"{r['compile_value_and_grad_s']:>11.1f} {r['compile_gradient_flow_s']:>12.1f} "
            + (f"{torch_s:>9.4f} {r['ratio_jax_over_torch']:>9.2f}" if torch_s else f"{'-':>9} {'-':>9}")
        )
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
        f"device {env['device_kind']}, jax {env['jax']}, flax {env['flax']}, torch {result['torch']}; "
        f"XLA_FLAGS={thr['XLA_FLAGS']!r}, torch threads {thr['torch_num_threads']}; "
        f"load average {thr['load_average_at_start'][0]:.1f} -> {thr['load_average_at_end'][0]:.1f} on {thr['cpu_count']} cores",
    ]
    ratio_table = report.format_table(common.ratio_rows(result["ratios"]), floatfmt=".3g")
    return "\n".join(lines) + "\n\n" + ratio_table


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse flags, run, write results/benchmarks/analysis.json and print the tables."""
    return common.main(Config, run, argv, show=table)


if __name__ == "__main__":
    main()
