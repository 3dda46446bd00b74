"""The structure checks of a block model: its parts are NNX modules, and no block shares parameters.

- `check_model`: `jaxvg.nn.contracts.check_block_model`, and `embed`, every block and `head` are
  `nnx.Module`s (a plain function cannot be split into a graph and arrays);
- `check_untied`: no `nnx.Param` is shared between blocks, or between a block and the embed or the
  head (a tied block would get per-use gradients); `shared_parameters` lists the tied pairs and
  `tied_message` explains them.

`jaxvg.measure.validate` runs these with the other checks before tracing and re-exports them.

Example:
  >>> from flax import nnx
  >>> import jaxvg
  >>> from jaxvg.measure import structure
  >>> model = jaxvg.MLP(3, 4, 3, 1, rngs=nnx.Rngs(0))
  >>> model.blocks[2] = model.blocks[1]  # one module at two depths
  >>> structure.shared_parameters(model)[0][:2]
  ('blocks[1]', 'blocks[2]')
"""

from __future__ import annotations

import weakref
from typing import Any

import jax
from flax import nnx

from jaxvg.nn import contracts

__all__ = ["check_model", "check_untied", "describe", "shared_parameters", "tied_message"]


def describe(obj: Any) -> str:
    """A short description of a value for an error message: "a function (relu)", "a tuple"."""
    name = getattr(obj, "__name__", None) or getattr(getattr(obj, "__wrapped__", None), "__name__", None)
    kind = "function" if callable(obj) else type(obj).__name__
    return f"a {kind} ({name})" if name else f"a {type(obj).__name__}"


def check_model(model: Any) -> None:
    """Raise unless `model` follows the block contract's structure: `contracts.check_block_model`,
    and `embed`, every block and `head` are NNX modules (plain functions are not).

    Raises:
      TypeError: the first part that is not a module, with the wrapper that fixes it.
    """
    contracts.check_block_model(model)
    parts = [("embed", contracts.embed_of(model))]
    parts += [(f"blocks[{i}]", b) for i, b in enumerate(model.blocks)]
    parts.append(("head", contracts.head_of(model)))
    for where, part in parts:
        if part is None or isinstance(part, nnx.Module):
            continue
        raise TypeError(
            f"`model.{where}` is {describe(part)}, not an nnx.Module: the block contract needs modules "
            f"(the measures split each into its graph and its arrays). Wrap it, e.g. `class Tanh(nnx.Module): "
            f"def __call__(self, h): return jnp.tanh(h)`, or fold it into a neighbouring module."
        )


def _params(module: nnx.Module) -> dict[int, str]:
    """id -> attribute path of every `nnx.Param` reachable from `module` (shared ones once)."""
    out: dict[int, str] = {}
    flat = jax.tree_util.tree_flatten_with_path(module, is_leaf=lambda v: isinstance(v, nnx.Variable))[0]
    if all(isinstance(v, nnx.Variable) for _, v in flat):
        for path, v in flat:
            if isinstance(v, nnx.Param):
                out.setdefault(id(v), "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                                              for k in path))  # fmt: skip
        return out
    for path, v in nnx.iter_graph(module):  # modules that are not pytrees
        if isinstance(v, nnx.Param):
            out.setdefault(id(v), "/".join(map(str, path)))
    return out


def shared_parameters(model: contracts.BlockModel) -> list[tuple[str, str, list[str]]]:
    """The parameters that a block shares with another block, the embed or the head: a list of
    (first position, second position, parameter paths in the first), e.g.
    ("blocks[0]", "blocks[2]", ["linear/kernel", "linear/bias"]) for one module used at two depths.
    Sharing between `embed` and `head` alone (tied input and output embeddings) is not listed: it
    does not enter the per-block results."""
    positions = [("embed", contracts.embed_of(model))]
    positions += [(f"blocks[{i}]", b) for i, b in enumerate(model.blocks)]
    positions.append(("head", contracts.head_of(model)))
    owner: dict[int, str] = {}
    found: dict[tuple[str, str], list[str]] = {}
    for where, part in positions:
        if not isinstance(part, nnx.Module):
            continue
        for pid, path in _params(part).items():
            first = owner.setdefault(pid, where)
            if first != where and {first, where} != {"embed", "head"}:
                found.setdefault((first, where), []).append(path)
    return [(a, b, paths) for (a, b), paths in found.items()]


_UNTIED: weakref.WeakKeyDictionary[Any, tuple] = weakref.WeakKeyDictionary()


def _identity(model: contracts.BlockModel) -> tuple:
    """The objects that make up the blocks, by identity (an nnx.List keeps its items in `vars`: read
    them there, about 100x faster than iterating it)."""
    blocks = model.blocks
    items = vars(blocks).values() if isinstance(blocks, nnx.Module) else blocks
    return (id(contracts.embed_of(model)), tuple(map(id, items)), id(contracts.head_of(model)))


def tied_message(model: contracts.BlockModel) -> str | None:
    """The explanation `check_untied` raises for `model`, or None when no block shares parameters."""
    shared = shared_parameters(model)
    if not shared:
        return None
    a, b, paths = shared[0]
    more = f" (and {len(shared) - 1} more pairs)" if len(shared) > 1 else ""
    what = "the same module object" if _part(model, a) is _part(model, b) else "shared parameters"
    return (
        f"`model.{a}` and `model.{b}` hold {what}{more}: parameters {paths[:4]} are used at several "
        "depths (tied blocks). gradient_flow splits every block into its own copy, so its "
        "`log10_param_grad` and `log10_kernel_grad` would be per-use gradients, while a shared "
        "parameter's true gradient is the sum over its uses; it refuses instead of reporting "
        "either silently. `log10_act_grad` and `log10_gain` do not depend on tying: for per-use numbers "
        "measure an untied copy, e.g. `m = nnx.clone(model); m.blocks = nnx.List([nnx.clone(b) for b "
        "in m.blocks])` (jacobian_norms and jacobian_spectrum accept tied blocks as they are); for "
        "the shared parameter's total gradient take jax.grad of your loss."
    )


def _part(model: contracts.BlockModel, where: str) -> Any:
    if where.startswith("blocks["):
        return model.blocks[int(where[7:-1])]
    return contracts.embed_of(model) if where == "embed" else contracts.head_of(model)


def check_untied(model: contracts.BlockModel) -> None:
    """Raise when a block shares an `nnx.Param` with another block, the embed or the head.

    Checked once per model object (cached while the embed, the blocks and the head are the same
    objects: a cheap identity check per call); re-tying Variables inside existing blocks after the
    first measurement is not seen.

    Raises:
      ValueError: the tied positions, the shared parameters, why, and what to do instead.
    """
    ident = _identity(model)
    try:
        if _UNTIED.get(model) == ident:
            return
    except TypeError:  # not weak-referenceable: check every call
        pass
    message = tied_message(model)
    if message is not None:
        raise ValueError(message)
    try:
        _UNTIED[model] = ident
    except TypeError:
        pass
