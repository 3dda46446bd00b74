"""`jaxvg.measure.tap` and `tapped_gradients` on a model that is not block-structured, against
`jax.grad` of the loss as a function of each tapped value."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvg import measure


class DeepChain(nnx.Module):
    """Not block-structured: a loop over a stacked parameter, with a tap at every step."""

    def __init__(self, depth, width, *, rngs):
        self.w = nnx.Param(jax.random.normal(rngs.params(), (depth, width, width)) / math.sqrt(width))

    def __call__(self, x):
        h = x
        for i in range(self.w.shape[0]):
            h = measure.tap(self, f"h{i:03d}", jax.nn.sigmoid(h @ self.w[i]))
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
    # float32 against float32 jax.grad at 1e-5: CPU, and GPU/TPU with precision="highest" on both
    # sides (the measure's default; the reference sets it itself).
    model = DeepChain(120, 8, rngs=nnx.Rngs(1))
    x = jnp.ones((2, 8))
    grads = measure.tapped_gradients(_chain_loss, model, x)
    assert list(grads) == [f"h{i:03d}" for i in range(120)]
    w = model.w[...]

    def from_tap(i, h):  # the loss as a function of the tapped value h_i
        for j in range(i + 1, 120):
            h = jax.nn.sigmoid(h @ w[j])
        return jnp.sum(h**2)

    h = x
    for i in range(120):
        h = jax.nn.sigmoid(jnp.matmul(h, w[i], precision="highest"))
        if i in (110, 119):
            with jax.default_matmul_precision("highest"):
                want = np.log10(float(jnp.linalg.norm(jax.grad(from_tap, argnums=1)(i, h))))
            np.testing.assert_allclose(grads[f"h{i:03d}"].log10_grad_norm, want, atol=1e-5)
            assert not grads[f"h{i:03d}"].underflowed
    assert grads["h000"].underflowed  # ~0.6 decades per step: below float32 after ~60 steps
    assert not hasattr(model, "h000")  # the model is not mutated


def test_tapped_gradients_without_taps_is_an_error():
    with pytest.raises(ValueError, match="has no taps"):
        measure.tapped_gradients(
            lambda m, x: jnp.sum(m(x)), nnx.Linear(2, 2, rngs=nnx.Rngs(0)), jnp.ones((1, 2))
        )


class Layer(nnx.Module):
    def __call__(self, h):
        return measure.tap(self, "h", jnp.tanh(h))


class Stack(nnx.Module):
    def __init__(self):
        self.layers = nnx.List([Layer(), Layer()])

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return jnp.sum(x)


def test_tap_paths_name_the_submodule():
    grads = measure.tapped_gradients(lambda m, x: m(x), Stack(), jnp.ones(3))
    assert list(grads) == ["layers/0/h", "layers/1/h"]
    d1 = 1 - jnp.tanh(jnp.tanh(1.0)) ** 2  # d sum(tanh(h_0)) / d h_0, per entry
    np.testing.assert_allclose(grads["layers/1/h"].log10_grad_norm, np.log10(math.sqrt(3)), atol=1e-6)
    np.testing.assert_allclose(grads["layers/0/h"].log10_grad_norm, np.log10(math.sqrt(3) * d1), atol=1e-6)
