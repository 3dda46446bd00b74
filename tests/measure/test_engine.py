"""`jaxvg.measure.engine`: splitting a block model into runs (scanned or unrolled) gives the same
measurements either way; the host-side checks name the argument and the fix."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxvg
from jaxvg import measure
from jaxvg.measure import engine

from .references import TinyTransformer, assert_spectra_close, data, token_loss


def test_scan_equals_unrolled(x64, monkeypatch):
    model = jaxvg.MLP(3, 8, 6, 2, activation="tanh", norm="layer", param_dtype=jnp.float64, rngs=nnx.Rngs(3))
    x, y = data(2, 5, 3, 2, jnp.float64)
    unrolled = measure.gradient_flow(model, x, y)
    spectrum = measure.jacobian_spectrum(model, x[0], layers=(1, 4))
    monkeypatch.setattr(engine, "SCAN_MIN_RUN", 2)  # blocks 2..6 share a graphdef: one scan
    program, _ = engine.split_blocks(model)
    assert [run.scan for run in program.runs] == [False, True]
    scanned = measure.gradient_flow(model, x, y)
    chex.assert_trees_all_close(scanned, unrolled, rtol=0, atol=1e-12)
    assert_spectra_close(measure.jacobian_spectrum(model, x[0], layers=(1, 4)), spectrum, blocks=6 - 1)
    norms = measure.jacobian_norms(model, x)
    monkeypatch.setattr(engine, "SCAN_MIN_RUN", 10**6)
    chex.assert_trees_all_close(norms, measure.jacobian_norms(model, x), rtol=0, atol=1e-12)


def test_split_blocks_layout_and_forward():
    model = jaxvg.MLP(3, 4, 5, 2, rngs=nnx.Rngs(0))
    program, arrays = engine.split_blocks(model, min_run=3)
    assert program.depth == 5 and program.embed is None and program.head is not None
    assert [(r.start, r.n, r.scan) for r in program.runs] == [(0, 1, False), (1, 4, True)]
    assert program.kernel_paths == (("linear", "kernel"),) * 5
    assert jax.tree.leaves(arrays.segments[1])[0].shape[0] == 4  # stacked along the run
    assert len(engine.block_pieces(engine.segments(program, arrays))) == 5
    x = jnp.ones((2, 3))
    np.testing.assert_allclose(engine.forward(program, arrays, x), model(x), rtol=1e-6)
    assert engine.output_shape(program, arrays, x) == (2, 2)
    assert hash(program) == hash(engine.split_blocks(jaxvg.MLP(3, 4, 5, 2, rngs=nnx.Rngs(1)), min_run=3)[0])


def test_as_key_accepts_typed_and_raw_keys():
    typed = jax.random.key(3)
    assert jnp.issubdtype(engine.as_key(typed).dtype, jax.dtypes.prng_key)
    raw = engine.as_key(jax.random.PRNGKey(3))
    assert jnp.issubdtype(raw.dtype, jax.dtypes.prng_key)
    with pytest.raises(TypeError, match=r"`key` must be a jax.random.key"):
        engine.as_key(jnp.zeros(3))


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


def test_wrong_feature_size():
    model, y = jaxvg.MLP(3, 4, 2, 1, rngs=nnx.Rngs(0)), jnp.zeros((2, 1))
    with pytest.raises(ValueError, match=r"`x` must have 3 features .* got shape \(2, 5\)"):
        measure.gradient_flow(model, jnp.ones((2, 5)), y)
    with pytest.raises(ValueError, match=r"`x` must have 3 features"):
        measure.jacobian_norms(model, jnp.ones((2, 5)))
    with pytest.raises(ValueError, match=r"`x` of shape \(2, 4, 5\) does not fit the model"):
        measure.gradient_flow(TinyTransformer(rngs=nnx.Rngs(0)), jnp.ones((2, 4, 5)), loss=token_loss)


def test_model_without_blocks():
    with pytest.raises(TypeError, match=r"`model` must follow the block-model contract"):
        measure.gradient_flow(nnx.Linear(3, 1, rngs=nnx.Rngs(0)), jnp.ones((2, 3)), jnp.zeros((2, 1)))
