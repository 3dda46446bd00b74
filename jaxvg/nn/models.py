"""Flax NNX models that follow jaxvg's block-model contract (`jaxvg.nn.contracts`).

A block-structured model has `blocks` (an `nnx.List`; block l maps h_{l-1} to h_l), an optional
`embed` (x -> h_0) and an optional `head` (h_L -> output). Its forward pass is
`head(blocks[L-1](...blocks[0](embed(x))))`. `jaxvg.measure` works on any model of that shape.

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
PARAM_DTYPES = ("bfloat16", "float16", "float32", "float64")
# Most blocks an MLP builds (`depth`, or `max_depth` when set). Each block is a Python object built
# one at a time (about 5 KB and 5-15 ms on a CPU), so 100000 blocks take 10-25 minutes to build; a
# deeper stack is beyond what a module of separate blocks is for (the theory's limit is the same).
MAX_BLOCKS = 100_000


def check_param_dtype(param_dtype: Any) -> jnp.dtype:
    """Return `param_dtype` as a numpy dtype.

    Raises:
      TypeError: (an `ArgumentTypeError`) not a dtype (None, "banana", an int), naming the choices.
      ValueError: not a floating dtype; float64 without x64, with how to enable it (otherwise jax
        would silently give float32 parameters).
    """

    def as_dtype(value):
        if value is None or isinstance(value, bool | int | float):
            raise TypeError
        return jnp.dtype(value)

    dtype = checks.converted(
        as_dtype,
        param_dtype,
        f"`param_dtype` must be a floating dtype, one of {list(PARAM_DTYPES)} (a name, numpy or jax dtype), "
        f"got {param_dtype!r} ({type(param_dtype).__name__}).",
    )
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"`param_dtype` must be a floating dtype, one of {list(PARAM_DTYPES)}, got {param_dtype!r}."
        )
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "`param_dtype=float64` needs 64-bit mode, which is off: call "
            "`jax.config.update('jax_enable_x64', True)` at startup (or set JAX_ENABLE_X64=1, or wrap "
            "the code in `with jax.enable_x64(True):`)."
        )
    return dtype


def parameter_count(
    in_features: int,
    width: int,
    n_blocks: int,
    out_features: int | None,
    *,
    use_bias: bool = True,
    norm: str | None = None,
) -> int:
    """Number of parameter (and batch-statistic) entries of an MLP with `n_blocks` blocks: the
    kernels' sum of fan_in * fan_out, plus biases and norm scales/offsets/statistics."""
    per_unit = int(use_bias) + {None: 0, "layer": 2, "batch": 4}[norm]
    count = in_features * width + (n_blocks - 1) * width * width + n_blocks * width * per_unit
    if out_features is not None:
        count += width * out_features + out_features * int(use_bias)
    return count


def _check_size(in_features, width, depth, out_features, max_depth, n_blocks, use_bias, norm, dtype) -> None:
    """Refuse, before anything is built, a net with more than `MAX_BLOCKS` blocks or whose parameters
    do not fit in the default device's memory."""
    if n_blocks > MAX_BLOCKS:
        name = "depth" if max_depth is None else "max_depth"
        raise ValueError(
            f"`{name}`={n_blocks!r} asks for {n_blocks} blocks; an MLP has at most {MAX_BLOCKS} (each block is a "
            f"Python object built one at a time, 5-15 ms each on a CPU: {n_blocks} would take about "
            f"{n_blocks * 0.01 / 3600:.2g} hours). Pass a smaller `{name}`."
        )
    count = parameter_count(in_features, width, n_blocks, out_features, use_bias=use_bias, norm=norm)
    largest = max(in_features, width) * max(width, out_features or 0)
    nbytes = (count + largest) * dtype.itemsize  # + one temporary draw of the largest kernel
    checks.check_memory(
        nbytes,
        f"MLP(in_features={in_features}, `width`={width}, `depth`={depth}, out_features={out_features}"
        f"{'' if max_depth is None else f', `max_depth`={max_depth}'}) with {dtype.name} parameters "
        f"({count:.3g} entries: the sum of fan_in x fan_out over {n_blocks} blocks and the head, plus biases "
        "and norms)",
        "pass a smaller `width` or `depth` (parameters grow as width^2 x depth)",
    )


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
        use_bias = checks.boolean("use_bias", use_bias)
        residual = checks.boolean("residual", residual)
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


class ActiveBlocks(nnx.Variable):
    """The number of blocks a depth-masked `MLP` runs: an int32 scalar, in `rest` (not a Param)."""


