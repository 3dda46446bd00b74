"""jaxvg.train.fit: vmapped seeds against separate runs, determinism, the kernel-gradient and batch-loss
logs, the config-or-keywords interface, bad input before tracing, divergence handling, monitor,
and real learning."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxvg
from jaxvg import measure, train
from jaxvg.nn import losses
from jaxvg.train import TrainConfig, data, step

from .common import COMMON, SPIRALS, X4, Y4, factory, optax_reference, params_of, relu_factory

# ----------------------------------------------------------------------------- seeds and determinism


def test_vmapped_seeds_equal_separate_runs():
    """Init, minibatch order and dropout all derive from the seed: seed s of a vmapped run equals
    fit(factory(nnx.Rngs(s)), key=s) up to float32 rounding (vmap may reorder reductions)."""
    drop = lambda rngs: factory(rngs, dropout=0.1)  # noqa: E731
    seeds = [3, 0, 7]
    together = train.fit(drop, SPIRALS, seeds=seeds, **COMMON)
    assert together.history["train/loss"].shape == (3, 4)
    assert together.history["log10_kernel_grad"].shape == (3, 4, 3)
    for i, s in enumerate(seeds):
        alone = train.fit(drop(nnx.Rngs(s)), SPIRALS, key=s, **COMMON)
        for name in ("train/loss", "test/loss", "train/accuracy", "log10_kernel_grad", "train/batch_loss"):
            np.testing.assert_allclose(together.history[name][i], alone.history[name], rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(
            params_of(together.models[i]), params_of(alone.models[0]), rtol=1e-5, atol=1e-6
        )
    # different seeds really differ (init and data order)
    assert not np.allclose(together.history["train/loss"][0], together.history["train/loss"][1])


def test_same_seed_is_bitwise_identical():
    a = train.fit(factory, SPIRALS, seeds=[1, 2], **COMMON)
    b = train.fit(factory, SPIRALS, seeds=[1, 2], **COMMON)
    for name in ("train/loss", "test/loss", "log10_kernel_grad"):
        np.testing.assert_array_equal(a.history[name], b.history[name])
    chex.assert_trees_all_equal(params_of(a.models[1]), params_of(b.models[1]))


def test_input_model_is_not_modified_and_history_has_no_seed_axis():
    model = factory(nnx.Rngs(0))
    before = jax.tree.map(np.array, params_of(model))
    out = train.fit(model, SPIRALS, **COMMON)
    chex.assert_trees_all_equal(before, jax.tree.map(np.array, params_of(model)))
    assert len(out.models) == 1 and out.models[0] is not model
    assert out.history["train/loss"].shape == (4,)
    assert out.history["train/batch_loss"].shape == (24,)
    np.testing.assert_array_equal(out.history["step"], [0, 8, 16, 24])
    assert out.history["diverged"].shape == () and not out.history["diverged"]
    assert int(out.history["diverged_step"]) == -1


def test_repeated_validation_is_per_shape():
    """The per-graphdef cache of the trainer's model checks: a second model of the same architecture
    with other data shapes is still checked (in_features), and a net of another width is not
    confused with a cached one."""
    kw = dict(COMMON, steps=8, loss="cross_entropy")
    train.fit(factory(nnx.Rngs(0)), SPIRALS, **kw)
    with pytest.raises(ValueError, match=r"in_features is 2"):
        train.fit(factory(nnx.Rngs(1)), (SPIRALS.x_train[:, :1], SPIRALS.y_train), **kw)
    wide = jaxvg.MLP(2, 16, 3, 2, activation="tanh", rngs=nnx.Rngs(0))
    out = train.fit(wide, SPIRALS, **kw)
    assert out.models[0].blocks[0].linear.kernel[...].shape == (2, 16)


# ----------------------------------------------------------------------------- config or keywords


def test_config_object_equals_keywords_and_conflicts_are_errors():
    config = TrainConfig(**COMMON)
    by_config = train.fit(factory(nnx.Rngs(0)), SPIRALS, config)
    by_keywords = train.fit(factory(nnx.Rngs(0)), SPIRALS, **COMMON)
    np.testing.assert_array_equal(by_config.history["train/loss"], by_keywords.history["train/loss"])
    # repeating a config value is allowed; a different one is a ValueError naming both
    train.fit(factory(nnx.Rngs(0)), SPIRALS, config, steps=24)
    with pytest.raises(ValueError, match=r"`steps=12` conflicts with `config.steps=24`.*dataclasses.replace"):
        train.fit(factory(nnx.Rngs(0)), SPIRALS, config, steps=12)
    with pytest.raises(TypeError, match=r"fit\(\) got unexpected keyword argument\(s\) \['step'\]"):
        train.fit(factory(nnx.Rngs(0)), SPIRALS, optimizer="sgd", learning_rate=0.1, step=3)
    with pytest.raises(TypeError, match=r"`config` must be a TrainConfig or None, got dict"):
        train.fit(factory(nnx.Rngs(0)), SPIRALS, dict(COMMON))


# ----------------------------------------------------------------------------- what is logged


def test_logged_kernel_gradient_is_the_full_batch_gradient_norm():
    model = jaxvg.MLP(2, 4, 3, 1, activation="sigmoid", rngs=nnx.Rngs(1))
    out = train.fit(
        model, (X4, Y4), loss="mse", optimizer="gd", learning_rate=0.5, steps=4, log_every=4, progress=False
    )
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    loss, grads = jax.value_and_grad(lambda p: losses.mse(nnx.merge(graphdef, p, rest)(X4), Y4))(params)
    expected = [
        np.log10(np.linalg.norm(np.asarray(grads["blocks"][i]["linear"]["kernel"][...]))) for i in range(3)
    ]
    np.testing.assert_allclose(out.history["log10_kernel_grad"][0], expected, rtol=1e-5)
    # the first block's gradient is the smallest: sigmoid shrinks the backward signal
    assert expected[0] < expected[-1]
    # full batch: step 0's batch loss is the loss at init, the logged train loss at step 0
    np.testing.assert_allclose(out.history["train/batch_loss"][0], loss, rtol=1e-6)
    np.testing.assert_allclose(out.history["train/batch_loss"][0], out.history["train/loss"][0], rtol=1e-6)


def test_batch_loss_is_the_loss_of_each_minibatch():
    """train/batch_loss[t] is the loss of step t's minibatch at the parameters after t updates: at
    t = 0 that is the init loss of the first batch of the epoch permutation."""
    model = factory(nnx.Rngs(2))
    out = train.fit(model, SPIRALS, key=5, **COMMON)
    perm = jax.random.permutation(jax.random.fold_in(train.data_key(5), 0), 96)
    xb, yb = SPIRALS.x_train[np.asarray(perm[:16])], SPIRALS.y_train[np.asarray(perm[:16])]
    np.testing.assert_allclose(
        out.history["train/batch_loss"][0], losses.cross_entropy(model(xb), yb), rtol=1e-5
    )
    assert np.isfinite(out.history["train/batch_loss"]).all()
    assert len(set(np.round(out.history["train/batch_loss"], 6))) > 20  # one value per minibatch


# ----------------------------------------------------------------------------- bad input


def _fit(**overrides):
    kw = dict(model=factory(nnx.Rngs(0)), data=SPIRALS, loss="cross_entropy", **COMMON)
    kw.update(overrides)
    model, dataset = kw.pop("model"), kw.pop("data")
    return train.fit(model, dataset, **kw)


_bad_x = np.array(SPIRALS.x_train)
_bad_x[5, 1] = np.nan
_labels_3 = np.array(SPIRALS.y_train)
_labels_3[0] = 2


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(optimizer="sdg"), r"`optimizer` must be one of .*'sdg'"),
        (dict(schedule="cos"), r"`schedule` must be one of .*'cos'"),
        (dict(on_nonfinite="ignore"), r"`on_nonfinite` must be one of"),
        (dict(loss="hinge"), r"`loss` must be one of .*'hinge'"),
        (dict(learning_rate=0.0), r"`learning_rate` must be a finite number > 0, got 0.0"),
        (dict(learning_rate=float("nan")), r"`learning_rate`"),
        (dict(learning_rate="fast"), r"`learning_rate`.*'fast'"),
        (dict(learning_rate=(0.1, 0.2)), r"`learning_rate` must be a finite number > 0 or 1 of them"),
        (dict(steps=0), r"`steps` must be an integer >= 1, got 0"),
        (dict(steps=2.5), r"`steps`"),
        (dict(log_every=0), r"`log_every`"),
        (dict(monitor_every=-1), r"`monitor_every`"),
        (dict(batch_size=0), r"`batch_size`"),
        (dict(batch_size=97), r"`batch_size` must be in \[1, 96\]"),
        (dict(optimizer="gd", batch_size=16), r"`batch_size` must be None .* optimizer='gd'"),
        (dict(warmup_steps=24), r"`warmup_steps` must be < `steps`"),
        (dict(clip_norm=0.0), r"`clip_norm`"),
        (dict(data=(_bad_x, SPIRALS.y_train)), r"`data\[0\] \(x\)` must be finite, got 1 NaN/Inf"),
        (dict(data=(SPIRALS.x_train[:, :1], SPIRALS.y_train)), r"in_features is 2"),
        (dict(data=(SPIRALS.x_train, _labels_3)), r"`data\[1\] \(y\)` .* labels in \[0, 2\)"),
        (dict(data=(SPIRALS.x_train, SPIRALS.y_train), loss="mse"), r"`data\[1\] \(y\)` for loss='mse'"),
        (dict(data=(SPIRALS.x_train, SPIRALS.y_train[:10])), r"`data` labels must have 96 rows"),
        (dict(data=[SPIRALS.x_train]), r"`data` must be a jaxvg.train.data.Dataset or a tuple"),
        (dict(data=(SPIRALS.x_train, SPIRALS.y_train), loss=None), r"`loss` must be one of .* got None"),
        (dict(seeds=[0, 0], model=factory), r"`seeds` must be distinct"),
        (dict(seeds=[-1], model=factory), r"`seeds` must hold ints"),
        (dict(seeds=3, model=factory), r"`seeds` must be a non-empty sequence"),
        (dict(key=-1), r"`key` must be an int in \[0, 2\*\*32\)"),
    ],
)
def test_bad_input_raises_before_tracing(overrides, match):
    misses = step.compiled_chunk.cache_info().misses
    with pytest.raises(ValueError, match=match):
        _fit(**overrides)
    assert step.compiled_chunk.cache_info().misses == misses  # nothing was compiled


def test_model_type_errors():
    with pytest.raises(TypeError, match=r"`model` must be an nnx.Module"):
        train.fit(factory, SPIRALS, **COMMON)
    with pytest.raises(TypeError, match=r"with `seeds`, `model` must be a factory"):
        train.fit(factory(nnx.Rngs(0)), SPIRALS, seeds=[0], **COMMON)


class _Plain(nnx.Module):
    """A model without blocks: it trains, but the monitor cannot measure it."""

    def __init__(self, rngs):
        self.linear = nnx.Linear(2, 2, rngs=rngs)

    def __call__(self, x):
        return self.linear(x)


def test_models_without_blocks_train_but_refuse_a_monitor():
    out = train.fit(_Plain(nnx.Rngs(0)), SPIRALS, **COMMON)
    assert out.history["log10_kernel_grad"].shape == (4, 0)
    assert out.history["train/loss"][-1] < out.history["train/loss"][0]
    misses = step.compiled_chunk.cache_info().misses
    with pytest.raises(
        ValueError, match=r"`monitor_every` needs a model the measures can read: .*block-model"
    ):
        train.fit(_Plain(nnx.Rngs(0)), SPIRALS, monitor_every=4, **COMMON)
    assert step.compiled_chunk.cache_info().misses == misses


# ----------------------------------------------------------------------------- non-finite losses

_HUGE = dict(COMMON, learning_rate=1e20)


def test_nonfinite_raise_names_step_seed_and_block_and_keeps_history():
    with pytest.raises(
        FloatingPointError,
        match=r"non-finite loss or gradient at step \d+ \(seed 5\): first non-finite gradient in blocks\[\d\]",
    ) as info:
        train.fit(relu_factory, SPIRALS, seeds=[5, 6], **_HUGE)
    err = info.value
    assert err.step >= 1 and err.seed == 5 and err.name == "seed 5" and err.block.startswith("blocks[")
    assert err.history["step"].size >= 1 and (err.history["step"] < err.step).all()
    assert np.isfinite(err.history["train/loss"]).all()
    assert err.history["train/loss"].shape == (2, err.history["step"].size)
    assert err.history["train/batch_loss"].shape == (2, err.step)
    # without seeds: the same, with no seed axis in the history
    with pytest.raises(FloatingPointError, match=r"\(the model\)") as info:
        train.fit(relu_factory(nnx.Rngs(5)), SPIRALS, key=5, **_HUGE)
    assert info.value.history["train/loss"].ndim == 1


def test_nonfinite_record_freezes_only_the_diverging_net():
    """Two nets in one program, learning rates 0.1 and 1e20: the second diverges and is frozen at
    its last finite parameters; the first trains exactly as it would alone."""
    graphdef, params, rest = train.stack_models([relu_factory(nnx.Rngs(0)), relu_factory(nnx.Rngs(1))])
    keys = jax.vmap(jax.random.key)(jnp.arange(2))
    kw = {k: v for k, v in COMMON.items() if k != "learning_rate"}
    both = train.fit_stacked(
        graphdef,
        params,
        rest,
        SPIRALS,
        keys=keys,
        learning_rate=np.array([0.1, 1e20]),
        on_nonfinite="record",
        **kw,
    )
    h = both.history
    np.testing.assert_array_equal(h["diverged"], [False, True])
    t0 = int(h["diverged_step"][1])
    assert h["diverged_step"][0] == -1 and 1 <= t0 < 24
    assert np.isfinite(h["train/loss"][0]).all()
    after = h["step"] >= t0
    assert np.isnan(h["train/loss"][1][after]).all() and np.isfinite(h["train/loss"][1][~after]).all()
    assert np.isnan(h["train/batch_loss"][1][t0:]).all() and np.isfinite(h["train/batch_loss"][1][:t0]).all()
    assert all(np.isfinite(np.asarray(leaf[1])).all() for leaf in jax.tree.leaves(both.params))
    alone = train.fit_stacked(
        graphdef,
        *jax.tree.map(lambda a: a[:1], (params, rest)),
        SPIRALS,
        keys=keys[:1],
        learning_rate=0.1,
        **kw,
    )
    np.testing.assert_allclose(h["train/loss"][0], alone.history["train/loss"][0], rtol=1e-5)
    chex.assert_trees_all_close(
        jax.tree.map(lambda a: a[0], both.params),
        jax.tree.map(lambda a: a[0], alone.params),
        rtol=1e-5,
        atol=1e-6,
    )


# ----------------------------------------------------------------------------- learning


def test_small_net_learns_spirals():
    ds = data.load("spirals", seed=0, n_train=512, n_test=256, noise=0.05)
    out = train.fit(
        lambda rngs: jaxvg.MLP(2, 32, 3, 2, activation="relu", init="he_normal", rngs=rngs),
        ds,
        optimizer="adam",
        learning_rate=0.01,
        steps=600,
        batch_size=64,
        log_every=200,
        seeds=[0, 1],
        progress=False,
    )
    acc = out.history["test/accuracy"]
    assert (acc[:, 0] < 0.75).all()  # chance level at init
    assert (acc[:, -1] >= 0.9).all(), acc  # measured 0.95-1.0
    assert (out.history["train/loss"][:, -1] < 0.3 * out.history["train/loss"][:, 0]).all()


def test_batch_norm_and_dropout_train():
    bn_drop = lambda rngs: factory(rngs, norm="batch", dropout=0.2)  # noqa: E731
    out = train.fit(bn_drop, SPIRALS, seeds=[0, 1], schedule="cosine", warmup_steps=4, **COMMON)
    assert np.isfinite(out.history["train/loss"]).all() and not out.history["diverged"].any()
    for model in out.models:
        for block in model.blocks:
            assert np.abs(np.asarray(block.norm.mean[...])).max() > 1e-3  # running mean moved from 0
            assert int(block.dropout.rngs.count[...]) == COMMON["steps"]  # one mask per step
    fresh = bn_drop(nnx.Rngs(0))
    assert not np.allclose(fresh.blocks[0].norm.var[...], out.models[0].blocks[0].norm.var[...])


# ----------------------------------------------------------------------------- monitor


def test_monitor_records_gradient_flow_inside_the_loop():
    out = train.fit(factory, SPIRALS, seeds=[0, 1], monitor_every=12, **COMMON)
    h = out.history
    np.testing.assert_array_equal(h["monitor_step"], [0, 12, 24])
    assert h["monitor"].log10_act_grad.shape == (2, 3, 4)
    monitor_batch = SPIRALS.x_train[: train.MONITOR_BATCH], SPIRALS.y_train[: train.MONITOR_BATCH]
    final = measure.gradient_flow(out.models[1], *monitor_batch, loss="cross_entropy")
    np.testing.assert_allclose(h["monitor"].log10_act_grad[1, -1], final.log10_act_grad, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h["monitor"].loss[1, -1], final.loss, rtol=1e-5)


def test_float64_training_matches_optax_to_float64_precision(x64):
    model = jaxvg.MLP(2, 4, 2, 1, activation="tanh", param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    out = train.fit(
        model,
        (X4, Y4),
        loss="mse",
        optimizer="momentum",
        learning_rate=0.1,
        steps=8,
        log_every=4,
        schedule="cosine",
        progress=False,
    )
    assert out.models[0].blocks[0].linear.kernel[...].dtype == jnp.float64
    schedule = optax.cosine_decay_schedule(0.1, 8)
    expected = optax_reference(model, optax.sgd(schedule, momentum=0.9), 8)
    chex.assert_trees_all_close(params_of(out.models[0]), expected, rtol=1e-12, atol=1e-14)
