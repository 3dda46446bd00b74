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

How it runs: every (activation, weights, seed) net is one entry of a nets axis, vmapped and sharded
over local devices (`sweeps.map_nets`; on a single CPU device a sequential `lax.map`, see
`_map_nets`) in ONE compiled program: the activation is selected per net
by index (all registry activations of the config are evaluated elementwise, which costs nothing
next to the N^3 matrix products) and both weight schemes are drawn with `jaxvg.initializers` and
selected per net. A `lax.scan` over the layers carries, in float64, the running Jacobian product
(renormalised every layer, its log-norm accumulated, so nothing under- or overflows) and the QR
frame of the Lyapunov method; at each requested depth it takes the SVD. Nested depths: the depth-8
Jacobian is that of the first 8 layers of the depth-128 net (each depth has the exact marginal
law; depths of one seed are correlated). `analysis.jacobian_spectrum` computes the same thing for
any block model, but unrolls its block loop (one program per depth, compile time growing with
depth); tests/test_isometry.py checks that both agree on a jaxvg.MLP.

Run:    python -m experiments.isometry               (width 256, depths 2..128, 4 seeds; minutes on 2 CPU cores)
        python -m experiments.isometry --quick       (width 64, depths 2, 8, 32; what the tests run)
        python -m experiments.isometry --preset full (width 1024, depths to 256, 8 seeds; accelerators)
Writes: results/isometry/{metrics.json,isometry.csv,isometry.png,summary.md}

Expected outcome: orthogonal linear nets are exact isometries (every singular value 1 at every
depth). Orthogonal tanh at small sigma_b2 stays well-conditioned: the variance of the squared
singular values grows only as L (mu2/mu1^2 - 1), 0.044 L at sigma_b2 = 1e-3. Gaussian weights
(any activation) and relu (either weights) spread out: variance ~L (linear, Gaussian), ~L (relu,
orthogonal), ~2L (relu, Gaussian). The mean stays 1 (chi_1 = 1) everywhere.

Measured (defaults: width 256, 4 seeds, float64; 55 s on a shared 2-core CPU), variance of the
squared singular values, measured (free-probability theory):

| depth | linear G   | linear O | relu G     | relu O     | tanh G      | tanh O      |
|------:|-----------:|---------:|-----------:|-----------:|------------:|------------:|
|     2 | 1.99 (2)   | 2e-31 (0)| 3.87 (4)   | 2.10 (2)   | 1.98 (2.09) | 0.095 (0.088) |
|     8 | 8.39 (8)   | 3e-31 (0)| 11.8 (16)  | 7.19 (8)   | 9.65 (8.35) | 0.352 (0.352) |
|    32 | 36.2 (32)  | 7e-31 (0)| 24.8 (64)  | 24.3 (32)  | 46.8 (33.4) | 1.36 (1.41)   |
|   128 | 42.1 (128) | 2e-30 (0)| 86.3 (256) | 34.7 (128) | 55.5 (134)  | 5.10 (5.64)   |

- Orthogonal linear: every singular value is 1 to 1e-15 at every depth (an exact isometry).
- Orthogonal tanh (sigma_w2 = 1.189, sigma_b2 = 1e-3, q* = 0.107) follows the theory within 10 % at
  every depth. At depth 128 sigma_1 / sigma_{N/4} (from the Lyapunov exponents) spans 0.38
  decades for orthogonal tanh, against 7.8 (linear), 8.1 (tanh) and 19.5 (relu) decades with
  Gaussian weights and 11.6 decades for orthogonal relu: orthogonal weights cure the spread only
  where phi' is nearly constant (relu's phi' is 0 or 1: about N/2 singular values are exactly 0).
- The mean squared singular value is 1 (chi_1 = 1) within Monte Carlo error up to L = 16-32.
  Where L is no longer small against N (L = 128, N = 256) the Gaussian and relu spectra are so
  heavy-tailed that 4 nets x 256 eigenvalues under-sample them: the measured mean falls to 0.54-0.64
  and the variance to 1/3-1/2 of theory (the moments are carried by rare large eigenvalues), while
  orthogonal tanh, which is not heavy-tailed, still matches.
- Gaussian linear Lyapunov spectrum = Ginibre's exactly (figure); typical growth rate (1/L) ln||J e_j||
  at L = 64: -0.001958 measured vs -0.001956 from `theory.typical_log_rate` (ln(2/N) + digamma(N/2))/2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxvg import checks, theory
