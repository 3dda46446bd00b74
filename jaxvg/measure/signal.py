"""Forward signal propagation of one batch: per-layer second moment, cosine similarity, branch ratio
and effective rank of the representations h_0..h_L.

Mean-field theory (Poole et al. 2016; Schoenholz et al. 2017) predicts how the length q_l and the
correlation c_l of two inputs' representations evolve with depth: ordered phase, c_l -> 1 (every
input looks the same deep down); chaotic phase, c_l -> c* < 1. In transformers the analogous failure
is rank collapse (Noci et al. 2022): the tokens of a sequence become parallel. `signal_propagation`
measures these quantities on a real model, in one compiled forward program, in log space where
they could overflow: q_l is reported as `log10_q` because mean(h^2) leaves float32's range (3e38)
long before h does (|h| ~ 2e19), e.g. in a relu net with sigma_w^2 = 1e30.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct

from jaxvg import checks
from jaxvg.measure import engine, lognorm, plan, validate
from jaxvg.nn import contracts

__all__ = ["SignalFlow", "signal_propagation", "signal_propagation_from_split"]


@struct.dataclass
class SignalFlow:
    """Per-layer forward statistics of one batch (a pytree: vmap over seeds, stack over time).

    Shapes are for one model; leading (seeds, ...) axes are kept in front. Entry l of an (L+1,)
    array is h_l (h_0 = embed(x), the first block's input); entry i of an (L,) array is block i+1.

    Rows: for h of shape (batch, features) the rows are the examples (one matrix per batch); for
    (batch, seq, d) the rows are the tokens of one sequence (one matrix per sequence, the statistic
    averaged over the batch); any other shape is flattened to (batch, prod(trailing axes)).

    Attributes:
      log10_q: (L+1,) log10 of q_l = mean of h_l^2 over batch and units (the per-unit second
        moment; `q` is 10**log10_q). -inf when h_l is exactly zero.
      c: (L+1,) mean cosine similarity over the off-diagonal pairs of rows (see above):
        examples for (batch, features), tokens of a sequence for (batch, seq, d). NaN with fewer
        than two rows or when a row is exactly zero (cosine undefined).
      log10_branch_ratio: (L,) log10(||h_l - h_{l-1}|| / ||h_{l-1}||)_F over the batch, for blocks
        whose output shape equals their input shape, else NaN. For a residual block h + f(h) it is
        log10 ||f(h)||/||h||, how much the block changes the stream; for a non-residual block it is
        the relative change of the representation, not a branch ratio. NaN when h_{l-1} is zero.
      effective_rank: (L+1,) Roy & Vetterli's effective rank exp(H(p)), p_i = s_i / sum_j s_j over
        the singular values s of the rows' matrix (averaged over the batch for (batch, seq, d)),
        between 1 and min(rows, features). NaN for an all-zero matrix.
      log10_q_preact: (L,) log10 mean z_l^2 of the block's pre-activation z (the argument of its
        activation, `contracts.preactivation_fn`: what `jaxvg.theory.q_map` predicts), NaN for blocks
        that do not expose it.
      forward_nonfinite_block: () int32, the first block i (0-based; 0 also for a non-finite h_0)
        whose output has a NaN or an infinity, -1 when every h_l is finite. Every statistic of h_l
        for l > i (and of blocks >= i) is NaN then; earlier ones keep their values. None in a
        hand-made `SignalFlow`.
    """

    log10_q: jax.Array
    c: jax.Array
    log10_branch_ratio: jax.Array
    effective_rank: jax.Array
    log10_q_preact: jax.Array
    forward_nonfinite_block: jax.Array | None = None

    @property
    def q(self) -> jax.Array:
        """q_l = 10**log10_q (inf where q_l is beyond the dtype's range; `log10_q` is exact)."""
        return jnp.power(10.0, self.log10_q)

    @property
    def q_preact(self) -> jax.Array:
        """10**log10_q_preact, the pre-activation second moment per block."""
        return jnp.power(10.0, self.log10_q_preact)


# --------------------------------------------------------------------------------------------------
# Statistics of one representation (traceable)
# --------------------------------------------------------------------------------------------------


def _rows(h: jax.Array) -> jax.Array:
    """h as (groups, rows, features): (1, batch, features) for rank 2 and other ranks (trailing
    axes flattened), (batch, seq, d) for rank 3."""
    if h.ndim == 3:
        return h
    return h.reshape((1, h.shape[0], -1))


def _representation_stats(h: jax.Array, rank: bool) -> tuple[jax.Array, ...]:
    """(log ||h||_F, log10 q, c, effective rank) of one h_l, scaled so that no finite h overflows.

    Rows are normalised by their own (power-of-two scaled) norms (`lognorm.unit_scales`); their log
    norms give q by a log-sum-exp; the cosine mean is (||sum_r u_r||^2 - sum_r ||u_r||^2)/(R(R-1))
    for the unit rows u_r (no matmul, O(rows x features)); the effective rank is taken from the
    singular values of each group's matrix divided by its Frobenius norm."""
    m = _rows(h)
    _, n_rows, _ = m.shape
    a, b, log_row = lognorm.unit_scales(m, axes=(2,))  # log_row: (groups, rows)
    u = (m.astype(a.dtype) * a) * b
    log_group = 0.5 * jax.nn.logsumexp(2.0 * log_row, axis=1)  # (groups,)
    log_total = 0.5 * jax.nn.logsumexp(2.0 * log_group)
    log10_q = (2.0 * log_total - math.log(h.size)) / lognorm.LN10
    # cosine similarity between rows
    if n_rows >= 2:
        s = jnp.sum(u, axis=1)
        pairs = jnp.sum(jnp.square(s), axis=-1) - jnp.sum(jnp.square(u), axis=(1, 2))
        c_group = pairs / (n_rows * (n_rows - 1))
        c = jnp.where(jnp.all(log_row > -jnp.inf), jnp.mean(c_group), jnp.nan)
    else:
        c = jnp.full((), jnp.nan, log_row.dtype)
    if not rank:
        return log_total, log10_q, c, jnp.full((), jnp.nan, log_row.dtype)
    # effective rank of each group's matrix (scaled to unit Frobenius norm)
    factor = jnp.exp(log_row - log_group[:, None])
    w = u * jnp.where(jnp.isfinite(factor), factor, 0.0)[..., None]
    w = jnp.where(jnp.isfinite(w), w, 0.0)
    sv = jnp.linalg.svd(w, compute_uv=False)  # (groups, min(rows, features))
    total = jnp.sum(sv, axis=-1, keepdims=True)
    p = sv / jnp.where(total > 0, total, 1.0)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)
    erank = jnp.where(total[:, 0] > 0, jnp.exp(entropy), jnp.nan)
    return log_total, log10_q, c, jnp.mean(erank)


