"""`jaxvg.measure.gradient_flow` against brute force: full jax.jacfwd Jacobians and explicit products
in float64 (1e-10 decades), float32 against float64 (1e-4 decades), and a float64 numpy log-space
reference for a deep sigmoid net where float32 and float64 gradients underflow."""

import copy
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxvg
from jaxvg import measure
from jaxvg.nn import activations, losses

from .references import (
    TOL32,
    TOL64,
    BlockNet,
    TinyTransformer,
    assert_flow_close,
    brute_force_flow,
    brute_force_jacobian_norms,
    cast,
    data,
    token_loss,
)

# ------------------------------------------------------------------------------------------------
# Every MLP option, float64 brute force
# ------------------------------------------------------------------------------------------------

MLP_OPTIONS = {
    "tanh": dict(activation="tanh"),
    "sigmoid": dict(activation="sigmoid", sigma_w2=2.0, sigma_b2=0.1, init="gaussian"),
    "relu_residual": dict(activation="relu", init="he_normal", residual=True),
    "layer_norm": dict(activation="tanh", norm="layer"),
    "batch_norm": dict(activation="relu", init="he_normal", norm="batch"),
    # a callable: no bound on phi' is known, so its φ′ statistics take the path with a branch
    "callable_soft_sign": dict(activation=jax.nn.soft_sign),
}


@pytest.mark.parametrize("name", list(MLP_OPTIONS))
def test_gradient_flow_matches_brute_force_float64(x64, name):
    model = jaxvg.MLP(3, 8, 5, 2, param_dtype=jnp.float64, rngs=nnx.Rngs(1), **MLP_OPTIONS[name])
    x, y = data(0, 6, 3, 2, jnp.float64)
    flow = measure.gradient_flow(model, x, y)
    assert_flow_close(flow, brute_force_flow(model, x, y), TOL64)


# flax's BatchNorm keeps float32 running statistics even with param_dtype=float64; updating them in
# train mode warns (a flax limitation, harmless here: the measure discards the update).
@pytest.mark.filterwarnings("ignore:scatter inputs have incompatible types:FutureWarning")
def test_gradient_flow_batch_norm_train_mode_couples_examples(x64):
    model = jaxvg.MLP(3, 8, 4, 2, norm="batch", param_dtype=jnp.float64, rngs=nnx.Rngs(2))
    x, y = data(1, 6, 3, 2, jnp.float64)
    flow = measure.gradient_flow(model, x, y, train=True)
    assert_flow_close(flow, brute_force_flow(model, x, y, train=True), TOL64)
    eval_flow = measure.gradient_flow(model, x, y)
    assert np.max(np.abs(flow.log10_act_grad - eval_flow.log10_act_grad)) > 1e-3  # train mode differs


def test_gradient_flow_float32_matches_float64():
    # TOL32 holds on CPU float32 and on GPU/TPU with precision="highest" (the default; see references).
    with jax.enable_x64(True):
        model64 = jaxvg.MLP(
            3, 12, 8, 2, activation="tanh", norm="layer", param_dtype=jnp.float64, rngs=nnx.Rngs(4)
        )
        x64_, y64 = data(3, 8, 3, 2, jnp.float64)
        ref = brute_force_flow(model64, x64_, y64)
        model32 = cast(model64, jnp.float32)
        x32, y32 = np.asarray(x64_, np.float32), np.asarray(y64, np.float32)
    flow = measure.gradient_flow(model32, x32, y32)
    assert flow.log10_act_grad.dtype == jnp.float32
    assert_flow_close(flow, ref, TOL32)


def test_gradient_flow_cross_entropy_and_callable_loss(x64):
    model = jaxvg.MLP(3, 8, 4, 5, activation="tanh", param_dtype=jnp.float64, rngs=nnx.Rngs(5))
    x, _ = data(4, 6, 3, 5, jnp.float64)
    labels = jnp.array([0, 1, 2, 3, 4, 0])
    flow = measure.gradient_flow(model, x, labels, loss="cross_entropy")
    assert_flow_close(flow, brute_force_flow(model, x, labels, loss="cross_entropy"), TOL64)

    def half_sum_squares(out, y):
        del y
        return 0.5 * jnp.sum(out**2)

    flow = measure.gradient_flow(model, x, loss=half_sum_squares)  # y=None passes through
    assert_flow_close(flow, brute_force_flow(model, x, None, loss=half_sum_squares), TOL64)


