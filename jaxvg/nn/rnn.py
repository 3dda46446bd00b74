"""Recurrent nets that follow jaxvg's recurrent contract: Elman (tanh, relu, linear), LSTM, GRU, LRU.

A recurrent model (`jaxvg.nn.contracts.RecurrentModel`) has a `cell` mapping (state, x_t) to the next
state, `initial_state(batch_size)`, an optional position-wise `embed` applied to every step's input and
an optional `head` applied to the last reported state (`readout="last"`) or to every one
(`readout="all"`). `RNN` scans its cell over time with `lax.scan`; inputs are (batch, time, features).

| cell     | state                     | step                                                                  |
|----------|---------------------------|-----------------------------------------------------------------------|
| "tanh"   | h (batch, hidden)         | h_t = tanh(h_{t-1} W + x_t U + b)                                     |
| "relu"   | h                         | h_t = relu(h_{t-1} W + x_t U + b)   (IRNN with init="identity")       |
| "linear" | h                         | h_t = h_{t-1} W + x_t U + b         (for exact linear theory)         |
| "lstm"   | (h, c)                    | gates i, f, g, o; c_t = f c_{t-1} + i g; h_t = o tanh(c_t)           |
| "gru"    | h                         | r, z gates; n = tanh(x U_n + b_n + r (h W_n + b_hn)); h_t = (1-z) n + z h |
| "lru"    | (batch, 2 hidden) real    | h_t = lambda h_{t-1} + gamma (x_t B), complex, stored as [Re, Im]     |

Recurrent weights W (every gate block of the gated cells) are initialised by `init`:
"gaussian" W ~ N(0, sigma_w2 / hidden) (the mean-field convention of `jaxvg.theory`), "orthogonal"
sqrt(sigma_w2) Q with Q Haar-orthogonal, or "identity" sqrt(sigma_w2) I (Le et al. 2015's IRNN with
cell="relu"). Input weights and biases follow `jaxvg.nn.initializers` as in `MLP` (`input_init`,
variance `sigma_u2` / in_features, biases N(0, sigma_b2)); the LSTM's forget-gate bias adds
`forget_bias` (Gers et al. 2000; Jozefowicz et al. 2015). The LRU (Orvieto et al. 2023) has the
diagonal complex recurrence lambda = exp(-exp(nu) + i exp(theta)) with |lambda| drawn uniformly on the
ring r_min <= |lambda| <= r_max (uniform in area) and phase in [0, max_phase], and the input normalised
by gamma = sqrt(1 - |lambda|^2) (a trainable `gamma_log`, as in the paper's code).

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> from jaxvg.nn import rnn
  >>> model = rnn.RNN(2, 16, 1, cell="lstm", rngs=nnx.Rngs(0))
  >>> model(jnp.ones((4, 30, 2))).shape, model.initial_state(4)[1].shape
  ((4, 1), (4, 16))
  >>> rnn.RNN(2, 8, 3, cell="gru", readout="all", rngs=nnx.Rngs(0))(jnp.ones((4, 30, 2))).shape
  (4, 30, 3)

References:
  Elman, Finding structure in time, 1990.
  Hochreiter & Schmidhuber, Long short-term memory, 1997.
  Gers, Schmidhuber & Cummins, Learning to forget: continual prediction with LSTM, 2000.
  Cho et al., Learning phrase representations using RNN encoder-decoder, 2014,
  https://arxiv.org/abs/1406.1078
  Le, Jaitly & Hinton, A simple way to initialize recurrent networks of rectified linear units, 2015,
  https://arxiv.org/abs/1504.00941
  Jozefowicz, Zaremba & Sutskever, An empirical exploration of recurrent network architectures, 2015.
  Orvieto et al., Resurrecting recurrent neural networks for long sequences, 2023,
  https://arxiv.org/abs/2303.06349
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvg import checks
from jaxvg.nn import activations, initializers
from jaxvg.nn.models import check_param_dtype

__all__ = [
    "CELLS",
    "READOUTS",
    "RECURRENT_INITS",
    "RNN",
    "ElmanCell",
    "GRUCell",
    "LRUCell",
    "LSTMCell",
    "StepEmbed",
    "recurrent_init",
]

CELLS = ("tanh", "relu", "linear", "lstm", "gru", "lru")
READOUTS = ("last", "all")
RECURRENT_INITS = ("gaussian", "orthogonal", "identity")
_ELMAN = ("tanh", "relu", "linear")
_DEFAULT_INIT = {"tanh": "gaussian", "relu": "gaussian", "linear": "gaussian", "lstm": "orthogonal"}
_DEFAULT_INIT["gru"] = "orthogonal"


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


class _Inputs:
    """The input side shared by the cells: kernel (in, k*hidden) and bias (k*hidden,) as for `MLP`."""

    @staticmethod
    def make(module, in_size, width, *, input_init, sigma_u2, sigma_b2, param_dtype, rngs):
        sig = {"sigma_w2": sigma_u2, "sigma_b2": sigma_b2} if input_init in initializers.SIGMA_SCHEMES else {}
        k_init = initializers.kernel_init(input_init, **sig)
        b_init = initializers.bias_init(input_init, **sig)
        module.input_kernel = nnx.Param(k_init(rngs.params(), (in_size, width), param_dtype))
        module.bias = nnx.Param(b_init(rngs.params(), (width,), param_dtype))


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
        self.hidden = hidden
        self.activation = activations.get(activation)
        self.recurrent_kernel = nnx.Param(
            recurrent_init(init, sigma_w2)(rngs.params(), (hidden, hidden), param_dtype)
        )
        _Inputs.make(
            self,
            in_size,
            hidden,
            input_init=input_init,
            sigma_u2=sigma_u2,
            sigma_b2=sigma_b2,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.param_dtype = param_dtype

    def initial_state(self, batch_size: int) -> jax.Array:
        return jnp.zeros((batch_size, self.hidden), self.param_dtype)

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
        self.hidden = hidden
        self.recurrent_kernel = nnx.Param(
            _blocks(recurrent_init(init, sigma_w2), rngs.params(), hidden, 4, param_dtype)
        )
        _Inputs.make(
            self,
            in_size,
            4 * hidden,
            input_init=input_init,
            sigma_u2=sigma_u2,
            sigma_b2=sigma_b2,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.bias[...] = self.bias[...].at[hidden : 2 * hidden].add(forget_bias)
        self.param_dtype = param_dtype

    def initial_state(self, batch_size: int) -> tuple[jax.Array, jax.Array]:
        zeros = jnp.zeros((batch_size, self.hidden), self.param_dtype)
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
        self.hidden = hidden
        self.recurrent_kernel = nnx.Param(
            _blocks(recurrent_init(init, sigma_w2), rngs.params(), hidden, 3, param_dtype)
        )
        _Inputs.make(
            self,
            in_size,
            3 * hidden,
            input_init=input_init,
            sigma_u2=sigma_u2,
            sigma_b2=sigma_b2,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.recurrent_bias = nnx.Param(jnp.zeros((hidden,), param_dtype))
        self.param_dtype = param_dtype

    def initial_state(self, batch_size: int) -> jax.Array:
        return jnp.zeros((batch_size, self.hidden), self.param_dtype)

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
        self.linear = nnx.Linear(
            in_size,
            width,
            kernel_init=initializers.kernel_init("lecun_normal"),
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.activation = activations.get(activation)
        self.width = width

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.activation(self.linear(x))


class RNN(nnx.Module):
    """A one-layer recurrent net scanned over time: optional `embed`, a `cell`, optional `head`.

    out = head(h_T) (readout="last": shape (batch, out_features)) or head(h_t) for every t
    (readout="all": (batch, time, out_features)), where h_t is the reported part of the cell's state
    (the LSTM's h; the LRU's [Re h, Im h]) and the state runs s_t = cell(s_{t-1}, embed(x)_t) from
    s_0 = initial_state(batch).

    Args:
      in_features: features per time step of the input xs (batch, time, in_features); stored as
        `input_size` (`jaxvg.fit` reads an `in_features` attribute as the width of flat inputs).
      hidden: hidden units (complex units for the LRU, whose state has 2 * hidden reals).
      out_features: head outputs, or None for no head (output = the reported state).
      cell: one of `CELLS`.
      init: recurrent-weight scheme, one of `RECURRENT_INITS`; None: "gaussian" for Elman cells,
        "orthogonal" for lstm/gru (each gate block on its own). Must be None for "lru".
      sigma_w2: recurrent variance: W ~ N(0, sigma_w2 / hidden), sqrt(sigma_w2) Q or sqrt(sigma_w2) I.
      input_init: input-kernel scheme of `jaxvg.nn.initializers.SCHEMES` (default "gaussian").
      sigma_u2, sigma_b2: input-weight variance (times in_features) and bias variance, for the
        "gaussian"/"orthogonal" input schemes (as `MLP`'s sigma_w2 and sigma_b2).
      forget_bias: added to the LSTM's forget-gate bias (default 1).
      r_min, r_max, max_phase: the LRU's ring initialisation, 0 <= r_min < r_max < 1, max_phase > 0.
        The defaults are Orvieto et al.'s long-range settings (r_min 0.9, r_max 0.999, phase pi/10).
      embed: activation of a position-wise `StepEmbed` of width `hidden` before the cell, None for no
        embed; "auto": "relu" for the LRU (a linear recurrence needs a nonlinearity per step, e.g. to
        multiply the adding problem's marker and value), None for the others.
      readout: "last" or "all".
      param_dtype: parameter dtype; float64 needs `jax_enable_x64`.
      rngs: `nnx.Rngs` (its params stream draws every weight).
    Raises:
      ValueError: any argument outside its valid range or choices, named in the message.
      TypeError: `rngs` is not an `nnx.Rngs`.
    """

    def __init__(
        self,
        in_features: int,
        hidden: int,
        out_features: int | None,
        *,
        cell: str = "tanh",
        init: str | None = None,
        sigma_w2: float = 1.0,
        input_init: str = "gaussian",
        sigma_u2: float = 1.0,
        sigma_b2: float = 0.0,
        forget_bias: float = 1.0,
        r_min: float = 0.9,
        r_max: float = 0.999,
        max_phase: float = math.pi / 10,
        embed: str | None = "auto",
        readout: str = "last",
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        checks.positive_int("in_features", in_features)
        checks.positive_int("hidden", hidden)
        if out_features is not None:
            checks.positive_int("out_features", out_features)
        checks.choice("cell", cell, CELLS)
        checks.choice("readout", readout, READOUTS)
        if cell == "lru":
            if init is not None:
                raise ValueError(
                    f"`init` must be None for cell='lru' (its recurrence is set by r_min, r_max and "
                    f"max_phase), got {init!r}."
                )
            checks.in_range("r_min", r_min, 0.0, 1.0)
            checks.in_range("r_max", r_max, 0.0, 1.0)
            if not r_min < r_max:
                raise ValueError(f"`r_min` must be < `r_max` = {r_max!r}, got {r_min!r}.")
            checks.positive("max_phase", max_phase)
        else:
            init = _DEFAULT_INIT[cell] if init is None else init
            checks.choice("init", init, RECURRENT_INITS)
        checks.positive("sigma_w2", sigma_w2)
        checks.choice("input_init", input_init, initializers.SCHEMES)
        checks.positive("sigma_u2", sigma_u2)
        checks.nonnegative("sigma_b2", sigma_b2)
        if input_init not in initializers.SIGMA_SCHEMES and (sigma_u2 != 1.0 or sigma_b2 != 0.0):
            raise ValueError(
                f"`sigma_u2`/`sigma_b2` apply only to the input schemes {list(initializers.SIGMA_SCHEMES)}; "
                f"input_init={input_init!r} fixes its own variance, got sigma_u2={sigma_u2!r}, "
                f"sigma_b2={sigma_b2!r}."
            )
        if (
            isinstance(forget_bias, bool)
            or not isinstance(forget_bias, int | float)
            or not math.isfinite(forget_bias)
        ):
            raise ValueError(f"`forget_bias` must be a finite number, got {forget_bias!r}.")
        if embed == "auto":
            embed = "relu" if cell == "lru" else None
        if embed is not None:
            activations.get(embed)
        param_dtype = check_param_dtype(param_dtype)
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"`rngs` must be an nnx.Rngs, got {type(rngs).__name__}.")

        self.input_size = in_features
        self.hidden = hidden
        self.out_features = out_features
        self.cell_type = cell
        self.init = init
        self.sigma_w2 = float(sigma_w2)
        self.sigma_u2 = float(sigma_u2)
        self.sigma_b2 = float(sigma_b2)
        self.readout = readout
        self.param_dtype = param_dtype

        step_in = in_features
        if embed is not None:
            self.embed = StepEmbed(in_features, hidden, activation=embed, param_dtype=param_dtype, rngs=rngs)
            step_in = hidden
        else:
            self.embed = None
        common = {"param_dtype": param_dtype, "rngs": rngs}
        inputs = {"input_init": input_init, "sigma_u2": sigma_u2, "sigma_b2": sigma_b2}
        if cell in _ELMAN:
            self.cell = ElmanCell(
                step_in, hidden, activation=cell, init=init, sigma_w2=sigma_w2, **inputs, **common
            )
        elif cell == "lstm":
            self.cell = LSTMCell(
                step_in,
                hidden,
                init=init,
                sigma_w2=sigma_w2,
                forget_bias=float(forget_bias),
                **inputs,
                **common,
            )
        elif cell == "gru":
            self.cell = GRUCell(step_in, hidden, init=init, sigma_w2=sigma_w2, **inputs, **common)
        else:
            self.cell = LRUCell(
                step_in, hidden, r_min=float(r_min), r_max=float(r_max), max_phase=float(max_phase), **common
            )
        state_width = 2 * hidden if cell == "lru" else hidden
        self.state_width = state_width
        if out_features is None:
            self.head = None
        else:
            self.head = nnx.Linear(
                state_width,
                out_features,
                kernel_init=initializers.kernel_init("lecun_normal"),
                param_dtype=param_dtype,
                rngs=rngs,
            )

    def initial_state(self, batch_size: int) -> Any:
        """The state s_0 for `batch_size` sequences: zeros ((h, c) for the LSTM)."""
        return self.cell.initial_state(batch_size)

    def reported(self, state: Any) -> jax.Array:
        """h_t of a state: the LSTM's h, the state itself for the other cells."""
        return state[0] if isinstance(state, tuple) else state

    def __call__(self, xs: jax.Array) -> jax.Array:
        """xs (batch, time, in_features) -> (batch, out) for readout "last", (batch, time, out) for "all"."""
        if xs.ndim != 3 or xs.shape[-1] != self.input_size or xs.shape[1] < 1:
            raise ValueError(
                f"`xs` must have shape (batch, time >= 1, {self.input_size}) (batch, time, features), got "
                f"shape {xs.shape}."
            )
        if self.embed is not None:
            xs = self.embed(xs)
        graphdef, state = nnx.split(self.cell)

        def step(s, x):
            s = nnx.merge(graphdef, state)(s, x)
            return s, (self.reported(s) if self.readout == "all" else None)

        last, hs = jax.lax.scan(step, self.initial_state(xs.shape[0]), jnp.swapaxes(xs, 0, 1))
        h = jnp.swapaxes(hs, 0, 1) if self.readout == "all" else self.reported(last)
        return h if self.head is None else self.head(h)