def _log10_change(h_prev: jax.Array, h: jax.Array, log_prev: jax.Array) -> jax.Array:
    """log10(||h - h_prev|| / ||h_prev||), both scaled by one power of two just above their largest
    entry (exact scaling: the difference neither overflows nor loses more than rounding); NaN when
    the shapes differ or h_prev is zero."""
    if h.shape != h_prev.shape:
        return jnp.full((), jnp.nan, log_prev.dtype)
    dt = log_prev.dtype
    h_prev, h = h_prev.astype(dt), h.astype(dt)
    m = jnp.maximum(jnp.max(jnp.abs(h_prev)), jnp.max(jnp.abs(h)))
    _, e = jnp.frexp(m)
    scale = jnp.ldexp(jnp.ones((), dt), -e)
    log_diff = lognorm.log_norm(h * scale - h_prev * scale) + e.astype(dt) * lognorm.LN2
    return jnp.where(log_prev > -jnp.inf, (log_diff - log_prev) / lognorm.LN10, jnp.nan)


def _log10_q_preact(block: nnx.Module, h_prev: jax.Array, dtype) -> jax.Array:
    """log10 mean z^2 of the block's pre-activation z at its input (NaN: not exposed)."""
    hooks = contracts.preactivation_fn(block)
    if hooks is None:
        return jnp.full((), jnp.nan, dtype)
    z = hooks[0](h_prev).astype(dtype)
    return (2.0 * lognorm.fast_log_norm(z) - math.log(z.size)) / lognorm.LN10


