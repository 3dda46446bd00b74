"""Exact gradient flow through time: per-step gradient norms, gains and Pascanu's lag contributions.

For a recurrent model (`jaxvg.nn.contracts.RecurrentModel`: s_t = cell(s_{t-1}, x_t), t = 1..T) the
gradient reaching the state s_t is delta_t = dloss/ds_t = J_{t+1}^T delta_{t+1} + g_t, where
J_t = ds_t/ds_{t-1} and g_t is the loss's own gradient at step t (only g_T with readout "last"). A
tanh RNN loses a fixed number of decades per step, so at T = 1000 the float32 gradient of the first
steps is exactly zero. `time_flow` never forms the raw product: its reverse scan keeps
delta_t = exp(S_t) u_t with a unit cotangent u_t and the log scale S_t, renormalises after every
step's VJP, adds g_t in log space, and accumulates the parameter gradient Σ_t exp(S_t) ∂⁺s_t/∂θ·u_t
with a running log scale. Every reported number is exact to working precision at any T, in float32.

The Jacobians through time (`time_jacobian_norms`, `time_jacobian_spectrum`) are in
`jaxvg.measure.time_jacobians`; both modules split a model the same way (`_split`).

Cost: one forward scan that stores the states, one reverse scan that recomputes each step's cell
inside its VJP (no residuals stacked per step), with one sum of squares per state leaf and one over
the recurrent weights' gradient per step (`lognorm.unit_leaves`, `lognorm.fast_log_norm`): about the cost of a
jitted `value_and_grad` of the same scanned model (benchmarks/time_flow.py measures the ratio). One
compiled program per model structure, shapes, loss and precision; a repeated call does O(1) Python
work (a few `nnx.split` of the cell, embed and head).

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> import jaxvg
  >>> from jaxvg.nn import rnn
  >>> model = rnn.RNN(1, 16, None, cell="linear", init="orthogonal", sigma_w2=0.81, rngs=nnx.Rngs(0))
  >>> flow = jaxvg.measure.time_flow(model, jnp.ones((2, 300, 1)), jnp.zeros((2, 16)))
  >>> bool(flow.log10_state_grad[0] < -14), round(float(flow.log10_gain.mean()), 4)  # log10 0.9
  (True, -0.0458)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from jaxvg import checks
from jaxvg.measure import engine, host, lognorm
from jaxvg.nn import contracts, losses

__all__ = ["PRECISIONS", "TimeFlow", "time_flow", "time_flow_from_split"]

PRECISIONS = ("highest", "high", "default", "bfloat16", "tensorfloat32", "float32")
LossArg = str | Callable[[jax.Array, Any], jax.Array]


@struct.dataclass
class TimeFlow:
    """Gradient flow through time of one batch (a pytree: vmap over seeds, stack over training).

    Entry t of a (T+1,) array is the state after t steps (t = 0: the initial state); entry i of a (T,)
    array is step t = i + 1 (s_{i+1} = cell(s_i, x_{i+1}), lag T - i - 1 from the last step). Decades.

    Attributes:
      log10_state_grad: (T+1,) log10 ‖∂loss/∂h_t‖_F over the batch, h_t the reported state leaf.
      log10_cell_grad: (T+1,) the same over the other leaves of the state (the LSTM's c_t, its
        constant-error carousel); NaN when the state is one array.
      log10_gain: (T,) log10 ‖(J_tᵀ δ_t)_h‖ − log10 ‖δ_t,h‖ for step t: what the step does to the
        backward signal of h (with readout "last" the difference of consecutive `log10_state_grad`;
        with "all" it leaves out the loss gradient that step t-1 adds).
      log10_lag_contrib: (T,) log10 ‖δ_t · ∂⁺s_t/∂W‖ over the recurrent weights W (the cell's
        `recurrent_paths`, else all its parameters): Pascanu et al.'s term of step t in
        ∂L/∂W = Σ_t δ_t · ∂⁺s_t/∂W.
      log10_recurrent_grad: () log10 ‖∂loss/∂W‖ over the recurrent weights (the vector sum of the
        lag contributions).
      log10_param_grad: {name: ()} log10 ‖∂loss/∂θ‖ per parameter ("cell/recurrent_kernel",
        "head/kernel", "embed/linear/kernel", ...).
      loss: () the loss value.
    """

    log10_state_grad: jax.Array
    log10_cell_grad: jax.Array
    log10_gain: jax.Array
    log10_lag_contrib: jax.Array
    log10_recurrent_grad: jax.Array
    log10_param_grad: dict[str, jax.Array]
    loss: jax.Array

    @property
    def vanishing_decades(self) -> jax.Array:
        """log10_state_grad[..., T] − log10_state_grad[..., 0]: decades the gradient loses from the last
        step to the initial state (negative: it grows). Keeps leading axes."""
        return self.log10_state_grad[..., -1] - self.log10_state_grad[..., 0]


# --------------------------------------------------------------------------------------------------
# Splitting a recurrent model once into a static program and its arrays
# --------------------------------------------------------------------------------------------------


class _Program(NamedTuple):
    """Static (hashable) description of a split recurrent model: a `jax.jit` static argument."""

    cell: Any
    embed: Any
    head: Any
    readout: str
    reported: int
    recurrent: tuple[int, ...]  # indices of the recurrent weights among the cell's param leaves
    names: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]  # cell, embed, head param names


class _Arrays(NamedTuple):
    cell: tuple[Any, Any]
    embed: tuple[Any, Any] | None
    head: tuple[Any, Any] | None
    state0: Any


def _names(params: Any) -> tuple[str, ...]:
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return tuple(contracts._path_name(path) for path, _ in flat)


def _recurrent_leaves(cell: nnx.Module, names: tuple[str, ...]) -> tuple[int, ...]:
    paths = contracts.recurrent_paths(cell)
    if paths is None:
        return tuple(range(len(names)))
    found = tuple(i for i, n in enumerate(names) if any(n == "/".join(p) for p in paths))
    if len(found) != len(paths):
        raise TypeError(
            f"`{type(cell).__name__}.recurrent_paths` = {paths!r} must name nnx.Params of the cell; its "
            f"parameters are {list(names)}."
        )
    return found


def _split(model: Any, batch: int) -> tuple[_Program, _Arrays]:
    """The evaluation view of `model` split into (program, arrays); traceable (no host checks)."""
    view = engine.mode_view(model, False)

    def part(module):
        if module is None:
            return None, None, ()
        gd, p, r = nnx.split(module, nnx.Param, ...)
        return gd, (p, r), _names(p)

    cell_gd, cell, cell_names = part(view.cell)
    embed_gd, embed, embed_names = part(contracts.embed_of(view))
    head_gd, head, head_names = part(contracts.head_of(view))
    state0 = model.initial_state(batch)
    program = _Program(
        cell_gd,
        embed_gd,
        head_gd,
        contracts.readout_of(model),
        contracts.reported_index(model, state0),
        _recurrent_leaves(view.cell, cell_names),
        (cell_names, embed_names, head_names),
    )
    return program, _Arrays(cell, embed, head, state0)


def _apply(graphdef: Any, states: tuple[Any, Any] | None, *args: Any) -> Any:
    return args[0] if graphdef is None else nnx.merge(graphdef, *states, copy=True)(*args)


# --------------------------------------------------------------------------------------------------
# Log-space helpers
# --------------------------------------------------------------------------------------------------


def _ratio(s: jax.Array, m: jax.Array) -> jax.Array:
    """exp(s − m) for s <= m, 0 when s = −inf (also when m = −inf)."""
    return jnp.where(jnp.isneginf(s), 0.0, jnp.exp(s - jnp.where(jnp.isneginf(m), 0.0, m))).astype(s.dtype)


def _kahan(S: jax.Array, comp: jax.Array, d: jax.Array) -> tuple[jax.Array, jax.Array]:
    """S + d with Kahan compensation: a float32 log scale summed over thousands of steps keeps ~1 ulp
    of error instead of one per step (|S| ~ 200 nats: ulp 1.5e-5, i.e. 7e-6 decades per step)."""
    y = d - comp
    t = S + y
    comp = jnp.where(jnp.isfinite(t), (t - S) - y, 0.0).astype(comp.dtype)
    return t, comp


def _with_leaf(like: Any, index: int, value: jax.Array) -> Any:
    """A pytree shaped like `like`, zeros everywhere but `value` at leaf `index`."""
    leaves, treedef = jax.tree.flatten(like)
    leaves = [value if i == index else jnp.zeros(v.shape, value.dtype) for i, v in enumerate(leaves)]
    return jax.tree.unflatten(treedef, leaves)


def _forward(program: _Program, arrays: _Arrays, xs: jax.Array) -> tuple[Any, Any, jax.Array]:
    """(s_T, s_{t-1} stacked over t = 1..T, the cell's inputs (T, batch, ...))."""
    xe = _apply(program.embed, arrays.embed, xs)
    xt = jnp.swapaxes(xe, 0, 1)

    def step(s, x):
        return _apply(program.cell, arrays.cell, s, x), s

    s_last, s_prev = jax.lax.scan(step, arrays.state0, xt)
    return s_last, s_prev, xt


def _reported_all(program: _Program, s_prev: Any, s_last: Any) -> jax.Array:
    """h_1..h_T stacked along axis 1: (batch, T, ...)."""
    h_prev = jax.tree.leaves(s_prev)[program.reported]  # h_0..h_{T-1}
    h_last = jax.tree.leaves(s_last)[program.reported]
    return jnp.swapaxes(jnp.concatenate([h_prev[1:], h_last[None]], axis=0), 0, 1)


# --------------------------------------------------------------------------------------------------
# time_flow
# --------------------------------------------------------------------------------------------------


def _flow_core(program: _Program, arrays: _Arrays, xs, y, *, loss: LossArg, precision: str) -> TimeFlow:
    with jax.default_matmul_precision(precision):
        return _flow_body(program, arrays, xs, y, loss)


def _flow_body(program: _Program, arrays: _Arrays, xs, y, loss: LossArg) -> TimeFlow:
    lossfn = losses.get(loss)
    dtype = engine.working_dtype(arrays.cell[0], xs)
    rep = program.reported
    cell_p, cell_r = arrays.cell
    embed_p = None if arrays.embed is None else arrays.embed[0]

    xe, embed_vjp = jax.vjp(lambda ep: _apply(program.embed, None if ep is None else (ep, arrays.embed[1]), xs),
                            embed_p)  # fmt: skip
    xt = jnp.swapaxes(xe, 0, 1)

    def step(s, x):
        return _apply(program.cell, (cell_p, cell_r), s, x), s

    s_last, s_prev = jax.lax.scan(step, arrays.state0, xt)
    all_steps = program.readout == "all"
    h = _reported_all(program, s_prev, s_last) if all_steps else jax.tree.leaves(s_last)[rep]
    head_p = None if arrays.head is None else arrays.head[0]

    def objective(hp, hh):
        out = _apply(program.head, None if hp is None else (hp, arrays.head[1]), hh)
        return lossfn(out, y)

    loss_value, (g_head, g_h) = jax.value_and_grad(objective, argnums=(0, 1))(head_p, h)
    loss_value = loss_value.astype(dtype)

    treedef = jax.tree.structure(s_last)

    def unit_of(leaves):
        """(unit state cotangent, the log norm it was divided by, the unit's leaves' log norms)."""
        unit, log, logs = lognorm.unit_leaves(leaves)
        log = log.astype(dtype)
        logs = [jnp.where(jnp.isneginf(log), -jnp.inf, v.astype(dtype) - log) for v in logs]
        return jax.tree.unflatten(treedef, unit), log, logs

    def carry_from(g):
        return unit_of(jax.tree.leaves(_with_leaf(s_last, rep, g.astype(dtype))))

    if all_steps:
        g_steps = jnp.swapaxes(g_h, 0, 1).astype(dtype)  # (T, batch, ...)
        u0 = jax.tree.map(lambda v: jnp.zeros(v.shape, dtype), s_last)
        S0 = jnp.full((), -jnp.inf, dtype)
        logs0 = [S0] * treedef.num_leaves
    else:
        g_steps = None
        u0, S0, logs0 = carry_from(g_h)
    G0 = jax.tree.map(lambda v: jnp.zeros(v.shape, dtype), cell_p)
    L0 = jnp.full((), -jnp.inf, dtype)
    want_x = embed_p is not None and bool(jax.tree.leaves(embed_p))

    def back(carry, inp):
        # u: the unit cotangent of s_t, logs: its leaves' log norms, exp(S - comp) its scale
        u, logs, (S, comp), G, L = carry
        s, x, g = inp
        if g is not None:  # add this step's own loss gradient, in log space
            gu, lg, _ = carry_from(g)
            M = jnp.maximum(S, lg)
            u, dn, logs = unit_of(
                jax.tree.leaves(jax.tree.map(lambda a, b: _ratio(S, M) * a + _ratio(lg, M) * b, u, gu))
            )
            S, comp = _kahan(M, jnp.where(lg > S, 0.0, comp).astype(comp.dtype), dn)
        S_true = S - comp
        log_h = S_true + logs[rep]
        log_c = S_true + lognorm.log_norm_of_parts([v for i, v in enumerate(logs) if i != rep]).astype(dtype)
        _, vjp = jax.vjp(lambda p, ss, xx: _apply(program.cell, (p, cell_r), ss, xx), cell_p, s, x)
        gp, a, gx = vjp(u)
        a, dS, a_logs = unit_of(jax.tree.leaves(a))
        log_gain = a_logs[rep] + dS - logs[rep]
        gp_leaves = jax.tree.leaves(gp)
        log_lag = S_true + lognorm.fast_log_norm([gp_leaves[i] for i in program.recurrent]).astype(dtype)
        M = jnp.maximum(L, S_true)
        G = jax.tree.map(lambda acc, d: _ratio(L, M) * acc + _ratio(S_true, M) * d.astype(dtype), G, gp)
        ys = (log_h, log_c, log_gain, log_lag, (gx, S_true) if want_x else None)
        return (a, a_logs, _kahan(S, comp, dS), G, M), ys

    zero = jnp.zeros((), dtype)
    (u, logs, (S, comp), G, L), ys = jax.lax.scan(
        back, (u0, logs0, (S0, zero), G0, L0), (s_prev, xt, g_steps), reverse=True
    )
    S = S - comp
    log_h, log_c, log_gain, log_lag, xgrads = ys
    log_state = jnp.concatenate([(S + logs[rep])[None], log_h])
    log_cell = jnp.concatenate(
        [
            (S + lognorm.log_norm_of_parts([v for i, v in enumerate(logs) if i != rep]).astype(dtype))[None],
            log_c,
        ]
    )

    cell_names, embed_names, head_names = program.names
    params: dict[str, jax.Array] = {}
    G_leaves = jax.tree.leaves(G)
    for name, leaf in zip(cell_names, G_leaves, strict=True):
        params[f"cell/{name}"] = L + lognorm.log_norm(leaf)
    log_rec = L + lognorm.log_norm([G_leaves[i] for i in program.recurrent])
    if want_x:
        gx, Sx = xgrads  # (T, batch, ...), (T,)
        M = jnp.max(Sx)
        scale = _ratio(Sx, M).reshape((-1,) + (1,) * (gx.ndim - 1))
        (g_embed,) = embed_vjp(jnp.swapaxes(gx * scale, 0, 1).astype(xe.dtype))
        for name, leaf in zip(embed_names, jax.tree.leaves(g_embed), strict=True):
            params[f"embed/{name}"] = M + lognorm.log_norm(leaf).astype(dtype)
    if head_p is not None:
        for name, leaf in zip(head_names, jax.tree.leaves(g_head), strict=True):
            params[f"head/{name}"] = lognorm.log_norm(leaf).astype(dtype)
    ln10 = lognorm.LN10
    return TimeFlow(
        log10_state_grad=log_state / ln10,
        log10_cell_grad=log_cell / ln10,
        log10_gain=log_gain / ln10,
        log10_lag_contrib=log_lag / ln10,
        log10_recurrent_grad=log_rec / ln10,
        log10_param_grad={k: v / ln10 for k, v in params.items()},
        loss=loss_value,
    )


_flow_jit = jax.jit(_flow_core, static_argnums=(0,), static_argnames=("loss", "precision"))


@functools.lru_cache(maxsize=64)
def _finite_check() -> Callable:
    return jax.jit(lambda x: jnp.all(jnp.isfinite(x)))


def _check_xs(model: Any, xs: Any) -> jax.Array:
    """`xs` as a jax array (batch, time >= 1, features), with the model's features where it states them,
    every entry finite."""
    if not hasattr(xs, "shape"):
        xs = np.asarray(xs)
    xs = jnp.asarray(xs)
    d = contracts.step_features(model)
    want = f"(batch, time, {d if d is not None else 'features'})"
    if xs.ndim != 3:
        hint = " (one sequence? add a batch axis: xs[None])" if xs.ndim == 2 else ""
        raise ValueError(f"`xs` must have shape {want}, got shape {xs.shape}{hint}.")
    if xs.shape[0] < 1:
        raise ValueError(f"`xs` must hold at least one sequence, got shape {xs.shape}.")
    if xs.shape[1] < 1:
        raise ValueError(f"`xs` must have at least one time step (T >= 1), got shape {xs.shape} (T = 0).")
    if d is not None and xs.shape[2] != d:
        raise ValueError(
            f"`xs` must have shape {want}: the model takes {d} features per step in the last axis, got "
            f"shape {xs.shape} (is the time axis in the wrong place? inputs are (batch, time, features))."
        )
    if jnp.issubdtype(xs.dtype, jnp.inexact) and not bool(_finite_check()(xs)):
        checks.finite_array("xs", np.asarray(xs))  # names the count and the first bad index
    return xs


def _output_shape(program: _Program, arrays: _Arrays, xs: jax.Array) -> tuple[int, ...]:
    def out(arrays, xs):
        s_last, s_prev, _ = _forward(program, arrays, xs)
        h = _reported_all(program, s_prev, s_last) if program.readout == "all" else None
        h = jax.tree.leaves(s_last)[program.reported] if h is None else h
        return _apply(program.head, arrays.head, h)

    try:
        return tuple(jax.eval_shape(out, arrays, xs).shape)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"`xs` of shape {xs.shape} does not fit the model: {type(err).__name__}: {err}"
        ) from err


