"""Recurrent nets that follow jaxvg's recurrent contract: Elman (tanh, relu, linear), LSTM, GRU, LRU.

A recurrent model (`jaxvg.nn.contracts.RecurrentModel`) has a `cell` mapping (state, x_t) to the next
state, `initial_state(batch_size)`, an optional position-wise `embed` applied to every step's input and
an optional `head` applied to the last reported state (`readout="last"`) or to every one
(`readout="all"`). `RNN` scans its cell over time with `lax.scan`; inputs are (batch, time, features).
The cells themselves live in `jaxvg.nn.cells` (re-exported here).

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
from jaxvg.nn.cells import RECURRENT_INITS as RECURRENT_INITS
from jaxvg.nn.cells import ElmanCell as ElmanCell
from jaxvg.nn.cells import GRUCell as GRUCell
from jaxvg.nn.cells import LRUCell as LRUCell
from jaxvg.nn.cells import LSTMCell as LSTMCell
from jaxvg.nn.cells import StepEmbed as StepEmbed
from jaxvg.nn.cells import lecun_linear
from jaxvg.nn.cells import recurrent_init as recurrent_init
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
_ELMAN = ("tanh", "relu", "linear")
_DEFAULT_INIT = {"tanh": "gaussian", "relu": "gaussian", "linear": "gaussian", "lstm": "orthogonal"}
_DEFAULT_INIT["gru"] = "orthogonal"


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
            self.head = lecun_linear(state_width, out_features, param_dtype=param_dtype, rngs=rngs)

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
