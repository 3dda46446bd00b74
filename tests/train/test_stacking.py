"""jaxvg.train.stacking: stack/unstack, vmapped init, data keys; grids of sigma_w2 and depth that
stack and train in one program, equal to separate runs."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxvg
from jaxvg import train
from jaxvg.train import TrainConfig, stacking, step

from .common import COMMON, SPIRALS, X4, factory


def _leaves_as_numpy(tree):
    """Leaves as numpy arrays (PRNG keys as their key data), to compare bit for bit."""

    def one(a):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            return np.asarray(jax.random.key_data(a))
        return np.asarray(a)

    return [one(a) for a in jax.tree.leaves(tree)]


def test_unstack_models_inverts_stack_models_bitwise():
    """unstack_models (one host copy per leaf, numpy slices put back) gives net i's state exactly,
    jax arrays of the same dtypes, PRNG key state (dropout) and batch statistics included."""
    bn_drop = lambda rngs: factory(rngs, norm="batch", dropout=0.1)  # noqa: E731
    originals = [bn_drop(nnx.Rngs(s)) for s in (4, 1, 9)]
    graphdef, params, rest = train.stack_models(originals)
    models = train.unstack_models(graphdef, params, rest)
    assert len(models) == 3
    for original, model in zip(originals, models, strict=True):
        want, got = nnx.state(original), nnx.state(model)
        assert jax.tree.structure(want) == jax.tree.structure(got)
        for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
            assert isinstance(b, jax.Array) and a.dtype == b.dtype and a.shape == b.shape
        for a, b in zip(_leaves_as_numpy(want), _leaves_as_numpy(got), strict=True):
            np.testing.assert_array_equal(a, b)
    # the unstacked modules work and are independent of each other
    np.testing.assert_array_equal(
        nnx.view(models[1], deterministic=True, use_running_average=True)(X4),
        nnx.view(originals[1], deterministic=True, use_running_average=True)(X4),
    )


def test_stack_models_errors():
    with pytest.raises(ValueError, match=r"`models` must hold at least one module"):
        stacking.stack_models([])
    nets = [
        jaxvg.MLP(2, 4, 2, 1, rngs=nnx.Rngs(0)),
        jaxvg.MLP(2, 4, 2, 1, activation="relu", rngs=nnx.Rngs(0)),
    ]
    with pytest.raises(ValueError, match=r"`models\[1\]` has a different graphdef"):
        stacking.stack_models(nets)
    with pytest.raises(ValueError, match=r"`models\[1\]` has a different graphdef"):
        stacking.stack_models(
            [jaxvg.MLP(2, 4, 2, 1, rngs=nnx.Rngs(0)), jaxvg.MLP(2, 4, 3, 1, rngs=nnx.Rngs(0))]
        )


def test_init_stacked_equals_stacking_the_factory_modules():
    graphdef, params, rest = stacking.init_stacked(factory, [3, 8])
    g2, p2, r2 = stacking.stack_models([factory(nnx.Rngs(3)), factory(nnx.Rngs(8))])
    assert graphdef == g2
    chex.assert_trees_all_close((params, rest), (p2, r2), rtol=1e-6, atol=1e-7)
    keys = jax.random.split(jax.random.key(0), 2)
    _, from_keys, _ = stacking.init_stacked(factory, keys)
    np.testing.assert_array_equal(
        from_keys["head"]["kernel"][1],
        nnx.state(factory(nnx.Rngs(keys[1])), nnx.Param)["head"]["kernel"][...],
    )


def test_data_keys():
    keys = stacking.data_keys([4, 0])
    assert keys.shape == (2,)
    for k, s in zip(keys, (4, 0), strict=True):
        np.testing.assert_array_equal(jax.random.key_data(k), jax.random.key_data(stacking.data_key(s)))
    base = jax.random.key(9)
    np.testing.assert_array_equal(
        jax.random.key_data(stacking.data_key(base)),
        jax.random.key_data(jax.random.fold_in(base, stacking.DATA_SALT)),
    )
    with pytest.raises(ValueError, match=r"`key` must be one PRNG key \(shape \(\)\)"):
        stacking.data_key(jax.random.split(base, 2))
    with pytest.raises(ValueError, match=r"`seeds` must be distinct"):
        stacking.data_keys([1, 1])


SIGMA_W2 = (0.5, 1.0, 1.5, 2.0)


def _sigma_net(sigma_w2, depth=3, **kw):
    return jaxvg.MLP(
        2,
        8,
        depth,
        2,
        activation="tanh",
        init="gaussian",
        sigma_w2=sigma_w2,
        sigma_b2=0.05,
        rngs=nnx.Rngs(0),
        **kw,
    )


def test_sigma_w2_grid_stacks_and_trains_in_one_program():
    """MLPs that differ only in sigma_w2 share a graphdef: the grid trains in one program, and each
    net's result equals a separate `fit` of that net to float32 rounding."""
    nets = [_sigma_net(s) for s in SIGMA_W2]
    graphdef, params, rest = train.stack_models(nets)
    # common random numbers: the kernels are one draw scaled by sqrt(sigma_w2)
    k = params["blocks"][1]["linear"]["kernel"]
    np.testing.assert_allclose(k[3] / np.sqrt(2.0), k[1], rtol=1e-6)
    config = TrainConfig(loss="cross_entropy", **COMMON)
    keys = stacking.data_keys([0, 1, 2, 3])
    step.compiled_chunk.cache_clear()
    grid = train.fit_stacked(graphdef, params, rest, SPIRALS, config, keys=keys)
    assert step.compiled_chunk.cache_info().misses == 1  # one program for the grid
    final = grid.history["train/loss"][:, -1]
    assert len(set(np.round(final, 4))) == len(SIGMA_W2)  # sigma_w2 changes the training
    for i, (net, s) in enumerate(zip(nets, SIGMA_W2, strict=True)):
        alone = train.fit(net, SPIRALS, config, key=i)
        np.testing.assert_allclose(
            grid.history["train/loss"][i], alone.history["train/loss"], rtol=1e-5, err_msg=s
        )
        chex.assert_trees_all_close(
            jax.tree.map(lambda a, i=i: a[i], grid.params),
            nnx.state(alone.models[0], nnx.Param),
            rtol=1e-5,
            atol=1e-6,
        )


