"""Optimizers and learning-rate schedules, with the learning rate kept out of the compiled program.

An optimizer here is its learning-rate-free optax transformation, `base_transform(optimizer)`:
identity for "gd"/"sgd", `optax.trace` for "momentum", `optax.scale_by_adam` for "adam", plus
`optax.add_decayed_weights` for "adamw", after `optax.clip_by_global_norm` when `clip_norm` is set.
The training step multiplies its output u_t by -learning_rate * learning_rate_factor(t), which is
exactly what `optax.scale_by_learning_rate` does:

    params_{t+1} = params_t - learning_rate * schedule(t) * u_t.

So the learning rate is an argument of the compiled step, not a constant in it: nets with different
learning rates train in one program, and a new learning rate does not compile again.

References:
  Robbins & Monro, A Stochastic Approximation Method, 1951 (SGD).
  Polyak, Some methods of speeding up the convergence of iteration methods, 1964 (heavy ball).
  Kingma & Ba, Adam: A Method for Stochastic Optimization, 2014, https://arxiv.org/abs/1412.6980
  Loshchilov & Hutter, Decoupled Weight Decay Regularization (AdamW), 2017,
  https://arxiv.org/abs/1711.05101
  Loshchilov & Hutter, SGDR: Stochastic Gradient Descent with Warm Restarts (cosine schedule), 2016,
  https://arxiv.org/abs/1608.03983
  Pascanu et al., On the difficulty of training recurrent neural networks (gradient clipping), 2012,
  https://arxiv.org/abs/1211.5063

Example:
  >>> import jax.numpy as jnp
  >>> from jaxvg.train import optimizers
  >>> tx = optimizers.base_transform("momentum")
  >>> params = {"w": jnp.ones(2)}
  >>> u, _ = tx.update({"w": jnp.full(2, 0.5)}, tx.init(params), params)
  >>> u["w"].tolist()
  [0.5, 0.5]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxvg import checks

__all__ = [
    "ADAMW_WEIGHT_DECAY",
    "MOMENTUM",
    "OPTIMIZERS",
    "SCHEDULES",
    "base_transform",
    "learning_rate_factor",
]

OPTIMIZERS = ("gd", "sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "linear")
MOMENTUM = 0.9  # "momentum": heavy-ball coefficient, as optax.sgd(momentum=0.9)
ADAMW_WEIGHT_DECAY = 1e-4  # "adamw": optax.adamw's default decoupled weight decay (times the lr)


def base_transform(optimizer: str, clip_norm: float | None = None) -> optax.GradientTransformation:
    """The learning-rate-free optax transformation of `optimizer` (the step scales its output).

    Args:
      optimizer: one of `OPTIMIZERS`: "gd" and "sgd" (identity), "momentum" (heavy ball, 0.9),
        "adam", "adamw" (Adam plus decoupled weight decay 1e-4, multiplied by the learning rate
        like `optax.adamw`).
      clip_norm: if set (> 0), gradients are first clipped to this global L2 norm.
    Returns:
      An `optax.GradientTransformation` whose updates, times -learning_rate * schedule(t), are the
      parameter increments.
    Raises:
      ValueError: unknown optimizer, or a clip_norm that is not a finite number > 0.
    """
    checks.choice("optimizer", optimizer, OPTIMIZERS)
    if optimizer in ("gd", "sgd"):
        tx = optax.identity()
    elif optimizer == "momentum":
        tx = optax.trace(decay=MOMENTUM, nesterov=False)
    elif optimizer == "adam":
        tx = optax.scale_by_adam()
    else:
        tx = optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(ADAMW_WEIGHT_DECAY))
    if clip_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(checks.positive("clip_norm", clip_norm)), tx)
    return tx


def learning_rate_factor(schedule: str, t: jax.Array, *, steps: int, warmup_steps: int = 0) -> jax.Array:
    """The schedule's multiplier of the peak learning rate at step t (0-based), in [0, 1].

    Warmup (t < W = warmup_steps): (t + 1) / W, reaching 1 at t = W - 1. Then, with
    u = (t - W) / (steps - W): "constant" 1; "cosine" (1 + cos(pi u)) / 2 (Loshchilov & Hutter
    2016, decaying to 0 at the end); "linear" 1 - u.

    Args:
      schedule: one of `SCHEDULES`.
      t: step index, any shape (traced or not).
      steps: total optimizer steps.
      warmup_steps: linear warmup steps before the schedule.
    Returns:
      The factor, shape of `t`, in the default float dtype.

    Example:
      >>> from jaxvg.train import optimizers
      >>> [round(float(optimizers.learning_rate_factor("cosine", t, steps=10)), 3) for t in (0, 5, 10)]
      [1.0, 0.5, 0.0]
    """
    checks.choice("schedule", schedule, SCHEDULES)
    t = jnp.asarray(t, jnp.result_type(float))
    decay = max(steps - warmup_steps, 1)
    u = jnp.clip((t - warmup_steps) / decay, 0.0, 1.0)
    if schedule == "cosine":
        f = 0.5 * (1.0 + jnp.cos(jnp.pi * u))
    elif schedule == "linear":
        f = 1.0 - u
    else:
        f = jnp.ones_like(u)
    if warmup_steps > 0:
        f = jnp.where(t < warmup_steps, (t + 1.0) / warmup_steps, f)
    return f
