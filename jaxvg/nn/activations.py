"""One activation registry, shared by the models and the mean-field theory.

Each entry is an `Activation`: the function, its derivative, and (where they exist) closed-form
Gaussian expectations that `jaxvg.theory` uses instead of quadrature (relu, hard_tanh, linear and erf
have kinks or closed forms that quadrature handles badly). Because the network and its prediction
read the same object, they cannot drift apart (the neural-tangents lesson).

Example:
  >>> from jaxvg.nn import activations
  >>> act = activations.get("sigmoid")
  >>> float(act.dfn(0.0))
  0.25
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxvg import quadrature

ArrayFn = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True, eq=False)
class Activation:
    """An elementwise activation phi with its derivative.

    Attributes:
      name: registry name (or the callable's `__name__`).
      fn: phi, elementwise.
      dfn: phi', elementwise (the subgradient 0 at kinks, e.g. relu'(0) = 0).
      closed_forms: optional dict of closed-form Gaussian expectations used by `jaxvg.theory`,
        keyed by `"q_map"` (E[phi(u)^2]), `"chi"` (E[phi'(u)^2]), `"dphi4"` (E[phi'(u)^4]),
        `"c_map"` (E[phi(u1) phi(u2)]), `"chi_c"` (E[phi'(u1) phi'(u2)]), u ~ N(0, q), Corr(u1, u2) = c;
        absent keys fall back to quadrature (see `jaxvg.theory`).
      smooth: False for activations with kinks (relu, hard_tanh, leaky_relu), where quadrature
        of phi' converges slowly.
      dphi_bound: an upper bound on |phi'| over all inputs when one is known (2 for every registry
        activation; None for a wrapped callable, whose phi' may be any size). With it, the φ′
        statistics of `jaxvg.measure.gradient_flow` need no path for sums of squares that overflow
        (`jaxvg.measure.dphi.dphi_stats_bounded`).

    Instances compare by identity and are hashable, so they can sit in an NNX graphdef as static
    data: two models built with the same name share one object and one compiled program.
    """

    name: str
    fn: ArrayFn
    dfn: ArrayFn
    closed_forms: dict[str, Callable[..., Any]] = dataclasses.field(default_factory=dict)
    smooth: bool = True
    dphi_bound: float | None = None

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fn(x)

    def d2fn(self, x: jax.Array) -> jax.Array:
        """phi'', elementwise, by forward-mode differentiation of `dfn`."""
        x = jnp.asarray(x)
        return jax.jvp(self.dfn, (x,), (jnp.ones_like(x),))[1]

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"


def _elementwise_derivative(fn: ArrayFn) -> ArrayFn:
    def dfn(x):
        x = jnp.asarray(x)
        return jax.jvp(fn, (x,), (jnp.ones_like(x),))[1]

    return dfn


def _sigmoid_d(x):
    s = jax.nn.sigmoid(x)
    return s * (1 - s)


def _tanh_d(x):
    t = jnp.tanh(x)
    return 1 - t * t


def _relu_d(x):
    x = jnp.asarray(x)
    return (x > 0).astype(x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32)


DPHI_BOUND = 2.0
"""`Activation.dphi_bound` of every registry activation: |phi'| <= 2 everywhere."""

LEAKY_RELU_SLOPE = 0.01  # negative slope of leaky_relu (jax.nn's default)


def _leaky_relu(x):
    return jnp.where(x > 0, x, LEAKY_RELU_SLOPE * x)


def _leaky_relu_d(x):
    x = jnp.asarray(x)
    return jnp.where(x > 0, 1.0, LEAKY_RELU_SLOPE).astype(jnp.result_type(x, jnp.float32))


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)


def _erf_d(x):
    return 2.0 / jnp.sqrt(jnp.pi) * jnp.exp(-jnp.square(x))


def _hard_tanh(x):
    return jnp.clip(x, -1.0, 1.0)


def _hard_tanh_d(x):
    x = jnp.asarray(x)
    return (jnp.abs(x) < 1).astype(jnp.result_type(x, jnp.float32))


