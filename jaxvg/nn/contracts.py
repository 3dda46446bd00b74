"""The block-model contract as code: what `jaxvg.measure` and `jaxvg.train` may assume of a model.

A model is measurable when it is an NNX module with

- `blocks`: a non-empty `nnx.List` of modules; block l maps h_{l-1} to h_l (batch axis first);
- optional `embed` (x -> h_0; identity when absent or None) and `head` (h_L -> output; identity when
  absent or None),

and its forward pass equals `head(blocks[L-1](...blocks[0](embed(x))))`. `BlockModel` states this
as a `typing.Protocol`.

A block may also say where its activation derivative and its kernel are, through the optional hooks
of `MeasurableBlock`; without them the per-block columns that need them (`log10_kernel_grad`,
`log10_dphi`, `dead_fraction`) are NaN:

- `activation` (a registry name, `activations.Activation` or callable) with `preactivation(h) -> z`,
  the activation's argument (jaxvg's `Block` has both); a block that has `activation` and an
  `nnx.Linear` at `linear` but no `preactivation` gets z = `linear(h)`;
- `kernel_path`: a tuple of attribute names from the block to its kernel `nnx.Param` (default:
  ("linear", "kernel") when `linear` is an `nnx.Linear`).

The helpers below are the only place that inspects these attributes, so the measures and the
training monitor read a model the same way.

Example:
  >>> from flax import nnx
  >>> import jaxvg
  >>> from jaxvg.nn import contracts
  >>> model = jaxvg.MLP(3, 8, 2, 1, rngs=nnx.Rngs(0))
  >>> isinstance(model, contracts.BlockModel), contracts.kernel_path(model.blocks[0])
  (True, ('linear', 'kernel'))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import jax
from flax import nnx

from jaxvg.nn import activations

__all__ = [
    "READOUTS",
    "BlockModel",
    "MeasurableBlock",
    "RecurrentModel",
    "check_block_model",
    "check_recurrent_model",
    "embed_of",
    "head_of",
    "input_features",
    "kernel_path",
    "preactivation_fn",
    "readout_of",
    "recurrent_paths",
    "reported_index",
    "step_features",
]


@runtime_checkable
class BlockModel(Protocol):
    """An NNX module with `blocks` (block l maps h_{l-1} to h_l); `embed` and `head` are optional
    attributes (see `embed_of`, `head_of`) and so are not part of the structural check."""

    blocks: Sequence[nnx.Module]


class MeasurableBlock(Protocol):
    """Optional hooks of one block (see the module docstring); every member is optional."""

    activation: Any
    kernel_path: tuple[str, ...]

    def preactivation(self, h: jax.Array) -> jax.Array: ...


def check_block_model(model: Any) -> None:
    """Raise TypeError, with the contract and the way out, unless `model` follows `BlockModel`."""
    if not isinstance(model, nnx.Module):
        raise TypeError(f"`model` must be a flax.nnx.Module with `blocks`, got {type(model).__name__}.")
    blocks = getattr(model, "blocks", None)
    if blocks is None or not isinstance(blocks, nnx.List | list | tuple) or len(blocks) == 0:
        raise TypeError(
            f"`model` must follow the block-model contract: an NNX module with `blocks` (a non-empty "
            f"nnx.List of modules, block l mapping h_(l-1) to h_l) and optional `embed`/`head`; "
            f"{type(model).__name__} has blocks={blocks!r}. For other models use `tap` and "
            f"`tapped_gradients`."
        )


def embed_of(model: BlockModel) -> Callable | None:
    """The model's `embed` (x -> h_0), or None when it has none."""
    return getattr(model, "embed", None)


def head_of(model: BlockModel) -> Callable | None:
    """The model's `head` (h_L -> output), or None when it has none."""
    return getattr(model, "head", None)


def input_features(model: BlockModel) -> int | None:
    """The size of the input's last axis when the model states it: `model.in_features`, else, with
    no `embed`, the first block's `linear.in_features`; None when unknown."""
    d_in = getattr(model, "in_features", None)
    if d_in is None and embed_of(model) is None:
        d_in = getattr(getattr(model.blocks[0], "linear", None), "in_features", None)
    return d_in if isinstance(d_in, int) else None


def preactivation_fn(block: nnx.Module) -> tuple[Callable, Callable] | None:
    """`(z_of, dphi)` for a block that exposes its activation: `z_of(h)` is the activation's
    argument (`block.preactivation(h)`, else `block.linear(h)`), `dphi` the activation's derivative
    from the registry. None when the block does not say (then the dφ columns are NaN)."""
    act = getattr(block, "activation", None)
    if act is None or not callable(act):
        return None
    if callable(getattr(block, "preactivation", None)):
        z_of = block.preactivation
    elif isinstance(getattr(block, "linear", None), nnx.Module):
        z_of = block.linear
    else:
        return None
    return z_of, activations.get(act).dfn