def time_flow_from_split(
    graphdef: Any, state: Any, xs: jax.Array, y: Any, *, loss: LossArg = "mse", precision: str = "highest"
) -> TimeFlow:
    """Pure kernel behind `time_flow` (jittable, vmappable over stacked seeds; no host checks).

    The model is `nnx.merge(graphdef, *state)` (a copy); arguments and result as `time_flow`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxvg import measure
      >>> from jaxvg.nn import rnn
      >>> graphdef, params, rest = nnx.split(rnn.RNN(2, 8, 1, rngs=nnx.Rngs(0)), nnx.Param, ...)
      >>> kernel = jax.jit(lambda p, xs, y: measure.time_flow_from_split(graphdef, (p, rest), xs, y))
      >>> kernel(params, jnp.ones((3, 20, 2)), jnp.zeros((3, 1))).log10_state_grad.shape
      (21,)
    """
    states = tuple(state) if isinstance(state, tuple | list) else (state,)
    model = nnx.merge(graphdef, *states, copy=True)
    program, arrays = _split(model, xs.shape[0])
    return _flow_core(program, arrays, xs, y, loss=loss, precision=precision)


def time_flow(
    model: contracts.RecurrentModel,
    xs: jax.Array,
    y: Any = None,
    *,
    loss: LossArg = "mse",
    precision: str = "highest",
) -> TimeFlow:
    """Exact per-step gradient norms, gains and lag contributions through time, for one batch.

    Forward: s_0 = initial_state(batch), s_t = cell(s_{t-1}, embed(xs)_t), stored. Backward, from
    t = T down to 1, with δ_t = exp(S_t)·u_t (‖u_t‖ = 1 over the whole state):

      u, S   <- u, S combined with g_t (the loss gradient at h_t, readout "all") in log space
      a, p_t <- VJP of the cell at (s_{t-1}, x_t) applied to u   (a = J_tᵀ u, p_t = ∂⁺s_t/∂θ · u)
      log10_lag_contrib[t-1] = (S + log‖p_t[W]‖)/ln 10;  G += exp(S) p_t  (with a running log scale)
      u, S   <- a/‖a‖, S + log‖a‖

    so log10_state_grad[t] = (S_t + log‖u_t,h‖)/ln 10 is exact to working precision also where the
    float32 gradient itself is 0 (a 1e-91 gradient at T = 2000 is measured to 1e-5 decades).

    Args:
      model: a recurrent model (`contracts.RecurrentModel`: `cell`, `initial_state`, optional `embed`,
        `head`, `readout`); its evaluation view is measured and it is never mutated.
      xs: inputs (batch, time, features), finite, T >= 1.
      y: targets for `loss`: (batch, out) for readout "last", (batch, time, out) for "all"; passed
        through (None allowed) to a callable loss.
      loss: a name from `jaxvg.nn.losses.LOSSES` (mean over everything it covers, so with readout "all"
        the mean over steps too) or a callable `loss(outputs, y) -> scalar` (pass the same object each
        time to reuse the compiled program).
      precision: matmul precision of the measurement (`jax.default_matmul_precision`), one of
        `PRECISIONS`; "highest" (default) keeps float32 exact on GPUs and TPUs.
    Returns:
      `TimeFlow`, every `log10_` field in decades.
    Raises:
      TypeError: `model` does not follow the recurrent contract; `loss` neither a name nor callable.
      ValueError: `xs` not (batch, time, features), T = 0, features that do not fit the model, NaN or
        Inf in `xs`; unknown `loss` or `precision`; a named loss without `y` or with `y` of the wrong
        shape.
    References:
      Pascanu, Mikolov & Bengio, On the difficulty of training recurrent neural networks, ICML 2013,
      https://arxiv.org/abs/1211.5063 (eq. 3-5, the per-step terms).
      Bengio, Simard & Frasconi, Learning long-term dependencies with gradient descent is difficult,
      IEEE Trans. Neural Networks 5(2), 1994.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxvg
      >>> from jaxvg.nn import rnn
      >>> model = rnn.RNN(2, 32, 1, cell="lstm", rngs=nnx.Rngs(0))
      >>> flow = jaxvg.measure.time_flow(model, jnp.ones((4, 100, 2)), jnp.zeros((4, 1)))
      >>> flow.log10_state_grad.shape, flow.log10_cell_grad.shape, sorted(flow.log10_param_grad)[0]
      ((101,), (101,), 'cell/bias')
    """
    contracts.check_recurrent_model(model)
    xs = _check_xs(model, xs)
    host.check_loss(loss, y)
    checks.choice("precision", precision, PRECISIONS)
    program, arrays = _split(model, xs.shape[0])
    if isinstance(loss, str):
        losses.check_targets(loss, y, _cached_output_shape(program, arrays, xs))
        y = jnp.asarray(y)
    return _flow_jit(program, arrays, xs, y, loss=loss, precision=precision)


_SHAPES: dict[Any, tuple[int, ...]] = {}


def _cached_output_shape(program: _Program, arrays: _Arrays, xs: jax.Array) -> tuple[int, ...]:
    leaves, treedef = jax.tree.flatten(arrays)
    key = (program, treedef, tuple((v.shape, v.dtype) for v in leaves), xs.shape, xs.dtype)
    hit = _SHAPES.get(key)
    if hit is None:
        hit = _output_shape(program, arrays, xs)
        if len(_SHAPES) > 256:
            _SHAPES.clear()
        _SHAPES[key] = hit
    return hit
