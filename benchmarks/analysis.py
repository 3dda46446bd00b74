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
intra_op_parallelism_threads=1", set here unless XLA_FLAGS is already set, and
torch.set_num_threads(1)): on a shared 2-core machine multi-threaded timings collapse when another
process takes a core.

Run:    python -m benchmarks.analysis            (full sizes; several minutes on one CPU core)
        python -m benchmarks.analysis --quick    (tiny sizes, a smoke run)
Writes: results/benchmarks/analysis.json (device, versions, thread settings, shapes, timings) and
prints a table.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import jaxvg  # noqa: E402
from benchmarks import _timing  # noqa: E402
from jaxvg.measure import analysis  # noqa: E402
from jaxvg.nn import losses  # noqa: E402

FLOW_SHAPES = ((20, 128), (20, 512), (100, 128), (100, 512))  # (depth, width)
FLOW_BATCH = 256
JAC_SHAPE = (20, 128, 32)  # depth, width, batch
QUICK_FLOW_SHAPES = ((4, 16), (8, 32))
QUICK_FLOW_BATCH = 8
QUICK_JAC_SHAPE = (4, 16, 4)
OUT_FEATURES = 10


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
        return analysis.gradient_flow_from_split(graphdef, (p, rest), x, y, loss="mse")

    timed = _timing.interleaved_seconds(
        {"value_and_grad": (value_and_grad, (params, x, y)), "flow": (flow, (params, x, y))}, repeat=repeat
    )
    c_base, t_base = timed["value_and_grad"]["compile_s"], timed["value_and_grad"]["seconds"]
    c_flow, t_flow = timed["flow"]["compile_s"], timed["flow"]["seconds"]
    t_public = _timing.median_seconds(
        lambda: jax.block_until_ready(analysis.gradient_flow(model, x, y)),
        repeat=max(3, repeat // 2),
        warmup=1,
    )
    return {
        "depth": depth,
        "width": width,
        "batch": batch,
        "loop": "scan" if depth >= analysis._SCAN_MIN_RUN else "unrolled",
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
        return analysis.jacobian_norms_from_split(graphdef, state, x, method="exact")

    def hutchinson(state, x):
        return analysis.jacobian_norms_from_split(
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

    timed = _timing.interleaved_seconds(
        {
            "jacobian_norms_exact": (exact, (state, x)),
            "plain_vmapped_vjps": (plain_vjps, (state, x)),
            "jacobian_norms_hutchinson_k8": (hutchinson, (state, x)),
            "plain_vmapped_vjps_k8": (plain_vjps_k8, (state, x)),
            "forward_backward": (forward_backward, (params, x, y)),
        },
        repeat=repeat,
    )
    timed.update(_timing.interleaved_seconds({"naive_jacrev_loop": (naive_jacrev, (state, x))}, repeat=3))
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


def bench_torch_flow(torch, depth: int, width: int, batch: int) -> dict[str, Any]:
    model = _mlp(depth, width, OUT_FEATURES)
    layers, head = _torch_layers(model, torch)
    params = [p for wb in layers for p in wb]
    x = torch.from_numpy(np.asarray(jax.random.normal(jax.random.key(1), (batch, width))).copy())
    y = torch.from_numpy(np.asarray(jax.random.normal(jax.random.key(2), (batch, OUT_FEATURES))).copy())

    def flow():
        h = x.clone().requires_grad_(True)
        hs = [h]
        for w, b in layers:
            h = torch.tanh(h @ w + b)
            hs.append(h)
        loss = torch.mean((h @ head[0] + head[1] - y) ** 2)
        grads = torch.autograd.grad(loss, hs + params)
        act = torch.log10(torch.stack([g.norm() for g in grads[: depth + 1]]))
        par = torch.log10(torch.stack([torch.sqrt(gw.square().sum() + gb.square().sum())
                                       for gw, gb in zip(grads[depth + 1 :: 2], grads[depth + 2 :: 2], strict=True)]))  # fmt: skip
        return act.detach().numpy(), par.detach().numpy()

    t = _timing.median_seconds(flow, repeat=_repeat(depth, width, batch), warmup=2)
    return {"depth": depth, "width": width, "batch": batch, "torch_gradient_flow_s": t}


def bench_torch_hutchinson(torch, depth: int, width: int, batch: int, k: int = 8) -> float:
    model = _mlp(depth, width, OUT_FEATURES)
    layers, _ = _torch_layers(model, torch)
    x = torch.from_numpy(np.asarray(jax.random.normal(jax.random.key(1), (batch, width))).copy())
    probes = torch.randint(0, 2, (k, batch, width)).float() * 2 - 1

    def hutchinson():
        h = x.clone().requires_grad_(True)
        hs = [h]
        for w, b in layers:
            h = torch.tanh(h @ w + b)
            hs.append(h)
        sq = torch.zeros(depth + 1, batch)
        for u in probes:
            grads = torch.autograd.grad(hs[-1], hs[:-1], grad_outputs=u, retain_graph=True)
            sq[:-1] += torch.stack([g.square().sum(-1) for g in grads])
        sq[-1] = width * k
        return (0.5 * torch.log10(sq / k)).detach().numpy()

    return _timing.median_seconds(hutchinson, repeat=10, warmup=2)


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def run(quick: bool = False, torch_compare: bool = True) -> dict[str, Any]:
    flow_shapes = QUICK_FLOW_SHAPES if quick else FLOW_SHAPES
    flow_batch = QUICK_FLOW_BATCH if quick else FLOW_BATCH
    jac_shape = QUICK_JAC_SHAPE if quick else JAC_SHAPE
    torch = None
    if torch_compare:
        try:
            import torch  # noqa: F401  (optional; never a jaxvg dependency)

            torch.set_num_threads(1)
        except ImportError:
            torch = None
    result: dict[str, Any] = {
        "environment": _timing.environment(),
        "threads": {
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
            "torch_num_threads": torch.get_num_threads() if torch else None,
            "cpu_count": os.cpu_count(),
            "load_average_at_start": list(os.getloadavg()),
        },
        "torch": torch.__version__ if torch else None,
        "quick": quick,
        "flow": [],
        "jacobians": None,
    }
    for depth, width in flow_shapes:
        print(f"gradient_flow depth={depth} width={width} batch={flow_batch} ...", flush=True)
        row = bench_flow(depth, width, flow_batch)
        if torch:
            row.update(bench_torch_flow(torch, depth, width, flow_batch))
            row["ratio_jax_over_torch"] = row["gradient_flow_s"] / row["torch_gradient_flow_s"]
        result["flow"].append(row)
    print(f"jacobian_norms depth={jac_shape[0]} width={jac_shape[1]} batch={jac_shape[2]} ...", flush=True)
    jac = bench_jacobians(*jac_shape)
    if torch:
        jac["torch_hutchinson_k8_s"] = bench_torch_hutchinson(torch, *jac_shape)
        jac["ratio_hutchinson_jax_over_torch"] = (
            jac["jacobian_norms_hutchinson_k8_s"] / jac["torch_hutchinson_k8_s"]
        )
    result["jacobians"] = jac
    result["threads"]["load_average_at_end"] = list(os.getloadavg())
    return result


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
        f"device {env['device']}, jax {env['jax']}, flax {env['flax']}, torch {result['torch']}; "
        f"XLA_FLAGS={thr['XLA_FLAGS']!r}, torch threads {thr['torch_num_threads']}; "
        f"load average {thr['load_average_at_start'][0]:.1f} -> {thr['load_average_at_end'][0]:.1f} on {thr['cpu_count']} cores",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--out", default="results/benchmarks/analysis.json", help="JSON output path")
    args = parser.parse_args(argv)
    start = time.time()
    result = run(quick=args.quick, torch_compare=not args.no_torch)
    result["wall_seconds"] = time.time() - start
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(table(result))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
