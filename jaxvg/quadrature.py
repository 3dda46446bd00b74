"""Gaussian expectations by graded Gauss-Legendre panels, accurate from q -> 0 to q ~ 1e14.

The one quadrature of jaxvg, shared by the activation registry (`jaxvg.nn.activations`, whose
hard_tanh forms integrate a closed-form conditional mean over panels cut at the kinks) and the
mean-field theory (`jaxvg.theory`). It imports nothing from jaxvg, so both can use it: `jaxvg.nn`
sits below `jaxvg.theory` and must not import it, which is why this module lives at the package
root (beside `jaxvg.checks`) and not inside `jaxvg.theory`.

    integrate(f, edges)       Gauss-Legendre on each panel between consecutive edges, summed
    panel_edges(centre, k)    sorted edges on [-Z_MAX, Z_MAX], graded towards `centre` at scale 1/k
    expect_1d(f, q)           E[f(sqrt(q) z)],       z ~ N(0, 1)
    expect_2d(f1, f2, q, c)   E[f1(u1) f2(u2)],      Var u_i = q, Corr(u1, u2) = c

Why graded panels. For large q the integrand f(sqrt(q) z) built from an activation's derivative
(phi'(u)^2 of tanh, sigmoid, erf) is a peak of width ~1/sqrt(q) in z: at q = 1e8 it is 1e-4 wide,
narrower than the gaps of any fixed rule on [-10, 10], which then returns ~0 instead of
(1/sqrt(2 pi q)) * integral of f. So z is cut at 0 (the kink of relu-like activations, and the
real part of the complex poles of tanh and sigmoid, both harmless on a panel edge) and at
+-g / sqrt(q) for g in LADDER = (2, 8, 36): panels of geometrically growing width that hold
|u| <= 36 (sech^4(36) ~ e^-144, sigmoid'(36)^2 ~ e^-72), then the Gaussian tail to
|z| = Z_MAX = 10 (the mass beyond is 1.5e-23). Edges beyond Z_MAX are clipped, so for q <= 13 the
1D rule is two panels [-10, 0], [0, 10].

Two-dimensional expectations use two rules, by q. Up to Q_POLAR = 20 a polar rule with fixed nodes
(cheap: 12288 evaluations, the cosines shared by all radii), whose angular sectors end on the
kink lines u1 = 0 and u2 = 0. Beyond, where the features in angle shrink as 1/(sqrt(q) r), an
iterated rule: u1 = sqrt(q) z1, u2 = sqrt(q) (c z1 + s z2), s = sqrt(1 - c^2); the inner rule in
z2 is graded towards m = -c z1 / s, where u2 = 0, at scale 1/(sqrt(q) s), and the outer one in z1
towards 0 at the scale 1/sqrt(q) of f1 and at the scale s/|c| over which E[f2(u2) | z1] turns (a
kink of f2 smoothed by the conditional spread); both are also cut at 0 and +-2.5, the Gaussian's
own scale. So the peaks and kinks of both factors sit on panel edges at every q and c.

Accuracy, float64, measured against scipy's adaptive quadrature (tanh, sigmoid, relu, gelu) and
the closed forms of erf and relu over q in [1e-6, 1e14] and c in [-1, 1]: <= 2e-14 relative in 1D
(8 panels of 24 nodes), <= 1e-10 in 2D (polar: <= 2e-11; graded: 16 x 11 panels of 14 x 14
nodes); float32 rounding (~1e-6) without x64. The edges are held out of differentiation
(`lax.stop_gradient`): the exact integral does not depend on them. No argument checks: these
functions run under jit on traced values; the public theory functions check their inputs.

References:
  Golub & Welsch, Calculation of Gauss quadrature rules, Math. Comp. 23, 1969,
    https://doi.org/10.1090/S0025-5718-69-99647-1 (the rules);
  Trefethen, Is Gauss quadrature better than Clenshaw-Curtis?, SIAM Review 50, 2008,
    https://doi.org/10.1137/060659831 (convergence with poles near the interval: why the poles of
    tanh sit on a panel edge).

Example:
  >>> import jax.numpy as jnp
  >>> from jaxvg import quadrature
  >>> round(float(quadrature.expect_1d(lambda u: u**2, jnp.asarray(3.0))), 5)   # E[u^2] = q
  3.0
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

ArrayFn = Callable[[jax.Array], jax.Array]

Z_MAX = 10.0  # |z| <= 10: the standard normal mass beyond is 1.5e-23
LADDER = (2.0, 8.0, 36.0)  # panel edges at centre +- g / scale: geometric grading towards a feature
NODES_1D = 24  # Gauss-Legendre nodes per panel of expect_1d (8 panels)
Q_POLAR = 20.0  # expect_2d: the polar rule up to this q, the graded iterated rule beyond
POLAR_NODES = (64, 48)  # polar rule: nodes in r on [0, Z_MAX], and in t on each of 4 sectors
NODES_2D = 14  # graded rule: nodes per panel and dimension (16 outer x 11 inner panels)
GAUSS_RUNGS = (-2.5, 2.5)  # graded rule: cuts at the Gaussian's scale in z1 and z2


@functools.cache
def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [0, 1] (n nodes, exact for polynomials of degree 2n - 1).

    Args:
      n: number of nodes (>= 1).
    Returns:
      (nodes, weights), two float64 numpy arrays of shape (n,); the weights sum to 1.

    Example:
      >>> t, w = gauss_legendre(2)
      >>> [round(float(v), 6) for v in t], [float(v) for v in w]
      ([0.211325, 0.788675], [0.5, 0.5])
    """
    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (x + 1.0), 0.5 * w


