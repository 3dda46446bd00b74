"""Training: a validated `TrainConfig`, pure optax steps chunked under `lax.scan`, nets under `vmap`.

Modules: `optimizers` (optax transformations, schedules) -> `config` (`TrainConfig`) -> `stacking`
(stacks of nets, data-order keys) -> `step` (the pure step and chunk) -> `history` -> `statics`
(what the trainer reads from a model's structure) -> `trainer`
(`Trainer`: compile once, run many) -> `fitting` (`fit`, `fit_stacked`); `data` holds the datasets.

Example:
  >>> import numpy as np
  >>> from flax import nnx
  >>> import jaxvg
  >>> from jaxvg import train
  >>> x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
  >>> y = np.array([[0], [1], [1], [0]], np.float32)
  >>> config = train.TrainConfig(loss="binary_cross_entropy", optimizer="adam", learning_rate=0.05,
  ...                               steps=300, log_every=100, progress=False)
  >>> result = train.fit(lambda rngs: jaxvg.MLP(2, 8, 1, 1, rngs=rngs), (x, y), config, seeds=[0, 1])
  >>> result.history["step"].tolist(), bool((result.history["train/accuracy"][:, -1] == 1.0).all())
  ([0, 100, 200, 300], True)
"""

from jaxvg.train import config as config
from jaxvg.train import data as data
from jaxvg.train import fitting as fitting
from jaxvg.train import history as history
from jaxvg.train import optimizers as optimizers
from jaxvg.train import stacking as stacking
from jaxvg.train import statics as statics
from jaxvg.train import step as step
from jaxvg.train import trainer as trainer
from jaxvg.train.config import ON_NONFINITE as ON_NONFINITE
from jaxvg.train.config import TrainConfig as TrainConfig
from jaxvg.train.fitting import FitResult as FitResult
from jaxvg.train.fitting import fit as fit
from jaxvg.train.fitting import fit_stacked as fit_stacked
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
