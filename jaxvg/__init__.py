"""jaxvg: measure, predict and cure vanishing and exploding gradients in deep networks, in JAX.

Sub-packages, imported one way: `nn` (activations, initializers, losses, models) -> `measure`
(exact per-layer gradient flow, Jacobians, taps) and `theory` (mean field) -> `train` (losses to
optimizers, fit, data) -> `scale` (sweeps, devices, memory, multi-process) -> `report` (results, cli,
plotting). Headline names are re-exported here.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from flax import nnx
  >>> import jaxvg
  >>> model = jaxvg.MLP(8, 32, 20, 1, activation="sigmoid", rngs=nnx.Rngs(0))
  >>> flow = jaxvg.gradient_flow(model, jnp.ones((4, 8)), jnp.zeros((4, 1)))
  >>> bool(flow.vanishing_decades > 5)
  True
"""

from jaxvg import checks as checks
from jaxvg import measure as measure
from jaxvg import nn as nn
from jaxvg import report as report
from jaxvg import scale as scale
from jaxvg import theory as theory
from jaxvg import train as train
from jaxvg.measure import GradientFlow as GradientFlow
from jaxvg.measure import JacobianNorms as JacobianNorms
from jaxvg.measure import JacobianSpectrum as JacobianSpectrum
from jaxvg.measure import SignalFlow as SignalFlow
from jaxvg.measure import TimeFlow as TimeFlow
from jaxvg.measure import flow_table as flow_table
from jaxvg.measure import gradient_flow as gradient_flow
from jaxvg.measure import jacobian_norms as jacobian_norms
from jaxvg.measure import jacobian_spectrum as jacobian_spectrum
from jaxvg.measure import signal_propagation as signal_propagation
from jaxvg.measure import tap as tap
from jaxvg.measure import tapped_gradients as tapped_gradients
from jaxvg.measure import time_flow as time_flow
from jaxvg.nn import MLP as MLP
from jaxvg.nn import RNN as RNN
from jaxvg.nn import Transformer as Transformer
from jaxvg.train import FitResult as FitResult
from jaxvg.train import TrainConfig as TrainConfig
from jaxvg.train import Trainer as Trainer
from jaxvg.train import fit as fit
from jaxvg.train import fit_stacked as fit_stacked
from jaxvg.train import stack_models as stack_models

__version__ = "0.1.0"