def integrate(f: ArrayFn, edges: jax.Array, *, n: int) -> jax.Array:
    """Integral of f over [edges[..., 0], edges[..., -1]], an n-node Gauss-Legendre rule a panel.

    sum_k integral from edges[..., k] to edges[..., k+1] of f(x) dx. A panel of zero length
    contributes 0, so a fixed number of panels (as jit needs) can adapt its widths to the data.

    Args:
      f: elementwise integrand. It receives the nodes with shape S + (P, n) (panel, node on two
        new trailing axes) and must return that shape: lift its other arrays with `[..., None, None]`.
      edges: shape S + (P + 1,), nondecreasing along the last axis.
      n: nodes per panel.
    Returns:
      The integral, shape S, dtype of `edges` (at least float32).

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(integrate(lambda x: x**3, jnp.asarray([0.0, 1.0, 2.0]), n=2)), 5)
      4.0
    """
    edges = jnp.asarray(edges)
    e = edges.astype(jnp.result_type(edges, float))
    a, b = e[..., :-1, None], e[..., 1:, None]  # S + (P, 1)
    t, w = (jnp.reshape(jnp.asarray(v, e.dtype), (1,) * (e.ndim - 1) + (1, n)) for v in gauss_legendre(n))
    return jnp.sum((b - a) * w * f(a + (b - a) * t), axis=(-2, -1))


def panel_edges(centre: jax.Array, scales: Sequence[jax.Array], extra: Sequence[jax.Array] = ()) -> jax.Array:
    """Sorted panel edges on [-Z_MAX, Z_MAX], graded towards `centre` for each scale.

    The edges are -Z_MAX, Z_MAX, `centre`, each of `extra`, and centre +- g / k for g in LADDER and
    k in `scales` (inverse widths, >= 0; k = 0 puts those edges at +-Z_MAX), clipped into
    [-Z_MAX, Z_MAX] and sorted. Their number, 3 + len(extra) + 6 len(scales), is static.

    Args:
      centre: where the feature sits, any shape S (clipped into [-Z_MAX, Z_MAX]).
      scales: inverse widths of the features, each broadcastable to S.
      extra: further edges, each broadcastable to S.
    Returns:
      Shape S + (3 + len(extra) + 6 len(scales),), held out of differentiation.

    Example:
      >>> import jax.numpy as jnp
      >>> [float(v) for v in panel_edges(jnp.asarray(0.0), [jnp.asarray(1.0)])]
      [-10.0, -10.0, -8.0, -2.0, 0.0, 2.0, 8.0, 10.0, 10.0]
    """
    centre = jnp.clip(centre, -Z_MAX, Z_MAX)
    edges = [jnp.full_like(centre, -Z_MAX), centre, jnp.full_like(centre, Z_MAX), *extra]
    for k in scales:
        width = 1.0 / jnp.maximum(k, jnp.finfo(centre.dtype).tiny)
        edges += [centre + sign * g * width for g in LADDER for sign in (-1.0, 1.0)]
    edges = jnp.clip(jnp.stack(jnp.broadcast_arrays(*edges), axis=-1), -Z_MAX, Z_MAX)
    return lax.stop_gradient(jnp.sort(edges, axis=-1))


