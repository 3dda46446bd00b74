"""Dynamical isometry: singular values of the input-output Jacobian at criticality, Gaussian vs orthogonal.

Reproduces: Pennington, Schoenholz & Ganguli, Resurrecting the sigmoid in deep learning through
dynamical isometry: theory and practice, NeurIPS 2017 (arXiv:1711.04735), Figs. 1-2: the density
of singular values of J = dh_L/dh_0 for linear, relu and tanh networks at criticality (chi_1 = 1),
with Gaussian or scaled-orthogonal weights, at depths 2 to 128, and the first two moments of the
squared singular values against free probability (`jaxvg.theory.jacobian_moments`: mean chi_1^L,
variance L (mu2/mu1^2 - 1 + s), s = 1 Gaussian, 0 orthogonal). Also the Lyapunov spectrum (QR
method) against `theory.typical_log_rate`, the finite-width rate of the top exponent.

Criticality: linear sigma_w2 = 1, sigma_b2 = 0; relu sigma_w2 = 2, sigma_b2 = 0; any other
activation (tanh) sigma_b2 = `--sigma-b2` (small) and sigma_w2 = `theory.critical_sigma_w2`.
Inputs sit at the fixed point: x ~ N(0, q* I). Square layers of `width` units, no head.

How it runs: every (activation, weights, seed) net is a `jaxvg.MLP` (init "gaussian" or
"orthogonal", float64, no head), and `jaxvg.jacobian_spectrum` gives the singular values of its
J = dh_L/dh_0 (the output basis pushed back through the blocks, renormalised after every block, so
nothing under- or overflows) and its Lyapunov exponents (QR method); `jax.jacfwd` gives the column
norms ||J e_j|| of the typical rate. Nested depths: the depth-8 net of a seed is the first 8 blocks
of its depth-128 net (see `net`). One compiled program per (activation, weights, depth), shared by
the seeds.

Run:    python -m experiments.isometry               (width 256, depths 2..128, 4 seeds)
        python -m experiments.isometry --quick       (width 64, depths 2, 8, 32; what the tests run)
        python -m experiments.isometry --preset full (width 1024, depths to 256, 8 seeds; accelerators)
Writes: results/isometry/{metrics.json,isometry.csv,isometry.png,summary.md}

Expected outcome: orthogonal linear nets are exact isometries (every singular value 1 at every
depth). Orthogonal tanh at small sigma_b2 stays well-conditioned: the variance of the squared
singular values grows only as L (mu2/mu1^2 - 1), 0.044 L at sigma_b2 = 1e-3. Gaussian weights
(any activation) and relu (either weights) spread out: variance ~L (linear, Gaussian), ~L (relu,
orthogonal), ~2L (relu, Gaussian). The mean stays 1 (chi_1 = 1) everywhere.

Measured (defaults: width 256, 4 seeds, float64), variance of the squared singular values,
measured (free-probability theory):

| depth | linear G   | linear O  | relu G     | relu O     | tanh G      | tanh O          |
|------:|-----------:|----------:|-----------:|-----------:|------------:|----------------:|
|     2 | 1.99 (2)   | 8e-31 (0) | 4.06 (4)   | 1.92 (2)   | 2.11 (2.09) | 0.0937 (0.0881) |
|     8 | 8.10 (8)   | 2e-30 (0) | 16.3 (16)  | 9.24 (8)   | 9.28 (8.35) | 0.352 (0.352)   |
|    32 | 39.4 (32)  | 3e-30 (0) | 89.1 (64)  | 49.1 (32)  | 33.0 (33.4) | 1.31 (1.41)     |
|   128 | 65.8 (128) | 1e-29 (0) | 31.6 (256) | 34.7 (128) | 905 (134)   | 4.30 (5.64)     |

- Orthogonal linear: every singular value is 1 to 1e-15 at every depth (an exact isometry).
- Orthogonal tanh (sigma_w2 = 1.189, sigma_b2 = 1e-3, q* = 0.107) follows the theory within 7 %
  up to L = 64 (L/N = 1/4) and is 24 % below it at L = 128. At depth 128 sigma_1 / sigma_{N/4}
  (from the Lyapunov exponents) spans 0.40 decades for orthogonal tanh, against 7.9 (linear),
  8.3 (tanh) and 19.4 (relu) decades with Gaussian weights and 11.5 decades for orthogonal relu:
  orthogonal weights cure the spread only where phi' is nearly constant (relu's phi' is 0 or 1:
  about N/2 singular values are exactly 0).
- The mean squared singular value is 1 (chi_1 = 1) within Monte Carlo error up to L = 16-32.
  Where L is no longer small against N (L = 128, N = 256) the Gaussian and relu spectra are so
  heavy-tailed that 4 nets x 256 eigenvalues sample them poorly: the moments are carried by rare
  large eigenvalues, so the measured mean ranges 0.42-1.9 and the variance 0.12-6.8 times theory
  (a draw with one huge eigenvalue overshoots, the others fall short), while orthogonal tanh,
  which is not heavy-tailed, stays close.
- Gaussian linear Lyapunov spectrum = Ginibre's (figure); typical growth rate (1/L) ln||J e_j|| at
  L = 64: -0.0026 measured vs -0.0020 from `theory.typical_log_rate` (ln(2/N) + digamma(N/2))/2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxvg
from jaxvg import checks, theory
from jaxvg.nn import activations
from jaxvg.report import experiment, figures, tables
from jaxvg.report.experiment import Done, Log, OnCell

NAME = "isometry"
WEIGHTS = ("gaussian", "orthogonal")
_FIXED_CRITICAL = {"linear": (1.0, 0.0), "relu": (2.0, 0.0)}  # (sigma_w2, sigma_b2) at chi_1 = 1


@dataclasses.dataclass(frozen=True)
class Config:
    activations: tuple[str, ...] = ("linear", "relu", "tanh")  # registry names
    weights: tuple[str, ...] = WEIGHTS  # "gaussian" and/or "orthogonal"
    depths: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128)  # layers L of J = dh_L/dh_0
    width: int = 256  # units per layer N (square Jacobians)
    seeds: int = 4  # independent nets per (activation, weights)
    sigma_b2: float = 1e-3  # bias variance for activations other than linear/relu (tanh)
    out_dir: str = "results/isometry"  # where main() writes
    quick: bool = False  # small sizes for tests/CI; fields you set yourself are kept

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {"depths": (2, 4, 8, 16, 32, 64, 128, 256), "width": 1024, "seeds": 8}
    }
    QUICK: ClassVar[dict[str, Any]] = {"depths": (2, 8, 32), "width": 64}

    def __post_init__(self):
        experiment.apply_quick(self)
        if not self.activations:
            raise ValueError(f"`activations` must name at least one activation, got {self.activations!r}.")
        for a in self.activations:
            activations.get(a)
        if not self.weights:
            raise ValueError(
                f"`weights` must be a non-empty subset of {list(WEIGHTS)}, got {self.weights!r}."
            )
        for w in self.weights:
            checks.choice("weights", w, WEIGHTS)
        if not self.depths:
            raise ValueError(f"`depths` must be a non-empty tuple of integers >= 1, got {self.depths!r}.")
        for d in self.depths:
            checks.positive_int("depths", d)
        checks.positive_int("width", self.width)
        checks.positive_int("seeds", self.seeds)
        checks.nonnegative("sigma_b2", self.sigma_b2)
        object.__setattr__(self, "depths", tuple(sorted({int(d) for d in self.depths})))


def critical_point(activation: str, sigma_b2: float) -> tuple[float, float]:
    """(sigma_w2, sigma_b2) on the critical line chi_1 = 1 used for `activation`."""
    if activation in _FIXED_CRITICAL:
        return _FIXED_CRITICAL[activation]
    return float(theory.critical_sigma_w2(activation, sigma_b2)), float(sigma_b2)


# --------------------------------------------------------------------------- the nets


def net(activation: str, weights: str, width: int, depth: int, seed: int, sigma_b2: float) -> jaxvg.MLP:
    """Net `seed` of (activation, weights): `depth` square float64 blocks at the critical point, no head.

    `jaxvg.MLP(width, width, depth, None, init=weights, sigma_w2, sigma_b2)` with the critical
    (sigma_w2, sigma_b2) of `critical_point`. The MLP draws its blocks in order from one
    `nnx.Rngs`, so the depth-d net of a seed is the first d blocks of every deeper net of that seed:
    the depths of one seed are nested (each depth has its exact marginal law; they are correlated).
    The weights depend on the seed only (common random numbers across activations).
    """
    sw, sb = critical_point(activation, sigma_b2)
    return jaxvg.MLP(
        width, width, depth, None, activation=activation, init=weights, sigma_w2=sw, sigma_b2=sb,
        param_dtype=jnp.float64, rngs=nnx.Rngs(_keys(seed)[1]),
    )  # fmt: skip


def net_input(seed: int, width: int, q_star: float) -> jax.Array:
    """The input of net `seed`: x = sqrt(q*) N(0, I_width), float64, at the fixed point q*."""
    return jnp.sqrt(q_star) * jax.random.normal(_keys(seed)[0], (width,), jnp.float64)


def _keys(seed: int) -> jax.Array:
    """(input key, weight key) of net `seed`."""
    return jax.random.split(jax.random.fold_in(jax.random.key(1711), seed))


def measure(model: jaxvg.MLP, x: jax.Array) -> dict[str, np.ndarray]:
    """Spectrum of J = dh_L/dh_0 of one net at one input, natural log, from `jaxvg.jacobian_spectrum`.

    Returns:
      log_sv (N,): ln of the singular values of J, descending; -inf for those below float64's
        working precision (N eps sigma_1: not resolved, counted as 0);
      lyapunov (N,): the Lyapunov exponents (QR method), natural log per layer, descending;
      log_growth (N,): (1/L) ln ||J e_j||, the growth rate of each input basis vector, natural log
        per layer: its mean over j and nets is the typical (quenched) rate, with N samples per net
        (the sorted top Lyapunov exponent is the max of N noisy rates: biased up at small L).
    """
    spec = jaxvg.jacobian_spectrum(model, x)
    log_sv = np.asarray(spec.log10_sv[0], np.float64) * math.log(10)
    graphdef, state = nnx.split(model)
    columns = np.asarray(_column_log_norms(graphdef)(state, x), np.float64)
    return {
        "log_sv": np.where(np.isnan(log_sv), -np.inf, log_sv),
        "lyapunov": np.asarray(spec.log10_lyapunov, np.float64) * math.log(10),
        "log_growth": columns / len(model.blocks),
    }


@functools.lru_cache(maxsize=64)
def _column_log_norms(graphdef: Any) -> Callable[..., jax.Array]:
    """Jitted (state, x) -> ln ||J e_j||, j = 1..N: the column norms of J = dh_L/dh_0 (`jax.jacfwd`;
    float64 holds them unscaled at these depths, unlike the singular values' spread)."""

    def log_norms(state: Any, x: jax.Array) -> jax.Array:
        model = nnx.merge(graphdef, state)
        jac = jax.jacfwd(lambda h: model(h[None])[0])(x)  # (N, N): column j is J e_j
        return jnp.log(jnp.linalg.norm(jac, axis=0))

    return jax.jit(log_norms)


def _blas_threads(n: int) -> contextlib.AbstractContextManager:
    """Limit OpenBLAS (which jaxlib's CPU QR and SVD call, through scipy) to `n` threads.

    The orthogonal initializer and the spectrum take one QR per layer. On a shared 2-core CPU,
    OpenBLAS's default threads made small float64 QRs 10-30x slower than one thread (building the
    nets took longer than measuring them). scipy's OpenBLAS is loaded lazily, at jax's first
    LAPACK call: a limit set before that misses it, so it is loaded first. A no-op without
    threadpoolctl (a scikit-learn dependency).
    """
    try:
        import scipy.linalg  # noqa: F401 - loads scipy's OpenBLAS (jaxlib's LAPACK) so the limit reaches it
        import threadpoolctl
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpoolctl.threadpool_limits(n, user_api="blas")


def _measure_all(config: Config, crit: Mapping[str, tuple[float, float, float]]) -> dict[str, np.ndarray]:
    """Every (activation, weights, seed) net at every depth: (nets, depths, N) arrays from `measure`."""
    out: dict[str, list] = {"log_sv": [], "lyapunov": [], "log_growth": []}
    with jax.enable_x64(True), _blas_threads(1):
        for a, w, s in _nets(config):
            x = net_input(s, config.width, crit[a][2])
            per_depth = [
                measure(net(a, w, config.width, depth, s, config.sigma_b2), x) for depth in config.depths
            ]
            for k in out:
                out[k].append(np.stack([m[k] for m in per_depth]))
    return {k: np.stack(v) for k, v in out.items()}


def _nets(config: Config) -> list[tuple[str, str, int]]:
    return [(a, w, s) for a in config.activations for w in config.weights for s in range(config.seeds)]


# --------------------------------------------------------------------------- run


def run(config: Config, *, on_cell: OnCell = None, done: Done = None, log: Log = None) -> dict[str, Any]:
    """Measure the Jacobian spectra and compare them with theory; no file I/O.

    All nets form one cell, "isometry", written when it finishes and reused (if its setup matches)
    from `done`.

    Args:
      config: the experiment `Config`.
      on_cell: called as `on_cell("isometry", cell)` when the spectra are computed.
      done: {key: cell} already computed (`jaxvg.report.cell_store.finished_cells`).
      log: optional progress printer.

    Returns:
      Dict with `rows` (one per activation x weights x depth: measured and predicted mean and
      variance of the squared singular values, their ratio, the spread of the singular values in
      decades, the top Lyapunov exponent and its predictions), `spectra` {"act/weights": {"log10_sv":
      (depths, seeds * N) decades, "lyapunov": (depths, seeds, N) natural log per layer}},
      `critical` {activation: (sigma_w2, sigma_b2, q*)}, `depths`, `width`, `cells` (the one cell,
      JSON-ready: "log_sv", "lyapunov", "log_growth" (nets, depths, N), natural log), `computed`,
      `seconds`.
    """
    start = time.perf_counter()
    setup = {
        k: getattr(config, k) for k in ("activations", "weights", "depths", "width", "seeds", "sigma_b2")
    }
    crit = {}
    for a in config.activations:
        sw, sb = critical_point(a, config.sigma_b2)
        with jax.enable_x64(True):
            qs = float(theory.q_star(a, sw, sb, q0=1.0))
        crit[a] = (sw, sb, qs)

    store = experiment.Cells(done, on_cell, log)
    cell = store.get(NAME, setup, lambda: _measure_all(config, crit))
    # JSON stores -inf (ln of a singular value below working precision) as null, read back as NaN
    log_sv, lyap, growth = (
        np.nan_to_num(np.asarray(cell[k], dtype=np.float64), nan=-np.inf, posinf=np.inf, neginf=-np.inf)
        for k in ("log_sv", "lyapunov", "log_growth")
    )
    rows, spectra = _analyse(config, crit, _nets(config), log_sv, lyap, growth)
    return {
        "rows": rows,
        "spectra": spectra,
        "critical": {a: {"sigma_w2": v[0], "sigma_b2": v[1], "q_star": v[2]} for a, v in crit.items()},
        "depths": list(config.depths),
        "width": config.width,
        "seeds": config.seeds,
        "cells": store.cells,
        "computed": store.computed,
        "seconds": time.perf_counter() - start,
    }


def report(config: Config, res: dict[str, Any]) -> experiment.Outputs:
    """What main writes: metrics.json, isometry.csv (one row per activation x weights x depth),
    summary.md and isometry.png."""
    table = tables.format_table(res["rows"], _TABLE_COLUMNS, floatfmt=".4g")
    return experiment.Outputs(
        results={k: v for k, v in res.items() if k != "cells"},
        summary=_summary_text(config, res, table),
        csv={f"{NAME}.csv": res["rows"]},
        figure=lambda: figures.isometry(res),
    )


def _analyse(config, crit, nets, log_sv, lyap, growth):
    """Moments, spreads and Lyapunov exponents per (activation, weights, depth), with theory."""
    n = config.width
    eps_decades = -math.log10(n * np.finfo(np.float64).eps)  # resolvable range below sigma_1
    rows, spectra = [], {}
    for a in config.activations:
        sw, sb, qs = crit[a]
        with jax.enable_x64(True):
            rate = float(theory.typical_log_rate(a, sw, sb, width=n))
            chi1 = float(theory.chi_1(a, sw, sb))
        for w in config.weights:
            sel = [i for i, (a2, w2, _) in enumerate(nets) if (a2, w2) == (a, w)]
            lsv = log_sv[sel]  # (seeds, C, N) natural log
            ly = lyap[sel]  # (seeds, C, N)
            gr = growth[sel]  # (seeds, C, N)
            spectra[f"{a}/{w}"] = {
                "log10_sv": np.moveaxis(lsv, 1, 0).reshape(len(config.depths), -1) / math.log(10),
                "lyapunov": np.moveaxis(ly, 1, 0),
            }
            for c, depth in enumerate(config.depths):
                lam = np.exp(2.0 * lsv[:, c, :])  # squared singular values, pooled over seeds
                mean, var = float(np.mean(lam)), float(np.var(lam))
                per_net_mean = np.mean(lam, axis=1)
                with jax.enable_x64(True):
                    t_mean, t_var = (
                        float(v) for v in theory.jacobian_moments(a, sw, sb, depth=depth, weights=w)
                    )
                log10_sv = lsv[:, c, :] / math.log(10)
                top = log10_sv[:, :1]
                resolved = log10_sv >= top - eps_decades
                ly_c = ly[:, c, :]
                quart = ly_c[:, max(0, n // 4 - 1)]
                rows.append(
                    {
                        "activation": a,
                        "weights": w,
                        "depth": depth,
                        "sigma_w2": sw,
                        "sigma_b2": sb,
                        "mean_sq_sv": mean,
                        "mean_sq_sv_theory": t_mean,
                        "mean_sq_sv_stderr": float(np.std(per_net_mean, ddof=1) / math.sqrt(len(sel)))
                        if len(sel) > 1
                        else math.nan,
                        "var_sq_sv": var,
                        "var_sq_sv_theory": t_var,
                        "var_ratio": var / t_var if t_var > 0 else (0.0 if var == 0 else math.inf),
                        "max_abs_log10_sv": float(np.max(np.abs(np.where(resolved, log10_sv, 0.0)))),
                        "resolved_fraction": float(np.mean(resolved)),
                        # decades between the largest and the (N/4)-th singular value, from the Lyapunov
                        # exponents (they resolve what a float64 SVD cannot): L (lambda_1 - lambda_{N/4}) / ln 10.
                        # The N/4-th, not the median: relu nets have about N/2 singular values exactly 0.
                        "spread_decades": float(np.mean(depth * (ly_c[:, 0] - quart)) / math.log(10)),
                        "lyapunov_top": float(np.mean(ly_c[:, 0])),
                        "typical_rate": float(np.mean(gr[:, c, :])),
                        "typical_rate_stderr": float(
                            np.std(np.mean(gr[:, c, :], axis=1), ddof=1) / math.sqrt(len(sel))
                        )
                        if len(sel) > 1
                        else math.nan,
                        # the finite-width theory is for Gaussian weights; none is given for orthogonal ones
                        "typical_log_rate": rate if w == "gaussian" else math.nan,
                        "mean_field_rate": 0.5 * math.log(chi1),
                    }
                )
    return rows, spectra


def ginibre_lyapunov(width: int, sigma_w2: float = 1.0) -> np.ndarray:
    """Exact Lyapunov spectrum of products of Gaussian (N, N) matrices with variance sigma_w2/N:
    lambda_i = 1/2 [ln(2 sigma_w2 / N) + digamma((N - i + 1) / 2)], i = 1..N, natural log per layer,
    descending (Newman 1986; Forrester 2013, https://arxiv.org/abs/1309.7736)."""
    from scipy.special import digamma

    i = np.arange(1, width + 1)
    return 0.5 * (np.log(2.0 * sigma_w2 / width) + digamma((width - i + 1) / 2.0))


# --------------------------------------------------------------------------- main

_TABLE_COLUMNS = (
    "activation", "weights", "depth", "mean_sq_sv", "mean_sq_sv_theory", "var_sq_sv", "var_sq_sv_theory",
    "spread_decades", "lyapunov_top", "typical_rate", "typical_log_rate",
)  # fmt: skip


def _summary_text(config: Config, res: dict[str, Any], table: str) -> str:
    by = {(r["activation"], r["weights"], r["depth"]): r for r in res["rows"]}
    deep = max(config.depths)
    lines = [
        "# isometry",
        "",
        f"Singular values of the input-output Jacobian at criticality, width {config.width}, {config.seeds} "
        f"seed(s) per configuration, depths {list(config.depths)}. Reproduces Pennington, Schoenholz & "
        "Ganguli 2017 (arXiv:1711.04735). mean/var: of the squared singular values (theory: free "
        "probability, N -> inf); spread: decades between the largest and the (N/4)-th singular value; "
        "lyapunov_top: top Lyapunov exponent (QR method, sorted); typical_rate: (1/L) ln||J e_j|| averaged over inputs j and seeds, vs `theory.typical_log_rate` (natural log per layer).",
        "",
        "Critical points: "
        + ", ".join(
            f"{a}: sigma_w2 = {v['sigma_w2']:.4g}, sigma_b2 = {v['sigma_b2']:.3g}, q* = {v['q_star']:.4g}"
            for a, v in res["critical"].items()
        ),
        "",
        f"At depth {deep}:",
        "",
    ]
    for a in config.activations:
        for w in config.weights:
            r = by[(a, w, deep)]
            lines.append(
                f"- {a}, {w}: var {r['var_sq_sv']:.4g} (theory {r['var_sq_sv_theory']:.4g}), mean "
                f"{r['mean_sq_sv']:.4g} (theory {r['mean_sq_sv_theory']:.4g}), spread {r['spread_decades']:.3g} "
                f"decades, max |log10 sv| {r['max_abs_log10_sv']:.3g}"
            )
    lines += ["", f"wall time {res['seconds']:.0f} s", "", table, ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse flags, run, and write results/isometry/ (metrics.json, CSV, PNG, summary.md)."""
    return experiment.main(Config, run, report, argv)


if __name__ == "__main__":
    main()
