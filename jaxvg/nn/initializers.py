"""Weight initialisation schemes by name, for kernels of shape (fan_in, fan_out).

All Gaussian schemes are untruncated normals (jax's built-in lecun/he/glorot normals are truncated
normals rescaled to the target variance, which changes higher moments that mean-field theory uses).

| scheme          | kernel                                   | bias          |
|-----------------|------------------------------------------|---------------|
| gaussian        | N(0, sigma_w2 / fan_in)                  | N(0, sigma_b2)|
| orthogonal      | sqrt(sigma_w2) * Haar-orthogonal         | N(0, sigma_b2)|
| lecun_normal    | N(0, 1 / fan_in)                         | 0             |
| he_normal       | N(0, 2 / fan_in)                         | 0             |
| glorot_normal   | N(0, 2 / (fan_in + fan_out))             | 0             |
| glorot_uniform  | U(-a, a), a = sqrt(6 / (fan_in+fan_out)) | 0             |
| small_uniform   | U(-1/sqrt(fan_in), 1/sqrt(fan_in))       | 0             |

`small_uniform` is the "commonly used heuristic" of Glorot & Bengio (2010, eq. 1), the pre-2010
practice under which deep sigmoid nets failed to train.

References:
  Glorot & Bengio, Understanding the difficulty of training deep feedforward neural networks, 2010.
  He et al., Delving Deep into Rectifiers, 2015, https://arxiv.org/abs/1502.01852
  Saxe et al., Exact solutions to the nonlinear dynamics of learning in deep linear networks, 2014,
  https://arxiv.org/abs/1312.6120
  Poole et al., Exponential expressivity in deep neural networks through transient chaos, 2016,
  https://arxiv.org/abs/1606.05340
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxvg import checks

Initializer = Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]

SCHEMES = (
    "gaussian",
    "orthogonal",
    "lecun_normal",
    "he_normal",
    "glorot_normal",
    "glorot_uniform",
    "small_uniform",
)
SIGMA_SCHEMES = ("gaussian", "orthogonal")  # the schemes that take sigma_w2 / sigma_b2


def _normal(variance_fn: Callable[[int, int], float]) -> Initializer:
    def init(key, shape, dtype=jnp.float32):
        fan_in, fan_out = shape[-2], shape[-1]
        std = math.sqrt(variance_fn(fan_in, fan_out))
        return std * jax.random.normal(key, shape, dtype)

    return init


def _uniform(limit_fn: Callable[[int, int], float]) -> Initializer:
    def init(key, shape, dtype=jnp.float32):
        fan_in, fan_out = shape[-2], shape[-1]
        a = limit_fn(fan_in, fan_out)
        return jax.random.uniform(key, shape, dtype, minval=-a, maxval=a)

    return init


def _orthogonal(scale: float) -> Initializer:
    base = jax.nn.initializers.orthogonal(scale=scale)

    def init(key, shape, dtype=jnp.float32):
        return base(key, shape, dtype)

    return init


def _zeros(key, shape, dtype=jnp.float32):
    del key
    return jnp.zeros(shape, dtype)


def validate(init: str, sigma_w2: float, sigma_b2: float) -> None:
    """Check a scheme name and its variances; raise ValueError naming the bad argument."""
    checks.choice("init", init, SCHEMES)
    checks.positive("sigma_w2", sigma_w2)
    checks.nonnegative("sigma_b2", sigma_b2)
    if init not in SIGMA_SCHEMES and (sigma_w2 != 1.0 or sigma_b2 != 0.0):
        raise ValueError(
            f"`sigma_w2`/`sigma_b2` apply only to the schemes {list(SIGMA_SCHEMES)}; init={init!r} fixes "
            f"its own variance, got sigma_w2={sigma_w2!r}, sigma_b2={sigma_b2!r}. Use init='gaussian' "
            "(or 'orthogonal') to set the variances."
        )


def kernel_init(init: str, *, sigma_w2: float = 1.0, sigma_b2: float = 0.0) -> Initializer:
    """The kernel initializer `(key, (fan_in, fan_out), dtype) -> array` of a named scheme.

    Args:
      init: one of `SCHEMES`.
      sigma_w2: weight variance times fan_in (schemes "gaussian" and "orthogonal" only).
      sigma_b2: bias variance (same schemes).
    Raises:
      ValueError: unknown scheme, or a non-default sigma with a scheme that fixes its own.
    """
    validate(init, sigma_w2, sigma_b2)
    return {
        "gaussian": _normal(lambda fi, fo: sigma_w2 / fi),
        "orthogonal": _orthogonal(math.sqrt(sigma_w2)),
        "lecun_normal": _normal(lambda fi, fo: 1.0 / fi),
        "he_normal": _normal(lambda fi, fo: 2.0 / fi),
        "glorot_normal": _normal(lambda fi, fo: 2.0 / (fi + fo)),
        "glorot_uniform": _uniform(lambda fi, fo: math.sqrt(6.0 / (fi + fo))),
        "small_uniform": _uniform(lambda fi, fo: 1.0 / math.sqrt(fi)),
    }[init]


def bias_init(init: str, *, sigma_w2: float = 1.0, sigma_b2: float = 0.0) -> Initializer:
    """The bias initializer `(key, (fan_out,), dtype) -> array`: N(0, sigma_b2) for the sigma
    schemes (zeros when sigma_b2 = 0), zeros otherwise."""
    validate(init, sigma_w2, sigma_b2)
    if init in SIGMA_SCHEMES and sigma_b2 > 0:
        std = math.sqrt(sigma_b2)
        return lambda key, shape, dtype=jnp.float32: std * jax.random.normal(key, shape, dtype)
    return _zeros