from jaxvg.nn import activations, initializers
from jaxvg.scale import sweeps

NAME = "isometry"
WEIGHTS = ("gaussian", "orthogonal")
_FIXED_CRITICAL = {"linear": (1.0, 0.0), "relu": (2.0, 0.0)}  # (sigma_w2, sigma_b2) at chi_1 = 1

_QUICK: dict[str, Any] = {"depths": (2, 8, 32), "width": 64}


@dataclasses.dataclass(frozen=True)
class Config:
    activations: tuple[str, ...] = ("linear", "relu", "tanh")  # registry names
    weights: tuple[str, ...] = WEIGHTS  # "gaussian" and/or "orthogonal"
    depths: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128)  # layers L of J = dh_L/dh_0
    width: int = 256  # units per layer N (square Jacobians)
    seeds: int = 4  # independent nets per (activation, weights)
    sigma_b2: float = 1e-3  # bias variance for activations other than linear/relu (tanh)
    out_dir: str = "results/isometry"  # where main() writes
    quick: bool = False  # small sizes for tests/CI (seconds of compute)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {"depths": (2, 4, 8, 16, 32, 64, 128, 256), "width": 1024, "seeds": 8}
    }

    def __post_init__(self):
        if self.quick:  # quick sizes replace the fields left at their defaults
            for f in dataclasses.fields(self):
                if f.name in _QUICK and getattr(self, f.name) == f.default:
                    object.__setattr__(self, f.name, _QUICK[f.name])
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


# --------------------------------------------------------------------------- the kernel


def layer_params(key, i, orthogonal, sigma_w2, sigma_b2, width: int) -> tuple[jax.Array, jax.Array]:
    """Kernel (width, width) and bias (width,) of layer i (0-based) of a net, float64.

    Kernel: `initializers.kernel_init("orthogonal" if orthogonal else "gaussian", sigma_w2=1)` times
    sqrt(sigma_w2) (so sigma_w2 may be traced); bias ~ N(0, sigma_b2). Keys: fold_in(key, i), split.
    """
    dtype = jnp.float64
    k_w, k_b = jax.random.split(jax.random.fold_in(key, i))
    shape = (width, width)
    gauss = initializers.kernel_init("gaussian", sigma_w2=1.0)(k_w, shape, dtype)
    orth = initializers.kernel_init("orthogonal", sigma_w2=1.0)(k_w, shape, dtype)
    kernel = jnp.where(orthogonal, orth, gauss) * jnp.sqrt(sigma_w2)
    return kernel, jnp.sqrt(sigma_b2) * jax.random.normal(k_b, (width,), dtype)