# ------------------------------------------------------------------------------------------------
# A third-party block that states its hooks: `kernel_path`, `activation` and `preactivation`
# ------------------------------------------------------------------------------------------------


class Dense(nnx.Module):
    """A kernel that is not an `nnx.Linear`."""

    def __init__(self, d, *, dtype, rngs):
        self.w = nnx.Param(jax.random.normal(rngs.params(), (d, d), dtype) / math.sqrt(d))


class GainBlock(nnx.Module):
    """h -> h + phi(gain * (h @ w)), its kernel at `dense.w`."""

    kernel_path = ("dense", "w")

    def __init__(self, d, *, dtype, rngs):
        self.dense = Dense(d, dtype=dtype, rngs=rngs)
        self.gain = nnx.Param(jnp.full((d,), 1.5, dtype))
        self.activation = activations.get("sigmoid")

    def preactivation(self, h):
        return self.gain[...][None] * (h @ self.dense.w[...])

    def __call__(self, h):
        return h + self.activation(self.preactivation(h))


class GainNet(BlockNet):
    def __init__(self, d_in, d, depth, d_out, *, dtype, rngs):
        self.embed = nnx.Linear(d_in, d, param_dtype=dtype, rngs=rngs)
        self.blocks = nnx.List([GainBlock(d, dtype=dtype, rngs=rngs) for _ in range(depth)])
        self.head = nnx.Linear(d, d_out, param_dtype=dtype, rngs=rngs)


def test_third_party_block_hooks_give_kernel_and_dphi_columns(x64):
    model = GainNet(3, 6, 4, 2, dtype=jnp.float64, rngs=nnx.Rngs(15))
    x, y = data(12, 5, 3, 2, jnp.float64)
    flow = measure.gradient_flow(model, x, y)
    assert_flow_close(flow, brute_force_flow(model, x, y), TOL64)
    assert np.all(np.isfinite(flow.log10_kernel_grad)) and np.all(np.isfinite(flow.log10_dphi))
    assert np.all(flow.log10_kernel_grad < flow.log10_param_grad)  # the gains have gradients too


# ------------------------------------------------------------------------------------------------
# Modes, keys, compiled-program reuse, vmapping the pure kernel
# ------------------------------------------------------------------------------------------------


def _snapshot(model):
    def host(v):
        return np.asarray(jax.random.key_data(v) if jnp.issubdtype(v.dtype, jax.dtypes.prng_key) else v)

    return jax.tree.map(host, nnx.to_pure_dict(nnx.state(model)))


@pytest.mark.slow
def test_gradient_flow_dropout_train_uses_key_and_mutates_nothing():
    model = jaxvg.MLP(3, 8, 4, 2, dropout=0.5, norm="batch", rngs=nnx.Rngs(6))
    x, y = data(5, 16, 3, 2, jnp.float32)
    before = copy.deepcopy(_snapshot(model))
    modes = [(b.dropout.deterministic, b.norm.use_running_average) for b in model.blocks]
    a = measure.gradient_flow(model, x, y, train=True, key=jax.random.key(0))
    b = measure.gradient_flow(model, x, y, train=True, key=jax.random.key(0))
    c = measure.gradient_flow(model, x, y, train=True, key=jax.random.key(1))
    chex.assert_trees_all_equal(a, b)  # same key, same masks (RNG counters are not advanced)
    assert np.max(np.abs(a.log10_act_grad - c.log10_act_grad)) > 1e-3
    chex.assert_tree_all_finite((a.log10_act_grad, a.log10_param_grad, a.loss))
    # the pure kernel with the train-mode graphdef agrees with the public function
    gd, state = nnx.split(nnx.view(model, deterministic=False, use_running_average=False))
    k = measure.gradient_flow_from_split(gd, state, x, y, loss="mse", key=jax.random.key(0))
    chex.assert_trees_all_close(k, a, rtol=1e-6, atol=1e-6)
    measure.jacobian_norms(model, x)
    after = _snapshot(model)
    chex.assert_trees_all_equal(before, after)  # no BatchNorm stats update, no RNG counter change
    assert modes == [(b.dropout.deterministic, b.norm.use_running_average) for b in model.blocks]


