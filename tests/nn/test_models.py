"""jaxvg.nn.models.MLP: the block contract, residual/norm/dropout, dtypes, determinism, stacking
statics, the depth mask and scanned blocks, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvg.nn import activations, models

X = jax.random.normal(jax.random.key(42), (6, 3))


def _manual_forward(model, x):
    h = x
    for block in model.blocks:
        h = block(h)
    return h if model.head is None else model.head(h)


def test_block_contract():
    model = models.MLP(3, 8, 4, 2, activation="sigmoid", rngs=nnx.Rngs(0))
    assert isinstance(model.blocks, nnx.List) and len(model.blocks) == 4
    shapes = [(3, 8), (8, 8), (8, 8), (8, 8)]
    h = X
    for block, shape in zip(model.blocks, shapes, strict=True):
        assert isinstance(block.linear, nnx.Linear)
        assert block.linear.kernel[...].shape == shape
        assert block.activation is activations.get("sigmoid")
        assert block.norm is None and block.dropout is None and not block.residual
        z = h @ block.linear.kernel[...] + block.linear.bias[...][None, :]
        np.testing.assert_allclose(block.preactivation(h), z, rtol=1e-6, atol=1e-6)
        h_next = block(h)
        np.testing.assert_array_equal(h_next, jax.nn.sigmoid(block.preactivation(h)))
        h = h_next
    assert isinstance(model.head, nnx.Linear) and model.head.kernel[...].shape == (8, 2)
    out = model(X)
    assert out.shape == (6, 2)
    np.testing.assert_array_equal(out, model.head(h))
    np.testing.assert_array_equal(out, _manual_forward(model, X))


def test_no_head():
    model = models.MLP(3, 8, 2, None, rngs=nnx.Rngs(0))
    assert model.head is None
    out = model(X)
    assert out.shape == (6, 8)
    np.testing.assert_array_equal(out, model.blocks[1](model.blocks[0](X)))


def test_no_bias():
    model = models.MLP(3, 8, 2, 1, use_bias=False, rngs=nnx.Rngs(0))
    assert all(b.linear.bias is None for b in model.blocks) and model.head.bias is None
    np.testing.assert_allclose(
        model.blocks[0].preactivation(X), X @ model.blocks[0].linear.kernel[...], rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("in_features, plain_first", [(3, True), (8, False)])
def test_residual(in_features, plain_first):
    model = models.MLP(in_features, 8, 3, 1, residual=True, rngs=nnx.Rngs(0))
    assert [b.residual for b in model.blocks] == [not plain_first, True, True]
    x = jax.random.normal(jax.random.key(1), (5, in_features))
    h = x
    for block in model.blocks:
        branch = jnp.tanh(block.preactivation(h))
        expected = h + branch if block.residual else branch
        np.testing.assert_array_equal(block(h), expected)
        h = expected
    np.testing.assert_array_equal(model(x), model.head(h))


def test_layer_norm():
    model = models.MLP(3, 16, 2, 1, norm="layer", rngs=nnx.Rngs(0))
    block = model.blocks[1]
    assert isinstance(block.norm, nnx.LayerNorm)
    h = model.blocks[0](X)
    z = np.asarray(block.preactivation(h), np.float64)
    # LayerNorm at init (scale 1, bias 0): each row mean 0, variance v/(v + 1e-6) ~ 1
    np.testing.assert_allclose(z.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.var(axis=1), 1.0, rtol=1e-3)
    np.testing.assert_allclose(block(h), jnp.tanh(block.preactivation(h)), rtol=1e-6)


def test_batch_norm_train_and_eval():
    model = models.MLP(3, 16, 2, 1, norm="batch", rngs=nnx.Rngs(0))
    block = model.blocks[0]
    assert isinstance(block.norm, nnx.BatchNorm)
    x = jax.random.normal(jax.random.key(3), (32, 3))
    # training mode: each unit normalised over the batch
    z = np.asarray(block.preactivation(x), np.float64)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.var(axis=0), 1.0, rtol=1e-3)
    # evaluation mode: running statistics (one update from (mean 0, var 1) at momentum 0.99, so
    # still close to the initial values): nearly the raw linear output
    model.eval()
    linear = np.asarray(block.linear(x), np.float64)
    mean = np.asarray(block.norm.mean[...], np.float64)
    var = np.asarray(block.norm.var[...], np.float64)
    expected = (linear - mean[None, :]) / np.sqrt(var[None, :] + block.norm.epsilon)
    np.testing.assert_allclose(block.preactivation(x), expected, rtol=1e-5, atol=1e-5)
    # eval output does not depend on the rest of the batch; train output does
    np.testing.assert_allclose(model(x)[:4], model(x[:4]), rtol=1e-6, atol=1e-6)
    model.train()
    assert not np.allclose(model(x)[:4], model(x[:4]), atol=1e-3)


def test_dropout_train_only():
    rate = 0.5
    model = models.MLP(3, 64, 2, 1, dropout=rate, rngs=nnx.Rngs(0))
    assert all(isinstance(b.dropout, nnx.Dropout) for b in model.blocks)
    ref = models.MLP(3, 64, 2, 1, rngs=nnx.Rngs(0))  # same seed, no dropout
    # evaluation mode: deterministic, and equal to the net without dropout
    model.eval()
    a, b = model(X), model(X)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, ref(X))
    # training mode: masks vary from call to call; kept units are scaled by 1/(1 - rate)
    model.train()
    c, d = model(X), model(X)
    assert not np.allclose(c, d)
    block = model.blocks[0]
    clean = np.asarray(jnp.tanh(block.preactivation(X)))
    dropped = np.asarray(block(X))
    kept = dropped != 0
    np.testing.assert_allclose(dropped[kept], clean[kept] / (1 - rate), rtol=1e-6)
    # share of dropped units: 384 Bernoulli(0.5) draws, SE 0.026; allow 5 SE
    assert abs((~kept).mean() - rate) < 0.13


def test_dropout_zero_has_no_layer():
    model = models.MLP(3, 8, 2, 1, dropout=0.0, rngs=nnx.Rngs(0))
    assert all(b.dropout is None for b in model.blocks)


def test_float64_params_under_x64(x64):
    model = models.MLP(3, 8, 3, 2, norm="layer", param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)):
        assert leaf.dtype == jnp.float64
    out = model(jnp.asarray(X, jnp.float64))
    assert out.dtype == jnp.float64


def test_float64_without_x64_says_how_to_enable():
    assert not jax.config.jax_enable_x64
    with pytest.raises(ValueError, match=r"`param_dtype=float64`.*jax_enable_x64") as err:
        models.MLP(3, 8, 2, 1, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    assert "jax.config.update('jax_enable_x64', True)" in str(err.value)


def test_integer_param_dtype_rejected():
    with pytest.raises(ValueError, match=r"`param_dtype` must be a floating dtype, got .*int32"):
        models.MLP(3, 8, 2, 1, param_dtype=jnp.int32, rngs=nnx.Rngs(0))


def test_same_seed_same_outputs():
    a = models.MLP(3, 8, 3, 2, rngs=nnx.Rngs(5))
    b = models.MLP(3, 8, 3, 2, rngs=nnx.Rngs(5))
    np.testing.assert_array_equal(a(X), b(X))


@pytest.mark.parametrize(
    "kwargs", [{"norm": "batch"}, {"norm": "layer"}, {"dropout": 0.3}, {"residual": True, "norm": "layer"}]
)
def test_cures_start_from_the_same_weights(kwargs):
    # Same seed, same kernels and biases whatever the norm/dropout/residual options, so a cure is
    # compared with the plain net from one initialisation.
    plain = models.MLP(3, 8, 3, 2, init="gaussian", sigma_b2=0.1, rngs=nnx.Rngs(9))
    cured = models.MLP(3, 8, 3, 2, init="gaussian", sigma_b2=0.1, rngs=nnx.Rngs(9), **kwargs)
    for a, b in zip([*plain.blocks, plain.head], [*cured.blocks, cured.head], strict=True):
        linear_a, linear_b = getattr(a, "linear", a), getattr(b, "linear", b)
        np.testing.assert_array_equal(linear_a.kernel[...], linear_b.kernel[...])
        np.testing.assert_array_equal(linear_a.bias[...], linear_b.bias[...])


def test_callable_activation_shares_one_object():
    def cube(x):
        return x**3

    a = models.MLP(3, 4, 2, 1, activation=cube, rngs=nnx.Rngs(0))
    b = models.MLP(3, 4, 2, 1, activation=cube, rngs=nnx.Rngs(1))
    assert a.blocks[0].activation is b.blocks[1].activation is activations.get(cube)
    z = a.blocks[0].preactivation(X)
    np.testing.assert_allclose(a.blocks[0](X), z**3, rtol=1e-6)


def test_jit_over_split_state():
    # the block contract survives nnx.split/merge, as the analysis and training engines use it
    model = models.MLP(3, 8, 3, 2, residual=True, norm="layer", rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    forward = jax.jit(lambda p, x: nnx.merge(graphdef, p, rest)(x))
    np.testing.assert_allclose(forward(params, X), model(X), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"depth": 0}, r"`depth` must be an integer >= 1, got 0"),
        ({"depth": -2}, r"`depth` must be an integer >= 1, got -2"),
        ({"depth": 2.0}, r"`depth` must be an integer >= 1, got 2.0"),
        ({"width": 0}, r"`width` must be an integer >= 1, got 0"),
        ({"in_features": 0}, r"`in_features` must be an integer >= 1, got 0"),
        ({"out_features": 0}, r"`out_features` must be an integer >= 1, got 0"),
        (
            {"activation": "sigmod"},
            r"`activation` must be one of \[.*'sigmoid'.*\] or a callable, got 'sigmod'",
        ),
        ({"init": "xavier_normal"}, r"`init` must be one of \[.*'he_normal'.*\], got 'xavier_normal'"),
        ({"norm": "group"}, r"`norm` must be one of \[None, 'batch', 'layer'\], got 'group'"),
        ({"init": "he_normal", "sigma_w2": 2.0}, r"`sigma_w2`/`sigma_b2` apply only to .*sigma_w2=2.0"),
        ({"init": "lecun_normal", "sigma_b2": 0.05}, r"`sigma_w2`/`sigma_b2` apply only to .*sigma_b2=0.05"),
        ({"init": "glorot_uniform", "sigma_w2": 0.5}, r"init='glorot_uniform'.*sigma_w2=0.5"),
        ({"init": "gaussian", "sigma_w2": -1.0}, r"`sigma_w2` must be a finite number > 0, got -1.0"),
        ({"init": "gaussian", "sigma_b2": -0.1}, r"`sigma_b2` must be a finite number >= 0, got -0.1"),
        ({"dropout": 1.0}, r"`dropout` must lie in \[0.0, 1.0\), got 1.0"),
        ({"dropout": -0.1}, r"`dropout` must lie in \[0.0, 1.0\), got -0.1"),
        ({"dropout": float("nan")}, r"`dropout` must lie in \[0.0, 1.0\), got nan"),
        ({"max_depth": 1}, r"`max_depth` must be None or >= `depth` = 2, got 1"),
        ({"max_depth": 0}, r"`max_depth` must be an integer >= 1, got 0"),
        ({"scan_blocks": 1}, r"`scan_blocks` must be True or False, got 1"),
    ],
)
def test_bad_input(kwargs, match):
    args = {"in_features": 3, "width": 8, "depth": 2, "out_features": 1} | kwargs
    with pytest.raises(ValueError, match=match):
        models.MLP(**args, rngs=nnx.Rngs(0))


def test_bad_activation_type_and_rngs():
    with pytest.raises(TypeError, match=r"`activation` must be a name in .* or a callable, got int"):
        models.MLP(3, 8, 2, 1, activation=3, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=r"`rngs` must be an nnx.Rngs, got int"):
        models.MLP(3, 8, 2, 1, rngs=0)


# ----------------------------------------------------------------------------- stacking statics


def _graphdef(model):
    return nnx.split(model, nnx.Param, ...)[0]


def test_init_variances_are_not_in_the_graphdef():
    """sigma_w2, sigma_b2 and the init scheme shape the initial weights only: nets that differ in
    them share a graphdef (so they stack), unlike nets that differ in structure."""
    base = models.MLP(3, 8, 2, 1, init="gaussian", rngs=nnx.Rngs(0))
    same = [
        models.MLP(3, 8, 2, 1, init="gaussian", sigma_w2=2.0, sigma_b2=0.05, rngs=nnx.Rngs(1)),
        models.MLP(3, 8, 2, 1, init="orthogonal", sigma_w2=1.5, rngs=nnx.Rngs(0)),
        models.MLP(3, 8, 2, 1, init="he_normal", rngs=nnx.Rngs(0)),
    ]
    for other in same:
        assert _graphdef(other) == _graphdef(base)
    for other in [
        models.MLP(3, 8, 2, 1, activation="relu", init="gaussian", rngs=nnx.Rngs(0)),
        models.MLP(3, 8, 2, 1, init="gaussian", residual=True, rngs=nnx.Rngs(0)),
        models.MLP(3, 8, 2, 1, init="gaussian", max_depth=2, rngs=nnx.Rngs(0)),
    ]:
        assert _graphdef(other) != _graphdef(base)


# ----------------------------------------------------------------------------- depth mask and scan


@pytest.mark.parametrize("scan_blocks", [False, True])
@pytest.mark.parametrize(
    "kwargs", [{}, {"norm": "batch", "dropout": 0.3}, {"residual": True, "norm": "layer"}]
)
def test_depth_masked_net_is_the_shallower_net(x64, scan_blocks, kwargs):
    """MLP(depth=3, max_depth=7) draws its active blocks, head and dropout streams like MLP(depth=3):
    the same parameters, and the same outputs in float64 (training mode: the same dropout masks and
    batch statistics; unrolled: bitwise)."""
    kw = dict(activation="tanh", param_dtype=jnp.float64, **kwargs)
    x = jnp.asarray(jax.random.normal(jax.random.key(4), (16, 8)), jnp.float64)
    shallow = models.MLP(8, 8, 3, 2, rngs=nnx.Rngs(7), **kw)
    masked = models.MLP(8, 8, 3, 2, max_depth=7, scan_blocks=scan_blocks, rngs=nnx.Rngs(7), **kw)
    assert len(masked.blocks) == 7 and int(masked.active_blocks[...]) == 3
    assert isinstance(masked.active_blocks, models.ActiveBlocks) and not isinstance(
        masked.active_blocks, nnx.Param
    )
    for a, b in zip([*masked.blocks[:3], masked.head], [*shallow.blocks, shallow.head], strict=True):
        for u, v in zip(
            jax.tree.leaves(nnx.state(a, nnx.Param)), jax.tree.leaves(nnx.state(b, nnx.Param)), strict=True
        ):
            np.testing.assert_array_equal(u, v)
    for _ in range(2):  # twice: dropout streams and batch statistics advance alike
        want, got = shallow(x), masked(x)
        if scan_blocks:
            np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)
        else:
            np.testing.assert_array_equal(got, want)
    if "norm" in kwargs and kwargs["norm"] == "batch":
        np.testing.assert_allclose(
            masked.blocks[2].norm.mean[...], shallow.blocks[2].norm.mean[...], rtol=1e-13
        )
    masked.eval(), shallow.eval()
    np.testing.assert_allclose(masked(x), shallow(x), rtol=1e-13, atol=1e-14)


def test_inactive_blocks_get_exactly_zero_gradient():
    model = models.MLP(3, 8, 2, 1, max_depth=5, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    grads = jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p, rest)(X) ** 2))(params)
    for i in range(5):
        norms = [float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["blocks"][i])]
        assert (max(norms) > 0) == (i < 2), (i, norms)


def test_depth_is_a_variable_that_stacks_and_vmaps():
    """Nets of depths 1..4 padded to 4 stack in one state; vmapping the forward over the stack gives
    each net its own depth (the output of MLP(depth=d) from the same seed)."""
    nets = [models.MLP(3, 8, d, 2, max_depth=4, scan_blocks=True, rngs=nnx.Rngs(0)) for d in (1, 2, 3, 4)]
    graphdef = _graphdef(nets[0])
    assert all(_graphdef(n) == graphdef for n in nets)
    states = [nnx.split(n, nnx.Param, ...)[1:] for n in nets]
    params, rest = jax.tree.map(lambda *a: jnp.stack(a), *states)
    out = jax.vmap(lambda p, r: nnx.merge(graphdef, p, r)(X))(params, rest)
    for d in (1, 2, 3, 4):
        np.testing.assert_allclose(
            out[d - 1], models.MLP(3, 8, d, 2, rngs=nnx.Rngs(0))(X), rtol=1e-6, atol=1e-6
        )


def test_scanned_blocks_equal_the_unrolled_loop_at_depth(x64):
    """40 batch-normed blocks under one scan: the unrolled function to float64 rounding (in float32,
    40 normalisations over a batch of 6 amplify rounding to ~1e-4), batch statistics included."""
    kw = dict(activation="sigmoid", norm="batch", param_dtype=jnp.float64)
    unrolled = models.MLP(3, 16, 40, 2, rngs=nnx.Rngs(2), **kw)
    scanned = models.MLP(3, 16, 40, 2, scan_blocks=True, rngs=nnx.Rngs(2), **kw)
    assert len(scanned.blocks) == 40 and scanned.active_blocks is None  # the contract holds
    x = jnp.asarray(X, jnp.float64)
    np.testing.assert_allclose(scanned(x), unrolled(x), rtol=1e-11, atol=1e-12)
    for i in (1, 20, 39):  # batch statistics updated through the scan, block by block
        np.testing.assert_allclose(
            scanned.blocks[i].norm.mean[...], unrolled.blocks[i].norm.mean[...], rtol=1e-11
        )
        assert np.abs(np.asarray(scanned.blocks[i].norm.mean[...])).max() > 0
    graphdef, params, rest = nnx.split(scanned, nnx.Param, ...)
    forward = jax.jit(lambda p, x: nnx.merge(graphdef, p, rest, copy=True)(x))
    np.testing.assert_allclose(forward(params, x), unrolled(x), rtol=1e-11, atol=1e-12)  # training mode
    np.testing.assert_allclose(scanned(x), _manual_forward(scanned, x), rtol=1e-11, atol=1e-12)