def _one_net(key, act_index, orthogonal, sigma_w2, sigma_b2, q_star, *, acts, width, max_depth, checkpoints):
    """Singular values and Lyapunov exponents of J_{L<-0} at every checkpoint depth, for one net.

    h_l = phi(h_{l-1} K_l + b_l), K_l (N, N) from `initializers` ("gaussian" or "orthogonal" at
    sigma_w2 = 1, times sqrt(sigma_w2)); J_l = diag(phi'(z_l)) K_l^T. Float64 throughout.
    Layer l's parameters are `layer_params(k_net, l, ...)` and the input x = sqrt(q*) N(0, I)
    comes from k_x, where (k_x, k_net) = split(key).

    Returns:
      log_sv (C, N): natural log of the singular values of J_{L<-0}, descending, for each of the
        C checkpoint depths L;
      lyapunov (C, N): (1/L) sum_l ln|R^(l)_ii| (Q_l R^(l) = J_l Q_{l-1}, Q_0 = I), descending:
        natural log per layer;
      log_growth (C, N): (1/L) ln ||J e_j||, the growth rate of each input basis vector, natural
        log per layer: its mean over j and nets is the typical (quenched) rate, with N samples per
        net (the sorted top Lyapunov exponent is the max of N noisy rates: biased up at small L).
    """
    n = width
    dtype = jnp.float64
    k_x, k_net = jax.random.split(key)
    x = jnp.sqrt(q_star) * jax.random.normal(k_x, (n,), dtype)
    is_check = np.zeros(max_depth, bool)
    is_check[np.asarray(checkpoints) - 1] = True

    def phi_dphi(z):
        fs = jnp.stack([a.fn(z) for a in acts])
        ds = jnp.stack([a.dfn(z) for a in acts])
        return fs[act_index], ds[act_index]

    def layer(carry, inp):
        h, m, log_m, q, lyap_sum = carry
        i, check = inp
        kernel, bias = layer_params(k_net, i, orthogonal, sigma_w2, sigma_b2, n)
        z = h @ kernel + bias
        h, d = phi_dphi(z)
        jac = d[:, None] * kernel.T
        m = jac @ m
        norm = jnp.linalg.norm(m)
        m, log_m = m / norm, log_m + jnp.log(norm)
        q, r = jnp.linalg.qr(jac @ q)
        lyap_sum = lyap_sum + jnp.log(jnp.abs(jnp.diagonal(r)))

        def spectrum(args):
            m, log_m, lyap_sum = args
            sv = jnp.linalg.svd(m, compute_uv=False)
            col = jnp.log(jnp.linalg.norm(m, axis=0)) + log_m  # ln ||J e_j||, j = 1..N
            return jnp.log(sv) + log_m, -jnp.sort(-lyap_sum) / (i + 1), col / (i + 1)

        zeros = (jnp.zeros(n, dtype),) * 3
        out = jax.lax.cond(check, spectrum, lambda a: zeros, (m, log_m, lyap_sum))
        return (h, m, log_m, q, lyap_sum), out

    eye = jnp.eye(n, dtype=dtype)
    carry = (x, eye, jnp.zeros((), dtype), eye, jnp.zeros(n, dtype))
    _, (log_sv, lyap, growth) = jax.lax.scan(layer, carry, (jnp.arange(max_depth), jnp.asarray(is_check)))
    idx = np.asarray(checkpoints) - 1
    return {"log_sv": log_sv[idx], "lyapunov": lyap[idx], "log_growth": growth[idx]}


def _blas_threads(n: int) -> contextlib.AbstractContextManager:
    """Limit OpenBLAS (which jaxlib's CPU QR and SVD call, through scipy) to `n` threads.

    On a shared 2-core CPU (load ~11) OpenBLAS's default threads made 24 float64 QRs of 128 x 128
    matrices take 860 ms; one thread took 27 ms (measured, jax 0.10.2). scipy's OpenBLAS is loaded
    lazily, at jax's first LAPACK call: a limit set before that misses it, so it is loaded first.
    A no-op without threadpoolctl (a scikit-learn dependency).
    """
    try:
        import scipy.linalg  # noqa: F401 - loads scipy's OpenBLAS (jaxlib's LAPACK) so the limit reaches it
        import threadpoolctl
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpoolctl.threadpool_limits(n, user_api="blas")


def _map_nets(fn: Callable, *stacked: Any) -> Any:
    """`sweeps.map_nets` (vmap, sharded over devices) on accelerators and multi-device hosts; on a
    single CPU device a sequential `lax.map` over the nets instead.

    Why: under vmap jaxlib's CPU QR/SVD are batched LAPACK calls that jaxlib spreads over XLA's
    intra-op thread pool (`ParallelBatchMap`); on the shared 2-core CPU one run hung there for good
    (gdb: every pool thread idle, the caller waiting in `lapack_dorgqr_ffi` -> ParallelBatchMap ->
    BlockingCounter::Wait). Unbatched calls do not take that path; the N^3 matrix products of one
    net keep a CPU busy anyway.
    """
    if jax.device_count() > 1 or jax.default_backend() != "cpu":
        return sweeps.map_nets(fn, *stacked)
    return _sequential(fn)(*stacked)


@functools.lru_cache(maxsize=16)
def _sequential(fn: Callable) -> Callable:
    return jax.jit(lambda *stacked: jax.lax.map(lambda args: fn(*args), stacked))


@functools.lru_cache(maxsize=16)
def _net_fn(**static: Any) -> Callable:
    """The per-net function for `sweeps.map_nets` (one object per static setup: its compile key)."""
    return functools.partial(_one_net, **static)


# --------------------------------------------------------------------------- run


