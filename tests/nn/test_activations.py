"""jaxvg.nn.activations: every registry derivative against jax.grad, exact gelu, callables, errors, and the
closed-form Gaussian expectations (hard_tanh against Monte Carlo, erf against quadrature at large q)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from jaxvg import quadrature
from jaxvg.nn import activations

REGISTRY_NAMES = (
    "sigmoid", "tanh", "relu", "leaky_relu", "gelu", "selu", "elu", "erf", "hard_tanh", "softplus", "swish", "linear",
)  # fmt: skip
KINKS = {"relu": (0.0,), "leaky_relu": (0.0,), "selu": (0.0,), "elu": (0.0,), "hard_tanh": (-1.0, 1.0)}
# 121 points on [-6, 6], none closer than 0.05 to a kink (0, +-1 are not on the grid)
POINTS = np.linspace(-6.0, 6.0, 121) + 0.025

SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805
REFERENCE = {  # float64 numpy/scipy definitions
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0),
    "leaky_relu": lambda x: np.where(x > 0, x, activations.LEAKY_RELU_SLOPE * x),
    "gelu": lambda x: 0.5 * x * (1 + special.erf(x / math.sqrt(2))),
    "selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(x)),
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
    "erf": special.erf,
    "hard_tanh": lambda x: np.clip(x, -1, 1),
    "softplus": lambda x: np.logaddexp(0, x),
    "swish": lambda x: x / (1 + np.exp(-x)),
    "linear": lambda x: x,
}


def test_registry_has_the_documented_names():
    assert set(activations.ACTIVATIONS) == set(REGISTRY_NAMES)
    for name in REGISTRY_NAMES:
        act = activations.get(name)
        assert act.name == name and act is activations.ACTIVATIONS[name]
        assert act.smooth == (name not in KINKS)


@pytest.mark.parametrize("name", REGISTRY_NAMES)
def test_fn_matches_reference(name, x64):
    x = jnp.asarray(POINTS)
    np.testing.assert_allclose(activations.get(name)(x), REFERENCE[name](POINTS), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", REGISTRY_NAMES)
def test_dfn_equals_grad_of_fn(name, x64):
    act = activations.get(name)
    x = jnp.asarray(POINTS)
    grad = jax.vmap(jax.grad(act.fn))(x)
    np.testing.assert_allclose(act.dfn(x), grad, rtol=1e-12, atol=1e-15)
    # and float32 inputs keep float32
    assert act.dfn(jnp.asarray(POINTS, jnp.float32)).dtype == jnp.float32


@pytest.mark.parametrize("name", [n for n in REGISTRY_NAMES if n not in KINKS])
def test_d2fn_equals_second_grad(name, x64):
    act = activations.get(name)
    x = jnp.asarray(POINTS)
    np.testing.assert_allclose(act.d2fn(x), jax.vmap(jax.grad(jax.grad(act.fn)))(x), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", REGISTRY_NAMES)
def test_dphi_bound_holds_everywhere(name, x64):
    """`Activation.dphi_bound` (2 for the registry): the φ′ statistics rely on it to rule out
    overflowing sums. Checked on a dense grid over [-50, 50] and at the extremes of float64."""
    act = activations.get(name)
    x = jnp.concatenate([jnp.linspace(-50.0, 50.0, 200_001), jnp.asarray([-1e300, -1e10, 1e10, 1e300])])
    d = np.abs(np.asarray(act.dfn(x)))
    assert act.dphi_bound == activations.DPHI_BOUND == 2.0
    assert np.nanmax(d) <= act.dphi_bound, (name, float(np.nanmax(d)))
    assert activations.get(jnp.exp).dphi_bound is None  # a wrapped callable: no bound known


def test_dfn_at_kinks_is_documented_subgradient():
    assert float(activations.get("relu").dfn(0.0)) == 0.0
    assert float(activations.get("hard_tanh").dfn(1.0)) == 0.0
    assert float(activations.get("hard_tanh").dfn(-1.0)) == 0.0


def test_gelu_is_the_exact_erf_form(x64):
    x = jnp.asarray(POINTS)
    gelu = activations.get("gelu")
    exact = 0.5 * POINTS * (1 + special.erf(POINTS / math.sqrt(2)))
    np.testing.assert_allclose(gelu(x), exact, rtol=1e-13, atol=1e-15)
    # the tanh approximation differs by up to ~5e-4 on this grid: not what the registry uses
    assert np.abs(np.asarray(jax.nn.gelu(x, approximate=True)) - exact).max() > 1e-4
    # phi'(x) = Phi(x) + x * pdf(x)
    dexact = special.ndtr(POINTS) + POINTS * np.exp(-(POINTS**2) / 2) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(gelu.dfn(x), dexact, rtol=1e-12, atol=1e-15)


def test_callable_is_wrapped_and_cached(x64):
    def sine(x):
        return jnp.sin(x)

    act = activations.get(sine)
    assert isinstance(act, activations.Activation)
    assert act.name == "sine" and act.fn is sine
    assert activations.get(sine) is act  # cached: one object per callable
    assert activations.get(act) is act  # an Activation passes through
    x = jnp.asarray(POINTS)
    np.testing.assert_allclose(act.dfn(x), np.cos(POINTS), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(act.d2fn(x), -np.sin(POINTS), rtol=1e-12, atol=1e-15)
    assert hash(act) == hash(activations.get(sine))


def test_unknown_name_lists_choices():
    with pytest.raises(
        ValueError, match=r"`activation` must be one of \[.*'tanh'.*\] or a callable, got 'sigmod'"
    ):
        activations.get("sigmod")


def test_wrong_type():
    with pytest.raises(TypeError, match=r"`activation` must be a name in .* or a callable, got int"):
        activations.get(3)


# --- closed-form Gaussian expectations --------------------------------------------------------


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


@pytest.mark.parametrize("q", [0.3, 4.0, 1e4, 1e8, 1e12])
def test_erf_closed_forms_hold_at_large_q(x64, q):
    # The factored det (1 + 2q(1 - c))(1 + 2q(1 + c)) and the arctan form of V do not cancel at large
    # q; the textbook (1 + 2q)^2 - (2qc)^2 loses all digits at c = 1 for q ~ 1e16 (float64).
    forms, erf = activations.get("erf").closed_forms, activations.get("erf")
    q = jnp.asarray(q)
    for c in (-0.7, 0.2, 0.999, 1.0):
        np.testing.assert_allclose(
            forms["chi_c"](q, c), quadrature.expect_2d(erf.dfn, erf.dfn, q, jnp.asarray(c)), rtol=1e-10
        )
    if q < 1e4:  # the arcsin form itself loses digits beyond
        np.testing.assert_allclose(forms["q_map"](q), 2 / np.pi * np.arcsin(2 * q / (1 + 2 * q)), rtol=1e-12)
    np.testing.assert_allclose(forms["q_map"](q), quadrature.expect_1d(lambda u: erf(u) ** 2, q), rtol=1e-12)
    dv = jax.grad(forms["q_map"])(q)  # what xi_q uses: (4/pi) / ((1 + 2q) sqrt(1 + 4q))
    np.testing.assert_allclose(dv, 4 / np.pi / ((1 + 2 * q) * np.sqrt(1 + 4 * q)), rtol=1e-12)
