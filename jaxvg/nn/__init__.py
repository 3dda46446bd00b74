"""Models and their parts: one activation registry, initialisers, losses, `MLP`, `RNN`, `Transformer`, the block contract."""

from jaxvg.nn import activations as activations
from jaxvg.nn import cells as cells
from jaxvg.nn import contracts as contracts
from jaxvg.nn import initializers as initializers
from jaxvg.nn import losses as losses
from jaxvg.nn import models as models
from jaxvg.nn import rnn as rnn
from jaxvg.nn import transformer as transformer
from jaxvg.nn.contracts import BlockModel as BlockModel
from jaxvg.nn.contracts import RecurrentModel as RecurrentModel
from jaxvg.nn.models import MLP as MLP
from jaxvg.nn.rnn import RNN as RNN
from jaxvg.nn.transformer import Transformer as Transformer
