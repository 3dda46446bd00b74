"""`jaxvg.nn.rnn`: cells, initialisation, the recurrent contract, float64, named errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxvg
from jaxvg.nn import contracts, rnn


@pytest.mark.parametrize("cell", rnn.CELLS)
@pytest.mark.parametrize("readout", rnn.READOUTS)
def test_shapes_and_contract(cell, readout):
    model = rnn.RNN(3, 8, 2, cell=cell, readout=readout, rngs=nnx.Rngs(0))
    out = model(jnp.ones((4, 11, 3)))
    assert out.shape == ((4, 11, 2) if readout == "all" else (4, 2))
    assert isinstance(model, contracts.RecurrentModel)
    contracts.check_recurrent_model(model)
    state = model.initial_state(4)
    width = 16 if cell == "lru" else 8
    assert jax.tree.leaves(state)[contracts.reported_index(model, state)].shape == (4, width)
    assert model(jnp.ones((4, 11, 3))).dtype == jnp.float32


def test_no_head_returns_the_reported_state():
    model = rnn.RNN(3, 8, None, cell="lstm", rngs=nnx.Rngs(0))
    xs = jax.random.normal(jax.random.key(0), (2, 5, 3))
    s = model.initial_state(2)
    for t in range(5):
        s = model.cell(s, xs[:, t])
    # scan against eager steps: float32 rounding
    np.testing.assert_allclose(np.asarray(model(xs)), np.asarray(s[0]), atol=1e-6)


def test_recurrent_inits():
    H = 256
    g = rnn.RNN(2, H, 1, cell="tanh", init="gaussian", sigma_w2=1.7, rngs=nnx.Rngs(0)).cell.recurrent_kernel[
        ...
    ]
    assert float(jnp.var(g) * H) == pytest.approx(1.7, rel=0.02)  # 65k entries: 3/sqrt(n) ~ 1%
    o = rnn.RNN(
        2, 32, 1, cell="tanh", init="orthogonal", sigma_w2=0.81, rngs=nnx.Rngs(0)
    ).cell.recurrent_kernel[...]
    np.testing.assert_allclose(np.asarray(o.T @ o), 0.81 * np.eye(32), atol=1e-5)
    i = rnn.RNN(2, 6, 1, cell="relu", init="identity", rngs=nnx.Rngs(0)).cell.recurrent_kernel[...]
    np.testing.assert_array_equal(np.asarray(i), np.eye(6))
    lstm = rnn.RNN(2, 16, 1, cell="lstm", rngs=nnx.Rngs(0)).cell  # orthogonal per gate block
    for k in range(4):
        blk = lstm.recurrent_kernel[...][:, 16 * k : 16 * (k + 1)]
        np.testing.assert_allclose(np.asarray(blk.T @ blk), np.eye(16), atol=1e-5)
    np.testing.assert_allclose(np.asarray(lstm.bias[...][16:32]), 1.0)  # forget-gate bias, sigma_b2 = 0
    assert not np.any(np.asarray(lstm.bias[...][:16]))


def test_lru_ring_initialisation():
    model = rnn.RNN(2, 512, 1, cell="lru", r_min=0.4, r_max=0.9, max_phase=1.0, rngs=nnx.Rngs(0))
    modulus, phase = (np.asarray(v) for v in model.cell.eigenvalues())
    assert modulus.min() >= 0.4 - 1e-6 and modulus.max() <= 0.9 + 1e-6
    assert phase.min() >= 0 and phase.max() <= 1.0 + 1e-6
    # uniform in area on the ring: E|λ|² = (r_min² + r_max²) / 2
    assert float(np.mean(modulus**2)) == pytest.approx((0.16 + 0.81) / 2, abs=0.02)
    np.testing.assert_allclose(
        np.exp(np.asarray(model.cell.gamma_log[...])), np.sqrt(1 - modulus**2), rtol=1e-5
    )
    assert (
        model.embed is not None and rnn.RNN(2, 4, 1, cell="lru", embed=None, rngs=nnx.Rngs(0)).embed is None
    )


def test_lru_is_the_complex_recurrence(x64):
    model = rnn.RNN(2, 4, None, cell="lru", embed=None, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    c = model.cell
    modulus, phase = (np.asarray(v) for v in c.eigenvalues())
    lam = modulus * np.exp(1j * phase)
    B = np.asarray(c.input_re[...]) + 1j * np.asarray(c.input_im[...])
    gamma = np.exp(np.asarray(c.gamma_log[...]))
    xs = np.asarray(jax.random.normal(jax.random.key(0), (3, 7, 2), jnp.float64))
    h = np.zeros((3, 4), complex)
    for t in range(7):
        h = lam * h + gamma * (xs[:, t] @ B)
    out = np.asarray(model(jnp.asarray(xs)))
    np.testing.assert_allclose(out, np.concatenate([h.real, h.imag], axis=1), rtol=1e-12, atol=1e-12)


def test_gru_equations(x64):
    H = 3
    xs = jax.random.normal(jax.random.key(1), (2, 4, 2), jnp.float64)
    gru = rnn.RNN(2, H, None, cell="gru", param_dtype=jnp.float64, rngs=nnx.Rngs(0)).cell
    W, U = np.asarray(gru.recurrent_kernel[...]), np.asarray(gru.input_kernel[...])
    b, bh = np.asarray(gru.bias[...]), np.asarray(gru.recurrent_bias[...])
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    h = np.zeros((2, H))
    x = np.asarray(xs[:, 0])
    a, r_ = x @ U + b, h @ W
    r, z = sig(a[:, :H] + r_[:, :H]), sig(a[:, H : 2 * H] + r_[:, H : 2 * H])
    n = np.tanh(a[:, 2 * H :] + r * (r_[:, 2 * H :] + bh))
    np.testing.assert_allclose(np.asarray(gru(jnp.zeros((2, H)), xs[:, 0])), (1 - z) * n + z * h, rtol=1e-12)


def test_same_seed_same_weights_and_float64(x64):
    a = rnn.RNN(2, 8, 1, cell="gru", rngs=nnx.Rngs(3))
    b = rnn.RNN(2, 8, 1, cell="gru", rngs=nnx.Rngs(3))
    for u, v in zip(jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b)), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    m64 = rnn.RNN(2, 8, 1, cell="lstm", param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    assert m64(jnp.ones((2, 5, 2), jnp.float64)).dtype == jnp.float64


def test_named_errors():
    R = lambda **kw: rnn.RNN(2, 8, 1, rngs=nnx.Rngs(0), **kw)  # noqa: E731
    with pytest.raises(ValueError, match=r"`cell` must be one of \[.*'gru'.*\], got 'elman'"):
        R(cell="elman")
    with pytest.raises(ValueError, match=r"`init` must be one of \[.*'identity'.*\], got 'he'"):
        R(init="he")
    with pytest.raises(ValueError, match=r"`init` must be None for cell='lru'"):
        R(cell="lru", init="orthogonal")
    with pytest.raises(ValueError, match=r"`readout` must be one of"):
        R(readout="mean")
    with pytest.raises(ValueError, match=r"`r_min` must be < `r_max`"):
        R(cell="lru", r_min=0.9, r_max=0.5)
    with pytest.raises(ValueError, match=r"`r_max` must lie in \[0.0, 1.0\)"):
        R(cell="lru", r_max=1.0)
    with pytest.raises(ValueError, match=r"`sigma_u2`/`sigma_b2` apply only"):
        R(input_init="he_normal", sigma_u2=2.0)
    with pytest.raises(ValueError, match=r"`hidden` must be an integer >= 1"):
        rnn.RNN(2, 0, 1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"`sigma_w2` must be a finite number > 0"):
        R(sigma_w2=0.0)
    with pytest.raises(ValueError, match=r"`forget_bias` must be a finite number"):
        R(cell="lstm", forget_bias=math.inf)
    with pytest.raises(ValueError, match=r"activation"):
        R(embed="sigmod")
    with pytest.raises(ValueError, match=r"needs 64-bit mode"):
        R(param_dtype=jnp.float64)
    with pytest.raises(TypeError, match=r"`rngs` must be an nnx.Rngs"):
        rnn.RNN(2, 8, 1, rngs=0)
    model = R()
    with pytest.raises(ValueError, match=r"`xs` must have shape \(batch, time >= 1, 2\)"):
        model(jnp.ones((4, 2)))
    with pytest.raises(ValueError, match=r"`xs` must have shape"):
        model(jnp.ones((4, 0, 2)))
    with pytest.raises(TypeError, match=r"recurrent contract"):
        contracts.check_recurrent_model(jaxvg.MLP(2, 4, 2, 1, rngs=nnx.Rngs(0)))


def test_fit_trains_seeds_of_an_rnn_in_one_program():
    x = np.asarray(jax.random.normal(jax.random.key(0), (64, 10, 2)), np.float32)
    y = x[:, :, :1].sum(axis=1)  # a linear memory task
    result = jaxvg.fit(lambda rngs: rnn.RNN(2, 8, 1, cell="gru", rngs=rngs), (x, y), loss="mse",
                       optimizer="adam", learning_rate=1e-2, steps=60, log_every=30, seeds=[0, 1],
                       progress=False)  # fmt: skip
    loss = result.history["train/loss"]
    assert loss.shape == (2, 3) and np.all(loss[:, -1] < 0.5 * loss[:, 0])
