"""jaxvg.analysis against brute force: full jax.jacfwd Jacobians and explicit products in float64
(1e-10 decades), float32 against float64 (1e-4 decades), and a float64 numpy log-space reference for
a deep sigmoid net where float32 and float64 gradients underflow."""

import copy
import math
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxvg
from jaxvg.measure import analysis
from jaxvg.nn import losses

TOL64 = 1e-10  # decades: float64 against float64 brute force (rounding ~1e-15 per op)
TOL32 = 1e-4  # decades: float32 against a float64 reference (eps32 ~ 1e-7 times a few hundred ops)


# ------------------------------------------------------------------------------------------------
# Brute-force references (explicit Jacobians, no renormalisation; fine where nothing underflows)
# ------------------------------------------------------------------------------------------------


def _view(model, train=False):
    return nnx.view(model, deterministic=not train, use_running_average=not train, raise_if_not_found=False)


def _pure(module):
    if module is None:
        return lambda h: h
    gd, state = nnx.split(module)
    return lambda h: nnx.merge(gd, state, copy=True)(h)


def _brute_force_flow(model, x, y, loss="mse", train=False):
    """log10 quantities of GradientFlow by explicit products of full jacfwd block Jacobians (one
    jitted program: eager jacfwd would dominate the test time)."""
    view = _view(model, train)
    lossfn = losses.get(loss)
    has_linear = [isinstance(getattr(b, "linear", None), nnx.Linear) for b in view.blocks]
    has_z = [hasattr(b, "preactivation") for b in view.blocks]
    gd, params, rest = nnx.split(view, nnx.Param, ...)

    @jax.jit
    def compute(params, rest, x, y):
        m = nnx.merge(gd, params, rest, copy=True)
        embed, head = _pure(getattr(m, "embed", None)), _pure(getattr(m, "head", None))
        blocks = [_pure(b) for b in m.blocks]
        hs = [embed(x)]
        for f in blocks:
            hs.append(f(hs[-1]))
        delta = jax.grad(lambda h: lossfn(head(h), y))(hs[-1]).reshape(-1)
        deltas = [delta]
        for f, h in zip(blocks[::-1], hs[-2::-1], strict=True):
            jac = jax.jacfwd(f)(h).reshape(delta.size, h.size)  # full J_l, batch included (couplings too)
            delta = jac.T @ delta
            deltas.append(delta)
        act = jnp.stack([jnp.linalg.norm(d) for d in deltas[::-1]])

        def full_loss(p):
            return lossfn(nnx.merge(gd, p, rest, copy=True)(x), y)

        loss_value, grads = jax.value_and_grad(full_loss)(params)
        param, kernel, dphi, dead = [], [], [], []
        for i, block in enumerate(m.blocks):
            g = grads["blocks"][i]
            param.append(jnp.sqrt(sum(jnp.sum(v**2) for v in jax.tree.leaves(g))))
            kernel.append(jnp.linalg.norm(g["linear"]["kernel"][...]) if has_linear[i] else jnp.nan)
            if has_z[i]:
                z = nnx.merge(*nnx.split(block), copy=True).preactivation(hs[i])
                d = jax.vmap(jax.grad(block.activation.fn))(z.reshape(-1)).reshape(z.shape)
                dphi.append(jnp.sqrt(jnp.mean(d**2)))
                dead.append(jnp.mean(jnp.all(d == 0, axis=0)))
            else:
                dphi.append(jnp.nan)
                dead.append(jnp.nan)
        return act, jnp.stack(param), jnp.stack(kernel), jnp.stack(dphi), jnp.stack(dead), loss_value

    act, param, kernel, dphi, dead, loss_value = (
        np.asarray(v, np.float64) for v in compute(params, rest, x, y)
    )
    log10_act = np.log10(act)
    return dict(
        log10_act_grad=log10_act,
        log10_gain=log10_act[:-1] - log10_act[1:],
        log10_param_grad=np.log10(param),
        log10_kernel_grad=np.log10(kernel),
        log10_dphi=np.log10(dphi),
        dead_fraction=dead,
        loss=float(loss_value),
    )


