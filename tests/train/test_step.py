"""jaxvg.train.step: the pure single-net functions of the compiled program."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvg.nn import losses
from jaxvg.train import TrainConfig, Trainer, stacking, step

from .common import SPIRALS, factory


def _one_net(**config):
    """(spec, arrays, single-net state, model) for one net and a small config."""
    model = factory(nnx.Rngs(0))
    graphdef, params, rest = stacking.stack_models([model])
    cfg = TrainConfig(
        **{"loss": "cross_entropy", "optimizer": "sgd", "learning_rate": 0.1, "steps": 6, **config}
    )
    trainer = Trainer(graphdef, params, rest, SPIRALS, cfg)
    state = jax.tree.map(lambda a: a[0], trainer.init_state(params, rest))
    return trainer.spec, trainer.arrays, state, model


def test_minibatches_of_an_epoch_partition_a_permutation():
    spec, arrays, state, _ = _one_net(batch_size=32)
    key = jax.random.key(1)
    perm, seen = state.perm, []
    for t in range(3):  # 96 examples, 3 batches of 32 per epoch
        xb, yb, perm = step.batch_at(spec, key, perm, jnp.int32(t), arrays)
        idx = np.asarray(perm[32 * t : 32 * (t + 1)])
        np.testing.assert_array_equal(xb, SPIRALS.x_train[idx])
        np.testing.assert_array_equal(yb, SPIRALS.y_train[idx])
        seen.extend(idx.tolist())
    assert sorted(seen) == list(range(96))
    _, _, next_perm = step.batch_at(spec, key, perm, jnp.int32(3), arrays)  # epoch 2: a new permutation
    assert not np.array_equal(next_perm, perm)
    full_spec, arrays, state, _ = _one_net()
    xb, yb, _ = step.batch_at(full_spec, key, state.perm, jnp.int32(0), arrays)
    assert xb.shape == (96, 2) and yb.shape == (96,)


def test_train_step_is_plain_sgd_and_rejects_a_nonfinite_update():
    spec, arrays, state, model = _one_net()
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    params = spec.params_packing.unpack(state.params)  # the state carries them packed
    loss, grads = jax.value_and_grad(
        lambda p: losses.cross_entropy(nnx.merge(graphdef, p, rest)(SPIRALS.x_train), SPIRALS.y_train)
    )(params)
    key = jax.random.key(0)
    new, norms, value = step.train_step(spec, state, jnp.int32(0), jnp.float32(0.1), key, arrays, True)
    np.testing.assert_allclose(value, loss, rtol=1e-6)
    new_params = spec.params_packing.unpack(new.params)
    jax.tree.map(
        lambda a, p, g: np.testing.assert_allclose(a, p - 0.1 * g, rtol=1e-6, atol=1e-7),
        new_params,
        params,
        grads,
    )
    want = [np.log10(np.linalg.norm(grads["blocks"][i]["linear"]["kernel"][...])) for i in range(3)]
    np.testing.assert_allclose(norms, want, rtol=1e-5)
    assert not new.diverged and int(new.diverged_step) == -1
    # an infinite learning rate: finite gradients, non-finite new parameters -> rejected, flagged
    bad, _, _ = step.train_step(spec, state, jnp.int32(2), jnp.float32(jnp.inf), key, arrays, False)
    assert bad.diverged and int(bad.diverged_step) == 2 and not bad.bad_groups.any()
    jax.tree.map(np.testing.assert_array_equal, bad.params, state.params)
    # at t == steps the gradient is taken for the log and nothing is applied
    end, _, _ = step.train_step(spec, state, jnp.int32(spec.steps), jnp.float32(0.1), key, arrays, False)
    jax.tree.map(np.testing.assert_array_equal, end.params, state.params)


def test_kernel_norms_do_not_underflow():
    spec, _, state, _ = _one_net()
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-30), spec.params_packing.unpack(state.params))
    grads["blocks"][2]["linear"]["kernel"] = nnx.Param(jnp.zeros((8, 8)))
    norms = step.kernel_log10_norms(spec, spec.params_packing.pack(grads))
    np.testing.assert_allclose(norms[:2], [-30 + 0.5 * np.log10(16), -30 + 0.5 * np.log10(64)], rtol=1e-6)
    assert np.isneginf(norms[2])


def test_the_state_is_packed_by_leaf_shape():
    """A 3-block MLP (2 -> 8 -> 8 -> 8 -> 2) has 8 parameter leaves of 5 shapes: the state carries
    5 arrays, and unpacking gives back the module's parameters exactly."""
    spec, _, state, model = _one_net()
    assert len(jax.tree.leaves(nnx.state(model, nnx.Param))) == 8
    assert sorted(a.shape for a in state.params) == [(1, 2), (1, 2, 8), (1, 8, 2), (2, 8, 8), (3, 8)]
    for a, b in zip(
        jax.tree.leaves(spec.params_packing.unpack(state.params)),
        jax.tree.leaves(nnx.state(model, nnx.Param)),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_train_imports_measure_at_the_top():
    """The training monitor records `jaxvg.measure` results: the step module imports it eagerly."""
    import importlib

    import jaxvg

    assert importlib.import_module("jaxvg.train.step").measure is jaxvg.measure
