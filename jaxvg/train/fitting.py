"""`fit` and `fit_stacked`: train one NNX module, one per seed, or a stack of N nets in one program.

- `fit(model, data, config=None, *, seeds=None, key=0, **fields)` trains one module, or, with
  `seeds=[...]` and a factory `rngs -> module`, one network per seed, all in one vmapped program.
- `fit_stacked(graphdef, params, rest, data, config=None, *, keys, **fields)` is the engine
  underneath: N networks that share one `graphdef` (same architecture) and carry a leading nets axis
  on their `nnx.Param` state `params` and on everything else, `rest`. The nets may differ in
  initialisation (a sigma_w2 grid), depth (`MLP(..., max_depth=...)`), data order (`keys`) and
  learning rate (one per net).

Both take a `TrainConfig` or its fields as keywords. The history is described in
`jaxvg.train.history`; `Trainer` separates validation, compilation and the run, for callers that
train many stacks of one shape.

References:
  Robbins & Monro, A Stochastic Approximation Method, 1951 (SGD); the optimizers' papers are listed
  in `jaxvg.train.optimizers`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvg.train import history as history_lib
from jaxvg.train import stacking
from jaxvg.train.config import TrainConfig, resolve
from jaxvg.train.trainer import StackedFit, Trainer

__all__ = ["FitResult", "StackedFit", "fit", "fit_stacked"]


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What `fit` returns.

    Attributes:
      models: trained NNX modules, one per seed (one element without `seeds`). The input model is not
        modified. A diverged seed's module holds its last finite parameters.
      history: dict of numpy arrays (`jaxvg.train.history`); a leading seeds axis when `seeds` was
        given.
    """

    models: list[nnx.Module]
    history: dict[str, Any]


def fit(
    model: nnx.Module | Callable[[nnx.Rngs], nnx.Module],
    data: Any,
    config: TrainConfig | None = None,
    *,
    seeds: Sequence[int] | None = None,
    key: int | jax.Array = 0,
    **fields: Any,
) -> FitResult:
    """Train an NNX model (or one model per seed, all in one vmapped program) with optax.

    Steps run in chunks of `log_every` under `lax.scan`; the chunk is jitted once per configuration
    and shape (a new learning rate or seed does not compile again).

    Args:
      model: an NNX module (without `seeds`) or, with `seeds`, a factory `rngs -> module` called with
        `nnx.Rngs(seed)` (its init and dropout streams then derive from the seed). Any module whose
        output the loss accepts; per-block logs need the block-model contract (`blocks`, each with a
        kernel, `jaxvg.nn.contracts`), other models log an empty (..., T, 0) kernel-gradient array.
      data: a `jaxvg.train.data.Dataset` (train and test sets), or a tuple `(x, y)`: training set only.
        x has shape (n, ...) with the model's input features trailing; y the labels for the loss.
      config: a `TrainConfig`; or None and its fields as keywords (`loss`, `optimizer`,
        `learning_rate`, `steps`, `batch_size`, `schedule`, `warmup_steps`, `clip_norm`,
        `log_every`, `monitor_every`, `on_nonfinite`, `progress`).
      seeds: distinct ints in [0, 2**32); one network per seed, trained together under `vmap`. Equal
        to training each seed alone (`fit(factory(nnx.Rngs(s)), ..., key=s)`) to float32 rounding.
      key: without `seeds`: the data-order seed (int) or PRNG key; `key=s` reproduces seed s of a
        `seeds` run. Ignored with `seeds`.
      **fields: `TrainConfig` fields, when `config` is None (or equal to its values).

    Returns:
      `FitResult(models, history)`. Without `seeds`, history arrays have no seeds axis and
      `models` has one element.

    Raises:
      ValueError: any `TrainConfig` error; NaN/Inf in the data; data features that do not fit the
        model's `in_features`; labels that do not fit the loss; a batch size outside [1, n]; "gd"
        with a minibatch; duplicate or negative seeds; a keyword that conflicts with `config`.
      TypeError: `model` is not a module (without seeds) or not callable (with seeds); an unknown
        keyword.
      FloatingPointError: a non-finite loss with `on_nonfinite="raise"` (`err.history`, `err.step`,
        `err.seed`, `err.block`).

    Example:
      >>> import numpy as np
      >>> from flax import nnx
      >>> import jaxvg
      >>> x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
      >>> y = np.array([[0], [1], [1], [0]], np.float32)
      >>> result = jaxvg.fit(
      ...     lambda rngs: jaxvg.MLP(2, 8, 1, 1, activation="tanh", rngs=rngs), (x, y),
      ...     loss="binary_cross_entropy", optimizer="adam", learning_rate=0.05, steps=300,
      ...     log_every=100, seeds=[0, 1], progress=False)
      >>> result.history["train/loss"].shape, result.history["log10_kernel_grad"].shape
      ((2, 4), (2, 4, 1))
      >>> bool((result.history["train/accuracy"][:, -1] == 1.0).all())
      True
    """
    config = resolve(config, fields, where="fit")
    if seeds is None:
        if not isinstance(model, nnx.Module):
            raise TypeError(
                f"`model` must be an nnx.Module when `seeds` is None, got {type(model).__name__} "
                "(pass seeds=[...] to call a factory rngs -> module)."
            )
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        params, rest = jax.tree.map(lambda a: jnp.asarray(a)[None], (params, rest))
        keys = stacking.data_key(key)[None]
        names = ["the model"]
    else:
        seeds = stacking.check_seeds(seeds)
        if isinstance(model, nnx.Module) or not callable(model):
            raise TypeError(
                f"with `seeds`, `model` must be a factory rngs -> module, got {type(model).__name__}."
            )
        graphdef, params, rest = stacking.init_stacked(model, seeds)
        keys = stacking.data_keys(seeds)
        names = [f"seed {s}" for s in seeds]
    try:
        out = fit_stacked(graphdef, params, rest, data, config, keys=keys, names=names)
    except FloatingPointError as err:
        if seeds is None and hasattr(err, "history"):
            err.history = history_lib.squeeze(err.history)
        raise
    models = stacking.unstack_models(graphdef, out.params, out.rest)
    history = out.history if seeds is not None else history_lib.squeeze(out.history)
    return FitResult(models=models, history=history)