def _assert_flow_close(flow, ref, tol):
    for name, want in ref.items():
        got = np.asarray(getattr(flow, name), dtype=np.float64)
        np.testing.assert_allclose(
            got, want, rtol=0, atol=tol if name != "loss" else tol * abs(want) * 3, err_msg=name
        )


def _cast(model, dtype):
    """A copy of `model` with every floating array cast to `dtype` (same values up to rounding)."""
    gd, state = nnx.split(model)
    state = jax.tree.map(lambda v: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, state)
    return nnx.merge(gd, state)


def _data(key, batch, d_in, d_out, dtype):
    kx, ky = jax.random.split(jax.random.key(key))
    return jax.random.normal(kx, (batch, d_in), dtype), jax.random.normal(ky, (batch, d_out), dtype)


# ------------------------------------------------------------------------------------------------
# gradient_flow on every MLP option, float64 brute force
# ------------------------------------------------------------------------------------------------

MLP_OPTIONS = {
    "tanh": dict(activation="tanh"),
    "sigmoid": dict(activation="sigmoid", sigma_w2=2.0, sigma_b2=0.1, init="gaussian"),
    "relu_residual": dict(activation="relu", init="he_normal", residual=True),
    "layer_norm": dict(activation="tanh", norm="layer"),
    "batch_norm": dict(activation="relu", init="he_normal", norm="batch"),
}


@pytest.mark.parametrize("name", list(MLP_OPTIONS))
def test_gradient_flow_matches_brute_force_float64(x64, name):
    model = jaxvg.MLP(3, 8, 5, 2, param_dtype=jnp.float64, rngs=nnx.Rngs(1), **MLP_OPTIONS[name])
    x, y = _data(0, 6, 3, 2, jnp.float64)
    flow = analysis.gradient_flow(model, x, y)
    _assert_flow_close(flow, _brute_force_flow(model, x, y), TOL64)


# flax's BatchNorm keeps float32 running statistics even with param_dtype=float64; updating them in
# train mode warns (a flax limitation, harmless here: analysis discards the update).
@pytest.mark.filterwarnings("ignore:scatter inputs have incompatible types:FutureWarning")
def test_gradient_flow_batch_norm_train_mode_couples_examples(x64):
    model = jaxvg.MLP(3, 8, 4, 2, norm="batch", param_dtype=jnp.float64, rngs=nnx.Rngs(2))
    x, y = _data(1, 6, 3, 2, jnp.float64)
    flow = analysis.gradient_flow(model, x, y, train=True)
    _assert_flow_close(flow, _brute_force_flow(model, x, y, train=True), TOL64)
    eval_flow = analysis.gradient_flow(model, x, y)
    assert np.max(np.abs(flow.log10_act_grad - eval_flow.log10_act_grad)) > 1e-3  # train mode differs


def test_gradient_flow_scan_equals_unrolled(x64, monkeypatch):
    model = jaxvg.MLP(3, 8, 6, 2, activation="tanh", norm="layer", param_dtype=jnp.float64, rngs=nnx.Rngs(3))
    x, y = _data(2, 5, 3, 2, jnp.float64)
    unrolled = analysis.gradient_flow(model, x, y)
    monkeypatch.setattr(analysis, "_SCAN_MIN_RUN", 2)  # blocks 2..6 share a graphdef: one scan
    meta, _ = analysis._prepare(model)
    assert [s[2] for s in meta.segs] == [False, True]
    scanned = analysis.gradient_flow(model, x, y)
    chex.assert_trees_all_close(scanned, unrolled, rtol=0, atol=1e-12)
    norms = analysis.jacobian_norms(model, x)
    monkeypatch.setattr(analysis, "_SCAN_MIN_RUN", 10**6)
    chex.assert_trees_all_close(norms, analysis.jacobian_norms(model, x), rtol=0, atol=1e-12)


