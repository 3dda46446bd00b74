"""`jaxvg.measure.time_flow`: exact through time, against float64 brute force.

The reference runs the model by hand, step by step, with zero perturbations added to every state
(s_t + e_t) and to every step's copy of the cell's parameters (θ + E_t), and takes `jax.jacfwd` of the
loss in float64: ∂L/∂e_t = δ_t, ∂L/∂E_t = δ_t · ∂⁺s_t/∂θ (Pascanu's per-step term). Nothing underflows
at these sizes (T <= 12), so the norms are the truth to float64 rounding.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvg import measure
from jaxvg.measure import lognorm
from jaxvg.measure import through_time as tf
from jaxvg.nn import contracts, losses, rnn

TOL64 = 1e-10  # decades: float64 against float64 brute force
TOL32 = 1e-4  # decades: float32 against the float64 reference


def _add(tree, eps):
    return jax.tree.map(lambda a, b: a + b, tree, eps)


def _log10(tree):
    leaves = [np.asarray(v, np.float64).ravel() for v in jax.tree.leaves(tree)]
    if not leaves:
        return math.nan
    total = sum(float(np.sum(v**2)) for v in leaves)
    return 0.5 * math.log10(total) if total > 0 else -math.inf


def reference(model, xs, y, loss="mse"):
    """Float64 brute force of every `TimeFlow` field by `jax.jacfwd` (see the module docstring)."""
    lossfn = losses.get(loss)
    gd, params, rest = nnx.split(model, nnx.Param, ...)
    B, T = xs.shape[:2]
    state0 = model.initial_state(B)
    rep = contracts.reported_index(model, state0)
    readout = contracts.readout_of(model)
    cgd, cp, cr = nnx.split(model.cell, nnx.Param, ...)
    names = [contracts._path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(cp)[0]]
    rec_paths = contracts.recurrent_paths(model.cell)
    rec = [i for i, n in enumerate(names) if rec_paths is None or any(n == "/".join(p) for p in rec_paths)]

    def run(params, e_state, e_cell, e_out):
        m = nnx.merge(gd, params, rest, copy=True)
        xe = m.embed(xs) if getattr(m, "embed", None) is not None else xs
        c_gd, c_p, c_r = nnx.split(m.cell, nnx.Param, ...)
        s = _add(state0, e_state[0])
        hs = []
        for t in range(T):
            cell = nnx.merge(c_gd, _add(c_p, e_cell[t]), c_r, copy=True)
            s = _add(cell(s, xe[:, t]), e_state[t + 1])
            hs.append(jax.tree.leaves(s)[rep] + e_out[t])
        h = jnp.stack(hs, axis=1) if readout == "all" else hs[-1]
        head = getattr(m, "head", None)
        return lossfn(h if head is None else head(h), y)

    zeros = lambda tree: jax.tree.map(jnp.zeros_like, tree)  # noqa: E731
    e_state = [zeros(state0) for _ in range(T + 1)]
    e_cell = [zeros(cp) for _ in range(T)]
    e_out = [jnp.zeros_like(jax.tree.leaves(state0)[rep]) for _ in range(T)]
    d_state, d_cell, d_out = jax.jit(jax.jacfwd(run, argnums=(1, 2, 3)))(params, e_state, e_cell, e_out)
    d_params = jax.jit(jax.grad(run))(params, e_state, e_cell, e_out)
    value = run(params, e_state, e_cell, e_out)

    state = np.array([_log10(jax.tree.leaves(d)[rep]) for d in d_state])
    other = np.array([_log10([v for i, v in enumerate(jax.tree.leaves(d)) if i != rep]) for d in d_state])
    lag = np.array([_log10([jax.tree.leaves(d)[i] for i in rec]) for d in d_cell])
    # J_t^T delta_t (reported part) = delta_{t-1} minus the loss's own gradient at h_{t-1}
    prop = [jax.tree.leaves(d_state[t])[rep] - (d_out[t - 1] if t > 0 else 0.0) for t in range(T)]
    with np.errstate(invalid="ignore"):  # -inf - -inf: a cut path has no gain (NaN, as measured)
        gain = np.array([_log10(prop[t]) - state[t + 1] for t in range(T)])
    per_param = {
        contracts._path_name(p): _log10(v) for p, v in jax.tree_util.tree_flatten_with_path(d_params)[0]
    }
    rec_total = _log10([jax.tree.leaves(jax.tree.map(lambda *a: sum(a), *d_cell))[i] for i in rec])
    return {
        "log10_state_grad": state,
        "log10_cell_grad": other,
        "log10_gain": gain,
        "log10_lag_contrib": lag,
        "log10_recurrent_grad": rec_total,
        "log10_param_grad": per_param,
        "loss": float(value),
    }


def _compare(flow, ref, tol):
    for name in ("log10_state_grad", "log10_cell_grad", "log10_gain", "log10_lag_contrib"):
        np.testing.assert_allclose(np.asarray(getattr(flow, name), np.float64), ref[name], atol=tol, rtol=0,
                                   err_msg=name)  # fmt: skip
    assert abs(float(flow.log10_recurrent_grad) - ref["log10_recurrent_grad"]) < tol
    assert set(flow.log10_param_grad) == set(ref["log10_param_grad"])
    for name, value in flow.log10_param_grad.items():
        assert abs(float(value) - ref["log10_param_grad"][name]) < tol, name
    assert float(flow.loss) == pytest.approx(ref["loss"], rel=10 * tol)


def _data(cell, readout, T=7, B=3, d=2, out=2, dtype=jnp.float64):
    kx, ky = jax.random.split(jax.random.key(1))
    xs = jax.random.normal(kx, (B, T, d), dtype)
    shape = (B, T, out) if readout == "all" else (B, out)
    return xs, jax.random.normal(ky, shape, dtype)


CASES = [(c, r) for c in rnn.CELLS for r in rnn.READOUTS]


@pytest.mark.parametrize("cell,readout", CASES)
def test_every_field_matches_jacfwd_float64(x64, cell, readout):
    kw = {"init": "orthogonal", "sigma_w2": 1.5} if cell in ("tanh", "relu", "linear") else {}
    model = rnn.RNN(2, 5, 2, cell=cell, readout=readout, param_dtype=jnp.float64, rngs=nnx.Rngs(3), **kw)
    xs, y = _data(cell, readout)
    flow = measure.time_flow(model, xs, y)
    assert flow.log10_state_grad.dtype == jnp.float64
    _compare(flow, reference(model, xs, y), TOL64)
    if cell != "lstm":
        assert np.isnan(np.asarray(flow.log10_cell_grad)).all()


@pytest.mark.parametrize("cell", ["tanh", "lstm", "lru"])
def test_float32_matches_the_float64_reference(cell):
    model = rnn.RNN(2, 6, 2, cell=cell, rngs=nnx.Rngs(0))
    xs, y = _data(cell, "last", T=12, dtype=jnp.float32)
    flow = measure.time_flow(model, xs, y)
    with jax.enable_x64(True):
        graphdef, state = nnx.split(model)
        model64 = nnx.merge(graphdef, jax.tree.map(lambda v: v.astype(jnp.float64), state))
        ref = reference(model64, xs.astype(jnp.float64), y.astype(jnp.float64))
    _compare(flow, ref, TOL32)


def test_linear_rnn_decays_by_rho_per_step_far_below_float32():
    """W = 0.9 Q, T = 2000, loss on h_T: ‖δ_t‖ = 0.9^(T-t) ‖δ_T‖, reaching 1e-91 where the plain float32
    gradient is exactly 0; measured per step to 1e-5 decades."""
    T, rho = 2000, 0.9
    model = rnn.RNN(1, 32, None, cell="linear", init="orthogonal", sigma_w2=rho**2, rngs=nnx.Rngs(0))
    xs = jax.random.normal(jax.random.key(0), (4, T, 1))
    y = jnp.zeros((4, 32))
    flow = measure.time_flow(model, xs, y)
    state = np.asarray(flow.log10_state_grad, np.float64)
    gain = np.asarray(flow.log10_gain, np.float64)
    slope = math.log10(rho)
    assert np.max(np.abs(gain - slope)) < 1e-5
    fitted = np.polyfit(np.arange(T + 1), state, 1)[0]
    assert abs(fitted - (-slope)) < 1e-5  # state grows towards t = T by -log10 rho per step
    assert abs((state[-1] - state[0]) - (-T * slope)) < 1e-3  # W = 0.9 Q up to float32 rounding
    assert state[0] - state[-1] < -90  # about 1e-91 relative to the last step

    # every step against a float64 log-space chain through the same (float32) weights
    W, U, b = (np.asarray(v[...], np.float64) for v in (model.cell.recurrent_kernel, model.cell.input_kernel,
                                                          model.cell.bias))  # fmt: skip
    h = np.zeros((4, 32))
    for x in np.swapaxes(np.asarray(xs, np.float64), 0, 1):
        h = h @ W + x @ U + b
    d = 2 * h / h.size
    log10_d = [math.log10(np.linalg.norm(d))]
    d /= np.linalg.norm(d)
    for _ in range(T):
        d = d @ W.T
        n = np.linalg.norm(d)
        log10_d.append(log10_d[-1] + math.log10(n))
        d /= n
    np.testing.assert_allclose(state, np.array(log10_d[::-1]), atol=1e-4, rtol=0)

    # the plain float32 gradient w.r.t. the initial state is exactly zero
    W = model.cell.recurrent_kernel[...]
    U, b = model.cell.input_kernel[...], model.cell.bias[...]

    def loss_from(h0):
        h, _ = jax.lax.scan(lambda h, x: (h @ W + x @ U + b[None], None), h0, jnp.swapaxes(xs, 0, 1))
        return jnp.mean((h - y) ** 2)

    plain = jax.jit(jax.grad(loss_from))(jnp.zeros((4, 32)))
    assert not np.any(np.asarray(plain))


def test_lstm_cell_state_path_is_the_forget_gate_product(x64):
    """The constant-error carousel, reported apart from h: with the recurrent kernel zeroed (no route
    from h_{t-1} into step t) and the forget gate constant (its input weights zeroed, bias b_f), the
    cell grad falls by exactly log10 sigmoid(b_f) per step while the h path is cut (exactly 0)."""
    T, H, b_f = 80, 4, 2.0
    model = rnn.RNN(1, H, None, cell="lstm", param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    cell = model.cell
    cell.recurrent_kernel[...] = jnp.zeros_like(cell.recurrent_kernel[...])
    cell.input_kernel[...] = cell.input_kernel[...].at[:, H : 2 * H].set(0.0)
    cell.bias[...] = cell.bias[...].at[H : 2 * H].set(b_f)
    xs = jax.random.normal(jax.random.key(0), (3, T, 1), jnp.float64)
    y = jnp.ones((3, H), jnp.float64)
    flow = measure.time_flow(model, xs, y)
    c = np.asarray(flow.log10_cell_grad)
    f = 1 / (1 + math.exp(-b_f))
    np.testing.assert_allclose(np.diff(c[:T]), -math.log10(f), atol=TOL64)
    assert np.all(np.isneginf(np.asarray(flow.log10_state_grad[:T])))
    short = measure.time_flow(model, xs[:, :8], y)
    _compare(short, reference(model, xs[:, :8], y), TOL64)


class MinState(NamedTuple):
    c: jax.Array  # a memory, not reported
    h: jax.Array  # the reported state (named, not the first leaf)


class MinimalRNN(nnx.Module):
    """A recurrent model written here, not in jaxvg: Chen et al. 2018's minimalRNN with an extra memory
    leaf, read through the contract only (`cell`, `initial_state`, `reported_state`, `head`)."""

    reported_state = "h"

    def __init__(self, d, n, rngs):
        self.cell = _MinCell(d, n, rngs)
        self.head = nnx.Linear(n, 1, rngs=rngs, param_dtype=jnp.float64)
        self.n = n

    def initial_state(self, batch_size):
        z = jnp.zeros((batch_size, self.n), jnp.float64)
        return MinState(z, z)


class _MinCell(nnx.Module):
    def __init__(self, d, n, rngs):
        self.phi = nnx.Linear(d, n, rngs=rngs, param_dtype=jnp.float64)
        self.u = nnx.Linear(2 * n, n, rngs=rngs, param_dtype=jnp.float64)

    def __call__(self, s, x):
        z = jnp.tanh(self.phi(x))
        u = jax.nn.sigmoid(self.u(jnp.concatenate([s.h, z], -1)))
        h = u * s.h + (1 - u) * z
        return MinState(0.5 * s.c + h, h)


def test_a_model_written_here_is_measured_through_the_contract(x64):
    model = MinimalRNN(2, 4, nnx.Rngs(0))
    xs, y = _data("min", "last", out=1)
    assert isinstance(model, contracts.RecurrentModel)
    assert contracts.reported_index(model, model.initial_state(3)) == 1
    flow = measure.time_flow(model, xs, y)
    _compare(flow, reference(model, xs, y), TOL64)


def _jacobian_reference(model, xs):
    """‖∂h_T/∂h_t‖_F per example by jax.jacfwd through perturbations of h_t (float64)."""
    B, T = xs.shape[:2]
    state0 = model.initial_state(B)
    rep = contracts.reported_index(model, state0)
    xe = model.embed(xs) if model.embed is not None else xs

    def h_T(e, t):
        s = state0
        if t == 0:
            s = jax.tree.unflatten(jax.tree.structure(s), [v + e if i == rep else v for i, v in
                                                           enumerate(jax.tree.leaves(s))])  # fmt: skip
        for k in range(T):
            s = model.cell(s, xe[:, k])
            if k + 1 == t:
                leaves = jax.tree.leaves(s)
                leaves[rep] = leaves[rep] + e
                s = jax.tree.unflatten(jax.tree.structure(s), leaves)
        return jax.tree.leaves(s)[rep]

    h0 = jax.tree.leaves(state0)[rep]
    out = []
    for t in range(T + 1):
        J = jax.jacfwd(lambda e, t=t: h_T(e, t))(jnp.zeros_like(h0))  # (B, H, B, H)
        per = [np.linalg.norm(np.asarray(J[b, :, b, :])) for b in range(B)]
        out.append(np.log10(per))
    return np.stack(out, axis=1)


@pytest.mark.parametrize("cell", ["tanh", "lstm", "gru"])
def test_time_jacobian_norms_exact_and_hutchinson(x64, cell):
    model = rnn.RNN(2, 5, None, cell=cell, param_dtype=jnp.float64, rngs=nnx.Rngs(1))
    xs, _ = _data(cell, "last", T=6)
    ref = _jacobian_reference(model, xs)
    exact = measure.time_jacobian_norms(model, xs)
    np.testing.assert_allclose(np.asarray(exact.log10_fro), ref, atol=TOL64)
    assert np.all(np.asarray(exact.log10_fro_stderr) == 0)
    hutch = measure.time_jacobian_norms(model, xs, method="hutchinson", num_probes=256, key=jax.random.key(3))
    err = np.abs(np.asarray(hutch.log10_fro) - ref)
    se = np.asarray(hutch.log10_fro_stderr)
    assert np.all(err < 5 * se + 1e-12)  # within five standard errors
    assert np.median(se[:, :-1]) < 0.02


def test_time_jacobian_spectrum_linear_orthogonal():
    """W = ρQ: every singular value of ∂h_T/∂h_t is ρ^(T-t), every Lyapunov exponent log10 ρ."""
    model = rnn.RNN(1, 6, None, cell="linear", init="orthogonal", sigma_w2=0.49, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (120, 1))
    spec = measure.time_jacobian_spectrum(model, x, steps=(0, 100))
    np.testing.assert_allclose(np.asarray(spec.log10_sv[0]), 120 * math.log10(0.7), atol=1e-4)
    np.testing.assert_allclose(np.asarray(spec.log10_sv[1]), 20 * math.log10(0.7), atol=1e-5)
    np.testing.assert_allclose(np.asarray(spec.log10_lyapunov), math.log10(0.7), atol=1e-5)


def test_time_jacobian_spectrum_matches_numpy(x64):
    model = rnn.RNN(2, 4, None, cell="lstm", param_dtype=jnp.float64, rngs=nnx.Rngs(2))
    xs, _ = _data("lstm", "last", T=5, B=1)
    spec = measure.time_jacobian_spectrum(model, xs[0], steps=(0, 2))
    s = model.initial_state(1)
    xe = xs
    states = [s]
    for k in range(5):
        s = model.cell(s, xe[:, k])
        states.append(s)

    def h_T_from(t):
        def f(h):
            s = (h[None], states[t][1])
            for k in range(t, 5):
                s = model.cell(s, xe[:, k])
            return s[0][0]

        return f

    for i, t in enumerate((0, 2)):
        J = jax.jacfwd(h_T_from(t))(states[t][0][0])
        want = np.log10(np.linalg.svd(np.asarray(J), compute_uv=False))
        np.testing.assert_allclose(np.asarray(spec.log10_sv[i]), want, atol=1e-9)
    # Lyapunov exponents: sum = mean log10 |det J_t| of the full-state map
    flat = lambda s: jnp.concatenate([s[0][0], s[1][0]])  # noqa: E731
    total = 0.0
    for k in range(5):
        J = jax.jacfwd(lambda v, k=k: flat(model.cell((v[None, :4], v[None, 4:]), xe[:, k])))(flat(states[k]))
        total += np.log10(abs(np.linalg.det(np.asarray(J))))
    assert float(np.sum(spec.log10_lyapunov)) == pytest.approx(total / 5, abs=1e-9)


def test_second_call_reuses_the_compiled_program():
    model = rnn.RNN(2, 8, 1, cell="gru", rngs=nnx.Rngs(0))
    xs, y = jnp.ones((2, 9, 2)), jnp.zeros((2, 1))
    measure.time_flow(model, xs, y)
    size = tf._flow_jit._cache_size()
    other = rnn.RNN(2, 8, 1, cell="gru", rngs=nnx.Rngs(1))  # same structure, other weights
    measure.time_flow(other, 2 * xs, y)
    assert tf._flow_jit._cache_size() == size


def test_precision_is_applied():
    model = rnn.RNN(2, 8, 1, rngs=nnx.Rngs(0))
    xs, y = jnp.ones((2, 9, 2)), jnp.zeros((2, 1))
    a = measure.time_flow(model, xs, y, precision="highest")
    b = measure.time_flow(model, xs, y, precision="default")
    np.testing.assert_allclose(np.asarray(a.log10_state_grad), np.asarray(b.log10_state_grad), atol=1e-3)
    with pytest.raises(ValueError, match=r"`precision` must be one of .* got 'fast'"):
        measure.time_flow(model, xs, y, precision="fast")


def test_bad_inputs_get_named_errors():
    model = rnn.RNN(2, 8, 1, rngs=nnx.Rngs(0))
    y = jnp.zeros((2, 1))
    with pytest.raises(ValueError, match=r"`xs` must have shape \(batch, time, 2\).*add a batch axis"):
        measure.time_flow(model, jnp.ones((9, 2)), y)
    with pytest.raises(ValueError, match=r"at least one time step \(T >= 1\)"):
        measure.time_flow(model, jnp.ones((2, 0, 2)), y)
    with pytest.raises(ValueError, match=r"time axis in the wrong place"):
        measure.time_flow(model, jnp.ones((2, 2, 9)), y)
    bad = jnp.ones((2, 9, 2)).at[1, 4, 0].set(jnp.nan)
    with pytest.raises(
        ValueError, match=r"`xs` must be finite, got 1 NaN/Inf entries \(first at index \(1, 4, 0\)"
    ):
        measure.time_flow(model, bad, y)
    with pytest.raises(ValueError, match=r"`y` is required"):
        measure.time_flow(model, jnp.ones((2, 9, 2)))
    with pytest.raises(ValueError, match=r"`loss` must be one of"):
        measure.time_flow(model, jnp.ones((2, 9, 2)), y, loss="l1")
    with pytest.raises(ValueError, match=r"y"):
        measure.time_flow(model, jnp.ones((2, 9, 2)), jnp.zeros((2, 9, 1)))
    with pytest.raises(TypeError, match=r"recurrent contract"):
        measure.time_flow(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), jnp.ones((2, 9, 2)), y)
    with pytest.raises(ValueError, match=r"`steps` must hold ints in \[0, 9\)"):
        measure.time_jacobian_spectrum(model, jnp.ones((9, 2)), steps=(9,))
    with pytest.raises(ValueError, match=r"ONE sequence"):
        measure.time_jacobian_spectrum(model, jnp.ones((1, 9, 2)))
    with pytest.raises(ValueError, match=r"`method` must be one of"):
        measure.time_jacobian_norms(model, jnp.ones((2, 9, 2)), method="probe")


_UNIT_CASES = {
    "normal": (1.0, 1.0),
    "tiny_leaf": (1e-25, 1.0),  # its squares underflow float32: the scaled path
    "huge_and_tiny": (1e25, 1e-20),  # squares overflow and underflow
    "zero_leaf": (0.0, 1.0),  # the LSTM's cell cotangent at the last step of a last-step loss
    "all_zero": (0.0, 0.0),
}


@pytest.mark.parametrize("path", ["cond", "select"])
@pytest.mark.parametrize("case", list(_UNIT_CASES))
def test_reverse_scan_renormalisation_is_exact_on_both_platform_paths(case, path):
    """`lognorm.unit_leaves` (one pass where the sums of squares are exact): the CPU path (`lax.cond` to the scaled
    sums) and the GPU/TPU path (the exact one of three scaled sums), both run here on CPU, give
    the float64 unit vector and log norms of float32 leaves at any scale."""
    a, b = _UNIT_CASES[case]
    k1, k2 = jax.random.split(jax.random.key(3))
    leaves = [a * jax.random.normal(k1, (6, 5)), b * jax.random.normal(k2, (7,))]
    fn = {"cond": lognorm._unit_leaves_cond, "select": lognorm._unit_leaves_select}[path]
    unit, log, logs = jax.jit(fn)(leaves)
    ref = [np.asarray(v, np.float64) for v in leaves]
    norms = [float(np.sqrt(np.sum(v**2))) for v in ref]
    total = math.sqrt(sum(n**2 for n in norms))
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(float(log), np.log(total), rtol=1e-7, atol=2e-6)  # float32 logs
        np.testing.assert_allclose(np.asarray(logs, np.float64), np.log(norms), rtol=1e-7, atol=2e-6)
    for u, v in zip(unit, ref, strict=True):
        assert u.dtype == jnp.float32
        np.testing.assert_allclose(
            np.asarray(u, np.float64), v / total if total > 0 else v, rtol=2e-6, atol=1e-30
        )
