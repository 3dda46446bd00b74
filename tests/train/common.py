"""Shared data and models of the training tests (small shapes: most of the time is compilation)."""

import jax
import numpy as np
import optax
from flax import nnx

import jaxvg
from jaxvg.nn import losses
from jaxvg.train import data

SPIRALS = data.load("spirals", seed=0, n_train=96, n_test=32, noise=0.1)
X4 = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
Y4 = np.array([[0], [1], [1], [0]], np.float32)
COMMON = dict(optimizer="sgd", learning_rate=0.1, steps=24, batch_size=16, log_every=8, progress=False)


def factory(rngs, **kw):
    """A 3-block tanh MLP for the 2-feature, 2-class spirals."""
    return jaxvg.MLP(2, 8, 3, 2, activation="tanh", rngs=rngs, **kw)


def relu_factory(rngs):
    return jaxvg.MLP(2, 8, 3, 2, activation="relu", init="he_normal", rngs=rngs)


def params_of(model):
    return nnx.state(model, nnx.Param)


def optax_reference(model, opt, steps, loss="mse", x=X4, y=Y4):
    """Tutorial-style full-batch optax loop (nnx.Optimizer would do the same); the final params."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    loss_fn = losses.get(loss)

    def objective(p):
        return loss_fn(nnx.merge(graphdef, p, rest, copy=True)(x), y)

    state = opt.init(params)
    for _ in range(steps):
        grads = jax.grad(objective)(params)
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params
