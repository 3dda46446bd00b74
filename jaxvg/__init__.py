"""jaxvg: measure, predict and cure vanishing and exploding gradients in deep networks, in JAX.

Submodules: `activations`, `initializers`, `losses` -> `models`, `data`, `theory` -> `analysis` ->
`training` -> `results`, `cli`, `plotting`; `sweeps` and `distributed` for scale. Headline names are
re-exported here.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from flax import nnx
  >>> import jaxvg
  >>> model = jaxvg.MLP(8, 32, 20, 1, activation="sigmoid", rngs=nnx.Rngs(0))
  >>> flow = jaxvg.gradient_flow(model, jnp.ones((4, 8)), jnp.zeros((4, 1)))
  >>> bool(flow.vanishing_decades > 5)
  True
"""

from jaxvg import activations as activations
from jaxvg import analysis as analysis
from jaxvg import cli as cli
from jaxvg import data as data
from jaxvg import distributed as distributed
from jaxvg import initializers as initializers
from jaxvg import losses as losses
from jaxvg import models as models
from jaxvg import plotting as plotting
from jaxvg import results as results
from jaxvg import sweeps as sweeps
from jaxvg import theory as theory
from jaxvg import training as training
from jaxvg.analysis import GradientFlow as GradientFlow
from jaxvg.analysis import JacobianNorms as JacobianNorms
from jaxvg.analysis import JacobianSpectrum as JacobianSpectrum
from jaxvg.analysis import flow_table as flow_table
from jaxvg.analysis import gradient_flow as gradient_flow
from jaxvg.analysis import jacobian_norms as jacobian_norms
from jaxvg.analysis import jacobian_spectrum as jacobian_spectrum
from jaxvg.analysis import tap as tap
from jaxvg.analysis import tapped_gradients as tapped_gradients
from jaxvg.models import MLP as MLP
from jaxvg.training import FitResult as FitResult
from jaxvg.training import fit as fit

__version__ = "0.1.0"
