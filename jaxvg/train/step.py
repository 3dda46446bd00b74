"""The compiled training program: one step and a chunk of steps, as pure functions of one net.

Everything static about a run is a `StepSpec` (hashable: programs are cached on it); everything that
changes is a `TrainState` pytree (parameters, optimizer state, the rest of the module state, the
epoch permutation and the divergence flags). The state carries the parameters and the rest packed,
one array per leaf shape (`jaxvg.train.packing`): a deep net's loop state is then a few arrays, not
hundreds, which keeps XLA's compile time flat in depth. For one net:

- `loss_and_grads`: the loss of a minibatch and its gradient w.r.t. the `nnx.Param` state only. The
  module is merged with `nnx.merge(..., copy=True)` inside `jax.value_and_grad` (merging the live
  dropout RNG state there raises a TraceContextError); the updated rest (batch statistics, RNG
  counts) comes back as an auxiliary output.
- `train_step`: step t, params_{t+1} = params_t - lr * schedule(t) * u_t (`jaxvg.train.optimizers`),
  rejected, and the net marked diverged, when the loss, a gradient or the new parameters are not
  finite.
- `run_chunk`: log at step `start` (`metrics`), then steps start .. start + log_every - 1 under
  `lax.scan` (those < steps), optionally recording the gradient flow (`monitor_flow`).

`compiled_chunk(spec)` is jit(vmap(run_chunk)) over a leading nets axis, compiled once per spec and
shape; the learning rate, the data-order keys and the chunk's first step are arguments, so a new
learning rate, seed or chunk does not compile again (the last, partial chunk is masked, not
recompiled). On GPU and TPU the chunk takes no branch per step (`branch_free_steps`: there a
conditional blocks the host until the device is done).

Shapes: N nets, n training examples, L blocks, k = spec.log_every.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvg import measure
from jaxvg.measure import lognorm
from jaxvg.nn import losses
from jaxvg.train import optimizers
from jaxvg.train.packing import Packing
from jaxvg.train.stacking import is_key

__all__ = [
    "StepSpec",
    "TrainState",
    "MAX_CHUNK_EPOCHS",
    "batch_at",
    "branch_free_steps",
    "compiled_chunk",
    "compiled_metrics",
    "compiled_unpack",
    "epoch_permutations",
    "evaluate",
    "init_state",
    "kernel_log10_norms",
    "loss_and_grads",
    "metrics",
    "monitor_flow",
    "run_chunk",
    "train_step",
    "unpack_state",
]


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """Everything static about a run; the compiled programs are cached on it.

    Attributes:
      graphdef: the shared graphdef of the nets (training mode).
      eval_graphdef: the graphdef of their evaluation-mode view (no dropout, running statistics).
      loss: a loss name or a callable (hashed by identity).
      optimizer, schedule, warmup_steps, steps, clip_norm: as in `TrainConfig`.
      batch_size: examples per step, or None for the full training set.
      log_every: steps per chunk.
      monitor_every: steps between gradient-flow records, or None.
      monitor_precision: matmul precision of the monitor's measurement (canonical name).
      kernel_index: per block, the index of its kernel among the params leaves, or -1.
      leaf_group: per params leaf, its block index, or L for parameters outside the blocks.
      group_names: per group, "blocks[i]" or the attribute name(s) outside the blocks.
      has_test: whether the data has a test set (arrays "xt", "yt").
      params_packing, rest_packing: how one net's params and rest are packed in a `TrainState`.
    """

    graphdef: Any
    eval_graphdef: Any
    loss: Any
    optimizer: str
    schedule: str
    warmup_steps: int
    steps: int
    clip_norm: float | None
    batch_size: int | None
    log_every: int
    monitor_every: int | None
    monitor_precision: str
    kernel_index: tuple[int, ...]
    leaf_group: tuple[int, ...]
    group_names: tuple[str, ...]
    has_test: bool
    params_packing: Packing
    rest_packing: Packing


@dataclasses.dataclass
class TrainState:
    """The state a chunk carries, for one net (a leading nets axis N on every leaf when stacked).

    Attributes:
      params: the `nnx.Param` state, packed (`StepSpec.params_packing`).   opt_state: the optimizer
        state of the packed params.   rest: the other module state, packed (`rest_packing`).
      perm: the current epoch's permutation, (n,) int32 (minibatch runs; (1,) otherwise).
      diverged: () bool, an applied step (t < steps) had a non-finite loss, gradient or update.
      diverged_step: () int32, -1 if never.
      bad_groups: (L + 1,) bool, the parameter groups whose gradient was non-finite when it diverged.
      end_nonfinite: () bool, the loss or gradient taken at t == steps for the log (never applied)
        was non-finite while every applied step was finite.
    """

    params: Any
    opt_state: Any
    rest: Any
    perm: jax.Array
    diverged: jax.Array
    diverged_step: jax.Array
    bad_groups: jax.Array
    end_nonfinite: jax.Array


jax.tree_util.register_dataclass(
    TrainState,
    data_fields=[
        "params",
        "opt_state",
        "rest",
        "perm",
        "diverged",
        "diverged_step",
        "bad_groups",
        "end_nonfinite",
    ],
    meta_fields=[],
)


def loss_and_grads(spec: StepSpec, params: Any, rest: Any, xb: jax.Array, yb: Any) -> tuple[Any, Any, Any]:
    """(loss of the batch in training mode, its gradient w.r.t. `params`, the updated rest); params,
    gradient and rest packed. The gradient is taken w.r.t. the unpacked leaves and then packed: the
    transpose of unpacking (one slice per leaf, each padded back to the packed shape) would cost
    O(L^2) memory traffic for L same-shape leaves."""
    loss_fn = losses.get(spec.loss)
    tree_rest = spec.rest_packing.unpack(rest)

    def objective(p):
        model = nnx.merge(spec.graphdef, p, tree_rest, copy=True)  # copy: never the live RNG state
        out = model(xb)
        _, _, new_rest = nnx.split(model, nnx.Param, ...)
        return loss_fn(out, yb), spec.rest_packing.pack(new_rest)

    (value, new_rest), grads = jax.value_and_grad(objective, has_aux=True)(spec.params_packing.unpack(params))
    return value, spec.params_packing.pack(grads), new_rest


MAX_CHUNK_EPOCHS = 64
"""`epoch_permutations` draws at most this many permutations per chunk (more: the per-step branch)."""


def _epoch_permutation(key: jax.Array, epoch: jax.Array, n: int) -> jax.Array:
    return jax.random.permutation(jax.random.fold_in(key, epoch), n).astype(jnp.int32)


def epoch_permutations(spec: StepSpec, key: jax.Array, start: jax.Array, n: int) -> tuple | None:
    """(first epoch, (E, n) permutations): every epoch's example order that the chunk of steps
    start .. start + log_every - 1 reads, drawn at once (the same `fold_in(key, epoch)` draws as
    `batch_at`'s), so that its steps need no branch at epoch starts; None without minibatches or
    when the chunk spans more than `MAX_CHUNK_EPOCHS` epochs."""
    if spec.batch_size is None:
        return None
    per_epoch = n // spec.batch_size
    count = (spec.log_every - 1) // per_epoch + 2  # epochs a chunk of log_every steps can touch
    if count > MAX_CHUNK_EPOCHS:
        return None
    first = start // per_epoch
    return first, jax.vmap(lambda e: _epoch_permutation(key, first + e, n))(jnp.arange(count))


def batch_at(
    spec: StepSpec,
    key: jax.Array,
    perm: jax.Array,
    t: jax.Array,
    arrays: dict,
    epoch_perms: tuple | None = None,
) -> tuple:
    """(x batch, y batch, permutation) of step t: the whole training set when `batch_size` is None,
    else batch t mod (n // batch_size) of the epoch's permutation, drawn afresh at each epoch start
    from fold_in(key, epoch) (under `lax.cond`), or read from `epoch_perms` (`epoch_permutations`)."""
    if spec.batch_size is None:
        return arrays["x"], arrays["y"], perm
    b = spec.batch_size
    n = arrays["x"].shape[0]
    per_epoch = n // b
    j = t % per_epoch
    if epoch_perms is not None:
        first, perms = epoch_perms
        perm = perms[t // per_epoch - first]
    else:
        perm = jax.lax.cond(j == 0, lambda: _epoch_permutation(key, t // per_epoch, n), lambda: perm)
    idx = jax.lax.dynamic_slice(perm, (j * b,), (b,))
    return jnp.take(arrays["x"], idx, axis=0), jnp.take(arrays["y"], idx, axis=0), perm


def evaluate(spec: StepSpec, params: Any, rest: Any, x: jax.Array, y: Any) -> tuple[jax.Array, jax.Array]:
    """(loss, accuracy) in evaluation mode, float32 scalars; accuracy is NaN for "mse" and callables."""
    out = nnx.merge(spec.eval_graphdef, params, rest, copy=True)(x)
    loss = losses.get(spec.loss)(out, y).astype(jnp.float32)
    if isinstance(spec.loss, str):
        return loss, losses.accuracy(spec.loss, out, y).astype(jnp.float32)
    return loss, jnp.full((), jnp.nan, jnp.float32)


def kernel_log10_norms(spec: StepSpec, grads: Any) -> jax.Array:
    """(L,) float32: log10 of the Frobenius norm of each block kernel's gradient (NaN without one),
    underflow-free (`jaxvg.measure.lognorm.log10_norm`); `grads` packed."""
    if not spec.kernel_index:
        return jnp.zeros((0,), jnp.float32)
    per_leaf = spec.params_packing.per_leaf([lognorm.log10_norm(g, axes_keep=1) for g in grads])
    index = np.maximum(np.asarray(spec.kernel_index), 0)
    has_kernel = np.asarray(spec.kernel_index) >= 0
    return jnp.where(has_kernel, per_leaf[index], jnp.nan).astype(jnp.float32)


def metrics(spec: StepSpec, params: Any, rest: Any, arrays: dict) -> dict[str, jax.Array]:
    """The logged point: loss and accuracy on the whole training (and test) set, evaluation mode."""
    log = {}
    log["train/loss"], log["train/accuracy"] = evaluate(spec, params, rest, arrays["x"], arrays["y"])
    if spec.has_test:
        log["test/loss"], log["test/accuracy"] = evaluate(spec, params, rest, arrays["xt"], arrays["yt"])
    return log


def monitor_flow(spec: StepSpec, params: Any, rest: Any, arrays: dict) -> measure.GradientFlow:
    """`jaxvg.measure.gradient_flow_from_split` on the monitor batch ("xm", "ym"), evaluation mode,
    its matmuls at `spec.monitor_precision` (the training step's keep the platform default)."""
    full = nnx.merge_state(params, rest)
    return measure.gradient_flow_from_split(
        spec.eval_graphdef, full, arrays["xm"], arrays["ym"], loss=spec.loss, precision=spec.monitor_precision
    )


def train_step(
    spec: StepSpec,
    state: TrainState,
    t: jax.Array,
    lr: jax.Array,
    key: jax.Array,
    arrays: dict,
    want_norms: Any,
    epoch_perms: tuple | None = None,
) -> tuple[TrainState, jax.Array, jax.Array]:
    """Step t: the gradient at the parameters after t updates, then update t + 1 if t < steps.

    At t == steps the gradient is taken for the log and nothing is applied. An update is rejected
    (the net frozen, `diverged` set) when the loss, any gradient or the new parameters are not
    finite; `bad_groups` records which parameter groups had a non-finite gradient. At t == steps a
    non-finite loss or gradient does not mark the net diverged (nothing is applied, its parameters
    are finite): it sets `end_nonfinite` instead.

    `epoch_perms`: the chunk's minibatch orders (`epoch_permutations`), or None to draw them here.

    Returns:
      (new state, (L,) kernel-gradient log10 norms (NaN unless `want_norms`), the batch loss).
    """
    num_groups = len(spec.group_names)
    xb, yb, perm = batch_at(spec, key, state.perm, t, arrays, epoch_perms)
    value, grads, new_rest = loss_and_grads(spec, state.params, state.rest, xb, yb)
    nan_norms = jnp.full((len(spec.kernel_index),), jnp.nan, jnp.float32)
    if branch_free_steps():  # computed at every step, kept at the first (no per-step conditional)
        norms = jnp.where(want_norms, kernel_log10_norms(spec, grads), nan_norms)
    else:
        norms = jax.lax.cond(
            want_norms, functools.partial(kernel_log10_norms, spec), lambda g: nan_norms, grads
        )
    tx = optimizers.base_transform(spec.optimizer, spec.clip_norm)
    updates, new_opt = tx.update(grads, state.opt_state, state.params)
    factor = optimizers.learning_rate_factor(
        spec.schedule, t, steps=spec.steps, warmup_steps=spec.warmup_steps
    )
    scale = -lr * factor
    new_params = jax.tree.map(lambda p, u: (p + scale * u).astype(p.dtype), state.params, updates)
    # Finiteness: one sum per gradient leaf (NaN/Inf propagate), one over the new parameters.
    leaf_ok = spec.params_packing.per_leaf(
        [jnp.isfinite(jnp.sum(g, axis=tuple(range(1, g.ndim)))) for g in grads]
    )
    group_bad = jnp.zeros((num_groups,), bool).at[jnp.asarray(spec.leaf_group, jnp.int32)].max(~leaf_ok)
    params_ok = jnp.all(jnp.stack([jnp.isfinite(jnp.sum(p)) for p in jax.tree.leaves(new_params)]))
    applied = t < spec.steps  # at t == steps the gradient is only logged
    bad = ~jnp.isfinite(value) | jnp.any(group_bad) | ~params_ok
    newly = bad & applied & ~state.diverged
    accept = ~bad & ~state.diverged & applied

    def select(new, old):
        return jax.tree.map(lambda a, b: a if is_key(a) else jnp.where(accept, a, b), new, old)

    new_state = TrainState(
        params=select(new_params, state.params),
        opt_state=select(new_opt, state.opt_state),
        rest=select(new_rest, state.rest),
        perm=perm,
        diverged=state.diverged | newly,
        diverged_step=jnp.where(newly, t, state.diverged_step),
        bad_groups=jnp.where(newly, group_bad, state.bad_groups),
        end_nonfinite=state.end_nonfinite | (bad & ~applied & ~state.diverged),
    )
    return new_state, norms, value.astype(jnp.float32)


def run_chunk(
    spec: StepSpec, state: TrainState, lr: jax.Array, key: jax.Array, start: jax.Array, arrays: dict
) -> tuple[TrainState, dict[str, jax.Array], Any]:
    """Log at step `start`, then run steps start .. start + log_every - 1 (those < steps).

    Called with start == steps it only logs the end point (and its kernel gradients).

    Returns:
      (state, log, flows): log has the `metrics` keys, "log10_kernel_grad" (L,) at step `start`
      and "train/batch_loss" (log_every,) the training-mode batch loss of each step (NaN past the
      end); flows is a `GradientFlow` with a leading (log_every,) axis (zeros where no record is
      due), or None without a monitor.
    """
    log = metrics(spec, *unpack_state(spec, state.params, state.rest), arrays)
    nan_norms = jnp.full((len(spec.kernel_index),), jnp.nan, jnp.float32)
    nan = jnp.full((), jnp.nan, jnp.float32)

    branch_free = branch_free_steps()
    epoch_perms = epoch_permutations(spec, key, start, arrays["x"].shape[0]) if branch_free else None
    k, m = spec.log_every, spec.monitor_every
    flow_of = functools.partial(_packed_monitor_flow, spec)
    # the monitor's empty record (zeros of its shapes), traced abstractly once
    flow_shapes = None if m is None else jax.eval_shape(flow_of, state.params, state.rest, arrays)

    def no_flow():
        return jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), flow_shapes)

    def body(s, i, guarded, monitored):
        t = start + i
        flow = None
        if monitored:
            flow = jax.lax.cond(
                (t % m == 0) & (t <= spec.steps), lambda: flow_of(s.params, s.rest, arrays), no_flow
            )

        def step():
            return train_step(spec, s, t, lr, key, arrays, i == 0, epoch_perms)

        if guarded:  # steps past the end (t > steps) are skipped
            s, norms, value = jax.lax.cond(t <= spec.steps, step, lambda: (s, nan_norms, nan))
        else:
            s, norms, value = step()
        return s, (norms, jnp.where(t < spec.steps, value, nan), flow)

    def scan(s, steps, guarded, monitored):
        return jax.lax.scan(functools.partial(body, guarded=guarded, monitored=monitored), s, steps)

    every = jnp.arange(k, dtype=jnp.int32)

    def guarded_chunk(s):
        return scan(s, every, True, m is not None)

    def full_chunk(s):
        """Steps start .. start + k - 1, all before the end, start a multiple of k: no per-step
        branch, but the monitor's where its records fall at positions that vary by chunk."""
        if m is None or (m % k and k % m):
            return scan(s, every, False, m is not None)
        if m % k == 0:  # at most the chunk's first step records: one branch per chunk
            flow = jax.lax.cond(start % m == 0, lambda: flow_of(s.params, s.rest, arrays), no_flow)
            s, (norms, values, _) = scan(s, every, False, False)
            return s, (
                norms,
                values,
                jax.tree.map(lambda f: jnp.zeros((k, *f.shape), f.dtype).at[0].set(f), flow),
            )

        def group(s, g):  # k a multiple of m: every m-th step records, groups of m steps
            flow = flow_of(s.params, s.rest, arrays)
            s, outs = scan(s, g * m + jnp.arange(m, dtype=jnp.int32), False, False)
            return s, (outs, flow)

        s, ((norms, values, _), flows) = jax.lax.scan(group, s, jnp.arange(k // m, dtype=jnp.int32))
        flows = jax.tree.map(lambda f: jnp.zeros((k, *f.shape[1:]), f.dtype).at[::m].set(f), flows)
        return s, (norms.reshape((k, *norms.shape[2:])), values.reshape(k), flows)

    if branch_free:
        # a chunk whose steps all come before the end (every chunk but the last one or two) runs
        # them without a per-step conditional: one conditional per chunk
        aligned = (start + k <= spec.steps) & (start % k == 0)
        state, (norms, values, flows) = jax.lax.cond(aligned, full_chunk, guarded_chunk, state)
    else:
        state, (norms, values, flows) = guarded_chunk(state)
    log["log10_kernel_grad"] = norms[0]
    log["train/batch_loss"] = values
    return state, log, flows


def branch_free_steps() -> bool:
    """Whether the training chunk is built without per-step conditionals: True on GPU and TPU (the
    default backend at trace time). There XLA executes a conditional by copying its predicate to
    the host and blocking until the device is done (the GPU runtime's ConditionalThunk), a
    synchronisation per step that a plain `lax.scan` of training steps does not pay (a scan with a
    known trip count runs without one). Then the kernel-gradient norms of a step are computed at
    every step and kept at the chunk's first, and a chunk whose steps all come before the end runs
    them without the per-step "past the end?" branch (the last chunk or two keep it: one
    conditional per chunk), and with minibatches the chunk draws the example orders of the epochs
    it reads at its start (`epoch_permutations`) instead of one under a branch at each epoch
    start. On CPU a conditional costs next to nothing and saves the work, so the branches stay.
    The monitor (`monitor_every` = m, chunks of k = `log_every` steps) records without a branch
    per step when m is a multiple of k (one branch per chunk) or k a multiple of m (the chunk runs
    as groups of m steps, each recording first). Still a branch per step: the monitor's when
    neither divides the other, and the permutation's when a chunk spans more than
    `MAX_CHUNK_EPOCHS` epochs."""
    return jax.default_backend() != "cpu"


@functools.lru_cache(maxsize=32)
def compiled_chunk(spec: StepSpec) -> Callable:
    """jit(vmap(run_chunk)) over nets: `(state, lr (N,), keys (N,), start, arrays) -> (state, log,
    flows)`, cached per spec (and per shape by jit). `compiled_chunk.cache_info()` counts programs."""
    return jax.jit(jax.vmap(functools.partial(run_chunk, spec), in_axes=(0, 0, 0, None, None)))


@functools.lru_cache(maxsize=32)
def compiled_metrics(spec: StepSpec) -> Callable:
    """jit(vmap(metrics)) over nets: `(params, rest, arrays) -> {name: (N,)}`, cached per spec."""
    return jax.jit(jax.vmap(functools.partial(metrics, spec), in_axes=(0, 0, None)))


def unpack_state(spec: StepSpec, params: Any, rest: Any) -> tuple[Any, Any]:
    """One net's packed (params, rest) as the module's state trees."""
    return spec.params_packing.unpack(params), spec.rest_packing.unpack(rest)


def _packed_monitor_flow(spec: StepSpec, params: Any, rest: Any, arrays: dict) -> measure.GradientFlow:
    return monitor_flow(spec, *unpack_state(spec, params, rest), arrays)


@functools.lru_cache(maxsize=32)
def compiled_unpack(spec: StepSpec) -> Callable:
    """jit(vmap(unpack_state)): a stack's packed (params, rest) as state trees with a nets axis."""

    def unpack(params, rest):
        n_nets = jax.tree.leaves(params)[0].shape[0]
        return jax.vmap(functools.partial(unpack_state, spec), axis_size=n_nets)(params, rest)

    return jax.jit(unpack)


@functools.lru_cache(maxsize=32)
def _initial_program(
    optimizer: str, clip_norm: float | None, perm_len: int, num_groups: int, params: Packing, rest: Packing
) -> Callable:
    """jit of `(params, rest) -> (packed params, opt_state, packed rest, perm, diverged,
    diverged_step, bad_groups, end_nonfinite)` for a stack: one dispatch instead of one eager op per
    leaf. Cached on what it depends on (runs that differ in steps or schedule share it) and per
    shape by jit."""
    tx = optimizers.base_transform(optimizer, clip_norm)

    def init(p, r):
        n_nets = jax.tree.leaves(p)[0].shape[0]
        packed_p, packed_r = (
            jax.vmap(params.pack, axis_size=n_nets)(p),
            jax.vmap(rest.pack, axis_size=n_nets)(r),
        )
        return (
            packed_p,
            jax.vmap(tx.init)(packed_p),
            packed_r,
            jnp.zeros((n_nets, perm_len), jnp.int32),
            jnp.zeros((n_nets,), bool),
            jnp.full((n_nets,), -1, jnp.int32),
            jnp.zeros((n_nets, num_groups), bool),
            jnp.zeros((n_nets,), bool),
        )

    return jax.jit(init)


def init_state(spec: StepSpec, params: Any, rest: Any, n_train: int) -> TrainState:
    """The initial `TrainState` of a stack (leading nets axis on `params` and `rest`, as trees)."""
    perm_len = 1 if spec.batch_size is None else n_train
    program = _initial_program(
        spec.optimizer,
        spec.clip_norm,
        perm_len,
        len(spec.group_names),
        spec.params_packing,
        spec.rest_packing,
    )
    return TrainState(*program(params, rest))