def fit_stacked(
    graphdef: nnx.GraphDef,
    params: Any,
    rest: Any,
    data: Any,
    config: TrainConfig | None = None,
    *,
    keys: jax.Array,
    names: Sequence[str] | None = None,
    **fields: Any,
) -> StackedFit:
    """Train N networks that share `graphdef`, in one vmapped, scanned, jitted program.

    Build the stack with `stack_models([...])` (or `init_stacked(factory, seeds)`); every net may
    differ in its parameters, its `rest` state (e.g. the active depth of a depth-masked `MLP`), its
    data-order key and its learning rate; everything else (architecture, data, optimizer, schedule
    shape, steps) is shared. Equal to `Trainer(graphdef, params, rest, data, config,
    names=names).fit(params, rest, keys)`.

    Args:
      graphdef: the shared `nnx.GraphDef` from `nnx.split(model, nnx.Param, ...)` (train mode).
      params: the nets' `nnx.Param` state, every leaf with a leading nets axis N.
      rest: the remaining state (`...` filter) with the same leading axis (may be empty).
      data: as in `fit` (a Dataset or an (x, y) tuple); shared by all nets.
      config: a `TrainConfig` (its `learning_rate` a float for all nets or N floats), or None and
        its fields as keywords.
      keys: (N,) PRNG keys (`jax.random.key`) for each net's minibatch order; `fit` uses
        `data_keys(seeds)`.
      names: how error messages name each net (default "net i").
      **fields: `TrainConfig` fields, when `config` is None (or equal to its values).

    Returns:
      `StackedFit(params, rest, history)`: the trained state (leading axis N) and the history,
      every per-net entry with a leading axis N ("step" and "monitor_step" have none).

    Raises:
      ValueError, TypeError, FloatingPointError: as `fit`; also leaves without a common leading
        axis, or `keys`/`learning_rate` whose length differs from it.
    """
    config = resolve(config, fields, where="fit_stacked")
    return Trainer(graphdef, params, rest, data, config, names=names).fit(params, rest, keys)