class MLP(nnx.Module):
    """A deep multilayer perceptron of `depth` blocks of `width` units, and an optional linear head.

    Blocks follow `Block` (linear -> norm -> activation -> dropout). With `residual=True`, every
    block whose input and output widths match is residual, h_l = h_{l-1} + block(h_{l-1}); block 1
    stays plain when in_features != width. The head (width -> out_features) uses the blocks' init.

    Depth mask (`max_depth`): the net is built with `max_depth` blocks of which the first `depth`
    run; block l >= depth passes its input through, h_l = where(l < depth, block_l(h_{l-1}),
    h_{l-1}). The number of active blocks is an `ActiveBlocks` variable (not a Param), so nets of
    different depths and one `max_depth` share a graphdef: they stack (`jaxvg.train.stack_models`)
    and train in one program (`fit_stacked`), each net with its own depth. Weights are drawn in the
    order active blocks, head, dropout streams, padded blocks: the active part equals `MLP(...,
    depth)` built from the same `rngs`, so the masked net computes exactly (bitwise) what that
    shallower net computes, and its padded blocks get exactly zero gradient. The measures in
    `jaxvg.measure` see every block as active: measure the shallower net instead.

    Args:
      in_features: input dimension d_0.
      width: units per block.
      depth: number of blocks L (>= 1); the active blocks when `max_depth` is set.
      out_features: head output dimension, or None for no head (output = h_L).
      activation: registry name or callable (see `jaxvg.nn.activations`).
      init: kernel scheme (see `jaxvg.nn.initializers.SCHEMES`).
      sigma_w2, sigma_b2: weight and bias variances of the "gaussian"/"orthogonal" schemes,
        W ~ N(0, sigma_w2/fan_in), b ~ N(0, sigma_b2) (Poole et al. 2016). They shape the initial
        weights only, so nets that differ in them stack.
      use_bias: whether linear layers have biases.
      residual: residual blocks where widths match.
      norm: None, "batch" or "layer", applied to the pre-activation.
      dropout: dropout rate in [0, 1), active in training mode only (see `nnx.Module.eval`).
      param_dtype: parameter dtype; float64 needs `jax_enable_x64`.
      max_depth: None (no mask: `depth` blocks, the block-model contract holds), or the number of
        blocks to build, >= depth, of which the first `depth` are active.
      scan_blocks: run the hidden width -> width blocks (all but the first) under one `lax.scan`
        instead of an unrolled loop: the same function (to float rounding), a compile time that
        does not grow with depth (use it from depth ~50 on). Batch statistics and dropout counts
        are carried through the scan.
      rngs: `nnx.Rngs`; the "params" stream (or default) seeds weights, "dropout" (or default,
        forked after all active weights are drawn) the masks. The same seed gives the same kernels
        and biases whatever `norm`, `dropout`, `residual` and `max_depth` are, so cures compare from
        one init.
    Raises:
      ValueError: any argument outside its valid range, named in the message; `sigma_w2` or
        `sigma_b2` whose initial weights overflow `param_dtype` or flush to zero
        (`initializers.check_scale`); more than `MAX_BLOCKS` blocks; parameters that do not fit in
        the default device's memory (the message gives the estimate), all before anything is built.
      TypeError: (`jaxvg.checks.ArgumentTypeError`, also a ValueError) an argument of the wrong
        type: a non-bool `use_bias`/`residual`/`scan_blocks` (`use_bias="no"` would be truthy), a
        non-int size, a `param_dtype` that is not a dtype, `rngs` that is not an `nnx.Rngs`.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> shallow = MLP(2, 8, 3, 1, rngs=nnx.Rngs(0))
      >>> masked = MLP(2, 8, 3, 1, max_depth=10, scan_blocks=True, rngs=nnx.Rngs(0))
      >>> len(masked.blocks), int(masked.active_blocks[...])
      (10, 3)
      >>> x = jnp.ones((4, 2))
      >>> bool(jnp.allclose(masked(x), shallow(x), rtol=1e-6))
      True
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
        max_depth: int | None = None,
        scan_blocks: bool = False,
        rngs: nnx.Rngs,
    ):
        in_features = checks.positive_int("in_features", in_features)
        width = checks.positive_int("width", width)
        depth = checks.positive_int("depth", depth)
        if out_features is not None:
            out_features = checks.positive_int("out_features", out_features)
        act = activations.get(activation)
        k_init = initializers.kernel_init(init, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
        b_init = initializers.bias_init(init, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
        try:
            known_norm = norm in NORMS
        except TypeError:  # unhashable, e.g. an array
            known_norm = False
        if not known_norm or isinstance(norm, bool):
            raise ValueError(f"`norm` must be one of {list(NORMS)}, got {norm!r}.")
        checks.in_range("dropout", dropout, 0.0, 1.0)
        use_bias = checks.boolean("use_bias", use_bias)
        residual = checks.boolean("residual", residual)
        scan_blocks = checks.boolean("scan_blocks", scan_blocks)
        param_dtype = check_param_dtype(param_dtype)
        if max_depth is not None and checks.positive_int("max_depth", max_depth) < depth:
            raise ValueError(f"`max_depth` must be None or >= `depth` = {depth}, got {max_depth!r}.")
        if not isinstance(rngs, nnx.Rngs):
            raise checks.ArgumentTypeError(f"`rngs` must be an nnx.Rngs, got {type(rngs).__name__}.")
        n_blocks = depth if max_depth is None else int(max_depth)
        _check_size(in_features, width, depth, out_features, max_depth, n_blocks, use_bias, norm, param_dtype)
        initializers.check_scale(init, sigma_w2, sigma_b2, fan_ins=(in_features, width), dtype=param_dtype)

        self.in_features = in_features  # read by the measures and `fit` to check the input
        self.scan_blocks = scan_blocks

        # the linear layers' options, the same for the blocks and the head
        linear = {
            "use_bias": use_bias,
            "kernel_init": k_init,
            "bias_init": b_init,
            "param_dtype": param_dtype,
        }

        def blocks(sizes: list[int]) -> list[Block]:
            return [
                Block(
                    m,
                    n,
                    activation=act,
                    residual=residual and m == n,
                    norm=norm,
                    dropout=0.0,
                    **linear,
                    rngs=rngs,
                )
                for m, n in zip(sizes[:-1], sizes[1:], strict=True)
            ]  # dropout: attached below

        def attach_dropout(new: list[Block]) -> None:
            # Dropout forks an RNG stream ("dropout", else "default"). Forking after the weights are
            # drawn keeps the weights of a given seed the same whatever the dropout rate or norm.
            if dropout > 0:
                for block in new:
                    block.dropout = nnx.Dropout(dropout, rngs=rngs)

        active = blocks([in_features] + [width] * depth)
        if out_features is None:
            self.head = None
        else:
            self.head = nnx.Linear(width, out_features, **linear, rngs=rngs)
        attach_dropout(active)
        padded = blocks([width] * (max_depth - depth + 1)) if max_depth is not None else []
        attach_dropout(padded)
        self.blocks = nnx.List(active + padded)
        self.active_blocks = None if max_depth is None else ActiveBlocks(jnp.asarray(depth, jnp.int32))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Forward pass: x of shape (batch, in_features) -> (batch, out_features) (or (batch, width)
        without a head)."""
        h = self.blocks[0](x)  # block 1 always runs (depth >= 1)
        hidden = list(self.blocks)[1:]
        if self.scan_blocks and hidden:
            h = self._scan(hidden, h)
        else:
            for index, block in enumerate(hidden, start=1):
                h = self._masked(index, block(h), h)
        return h if self.head is None else self.head(h)

    def _masked(self, index: Any, out: jax.Array, h: jax.Array) -> jax.Array:
        """The output `out` of block `index` (0-based) where it is active (always without a mask),
        else the block's input `h`."""
        if self.active_blocks is None:
            return out
        return jnp.where(index < self.active_blocks[...], out, h)

    def _scan(self, hidden: list[Block], h: jax.Array) -> jax.Array:
        """Blocks 2..L (one graphdef) under `lax.scan` (`scan_blocks`), each masked by `_masked`."""
        return scan_blocks(hidden, h, self._masked, start=1)