def normal_pdf(z: jax.Array) -> jax.Array:
    """The standard normal density exp(-z^2 / 2) / sqrt(2 pi), elementwise.

    Example:
      >>> round(float(normal_pdf(0.0)), 6)
      0.398942
    """
    return jnp.exp(-0.5 * jnp.square(z)) / math.sqrt(2.0 * math.pi)


def _floating(*xs: jax.Array) -> list[jax.Array]:
    xs = jnp.broadcast_arrays(*(jnp.asarray(x) for x in xs))
    dtype = jnp.result_type(*xs, float)
    return [x.astype(dtype) for x in xs]


def expect_1d(f: ArrayFn, q: jax.Array, *, n: int = NODES_1D) -> jax.Array:
    """E[f(sqrt(q) z)], z ~ N(0, 1), elementwise over q >= 0.

    integral of f(sqrt(q) z) exp(-z^2/2) / sqrt(2 pi) dz over |z| <= Z_MAX, on the panels
    `panel_edges(0, [sqrt(q)])`: cut at 0 and graded towards it at scale 1/sqrt(q) in z (scale 1
    in u), so a peak or kink of f near u = 0 is resolved at every q.

    Args:
      f: elementwise function of u = sqrt(q) z; it receives shape q.shape + (8, n).
      q: variance of u (>= 0), any shape.
      n: nodes per panel.
    Returns:
      The expectation, shape q.shape.

    Example:
      >>> import jax.numpy as jnp
      >>> q = jnp.asarray([1.0, 1e8])
      >>> [f"{float(v):.6g}" for v in expect_1d(lambda u: jnp.exp(-u * u), q)]   # 1 / sqrt(1 + 2 q)
      ['0.57735', '7.07107e-05']
    """
    (q,) = _floating(q)
    rq = jnp.sqrt(q)
    return integrate(
        lambda z: f(rq[..., None, None] * z) * normal_pdf(z), panel_edges(jnp.zeros_like(q), [rq]), n=n
    )


def _polar_2d(f1: ArrayFn, f2: ArrayFn, q: jax.Array, c: jax.Array) -> jax.Array:
    """The polar rule of `expect_2d` at one scalar (q, c)."""
    r, wr = (Z_MAX * jnp.asarray(v, q.dtype) for v in gauss_legendre(POLAR_NODES[0]))
    wr = wr * r * jnp.exp(-0.5 * r * r)  # the density of |z| for z ~ N(0, I_2), times dr
    t, wt = (jnp.asarray(v, q.dtype) for v in gauss_legendre(POLAR_NODES[1]))
    a = jnp.arccos(c)
    starts = jnp.stack([0.5 * jnp.pi + 0 * a, 0.5 * jnp.pi + a, 1.5 * jnp.pi + 0 * a, 1.5 * jnp.pi + a])
    lengths = jnp.stack([a, jnp.pi - a, a, jnp.pi - a])
    theta = jnp.ravel(starts[:, None] + lengths[:, None] * t[None, :])  # (4 nt,)
    w_theta = jnp.ravel(lengths[:, None] * wt[None, :]) / (2 * jnp.pi)
    ru = jnp.sqrt(q) * r[:, None]  # (nr, 1)
    values = f1(ru * jnp.cos(theta)[None, :]) * f2(ru * jnp.cos(theta - a)[None, :])
    return jnp.sum(wr[:, None] * w_theta[None, :] * values)


