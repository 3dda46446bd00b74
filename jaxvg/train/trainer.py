"""`Trainer`: validate and compile once, then train any stack of the same shapes, many times.

A `Trainer` is built from a stack's structure (graphdef and leaf shapes; arrays or
`jax.ShapeDtypeStruct`s), the data and a `TrainConfig`. Building it checks everything on the host,
before anything is traced, and fixes the `StepSpec` the compiled chunk is cached on. Then:

- `init_state(params, rest)`: the optimizer state and flags (one jitted dispatch);
- `run(state, keys)`: the chunks of steps and the host loop between them (tqdm bar, copies of the
  logs, divergence check), nothing else; returns a `Run`;
- `finish(run)`: the history, and the `FloatingPointError` of `on_nonfinite="raise"`;
- `fit(params, rest, keys)`: all three, what `fit_stacked` does;
- `evaluate(params, rest)`: each net's loss and accuracy (`evaluate_stacked` without a trainer).

Example:
  >>> import numpy as np
  >>> from flax import nnx
  >>> import jaxvg
  >>> from jaxvg.train import TrainConfig, Trainer, data_keys, stack_models
  >>> x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
  >>> y = np.array([[0], [1], [1], [0]], np.float32)
  >>> graphdef, params, rest = stack_models([jaxvg.MLP(2, 8, 1, 1, rngs=nnx.Rngs(s)) for s in (0, 1)])
  >>> config = TrainConfig(loss="mse", optimizer="adam", learning_rate=0.05, steps=50, progress=False)
  >>> trainer = Trainer(graphdef, params, rest, (x, y), config)
  >>> state = trainer.init_state(params, rest)
  >>> run = trainer.run(state, data_keys([0, 1]))          # compiles on the first call only
  >>> trainer.finish(run).history["train/loss"].shape
  (2, 51)
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from jaxvg import checks
from jaxvg.nn import losses
from jaxvg.train import history as history_lib
from jaxvg.train import statics as statics_lib
from jaxvg.train.config import TrainConfig, check_learning_rate
from jaxvg.train.packing import Packing
from jaxvg.train.step import (
    StepSpec,
    TrainState,
    compiled_chunk,
    compiled_metrics,
    compiled_unpack,
    init_state,
)

__all__ = ["MONITOR_BATCH", "Run", "StackedFit", "Trainer", "evaluate_stacked"]

MONITOR_BATCH = 256  # the monitor batch: the first min(MONITOR_BATCH, n) training examples

# the `TrainConfig` fields that the `StepSpec` takes as they are
_CONFIG_AS_IS = (
    "optimizer",
    "schedule",
    "warmup_steps",
    "steps",
    "clip_norm",
    "monitor_every",
    "monitor_precision",
)


class StackedFit(NamedTuple):
    """What `fit_stacked` returns: the trained stack (leading nets axis) and the history (leading
    nets axis on every per-net entry)."""

    params: Any
    rest: Any
    history: dict[str, Any]


class Run(NamedTuple):
    """What `Trainer.run` returns: the final state (its params and rest packed, see
    `jaxvg.train.packing`; `finish` unpacks them) and the host copies of what each chunk logged."""

    state: TrainState
    logs: list[dict[str, np.ndarray]]
    log_steps: list[int]
    monitor_rows: list[Any] | None
    monitor_steps: list[int]


class Trainer:
    """Train stacks of N nets that share one graphdef with one compiled, vmapped, scanned program.

    Args:
      graphdef: the shared `nnx.GraphDef` from `nnx.split(model, nnx.Param, ...)` (training mode).
      params, rest: the stack's `nnx.Param` state and remaining state, every leaf with a leading
        nets axis N; arrays or `jax.ShapeDtypeStruct`s (only shapes and dtypes are read).
      data: a `jaxvg.train.data.Dataset` (train and test sets) or a tuple `(x, y)` (training set
        only); x has shape (n, ...) with the model's input features trailing.
      config: the `TrainConfig`; a tuple `learning_rate` must have N entries.
      names: how error messages name each net (default "net i").
    Raises:
      ValueError: leaves without a common leading axis; a learning-rate tuple of another length;
        NaN/Inf in the data; features that do not fit the model; labels that do not fit the loss;
        a batch size outside [1, n]; "gd" with a minibatch; a monitor on a model that the
        measures cannot read.
    """

    def __init__(
        self,
        graphdef: nnx.GraphDef,
        params: Any,
        rest: Any,
        data: Any,
        config: TrainConfig,
        *,
        names: Sequence[str] | None = None,
    ):
        if not isinstance(config, TrainConfig):
            raise checks.ArgumentTypeError(f"`config` must be a TrainConfig, got {type(config).__name__}.")
        if not isinstance(graphdef, nnx.GraphDef):
            raise checks.ArgumentTypeError(
                f"`graphdef` must be an nnx.GraphDef (from `nnx.split(model, nnx.Param, ...)` or "
                f"`stack_models`), got {type(graphdef).__name__}."
            )
        self.config = config
        self.n_nets = _n_nets(params, rest)
        self.learning_rate = self._learning_rates(config.learning_rate)
        self.names = _check_names(names, self.n_nets)
        self.spec, self.arrays = _build_spec(graphdef, params, rest, data, config, self.n_nets)

    def _learning_rates(self, learning_rate: float | tuple[float, ...]) -> jax.Array:
        """(N,) learning rates in the default float dtype (float64 under x64)."""
        lr = np.asarray(learning_rate, np.float64)
        if lr.ndim == 1 and lr.shape != (self.n_nets,):
            raise ValueError(
                f"`learning_rate` must be a finite number > 0 or {self.n_nets} of them, got {learning_rate!r}."
            )
        return jnp.asarray(np.broadcast_to(lr, (self.n_nets,)), jnp.result_type(float))

    @property
    def program(self) -> Callable:
        """The compiled chunk, `step.compiled_chunk(self.spec)`."""
        return compiled_chunk(self.spec)

    def init_state(self, params: Any, rest: Any) -> TrainState:
        """The initial `TrainState` of a stack with this trainer's shapes."""
        return init_state(self.spec, params, rest, int(self.arrays["x"].shape[0]))

    def run(self, state: TrainState, keys: jax.Array, *, learning_rate: Any = None) -> Run:
        """Run every chunk from `state`: steps 0 .. steps, logging every `log_every` steps.

        Args:
          state: from `init_state` (it is not modified; pass the same state to run again).
          keys: (N,) PRNG keys for the nets' minibatch order (`data_keys(seeds)`).
          learning_rate: None for the config's, or a float / N floats for this run (no recompile).
        Returns:
          A `Run`; with on_nonfinite="raise" it stops after the chunk in which a net diverged.
        """
        keys = checks.converted(
            jnp.asarray,
            keys,
            f"`keys` must be {self.n_nets} PRNG keys (jax.random.key, e.g. `data_keys(seeds)`), got "
            f"{type(keys).__name__}.",
        )
        if keys.shape != (self.n_nets,) or not jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
            raise ValueError(
                f"`keys` must be {self.n_nets} PRNG keys (jax.random.key), shape ({self.n_nets},), got shape "
                f"{keys.shape} and dtype {keys.dtype}."
            )
        lr = self.learning_rate
        if learning_rate is not None:
            lr = self._learning_rates(check_learning_rate(learning_rate))
        spec, k = self.spec, self.spec.log_every
        program = compiled_chunk(spec)
        monitoring = spec.monitor_every is not None
        logs, log_steps, mon_rows, mon_steps = [], [], [], []
        bar = _ProgressBar(spec.steps, self.config.progress, program)
        try:
            for start in [*range(0, spec.steps, k), spec.steps]:
                state, log, mon = program(state, lr, keys, jnp.int32(start), self.arrays)
                logs.append(jax.device_get(log))
                log_steps.append(start)
                if monitoring:
                    mon = jax.device_get(mon)
                    for i in range(k):
                        t = start + i
                        if t % spec.monitor_every == 0 and (t < spec.steps or t == start == spec.steps):
                            mon_rows.append(jax.tree.map(lambda a, i=i: a[:, i], mon))
                            mon_steps.append(t)
                bar.update(min(k, spec.steps - start))
                if self.config.on_nonfinite == "raise" and np.asarray(jax.device_get(state.diverged)).any():
                    break
        finally:
            bar.close()
        return Run(state, logs, log_steps, mon_rows if monitoring else None, mon_steps)

    def finish(self, run: Run, *, unpack: bool = True) -> StackedFit:
        """The trained stack and its history (`jaxvg.train.history`).

        `unpack=False` returns the history only (`params` and `rest` None): unpacking the trained
        state is a program of its own, whose compile time grows with the number of leaves.

        Raises:
          FloatingPointError: an applied step of a net went non-finite and `on_nonfinite` is "raise".
        Warns:
          history.NonFiniteEndWarning: the loss or gradient at the final parameters (step `steps`,
            computed for the log, never applied) is non-finite while every applied step was finite:
            the finite parameters are returned (in either mode) and the net is not marked diverged.
        """
        div = np.asarray(jax.device_get(run.state.diverged))
        div_step = np.where(div, np.asarray(jax.device_get(run.state.diverged_step)), -1).astype(np.int64)
        history = history_lib.assemble(
            run.logs, run.log_steps, run.monitor_rows, run.monitor_steps, div, div_step, self.spec.steps
        )
        if self.config.on_nonfinite == "raise" and div.any():
            bad_groups = np.asarray(jax.device_get(run.state.bad_groups))
            raise history_lib.nonfinite_error(history, bad_groups, self.spec.group_names, self.names)
        end_bad = np.asarray(jax.device_get(run.state.end_nonfinite)) & ~div
        if end_bad.any():
            warnings.warn(
                history_lib.nonfinite_end_warning(end_bad, self.names, self.spec.steps), stacklevel=3
            )
        if not checks.boolean("unpack", unpack):
            return StackedFit(None, None, history)
        params, rest = compiled_unpack(self.spec)(run.state.params, run.state.rest)
        return StackedFit(params, rest, history)

    def fit(self, params: Any, rest: Any, keys: jax.Array, *, learning_rate: Any = None) -> StackedFit:
        """`finish(run(init_state(params, rest), keys))`."""
        return self.finish(self.run(self.init_state(params, rest), keys, learning_rate=learning_rate))

    def evaluate(self, params: Any, rest: Any) -> dict[str, np.ndarray]:
        """Loss and accuracy of each net on the training (and test) set, evaluation mode: the
        "train/loss", "train/accuracy" (and "test/...") entries of the history, as (N,) arrays."""
        return jax.device_get(compiled_metrics(self.spec)(params, rest, self.arrays))


