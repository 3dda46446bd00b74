"""Tests for jaxvg.scale.grids: grids, cell keys, shape groups, depth masks."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxvg
from jaxvg import scale

# ---------------------------------------------------------------------------------------------
# grid, cell_key, shape_groups
# ---------------------------------------------------------------------------------------------


def test_grid_is_the_cartesian_product_last_axis_fastest():
    cells = scale.grid(depth=[2, 4], sigma_w2=[1.0, 1.5, 2.0], activation=["tanh"])
    assert len(cells) == 6
    assert cells[0] == {"depth": 2, "sigma_w2": 1.0, "activation": "tanh"}
    assert cells[1] == {"depth": 2, "sigma_w2": 1.5, "activation": "tanh"}
    assert cells[-1] == {"depth": 4, "sigma_w2": 2.0, "activation": "tanh"}
    assert all(list(c) == ["depth", "sigma_w2", "activation"] for c in cells)
    assert scale.grid(depth=[2, 4], sigma_w2=[1.0, 1.5, 2.0], activation=["tanh"]) == cells


def test_grid_converts_numpy_scalars():
    cells = scale.grid(sigma_w2=np.linspace(1.0, 2.0, 3), seed=np.arange(2))
    assert type(cells[0]["sigma_w2"]) is float and type(cells[0]["seed"]) is int
    assert json.dumps(cells)  # plain JSON


@pytest.mark.parametrize(
    ("axes", "match"),
    [
        ({}, "at least one axis"),
        ({"activation": "tanh"}, r"`activation` must be a list of values, got 'tanh'"),
        ({"depth": 3}, r"`depth` must be a list of values, got 3"),
        ({"seed": []}, r"`seed` must have at least one value"),
        ({"seed": [0, 0]}, r"`seed` must not repeat a value"),
    ],
)
def test_grid_errors(axes, match):
    with pytest.raises(ValueError, match=match):
        scale.grid(**axes)


def test_cell_key_is_sorted_stable_and_round_trips_floats():
    a = scale.cell_key({"width": 64, "sigma_w2": 0.1, "activation": "tanh"})
    b = scale.cell_key({"activation": "tanh", "sigma_w2": np.float64(0.1), "width": np.int64(64)})
    assert a == b == "activation=tanh,sigma_w2=0.1,width=64"
    assert scale.cell_key({"sigma_w2": 1 / 3}) == f"sigma_w2={1 / 3!r}"
    assert float(scale.cell_key({"s": 1 / 3}).split("=")[1]) == 1 / 3
    keys = [scale.cell_key(c) for c in scale.grid(a=[1, 2], b=[0.5, 1.0], c=["x", None])]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("cell", [{}, {"a,b": 1}, {"act": "x=y"}, {"path": "a/b"}])
def test_cell_key_errors(cell):
    with pytest.raises(ValueError, match="`cell`"):
        scale.cell_key(cell)


def test_shape_groups_by_shape_axes_keeps_order():
    cells = scale.grid(width=[8, 16], activation=["tanh", "relu"], sigma_w2=[1.0, 2.0], seed=[0, 1])
    groups = scale.shape_groups(cells, by=("width", "activation"))
    assert list(groups) == [(8, "tanh"), (8, "relu"), (16, "tanh"), (16, "relu")]
    assert all(len(g) == 4 for g in groups.values())
    assert [(c["sigma_w2"], c["seed"]) for c in groups[(16, "relu")]] == [
        (1.0, 0),
        (1.0, 1),
        (2.0, 0),
        (2.0, 1),
    ]
    # default by=("depth", "width", "activation"); missing axes count as None
    assert list(scale.shape_groups(cells)) == [
        (None, 8, "tanh"),
        (None, 8, "relu"),
        (None, 16, "tanh"),
        (None, 16, "relu"),
    ]


@pytest.mark.parametrize("by", ["width", ()])
def test_shape_groups_errors(by):
    with pytest.raises(ValueError, match="`by` must be a non-empty sequence"):
        scale.shape_groups([{"width": 8}], by=by)


# ---------------------------------------------------------------------------------------------
# depth padding
# ---------------------------------------------------------------------------------------------


def test_pad_depth_mask_values():
    mask = scale.pad_depth_mask([3, 1, 6], 6)
    assert mask.dtype == jnp.bool_ and mask.shape == (3, 6)
    np.testing.assert_array_equal(mask.sum(axis=1), [3, 1, 6])
    np.testing.assert_array_equal(mask[0], [True, True, True, False, False, False])
    assert scale.pad_depth_mask([2, 4]).shape == (2, 4)


@pytest.mark.parametrize(
    ("depths", "max_depth", "match"),
    [
        ([], 4, "`depths` must list"),
        ([0, 2], 4, "`depths` must be an integer >= 1"),
        ([5], 4, r"`depths` must all be <= max_depth=4"),
        ([2], 0, "`max_depth` must be an integer >= 1"),
    ],
)
def test_pad_depth_mask_errors(depths, max_depth, match):
    with pytest.raises(ValueError, match=match):
        scale.pad_depth_mask(depths, max_depth)


def _split_mlp(depth, seed, **kw):
    model = jaxvg.MLP(4, 8, depth, 2, activation="tanh", rngs=nnx.Rngs(seed), **kw)
    return nnx.split(model, nnx.Param, ...)


def test_depth3_net_padded_to_depth6_gives_exactly_the_depth3_outputs_and_gradients():
    graphdef, params, rest = _split_mlp(6, 0)
    x = jax.random.normal(jax.random.key(1), (5, 4))
    y = jax.random.normal(jax.random.key(2), (5, 2))
    mask = scale.pad_depth_mask([3], 6)[0]

    def masked(params):
        model = nnx.merge(graphdef, params, rest, copy=True)
        out = model.head(scale.masked_forward(model.blocks, x, mask))
        return jnp.mean((out - y) ** 2), out

    def depth3(params):  # the same parameters, the first 3 blocks and the head, no masks
        model = nnx.merge(graphdef, params, rest, copy=True)
        h = x
        for block in list(model.blocks)[:3]:
            h = block(h)
        out = model.head(h)
        return jnp.mean((out - y) ** 2), out

    for transform in (jax.jit,):  # eager gives the same (checked once); jit is what sweeps run
        (loss_m, out_m), grad_m = transform(jax.value_and_grad(masked, has_aux=True))(params)
        (loss_3, out_3), grad_3 = transform(jax.value_and_grad(depth3, has_aux=True))(params)
        np.testing.assert_array_equal(out_m, out_3)  # exact: where() passes h through untouched
        np.testing.assert_array_equal(loss_m, loss_3)
        jax.tree.map(np.testing.assert_array_equal, grad_m, grad_3)  # exact: the cotangent adds 0.0
        for block in (3, 4, 5):
            for leaf in jax.tree.leaves(grad_m["blocks"][block]):
                assert not np.any(np.asarray(leaf)), "masked blocks get exactly zero gradient"
        assert np.all(np.abs(np.asarray(grad_m["blocks"][2]["linear"]["kernel"])) > 0)


def test_depth_sweep_as_one_vmapped_program_matches_each_net(x64):
    """Depths 1..4 in one vmapped program over stacked depth-4 parameters equal each net run
    plainly through its first d blocks (float64, rtol 1e-12: vmapped and single programs are
    different XLA programs)."""
    depths = [1, 2, 3, 4]
    splits = [_split_mlp(4, seed, param_dtype=jnp.float64) for seed in range(4)]
    graphdef, rest = splits[0][0], splits[0][2]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *[s[1] for s in splits])
    masks = scale.pad_depth_mask(depths, 4)
    x = jax.random.normal(jax.random.key(1), (5, 4), jnp.float64)
    y = jax.random.normal(jax.random.key(2), (5, 2), jnp.float64)

    def masked(params, mask):
        model = nnx.merge(graphdef, params, rest, copy=True)
        return jnp.mean((model.head(scale.masked_forward(model.blocks, x, mask)) - y) ** 2)

    def plain(params, depth):
        model = nnx.merge(graphdef, params, rest, copy=True)
        h = x
        for block in list(model.blocks)[:depth]:
            h = block(h)
        return jnp.mean((model.head(h) - y) ** 2)

    losses, grads = jax.jit(jax.vmap(jax.value_and_grad(masked)))(stacked, masks)
    plain_grad = jax.jit(jax.value_and_grad(plain), static_argnums=1)
    for i, d in enumerate(depths):
        want_loss, want_grad = plain_grad(splits[i][1], d)
        np.testing.assert_allclose(losses[i], want_loss, rtol=1e-12)
        jax.tree.map(
            lambda g, w, i=i: np.testing.assert_allclose(g[i], w, rtol=1e-12, atol=0), grads, want_grad
        )
        for j in range(d, 4):  # blocks past depth d: exactly zero, as in the plain net
            assert not np.any(np.asarray(grads["blocks"][j]["linear"]["kernel"][i]))


def test_masked_forward_mask_shape_error():
    with pytest.raises(ValueError, match=r"`mask` must have shape \(2,\)"):
        scale.masked_forward([jnp.tanh, jnp.tanh], jnp.zeros(3), jnp.ones(3, bool))