def test_gradient_flow_float32_matches_float64():
    with jax.enable_x64(True):
        model64 = jaxvg.MLP(
            3, 12, 8, 2, activation="tanh", norm="layer", param_dtype=jnp.float64, rngs=nnx.Rngs(4)
        )
        x64_, y64 = _data(3, 8, 3, 2, jnp.float64)
        ref = _brute_force_flow(model64, x64_, y64)
        model32 = _cast(model64, jnp.float32)
        x32, y32 = np.asarray(x64_, np.float32), np.asarray(y64, np.float32)
    flow = analysis.gradient_flow(model32, x32, y32)
    assert flow.log10_act_grad.dtype == jnp.float32
    _assert_flow_close(flow, ref, TOL32)


def test_gradient_flow_cross_entropy_and_callable_loss(x64):
    model = jaxvg.MLP(3, 8, 4, 5, activation="tanh", param_dtype=jnp.float64, rngs=nnx.Rngs(5))
    x, _ = _data(4, 6, 3, 5, jnp.float64)
    labels = jnp.array([0, 1, 2, 3, 4, 0])
    flow = analysis.gradient_flow(model, x, labels, loss="cross_entropy")
    _assert_flow_close(flow, _brute_force_flow(model, x, labels, loss="cross_entropy"), TOL64)

    def half_sum_squares(out, y):
        del y
        return 0.5 * jnp.sum(out**2)

    flow = analysis.gradient_flow(model, x, loss=half_sum_squares)  # y=None passes through
    _assert_flow_close(flow, _brute_force_flow(model, x, None, loss=half_sum_squares), TOL64)


def _snapshot(model):
    def host(v):
        return np.asarray(jax.random.key_data(v) if jnp.issubdtype(v.dtype, jax.dtypes.prng_key) else v)

    return jax.tree.map(host, nnx.to_pure_dict(nnx.state(model)))


@pytest.mark.slow
def test_gradient_flow_dropout_train_uses_key_and_mutates_nothing():
    model = jaxvg.MLP(3, 8, 4, 2, dropout=0.5, norm="batch", rngs=nnx.Rngs(6))
    x, y = _data(5, 16, 3, 2, jnp.float32)
    before = copy.deepcopy(_snapshot(model))
    modes = [(b.dropout.deterministic, b.norm.use_running_average) for b in model.blocks]
    a = analysis.gradient_flow(model, x, y, train=True, key=jax.random.key(0))
    b = analysis.gradient_flow(model, x, y, train=True, key=jax.random.key(0))
    c = analysis.gradient_flow(model, x, y, train=True, key=jax.random.key(1))
    chex.assert_trees_all_equal(a, b)  # same key, same masks (RNG counters are not advanced)
    assert np.max(np.abs(a.log10_act_grad - c.log10_act_grad)) > 1e-3
    chex.assert_tree_all_finite((a.log10_act_grad, a.log10_param_grad, a.loss))
    # the pure kernel with the train-mode graphdef agrees with the public function
    gd, state = nnx.split(nnx.view(model, deterministic=False, use_running_average=False))
    k = analysis.gradient_flow_from_split(gd, state, x, y, loss="mse", key=jax.random.key(0))
    chex.assert_trees_all_close(k, a, rtol=1e-6, atol=1e-6)
    analysis.jacobian_norms(model, x)
    after = _snapshot(model)
    chex.assert_trees_all_equal(before, after)  # no BatchNorm stats update, no RNG counter change
    assert modes == [(b.dropout.deterministic, b.norm.use_running_average) for b in model.blocks]


def test_gradient_flow_reuses_compiled_program():
    model = jaxvg.MLP(3, 8, 3, 2, rngs=nnx.Rngs(7))
    x, y = _data(6, 4, 3, 2, jnp.float32)
    analysis.gradient_flow(model, x, y)
    size = analysis._flow_jit._cache_size()
    analysis.gradient_flow(model, x + 1.0, y)
    analysis.gradient_flow(jaxvg.MLP(3, 8, 3, 2, rngs=nnx.Rngs(8)), x, y)  # same shapes, new model
    assert analysis._flow_jit._cache_size() == size


