"""Tests of jaxvg.theory.spectra: finite-width Lyapunov rates and Jacobian moments against sampled nets, bad inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import digamma

from jaxvg import theory
from jaxvg.nn import activations

from ._shared import SIGMA_ROWS, SIGMAS, bad_input_params, check_bad_input, second_moment_rows, size_rows


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
    # Float32, a product over 50 layers: 1 + 6e-6 with XLA's CPU backend at LLVM -O0 (the suite's,
    # see conftest.py), within 1e-6 at -O2; 50 roundings of 1.2e-7 each allow 6e-6.
    np.testing.assert_allclose(
        theory.jacobian_moments("tanh", 1.0, 0.0, depth=50, weights="orthogonal"), (1.0, 0.0), atol=1e-5
    )


# --- argument checks --------------------------------------------------------------------------


def test_jacobian_moments_stay_finite_at_great_depth_in_float32():
    # (sw * mu1) ** L was rewritten by XLA into sw**L * mu1**L = inf * 0 for relu at L >= 128.
    for depth in (64, 128, 512):
        mean, var = theory.jacobian_moments("relu", 2.0, 0.0, depth=depth, weights="gaussian")
        assert float(mean) == pytest.approx(1.0, rel=1e-5)
        assert float(var) == pytest.approx(2.0 * depth, rel=1e-5)  # relu: mu2/mu1^2 - 1 + 1 = 2


# --- bad inputs: one table per public function ------------------------------------------------

BAD_INPUTS = {
    "typical_log_rate": (
        theory.typical_log_rate,
        SIGMAS,
        {"width": 8},
        [*SIGMA_ROWS, *second_moment_rows("q0"), *size_rows("width", theory.MAX_WIDTH)],
    ),
    "jacobian_moments": (
        theory.jacobian_moments,
        SIGMAS,
        {"depth": 3},
        [
            *SIGMA_ROWS,
            *second_moment_rows("q0"),
            *size_rows("depth", theory.MAX_DEPTH),
            ("weights", "haar", ValueError, r"`weights` must be one of \['gaussian', 'orthogonal'\]"),
            ("weights", None, TypeError, r"`weights` must be one of \['gaussian', 'orthogonal'\], got None"),
            ("weights", ["gaussian"], TypeError, r"`weights` must be one of .*got \['gaussian'\] \(list\)"),
        ],
    ),
}


@pytest.mark.parametrize(
    ("fn", "positional", "keywords", "arg", "value", "error", "match"), bad_input_params(BAD_INPUTS)
)
def test_bad_inputs_raise_errors_that_name_the_argument(fn, positional, keywords, arg, value, error, match):
    check_bad_input(fn, positional, keywords, arg, value, error, match)
