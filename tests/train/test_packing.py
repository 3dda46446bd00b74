"""jaxvg.train.packing: one array per leaf shape and dtype, and back."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvg.train.packing import Packing

from .common import factory


def test_round_trip_of_a_module_state_with_keys_and_batch_statistics():
    model = factory(nnx.Rngs(0), norm="batch", dropout=0.1)
    for state in nnx.split(model, nnx.Param, ...)[1:]:
        packing = Packing.of(state)
        packed = packing.pack(state)
        assert len(packed) == len(packing.groups) < len(jax.tree.leaves(state))
        back = packing.unpack(packed)
        assert jax.tree.structure(back) == jax.tree.structure(state)
        for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(state), strict=True):
            if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
                a, b = jax.random.key_data(a), jax.random.key_data(b)
            np.testing.assert_array_equal(a, b)
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), nnx.state(model, nnx.Param))
    assert Packing.of(abstract) == Packing.of(nnx.state(model, nnx.Param))  # shapes are enough; hashable
    assert hash(Packing.of(abstract)) == hash(Packing.of(nnx.state(model, nnx.Param)))


def test_per_leaf_restores_leaf_order_and_empty_trees():
    tree = [jnp.zeros(2), jnp.zeros(3), jnp.zeros(2), jnp.zeros((1,)), jnp.zeros(3)]
    packing = Packing.of(tree)
    assert packing.groups == ((0, 2), (1, 4), (3,))
    values = [jnp.array([10.0, 12.0]), jnp.array([11.0, 14.0]), jnp.array([13.0])]
    np.testing.assert_array_equal(packing.per_leaf(values), [10, 11, 12, 13, 14])
    empty = Packing.of({})
    assert empty.pack({}) == () and empty.unpack(()) == {} and empty.num_leaves == 0
