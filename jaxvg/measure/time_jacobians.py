"""Jacobians through time: ‖∂h_T/∂h_t‖ per example and the spectra of the recurrent map.

The through-time twins of `jacobian_norms` and `jacobian_spectrum`, for recurrent models
(`jaxvg.nn.contracts.RecurrentModel`), renormalised after every step as `time_flow` is:

- `time_jacobian_norms`: ‖∂h_T/∂h_t‖_F for t = 0..T per example, exact or by Hutchinson's estimator;
- `time_jacobian_spectrum`: for one sequence, the singular values of ∂h_T/∂h_t and the Lyapunov
  spectrum of the state map s_{t-1} -> s_t along its trajectory (QR method).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import flatten_util

from jaxvg import checks
from jaxvg.measure import engine, lognorm
from jaxvg.measure.jacobians import (
    METHODS,
    JacobianNorms,
    JacobianSpectrum,
    hutchinson_stderr,
    probe_cotangents,
)
from jaxvg.measure.through_time import (
    PRECISIONS,
    _apply,
    _Arrays,
    _cached_output_shape,
    _check_xs,
    _forward,
    _Program,
    _split,
    _with_leaf,
)
from jaxvg.nn import contracts

__all__ = ["time_jacobian_norms", "time_jacobian_spectrum"]


def _norms_core(program: _Program, arrays: _Arrays, xs, key, *, method: str, num_probes: int, precision: str):
    with jax.default_matmul_precision(precision):
        s_last, s_prev, xt = _forward(program, arrays, xs)
        rep = program.reported
        h_last = jax.tree.leaves(s_last)[rep]
        trailing = h_last.shape[1:]
        dim = int(np.prod(trailing, dtype=np.int64))
        dtype = h_last.dtype
        probes = probe_cotangents(method, num_probes, key, h_last.shape, dtype)
        k = probes.shape[0]
        cts = _with_leaf(jax.tree.map(lambda v: jnp.zeros((k,) + v.shape, dtype), s_last), rep, probes)

        def report(c, S):
            hv = jax.tree.leaves(c)[rep]
            q = jnp.sum(jnp.square(hv), axis=tuple(range(2, hv.ndim)))  # (k, batch)
            total = jnp.sum(q, axis=0)
            if method == "exact":
                return S + 0.5 * jnp.log(total), jnp.zeros_like(S)
            mean = total / k
            return S + 0.5 * jnp.log(mean), hutchinson_stderr(q, mean[None], axis=0)

        # one scale per example over (probes, state): move the batch axis first for lognorm.normalise
        def normalise(c):
            moved = jax.tree.map(lambda v: jnp.swapaxes(v, 0, 1), c)
            u, S = lognorm.normalise(moved, keep=1)
            return jax.tree.map(lambda v: jnp.swapaxes(v, 0, 1), u), S

        u, S = normalise(cts)
        last = report(u, S)

        def back(carry, inp):
            c, S = carry
            s, x = inp
            _, vjp = jax.vjp(lambda ss: _apply(program.cell, arrays.cell, ss, x), s)
            c, dS = normalise(jax.vmap(lambda ct: vjp(ct)[0])(c))
            S = S + dS
            return (c, S), report(c, S)

        _, (fro, se) = jax.lax.scan(
            back, (u, S), (s_prev, xt), reverse=True
        )  # (T, batch): entry t-1 is h_{t-1}
        log_fro = jnp.concatenate([fro, last[0][None]], axis=0).T / lognorm.LN10
        stderr = jnp.concatenate([se, last[1][None]], axis=0).T
        return JacobianNorms(
            log10_fro=log_fro, log10_msv=2 * log_fro - math.log10(dim), log10_fro_stderr=stderr
        )


_norms_jit = jax.jit(_norms_core, static_argnums=(0,), static_argnames=("method", "num_probes", "precision"))


def time_jacobian_norms(
    model: contracts.RecurrentModel,
    xs: jax.Array,
    *,
    method: str = "exact",
    num_probes: int = 16,
    key: jax.Array | None = None,
    precision: str = "highest",
) -> JacobianNorms:
    """Per-example Frobenius norms of ∂h_T/∂h_t for every t = 0..T, exact or by Hutchinson.

    The Jacobian is taken with respect to the reported leaf h_t of the state (the LSTM's h, its c held
    fixed) along the trajectory of `xs`. "exact": the dim h_T basis cotangents of h_T are pulled back
    through the cell VJPs together (vmapped), ‖J‖_F² = Σ_i ‖Jᵀe_i‖²; "hutchinson": K Rademacher probes,
    ‖J‖_F² ≈ (1/K) Σ_k ‖Jᵀu_k‖², with a delta-method standard error. Each example's probes share one
    renormalisation per step (its log accumulated): exact at any T. As `jacobian_norms` through depth.

    Args:
      model: recurrent model (`contracts.RecurrentModel`); not mutated.
      xs: inputs (batch, time, features).
      method: "exact" or "hutchinson".
      num_probes: Hutchinson probes K (ignored for "exact").
      key: `jax.random.key` for the probes; default `jax.random.key(0)`.
      precision: matmul precision, one of `PRECISIONS`.
    Returns:
      `jaxvg.measure.JacobianNorms` with fields (batch, T+1) in decades: `log10_fro` (column T:
      log10 sqrt(dim h_T)), `log10_msv` = log10(‖J‖_F²/dim h_T), `log10_fro_stderr`.
    Raises:
      TypeError: `model` not recurrent.
      ValueError: bad `xs` (as `time_flow`), unknown `method`/`precision`, `num_probes` < 1.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxvg import measure
      >>> from jaxvg.nn import rnn
      >>> model = rnn.RNN(1, 8, None, cell="linear", init="orthogonal", sigma_w2=0.25, rngs=nnx.Rngs(0))
      >>> norms = measure.time_jacobian_norms(model, jnp.ones((2, 10, 1)))
      >>> round(float(norms.log10_fro[0, 0] - norms.log10_fro[0, -1]), 4)  # 0.5**10
      -3.0103
    """
    contracts.check_recurrent_model(model)
    checks.choice("method", method, METHODS)
    checks.positive_int("num_probes", num_probes)
    checks.choice("precision", precision, PRECISIONS)
    xs = _check_xs(model, xs)
    program, arrays = _split(model, xs.shape[0])
    _cached_output_shape(program, arrays, xs)
    if method == "hutchinson":
        key = jax.random.key(0) if key is None else engine.as_key(key)
    else:
        key, num_probes = None, 1
    return _norms_jit(program, arrays, xs, key, method=method, num_probes=num_probes, precision=precision)


def _spectrum_core(program: _Program, arrays: _Arrays, x, *, steps: tuple[int, ...], k: int, precision: str):
    with jax.default_matmul_precision(precision):
        xs = x[None]
        s_last, s_prev, xt = _forward(program, arrays, xs)
        T = xt.shape[0]
        rep = program.reported
        dtype = jax.tree.leaves(s_last)[rep].dtype
        eps = float(jnp.finfo(dtype).eps)
        h_shape = jax.tree.leaves(s_last)[rep].shape[1:]
        dim_h = int(np.prod(h_shape, dtype=np.int64))

        def cell(s, xx):
            return _apply(program.cell, arrays.cell, s, xx)

        # singular values of dh_T/dh_t: the basis of h_T pulled back, one common scale per step
        c = _with_leaf(
            jax.tree.map(lambda v: jnp.zeros((dim_h,) + v.shape, dtype), s_last),
            rep,
            jnp.eye(dim_h, dtype=dtype).reshape((dim_h, 1) + h_shape),
        )
        S = jnp.zeros((), dtype)

        def back(carry, inp):
            c, S = carry
            s, xx = inp
            _, vjp = jax.vjp(lambda ss: cell(ss, xx), s)
            c, dS = lognorm.normalise(jax.vmap(lambda ct: vjp(ct)[0])(c))
            return (c, S + dS), None

        log10_sv, upper = [], T
        for t in sorted(steps, reverse=True):
            if t < upper:
                part = jax.tree.map(lambda v, t=t, upper=upper: v[t:upper], (s_prev, xt))
                (c, S), _ = jax.lax.scan(back, (c, S), part, reverse=True)
                upper = t
            m = jax.tree.leaves(c)[rep].reshape(dim_h, dim_h)
            sv = jnp.linalg.svd(m, compute_uv=False)
            tol = dim_h * eps * sv[0]
            log10_sv.append(
                (t, jnp.where(sv > tol, jnp.log10(jnp.where(sv > 0, sv, 1)) + S / lognorm.LN10, jnp.nan))
            )
        by_step = dict(log10_sv)

        # Lyapunov exponents of the recurrent map on the full state, from t0 = steps[0]
        t0 = steps[0]
        flat0, unravel = flatten_util.ravel_pytree(jax.tree.map(lambda v: v[0], arrays.state0))
        dim_s = flat0.shape[0]

        def step_vec(v, xx):
            s = jax.tree.map(lambda a: a[None], unravel(v))
            out = cell(s, xx)
            return flatten_util.ravel_pytree(jax.tree.map(lambda a: a[0], out))[0]

        def lyap(carry, inp):
            q, total = carry
            s, xx = inp
            v = flatten_util.ravel_pytree(jax.tree.map(lambda a: a[0], s))[0]
            t_cols = jax.vmap(lambda col: jax.jvp(lambda vv: step_vec(vv, xx), (v,), (col,))[1])(q.T).T
            qm, r = jnp.linalg.qr(t_cols)
            return (qm, total + jnp.log(jnp.abs(jnp.diagonal(r)))), None

        q0 = jnp.eye(dim_s, k, dtype=dtype)
        part = jax.tree.map(lambda v: v[t0:], (s_prev, xt))
        (_, total), _ = jax.lax.scan(lyap, (q0, jnp.zeros((k,), dtype)), part)
        lyapunov = jnp.sort(total / (T - t0) / lognorm.LN10)[::-1]
        return JacobianSpectrum(log10_sv=tuple(by_step[t] for t in steps), log10_lyapunov=lyapunov)


_spectrum_jit = jax.jit(_spectrum_core, static_argnums=(0,), static_argnames=("steps", "k", "precision"))


def time_jacobian_spectrum(
    model: contracts.RecurrentModel,
    x: jax.Array,
    *,
    steps: Sequence[int] = (0,),
    num_exponents: int | None = None,
    precision: str = "highest",
) -> JacobianSpectrum:
    """Singular values of ∂h_T/∂h_t and the Lyapunov spectrum of the recurrent map, for one sequence.

    Singular values: the basis of h_T is pulled back through the cell VJPs with one common
    renormalisation per step (exp(−S)·∂h_T/∂h_t exactly), its SVD gives the values exact relative to
    the largest; those below dim h · eps · σ₁ are NaN. Lyapunov exponents (QR method, Benettin et al.
    1980) of the full-state map s_{t-1} -> s_t along the trajectory of `x`, from t0 = steps[0]:
    Q_{t0} = first k columns of I, Q_t R_t = J_t Q_{t-1},
    λ_i = (1/(T − t0)) Σ_t log10 |R_t,ii|, sorted descending: signed decades per step.

    Args:
      model: recurrent model (`contracts.RecurrentModel`); not mutated.
      x: ONE sequence (time, features), no batch axis.
      steps: the steps t (0 <= t < T) whose ∂h_T/∂h_t spectrum to return.
      num_exponents: k, how many Lyapunov exponents (default: the full state's dimension).
      precision: matmul precision, one of `PRECISIONS`.
    Returns:
      `jaxvg.measure.JacobianSpectrum`: `log10_sv` (one array of dim h values per step, descending,
      decades) and `log10_lyapunov` (k,) in decades per step.
    Raises:
      TypeError: `model` not recurrent.
      ValueError: `x` not (time, features), T = 0, non-finite; `steps` out of range; bad
        `num_exponents`.
    References:
      Benettin et al., Lyapunov characteristic exponents for smooth dynamical systems, Meccanica 15, 1980.
      Vogt et al., On Lyapunov exponents for RNNs: understanding information propagation using
      dynamical systems tools, 2020, https://arxiv.org/abs/2006.14123

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxvg
      >>> from flax import nnx
      >>> xs = jnp.ones((20, 1))  # one sequence of 20 steps, no batch axis
      >>> model = jaxvg.nn.rnn.RNN(1, 6, None, cell="linear", init="orthogonal", sigma_w2=0.01, rngs=nnx.Rngs(0))
      >>> spec = jaxvg.measure.time_jacobian_spectrum(model, xs)
      >>> [round(float(v), 4) for v in spec.log10_lyapunov[:2]], round(float(spec.log10_sv[0][0]), 4)
      ([-1.0, -1.0], -20.0)
    """
    contracts.check_recurrent_model(model)
    checks.choice("precision", precision, PRECISIONS)
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(
            f"`x` must be ONE sequence of shape (time, features) (no batch axis), got shape {x.shape}."
        )
    xs = _check_xs(model, x[None])
    T = xs.shape[1]
    if isinstance(steps, int | np.integer) and not isinstance(steps, bool):
        steps = (steps,)
    steps = tuple(steps)
    if not steps or any(
        isinstance(t, bool) or not isinstance(t, int | np.integer) or not 0 <= t < T for t in steps
    ):
        raise ValueError(f"`steps` must hold ints in [0, {T}) (T = {T} steps), got {steps!r}.")
    steps = tuple(int(t) for t in steps)
    program, arrays = _split(model, 1)
    _cached_output_shape(program, arrays, xs)
    dim_s = sum(int(np.prod(v.shape[1:])) for v in jax.tree.leaves(arrays.state0))
    if num_exponents is None:
        num_exponents = dim_s
    num_exponents = checks.positive_int("num_exponents", num_exponents)
    if num_exponents > dim_s:
        raise ValueError(
            f"`num_exponents` must be <= {dim_s} (the state's dimension), got {num_exponents!r}."
        )
    return _spectrum_jit(program, arrays, xs[0], steps=steps, k=num_exponents, precision=precision)