def test_gradient_flow_from_split_vmaps_over_seeds():
    models = [jaxvg.MLP(3, 8, 3, 2, rngs=nnx.Rngs(s)) for s in range(3)]
    x, y = _data(7, 4, 3, 2, jnp.float32)
    gd, params, rest = nnx.split(models[0], nnx.Param, ...)
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *[nnx.split(m, nnx.Param, ...)[1] for m in models])
    flows = jax.jit(jax.vmap(lambda p: analysis.gradient_flow_from_split(gd, (p, rest), x, y, loss="mse")))(
        stacked
    )
    assert flows.log10_act_grad.shape == (3, 4) and flows.vanishing_decades.shape == (3,)
    one = analysis.gradient_flow(models[1], x, y)
    np.testing.assert_allclose(flows.log10_act_grad[1], one.log10_act_grad, atol=1e-5)
    table = analysis.flow_table(flows)
    assert "±" in table and len(table.splitlines()) == 3 + 2 + 1


# ------------------------------------------------------------------------------------------------
# Deep sigmoid: float32 vs a float64 log-space reference, where the plain gradient is exactly 0
# ------------------------------------------------------------------------------------------------


def _numpy_log_space_reference(model, x, y):
    """log10 ||dloss/dh_l|| and log10 ||dloss/dW_l|| (kernel and bias) for a sigmoid MLP with mse,
    in float64 numpy, renormalising the cotangent after every layer (independent of jaxvg)."""
    ks = [np.asarray(b.linear.kernel[...], np.float64) for b in model.blocks]
    bs = [np.asarray(b.linear.bias[...], np.float64) for b in model.blocks]
    kh, bh = np.asarray(model.head.kernel[...], np.float64), np.asarray(model.head.bias[...], np.float64)
    h = np.asarray(x, np.float64)
    hs, zs = [h], []
    for k, b in zip(ks, bs, strict=True):
        z = h @ k + b
        h = 1 / (1 + np.exp(-z))
        zs.append(z)
        hs.append(h)
    out = h @ kh + bh
    delta = 2 * (out - np.asarray(y, np.float64)) / out.size @ kh.T
    log_scale = np.log(np.linalg.norm(delta))
    c = delta / np.linalg.norm(delta)
    log_act, log_param = [log_scale], []
    for k, z, h_in in zip(ks[::-1], zs[::-1], hs[-2::-1], strict=True):
        s = 1 / (1 + np.exp(-z))
        cz = c * s * (1 - s)
        gk, gb = h_in.T @ cz, cz.sum(0)
        log_param.append(log_scale + 0.5 * np.log(np.sum(gk**2) + np.sum(gb**2)))
        c = cz @ k.T
        n = np.linalg.norm(c)
        log_scale, c = log_scale + np.log(n), c / n
        log_act.append(log_scale)
    return np.array(log_act[::-1]) / math.log(10), np.array(log_param[::-1]) / math.log(10)


@pytest.mark.slow
def test_deep_sigmoid_float32_is_exact_where_plain_gradient_is_zero():
    depth = 1000
    model = jaxvg.MLP(4, 16, depth, 1, activation="sigmoid", rngs=nnx.Rngs(0))
    x, y = _data(8, 8, 4, 1, jnp.float32)
    flow = analysis.gradient_flow(model, x, y)
    ref_act, ref_param = _numpy_log_space_reference(model, x, y)
    assert ref_act[0] < -400  # ~0.6 decades per block: far below float32 (1e-38) and float64 (1e-308)
    chex.assert_tree_all_finite(flow)
    np.testing.assert_allclose(flow.log10_act_grad, ref_act, rtol=0, atol=1e-3)
    np.testing.assert_allclose(flow.log10_param_grad, ref_param, rtol=0, atol=1e-3)
    # the plain float32 gradient (autodiff of the same net; lax.scan so that it compiles fast) is
    # exactly zero at the first block's kernel
    ks = jnp.stack([b.linear.kernel[...] for b in model.blocks[1:]])
    bs = jnp.stack([b.linear.bias[...] for b in model.blocks[1:]])
    first, head = model.blocks[0].linear, model.head

    def plain_loss(k0):
        h = jax.nn.sigmoid(x @ k0 + first.bias[...][None])
        h, _ = jax.lax.scan(lambda h, kb: (jax.nn.sigmoid(h @ kb[0] + kb[1][None]), None), h, (ks, bs))
        return losses.mse(h @ head.kernel[...] + head.bias[...][None], y)

    grad = jax.jit(jax.grad(plain_loss))(first.kernel[...])
    assert grad.dtype == jnp.float32 and not np.any(np.asarray(grad))


