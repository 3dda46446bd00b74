"""PyTorch reference for benchmarks.analysis: per-layer gradient norms of jaxvg's tanh MLP in PyTorch,
eager and `torch.compile`, on the device jax uses.

Not a suite itself (benchmarks.analysis calls it). torch is optional: it is never a jaxvg
dependency, and `load` returns None when it does not import.

What both PyTorch versions compute, for the same weights as a jaxvg `MLP` (tanh blocks
h_l = tanh(h_{l-1} W_l + b_l), a linear head, mse loss = mean of squared errors):
  - act (L+1,): log10 ||dloss/dh_l||_F over the batch, l = 0..L (jaxvg: `log10_act_grad`);
  - par (L,): log10 of the Frobenius norm of block l's parameter gradients, kernel and bias
    together (jaxvg: `log10_param_grad`).
Eager retains h_0..h_L and asks `torch.autograd.grad` for them: gradients w.r.t. tensors in the
graph ("hooks"). A compiled function has no such tensors (autograd.grad answers that they were not
used in the graph), so the compiled forward adds a zero probe eps_l (batch, width) to each h_l,
h_l = tanh(h_{l-1} W_l + b_l) + eps_l, and the gradients w.r.t. eps_l are dloss/dh_l. The norms
are a second compiled function. This plain float32 textbook norm is what the comparison measures;
it underflows where jaxvg's renormalised chain does not (deep sigmoid nets), not in these tanh nets.

Device and precision: CUDA when jax's default backend is "gpu" and `torch.cuda.is_available()`
(each timed call ends with `torch.cuda.synchronize()`), else CPU. TF32 is off
(`torch.backends.cuda.matmul.allow_tf32 = False`, `torch.backends.cudnn.allow_tf32 = False`,
`torch.set_float32_matmul_precision("highest")`); `settings` records all of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from benchmarks import common


def load(threads: int | None = 1) -> Any:
    """`torch` with TF32 off and `threads` intra-op threads (None: torch's default), or None when
    torch does not import."""
    try:
        import torch  # noqa: PLC0415  (optional; never a jaxvg dependency)
    except ImportError:
        return None
    if threads is not None:
        torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return torch


def device(torch: Any) -> str:
    """ "cuda" when jax runs on a GPU and torch sees one, else "cpu" (the same device for both)."""
    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def settings(torch: Any) -> dict[str, Any]:
    """The torch settings a comparison depends on: version, device, threads, TF32 flags, matmul
    precision, inductor's FX graph cache (on: a compile may reuse an earlier run's work) and its
    compile worker threads."""
    try:
        import torch._inductor.config as inductor_config  # noqa: PLC0415

        fx_cache = getattr(inductor_config, "fx_graph_cache", None)
        compile_threads = getattr(inductor_config, "compile_threads", None)
    except ImportError:  # pragma: no cover - very old torch
        fx_cache = compile_threads = None
    return {
        "version": torch.__version__,
        "device": device(torch),
        "num_threads": torch.get_num_threads(),
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "inductor_fx_graph_cache": fx_cache,
        "inductor_compile_threads": compile_threads,
    }


def _tensor(torch: Any, value: Any, dev: str, grad: bool = False) -> Any:
    t = torch.from_numpy(np.asarray(value, dtype=np.float32).copy()).to(dev)
    return t.requires_grad_(True) if grad else t


def weights(torch: Any, model: Any, dev: str) -> tuple[list[tuple[Any, Any]], tuple[Any, Any]]:
    """([(W_l, b_l)] of the blocks, (W, b) of the head) of a jaxvg tanh `MLP` (kernels (fan_in,
    fan_out), as jax stores them), as float32 tensors on `dev` that require their gradients."""
    if model.head is None:
        raise ValueError("`model` must have a linear head (out_features not None), got head=None.")
    layers = [(_tensor(torch, b.linear.kernel[...], dev, True), _tensor(torch, b.linear.bias[...], dev, True))
              for b in model.blocks]  # fmt: skip
    head = (
        _tensor(torch, model.head.kernel[...], dev, True),
        _tensor(torch, model.head.bias[...], dev, True),
    )
    return layers, head


def _log10_norms(torch: Any, act_grads: list[Any], param_grads: list[Any]) -> tuple[Any, Any]:
    act = torch.log10(torch.stack([g.norm() for g in act_grads]))
    par = torch.log10(torch.stack([torch.sqrt(gw.square().sum() + gb.square().sum())
                                   for gw, gb in zip(param_grads[::2], param_grads[1::2], strict=True)]))  # fmt: skip
    return act, par


def eager_flow(torch: Any, model: Any, x: Any, y: Any) -> Callable[[], tuple[Any, Any]]:
    """A no-argument PyTorch eager measurement of `model` (a jaxvg tanh `MLP`) on (x, y) (arrays of
    shapes (batch, width) and (batch, out)): each call returns (act (L+1,), par (L,)) log10 norms
    as tensors on the device (see the module docstring)."""
    dev = device(torch)
    layers, head = weights(torch, model, dev)
    params = [p for wb in layers for p in wb]
    xt, yt = _tensor(torch, x, dev), _tensor(torch, y, dev)

    def flow():
        hs = [xt.clone().requires_grad_(True)]
        for w, b in layers:
            hs.append(torch.tanh(hs[-1] @ w + b))
        loss = torch.mean((hs[-1] @ head[0] + head[1] - yt) ** 2)
        grads = torch.autograd.grad(loss, hs + params)
        return _log10_norms(torch, list(grads[: len(hs)]), list(grads[len(hs) :]))

    return flow


def compiled_flow(torch: Any, model: Any, x: Any, y: Any) -> Callable[[], tuple[Any, Any]]:
    """`eager_flow` through `torch.compile` (inductor): the forward with zero probes eps_l and the
    norms are compiled, `torch.autograd.grad` runs the compiled backward. The first call compiles
    (time it apart); dynamo's caches are reset first, so each model compiles on its own."""
    dev = device(torch)
    layers, head = weights(torch, model, dev)
    params = [p for wb in layers for p in wb]
    xt, yt = _tensor(torch, x, dev), _tensor(torch, y, dev)
    eps = [torch.zeros(xt.shape, device=dev, requires_grad=True) for _ in range(len(layers) + 1)]

    def loss_fn(xt, yt, params, eps, head):
        h = xt + eps[0]
        for i in range(len(params) // 2):
            h = torch.tanh(h @ params[2 * i] + params[2 * i + 1]) + eps[i + 1]
        return torch.mean((h @ head[0] + head[1] - yt) ** 2)

    torch._dynamo.reset()
    loss_c = torch.compile(loss_fn, fullgraph=True, dynamic=False)
    norms_c = torch.compile(lambda a, p: _log10_norms(torch, a, p), fullgraph=True, dynamic=False)

    def flow():
        grads = torch.autograd.grad(loss_c(xt, yt, params, eps, list(head)), eps + params)
        return norms_c(list(grads[: len(eps)]), list(grads[len(eps) :]))

    return flow


def blocking(torch: Any, fn: Callable[[], Any]) -> Callable[[], Any]:
    """`fn` that waits for the device (`torch.cuda.synchronize()` on CUDA) before returning."""
    if device(torch) != "cuda":
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


def bench_flow(
    torch: Any, model: Any, x: Any, y: Any, *, repeat: int, compile: bool | str = True
) -> dict[str, Any]:
    """Seconds per call of the eager and (when `compile` is True) the compiled measurement, timed
    in interleaved rounds after warm-up calls; the compiled one's first call (trace + compile +
    one run) is `torch_compile_first_call_s`. `compile` a string: the compiled column is skipped
    for that reason (recorded as `torch_compile_skipped`)."""
    fns = {"torch_gradient_flow": blocking(torch, eager_flow(torch, model, x, y))}
    out: dict[str, Any] = {"torch_compile_skipped": None if compile is True else (compile or "off")}
    if compile is True:
        fns["torch_compile_gradient_flow"] = blocking(torch, compiled_flow(torch, model, x, y))
        out["torch_compile_first_call_s"] = common.timed(fns["torch_compile_gradient_flow"])
    for fn in fns.values():
        for _ in range(2):
            fn()
    runs = {name: (lambda fn=fn: common.timed(fn)) for name, fn in fns.items()}
    for name, times in common.interleaved_seconds(runs, repeat).items():
        out[f"{name}_s"] = float(np.median(times))
        out[f"{name}_s_all"] = times
    return out


def bench_hutchinson(torch: Any, model: Any, x: Any, k: int = 8, repeat: int = 10) -> list[float]:
    """Seconds of each of `repeat` calls of PyTorch eager Hutchinson (k Rademacher probes, every
    layer's ||dh_L/dh_l||_F per example) on `model`'s blocks (head unused)."""
    dev = device(torch)
    layers, _ = weights(torch, model, dev)
    xt = _tensor(torch, x, dev)
    batch, width = xt.shape
    probes = torch.randint(0, 2, (k, batch, width), device=dev).float() * 2 - 1

    def hutchinson():
        hs = [xt.clone().requires_grad_(True)]
        for w, b in layers:
            hs.append(torch.tanh(hs[-1] @ w + b))
        sq = torch.zeros(len(hs), batch, device=dev)
        for u in probes:
            grads = torch.autograd.grad(hs[-1], hs[:-1], grad_outputs=u, retain_graph=True)
            sq[:-1] += torch.stack([g.square().sum(-1) for g in grads])
        sq[-1] = width * k
        return 0.5 * torch.log10(sq / k)

    return common.all_seconds(blocking(torch, hutchinson), repeat=repeat, warmup=2)
