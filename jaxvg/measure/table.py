"""`flow_table`: a `GradientFlow` as a text table, one line per layer, in decades.

What the experiments print and write into their summaries. A flow with a leading axis (seeds of a
vmapped measure, or `fit(seeds=...)`) prints "mean ± std" over it and says so; with more leading
axes (`history["monitor"]` of a fit with seeds is (seeds, times, ...)) pick them with `index=`.
Columns a block cannot fill print "—", with a footnote that names the hook that fills them.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxvg.measure.flow import GradientFlow

__all__ = ["flow_table"]

DASH = "—"

_FOOTNOTES = {
    "param": f"{DASH} in log10|dL/dW|: the block has no parameters.",
    "kernel": (
        f"{DASH} in log10|dL/dK|: the block names no kernel; give it `kernel_path` (attribute names to its "
        "kernel nnx.Param) or an nnx.Linear at `linear` (jaxvg.nn.contracts.kernel_path)."
    ),
    "dphi": (
        f"{DASH} in log10 rms phi' and dead frac: the block does not expose its activation; give it "
        "`activation` (a jaxvg.nn.activations name or Activation) and `preactivation(h)` returning the "
        "activation's argument, or `activation` and an nnx.Linear at `linear` "
        "(jaxvg.nn.contracts.preactivation_fn)."
    ),
}


def _check_index(index: Any, lead: int, shape: tuple[int, ...]) -> tuple:
    items = index if isinstance(index, tuple) else (index,)
    ok = all(
        isinstance(i, slice) or (isinstance(i, int | np.integer) and not isinstance(i, bool)) for i in items
    )
    if not ok or len(items) > lead:
        raise ValueError(
            f"`index` must be an int, a slice or a tuple of them for the {lead} leading axes of `flow` "
            f"(leading shape {shape}), e.g. index=(seed, t); got {index!r}."
        )
    for i, n in zip(items, shape, strict=False):
        if not isinstance(i, slice) and not -n <= i < n:
            raise ValueError(f"`index` {index!r} is out of range for the leading shape {shape} of `flow`.")
    return items


def flow_table(flow: GradientFlow, index: Any = None) -> str:
    """A readable per-layer table of a `GradientFlow`, in decades.

    Columns: layer l, log10 ||delta_l||, and for block l (l >= 1): log10 gain, log10 param grad,
    log10 kernel grad, log10 RMS phi', dead fraction. "—" marks a column the block cannot fill (no
    parameters, no kernel, no exposed activation), explained by a footnote that names the hook
    (`jaxvg.nn.contracts`); "nan" marks an undefined value (e.g. a forward pass that went non-finite,
    also footnoted with `forward_nonfinite_block`).

    Leading axes: `index` picks entries of them first (`a[index]` for every field, e.g.
    `flow_table(history["monitor"], index=(seed, t))`, or index=(slice(None), t) for all seeds at
    monitor time t). What remains may have at most one leading axis; its cells are then "mean ± std"
    over it (NaN-aware) and the last line says so. A flow with two or more leading axes left is
    refused: their mean would mix e.g. seeds and training times.

    Args:
      flow: a `GradientFlow`, optionally with leading axes.
      index: None, an int, a slice or a tuple of them for the leading axes.
    Returns:
      The table as a string (one header line, one line per layer, a summary line with the loss and
      `vanishing_decades`, then footnotes if any).
    Raises:
      TypeError: `flow` is not a `GradientFlow`.
      ValueError: more than one leading axis left after `index` (the message shows the slicing); an
        invalid `index`.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxvg
      >>> from jaxvg import measure
      >>> flow = measure.gradient_flow(jaxvg.MLP(2, 4, 2, 1, rngs=nnx.Rngs(0)), jnp.ones((3, 2)), jnp.zeros((3, 1)))
      >>> print(measure.flow_table(flow).splitlines()[0])
      l  log10|dL/dh_l|  log10 gain  log10|dL/dW|  log10|dL/dK|  log10 rms phi'  dead frac
    """
    if not isinstance(flow, GradientFlow):
        raise TypeError(f"`flow` must be a GradientFlow, got {type(flow).__name__}.")
    lead = np.ndim(flow.log10_act_grad) - 1
    lead_shape = tuple(np.shape(flow.log10_act_grad)[:lead])
    if index is not None:
        items = _check_index(index, lead, lead_shape)
        flow = jax.tree.map(lambda a: np.asarray(a)[items], flow)
    f = jax.tree.map(lambda v: np.asarray(v, dtype=np.float64), flow)
    lead = f.log10_act_grad.ndim - 1
    if lead > 1:
        shape = f.log10_act_grad.shape[:lead]
        raise ValueError(
            f"`flow` has {lead} leading axes (shape {shape}, e.g. seeds and monitor times of "
            "`history['monitor']`): flow_table averages over at most one. Pick the others first: "
            "flow_table(flow, index=(s, t)) for one net at one time, flow_table(flow, index=(slice(None), t)) "
            "for the mean over the first axis at t, or slice yourself: jax.tree.map(lambda a: a[s, t], flow)."
        )

    def value(a):
        if lead == 0:
            return f"{float(a):.3f}" if np.isfinite(a) or np.isinf(a) else "nan"
        a = np.reshape(a, (-1,))
        if np.all(np.isnan(a)):
            return "nan"
        with np.errstate(invalid="ignore"):
            return f"{np.nanmean(a):.3f}±{np.nanstd(a):.3f}"

    depth = f.log10_gain.shape[-1]
    first_bad = f.forward_nonfinite_block
    used: set[str] = set()

    def finite_forward(i):  # block i ran on finite values (for every entry of the leading axis)
        if first_bad is None:
            return True
        fb = np.reshape(first_bad, (-1,))
        return bool(np.all((fb < 0) | (i < fb)))

    def missing(arr, i, reason, known):
        """The dash when the column is NaN everywhere and `known` says the block cannot fill it."""
        a = arr[(..., i)]
        if np.all(np.isnan(a)) and known:
            used.add(reason)
            return DASH
        return value(a)

    cols = [
        "l",
        "log10|dL/dh_l|",
        "log10 gain",
        "log10|dL/dW|",
        "log10|dL/dK|",
        "log10 rms phi'",
        "dead frac",
    ]
    rows = []
    for l in range(depth + 1):  # noqa: E741
        row = [str(l), value(f.log10_act_grad[..., l])]
        if l == 0:
            row += [""] * 5
        else:
            i = l - 1
            reached = not np.any(np.isnan(f.log10_act_grad[..., l]))  # the backward pass got here
            param = missing(f.log10_param_grad, i, "param", reached)
            has_param = param == DASH or bool(np.all(np.isfinite(f.log10_param_grad[..., i])))
            no_dphi = finite_forward(i) and bool(np.all(np.isnan(f.dead_fraction[..., i])))
            row += [
                value(f.log10_gain[..., i]),
                param,
                missing(f.log10_kernel_grad, i, "kernel", has_param),
                missing(f.log10_dphi, i, "dphi", no_dphi),
                missing(f.dead_fraction, i, "dphi", no_dphi),
            ]
        rows.append(row)
    widths = [max(len(c), *(len(r[j]) for r in rows)) for j, c in enumerate(cols)]
    fmt = lambda r: "  ".join(s.rjust(w) for s, w in zip(r, widths, strict=True))  # noqa: E731
    vd = f.log10_act_grad[..., -1] - f.log10_act_grad[..., 0]
    lines = [fmt(cols)] + [fmt(r) for r in rows]
    over = ""
    if lead == 1:
        n = f.log10_act_grad.shape[0]
        over = f"mean ± std over the {n} entries of the leading axis (seeds; pick a time or a net with index=):  "
    lines.append(f"{over}loss {value(f.loss)}   vanishing_decades {value(vd)}")
    lines += [_FOOTNOTES[k] for k in ("param", "kernel", "dphi") if k in used]
    if first_bad is not None and np.any(np.asarray(first_bad) >= 0):
        blocks = sorted({int(b) for b in np.reshape(first_bad, (-1,)) if b >= 0})
        lines.append(
            f"nan: the forward pass went non-finite (overflow): forward_nonfinite_block = "
            f"{blocks[0] if len(blocks) == 1 else blocks} (0-based: block i is table row i+1; {depth} is the "
            "head). The gradient columns are undefined, and rms phi' and dead frac from that block on; "
            "measure in float64 or scale the input down."
        )
    return "\n".join(lines)