# ------------------------------------------------------------------------------------------------
# A transformer-style user model: embed -> residual attention and MLP blocks -> head
# ------------------------------------------------------------------------------------------------


class AttentionBlock(nnx.Module):
    """Pre-norm single-head causal self-attention, all in the parameters' dtype (flax's
    MultiHeadAttention rounds part of its backward pass to float32, which float64 checks would see)."""

    def __init__(self, d, *, dtype, rngs):
        self.norm = nnx.LayerNorm(d, param_dtype=dtype, rngs=rngs)
        self.q, self.k, self.v, self.o = (nnx.Linear(d, d, param_dtype=dtype, rngs=rngs) for _ in range(4))

    def __call__(self, h):
        u = self.norm(h)
        q, k, v = self.q(u), self.k(u), self.v(u)
        logits = jnp.einsum("bsd,btd->bst", q, k) / math.sqrt(h.shape[-1])
        seq = h.shape[1]
        logits = jnp.where(jnp.tril(jnp.ones((seq, seq), bool))[None], logits, -1e9)
        return h + self.o(jnp.einsum("bst,btd->bsd", jax.nn.softmax(logits, axis=-1), v))


class FeedForwardBlock(nnx.Module):
    def __init__(self, d, *, dtype, rngs):
        self.norm = nnx.LayerNorm(d, param_dtype=dtype, rngs=rngs)
        self.linear = nnx.Linear(d, 2 * d, param_dtype=dtype, rngs=rngs)
        self.out = nnx.Linear(2 * d, d, param_dtype=dtype, rngs=rngs)
        self.activation = jaxvg.nn.activations.get("gelu")

    def preactivation(self, h):
        return self.linear(self.norm(h))

    def __call__(self, h):
        return h + self.out(self.activation(self.preactivation(h)))


class TinyTransformer(nnx.Module):
    def __init__(self, vocab=7, d=8, layers=2, *, dtype=jnp.float32, rngs):
        self.embed = nnx.Embed(vocab, d, param_dtype=dtype, rngs=rngs)
        blocks = []
        for _ in range(layers):
            blocks += [AttentionBlock(d, dtype=dtype, rngs=rngs), FeedForwardBlock(d, dtype=dtype, rngs=rngs)]
        self.blocks = nnx.List(blocks)
        self.head = nnx.Linear(d, vocab, param_dtype=dtype, rngs=rngs)

    def __call__(self, tokens):
        h = self.embed(tokens)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def _token_loss(logits, labels):
    return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, labels[..., None], -1)[..., 0])


