"""`jaxvg.measure.lognorm` against float64 numpy, where float32's plain norm underflows or overflows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvg.measure import lognorm


@pytest.mark.parametrize("scale", [1e-30, 1e-3, 1.0, 1e30])
def test_log10_norm_float32_matches_float64_at_any_scale(scale):
    v = np.random.default_rng(0).normal(size=(3, 5)) * scale
    want = np.log10(np.linalg.norm(v / scale)) + np.log10(scale)
    tree = {"a": jnp.asarray(v[:1], jnp.float32), "b": [jnp.asarray(v[1:], jnp.float32)]}
    assert float(jnp.linalg.norm(jnp.asarray(v, jnp.float32))) in (0.0, np.inf) or 1e-3 <= scale <= 1
    np.testing.assert_allclose(lognorm.log10_norm(tree), want, atol=1e-6)
    np.testing.assert_allclose(lognorm.log_norm(tree) / lognorm.LN10, want, atol=1e-6)
    assert float(lognorm.max_abs(tree)) == pytest.approx(np.max(np.abs(v)), rel=1e-6)


def test_axes_keep_zero_and_narrow_dtypes():
    v = jnp.asarray([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(lognorm.log_norm(v, axes_keep=1), [np.log(5.0), -np.inf])
    np.testing.assert_allclose(lognorm.max_abs(v, axes_keep=1), [4.0, 0.0])
    got = lognorm.log10_norm(jnp.full((4,), 1e-30, jnp.bfloat16))  # measured in float32
    assert got.dtype == jnp.float32 and abs(float(got) - (np.log10(2) - 30)) < 1e-2


def test_normalise_returns_unit_vector_and_log_norm():
    v = jnp.asarray([3e-30, -4e-30], jnp.float32)
    u, log_n = lognorm.normalise(v)
    np.testing.assert_allclose(u, [0.6, -0.8], rtol=1e-6)
    np.testing.assert_allclose(log_n, np.log(5e-30), rtol=1e-6)
    u, log_n = lognorm.normalise(jnp.zeros(3))
    assert not np.any(u) and log_n == -np.inf


def test_renorm_is_identity_forward_and_unit_cotangent_backward():
    h = jnp.asarray([1.0, 2.0])

    def f(h, d):
        return jnp.sum(jnp.asarray([3e-20, 4e-20]) * lognorm.renorm(h, d))

    assert float(f(h, 0.0)) == pytest.approx(11e-20)
    g_h, g_d = jax.grad(f, argnums=(0, 1))(h, 0.0)
    np.testing.assert_allclose(g_h, [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(g_d, np.log(5e-20), rtol=1e-6)


def test_nan_propagates_zero_gives_minus_inf():
    v = jnp.asarray([[1.0, jnp.nan], [0.0, 0.0]])
    got = lognorm.log_norm(v, axes_keep=1)
    assert np.isnan(got[0]) and got[1] == -np.inf
    assert np.isnan(lognorm.log10_norm({"a": v[0], "b": v[1]}))
    u, log_n = lognorm.normalise(v[0])
    assert np.all(np.isnan(u)) and np.isnan(log_n)
