"""Training: jitted optax steps from `jax.grad`, chunks under `lax.scan`, vmapped seeds; datasets."""

from jaxvg.train import data as data
from jaxvg.train import training as training
from jaxvg.train.training import ON_NONFINITE as ON_NONFINITE
from jaxvg.train.training import OPTIMIZERS as OPTIMIZERS
from jaxvg.train.training import SCHEDULES as SCHEDULES
from jaxvg.train.training import FitResult as FitResult
from jaxvg.train.training import StackedFit as StackedFit
from jaxvg.train.training import fit as fit
from jaxvg.train.training import fit_stacked as fit_stacked
from jaxvg.train.training import learning_rate_factor as learning_rate_factor
from jaxvg.train.training import stack_models as stack_models
from jaxvg.train.training import unstack_models as unstack_models