class _ProgressBar:
    """The tqdm bar of `Trainer.run`, advanced between chunks. While the first chunk compiles (tens
    of seconds on a CPU) it reads "fit: compiling" at 0 steps with no ETA; then "fit (compile +
    first K steps: T s)", and the ETA counts only the chunks after the first, so the compile time
    does not inflate it. When the chunk is already compiled it is a plain "fit" bar."""

    def __init__(self, total: int, enabled: bool, program: Callable):
        self.total, self.enabled, self.program = total, enabled, program
        self.compiles = _cache_size(program)
        self.first = True
        self.start = time.perf_counter()
        desc = "fit" if self.compiles is not None and self.compiles > 0 else "fit: compiling"
        self.bar = tqdm(total=total, disable=not enabled, desc=desc, leave=False)

    def update(self, n: int) -> None:
        if self.first and self.enabled:
            self.first = False
            seconds = time.perf_counter() - self.start
            after = _cache_size(self.program)
            if after is None or self.compiles is None or after > self.compiles:
                # a fresh bar that starts at n: its rate (and ETA) leaves the compile out
                self.bar.close()
                self.bar = tqdm(total=self.total, initial=n, leave=False,
                                desc=f"fit (compile + first {n} steps: {seconds:.1f} s)")  # fmt: skip
                return
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def _cache_size(program: Callable) -> int | None:
    """How many programs a `jax.jit` function has compiled (None when it does not say)."""
    size = getattr(program, "_cache_size", None)
    try:
        return int(size()) if callable(size) else None
    except Exception:  # a private jax method: never let the progress bar break training
        return None


