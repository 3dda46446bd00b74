"""Exact per-layer gradient flow of one batch: norms, gains and activation-derivative factors.

The gradient reaching h_l is delta_l = dloss/dh_l = J_{l+1}^T ... J_L^T delta_L with
J_l = dh_l/dh_{l-1}. In a sigmoid net it shrinks by about 0.6 decades per block, below float32's
smallest normal number (1e-38) after some 60 blocks. `gradient_flow` never forms the raw product: one
`jax.value_and_grad` of the loss with a `lognorm.renorm` node after the embed and after every block
chains block VJPs on unit-norm cotangents and accumulates the log of every norm, so each reported
number is exact to working precision at any depth, in float32. Fields are in decades (log10).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct

from jaxvg.measure import dphi, engine, host, lognorm, nets, plan, validate
from jaxvg.nn import contracts, losses

__all__ = ["GradientFlow", "gradient_flow", "gradient_flow_from_split"]

LossArg = str | Callable[[jax.Array, Any], jax.Array]


@struct.dataclass
class GradientFlow:
    """Per-layer gradient flow of one batch (a pytree: vmap over seeds, stack over time).

    Shapes below are for one model; any leading (seeds, time, ...) axes are kept in front. Entry l of
    an (L+1,) array is h_l (h_0 = the first block's input); entry i of an (L,) array is block i+1.

    Attributes:
      log10_act_grad: (L+1,) log10 ||dloss/dh_l||_F over the batch, l = 0..L.
      log10_param_grad: (L,) log10 of the Frobenius norm of the gradient over all parameters of block
        i+1.
      log10_kernel_grad: (L,) the same over the block's kernel, the `nnx.Param` at
        `contracts.kernel_path(block)` (NaN for blocks without one).
      log10_gain: (L,) log10(||delta_{l-1}|| / ||delta_l||) for block l = i+1 (negative: the block
        shrinks the backward signal).
      log10_dphi: (L,) 1/2 log10 mean(phi'(z_l)^2) over batch and units, the RMS activation derivative
        (NaN for blocks that do not expose their activation, see `contracts.preactivation_fn`).
      dead_fraction: (L,) share of units with phi'(z) = 0 for every example of the batch (NaN as above).
      loss: () the loss value (natural units of the loss).
      forward_nonfinite_block: () int32, where the forward pass went non-finite (overflow): the first
        block i (0-based, as the (L,) arrays; 0 also for a non-finite embed output, L for the head)
        whose output has a NaN or an infinity, -1 when the forward pass is finite. When >= 0, every
        gradient field is NaN and `log10_dphi`, `dead_fraction` are NaN from block i on. None in a
        hand-made `GradientFlow`.

    Values: finite numbers are exact to working precision; -inf means an exactly zero gradient (e.g.
    every relu unit dead), never a non-finite forward pass; +inf an infinite gradient although the
    forward pass is finite (a block's VJP overflowed even on a unit cotangent); NaN that the number is
    undefined: the forward pass went non-finite (see `forward_nonfinite_block`), or the block has no
    parameters, no kernel or no exposed activation (`jaxvg.nn.contracts`).
    """

    log10_act_grad: jax.Array
    log10_param_grad: jax.Array
    log10_kernel_grad: jax.Array
    log10_gain: jax.Array
    log10_dphi: jax.Array
    dead_fraction: jax.Array
    loss: jax.Array
    forward_nonfinite_block: jax.Array | None = None

    @property
    def vanishing_decades(self) -> jax.Array:
        """log10_act_grad[..., L] - log10_act_grad[..., 0]: decades the signal loses from the output
        to the input (positive: vanishing; negative: exploding). Keeps leading axes."""
        return self.log10_act_grad[..., -1] - self.log10_act_grad[..., 0]


def _leaf_index(tree: Any, path: tuple[str, ...] | None) -> int | None:
    """The position among `jax.tree.leaves(tree)` of the leaf at attribute path `path` (None: none)."""
    if path is None:
        return None
    for i, (kp, _) in enumerate(jax.tree_util.tree_flatten_with_path(tree)[0]):
        names = tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in kp)
        if names[: len(path)] == tuple(map(str, path)):
            return i
    return None


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _param_tap(kernel: int | None, leaves: list[jax.Array], d: jax.Array) -> list[jax.Array]:
    """Identity on a block's parameter arrays; its VJP replaces their cotangent by its log norms:
    the cotangent of `d` (shape (2,)) is [log ||g_params||, log ||g_kernel||] (NaN when `kernel` is
    None), the parameters' own cotangent is zero. So the backward pass of `gradient_flow` takes each
    block's norms as soon as the block's parameter gradient exists and never holds all L of them."""
    del kernel, d
    return leaves


def _param_tap_fwd(kernel, leaves, d):
    return leaves, jnp.zeros((0,), d.dtype)


def _param_tap_bwd(kernel, res, cts):
    dtype = res.dtype
    if not cts:
        return [], jnp.full((2,), jnp.nan, dtype)
    logs = jax.lax.platform_dependent(
        cts,
        cpu=functools.partial(_param_logs_cond, kernel=kernel),
        default=functools.partial(_param_logs_select, kernel=kernel),
    )
    return [jnp.zeros_like(c) for c in cts], logs.astype(dtype)


def _param_logs_cond(cts: list, kernel: int | None) -> jax.Array:
    """[log ||cts||, log ||cts[kernel]||]: one pass per leaf, the scaled path under `lax.cond`."""
    sums = [lognorm.sum_squares(c) for c in cts]
    total, n = sum(sums), sum(c.size for c in cts)
    ok = lognorm.sum_is_exact(total, n, total.dtype)
    if kernel is not None:
        ok = ok & lognorm.sum_is_exact(sums[kernel], cts[kernel].size, total.dtype)

    def fast():
        k = 0.5 * jnp.log(sums[kernel]) if kernel is not None else jnp.full((), jnp.nan, total.dtype)
        return jnp.stack([0.5 * jnp.log(total), k])

    def scaled():
        k = lognorm.log_norm(cts[kernel]) if kernel is not None else jnp.full((), jnp.nan)
        return jnp.stack([lognorm.log_norm(cts), k]).astype(total.dtype)

    return jax.lax.cond(ok, fast, scaled)


def _param_logs_select(cts: list, kernel: int | None) -> jax.Array:
    """`_param_logs_cond` branch-free (GPU, TPU): the exact one of three scaled sums per leaf."""
    sums = [lognorm.scaled_sums(c, tuple(range(c.ndim))) for c in cts]

    def log_norm_of(three, n):
        log_a, s = lognorm.pick_scale(three, n)
        return jnp.where(s == 0, -jnp.inf, 0.5 * jnp.log(s) - log_a)

    total = tuple(sum(s[i] for s in sums) for i in range(3))
    log_all = log_norm_of(total, sum(c.size for c in cts))
    log_k = (
        log_norm_of(sums[kernel], cts[kernel].size)
        if kernel is not None
        else jnp.full((), jnp.nan, log_all.dtype)
    )
    return jnp.stack([log_all, log_k])


_param_tap.defvjp(_param_tap_fwd, _param_tap_bwd)


def _tapped(piece: engine.Piece, d: jax.Array) -> nnx.Module:
    """The block of `piece`, its floating parameters passed through `_param_tap` with dummy `d`."""
    gd, p, r = piece
    kernel = _leaf_index(p, contracts.kernel_path(nnx.merge(gd, p, r, copy=True)))
    leaves, treedef = jax.tree.flatten(p)
    floating = [i for i, v in enumerate(leaves) if jnp.issubdtype(v.dtype, jnp.inexact)]
    k = floating.index(kernel) if kernel in floating else None
    tapped = _param_tap(k, [leaves[i] for i in floating], d)
    for i, v in zip(floating, tapped, strict=True):
        leaves[i] = v
    return nnx.merge(gd, jax.tree.unflatten(treedef, leaves), r, copy=True)


def _flow_core(
    program: engine.BlockProgram,
    arrays: engine.BlockArrays,
    x,
    y,
    key,
    *,
    loss: LossArg,
    precision: str | None = "highest",
) -> GradientFlow:
    with host.precision_scope(precision):
        return _flow_kernel(program, arrays, x, y, key, loss=loss)


def _flow_kernel(program, arrays, x, y, key, *, loss) -> GradientFlow:
    lossfn = losses.get(loss)
    if key is not None:
        arrays = engine.reseed(arrays, key)
    segs = engine.segments(program, arrays)
    dtype = engine.working_dtype([s.params for s in segs], x)

    def objective(d_embed, d_blocks):
        h = lognorm.renorm(engine.apply_or_identity(program.embed, arrays.embed, x), d_embed)
        embed_ok = validate.all_finite(h)

        def body(h, piece, d):
            stats = dphi.dphi_stats(nnx.merge(*piece, copy=True), jax.lax.stop_gradient(h), dtype)
            h = lognorm.renorm(_tapped(piece, d[1])(h), d[0])
            return h, (*stats, validate.all_finite(h))

        # a scanned run keeps each step's input and matmul outputs for the backward pass and
        # recomputes the elementwise rest there (CPU, tanh MLP, 200 x 128 x 128: 42 -> 28 ms; it
        # slowed unrolled blocks, which XLA fuses across, so they are left alone)
        policy = jax.checkpoint_policies.dots_saveable
        h, stats = engine.map_blocks(segs, body, h, d_blocks, scan_policy=policy)
        out = engine.apply_or_identity(program.head, arrays.head, h)
        return lossfn(out, y), (engine.concat(stats), embed_ok, validate.all_finite(out))

    # One dummy per renorm node and per block (not slices of one array: their gradients would be
    # padded back to full length and summed, O(L^2) small ops): per block (d_act (), d_par (2,)).
    d_blocks = [
        tuple((jnp.zeros((s.repeats if s.scan else 1,), dtype), jnp.zeros((s.repeats if s.scan else 1, 2), dtype))
              for _ in range(s.period))
        for s in segs
    ]  # fmt: skip
    (loss_value, ((log10_dphi, dead, block_ok), embed_ok, out_ok)), (log_gain0, g_blocks) = (
        jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(jnp.zeros((), dtype), d_blocks)
    )
    log_gain_blocks, log_par = engine.concat(g_blocks)
    log_gain = jnp.concatenate([log_gain0[None], log_gain_blocks])
    # log ||delta_l|| = sum_{j >= l} log gain_j, where entry L is log ||dloss/dh_L||.
    log_act = jnp.cumsum(log_gain[::-1])[::-1]
    shift = log_act[1:]
    flow = GradientFlow(
        log10_act_grad=log_act / lognorm.LN10,
        log10_param_grad=(log_par[:, 0] + shift) / lognorm.LN10,
        log10_kernel_grad=(log_par[:, 1] + shift) / lognorm.LN10,
        log10_gain=log_gain[:-1] / lognorm.LN10,
        log10_dphi=log10_dphi,
        dead_fraction=dead,
        loss=loss_value,
    )
    return validate.mark_nonfinite_forward(flow, embed_ok, block_ok, out_ok)


def _planned_kernel(plan_: plan.Plan, *, loss: LossArg, precision: str) -> Callable:
    def kernel(direct, stacked, x, y, key):
        return _flow_core(
            plan_.program, plan_.assemble(direct, stacked), x, y, key, loss=loss, precision=precision
        )

    return jax.jit(kernel)


def planned_flow(
    plan_: plan.Plan,
    leaves: list,
    x: Any,
    y: Any,
    *,
    loss: LossArg,
    train: bool,
    key: Any,
    precision: Any,
    check_forward: bool = True,
) -> GradientFlow:
    """`gradient_flow` of the model that `leaves` and `plan_` describe (shared with `Probe`):
    host checks of x, y, loss, key, precision, then one dispatch of the cached kernel."""
    x = validate.check_x(plan_.input_features, x)
    host.check_loss(loss, y)
    if not isinstance(loss, str):
        validate.check_finite("y", y)
    key = validate.check_key(key)
    precision = engine.check_precision(precision)
    validate.check_mode(train, key, plan_.has_active_dropout)
    validate.check_forward(plan_, leaves, x, compare=check_forward, precision=precision)
    out_shape = plan_.output_shape(leaves, x)
    if isinstance(loss, str):
        losses.check_targets(loss, y, out_shape)
        y = jnp.asarray(y)
    key = engine.as_key(key) if key is not None and train else None
    fn = plan_.kernel(
        ("flow", loss, precision), functools.partial(_planned_kernel, loss=loss, precision=precision)
    )
    direct, stacked = plan_.inputs(leaves)
    return fn(direct, stacked, x, y, key)


def gradient_flow_from_split(
    graphdef: Any,
    state: Any,
    x: jax.Array,
    y: Any,
    *,
    loss: LossArg,
    key: jax.Array | None = None,
    precision: Any = "highest",
    scan: Any = "auto",
    stacked: bool = False,
    max_memory: int | None = None,
) -> GradientFlow:
    """Pure kernel behind `gradient_flow`: jittable, vmappable, no host checks (the caller checks).

    The model is `nnx.merge(graphdef, *state)` (a copy: nothing is mutated), already in the mode to
    measure (evaluation or training view). One `value_and_grad` of the loss, with a `lognorm.renorm`
    node after the embed and after every block: its backward pass divides the cotangent by its norm
    and returns the log of that norm as the gradient of a dummy scalar, so the per-layer log gains
    come out as gradients; each block's parameters pass through a node whose backward pass turns
    their gradient (taken with the unit cotangent) into its log norms at once, shifted afterwards by
    log ||delta_l||: no more than one block's parameter gradient is ever held. Runs of identical
    (groups of) blocks use `lax.scan` over their states stacked inside the trace (see `scan`).

    Args:
      graphdef: the model's graph definition (from `nnx.split`), static.
      state: its state: one `nnx.State` (`nnx.split(model)`) or a tuple of them
        (`nnx.split(model, nnx.Param, ...)`); with `stacked=True` every leaf has a leading nets axis.
      x: inputs, (batch, ...) as the model takes them ((nets, batch, ...) with `stacked=True`).
      y: targets for `loss` (None allowed for a callable loss; a leading nets axis with `stacked`).
      loss: a name from `jaxvg.nn.losses.LOSSES` or a callable `loss(outputs, y) -> scalar` (static).
      key: optional `jax.random.key`; when given, every RNG stream of the model (dropout) is reseeded
        from it, so the result depends on the key, not on the model's counters. With `stacked`: one
        key for all nets or one per net (shape (nets,)).
      precision: matmul precision of the measurement's own matmuls ("highest" by default: GPUs
        default float32 matmuls to TF32 and TPUs to bfloat16, which breaks exactness); any name of
        `jax.default_matmul_precision` or a `jax.lax.Precision`; None keeps the caller's default.
      scan: "auto" (runs of at least `engine.SCAN_MIN_RUN` blocks scanned), True (every run of two
        or more identical groups) or False (all unrolled); see `engine.layout`.
      stacked: the state, x and y carry a leading nets axis (seeds, grid cells): the nets are
        measured in chunks that fit `max_memory` (`nets.map_nets`), as `jax.vmap` would, and the
        result has a leading nets axis.
      max_memory: bytes the chunks may use (with `stacked`); None: half the device's free memory
        (`nets.memory_budget`).
    Returns:
      `GradientFlow` (fields in decades; see the class).
    Raises:
      ValueError: an invalid `precision` or `scan` (at trace time).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxvg
      >>> from jaxvg import measure
      >>> graphdef, params, rest = nnx.split(jaxvg.MLP(2, 4, 3, 1, rngs=nnx.Rngs(0)), nnx.Param, ...)
      >>> kernel = jax.jit(
      ...     lambda p, x, y: measure.gradient_flow_from_split(graphdef, (p, rest), x, y, loss="mse"))
      >>> kernel(params, jnp.ones((5, 2)), jnp.zeros((5, 1))).log10_act_grad.shape
      (4,)
    """
    precision = None if precision is None else engine.check_precision(precision)
    engine.check_scan(scan)
    if stacked:
        if key is None:
            return nets.map_nets(
                _one_net(graphdef, loss, precision, scan, False), state, x, y, max_memory=max_memory
            )
        n = jax.tree.leaves(state)[0].shape[0]
        keys = jnp.broadcast_to(key, (n,)) if jnp.ndim(key) == 0 else key
        fn = _one_net(graphdef, loss, precision, scan, True)
        return nets.map_nets(fn, state, x, y, keys, max_memory=max_memory)
    program, arrays = engine.split_blocks_from_split(graphdef, state, scan=scan)
    return _flow_core(program, arrays, x, y, key, loss=loss, precision=precision)


@functools.lru_cache(maxsize=64)
def _one_net(graphdef: Any, loss: LossArg, precision: str | None, scan: Any, with_key: bool) -> Callable:
    """The one-net function that `nets.map_nets` vmaps (a stable object, so that its per-net memory
    analysis and its chunked program are cached)."""
    if with_key:
        return lambda state, x, y, key: gradient_flow_from_split(
            graphdef, state, x, y, loss=loss, key=key, precision=precision, scan=scan
        )
    return lambda state, x, y: gradient_flow_from_split(
        graphdef, state, x, y, loss=loss, precision=precision, scan=scan
    )


def gradient_flow(
    model: contracts.BlockModel,
    x: jax.Array,
    y: Any = None,
    *,
    loss: LossArg = "mse",
    train: bool = False,
    key: jax.Array | None = None,
    precision: Any = "highest",
    scan: Any = "auto",
    check_forward: bool = True,
) -> GradientFlow:
    """Exact per-layer gradient norms, gains and activation-derivative factors of one batch.

    delta_l = dloss/dh_l = J_{l+1}^T ... J_L^T delta_L, seeded by the loss gradient at the head output
    (delta_L is the head's VJP of it). The forward pass stores h_l; the backward pass chains block VJPs,
    renormalises the cotangent after each block and accumulates log ||.||, so

      log10_act_grad[l]   = log10 ||delta_l||_F                        (l = 0..L)
      log10_gain[i]       = log10 ||delta_i|| - log10 ||delta_{i+1}||    (block i+1)
      log10_param_grad[i] = log10 ||dloss/dtheta_{i+1}||_F  (VJP with the unit cotangent + log scale)
      log10_dphi[i]       = 1/2 log10 mean(phi'(z_{i+1})^2); dead_fraction[i] = share of units with
                            phi'(z) = 0 for every example

    are exact to working precision at any depth, also where the float32 gradient itself is 0.
    z is `block.preactivation(h)` when the block has it; for a block with `linear` and `activation` but
    no `preactivation`, z = block.linear(h) (the activation's argument when nothing sits between them);
    other blocks report NaN (`contracts.preactivation_fn`). The kernel column reads the `nnx.Param` at
    `contracts.kernel_path(block)`. Each block's parameter gradient is reduced to its norms inside
    the backward pass (never all L at once). Loop: `lax.scan` over runs of identical blocks or of
    identical groups of blocks (period <= `engine.SCAN_MAX_PERIOD`, e.g. alternating local and
    global attention) covering at least `engine.SCAN_MIN_RUN` blocks (compile time nearly
    independent of depth), unrolled otherwise (faster at run time); `scan` overrides it.

    Cost: one forward and one backward pass, plus one pass over each cotangent and parameter gradient
    for its norm. Everything that depends only on the model's structure (its view, the per-block
    split, the layout, the output shape, the compiled program) is cached per structure
    (`jaxvg.measure.plan`): a second call with the same model, or with one of the same structure and
    shapes (e.g. after a training step), flattens the model once and dispatches the compiled
    program. `Probe(model)` skips even the flatten. The same loss name or the same callable object
    reuses the compiled program (a fresh lambda recompiles).

    Values: finite numbers are exact to working precision; -inf means an exactly zero gradient (e.g.
    dead relu units everywhere), never a non-finite forward pass; +inf an infinite gradient although
    the forward pass is finite (a block's VJP overflowed even on a unit cotangent); NaN that the
    number is undefined: the forward pass went non-finite (then `forward_nonfinite_block` says at
    which block; a NaN or an infinity in `x` or `y` is refused before tracing), or the block has no
    parameters, kernel or exposed activation. Only the backward pass is renormalised: where h_l
    itself overflows (e.g. a depth-500 linear net with sigma_w^2 = 4 grows by 2^500 ~ 1e150) the
    fields are NaN, not the true values; measure in float64 (range 1e308) or scale the input down. A
    forward log-scale is not carried because the block contract does not say which blocks are
    positively homogeneous (a bias or a norm breaks it), and the loss needs the output at its true
    scale.

    Checks before tracing: `x` is (batch, ...) with batch >= 1 and finite; no block shares parameters
    with another (tied blocks: refused, see `validate.check_untied`); once per model structure and
    input shape, the contract forward runs block by block (each block called as block(h), returning
    one array with the batch first; an error names the block) and is compared with `model(x)` on
    the first few examples (`check_forward`).

    Args:
      model: block model (`contracts.BlockModel`: `blocks`, optional `embed`, `head`); never mutated
        (no BatchNorm statistics update, no RNG counter change).
      x: inputs, shape (batch, ...) as the model takes them.
      y: targets: required for a named loss (checked with `losses.check_targets`); passed through
        (None allowed) to a callable loss.
      loss: a name from `jaxvg.nn.losses.LOSSES` or a callable `loss(outputs, y) -> scalar`.
      train: False (default) measures the evaluation view (`deterministic=True`,
        `use_running_average=True`); True the training view (batch statistics, active dropout).
      key: `jax.random.key` for dropout; required when `train=True` and the model has dropout.
      precision: matmul precision of the measurement ("highest", the default: exact float32 matmuls
        even where the platform default is TF32 (GPU) or bfloat16 (TPU)); any name that
        `jax.default_matmul_precision` takes ("default", "high", "float32", "tensorfloat32",
        "bfloat16", ...) or a `jax.lax.Precision`.
      scan: "auto", True (scan every run of two or more identical groups of blocks) or False (unroll
        every block).
      check_forward: compare `model(x)` with the contract forward head(blocks(...embed(x))) once per
        structure and input shape (evaluation view, the first `validate.COMPARE_EXAMPLES` examples,
        within sqrt(eps) of the output's scale); False skips the comparison (for a `__call__` that
        differs on purpose, e.g. one that adds noise) but not the block-by-block contract checks.
    Returns:
      `GradientFlow`; every `log10_` field in decades (log10), `loss` in the loss's own units.
    Raises:
      TypeError: `model` is not an NNX module with `blocks`, or `embed`, a block or `head` is not an
        NNX module; `loss` neither a name nor callable; `key` not a `jax.random.key`.
      ValueError: `x` without a batch axis, with an empty batch, with a NaN/Inf or that does not fit
        the model; a block that breaks the contract (named, with its type); `model(x)` that differs
        from the contract forward; tied blocks; unknown `loss` name; a named loss without `y`, or `y`
        that does not fit it or is not finite; `train=True` with active dropout and no `key`; an
        invalid `precision` or `scan` (the message names the argument, the value and the choices).
    References:
      Schoenholz et al., Deep Information Propagation, 2017, https://arxiv.org/abs/1611.01232
      Pennington, Schoenholz, Ganguli, Resurrecting the sigmoid in deep learning through dynamical
      isometry, 2017, https://arxiv.org/abs/1711.04735

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxvg
      >>> from jaxvg import measure
      >>> model = jaxvg.MLP(4, 8, 200, 1, activation="sigmoid", rngs=nnx.Rngs(0))
      >>> flow = measure.gradient_flow(model, jnp.ones((8, 4)), jnp.zeros((8, 1)))
      >>> bool(jnp.isfinite(flow.log10_act_grad).all()), bool(flow.log10_act_grad[0] < -60)
      (True, True)
    """
    if not isinstance(train, bool):
        raise TypeError(f"`train` must be a bool, got {train!r}.")
    plan_, leaves = plan.lookup(
        model, train=train, scan=scan, checks=(validate.check_model, validate.check_untied)
    )
    return planned_flow(
        plan_, leaves, x, y, loss=loss, train=train, key=key, precision=precision, check_forward=check_forward
    )
