"""Long-memory sequence tasks for recurrent nets: the adding problem and the temporal-order task.

Both are deterministic in `seed` (numpy's PCG64 from a `SeedSequence`; the training and test sets are
drawn from two independent child streams), and both return a `SequenceTask`, which `jaxvg.fit`
accepts as its `data` (it has `x_train`, `y_train`, `x_test`, `y_test` and `loss`, as a
`jaxvg.train.data.Dataset` has, but with inputs of shape (n, time, features)).

| task             | x (n, T, F)                     | labels                 | loss            | chance      |
|------------------|---------------------------------|------------------------|-----------------|-------------|
| `adding`         | (n, T, 2): value U[0,1], marker | (n, 1) float32, sum    | "mse"           | MSE 1/6     |
| `temporal_order` | (n, T, 6): one-hot symbols      | (n,) int32 in [0, 4)   | "cross_entropy" | 75% errors  |

Example:
  >>> from jaxvg.train import tasks
  >>> task = tasks.adding(50, n_train=8, n_test=4, seed=0)
  >>> task.x_train.shape, task.y_train.shape, task.loss, float(task.x_train[..., 1].sum(axis=1).max())
  ((8, 50, 2), (8, 1), 'mse', 2.0)

References:
  Hochreiter & Schmidhuber, Long short-term memory, Neural Computation 9(8), 1997 (experiment 4, the
  adding problem; experiment 6a, temporal order).
  Pascanu, Mikolov & Bengio, On the difficulty of training recurrent neural networks, ICML 2013,
  https://arxiv.org/abs/1211.5063 (the fixed-length versions used here).
  Arjovsky, Shah & Bengio, Unitary evolution recurrent neural networks, ICML 2016,
  https://arxiv.org/abs/1511.06464 (the adding problem with one marker in each half).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from jaxvg import checks
from jaxvg.nn import losses

__all__ = ["ADDING_BASELINE_MSE", "TASKS", "SequenceTask", "adding", "temporal_order"]

TASKS = ("adding", "temporal_order")
ADDING_BASELINE_MSE = 1.0 / 6.0  # always answering 1: the variance of the sum of two U[0, 1] values
TEMPORAL_ORDER_SYMBOLS = 6  # A, B and four distractors c, d, e, f (one-hot)
TEMPORAL_ORDER_CLASSES = 4  # AA, AB, BA, BB
_SALT = {"adding": 0xADD, "temporal_order": 0x0DE4}


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class SequenceTask:
    """A train/test split of sequences, in the form `jaxvg.fit` takes as `data`.

    Attributes:
      name: the task name.
      x_train, x_test: float32 inputs (n, time, features), read-only.
      y_train, y_test: labels for `loss` ((n, 1) float32 for "mse", (n,) int32 for "cross_entropy").
      loss: the loss name the labels are stored for.
      num_classes: classes, or None for regression.
      length: T, the number of time steps.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    loss: str
    num_classes: int | None
    length: int

    def __post_init__(self):
        checks.choice("loss", self.loss, losses.LOSSES)
        for split in ("train", "test"):
            x = checks.finite_array(f"x_{split}", getattr(self, f"x_{split}"))
            if x.ndim != 3 or x.shape[1] != self.length:
                raise ValueError(
                    f"`x_{split}` must have shape (n, {self.length}, features), got shape {x.shape}."
                )
            y = np.asarray(getattr(self, f"y_{split}"))
            if y.shape[0] != x.shape[0]:
                raise ValueError(f"`y_{split}` must have {x.shape[0]} rows, got shape {y.shape}.")
            for name, a in ((f"x_{split}", x), (f"y_{split}", y)):
                a = np.array(a)
                a.setflags(write=False)
                object.__setattr__(self, name, a)

    @property
    def in_features(self) -> int:
        return int(self.x_train.shape[-1])

    def __repr__(self) -> str:
        return (
            f"SequenceTask({self.name!r}, T={self.length}, train={self.x_train.shape}, "
            f"test={self.x_test.shape}, loss={self.loss!r})"
        )