def evaluate_stacked(graphdef: nnx.GraphDef, params: Any, rest: Any, data: Any, *, loss: Any = None) -> dict:
    """Loss and accuracy of every net of a stack, evaluation mode (no dropout, running statistics).

    Args:
      graphdef, params, rest: a stack (leading nets axis N), e.g. the result of `fit_stacked`, whose
        diverged nets hold their last finite parameters.
      data: a Dataset or an (x, y) tuple, as for `fit`.
      loss: a loss name or callable; None takes the dataset's.
    Returns:
      {"train/loss", "train/accuracy", and with a test set "test/loss", "test/accuracy"}: numpy
      float32 arrays of shape (N,); accuracy is NaN for "mse" and callable losses.
    Raises:
      ValueError: as `Trainer` for the data, the loss and the stack.
    """
    config = TrainConfig(loss=loss, optimizer="gd", learning_rate=1.0, steps=1, progress=False)
    return Trainer(graphdef, params, rest, data, config).evaluate(params, rest)


def _check_names(names: Any, n_nets: int) -> list[str]:
    if names is None:
        return [f"net {i}" for i in range(n_nets)]
    if (
        isinstance(names, str)
        or not isinstance(names, Sequence)
        or not all(isinstance(n, str) for n in names)
    ):
        raise checks.ArgumentTypeError(
            f"`names` must be None or a sequence of {n_nets} strings, got {names!r}."
        )
    if len(names) != n_nets:
        raise ValueError(
            f"`names` must name each of the {n_nets} nets, got {len(names)} names: {list(names)!r}."
        )
    return list(names)


