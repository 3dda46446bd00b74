"""Underflow- and overflow-safe norms in log space: the one place jaxvg computes them.

A float32 gradient of 1e-60 is zero in float32, and the textbook ‖g‖ = sqrt(Σ g²) flushes to zero
already near 1e-19 (g² underflows). Every function here scales by m = max|g| first:
log‖g‖ = log m + ½·log Σ (g/m)², which neither underflows nor overflows for any finite g.
Conventions: -inf means every entry is exactly zero; NaN propagates from NaN entries.

`renorm` carries this into a backward pass: an identity whose VJP hands on the unit cotangent and
returns the log of the cotangent's norm, so that a chain of block VJPs never forms the raw product.

Example:
  >>> import jax.numpy as jnp
  >>> from jaxvg.measure import lognorm
  >>> round(float(lognorm.log10_norm({"a": jnp.full((4,), 1e-30), "b": jnp.zeros(3)})), 4)
  -29.699
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["LN10", "log10_norm", "log_norm", "max_abs", "normalise", "renorm"]

LN10 = math.log(10.0)


def max_abs(tree: Any, axes_keep: int = 0) -> jax.Array:
    """max |v| over all leaves of `tree`, keeping the first `axes_keep` axes of each leaf.

    Returns:
      Shape (leading `axes_keep` axes of the leaves,); same dtype as the leaves.
    """
    leaves = [jnp.asarray(v) for v in jax.tree.leaves(tree)]
    ms = [jnp.max(jnp.abs(v), axis=tuple(range(axes_keep, v.ndim))) for v in leaves]
    return functools.reduce(jnp.maximum, ms)


def log_norm(tree: Any, axes_keep: int = 0) -> jax.Array:
    """Natural log of the Frobenius norm over all leaves of `tree` (keeping `axes_keep` leading
    axes): log m + ½·log Σ (v/m)², m = max|v|. -inf when every entry is zero, NaN when one is NaN.

    Returns:
      Shape (leading `axes_keep` axes,), natural log.
    """
    leaves = [jnp.asarray(v) for v in jax.tree.leaves(tree)]
    m = max_abs(leaves, axes_keep)
    safe = jnp.where(m > 0, m, 1)
    sq = sum(
        jnp.sum(
            jnp.square(v / safe.reshape(safe.shape + (1,) * (v.ndim - axes_keep))),
            axis=tuple(range(axes_keep, v.ndim)),
        )
        for v in leaves
    )
    return jnp.where(m == 0, -jnp.inf, jnp.log(safe) + 0.5 * jnp.log(sq))  # m NaN: sq NaN


def log10_norm(tree: Any, axes_keep: int = 0) -> jax.Array:
    """`log_norm` in decades (log10); leaves narrower than float32 are measured in float32."""
    leaves = [
        v.astype(jnp.float32) if v.dtype.itemsize < 4 else v for v in map(jnp.asarray, jax.tree.leaves(tree))
    ]
    return log_norm(leaves, axes_keep) / LN10


def normalise(v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(v / ‖v‖_F, log ‖v‖_F) for one array; zeros and -inf when v == 0, NaNs when v has a NaN."""
    m = jnp.max(jnp.abs(v))
    safe = jnp.where(m > 0, m, 1)
    u = v / safe
    n = jnp.sqrt(jnp.sum(jnp.square(u)))
    u = jnp.where(m == 0, 0, u / jnp.where(m == 0, 1, n))  # m NaN: n NaN
    return u, jnp.where(m == 0, -jnp.inf, jnp.log(safe) + jnp.log(n))


@jax.custom_vjp
def renorm(h: jax.Array, d: jax.Array) -> jax.Array:
    """Identity on `h`; its VJP divides the cotangent of h by its Frobenius norm and returns the
    natural log of that norm as the cotangent of the scalar `d` (dtype of d).

    Placed after every block of a forward pass, with one scalar d per node, every VJP upstream of a
    node starts from a unit-norm cotangent, so nothing underflows at any depth, and `jax.grad` with
    respect to the d's returns the per-block natural-log gains (at the last node: log ||dloss/dh_L||);
    `jaxvg.measure.gradient_flow` is built on it.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> g = jax.grad(lambda h, d: jnp.sum(1e-30 * renorm(h, d)), argnums=(0, 1))(jnp.ones(4), 0.0)
      >>> g[0].tolist(), round(float(g[1]) / LN10, 4)  # unit cotangent; log10 ||1e-30 * 1_4||
      ([0.5, 0.5, 0.5, 0.5], -29.699)
    """
    del d
    return h


def _renorm_fwd(h, d):
    return h, jnp.zeros((), d.dtype)


def _renorm_bwd(d0, ct):
    u, logn = normalise(ct)
    return u, logn.astype(d0.dtype)


renorm.defvjp(_renorm_fwd, _renorm_bwd)
