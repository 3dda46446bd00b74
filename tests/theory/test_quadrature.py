"""Tests of jaxvg.quadrature: the rules against scipy's adaptive quadrature and the closed forms of
erf and relu over q in [1e-6, 1e14] and c in [-1, 1], and through the theory functions.

Tolerances: the accuracy the module claims (float64): 1e-12 relative in 1D, 1e-10 in 2D.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special

from jaxvg import quadrature, theory
from jaxvg.nn import activations

from ._shared import erf_by_quadrature, relu_by_quadrature

QS = [1e-6, 1e-2, 0.3, 1.0, 5.0, 30.0, 1e3, 1e4, 1e8, 1e12, 1e14]


def test_gauss_legendre_is_exact_for_polynomials_of_degree_2n_minus_1():
    t, w = quadrature.gauss_legendre(5)
    assert t.shape == w.shape == (5,) and w.sum() == pytest.approx(1.0, rel=1e-15)
    for k in range(10):
        assert float(np.sum(w * t**k)) == pytest.approx(1 / (k + 1), rel=1e-13)


def test_integrate_sums_panels_and_skips_empty_ones(x64):
    edges = jnp.asarray([[0.0, 0.0, 1.0, 1.0, 3.0], [-1.0, 0.0, 0.0, 0.0, 0.0]])  # zero-length panels
    got = quadrature.integrate(lambda x: x**5 - x, edges, n=3)
    np.testing.assert_allclose(got, [3**6 / 6 - 9 / 2, -(1 / 6 - 1 / 2)], rtol=1e-14)


def test_panel_edges_are_sorted_clipped_and_of_static_number(x64):
    centre = jnp.asarray([0.0, 3.0, -50.0])
    edges = quadrature.panel_edges(
        centre, [jnp.asarray([1.0, 0.5, 0.0]), jnp.asarray(1e6)], extra=[jnp.zeros(3)]
    )
    assert edges.shape == (3, 3 + 1 + 12)
    assert bool(jnp.all(jnp.diff(edges, axis=-1) >= 0))
    assert bool(jnp.all(edges[:, 0] == -quadrature.Z_MAX)) and bool(jnp.all(edges[:, -1] == quadrature.Z_MAX))
    # the finest rung of the 1e6 scale sits 2e-6 from the centre
    assert float(jnp.min(jnp.abs(edges[0] - 2e-6))) < 1e-18


def _adaptive(f, q):
    """E[f(u)], u ~ N(0, q), by scipy.integrate.quad on intervals cut at 0 and at scales 1 and sqrt(q)."""
    sd = np.sqrt(q)
    cuts = {0.0} | {s * x for x in (0.3, 1, 3, 10, 30, 100) for s in (1, -1)}
    cuts |= {s * k * sd for k in (1, 3, 6, 10, 40) for s in (1, -1)}
    cuts = sorted(p for p in cuts if abs(p) <= 40 * sd + 100)

    def density(u):
        return f(u) * np.exp(-u * u / (2 * q)) / np.sqrt(2 * np.pi * q)

    with warnings.catch_warnings():  # quad's roundoff notes where the integrand is ~1e-300
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        parts = [
            integrate.quad(density, a, b, epsabs=0, epsrel=1e-13, limit=200)[0]
            for a, b in zip(cuts[:-1], cuts[1:], strict=True)
        ]
    return sum(parts)


def _sech(u):
    e = np.exp(-np.abs(u))
    return 2 * e / (1 + e * e)


_SIG = special.expit
ONE_D = {  # (numpy, jax) pairs: peaks, steps, kinks, growth
    "tanh'^2": (lambda u: _sech(u) ** 4, lambda u: jnp.cosh(u) ** -4),
    "sigmoid'^2": (
        lambda u: (_SIG(u) * _SIG(-u)) ** 2,
        lambda u: (jax.nn.sigmoid(u) * jax.nn.sigmoid(-u)) ** 2,
    ),
    "tanh^2": (lambda u: np.tanh(u) ** 2, lambda u: jnp.tanh(u) ** 2),
    "sigmoid^2": (lambda u: _SIG(u) ** 2, lambda u: jax.nn.sigmoid(u) ** 2),
    "relu^2": (lambda u: np.maximum(u, 0) ** 2, lambda u: jnp.maximum(u, 0) ** 2),
    "gelu^2": (
        lambda u: (0.5 * u * (1 + special.erf(u / np.sqrt(2)))) ** 2,
        lambda u: jax.nn.gelu(u, approximate=False) ** 2,
    ),
}


@pytest.mark.parametrize("name", sorted(ONE_D))
def test_expect_1d_matches_adaptive_quadrature_from_tiny_to_huge_q(x64, name):
    f_np, f_jax = ONE_D[name]
    got = quadrature.expect_1d(f_jax, jnp.asarray(QS))
    want = [_adaptive(f_np, q) for q in QS]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def _erf_chi_c(q, c):  # det(I + 2 Sigma)^(-1/2), factored
    return 4 / np.pi / np.sqrt((1 + 2 * q * (1 - c)) * (1 + 2 * q * (1 + c)))


def test_expect_2d_matches_closed_forms_over_q_and_c(x64):
    q, c = jnp.meshgrid(
        jnp.asarray(QS), jnp.asarray([-1.0, -0.99, -0.5, -0.1, 0.0, 0.3, 0.8, 0.95, 0.999, 1 - 1e-6, 1.0])
    )
    erf, derf = jax.scipy.special.erf, activations.get("erf").dfn
    k_erf = 2 / np.pi * np.arcsin(2 * q * c / (1 + 2 * q))
    # K is compared on the scale of V(q) = K(q, 1) (K itself vanishes at c = 0)
    v_erf = np.max(np.asarray(k_erf), axis=0, keepdims=True)
    np.testing.assert_allclose((quadrature.expect_2d(erf, erf, q, c) - k_erf) / v_erf, 0.0, atol=1e-10)
    np.testing.assert_allclose(quadrature.expect_2d(derf, derf, q, c), _erf_chi_c(q, c), rtol=1e-10)
    # relu: the arc-cosine kernel (Cho & Saul 2009), kinks on the panel edges
    t = np.arccos(c)
    k_relu = q / (2 * np.pi) * (np.sin(t) + (np.pi - t) * c)
    relu_2d = quadrature.expect_2d(jax.nn.relu, jax.nn.relu, q, c)
    np.testing.assert_allclose((relu_2d - k_relu) / (q / 2), 0.0, atol=1e-10)


def test_expect_2d_at_c_one_is_the_1d_expectation(x64):
    q = jnp.asarray(QS)
    for c, sign in [(1.0, 1.0), (-1.0, -1.0)]:
        got = quadrature.expect_2d(jnp.tanh, jnp.tanh, q, jnp.full_like(q, c))
        np.testing.assert_allclose(
            got, sign * quadrature.expect_1d(lambda u: jnp.tanh(u) ** 2, q), rtol=1e-10
        )


def test_expectations_are_differentiable_in_q(x64):
    # The panel edges are held out of differentiation; the exact integral does not depend on them.
    d_quad = jax.grad(lambda q: quadrature.expect_1d(lambda u: jax.scipy.special.erf(u) ** 2, q))
    d_exact = jax.grad(lambda q: 2 / jnp.pi * jnp.arcsin(2 * q / (1 + 2 * q)))
    for q in (0.3, 5.0, 1e4):
        assert float(d_quad(q)) == pytest.approx(float(d_exact(q)), rel=1e-10)


def test_float32_keeps_float32_and_rounding_accuracy():
    q = jnp.asarray(QS, jnp.float32)
    got = quadrature.expect_1d(lambda u: jnp.cosh(u) ** -4, q)
    assert got.dtype == jnp.float32
    with jax.enable_x64(True):
        want = quadrature.expect_1d(lambda u: jnp.cosh(u) ** -4, jnp.asarray(QS))
    np.testing.assert_allclose(got, want, rtol=2e-6)


# --- through the theory functions -------------------------------------------------------------


@pytest.mark.parametrize("q", [0.05, 1.0, 4.0])
def test_quadrature_matches_erf_closed_form_x64(x64, q):
    sw, sb = 1.7, 0.05
    quad, exact = erf_by_quadrature, "erf"
    for fn in (theory.q_map,):
        np.testing.assert_allclose(fn(quad, sw, sb, q=q), fn(exact, sw, sb, q=q), rtol=1e-9)
    for c in (-0.5, 0.3, 0.95):
        np.testing.assert_allclose(
            theory.c_map(quad, sw, sb, c=c, q=q), theory.c_map(exact, sw, sb, c=c, q=q), rtol=1e-9
        )


def test_quadrature_fixed_point_quantities_match_erf_x64(x64):
    for sw, sb in [(1.7, 0.05), (3.0, 0.05), (0.6, 0.2)]:  # chaotic, chaotic, ordered
        for fn in (theory.q_star, theory.chi_1, theory.c_star):
            np.testing.assert_allclose(fn(erf_by_quadrature, sw, sb), fn("erf", sw, sb), rtol=1e-9)
        np.testing.assert_allclose(
            theory.depth_scales(erf_by_quadrature, sw, sb), theory.depth_scales("erf", sw, sb), rtol=1e-8
        )
        np.testing.assert_allclose(
            theory.jacobian_moments(erf_by_quadrature, sw, sb, depth=3),
            theory.jacobian_moments("erf", sw, sb, depth=3),
            rtol=1e-9,
        )


def test_quadrature_float32_accuracy():
    np.testing.assert_allclose(
        theory.q_map(erf_by_quadrature, 1.7, 0.05, q=1.0), theory.q_map("erf", 1.7, 0.05, q=1.0), rtol=1e-6
    )
    np.testing.assert_allclose(
        theory.chi_1(erf_by_quadrature, 1.7, 0.05), theory.chi_1("erf", 1.7, 0.05), rtol=1e-5
    )


def test_quadrature_splits_at_the_kink_of_relu_x64(x64):
    # The 1D rule splits at z = 0 and the 2D rule's sectors end on u1 = 0, u2 = 0, so a kink at 0
    # costs nothing: plain relu through quadrature equals the arc-cosine closed form.
    for c in (-0.8, 0.0, 0.5, 0.99):
        np.testing.assert_allclose(
            theory.c_map(relu_by_quadrature, 1.5, 0.1, c=c, q=2.0),
            theory.c_map("relu", 1.5, 0.1, c=c, q=2.0),
            rtol=1e-12,
        )
    np.testing.assert_allclose(theory.chi_1(relu_by_quadrature, 1.5, 0.1), 0.75, rtol=1e-12)
