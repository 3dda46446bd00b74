"""Mean-field theory of signal and gradient propagation in wide random networks.

A fully connected net with weights W_ij ~ N(0, sigma_w2 / fan_in) and biases b_i ~ N(0, sigma_b2)
(the "gaussian" scheme of `jaxvg.initializers`) has, at infinite width, Gaussian pre-activations
z_l whose variance q_l and pairwise correlation c_l follow deterministic maps (Poole et al. 2016):

    q_{l+1} = sigma_w2 * E[phi(sqrt(q_l) z)^2] + sigma_b2,                     z ~ N(0, 1)
    c_{l+1} = (sigma_w2 * E[phi(u1) phi(u2)] + sigma_b2) / q_{l+1},     (u1, u2) ~ N(0, q_l [[1, c_l], [c_l, 1]])

and the backward signal is multiplied, per layer, by chi(q) = sigma_w2 * E[phi'(sqrt(q) z)^2] in
squared norm (Schoenholz et al. 2017). At the fixed point q* the factor chi_1 = chi(q*) separates the
ordered phase (chi_1 < 1: vanishing gradients, correlations -> 1) from the chaotic one (chi_1 > 1:
exploding gradients). Pennington et al. (2017, 2018) add the spectrum of the input-output Jacobian,
whose mean squared singular value is chi_1^L and whose spread depends on the weight ensemble.

Every function but `critical_sigma_w2` takes `(activation, sigma_w2, sigma_b2, ...)` first, with
the activation a registry name, an `activations.Activation` or a callable (`activations.get`), and
its other arguments by keyword. All are jittable and vmappable over `sigma_w2`, `sigma_b2` (and
`q`, `c`, `q0`), and broadcast over array arguments. Inputs are checked before tracing; traced
values are not checked.

Gaussian expectations use the closed forms in `activation.closed_forms` where they exist (relu,
leaky_relu, linear, erf, hard_tanh: kinks defeat quadrature), and otherwise Gauss quadrature:
one-dimensional expectations E[f(sqrt(q) z)] by Gauss-Legendre on z in [-10, 0] and [0, 10]
(2 x 96 nodes; the split at z = 0 makes a kink of phi at 0 harmless, and the nodes cluster where
phi(sqrt(q) z) varies fastest when q is large), two-dimensional ones in polar coordinates
(z1, z2) = r (cos t, sin t), Gauss-Legendre in r in [0, 10] (64 nodes) and in t on the four sectors
cut by the lines u1 = 0 and u2 = 0 (4 x 48 nodes). Measured relative error on smooth activations
(tanh, erf, sigmoid) for q <= 10: ~1e-13 (1D) and < 1e-10 (2D) with x64 enabled, float32
rounding (~1e-7) without. (Gauss-Hermite in z, the textbook choice, needs 256 nodes for 1e-8 at
q = 5 because its nodes spread over |z| < 22 instead of crowding near z = 0.)

Units: q, q0 and q* are second moments of pre-activations (squared activation-input units);
correlations and chi's are dimensionless; depth scales are in layers; `gradient_profile` is in
decades (log10); `typical_log_rate` is a natural log per layer.

References:
  Poole et al., Exponential expressivity in deep neural networks through transient chaos, 2016,
    https://arxiv.org/abs/1606.05340
  Schoenholz et al., Deep Information Propagation, 2017, https://arxiv.org/abs/1611.01232
  Pennington, Schoenholz & Ganguli, Resurrecting the sigmoid in deep learning through dynamical
    isometry: theory and practice, 2017, https://arxiv.org/abs/1711.04735
  Pennington, Schoenholz & Ganguli, The emergence of spectral universality in deep networks, 2018,
    https://arxiv.org/abs/1802.09979
  Cho & Saul, Kernel methods for deep learning, 2009 (the arc-cosine kernel of relu).
  Williams, Computing with infinite networks, 1997 (the arcsine kernel of erf).

Example:
  >>> from jaxvg import theory
  >>> round(float(theory.chi_1("relu", 2.0, 0.0)), 6)   # He initialisation is critical
  1.0
  >>> round(float(theory.critical_sigma_w2("tanh", 0.0)), 4)
  1.0
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxvg import checks
from jaxvg.nn import activations

WEIGHTS = ("gaussian", "orthogonal")

_Z_MAX = 10.0  # quadrature range |z| <= 10; the Gaussian mass beyond is 1.5e-23
_N_HALF = 96  # 1D Gauss-Legendre nodes on each of [-10, 0] and [0, 10]
_N_R = 64  # 2D: radial Gauss-Legendre nodes on [0, 10]
_N_T = 48  # 2D: angular Gauss-Legendre nodes per sector (4 sectors)
_MAX_ITER = 2000  # fixed-point iterations (stopped early on convergence)
_NEWTON = 64  # guarded Newton steps that polish a fixed point after the iteration
_C_ITER = 32  # c* iterations before Newton (each one a 2D quadrature)
_C_NEWTON = 64  # at most this many guarded Newton steps for c* (stopped when converged)
_BISECT = 64  # bisection steps of critical_sigma_w2 on log sigma_w2 in [1e-3, 1e4]


# --- quadrature ---------------------------------------------------------------------------------


@functools.cache
def _gauss_legendre(n: int, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (b - a) * x + 0.5 * (b + a), 0.5 * (b - a) * w


@functools.cache
def _nodes_1d() -> tuple[np.ndarray, np.ndarray]:
    z1, w1 = _gauss_legendre(_N_HALF, -_Z_MAX, 0.0)
    z2, w2 = _gauss_legendre(_N_HALF, 0.0, _Z_MAX)
    z, w = np.concatenate([z1, z2]), np.concatenate([w1, w2])
    return z, w * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)


@functools.cache
def _nodes_polar() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r, wr = _gauss_legendre(_N_R, 0.0, _Z_MAX)
    wr = wr * r * np.exp(-0.5 * r * r)  # density of |z| for z ~ N(0, I_2), times dr
    t, wt = _gauss_legendre(_N_T, 0.0, 1.0)  # position within a sector, in [0, 1]
    return r, wr, t, wt


def _lift(x: jax.Array, ndim: int) -> jax.Array:
    """Prepend `ndim` unit axes (explicit broadcasting; rank promotion raises in the tests)."""
    return jnp.reshape(x, (1,) * ndim + x.shape)


def _expect_1d(f: Callable[[jax.Array], jax.Array], q: jax.Array) -> jax.Array:
    """E[f(sqrt(q) z)], z ~ N(0, 1), broadcast over q."""
    z, w = (_lift(jnp.asarray(a, q.dtype), q.ndim) for a in _nodes_1d())
    return jnp.sum(w * f(jnp.sqrt(q)[..., None] * z), axis=-1)


def _expect_2d(f1, f2, q: jax.Array, c: jax.Array) -> jax.Array:
    """E[f1(u1) f2(u2)] with Var u_i = q, Corr(u1, u2) = c, broadcast over q and c.

    u1 = sqrt(q) r cos(t), u2 = sqrt(q) r cos(t - a), a = arccos(c): the kinks of a phi with a kink
    at 0 sit on the sector edges t = pi/2, pi/2 + a, 3pi/2, 3pi/2 + a.
    """
    q, c = jnp.broadcast_arrays(q, c)
    nd = q.ndim
    r, wr, t, wt = (jnp.asarray(x, q.dtype) for x in _nodes_polar())
    a = jnp.arccos(jnp.clip(c, -1.0, 1.0))[..., None, None]  # (..., 1, 1)
    half_pi = jnp.full_like(a, 0.5 * jnp.pi)
    starts = jnp.concatenate([half_pi, half_pi + a, 3 * half_pi, 3 * half_pi + a], -2)  # (..., 4, 1)
    lengths = jnp.concatenate([a, 2 * half_pi - a, a, 2 * half_pi - a], -2)
    t, wt = _lift(t[None, :], nd), _lift(wt[None, :], nd)  # (1.., 1, N_T)
    theta = (starts + lengths * t)[..., None, :, :]  # (..., 1, 4, N_T)
    w_theta = (lengths * wt / (2 * jnp.pi))[..., None, :, :]
    r, wr = _lift(r[:, None, None], nd), _lift(wr[:, None, None], nd)  # (1.., N_R, 1, 1)
    rq = jnp.sqrt(q)[..., None, None, None] * r  # (..., N_R, 1, 1)
    u1 = rq * jnp.cos(theta)
    u2 = rq * jnp.cos(theta - a[..., None, :, :])
    return jnp.sum(wr * w_theta * f1(u1) * f2(u2), axis=(-3, -2, -1))


class _Forms(NamedTuple):
    """Gaussian expectations of one activation (closed form or quadrature)."""

    V: Callable  # q -> E[phi(u)^2]
    dV: Callable  # q -> dV/dq = E[phi'(u)^2 + phi(u) phi''(u)] (Gaussian integration by parts)
    chi: Callable  # q -> E[phi'(u)^2]
    dphi4: Callable  # q -> E[phi'(u)^4]
    K: Callable  # (q, c) -> E[phi(u1) phi(u2)]
    chi_c: Callable  # (q, c) -> E[phi'(u1) phi'(u2)]


@functools.cache
def _forms(act: activations.Activation) -> _Forms:
    cf = dict(act.closed_forms)
    phi, dphi = act.fn, act.dfn

    V = cf.get("q_map") or (lambda q: _expect_1d(lambda u: phi(u) ** 2, q))
    if "q_map" in cf:

        def dV(q):
            return jax.jvp(cf["q_map"], (q,), (jnp.ones_like(q),))[1]

    else:

        def dV(q):
            # d/dq E[phi(sqrt(q) z)^2] = E[z phi phi'] / sqrt(q); at q = 0 its limit phi'(0)^2 + phi(0) phi''(0).
            pos = q > 0
            qs = jnp.where(pos, q, 1.0)
            z, w = (_lift(jnp.asarray(a, q.dtype), q.ndim) for a in _nodes_1d())
            u = jnp.sqrt(qs)[..., None] * z
            inner = jnp.sum(w * z * phi(u) * dphi(u), axis=-1) / jnp.sqrt(qs)
            zero = jnp.zeros_like(q)
            at0 = dphi(zero) ** 2 + phi(zero) * act.d2fn(zero)
            return jnp.where(pos, inner, at0)

    chi = cf.get("chi") or (lambda q: _expect_1d(lambda u: dphi(u) ** 2, q))
    dphi4 = cf.get("dphi4") or (lambda q: _expect_1d(lambda u: dphi(u) ** 4, q))
    K = cf.get("c_map") or (lambda q, c: _expect_2d(phi, phi, q, c))
    chi_c = cf.get("chi_c") or (lambda q, c: _expect_2d(dphi, dphi, q, c))
    return _Forms(V, dV, chi, dphi4, K, chi_c)


# --- argument checks (concrete values only; traced values pass through) -------------------------


def _concrete(value) -> np.ndarray | None:
    if isinstance(value, jax.core.Tracer):
        return None
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"expected a real number or array, got {type(value).__name__}.") from err


def _check(name: str, value, ok, what: str) -> None:
    arr = _concrete(value)
    if arr is None:
        return
    bad = ~(np.isfinite(arr) & ok(arr))
    if bad.any():
        shown = value if isinstance(value, int | float) else arr[tuple(np.argwhere(bad)[0])].item()
        where = "" if arr.ndim == 0 else f" (entry {tuple(int(i) for i in np.argwhere(bad)[0])})"
        raise ValueError(f"`{name}` must be {what}, got {shown!r}{where}.")


def _check_sigmas(sigma_w2, sigma_b2) -> None:
    _check("sigma_w2", sigma_w2, lambda a: a >= 0, "a finite number >= 0 (a variance)")
    _check("sigma_b2", sigma_b2, lambda a: a >= 0, "a finite number >= 0 (a variance)")


def _check_positive(name: str, value) -> None:
    _check(name, value, lambda a: a > 0, "a finite number > 0 (a second moment)")


def _float_args(*args):
    args = tuple(jnp.asarray(a) if isinstance(a, list | tuple) else a for a in args)
    dtype = jnp.result_type(*args, float)
    return tuple(jnp.broadcast_arrays(*(jnp.asarray(a, dtype) for a in args)))


# --- fixed points -------------------------------------------------------------------------------


def _solve_q_star(forms: _Forms, sw, sb, q0):
    """Scalar q* from q0: iterate, polish with guarded Newton, classify (inf / 0 / value)."""
    dt = q0.dtype
    eps = jnp.finfo(dt).eps
    tiny = jnp.finfo(dt).tiny

    def f(q):
        return sw * forms.V(q) + sb

    big = jnp.asarray(1e20, dt) * (1.0 + q0 + sw + sb)

    def cond(state):
        i, _, _, done = state
        return (i < _MAX_ITER) & ~done

    def body(state):
        i, _, q, _ = state
        qn = f(q)
        done = (jnp.abs(qn - q) <= 4 * eps * qn) | (qn > big) | ~jnp.isfinite(qn) | (qn <= tiny)
        return i + 1, q, qn, done

    _, q_prev, q_loop, _ = lax.while_loop(cond, body, (0, q0, q0, jnp.asarray(False)))
    rising = q_loop > q_prev

    def newton(_, q):
        g = f(q) - q
        slope = sw * forms.dV(q) - 1.0
        qn = q - g / slope
        ok = jnp.isfinite(qn) & (qn >= 0) & (jnp.abs(f(qn) - qn) < jnp.abs(g))
        return jnp.where(ok, qn, q)

    escaped = ~jnp.isfinite(q_loop) | (q_loop > big)  # no Newton polish: it could jump to q = 0
    q = lax.fori_loop(0, _NEWTON, newton, jnp.where(escaped, q0, q_loop))
    q = jnp.where(escaped, q_loop, q)
    converged = jnp.abs(f(q) - q) <= 1e3 * eps * q
    diverged = (q > big) | ~jnp.isfinite(q) | (~converged & rising)
    collapsed = (sb == 0) & ((~converged & ~rising) | (q <= eps * q0))
    return jnp.where(diverged, jnp.inf, jnp.where(collapsed, 0.0, q))


def _solve_c_star(forms: _Forms, sw, sb, qs):
    """Scalar c* at q*: 1 in the ordered phase (chi_1 <= 1) or where q* = 0, NaN where q* = inf,
    else the stable fixed point below 1, by iteration from c = 0 and guarded Newton."""
    dt = qs.dtype
    eps = jnp.finfo(dt).eps
    finite = jnp.isfinite(qs)
    q = jnp.where(finite & (qs > 0), qs, 1.0)
    chi1 = sw * forms.chi(q)
    ordered = (chi1 <= 1.0) | (qs == 0)
    norm = sw * forms.V(q) + sb

    def g(c):
        return jnp.clip((sw * forms.K(q, c) + sb) / norm, -1.0, 1.0)

    skip = ordered | ~finite

    def cond(state):
        i, _, done = state
        return (i < _C_ITER) & ~done

    def body(state):
        i, c, _ = state
        cn = g(c)
        return i + 1, cn, jnp.abs(cn - c) <= 4 * eps

    _, c, _ = lax.while_loop(cond, body, (0, jnp.zeros((), dt), skip))

    # Guarded Newton from below c*: g is convex and increasing on [0, 1] for the usual activations,
    # so the steps approach c* monotonically; each is kept only if it shrinks |g(c) - c|.
    def newton_cond(state):
        k, _, _, done = state
        return (k < _C_NEWTON) & ~done

    def newton_body(state):
        k, c, res, _ = state
        slope = sw * q * forms.chi_c(q, c) / norm - 1.0
        cn = c - res / slope
        cn = jnp.where(jnp.isfinite(cn), jnp.clip(cn, -1.0, 1.0), c)
        res_n = g(cn) - cn
        ok = jnp.abs(res_n) < jnp.abs(res)
        done = ~ok | (jnp.abs(cn - c) <= 4 * eps)
        return k + 1, jnp.where(ok, cn, c), jnp.where(ok, res_n, res), done

    _, c, _, _ = lax.while_loop(newton_cond, newton_body, (0, c, g(c) - c, skip))
    return jnp.where(~finite, jnp.nan, jnp.where(ordered, 1.0, c))


@functools.partial(jax.jit, static_argnums=0)
def _q_star_jit(act, sw, sb, q0):
    forms = _forms(act)
    return jnp.vectorize(functools.partial(_solve_q_star, forms))(sw, sb, q0)


@functools.partial(jax.jit, static_argnums=0)
def _c_star_jit(act, sw, sb, qs):
    return jnp.vectorize(functools.partial(_solve_c_star, _forms(act)))(sw, sb, qs)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _eval(act, key, *args):
    """One Gaussian expectation of `_Forms` (closed form or quadrature), elementwise."""
    return getattr(_forms(act), key)(*args)


def _prepare(activation, sigma_w2, sigma_b2, **positive):
    act = activations.get(activation)
    _check_sigmas(sigma_w2, sigma_b2)
    for name, value in positive.items():
        _check_positive(name, value)
    return act


# --- public API ---------------------------------------------------------------------------------


def q_map(activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *, q: ArrayLike) -> jax.Array:
    """The length map: variance of the next layer's pre-activations given this layer's.

    q_{l+1} = sigma_w2 * E[phi(sqrt(q_l) z)^2] + sigma_b2, z ~ N(0, 1).

    Args:
      activation: registry name, `Activation` or callable phi.
      sigma_w2: weight variance times fan_in (>= 0); any shape, broadcast with the others.
      sigma_b2: bias variance (>= 0).
      q: pre-activation second moment q_l (> 0), squared input units of phi.
    Returns:
      q_{l+1}, the broadcast shape of the arguments.
    Raises:
      ValueError: negative or non-finite `sigma_w2`/`sigma_b2`, `q` <= 0, unknown `activation`.
    References:
      Poole et al. 2016, https://arxiv.org/abs/1606.05340, Sec. 2 (the length map).

    Example:
      >>> from jaxvg import theory
      >>> float(theory.q_map("relu", 2.0, 0.5, q=3.0))   # 2 * 3/2 + 0.5
      3.5
    """
    act = _prepare(activation, sigma_w2, sigma_b2, q=q)
    return _q_map_jit(act, *_float_args(sigma_w2, sigma_b2, q))


@functools.partial(jax.jit, static_argnums=0)
def _q_map_jit(act, sw, sb, q):
    return jnp.vectorize(lambda sw, sb, q: sw * _forms(act).V(q) + sb)(sw, sb, q)


def q_star(activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *, q0: ArrayLike = 1.0) -> jax.Array:
    """Fixed point q* of the length map reached from q0.

    Iterates q <- q_map(q) from q0 (a `lax.while_loop`, at most 2000 steps, stopped when a step is
    below 4 ulp), then polishes with guarded Newton steps on q_map(q) - q = 0 (each accepted only if
    it shrinks the residual, so the iteration's stable fixed point is kept). Returns `inf` where the
    map diverges (relu with sigma_w2 > 2, or sigma_w2 = 2 with sigma_b2 > 0; linear with
    sigma_w2 >= 1 and sigma_b2 > 0) and 0 where it collapses (sigma_b2 = 0 in the ordered phase,
    e.g. tanh with sigma_w2 <= 1). Where every q is fixed (relu at sigma_w2 = 2, sigma_b2 = 0;
    linear at sigma_w2 = 1, sigma_b2 = 0) q* = q0.

    Args:
      activation: registry name, `Activation` or callable phi.
      sigma_w2, sigma_b2: weight (times fan_in) and bias variances, >= 0; broadcast together.
      q0: starting second moment (> 0).
    Returns:
      q*, broadcast shape of the arguments.
    Raises:
      ValueError: negative `sigma_w2`/`sigma_b2`, `q0` <= 0, unknown `activation`.
    References:
      Poole et al. 2016, https://arxiv.org/abs/1606.05340, Sec. 2 (its fixed point).

    Example:
      >>> from jaxvg import theory
      >>> round(float(theory.q_star("relu", 1.0, 0.5)), 6)   # 0.5 / (1 - 1/2)
      1.0
      >>> float(theory.q_star("relu", 3.0, 0.0)), float(theory.q_star("tanh", 0.5, 0.0))
      (inf, 0.0)
    """
    act = _prepare(activation, sigma_w2, sigma_b2, q0=q0)
    return _q_star_jit(act, *_float_args(sigma_w2, sigma_b2, q0))


def c_map(
    activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *, c: ArrayLike, q: ArrayLike | None = None
) -> jax.Array:
    """The correlation map: correlation of two inputs' pre-activations one layer on.

    c_{l+1} = (sigma_w2 * E[phi(u1) phi(u2)] + sigma_b2) / q_map(q), with Var u_i = q and
    Corr(u1, u2) = c. At q = q* the denominator is q* (Poole et al.'s form); elsewhere it is the next
    layer's variance, so the result is always a correlation.

    Args:
      activation: registry name, `Activation` or callable phi.
      sigma_w2, sigma_b2: weight (times fan_in) and bias variances, >= 0.
      c: input correlation c_l in [-1, 1].
      q: both inputs' pre-activation variance (> 0); default q* (from q0 = 1). Where q* is 0 or inf
        the result is NaN (no signal, or no fixed point).
    Returns:
      c_{l+1}, broadcast shape of the arguments.
    Raises:
      ValueError: negative sigmas, `c` outside [-1, 1], `q` <= 0, unknown `activation`.
    References:
      Poole et al. 2016, https://arxiv.org/abs/1606.05340, Sec. 3 (the correlation map).

    Example:
      >>> from jaxvg import theory
      >>> round(float(theory.c_map("linear", 0.5, 1.0, c=0.0, q=2.0)), 6)   # (0 + 1) / (1 + 1)
      0.5
    """
    extra = {} if q is None else {"q": q}
    act = _prepare(activation, sigma_w2, sigma_b2, **extra)
    _check("c", c, lambda a: (a >= -1) & (a <= 1), "a correlation in [-1, 1]")
    if q is None:
        sw, sb, c = _float_args(sigma_w2, sigma_b2, c)
        qs = _q_star_jit(act, sw, sb, jnp.ones_like(sw))
        qs = jnp.where((qs > 0) & jnp.isfinite(qs), qs, jnp.nan)
        return _c_map_jit(act, sw, sb, c, qs)
    return _c_map_jit(act, *_float_args(sigma_w2, sigma_b2, c, q))


@functools.partial(jax.jit, static_argnums=0)
def _c_map_jit(act, sw, sb, c, q):
    forms = _forms(act)
    return jnp.vectorize(lambda sw, sb, c, q: (sw * forms.K(q, c) + sb) / (sw * forms.V(q) + sb))(
        sw, sb, c, q
    )


def c_star(activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *, q0: ArrayLike = 1.0) -> jax.Array:
    """Stable fixed point c* of the correlation map at q*.

    c* = 1 in the ordered phase (chi_1 <= 1) and where q* = 0 (sigma_b2 = 0, ordered); in the
    chaotic phase the stable fixed point c* < 1, found by iterating c_map from c = 0 (at most 32
    steps) and then guarded Newton steps (slope chi_c), which converge from below because the map
    is convex on [0, 1]. NaN where q* = inf (the length map diverges).

    Args:
      activation: registry name, `Activation` or callable phi.
      sigma_w2, sigma_b2: weight (times fan_in) and bias variances, >= 0.
      q0: starting second moment for q* (> 0).
    Returns:
      c* in [-1, 1], broadcast shape of the arguments.
    Raises:
      ValueError: negative sigmas, `q0` <= 0, unknown `activation`.
    References:
      Poole et al. 2016, https://arxiv.org/abs/1606.05340, Sec. 3;
      Schoenholz et al. 2017, https://arxiv.org/abs/1611.01232, Sec. 3.

    Example:
      >>> from jaxvg import theory
      >>> round(float(theory.c_star("tanh", 2.5, 0.05)), 3)   # chaotic: chi_1 > 1, c* < 1
      0.447
      >>> float(theory.c_star("tanh", 1.5, 0.05))   # ordered (critical point 1.76)
      1.0
    """
    act = _prepare(activation, sigma_w2, sigma_b2, q0=q0)
    sw, sb, q0 = _float_args(sigma_w2, sigma_b2, q0)
    return _c_star_jit(act, sw, sb, _q_star_jit(act, sw, sb, q0))


def chi_1(activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *, q0: ArrayLike = 1.0) -> jax.Array:
    """chi_1 = sigma_w2 * E[phi'(sqrt(q*) z)^2]: the per-layer factor of the squared gradient norm.

    chi_1 < 1: ordered phase, gradients vanish as chi_1^(L/2) in norm; chi_1 > 1: chaotic, they
    explode; chi_1 = 1: criticality. Where q* = inf it is evaluated at q = inf, which is exact for
    the positively homogeneous closed forms (relu: sigma_w2 / 2) and NaN for quadrature.

    Args:
      activation: registry name, `Activation` or callable phi.
      sigma_w2, sigma_b2: weight (times fan_in) and bias variances, >= 0.
      q0: starting second moment for q* (> 0).
    Returns:
      chi_1 (dimensionless), broadcast shape of the arguments.
    Raises:
      ValueError: negative sigmas, `q0` <= 0, unknown `activation`.
    References:
      Poole et al. 2016, https://arxiv.org/abs/1606.05340, Sec. 3 (chi_1, the slope of the c map at c = 1);
      Schoenholz et al. 2017, https://arxiv.org/abs/1611.01232, Sec. 4 (gradients).

    Example:
      >>> from jaxvg import theory
      >>> float(theory.chi_1("relu", 3.0, 0.1))   # sigma_w2 / 2 at any q
      1.5
    """
    act = _prepare(activation, sigma_w2, sigma_b2, q0=q0)
    sw, sb, q0 = _float_args(sigma_w2, sigma_b2, q0)
    qs = _q_star_jit(act, sw, sb, q0)
    return jnp.broadcast_to(sw, qs.shape) * _eval(act, "chi", qs)


def _neg_inv_log(x):
    """-1 / ln x, with +inf at x = 1 (not -inf from -1/(+0))."""
    log = jnp.log(x)
    return jnp.where(log == 0, jnp.inf, -1.0 / jnp.where(log == 0, 1.0, log))


def depth_scales(
    activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *, q0: ArrayLike = 1.0
) -> tuple[jax.Array, jax.Array]:
    """Schoenholz et al.'s depth scales (xi_q, xi_c) of the approach to the fixed points.

    xi_q = -1 / ln chi_q,  chi_q = chi_1 + sigma_w2 E[phi''(u) phi(u)] = sigma_w2 dV/dq at q*,
    xi_c = -1 / ln chi_c,  chi_c = sigma_w2 E[phi'(u1) phi'(u2)] at (q*, c*).
    (chi_1 + sigma_w2 E[phi'' phi] = sigma_w2 d/dq E[phi(sqrt(q) z)^2] by Gaussian integration by
    parts, which is how it is computed: exact at the kinks of relu and hard_tanh.) In the ordered
    phase c* = 1 and chi_c = chi_1; in the chaotic phase c* < 1 and chi_c < 1 < chi_1, so xi_c is
    NOT -1/ln chi_1 there. xi_c diverges (inf) at criticality; xi_q, xi_c are NaN where q* = inf.

    Args:
      activation: registry name, `Activation` or callable phi.
      sigma_w2, sigma_b2: weight (times fan_in) and bias variances, >= 0.
      q0: starting second moment for q* (> 0).
    Returns:
      (xi_q, xi_c) in layers, each of the broadcast shape of the arguments.
    Raises:
      ValueError: negative sigmas, `q0` <= 0, unknown `activation`.
    References:
      Schoenholz et al. 2017, https://arxiv.org/abs/1611.01232, Sec. 3 (depth scales).

    Example:
      >>> from jaxvg import theory
      >>> xi_q, xi_c = theory.depth_scales("linear", 0.5, 1.0)   # chi_q = chi_c = 0.5
      >>> round(float(xi_q), 4), round(float(xi_c), 4)
      (1.4427, 1.4427)
    """
    act = _prepare(activation, sigma_w2, sigma_b2, q0=q0)
    sw, sb, q0 = _float_args(sigma_w2, sigma_b2, q0)
    qs = _q_star_jit(act, sw, sb, q0)
    cs = _c_star_jit(act, sw, sb, qs)
    return _depth_scales_jit(act, sw, qs, cs)


@functools.partial(jax.jit, static_argnums=0)
def _depth_scales_jit(act, sw, qs, cs):
    sw = jnp.broadcast_to(sw, qs.shape)
    forms = _forms(act)
    q = jnp.where(jnp.isfinite(qs), qs, jnp.nan)
    chi_q = sw * forms.dV(q)
    ordered = cs == 1
    chi_c = sw * jnp.where(ordered, forms.chi(q), forms.chi_c(q, jnp.where(ordered, 0.0, cs)))
    finite = jnp.isfinite(qs)
    return jnp.where(finite, _neg_inv_log(chi_q), jnp.nan), jnp.where(finite, _neg_inv_log(chi_c), jnp.nan)


def gradient_depth_scale(
    activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *, q0: ArrayLike = 1.0
) -> jax.Array:
    """xi_grad = -1 / ln chi_1: layers over which the squared gradient norm changes by a factor e.

    Positive in the ordered phase (gradients vanish as exp(-L/xi)), negative in the chaotic phase
    (they explode as exp(L/|xi|)), inf at criticality.

    Args:
      activation: registry name, `Activation` or callable phi.
      sigma_w2, sigma_b2: weight (times fan_in) and bias variances, >= 0.
      q0: starting second moment for q* (> 0).
    Returns:
      xi_grad in layers, broadcast shape of the arguments.
    Raises:
      ValueError: negative sigmas, `q0` <= 0, unknown `activation`.
    References:
      Schoenholz et al. 2017, https://arxiv.org/abs/1611.01232, Sec. 4 (xi_nabla).

    Example:
      >>> from jaxvg import theory
      >>> round(float(theory.gradient_depth_scale("relu", 4.0, 0.0)), 4)   # -1 / ln 2
      -1.4427
    """
    return _neg_inv_log(chi_1(activation, sigma_w2, sigma_b2, q0=q0))


def critical_sigma_w2(activation, sigma_b2: ArrayLike) -> jax.Array:
    """The weight variance on the order-to-chaos line: the root of chi_1(sigma_w2) = 1.

    Bisection (64 steps, jittable, vmappable over sigma_b2) on log sigma_w2 in [1e-3, 1e4], with
    q* (from q0 = 1) recomputed at every step; a sigma_w2 whose length map diverges and whose chi_1
    is then NaN (quadrature at q = inf) counts as chaotic. NaN where chi_1 - 1 does not change sign
    on the bracket. Where chi_1 - 1 touches zero quadratically (tanh and erf at sigma_b2 = 0, where
    chi_1 - 1 ~ q*^2 on the chaotic side) the root is determined only to ~sqrt(eps).

    Args:
      activation: registry name, `Activation` or callable phi.
      sigma_b2: bias variance (>= 0), any shape.
    Returns:
      sigma_w2 at criticality, shape of `sigma_b2`.
    Raises:
      ValueError: negative `sigma_b2`, unknown `activation`.
    References:
      Poole et al. 2016, https://arxiv.org/abs/1606.05340, Sec. 3 (the order-to-chaos line);
      Schoenholz et al. 2017, https://arxiv.org/abs/1611.01232, Sec. 3 (tanh, sigma_b2 = 0.05: sigma_w2 ~ 1.76).

    Example:
      >>> from jaxvg import theory
      >>> round(float(theory.critical_sigma_w2("relu", 0.1)), 5)
      2.0
    """
    act = activations.get(activation)
    _check("sigma_b2", sigma_b2, lambda a: a >= 0, "a finite number >= 0 (a variance)")
    (sb,) = _float_args(sigma_b2)
    return _critical_jit(act, sb)


@functools.partial(jax.jit, static_argnums=0)
def _critical_jit(act, sb):
    forms = _forms(act)

    def excess(log_sw, sb):
        sw = jnp.exp(log_sw)
        excess = sw * forms.chi(_solve_q_star(forms, sw, sb, jnp.ones_like(sb))) - 1.0
        return jnp.where(jnp.isnan(excess), jnp.inf, excess)  # q* = inf (quadrature NaN): exploding

    def one(sb):
        lo, hi = jnp.log(jnp.asarray(1e-3, sb.dtype)), jnp.log(jnp.asarray(1e4, sb.dtype))
        f_lo, f_hi = excess(lo, sb), excess(hi, sb)

        def step(_, bracket):
            lo, hi = bracket
            mid = 0.5 * (lo + hi)
            below = excess(mid, sb) < 0
            return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

        lo, hi = lax.fori_loop(0, _BISECT, step, (lo, hi))
        root = jnp.exp(0.5 * (lo + hi))
        return jnp.where((f_lo < 0) & (f_hi > 0), root, jnp.nan)

    return jnp.vectorize(one)(sb)


def gradient_profile(
    activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *, depth: int, q0: ArrayLike
) -> jax.Array:
    """Predicted log10 ||delta_l|| - log10 ||delta_L|| for l = 0..L, following q layer by layer.

    q_1 = sigma_w2 q0 + sigma_b2, q_{j+1} = q_map(q_j) (the pre-activation variance of block j),
    and profile[l] = 1/2 sum_{j=l+1..L} log10 chi(q_j), chi(q) = sigma_w2 E[phi'(sqrt(q) z)^2].
    So profile[L] = 0 and profile[0] is minus the decades the gradient gains from input to output
    (negative when it vanishes towards the input). Indexing as in DESIGN.md: entry l is h_l; this
    is what `analysis.gradient_flow(...).log10_act_grad - log10_act_grad[..., -1]` measures.

    Args:
      activation: registry name, `Activation` or callable phi.
      sigma_w2, sigma_b2: weight (times fan_in) and bias variances, >= 0.
      depth: number of blocks L (>= 1).
      q0: the input's second moment ||x||^2 / d0 (> 0); a scalar or an array of per-example values,
        each giving its own profile (average the profiles, in decades, for a batch prediction).
    Returns:
      Decades, shape broadcast(sigma_w2, sigma_b2, q0).shape + (depth + 1,).
    Raises:
      ValueError: negative sigmas, `q0` <= 0, `depth` < 1, unknown `activation`.
    References:
      Schoenholz et al. 2017, https://arxiv.org/abs/1611.01232, Sec. 4 (here with the
      layer-dependent q_l of the input rather than q*).

    Example:
      >>> from jaxvg import theory
      >>> [round(float(v), 4) for v in theory.gradient_profile("linear", 0.1, 0.0, depth=2, q0=1.0)]
      [-1.0, -0.5, 0.0]
    """
    act = _prepare(activation, sigma_w2, sigma_b2, q0=q0)
    depth = checks.positive_int("depth", depth)
    return _profile_jit(act, depth, *_float_args(sigma_w2, sigma_b2, q0))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _profile_jit(act, depth, sw, sb, q0):
    forms = _forms(act)

    def one(sw, sb, q0):
        def step(q, _):
            return sw * forms.V(q) + sb, q

        _, qs = lax.scan(step, sw * q0 + sb, None, length=depth)  # q_1 .. q_L
        half_log10_chi = 0.5 * jnp.log10(sw * forms.chi(qs))
        tail = jnp.cumsum(half_log10_chi[::-1])[::-1]  # entry l: sum over j = l+1 .. L
        return jnp.concatenate([tail, jnp.zeros((1,), tail.dtype)])

    return jnp.vectorize(one, signature="(),(),()->(l)")(sw, sb, q0)


def typical_log_rate(
    activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *, width: int, q0: ArrayLike = 1.0
) -> jax.Array:
    """Finite-width typical (quenched) growth rate of a back- or forward-propagated vector.

    lambda = lim (1/L) E ln(||J_L ... J_1 v|| / ||v||), natural log per layer, for blocks of width
    N = `width` at q*: the top Lyapunov exponent of the Jacobian product. With
    J = D W^T, D = diag(phi'(z)), one layer multiplies ||v||^2 by X = (sigma_w2/N) sum_i d_i g_i^2
    (g_i ~ N(0, 1), d_i = phi'(z_i)^2). For Gaussian linear nets (d_i = 1) X is sigma_w2 chi^2_N / N
    and, exactly,

        lambda = 1/2 [ln(2 sigma_w2 / N) + digamma(N / 2)].

    For other activations jaxvg treats the d_i as i.i.d. draws from the mean-field law of phi'^2 at
    q*, independent of W (Pennington et al.'s assumption), and adds the extra variance of d to the
    exact Gaussian result at second order in 1/N (the delta method, E ln X ~ ln E X - Var X / (2 E X^2)):

        lambda = 1/2 [ln(2 chi_1 / N) + digamma(N / 2) - 3 (mu2 / mu1^2 - 1) / (2 N)],

    mu_k = E[phi'(sqrt(q*) z)^(2k)]. It is exact for linear nets and leaves an O(1/N^2) error
    otherwise (relu at He init: -5/(4N) per layer; at N = 16 the formula gives -0.079 where the
    exact single-layer value is -0.088; at N = 64, -0.0196 against a Monte Carlo -0.0206 +- 0.0009).
    The mean-field rate is ln(chi_1)/2; the gap is the finite-width correction. Compare
    `analysis.jacobian_spectrum(...).log10_lyapunov[0]` * ln 10.

    Args:
      activation: registry name, `Activation` or callable phi.
      sigma_w2, sigma_b2: weight (times fan_in) and bias variances, >= 0.
      width: hidden width N (>= 1), the same for every block.
      q0: starting second moment for q* (> 0).
    Returns:
      Natural log per layer, broadcast shape of the arguments.
    Raises:
      ValueError: negative sigmas, `width` < 1, `q0` <= 0, unknown `activation`.
    References:
      Pennington, Schoenholz & Ganguli 2018, https://arxiv.org/abs/1802.09979 (free independence of
      D and W); Hanin & Nica, Products of many large random matrices and gradients in deep neural
      networks, 2018, https://arxiv.org/abs/1812.05994 (finite-width fluctuations of relu nets).

    Example:
      >>> from jaxvg import theory
      >>> round(float(theory.typical_log_rate("linear", 1.0, 0.0, width=2)), 6)   # (ln 1 - gamma)/2
      -0.288608
    """
    act = _prepare(activation, sigma_w2, sigma_b2, q0=q0)
    width = checks.positive_int("width", width)
    sw, sb, q0 = _float_args(sigma_w2, sigma_b2, q0)
    return _rate_jit(act, width, sw, _q_star_jit(act, sw, sb, q0))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _rate_jit(act, width, sw, qs):
    sw = jnp.broadcast_to(sw, qs.shape)
    forms = _forms(act)
    mu1, mu2 = forms.chi(qs), forms.dphi4(qs)
    n = jnp.asarray(width, sw.dtype)
    return 0.5 * (
        jnp.log(2.0 * sw * mu1 / n) + jax.scipy.special.digamma(n / 2.0) - 1.5 * (mu2 / mu1**2 - 1.0) / n
    )


def jacobian_moments(
    activation,
    sigma_w2: ArrayLike,
    sigma_b2: ArrayLike,
    *,
    depth: int,
    weights: str = "gaussian",
    q0: ArrayLike = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of the squared singular values of the input-output Jacobian (N -> inf).

    By free probability (the S-transform of J J^T is the product of the layers' S-transforms) the
    first two moments of the spectral density of J J^T for L layers at q* are

        mean     = chi_1^L,
        variance = mean^2 * L * (mu2 / mu1^2 - 1 + s),

    mu_k = E[phi'(sqrt(q*) z)^(2k)], s = 1 for Gaussian weights (W^T W is Marchenko-Pastur, whose
    normalised variance is 1) and s = 0 for scaled orthogonal weights (W^T W = sigma_w2 I). Linear
    nets: mu2 = mu1^2, so the variance is L mean^2 (Gaussian) or 0 (orthogonal: exact isometry).
    Closed forms give mu_k for relu, leaky_relu, hard_tanh, linear and erf; quadrature otherwise
    (the moments exist whenever phi'^4 is integrable).

    Args:
      activation: registry name, `Activation` or callable phi.
      sigma_w2, sigma_b2: weight (times fan_in) and bias variances, >= 0.
      depth: number of layers L (>= 1), all of the same width.
      weights: "gaussian" (W ~ N(0, sigma_w2 / N)) or "orthogonal" (sqrt(sigma_w2) times Haar).
      q0: starting second moment for q* (> 0); the inputs are assumed to be at q*.
    Returns:
      (mean, variance) of the eigenvalues of J J^T (dimensionless), each of the broadcast shape.
    Raises:
      ValueError: unknown `weights`, negative sigmas, `depth` < 1, `q0` <= 0, unknown `activation`.
    References:
      Pennington, Schoenholz & Ganguli 2017, https://arxiv.org/abs/1711.04735 (moments of J J^T from the S-transform);
      Pennington, Schoenholz & Ganguli 2018, https://arxiv.org/abs/1802.09979.

    Example:
      >>> from jaxvg import theory
      >>> [float(m) for m in theory.jacobian_moments("linear", 1.0, 0.0, depth=4)]
      [1.0, 4.0]
      >>> [round(float(m), 6) for m in theory.jacobian_moments("relu", 2.0, 0.0, depth=4, weights="orthogonal")]
      [1.0, 4.0]
    """
    checks.choice("weights", weights, WEIGHTS)
    act = _prepare(activation, sigma_w2, sigma_b2, q0=q0)
    depth = checks.positive_int("depth", depth)
    sw, sb, q0 = _float_args(sigma_w2, sigma_b2, q0)
    return _moments_jit(act, depth, weights, sw, _q_star_jit(act, sw, sb, q0))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _moments_jit(act, depth, weights, sw, qs):
    sw = jnp.broadcast_to(sw, qs.shape)
    forms = _forms(act)
    s = 1.0 if weights == "gaussian" else 0.0  # normalised variance of W^T W's spectrum
    mu1, mu2 = forms.chi(qs), forms.dphi4(qs)
    # chi^L through the log: XLA may rewrite (sw*mu1)**L as sw**L * mu1**L, which overflows to
    # inf * 0 = NaN for relu (sw = 2, mu1 = 1/2) at L >= 128 in float32.
    log_mean = depth * jnp.log(sw * mu1)
    mean = jnp.exp(log_mean)
    return mean, jnp.exp(2.0 * log_mean) * depth * (mu2 / mu1**2 - 1.0 + s)