# --------------------------------------------------------------------------------------------------
# The kernel
# --------------------------------------------------------------------------------------------------


def _signal_core(
    program: engine.BlockProgram, arrays: engine.BlockArrays, x, key, *, precision: str | None, rank: bool
) -> SignalFlow:
    scope = contextlib.nullcontext() if precision is None else jax.default_matmul_precision(precision)
    with scope:
        return _signal_kernel(program, arrays, x, key, rank)


def _signal_kernel(program, arrays, x, key, rank) -> SignalFlow:
    if key is not None:
        arrays = engine.reseed(arrays, key)
    segs = engine.segments(program, arrays)
    dtype = engine.working_dtype([s.params for s in segs], x)
    h0 = engine.apply_or_identity(program.embed, arrays.embed, x)
    log0, *stats0 = _representation_stats(h0, rank)

    def body(carry, piece, _):
        h_prev, log_prev = carry
        block = nnx.merge(*piece, copy=True)
        pre = _log10_q_preact(block, h_prev, dtype)
        h = block(h_prev)
        log_n, log10_q, c, erank = _representation_stats(h, rank)
        change = _log10_change(h_prev, h, log_prev.astype(log_n.dtype))
        out = (log10_q, c, erank, change, pre, validate.all_finite(h))
        return (h, log_n.astype(log_prev.dtype)), tuple(v.astype(dtype) for v in out[:-1]) + out[-1:]

    _, ys = engine.map_blocks(segs, body, (h0, log0.astype(dtype)))
    log10_q, c, erank, change, pre, block_ok = engine.concat(ys)
    first = validate.first_nonfinite(validate.all_finite(h0), block_ok)
    depth = program.depth
    bad_act = (first >= 0) & (jnp.arange(depth + 1) > first)  # h_l for l > first
    bad_act = bad_act | ((first == 0) & ~validate.all_finite(h0))
    bad_block = (first >= 0) & (jnp.arange(depth) >= first)

    def per_act(v0, v):
        return jnp.where(bad_act, jnp.nan, jnp.concatenate([jnp.asarray(v0, dtype)[None], v]))

    return SignalFlow(
        log10_q=per_act(stats0[0], log10_q),
        c=per_act(stats0[1], c),
        log10_branch_ratio=jnp.where(bad_block, jnp.nan, change),
        effective_rank=per_act(stats0[2], erank),
        log10_q_preact=jnp.where(bad_block, jnp.nan, pre),
        forward_nonfinite_block=first,
    )


def _planned_kernel(plan_: plan.Plan, *, precision: str, rank: bool) -> Callable:
    def kernel(direct, stacked, x, key):
        return _signal_core(
            plan_.program, plan_.assemble(direct, stacked), x, key, precision=precision, rank=rank
        )

    return jax.jit(kernel)


def planned_signal(
    plan_: plan.Plan,
    leaves: list,
    x: Any,
    *,
    train: bool,
    key: Any,
    precision: Any,
    rank: bool = True,
    check_forward: bool = True,
) -> SignalFlow:
    """`signal_propagation` of the model that `leaves` and `plan_` describe: host checks of x, key,
    train and precision, then one dispatch of the cached kernel."""
    x = validate.check_x(plan_.input_features, x)
    key = validate.check_key(key)
    precision = engine.check_precision(precision)
    validate.check_mode(train, key, plan_.has_active_dropout)
    checks.boolean("rank", rank)
    validate.check_forward(plan_, leaves, x, compare=check_forward, precision=precision)
    plan_.output_shape(leaves, x)
    key = engine.as_key(key) if key is not None and train else None
    fn = plan_.kernel(
        ("signal", precision, rank), functools.partial(_planned_kernel, precision=precision, rank=rank)
    )
    direct, stacked = plan_.inputs(leaves)
    return fn(direct, stacked, x, key)