def scan_blocks(blocks: list[nnx.Module], h: jax.Array, mask: Any = None, *, start: int = 0) -> jax.Array:
    """h through `blocks` (one graphdef, e.g. identical layers) under one `lax.scan` over their
    stacked state: the unrolled loop's function (to float rounding) with a compile time that does not
    grow with the number of blocks. Only the non-Param state (batch statistics, dropout RNG counts)
    comes out of the scan; it is written back to the blocks afterwards.

    Args:
      blocks: modules that share one graphdef, each mapping h to the next h (same shape).
      h: the first block's input.
      mask: None, or `mask(index, out, h)` -> the h after block `index` (its output `out`, or `h`
        where it is inactive); index counts from `start`.
      start: the index of the first block passed to `mask`.
    """
    splits = [nnx.split(b, nnx.Param, ...) for b in blocks]
    graphdef = splits[0][0]
    params, rest = (jax.tree.map(lambda *a: jnp.stack(a), *[s[j] for s in splits]) for j in (1, 2))

    def body(h, layer):
        p, r, index = layer
        block = nnx.merge(graphdef, p, r)
        out = block(h)
        h = out if mask is None else mask(index, out, h)
        return h, nnx.state(block, nnx.Not(nnx.Param))

    h, new_rest = jax.lax.scan(body, h, (params, rest, jnp.arange(start, start + len(blocks))))
    if jax.tree.leaves(new_rest):
        for i, block in enumerate(blocks):
            nnx.update(block, jax.tree.map(lambda a, i=i: a[i], new_rest))
    return h
