"""Flax NNX models that follow jaxvg's block-model contract (DESIGN.md).

A block-structured model has `blocks` (an `nnx.List`; block l maps h_{l-1} to h_l), an optional
`embed` (x -> h_0) and an optional `head` (h_L -> output). Its forward pass is
`head(blocks[L-1](...blocks[0](embed(x))))`. `jaxvg.analysis` works on any model of that shape.

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> import jaxvg
  >>> model = jaxvg.MLP(4, 16, 3, 2, activation="relu", init="he_normal", rngs=nnx.Rngs(0))
  >>> len(model.blocks), model(jnp.ones((5, 4))).shape
  (3, (5, 2))
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvg import checks
from jaxvg.nn import activations, initializers

NORMS = (None, "batch", "layer")


def check_param_dtype(param_dtype: Any) -> jnp.dtype:
    """Return `param_dtype` as a numpy dtype; float64 without x64 is a ValueError saying how to
    enable it (otherwise jax would silently give float32 parameters)."""
    dtype = jnp.dtype(param_dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"`param_dtype` must be a floating dtype, got {param_dtype!r}.")
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "`param_dtype=float64` needs 64-bit mode, which is off: call "
            "`jax.config.update('jax_enable_x64', True)` at startup (or set JAX_ENABLE_X64=1, or wrap "
            "the code in `with jax.enable_x64(True):`)."
        )
    return dtype


class Block(nnx.Module):
    """One MLP block: linear -> norm -> activation -> dropout, optionally residual.

    h_out = dropout(phi(norm(h @ kernel + bias)))           (residual=False)
    h_out = h + dropout(phi(norm(h @ kernel + bias)))       (residual=True; needs fan_in == fan_out)

    Attributes:
      linear: `nnx.Linear`, kernel shape (fan_in, fan_out).
      norm: None, `nnx.BatchNorm` or `nnx.LayerNorm` over the fan_out features.
      activation: the registry `Activation` (static).
      dropout: None or `nnx.Dropout` (active only in training mode).
      residual: whether the block adds its input (static).
    """

    def __init__(
        self,
        fan_in: int,
        fan_out: int,
        *,
        activation: activations.Activation,
        kernel_init: initializers.Initializer,
        bias_init: initializers.Initializer,
        use_bias: bool = True,
        residual: bool = False,
        norm: str | None = None,
        dropout: float = 0.0,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if residual and fan_in != fan_out:
            raise ValueError(f"`residual=True` needs fan_in == fan_out, got {fan_in} and {fan_out}.")
        self.linear = nnx.Linear(
            fan_in,
            fan_out,
            use_bias=use_bias,
            kernel_init=kernel_init,
            bias_init=bias_init,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        # The norms' scale/bias start at ones/zeros, so they get a throwaway key: drawing one from
        # `rngs` would shift every later kernel, and a normed net would start from other weights.
        if norm == "batch":
            self.norm = nnx.BatchNorm(fan_out, param_dtype=param_dtype, rngs=nnx.Rngs(0))
            # nnx.BatchNorm keeps float32 running statistics whatever param_dtype is; float64 nets
            # would then down-cast on every update (a FutureWarning). Keep them in param_dtype.
            self.norm.mean = nnx.BatchStat(jnp.zeros((fan_out,), param_dtype))
            self.norm.var = nnx.BatchStat(jnp.ones((fan_out,), param_dtype))
        elif norm == "layer":
            self.norm = nnx.LayerNorm(fan_out, param_dtype=param_dtype, rngs=nnx.Rngs(0))
        else:
            self.norm = None
        self.activation = activation
        # a data attribute, so that `MLP` can attach dropout after drawing all weights
        self.dropout = nnx.data(nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None)
        self.residual = residual

    def preactivation(self, h: jax.Array) -> jax.Array:
        """z = norm(h @ kernel + bias), the argument of `activation`; shape (batch, fan_out)."""
        z = self.linear(h)
        if self.norm is not None:
            z = self.norm(z)
        return z

    def __call__(self, h: jax.Array) -> jax.Array:
        out = self.activation(self.preactivation(h))
        if self.dropout is not None:
            out = self.dropout(out)
        return h + out if self.residual else out


class MLP(nnx.Module):
    """A deep multilayer perceptron of `depth` blocks of `width` units, and an optional linear head.

    Blocks follow `Block` (linear -> norm -> activation -> dropout). With `residual=True`, every
    block whose input and output widths match is residual, h_l = h_{l-1} + block(h_{l-1}); block 1
    stays plain when in_features != width. The head (width -> out_features) uses the blocks' init.

    Args:
      in_features: input dimension d_0.
      width: units per block.
      depth: number of blocks L (>= 1).
      out_features: head output dimension, or None for no head (output = h_L).
      activation: registry name or callable (see `jaxvg.activations`).
      init: kernel scheme (see `jaxvg.nn.initializers.SCHEMES`).
      sigma_w2, sigma_b2: weight and bias variances of the "gaussian"/"orthogonal" schemes,
        W ~ N(0, sigma_w2/fan_in), b ~ N(0, sigma_b2) (Poole et al. 2016).
      use_bias: whether linear layers have biases.
      residual: residual blocks where widths match.
      norm: None, "batch" or "layer", applied to the pre-activation.
      dropout: dropout rate in [0, 1), active in training mode only (see `nnx.Module.eval`).
      param_dtype: parameter dtype; float64 needs `jax_enable_x64`.
      rngs: `nnx.Rngs`; the "params" stream (or default) seeds weights, "dropout" (or default,
        forked after all weights are drawn) the masks. The same seed gives the same kernels and
        biases whatever `norm`, `dropout` and `residual` are, so cures compare from one init.
    Raises:
      ValueError: any argument outside its valid range, named in the message.
    """

    def __init__(
        self,
        in_features: int,
        width: int,
        depth: int,
        out_features: int | None,
        *,
        activation: str | Any = "tanh",
        init: str = "lecun_normal",
        sigma_w2: float = 1.0,
        sigma_b2: float = 0.0,
        use_bias: bool = True,
        residual: bool = False,
        norm: str | None = None,
        dropout: float = 0.0,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        checks.positive_int("in_features", in_features)
        checks.positive_int("width", width)
        checks.positive_int("depth", depth)
        if out_features is not None:
            checks.positive_int("out_features", out_features)
        act = activations.get(activation)
        k_init = initializers.kernel_init(init, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
        b_init = initializers.bias_init(init, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
        if norm not in NORMS:
            raise ValueError(f"`norm` must be one of {list(NORMS)}, got {norm!r}.")
        checks.in_range("dropout", dropout, 0.0, 1.0)
        param_dtype = check_param_dtype(param_dtype)
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"`rngs` must be an nnx.Rngs, got {type(rngs).__name__}.")

        self.in_features = in_features
        self.width = width
        self.depth = depth
        self.out_features = out_features
        self.activation = act
        self.init = init
        self.sigma_w2 = float(sigma_w2)
        self.sigma_b2 = float(sigma_b2)
        self.residual = residual
        self.norm = norm
        self.dropout_rate = float(dropout)
        self.param_dtype = param_dtype

        sizes = [in_features] + [width] * depth
        self.blocks = nnx.List(
            [
                Block(
                    m,
                    n,
                    activation=act,
                    kernel_init=k_init,
                    bias_init=b_init,
                    use_bias=use_bias,
                    residual=residual and m == n,
                    norm=norm,
                    dropout=0.0,  # attached below
                    param_dtype=param_dtype,
                    rngs=rngs,
                )
                for m, n in zip(sizes[:-1], sizes[1:], strict=True)
            ]
        )
        if out_features is None:
            self.head = None
        else:
            self.head = nnx.Linear(
                width,
                out_features,
                use_bias=use_bias,
                kernel_init=k_init,
                bias_init=b_init,
                param_dtype=param_dtype,
                rngs=rngs,
            )
        # Dropout forks an RNG stream ("dropout", else "default"). Forking after every weight is
        # drawn keeps the weights of a given seed the same whatever the dropout rate or norm.
        if dropout > 0:
            for block in self.blocks:
                block.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Forward pass: x of shape (batch, in_features) -> (batch, out_features) (or (batch, width)
        without a head)."""
        h = x
        for block in self.blocks:
            h = block(h)
        return h if self.head is None else self.head(h)
