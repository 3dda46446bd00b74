"""jaxvg.train.trainer: validate and compile once, run many (what the training benchmark drives)."""

import dataclasses

import chex
import jax
import numpy as np
import pytest
from flax import nnx

from jaxvg import train
from jaxvg.train import TrainConfig, Trainer, stacking, step

from .common import COMMON, SPIRALS, factory, relu_factory

CONFIG = TrainConfig(loss="cross_entropy", **COMMON)


def _stack(seeds=(0, 1)):
    return stacking.stack_models([factory(nnx.Rngs(s)) for s in seeds])


def test_run_equals_fit_stacked_and_reruns_without_compiling():
    graphdef, params, rest = _stack()
    keys = stacking.data_keys([0, 1])
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), (params, rest))
    trainer = Trainer(graphdef, *abstract, SPIRALS, CONFIG)  # shapes are enough to build it
    state = trainer.init_state(params, rest)
    first = trainer.finish(trainer.run(state, keys))
    want = train.fit_stacked(graphdef, params, rest, SPIRALS, CONFIG, keys=keys)
    for name in ("train/loss", "test/accuracy", "train/batch_loss", "log10_kernel_grad"):
        np.testing.assert_array_equal(first.history[name], want.history[name])
    chex.assert_trees_all_equal(first.params, want.params)
    history_only = trainer.finish(trainer.run(state, keys), unpack=False)  # no unpacking program
    assert history_only.params is None and history_only.rest is None
    np.testing.assert_array_equal(history_only.history["train/loss"], first.history["train/loss"])
    # the state is not consumed: a second run from it is bitwise the same, with no new program
    misses = step.compiled_chunk.cache_info().misses
    again = trainer.run(state, keys)
    assert step.compiled_chunk.cache_info().misses == misses
    np.testing.assert_array_equal(again.logs[-1]["train/loss"], first.history["train/loss"][:, -1])
    assert again.log_steps == [0, 8, 16, 24] and again.monitor_rows is None
    # another stack of the same shapes, other keys and learning rates: the same program
    _, params2, rest2 = _stack((5, 6))
    other = trainer.fit(params2, rest2, stacking.data_keys([5, 6]), learning_rate=(0.05, 0.2))
    assert step.compiled_chunk.cache_info().misses == misses
    single = train.fit(factory(nnx.Rngs(6)), SPIRALS, dataclasses.replace(CONFIG, learning_rate=0.2), key=6)
    np.testing.assert_allclose(other.history["train/loss"][1], single.history["train/loss"], rtol=1e-5)


def test_chunk_compiles_once_per_shape(monkeypatch):
    """Different learning rates, seeds and a second fit reuse one compiled chunk (the last,
    partial chunk and the end point included): the single-net chunk is traced once."""
    monkeypatch.setattr(step, "run_chunk", chex.assert_max_traces(step.run_chunk, n=1))
    step.compiled_chunk.cache_clear()
    try:
        kw = dict(COMMON, steps=20)  # 20 = 8 + 8 + 4: a partial last chunk
        train.fit(factory, SPIRALS, seeds=[0, 1], **kw)
        train.fit(factory, SPIRALS, seeds=[2, 3], **dict(kw, learning_rate=0.05))
        assert step.compiled_chunk.cache_info().misses == 1
    finally:
        step.compiled_chunk.cache_clear()


def test_bad_keys_and_learning_rates():
    graphdef, params, rest = _stack()
    trainer = Trainer(graphdef, params, rest, SPIRALS, CONFIG)
    state = trainer.init_state(params, rest)
    with pytest.raises(ValueError, match=r"`keys` must be 2 PRNG keys .* got shape \(3,\)"):
        trainer.run(state, stacking.data_keys([0, 1, 2]))
    with pytest.raises(ValueError, match=r"`keys` must be 2 PRNG keys .*dtype int32"):
        trainer.run(state, np.arange(2, dtype=np.int32))
    with pytest.raises(ValueError, match=r"`learning_rate` must be a finite number > 0 or 2 of them"):
        trainer.run(state, stacking.data_keys([0, 1]), learning_rate=(0.1, 0.1, 0.1))
    with pytest.raises(ValueError, match=r"`learning_rate` must be a finite number > 0, got -1.0"):
        trainer.run(state, stacking.data_keys([0, 1]), learning_rate=-1.0)
    with pytest.raises(ValueError, match=r"common leading nets axis"):
        Trainer(graphdef, jax.tree.map(lambda a: a[0], params), rest, SPIRALS, CONFIG)
    with pytest.raises(TypeError, match=r"`config` must be a TrainConfig, got dict"):
        Trainer(graphdef, params, rest, SPIRALS, dict(COMMON))


def test_evaluate_stacked_is_the_logged_end_point_and_sees_frozen_nets():
    """evaluate_stacked gives each net's final train/test loss and accuracy (the history's end point);
    for a diverged net, those of its last finite parameters (huge weights here: a finite accuracy,
    a loss that may overflow)."""
    graphdef, params, rest = stacking.stack_models([relu_factory(nnx.Rngs(s)) for s in (0, 1, 2)])
    config = dataclasses.replace(CONFIG, learning_rate=(0.1, 1e20, 0.05), on_nonfinite="record")
    fitted = train.fit_stacked(graphdef, params, rest, SPIRALS, config, keys=stacking.data_keys([0, 1, 2]))
    final = train.evaluate_stacked(graphdef, fitted.params, fitted.rest, SPIRALS)
    assert set(final) == {"train/loss", "train/accuracy", "test/loss", "test/accuracy"}
    np.testing.assert_array_equal(fitted.history["diverged"], [False, True, False])
    for name, values in final.items():
        assert values.shape == (3,) and np.isfinite(values[[0, 2]]).all(), name
        assert "loss" in name or np.isfinite(values[1])
        np.testing.assert_allclose(values[[0, 2]], fitted.history[name][[0, 2], -1], rtol=1e-6)
        assert np.isnan(fitted.history[name][1, -1])
    at_init = train.evaluate_stacked(
        graphdef, params, rest, (SPIRALS.x_train, SPIRALS.y_train), loss="cross_entropy"
    )
    np.testing.assert_allclose(at_init["train/loss"], fitted.history["train/loss"][:, 0], rtol=1e-6)
    assert "test/loss" not in at_init
