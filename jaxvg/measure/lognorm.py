"""Underflow- and overflow-safe norms in log space: the one place jaxvg computes them.

A float32 gradient of 1e-60 is zero in float32, and the textbook ‖g‖ = sqrt(Σ g²) flushes to zero
already near 1e-19 (g² underflows). `log_norm` scales by m = max|g| first:
log‖g‖ = log m + ½·log Σ (g/m)², which neither underflows nor overflows for any finite g, at the
cost of two passes over g (the max, then the sum).

One pass suffices almost always: the plain float sum s = Σ g² is exact to rounding whenever it is
finite and at least n·tiny·2²⁴ (the squares that flush to zero, each below `tiny`, then change it by
less than 2⁻²⁴ relative). `sum_is_exact` tests this; `fast_log_norm` and `unit_scales` take the
one-pass sum when it holds and fall back to the scaled path (under `lax.cond`: it runs only when
needed) when it does not: a gradient near 1e-19 or below, or beyond 1e19, all zero, or non-finite.
A unit-norm cotangent times one block's Jacobian stays in range for any reasonable block, so the
measures' chains pay one pass per reduction.

Conventions: -inf means every entry is exactly zero; +inf that an entry is infinite (overflow); NaN
propagates from NaN entries.

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

__all__ = [
    "LN10",
    "fast_log_norm",
    "log10_norm",
    "log_norm",
    "log_norm_of_parts",
    "max_abs",
    "normalise",
    "normalise_probes",
    "pick_scale",
    "renorm",
    "scale_of",
    "scaled_sums",
    "scaled_unit_scales",
    "sum_is_exact",
    "sum_squares",
    "unit_leaves",
    "unit_scales",
]

LN10 = math.log(10.0)
LN2 = math.log(2.0)


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


def normalise(tree: Any, keep: int = 0) -> tuple[Any, jax.Array]:
    """(tree / ‖tree‖_F, log ‖tree‖_F) over all leaves of `tree` (one array is a tree of one leaf),
    keeping `keep` leading axes (one norm per entry); zeros and -inf for an all-zero entry, NaNs
    where an entry has a NaN. Scaled by max|v| first: nothing underflows or overflows."""
    leaves = jax.tree.leaves(tree)
    m = max_abs(leaves, keep)
    safe = jnp.where(m > 0, m, 1)

    def expand(a, v):
        return a.reshape(a.shape + (1,) * (v.ndim - keep))

    scaled = [v / expand(safe, v) for v in leaves]
    n = jnp.sqrt(sum(jnp.sum(jnp.square(v), axis=tuple(range(keep, v.ndim))) for v in scaled))
    unit = [jnp.where(expand(m == 0, v), 0, v / expand(jnp.where(m == 0, 1, n), v)) for v in scaled]
    log = jnp.where(m == 0, -jnp.inf, jnp.log(safe) + jnp.log(n))
    return jax.tree.unflatten(jax.tree.structure(tree), unit), log


def _compute_dtype(v: jax.Array) -> jnp.dtype:
    """Sums of squares run in at least float32."""
    return jnp.promote_types(v.dtype, jnp.float32) if jnp.issubdtype(v.dtype, jnp.inexact) else jnp.float32


def sum_squares(v: jax.Array, axes_keep: int = 0) -> jax.Array:
    """Σ v² over all but the first `axes_keep` axes, in one pass, in at least float32 (may underflow
    or overflow: see `sum_is_exact`)."""
    v = jnp.asarray(v)
    vv = v.astype(_compute_dtype(v)).reshape(v.shape[:axes_keep] + (-1,))  # one axis: XLA fuses the square
    return jnp.sum(jnp.square(vv), axis=-1)


def sum_is_exact(s: jax.Array, n: int, dtype: Any) -> jax.Array:
    """Whether a float sum of n squares `s` (dtype `dtype`) is exact to rounding: finite, and at
    least n·tiny·2²⁴, so that the squares below `tiny` that the sum may have flushed to zero change
    it by less than 2⁻²⁴ relative. False for NaN."""
    info = jnp.finfo(dtype)
    return (s >= float(info.tiny) * max(n, 1) * 2.0**24) & (s <= float(info.max))


def fast_log_norm(tree: Any, axes_keep: int = 0) -> jax.Array:
    """`log_norm` (same value, same conventions) in one pass over the data where the plain sum of
    squares is exact (`sum_is_exact`), the scaled two-pass `log_norm` otherwise (on CPU under
    `lax.cond`: one branch runs; under `vmap` both do). On GPU and TPU, where a conditional stalls
    the device, the exact one of `scaled_sums` instead: branch-free, one pass."""
    leaves = [jnp.asarray(v) for v in jax.tree.leaves(tree)]
    if not leaves:
        return jnp.full((), jnp.nan, jnp.float32)
    return jax.lax.platform_dependent(
        leaves,
        cpu=functools.partial(_fast_log_norm_cond, axes_keep=axes_keep),
        default=functools.partial(_fast_log_norm_select, axes_keep=axes_keep),
    )


def _fast_log_norm_cond(leaves: list, axes_keep: int) -> jax.Array:
    s = sum(sum_squares(v, axes_keep) for v in leaves)
    n = sum(math.prod(v.shape[axes_keep:]) for v in leaves)
    ok = jnp.all(sum_is_exact(s, n, s.dtype))
    return jax.lax.cond(ok, lambda: 0.5 * jnp.log(s), lambda: log_norm(leaves, axes_keep).astype(s.dtype))


def _fast_log_norm_select(leaves: list, axes_keep: int) -> jax.Array:
    sums = [scaled_sums(v, tuple(range(axes_keep, v.ndim))) for v in leaves]
    total = tuple(sum(s[i] for s in sums) for i in range(3))
    n = sum(math.prod(v.shape[axes_keep:]) for v in leaves)
    log_a, s = pick_scale(total, n)
    return jnp.where(s == 0, -jnp.inf, 0.5 * jnp.log(s) - log_a)


_SCALE_EXPONENT = {4: 96, 8: 600}  # float32, float64: 2^±e keeps every square of a float normal


def scaled_sums(
    v: jax.Array, axes: tuple[int, ...], keepdims: bool = False, down: bool = True
) -> tuple[jax.Array, ...]:
    """(Σ (v·2^e)², Σ v², Σ (v·2^-e)²) over `axes` in at least float32, e = 96 (float32) or 600
    (float64): three sibling reductions of one input (one pass on GPU, where XLA fuses them), of
    which `pick_scale` takes one that is exact for any finite v. `down=False`, for v whose plain
    sum cannot overflow (a bounded |v|, e.g. a registry activation's φ′): two reductions, the
    plain sum also in the down-scaled one's place (`pick_scale` takes that one only for a NaN)."""
    dt = _compute_dtype(v)
    vv = v.astype(dt)
    e = _SCALE_EXPONENT[jnp.dtype(dt).itemsize]

    def sum_sq(w):
        return jnp.sum(jnp.square(w), axis=axes, keepdims=keepdims)

    plain = sum_sq(vv)
    return sum_sq(vv * 2.0**e), plain, sum_sq(vv * 2.0**-e) if down else plain


def pick_scale(sums: tuple[jax.Array, ...], n: int) -> tuple[jax.Array, jax.Array]:
    """From `scaled_sums` (elementwise over their shape): (log a, s) with s = Σ (v·a)² exact to
    rounding: a = 1 when the plain sum is exact, 2^e when it is too small, 2^-e when too large (or
    infinite); so log ‖v‖ = ½ log s - log a and v·a / sqrt(s) has unit norm. Zero gives s = 0, NaN
    gives NaN."""
    up, mid, down = sums
    dt = mid.dtype
    e = _SCALE_EXPONENT[jnp.dtype(dt).itemsize]
    ok = sum_is_exact(mid, n, dt)
    small = mid < float(jnp.finfo(dt).tiny) * max(n, 1) * 2.0**24
    s = jnp.where(ok, mid, jnp.where(small, up, down))
    log_a = jnp.where(ok, 0.0, jnp.where(small, e * LN2, -e * LN2)).astype(dt)
    return log_a, s


def unit_scales(v: jax.Array, axes: tuple[int, ...] | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Scales (a, b) with (v·a)·b of unit Frobenius norm over `axes`, and log ‖v‖ over `axes`.

    One pass when the plain sum of squares is exact (a = 1, b = 1/sqrt(Σ v²)). Otherwise, on CPU,
    `scaled_unit_scales` under `lax.cond` (it runs only then); on GPU and TPU, branch-free, the
    exact one of `scaled_sums` (one pass there too). Multiply in that order, (v * a) * b: XLA fuses
    it into the consumer. All-zero v gives b = 0 (u = 0) and -inf; NaN gives NaN.

    Args:
      v: an array (computed in at least float32).
      axes: the axes to normalise over (default all); a and b keep them as size-1 axes.
    Returns:
      (a, b, log_norm): a and b broadcastable against v, log_norm with `axes` removed (natural log).
    """
    axes = tuple(range(v.ndim)) if axes is None else tuple(axes)
    return jax.lax.platform_dependent(
        v,
        cpu=functools.partial(_unit_scales_cond, axes=axes),
        default=functools.partial(_unit_scales_select, axes=axes),
    )


def _unit_scales_cond(v: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array, jax.Array]:
    dt = _compute_dtype(v)
    vv = v.astype(dt)
    n = math.prod(v.shape[a] for a in axes)
    if axes == tuple(range(v.ndim)):  # one flat axis: XLA fuses the square into the reduction
        s = jnp.sum(jnp.square(vv.reshape(-1))).reshape((1,) * v.ndim)
    else:
        s = jnp.sum(jnp.square(vv), axis=axes, keepdims=True)
    ok = jnp.all(sum_is_exact(s, n, dt))

    def fast(vv, s):
        return jnp.ones_like(s), jax.lax.rsqrt(s), 0.5 * jnp.log(s)

    a, b, log_n = jax.lax.cond(ok, fast, lambda vv, s: scaled_unit_scales(vv, axes), vv, s)
    return a, b, jnp.squeeze(log_n, axis=axes)


def scale_of(log_a: jax.Array) -> jax.Array:
    """The power of two a (exactly) whose log `pick_scale` returned."""
    e = _SCALE_EXPONENT[jnp.dtype(log_a.dtype).itemsize]
    return jnp.where(log_a == 0, 1.0, jnp.where(log_a > 0, 2.0**e, 2.0**-e)).astype(log_a.dtype)


def _unit_scales_select(v: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array, jax.Array]:
    n = math.prod(v.shape[a] for a in axes)
    log_a, s = pick_scale(scaled_sums(v, axes, keepdims=True), n)
    a = scale_of(log_a)
    b = jnp.where(s == 0, 0, jax.lax.rsqrt(jnp.where(s == 0, 1, s)))
    log_n = jnp.where(s == 0, -jnp.inf, 0.5 * jnp.log(s) - log_a)
    return a, b, jnp.squeeze(log_n, axis=axes)


def scaled_unit_scales(v: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`unit_scales` by the scaled path (two passes), with log_norm keeping `axes` as size-1 axes.

    a = 2^e₁ and b = 2^e₂ / ‖v·2^-e‖ with 2^e the power of two just above max|v| split in two
    factors, each finite, so that neither v·a nor (v·a)·b overflows or underflows for any finite v.
    (Subnormal entries, below float32's 1.2e-38, read as zero: XLA flushes them in every
    computation on CPU and GPU.)"""
    dt = _compute_dtype(v)
    vv = v.astype(dt)
    m = jnp.max(jnp.abs(vv), axis=axes, keepdims=True)
    _, e = jnp.frexp(m)  # m = mant * 2**e, mant in [0.5, 1)
    e1 = -(e // 2)
    e2 = -e - e1
    one = jnp.ones_like(m)
    a, b0 = jnp.ldexp(one, e1), jnp.ldexp(one, e2)
    w = jnp.sum(jnp.square((vv * a) * b0), axis=axes, keepdims=True)  # in [0.25, n]
    b = jnp.where(w == 0, 0, b0 * jax.lax.rsqrt(jnp.where(w == 0, 1, w)))
    log_n = jnp.where(m == 0, -jnp.inf, e.astype(dt) * LN2 + 0.5 * jnp.log(w))
    return a, b, log_n


def normalise_probes(c: jax.Array, want_q: bool) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """Per example (axis 1 of c: (probes, batch, ...)), one scale over (probes, trailing):
    (c_unit, log scale (batch,), q (probes, batch) or None), q the per-probe squared norms of c_unit
    (summing to 1 over probes). One pass when the plain sums are exact; else the scaled path (CPU:
    under `lax.cond`; GPU, TPU: branch-free, see `scaled_sums`)."""
    return jax.lax.platform_dependent(
        c,
        cpu=functools.partial(_normalise_probes_cond, want_q=want_q),
        default=functools.partial(_normalise_probes_select, want_q=want_q),
    )


def _normalise_probes_cond(c: jax.Array, want_q: bool):
    axes = (0,) + tuple(range(2, c.ndim))
    trailing = tuple(range(2, c.ndim))
    dt = jnp.promote_types(c.dtype, jnp.float32)
    cc = c.astype(dt)
    # over the rows of (probes * batch, trailing), the layout of the vmapped VJP's dot: XLA then fuses
    # the square into the reduction instead of writing it out
    flat = cc.reshape((c.shape[0] * c.shape[1], -1))
    per_probe = jnp.sum(jnp.square(flat), axis=1).reshape(c.shape[:2])  # (probes, batch)
    total = jnp.sum(per_probe, axis=0)  # (batch,)
    n = math.prod(c.shape[a] for a in axes)
    ok = jnp.all(sum_is_exact(total, n, dt))
    bshape = (1, c.shape[1]) + (1,) * (c.ndim - 2)  # (batch,) -> broadcast against c

    def fast(cc, per_probe, total):
        b = jax.lax.rsqrt(total)
        q = per_probe / total[None] if want_q else jnp.zeros((0,), dt)
        return jnp.ones_like(total), b, 0.5 * jnp.log(total), q

    def scaled(cc, per_probe, total):
        a, b, log_n = scaled_unit_scales(cc, axes)
        q = jnp.sum(jnp.square((cc * a) * b), axis=trailing) if want_q else jnp.zeros((0,), dt)
        return a.reshape(-1), b.reshape(-1), log_n.reshape(-1), q

    a, b, log_scale, q = jax.lax.cond(ok, fast, scaled, cc, per_probe, total)
    u = ((cc * a.reshape(bshape)) * b.reshape(bshape)).astype(c.dtype)
    return u, log_scale, (q if want_q else None)


def _normalise_probes_select(c: jax.Array, want_q: bool):
    trailing = tuple(range(2, c.ndim))
    per_probe = scaled_sums(c, trailing)  # 3 x (probes, batch)
    log_a, total = pick_scale(tuple(p.sum(axis=0) for p in per_probe), c.shape[0] * math.prod(c.shape[2:]))
    zero = total == 0
    b = jnp.where(zero, 0, jax.lax.rsqrt(jnp.where(zero, 1, total)))
    bshape = (1, c.shape[1]) + (1,) * (c.ndim - 2)
    dt = total.dtype
    u = ((c.astype(dt) * scale_of(log_a).reshape(bshape)) * b.reshape(bshape)).astype(c.dtype)
    q = None
    if want_q:
        chosen = jnp.where(log_a == 0, per_probe[1], jnp.where(log_a > 0, per_probe[0], per_probe[2]))
        q = chosen * jnp.where(zero, 0, 1 / jnp.where(zero, 1, total))[None]
    return u, jnp.where(zero, -jnp.inf, 0.5 * jnp.log(total) - log_a), q


def log_norm_of_parts(logs: list[jax.Array]) -> jax.Array:
    """log ‖(v_1, ..., v_k)‖ from the leaves' log norms log ‖v_i‖ (natural logs); NaN for k = 0."""
    if not logs:
        return jnp.full((), jnp.nan, jnp.float32)
    return 0.5 * jax.nn.logsumexp(2 * jnp.stack(logs))


def unit_leaves(leaves: list[jax.Array]) -> tuple[list[jax.Array], jax.Array, list[jax.Array]]:
    """(leaves / ‖leaves‖, log ‖leaves‖, [log ‖leaf‖ per leaf]) over all leaves (natural logs): the
    reverse scan's renormalisation and every per-step norm it reports, from one sum of squares per
    leaf. One pass over the data where those sums are exact (`sum_is_exact`: a leaf that is
    exactly zero, or one whose squares underflow, is not), the scaled two-pass path otherwise (on CPU
    under `lax.cond`: one branch runs; under `vmap` both do); branch-free on GPU and TPU
    (`scaled_sums`, one pass). All-zero leaves give zeros and -inf."""
    return jax.lax.platform_dependent(leaves, cpu=_unit_leaves_cond, default=_unit_leaves_select)


def _unit_leaves_cond(leaves: list[jax.Array]) -> tuple[list[jax.Array], jax.Array, list[jax.Array]]:
    sums = [sum_squares(v) for v in leaves]
    ok = functools.reduce(
        jnp.logical_and, [sum_is_exact(s, v.size, s.dtype) for s, v in zip(sums, leaves, strict=True)]
    )

    def fast(leaves, sums):
        total = sum(sums)
        r = jax.lax.rsqrt(total)
        return [v * r.astype(v.dtype) for v in leaves], 0.5 * jnp.log(total), [0.5 * jnp.log(s) for s in sums]

    def scaled(leaves, sums):
        logs = [log_norm(v).astype(s.dtype) for v, s in zip(leaves, sums, strict=True)]
        unit, log = normalise(leaves)
        return unit, log.astype(sums[0].dtype), logs

    return jax.lax.cond(ok, fast, scaled, leaves, sums)


def _unit_leaves_select(leaves: list[jax.Array]) -> tuple[list[jax.Array], jax.Array, list[jax.Array]]:
    logs, units = [], []
    for v in leaves:  # per leaf the exact one of three scaled sums, and v·2^e of norm exp(l + log_a)
        log_a, s = pick_scale(scaled_sums(v, tuple(range(v.ndim))), v.size)
        logs.append(jnp.where(s == 0, -jnp.inf, 0.5 * jnp.log(s) - log_a))
        units.append((v * scale_of(log_a).astype(v.dtype), log_a))
    log = log_norm_of_parts(logs)
    # v / ‖v‖ = (v·2^e) · exp(−(log ‖v‖ + e ln 2)); an exponent below float range flushes a leaf
    # that is negligible against the others to zero
    unit = [
        jnp.where(jnp.isneginf(log), 0, w * jnp.exp(-(log + log_a)).astype(w.dtype)) for w, log_a in units
    ]
    return unit, log, logs


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
    a, b, log_n = unit_scales(ct)
    return ((ct * a) * b).astype(ct.dtype), log_n.astype(d0.dtype)


renorm.defvjp(_renorm_fwd, _renorm_bwd)
