"""Models written as third parties write them (issue 12 §4): a CNN whose blocks change rank, a
scan-over-layers model with taps inside the scanned block, a sequence model with token-level
cross-entropy; each against a brute-force float64 reference."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvg import measure

from .references import TOL64, TinyTransformer, assert_flow_close, brute_force_flow, token_loss

# ------------------------------------------------------------------------------------------------
# A CNN: (batch, height, width, channels) conv blocks into a (batch, width) dense block
# ------------------------------------------------------------------------------------------------

F64 = jnp.float64


class ConvBlock(nnx.Module):
    def __init__(self, c_in, c_out, *, rngs):
        self.conv = nnx.Conv(c_in, c_out, (3, 3), param_dtype=F64, rngs=rngs)

    def __call__(self, h):
        return jnp.tanh(self.conv(h))


class Scale(nnx.Module):
    """A tiny gain: the cotangents behind it are ~1e-160, their squares subnormal in float64, so the
    Jacobian chain takes its scaled (two-pass) normalisation on a rank-4 h."""

    def __init__(self, gain):
        self.gain = nnx.Param(jnp.asarray(gain, F64))

    def __call__(self, h):
        return self.gain[...] * h


class FlattenDense(nnx.Module):
    def __init__(self, d_in, d_out, *, rngs):
        self.linear = nnx.Linear(d_in, d_out, param_dtype=F64, rngs=rngs)

    def __call__(self, h):
        return jnp.tanh(self.linear(h.reshape(h.shape[0], -1)))


class CNN(nnx.Module):
    def __init__(self, *, rngs, gain=1.0):
        self.blocks = nnx.List([
            ConvBlock(1, 3, rngs=rngs), Scale(gain), ConvBlock(3, 3, rngs=rngs), FlattenDense(5 * 5 * 3, 4, rngs=rngs),
        ])  # fmt: skip
        self.head = nnx.Linear(4, 2, param_dtype=F64, rngs=rngs)

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def _log10_fro(m):
    """log10 ||m||_F without underflow (m may hold 1e-160 entries)."""
    m = np.abs(np.asarray(m, np.float64).reshape(-1))
    top = m.max()
    return math.log10(top) + 0.5 * math.log10(np.sum((m / top) ** 2))


def _jacrev_norms(model, x):
    """log10 ||dh_L/dh_l||_F per example and l from `jax.jacrev` of the blocks after h_l."""
    blocks = list(model.blocks)
    hs = [x]
    for block in blocks:
        hs.append(block(hs[-1]))

    def tail(h, start):
        for block in blocks[start:]:
            h = block(h)
        return h

    rows = []
    for b in range(x.shape[0]):
        rows.append([_log10_fro(jax.jacrev(tail)(hs[i][b : b + 1], i)) for i in range(len(blocks) + 1)])
    return np.array(rows)


@pytest.mark.parametrize("gain", [1.0, 1e-160])
def test_jacobian_norms_of_a_rank_changing_cnn_match_jacrev(x64, gain):
    model = CNN(rngs=nnx.Rngs(0), gain=gain)
    x = jax.random.normal(jax.random.key(0), (2, 5, 5, 1), F64)
    ref = _jacrev_norms(model, x)
    exact = measure.jacobian_norms(model, x)
    assert exact.log10_fro.shape == (2, 5)
    np.testing.assert_allclose(exact.log10_fro, ref, rtol=0, atol=TOL64)
    np.testing.assert_allclose(exact.log10_msv, 2 * ref - math.log10(4), rtol=0, atol=TOL64)
    hutch = measure.jacobian_norms(model, x, method="hutchinson", num_probes=256, key=jax.random.key(1))
    err = np.abs(np.asarray(hutch.log10_fro) - ref)
    assert np.all(err <= 5 * np.asarray(hutch.log10_fro_stderr) + 1e-12), (err, hutch.log10_fro_stderr)


def test_gradient_flow_and_spectrum_of_the_cnn(x64):
    model = CNN(rngs=nnx.Rngs(1))
    x = jax.random.normal(jax.random.key(2), (2, 5, 5, 1), F64)
    y = jax.random.normal(jax.random.key(3), (2, 2), F64)
    assert_flow_close(measure.gradient_flow(model, x, y), brute_force_flow(model, x, y), TOL64)
    spectrum = measure.jacobian_spectrum(model, x[0], layers=(0, 3))
    assert [v.shape for v in spectrum.log10_sv] == [(4,), (4,)]


# ------------------------------------------------------------------------------------------------
# Scan over layers with a tap inside the scanned block: one entry per layer
# ------------------------------------------------------------------------------------------------


class ScannedBlock(nnx.Module):
    def __init__(self, d, *, rngs):
        self.linear = nnx.Linear(d, d, rngs=rngs)

    def __call__(self, h):
        return measure.tap(self, "h", jax.nn.sigmoid(self.linear(h)))


class ScanOverLayers(nnx.Module):
    """The flax idiom: layers created under nnx.vmap, run under nnx.scan."""

    def __init__(self, depth, d, *, rngs):
        @nnx.split_rngs(splits=depth)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def create(rngs):
            return ScannedBlock(d, rngs=rngs)

        self.layers = create(rngs)

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def step(h, block):
            return block(h)

        x = measure.tap(self, "h", x)  # the same tap name outside the scan, same shape per use
        return step(x, self.layers)


def _scan_loss(model, x):
    return jnp.sum(model(x) ** 2)


def test_taps_inside_a_scan_over_layers_get_one_entry_per_layer():
    depth, d = 90, 4
    model = ScanOverLayers(depth, d, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, d))
    grads = measure.tapped_gradients(_scan_loss, model, x)
    assert list(grads) == ["h"] + [f"layers/{i}/h" for i in range(depth)]
    kernels, biases = model.layers.linear.kernel[...], model.layers.linear.bias[...]
    # the loss as a function of perturbations added to the input and to every layer's output
    with jax.enable_x64(True):
        k64, b64, x64_ = (np.asarray(a, np.float64) for a in (kernels, biases, x))

        def loss64(eps):
            h = x64_ + eps[0]
            for i in range(depth):
                h = jax.nn.sigmoid(h @ k64[i] + b64[i][None]) + eps[i + 1]
            return jnp.sum(h**2)

        g = np.asarray(jax.grad(loss64)(jnp.zeros((depth + 1, 2, d), jnp.float64)))
    want = np.array([_log10_fro(g[i]) for i in range(depth + 1)])
    got = np.array([float(grads["h"].log10_grad_norm)] + [float(grads[f"layers/{i}/h"].log10_grad_norm)
                                                          for i in range(depth)])  # fmt: skip
    underflowed = np.array([bool(grads[k].underflowed) for k in grads])
    assert underflowed[0] and not underflowed[-1]  # ~0.6 decades per sigmoid layer: float32 flushes the first
    normal = want > -30  # well above float32's smallest normal (1e-38): the plain gradient is accurate
    assert normal.sum() >= 30
    np.testing.assert_allclose(got[normal], want[normal], rtol=0, atol=1e-4)  # float32 against float64


# ------------------------------------------------------------------------------------------------
# Named "cross_entropy" on (batch, seq, vocab) logits with (batch, seq) labels
# ------------------------------------------------------------------------------------------------


def test_token_cross_entropy_on_a_sequence_model(x64):
    model = TinyTransformer(vocab=5, d=4, layers=1, dtype=F64, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(0), (2, 3), 0, 5)
    labels = jax.random.randint(jax.random.key(1), (2, 3), 0, 5)
    flow = measure.gradient_flow(model, tokens, labels, loss="cross_entropy")
    assert_flow_close(flow, brute_force_flow(model, tokens, labels, loss="cross_entropy"), TOL64)
    # the named loss is the mean over every token, the same as a hand-written token loss
    np.testing.assert_allclose(flow.loss, token_loss(model(tokens), labels), rtol=1e-12)
    with pytest.raises(
        ValueError, match=r"`y` for loss='cross_entropy' must be integer labels of shape \(2, 3\)"
    ):
        measure.gradient_flow(model, tokens, labels[:, :2], loss="cross_entropy")
