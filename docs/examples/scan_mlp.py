"""A scan-over-layers MLP as flax's guide writes it (layers created under `nnx.vmap`, run under
`nnx.scan`; BatchNorm and dropout), and the recipe that exposes its stacked layers as jaxvg blocks.

docs/your_model.md shows this code verbatim (tests/measure/test_your_model.py checks that the page's
blocks are slices of this file and runs them).
"""

import jax
import jax.numpy as jnp
from flax import nnx

# --- the model, as its authors wrote it ---------------------------------------------------------


class Block(nnx.Module):
    def __init__(self, d, *, dropout, param_dtype, rngs):
        self.linear = nnx.Linear(d, d, param_dtype=param_dtype, rngs=rngs)
        self.bn = nnx.BatchNorm(d, param_dtype=param_dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x):
        return self.dropout(jax.nn.gelu(self.bn(self.linear(x))))


class ScanMLP(nnx.Module):
    def __init__(self, d=8, depth=6, *, dropout=0.1, param_dtype=jnp.float32, block=Block, rngs):
        @nnx.split_rngs(splits=depth)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def create(rngs):
            return block(d, dropout=dropout, param_dtype=param_dtype, rngs=rngs)

        self.layers = create(rngs)  # one module whose arrays have a leading (depth,) axis

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def step(h, layer):
            return layer(h)

        return step(x, self.layers)


# --- the recipe: the stacked layers as a list of blocks -----------------------------------------


def unstack(stacked):
    """The layers of a module stacked by nnx.vmap, as an nnx.List of separate modules (copies)."""
    graphdef, state = nnx.split(stacked)
    depth = jax.tree.leaves(state)[0].shape[0]
    return nnx.List([nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state)) for i in range(depth)])


class LayersAsBlocks(nnx.Module):  # blocks: copies of the layers; model(x): the original scan
    def __init__(self, model):
        self.blocks = unstack(model.layers)
        self.model = model  # jaxvg checks model(x) against the blocks, one by one

    def __call__(self, x):
        return self.model(x)
