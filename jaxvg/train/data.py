"""Small datasets for vanishing-gradient experiments, generated or bundled: no network, no files.

`load(name, *, seed=0, **options) -> Dataset`. Every set is deterministic in `seed` (the same seed
gives bitwise-identical arrays, a different seed different ones), float32 inputs, NaN-free, and
stores its labels in the form that its `loss` takes (`jaxvg.nn.losses`):

| name      | x (n, d)          | labels                         | loss            | num_classes | out_features |
|-----------|-------------------|--------------------------------|-----------------|-------------|--------------|
| "xor"     | (4, 2), 0/1       | (4, 1) float32 0/1             | "mse"           | 2           | 1            |
| "spirals" | (n, 2)            | (n,) int32 in {0, 1}           | "cross_entropy" | 2           | 2            |
| "teacher" | (n, in_features)  | (n, out_features) float32      | "mse"           | None        | out_features |
| "digits"  | (n, 64)           | (n,) int32 in [0, 10)          | "cross_entropy" | 10          | 10           |
| "mnist1d" | (n, 40)           | (n,) int32 in [0, 10)          | "cross_entropy" | 10          | 10           |

The xor labels also suit "binary_cross_entropy" (same shape as a 1-unit output, 0/1).

Example:
  >>> from jaxvg.train import data
  >>> ds = data.load("xor")
  >>> ds.x_train.shape, ds.y_train.shape, ds.in_features, ds.out_features, ds.loss
  ((4, 2), (4, 1), 2, 1, 'mse')
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxvg import checks
from jaxvg.nn import activations, losses

DATASETS = ("xor", "spirals", "teacher", "digits", "mnist1d")

# Per-set options and their defaults; `load` rejects any other keyword.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "xor": {},
    "spirals": {"n_train": 1000, "n_test": 1000, "noise": 0.05, "turns": 1.5},
    "teacher": {
        "in_features": 10,
        "depth": 3,
        "width": 64,
        "activation": "tanh",
        "out_features": 1,
        "n_train": 1000,
        "n_test": 1000,
        "noise": 0.0,
    },
    "digits": {"test_fraction": 0.2},
    "mnist1d": {"num_samples": 5000, "test_fraction": 0.2},
}

# Salts that make each set's random stream distinct for the same seed.
_SALT = {name: i + 1 for i, name in enumerate(DATASETS)}


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A train/test split with labels stored for `loss`.

    The arrays are read-only numpy copies. Compare datasets through their arrays (`eq=False`).

    Attributes:
      name: the dataset name (one of `DATASETS` for sets made by `load`).
      x_train: inputs, shape (n_train, d), float32.
      y_train: labels, (n_train,) int32 for "cross_entropy", (n_train, k) float32 for "mse" /
        "binary_cross_entropy".
      x_test: inputs, shape (n_test, d), float32.
      y_test: labels, same form as `y_train`.
      num_classes: number of classes, or None for regression.
      loss: the loss name (a key of `jaxvg.nn.losses.LOSSES`) the labels are stored for.
    Raises:
      ValueError: inconsistent shapes, NaN/Inf inputs, or an unknown `loss`.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int | None
    loss: str

    def __post_init__(self):
        checks.choice("loss", self.loss, losses.LOSSES)
        if self.num_classes is not None:
            checks.positive_int("num_classes", self.num_classes)
        for split in ("train", "test"):
            x = checks.finite_array(f"x_{split}", getattr(self, f"x_{split}"))
            y = checks.finite_array(f"y_{split}", getattr(self, f"y_{split}"))
            if x.ndim != 2:
                raise ValueError(f"`x_{split}` must have shape (n, d), got shape {x.shape!r}.")
            if y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
                raise ValueError(
                    f"`y_{split}` must have shape ({x.shape[0]},) or ({x.shape[0]}, k) to match "
                    f"`x_{split}` {x.shape!r}, got shape {y.shape!r}."
                )
            x = np.array(x, dtype=np.float32)
            y = np.array(y, dtype=np.int32 if y.dtype.kind in "iub" else np.float32)
            x.setflags(write=False)
            y.setflags(write=False)
            object.__setattr__(self, f"x_{split}", x)
            object.__setattr__(self, f"y_{split}", y)
        if self.x_train.shape[1] != self.x_test.shape[1] or self.y_train.shape[1:] != self.y_test.shape[1:]:
            raise ValueError(
                f"train and test shapes disagree: x {self.x_train.shape} vs {self.x_test.shape}, "
                f"y {self.y_train.shape} vs {self.y_test.shape}."
            )

    @property
    def in_features(self) -> int:
        """Input dimension d."""
        return int(self.x_train.shape[1])

    @property
    def out_features(self) -> int:
        """Model output dimension the labels need: k for (n, k) targets (1 for xor, the target dim
        for regression), else `num_classes`."""
        if self.y_train.ndim == 2:
            return int(self.y_train.shape[1])
        return int(self.num_classes)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, x_train={self.x_train.shape}, x_test={self.x_test.shape}, "
            f"num_classes={self.num_classes}, loss={self.loss!r})"
        )


def load(name: str, *, seed: int = 0, **options: Any) -> Dataset:
    """Build a dataset by name; deterministic in `seed`, offline, writes nothing to disk.

    Sets and their options (defaults in brackets):

    - "xor": the source document's four points x = [[0,0],[0,1],[1,0],[1,1]], y = [0,1,1,0],
      labels (4, 1) float32 for "mse" (or "binary_cross_entropy"); test = train; `seed` is unused.
    - "spirals": two interleaved spirals in 2-D, labels (n,) int32 in {0, 1}, classes balanced
      (they alternate before a shuffle). Example i of class c: t ~ U(0, 1), r = 0.1 + 0.9 t,
      angle = 2 pi turns t + pi c, x = r (cos angle, sin angle) + noise N(0, I).
      Options: n_train [1000], n_test [1000], noise [0.05] (std of the Gaussian jitter, in units of
      the outer radius 1), turns [1.5] (turns of each arm). Lang & Witbrock, Learning to tell two
      spirals apart, 1988.
    - "teacher": regression targets of a random deep teacher MLP. x ~ N(0, I_in); h_0 = x,
      h_l = phi(h_{l-1} W_l) with W_l ~ N(0, 1/fan_in) (untruncated, no biases) for l = 1..depth,
      then f(x) = h_depth W_out, W_out ~ N(0, 1/width). Each output column is shifted and scaled
      by one fixed affine map so that the noiseless *training* targets have mean 0 and std 1 (the
      same map applies to the test targets), then y = f(x) + noise N(0, 1): `noise` is the
      noise-to-signal std ratio. Targets (n, out_features) float32, loss "mse", num_classes None.
      Options: in_features [10], depth [3], width [64], activation ["tanh", a name of
      `jaxvg.nn.activations.ACTIVATIONS`], out_features [1], n_train [1000], n_test [1000], noise [0.0].
      Saxe et al., Exact solutions to the nonlinear dynamics of learning in deep linear networks,
      2014, https://arxiv.org/abs/1312.6120 (the teacher-student setting).
    - "digits": scikit-learn's bundled 8x8 handwritten digits (`sklearn.datasets.load_digits`,
      1797 images, 64 pixels valued 0..16, read from the package, no download), labels (n,) int32
      in [0, 10). Stratified split: in every class, round(test_fraction * n_class) examples go to
      the test set. Inputs standardised with the training mean and std of each pixel; pixels that
      are constant on the training set (std 0: three of them, e.g. the top-left corner) are only
      centred (divided by 1 instead of 0), so they are 0 in training.
      Options: test_fraction [0.2], in (0, 1). Alpaydin & Kaynak, UCI Optical Recognition of
      Handwritten Digits, 1998.
    - "mnist1d": MNIST-1D, 1-D signals of length 40 made from ten digit templates by the `mnist1d`
      package's procedural generator `mnist1d.data.make_dataset` (padding, scaling, translation,
      correlated and iid noise, shear; the package's default arguments), seeded with `seed`; it
      runs offline. The package's downloading/caching `get_dataset` (which writes a pickle into the
      working directory) is never called. num_samples // 10 examples per class, shuffled; inputs
      standardised by the package over the whole set (its convention); the last
      round(test_fraction * num_samples) examples form the test set (the package's own split for
      the defaults). Labels (n,) int32 in [0, 10). numpy's and `random`'s global RNG states,
      which the package reseeds, are restored afterwards.
      Options: num_samples [5000] (a positive multiple of 10), test_fraction [0.2], in (0, 1).
      Greydanus & Kobak, Scaling down deep learning with MNIST-1D, 2020/2024,
      https://arxiv.org/abs/2011.14439

    Args:
      name: one of `DATASETS`.
      seed: integer >= 0; every random choice (inputs, teacher weights, splits, noise) derives from it.
      **options: the set's options listed above.
    Returns:
      A `Dataset` (inputs (n, d) float32; labels as in the module table).
    Raises:
      ValueError: unknown `name`, an unknown option (the message lists the valid ones), or an
        option value out of range (named with its value), e.g. n_train <= 0 or noise < 0.

    Example:
      >>> ds = load("spirals", seed=1, n_train=8, n_test=4, noise=0.1)
      >>> ds.x_train.shape, ds.y_train.dtype, ds.num_classes, ds.out_features
      ((8, 2), dtype('int32'), 2, 2)
      >>> load("teacher", depth=5, out_features=3, n_train=16, n_test=4).y_test.shape
      (4, 3)
    """
    checks.choice("name", name, DATASETS)
    checks.nonnegative_int("seed", seed)
    defaults = _DEFAULTS[name]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for dataset {name!r}; valid options are {sorted(defaults)}."
        )
    kwargs = {**defaults, **options}
    return _BUILDERS[name](seed=int(seed), **kwargs)


def _rng(name: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SALT[name]])


def _xor(*, seed: int) -> Dataset:
    del seed  # the four points are fixed
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([[0], [1], [1], [0]], dtype=np.float32)
    return Dataset("xor", x, y, x, y, num_classes=2, loss="mse")


def _spirals(*, seed: int, n_train: int, n_test: int, noise: float, turns: float) -> Dataset:
    n_train = checks.positive_int("n_train", n_train)
    n_test = checks.positive_int("n_test", n_test)
    noise = checks.nonnegative("noise", noise)
    turns = checks.positive("turns", turns)
    rng = _rng("spirals", seed)

    def draw(n):
        labels = rng.permutation(np.arange(n) % 2)
        t = rng.uniform(0.0, 1.0, size=n)
        r = 0.1 + 0.9 * t
        angle = 2 * np.pi * turns * t + np.pi * labels
        x = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)
        x = x + noise * rng.standard_normal(size=(n, 2))
        return x.astype(np.float32), labels.astype(np.int32)

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return Dataset("spirals", x_train, y_train, x_test, y_test, num_classes=2, loss="cross_entropy")


def _teacher(
    *,
    seed: int,
    in_features: int,
    depth: int,
    width: int,
    activation: str | Callable,
    out_features: int,
    n_train: int,
    n_test: int,
    noise: float,
) -> Dataset:
    in_features = checks.positive_int("in_features", in_features)
    depth = checks.positive_int("depth", depth)
    width = checks.positive_int("width", width)
    out_features = checks.positive_int("out_features", out_features)
    n_train = checks.positive_int("n_train", n_train)
    n_test = checks.positive_int("n_test", n_test)
    noise = checks.nonnegative("noise", noise)
    phi = activations.get(activation)
    rng = _rng("teacher", seed)

    sizes = [in_features] + [width] * depth + [out_features]
    weights = [
        rng.standard_normal(size=(m, n)) / math.sqrt(m) for m, n in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    x_train = rng.standard_normal(size=(n_train, in_features)).astype(np.float32)
    x_test = rng.standard_normal(size=(n_test, in_features)).astype(np.float32)

    # float32 on the CPU device, so the targets do not depend on the accelerator.
    with jax.default_device(jax.devices("cpu")[0]):
        kernels = [jnp.asarray(w, dtype=jnp.float32) for w in weights]

        def teacher(x):
            h = jnp.asarray(x)
            for k in kernels[:-1]:
                h = phi(h @ k)
            return np.asarray(h @ kernels[-1], dtype=np.float64)

        f_train, f_test = teacher(x_train), teacher(x_test)
    mean = f_train.mean(axis=0)
    std = f_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # guard: a constant teacher output is only centred
    f_train, f_test = (f_train - mean) / std, (f_test - mean) / std
    y_train = f_train + noise * rng.standard_normal(size=f_train.shape)
    y_test = f_test + noise * rng.standard_normal(size=f_test.shape)
    return Dataset(
        "teacher",
        x_train,
        y_train.astype(np.float32),
        x_test,
        y_test.astype(np.float32),
        num_classes=None,
        loss="mse",
    )


def _check_test_fraction(test_fraction: Any) -> float:
    real = isinstance(test_fraction, int | float | np.integer | np.floating) and not isinstance(
        test_fraction, bool
    )
    if not real or not 0 < test_fraction < 1:
        raise ValueError(f"`test_fraction` must lie in (0, 1), got {test_fraction!r}.")
    return float(test_fraction)


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _digits(*, seed: int, test_fraction: float) -> Dataset:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    test_fraction = _check_test_fraction(test_fraction)
    bunch = load_digits()
    x, y = np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)
    rng = _rng("digits", seed)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test_c = _round_half_up(test_fraction * len(idx))
        test_idx.append(idx[:n_test_c])
        train_idx.append(idx[n_test_c:])
    train_idx = rng.permutation(np.concatenate(train_idx))
    test_idx = rng.permutation(np.concatenate(test_idx))
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise ValueError(
            f"`test_fraction`={test_fraction!r} leaves an empty {'test' if len(test_idx) == 0 else 'train'} "
            "set (the split rounds per class, classes have ~180 examples)."
        )
    x_train, x_test = x[train_idx], x[test_idx]
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # guard: constant pixels are only centred
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return Dataset(
        "digits",
        x_train.astype(np.float32),
        y[train_idx].astype(np.int32),
        x_test.astype(np.float32),
        y[test_idx].astype(np.int32),
        num_classes=10,
        loss="cross_entropy",
    )


@contextlib.contextmanager
def _global_rng_restored() -> Iterator[None]:
    """mnist1d reseeds numpy's and `random`'s global generators; leave the caller's untouched."""
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def _mnist1d(*, seed: int, num_samples: int, test_fraction: float) -> Dataset:
    num_samples = checks.positive_int("num_samples", num_samples)
    if num_samples % 10:
        raise ValueError(
            f"`num_samples` must be a positive multiple of 10 (ten classes), got {num_samples!r}."
        )
    test_fraction = _check_test_fraction(test_fraction)
    n_test = _round_half_up(test_fraction * num_samples)
    if not 0 < n_test < num_samples:
        raise ValueError(
            f"`test_fraction`={test_fraction!r} with `num_samples`={num_samples!r} leaves an empty split."
        )
    # Lazy: the package imports matplotlib.pyplot and requests. Only the generator is called.
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.train_split = 1.0  # everything in "x"; split below (same split as the package's for defaults)
    args.seed = seed
    with _global_rng_restored():
        generated = make_dataset(args)
    x = np.asarray(generated["x"], dtype=np.float32)
    y = np.asarray(generated["y"]).astype(np.int32)
    n_train = num_samples - n_test
    return Dataset(
        "mnist1d", x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes=10, loss="cross_entropy"
    )


_BUILDERS: dict[str, Callable[..., Dataset]] = {
    "xor": _xor,
    "spirals": _spirals,
    "teacher": _teacher,
    "digits": _digits,
    "mnist1d": _mnist1d,
}
