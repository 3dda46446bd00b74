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


# ------------------------------------------------------------------------------------------------
# One-pass norms: the plain sum where it is exact, the scaled path elsewhere, the same values
# ------------------------------------------------------------------------------------------------

SCALES = [1e-44, 1e-37, 1e-30, 1e-19, 1e-12, 1.0, 1e12, 1e19, 1e30, 1e37]  # 1e-44: subnormal float32


@pytest.mark.parametrize("scale", SCALES)
def test_unit_scales_and_fast_log_norm_match_float64_at_any_scale(scale):
    rng = np.random.default_rng(1)
    base = rng.normal(size=(6, 5)) * (1 + rng.random((6, 5)))
    v32 = jnp.asarray(base * scale, jnp.float32)
    # the float32 values themselves, subnormals (< 1.2e-38) read as 0: XLA flushes them to zero in
    # every computation on CPU (and GPU), so no measure can see them
    exact = np.asarray(v32, np.float64)
    exact[np.abs(exact) < np.finfo(np.float32).tiny] = 0
    norm = np.linalg.norm(exact)
    a, b, log_n = lognorm.unit_scales(v32)
    u = (v32 * a) * b
    fast = lognorm.fast_log_norm({"a": v32[:2], "b": [v32[2:]]})
    if norm == 0:
        assert log_n == -np.inf and fast == -np.inf and not np.any(u)
        return
    # float32 relative rounding (eps 6e-8) over 30 terms: 1e-6 in the natural log
    np.testing.assert_allclose(log_n, np.log(norm), atol=1e-6)
    np.testing.assert_allclose(np.asarray(u, np.float64), exact / norm, atol=1e-6)
    np.testing.assert_allclose(fast, np.log(norm), atol=1e-6)
    # the one-pass branch is taken exactly where the plain float32 sum of squares is exact
    s = float(lognorm.sum_squares(v32))
    assert bool(lognorm.sum_is_exact(jnp.float32(s), v32.size, jnp.float32)) == (1e-15 < scale < 1e18)


def test_unit_scales_per_example_axes_zero_nan_and_inf():
    v = jnp.asarray([[[3e-30, 4e-30]], [[0.0, 0.0]], [[1.0, jnp.nan]], [[jnp.inf, 1.0]]], jnp.float32)
    a, b, log_n = lognorm.unit_scales(v, axes=(1, 2))
    u = (v * a) * b
    np.testing.assert_allclose(u[0, 0], [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(log_n[0], np.log(5e-30), rtol=1e-6)
    assert not np.any(u[1]) and log_n[1] == -np.inf  # all zero: u = 0, -inf
    assert np.all(np.isnan(u[2])) and np.isnan(log_n[2])  # NaN propagates
    assert log_n[3] == np.inf  # an infinite entry: +inf
    assert a.shape == b.shape == (4, 1, 1) and log_n.shape == (4,)


def test_renorm_backward_is_exact_on_both_branches():
    h = jnp.asarray([1.0, 2.0, 3.0])
    for scale in (1e-3, 1e-30, 1e30):

        def f(h, d, scale=scale):
            return jnp.sum(jnp.asarray([scale, 2 * scale, -2 * scale], jnp.float32) * lognorm.renorm(h, d))

        g_h, g_d = jax.grad(f, argnums=(0, 1))(h, 0.0)
        np.testing.assert_allclose(g_h, [1 / 3, 2 / 3, -2 / 3], rtol=1e-6)
        np.testing.assert_allclose(g_d, np.log(3 * scale), rtol=1e-6)


def test_fast_log_norm_under_vmap_and_empty():
    v = jnp.stack([jnp.full((3,), 1e-30), jnp.full((3,), 2.0)])
    got = jax.vmap(lognorm.fast_log_norm)(v)  # the cond becomes a select: both branches, same values
    np.testing.assert_allclose(got, np.log([np.sqrt(3) * 1e-30, np.sqrt(3) * 2]), rtol=1e-6)
    assert np.isnan(lognorm.fast_log_norm([]))


@pytest.mark.parametrize("scale", SCALES + [0.0])
def test_branch_free_path_of_gpu_and_tpu_equals_the_cpu_path(scale):
    """`unit_scales` and `fast_log_norm` pick their implementation per platform (`lax.cond` on CPU,
    the exact one of three scaled sums elsewhere); both are run here, on CPU, at every scale."""
    v = jnp.asarray(np.random.default_rng(2).normal(size=(4, 7)) * scale, jnp.float32)
    for axes in [(0, 1), (1,)]:
        got = lognorm._unit_scales_select(v, axes)
        want = lognorm._unit_scales_cond(v, axes)
        np.testing.assert_allclose(got[2], want[2], atol=1e-6)
        np.testing.assert_allclose((v * got[0]) * got[1], (v * want[0]) * want[1], atol=1e-6)
    np.testing.assert_allclose(
        lognorm._fast_log_norm_select([v, v[:2]], 0), lognorm._fast_log_norm_cond([v, v[:2]], 0), atol=1e-6
    )
    with jax.enable_x64(True), np.errstate(divide="ignore"):  # float64, far below float32's range
        v64 = jnp.asarray(np.random.default_rng(2).normal(size=(4, 7)) * scale * 1e-250, jnp.float64)
        m = np.max(np.abs(np.asarray(v64)))  # numpy's own norm underflows here: scale it first
        want = np.log(m) + np.log(np.linalg.norm(np.asarray(v64) / m)) if m > 0 else -np.inf
        np.testing.assert_allclose(lognorm._unit_scales_select(v64, (0, 1))[2], want, atol=1e-12)
