"""`TrainConfig`: what to train with, validated once, in `__post_init__`.

`fit` and `fit_stacked` take a `TrainConfig` or its fields as keywords; either way one validated,
frozen object travels from the call to the compiled program. Checks that need the data or the model
(`batch_size` against the training-set size, "gd" with a minibatch, labels against the loss) happen
when a `Trainer` is built.

Example:
  >>> from jaxvg.train import config
  >>> cfg = config.TrainConfig(loss="mse", optimizer="adam", learning_rate=1e-3, steps=1000)
  >>> cfg.chunk_steps, cfg.schedule
  (10, 'constant')
  >>> config.TrainConfig(loss="mse", optimizer="adam", learning_rate=-1.0, steps=10)
  Traceback (most recent call last):
  ...
  ValueError: `learning_rate` must be a finite number > 0, got -1.0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from jaxvg import checks
from jaxvg.measure import engine
from jaxvg.nn import losses
from jaxvg.train import optimizers

__all__ = [
    "DEFAULT_LOG_POINTS",
    "MAX_STEPS",
    "ON_NONFINITE",
    "TrainConfig",
    "check_learning_rate",
    "check_steps",
    "resolve",
]

ON_NONFINITE = ("raise", "record")
DEFAULT_LOG_POINTS = 100  # log_every=None logs about this many times
# The compiled loop counts steps in int32 and runs up to steps + log_every - 1 <= 2 * MAX_STEPS - 1.
MAX_STEPS = 2**30


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train: loss, optimizer and schedule, steps and batches, logging, divergence policy.

    One step: g = grad_params loss(model(x_batch), y_batch); u = opt(g) (clipped first when
    `clip_norm` is set); params <- params - learning_rate * schedule(t) * u (see
    `jaxvg.train.optimizers`). `batch_size` examples per step, drawn without replacement from a fresh
    permutation of the training set every epoch (the last partial batch of an epoch is dropped).

    Attributes:
      loss: a name from `jaxvg.nn.losses.LOSSES` or a callable `loss(outputs, y) -> scalar`; None
        takes the dataset's natural loss (`Dataset.loss`).
      optimizer: one of `OPTIMIZERS`: "gd" (full-batch gradient descent; `batch_size` must be None
        or n), "sgd" (minibatch SGD), "momentum" (heavy ball, 0.9), "adam", "adamw" (weight decay
        1e-4).
      learning_rate: peak learning rate, > 0; or one per net of a stack (a 1-D sequence, stored as
        a tuple of floats).
      steps: number of optimizer steps, in [1, `MAX_STEPS` = 2**30] (the compiled loop counts steps
        in int32).
      batch_size: examples per step, 1..n, or None for the whole training set every step.
      schedule: one of `SCHEDULES` (see `optimizers.learning_rate_factor`).
      warmup_steps: linear warmup steps before the schedule, 0 <= warmup_steps < steps.
      clip_norm: if set (> 0), gradients are clipped to this global L2 norm before the optimizer.
      log_every: steps per compiled chunk and between logged points, >= 1; None gives about 100
        logged points (`chunk_steps` is the value used).
      monitor_every: if set, a `jaxvg.measure.GradientFlow` (evaluation mode, on the first
        min(256, n) training examples) is recorded every `monitor_every` steps inside the
        compiled loop.
      monitor_precision: matmul precision of the monitor's own matmuls, one of the names
        `jaxvg.measure.gradient_flow` takes ("highest", the default: exact float32 matmuls on GPU
        and TPU too; "high" is TF32 / three bfloat16 passes, "default" the platform's fastest) or a
        `jax.lax.Precision`; stored as its canonical lower-case name. The training step's own
        matmuls keep the platform default whatever this says.
      on_nonfinite: "raise": a `FloatingPointError` at the first non-finite loss, gradient or
        parameter update, naming the step, the net and the first block (input side first) whose
        gradient went non-finite, with the history so far on `err.history`. "record": the
        diverging net is frozen at its last finite parameters, the history marks it, the others go on.
        Only applied steps (t < steps) count: the gradient at the final parameters, taken for the
        last log and never applied, gives a `NonFiniteEndWarning` when it is non-finite, not an
        error (the trained parameters are finite and returned).
      progress: show a tqdm bar advanced between chunks.
    Raises:
      ValueError: a field outside its valid range or choices, named in the message.
      TypeError: (`jaxvg.checks.ArgumentTypeError`, also a ValueError) a field of the wrong type,
        e.g. a string or a bool for a number, a non-bool `progress`.
    """

    loss: str | Callable | None = None
    optimizer: str
    learning_rate: float | tuple[float, ...]
    steps: int
    batch_size: int | None = None
    schedule: str = "constant"
    warmup_steps: int = 0
    clip_norm: float | None = None
    log_every: int | None = None
    monitor_every: int | None = None
    monitor_precision: str = "highest"
    on_nonfinite: str = "raise"
    progress: bool = True

    def __post_init__(self):
        checks.choice("optimizer", self.optimizer, optimizers.OPTIMIZERS)
        checks.choice("schedule", self.schedule, optimizers.SCHEDULES)
        checks.choice("on_nonfinite", self.on_nonfinite, ON_NONFINITE)
        steps = check_steps(self.steps)
        warmup_steps = checks.nonnegative_int("warmup_steps", self.warmup_steps)
        if warmup_steps >= steps:
            raise ValueError(f"`warmup_steps` must be < `steps` = {steps}, got {self.warmup_steps!r}.")
        clip_norm = None if self.clip_norm is None else checks.positive("clip_norm", self.clip_norm)
        log_every = None if self.log_every is None else checks.positive_int("log_every", self.log_every)
        monitor_every = self.monitor_every
        if monitor_every is not None:
            monitor_every = checks.positive_int("monitor_every", monitor_every)
        monitor_precision = engine.check_precision(self.monitor_precision, name="monitor_precision")
        batch_size = None if self.batch_size is None else checks.positive_int("batch_size", self.batch_size)
        if self.loss is not None:
            losses.get(self.loss)  # unknown name -> ValueError listing the choices
        checks.boolean("progress", self.progress)
        normalised = {
            "steps": steps,
            "warmup_steps": warmup_steps,
            "clip_norm": clip_norm,
            "log_every": log_every,
            "monitor_every": monitor_every,
            "monitor_precision": monitor_precision,
            "batch_size": batch_size,
            "learning_rate": check_learning_rate(self.learning_rate),
        }
        for name, value in normalised.items():
            object.__setattr__(self, name, value)

    @property
    def chunk_steps(self) -> int:
        """Steps per compiled chunk: `log_every` (about steps / 100 when None), at most `steps`."""
        k = self.log_every if self.log_every is not None else -(-self.steps // DEFAULT_LOG_POINTS)
        return min(max(k, 1), self.steps)


def check_steps(value: Any, name: str = "steps") -> int:
    """`value` as an int in [1, `MAX_STEPS`] (the compiled loop counts steps in int32).

    Raises:
      ValueError: out of range, naming `name`; an `ArgumentTypeError` for a non-integer.
    """
    steps = checks.positive_int(name, value)
    if steps > MAX_STEPS:
        raise ValueError(
            f"`{name}` must be an integer in [1, {MAX_STEPS}] (2**30: the compiled loop counts steps in "
            f"int32), got {value!r}; train in several `fit` calls from the returned models."
        )
    return steps


def check_learning_rate(value: Any) -> float | tuple[float, ...]:
    """`value` as a finite float > 0, or as a tuple of them from a 1-D sequence or array.

    Raises:
      ValueError: anything else, naming `learning_rate` (an `ArgumentTypeError`, also a TypeError, for
        strings, bools, None and non-numeric arrays).
    """
    wrong = value is None or isinstance(value, str | bytes | bool | np.bool_)
    try:
        raw = np.asarray(value)
        lr = raw.astype(np.float64)
    except (TypeError, ValueError):
        wrong = True
    if wrong or raw.dtype.kind not in "iuf":
        raise checks.ArgumentTypeError(
            f"`learning_rate` must be a finite number > 0 or a 1-D sequence of them (one per net), got "
            f"{value!r} ({type(value).__name__})."
        )
    if lr.ndim == 0:
        return checks.positive("learning_rate", value if isinstance(value, int | float) else float(lr))
    if lr.ndim != 1 or lr.size == 0 or not (np.all(np.isfinite(lr)) and np.all(lr > 0)):
        raise ValueError(
            f"`learning_rate` must be a finite number > 0 or a 1-D sequence of them (one per net), "
            f"got {value!r}."
        )
    return tuple(float(v) for v in lr)


_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
_REQUIRED = tuple(
    f.name
    for f in dataclasses.fields(TrainConfig)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
)


def resolve(config: TrainConfig | None, fields: Mapping[str, Any], *, where: str = "fit") -> TrainConfig:
    """The one config of a call that takes `config=None, **fields`.

    Without `config`, `TrainConfig(**fields)`. With one, keywords may only repeat its values: a
    keyword that differs is a ValueError (use `dataclasses.replace(config, name=value)`).

    Raises:
      TypeError: `config` is not a TrainConfig, or a keyword is not a TrainConfig field.
      ValueError: a keyword that conflicts with `config`, or an invalid field.
    """
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise TypeError(
            f"{where}() got unexpected keyword argument(s) {unknown}; the training fields are {list(_FIELDS)}."
        )
    if config is None:
        missing = [f"`{name}`" for name in _REQUIRED if name not in fields]
        if missing:
            raise checks.ArgumentTypeError(
                f"{where}() needs the training field(s) {', '.join(missing)}: pass them as keywords (e.g. "
                "optimizer='adam', learning_rate=1e-3, steps=1000) or pass `config=TrainConfig(...)`."
            )
        return TrainConfig(**fields)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"`config` must be a TrainConfig or None, got {type(config).__name__}.")
    if not fields:
        return config
    wanted = dataclasses.replace(config, **fields)  # validated and normalised like the config
    conflicts = [name for name in fields if getattr(wanted, name) != getattr(config, name)]
    if conflicts:
        name = conflicts[0]
        raise ValueError(
            f"`{name}={fields[name]!r}` conflicts with `config.{name}={getattr(config, name)!r}`: pass the "
            f"training fields either in `config` or as keywords, or use "
            f"`dataclasses.replace(config, {name}=...)`."
        )
    return config
