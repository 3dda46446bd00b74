"""jaxvg: measure, predict and cure vanishing and exploding gradients in deep networks, in JAX."""

from jaxvg import activations, initializers, losses, models
from jaxvg.models import MLP as MLP

__version__ = "0.1.0"