def _graded_2d(f1: ArrayFn, f2: ArrayFn, q: jax.Array, c: jax.Array, n: int) -> jax.Array:
    """The iterated graded rule of `expect_2d` at one scalar (q, c)."""
    rq = jnp.sqrt(q)
    s = jnp.sqrt(jnp.clip(1.0 - c * c, 0.0, None))
    s_safe = jnp.maximum(s, jnp.finfo(s.dtype).tiny)

    def outer(z1):  # (P, n)
        rungs = [jnp.zeros_like(z1)] + [g + jnp.zeros_like(z1) for g in GAUSS_RUNGS]
        inner_edges = panel_edges(-c * z1 / s_safe, [rq * s + jnp.zeros_like(z1)], extra=rungs)

        def inner(z2):  # (P, n, P', n)
            return f2(rq * (c * z1[..., None, None] + s * z2)) * normal_pdf(z2)

        return f1(rq * z1) * integrate(inner, inner_edges, n=n) * normal_pdf(z1)

    rungs = [g + jnp.zeros_like(q) for g in GAUSS_RUNGS]
    return integrate(outer, panel_edges(jnp.zeros_like(q), [rq, jnp.abs(c) / s_safe], extra=rungs), n=n)


def expect_2d(f1: ArrayFn, f2: ArrayFn, q: jax.Array, c: jax.Array, *, n: int = NODES_2D) -> jax.Array:
    """E[f1(u1) f2(u2)] for (u1, u2) Gaussian with Var u_i = q, Corr(u1, u2) = c, elementwise.

    Two rules, chosen per element by q (elements run one at a time, `lax.map`, through a `lax.cond`,
    so each pays for one rule; under `jax.vmap` both run and one is selected):
    - q <= Q_POLAR: polar coordinates (z1, z2) = r (cos t, sin t), u1 = sqrt(q) r cos t,
      u2 = sqrt(q) r cos(t - a), a = arccos(c), with POLAR_NODES = (64, 48) Gauss-Legendre nodes in
      r on [0, Z_MAX] and in t on each of the four sectors between the lines u1 = 0 and u2 = 0 (kinks
      at 0 sit on sector edges: relu is exact to rounding). 12288 evaluations.
    - q > Q_POLAR, where phi'(u) is a peak of width < 1/4 in z: iterated, u1 = sqrt(q) z1,
      u2 = sqrt(q) (c z1 + s z2), s = sqrt(1 - c^2), z1, z2 ~ N(0, 1) independent. The inner rule in
      z2 is graded towards m = -c z1 / s (u2 = 0) at scale 1/(sqrt(q) s) and cut at z2 = 0 and +-2.5
      (the Gaussian); the outer one towards z1 = 0 at scales 1/sqrt(q) (f1) and s/|c| (where the
      inner expectation E[f2(u2) | z1] turns) and cut at +-2.5. At c = +-1, u2 = +-u1 exactly.

    Args:
      f1, f2: elementwise functions of u1 and u2.
      q: the common variance (>= 0), broadcast with `c`.
      c: the correlation, clipped into [-1, 1].
      n: nodes per panel and dimension of the graded rule.
    Returns:
      The expectation, shape broadcast(q, c).

    Example:
      >>> import jax.numpy as jnp
      >>> q, c = jnp.asarray([2.0, 1e8]), jnp.asarray([0.5, 0.5])
      >>> [round(float(v / x), 5) for v, x in zip(expect_2d(lambda u: u, lambda u: u, q, c), q)]   # c
      [0.5, 0.5]
    """
    q, c = _floating(q, c)
    c = jnp.clip(c, -1.0, 1.0)

    def one(qc):
        q, c = qc
        return lax.cond(q <= Q_POLAR, lambda: _polar_2d(f1, f2, q, c), lambda: _graded_2d(f1, f2, q, c, n))

    return jnp.reshape(lax.map(one, (jnp.ravel(q), jnp.ravel(c))), q.shape)