def _n_nets(params: Any, rest: Any) -> int:
    leaves = jax.tree.leaves((params, rest))
    for name, tree in (("params", params), ("rest", rest)):
        for leaf in jax.tree.leaves(tree):
            if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
                raise checks.ArgumentTypeError(
                    f"`{name}` must be a state of arrays (from `nnx.split` or `stack_models`), got a leaf of type "
                    f"{type(leaf).__name__}: {leaf!r:.60}."
                )
    if not jax.tree.leaves(params):
        raise ValueError("`params` is empty: the model has no nnx.Param to train.")
    n = leaves[0].shape[0] if len(leaves[0].shape) else 0
    if n < 1 or any(len(a.shape) == 0 or a.shape[0] != n for a in leaves):
        raise ValueError("`params` and `rest` must carry one common leading nets axis on every leaf.")
    return n


def _unpack_data(data: Any) -> tuple[Any, Any, Any, Any, str | None]:
    if isinstance(data, tuple):
        if len(data) != 2:
            raise ValueError(f"`data` as a tuple must be (x, y), got a tuple of length {len(data)}.")
        return data[0], data[1], None, None, None
    if all(hasattr(data, a) for a in ("x_train", "y_train")):
        return (
            data.x_train,
            data.y_train,
            getattr(data, "x_test", None),
            getattr(data, "y_test", None),
            getattr(data, "loss", None),
        )
    raise checks.ArgumentTypeError(
        f"`data` must be a jaxvg.train.data.Dataset or a tuple (x, y), got {type(data).__name__}."
    )