def run(
    config: Config,
    *,
    on_cell: Callable[[str, Any], None] | None = None,
    done: Mapping[str, Any] = {},  # noqa: B006 - read only
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure the Jacobian spectra and compare them with theory; no file I/O.

    All nets run as one program, so there is one cell, "isometry", written when it finishes and
    reused (if its setup matches) from `done`.

    Args:
      config: the experiment `Config`.
      on_cell: called as `on_cell("isometry", cell)` when the spectra are computed.
      done: {key: cell} already computed (`jaxvg.report.results.finished_cells`).
      log: optional progress printer.

    Returns:
      Dict with `rows` (one per activation x weights x depth: measured and predicted mean and
      variance of the squared singular values, their ratio, the spread of the singular values in
      decades, the top Lyapunov exponent and its predictions), `spectra` {"act/weights": {"log10_sv":
      (depths, seeds * N) decades, "lyapunov": (depths, seeds, N) natural log per layer}},
      `critical` {activation: (sigma_w2, sigma_b2, q*)}, `depths`, `width`, `computed`, `seconds`.
    """
    start = time.perf_counter()
    setup = {
        k: getattr(config, k) for k in ("activations", "weights", "depths", "width", "seeds", "sigma_b2")
    }
    setup = {k: list(v) if isinstance(v, tuple) else v for k, v in setup.items()}
    crit = {}
    for a in config.activations:
        sw, sb = critical_point(a, config.sigma_b2)
        q0 = 1.0
        with jax.enable_x64(True):
            qs = float(theory.q_star(a, sw, sb, q0=q0))
        crit[a] = (sw, sb, qs)

    nets = [(a, w, s) for a in config.activations for w in config.weights for s in range(config.seeds)]
    old = done.get(NAME)
    computed = []
    if isinstance(old, Mapping) and old.get("setup") == setup:
        # JSON stores -inf (ln of an exactly-zero singular value) as null, read back as NaN
        log_sv, lyap, growth = (
            np.nan_to_num(np.asarray(old[k], dtype=np.float64), nan=-np.inf, posinf=np.inf, neginf=-np.inf)
            for k in ("log_sv", "lyapunov", "log_growth")
        )
    else:
        t0 = time.perf_counter()
        with jax.enable_x64(True), _blas_threads(1):
            acts = tuple(activations.get(a) for a in config.activations)
            fn = _net_fn(
                acts=acts, width=config.width, max_depth=max(config.depths), checkpoints=config.depths
            )
            keys = jnp.stack([jax.random.fold_in(jax.random.key(1711), s) for (_, _, s) in nets])
            stacked = (
                keys,
                jnp.asarray([config.activations.index(a) for a, _, _ in nets], jnp.int32),
                jnp.asarray([w == "orthogonal" for _, w, _ in nets]),
                jnp.asarray([crit[a][0] for a, _, _ in nets], jnp.float64),
                jnp.asarray([crit[a][1] for a, _, _ in nets], jnp.float64),
                jnp.asarray([crit[a][2] for a, _, _ in nets], jnp.float64),
            )
            out = jax.device_get(_map_nets(fn, *stacked))
        log_sv, lyap, growth = (np.asarray(out[k], np.float64) for k in ("log_sv", "lyapunov", "log_growth"))
        computed.append(NAME)
        if on_cell is not None:
            on_cell(NAME, {"setup": setup, "log_sv": log_sv, "lyapunov": lyap, "log_growth": growth})
        if log is not None:
            log(
                f"{len(nets)} nets x {max(config.depths)} layers (width {config.width}) in {time.perf_counter() - t0:.1f} s"
            )

    rows, spectra = _analyse(config, crit, nets, log_sv, lyap, growth)
    return {
        "rows": rows,
        "spectra": spectra,
        "critical": {a: {"sigma_w2": v[0], "sigma_b2": v[1], "q_star": v[2]} for a, v in crit.items()},
        "depths": list(config.depths),
        "width": config.width,
        "seeds": config.seeds,
        "computed": computed,
        "seconds": time.perf_counter() - start,
    }


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
    from jaxvg.report import cli, plotting
    from jaxvg.report import results as results_lib

    config = cli.parse(Config, argv)
    res = results_lib.run_resumable(run, config, log=lambda m: print(m, file=sys.stderr))
    out = config.out_dir
    results_lib.write_metrics(out, config, res, seeds=list(range(config.seeds)))
    results_lib.write_csv(f"{out}/{NAME}.csv", res["rows"])
    table = results_lib.format_table(res["rows"], _TABLE_COLUMNS, floatfmt=".4g")
    text = _summary_text(config, res, table)
    results_lib.write_summary(out, text)
    plotting.save(plotting.isometry(res), f"{out}/{NAME}.png")
    print(text)
    return res


if __name__ == "__main__":
    main()
