"""`flow_table`: a `GradientFlow` as a text table, one line per layer, in decades.

What the experiments print and write into their summaries; with leading (seeds, ...) axes every cell
is "mean ± std" over them.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxvg.measure.flow import GradientFlow

__all__ = ["flow_table"]


def flow_table(flow: GradientFlow) -> str:
    """A readable per-layer table of a `GradientFlow`, in decades.

    Columns: layer l, log10 ||delta_l||, and for block l (l >= 1): log10 gain, log10 param grad,
    log10 kernel grad, log10 RMS phi', dead fraction. With leading axes (seeds, ...), each cell is
    "mean ± std" over them (NaN-aware).

    Args:
      flow: a `GradientFlow`, optionally with leading axes.
    Returns:
      The table as a string (one header line, one line per layer, and a summary line with the loss
      and `vanishing_decades`).
    Raises:
      TypeError: `flow` is not a `GradientFlow`.

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
    f = jax.tree.map(lambda v: np.asarray(v, dtype=np.float64), flow)
    lead = f.log10_act_grad.ndim - 1

    def cell(a):
        if lead == 0:
            return f"{float(a):.3f}" if np.isfinite(a) or np.isinf(a) else "nan"
        a = np.reshape(a, (-1,))
        if np.all(np.isnan(a)):
            return "nan"
        with np.errstate(invalid="ignore"):
            return f"{np.nanmean(a):.3f}±{np.nanstd(a):.3f}"

    def col(arr, i):
        return cell(arr[(..., i)])

    depth = f.log10_gain.shape[-1]
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
        row = [str(l), col(f.log10_act_grad, l)]
        if l == 0:
            row += [""] * 5
        else:
            i = l - 1
            row += [
                col(f.log10_gain, i),
                col(f.log10_param_grad, i),
                col(f.log10_kernel_grad, i),
                col(f.log10_dphi, i),
                col(f.dead_fraction, i),
            ]
        rows.append(row)
    widths = [max(len(c), *(len(r[j]) for r in rows)) for j, c in enumerate(cols)]
    fmt = lambda r: "  ".join(s.rjust(w) for s, w in zip(r, widths, strict=True))  # noqa: E731
    vd = f.log10_act_grad[..., -1] - f.log10_act_grad[..., 0]
    lines = [fmt(cols)] + [fmt(r) for r in rows]
    lines.append(f"loss {cell(f.loss)}   vanishing_decades {cell(vd)}")
    return "\n".join(lines)
