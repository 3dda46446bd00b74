"""Reliability of training (issue 10): no finite model thrown away for a log that is never applied,
sizes checked before tracing, models that break the block contract named before tracing, the
divergence error's attributes, datasets checked against memory."""

import numpy as np
import pytest
from flax import nnx

import jaxvg
from jaxvg import checks, train
from jaxvg.train import TrainConfig, Trainer, data, history, step, trainer

from .common import COMMON, SPIRALS, X4, Y4

# ----------------------------------------------------------------------------- the last log


def _linear_net():
    return jaxvg.MLP(2, 4, 1, 1, activation="linear", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("on_nonfinite", ["raise", "record"])
def test_a_nonfinite_final_log_keeps_the_finite_model_and_warns(on_nonfinite):
    """One step of lr 1e20 gives finite parameters ~1e20 (accepted) whose loss overflows float32:
    the gradient taken at step 1 == steps for the log is never applied, so the model is kept."""
    with pytest.warns(
        history.NonFiniteEndWarning,
        match=r"final parameters \(step 1, .*never applied\) is non-finite for the model",
    ):
        out = train.fit(
            _linear_net(), (X4, Y4), loss="mse", optimizer="sgd", learning_rate=1e20, steps=1,
            progress=False, on_nonfinite=on_nonfinite,
        )  # fmt: skip
    h = out.history
    assert not h["diverged"] and h["diverged_step"] == -1
    assert np.isfinite(h["train/loss"][0]) and not np.isfinite(h["train/loss"][-1])  # shown as it is
    params = jax_leaves(nnx.state(out.models[0], nnx.Param))
    assert all(np.isfinite(p).all() for p in params) and max(np.abs(p).max() for p in params) > 1e15


def test_a_nonfinite_applied_step_still_raises():
    with pytest.raises(FloatingPointError, match=r"non-finite loss or gradient at step 1 \(the model\)"):
        train.fit(
            _linear_net(), (X4, Y4), loss="mse", optimizer="sgd", learning_rate=1e20, steps=2, progress=False
        )


def jax_leaves(tree):
    import jax

    return [np.asarray(a) for a in jax.tree.leaves(tree)]


def test_the_divergence_error_carries_the_int_seed():
    net = lambda rngs: jaxvg.MLP(2, 4, 1, 1, activation="linear", rngs=rngs)  # noqa: E731
    with pytest.raises(FloatingPointError, match=r"\(seed 7\)") as info:
        train.fit(
            net, (X4, Y4), seeds=[7], loss="mse", optimizer="sgd", learning_rate=1e20, steps=2, progress=False
        )
    err = info.value
    assert err.seed == 7 and isinstance(err.seed, int) and err.net == 0 and err.name == "seed 7"


# ----------------------------------------------------------------------------- sizes, before tracing


def test_steps_beyond_the_int32_counter_fail_before_tracing():
    misses = step.compiled_chunk.cache_info().misses
    for steps in (2**31, 2**30 + 1):
        with pytest.raises(
            ValueError, match=rf"`steps` must be an integer in \[1, 1073741824\] .*int32.*got {steps}"
        ):
            train.fit(_linear_net(), (X4, Y4), loss="mse", optimizer="sgd", learning_rate=0.1, steps=steps)
    assert TrainConfig(optimizer="sgd", learning_rate=0.1, steps=2**30).steps == 2**30
    assert step.compiled_chunk.cache_info().misses == misses


def test_a_history_that_does_not_fit_in_memory_fails_before_tracing(monkeypatch):
    monkeypatch.setattr(checks, "available_memory", lambda host=False: (10_000, "test"))
    misses = step.compiled_chunk.cache_info().misses
    with pytest.raises(
        ValueError,
        match=r"the training history of `steps`=5000 for 1 net\(s\) .*needs about 4\d.\d KiB .*more than the 9.77 KiB "
        r"available \(test\): pass fewer `steps`",
    ):
        train.fit(
            _linear_net(),
            (X4, Y4),
            loss="mse",
            optimizer="sgd",
            learning_rate=0.1,
            steps=5000,
            progress=False,
        )
    assert step.compiled_chunk.cache_info().misses == misses


def test_datasets_are_checked_against_memory_before_drawing(monkeypatch):
    with pytest.raises(
        ValueError, match=r"load\('spirals', `n_train`=10000000000, `n_test`=1000\) .*needs about .*TiB"
    ):
        data.load("spirals", n_train=10**10)
    monkeypatch.setattr(checks, "available_memory", lambda host=False: (1000, "test"))
    with pytest.raises(
        ValueError, match=r"load\('teacher', .*`width`=64\) .*available \(test\): pass smaller"
    ):
        data.load("teacher")
    with pytest.raises(ValueError, match=r"load\('mnist1d', `num_samples`=5000\)"):
        data.load("mnist1d")
    assert data.load("xor").x_train.shape == (4, 2)  # fixed, tiny


# ----------------------------------------------------------------------------- the block contract


class _EmptyBlocks(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(2, 2, rngs=rngs)
        self.blocks = nnx.List([])

    def __call__(self, x):
        return self.linear(x)


class _NotAList(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(2, 2, rngs=rngs)
        self.blocks = nnx.data(42)

    def __call__(self, x):
        return self.linear(x)


class _Unhashable(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(2, 2, rngs=rngs)
        self.activations = ["tanh"]  # static and a list: the graphdef cannot be hashed

    def __call__(self, x):
        return self.linear(x)


@pytest.mark.parametrize("model_cls", [_EmptyBlocks, _NotAList])
def test_models_that_break_the_block_contract_train_and_refuse_a_monitor_by_name(model_cls):
    out = train.fit(model_cls(nnx.Rngs(0)), SPIRALS, **COMMON)
    assert out.history["log10_kernel_grad"].shape == (4, 0)
    misses = step.compiled_chunk.cache_info().misses
    for model in (model_cls(nnx.Rngs(0)), None):
        with pytest.raises(
            ValueError,
            match=r"`monitor_every` needs a model the measures can read: `model` must follow the block-model contract",
        ):
            if model is None:
                train.fit(model_cls, SPIRALS, seeds=[0, 1], monitor_every=4, **COMMON)
            else:
                train.fit(model, SPIRALS, monitor_every=4, **COMMON)
    assert step.compiled_chunk.cache_info().misses == misses  # refused before tracing


def test_an_unhashable_static_attribute_is_named_before_tracing():
    with pytest.raises(
        TypeError, match=r"`model.activations` = \['tanh'\] \(list\)\. jax compiles one program"
    ):
        train.fit(_Unhashable(nnx.Rngs(0)), SPIRALS, **COMMON)


def test_a_forward_pass_that_fails_is_reported_with_the_shapes():
    class Broken(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(2, 2, rngs=rngs)

        def __call__(self, x):
            return self.linear(x).no_such_attribute

    with pytest.raises(
        ValueError,
        match=r"`data` inputs of shape \(96, 2\) \(float32\) do not fit the model: .*AttributeError",
    ):
        train.fit(Broken(nnx.Rngs(0)), SPIRALS, **COMMON)


# ----------------------------------------------------------------------------- data and names


def test_float_class_labels_train_with_cross_entropy():
    y = SPIRALS.y_train.astype(np.float32)
    out = train.fit(
        jaxvg.MLP(2, 8, 2, 2, rngs=nnx.Rngs(0)), (SPIRALS.x_train, y), loss="cross_entropy", **COMMON
    )
    assert np.isfinite(out.history["train/loss"]).all()


def test_trainer_checks_names_and_state():
    graphdef, params, rest = train.stack_models([jaxvg.MLP(2, 4, 1, 1, rngs=nnx.Rngs(s)) for s in (0, 1)])
    config = TrainConfig(loss="mse", optimizer="sgd", learning_rate=0.1, steps=2, progress=False)
    with pytest.raises(ValueError, match=r"`names` must name each of the 2 nets, got 1 names"):
        Trainer(graphdef, params, rest, (X4, Y4), config, names=["a"])
    with pytest.raises(TypeError, match=r"`names` must be None or a sequence of 2 strings, got 'ab'"):
        Trainer(graphdef, params, rest, (X4, Y4), config, names="ab")
    with pytest.raises(TypeError, match=r"`params` must be a state of arrays .*got a leaf of type str"):
        Trainer(graphdef, {"a": "x"}, rest, (X4, Y4), config)
    with pytest.raises(TypeError, match=r"`graphdef` must be an nnx.GraphDef"):
        Trainer(params, params, rest, (X4, Y4), config)
    assert trainer.Trainer(graphdef, params, rest, (X4, Y4), config, names=("a", "b")).names == ["a", "b"]
