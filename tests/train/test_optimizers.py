"""jaxvg.train.optimizers: every optimizer of `fit` against optax's own, the schedules, bad names."""

import chex
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxvg
from jaxvg import train
from jaxvg.train import optimizers

from .common import X4, Y4, optax_reference, params_of


@pytest.mark.parametrize(
    "optimizer, reference, clip_norm",
    [
        ("gd", optax.sgd(0.3), None),
        ("momentum", optax.sgd(0.3, momentum=0.9), None),
        ("adam", optax.adam(0.3), None),
        ("adamw", optax.chain(optax.clip_by_global_norm(0.5), optax.adamw(0.3, weight_decay=1e-4)), 0.5),
    ],
)
def test_optimizers_match_optax(optimizer, reference, clip_norm):
    model = jaxvg.MLP(2, 4, 2, 1, activation="sigmoid", rngs=nnx.Rngs(0))
    out = train.fit(
        model,
        (X4, Y4),
        loss="mse",
        optimizer=optimizer,
        learning_rate=0.3,
        steps=6,
        clip_norm=clip_norm,
        log_every=3,
        progress=False,
    )
    expected = optax_reference(model, reference, 6)
    chex.assert_trees_all_close(params_of(out.models[0]), expected, rtol=1e-5, atol=1e-7)


def test_base_transform_times_learning_rate_is_optax():
    """One update of base_transform, scaled by -lr, is optax's update with the learning rate built in."""
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    grads = {"w": jnp.array([0.3, 0.1, -4.0])}
    for name, reference in [
        ("sgd", optax.sgd(0.1)),
        ("adam", optax.adam(0.1)),
        ("momentum", optax.sgd(0.1, 0.9)),
    ]:
        tx = optimizers.base_transform(name)
        u, _ = tx.update(grads, tx.init(params), params)
        want, _ = reference.update(grads, reference.init(params), params)
        np.testing.assert_allclose(-0.1 * u["w"], want["w"], rtol=1e-6)
    clipped = optimizers.base_transform("sgd", clip_norm=1.0)
    u, _ = clipped.update(grads, clipped.init(params), params)
    np.testing.assert_allclose(np.linalg.norm(u["w"]), 1.0, rtol=1e-6)


def test_learning_rate_schedules():
    f = train.learning_rate_factor
    np.testing.assert_allclose([f("constant", t, steps=10) for t in (0, 9)], [1, 1])
    np.testing.assert_allclose([f("cosine", t, steps=10) for t in (0, 5, 10)], [1, 0.5, 0], atol=1e-7)
    np.testing.assert_allclose([f("linear", t, steps=10) for t in (0, 5, 10)], [1, 0.5, 0], atol=1e-7)
    np.testing.assert_allclose(
        [f("cosine", t, steps=14, warmup_steps=4) for t in (0, 1, 3, 4, 9, 14)],
        [0.25, 0.5, 1, 1, 0.5, 0],
        atol=1e-6,
    )


def test_bad_names():
    with pytest.raises(ValueError, match=r"`optimizer` must be one of \[.*'adam'.*\], got 'adma'"):
        optimizers.base_transform("adma")
    with pytest.raises(ValueError, match=r"`clip_norm` must be a finite number > 0, got -1.0"):
        optimizers.base_transform("sgd", clip_norm=-1.0)
    with pytest.raises(ValueError, match=r"`schedule` must be one of .*'exp'"):
        optimizers.learning_rate_factor("exp", 0, steps=3)
