"""The experiments' figures: one function per experiment, from the dict its `run` returns.

Each returns a `matplotlib.figure.Figure` built without `pyplot` (nothing leaks into pyplot's
global state; any backend, "Agg" included, works); save it with `jaxvg.report.plotting.save`.
Figures of the library's own results (`GradientFlow`) are in `jaxvg.report.plotting`; these two
modules are the only ones that import matplotlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = ["isometry", "phase_diagram", "remedies", "vanishing", "xor_curves"]


def remedies(results: dict) -> Figure:
    """The remedies experiment: per-block log10 gain at init, and train accuracy over training.

    A 2x2 grid: the popular account's cures (left column) and the literature's (right column); the
    top row is the per-block log10 gain at init, log10(||delta_{l-1}|| / ||delta_l||) for block l
    (mean over seeds; 0: the block passes the gradient back unchanged, -1: it shrinks it tenfold),
    the bottom row the mean train accuracy over seeds against the step, with the 90% target dashed.
    The baseline is drawn black in every panel, every other cure dashed (so that curves that
    coincide, e.g. two that stay at chance, both show). Each column has one legend, below its accuracy
    panel (where it hides no line), for both of its panels: a cure has the same colour in its gain
    and its accuracy panel; the entries carry the verdict.

    Args:
      results: what `experiments.remedies.run` returns: `cells` {key: cell}, each with `label`,
        `group` ("article" or "literature"), `init/log10_gain` (seeds, L), `step` (T,) and
        `train/accuracy` (seeds, T) (JSON lists with None for NaN are fine); optional `rows`, one
        per cell, with `key` and `verdict`.
    Returns:
      A `matplotlib.figure.Figure` with four axes.
    Raises:
      ValueError: `results` has no cells.

    Example:
      >>> from jaxvg.report import figures
      >>> cell = {"label": "baseline", "group": "article", "init/log10_gain": [[-0.9, -0.8]],
      ...         "step": [0, 100], "train/accuracy": [[0.1, 0.5]]}
      >>> len(figures.remedies({"cells": {"baseline": cell}}).axes)
      4
    """
    import matplotlib
    from matplotlib.ticker import MaxNLocator

    cells = results.get("cells") or {}
    if not cells:
        raise ValueError("`results` must hold the remedies `cells`, got none.")
    verdicts = {r["key"]: r.get("verdict") for r in results.get("rows", ()) if "key" in r}
    fig = Figure(figsize=(13, 10), layout="constrained")
    axes = fig.subplots(2, 2, sharey="row")
    groups = (("article", "the popular account's cures"), ("literature", "the literature's cures"))

    def draw(col: int, key: str, color, lw: float, zorder: int, ls: str = "-") -> None:
        cell = cells[key]
        gain = np.asarray(cell["init/log10_gain"], dtype=np.float64)
        gain = gain.reshape(-1, gain.shape[-1])
        gain = np.nanmean(gain, axis=0) if np.isfinite(gain).any() else gain[0]
        verdict = verdicts.get(key)
        label = cell.get("label", key) + (f": {verdict}" if verdict and key != "baseline" else "")
        axes[0, col].plot(
            np.arange(1, gain.size + 1), gain, marker="o", ls=ls, color=color, lw=lw, ms=3, zorder=zorder
        )
        acc = np.asarray(cell["train/accuracy"], dtype=np.float64).reshape(-1, len(cell["step"]))
        ok = np.isfinite(acc).any(axis=0)
        mean = np.full(acc.shape[-1], np.nan)
        mean[ok] = np.nanmean(acc[:, ok], axis=0)
        axes[1, col].plot(
            np.asarray(cell["step"]), mean, ls=ls, color=color, lw=lw, zorder=zorder, label=label
        )

    for col, (group, title) in enumerate(groups):
        keys = [k for k, c in cells.items() if c.get("group") == group and k != "baseline"]
        cmap = matplotlib.colormaps["tab10" if len(keys) <= 10 else "tab20"]
        if "baseline" in cells:
            draw(col, "baseline", "black", 2.5, 3)
        for i, key in enumerate(
            keys
        ):  # every other cure dashed: curves that coincide (at chance) stay visible
            draw(col, key, cmap(i % cmap.N), 1.3, 2, "-" if i % 2 == 0 else "--")
        axes[0, col].axhline(0.0, color="grey", lw=0.8, ls=":")
        axes[0, col].set_title(f"{title}: gain per block at init (colours: legend below)", fontsize=11)
        axes[0, col].set_xlabel("block l (input side first)")
        axes[0, col].xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[1, col].axhline(0.9, color="grey", lw=0.8, ls="--", label="90% target")
        axes[1, col].set_title(f"{title}: train accuracy", fontsize=11)
        axes[1, col].set_xlabel("step")
        axes[1, col].set_ylim(0.0, 1.02)
        # below the panel, not on it: inside, it hid the curves that stay at chance
        axes[1, col].legend(
            fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False
        )
    axes[0, 0].set_ylabel("log10 gain = log10 ||δ_{l-1}|| / ||δ_l||  (decades)")
    axes[1, 0].set_ylabel("train accuracy (mean over seeds)")
    return fig


_VANISHING_CURVES = (  # (field of a profile, line style) drawn over the seeds
    ("measured", {"color": "C0", "lw": 2.2, "label": "measured, mean"}),
    ("mean_field", {"color": "k", "ls": "--", "lw": 1.4, "label": "mean field"}),
    ("dphi_product", {"color": "C3", "ls": ":", "lw": 1.8, "label": "derivative product (RMS φ')"}),
    ("story", {"color": "C2", "ls": "-.", "lw": 1.0, "label": "max φ' story"}),
)


def vanishing(res: dict) -> Figure:
    """`experiments.vanishing`: one panel per activation, the gradient profile against the layer.

    Each panel shows log10‖δ_l‖ − log10‖δ_L‖ (decades; 0 at the output, l = L) for l = 0..L: every
    seed (thin), their mean (thick), the mean-field prediction (`theory.gradient_profile`, dashed),
    the derivative product of the popular story (summed `log10_dphi`, dotted) and the max-φ' story
    ((L − l)·log10 max φ', dash-dot). When the curves carry the forward panel (`c`), two more rows
    show the forward signal of each net: log10 q_l = log10 mean h_l² and the mean pairwise cosine
    c_l of the inputs' representations, measured (`jaxvg.signal_propagation`; every seed thin for c,
    seed mean thick) against `theory.signal_profile` (dashed): c_l → 1 in the ordered phase, to
    c* < 1 in the chaotic one.

    Args:
      res: what `experiments.vanishing.run` returns; uses `res["profiles"]` ({activation: curves})
        and `res["summary"]` (decades per layer and the phase, printed in each panel).

    Returns:
      A matplotlib `Figure` (not shown; call `fig.savefig(...)`).
    Raises:
      ValueError: `res` has no `profiles`.
    """
    if not isinstance(res, dict) or not res.get("profiles"):
        raise ValueError(
            "`res` must be what experiments.vanishing.run returns (with `profiles`), got no profiles."
        )
    curves = res["profiles"]
    n = len(curves)
    forward = all("c" in c for c in curves.values())
    rows = 3 if forward else 1
    fig = Figure(figsize=(4.3 * n, 3.8 * rows), layout="constrained")
    grid = fig.subplots(rows, n, squeeze=False)
    axes = grid[0]
    for ax, (name, c) in zip(axes, curves.items(), strict=True):
        seeds = np.asarray(c["measured_seeds"], dtype=float)
        layers = np.arange(seeds.shape[1])
        for i, row in enumerate(seeds):
            ax.plot(
                layers, row, color="C0", alpha=0.3, lw=0.8, label="measured, each seed" if i == 0 else None
            )
        for field, style in _VANISHING_CURVES:
            ax.plot(layers, np.asarray(c[field], dtype=float), **style)
        s = res["summary"][name]
        ax.set_title(f"{name} ({s['init']}, σ_w² = {s['sigma_w2']:g})")
        ax.set_xlabel("layer l (0 = input)")
        ax.text(
            0.97,
            0.04,
            f"decades/layer\nmeasured {s['measured']:+.3f}\nmean field {s['mean_field']:+.3f}\n"
            f"RMS φ' {s['dphi_product']:+.3f}",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=8,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"},
        )
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("log10‖δ_l‖ − log10‖δ_L‖ (decades)")
    axes[0].legend(fontsize=7, loc="upper left")
    if forward:
        _forward_rows(grid[1], grid[2], res)
    return fig


def _forward_rows(q_axes: Any, c_axes: Any, res: dict) -> None:
    """The forward panel of `vanishing`: log10 q_l and c_l, measured against the mean field."""
    for ax_q, ax_c, (name, c) in zip(q_axes, c_axes, res["profiles"].items(), strict=True):
        layers = np.arange(len(c["c"]))
        ax_q.plot(layers, np.asarray(c["log10_q"], dtype=float), color="C0", lw=2.2, label="measured, mean")
        ax_q.plot(layers, np.asarray(c["log10_q_mean_field"], dtype=float), "k--", lw=1.4, label="mean field")
        for i, row in enumerate(np.asarray(c["c_seeds"], dtype=float)):
            ax_c.plot(
                layers, row, color="C1", alpha=0.3, lw=0.8, label="measured, each seed" if i == 0 else None
            )
        ax_c.plot(layers, np.asarray(c["c"], dtype=float), color="C1", lw=2.2, label="measured, mean")
        ax_c.plot(layers, np.asarray(c["c_mean_field"], dtype=float), "k--", lw=1.4, label="mean field")
        s = res["summary"][name]
        ax_c.set_title(f"{name}: {s['phase']} phase, c_L {s['c_last']:.3f} (mean field {s['c_last_mean_field']:.3f})",
                       fontsize=9)  # fmt: skip
        ax_c.set_ylim(min(-0.05, float(np.nanmin(c["c_seeds"])) - 0.05), 1.05)
        for ax in (ax_q, ax_c):
            ax.set_xlabel("layer l (0 = input)")
            ax.grid(alpha=0.3)
    q_axes[0].set_ylabel("log10 q_l = log10 mean h_l²")
    c_axes[0].set_ylabel("c_l: mean cosine between inputs")
    q_axes[0].legend(fontsize=7, loc="best")
    c_axes[0].legend(fontsize=7, loc="lower right")


def _edges(centres: Sequence[float], lowest: float | None = None) -> np.ndarray:
    """Cell edges for a (possibly non-uniform) increasing grid: midpoints, extended at both ends;
    the first edge no lower than `lowest` (a depth axis must not run below 0)."""
    c = np.asarray(centres, dtype=float)
    if c.size == 1:
        edges = np.array([c[0] - 0.5, c[0] + 0.5])
    else:
        mid = (c[1:] + c[:-1]) / 2
        edges = np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])
    if lowest is not None:
        edges[0] = max(edges[0], min(lowest, c[0]))
    return edges


def phase_diagram(res: dict) -> Figure:
    """Heat maps of accuracy over sigma_w2 x depth with the 6 xi_c curve (Schoenholz et al. Fig. 5).

    Args:
      res: the dict `experiments.phase_diagram.run` returns: `sigma_w2` (S,), `depths` (D,),
        `train_accuracy` and `test_accuracy` (D, S), `diverged_fraction` (D, S), `chance`, and
        `theory` with `critical_sigma_w2` and `curve_sigma_w2`/`curve_six_xi_c` (or `six_xi_c` (S,)).
    Returns:
      A `Figure` with two heat maps (train, test accuracy; x = sigma_w2, y = depth, one tick per
      depth of the grid, the axis starting at 0 or above), the curve depth = 6 xi_c (dashed
      white), the critical sigma_w2 (dotted) and an x on diverged cells; the legend sits below the
      maps, where it covers nothing.
    Raises:
      KeyError: if `res` lacks one of the keys above.
    References:
      Schoenholz et al., Deep Information Propagation, 2017, https://arxiv.org/abs/1611.01232

    Example:
      >>> import numpy as np
      >>> from jaxvg.report import figures
      >>> res = {"sigma_w2": [1.0, 1.75, 3.0], "depths": [4, 32], "chance": 0.1,
      ...        "train_accuracy": np.array([[0.9, 0.95, 0.9], [0.1, 0.6, 0.2]]),
      ...        "test_accuracy": np.array([[0.85, 0.9, 0.85], [0.1, 0.5, 0.2]]),
      ...        "theory": {"critical_sigma_w2": 1.76, "six_xi_c": [21.8, 2557.0, 54.3]}}
      >>> [ax.get_title() for ax in figures.phase_diagram(res).axes[:2]]
      ['train accuracy', 'test accuracy']
    """
    from matplotlib.lines import Line2D

    sig = np.asarray(res["sigma_w2"], float)
    depths = np.asarray(res["depths"], float)
    th = res["theory"]
    curve_x = np.asarray(th.get("curve_sigma_w2", sig), float)
    curve_y = np.asarray(th.get("curve_six_xi_c", th["six_xi_c"]), float)
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    depth_edges = _edges(depths, lowest=0.0)
    for ax, field, title in zip(
        axes, ("train_accuracy", "test_accuracy"), ("train accuracy", "test accuracy"), strict=True
    ):
        acc = np.asarray(res[field], float)
        mesh = ax.pcolormesh(
            _edges(sig),
            depth_edges,
            acc,
            vmin=res.get("chance", 0.0),
            vmax=1.0,
            cmap="viridis",
            shading="flat",
        )
        ax.plot(curve_x, curve_y, "w--", lw=2, label=r"$6\,\xi_c$ (mean field)")
        ax.axvline(float(th["critical_sigma_w2"]), color="w", ls=":", lw=1.2, label=r"critical $\sigma_w^2$")
        div = np.asarray(res.get("diverged_fraction", np.zeros_like(acc)), float)
        ii, jj = np.nonzero(div > 0)
        if ii.size:
            ax.plot(sig[jj], depths[ii], "rx", ms=7, label="diverged")
        ax.set_ylim(depth_edges[0], depth_edges[-1])
        ax.set_xlim(_edges(sig)[0], _edges(sig)[-1])
        ax.set_yticks(depths, [f"{d:g}" for d in depths])
        ax.set_xlabel(r"$\sigma_w^2$")
        ax.set_title(title)
        fig.colorbar(mesh, ax=ax, label="accuracy" if field == "test_accuracy" else None)
    axes[0].set_ylabel("depth (hidden layers)")
    # the legend below the maps, where it covers nothing; the white lines drawn dark there
    handles = [
        Line2D([], [], color="k" if h.get_color() == "w" else h.get_color(), ls=h.get_linestyle(),
               marker=h.get_marker(), lw=h.get_linewidth())
        for h in axes[0].get_lines()
    ]  # fmt: skip
    labels = [h.get_label() for h in axes[0].get_lines()]
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8, frameon=False)
    return fig


_VAR_FLOOR = 1e-3  # isometry(): variances below it (an exact isometry: 0, or ~1e-30 in float64) drawn here
_LYAPUNOV_BOTTOM = -4.0  # isometry(): the Lyapunov axis stops here (relu's zero directions sit near -37)


def _tiny(v: float) -> str:
    """A variance below the floor as the annotation prints it: "0" or "1e-30"."""
    return "0" if v == 0 else f"{v:.0e}"


def isometry(res: dict) -> Figure:
    """Jacobian singular-value densities, moment growth and Lyapunov spectra (Pennington et al. 2017).

    One row per activation. Columns: the density of log10 singular values of J = dh_L/dh_0 at every
    depth for Gaussian and for orthogonal weights (only values resolved in float64 are binned); the
    variance of the squared singular values against depth, measured (markers) and free-probability
    theory (lines); a log axis cannot show an exact isometry's variance (0 in theory, ~1e-30
    measured in float64), so measured values below 1e-3 are drawn as down-pointing triangles on a
    dotted floor line at 1e-3, theory values below it are left out, and a note on the panel gives
    their true values; the Lyapunov spectrum at the largest depth (natural log per layer against
    i/N), with the exact Gaussian linear (Ginibre) spectrum where it applies, its axis fitted to the
    data down to -4 (a note counts the exponents below, e.g. relu's zero directions near -37).

    Args:
      res: the dict `experiments.isometry.run` returns (`rows`, `spectra`, `depths`, `width`).
    Returns:
      A `Figure` with a (activations x 4) grid of axes.
    Raises:
      KeyError: if `res` lacks one of the keys above.
    References:
      Pennington, Schoenholz & Ganguli, Resurrecting the sigmoid in deep learning through dynamical
      isometry, 2017, https://arxiv.org/abs/1711.04735

    Example:
      >>> import numpy as np
      >>> from jaxvg.report import figures
      >>> rows = [{"activation": "linear", "weights": w, "depth": d, "var_sq_sv": v, "var_sq_sv_theory": t}
      ...         for w, v, t in (("gaussian", 1.9, 2.0), ("orthogonal", 0.0, 0.0)) for d in (2,)]
      >>> spectra = {f"linear/{w}": {"log10_sv": np.zeros((1, 8)), "lyapunov": np.zeros((1, 2, 4))}
      ...            for w in ("gaussian", "orthogonal")}
      >>> fig = figures.isometry({"rows": rows, "spectra": spectra, "depths": [2], "width": 4})
      >>> fig.axes[2].get_title()
      'linear: moment growth'
    """
    from matplotlib import colormaps
    from scipy.special import digamma

    depths = list(res["depths"])
    acts = list(dict.fromkeys(r["activation"] for r in res["rows"]))
    weights = list(dict.fromkeys(r["weights"] for r in res["rows"]))
    n = int(res["width"])
    cmap = colormaps["plasma"]
    colours = [cmap(0.85 * i / max(1, len(depths) - 1)) for i in range(len(depths))]
    fig = Figure(figsize=(16, 3.4 * len(acts)), layout="constrained")
    axes = np.asarray(fig.subplots(len(acts), 4, squeeze=False))
    style = {"gaussian": ("o", "-"), "orthogonal": ("s", "--")}
    for i, a in enumerate(acts):
        for j, w in enumerate(weights[:2]):
            ax = axes[i, j]
            spec = res["spectra"].get(f"{a}/{w}")
            if spec is None:
                ax.set_visible(False)
                continue
            values = np.asarray(spec["log10_sv"], float)  # (depths, seeds * N)
            finite = values[np.isfinite(values)]
            lo = max(float(finite.min()) if finite.size else -1.0, -16.0)
            hi = float(finite.max()) if finite.size else 1.0
            lo, hi = min(lo, -0.5), max(hi, 0.5)
            bins = np.linspace(lo, hi, 80)
            for c, depth in enumerate(depths):
                v = values[c][np.isfinite(values[c])]
                v = v[v >= v.max() - 15.0] if v.size else v  # float64 resolves ~15 decades below the top
                ax.hist(v, bins=bins, density=True, histtype="step", color=colours[c], label=f"L={depth}")
            ax.set_yscale("log")
            ax.set_title(f"{a}, {w} weights")
            ax.set_xlabel(r"$\log_{10}$ singular value of $J$")
        axes[i, 0].set_ylabel("density")
        if i == 0:
            axes[i, 0].legend(fontsize=7, ncol=2)
        ax = axes[i, 2]
        notes = []
        for w in weights:
            rows = [r for r in res["rows"] if r["activation"] == a and r["weights"] == w]
            d = np.array([r["depth"] for r in rows], float)
            var = np.array([r["var_sq_sv"] for r in rows], float)
            tvar = np.array([r["var_sq_sv_theory"] for r in rows], float)
            marker, ls = style.get(w, ("^", "-."))
            low, tlow = var < _VAR_FLOOR, tvar < _VAR_FLOOR
            line = ax.plot(d, np.where(tlow, np.nan, tvar), ls, label=f"{w} theory")[0]
            colour = line.get_color()
            ax.plot(d[~low], var[~low], marker, color=colour, ls="none", label=f"{w} measured")
            if low.any():
                ax.plot(d[low], np.full(low.sum(), _VAR_FLOOR), "v", color=colour, mfc="none", ls="none",
                        label=f"{w} measured, below {_VAR_FLOOR:g}")  # fmt: skip
            if low.any() or tlow.any():
                parts = []
                if tlow.any():
                    parts.append(f"theory {_tiny(float(np.max(tvar[tlow])))}")
                if low.any():
                    parts.append(
                        f"measured {_tiny(float(np.min(var[low])))} to {_tiny(float(np.max(var[low])))}"
                    )
                notes.append(f"{w}: {', '.join(parts)}")
        if notes:
            ax.axhline(_VAR_FLOOR, color="grey", lw=0.8, ls=":")
            # just above the floor's markers, below the lines (they start at variance ~1 and rise)
            ax.text(0.03, 0.1, f"below the {_VAR_FLOOR:g} floor (dotted):\n" + "\n".join(notes),
                    transform=ax.transAxes, ha="left", va="bottom", fontsize=7,
                    bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"})  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("depth L")
        ax.set_ylabel(r"variance of $\sigma^2$ (eig. of $JJ^T$)")
        ax.set_title(f"{a}: moment growth")
        ax.legend(fontsize=7, loc="center right" if notes else "best")
        ax = axes[i, 3]
        x = (np.arange(n) + 0.5) / n
        drawn = []
        for w in weights:
            spec = res["spectra"].get(f"{a}/{w}")
            if spec is None:
                continue
            ly = np.asarray(spec["lyapunov"], float)[-1]  # (seeds, N) at the largest depth
            ok = np.isfinite(ly)
            mean = np.where(ok, ly, 0.0).sum(axis=0) / np.maximum(ok.sum(axis=0), 1)
            drawn.append((w, mean[ok.any(axis=0)]))
            ax.plot(
                x,
                np.where(ok.any(axis=0), mean, np.nan),
                style.get(w, ("^", "-."))[1],
                label=f"{w} (L={depths[-1]})",
            )
        if a == "linear" and "gaussian" in weights:
            k = np.arange(1, n + 1)
            ax.plot(x, 0.5 * (np.log(2.0 / n) + digamma((n - k + 1) / 2.0)), "k:", label="Ginibre exact")
        finite = np.concatenate([m[np.isfinite(m)] for _, m in drawn] + [np.zeros(1)])
        top, bottom = float(finite.max()), max(float(finite.min()), _LYAPUNOV_BOTTOM)
        pad = 0.05 * max(top - bottom, 0.1)
        ax.set_ylim(bottom - pad, top + pad)  # autoscaling ran to +8 when values reached -160
        below = [(w, m[m < _LYAPUNOV_BOTTOM]) for w, m in drawn if np.any(m < _LYAPUNOV_BOTTOM)]
        if below:
            ax.text(0.03, 0.03, "below the axis:\n" + "\n".join(
                        f"{w}: {v.size} of {n} (down to {v.min():.0f})" for w, v in below),
                    transform=ax.transAxes, ha="left", va="bottom", fontsize=7,
                    bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"})  # fmt: skip
        ax.set_xlabel("i / N")
        ax.set_ylabel("Lyapunov exponent (ln per layer)")
        ax.set_title(f"{a}: Lyapunov spectrum")
        ax.legend(fontsize=7)
    return fig


def xor_curves(res: dict) -> Figure:
    """The XOR experiment (`experiments.xor.run` output): training-loss curves of the shallow and the
    deep nets (left, one thin line per seed, log scale), and the deep net's per-block log10
    kernel-gradient norms at init and at the end (right, mean over seeds with a +-1 std band;
    block 1 = input side).

    Args:
      res: dict with "shallow" and "deep" cells, each holding "step" (T,), "loss_curves" (seeds, T),
        "depth", "solved", and for "deep" "log10_kernel_grad_init" / "log10_kernel_grad_end"
        (seeds, L), in decades.
    Returns:
      A `matplotlib.figure.Figure` with two axes.
    """
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_loss, ax_grad = fig.subplots(1, 2)
    colors = {"shallow": "tab:blue", "deep": "tab:red"}
    for key in ("shallow", "deep"):
        cell = res[key]
        steps = np.asarray(cell["step"], dtype=float)
        curves = np.asarray(cell["loss_curves"], dtype=float)
        for i, curve in enumerate(curves):
            solved = f"{cell['solved']}/{len(curves)} solved"
            label = f"{key} ({cell['depth']} hidden, {solved})" if i == 0 else None
            ax_loss.plot(steps, np.maximum(curve, 1e-12), color=colors[key], lw=0.8, alpha=0.7, label=label)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss (floored at 1e-12)")
    ax_loss.set_title("XOR, full-batch gradient descent")
    ax_loss.legend(fontsize=8)

    deep = res["deep"]
    for name, style in (("log10_kernel_grad_init", "-o"), ("log10_kernel_grad_end", "--s")):
        values = np.asarray(deep[name], dtype=float)  # (seeds, L)
        blocks = np.arange(1, values.shape[1] + 1)
        mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
        when = "init" if name.endswith("init") else "end"
        ax_grad.plot(blocks, mean, style, color="tab:red", ms=3, label=f"at {when}")
        ax_grad.fill_between(blocks, mean - std, mean + std, color="tab:red", alpha=0.15)
    ax_grad.set_xlabel("block (1 = input side)")
    ax_grad.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    ax_grad.set_ylabel("log10 ||dloss/dW_l||_F (decades)")
    ax_grad.set_title(f"deep net ({deep['depth']} hidden layers): kernel gradients")
    ax_grad.legend(fontsize=8)
    return fig