def _swish(x):
    return x * jax.nn.sigmoid(x)


def _linear(x):
    return x


def _linear_d(x):
    return jnp.ones_like(jnp.asarray(x, dtype=jnp.result_type(x, jnp.float32)))


# --- Closed-form Gaussian expectations (used by jaxvg.theory instead of quadrature) -------------
# Every entry maps (q) or (q, c) to an expectation over u ~ N(0, q), or over (u1, u2) with
# Var u1 = Var u2 = q and Corr(u1, u2) = c; the weight and bias variances are applied in
# jaxvg.theory. Keys:
#   "q_map":  V(q)      = E[phi(u)^2]
#   "chi":    E[phi'(u)^2]
#   "dphi4":  E[phi'(u)^4]
#   "c_map":  K(q, c)   = E[phi(u1) phi(u2)]
#   "chi_c":  E[phi'(u1) phi'(u2)]
# They broadcast elementwise over q and c and are differentiable in q (jaxvg.theory takes
# dV/dq by forward-mode autodiff for the depth scale xi_q).


def _arccos_j1(c):
    """J1(t) / pi = (sin t + (pi - t) cos t) / pi, t = arccos(c) (Cho & Saul 2009's arc-cosine kernel
    of degree 1): E[relu(u1) relu(u2)] = (q / 2) J1(t) / pi."""
    theta = jnp.arccos(jnp.clip(c, -1.0, 1.0))
    return (jnp.sqrt(jnp.clip(1.0 - c * c, 0.0, None)) + (jnp.pi - theta) * c) / jnp.pi


def _relu_c_map(q, c):
    return 0.5 * q * _arccos_j1(c)


def _relu_chi_c(q, c):
    del q
    theta = jnp.arccos(jnp.clip(c, -1.0, 1.0))
    return (jnp.pi - theta) / (2.0 * jnp.pi)


def _half(q):
    return 0.5 * jnp.ones_like(q)


def _leaky_closed_forms(a: float) -> dict[str, Callable[..., Any]]:
    # phi = (1 - a) relu(x) + a x, so every moment is relu's plus linear cross terms.
    return {
        "q_map": lambda q: 0.5 * (1.0 + a * a) * q,
        "chi": lambda q: 0.5 * (1.0 + a * a) * jnp.ones_like(q),
        "dphi4": lambda q: 0.5 * (1.0 + a**4) * jnp.ones_like(q),
        "c_map": lambda q, c: (1.0 - a) ** 2 * _relu_c_map(q, c) + a * q * c,
        "chi_c": lambda q, c: (1.0 - a) ** 2 * _relu_chi_c(q, c) + a,
    }


def _erf_q_map(q):
    # (2/pi) arcsin(2q / (1 + 2q)), written as an arctan: its q-derivative (for xi_q) stays accurate
    # where 2q / (1 + 2q) rounds to 1 (q > 1e7 in float32).
    return 2.0 / jnp.pi * jnp.arctan2(2.0 * q, jnp.sqrt(1.0 + 4.0 * q))


def _erf_c_map(q, c):  # Williams 1997, the arcsine kernel
    return 2.0 / jnp.pi * jnp.arcsin(2.0 * q * c / (1.0 + 2.0 * q))


def _erf_chi(q):
    return 4.0 / jnp.pi / jnp.sqrt(1.0 + 4.0 * q)


def _erf_dphi4(q):
    return 16.0 / jnp.pi**2 / jnp.sqrt(1.0 + 8.0 * q)


def _erf_chi_c(q, c):  # E[exp(-u1^2 - u2^2)] = det(I + 2 Sigma)^(-1/2), the det factored (no cancellation)
    return 4.0 / jnp.pi / jnp.sqrt((1.0 + 2.0 * q * (1.0 - c)) * (1.0 + 2.0 * q * (1.0 + c)))


def _ncdf(x):
    return 0.5 * jax.scipy.special.erfc(-x / jnp.sqrt(2.0))


_npdf = quadrature.normal_pdf


