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
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct

from jaxvg import checks
from jaxvg.measure import engine, lognorm
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
    """

    log10_act_grad: jax.Array
    log10_param_grad: jax.Array
    log10_kernel_grad: jax.Array
    log10_gain: jax.Array
    log10_dphi: jax.Array
    dead_fraction: jax.Array
    loss: jax.Array

    @property
    def vanishing_decades(self) -> jax.Array:
        """log10_act_grad[..., L] - log10_act_grad[..., 0]: decades the signal loses from the output
        to the input (positive: vanishing; negative: exploding). Keeps leading axes."""
        return self.log10_act_grad[..., -1] - self.log10_act_grad[..., 0]


def _dphi_stats(block: nnx.Module, h: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """(1/2 log10 mean(phi'(z)^2), dead fraction) of one block at its input h; NaNs when the block does
    not expose its activation."""
    hooks = contracts.preactivation_fn(block)
    if hooks is None:
        nan = jnp.full((), jnp.nan, dtype)
        return nan, nan
    z_of, dphi = hooks
    a = jnp.abs(dphi(z_of(h))).astype(dtype)
    log10_rms = lognorm.log10_norm(a) - 0.5 * math.log10(a.size)  # ||a||_F / sqrt(size)
    dead = jnp.mean(jnp.all(a == 0, axis=0).astype(dtype))
    return log10_rms, dead


def _at(tree: Any, path: tuple[str, ...]) -> Any:
    return functools.reduce(lambda node, name: node[name], path, tree)


def _flow_core(
    program: engine.BlockProgram, arrays: engine.BlockArrays, x, y, key, *, loss: LossArg
) -> GradientFlow:
    lossfn = losses.get(loss)
    if key is not None:
        arrays = engine.reseed(arrays, key)
    segs = engine.segments(program, arrays)
    dtype = engine.working_dtype([s.params for s in segs], x)

    def objective(seg_params, dummies):
        h = lognorm.renorm(engine.apply_or_identity(program.embed, arrays.embed, x), dummies[0])

        def body(h, piece, d):
            block = nnx.merge(*piece, copy=True)
            stats = _dphi_stats(block, jax.lax.stop_gradient(h), dtype)
            h = lognorm.renorm(block(h), d)
            return h, stats

        xs = [dummies[1 + s.start : 1 + s.start + s.n] for s in segs]
        h, stats = engine.map_blocks(segs, body, h, xs, params=seg_params)
        out = engine.apply_or_identity(program.head, arrays.head, h)
        return lossfn(out, y), engine.concat(stats)

    seg_params = [s.params for s in segs]
    dummies = jnp.zeros((program.depth + 1,), dtype)
    (loss_value, (log10_dphi, dead)), (g_params, log_gain) = jax.value_and_grad(
        objective, argnums=(0, 1), has_aux=True
    )(seg_params, dummies)
    # log ||delta_l|| = sum_{j >= l} log gain_j, where entry L is log ||dloss/dh_L||.
    log_act = jnp.cumsum(log_gain[::-1])[::-1]
    log_param, log_kernel = [], []
    for s, g in zip(segs, g_params, strict=True):
        k = 1 if s.scan else 0
        lp = lognorm.log_norm(g, axes_keep=k).astype(dtype)
        log_param.append(lp if s.scan else lp[None])
        path = program.kernel_paths[s.start]
        if path is not None:
            lk = lognorm.log_norm(_at(g, path), axes_keep=k).astype(dtype)
            log_kernel.append(lk if s.scan else lk[None])
        else:
            log_kernel.append(jnp.full((s.n,), jnp.nan, dtype))
    shift = log_act[1:]
    return GradientFlow(
        log10_act_grad=log_act / lognorm.LN10,
        log10_param_grad=(jnp.concatenate(log_param) + shift) / lognorm.LN10,
        log10_kernel_grad=(jnp.concatenate(log_kernel) + shift) / lognorm.LN10,
        log10_gain=log_gain[:-1] / lognorm.LN10,
        log10_dphi=log10_dphi,
        dead_fraction=dead,
        loss=loss_value,
    )


_flow_jit = jax.jit(_flow_core, static_argnums=(0,), static_argnames=("loss",))


def gradient_flow_from_split(
    graphdef: Any, state: Any, x: jax.Array, y: Any, *, loss: LossArg, key: jax.Array | None = None
) -> GradientFlow:
    """Pure kernel behind `gradient_flow`: jittable, vmappable, no host checks (the caller checks).

    The model is `nnx.merge(graphdef, *state)` (a copy: nothing is mutated), already in the mode to
    measure (evaluation or training view). One `value_and_grad` of the loss, with a `lognorm.renorm`
    node after the embed and after every block: its backward pass divides the cotangent by its norm
    and returns the log of that norm as the gradient of a dummy scalar, so the per-layer log gains
    come out as gradients, and the parameter gradients of block l are taken with the unit cotangent
    and shifted by log ||delta_l||. Runs of at least `engine.SCAN_MIN_RUN` identical blocks use
    `lax.scan` over their stacked states (stacked inside the trace here); others are unrolled.

    Args:
      graphdef: the model's graph definition (from `nnx.split`), static.
      state: its state: one `nnx.State` (`nnx.split(model)`) or a tuple of them
        (`nnx.split(model, nnx.Param, ...)`).
      x: inputs, (batch, ...) as the model takes them.
      y: targets for `loss` (None allowed for a callable loss).
      loss: a name from `jaxvg.nn.losses.LOSSES` or a callable `loss(outputs, y) -> scalar` (static).
      key: optional `jax.random.key`; when given, every RNG stream of the model (dropout) is reseeded
        from it, so the result depends on the key, not on the model's counters.
    Returns:
      `GradientFlow` (fields in decades; see the class).

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
    program, arrays = engine.split_blocks_from_split(graphdef, state)
    return _flow_core(program, arrays, x, y, key, loss=loss)


def gradient_flow(
    model: contracts.BlockModel,
    x: jax.Array,
    y: Any = None,
    *,
    loss: LossArg = "mse",
    train: bool = False,
    key: jax.Array | None = None,
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
    `contracts.kernel_path(block)`. Loop: `lax.scan` over runs of at least `engine.SCAN_MIN_RUN`
    identical blocks (compile time nearly independent of depth), unrolled otherwise (faster at run
    time). The kernel is jitted and cached: the same shapes with the same loss name or the same
    callable object reuse the compiled program.

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
    Returns:
      `GradientFlow`; every `log10_` field in decades (log10), `loss` in the loss's own units.
    Raises:
      TypeError: `model` is not an NNX module with `blocks`; `loss` neither a name nor callable.
      ValueError: `x` does not fit the model; unknown `loss` name; a named loss without `y`, or `y`
        that does not fit it; `train=True` with active dropout and no `key`.
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
    contracts.check_block_model(model)
    x = engine.check_x(model, x)
    if isinstance(loss, str):
        checks.choice("loss", loss, losses.LOSSES)
        if y is None:
            raise ValueError(
                f"`y` is required for the named loss {loss!r}, got None; pass targets, or a callable `loss`."
            )
    elif not callable(loss):
        raise TypeError(f"`loss` must be one of {sorted(losses.LOSSES)} or a callable, got {loss!r}.")
    if not isinstance(train, bool):
        raise TypeError(f"`train` must be a bool, got {train!r}.")
    view = engine.mode_view(model, train)
    if train and key is None and engine.has_active_dropout(view):
        raise ValueError(
            "`key` is required with `train=True` on a model with dropout, got key=None; pass e.g. "
            "key=jax.random.key(0) (or use train=False)."
        )
    program, arrays = engine.split_blocks(view)
    out_shape = engine.output_shape(program, arrays, x)
    if isinstance(loss, str):
        losses.check_targets(loss, y, out_shape)
        y = jnp.asarray(y)
    key = engine.as_key(key) if key is not None and train else None
    return _flow_jit(program, arrays, x, y, key, loss=loss)
