"""Theory of gradients through time: linear recurrences, Pascanu's conditions, mean field for RNNs.

Three levels, from exact to approximate:

- Linear recurrence h_t = W h_{t-1} + ...: the backward signal is δ_t = (Wᵀ)^(T-t) δ_T. For a normal W
  (orthogonal times a scale, the LRU's diagonal λ) with eigenvalues λ_j and δ_T's squared weights w_j
  in the eigenbasis, ‖δ_t‖² = Σ_j w_j |λ_j|^(2(T-t)) exactly (`linear_recurrence_profile`).
- Pascanu et al. 2013 (Sec. 2.1): ‖∂h_t/∂h_{t-1}‖ <= ‖Wᵀ‖ ‖diag φ'‖ <= σ_max(W) γ with γ = sup |φ'|
  (1 for tanh and relu, 1/4 for sigmoid). σ_max < 1/γ is SUFFICIENT for the gradient to vanish
  (exponentially, at rate <= log10(σ_max γ) decades per step); σ_max > 1/γ is NECESSARY for it to
  explode (`pascanu_condition`).
- Mean field for the vanilla RNN h_t = φ(W h_{t-1} + U x_t + b) at large width, W ~ N(0, σ_w²/N)
  (or scaled orthogonal: same second moments), U ~ N(0, σ_u²/d), b ~ N(0, σ_b²), i.i.d. inputs with
  q_x = ‖x_t‖²/d: the pre-activation variance follows the feedforward q map with the input term added
  to the bias, σ_b,eff² = σ_b² + σ_u² q_x, so q_t = σ_w² E[φ(√q_{t-1} z)²] + σ_b,eff², and the backward
  signal shrinks by χ(q_t) = σ_w² E[φ'(√q_t z)²] in squared norm per step (`rnn_gradient_profile`,
  `rnn_chi`); the same maps as `jaxvg.theory.gradient_profile`. Measured at hidden 1024 (tests): a
  tanh RNN loses 0.2022 (Gaussian W) and 0.2030 (orthogonal) decades per step against the
  predicted 0.2019.

Gated cells are not covered. A 2x2 moment closure for the LSTM's (δh, δc) under the gradient-
independence assumption (the route Chen, Pennington & Schoenholz 2018 take for their minimalRNN)
predicted -0.129 decades per step at init (forget bias 1, hidden 1024) against -0.084 measured: the
cell and hidden routes of the backward signal are correlated (correlation 0.46 in the measurement)
and the closure drops that term, so jaxvg ships no LSTM prediction.

`model_profile(model, xs)` picks the right one for a jaxvg `RNN`. The theory reads models only by
attribute (`cell.recurrent_kernel`, `cell.activation`, `cell.eigenvalues()`, `sigma_w2`, ...) and never
imports them.

References:
  Pascanu, Mikolov & Bengio, On the difficulty of training recurrent neural networks, ICML 2013,
  https://arxiv.org/abs/1211.5063
  Chen, Pennington & Schoenholz, Dynamical isometry and a mean field theory of RNNs: gating enables
  signal propagation in recurrent neural networks, ICML 2018, https://arxiv.org/abs/1806.05394
  Poole et al. 2016, https://arxiv.org/abs/1606.05340 ; Schoenholz et al. 2017,
  https://arxiv.org/abs/1611.01232 (the feedforward maps).
  Orvieto et al., Resurrecting recurrent neural networks for long sequences, 2023,
  https://arxiv.org/abs/2303.06349

Example:
  >>> from jaxvg.theory import recurrent
  >>> [round(float(v), 4) for v in recurrent.linear_recurrence_profile([0.5, 0.5], steps=2)]
  [-0.6021, -0.301, 0.0]
  >>> recurrent.pascanu_condition([[0.9, 0.0], [0.0, 0.5]], activation="tanh").vanishing_sufficient
  True
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxvg import checks
from jaxvg.nn import activations

__all__ = [
    "PascanuCondition",
    "linear_recurrence_profile",
    "max_derivative",
    "model_profile",
    "pascanu_condition",
    "recurrent_eigenvalues",
    "rnn_chi",
    "rnn_effective_sigma_b2",
    "rnn_gradient_profile",
]

_Q_H0_FLOOR = 1e-30  # h_0 = 0 enters `gradient_profile` (which needs q0 > 0) as this second moment


def _maps():
    from jaxvg import theory  # the package's public names, read at call time (no import cycle)

    return theory


# --------------------------------------------------------------------------------------------------
# Linear recurrences
# --------------------------------------------------------------------------------------------------


def linear_recurrence_profile(
    eigenvalues: ArrayLike, *, steps: int, weights: ArrayLike | None = None
) -> np.ndarray:
    """log10 ‖δ_t‖ − log10 ‖δ_T‖ for t = 0..T of a linear recurrence with a normal matrix, exactly.

    profile[t] = ½ log10( Σ_j w_j |λ_j|^(2(T−t)) / Σ_j w_j ), computed in log space (no underflow at
    any T). Exact when W is normal (W = U diag(λ) U^H: a scaled orthogonal matrix, a diagonal one, the
    LRU) and w_j = |(U^H δ_T)_j|² are δ_T's squared weights in the eigenbasis; with uniform weights
    (default) it is the expectation over a random δ_T.

    Args:
      eigenvalues: (n,) complex or real eigenvalues λ_j (only |λ_j| matters), no zeros.
      steps: T >= 1.
      weights: (n,) non-negative weights w_j, not all zero; default all 1.
    Returns:
      (T+1,) float64 decades; entry T is 0, negative where the gradient is smaller than at step T.
    Raises:
      ValueError: `steps` < 1, an eigenvalue 0 or non-finite, weights of the wrong shape, negative or
        all zero.
    """
    steps = checks.positive_int("steps", steps)
    lam = np.abs(np.asarray(eigenvalues, dtype=np.complex128)).ravel()
    if lam.size == 0 or not np.all(np.isfinite(lam)) or np.any(lam == 0):
        raise ValueError(f"`eigenvalues` must be finite and non-zero, got {eigenvalues!r}.")
    w = np.ones_like(lam) if weights is None else np.asarray(weights, np.float64).ravel()
    if w.shape != lam.shape or np.any(w < 0) or not np.any(w > 0) or not np.all(np.isfinite(w)):
        raise ValueError(
            f"`weights` must be {lam.size} finite non-negative numbers, not all 0, got {weights!r}."
        )
    lags = np.arange(steps, -1, -1, dtype=np.float64)  # T - t for t = 0..T
    keep = w > 0
    logs = np.log(w[keep])[None, :] + 2 * lags[:, None] * np.log(lam[keep])[None, :]
    top = logs.max(axis=1, keepdims=True)
    log_sum = top[:, 0] + np.log(np.exp(logs - top).sum(axis=1))
    return 0.5 * (log_sum - log_sum[-1]) / math.log(10)


def recurrent_eigenvalues(model: Any) -> np.ndarray:
    """Eigenvalues of a model's linear recurrence: the Elman cell's recurrent kernel W (the Jacobian
    ∂h_t/∂h_{t-1} at a point where φ' = 1), or the LRU's λ (`cell.eigenvalues()`).

    Args:
      model: an `RNN` (or anything with `cell.recurrent_kernel` of shape (n, n), or `cell.eigenvalues()`
        returning (|λ|, arg λ)).
    Returns:
      (n,) complex128.
    Raises:
      ValueError: a gated cell (LSTM/GRU: several recurrent blocks, no single linear recurrence).
    """
    cell = getattr(model, "cell", model)
    if callable(getattr(cell, "eigenvalues", None)):
        modulus, phase = (np.asarray(v, np.float64) for v in cell.eigenvalues())
        return modulus * np.exp(1j * phase)
    kernel = getattr(cell, "recurrent_kernel", None)
    if kernel is None or np.asarray(kernel[...]).shape[0] != np.asarray(kernel[...]).shape[1]:
        raise ValueError(
            f"`model` must have one square recurrent kernel (an Elman cell) or `eigenvalues()` (the LRU), "
            f"got {type(cell).__name__}; gated cells (LSTM, GRU) have no single linear recurrence."
        )
    return np.linalg.eigvals(np.asarray(kernel[...], np.float64)).astype(np.complex128)


# --------------------------------------------------------------------------------------------------
# Pascanu et al. 2013
# --------------------------------------------------------------------------------------------------


class PascanuCondition(NamedTuple):
    """Pascanu et al. 2013's bound on the per-step Jacobian of h_t = φ(W h_{t-1} + ...).

    Attributes:
      sigma_max: largest singular value of the recurrent matrix.
      gamma: sup |φ'| (1 for tanh and relu, 1/4 for sigmoid, 1 for a linear recurrence).
      eta: sigma_max * gamma, the bound on ‖∂h_t/∂h_{t-1}‖.
      log10_eta: decades per step the gradient can at most gain (a bound: it may lose more).
      vanishing_sufficient: eta < 1, i.e. sigma_max < 1/gamma: the gradient MUST vanish.
      exploding_necessary: eta > 1, i.e. sigma_max > 1/gamma: the gradient CAN explode (necessary,
        not sufficient).
    """

    sigma_max: float
    gamma: float
    eta: float
    log10_eta: float
    vanishing_sufficient: bool
    exploding_necessary: bool


@functools.lru_cache(maxsize=64)
def _sup_derivative(act: activations.Activation) -> float:
    z = jnp.linspace(-30.0, 30.0, 600_001)
    return float(jnp.max(jnp.abs(act.dfn(z))))


def max_derivative(activation: Any) -> float:
    """sup |φ'| of a registry activation, on a grid of [-30, 30] (step 1e-4): 1 for tanh, relu and
    linear, 1/4 for sigmoid."""
    return _sup_derivative(activations.get(activation))


def pascanu_condition(model: Any, *, activation: Any = None) -> PascanuCondition:
    """Pascanu et al. 2013's sufficient condition for vanishing and necessary condition for exploding.

    ‖∂h_t/∂h_{t-1}‖ = ‖Wᵀ diag(φ'(z_t))‖ <= σ_max(W) γ = η with γ = sup |φ'|, so ‖∂h_T/∂h_t‖ <= η^(T-t):
    η < 1 is sufficient for vanishing; η > 1 is necessary for exploding.

    Args:
      model: an `RNN` with an Elman or LRU cell (or anything with `cell.recurrent_kernel` and
        `cell.activation`, or `cell.eigenvalues()`), or a square matrix W itself.
      activation: φ when `model` is a matrix (registry name); read from the cell otherwise.
    Returns:
      `PascanuCondition`.
    Raises:
      ValueError: a gated cell, a non-square matrix, or a matrix without `activation`.
    References:
      Pascanu, Mikolov & Bengio 2013, https://arxiv.org/abs/1211.5063, Sec. 2.1 (eq. 7 and the text
      after it).
    """
    cell = getattr(model, "cell", None)
    if cell is not None and callable(getattr(cell, "eigenvalues", None)):
        sigma, gamma = float(np.max(np.asarray(cell.eigenvalues()[0], np.float64))), 1.0
    else:
        if cell is not None:
            kernel = getattr(cell, "recurrent_kernel", None)
            act = getattr(cell, "activation", None) if activation is None else activation
            if (
                kernel is None
                or act is None
                or np.asarray(kernel[...]).shape[0] != np.asarray(kernel[...]).shape[1]
            ):
                raise ValueError(
                    f"`model` must have an Elman cell (one square `recurrent_kernel` and an `activation`) "
                    f"or an LRU cell, got {type(cell).__name__}; Pascanu's condition is for h_t = "
                    "phi(W h_(t-1) + ...), not for gated cells."
                )
            W = np.asarray(kernel[...], np.float64)
        else:
            W = np.asarray(model, np.float64)
            act = activation
            if W.ndim != 2 or W.shape[0] != W.shape[1]:
                raise ValueError(f"`model` as a matrix must be square, got shape {W.shape}.")
            if act is None:
                raise ValueError("`activation` is required when `model` is a matrix, got None.")
        sigma = float(np.linalg.norm(W, 2))
        gamma = max_derivative(act)
    eta = sigma * gamma
    return PascanuCondition(sigma, gamma, eta, math.log10(eta) if eta > 0 else -math.inf, eta < 1, eta > 1)


# --------------------------------------------------------------------------------------------------
# Mean field: vanilla RNN
# --------------------------------------------------------------------------------------------------


def rnn_effective_sigma_b2(sigma_b2: float, *, sigma_u2: float, q_x: float) -> float:
    """σ_b² + σ_u² q_x: the bias variance that i.i.d. inputs of second moment q_x = ‖x‖²/d add."""
    checks.nonnegative("sigma_b2", sigma_b2)
    checks.nonnegative("sigma_u2", sigma_u2)
    checks.nonnegative("q_x", q_x)
    return float(sigma_b2) + float(sigma_u2) * float(q_x)


def rnn_chi(
    activation: Any, sigma_w2: float, sigma_b2: float, *, sigma_u2: float = 1.0, q_x: float = 1.0
) -> float:
    """χ per step at the stationary q*: σ_w² E[φ'(√q* z)²], q* the fixed point of the q map with
    σ_b,eff² = σ_b² + σ_u² q_x (`jaxvg.theory.chi_1` with the input term in the bias). The backward
    signal loses ½ log10 χ decades per step in the stationary regime.

    Raises:
      ValueError: negative variances or `q_x`; unknown activation.
    """
    sb = rnn_effective_sigma_b2(sigma_b2, sigma_u2=sigma_u2, q_x=q_x)
    return float(_maps().chi_1(activation, sigma_w2, sb))


def rnn_gradient_profile(
    activation: Any,
    sigma_w2: float,
    sigma_b2: float,
    *,
    steps: int,
    sigma_u2: float = 1.0,
    q_x: ArrayLike = 1.0,
    q_h0: float = 0.0,
) -> np.ndarray:
    """Mean-field log10 ‖δ_t‖ − log10 ‖δ_T‖ for t = 0..T of a vanilla RNN, from the initial state.

    q_1 = σ_w² q_h0 + σ_b,1², q_{t+1} = σ_w² E[φ(√q_t z)²] + σ_b,t+1², σ_b,t² = σ_b² + σ_u² q_x,t;
    profile[t] = ½ Σ_{j=t+1..T} log10 χ(q_j), χ(q) = σ_w² E[φ'(√q z)²] (`jaxvg.theory.q_map` and
    `jaxvg.theory.gradient_profile`'s χ, with the input term in the bias). A scalar q_x gives the i.i.d.
    stationary inputs of the textbook case (exactly `gradient_profile` with depth T and h_0 = 0 entering
    as q0 = 1e-30); a (T,) array follows the inputs' second moment step by step, and a (batch, T) array
    runs the mean field along every example's own inputs and combines the examples as the norm over
    the batch does, ½ log10 mean_b 10^(2 profile_b) (equal weights at t = T).

    Args:
      activation: registry name of φ.
      sigma_w2, sigma_b2: recurrent-weight variance (times hidden) and bias variance.
      steps: T >= 1.
      sigma_u2: input-weight variance (times features).
      q_x: the inputs' ‖x_t‖²/d: a scalar, (T,) or (batch, T).
      q_h0: ‖h_0‖²/N of the initial state (0 for zeros).
    Returns:
      (T+1,) decades (entry T is 0).
    Raises:
      ValueError: out-of-range arguments, named; `q_x` of the wrong shape.
    References:
      Schoenholz et al. 2017 (the maps); Chen, Pennington & Schoenholz 2018, Sec. 3 (the recurrent
      case: the same maps, the input as a bias).
    """
    steps = checks.positive_int("steps", steps)
    checks.nonnegative("q_h0", q_h0)
    qx = np.asarray(q_x, np.float64)
    if qx.ndim == 0:
        sb = rnn_effective_sigma_b2(sigma_b2, sigma_u2=sigma_u2, q_x=float(qx))
        q0 = max(float(q_h0), _Q_H0_FLOOR)
        return np.asarray(_maps().gradient_profile(activation, sigma_w2, sb, depth=steps, q0=q0), np.float64)
    if qx.shape[-1] != steps or qx.ndim > 2 or not np.all(np.isfinite(qx)) or np.any(qx < 0):
        raise ValueError(
            f"`q_x` must be a number >= 0 or finite values >= 0 of shape ({steps},) or (batch, {steps}), "
            f"got shape {qx.shape}."
        )
    checks.positive("sigma_w2", sigma_w2)
    rnn_effective_sigma_b2(sigma_b2, sigma_u2=sigma_u2, q_x=0.0)
    qx = qx.reshape(-1, steps)
    sb = float(sigma_b2) + float(sigma_u2) * qx  # (batch, T)
    maps = _maps()
    q = float(sigma_w2) * float(q_h0) + sb[:, 0]
    qs = [q]
    for t in range(1, steps):
        q = np.asarray(maps.q_map(activation, sigma_w2, jnp.asarray(sb[:, t]), q=jnp.asarray(q)), np.float64)
        qs.append(q)
    qs = np.stack(qs, axis=1)  # q_1..q_T per example
    # chi(q) = 10^(2 profile[0]) of a one-block gradient_profile whose q_1 = sigma_w2 * q0 = q
    half_log10_chi = np.asarray(
        maps.gradient_profile(activation, sigma_w2, 0.0, depth=1, q0=jnp.asarray(qs / sigma_w2)), np.float64
    )[..., 0]
    per = np.concatenate(
        [np.cumsum(half_log10_chi[:, ::-1], axis=1)[:, ::-1], np.zeros((len(qs), 1))], axis=1
    )
    top = per.max(axis=0)
    return top + 0.5 * np.log10(np.mean(10.0 ** (2 * (per - top)), axis=0))


# --------------------------------------------------------------------------------------------------
# A model's prediction
# --------------------------------------------------------------------------------------------------


def model_profile(model: Any, xs: ArrayLike, *, weights: ArrayLike | None = None) -> tuple[np.ndarray, str]:
    """The predicted log10 ‖δ_t‖ − log10 ‖δ_T‖ (t = 0..T) of a jaxvg `RNN` on inputs xs, and its source.

    - Elman "tanh"/"relu" with "gaussian" or "orthogonal" recurrent init: `rnn_gradient_profile` (mean
      field) along each example's own inputs, q_x = ‖x_t‖²/d per example and step (after the model's
      embed, if any).
    - "linear" and "lru": `linear_recurrence_profile` of `recurrent_eigenvalues` (exact for a normal
      recurrence with δ_T's eigenbasis `weights`; uniform weights by default).
    - otherwise (identity init, "gru"): the Pascanu bound, a line at log10 η per step (an upper bound on
      the gain of the gradient, not a prediction), or NaN when no bound applies.

    Args:
      model: an `RNN`.
      xs: its inputs (batch, time, features).
      weights: eigenbasis weights for the linear cases.
    Returns:
      ((T+1,) decades, one of "mean field", "exact linear", "pascanu bound", "none" (all NaN: LSTM,
      GRU)).
    """
    xs = np.asarray(xs, np.float64)
    if xs.ndim != 3 or xs.shape[1] < 1:
        raise ValueError(f"`xs` must have shape (batch, time >= 1, features), got shape {xs.shape}.")
    T = xs.shape[1]
    cell_type = getattr(model, "cell_type", None)
    init = getattr(model, "init", None)
    embed = getattr(model, "embed", None)
    if embed is not None:
        xs = np.asarray(embed(jnp.asarray(xs, jnp.float32)), np.float64)
    q_x = np.sum(xs**2, axis=-1) / xs.shape[-1]  # (batch, T)
    if cell_type in ("tanh", "relu") and init in ("gaussian", "orthogonal"):
        prof = rnn_gradient_profile(
            cell_type, model.sigma_w2, model.sigma_b2, steps=T, sigma_u2=model.sigma_u2, q_x=q_x
        )
        return prof, "mean field"
    if cell_type in ("linear", "lru"):
        return linear_recurrence_profile(
            recurrent_eigenvalues(model), steps=T, weights=weights
        ), "exact linear"
    if cell_type in ("tanh", "relu"):
        eta = pascanu_condition(model).log10_eta
        return eta * np.arange(T, -1, -1, dtype=np.float64), "pascanu bound"
    return np.full(T + 1, np.nan), "none"
