"""Depth scales, the order-to-chaos line and the layer-by-layer gradient profile of mean-field theory.

    xi_q = -1 / ln chi_q,  xi_c = -1 / ln chi_c,  xi_grad = -1 / ln chi_1     (layers)

(Schoenholz et al. 2017), the sigma_w2 where chi_1 = 1, and the predicted log10 gradient norm at
every layer of a finite-depth net whose input has second moment q0.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from jaxvg.nn import activations
from jaxvg.theory import expectations, inputs, maps

_BISECT = 64  # bisection steps of critical_sigma_w2 on log sigma_w2 in [1e-3, 1e4]


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
      (xi_q, xi_c) in layers (natural log: an e-fold per xi layers), each of the broadcast shape of
      the arguments. Accurate for large q* too (tanh at sigma_w2 = 1e8: (0.0987, 2.2148)).
    Raises:
      ValueError, TypeError: as `q_star`.
    References:
      Schoenholz et al. 2017, https://arxiv.org/abs/1611.01232, Sec. 3 (depth scales).

    Example:
      >>> from jaxvg import theory
      >>> xi_q, xi_c = theory.depth_scales("linear", 0.5, 1.0)   # chi_q = chi_c = 0.5
      >>> round(float(xi_q), 4), round(float(xi_c), 4)
      (1.4427, 1.4427)
    """
    act = inputs.checked_activation(activation, sigma_w2, sigma_b2, q0=q0)
    sw, sb, q0 = inputs.float_args(sigma_w2, sigma_b2, q0)
    qs = maps.q_star_kernel(act, sw, sb, q0)
    cs = maps.c_star_kernel(act, sw, sb, qs)
    return _depth_scales_jit(act, sw, qs, cs)


