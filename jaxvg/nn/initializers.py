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
from collections.abc import Callable, Sequence
from typing import Any

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
# No standard-normal draw of any float dtype exceeds this in magnitude (float64's largest is about
# 8.3, float32's 5.4): a scale s gives entries below s * NORMAL_MAX (orthogonal: below s).
NORMAL_MAX = 10.0


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
        if jnp.finfo(dtype).bits < 32:  # no QR in 16 bits on CPU: draw in float32, then round
            return base(key, shape, jnp.float32).astype(dtype)
        return base(key, shape, dtype)

    return init


def _zeros(key, shape, dtype=jnp.float32):
    del key
    return jnp.zeros(shape, dtype)


def validate(init: str, sigma_w2: float, sigma_b2: float) -> None:
    """Check a scheme name and its variances; raise ValueError naming the bad argument (an
    `ArgumentTypeError`, also a TypeError, for a value of the wrong type)."""
    checks.choice("init", init, SCHEMES)
    checks.positive("sigma_w2", sigma_w2)
    checks.nonnegative("sigma_b2", sigma_b2)
    if init not in SIGMA_SCHEMES and (sigma_w2 != 1.0 or sigma_b2 != 0.0):
        raise ValueError(
            f"`sigma_w2`/`sigma_b2` apply only to the schemes {list(SIGMA_SCHEMES)}; init={init!r} fixes "
            f"its own variance, got sigma_w2={sigma_w2!r}, sigma_b2={sigma_b2!r}. Use init='gaussian' "
            "(or 'orthogonal') to set the variances."
        )


def check_scale(init: str, sigma_w2: float, sigma_b2: float, *, fan_ins: Sequence[int], dtype: Any) -> None:
    """Check that the initial weights of `init` are representable in `dtype`: they neither
    overflow to +-inf nor flush to zero.

    A "gaussian" kernel of fan-in m has standard deviation s = sqrt(sigma_w2 / m) and entries below
    s * `NORMAL_MAX`; an "orthogonal" one entries up to sqrt(sigma_w2); biases have s =
    sqrt(sigma_b2). The largest entry must stay below the dtype's largest finite number and the
    smallest s must not fall below its smallest normal number (`jnp.finfo(dtype).tiny`), where the
    draws would be zeros or imprecise subnormals. The fixed-variance schemes are always within range.

    Args:
      init, sigma_w2, sigma_b2: as for `kernel_init` (validated first).
      fan_ins: the fan-in of every kernel.
      dtype: the parameters' floating dtype.
    Raises:
      ValueError: naming `sigma_w2` or `sigma_b2`, the dtype and the valid range.
    """
    validate(init, sigma_w2, sigma_b2)
    if init not in SIGMA_SCHEMES:
        return
    dtype = jnp.dtype(dtype)
    info = jnp.finfo(dtype)
    big, tiny = float(info.max), float(info.tiny)
    low_fan, high_fan = min(fan_ins), max(fan_ins)
    largest_entry = NORMAL_MAX**2 / low_fan if init == "gaussian" else 1.0  # per unit of sigma_w2
    ranges = {"sigma_w2": (tiny * tiny * high_fan, big * big / largest_entry)}  # inf, not OverflowError
    if sigma_b2 > 0:
        ranges["sigma_b2"] = (tiny * tiny, (big / NORMAL_MAX) * (big / NORMAL_MAX))
    for name, (low, high) in ranges.items():
        value = sigma_w2 if name == "sigma_w2" else sigma_b2
        if low <= value <= high:
            continue
        what = "overflow to +-inf" if value > high else "flush to zero (below the smallest normal number)"
        fans = f"fan-ins {low_fan}..{high_fan}, " if name == "sigma_w2" else ""
        raise ValueError(
            f"`{name}`={value!r} makes the {dtype.name} initial weights of init={init!r} {what}: for "
            f"{dtype.name} ({fans}largest {big:.3g}, smallest normal {tiny:.3g}) `{name}` must lie in "
            f"[{low:.3g}, {high:.3g}]{' or be 0' if name == 'sigma_b2' else ''}. Choose a value in that range "
            "or a wider `param_dtype`."
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
