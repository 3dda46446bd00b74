"""Training: a validated `TrainConfig`, pure optax steps chunked under `lax.scan`, nets under `vmap`.

Modules: `optimizers` (optax transformations, schedules) -> `config` (`TrainConfig`) -> `stacking`
(stacks of nets, data-order keys) -> `step` (the pure step and chunk) -> `history` -> `trainer`
(`Trainer`: compile once, run many) -> `fit` (`fit`, `fit_stacked`); `training` gathers the public
names; `data` holds the datasets.
"""

from jaxvg.train import config as config
from jaxvg.train import data as data
from jaxvg.train import history as history
from jaxvg.train import optimizers as optimizers
from jaxvg.train import stacking as stacking
from jaxvg.train import step as step
from jaxvg.train import trainer as trainer
from jaxvg.train import training as training
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
