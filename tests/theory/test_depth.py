"""Tests of jaxvg.theory.depth: critical lines, depth scales (also at large q), gradient profiles, bad inputs."""

import math
import time

import jax.numpy as jnp
import numpy as np
import pytest

from jaxvg import theory

from ._shared import (
    SIGMA_ROWS,
    SIGMAS,
    VARIANCE,
    bad_input_params,
    check_bad_input,
    erf_by_quadrature,
    mlp_stats,
    real_rows,
    second_moment_rows,
    size_rows,
)

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


# Large sigma_w2, so q* ~ sigma_w2 / 2..sigma_w2 is huge and phi'(sqrt(q*) z) a narrow peak. With
# I = integral of phi'(u) du and V -> V_inf + (B0 - B2 / (2q)) / sqrt(2 pi q) (B_k as in test_maps):
#   chi_q = sigma_w2 dV/dq     = sigma_w2 (-B0 / 2 + 3 B2 / (4 q)) / (sqrt(2 pi) q^(3/2))   (+ O(q^-7/2))
#   chi_c = sigma_w2 E[phi'(u1) phi'(u2)] = sigma_w2 I^2 / (2 pi q sqrt(1 - c*^2)) (1 + O(1/q))
# (the density of (u1, u2) at the origin times I^2). tanh: I = 2, B0 = -2, B2 = -pi^2/6;
# sigmoid: I = 1, B0 = -1, B2 = -pi^2/3.
LARGE = {"tanh": (2.0, -2.0, -(np.pi**2) / 6), "sigmoid": (1.0, -1.0, -(np.pi**2) / 3)}


@pytest.mark.parametrize("act", sorted(LARGE))
@pytest.mark.parametrize("sigma_w2", [1e4, 1e8, 1e12])
def test_depth_scales_approach_their_large_q_limits(x64, act, sigma_w2):
    integral, b0, b2 = LARGE[act]
    sb = 0.05
    qs = float(theory.q_star(act, sigma_w2, sb))
    cs = float(theory.c_star(act, sigma_w2, sb))
    xi_q, xi_c = (float(x) for x in theory.depth_scales(act, sigma_w2, sb))
    chi_q = sigma_w2 * (-b0 / 2 + 3 * b2 / (4 * qs)) / (np.sqrt(2 * np.pi) * qs**1.5)
    chi_c = sigma_w2 * integral**2 / (2 * np.pi * qs * np.sqrt(1 - cs * cs))
    assert 0 < xi_q == pytest.approx(-1 / np.log(chi_q), rel=1e-12 + 10 / qs**2)
    assert 0 < xi_c == pytest.approx(-1 / np.log(chi_c), rel=40 / qs)
    # c* is the fixed point of the (2D quadrature) correlation map there.
    assert float(theory.c_map(act, sigma_w2, sb, c=cs, q=qs)) == pytest.approx(cs, abs=1e-12)


@pytest.mark.parametrize("sigma_w2", [1e4, 1e8, 1e12])
def test_depth_scales_by_quadrature_match_erf_closed_forms_at_large_q(x64, sigma_w2):
    np.testing.assert_allclose(
        theory.depth_scales(erf_by_quadrature, sigma_w2, 0.05),
        theory.depth_scales("erf", sigma_w2, 0.05),
        rtol=1e-10,
    )
    # and the closed form's xi_q: chi_q = sigma_w2 (4/pi) / ((1 + 2q) sqrt(1 + 4q)) at q*
    qs = float(theory.q_star("erf", sigma_w2, 0.05))
    chi_q = sigma_w2 * 4 / np.pi / ((1 + 2 * qs) * np.sqrt(1 + 4 * qs))
    assert float(theory.depth_scales("erf", sigma_w2, 0.05)[0]) == pytest.approx(
        -1 / np.log(chi_q), rel=1e-12
    )


def test_depth_scales_at_large_q_in_float32():
    # Reported: (0, 0) for tanh at sigma_w2 = 1e8. float32 agrees with the float64 values to ~1e-6.
    for act, want in [
        ("tanh", (0.0987249, 2.214825)),
        ("sigmoid", (0.1022230, 1.525871)),
        ("erf", (0.0965719, 2.214746)),
    ]:
        np.testing.assert_allclose(theory.depth_scales(act, 1e8, 0.05), want, rtol=1e-5)


# --- gradient profile -------------------------------------------------------------------------


def test_gradient_profile_follows_the_input_q0():
    # Input far from q* (q0 = 4 vs q* = 0.42): the early layers' chi(q_l) differ from chi_1.
    width, depth, batch = 1000, 12, 16
    sw, sb = 1.5, 0.05
    _, log10_norms = mlp_stats("tanh", sw, sb, 4.0, width=width, depth=depth, batch=batch, seed=1)
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


def test_gradient_profile_defaults_to_unit_input_second_moment():
    # Like its siblings, q0 defaults to 1.0.
    np.testing.assert_array_equal(
        theory.gradient_profile("tanh", 1.5, 0.05, depth=10),
        theory.gradient_profile("tanh", 1.5, 0.05, depth=10, q0=1.0),
    )


def test_gradient_profile_refuses_huge_depths_up_front():
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"`depth` must be an integer >= 1 and <= 100000, got 1000000000"):
        theory.gradient_profile("tanh", 1.5, 0.05, depth=10**9)
    with pytest.raises(
        ValueError, match=r"`depth` = 100000 with arguments of broadcast shape \(2000,\) asks for 2e\+08"
    ):
        theory.gradient_profile("tanh", 1.5, 0.05, depth=100_000, q0=np.ones(2000))
    assert time.perf_counter() - start < 1.0  # before any tracing
    assert theory.gradient_profile("linear", 1.0, 0.0, depth=np.int64(3)).shape == (4,)


# --- bad inputs: one table per public function ------------------------------------------------

BAD_INPUTS = {
    "depth_scales": (theory.depth_scales, SIGMAS, {}, [*SIGMA_ROWS, *second_moment_rows("q0")]),
    "gradient_depth_scale": (
        theory.gradient_depth_scale,
        SIGMAS,
        {},
        [*SIGMA_ROWS, *second_moment_rows("q0")],
    ),
    "critical_sigma_w2": (
        theory.critical_sigma_w2,
        ("activation", "sigma_b2"),
        {},
        [
            *(row for row in SIGMA_ROWS if row[0] != "sigma_w2"),
            *real_rows("sigma_b2", VARIANCE),
        ],
    ),
    "gradient_profile": (
        theory.gradient_profile,
        SIGMAS,
        {"depth": 4},
        [
            *SIGMA_ROWS,
            *second_moment_rows("q0"),
            *size_rows("depth", theory.MAX_DEPTH),
            ("depth", 10**9, ValueError, r"`depth` must be an integer >= 1 and <= 100000, got 1000000000"),
        ],
    ),
}


@pytest.mark.parametrize(
    ("fn", "positional", "keywords", "arg", "value", "error", "match"), bad_input_params(BAD_INPUTS)
)
def test_bad_inputs_raise_errors_that_name_the_argument(fn, positional, keywords, arg, value, error, match):
    check_bad_input(fn, positional, keywords, arg, value, error, match)