@functools.partial(jax.jit, static_argnums=0)
def _depth_scales_jit(act, sw, qs, cs):
    sw = jnp.broadcast_to(sw, qs.shape)
    forms = expectations.forms(act)
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
      xi_grad in layers (natural log: the squared norm changes by e per xi layers), broadcast shape
      of the arguments.
    Raises:
      ValueError, TypeError: as `chi_1`.
    References:
      Schoenholz et al. 2017, https://arxiv.org/abs/1611.01232, Sec. 4 (xi_nabla).

    Example:
      >>> from jaxvg import theory
      >>> round(float(theory.gradient_depth_scale("relu", 4.0, 0.0)), 4)   # -1 / ln 2
      -1.4427
    """
    return _neg_inv_log(maps.chi_1(activation, sigma_w2, sigma_b2, q0=q0))


def critical_sigma_w2(activation, sigma_b2: ArrayLike) -> jax.Array:
    """The weight variance on the order-to-chaos line: the root of chi_1(sigma_w2) = 1.

    Bisection (64 steps, jittable, vmappable over sigma_b2) on log sigma_w2 in [1e-3, 1e4], with
    q* (from q0 = 1) recomputed at every step; a sigma_w2 whose chi_1 is NaN (a length map that
    diverges, evaluated by quadrature at q = inf) counts as chaotic. NaN where chi_1 - 1 does not
    change sign on the bracket. Where chi_1 - 1 touches zero quadratically (tanh and erf at sigma_b2 = 0, where
    chi_1 - 1 ~ q*^2 on the chaotic side) the root is determined only to ~sqrt(eps).

    Args:
      activation: registry name, `Activation` or callable phi.
      sigma_b2: bias variance (>= 0), any shape.
    Returns:
      sigma_w2 at criticality (a variance times fan_in, dimensionless like sigma_w2), shape of `sigma_b2`.
    Raises:
      ValueError, TypeError: `sigma_b2` not a finite real >= 0, an unknown `activation`.
    References:
      Poole et al. 2016, https://arxiv.org/abs/1606.05340, Sec. 3 (the order-to-chaos line);
      Schoenholz et al. 2017, https://arxiv.org/abs/1611.01232, Sec. 3 (tanh, sigma_b2 = 0.05: sigma_w2 ~ 1.76).

    Example:
      >>> from jaxvg import theory
      >>> round(float(theory.critical_sigma_w2("relu", 0.1)), 5)
      2.0
    """
    act = activations.get(activation)
    inputs.check_real("sigma_b2", sigma_b2, lambda a: a >= 0, inputs.VARIANCE)
    (sb,) = inputs.float_args(sigma_b2)
    return _critical_jit(act, sb)


@functools.partial(jax.jit, static_argnums=0)
def _critical_jit(act, sb):
    forms = expectations.forms(act)

    def excess(log_sw, sb):
        sw = jnp.exp(log_sw)
        excess = sw * forms.chi(maps.solve_q_star(forms, sw, sb, jnp.ones_like(sb))) - 1.0
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
    activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *, depth: int, q0: ArrayLike = 1.0
) -> jax.Array:
    """Predicted log10 ||delta_l|| - log10 ||delta_L|| for l = 0..L, following q layer by layer.

    q_1 = sigma_w2 q0 + sigma_b2, q_{j+1} = q_map(q_j) (the pre-activation variance of block j),
    and profile[l] = 1/2 sum_{j=l+1..L} log10 chi(q_j), chi(q) = sigma_w2 E[phi'(sqrt(q) z)^2].
    So profile[L] = 0 and profile[0] is minus the decades the gradient gains from input to output
    (negative when it vanishes towards the input). Entry l belongs to h_l, the input of block l + 1
    (h_0 = x, h_L the last block's output): what
    `jaxvg.measure.gradient_flow(...).log10_act_grad - log10_act_grad[..., -1]` measures. Computed
    by a `lax.scan` over the L layers; depth and the result's size are checked before tracing
    (depth <= MAX_DEPTH = 100000, at most 1e8 entries).

    Args:
      activation: registry name, `Activation` or callable phi.
      sigma_w2, sigma_b2: weight (times fan_in) and bias variances, >= 0.
      depth: number of blocks L, an int in [1, MAX_DEPTH].
      q0: the input's second moment ||x||^2 / d0 (> 0), default 1.0 (as for `q_star` and the other
        functions: e.g. standardised inputs); a scalar or an array of per-example values, each
        giving its own profile (average the profiles, in decades, for a batch prediction).
    Returns:
      Decades (log10), shape broadcast(sigma_w2, sigma_b2, q0).shape + (depth + 1,).
    Raises:
      TypeError: `depth` not an int (bools too), non-real sigmas or `q0`.
      ValueError: `depth` outside [1, MAX_DEPTH], a result of over 1e8 entries, sigmas or `q0` out
        of range (as `q_star`), an unknown `activation`. All before tracing.
    References:
      Schoenholz et al. 2017, https://arxiv.org/abs/1611.01232, Sec. 4 (here with the
      layer-dependent q_l of the input rather than q*).

    Example:
      >>> from jaxvg import theory
      >>> [round(float(v), 4) for v in theory.gradient_profile("linear", 0.1, 0.0, depth=2)]
      [-1.0, -0.5, 0.0]
    """
    act = inputs.checked_activation(activation, sigma_w2, sigma_b2, q0=q0)
    depth = inputs.bounded_int("depth", depth, inputs.MAX_DEPTH)
    inputs.check_entries(
        "depth", depth, sigma_w2, sigma_b2, q0, per_entry=depth + 1, maximum=inputs.MAX_PROFILE_ENTRIES
    )
    return _profile_jit(act, depth, *inputs.float_args(sigma_w2, sigma_b2, q0))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _profile_jit(act, depth, sw, sb, q0):
    forms = expectations.forms(act)

    def one(sw, sb, q0):
        def step(q, _):
            return sw * forms.V(q) + sb, q

        _, qs = lax.scan(step, sw * q0 + sb, None, length=depth)  # q_1 .. q_L
        half_log10_chi = 0.5 * jnp.log10(sw * forms.chi(qs))
        tail = jnp.cumsum(half_log10_chi[::-1])[::-1]  # entry l: sum over j = l+1 .. L
        return jnp.concatenate([tail, jnp.zeros((1,), tail.dtype)])

    return jnp.vectorize(one, signature="(),(),()->(l)")(sw, sb, q0)


def signal_profile(
    activation,
    sigma_w2: ArrayLike,
    sigma_b2: ArrayLike,
    *,
    depth: int,
    q0: ArrayLike = 1.0,
    c0: ArrayLike = 0.0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Predicted forward signal of an MLP, layer by layer: (q, c, q_preact).

    Pre-activations: q_1 = sigma_w2 q0 + sigma_b2, c_1 = (sigma_w2 q0 c0 + sigma_b2) / q_1, then
    the q and c maps (`q_map`, `c_map` at the current q_j, not at q*). Block outputs h_j = phi(z_j):
    q[j] = E[phi(u)^2] and c[j] = E[phi(u1) phi(u2)] / E[phi(u)^2] (Var u = q_j, Corr = c_j), the
    per-unit second moment and the cosine similarity of two inputs' representations, what
    `jaxvg.measure.signal_propagation` measures as `q` and `c`; entry 0 is the input (q0, c0).

    Args:
      activation: registry name, `Activation` or callable phi.
      sigma_w2, sigma_b2: weight (times fan_in) and bias variances, >= 0 (scalars or arrays).
      depth: number of blocks L, an int in [1, MAX_DEPTH].
      q0: the inputs' second moment ||x||^2 / d0 (> 0), both inputs alike.
      c0: the inputs' cosine similarity, in [-1, 1].
    Returns:
      (q, c, q_preact): q and c of shape broadcast(args) + (depth + 1,), q_preact (the
      pre-activation second moment q_1..q_L, what `q_map` iterates) + (depth,); q in the squared
      units of x, c dimensionless.
    Raises:
      TypeError, ValueError: as `gradient_profile`, and `c0` outside [-1, 1].
    References:
      Poole et al. 2016, https://arxiv.org/abs/1606.05340, Sec. 2-3 (length and correlation maps).

    Example:
      >>> from jaxvg import theory
      >>> q, c, pre = theory.signal_profile("relu", 2.0, 0.0, depth=2, q0=1.0, c0=0.0)
      >>> [round(float(v), 4) for v in q], [round(float(v), 4) for v in c]   # He init keeps q
      ([1.0, 1.0, 1.0], [0.0, 0.3183, 0.4937])
    """
    act = inputs.checked_activation(activation, sigma_w2, sigma_b2, q0=q0)
    inputs.check_real("c0", c0, lambda a: (a >= -1) & (a <= 1), "a cosine similarity in [-1, 1]")
    depth = inputs.bounded_int("depth", depth, inputs.MAX_DEPTH)
    inputs.check_entries(
        "depth",
        depth,
        sigma_w2,
        sigma_b2,
        q0,
        c0,
        per_entry=3 * depth + 2,
        maximum=inputs.MAX_PROFILE_ENTRIES,
    )
    return _signal_jit(act, depth, *inputs.float_args(sigma_w2, sigma_b2, q0, c0))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _signal_jit(act, depth, sw, sb, q0, c0):
    forms = expectations.forms(act)

    def one(sw, sb, q0, c0):
        def step(qc, _):
            q, c = qc
            v, k = forms.V(q), forms.K(q, c)
            q_next = sw * v + sb
            return (q_next, (sw * k + sb) / q_next), (v, k / v, q)

        q1 = sw * q0 + sb
        _, (v, c, pre) = lax.scan(step, (q1, (sw * q0 * c0 + sb) / q1), None, length=depth)
        return jnp.concatenate([q0[None], v]), jnp.concatenate([c0[None], c]), pre

    return jnp.vectorize(one, signature="(),(),(),()->(l),(l),(m)")(sw, sb, q0, c0)
