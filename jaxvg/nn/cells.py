"""The recurrent cells of `jaxvg.nn.rnn.RNN` (Elman, LSTM, GRU, LRU) and its position-wise `StepEmbed`.

Each cell maps (state, x_t) to the next state and gives its zero `initial_state(batch_size)`. The
Elman and gated cells share their weights' layout (`recurrent_kernel` (hidden, gates * hidden) by
`recurrent_init`, one block per gate; `input_kernel` and `bias` as `MLP`'s layers); see
`jaxvg.nn.rnn` for the equations, the initialisations and the references. `RNN` builds the cells:
their constructors take validated arguments and check nothing themselves.

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> from jaxvg.nn import cells
  >>> cell = cells.GRUCell(2, 4, init="orthogonal", sigma_w2=1.0, input_init="gaussian", sigma_u2=1.0,
  ...                      sigma_b2=0.0, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
  >>> cell(cell.initial_state(3), jnp.ones((3, 2))).shape, cell.recurrent_kernel.shape
  ((3, 4), (4, 12))
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvg import checks
from jaxvg.nn import activations, initializers

__all__ = [
    "RECURRENT_INITS",
    "ElmanCell",
    "GRUCell",
    "LRUCell",
    "LSTMCell",
    "StepEmbed",
    "lecun_linear",
    "recurrent_init",
]

RECURRENT_INITS = ("gaussian", "orthogonal", "identity")


def recurrent_init(init: str, sigma_w2: float = 1.0) -> initializers.Initializer:
    """The initializer `(key, (hidden, hidden), dtype) -> W` of a recurrent weight.

    "gaussian": N(0, sigma_w2 / hidden) (untruncated); "orthogonal": sqrt(sigma_w2) Q, Q Haar; "identity":
    sqrt(sigma_w2) I (the key is unused).

    Raises:
      ValueError: unknown `init`; `sigma_w2` not a finite number > 0.
    """
    checks.choice("init", init, RECURRENT_INITS)
    checks.positive("sigma_w2", sigma_w2)
    if init == "identity":
        scale = math.sqrt(sigma_w2)

        def identity(key, shape, dtype=jnp.float32):
            del key
            return scale * jnp.eye(shape[-2], shape[-1], dtype=dtype)

        return identity
    return initializers.kernel_init(init, sigma_w2=sigma_w2)


def _row(v: jax.Array, like: jax.Array) -> jax.Array:
    """A per-unit vector reshaped to broadcast against `like` (batch, ..., units): explicit ranks."""
    return v.reshape((1,) * (like.ndim - 1) + v.shape)


def _blocks(init: initializers.Initializer, key: jax.Array, hidden: int, k: int, dtype) -> jax.Array:
    """k independent (hidden, hidden) blocks side by side: shape (hidden, k * hidden)."""
    keys = jax.random.split(key, k)
    return jnp.concatenate([init(keys[j], (hidden, hidden), dtype) for j in range(k)], axis=1)


def _init_cell(
    module, in_size, hidden, gates, *, init, sigma_w2, input_init, sigma_u2, sigma_b2, param_dtype, rngs
) -> None:
    """The weights the Elman and gated cells share: `recurrent_kernel` (hidden, gates * hidden), one
    `recurrent_init` block per gate, then the input side as for `MLP`: `input_kernel` (in_size,
    gates * hidden) and `bias` (gates * hidden,) by `input_init` (variance `sigma_u2`, `sigma_b2`)."""
    module.hidden = hidden
    module.param_dtype = param_dtype
    w_init, key = recurrent_init(init, sigma_w2), rngs.params()
    w = (
        w_init(key, (hidden, hidden), param_dtype)
        if gates == 1
        else _blocks(w_init, key, hidden, gates, param_dtype)
    )
    module.recurrent_kernel = nnx.Param(w)
    sig = {"sigma_w2": sigma_u2, "sigma_b2": sigma_b2} if input_init in initializers.SIGMA_SCHEMES else {}
    k_init = initializers.kernel_init(input_init, **sig)
    b_init = initializers.bias_init(input_init, **sig)
    module.input_kernel = nnx.Param(k_init(rngs.params(), (in_size, gates * hidden), param_dtype))
    module.bias = nnx.Param(b_init(rngs.params(), (gates * hidden,), param_dtype))


def _zeros(module, batch_size: int) -> jax.Array:
    """The zero state (batch_size, hidden) of a cell."""
    return jnp.zeros((batch_size, module.hidden), module.param_dtype)


class ElmanCell(nnx.Module):
    """h_t = phi(h_{t-1} @ recurrent_kernel + x_t @ input_kernel + bias); state h (batch, hidden).

    Attributes:
      recurrent_kernel: (hidden, hidden). input_kernel: (in_size, hidden). bias: (hidden,).
      activation: the registry `Activation` phi.
      recurrent_paths: (("recurrent_kernel",),), the weights of Pascanu et al.'s decomposition.
    """

    recurrent_paths = (("recurrent_kernel",),)

    def __init__(
        self,
        in_size,
        hidden,
        *,
        activation,
        init,
        sigma_w2,
        input_init,
        sigma_u2,
        sigma_b2,
        param_dtype,
        rngs,
    ):
        self.activation = activations.get(activation)
        _init_cell(
            self, in_size, hidden, 1, init=init, sigma_w2=sigma_w2, input_init=input_init,
            sigma_u2=sigma_u2, sigma_b2=sigma_b2, param_dtype=param_dtype, rngs=rngs,
        )  # fmt: skip

    def initial_state(self, batch_size: int) -> jax.Array:
        return _zeros(self, batch_size)

    def preactivation(self, h: jax.Array, x: jax.Array) -> jax.Array:
        z = h @ self.recurrent_kernel[...] + x @ self.input_kernel[...]
        return z + _row(self.bias[...], z)

    def __call__(self, h: jax.Array, x: jax.Array) -> jax.Array:
        return self.activation(self.preactivation(h, x))


class LSTMCell(nnx.Module):
    """LSTM with forget gate; state (h, c), each (batch, hidden); gates ordered i, f, g, o.

    z = h_{t-1} @ recurrent_kernel + x_t @ input_kernel + bias, split into (z_i, z_f, z_g, z_o);
    c_t = sigmoid(z_f) c_{t-1} + sigmoid(z_i) tanh(z_g); h_t = sigmoid(z_o) tanh(c_t). The forget block
    of `bias` starts at `forget_bias` (plus the N(0, sigma_b2) draw).
    """

    recurrent_paths = (("recurrent_kernel",),)

    def __init__(
        self,
        in_size,
        hidden,
        *,
        init,
        sigma_w2,
        input_init,
        sigma_u2,
        sigma_b2,
        forget_bias,
        param_dtype,
        rngs,
    ):
        _init_cell(
            self, in_size, hidden, 4, init=init, sigma_w2=sigma_w2, input_init=input_init,
            sigma_u2=sigma_u2, sigma_b2=sigma_b2, param_dtype=param_dtype, rngs=rngs,
        )  # fmt: skip
        self.bias[...] = self.bias[...].at[hidden : 2 * hidden].add(forget_bias)

    def initial_state(self, batch_size: int) -> tuple[jax.Array, jax.Array]:
        zeros = _zeros(self, batch_size)
        return zeros, zeros

    def __call__(self, state: tuple[jax.Array, jax.Array], x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h, c = state
        z = h @ self.recurrent_kernel[...] + x @ self.input_kernel[...]
        z = z + _row(self.bias[...], z)
        zi, zf, zg, zo = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(zf) * c + jax.nn.sigmoid(zi) * jnp.tanh(zg)
        h = jax.nn.sigmoid(zo) * jnp.tanh(c)
        return h, c


class GRUCell(nnx.Module):
    """GRU (Cho et al. 2014, the PyTorch/flax form); state h (batch, hidden); gates ordered r, z, n.

    a = x_t @ input_kernel + bias, b = h_{t-1} @ recurrent_kernel; r = sigmoid(a_r + b_r),
    z = sigmoid(a_z + b_z), n = tanh(a_n + r (b_n + recurrent_bias)), h_t = (1 - z) n + z h_{t-1}.
    """

    recurrent_paths = (("recurrent_kernel",),)

    def __init__(self, in_size, hidden, *, init, sigma_w2, input_init, sigma_u2, sigma_b2, param_dtype, rngs):
        _init_cell(
            self, in_size, hidden, 3, init=init, sigma_w2=sigma_w2, input_init=input_init,
            sigma_u2=sigma_u2, sigma_b2=sigma_b2, param_dtype=param_dtype, rngs=rngs,
        )  # fmt: skip
        self.recurrent_bias = nnx.Param(jnp.zeros((hidden,), param_dtype))

    def initial_state(self, batch_size: int) -> jax.Array:
        return _zeros(self, batch_size)

    def __call__(self, h: jax.Array, x: jax.Array) -> jax.Array:
        a = x @ self.input_kernel[...]
        a = a + _row(self.bias[...], a)
        b = h @ self.recurrent_kernel[...]
        ar, az, an = jnp.split(a, 3, axis=-1)
        br, bz, bn = jnp.split(b, 3, axis=-1)
        r = jax.nn.sigmoid(ar + br)
        z = jax.nn.sigmoid(az + bz)
        n = jnp.tanh(an + r * (bn + _row(self.recurrent_bias[...], bn)))
        return (1 - z) * n + z * h


class LRUCell(nnx.Module):
    """Linear recurrent unit (Orvieto et al. 2023): a diagonal complex recurrence on `hidden` units.

    lambda_j = exp(-exp(nu_log_j) + i exp(theta_log_j)), gamma_j = exp(gamma_log_j) (initially
    sqrt(1 - |lambda_j|^2)); h_t = lambda * h_{t-1} + gamma * (x_t @ (B_re + i B_im)). The complex
    state is stored as real pairs, [Re h, Im h] along the last axis: shape (batch, 2 hidden). Init:
    |lambda| uniform in area on the ring [r_min, r_max], phase uniform in [0, max_phase]; B entries
    N(0, 1 / (2 in_size)) for the real and the imaginary part.
    """

    recurrent_paths = (("nu_log",), ("theta_log",))

    def __init__(self, in_size, hidden, *, r_min, r_max, max_phase, param_dtype, rngs):
        self.hidden = hidden
        u1 = jax.random.uniform(rngs.params(), (hidden,), param_dtype)
        u2 = jax.random.uniform(rngs.params(), (hidden,), param_dtype)
        nu_log = jnp.log(-0.5 * jnp.log(u1 * (r_max**2 - r_min**2) + r_min**2))
        theta_log = jnp.log(max_phase * u2)
        self.nu_log = nnx.Param(nu_log.astype(param_dtype))
        self.theta_log = nnx.Param(theta_log.astype(param_dtype))
        modulus = jnp.exp(-jnp.exp(nu_log))
        self.gamma_log = nnx.Param(jnp.log(jnp.sqrt(1 - modulus**2)).astype(param_dtype))
        std = 1.0 / math.sqrt(2 * in_size)
        self.input_re = nnx.Param(std * jax.random.normal(rngs.params(), (in_size, hidden), param_dtype))
        self.input_im = nnx.Param(std * jax.random.normal(rngs.params(), (in_size, hidden), param_dtype))
        self.param_dtype = param_dtype

    def eigenvalues(self) -> tuple[jax.Array, jax.Array]:
        """(|lambda|, arg lambda), each (hidden,)."""
        return jnp.exp(-jnp.exp(self.nu_log[...])), jnp.exp(self.theta_log[...])

    def initial_state(self, batch_size: int) -> jax.Array:
        return jnp.zeros((batch_size, 2 * self.hidden), self.param_dtype)

    def __call__(self, h: jax.Array, x: jax.Array) -> jax.Array:
        modulus, phase = self.eigenvalues()
        h_re, h_im = h[..., : self.hidden], h[..., self.hidden :]
        lam_re, lam_im = _row(modulus * jnp.cos(phase), h_re), _row(modulus * jnp.sin(phase), h_re)
        gamma = _row(jnp.exp(self.gamma_log[...]), h_re)
        u_re = gamma * (x @ self.input_re[...])
        u_im = gamma * (x @ self.input_im[...])
        new_re = lam_re * h_re - lam_im * h_im + u_re
        new_im = lam_re * h_im + lam_im * h_re + u_im
        return jnp.concatenate([new_re, new_im], axis=-1)


class StepEmbed(nnx.Module):
    """A position-wise layer x_t -> phi(x_t @ kernel + bias), applied to every step at once (any
    leading axes). With the LRU it supplies the nonlinearity that a linear recurrence lacks (the
    position-wise MLP of Orvieto et al.'s block, here before the recurrence)."""

    def __init__(self, in_size, width, *, activation, param_dtype, rngs):
        self.linear = lecun_linear(in_size, width, param_dtype=param_dtype, rngs=rngs)
        self.activation = activations.get(activation)
        self.width = width

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.activation(self.linear(x))


def lecun_linear(in_size: int, out_size: int, *, param_dtype: Any, rngs: nnx.Rngs) -> nnx.Linear:
    """`nnx.Linear(in_size, out_size)` with an untruncated LeCun-normal kernel (variance 1/in_size)
    and a zero bias: the position-wise `StepEmbed` layer and the head of `jaxvg.nn.rnn.RNN`."""
    return nnx.Linear(
        in_size,
        out_size,
        kernel_init=initializers.kernel_init("lecun_normal"),
        param_dtype=param_dtype,
        rngs=rngs,
    )