def _build_spec(
    graphdef: Any, params: Any, rest: Any, data: Any, config: TrainConfig, n_nets: int
) -> tuple[StepSpec, dict]:
    """Check the data against the config and the model, on the host; the spec and the device arrays."""
    x, y, xt, yt, data_loss = _unpack_data(data)
    loss = config.loss
    if loss is None:
        if data_loss is None:
            raise ValueError(f"`loss` must be one of {sorted(losses.LOSSES)} or a callable, got None.")
        loss = data_loss
    losses.get(loss)
    x = checks.finite_array("data.x_train" if xt is not None or data_loss else "data[0] (x)", x)
    y = checks.finite_array("data.y_train" if xt is not None or data_loss else "data[1] (y)", y)
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"`data` inputs must have shape (n, features) with n >= 1, got {x.shape}.")
    if y.ndim < 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"`data` labels must have {x.shape[0]} rows like the inputs, got shape {y.shape}.")
    n = x.shape[0]
    has_test = xt is not None and yt is not None and np.asarray(xt).shape[0] > 0
    if has_test:
        xt = checks.finite_array("data.x_test", xt)
        yt = checks.finite_array("data.y_test", yt)
    batch_size = config.batch_size
    if batch_size is not None and batch_size > n:
        raise ValueError(
            f"`batch_size` must be in [1, {n}] (the training set size) or None, got {batch_size!r}."
        )
    if batch_size == n:
        batch_size = None
    if config.optimizer == "gd" and batch_size is not None:
        raise ValueError(
            f"`batch_size` must be None (or {n}) for optimizer='gd' (full-batch gradient descent), got "
            f"{batch_size!r}; use optimizer='sgd' for minibatches."
        )

    one = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), (params, rest))
    statics = statics_lib.model_statics(graphdef, one)
    if isinstance(statics.in_features, int) and x.shape[1:] != (statics.in_features,):
        raise ValueError(
            f"`data` inputs have shape {x.shape} (features {x.shape[1:]}), but the model's in_features is "
            f"{statics.in_features}: build the model with in_features={x.shape[-1]} or fix the data."
        )
    if config.monitor_every is not None and statics.monitor_problem:
        raise ValueError(f"`monitor_every` needs a model the measures can read: {statics.monitor_problem}")
    try:
        out = statics_lib.eval_forward(statics.eval_graphdef).eval_shape(
            *one, jax.ShapeDtypeStruct(x.shape, x.dtype)
        )
    except Exception as e:  # the user's model code: any error, reported with the shapes, before training
        raise ValueError(
            f"`data` inputs of shape {x.shape} ({x.dtype}) do not fit the model: its forward pass (evaluation "
            f"mode, traced by jax.eval_shape) raised {type(e).__name__}: {e}"
        ) from e
    if not callable(loss):
        losses.check_targets(loss, y, out.shape, name="data.y_train" if data_loss else "data[1] (y)")
        if has_test:
            losses.check_targets(loss, yt, (yt.shape[0], *out.shape[1:]), name="data.y_test")
        if loss == "cross_entropy":  # integer-valued (checked above); the loss takes an integer dtype
            y = y.astype(np.int32)
            yt = yt.astype(np.int32) if has_test else yt
    _check_history_memory(config, n_nets, len(statics.kernel_index), batch_size or n)

    spec = StepSpec(
        graphdef=graphdef,
        eval_graphdef=statics.eval_graphdef,
        loss=loss,
        batch_size=batch_size,
        log_every=config.chunk_steps,
        kernel_index=statics.kernel_index,
        leaf_group=statics.leaf_group,
        group_names=statics.group_names,
        has_test=has_test,
        params_packing=Packing.of(one[0]),
        rest_packing=Packing.of(one[1]),
        **{name: getattr(config, name) for name in _CONFIG_AS_IS},
    )
    m = min(MONITOR_BATCH, n)
    arrays = {"x": jnp.asarray(x), "y": jnp.asarray(y), "xm": jnp.asarray(x[:m]), "ym": jnp.asarray(y[:m])}
    if has_test:
        arrays["xt"], arrays["yt"] = jnp.asarray(xt), jnp.asarray(yt)
    return spec, arrays


def _check_history_memory(config: TrainConfig, n_nets: int, n_blocks: int, batch: int) -> None:
    """Refuse, before compiling, a run whose history cannot fit in host memory.

    The host keeps, per net: the batch loss of every step (float32, `steps`), per logged point the
    losses, accuracies and L kernel-gradient norms (about L + 5 float32), and with `monitor_every`
    per record a `GradientFlow` (about 6 (L + 1) float32); assembling the history copies them once
    more (x 2).
    """
    steps, k = config.steps, config.chunk_steps
    logged = -(-steps // k) + 1
    floats = steps + logged * (n_blocks + 5)
    if config.monitor_every is not None:
        floats += (steps // config.monitor_every + 1) * 6 * (n_blocks + 1)
    nbytes = 2 * 4 * n_nets * floats
    checks.check_memory(
        nbytes,
        f"the training history of `steps`={steps} for {n_nets} net(s) of {n_blocks} blocks (one batch loss "
        f"per step, {logged} logged points every `log_every`={k} steps"
        + (
            ""
            if config.monitor_every is None
            else f", a gradient flow every `monitor_every`={config.monitor_every}"
        )
        + ")",
        "pass fewer `steps` (and train again from the returned models), or a larger `log_every` or "
        "`monitor_every`",
        host=True,
    )