def _hard_tanh_q_map(q):
    # E[min(u^2, 1)] = q erf(1/sqrt(2q)) - sqrt(2q/pi) exp(-1/(2q)) + erfc(1/sqrt(2q)); -> q as q -> 0.
    pos = q > 0
    qs = jnp.where(pos, q, 1.0)
    b = 1.0 / jnp.sqrt(2.0 * qs)
    v = (
        qs * jax.scipy.special.erf(b)
        - jnp.sqrt(2.0 * qs / jnp.pi) * jnp.exp(-b * b)
        + jax.scipy.special.erfc(b)
    )
    return jnp.where(pos, v, q)


def _hard_tanh_chi(q):  # P(|u| < 1)
    pos = q > 0
    qs = jnp.where(pos, q, 1.0)
    return jnp.where(pos, jax.scipy.special.erf(1.0 / jnp.sqrt(2.0 * qs)), jnp.ones_like(q))


_HT_NODES = 48  # Gauss-Legendre nodes per panel of the hard_tanh 2D forms (smooth integrands)


def _hard_tanh_cond_mean(m, s):
    """E[clip(X, -1, 1)] for X ~ N(m, s^2), s > 0."""
    hi, lo = (1.0 - m) / s, (-1.0 - m) / s
    return _ncdf(-hi) - _ncdf(lo) + m * (_ncdf(hi) - _ncdf(lo)) - s * (_npdf(hi) - _npdf(lo))


def _hard_tanh_conditional(q, c):
    """(q, c) in one float dtype, sqrt(q) (1 at q = 0), the sd s of u2 given u1 (floored above 0) and
    the kink |u1| = 1 in z1 = u1 / sqrt(q) (capped at the quadrature's Z_MAX)."""
    q, c = jnp.broadcast_arrays(q, c)
    dtype = jnp.result_type(q, c, float)
    q, c = q.astype(dtype), c.astype(dtype)
    rq = jnp.sqrt(jnp.where(q > 0, q, 1.0))
    s = jnp.maximum(rq * jnp.sqrt(jnp.clip(1.0 - c * c, 0.0, None)), jnp.finfo(dtype).tiny ** 0.5)
    return q, c, rq, s, jnp.minimum(1.0 / rq, quadrature.Z_MAX)


def _hard_tanh_c_map(q, c):
    # E[clip(u1) E[clip(u2) | u1]] with u2 | u1 ~ N(c u1, q (1 - c^2)); the conditional mean is
    # closed form, the outer integral over z1 = u1/sqrt(q) is split at the kinks |u1| = 1 and
    # |c u1| = 1 and done by Gauss-Legendre (the integrand is even in z1).
    q, c, rq, s, b1 = _hard_tanh_conditional(q, c)
    b2 = jnp.minimum(1.0 / (jnp.abs(c) * rq + jnp.finfo(q.dtype).tiny), quadrature.Z_MAX)
    edges = jnp.stack([jnp.zeros_like(q), b1, b2, jnp.full_like(q, quadrature.Z_MAX)], axis=-1)
    rq_, c_, s_ = (x[..., None, None] for x in (rq, c, s))  # against the nodes, S + (panel, node)

    def integrand(z):
        u = rq_ * z
        return 2.0 * _npdf(z) * jnp.clip(u, -1.0, 1.0) * _hard_tanh_cond_mean(c_ * u, s_)

    return jnp.where(q > 0, quadrature.integrate(integrand, edges, n=_HT_NODES), q * c)


def _hard_tanh_chi_c(q, c):
    # P(|u1| < 1, |u2| < 1) = integral over |z1| < 1/sqrt(q) of phi(z1) P(|u2| < 1 | u1).
    q, c, rq, s, b1 = _hard_tanh_conditional(q, c)
    rq_, c_, s_ = (x[..., None, None] for x in (rq, c, s))

    def integrand(z):
        m = c_ * rq_ * z
        return _npdf(z) * (_ncdf((1.0 - m) / s_) - _ncdf((-1.0 - m) / s_))

    total = quadrature.integrate(integrand, jnp.stack([-b1, b1], axis=-1), n=_HT_NODES)
    return jnp.where(q > 0, total, jnp.ones_like(q))


