"""One activation registry, shared by the models and the mean-field theory.

Each entry is an `Activation`: the function, its derivative, and (where they exist) closed-form
Gaussian expectations that `jaxvg.theory` uses instead of quadrature (relu, hard_tanh, linear and erf
have kinks or closed forms that quadrature handles badly). Because the network and its prediction
read the same object, they cannot drift apart (the neural-tangents lesson).

Example:
  >>> from jaxvg import activations
  >>> act = activations.get("sigmoid")
  >>> float(act.dfn(0.0))
  0.25
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

ArrayFn = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True, eq=False)
class Activation:
    """An elementwise activation phi with its derivative.

    Attributes:
      name: registry name (or the callable's `__name__`).
      fn: phi, elementwise.
      dfn: phi', elementwise (the subgradient 0 at kinks, e.g. relu'(0) = 0).
      closed_forms: optional dict of closed-form Gaussian expectations used by `jaxvg.theory`,
        keyed by `"q_map"`, `"chi"`, `"c_map"`, `"chi_c"` (see `jaxvg.theory` for their meaning);
        absent keys fall back to Gauss-Hermite quadrature.
      smooth: False for activations with kinks (relu, hard_tanh, leaky_relu), where quadrature
        of phi' converges slowly.

    Instances compare by identity and are hashable, so they can sit in an NNX graphdef as static
    data: two models built with the same name share one object and one compiled program.
    """

    name: str
    fn: ArrayFn
    dfn: ArrayFn
    closed_forms: dict[str, Callable[..., Any]] = dataclasses.field(default_factory=dict)
    smooth: bool = True

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fn(x)

    def d2fn(self, x: jax.Array) -> jax.Array:
        """phi'', elementwise, by forward-mode differentiation of `dfn`."""
        x = jnp.asarray(x)
        return jax.jvp(self.dfn, (x,), (jnp.ones_like(x),))[1]

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"


def _elementwise_derivative(fn: ArrayFn) -> ArrayFn:
    def dfn(x):
        x = jnp.asarray(x)
        return jax.jvp(fn, (x,), (jnp.ones_like(x),))[1]

    return dfn


def _sigmoid_d(x):
    s = jax.nn.sigmoid(x)
    return s * (1 - s)


def _tanh_d(x):
    t = jnp.tanh(x)
    return 1 - t * t


def _relu_d(x):
    x = jnp.asarray(x)
    return (x > 0).astype(x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32)


LEAKY_RELU_SLOPE = 0.01  # negative slope of leaky_relu (jax.nn's default)


def _leaky_relu(x):
    return jnp.where(x > 0, x, LEAKY_RELU_SLOPE * x)


def _leaky_relu_d(x):
    x = jnp.asarray(x)
    return jnp.where(x > 0, 1.0, LEAKY_RELU_SLOPE).astype(jnp.result_type(x, jnp.float32))


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)


def _erf_d(x):
    return 2.0 / jnp.sqrt(jnp.pi) * jnp.exp(-jnp.square(x))


def _hard_tanh(x):
    return jnp.clip(x, -1.0, 1.0)


def _hard_tanh_d(x):
    x = jnp.asarray(x)
    return (jnp.abs(x) < 1).astype(jnp.result_type(x, jnp.float32))


def _swish(x):
    return x * jax.nn.sigmoid(x)


def _linear(x):
    return x


def _linear_d(x):
    return jnp.ones_like(jnp.asarray(x, dtype=jnp.result_type(x, jnp.float32)))


def _make_registry() -> dict[str, Activation]:
    entries = [
        Activation("sigmoid", jax.nn.sigmoid, _sigmoid_d),
        Activation("tanh", jnp.tanh, _tanh_d),
        Activation("relu", jax.nn.relu, _relu_d, smooth=False),
        Activation("leaky_relu", _leaky_relu, _leaky_relu_d, smooth=False),
        Activation("gelu", _gelu, _elementwise_derivative(_gelu)),
        Activation("selu", jax.nn.selu, _elementwise_derivative(jax.nn.selu), smooth=False),
        Activation("elu", jax.nn.elu, _elementwise_derivative(jax.nn.elu), smooth=False),
        Activation("erf", jax.scipy.special.erf, _erf_d),
        Activation("hard_tanh", _hard_tanh, _hard_tanh_d, smooth=False),
        Activation("softplus", jax.nn.softplus, jax.nn.sigmoid),
        Activation("swish", _swish, _elementwise_derivative(_swish)),
        Activation("linear", _linear, _linear_d),
    ]
    return {a.name: a for a in entries}


ACTIVATIONS: dict[str, Activation] = _make_registry()
_FROM_CALLABLE: dict[Any, Activation] = {}


def get(activation: str | Activation | ArrayFn) -> Activation:
    """Look up an activation by name, pass an `Activation` through, or wrap a callable.

    Args:
      activation: a registry name (one of `ACTIVATIONS`), an `Activation`, or an elementwise
        callable phi (its derivative then comes from `jax.jvp`; the wrapper is cached per callable
        so the same function always maps to the same `Activation`).
    Returns:
      The `Activation`.
    Raises:
      ValueError: if `activation` is an unknown name.
      TypeError: if it is neither a string nor callable.
    """
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"`activation` must be one of {sorted(ACTIVATIONS)} or a callable, got {activation!r}."
            )
        return ACTIVATIONS[activation]
    if callable(activation):
        if activation not in _FROM_CALLABLE:
            name = getattr(activation, "__name__", repr(activation))
            _FROM_CALLABLE[activation] = Activation(name, activation, _elementwise_derivative(activation))
        return _FROM_CALLABLE[activation]
    raise TypeError(
        f"`activation` must be a name in {sorted(ACTIVATIONS)} or a callable, got {type(activation).__name__}."
    )
