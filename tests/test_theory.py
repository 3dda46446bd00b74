"""Tests of jaxvg.theory: closed forms, quadrature, fixed points, published values, Monte Carlo nets.

Tolerances: closed forms and quadrature in float64 to 1e-9 relative (the accuracy the module
claims); Monte Carlo comparisons at rtol = 3/sqrt(n_samples) (neural-tangents' rule) unless a
finite-width bias is stated next to the assertion.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import digamma

from jaxvg import theory
from jaxvg.nn import activations


def _erf_by_quadrature(x):
    """erf as a plain callable: `activations.get` wraps it without closed forms -> quadrature."""
    return jax.scipy.special.erf(x)


def _relu_by_quadrature(x):
    return jnp.maximum(x, 0.0)


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


def test_hard_tanh_closed_forms_match_monte_carlo():
    # hard_tanh has kinks at +-1 that quadrature cannot see; its forms are closed or semi-closed.
    n = 1_000_000
    rng = np.random.default_rng(0)
    q, c = 1.3, 0.7
    z1, z2 = rng.standard_normal((2, n))
    u1, u2 = np.sqrt(q) * z1, np.sqrt(q) * (c * z1 + np.sqrt(1 - c * c) * z2)
    forms = activations.get("hard_tanh").closed_forms
    rtol = 3 / np.sqrt(n)
    np.testing.assert_allclose(forms["q_map"](q), np.mean(np.clip(u1, -1, 1) ** 2), rtol=rtol)
    np.testing.assert_allclose(forms["chi"](q), np.mean(np.abs(u1) < 1), rtol=rtol)
    np.testing.assert_allclose(
        forms["c_map"](q, c), np.mean(np.clip(u1, -1, 1) * np.clip(u2, -1, 1)), rtol=2 * rtol
    )
    np.testing.assert_allclose(
        forms["chi_c"](q, c), np.mean((np.abs(u1) < 1) & (np.abs(u2) < 1)), rtol=2 * rtol
    )
    # c = 1 reduces to the one-dimensional forms.
    np.testing.assert_allclose(forms["c_map"](q, 1.0), forms["q_map"](q), rtol=1e-6)
    np.testing.assert_allclose(forms["chi_c"](q, 1.0), forms["chi"](q), rtol=1e-6)


# --- quadrature -------------------------------------------------------------------------------


@pytest.mark.parametrize("q", [0.05, 1.0, 4.0])
def test_quadrature_matches_erf_closed_form_x64(x64, q):
    sw, sb = 1.7, 0.05
    quad, exact = _erf_by_quadrature, "erf"
    for fn in (theory.q_map,):
        np.testing.assert_allclose(fn(quad, sw, sb, q=q), fn(exact, sw, sb, q=q), rtol=1e-9)
    for c in (-0.5, 0.3, 0.95):
        np.testing.assert_allclose(
            theory.c_map(quad, sw, sb, c=c, q=q), theory.c_map(exact, sw, sb, c=c, q=q), rtol=1e-9
        )


def test_quadrature_fixed_point_quantities_match_erf_x64(x64):
    for sw, sb in [(1.7, 0.05), (3.0, 0.05), (0.6, 0.2)]:  # chaotic, chaotic, ordered
        for fn in (theory.q_star, theory.chi_1, theory.c_star):
            np.testing.assert_allclose(fn(_erf_by_quadrature, sw, sb), fn("erf", sw, sb), rtol=1e-9)
        np.testing.assert_allclose(
            theory.depth_scales(_erf_by_quadrature, sw, sb), theory.depth_scales("erf", sw, sb), rtol=1e-8
        )
        np.testing.assert_allclose(
            theory.jacobian_moments(_erf_by_quadrature, sw, sb, depth=3),
            theory.jacobian_moments("erf", sw, sb, depth=3),
            rtol=1e-9,
        )


def test_quadrature_float32_accuracy():
    np.testing.assert_allclose(
        theory.q_map(_erf_by_quadrature, 1.7, 0.05, q=1.0), theory.q_map("erf", 1.7, 0.05, q=1.0), rtol=1e-6
    )
    np.testing.assert_allclose(
        theory.chi_1(_erf_by_quadrature, 1.7, 0.05), theory.chi_1("erf", 1.7, 0.05), rtol=1e-5
    )


def test_quadrature_splits_at_the_kink_of_relu_x64(x64):
    # The 1D rule splits at z = 0 and the 2D rule's sectors end on u1 = 0, u2 = 0, so a kink at 0
    # costs nothing: plain relu through quadrature equals the arc-cosine closed form.
    for c in (-0.8, 0.0, 0.5, 0.99):
        np.testing.assert_allclose(
            theory.c_map(_relu_by_quadrature, 1.5, 0.1, c=c, q=2.0),
            theory.c_map("relu", 1.5, 0.1, c=c, q=2.0),
            rtol=1e-12,
        )
    np.testing.assert_allclose(theory.chi_1(_relu_by_quadrature, 1.5, 0.1), 0.75, rtol=1e-12)


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


# --- criticality and depth scales -------------------------------------------------------------


def test_critical_lines(x64):
    # tanh, sigma_b2 = 0: chi_1 = sigma_w2 at q* = 0, so sigma_w2 = 1 (Poole et al. 2016, Fig. 2);
    # chi_1 - 1 ~ q*^2 on the chaotic side, so the root is only determined to ~1e-7.
    assert float(theory.critical_sigma_w2("tanh", 0.0)) == pytest.approx(1.0, abs=1e-6)
    assert float(theory.critical_sigma_w2("relu", 0.3)) == pytest.approx(2.0, rel=1e-9)
    # Schoenholz et al. 2017 (Fig. 1 and Sec. 3) place the tanh critical point at sigma_b2 = 0.05
    # at sigma_w2 ~ 1.76; computed here: 1.760955.
    crit = theory.critical_sigma_w2("tanh", jnp.array([0.05, 0.3]))
    assert float(crit[0]) == pytest.approx(1.76, abs=0.005)
    assert float(crit[1]) > float(crit[0])  # the critical line rises with sigma_b2
    np.testing.assert_allclose(theory.chi_1("tanh", crit, jnp.array([0.05, 0.3])), 1.0, rtol=1e-9)


def test_xi_c_uses_chi_c_at_c_star_in_the_chaotic_phase(x64):
    sw, sb = 3.0, 0.05  # erf, chaotic
    qs, cs = float(theory.q_star("erf", sw, sb)), float(theory.c_star("erf", sw, sb))
    assert cs < 0.99
    chi_c = sw * 4 / np.pi / np.sqrt((1 + 2 * qs) ** 2 - (2 * qs * cs) ** 2)  # closed form at (q*, c*)
    xi_q, xi_c = theory.depth_scales("erf", sw, sb)
    assert float(xi_c) == pytest.approx(-1 / np.log(chi_c), rel=1e-9)
    chi1 = float(theory.chi_1("erf", sw, sb))
    assert chi1 > 1 and -1 / np.log(chi1) < 0 < float(xi_c)  # not -1/ln chi_1 (which is negative)
    # xi_q: chi_q = sigma_w2 dV/dq, V = (2/pi) arcsin(2q/(1+2q)), dV/dq = (4/pi) / ((1+2q) sqrt(1+4q)).
    chi_q = sw * 4 / np.pi / ((1 + 2 * qs) * np.sqrt(1 + 4 * qs))
    assert float(xi_q) == pytest.approx(-1 / np.log(chi_q), rel=1e-9)
    # Ordered phase: c* = 1 and xi_c = -1/ln chi_1.
    xi_q, xi_c = theory.depth_scales("erf", 0.5, 0.05)
    assert float(xi_c) == pytest.approx(-1 / np.log(float(theory.chi_1("erf", 0.5, 0.05))), rel=1e-9)


def test_xi_c_diverges_at_criticality_and_xi_q_matches_quadrature_of_phi_phi2(x64):
    crit = float(theory.critical_sigma_w2("tanh", 0.05))
    _, xi_c = theory.depth_scales("tanh", crit, 0.05)
    assert float(xi_c) > 1e4
    # xi_q's chi_1 + sigma_w2 E[phi'' phi] from d2fn by brute-force quadrature (numpy, 4001 points).
    sw, sb = 1.5, 0.05
    q = float(theory.q_star("tanh", sw, sb))
    z = np.linspace(-12, 12, 4001)
    w = np.exp(-z * z / 2) / np.sqrt(2 * np.pi) * (z[1] - z[0])
    t = np.tanh(np.sqrt(q) * z)
    chi_q = sw * np.sum(w * ((1 - t * t) ** 2 + t * (-2 * t * (1 - t * t))))
    xi_q, _ = theory.depth_scales("tanh", sw, sb)
    assert float(xi_q) == pytest.approx(-1 / np.log(chi_q), rel=1e-9)


def test_gradient_depth_scale_sign():
    assert float(theory.gradient_depth_scale("relu", 4.0, 0.0)) == pytest.approx(-1 / np.log(2), rel=1e-6)
    assert float(theory.gradient_depth_scale("relu", 1.0, 0.0)) == pytest.approx(1 / np.log(2), rel=1e-6)
    assert math.isinf(float(theory.gradient_depth_scale("relu", 2.0, 0.0)))


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


def _mlp_stats(act, sw, sb, q0, *, width, depth, batch, seed=0, input_is_image=False):
    """Per-layer mean squared pre-activation and exact log10 ||dL/dh_l|| (l = 0..L) of a Gaussian
    MLP (h_l = phi(h_{l-1} W_l + b_l), h_0 = x with E x^2 = q0, or x = phi(z0) with E z0^2 = q0
    when `input_is_image`, so that z_1 is already at q0 when q0 = q*), for a random cotangent."""
    phi = activations.get(act)
    kx, kw, kb, kg = jax.random.split(jax.random.key(seed), 4)
    x = jax.random.normal(kx, (batch, width)) * jnp.sqrt(q0)
    x = phi(x) if input_is_image else x
    ws = jax.random.normal(kw, (depth, width, width)) * jnp.sqrt(sw / width)
    bs = jax.random.normal(kb, (depth, 1, width)) * jnp.sqrt(sb)
    hs, zs = [x], []
    for w, b in zip(ws, bs, strict=True):
        zs.append(hs[-1] @ w + b)
        hs.append(phi(zs[-1]))
    delta = jax.random.normal(kg, hs[-1].shape)
    log10_norms = [jnp.log10(jnp.linalg.norm(delta, axis=-1))]
    for w, z in zip(ws[::-1], zs[::-1], strict=True):
        delta = (delta * phi.dfn(z)) @ w.T
        log10_norms.append(jnp.log10(jnp.linalg.norm(delta, axis=-1)))
    q_l = jnp.stack([jnp.mean(z**2) for z in zs])
    return q_l, jnp.stack(log10_norms[::-1], axis=-1)  # (L,), (batch, L+1)


def test_q_star_and_chi_1_match_wide_deep_tanh_nets():
    width, depth, batch, seeds = 1000, 12, 2, 4
    sw, sb = 1.5, 0.05
    qs = float(theory.q_star("tanh", sw, sb))
    stats = [
        _mlp_stats("tanh", sw, sb, qs, width=width, depth=depth, batch=batch, seed=s, input_is_image=True)
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


def test_gradient_profile_follows_the_input_q0():
    # Input far from q* (q0 = 4 vs q* = 0.42): the early layers' chi(q_l) differ from chi_1.
    width, depth, batch = 1000, 12, 16
    sw, sb = 1.5, 0.05
    _, log10_norms = _mlp_stats("tanh", sw, sb, 4.0, width=width, depth=depth, batch=batch, seed=1)
    measured = np.mean(log10_norms - log10_norms[:, -1:], axis=0)
    predicted = theory.gradient_profile("tanh", sw, sb, depth=depth, q0=4.0)
    assert predicted.shape == (depth + 1,)
    # Noise: ~0.011 decades per layer and example (0.5 log10(e) sqrt(2.5 / width)), over 12 layers
    # and 16 examples: sd ~ 0.01; atol = 3 sd. The q*-only prediction (-0.165) is 0.37 decades off.
    np.testing.assert_allclose(measured, predicted, atol=0.03)
    at_q_star = 0.5 * depth * np.log10(float(theory.chi_1("tanh", sw, sb)))
    assert abs(measured[0] - at_q_star) > 0.3
    per_example = theory.gradient_profile("tanh", sw, sb, depth=depth, q0=jnp.array([1.0, 4.0]))
    assert per_example.shape == (2, depth + 1)
    np.testing.assert_allclose(per_example[1], predicted, rtol=1e-6, atol=1e-6)


def test_gradient_profile_linear_is_exact():
    prof = theory.gradient_profile("linear", 0.5, 0.3, depth=5, q0=2.0)
    np.testing.assert_allclose(prof, 0.5 * np.log10(0.5) * np.arange(5, -1, -1), rtol=1e-6)


def _lyapunov_mc(act, sw, sb, *, width, depth, seeds, burn_in=50):
    """Top Lyapunov exponent (natural log per layer) of the Jacobian product of a Gaussian net at q*,
    by renormalising one tangent vector after every layer; returns the mean and standard error."""
    phi = activations.get(act)
    qs = float(theory.q_star(act, sw, sb))

    def run(key):
        kz, kv, kl = jax.random.split(key, 3)
        z = jax.random.normal(kz, (width,)) * jnp.sqrt(qs)
        v = jax.random.normal(kv, (width,))

        def step(carry, k):
            z, v = carry
            kw, kb = jax.random.split(k)
            w = jax.random.normal(kw, (width, width)) * jnp.sqrt(sw / width)
            z = w @ phi(z) + jax.random.normal(kb, (width,)) * jnp.sqrt(sb)
            v = phi.dfn(z) * (w @ v)
            norm = jnp.linalg.norm(v)
            return (z, v / norm), jnp.log(norm)

        v = v / jnp.linalg.norm(v)
        _, logs = jax.lax.scan(step, (z, v), jax.random.split(kl, depth))
        return jnp.mean(logs[burn_in:])

    rates = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(0), seeds))
    return float(jnp.mean(rates)), float(jnp.std(rates) / np.sqrt(seeds))


def test_typical_log_rate_linear_gaussian_is_exact():
    width = 8
    # Exact value: 1/2 [ln(2/8) + digamma(4)] = -0.06511 per layer; mean field says 0.
    want = 0.5 * (np.log(2 / width) + digamma(width / 2))
    assert float(theory.typical_log_rate("linear", 1.0, 0.0, width=width)) == pytest.approx(want, rel=1e-5)
    mc, se = _lyapunov_mc("linear", 1.0, 0.0, width=width, depth=1500, seeds=4)
    assert abs(mc - want) < 4 * se + 1e-3, (mc, se, want)
    assert abs(mc) > 8 * se  # the finite-width rate is resolved: not the mean-field 0


def test_typical_log_rate_relu_matches_lyapunov_monte_carlo():
    # relu, He init, width 64: the rate is -5/(4 N) = -0.0195 per layer at O(1/N), mean field says 0.
    width = 64
    predicted = float(theory.typical_log_rate("relu", 2.0, 0.0, width=width))
    assert predicted == pytest.approx(-0.0196, abs=2e-4)
    mc, se = _lyapunov_mc("relu", 2.0, 0.0, width=width, depth=1200, seeds=4)
    assert abs(mc - predicted) < 4 * se + 1e-3, (mc, se, predicted)


def _jacobian_moments_mc(act, sw, sb, *, weights, width, depth, seeds):
    """Mean and variance of the squared singular values of an explicit Jacobian product at q*."""
    phi = activations.get(act)
    qs = float(theory.q_star(act, sw, sb))

    def one(key):
        kz, kl = jax.random.split(key)
        z = jax.random.normal(kz, (width,)) * jnp.sqrt(qs)

        def step(carry, k):
            z, jac = carry
            kw, kb = jax.random.split(k)
            if weights == "gaussian":
                w = jax.random.normal(kw, (width, width)) * jnp.sqrt(sw / width)
            else:
                w = jnp.sqrt(sw) * jax.random.orthogonal(kw, width)
            z = w @ phi(z) + jax.random.normal(kb, (width,)) * jnp.sqrt(sb)
            return (z, phi.dfn(z)[:, None] * (w @ jac)), None

        (_, jac), _ = jax.lax.scan(step, (z, jnp.eye(width)), jax.random.split(kl, depth))
        s2 = jnp.linalg.svd(jac, compute_uv=False) ** 2
        return jnp.mean(s2), jnp.var(s2)

    m, v = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), seeds))
    return float(jnp.mean(m)), float(jnp.mean(v))


@pytest.mark.parametrize(
    ("act", "sw", "sb", "weights"),
    [("tanh", 1.76, 0.05, "gaussian"), ("tanh", 1.76, 0.05, "orthogonal"), ("relu", 2.0, 0.0, "orthogonal")],
)
def test_jacobian_moments_match_sampled_jacobians(act, sw, sb, weights):
    width, depth = 128, 4
    mean, var = theory.jacobian_moments(act, sw, sb, depth=depth, weights=weights)
    mc_mean, mc_var = _jacobian_moments_mc(act, sw, sb, weights=weights, width=width, depth=depth, seeds=4)
    # Finite width (N = 128) and 4 samples: ~5% on the mean, ~10% on the variance (measured at N = 200).
    np.testing.assert_allclose(mc_mean, mean, rtol=0.1)
    np.testing.assert_allclose(mc_var, var, rtol=0.2)


def test_jacobian_moments_closed_forms():
    # Linear: variance L mean^2 with Gaussian weights (Marchenko-Pastur products), 0 with orthogonal.
    np.testing.assert_allclose(theory.jacobian_moments("linear", 1.0, 0.0, depth=7), (1.0, 7.0), rtol=1e-6)
    np.testing.assert_allclose(
        theory.jacobian_moments("linear", 1.0, 0.0, depth=7, weights="orthogonal"), (1.0, 0.0), atol=1e-6
    )
    # relu at He init: mu2 / mu1^2 = 2 -> variance 2L (Gaussian), L (orthogonal): no isometry
    # (Pennington et al. 2017, Sec. 3).
    np.testing.assert_allclose(theory.jacobian_moments("relu", 2.0, 0.0, depth=5), (1.0, 10.0), rtol=1e-6)
    # tanh at q* -> 0 (sigma_b2 = 0, sigma_w2 = 1) with orthogonal weights: dynamical isometry.
    np.testing.assert_allclose(
        theory.jacobian_moments("tanh", 1.0, 0.0, depth=50, weights="orthogonal"), (1.0, 0.0), atol=1e-6
    )


# --- argument checks --------------------------------------------------------------------------


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match=r"`sigma_w2` must be .* got -1.0"):
        theory.chi_1("tanh", -1.0, 0.0)
    with pytest.raises(ValueError, match=r"`sigma_b2` must be .* got -0.1"):
        theory.q_star("tanh", 1.0, -0.1)
    with pytest.raises(ValueError, match=r"`q` must be .*> 0.* got 0.0"):
        theory.q_map("tanh", 1.0, 0.0, q=0.0)
    with pytest.raises(ValueError, match=r"`q0` must be .* got -2.0"):
        theory.q_star("tanh", 1.0, 0.0, q0=-2.0)
    with pytest.raises(ValueError, match=r"`c` must be a correlation in \[-1, 1\], got 1.5"):
        theory.c_map("tanh", 1.0, 0.1, c=1.5)
    with pytest.raises(ValueError, match=r"`weights` must be one of \['gaussian', 'orthogonal'\]"):
        theory.jacobian_moments("tanh", 1.0, 0.0, depth=3, weights="haar")
    with pytest.raises(ValueError, match=r"`depth` must be an integer >= 1"):
        theory.gradient_profile("tanh", 1.0, 0.0, depth=0, q0=1.0)
    with pytest.raises(ValueError, match=r"`width` must be an integer >= 1"):
        theory.typical_log_rate("tanh", 1.0, 0.0, width=0)
    with pytest.raises(ValueError, match=r"`activation` must be one of"):
        theory.chi_1("tanhh", 1.0, 0.0)
    with pytest.raises(ValueError, match=r"`sigma_w2` .*\(entry \(1,\)\)"):
        theory.chi_1("tanh", jnp.array([1.0, -1.0]), 0.0)


def test_jacobian_moments_stay_finite_at_great_depth_in_float32():
    # (sw * mu1) ** L was rewritten by XLA into sw**L * mu1**L = inf * 0 for relu at L >= 128.
    for depth in (64, 128, 512):
        mean, var = theory.jacobian_moments("relu", 2.0, 0.0, depth=depth, weights="gaussian")
        assert float(mean) == pytest.approx(1.0, rel=1e-5)
        assert float(var) == pytest.approx(2.0 * depth, rel=1e-5)  # relu: mu2/mu1^2 - 1 + 1 = 2