def test_gradient_flow_reuses_compiled_program():
    model = jaxvg.MLP(3, 8, 3, 2, rngs=nnx.Rngs(7))
    x, y = data(6, 4, 3, 2, jnp.float32)
    # The loss runs once per trace of the kernel: a second trace (a recompile) would raise.
    loss = chex.assert_max_traces(losses.mse, n=1)
    measure.gradient_flow(model, x, y, loss=loss)
    measure.gradient_flow(model, x + 1.0, y, loss=loss)
    measure.gradient_flow(jaxvg.MLP(3, 8, 3, 2, rngs=nnx.Rngs(8)), x, y, loss=loss)  # same shapes, new model


def test_gradient_flow_from_split_vmaps_over_seeds():
    # float32 against float32 (vmapped vs one net, both at precision="highest"): any platform.
    models = [jaxvg.MLP(3, 8, 3, 2, rngs=nnx.Rngs(s)) for s in range(3)]
    x, y = data(7, 4, 3, 2, jnp.float32)
    gd, params, rest = nnx.split(models[0], nnx.Param, ...)
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *[nnx.split(m, nnx.Param, ...)[1] for m in models])
    flows = jax.jit(jax.vmap(lambda p: measure.gradient_flow_from_split(gd, (p, rest), x, y, loss="mse")))(
        stacked
    )
    assert flows.log10_act_grad.shape == (3, 4) and flows.vanishing_decades.shape == (3,)
    one = measure.gradient_flow(models[1], x, y)
    np.testing.assert_allclose(flows.log10_act_grad[1], one.log10_act_grad, atol=1e-5)
    table = measure.flow_table(flows)
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
    # 1e-3 decades over 1000 blocks: CPU float32, and GPU/TPU with precision="highest" (the default);
    # TF32 matmuls were 0.025 decades off on an H200.
    depth = 1000
    model = jaxvg.MLP(4, 16, depth, 1, activation="sigmoid", rngs=nnx.Rngs(0))
    x, y = data(8, 8, 4, 1, jnp.float32)
    flow = measure.gradient_flow(model, x, y)
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