def _task(
    name: str,
    length: int,
    min_length: int,
    why: str,
    n_train: int,
    n_test: int,
    seed: int,
    make_set: Callable[[np.random.Generator, int, int], tuple[np.ndarray, np.ndarray]],
    loss: str,
    num_classes: int | None,
) -> SequenceTask:
    """Check the sizes and the seed, then draw the train and test sets from two independent streams
    of (seed, the task's salt) with `make_set(rng, n, length) -> (x, y)`."""
    length = checks.positive_int("length", length)
    if length < min_length:
        raise ValueError(f"`length` must be >= {min_length} ({why}), got {length!r}.")
    checks.positive_int("n_train", n_train)
    checks.positive_int("n_test", n_test)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise ValueError(f"`seed` must be an int in [0, 2**32), got {seed!r}.")
    train, test = np.random.SeedSequence([int(seed), _SALT[name]]).spawn(2)
    x, y = make_set(np.random.Generator(np.random.PCG64(train)), n_train, length)
    xt, yt = make_set(np.random.Generator(np.random.PCG64(test)), n_test, length)
    return SequenceTask(name, x, y, xt, yt, loss, num_classes, length)


def _adding_set(rng: np.random.Generator, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    half = length // 2
    values = rng.uniform(0.0, 1.0, size=(n, length)).astype(np.float32)
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, length, size=n)
    markers = np.zeros((n, length), np.float32)
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    y = (values[rows, first] + values[rows, second]).astype(np.float32)[:, None]
    return np.stack([values, markers], axis=-1), y


def adding(length: int, *, n_train: int = 10_000, n_test: int = 1_000, seed: int = 0) -> SequenceTask:
    """The adding problem: remember two marked numbers in a long sequence and output their sum.

    Step t has two features: a value U[0, 1] and a marker, 1 at exactly two steps (the first uniform
    in [0, T/2), the second in [T/2, T), as Arjovsky et al. 2016 set it), 0 elsewhere. The target is
    the sum of the two marked values; answering 1 always gives MSE 1/6 (`ADDING_BASELINE_MSE`), and
    a run counts as solved below MSE 0.01.

    Args:
      length: T >= 2.
      n_train, n_test: sequences in each set (>= 1).
      seed: int in [0, 2**32); the same seed gives bitwise the same arrays.
    Returns:
      `SequenceTask` with x (n, T, 2) float32 and y (n, 1) float32, loss "mse".
    Raises:
      ValueError: `length` < 2, a set size < 1, a bad seed.
    """
    sizes = (length, 2, "one marker in each half", n_train, n_test)
    return _task("adding", *sizes, seed, _adding_set, "mse", None)


def _order_set(rng: np.random.Generator, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    symbols = rng.integers(2, TEMPORAL_ORDER_SYMBOLS, size=(n, length))  # distractors c..f
    lo1, hi1 = length // 10, max(length // 10 + 1, 2 * length // 10)
    lo2, hi2 = 4 * length // 10, max(4 * length // 10 + 1, 5 * length // 10)
    t1 = rng.integers(lo1, hi1, size=n)
    t2 = rng.integers(lo2, hi2, size=n)
    a = rng.integers(0, 2, size=n)  # 0: A, 1: B
    b = rng.integers(0, 2, size=n)
    rows = np.arange(n)
    symbols[rows, t1] = a
    symbols[rows, t2] = b
    x = np.eye(TEMPORAL_ORDER_SYMBOLS, dtype=np.float32)[symbols]
    return x, (2 * a + b).astype(np.int32)


def temporal_order(length: int, *, n_train: int = 10_000, n_test: int = 1_000, seed: int = 0) -> SequenceTask:
    """Pascanu et al. 2013's temporal-order task: classify the order of two symbols among distractors.

    Every step is a one-hot symbol out of six: four distractors (c, d, e, f), uniform, except at two
    positions, the first uniform in [T/10, 2T/10), the second in [4T/10, 5T/10), which hold A or B.
    The class is the pair in order: AA = 0, AB = 1, BA = 2, BB = 3 (chance: 75% errors). Solved: under
    1% errors on fresh sequences (the test set).

    Args:
      length: T >= 10.
      n_train, n_test: sequences in each set (>= 1).
      seed: int in [0, 2**32).
    Returns:
      `SequenceTask` with x (n, T, 6) float32 and y (n,) int32, loss "cross_entropy", 4 classes.
    Raises:
      ValueError: `length` < 10, a set size < 1, a bad seed.
    """
    sizes = (length, 10, "the marked windows are T/10 wide", n_train, n_test)
    return _task("temporal_order", *sizes, seed, _order_set, "cross_entropy", TEMPORAL_ORDER_CLASSES)
