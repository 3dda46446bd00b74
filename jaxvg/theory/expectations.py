"""The Gaussian expectations of one activation that the theory needs: closed form or quadrature.

For u ~ N(0, q) and (u1, u2) Gaussian with Var u_i = q, Corr(u1, u2) = c:

    V(q)        = E[phi(u)^2]                   the length map before sigma_w2, sigma_b2
    dV(q)       = dV/dq = E[u phi(u) phi'(u)] / q    (Gaussian integration by parts)
    chi(q)      = E[phi'(u)^2]
    dphi4(q)    = E[phi'(u)^4]
    K(q, c)     = E[phi(u1) phi(u2)]
    chi_c(q, c) = E[phi'(u1) phi'(u2)]

Each comes from `activation.closed_forms` where the registry has it (relu, leaky_relu, linear, erf,
hard_tanh), else from `jaxvg.quadrature` (graded Gauss-Legendre panels, accurate for q up to
~1e14). Private to `jaxvg.theory`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvg import quadrature
from jaxvg.nn import activations


class Forms(NamedTuple):
    """Gaussian expectations of one activation (closed form or quadrature), elementwise."""

    V: Callable  # q -> E[phi(u)^2]
    dV: Callable  # q -> dV/dq
    chi: Callable  # q -> E[phi'(u)^2]
    dphi4: Callable  # q -> E[phi'(u)^4]
    K: Callable  # (q, c) -> E[phi(u1) phi(u2)]
    chi_c: Callable  # (q, c) -> E[phi'(u1) phi'(u2)]


@functools.cache
def forms(act: activations.Activation) -> Forms:
    """The `Forms` of `act`, built once per activation (activations hash by identity)."""
    cf = dict(act.closed_forms)
    phi, dphi = act.fn, act.dfn

    def V(q):
        return cf["q_map"](q) if "q_map" in cf else quadrature.expect_1d(lambda u: phi(u) ** 2, q)

    def dV(q):
        if "q_map" in cf:
            return jax.jvp(cf["q_map"], (q,), (jnp.ones_like(q),))[1]
        # d/dq E[phi(sqrt(q) z)^2] = E[u phi(u) phi'(u)] / q; at q = 0 the limit phi'(0)^2 + phi(0) phi''(0).
        pos = q > 0
        qs = jnp.where(pos, q, 1.0)
        inner = quadrature.expect_1d(lambda u: u * phi(u) * dphi(u), qs) / qs
        zero = jnp.zeros_like(q)
        return jnp.where(pos, inner, dphi(zero) ** 2 + phi(zero) * act.d2fn(zero))

    def chi(q):
        return cf["chi"](q) if "chi" in cf else quadrature.expect_1d(lambda u: dphi(u) ** 2, q)

    def dphi4(q):
        return cf["dphi4"](q) if "dphi4" in cf else quadrature.expect_1d(lambda u: dphi(u) ** 4, q)

    def K(q, c):
        return cf["c_map"](q, c) if "c_map" in cf else quadrature.expect_2d(phi, phi, q, c)

    def chi_c(q, c):
        return cf["chi_c"](q, c) if "chi_c" in cf else quadrature.expect_2d(dphi, dphi, q, c)

    return Forms(V, dV, chi, dphi4, K, chi_c)


@functools.partial(jax.jit, static_argnums=(0, 1))
def evaluate(act: activations.Activation, key: str, *args: jax.Array) -> jax.Array:
    """One expectation of `Forms` (by field name), jitted per activation, elementwise over args."""
    return getattr(forms(act), key)(*args)
