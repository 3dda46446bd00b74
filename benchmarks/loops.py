"""The training loops and data that the `training` and `seeds` suites time (not a suite itself).

Every loop trains the same MLP (tanh, LeCun normal; `width` units x `depth` blocks, a linear head)
on the same full batch of a teacher-student regression set (noisy labels, MSE) with Adam: the
plain-JAX floor (`plain_scan_program`) and the Flax tutorials' per-step `nnx.jit` loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

import jaxvg
from jaxvg.nn import losses
from jaxvg.train import data

LOSS = "mse"


def matmul_flops(sizes: Sequence[int], batch: int) -> dict[str, int]:
    """Matmul FLOPs of one training step of an MLP with layer sizes `sizes` (input, ..., output).

    forward = 2 B sum_l fan_in_l fan_out_l; backward = 2 x forward (input and weight gradients);
    step = forward + backward = 6 B sum fan_in fan_out.
    """
    macs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    forward = 2 * batch * macs
    return {"forward": forward, "backward": 2 * forward, "step": 3 * forward}


def layer_sizes(config: Any) -> list[int]:
    """[in_features, width x depth, out_features] of the benchmarked MLP."""
    return [config.in_features] + [config.width] * config.depth + [config.out_features]


def shapes(config: Any) -> dict[str, Any]:
    """What a training suite's JSON records of the problem: layer sizes, batch, dtype, the matmul
    FLOPs of one step, loss, optimizer and data."""
    flops = matmul_flops(layer_sizes(config), config.batch)
    return {
        "layer_sizes": layer_sizes(config),
        "batch": config.batch,
        "dtype": "float32",
        "flop_per_step": flops["step"],
        "flop_forward": flops["forward"],
        "loss": LOSS,
        "optimizer": "adam",
        "data": f"teacher regression, {config.batch} examples, full batch every step",
    }


def make_model(config: Any, rngs: nnx.Rngs) -> jaxvg.MLP:
    """The benchmarked MLP: `config.in_features` -> `config.depth` x `config.width` -> `config.out_features`."""
    return jaxvg.MLP(config.in_features, config.width, config.depth, config.out_features, rngs=rngs)


def teacher_batch(config: Any) -> tuple[np.ndarray, np.ndarray]:
    """`config.batch` examples of the teacher-student regression set, noisy labels (float32 x and y)."""
    ds = data.load(
        "teacher",
        seed=config.seed,
        in_features=config.in_features,
        out_features=config.out_features,
        n_train=config.batch,
        n_test=1,
        noise=1.0,  # unit-variance label noise: the loss stays away from 0 (and from subnormals)
    )
    return np.asarray(ds.x_train), np.asarray(ds.y_train)


def plain_scan_program(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, steps: int) -> Callable:
    """The floor: `run(params, opt_state, rest, x, y) -> (params, opt_state, final_loss)`, `steps`
    plain steps under `lax.scan` (value_and_grad through `nnx.merge`, optax update), not jitted."""
    loss_fn = losses.get(LOSS)

    def loss_of(params, rest, x, y):
        return loss_fn(nnx.merge(graphdef, params, rest)(x), y)

    def run(params, opt_state, rest, x, y):
        def step(carry, _):
            p, s = carry
            loss, grads = jax.value_and_grad(loss_of)(p, rest, x, y)
            updates, s = tx.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), loss

        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), None, length=steps)
        return params, opt_state, loss_of(params, rest, x, y)

    return run


def _nnx_loss(model, x, y):
    return losses.get(LOSS)(model(x), y)


@nnx.jit
def nnx_train_step(model: nnx.Module, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> jax.Array:
    """The Flax tutorials' step: `nnx.value_and_grad`, then `optimizer.update(model, grads)` in place."""
    loss, grads = nnx.value_and_grad(_nnx_loss)(model, x, y)
    optimizer.update(model, grads)
    return loss


def nnx_loop(
    model: nnx.Module, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array, steps: int
) -> jax.Array:
    """`steps` calls of the per-step `nnx.jit` step, training `model` in place; blocks on the last loss."""
    loss = None
    for _ in range(steps):
        loss = nnx_train_step(model, optimizer, x, y)
    return jax.block_until_ready(loss)


@nnx.jit
def nnx_loss(model: nnx.Module, x: jax.Array, y: jax.Array) -> jax.Array:
    """The training loss of `model` on (x, y), jitted (evaluated outside the timed loops)."""
    return _nnx_loss(model, x, y)


@functools.lru_cache(maxsize=8)
def shared_adam(learning_rate: float) -> optax.GradientTransformation:
    """One `optax.adam(learning_rate)` object per learning rate, shared by every per-step loop."""
    return optax.adam(learning_rate)


def nnx_setup(model: nnx.Module, tx: optax.GradientTransformation) -> nnx.Optimizer:
    """The tutorials' optimizer, `nnx.Optimizer(model, tx, wrt=nnx.Param)`.

    Pass one `tx` object to every model: the transformation is static in the optimizer's graph, and
    a fresh `optax.adam(...)` per model (another closure, unequal) makes `nnx.jit` compile the step
    again for every model.
    """
    return nnx.Optimizer(model, tx, wrt=nnx.Param)