def signal_propagation_from_split(
    graphdef: Any,
    state: Any,
    x: jax.Array,
    *,
    key: jax.Array | None = None,
    precision: Any = "highest",
    scan: Any = "auto",
    rank: bool = True,
) -> SignalFlow:
    """Pure kernel behind `signal_propagation`: jittable, vmappable (e.g. over stacked seeds), no
    host checks (the caller checks).

    Args:
      graphdef: the model's graph definition (from `nnx.split`), static.
      state: its state, one `nnx.State` or a tuple of them (`nnx.split(model, nnx.Param, ...)`).
      x: inputs, (batch, ...) as the model takes them.
      key: optional `jax.random.key`; when given every RNG stream of the model (dropout) is
        reseeded from it.
      precision: matmul precision of the measurement (see `signal_propagation`); None keeps the
        caller's default.
      scan: "auto", True or False (see `jaxvg.measure.gradient_flow`).
      rank: compute `effective_rank` (the SVDs); False leaves it NaN (see `signal_propagation`).
    Returns:
      `SignalFlow` (an invalid `precision` or `scan` raises a ValueError at trace time).

    Example (three seeds in one program):
      >>> import jax, jax.numpy as jnp, jaxvg
      >>> from flax import nnx
      >>> nets = [nnx.split(jaxvg.MLP(4, 8, 3, 1, rngs=nnx.Rngs(s))) for s in range(3)]
      >>> states = jax.tree.map(lambda *v: jnp.stack(v), *[state for _, state in nets])
      >>> fn = jax.vmap(lambda s, x: jaxvg.measure.signal_propagation_from_split(nets[0][0], s, x))
      >>> jax.jit(fn)(states, jnp.ones((3, 5, 4))).c.shape
      (3, 4)
    """
    precision = None if precision is None else engine.check_precision(precision)
    program, arrays = engine.split_blocks_from_split(graphdef, state, scan=scan)
    return _signal_core(program, arrays, x, key, precision=precision, rank=checks.boolean("rank", rank))


