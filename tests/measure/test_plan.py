"""A repeated measurement does no structural work (no split, view, abstract trace, output-shape
evaluation or retrace); the per-model cache is never stale (in-place training is seen, structure
changes re-plan); `Probe` equals the plain functions."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxvg
from jaxvg import measure
from jaxvg.measure import engine, plan
from jaxvg.nn import losses

from .references import data


@pytest.fixture
def counters(monkeypatch):
    """Counts of the structural operations: nnx.split, nnx.view, jax.make_jaxpr, jax.eval_shape,
    plan.flatten (a full flatten of the model) and engine.split_pieces."""
    counts = dict.fromkeys(["split", "view", "make_jaxpr", "eval_shape", "flatten", "split_pieces"], 0)

    def counting(name, fn):
        @functools.wraps(fn)
        def wrapped(*a, **k):
            counts[name] += 1
            return fn(*a, **k)

        return wrapped

    monkeypatch.setattr(nnx, "split", counting("split", nnx.split))
    monkeypatch.setattr(nnx, "view", counting("view", nnx.view))
    monkeypatch.setattr(jax, "make_jaxpr", counting("make_jaxpr", jax.make_jaxpr))
    monkeypatch.setattr(jax, "eval_shape", counting("eval_shape", jax.eval_shape))
    monkeypatch.setattr(plan, "flatten", counting("flatten", plan.flatten))
    monkeypatch.setattr(engine, "split_pieces", counting("split_pieces", engine.split_pieces))

    def reset():
        for k in counts:
            if k != "reset":
                counts[k] = 0

    counts["reset"] = reset
    return counts


def _zero(counts):
    return {k: v for k, v in counts.items() if k != "reset" and v}


@pytest.mark.parametrize("depth", [3, 130])  # unrolled, and scanned in chunks (130 > SCAN_MIN_RUN)
def test_second_call_does_no_structural_work(counters, depth):
    plan.cache_clear()
    model = jaxvg.MLP(3, 8, depth, 2, rngs=nnx.Rngs(0))
    x, y = data(0, 4, 3, 2, jnp.float32)
    chex.clear_trace_counter()
    loss = chex.assert_max_traces(lambda o, t: losses.mse(o, t), n=1)  # a retrace would raise
    first = measure.gradient_flow(model, x, y, loss=loss)
    # one view for the plan, one for the model(x)-vs-contract check; both once per structure
    assert counters["split_pieces"] == 1 and counters["view"] == 2
    counters["reset"]()
    again = measure.gradient_flow(model, x + 0.0, y, loss=loss)
    assert _zero(counters) == {}, counters  # not even one flatten of the model
    chex.assert_trees_all_equal(first, again)
    # a new model of the same structure (e.g. nnx.merge of a trained state): one flatten, no plan
    other = jaxvg.MLP(3, 8, depth, 2, rngs=nnx.Rngs(1))
    counters["reset"]()
    measure.gradient_flow(other, x, y, loss=loss)
    assert _zero(counters) == {"flatten": 1}, counters
    # the Jacobian measures and the probe share the plan
    measure.jacobian_norms(model, x)
    counters["reset"]()
    measure.jacobian_norms(model, x + 1.0)
    measure.Probe(model).gradient_flow(x, y, loss=loss)
    assert _zero(counters) == {"flatten": 1}, counters  # the probe's own, once at construction


def test_structural_checks_run_once_per_structure_and_again_after_a_change(monkeypatch):
    from jaxvg.measure import validate

    calls = {"check_model": 0, "check_untied": 0}
    for name in calls:
        fn = getattr(validate, name)

        def counted(model, fn=fn, name=name):
            calls[name] += 1
            return fn(model)

        monkeypatch.setattr(validate, name, counted)
    model = jaxvg.MLP(3, 8, 4, 2, rngs=nnx.Rngs(0))
    x, y = data(5, 4, 3, 2, jnp.float32)
    for _ in range(3):
        measure.gradient_flow(model, x, y)
    measure.jacobian_norms(model, x)  # the model check already passed for this structure
    measure.signal_propagation(model, x)
    assert calls == {"check_model": 1, "check_untied": 1}
    model.blocks[2] = model.blocks[1]  # tied: the structure changed, both checks run again
    with pytest.raises(ValueError, match=r"tied blocks"):
        measure.gradient_flow(model, x, y)
    assert calls == {"check_model": 2, "check_untied": 2}
    measure.jacobian_norms(model, x)  # tied blocks are fine here
    model.blocks[2] = jnp.tanh  # not a module: refused with the fix, also after a cached call
    with pytest.raises(TypeError, match=r"`model.blocks\[2\]` is a function \(tanh\), not an nnx.Module"):
        measure.jacobian_norms(model, x)


def test_in_place_training_is_seen():
    model = jaxvg.MLP(3, 8, 4, 2, rngs=nnx.Rngs(0))
    x, y = data(1, 4, 3, 2, jnp.float32)
    probe = measure.Probe(model)
    measure.gradient_flow(model, x, y)
    gd, params, rest = nnx.split(model, nnx.Param, ...)
    grads = jax.grad(lambda p: losses.mse(nnx.merge(gd, p, rest)(x), y))(params)
    nnx.update(model, jax.tree.map(lambda p, g: p - 0.5 * g, params, grads))  # a training step, in place
    fresh = measure.gradient_flow(nnx.merge(*nnx.split(model)), x, y)  # a new object: planned anew
    chex.assert_trees_all_close(measure.gradient_flow(model, x, y), fresh, rtol=1e-6)
    chex.assert_trees_all_close(probe.gradient_flow(x, y), fresh, rtol=1e-6)


def test_structure_changes_are_seen_by_the_plain_functions():
    model = jaxvg.MLP(3, 8, 4, 2, rngs=nnx.Rngs(0))
    x, y = data(2, 4, 3, 2, jnp.float32)
    measure.gradient_flow(model, x, y)
    # a Variable object replaced (not updated in place)
    model.blocks[1].linear.kernel = nnx.Param(2 * model.blocks[1].linear.kernel[...])
    want = measure.gradient_flow(nnx.merge(*nnx.split(model)), x, y)
    chex.assert_trees_all_close(measure.gradient_flow(model, x, y), want, rtol=1e-6)
    # a block replaced by one of another kind (relu): the layout and the kernel change
    model.blocks[2] = jaxvg.MLP(8, 8, 1, None, activation="relu", rngs=nnx.Rngs(5)).blocks[0]
    want = measure.gradient_flow(nnx.merge(*nnx.split(model)), x, y)
    got = measure.gradient_flow(model, x, y)
    chex.assert_trees_all_close(got, want, rtol=1e-6)
    # a block appended
    model.blocks.append(jaxvg.MLP(8, 8, 1, None, rngs=nnx.Rngs(6)).blocks[0])
    model.head = nnx.Linear(8, 2, rngs=nnx.Rngs(7))
    assert measure.gradient_flow(model, x, y).log10_gain.shape == (5,)


def test_a_variable_that_changes_shape_in_place_replans():
    model = jaxvg.MLP(3, 8, 2, 2, use_bias=True, rngs=nnx.Rngs(0))
    x, y = data(3, 4, 3, 2, jnp.float32)
    measure.gradient_flow(model, x, y)
    model.head.bias.set_value(jnp.zeros((2,), jnp.float32))  # same shape: no re-plan needed
    measure.gradient_flow(model, x, y)
    with pytest.raises(ValueError, match=r"`y` for loss='mse' must have the outputs' shape \(4, 3\)"):
        model.head.kernel.set_value(jnp.zeros((8, 3), jnp.float32))
        model.head.bias.set_value(jnp.zeros((3,), jnp.float32))
        measure.gradient_flow(model, x, y)


def test_probe_equals_the_plain_functions():
    model = jaxvg.MLP(3, 8, 5, 2, norm="batch", dropout=0.1, rngs=nnx.Rngs(0))
    x, y = data(4, 6, 3, 2, jnp.float32)
    probe = measure.Probe(model)
    key = jax.random.key(3)
    chex.assert_trees_all_equal(probe.gradient_flow(x, y), measure.gradient_flow(model, x, y))
    chex.assert_trees_all_equal(
        probe.gradient_flow(x, y, train=True, key=key),
        measure.gradient_flow(model, x, y, train=True, key=key),
    )
    chex.assert_trees_all_equal(probe.jacobian_norms(x), measure.jacobian_norms(model, x))
    chex.assert_trees_all_equal(
        probe.jacobian_norms(x, method="hutchinson", num_probes=4, key=key),
        measure.jacobian_norms(model, x, method="hutchinson", num_probes=4, key=key),
    )
    chex.assert_trees_all_equal(probe.jacobian_spectrum(x[0], layers=(0, 2)),
                                measure.jacobian_spectrum(model, x[0], layers=(0, 2)))  # fmt: skip
    with pytest.raises(ValueError, match=r"`key` is required with `train=True`"):
        probe.gradient_flow(x, y, train=True)
    with pytest.raises(TypeError, match=r"block-model contract"):
        measure.Probe(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))


class NotAPytree(nnx.Module, pytree=False):
    """A graph-only NNX model (not a jax pytree): planned through nnx.split instead."""

    def __init__(self, *, rngs):
        self.blocks = nnx.List([nnx.Linear(3, 3, rngs=rngs) for _ in range(3)])

    def __call__(self, x):
        for b in self.blocks:  # the contract forward: no function between the blocks
            x = b(x)
        return x


def test_graph_only_models_take_the_graph_path():
    model = NotAPytree(rngs=nnx.Rngs(0))
    x = jnp.ones((2, 3))
    assert plan.flatten(model)[0] == "graph"
    a = measure.gradient_flow(model, x, loss=lambda o, y: jnp.sum(o**2))
    b = measure.Probe(model).gradient_flow(x, loss=lambda o, y: jnp.sum(o**2))
    np.testing.assert_allclose(a.log10_act_grad, b.log10_act_grad, rtol=1e-6)
    chex.assert_tree_all_finite(a.log10_act_grad)