@pytest.mark.slow
def test_transformer_gradient_flow_and_norms_match_brute_force(x64):
    model = TinyTransformer(dtype=jnp.float64, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(0), (2, 4), 0, 7)
    labels = jax.random.randint(jax.random.key(1), (2, 4), 0, 7)
    flow = analysis.gradient_flow(model, tokens, labels, loss=_token_loss)
    ref = _brute_force_flow(model, tokens, labels, loss=_token_loss)
    _assert_flow_close(flow, ref, TOL64)
    assert np.isnan(flow.log10_dphi[0]) and np.isfinite(flow.log10_dphi[1])  # attention: no phi'
    assert np.isnan(flow.log10_kernel_grad[0]) and np.isfinite(flow.log10_kernel_grad[1])

    norms = analysis.jacobian_norms(model, tokens)
    assert norms.log10_fro.shape == (2, 5)
    np.testing.assert_allclose(norms.log10_fro, _brute_force_jacobian_norms(model, tokens), atol=TOL64)
    np.testing.assert_allclose(norms.log10_msv, 2 * norms.log10_fro - np.log10(4 * 8), atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Jacobian norms
# ------------------------------------------------------------------------------------------------


def _brute_force_jacobian_norms(model, x):
    view = _view(model)
    gd, state = nnx.split(view)

    @jax.jit
    def compute(state, x):
        m = nnx.merge(gd, state, copy=True)
        embed = _pure(getattr(m, "embed", None))
        blocks = [_pure(b) for b in m.blocks]

        def tail(h, layer):
            for g in blocks[layer:]:
                h = g(h)
            return h

        hs = [embed(x)]
        for f in blocks:
            hs.append(f(hs[-1]))
        rows = []
        for b in range(x.shape[0]):
            row = [
                jnp.linalg.norm(jax.jacfwd(tail)(hs[layer][b : b + 1], layer).reshape(-1))
                for layer in range(len(blocks) + 1)
            ]
            rows.append(jnp.stack(row))
        return jnp.stack(rows)

    return np.log10(np.asarray(compute(state, x), np.float64))


def test_jacobian_norms_exact_matches_brute_force(x64):
    model = jaxvg.MLP(3, 8, 5, 2, activation="tanh", residual=True, param_dtype=jnp.float64, rngs=nnx.Rngs(9))
    x, _ = _data(9, 4, 3, 2, jnp.float64)
    norms = analysis.jacobian_norms(model, x)
    np.testing.assert_allclose(norms.log10_fro, _brute_force_jacobian_norms(model, x), rtol=0, atol=TOL64)
    np.testing.assert_allclose(norms.log10_msv, 2 * norms.log10_fro - np.log10(8), atol=1e-12)
    assert not np.any(norms.log10_fro_stderr)


def test_jacobian_norms_float32_matches_float64():
    with jax.enable_x64(True):
        model64 = jaxvg.MLP(3, 16, 8, None, activation="tanh", param_dtype=jnp.float64, rngs=nnx.Rngs(10))
        x64_, _ = _data(10, 4, 3, 1, jnp.float64)
        ref = _brute_force_jacobian_norms(model64, x64_)
        model32 = _cast(model64, jnp.float32)
        x32 = np.asarray(x64_, np.float32)
    norms = analysis.jacobian_norms(model32, x32)
    np.testing.assert_allclose(norms.log10_fro, ref, rtol=0, atol=TOL32)


@pytest.mark.slow
def test_hutchinson_error_falls_as_one_over_sqrt_probes_and_stderr_covers(x64):
    model = jaxvg.MLP(3, 12, 4, None, activation="tanh", sigma_w2=1.5, init="gaussian",
                      param_dtype=jnp.float64, rngs=nnx.Rngs(11))  # fmt: skip
    x, _ = _data(11, 4, 3, 1, jnp.float64)
    exact = analysis.jacobian_norms(model, x).log10_fro[:, :-1]
    gd, state = nnx.split(_view(model))
    keys = jax.random.split(jax.random.key(0), 200)

    def estimate(k):
        def run(key):
            return analysis.jacobian_norms_from_split(
                gd, state, x, method="hutchinson", num_probes=k, key=key
            )

        return jax.jit(jax.vmap(run))(keys)

    est8, est64 = estimate(8), estimate(64)
    exact = np.asarray(exact)[None]
    rms = [np.sqrt(np.mean((10 ** (2 * (e.log10_fro[..., :-1] - exact)) - 1) ** 2)) for e in (est8, est64)]
    assert 2.5 <= rms[0] / rms[1] <= 3.5, rms  # sqrt(64/8) = 2.83
    z = np.abs(est64.log10_fro[..., :-1] - exact) / est64.log10_fro_stderr[..., :-1]
    covered = np.mean(z <= 2, axis=0)  # per (example, layer): the share of the 200 keys
    assert np.all(covered >= 0.9), covered


# ------------------------------------------------------------------------------------------------
# Jacobian spectrum
# ------------------------------------------------------------------------------------------------


def test_jacobian_spectrum_matches_svd_and_qr_in_float64(x64):
    model = jaxvg.MLP(5, 6, 5, None, activation="tanh", sigma_w2=1.5, init="gaussian",
                      param_dtype=jnp.float64, rngs=nnx.Rngs(12))  # fmt: skip
    x = jax.random.normal(jax.random.key(3), (5,), jnp.float64)
    spec = analysis.jacobian_spectrum(model, x, layers=(0, 2))
    blocks = [_pure(b) for b in _view(model).blocks]
    hs = [x[None]]
    for f in blocks:
        hs.append(f(hs[-1]))
    for layer, got in zip((0, 2), spec.log10_sv, strict=True):

        def tail(h, layer=layer):
            for g in blocks[layer:]:
                h = g(h)
            return h

        jac = np.asarray(jax.jacfwd(tail)(hs[layer])).reshape(6, hs[layer].size)
        want = np.log10(np.linalg.svd(jac, compute_uv=False))
        assert got.shape == (min(6, hs[layer].size),)
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL64)
    # Lyapunov exponents by explicit QR of the block Jacobians, Q_0 = I (5 x 5), k = 5
    q, total = np.eye(5), np.zeros(5)
    for f, h in zip(blocks, hs[:-1], strict=True):
        jac = np.asarray(jax.jacfwd(f)(h)).reshape(6, h.size)
        q, r = np.linalg.qr(jac @ q)
        total += np.log10(np.abs(np.diag(r)[:5]))
    np.testing.assert_allclose(spec.log10_lyapunov, np.sort(total / 5)[::-1], atol=TOL64)