def signal_propagation(
    model: contracts.BlockModel,
    x: jax.Array,
    *,
    train: bool = False,
    key: jax.Array | None = None,
    precision: Any = "highest",
    scan: Any = "auto",
    rank: bool = True,
    check_forward: bool = True,
) -> SignalFlow:
    """Per-layer forward statistics of one batch: second moment, cosine similarity, branch ratio,
    effective rank, and the pre-activation second moment that mean-field theory predicts.

    For l = 0..L (h_0 = embed(x), h_l = blocks[l-1](h_{l-1})):

      log10_q[l]            = log10 mean(h_l^2)          (over batch and units)
      c[l]                  = mean cosine similarity of distinct rows: examples for (batch,
                              features), tokens of one sequence for (batch, seq, d) averaged over
                              the batch (the rank-collapse measure of Noci et al. 2022), examples
                              with trailing axes flattened for other shapes
      effective_rank[l]     = exp(H(s / sum s)), s the singular values of the rows' matrix
      log10_branch_ratio[i] = log10(||h_{i+1} - h_i|| / ||h_i||)   (same shapes only, else NaN)
      log10_q_preact[i]     = log10 mean(z_{i+1}^2), z the block's pre-activation (NaN if none)

    For a wide MLP with Gaussian weights (W ~ N(0, sigma_w^2/fan_in), b ~ N(0, sigma_b^2)) the
    mean field predicts q_preact[0] = sigma_w^2 q_0 + sigma_b^2, q_preact[i+1] = `theory.q_map` of
    q_preact[i], q[l] = E[phi(sqrt(q_preact) z)^2], and c follows `theory.c_map` from the inputs'
    cosine c_0 (the post-activation cosine is E[phi(u_1)phi(u_2)]/E[phi(u)^2]).

    Numerics: every statistic is computed from power-of-two rescaled rows (`lognorm.unit_scales`),
    so it neither overflows nor underflows for any finite h_l; q is reported in decades for that
    reason. A forward pass that goes non-finite is flagged in `forward_nonfinite_block`, with NaN
    from there on (the block contract does not say which blocks are homogeneous, so no log scale
    is carried through the blocks: measure in float64 or scale x down when h itself overflows).
    Cost: one forward pass, one pass per statistic over each h_l, and an SVD of each (batch,
    features) or (seq, d) matrix (on a 2-core CPU the SVDs dominate: 8 nets of depth 50, width 256,
    batch 64 took 4 s with them and 0.09 s without, `rank=False`); one compiled program (blocks scanned or unrolled as in
    `gradient_flow`), cached per model structure and input shape: a second call does O(1) Python
    work. The head is not applied (nothing is reported about the output).

    Args:
      model: block model (`contracts.BlockModel`); never mutated.
      x: inputs, shape (batch, ...) as the model takes them.
      train: False (default) measures the evaluation view; True the training view (batch
        statistics, active dropout).
      key: `jax.random.key` for dropout; required when `train=True` and the model has dropout.
      precision: matmul precision of the measurement ("highest", the default); any name that
        `jax.default_matmul_precision` takes or a `jax.lax.Precision`.
      scan: "auto", True or False (see `jaxvg.measure.gradient_flow`).
      rank: compute `effective_rank` (True); False skips the SVDs, the dominant cost on CPU, and
        leaves the field NaN.
      check_forward: compare `model(x)` with the contract forward once per structure and input
        shape (see `jaxvg.measure.gradient_flow`).
    Returns:
      `SignalFlow`.
    Raises:
      TypeError: `model` does not follow the block contract; `key` not a `jax.random.key`; `train`
        not a bool.
      ValueError: `x` without a batch axis, empty, non-finite or not fitting the model; a block that
        breaks the contract; tied blocks; `train=True` with active dropout and no `key`; an invalid
        `precision` or `scan` (the message names the argument, the value and the choices).
    References:
      Poole et al., Exponential expressivity in deep neural networks through transient chaos, 2016,
      https://arxiv.org/abs/1606.05340
      Schoenholz et al., Deep Information Propagation, 2017, https://arxiv.org/abs/1611.01232
      Noci et al., Signal Propagation in Transformers: Theoretical Perspectives and the Role of Rank
      Collapse, 2022, https://arxiv.org/abs/2206.03126
      Roy & Vetterli, The effective rank: a measure of effective dimensionality, EUSIPCO 2007.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxvg
      >>> model = jaxvg.MLP(16, 64, 30, None, activation="tanh", init="gaussian", sigma_w2=1.0,
      ...                   sigma_b2=0.05, rngs=nnx.Rngs(0))
      >>> sig = jaxvg.signal_propagation(model, jax.random.normal(jax.random.key(0), (8, 16)))
      >>> sig.c.shape, bool(sig.c[-1] > 0.99)  # ordered phase: every input looks the same
      ((31,), True)
    """
    if not isinstance(train, bool):
        raise TypeError(f"`train` must be a bool, got {train!r}.")
    # tied blocks are fine here: nothing is per-parameter
    plan_, leaves = plan.lookup(model, train=train, scan=scan, checks=(validate.check_model,))
    return planned_signal(
        plan_, leaves, x, train=train, key=key, precision=precision, rank=rank, check_forward=check_forward
    )
