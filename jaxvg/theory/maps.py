"""The length and correlation maps of a wide random network and their fixed points.

    q_{l+1} = sigma_w2 * E[phi(sqrt(q_l) z)^2] + sigma_b2,                     z ~ N(0, 1)
    c_{l+1} = (sigma_w2 * E[phi(u1) phi(u2)] + sigma_b2) / q_{l+1},     (u1, u2) ~ N(0, q_l [[1, c_l], [c_l, 1]])

(Poole et al. 2016), their fixed points q* and c*, and chi_1 = sigma_w2 * E[phi'(sqrt(q*) z)^2],
the per-layer factor of the squared gradient norm (Schoenholz et al. 2017). The fixed-point solvers
here are shared with `depth` and `spectra`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from jaxvg.theory import expectations, inputs

_MAX_ITER = 2000  # fixed-point iterations (stopped early on convergence)
_NEWTON = 64  # guarded Newton steps that polish a fixed point after the iteration
_C_ITER = 4  # c* iterations of the map from c = 0 before Newton (each one a 2D quadrature)
_C_NEWTON = 64  # at most this many guarded Newton steps for c* (stopped when converged)


# --- fixed-point solvers (scalar, jittable; shared with depth and spectra) -----------------------


def solve_q_star(forms: expectations.Forms, sw, sb, q0):
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


def solve_c_star(forms: expectations.Forms, sw, sb, qs):
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
def q_star_kernel(act, sw, sb, q0):
    """q* elementwise over checked float arrays of one shape (the body of `q_star`)."""
    return jnp.vectorize(functools.partial(solve_q_star, expectations.forms(act)))(sw, sb, q0)


@functools.partial(jax.jit, static_argnums=0)
def c_star_kernel(act, sw, sb, qs):
    """c* at q* = `qs` elementwise over checked float arrays of one shape (the body of `c_star`).

    One point at a time (`lax.map`), so that each runs only its own iterations and each 2D
    expectation evaluates only the quadrature rule its q needs (a batched `lax.cond` runs both).
    """
    solve = functools.partial(solve_c_star, expectations.forms(act))
    flat = lax.map(lambda args: solve(*args), tuple(jnp.ravel(x) for x in (sw, sb, qs)))
    return jnp.reshape(flat, qs.shape)


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
      q_{l+1}, in the units of q; the broadcast shape of the arguments.
    Raises:
      TypeError, ValueError (naming the argument, its value and range): an unknown `activation`,
        `sigma_w2` or `sigma_b2` not a finite real >= 0, `q` not a finite real > 0.
    References:
      Poole et al. 2016, https://arxiv.org/abs/1606.05340, Sec. 2 (the length map).

    Example:
      >>> from jaxvg import theory
      >>> float(theory.q_map("relu", 2.0, 0.5, q=3.0))   # 2 * 3/2 + 0.5
      3.5
    """
    act = inputs.checked_activation(activation, sigma_w2, sigma_b2, q=q)
    return _q_map_jit(act, *inputs.float_args(sigma_w2, sigma_b2, q))


@functools.partial(jax.jit, static_argnums=0)
def _q_map_jit(act, sw, sb, q):
    return jnp.vectorize(lambda sw, sb, q: sw * expectations.forms(act).V(q) + sb)(sw, sb, q)


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
      q0: starting second moment (> 0), in the units of q.
    Returns:
      q* in the units of q (squared input units of phi), broadcast shape of the arguments.
    Raises:
      TypeError, ValueError: `sigma_w2`, `sigma_b2` not finite reals >= 0; `q0` not a finite real > 0;
        `activation` neither a registry name nor callable.
    References:
      Poole et al. 2016, https://arxiv.org/abs/1606.05340, Sec. 2 (its fixed point).

    Example:
      >>> from jaxvg import theory
      >>> round(float(theory.q_star("relu", 1.0, 0.5)), 6)   # 0.5 / (1 - 1/2)
      1.0
      >>> float(theory.q_star("relu", 3.0, 0.0)), float(theory.q_star("tanh", 0.5, 0.0))
      (inf, 0.0)
    """
    act = inputs.checked_activation(activation, sigma_w2, sigma_b2, q0=q0)
    return q_star_kernel(act, *inputs.float_args(sigma_w2, sigma_b2, q0))


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
      c_{l+1} (a correlation, dimensionless), broadcast shape of the arguments.
    Raises:
      ValueError: `c` outside [-1, 1], and (with TypeError for non-reals) bad sigmas, `q`, `activation`.
    References:
      Poole et al. 2016, https://arxiv.org/abs/1606.05340, Sec. 3 (the correlation map).

    Example:
      >>> from jaxvg import theory
      >>> round(float(theory.c_map("linear", 0.5, 1.0, c=0.0, q=2.0)), 6)   # (0 + 1) / (1 + 1)
      0.5
    """
    extra = {} if q is None else {"q": q}
    act = inputs.checked_activation(activation, sigma_w2, sigma_b2, **extra)
    inputs.check_real("c", c, lambda a: (a >= -1) & (a <= 1), "a correlation in [-1, 1]")
    if q is None:
        sw, sb, c = inputs.float_args(sigma_w2, sigma_b2, c)
        qs = q_star_kernel(act, sw, sb, jnp.ones_like(sw))
        qs = jnp.where((qs > 0) & jnp.isfinite(qs), qs, jnp.nan)
        return _c_map_jit(act, sw, sb, c, qs)
    return _c_map_jit(act, *inputs.float_args(sigma_w2, sigma_b2, c, q))