def test_jacobian_spectrum_float32_exact_relative_to_largest_and_nan_tail():
    with jax.enable_x64(True):
        model64 = jaxvg.MLP(16, 16, 8, None, activation="tanh", sigma_w2=0.3, init="gaussian",
                            param_dtype=jnp.float64, rngs=nnx.Rngs(14))  # fmt: skip
        x64_ = jax.random.normal(jax.random.key(4), (16,), jnp.float64)
        want = np.asarray(analysis.jacobian_spectrum(model64, x64_).log10_sv[0])
        model32, x32 = _cast(model64, jnp.float32), np.asarray(x64_, np.float32)
    got = np.asarray(analysis.jacobian_spectrum(model32, x32).log10_sv[0])
    assert np.all(np.isfinite(want)) and want[0] - want[-1] > 8  # beyond float32's 7 decades
    finite = np.isfinite(got)
    assert finite[0] and not finite[-1] and np.all(finite[: finite.sum()])  # NaN only in the tail
    assert np.all(want[~finite] - want[0] < -5)  # NaN only for values near eps * sigma_1 or below
    close = want - want[0] > -2  # within 2 decades of sigma_1: relative error ~ eps * 100
    np.testing.assert_allclose(got[close], want[close], atol=TOL32)


def test_orthogonal_linear_net_has_unit_singular_values_float32():
    model = jaxvg.MLP(
        16, 16, 6, None, activation="linear", init="orthogonal", use_bias=False, rngs=nnx.Rngs(13)
    )
    spec = analysis.jacobian_spectrum(model, jnp.ones(16), layers=(0, 3, 5))
    for sv in spec.log10_sv:
        assert sv.shape == (16,)
        np.testing.assert_allclose(sv, 0.0, atol=1e-5)
    np.testing.assert_allclose(spec.log10_lyapunov, 0.0, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Taps for models that are not block-structured
# ------------------------------------------------------------------------------------------------


class DeepChain(nnx.Module):
    """Not block-structured: a loop over a stacked parameter, with a tap at every step."""

    def __init__(self, depth, width, *, rngs):
        self.w = nnx.Param(jax.random.normal(rngs.params(), (depth, width, width)) / math.sqrt(width))

    def __call__(self, x):
        h = x
        for i in range(self.w.shape[0]):
            h = analysis.tap(self, f"h{i:03d}", jax.nn.sigmoid(h @ self.w[i]))
        return h


def _chain_loss(model, x):
    return jnp.sum(model(x) ** 2)


def test_tap_is_silent_outside_capture():
    model = DeepChain(3, 4, rngs=nnx.Rngs(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = model(jnp.ones((2, 4)))
    assert out.shape == (2, 4) and not any(k.startswith("h") for k in vars(model))


def test_tapped_gradients_match_brute_force_and_flag_underflow():
    model = DeepChain(120, 8, rngs=nnx.Rngs(1))
    x = jnp.ones((2, 8))
    grads = analysis.tapped_gradients(_chain_loss, model, x)
    assert list(grads) == [f"h{i:03d}" for i in range(120)]
    w = model.w[...]

    def from_tap(i, h):  # the loss as a function of the tapped value h_i
        for j in range(i + 1, 120):
            h = jax.nn.sigmoid(h @ w[j])
        return jnp.sum(h**2)

    h = x
    for i in range(120):
        h = jax.nn.sigmoid(h @ w[i])
        if i in (110, 119):
            want = np.log10(float(jnp.linalg.norm(jax.grad(from_tap, argnums=1)(i, h))))
            np.testing.assert_allclose(grads[f"h{i:03d}"].log10_grad_norm, want, atol=1e-5)
            assert not grads[f"h{i:03d}"].underflowed
    assert grads["h000"].underflowed  # ~0.6 decades per step: below float32 after ~60 steps
    assert not hasattr(model, "h000")  # the model is not mutated


def test_tapped_gradients_without_taps_is_an_error():
    with pytest.raises(ValueError, match="has no taps"):
        analysis.tapped_gradients(
            lambda m, x: jnp.sum(m(x)), nnx.Linear(2, 2, rngs=nnx.Rngs(0)), jnp.ones((1, 2))
        )


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def small():
    return jaxvg.MLP(3, 4, 2, 1, rngs=nnx.Rngs(0)), jnp.ones((2, 3)), jnp.zeros((2, 1))


def test_wrong_feature_size(small):
    model, _, y = small
    with pytest.raises(ValueError, match=r"`x` must have 3 features .* got shape \(2, 5\)"):
        analysis.gradient_flow(model, jnp.ones((2, 5)), y)
    with pytest.raises(ValueError, match=r"`x` must have 3 features"):
        analysis.jacobian_norms(model, jnp.ones((2, 5)))
    with pytest.raises(ValueError, match=r"`x` of shape \(2, 4, 5\) does not fit the model"):
        analysis.gradient_flow(TinyTransformer(rngs=nnx.Rngs(0)), jnp.ones((2, 4, 5)), loss=_token_loss)


def test_model_without_blocks():
    with pytest.raises(TypeError, match=r"`model` must follow the block-model contract"):
        analysis.gradient_flow(nnx.Linear(3, 1, rngs=nnx.Rngs(0)), jnp.ones((2, 3)), jnp.zeros((2, 1)))


def test_named_loss_needs_y_and_unknown_loss(small):
    model, x, _ = small
    with pytest.raises(ValueError, match=r"`y` is required for the named loss 'mse'"):
        analysis.gradient_flow(model, x)
    with pytest.raises(ValueError, match=r"`loss` must be one of .* got 'mae'"):
        analysis.gradient_flow(model, x, jnp.zeros((2, 1)), loss="mae")
    with pytest.raises(ValueError, match=r"`y` for loss='mse' must have the outputs' shape"):
        analysis.gradient_flow(model, x, jnp.zeros((2,)))


def test_layers_out_of_range_and_batch_to_spectrum(small):
    model, x, _ = small
    with pytest.raises(ValueError, match=r"`layers` must hold ints in \[0, 2\).* got \(0, 2\)"):
        analysis.jacobian_spectrum(model, x[0], layers=(0, 2))
    with pytest.raises(ValueError, match=r"`x` must be ONE example of shape \(3,\) \(no batch axis\)"):
        analysis.jacobian_spectrum(model, x)


def test_dropout_train_needs_key():
    model = jaxvg.MLP(3, 4, 2, 1, dropout=0.2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"`key` is required with `train=True`"):
        analysis.gradient_flow(model, jnp.ones((2, 3)), jnp.zeros((2, 1)), train=True)


def test_unknown_method(small):
    model, x, _ = small
    with pytest.raises(ValueError, match=r"`method` must be one of \['exact', 'hutchinson'\], got 'power'"):
        analysis.jacobian_norms(model, x, method="power")