@pytest.mark.slow
def test_transformer_gradient_flow_and_norms_match_brute_force(x64):
    model = TinyTransformer(dtype=jnp.float64, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(0), (2, 4), 0, 7)
    labels = jax.random.randint(jax.random.key(1), (2, 4), 0, 7)
    flow = measure.gradient_flow(model, tokens, labels, loss=token_loss)
    ref = brute_force_flow(model, tokens, labels, loss=token_loss)
    assert_flow_close(flow, ref, TOL64)
    assert np.isnan(flow.log10_dphi[0]) and np.isfinite(flow.log10_dphi[1])  # attention: no phi'
    assert np.isnan(flow.log10_kernel_grad[0]) and np.isfinite(flow.log10_kernel_grad[1])

    norms = measure.jacobian_norms(model, tokens)
    assert norms.log10_fro.shape == (2, 5)
    np.testing.assert_allclose(norms.log10_fro, brute_force_jacobian_norms(model, tokens), atol=TOL64)
    np.testing.assert_allclose(norms.log10_msv, 2 * norms.log10_fro - np.log10(4 * 8), atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def small():
    return jaxvg.MLP(3, 4, 2, 1, rngs=nnx.Rngs(0)), jnp.ones((2, 3)), jnp.zeros((2, 1))


def test_named_loss_needs_y_and_unknown_loss(small):
    model, x, _ = small
    with pytest.raises(ValueError, match=r"`y` is required for the named loss 'mse'"):
        measure.gradient_flow(model, x)
    with pytest.raises(ValueError, match=r"`loss` must be one of .* got 'mae'"):
        measure.gradient_flow(model, x, jnp.zeros((2, 1)), loss="mae")
    with pytest.raises(ValueError, match=r"`y` for loss='mse' must have the outputs' shape"):
        measure.gradient_flow(model, x, jnp.zeros((2,)))


def test_nan_input_gives_nan_not_the_minus_inf_of_a_zero_gradient(small):
    model, x, y = small
    with pytest.raises(ValueError, match=r"`x` must be finite"):  # refused before tracing (issue 10)
        measure.gradient_flow(model, x.at[0, 0].set(jnp.nan), y)
    gd, state = nnx.split(model)  # the pure kernels run no host checks: NaN, never -inf
    flow = measure.gradient_flow_from_split(gd, state, x.at[0, 0].set(jnp.nan), y, loss="mse")
    assert np.all(np.isnan(flow.log10_act_grad)) and np.all(np.isnan(flow.log10_param_grad))
    norms = measure.jacobian_norms_from_split(gd, state, x.at[0, 0].set(jnp.nan))
    assert np.all(np.isnan(norms.log10_fro[0, :-1])) and np.all(np.isfinite(norms.log10_fro[1]))


def test_dropout_train_needs_key():
    model = jaxvg.MLP(3, 4, 2, 1, dropout=0.2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"`key` is required with `train=True`"):
        measure.gradient_flow(model, jnp.ones((2, 3)), jnp.zeros((2, 1)), train=True)


def test_branch_free_norms_of_gpu_and_tpu_give_the_same_measurements(monkeypatch):
    """On GPU and TPU every norm takes the branch-free one-pass implementation (no per-block
    conditional, which would stall the device); here it is forced on CPU for a deep sigmoid net
    (activation cotangents down to 1e-120: the scaled sums are exercised) and must agree with the
    CPU path to float32 rounding."""
    from jaxvg.measure import plan

    model = jaxvg.MLP(4, 16, 200, 1, activation="sigmoid", rngs=nnx.Rngs(0))
    x, y = data(8, 8, 4, 1, jnp.float32)
    cpu = measure.gradient_flow(model, x, y)
    cpu_norms = measure.jacobian_norms(model, x, method="hutchinson", num_probes=3)
    plan.cache_clear()
    monkeypatch.setattr(jax.lax, "platform_dependent", lambda *a, default, **_: default(*a))
    branch_free = measure.gradient_flow(model, x, y)
    assert cpu.log10_act_grad[0] < -100
    chex.assert_trees_all_close(branch_free, cpu, rtol=0, atol=1e-4)
    chex.assert_trees_all_close(
        measure.jacobian_norms(model, x, method="hutchinson", num_probes=3), cpu_norms, rtol=0, atol=1e-4
    )
    plan.cache_clear()


_DPHI_CASES = {  # (activation, scale of z, a column of z set to a value): which path each takes
    "tanh": ("tanh", 1.0, None),  # every unit alive: the one-pass path
    "relu_dead_unit": ("relu", 1.0, -1.0),  # a unit at phi' = 0 on every example: the scaled path
    "sigmoid_tiny": ("sigmoid", 1.0, -60.0),  # phi' ~ 1e-26, its squares underflow: scaled path
    "sigmoid_all_tiny": ("sigmoid", 0.0, -60.0),  # every phi' ~ 1e-26
    "tanh_saturated_unit": ("tanh", 1.0, 100.0),  # phi' exactly 0 in float32: a dead tanh unit
    "nan": ("tanh", 1.0, jnp.nan),
}


@pytest.mark.parametrize("case", list(_DPHI_CASES))
def test_dphi_statistics_equal_float64_on_both_platform_paths(case):
    """`dphi.dphi_stats`: the CPU path (one pass, `lax.cond` to the scaled two passes where the per-unit
    sums of squares are not exact), that fallback itself, the GPU/TPU path (one pass over three
    scaled sums, branch-free) and the path of activations with a bounded phi' (two sums, no branch,
    every platform), all run here, give
    float64's 1/2 log10 mean(phi'^2) (NaN with a NaN) and the exact fraction of units with phi' = 0
    on every example."""
    from jaxvg.measure import dphi as dphi_module
    from jaxvg.nn import activations

    name, scale, column = _DPHI_CASES[case]
    z = scale * jax.random.normal(jax.random.key(0), (16, 8))
    if column is not None:
        z = z.at[:, 3].set(column) if scale else jnp.full_like(z, column)
    dphi = activations.get(name).dfn
    a = np.abs(np.asarray(jax.jit(dphi)(z), np.float64))  # float32 phi', then float64 statistics
    with np.errstate(divide="ignore"):
        ref_rms = 0.5 * np.log10(np.mean(a**2)) if not np.isnan(a).any() else np.nan
    ref_dead = np.mean(np.max(a, axis=0) == 0)  # a unit with a NaN is not dead (nor alive)
    paths = (dphi_module.dphi_stats_cond, dphi_module.dphi_stats_scaled, dphi_module.dphi_stats_select,
             dphi_module.dphi_stats_bounded)  # fmt: skip
    for path in paths:
        rms, dead = jax.jit(lambda z, path=path: path(z, dphi=dphi, dtype=jnp.float32))(z)
        np.testing.assert_allclose(float(rms), ref_rms, rtol=1e-6, atol=1e-6, err_msg=path.__name__)
        np.testing.assert_equal(float(dead), ref_dead, err_msg=path.__name__)