@functools.partial(jax.jit, static_argnums=0)
def _c_map_jit(act, sw, sb, c, q):
    forms = expectations.forms(act)
    return jnp.vectorize(lambda sw, sb, c, q: (sw * forms.K(q, c) + sb) / (sw * forms.V(q) + sb))(
        sw, sb, c, q
    )


def c_star(activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *, q0: ArrayLike = 1.0) -> jax.Array:
    """Stable fixed point c* of the correlation map at q*.

    c* = 1 in the ordered phase (chi_1 <= 1) and where q* = 0 (sigma_b2 = 0, ordered); in the
    chaotic phase the stable fixed point c* < 1, found by iterating c_map from c = 0 (at most 4
    steps) and then guarded Newton steps (slope chi_c), which converge from below because the map
    is convex on [0, 1]. NaN where q* = inf (the length map diverges).

    Args:
      activation: registry name, `Activation` or callable phi.
      sigma_w2, sigma_b2: weight (times fan_in) and bias variances, >= 0.
      q0: starting second moment for q* (> 0).
    Returns:
      c* in [-1, 1] (dimensionless), broadcast shape of the arguments.
    Raises:
      ValueError, TypeError: as `q_star`.
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
    act = inputs.checked_activation(activation, sigma_w2, sigma_b2, q0=q0)
    sw, sb, q0 = inputs.float_args(sigma_w2, sigma_b2, q0)
    return c_star_kernel(act, sw, sb, q_star_kernel(act, sw, sb, q0))


def chi_1(activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *, q0: ArrayLike = 1.0) -> jax.Array:
    """chi_1 = sigma_w2 * E[phi'(sqrt(q*) z)^2]: the per-layer factor of the squared gradient norm.

    chi_1 < 1: ordered phase, gradients vanish as chi_1^(L/2) in norm; chi_1 > 1: chaotic, they
    explode; chi_1 = 1: criticality. Where q* = inf it is evaluated at q = inf: exact for the
    positively homogeneous closed forms (relu: sigma_w2 / 2); by quadrature it is sigma_w2 times the
    mean of phi'(+inf)^2 and phi'(-inf)^2 where those limits exist, else NaN. Accurate at every
    finite q*: for large q* the expectation is a peak of width 1/sqrt(q*) in z, resolved by the
    graded quadrature, and chi_1 -> sigma_w2 (integral of phi'(u)^2 du) / sqrt(2 pi q*) (tanh:
    (4/3) sqrt(sigma_w2 / (2 pi)), since q* -> sigma_w2).

    Args:
      activation: registry name, `Activation` or callable phi.
      sigma_w2, sigma_b2: weight (times fan_in) and bias variances, >= 0.
      q0: starting second moment for q* (> 0).
    Returns:
      chi_1 (dimensionless), broadcast shape of the arguments.
    Raises:
      ValueError, TypeError: as `q_star` (None, strings, bools and complex numbers are TypeErrors).
    References:
      Poole et al. 2016, https://arxiv.org/abs/1606.05340, Sec. 3 (chi_1, the slope of the c map at c = 1);
      Schoenholz et al. 2017, https://arxiv.org/abs/1611.01232, Sec. 4 (gradients).

    Example:
      >>> from jaxvg import theory
      >>> float(theory.chi_1("relu", 3.0, 0.1))   # sigma_w2 / 2 at any q
      1.5
    """
    act = inputs.checked_activation(activation, sigma_w2, sigma_b2, q0=q0)
    sw, sb, q0 = inputs.float_args(sigma_w2, sigma_b2, q0)
    qs = q_star_kernel(act, sw, sb, q0)
    return jnp.broadcast_to(sw, qs.shape) * expectations.evaluate(act, "chi", qs)
