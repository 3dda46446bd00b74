"""Training: pure optax steps over NNX split state, chunks of steps under `lax.scan`, nets under `vmap`.

The public names of the training engine in one namespace (`from jaxvg.train import training`):

- `fit(model, data, config=None, *, seeds, key, **fields)` trains one NNX module, or one network per
  seed in one compiled, vmapped program; `fit_stacked(graphdef, params, rest, data, config=None, *,
  keys, **fields)` trains a stack of N networks of one architecture (`jaxvg.train.fit`).
- `TrainConfig`: the validated training configuration (`jaxvg.train.config`).
- `Trainer`: validate and compile once, then run many stacks of one shape; `evaluate_stacked`
  (`jaxvg.train.trainer`).
- `stack_models`, `unstack_models`, `init_stacked`, `data_key(s)`: stacks (`jaxvg.train.stacking`).
- `learning_rate_factor`, `OPTIMIZERS`, `SCHEDULES` (`jaxvg.train.optimizers`).

How a run is organised. The parameters are split once, `graphdef, params, rest = nnx.split(model,
nnx.Param, ...)`; one step is a pure function of (params, optimizer state, rest) that merges a copy
of the module inside `jax.value_and_grad`, takes the gradient w.r.t. `params` only, applies the
optax update and threads the updated `rest` (batch statistics, RNG counts) through
(`jaxvg.train.step`). `log_every` steps form one chunk under `lax.scan`; the chunk is vmapped over
nets and jitted once per configuration and shape. The host only runs between chunks: it advances
the tqdm bar, copies the logged values and checks the divergence flags. The logged keys are listed
in `jaxvg.train.history`.

Example:
  >>> import numpy as np
  >>> from flax import nnx
  >>> import jaxvg
  >>> from jaxvg.train import training
  >>> x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
  >>> y = np.array([[0], [1], [1], [0]], np.float32)
  >>> config = training.TrainConfig(loss="binary_cross_entropy", optimizer="adam", learning_rate=0.05,
  ...                               steps=300, log_every=100, progress=False)
  >>> result = training.fit(lambda rngs: jaxvg.MLP(2, 8, 1, 1, rngs=rngs), (x, y), config, seeds=[0, 1])
  >>> result.history["step"].tolist(), bool((result.history["train/accuracy"][:, -1] == 1.0).all())
  ([0, 100, 200, 300], True)
"""

from jaxvg.train.config import ON_NONFINITE as ON_NONFINITE
from jaxvg.train.config import TrainConfig as TrainConfig
from jaxvg.train.fit import FitResult as FitResult
from jaxvg.train.fit import fit as fit
from jaxvg.train.fit import fit_stacked as fit_stacked
from jaxvg.train.optimizers import OPTIMIZERS as OPTIMIZERS
from jaxvg.train.optimizers import SCHEDULES as SCHEDULES
from jaxvg.train.optimizers import learning_rate_factor as learning_rate_factor
from jaxvg.train.stacking import data_key as data_key
from jaxvg.train.stacking import data_keys as data_keys
from jaxvg.train.stacking import init_stacked as init_stacked
from jaxvg.train.stacking import stack_models as stack_models
from jaxvg.train.stacking import unstack_models as unstack_models
from jaxvg.train.trainer import MONITOR_BATCH as MONITOR_BATCH
from jaxvg.train.trainer import Run as Run
from jaxvg.train.trainer import StackedFit as StackedFit
from jaxvg.train.trainer import Trainer as Trainer
from jaxvg.train.trainer import evaluate_stacked as evaluate_stacked

__all__ = [
    "MONITOR_BATCH",
    "ON_NONFINITE",
    "OPTIMIZERS",
    "SCHEDULES",
    "FitResult",
    "Run",
    "StackedFit",
    "TrainConfig",
    "Trainer",
    "data_key",
    "data_keys",
    "evaluate_stacked",
    "fit",
    "fit_stacked",
    "init_stacked",
    "learning_rate_factor",
    "stack_models",
    "unstack_models",
]
