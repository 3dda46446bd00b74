"""`jaxvg.measure.signal_propagation` against brute force (the blocks called one by one, every
statistic written out in numpy, float64: 1e-12), against mean-field theory at width 1024, and its
numerics (huge and tiny activations), caching, precision and input checks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxvg
from jaxvg import checks, measure, theory
from jaxvg.measure import engine, plan
from jaxvg.nn import activations
from jaxvg.theory import expectations

from .references import BlockNet, TinyTransformer, data

# ------------------------------------------------------------------------------------------------
# The reference: blocks one by one, statistics in numpy
# ------------------------------------------------------------------------------------------------


def _rows(h):
    return h if h.ndim == 3 else h.reshape(1, h.shape[0], -1)


def _cosine(h):
    values = []
    for m in _rows(h):
        u = m / np.linalg.norm(m, axis=1, keepdims=True)
        g = u @ u.T
        r = len(g)
        values.append((g.sum() - np.trace(g)) / (r * (r - 1)))
    return np.mean(values)


def _effective_rank(h):
    values = []
    for m in _rows(h):
        s = np.linalg.svd(m, compute_uv=False)
        p = s / s.sum()
        p = p[p > 0]
        values.append(np.exp(-np.sum(p * np.log(p))))
    return np.mean(values)


def brute_force_signal(model, x):
    """(log10_q, c, log10_branch_ratio, effective_rank, log10_q_preact) by calling the model's
    embed and blocks one at a time (evaluation view)."""
    view = engine.mode_view(model, False)
    embed = getattr(view, "embed", None)
    hs = [np.asarray(embed(x) if embed is not None else x, np.float64)]
    pre = []
    for block in view.blocks:
        h = jnp.asarray(hs[-1])
        if callable(getattr(block, "preactivation", None)):
            pre.append(math.log10(np.mean(np.square(np.asarray(block.preactivation(h))))))
        elif isinstance(getattr(block, "linear", None), nnx.Linear) and hasattr(block, "activation"):
            pre.append(math.log10(np.mean(np.square(np.asarray(block.linear(h))))))
        else:
            pre.append(math.nan)
        hs.append(np.asarray(block(h), np.float64))
    branch = [
        math.log10(np.linalg.norm(b - a) / np.linalg.norm(a)) if a.shape == b.shape else math.nan
        for a, b in zip(hs, hs[1:], strict=False)
    ]
    return (
        np.array([math.log10(np.mean(h**2)) for h in hs]),
        np.array([_cosine(h) for h in hs]),
        np.array(branch),
        np.array([_effective_rank(h) for h in hs]),
        np.array(pre),
    )


def assert_signal_close(sig, ref, tol):
    for name, want in zip(
        ("log10_q", "c", "log10_branch_ratio", "effective_rank", "log10_q_preact"), ref, strict=True
    ):
        np.testing.assert_allclose(np.asarray(getattr(sig, name)), want, rtol=0, atol=tol, err_msg=name)


class ConvBlock(nnx.Module):
    """h -> h + tanh(conv(h)) on (batch, length, channels): rows are the positions of one example."""

    def __init__(self, channels, *, rngs):
        self.conv = nnx.Conv(channels, channels, (3,), padding="SAME", param_dtype=jnp.float64, rngs=rngs)

    def __call__(self, h):
        return h + jnp.tanh(self.conv(h))


class Flatten(nnx.Module):
    """(batch, 2, 3, 2) -> (batch, 2, 3, 2) through a dense map: a rank-4 representation."""

    def __init__(self, *, rngs):
        self.linear = nnx.Linear(12, 12, param_dtype=jnp.float64, rngs=rngs)

    def __call__(self, h):
        return jnp.tanh(self.linear(h.reshape(h.shape[0], -1))).reshape(h.shape)


class Rank4Net(BlockNet):
    def __init__(self, *, rngs):
        self.embed = nnx.Linear(2, 2, param_dtype=jnp.float64, rngs=rngs)
        self.blocks = nnx.List([Flatten(rngs=rngs) for _ in range(3)])
        self.head = None

    def __call__(self, x):
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return h


class ConvNet(BlockNet):
    def __init__(self, *, rngs):
        self.embed = nnx.Linear(2, 3, param_dtype=jnp.float64, rngs=rngs)
        self.blocks = nnx.List([ConvBlock(3, rngs=rngs) for _ in range(4)])
        self.head = nnx.Linear(3, 1, param_dtype=jnp.float64, rngs=rngs)


MLP_OPTIONS = {
    "tanh": dict(activation="tanh"),
    "sigmoid_gaussian": dict(activation="sigmoid", sigma_w2=2.0, sigma_b2=0.1, init="gaussian"),
    "relu_residual": dict(activation="relu", init="he_normal", residual=True),
    "layer_norm": dict(activation="tanh", norm="layer"),
    "batch_norm_residual": dict(activation="gelu", norm="batch", residual=True),
}


@pytest.mark.parametrize("name", list(MLP_OPTIONS))
def test_signal_matches_brute_force_float64(x64, name):
    # in_features 3 != width 8: block 1 changes the shape (branch ratio NaN), the others do not
    model = jaxvg.MLP(3, 8, 5, 2, param_dtype=jnp.float64, rngs=nnx.Rngs(1), **MLP_OPTIONS[name])
    x, _ = data(0, 6, 3, 2, jnp.float64)
    sig = measure.signal_propagation(model, x)
    ref = brute_force_signal(model, x)
    assert np.isnan(ref[2][0]) and np.isfinite(ref[2][1:]).all()
    assert_signal_close(sig, ref, 1e-12)
    assert int(sig.forward_nonfinite_block) == -1


@pytest.mark.parametrize(
    "make, x",
    [
        # (batch, seq, d): cosine between the tokens of a sequence, averaged over the batch
        (lambda: TinyTransformer(dtype=jnp.float64, rngs=nnx.Rngs(0)),
         lambda: jax.random.randint(jax.random.key(1), (3, 5), 0, 7)),
        (lambda: ConvNet(rngs=nnx.Rngs(0)), lambda: jax.random.normal(jax.random.key(2), (4, 6, 2), jnp.float64)),
        # (batch, 2, 3, 2): trailing axes flattened, cosine between examples
        (lambda: Rank4Net(rngs=nnx.Rngs(0)), lambda: jax.random.normal(jax.random.key(3), (5, 2, 3, 2), jnp.float64)),
    ],
    ids=["transformer", "conv", "rank4"],
)  # fmt: skip
def test_signal_of_other_shapes_matches_brute_force_float64(x64, make, x):
    model, x = make(), x()
    sig = measure.signal_propagation(model, x)
    assert_signal_close(sig, brute_force_signal(model, x), 1e-12)


def test_scanned_blocks_give_the_unrolled_numbers(x64):
    model = jaxvg.MLP(
        4, 8, 6, None, activation="tanh", residual=True, param_dtype=jnp.float64, rngs=nnx.Rngs(3)
    )
    x, _ = data(4, 5, 4, 1, jnp.float64)
    scanned = measure.signal_propagation(model, x, scan=True)
    unrolled = measure.signal_propagation(model, x, scan=False)
    for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(unrolled), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-13, atol=1e-13)


# ------------------------------------------------------------------------------------------------
# Mean-field theory at width 1024
# ------------------------------------------------------------------------------------------------


def _inputs(batch, d, q0, c0):
    """batch inputs with ||x||^2/d = q0 and pairwise cosine c0 exactly (orthonormal directions)."""
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(d, batch + 1)))
    e = q.T
    return np.sqrt(q0 * d) * (np.sqrt(c0) * e[:1] + np.sqrt(1 - c0) * e[1:])


def mean_field_signal(act, sigma_w2, sigma_b2, q0, c0, depth):
    """(q, c) of h_0..h_L (post-activation: q = E[phi(u)^2], c = E[phi(u1)phi(u2)]/E[phi(u)^2]) and
    the pre-activation q of blocks 1..L, from the q and c maps iterated from q_1 = sigma_w2 q0 +
    sigma_b2 and c_1 = (sigma_w2 q0 c0 + sigma_b2) / q_1."""
    phi = activations.get(act)
    qp = sigma_w2 * q0 + sigma_b2
    cp = (sigma_w2 * q0 * c0 + sigma_b2) / qp
    q, c, pre = [q0], [c0], []
    for _ in range(depth):
        v = float(expectations.evaluate(phi, "V", jnp.float32(qp)))
        k = float(expectations.evaluate(phi, "K", jnp.float32(qp), jnp.float32(cp)))
        pre.append(qp)
        q.append(v)
        c.append(k / v)
        cp = float(theory.c_map(act, sigma_w2, sigma_b2, c=cp, q=qp))
        qp = float(theory.q_map(act, sigma_w2, sigma_b2, q=qp))
    return np.array(q), np.array(c), np.array(pre)


# tanh, sigma_b2 = 0.05: ordered at sigma_w2 = 1 (c* = 1, xi_c = 3.6 layers), chaotic at
# sigma_w2 = 4 (c* = 0.165 for the pre-activations, 0.24 for the tanh outputs at depth 20).
# Width 1024, batch 64, depth 20, mean over 4 nets; measured max deviations over l = 0..20 (jax
# 0.10.2 CPU): q 3.4% (ordered) and 2.0% (chaotic) relative, q_preact 4.4% and 4.2%, c 0.012 and
# 0.026 absolute (one net alone: q 8%, c 0.034; the deviations are finite-width fluctuations).
PHASES = {"ordered": (1.0, 0.05, 0.2), "chaotic": (4.0, 0.05, 0.9)}


@pytest.mark.parametrize("phase", list(PHASES))
def test_signal_profile_iterates_the_q_and_c_maps(phase):
    sigma_w2, sigma_b2, c0 = PHASES[phase]
    got = theory.signal_profile("tanh", sigma_w2, sigma_b2, depth=20, q0=1.0, c0=c0)
    for a, b in zip(got, mean_field_signal("tanh", sigma_w2, sigma_b2, 1.0, c0, 20), strict=True):
        np.testing.assert_allclose(np.asarray(a), b, rtol=2e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("phase", list(PHASES))
def test_wide_tanh_follows_the_q_and_c_maps(phase):
    sigma_w2, sigma_b2, c0 = PHASES[phase]
    width, depth, seeds = 1024, 20, 4
    states = []
    for seed in range(seeds):
        model = jaxvg.MLP(width, width, depth, None, activation="tanh", init="gaussian",
                          sigma_w2=sigma_w2, sigma_b2=sigma_b2, rngs=nnx.Rngs(seed))  # fmt: skip
        graphdef, state = nnx.split(model)
        states.append(state)
    stacked = jax.tree.map(lambda *v: jnp.stack(v), *states)
    x = jnp.broadcast_to(jnp.asarray(_inputs(64, width, 1.0, c0), jnp.float32), (seeds, 64, width))
    # scanned (one compiled block instead of 20: the layout is not what this test is about)
    fn = jax.jit(jax.vmap(lambda s, x: measure.signal_propagation_from_split(graphdef, s, x, scan=True)))
    sig = fn(stacked, x)
    q, c, pre = (
        np.asarray(v) for v in theory.signal_profile("tanh", sigma_w2, sigma_b2, depth=depth, q0=1.0, c0=c0)
    )
    got_q = np.mean(np.asarray(sig.q), axis=0)
    got_pre = np.mean(np.asarray(sig.q_preact), axis=0)
    got_c = np.mean(np.asarray(sig.c), axis=0)
    assert np.max(np.abs(got_q / q - 1)) < 0.06
    assert np.max(np.abs(got_pre / pre - 1)) < 0.06
    assert np.max(np.abs(got_c - c)) < 0.04
    if phase == "ordered":
        assert got_c[-1] > 0.99  # every input looks the same deep down
    else:
        c_post = c[-1]
        assert 0.15 < c_post < 0.35 and abs(got_c[-1] - c_post) < 0.04


# ------------------------------------------------------------------------------------------------
# Numerics: huge and tiny activations, a forward pass that overflows
# ------------------------------------------------------------------------------------------------


def test_huge_activations_are_exact_until_h_itself_overflows(x64):
    # relu with sigma_w2 = 1e30: q grows 1e30-fold per block; mean(h^2) leaves float32's range at
    # h_2 (1e59) while h_2 itself is finite (|h| ~ 1e30); h_3 (~1e45) overflows
    model32 = jaxvg.MLP(6, 6, 4, None, activation="relu", init="gaussian", sigma_w2=1e30, rngs=nnx.Rngs(0))
    x, _ = data(5, 8, 6, 1, jnp.float32)
    sig = measure.signal_propagation(model32, x)
    model64 = nnx.merge(*jax.tree.map(lambda v: v.astype(jnp.float64), nnx.split(model32)))
    ref = brute_force_signal(model64, x.astype(jnp.float64))
    assert int(sig.forward_nonfinite_block) == 2
    assert float(sig.log10_q[2]) > 55
    for name, want in zip(
        ("log10_q", "c", "log10_branch_ratio", "effective_rank", "log10_q_preact"), ref, strict=True
    ):
        got = np.asarray(getattr(sig, name))
        n = 3 if got.shape[0] == 5 else 2  # h_0..h_2 and blocks 1, 2 finite
        np.testing.assert_allclose(got[:n], want[:n], rtol=1e-5, atol=1e-5, err_msg=name)
        assert np.isnan(got[n:]).all(), name


def test_tiny_activations_do_not_underflow(x64):
    # a linear net with sigma_w2 = 1e-20 loses 20 decades of q per block: at depth 3, h ~ 1e-30 is
    # a normal float32 but mean(h^2) ~ 1e-60 is far below float32's 1e-38
    model32 = jaxvg.MLP(
        16, 16, 3, None, activation="linear", init="gaussian", sigma_w2=1e-20, rngs=nnx.Rngs(0)
    )
    x, _ = data(6, 8, 16, 1, jnp.float32)
    sig = measure.signal_propagation(model32, x)
    model64 = nnx.merge(*jax.tree.map(lambda v: v.astype(jnp.float64), nnx.split(model32)))
    ref = brute_force_signal(model64, x.astype(jnp.float64))
    assert float(sig.log10_q[-1]) < -55
    assert_signal_close(sig, ref, 1e-4)


def test_batch_of_one_has_no_pairs():
    model = jaxvg.MLP(3, 8, 2, None, rngs=nnx.Rngs(0))
    sig = measure.signal_propagation(model, jnp.ones((1, 3)))
    assert np.isnan(np.asarray(sig.c)).all() and np.isfinite(np.asarray(sig.log10_q)).all()
    np.testing.assert_allclose(np.asarray(sig.effective_rank), 1.0, rtol=1e-6)


def test_dropout_in_train_mode_depends_on_the_key():
    model = jaxvg.MLP(4, 16, 3, None, dropout=0.5, rngs=nnx.Rngs(0))
    x, _ = data(7, 8, 4, 1, jnp.float32)
    a = measure.signal_propagation(model, x, train=True, key=jax.random.key(0))
    b = measure.signal_propagation(model, x, train=True, key=jax.random.key(1))
    again = measure.signal_propagation(model, x, train=True, key=jax.random.key(0))
    assert not np.allclose(np.asarray(a.log10_q), np.asarray(b.log10_q))
    np.testing.assert_array_equal(np.asarray(a.log10_q), np.asarray(again.log10_q))
    evaluation = measure.signal_propagation(model, x)
    assert not np.allclose(np.asarray(a.log10_q[1:]), np.asarray(evaluation.log10_q[1:]))


# ------------------------------------------------------------------------------------------------
# Caching and input checks
# ------------------------------------------------------------------------------------------------


def test_second_call_does_not_retrace_or_replan(monkeypatch):
    plan.cache_clear()
    model = jaxvg.MLP(3, 8, 4, None, rngs=nnx.Rngs(0))
    x, _ = data(8, 5, 3, 1, jnp.float32)
    first = measure.signal_propagation(model, x)
    p, _ = plan.lookup(model, train=False, scan="auto")
    kernel = p.kernel(("signal", "highest", True), None)
    assert kernel._cache_size() == 1
    calls = []
    monkeypatch.setattr(engine, "split_pieces", lambda *a: calls.append(a))  # would break a re-plan
    again = measure.signal_propagation(model, x + 0.0)
    other = measure.signal_propagation(jaxvg.MLP(3, 8, 4, None, rngs=nnx.Rngs(1)), x)  # same structure
    assert calls == [] and kernel._cache_size() == 1
    np.testing.assert_array_equal(np.asarray(first.c), np.asarray(again.c))
    assert not np.array_equal(np.asarray(first.c), np.asarray(other.c))


def _messages(call_flow, call_signal):
    with pytest.raises((TypeError, ValueError)) as want:
        call_flow()
    with pytest.raises(type(want.value)) as got:
        call_signal()
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize(
    "kwargs, x",
    [
        ({}, jnp.ones(())),  # no batch axis
        ({}, jnp.ones((0, 3))),  # empty batch
        ({}, jnp.full((2, 3), jnp.nan)),
        ({}, jnp.ones((2, 4))),  # wrong features
        ({"precision": "tf32"}, jnp.ones((2, 3))),
        ({"train": 1}, jnp.ones((2, 3))),
        ({"key": 0}, jnp.ones((2, 3))),
        ({"scan": "sometimes"}, jnp.ones((2, 3))),
    ],
    ids=["no_batch", "empty", "nan", "features", "precision", "train", "key", "scan"],
)
def test_bad_input_raises_what_gradient_flow_raises(kwargs, x):
    model = jaxvg.MLP(3, 8, 2, 2, rngs=nnx.Rngs(0))
    y = jnp.zeros((max(x.shape[:1] or (1,)), 2))
    _messages(
        lambda: measure.gradient_flow(model, x, y, **kwargs),
        lambda: measure.signal_propagation(model, x, **kwargs),
    )


def test_train_mode_dropout_without_key_and_bad_models_are_refused():
    model = jaxvg.MLP(3, 8, 2, 2, dropout=0.1, rngs=nnx.Rngs(0))
    x = jnp.ones((2, 3))
    _messages(
        lambda: measure.gradient_flow(model, x, jnp.zeros((2, 2)), train=True),
        lambda: measure.signal_propagation(model, x, train=True),
    )
    _messages(
        lambda: measure.gradient_flow(nnx.Linear(3, 3, rngs=nnx.Rngs(0)), x, x),
        lambda: measure.signal_propagation(nnx.Linear(3, 3, rngs=nnx.Rngs(0)), x),
    )


def test_reexported_at_the_top():
    assert jaxvg.signal_propagation is measure.signal_propagation
    assert jaxvg.SignalFlow is measure.SignalFlow


def test_probe_reads_the_trained_arrays():
    model = jaxvg.MLP(3, 8, 3, None, rngs=nnx.Rngs(0))
    x, _ = data(9, 5, 3, 1, jnp.float32)
    probe = measure.Probe(model)
    np.testing.assert_array_equal(
        np.asarray(probe.signal_propagation(x).log10_q),
        np.asarray(measure.signal_propagation(model, x).log10_q),
    )
    model.blocks[0].linear.kernel[...] = 2 * model.blocks[0].linear.kernel[...]  # in place
    np.testing.assert_allclose(
        np.asarray(probe.signal_propagation(x).log10_q),
        np.asarray(measure.signal_propagation(nnx.merge(*nnx.split(model)), x).log10_q),
        rtol=1e-6,
    )


def test_rank_false_skips_only_the_effective_rank():
    model = jaxvg.MLP(3, 8, 3, None, rngs=nnx.Rngs(0))
    x, _ = data(10, 5, 3, 1, jnp.float32)
    full, cheap = measure.signal_propagation(model, x), measure.signal_propagation(model, x, rank=False)
    assert np.isnan(np.asarray(cheap.effective_rank)).all()
    for name in ("log10_q", "c", "log10_branch_ratio", "log10_q_preact"):
        np.testing.assert_array_equal(np.asarray(getattr(full, name)), np.asarray(getattr(cheap, name)))
    with pytest.raises(checks.ArgumentTypeError, match="`rank`"):
        measure.signal_propagation(model, x, rank="no")
