"""Figures of jaxvg's results, and `save`; with `jaxvg.report.figures` (the experiments' figures)
the only modules that import matplotlib.

Functions return a `matplotlib.figure.Figure` built directly (no `pyplot`), so nothing leaks into
pyplot's global state and any backend (including "Agg") works: save with `save(fig, path)`
(atomic) or `fig.savefig(path)`.

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> import jaxvg
  >>> from jaxvg.report import plotting
  >>> x, y = jnp.ones((8, 4)), jnp.zeros((8, 1))
  >>> flows = [jaxvg.gradient_flow(jaxvg.MLP(4, 8, 6, 1, activation=a, rngs=nnx.Rngs(0)), x, y)
  ...          for a in ("sigmoid", "tanh")]
  >>> fig = plotting.gradient_flow(*flows, labels=["sigmoid", "tanh"])
  >>> fig.axes[0].get_yscale(), len(fig.axes[0].get_lines())
  ('log', 2)
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from jaxvg.report import files

if TYPE_CHECKING:
    from jaxvg.measure import GradientFlow

# Below 10**_MIN_LOG10 a float64 would underflow: such flows are drawn in decades on a linear axis.
_MIN_LOG10 = -300.0


def save(fig: Figure, path: str | os.PathLike[str]) -> pathlib.Path:
    """Write `fig` as the experiments do (120 dpi, tight bounding box), atomically.

    The format follows the suffix (".png" when there is none); an interrupted save leaves the old
    file, never half an image. Parent directories are created. Returns `path` as a Path.

    Raises:
      ValueError: if `path` is "".
    """
    path = files.as_path(path)
    with files.open_atomic(path, "wb") as f:
        fig.savefig(f, format=path.suffix[1:] or "png", dpi=120, bbox_inches="tight")
    return path


def gradient_flow(*flows: GradientFlow, labels: Sequence[str] | None = None) -> Figure:
    """Gradient norm ||dloss/dh_l|| against layer l for one or more `GradientFlow`s, on one axes.

    The y axis is logarithmic (||dloss/dh_l|| itself). A flow with leading axes (seeds, ...) is drawn
    as the mean of log10 over them with a band from the minimum to the maximum. When some value lies
    below 1e-300 (beyond float64), the axis shows log10 ||dloss/dh_l|| in decades on a linear scale
    instead, so that nothing is lost.

    Args:
      *flows: one or more `jaxvg.GradientFlow` (log10_act_grad of shape (..., L+1)); the depths may
        differ.
      labels: one label per flow (default "flow 0", "flow 1", ...).
    Returns:
      A `matplotlib.figure.Figure` with one axes: x = layer l (0 = input side), y = gradient norm.
    Raises:
      ValueError: no flows, or a number of labels different from the number of flows.
      TypeError: an argument without `log10_act_grad`.
    """
    if not flows:
        raise ValueError("`flows` must hold at least one GradientFlow, got none.")
    for i, f in enumerate(flows):
        if not hasattr(f, "log10_act_grad"):
            raise TypeError(f"`flows[{i}]` must be a GradientFlow, got {type(f).__name__}.")
    if labels is None:
        labels = [f"flow {i}" for i in range(len(flows))]
    labels = list(labels)
    if len(labels) != len(flows):
        raise ValueError(
            f"`labels` must have one entry per flow ({len(flows)}), got {len(labels)}: {labels!r}."
        )

    curves = []
    for f in flows:
        a = np.asarray(f.log10_act_grad, dtype=np.float64)
        a = a.reshape((-1, a.shape[-1]))
        with np.errstate(invalid="ignore"):
            mean = np.mean(a, axis=0)
            lo, hi = np.min(a, axis=0), np.max(a, axis=0)
        curves.append((mean, lo, hi, a.shape[0] > 1))
    finite = np.concatenate([c[1][np.isfinite(c[1])] for c in curves] + [np.zeros(0)])
    in_decades = finite.size > 0 and finite.min() < _MIN_LOG10

    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for (mean, lo, hi, band), label in zip(curves, labels, strict=True):
        layers = np.arange(mean.shape[0])
        tr = (lambda v: v) if in_decades else (lambda v: np.power(10.0, v))
        (line,) = ax.plot(layers, tr(mean), marker="o", markersize=3, label=label)
        if band:
            ax.fill_between(layers, tr(lo), tr(hi), color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("layer l (h_l; 0 = input side)")
    if in_decades:
        ax.set_ylabel("log10 ||dloss/dh_l|| (decades)")
    else:
        ax.set_yscale("log")
        ax.set_ylabel("||dloss/dh_l||")
    ax.set_title("gradient flow")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    return fig
