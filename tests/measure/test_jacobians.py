"""`jaxvg.measure.jacobian_norms` and `jacobian_spectrum` against full jax.jacfwd Jacobians, their SVD
and explicit QR, in float64 (1e-10 decades) and float32 (1e-4 decades)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxvg
from jaxvg import measure

from .references import TOL32, TOL64, brute_force_jacobian_norms, cast, data, pure, view

# ------------------------------------------------------------------------------------------------
# Jacobian norms
# ------------------------------------------------------------------------------------------------


def test_jacobian_norms_exact_matches_brute_force(x64):
    model = jaxvg.MLP(3, 8, 5, 2, activation="tanh", residual=True, param_dtype=jnp.float64, rngs=nnx.Rngs(9))
    x, _ = data(9, 4, 3, 2, jnp.float64)
    norms = measure.jacobian_norms(model, x)
    np.testing.assert_allclose(norms.log10_fro, brute_force_jacobian_norms(model, x), rtol=0, atol=TOL64)
    np.testing.assert_allclose(norms.log10_msv, 2 * norms.log10_fro - np.log10(8), atol=1e-12)
    assert not np.any(norms.log10_fro_stderr)


def test_jacobian_norms_float32_matches_float64():
    # TOL32 holds on CPU float32 and on GPU/TPU with precision="highest" (the default).
    with jax.enable_x64(True):
        model64 = jaxvg.MLP(3, 16, 8, None, activation="tanh", param_dtype=jnp.float64, rngs=nnx.Rngs(10))
        x64_, _ = data(10, 4, 3, 1, jnp.float64)
        ref = brute_force_jacobian_norms(model64, x64_)
        model32 = cast(model64, jnp.float32)
        x32 = np.asarray(x64_, np.float32)
    norms = measure.jacobian_norms(model32, x32)
    np.testing.assert_allclose(norms.log10_fro, ref, rtol=0, atol=TOL32)


@pytest.mark.slow
def test_hutchinson_error_falls_as_one_over_sqrt_probes_and_stderr_covers(x64):
    model = jaxvg.MLP(3, 12, 4, None, activation="tanh", sigma_w2=1.5, init="gaussian",
                      param_dtype=jnp.float64, rngs=nnx.Rngs(11))  # fmt: skip
    x, _ = data(11, 4, 3, 1, jnp.float64)
    exact = measure.jacobian_norms(model, x).log10_fro[:, :-1]
    gd, state = nnx.split(view(model))
    keys = jax.random.split(jax.random.key(0), 200)

    def estimate(k):
        def run(key):
            return measure.jacobian_norms_from_split(gd, state, x, method="hutchinson", num_probes=k, key=key)

        return jax.jit(jax.vmap(run))(keys)

    est8, est64 = estimate(8), estimate(64)
    exact = np.asarray(exact)[None]
    rms = [np.sqrt(np.mean((10 ** (2 * (e.log10_fro[..., :-1] - exact)) - 1) ** 2)) for e in (est8, est64)]
    assert 2.5 <= rms[0] / rms[1] <= 3.5, rms  # sqrt(64/8) = 2.83
    z = np.abs(est64.log10_fro[..., :-1] - exact) / est64.log10_fro_stderr[..., :-1]
    covered = np.mean(z <= 2, axis=0)  # per (example, layer): the share of the 200 keys
    assert np.all(covered >= 0.9), covered


@pytest.mark.parametrize("method", ["hutchinson", "exact"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_starting_probes_are_normalised_in_closed_form_as_by_the_reduction(method, dtype):
    from jaxvg.measure import jacobians, lognorm

    cts = jacobians.probe_cotangents(method, 5, jax.random.key(3), (4, 3, 6), dtype)  # (K, batch, 3, 6)
    hutch = method == "hutchinson"
    got, want = jacobians._unit_probes(cts, hutch), lognorm.normalise_probes(cts, hutch)
    assert got[0].dtype == want[0].dtype == dtype
    np.testing.assert_array_equal(np.asarray(got[0], np.float32), np.asarray(want[0], np.float32))
    np.testing.assert_allclose(got[1], want[1], rtol=1e-7)
    if hutch:
        np.testing.assert_allclose(got[2], want[2], rtol=1e-7)  # each probe 1/K of the norm
    else:
        assert got[2] is None and want[2] is None


def test_rademacher_probes_are_independent_fair_signs(x64):
    from jaxvg.measure.jacobians import rademacher

    u = np.asarray(rademacher(jax.random.key(3), (5, 7, 1001), jnp.float64))  # 35035: not a multiple of 32
    assert u.shape == (5, 7, 1001) and u.dtype == np.float64 and set(np.unique(u)) == {-1.0, 1.0}
    flat, n = u.ravel(), u.size
    bound = 4 / np.sqrt(n)  # 4 standard errors
    assert abs(flat.mean()) < bound
    for lag in (1, 31, 32, 33, 1001):  # neighbours within a word, across words, across rows
        assert abs(np.mean(flat[lag:] * flat[:-lag])) < 4 / np.sqrt(n - lag), lag
    other = np.asarray(rademacher(jax.random.key(4), (5, 7, 1001), jnp.float64))
    assert abs(np.mean(flat * other.ravel())) < bound  # another key: another draw


# ------------------------------------------------------------------------------------------------
# Jacobian spectrum
# ------------------------------------------------------------------------------------------------


def test_jacobian_spectrum_matches_svd_and_qr_in_float64(x64):
    model = jaxvg.MLP(5, 6, 5, None, activation="tanh", sigma_w2=1.5, init="gaussian",
                      param_dtype=jnp.float64, rngs=nnx.Rngs(12))  # fmt: skip
    x = jax.random.normal(jax.random.key(3), (5,), jnp.float64)
    spec = measure.jacobian_spectrum(model, x, layers=(0, 2))
    blocks = [pure(b) for b in view(model).blocks]
    hs = [x[None]]
    for f in blocks:
        hs.append(f(hs[-1]))
    for layer, got in zip((0, 2), spec.log10_sv, strict=True):

        def tail(h, layer=layer):
            for g in blocks[layer:]:
                h = g(h)
            return h

        jac = np.asarray(jax.jacfwd(tail)(hs[layer])).reshape(6, hs[layer].size)
        want = np.log10(np.linalg.svd(jac, compute_uv=False))
        assert got.shape == (min(6, hs[layer].size),)
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL64)
    # Lyapunov exponents by explicit QR of the block Jacobians, Q_0 = I (5 x 5), k = 5
    q, total = np.eye(5), np.zeros(5)
    for f, h in zip(blocks, hs[:-1], strict=True):
        jac = np.asarray(jax.jacfwd(f)(h)).reshape(6, h.size)
        q, r = np.linalg.qr(jac @ q)
        total += np.log10(np.abs(np.diag(r)[:5]))
    np.testing.assert_allclose(spec.log10_lyapunov, np.sort(total / 5)[::-1], atol=TOL64)


def test_jacobian_spectrum_float32_exact_relative_to_largest_and_nan_tail():
    # CPU float32, and GPU/TPU with precision="highest" (the default): TF32 would blur the tail.
    with jax.enable_x64(True):
        model64 = jaxvg.MLP(16, 16, 8, None, activation="tanh", sigma_w2=0.3, init="gaussian",
                            param_dtype=jnp.float64, rngs=nnx.Rngs(14))  # fmt: skip
        x64_ = jax.random.normal(jax.random.key(4), (16,), jnp.float64)
        want = np.asarray(measure.jacobian_spectrum(model64, x64_).log10_sv[0])
        model32, x32 = cast(model64, jnp.float32), np.asarray(x64_, np.float32)
    got = np.asarray(measure.jacobian_spectrum(model32, x32).log10_sv[0])
    assert np.all(np.isfinite(want)) and want[0] - want[-1] > 8  # beyond float32's 7 decades
    finite = np.isfinite(got)
    assert finite[0] and not finite[-1] and np.all(finite[: finite.sum()])  # NaN only in the tail
    assert np.all(want[~finite] - want[0] < -5)  # NaN only for values near eps * sigma_1 or below
    close = want - want[0] > -2  # within 2 decades of sigma_1: relative error ~ eps * 100
    np.testing.assert_allclose(got[close], want[close], atol=TOL32)


def test_orthogonal_linear_net_has_unit_singular_values_float32():
    # 1e-5 decades: CPU float32, and GPU/TPU with precision="highest" (the default); with TF32
    # matmuls the singular values were 4.8e-4 from 1 on an H200.
    model = jaxvg.MLP(
        16, 16, 6, None, activation="linear", init="orthogonal", use_bias=False, rngs=nnx.Rngs(13)
    )
    spec = measure.jacobian_spectrum(model, jnp.ones(16), layers=(0, 3, 5))
    for sv in spec.log10_sv:
        assert sv.shape == (16,)
        np.testing.assert_allclose(sv, 0.0, atol=1e-5)
    np.testing.assert_allclose(spec.log10_lyapunov, 0.0, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def small():
    return jaxvg.MLP(3, 4, 2, 1, rngs=nnx.Rngs(0)), jnp.ones((2, 3))


def test_layers_out_of_range_and_batch_to_spectrum(small):
    model, x = small
    with pytest.raises(ValueError, match=r"`layers` must hold ints in \[0, 2\).* got \(0, 2\)"):
        measure.jacobian_spectrum(model, x[0], layers=(0, 2))
    with pytest.raises(ValueError, match=r"`x` must be ONE example of shape \(3,\) \(no batch axis\)"):
        measure.jacobian_spectrum(model, x)


def test_unknown_method(small):
    model, x = small
    with pytest.raises(ValueError, match=r"`method` must be one of \['exact', 'hutchinson'\], got 'power'"):
        measure.jacobian_norms(model, x, method="power")