def test_sigma_w2_by_depth_grid_with_a_depth_mask_is_one_program():
    """Nets of depths 1, 3 and 6 padded to max_depth 6 (and scanned): one graphdef, one compiled
    program; each net trains like the unpadded net of its depth, and its padded blocks stay put."""
    depths = (1, 3, 6)
    cells = [(s, d) for s in (1.0, 2.0) for d in depths]
    nets = [_sigma_net(s, d, max_depth=6, scan_blocks=True) for s, d in cells]
    graphdef, params, rest = train.stack_models(nets)
    np.testing.assert_array_equal(rest["active_blocks"], [d for _, d in cells])
    config = TrainConfig(loss="cross_entropy", on_nonfinite="record", **COMMON)
    keys = stacking.data_keys(range(len(cells)))
    step.compiled_chunk.cache_clear()
    grid = train.fit_stacked(graphdef, params, rest, SPIRALS, config, keys=keys)
    assert step.compiled_chunk.cache_info().misses == 1
    trained = train.unstack_models(graphdef, grid.params, grid.rest)
    for i, ((s, d), net, model) in enumerate(zip(cells, nets, trained, strict=True)):
        shallow = train.fit(_sigma_net(s, d), SPIRALS, config, key=i)
        np.testing.assert_allclose(grid.history["train/loss"][i], shallow.history["train/loss"], rtol=1e-5)
        for a, b in zip(model.blocks[:d], shallow.models[0].blocks, strict=True):
            chex.assert_trees_all_close(
                nnx.state(a, nnx.Param), nnx.state(b, nnx.Param), rtol=1e-5, atol=1e-6
            )
        for a, b in zip(model.blocks[d:], net.blocks[d:], strict=True):  # inactive: zero gradient
            chex.assert_trees_all_equal(nnx.state(a, nnx.Param), nnx.state(b, nnx.Param))
        # the padded blocks' kernel gradients are exactly zero: -inf decades
        assert np.isneginf(grid.history["log10_kernel_grad"][i, 0, d:]).all()
    assert not grid.history["diverged"].any()


def test_depth_masked_training_equals_the_shallower_net_in_float64(x64):
    """In float64, a depth-3 net padded to 8 blocks (unrolled or scanned) trains to the same
    parameters as the depth-3 net, to float64 rounding."""
    kw = dict(activation="tanh", init="gaussian", sigma_w2=1.5, param_dtype=jnp.float64)
    shallow = jaxvg.MLP(2, 8, 3, 2, rngs=nnx.Rngs(1), **kw)
    x = np.asarray(SPIRALS.x_train, np.float64)
    config = TrainConfig(loss="cross_entropy", **COMMON)
    want = train.fit(shallow, (x, SPIRALS.y_train), config, key=3).models[0]
    for scan in (False, True):
        masked = jaxvg.MLP(2, 8, 3, 2, max_depth=8, scan_blocks=scan, rngs=nnx.Rngs(1), **kw)
        got = train.fit(masked, (x, SPIRALS.y_train), config, key=3).models[0]
        for a, b in zip(got.blocks[:3], want.blocks, strict=True):
            chex.assert_trees_all_close(
                nnx.state(a, nnx.Param), nnx.state(b, nnx.Param), rtol=1e-12, atol=1e-14
            )
        chex.assert_trees_all_close(nnx.state(got.head), nnx.state(want.head), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(got(x), want(x), rtol=1e-12, atol=1e-14)
