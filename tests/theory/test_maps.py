"""Tests of jaxvg.theory.maps: closed forms, fixed points, large-q limits, Monte Carlo nets, bad inputs.

Tolerances: closed forms in float64 to 1e-9 relative or better; Monte Carlo comparisons at
rtol = 3/sqrt(n_samples) (neural-tangents' rule) unless a finite-width bias is stated next to the
assertion; large-q limits to the size of the first omitted term of the expansion.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

from jaxvg import theory

from ._shared import (
    SIGMA_ROWS,
    SIGMAS,
    bad_input_params,
    check_bad_input,
    line_moment,
    mlp_stats,
    real_rows,
    second_moment_rows,
)

# --- closed forms -----------------------------------------------------------------------------


@pytest.mark.parametrize("sigma_w2", [0.5, 1.0, 1.9, 2.0, 3.0])
def test_relu_chi_1_is_half_sigma_w2(sigma_w2):
    # relu: E[phi'(u)^2] = P(u > 0) = 1/2 at every q, so chi_1 = sigma_w2 / 2 (He et al. 2015).
    assert float(theory.chi_1("relu", sigma_w2, 0.1)) == pytest.approx(sigma_w2 / 2, rel=1e-6)


def test_relu_q_star_regimes(x64):
    # q = sigma_w2 q / 2 + sigma_b2: q* = sigma_b2 / (1 - sigma_w2/2) for sigma_w2 < 2, else diverges.
    assert float(theory.q_star("relu", 1.0, 0.5)) == pytest.approx(1.0, rel=1e-12)
    assert float(theory.q_star("relu", 1.9, 0.1)) == pytest.approx(0.1 / 0.05, rel=1e-9)
    assert float(theory.q_star("relu", 1.5, 0.0)) == 0.0  # collapses
    assert float(theory.q_star("relu", 2.0, 0.0, q0=3.0)) == pytest.approx(3.0, rel=1e-12)  # every q fixed
    assert math.isinf(float(theory.q_star("relu", 2.0, 0.1)))  # linear growth
    assert math.isinf(float(theory.q_star("relu", 2.5, 0.0)))  # geometric growth


def test_relu_arc_cosine_kernel(x64):
    # Cho & Saul 2009: E[relu(u1) relu(u2)] = q/(2 pi) (sin t + (pi - t) cos t), t = arccos c.
    # At c = 0: q / (2 pi); with sigma_w2 = 2, sigma_b2 = 0 the correlation map gives 1/pi.
    assert float(theory.c_map("relu", 2.0, 0.0, c=0.0, q=1.7)) == pytest.approx(1 / np.pi, rel=1e-12)
    c = 0.3
    t = np.arccos(c)
    want = (np.sin(t) + (np.pi - t) * c) / np.pi
    assert float(theory.c_map("relu", 2.0, 0.0, c=c, q=0.4)) == pytest.approx(want, rel=1e-12)


def test_linear_maps(x64):
    sw, sb, q, c = 0.7, 0.2, 1.3, 0.4
    assert float(theory.q_map("linear", sw, sb, q=q)) == pytest.approx(sw * q + sb, rel=1e-14)
    assert float(theory.q_star("linear", sw, sb)) == pytest.approx(sb / (1 - sw), rel=1e-10)
    want = (sw * q * c + sb) / (sw * q + sb)
    assert float(theory.c_map("linear", sw, sb, c=c, q=q)) == pytest.approx(want, rel=1e-14)
    assert float(theory.chi_1("linear", sw, sb)) == pytest.approx(sw, rel=1e-14)
    xi_q, xi_c = theory.depth_scales("linear", sw, sb)
    assert float(xi_q) == pytest.approx(-1 / np.log(sw), rel=1e-12)
    assert float(xi_c) == pytest.approx(-1 / np.log(sw), rel=1e-12)
    assert math.isinf(float(theory.q_star("linear", 1.0, 0.1)))


def test_erf_arcsine_kernel(x64):
    # Williams 1997: E[erf(u1) erf(u2)] = (2/pi) arcsin(2 q c / (1 + 2 q)).
    sw, sb, q, c = 1.5, 0.1, 0.8, 0.6
    k = 2 / np.pi * np.arcsin(2 * q * c / (1 + 2 * q))
    v = 2 / np.pi * np.arcsin(2 * q / (1 + 2 * q))
    assert float(theory.q_map("erf", sw, sb, q=q)) == pytest.approx(sw * v + sb, rel=1e-14)
    assert float(theory.c_map("erf", sw, sb, c=c, q=q)) == pytest.approx(
        (sw * k + sb) / (sw * v + sb), rel=1e-13
    )
    # Critical line at sigma_b2 = 0: q* = 0 and chi_1 = sigma_w2 erf'(0)^2 = 4 sigma_w2 / pi = 1.
    # (chi_1 - 1 grows only as q*^2 on the chaotic side, so the root is conditioned to ~1e-8.)
    assert float(theory.critical_sigma_w2("erf", 0.0)) == pytest.approx(np.pi / 4, rel=1e-7)


# --- fixed points -----------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(sigma_w2=st.floats(0.5, 3.0), sigma_b2=st.floats(0.01, 0.5))
def test_q_star_is_a_fixed_point(sigma_w2, sigma_b2):
    q = theory.q_star("tanh", sigma_w2, sigma_b2)
    assert float(theory.q_map("tanh", sigma_w2, sigma_b2, q=q)) == pytest.approx(float(q), rel=1e-5)


@settings(max_examples=10, deadline=None)
@given(sigma_w2=st.floats(1.0, 4.0), sigma_b2=st.floats(0.0, 0.3))
def test_c_star_is_a_fixed_point(sigma_w2, sigma_b2):
    c = theory.c_star("erf", sigma_w2, sigma_b2)
    q = theory.q_star("erf", sigma_w2, sigma_b2)
    if float(q) > 0:
        assert float(theory.c_map("erf", sigma_w2, sigma_b2, c=c)) == pytest.approx(float(c), abs=1e-5)
    chi = float(theory.chi_1("erf", sigma_w2, sigma_b2))
    if abs(chi - 1) > 0.01:  # away from the critical line, where c* -> 1 continuously
        assert (float(c) < 1) == (chi > 1)


def test_tanh_collapses_in_the_ordered_phase_without_bias():
    assert float(theory.q_star("tanh", 0.9, 0.0)) == 0.0
    assert float(theory.q_star("tanh", 1.0, 0.0)) == 0.0  # algebraic collapse at criticality
    assert float(theory.c_star("tanh", 0.9, 0.0)) == 1.0  # q* = 0 -> c* = 1 by convention
    assert float(theory.q_star("tanh", 1.5, 0.0)) > 0.1
    # Chaotic, no bias, odd phi: inputs decorrelate completely (Poole et al. 2016, Fig. 2).
    assert abs(float(theory.c_star("tanh", 2.5, 0.0))) < 1e-5


# --- large q: the narrow peak of phi'(sqrt(q) z) ---------------------------------------------
# For q -> inf, E[f(sqrt(q) z)] = (A0 - A2 / (2q) + O(q^-2)) / sqrt(2 pi q), A_k = integral of
# u^k f(u) du (expand the Gaussian density N(u / sqrt(q)) / sqrt(q) in 1/q). f = phi'^2 gives chi,
# f = phi^2 - phi(sign u)^2 the approach of V = E[phi^2] to its limit. tanh: integral of sech^4 = 4/3,
# so chi_1 -> sigma_w2 (4/3) / sqrt(2 pi q*) with q* -> sigma_w2: (4/3) sqrt(sigma_w2 / (2 pi)).

_SIGMOID = special.expit
LARGE_Q = {  # phi'^2, phi^2 minus its limit, the limit of V
    "tanh": (lambda u: np.cosh(u) ** -4, lambda u: np.tanh(u) ** 2 - 1.0, 1.0),
    "sigmoid": (lambda u: (_SIGMOID(u) * _SIGMOID(-u)) ** 2, lambda u: _SIGMOID(u) ** 2 - (u > 0), 0.5),
    "erf": (lambda u: 4 / np.pi * np.exp(-2 * u * u), lambda u: special.erf(u) ** 2 - 1.0, 1.0),
}


def _large_q_limits(act, q):
    d2, dv, v_inf = LARGE_Q[act]
    chi = (line_moment(d2, 0) - line_moment(d2, 2) / (2 * q)) / np.sqrt(2 * np.pi * q)
    v = v_inf + (line_moment(dv, 0) - line_moment(dv, 2) / (2 * q)) / np.sqrt(2 * np.pi * q)
    return chi, v


def test_the_large_q_constants():
    assert line_moment(LARGE_Q["tanh"][0], 0) == pytest.approx(4 / 3, rel=1e-12)
    assert line_moment(LARGE_Q["sigmoid"][0], 0) == pytest.approx(1 / 6, rel=1e-12)
    assert line_moment(LARGE_Q["erf"][0], 0) == pytest.approx(4 / np.sqrt(2 * np.pi), rel=1e-12)


@pytest.mark.parametrize("act", sorted(LARGE_Q))
@pytest.mark.parametrize("q", [1e4, 1e8, 1e12])
def test_length_map_and_chi_approach_their_large_q_limits(x64, act, q):
    chi_limit, v_limit = _large_q_limits(act, q)
    rtol = 1e-12 + 10 / q**2  # the first omitted term is O(q^-2)
    # chi(q) through the public API: gradient_profile at depth 1 is (1/2) log10 chi(q1), q1 = q0 here.
    chi = 10 ** (2 * float(theory.gradient_profile(act, 1.0, 0.0, depth=1, q0=q)[0]))
    assert chi == pytest.approx(chi_limit, rel=rtol)
    assert float(theory.q_map(act, 1.0, 0.0, q=q)) == pytest.approx(v_limit, rel=rtol)


@pytest.mark.parametrize("act", sorted(LARGE_Q))
@pytest.mark.parametrize("sigma_w2", [1e4, 1e8, 1e12])
def test_chi_1_approaches_its_large_q_limit(x64, act, sigma_w2):
    sb = 0.05
    qs = float(theory.q_star(act, sigma_w2, sb))
    chi_limit, v_limit = _large_q_limits(act, qs)
    rtol = 1e-12 + 10 / qs**2
    assert qs == pytest.approx(sigma_w2 * v_limit + sb, rel=rtol)
    assert float(theory.chi_1(act, sigma_w2, sb)) == pytest.approx(sigma_w2 * chi_limit, rel=rtol)


def test_chi_1_of_tanh_at_sigma_w2_1e8():
    # The reported case: 0.0 before the quadrature was graded; the limit is (4/3) sqrt(1e8 / (2 pi)) = 5319.2
    # (q* = 0.99992 sigma_w2 moves it by 4e-5). float32, the default.
    got = float(theory.chi_1("tanh", 1e8, 0.05))
    assert got == pytest.approx(4 / 3 * math.sqrt(1e8 / (2 * math.pi)), rel=1e-4)
    assert float(theory.chi_1("sigmoid", 1e12, 0.05)) == pytest.approx(94031.65, rel=1e-5)


# --- jit / vmap -------------------------------------------------------------------------------


def test_vmap_and_jit_over_a_sigma_grid():
    sw, sb = jnp.meshgrid(jnp.linspace(0.8, 3.0, 4), jnp.array([0.0, 0.05, 0.2]))
    grid = jax.vmap(jax.vmap(lambda a, b: theory.chi_1("tanh", a, b)))(sw, sb)
    direct = theory.chi_1("tanh", sw, sb)  # broadcasting
    np.testing.assert_allclose(grid, direct, rtol=1e-6)
    one = theory.chi_1("tanh", 1.5, 0.05)
    np.testing.assert_allclose(jax.jit(lambda a: theory.chi_1("tanh", a, 0.05))(1.5), one, rtol=1e-6)
    assert grid.shape == (3, 4)
    # Diverging and collapsing entries inside one vmapped while_loop.
    q = jax.vmap(lambda a: theory.q_star("relu", a, 0.1))(jnp.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(q, [0.2, np.inf, np.inf], rtol=1e-6)
    q = jax.vmap(lambda a: theory.q_star("tanh", a, 0.0))(jnp.array([0.5, 2.0]))
    assert float(q[0]) == 0.0 and float(q[1]) > 0.5


# --- Monte Carlo networks ---------------------------------------------------------------------


# --- Monte Carlo ------------------------------------------------------------------------------


def test_q_map_matches_a_wide_layer():
    # One layer of width 1000 for each of 8 independent inits; z' = tanh(z) W + b.
    n_units, n_nets = 1000, 8
    sw, sb, q = 1.5, 0.05, 0.7

    def one(key):
        kz, kw, kb = jax.random.split(key, 3)
        z = jax.random.normal(kz, (n_units,)) * np.sqrt(q)
        w = jax.random.normal(kw, (n_units, n_units)) * np.sqrt(sw / n_units)
        return jnp.mean((jnp.tanh(z) @ w + jax.random.normal(kb, (n_units,)) * np.sqrt(sb)) ** 2)

    measured = jnp.mean(jax.vmap(one)(jax.random.split(jax.random.key(0), n_nets)))
    n_samples = n_units * n_nets  # mean of z'^2 over Gaussian z': relative sd sqrt(2 / n_samples)
    np.testing.assert_allclose(measured, theory.q_map("tanh", sw, sb, q=q), rtol=3 * np.sqrt(2 / n_samples))


def test_q_star_and_chi_1_match_wide_deep_tanh_nets():
    width, depth, batch, seeds = 1000, 12, 2, 4
    sw, sb = 1.5, 0.05
    qs = float(theory.q_star("tanh", sw, sb))
    stats = [
        mlp_stats("tanh", sw, sb, qs, width=width, depth=depth, batch=batch, seed=s, input_is_image=True)
        for s in range(seeds)
    ]
    q_l = np.stack([q for q, _ in stats])
    # q_l is a mean of width Gaussian z^2 (relative sd sqrt(2/width)) per layer and net; successive
    # layers are correlated through the q map (lag-1 correlation chi_q = 0.55 here), which
    # inflates the variance of the layer average by (1 + chi_q)/(1 - chi_q) = 3.4.
    n_samples = width * depth * seeds / 3.4
    np.testing.assert_allclose(np.mean(q_l), qs, rtol=3 * np.sqrt(2 / n_samples))
    # Mean squared per-layer gain of the backward signal: chi_1. One gain has relative variance
    # (3 mu2/mu1^2 - 1)/width ~ 3/width; gains of different layers and examples are ~independent.
    gains = np.concatenate([10 ** (2 * (n[:, :-1] - n[:, 1:])).ravel() for _, n in stats])
    rtol = 3 * np.sqrt(3 / width / gains.size)
    np.testing.assert_allclose(np.mean(gains), theory.chi_1("tanh", sw, sb), rtol=rtol)


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "erf"])
@pytest.mark.parametrize("q", [0.5, 5.0, 50.0])
def test_expectations_match_monte_carlo_at_moderate_q(act, q):
    n = 1_000_000
    phi = {"tanh": np.tanh, "sigmoid": _SIGMOID, "erf": special.erf}[act]
    dphi2 = LARGE_Q[act][0]
    z1, z2 = np.random.default_rng(0).standard_normal((2, n))
    u1 = np.sqrt(q) * z1
    for samples, predicted in [
        (dphi2(u1), 10 ** (2 * float(theory.gradient_profile(act, 1.0, 0.0, depth=1, q0=q)[0]))),
        (phi(u1) ** 2, float(theory.q_map(act, 1.0, 0.0, q=q))),
    ]:
        np.testing.assert_allclose(
            predicted, samples.mean(), rtol=3 * samples.std() / samples.mean() / np.sqrt(n)
        )
    # c_map * q_map = sigma_w2 E[phi(u1) phi(u2)] + sigma_b2 (sigma_w2 = 1, sigma_b2 = 0), Corr = 0.6
    c = 0.6
    prod = phi(u1) * phi(np.sqrt(q) * (c * z1 + np.sqrt(1 - c * c) * z2))
    predicted = float(theory.c_map(act, 1.0, 0.0, c=c, q=q) * theory.q_map(act, 1.0, 0.0, q=q))
    np.testing.assert_allclose(predicted, prod.mean(), rtol=3 * prod.std() / abs(prod.mean()) / np.sqrt(n))


# --- bad inputs: one table per public function ------------------------------------------------

BAD_INPUTS = {
    "q_map": (theory.q_map, SIGMAS, {"q": 1.0}, [*SIGMA_ROWS, *second_moment_rows("q")]),
    "q_star": (theory.q_star, SIGMAS, {}, [*SIGMA_ROWS, *second_moment_rows("q0")]),
    "c_map": (
        theory.c_map,
        SIGMAS,
        {"c": 0.5},
        [
            *SIGMA_ROWS,
            *(row for row in second_moment_rows("q") if row[1] is not None),  # q=None: use q*
            *real_rows("c", r"a correlation in \[-1, 1\]"),
            ("c", 1.5, ValueError, r"`c` must be a correlation in \[-1, 1\], got 1.5"),
            ("c", -1.01, ValueError, r"`c` must be a correlation in \[-1, 1\], got -1.01"),
        ],
    ),
    "c_star": (theory.c_star, SIGMAS, {}, [*SIGMA_ROWS, *second_moment_rows("q0")]),
    "chi_1": (
        theory.chi_1,
        SIGMAS,
        {},
        [
            *SIGMA_ROWS,
            *second_moment_rows("q0"),
            ("sigma_w2", jnp.array([1.0, -1.0]), ValueError, r"`sigma_w2` .*\(entry \(1,\)\)"),
        ],
    ),
}


@pytest.mark.parametrize(
    ("fn", "positional", "keywords", "arg", "value", "error", "match"), bad_input_params(BAD_INPUTS)
)
def test_bad_inputs_raise_errors_that_name_the_argument(fn, positional, keywords, arg, value, error, match):
    check_bad_input(fn, positional, keywords, arg, value, error, match)


def test_traced_arguments_are_checked_for_dtype_only():
    # Under jit the values are unknown: a negative traced sigma_w2 is not caught, a bool one is.
    assert jnp.isfinite(jax.jit(lambda s: theory.chi_1("tanh", s, 0.05))(1.5))
    with pytest.raises(TypeError, match=r"`sigma_w2` .*traced array of dtype bool"):
        jax.jit(lambda s: theory.chi_1("tanh", s, 0.05))(jnp.asarray(True))