def kernel_path(block: nnx.Module) -> tuple[str, ...] | None:
    """Attribute path from `block` to its kernel `nnx.Param`: `block.kernel_path` when the block
    sets it, ("linear", "kernel") for a block whose `linear` is an `nnx.Linear`, else None."""
    path = getattr(block, "kernel_path", None)
    if path is not None:
        path = tuple(path)
        node: Any = block
        for name in path:
            node = getattr(node, name, None)
        if not isinstance(node, nnx.Param):
            raise TypeError(
                f"`{type(block).__name__}.kernel_path` = {path!r} must name an nnx.Param of the block, "
                f"got {type(node).__name__}."
            )
        return path
    if isinstance(getattr(block, "linear", None), nnx.Linear):
        return ("linear", "kernel")
    return None


# --------------------------------------------------------------------------------------------------
# The recurrent contract (through time)
# --------------------------------------------------------------------------------------------------

READOUTS = ("last", "all")


@runtime_checkable
class RecurrentModel(Protocol):
    """A recurrent NNX module: `cell(state, x_t) -> state` and `initial_state(batch_size) -> state`.

    The state may be a pytree (the LSTM's (h, c)); every leaf has the batch as its first axis. The
    reported h_t is the state's first leaf, or the one `reported_state` names (an int index into
    `jax.tree.leaves(state)` or the name of a field of a NamedTuple/dict state), on the model or its
    cell. Optional: `embed` (position-wise, applied to the inputs (batch, time, features) at once),
    `head` (None: the output is h_t itself), `readout` ("last": head(h_T); "all": head(h_t) for every
    t, stacked along axis 1), `input_size` (features per step) and, on the cell, `recurrent_paths`
    (attribute paths of the recurrent weights, for Pascanu et al.'s per-step contributions; default:
    every parameter of the cell). The forward pass must equal

        s_0 = initial_state(batch); s_t = cell(s_{t-1}, embed(xs)[:, t - 1]); h_t = reported(s_t);
        out = head(h_T)  or  head(stack_t h_t, axis=1).

    The initial state is a constant of the model (not a parameter that `time_flow` differentiates).
    """

    cell: nnx.Module

    def initial_state(self, batch_size: int) -> Any: ...


def check_recurrent_model(model: Any) -> None:
    """Raise TypeError, with the contract, unless `model` follows `RecurrentModel`; ValueError for a
    `readout` outside `READOUTS`."""
    if not isinstance(model, nnx.Module):
        raise TypeError(f"`model` must be a flax.nnx.Module with `cell`, got {type(model).__name__}.")
    cell = getattr(model, "cell", None)
    if not isinstance(cell, nnx.Module) or not callable(getattr(model, "initial_state", None)):
        raise TypeError(
            f"`model` must follow the recurrent contract: an NNX module with `cell` (an NNX module, "
            f"cell(state, x_t) -> state) and `initial_state(batch_size)`, optional `embed`, `head`, "
            f"`readout`; {type(model).__name__} has cell={cell!r}."
        )
    readout_of(model)


def readout_of(model: Any) -> str:
    """`model.readout` ("last" when absent); ValueError for any other value than `READOUTS`."""
    readout = getattr(model, "readout", "last")
    if readout not in READOUTS:
        raise ValueError(f"`readout` of the model must be one of {list(READOUTS)}, got {readout!r}.")
    return readout


def step_features(model: Any) -> int | None:
    """Features per time step when the model states them (`model.input_size`), else None."""
    size = getattr(model, "input_size", None)
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def reported_index(model: Any, state: Any) -> int:
    """Index, in `jax.tree.leaves(state)`, of the reported h_t: `reported_state` of the model (or else
    of its cell) as an int index or a field name; 0 when neither sets it.

    Raises:
      ValueError: an index out of range or a name that is not a field of the state.
    """
    spec = getattr(model, "reported_state", None)
    if spec is None:
        spec = getattr(getattr(model, "cell", None), "reported_state", None)
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    if spec is None:
        return 0
    if isinstance(spec, int) and not isinstance(spec, bool):
        if not 0 <= spec < len(leaves):
            raise ValueError(
                f"`reported_state` must index one of the state's {len(leaves)} leaves, got {spec!r}."
            )
        return spec
    names = [_path_name(path) for path, _ in leaves]
    for i, name in enumerate(names):
        if name == spec or name.split("/")[0] == spec:
            return i
    raise ValueError(f"`reported_state` must name a field of the state, one of {names}, got {spec!r}.")


def recurrent_paths(cell: nnx.Module) -> tuple[tuple[str, ...], ...] | None:
    """The cell's `recurrent_paths` (attribute paths of its recurrent weights), or None: all of its
    parameters count as recurrent."""
    paths = getattr(cell, "recurrent_paths", None)
    return None if paths is None else tuple(tuple(p) for p in paths)


def _path_name(path: Any) -> str:
    """The "a/b/c" name of a pytree key path (attribute, dict and sequence keys; the Variable's "value" left out)."""
    parts = []
    for k in path:
        for attr in ("name", "key", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    if parts and parts[-1] == "value":
        parts.pop()
    return "/".join(parts)
