"""jaxvg.initializers, through the models that use them: variances, biases, orthogonality, tails.

Statistical tolerances. A kernel of shape (fan_in, fan_out) = (1024, 64) has N = 65536 i.i.d. entries.
The empirical variance of N Gaussian samples has relative standard error sqrt(2/N) = 0.55% (for a
uniform, sqrt(0.8/N) = 0.35%, since E[w^4]/E[w^2]^2 = 9/5), so the 5% tolerance of the issue is 9
standard errors (fan_out = 13 would already give the 4 SE asked for; 64 costs nothing). Orthogonal
kernels have no sampling noise in this statistic: sum(K**2) = sigma_w2 * fan_out exactly.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats

from jaxvg.nn import initializers, models

FAN_IN, FAN_OUT = 1024, 64
N = FAN_IN * FAN_OUT
SIGMA_W2, SIGMA_B2 = 1.7, 0.3

# variance * fan_in of each scheme at (FAN_IN, FAN_OUT); sigma_w2 = SIGMA_W2 where the scheme takes it
EXPECTED_VAR_TIMES_FAN_IN = {
    "gaussian": SIGMA_W2,
    "orthogonal": SIGMA_W2,
    "lecun_normal": 1.0,
    "he_normal": 2.0,
    "glorot_normal": 2.0 * FAN_IN / (FAN_IN + FAN_OUT),
    "glorot_uniform": 2.0 * FAN_IN / (FAN_IN + FAN_OUT),  # a^2/3 with a^2 = 6/(fan_in+fan_out)
    "small_uniform": 1.0 / 3.0,  # a^2/3 with a = 1/sqrt(fan_in)
}
NORMAL_SCHEMES = ("gaussian", "lecun_normal", "he_normal", "glorot_normal")
UNIFORM_LIMIT = {
    "glorot_uniform": math.sqrt(6.0 / (FAN_IN + FAN_OUT)),
    "small_uniform": 1.0 / math.sqrt(FAN_IN),
}


def _sigmas(scheme):
    if scheme in initializers.SIGMA_SCHEMES:
        return {"sigma_w2": SIGMA_W2, "sigma_b2": SIGMA_B2}
    return {}


@functools.cache
def _model(scheme, shape=(FAN_IN, FAN_OUT)):
    """One-block MLP with (in_features, width) = shape and a (width, width) head; built once."""
    return models.MLP(shape[0], shape[1], 1, shape[1], init=scheme, **_sigmas(scheme), rngs=nnx.Rngs(0))


def _kernel(scheme, shape=(FAN_IN, FAN_OUT)):
    """Block-1 kernel, as float64 numpy."""
    return np.asarray(_model(scheme, shape).blocks[0].linear.kernel[...], np.float64)


def test_schemes_are_the_documented_ones():
    assert set(initializers.SCHEMES) == set(EXPECTED_VAR_TIMES_FAN_IN)


@pytest.mark.parametrize("scheme", initializers.SCHEMES)
def test_kernel_variance_times_fan_in(scheme):
    k = _kernel(scheme)
    assert k.shape == (FAN_IN, FAN_OUT)
    var_times_fan_in = k.var() * FAN_IN
    assert var_times_fan_in == pytest.approx(EXPECTED_VAR_TIMES_FAN_IN[scheme], rel=0.05)
    # mean 0: |mean| below 5 standard errors of the mean
    assert abs(k.mean()) < 5 * k.std() / math.sqrt(N)


@pytest.mark.parametrize("scheme", initializers.SCHEMES)
def test_head_uses_the_blocks_scheme(scheme):
    # head (64, 64): 4096 entries, variance relative SE sqrt(2/4096) = 2.2%; allow 12% (5.4 SE).
    head = np.asarray(_model(scheme).head.kernel[...], np.float64)
    assert head.shape == (FAN_OUT, FAN_OUT)
    expected = {"glorot_normal": 1.0, "glorot_uniform": 1.0}.get(scheme, EXPECTED_VAR_TIMES_FAN_IN[scheme])
    assert head.var() * FAN_OUT == pytest.approx(expected, rel=0.12)
    if scheme == "orthogonal":
        np.testing.assert_allclose(head.T @ head, SIGMA_W2 * np.eye(FAN_OUT), atol=1e-5)


def test_orthogonal_variance_is_exact():
    k = _kernel("orthogonal")
    assert (k**2).sum() == pytest.approx(SIGMA_W2 * FAN_OUT, rel=1e-5)


@pytest.mark.parametrize("shape", [(FAN_IN, FAN_OUT), (FAN_OUT, 256)])
def test_orthogonal_kernels_are_orthogonal(shape):
    k = _kernel("orthogonal", shape=shape)
    fan_in, fan_out = shape
    # K^T K = sigma_w2 I (orthonormal columns) when fan_in >= fan_out, else K K^T = sigma_w2 I;
    # float32 entries, Gram matrix in float64: errors ~1e-6.
    gram = k.T @ k if fan_in >= fan_out else k @ k.T
    np.testing.assert_allclose(gram, SIGMA_W2 * np.eye(min(shape)), atol=1e-5)


def test_orthogonal_float64_to_working_precision(x64):
    model = models.MLP(
        96, 48, 1, None, init="orthogonal", sigma_w2=2.0, param_dtype=jnp.float64, rngs=nnx.Rngs(0)
    )
    k = np.asarray(model.blocks[0].linear.kernel[...])
    assert k.dtype == np.float64
    np.testing.assert_allclose(k.T @ k, 2.0 * np.eye(48), atol=1e-12)


@pytest.mark.parametrize("scheme", NORMAL_SCHEMES)
def test_gaussian_schemes_are_untruncated(scheme):
    # jax's truncated normals never exceed 2/0.8796 = 2.27 std. An untruncated normal exceeds 2 std
    # with probability p = 2(1 - Phi(2)) = 0.0455; over N = 65536 samples the observed share has
    # standard error sqrt(p(1-p)/N) = 0.00081: allow 5 of them. The max of 65536 |N(0,1)| exceeds
    # 3.5 std except with probability (1 - 4.7e-4)^65536 ~ e^-30.
    k = _kernel(scheme)
    z = k / k.std()
    p = 2 * stats.norm.sf(2.0)
    share = np.mean(np.abs(z) > 2.0)
    assert abs(share - p) < 5 * math.sqrt(p * (1 - p) / N)
    assert np.abs(z).max() > 3.5
    # and Gaussian in shape: Kolmogorov-Smirnov against N(0, expected std)
    std = math.sqrt(EXPECTED_VAR_TIMES_FAN_IN[scheme] / FAN_IN)
    assert stats.kstest(k.ravel() / std, "norm").pvalue > 1e-4


@pytest.mark.parametrize("scheme", sorted(UNIFORM_LIMIT))
def test_uniform_schemes_fill_their_interval(scheme):
    k = _kernel(scheme)
    a = UNIFORM_LIMIT[scheme]
    assert np.abs(k).max() <= a * (1 + 1e-6)
    # the extreme of 65536 uniforms lies within a*1e-3 of the edge except with probability ~e^-65
    assert k.max() > a * (1 - 1e-3) and k.min() < -a * (1 - 1e-3)


@pytest.mark.parametrize("scheme", ["gaussian", "orthogonal"])
def test_sigma_scheme_biases_are_normal(scheme):
    # 8192 biases: the variance has relative standard error sqrt(2/8192) = 1.6%; allow 5 SE = 8%.
    model = models.MLP(2, 8192, 1, None, init=scheme, sigma_w2=1.0, sigma_b2=SIGMA_B2, rngs=nnx.Rngs(3))
    b = np.asarray(model.blocks[0].linear.bias[...], np.float64)
    assert b.var() == pytest.approx(SIGMA_B2, rel=0.08)
    assert abs(b.mean()) < 5 * math.sqrt(SIGMA_B2 / b.size)
    assert stats.kstest(b / math.sqrt(SIGMA_B2), "norm").pvalue > 1e-4


@pytest.mark.parametrize("scheme", initializers.SCHEMES)
def test_biases_zero_unless_sigma_b2(scheme):
    # sigma_b2 = 0 (the default) gives zero biases in every scheme; other schemes have no sigma_b2.
    model = models.MLP(5, 32, 3, 2, init=scheme, rngs=nnx.Rngs(0))
    for linear in [b.linear for b in model.blocks] + [model.head]:
        np.testing.assert_array_equal(linear.bias[...], 0.0)


@pytest.mark.parametrize("scheme", initializers.SCHEMES)
def test_same_seed_bitwise_identical(scheme):
    def params(seed):
        model = models.MLP(5, 32, 3, 2, init=scheme, **_sigmas(scheme), rngs=nnx.Rngs(seed))
        return jax.tree.leaves(nnx.state(model, nnx.Param))

    a, b, c = params(11), params(11), params(12)
    assert len(a) == len(b) == 8
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True) if np.asarray(x).std() > 0)


@pytest.mark.parametrize("scheme", initializers.SCHEMES)
def test_initializer_functions_follow_dtype_and_shape(scheme, x64):
    k = initializers.kernel_init(scheme, **_sigmas(scheme))(jax.random.key(0), (6, 5), jnp.float64)
    b = initializers.bias_init(scheme, **_sigmas(scheme))(jax.random.key(1), (5,), jnp.float64)
    assert k.shape == (6, 5) and k.dtype == jnp.float64
    assert b.shape == (5,) and b.dtype == jnp.float64


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"init": "xavier"}, r"`init` must be one of \[.*'gaussian'.*\], got 'xavier'"),
        (
            {"init": "he_normal", "sigma_w2": 2.0},
            r"`sigma_w2`/`sigma_b2` apply only to .*init='he_normal'.*sigma_w2=2.0",
        ),
        ({"init": "lecun_normal", "sigma_b2": 0.1}, r"init='lecun_normal'.*sigma_b2=0.1"),
        ({"init": "gaussian", "sigma_w2": 0.0}, r"`sigma_w2` must be a finite number > 0, got 0.0"),
        ({"init": "gaussian", "sigma_b2": -1.0}, r"`sigma_b2` must be a finite number >= 0, got -1.0"),
        (
            {"init": "orthogonal", "sigma_w2": float("inf")},
            r"`sigma_w2` must be a finite number > 0, got inf",
        ),
    ],
)
def test_bad_scheme_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        initializers.kernel_init(**kwargs)
    with pytest.raises(ValueError, match=match):
        models.MLP(2, 4, 2, 1, **kwargs, rngs=nnx.Rngs(0))