_RELU_FORMS = {
    "q_map": lambda q: 0.5 * q,
    "chi": _half,
    "dphi4": _half,
    "c_map": _relu_c_map,
    "chi_c": _relu_chi_c,
}
_LINEAR_FORMS = {
    "q_map": lambda q: q,
    "chi": jnp.ones_like,
    "dphi4": jnp.ones_like,
    "c_map": lambda q, c: q * c,
    "chi_c": lambda q, c: jnp.ones_like(q * c),
}
_ERF_FORMS = {
    "q_map": _erf_q_map,
    "chi": _erf_chi,
    "dphi4": _erf_dphi4,
    "c_map": _erf_c_map,
    "chi_c": _erf_chi_c,
}
_HARD_TANH_FORMS = {
    "q_map": _hard_tanh_q_map,
    "chi": _hard_tanh_chi,
    "dphi4": _hard_tanh_chi,  # phi' is 0 or 1, so phi'^4 = phi'^2
    "c_map": _hard_tanh_c_map,
    "chi_c": _hard_tanh_chi_c,
}


def _make_registry() -> dict[str, Activation]:
    entries = [
        Activation("sigmoid", jax.nn.sigmoid, _sigmoid_d),
        Activation("tanh", jnp.tanh, _tanh_d),
        Activation("relu", jax.nn.relu, _relu_d, closed_forms=_RELU_FORMS, smooth=False),
        Activation(
            "leaky_relu",
            _leaky_relu,
            _leaky_relu_d,
            closed_forms=_leaky_closed_forms(LEAKY_RELU_SLOPE),
            smooth=False,
        ),
        Activation("gelu", _gelu, _elementwise_derivative(_gelu)),
        Activation("selu", jax.nn.selu, _elementwise_derivative(jax.nn.selu), smooth=False),
        Activation("elu", jax.nn.elu, _elementwise_derivative(jax.nn.elu), smooth=False),
        Activation("erf", jax.scipy.special.erf, _erf_d, closed_forms=_ERF_FORMS),
        Activation("hard_tanh", _hard_tanh, _hard_tanh_d, closed_forms=_HARD_TANH_FORMS, smooth=False),
        Activation("softplus", jax.nn.softplus, jax.nn.sigmoid),
        Activation("swish", _swish, _elementwise_derivative(_swish)),
        Activation("linear", _linear, _linear_d, closed_forms=_LINEAR_FORMS),
    ]
    # every registry phi' lies within [-2, 2] (the largest, selu's lambda * alpha, is 1.76)
    return {a.name: dataclasses.replace(a, dphi_bound=DPHI_BOUND) for a in entries}


ACTIVATIONS: dict[str, Activation] = _make_registry()
_FROM_CALLABLE: dict[Any, Activation] = {}


def get(activation: str | Activation | ArrayFn) -> Activation:
    """Look up an activation by name, pass an `Activation` through, or wrap a callable.

    Args:
      activation: a registry name (one of `ACTIVATIONS`), an `Activation`, or an elementwise
        callable phi (its derivative then comes from `jax.jvp`; the wrapper is cached per callable
        so the same function always maps to the same `Activation`).
    Returns:
      The `Activation`.
    Raises:
      ValueError: if `activation` is an unknown name.
      TypeError: if it is neither a string nor callable.
    """
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"`activation` must be one of {sorted(ACTIVATIONS)} or a callable, got {activation!r}."
            )
        return ACTIVATIONS[activation]
    if callable(activation):
        if activation not in _FROM_CALLABLE:
            name = getattr(activation, "__name__", repr(activation))
            _FROM_CALLABLE[activation] = Activation(name, activation, _elementwise_derivative(activation))
        return _FROM_CALLABLE[activation]
    raise TypeError(
        f"`activation` must be a name in {sorted(ACTIVATIONS)} or a callable, got {type(activation).__name__}."
    )
