"""Bad inputs and contract breaks through every public measure (`jaxvg.measure.validate`): each gives
an error before tracing that names the argument or the block, and what to do; a forward pass that
overflows is reported as NaN with the block where it went non-finite, never as the -inf of an
exactly zero gradient."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxvg
from jaxvg import measure
from jaxvg.measure import validate

from .references import TOL64, BlockNet, assert_flow_close, brute_force_flow, data

# ------------------------------------------------------------------------------------------------
# One table of bad inputs per public entry point
# ------------------------------------------------------------------------------------------------

MODEL = jaxvg.MLP(3, 4, 2, 1, rngs=nnx.Rngs(0))
X, Y = jnp.ones((2, 3)), jnp.zeros((2, 1))
NAN_X = X.at[1, 2].set(jnp.nan)


def _flow(**kw):
    args = dict(x=X, y=Y) | kw
    return measure.gradient_flow(MODEL, args.pop("x"), args.pop("y"), **args)


def _probe_flow(**kw):
    args = dict(x=X, y=Y) | kw
    return measure.Probe(MODEL).gradient_flow(args.pop("x"), args.pop("y"), **args)


def _norms(**kw):
    args = dict(x=X) | kw
    return measure.jacobian_norms(MODEL, args.pop("x"), **args)


def _spectrum(**kw):
    args = dict(x=X[0]) | kw
    return measure.jacobian_spectrum(MODEL, args.pop("x"), **args)


class Tapped(nnx.Module):
    def __call__(self, x):
        return measure.tap(self, "h", 2 * x)


def _taps(**kw):
    args = dict(x=X) | kw
    return measure.tapped_gradients(lambda m, x: jnp.sum(m(x) ** 2), Tapped(), args.pop("x"))


def _sum_loss(out, y):
    return jnp.sum(out * y)


BAD_INPUTS = [
    # (entry point, arguments, error type, message pattern)
    (
        _flow,
        dict(x=NAN_X),
        ValueError,
        r"`x` must be finite, got 1 NaN/Inf entries \(first at index \(1, 2\)",
    ),
    (_flow, dict(x=X.at[0, 0].set(jnp.inf)), ValueError, r"`x` must be finite"),
    (_flow, dict(x=np.asarray(NAN_X)), ValueError, r"`x` must be finite"),  # a host array
    (_flow, dict(y=Y.at[0, 0].set(jnp.nan)), ValueError, r"`y` must be finite"),
    (_flow, dict(y=Y.at[0, 0].set(jnp.nan), loss=_sum_loss), ValueError, r"`y` must be finite"),
    (
        _flow,
        dict(x=X[0], y=Y[0]),
        ValueError,
        r"`x` of shape \(3,\) is one example without a batch axis.*x\[None\]",
    ),
    (_flow, dict(x=X[:0], y=Y[:0]), ValueError, r"`x` must hold at least one example \(batch >= 1"),
    (_flow, dict(x=jnp.ones(())), ValueError, r"`x` must have a leading batch axis"),
    (_flow, dict(key="abc", train=True), TypeError, r"`key` must be a jax.random.key .* got 'abc' \(str\)"),
    (_flow, dict(key="abc"), TypeError, r"`key` must be a jax.random.key"),  # checked even where unused
    (_flow, dict(key=3, train=True), TypeError, r"pass key=jax.random.key\(3\)"),
    (_probe_flow, dict(x=NAN_X), ValueError, r"`x` must be finite"),
    (_probe_flow, dict(x=X[0], y=Y[0]), ValueError, r"add a batch axis: x\[None\]"),
    (_norms, dict(x=NAN_X), ValueError, r"`x` must be finite"),
    (_norms, dict(x=X[0]), ValueError, r"add a batch axis: x\[None\]"),
    (_norms, dict(x=X[:0]), ValueError, r"at least one example"),
    (_norms, dict(key="abc"), TypeError, r"`key` must be a jax.random.key .* got 'abc'"),
    (_norms, dict(key="abc", method="hutchinson"), TypeError, r"`key` must be a jax.random.key .* got 'abc'"),
    (_norms, dict(key=jnp.zeros(2), method="hutchinson"), TypeError, r"`key` must be a jax.random.key"),
    (_spectrum, dict(x=NAN_X[1]), ValueError, r"`x` must be finite"),
    (_taps, dict(x=NAN_X), ValueError, r"`args\[0\]` must be finite"),
]


@pytest.mark.parametrize(
    ("entry", "kwargs", "error", "match"),
    BAD_INPUTS,
    ids=[f"{e.__name__}-{i}" for i, (e, *_) in enumerate(BAD_INPUTS)],
)
def test_bad_input_raises_before_tracing(entry, kwargs, error, match):
    with pytest.raises(error, match=match):
        entry(**kwargs)


def test_one_example_needs_its_batch_axis_and_x_1_is_fine():
    flow = measure.gradient_flow(MODEL, X[:1], Y[:1])  # what `x[0]` should have been
    assert flow.log10_act_grad.shape == (3,) and int(flow.forward_nonfinite_block) == -1


# ------------------------------------------------------------------------------------------------
# A forward pass that overflows is NaN with its block, never -inf; an exactly zero gradient is -inf
# ------------------------------------------------------------------------------------------------


def _first_nonfinite_block(model, x):
    h = x
    for i, block in enumerate(model.blocks):
        h = block(h)
        if not np.all(np.isfinite(np.asarray(h))):
            return i
    return -1


GRADIENT_FIELDS = ("log10_act_grad", "log10_param_grad", "log10_kernel_grad", "log10_gain")


def _assert_overflow_reported(flow, first):
    assert int(flow.forward_nonfinite_block) == first
    for name in GRADIENT_FIELDS:
        assert np.all(np.isnan(getattr(flow, name))), name  # never the -inf of a zero gradient
    assert np.all(np.isfinite(flow.log10_dphi[:first])) and np.all(np.isnan(flow.log10_dphi[first:]))
    assert np.all(np.isnan(flow.dead_fraction[first:]))


def test_relu_overflow_is_nan_at_its_block():
    model = jaxvg.MLP(8, 16, 10, 1, activation="relu", init="gaussian", sigma_w2=1e30, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (4, 8))
    first = _first_nonfinite_block(model, x)
    assert 0 < first < 9  # each block multiplies |h| by ~1e15: float32 (3e38) overflows after a few
    flow = measure.gradient_flow(model, x, jnp.zeros((4, 1)))
    _assert_overflow_reported(flow, first)
    assert "forward_nonfinite_block = " in measure.flow_table(flow)


@pytest.mark.slow
def test_deep_linear_overflow_is_nan_not_a_dead_network():
    # sigma_w^2 = 4: |h| doubles per block; the true input gradient is ~1e150, float32 stops at 3e38
    model = jaxvg.MLP(8, 16, 500, 1, activation="linear", init="gaussian", sigma_w2=4.0, use_bias=False,
                      rngs=nnx.Rngs(0))  # fmt: skip
    x = jax.random.normal(jax.random.key(0), (4, 8))
    first = _first_nonfinite_block(model, x)
    assert 100 < first < 160
    flow = measure.gradient_flow(model, x, jnp.zeros((4, 1)), scan=True)
    _assert_overflow_reported(flow, first)


def test_exactly_zero_gradient_is_minus_inf_with_a_finite_forward():
    model = jaxvg.MLP(3, 4, 3, 1, activation="relu", rngs=nnx.Rngs(0))
    model.blocks[1].linear.bias[...] = jnp.full((4,), -100.0)  # every unit of block 2 dead
    flow = measure.gradient_flow(model, X, Y + 1)
    assert int(flow.forward_nonfinite_block) == -1
    assert np.all(np.isneginf(flow.log10_act_grad[:2])) and np.isfinite(flow.log10_act_grad[-1])
    assert float(flow.dead_fraction[1]) == 1.0


def test_pure_kernel_with_nan_input_flags_the_first_block():
    gd, state = nnx.split(MODEL)
    flow = measure.gradient_flow_from_split(gd, state, NAN_X, Y, loss="mse")  # no host checks here
    assert int(flow.forward_nonfinite_block) == 0
    assert all(np.all(np.isnan(getattr(flow, name))) for name in GRADIENT_FIELDS)


# ------------------------------------------------------------------------------------------------
# The contract forward, block by block: the block, its type and the contract point are named
# ------------------------------------------------------------------------------------------------


class Dense(nnx.Module):
    def __init__(self, d, *, rngs, returns_tuple=False, dtype=jnp.float32):
        self.linear = nnx.Linear(d, d, param_dtype=dtype, rngs=rngs)
        self.returns_tuple = returns_tuple

    def __call__(self, h):
        h = jnp.tanh(self.linear(h))
        return (h, jnp.sum(h)) if self.returns_tuple else h


class Masked(nnx.Module):
    def __init__(self, d, *, rngs, dtype=jnp.float32):
        self.linear = nnx.Linear(d, d, param_dtype=dtype, rngs=rngs)

    def __call__(self, h, mask):
        return jnp.tanh(self.linear(h)) * mask


class WithMask(nnx.Module):
    """The recipe of the error message: a wrapper that stores the extra call argument."""

    def __init__(self, block, mask):
        self.block, self.mask = block, nnx.Variable(mask)

    def __call__(self, h):
        return self.block(h, self.mask[...])


class Dropped(nnx.Module):
    def __init__(self, d, *, rngs, store_rngs):
        self.linear = nnx.Linear(d, d, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs if store_rngs else None)

    def __call__(self, h):
        return self.dropout(jnp.tanh(self.linear(h)))


class SumOverBatch(nnx.Module):
    def __call__(self, h):
        return jnp.sum(h, axis=0)


class Halve(nnx.Module):
    """Identical blocks (a scanned run under scan=True) that halve the last axis."""

    def __init__(self):
        self.gain = nnx.Param(jnp.ones(()))

    def __call__(self, h):
        return self.gain[...] * h[..., ::2]


class Net(nnx.Module):
    def __init__(self, blocks, head=None):
        self.blocks = nnx.List(blocks)
        self.head = head

    def __call__(self, x):
        h = self.embed(x) if getattr(self, "embed", None) is not None else x
        for block in self.blocks:
            h = block(h)
        return h if self.head is None else self.head(h)


def _net(*blocks):
    return Net(list(blocks))


def test_block_returning_a_tuple_is_named():
    rngs = nnx.Rngs(0)
    model = _net(*[Dense(3, rngs=rngs) for _ in range(7)], Dense(3, rngs=rngs, returns_tuple=True))
    with pytest.raises(ValueError, match=r"`model.blocks\[7\]` \(Dense\) returned a tuple, not one array.*"
                                         r"return self.block\(h\)\[0\]"):  # fmt: skip
        measure.gradient_flow(model, X, jnp.zeros((2, 3)))


def test_plain_functions_in_blocks_are_named():
    model = Net([Dense(3, rngs=nnx.Rngs(0))])
    model.blocks.append(jnp.tanh)
    for call in (lambda: measure.gradient_flow(model, X, X), lambda: measure.jacobian_norms(model, X)):
        with pytest.raises(TypeError, match=r"`model.blocks\[1\]` is a function \(tanh\), not an nnx.Module.*"
                                            r"class Tanh\(nnx.Module\)"):  # fmt: skip
            call()


def test_block_with_extra_call_arguments_says_how_to_bind_them(x64):
    rngs = nnx.Rngs(0)
    model = _net(Dense(3, rngs=rngs), Masked(3, rngs=rngs))
    with pytest.raises(ValueError, match=r"`model.blocks\[1\]` \(Masked\) fails when called as block\(h\).*"
                                         r"missing 1 required positional argument: 'mask'.*wrapper module"):  # fmt: skip
        measure.gradient_flow(model, X, X)
    # the recipe of the message works, and the measure is exact for it
    mask = jnp.array([[1.0, 0.0, 1.0]], jnp.float64)
    f64 = jnp.float64
    fixed = _net(
        Dense(3, rngs=nnx.Rngs(2), dtype=f64), WithMask(Masked(3, rngs=nnx.Rngs(3), dtype=f64), mask)
    )
    x, y = data(0, 4, 3, 3, jnp.float64)
    assert_flow_close(measure.gradient_flow(fixed, x, y), brute_force_flow(fixed, x, y), TOL64)


def test_dropout_without_stored_rngs_says_how_key_reseeds():
    rngs = nnx.Rngs(0)
    model = _net(Dense(3, rngs=rngs), Dropped(3, rngs=rngs, store_rngs=False))
    measure.gradient_flow(model, X, X)  # evaluation view: deterministic, no RNG needed
    with pytest.raises(ValueError, match=r"`model.blocks\[1\]` \(Dropped\) fails .*rngs.*"
                                         r"nnx.Dropout\(rate, rngs=rngs\).*`key` reseeds every RNG stream"):  # fmt: skip
        measure.gradient_flow(model, X, X, train=True, key=jax.random.key(0))
    stored = _net(Dense(3, rngs=rngs), Dropped(3, rngs=rngs, store_rngs=True))
    a = measure.gradient_flow(stored, X, X, train=True, key=jax.random.key(0))
    b = measure.gradient_flow(stored, X, X, train=True, key=jax.random.key(1))
    assert np.any(np.asarray(a.log10_act_grad) != np.asarray(b.log10_act_grad))  # the key decides


def test_block_that_drops_the_batch_axis_is_named():
    model = _net(Dense(3, rngs=nnx.Rngs(0)), SumOverBatch())
    with pytest.raises(ValueError, match=r"`model.blocks\[1\]` \(SumOverBatch\) returned shape \(3,\), whose "
                                         r"first axis is not the batch \(2"):  # fmt: skip
        measure.jacobian_norms(model, X)


def test_one_example_into_a_model_without_stated_input_size():
    model = _net(nnx.Linear(3, 5, rngs=nnx.Rngs(0)))  # no `in_features`: found by the walk
    with pytest.raises(
        ValueError, match=r"returned shape \(5,\), whose first axis is not the batch.*x\[None\]"
    ):
        measure.jacobian_norms(model, X[0])


def test_scanned_run_that_changes_shape_says_scan_false():
    model = _net(*[Halve() for _ in range(3)])
    x = jnp.ones((2, 16))
    with pytest.raises(ValueError, match=r"`model.blocks\[0:3\]` are 3 identical groups.*Pass scan=False"):
        measure.jacobian_norms(model, x, scan=True)
    assert measure.jacobian_norms(model, x, scan=False).log10_fro.shape == (2, 4)


def test_embed_that_does_not_take_x_keeps_the_x_message():
    model = Net([Dense(3, rngs=nnx.Rngs(0))])
    model.embed = nnx.Embed(5, 3, rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match=r"`x` of shape \(2, 3\) does not fit the model: `model.embed` \(Embed\)"
    ):
        measure.jacobian_norms(model, X)


# ------------------------------------------------------------------------------------------------
# model(x) against the contract forward (issue 13): refused when __call__ computes something else
# ------------------------------------------------------------------------------------------------


class ExtraBeforeHead(BlockNet):
    def __init__(self, *, rngs):
        self.blocks = nnx.List([Dense(3, rngs=rngs) for _ in range(3)])
        self.head = nnx.Linear(3, 2, rngs=rngs)

    def __call__(self, x):
        h = x
        for block in self.blocks:
            h = block(h)
        return self.head(jnp.tanh(h) * 3)  # not head(blocks(x))


def test_call_that_differs_from_the_contract_is_refused():
    model = ExtraBeforeHead(rngs=nnx.Rngs(0))
    y = jnp.zeros((2, 2))
    calls = (
        lambda **kw: measure.gradient_flow(model, X, y, **kw),
        lambda **kw: measure.jacobian_norms(model, X, **kw),
        lambda **kw: measure.jacobian_spectrum(model, X[0], **kw),
    )
    for call in calls:
        with pytest.raises(ValueError, match=r"`model\(x\)` differs from the block-contract forward.*"
                                             r"check_forward=False"):  # fmt: skip
            call()
        call(check_forward=False)  # opted out: measured as the contract forward
    flow = measure.gradient_flow(model, X, y, check_forward=False)
    h = X
    for block in model.blocks:
        h = block(h)
    np.testing.assert_allclose(flow.loss, jnp.mean(model.head(h) ** 2), rtol=1e-6)


def test_forward_check_runs_once_per_structure(monkeypatch):
    calls = []
    monkeypatch.setattr(validate, "_compare", lambda *a: calls.append(1))
    model = jaxvg.MLP(3, 5, 2, 1, rngs=nnx.Rngs(0))
    x = jnp.ones((3, 3))
    measure.gradient_flow(model, x, jnp.zeros((3, 1)))
    measure.gradient_flow(jaxvg.MLP(3, 5, 2, 1, rngs=nnx.Rngs(1)), x + 1, jnp.zeros((3, 1)))  # same structure
    assert len(calls) <= 1  # 0 when an earlier test already checked this structure and shape
    measure.gradient_flow(model, jnp.ones((4, 3)), jnp.zeros((4, 1)))  # a new input shape
    assert len(calls) <= 2


def test_a_device_array_is_checked_finite_once_a_host_array_every_call(monkeypatch):
    calls = []
    flags = validate._finite_flags
    monkeypatch.setattr(validate, "_finite_flags", lambda leaves: calls.append(len(leaves)) or flags(leaves))
    model = jaxvg.MLP(3, 5, 2, 1, rngs=nnx.Rngs(0))
    x, y = jax.random.normal(jax.random.key(7), (3, 3)), jnp.zeros((3, 1))
    first = measure.gradient_flow(model, x, y)
    assert calls == [1]
    measure.gradient_flow(model, x, y)
    measure.jacobian_norms(model, x)
    assert calls == [1]  # the same (immutable) jax array: not checked again
    same_values = x + 0
    measure.gradient_flow(model, same_values, y)
    assert calls == [1, 1]  # another array object is checked
    bad = x.at[1, 2].set(jnp.nan)
    for _ in range(2):  # a non-finite array is never remembered as finite
        with pytest.raises(ValueError, match=r"`x` must be finite, got 1 NaN/Inf"):
            measure.gradient_flow(model, bad, y)
    host = np.asarray(x).copy()
    measure.gradient_flow(model, host, y)
    host[0, 0] = np.inf  # numpy arrays are mutable: checked on the host at every call
    with pytest.raises(ValueError, match=r"`x` must be finite, got 1 NaN/Inf"):
        measure.gradient_flow(model, host, y)
    assert calls == [1, 1, 1, 1]
    np.testing.assert_array_equal(measure.gradient_flow(model, x, y).log10_act_grad, first.log10_act_grad)


def test_remembered_arrays_are_forgotten_when_they_die_and_bounded():
    validate._KNOWN_FINITE.clear()
    x = jnp.ones((2, 3))
    validate.check_finite("x", x)
    assert validate._known_finite(x)
    del x
    assert not validate._KNOWN_FINITE
    keep = [jnp.full((2,), float(i)) for i in range(validate._KNOWN_FINITE_MAX + 5)]
    for v in keep:
        validate.check_finite("x", v)
    assert len(validate._KNOWN_FINITE) == validate._KNOWN_FINITE_MAX
    assert validate._known_finite(keep[-1]) and not validate._known_finite(keep[0])


def _state(model):
    def host(v):
        return np.asarray(jax.random.key_data(v) if jnp.issubdtype(v.dtype, jax.dtypes.prng_key) else v)

    return jax.tree.map(host, nnx.to_pure_dict(nnx.state(model)))


def test_forward_check_leaves_the_model_alone():
    model = jaxvg.MLP(3, 4, 2, 1, norm="batch", dropout=0.3, rngs=nnx.Rngs(4))
    before = copy.deepcopy(_state(model))
    measure.gradient_flow(model, jnp.ones((5, 3)) * 2, jnp.zeros((5, 1)), check_forward=True)
    jax.tree.map(np.testing.assert_array_equal, before, _state(model))


# ------------------------------------------------------------------------------------------------
# Tied blocks
# ------------------------------------------------------------------------------------------------


def test_tied_blocks_are_refused_with_the_true_gradient_explained():
    rngs = nnx.Rngs(0)
    shared = Dense(3, rngs=rngs)
    model = _net(shared, Dense(3, rngs=rngs), shared)
    with pytest.raises(ValueError, match=r"`model.blocks\[0\]` and `model.blocks\[2\]` hold the same module "
                                         r"object.*per-use gradients.*sum over its uses.*nnx.clone"):  # fmt: skip
        measure.gradient_flow(model, X, X)
    with pytest.raises(ValueError, match=r"tied blocks"):
        measure.Probe(model).gradient_flow(X, X)
    measure.jacobian_norms(model, X)  # the Jacobians do not depend on tying
    # the recipe of the message: an untied copy gives per-use numbers, the tied model is untouched
    untied = nnx.clone(model)
    untied.blocks = nnx.List([nnx.clone(b) for b in untied.blocks])
    flow = measure.gradient_flow(untied, X, X)
    assert np.all(np.isfinite(flow.log10_param_grad)) and model.blocks[0] is model.blocks[2]


def test_shared_parameter_between_different_blocks_is_refused():
    rngs = nnx.Rngs(0)
    a, b = Dense(3, rngs=rngs), Dense(3, rngs=rngs)
    b.linear.kernel = a.linear.kernel  # one Variable in two blocks
    with pytest.raises(ValueError, match=r"`model.blocks\[0\]` and `model.blocks\[1\]` hold shared parameters: "
                                         r"parameters \['linear/kernel'\]"):  # fmt: skip
        measure.gradient_flow(_net(a, b), X, X)


class TiedHead(nnx.Module):
    def __init__(self, embed):
        self.embed = embed

    def __call__(self, h):
        return self.embed.attend(h)


def test_tied_input_and_output_embeddings_are_allowed():
    rngs = nnx.Rngs(0)
    embed = nnx.Embed(5, 3, rngs=rngs)
    model = Net([Dense(3, rngs=rngs)], head=TiedHead(embed))
    model.embed = embed
    tokens = jnp.array([[0, 1], [2, 4]])
    flow = measure.gradient_flow(model, tokens, jnp.array([[1, 2], [3, 0]]), loss="cross_entropy")
    assert np.all(np.isfinite(flow.log10_act_grad))


def test_retying_blocks_after_a_first_measurement_is_seen():
    rngs = nnx.Rngs(0)
    model = _net(Dense(3, rngs=rngs), Dense(3, rngs=rngs))
    measure.gradient_flow(model, X, X)
    model.blocks[1] = model.blocks[0]
    with pytest.raises(ValueError, match=r"tied blocks"):
        measure.gradient_flow(model, X, X)


@pytest.mark.parametrize(
    "value, finite",
    [(1.0, True), (3e38, True), (-3e38, True), (jnp.inf, False), (-jnp.inf, False), (jnp.nan, False)],
)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_all_finite_flags_exactly_the_non_finite_entries(value, finite, dtype):
    """`all_finite` (isfinite of Σ v·0) under jit: one entry among finite ones decides; the largest
    finite float32 entries (whose plain sum would overflow) are finite, and so are their bf16/fp16
    casts only where representable (fp16 overflows 3e38 to inf, so that one is not)."""
    v = jnp.ones((3, 5), jnp.float32).at[1, 2].set(value).astype(dtype)
    expected = bool(np.all(np.isfinite(np.asarray(v, np.float32))))
    assert expected == (finite and not (dtype == jnp.float16 and abs(value) > 1e5))
    assert bool(jax.jit(validate.all_finite)(v)) == expected
    assert bool(jax.jit(validate.all_finite)({"a": jnp.ones(2), "b": [v, jnp.arange(3)]})) == expected
