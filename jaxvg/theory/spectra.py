"""Finite-width and spectral predictions for the input-output Jacobian of a deep random network.

The typical (quenched) growth rate of a propagated vector at finite width, and the mean and
variance of the squared singular values of the Jacobian from free probability (Pennington,
Schoenholz & Ganguli 2017, 2018).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxvg import checks
from jaxvg.theory import expectations, inputs, maps

WEIGHTS = ("gaussian", "orthogonal")


def typical_log_rate(
    activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, *, width: int, q0: ArrayLike = 1.0
) -> jax.Array:
    """Finite-width typical (quenched) growth rate of a back- or forward-propagated vector.

    lambda = lim (1/L) E ln(||J_L ... J_1 v|| / ||v||), natural log per layer, for blocks of width
    N = `width` at q*: the top Lyapunov exponent of the Jacobian product. With
    J = D W^T, D = diag(phi'(z)), one layer multiplies ||v||^2 by X = (sigma_w2/N) sum_i d_i g_i^2
    (g_i ~ N(0, 1), d_i = phi'(z_i)^2). For Gaussian linear nets (d_i = 1) X is sigma_w2 chi^2_N / N
    and, exactly,

        lambda = 1/2 [ln(2 sigma_w2 / N) + digamma(N / 2)].

    For other activations jaxvg treats the d_i as i.i.d. draws from the mean-field law of phi'^2 at
    q*, independent of W (Pennington et al.'s assumption), and adds the extra variance of d to the
    exact Gaussian result at second order in 1/N (the delta method, E ln X ~ ln E X - Var X / (2 E X^2)):

        lambda = 1/2 [ln(2 chi_1 / N) + digamma(N / 2) - 3 (mu2 / mu1^2 - 1) / (2 N)],

    mu_k = E[phi'(sqrt(q*) z)^(2k)]. It is exact for linear nets and leaves an O(1/N^2) error
    otherwise (relu at He init: -5/(4N) per layer; at N = 16 the formula gives -0.079 where the
    exact single-layer value is -0.088; at N = 64, -0.0196 against a Monte Carlo -0.0206 +- 0.0009).
    The mean-field rate is ln(chi_1)/2; the gap is the finite-width correction. Compare
    `jaxvg.measure.jacobian_spectrum(...).log10_lyapunov[0]` * ln 10 (that one is in decades).

    Args:
      activation: registry name, `Activation` or callable phi.
      sigma_w2, sigma_b2: weight (times fan_in) and bias variances, >= 0.
      width: hidden width N, an int in [1, MAX_WIDTH], the same for every block.
      q0: starting second moment for q* (> 0).
    Returns:
      lambda, natural log (not log10) per layer, broadcast shape of the arguments.
    Raises:
      TypeError: `width` not an int; ValueError: `width` outside [1, MAX_WIDTH]; otherwise as `q_star`.
    References:
      Pennington, Schoenholz & Ganguli 2018, https://arxiv.org/abs/1802.09979 (free independence of
      D and W); Hanin & Nica, Products of many large random matrices and gradients in deep neural
      networks, 2018, https://arxiv.org/abs/1812.05994 (finite-width fluctuations of relu nets).

    Example:
      >>> from jaxvg import theory
      >>> round(float(theory.typical_log_rate("linear", 1.0, 0.0, width=2)), 6)   # (ln 1 - gamma)/2
      -0.288608
    """
    act = inputs.checked_activation(activation, sigma_w2, sigma_b2, q0=q0)
    width = inputs.bounded_int("width", width, inputs.MAX_WIDTH)
    sw, sb, q0 = inputs.float_args(sigma_w2, sigma_b2, q0)
    return _rate_jit(act, width, sw, maps.q_star_kernel(act, sw, sb, q0))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _rate_jit(act, width, sw, qs):
    sw = jnp.broadcast_to(sw, qs.shape)
    forms = expectations.forms(act)
    mu1, mu2 = forms.chi(qs), forms.dphi4(qs)
    n = jnp.asarray(width, sw.dtype)
    return 0.5 * (
        jnp.log(2.0 * sw * mu1 / n) + jax.scipy.special.digamma(n / 2.0) - 1.5 * (mu2 / mu1**2 - 1.0) / n
    )


def jacobian_moments(
    activation,
    sigma_w2: ArrayLike,
    sigma_b2: ArrayLike,
    *,
    depth: int,
    weights: str = "gaussian",
    q0: ArrayLike = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of the squared singular values of the input-output Jacobian (N -> inf).

    By free probability (the S-transform of J J^T is the product of the layers' S-transforms) the
    first two moments of the spectral density of J J^T for L layers at q* are

        mean     = chi_1^L,
        variance = mean^2 * L * (mu2 / mu1^2 - 1 + s),

    mu_k = E[phi'(sqrt(q*) z)^(2k)], s = 1 for Gaussian weights (W^T W is Marchenko-Pastur, whose
    normalised variance is 1) and s = 0 for scaled orthogonal weights (W^T W = sigma_w2 I). Linear
    nets: mu2 = mu1^2, so the variance is L mean^2 (Gaussian) or 0 (orthogonal: exact isometry).
    Closed forms give mu_k for relu, leaky_relu, hard_tanh, linear and erf; quadrature otherwise
    (the moments exist whenever phi'^4 is integrable).

    Args:
      activation: registry name, `Activation` or callable phi.
      sigma_w2, sigma_b2: weight (times fan_in) and bias variances, >= 0.
      depth: number of layers L, an int in [1, MAX_DEPTH], all of the same width.
      weights: "gaussian" (W ~ N(0, sigma_w2 / N)) or "orthogonal" (sqrt(sigma_w2) times Haar).
      q0: starting second moment for q* (> 0); the inputs are assumed to be at q*.
    Returns:
      (mean, variance) of the eigenvalues of J J^T (dimensionless, linear scale, not log), each of
      the broadcast shape.
    Raises:
      ValueError: `weights` not one of WEIGHTS, `depth` outside [1, MAX_DEPTH]; TypeError: `depth`
        not an int, `weights` not a string; the other arguments as `q_star`.
    References:
      Pennington, Schoenholz & Ganguli 2017, https://arxiv.org/abs/1711.04735 (moments of J J^T from the S-transform);
      Pennington, Schoenholz & Ganguli 2018, https://arxiv.org/abs/1802.09979.

    Example:
      >>> from jaxvg import theory
      >>> [float(m) for m in theory.jacobian_moments("linear", 1.0, 0.0, depth=4)]
      [1.0, 4.0]
      >>> [round(float(m), 6) for m in theory.jacobian_moments("relu", 2.0, 0.0, depth=4, weights="orthogonal")]
      [1.0, 4.0]
    """
    if not isinstance(weights, str):
        raise TypeError(
            f"`weights` must be one of {list(WEIGHTS)}, got {weights!r} ({type(weights).__name__})."
        )
    checks.choice("weights", weights, WEIGHTS)
    act = inputs.checked_activation(activation, sigma_w2, sigma_b2, q0=q0)
    depth = inputs.bounded_int("depth", depth, inputs.MAX_DEPTH)
    sw, sb, q0 = inputs.float_args(sigma_w2, sigma_b2, q0)
    return _moments_jit(act, depth, weights, sw, maps.q_star_kernel(act, sw, sb, q0))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _moments_jit(act, depth, weights, sw, qs):
    sw = jnp.broadcast_to(sw, qs.shape)
    forms = expectations.forms(act)
    s = 1.0 if weights == "gaussian" else 0.0  # normalised variance of W^T W's spectrum
    mu1, mu2 = forms.chi(qs), forms.dphi4(qs)
    # chi^L through the log: XLA may rewrite (sw*mu1)**L as sw**L * mu1**L, which overflows to
    # inf * 0 = NaN for relu (sw = 2, mu1 = 1/2) at L >= 128 in float32.
    log_mean = depth * jnp.log(sw * mu1)
    mean = jnp.exp(log_mean)
    return mean, jnp.exp(2.0 * log_mean) * depth * (mu2 / mu1**2 - 1.0 + s)
