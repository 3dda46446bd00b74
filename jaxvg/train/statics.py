"""What `Trainer` reads from a model's structure, once per structure: its input size, its
evaluation-mode graphdef, each block's kernel among the parameters, the parameter groups of the
history, and whether the measures can read it (for `monitor_every`).

`model_statics` caches these per graphdef and leaf shapes (merging and viewing a module costs
milliseconds); `eval_forward` is the jitted evaluation-mode forward pass whose `eval_shape` checks
the data against the model before training.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
from flax import nnx

from jaxvg import checks
from jaxvg.nn import contracts, models

__all__ = ["Statics", "block_layout", "eval_forward", "model_statics", "unhashable_message"]


class Statics(NamedTuple):
    """What the trainer reads from one net's module (see `model_statics`)."""

    in_features: int | None  # `contracts.input_features`
    eval_graphdef: Any  # graphdef of the evaluation-mode view
    kernel_index: tuple[int, ...]
    leaf_group: tuple[int, ...]
    group_names: tuple[str, ...]
    monitor_problem: str  # why the measures cannot read the model ("" when they can)


_MODEL_STATICS: dict[Any, Statics] = {}  # (graphdef, leaf shapes) -> statics
_MODEL_STATICS_SIZE = 32


def model_statics(graphdef: Any, one: Any) -> Statics:
    """What the trainer reads from one net's module, cached on the graphdef and the shapes and
    dtypes of one net's state (`one`, abstract): merging and viewing costs milliseconds per call."""
    key = (graphdef, jax.tree.structure(one), tuple((a.shape, a.dtype) for a in jax.tree.leaves(one)))
    try:
        hit = _MODEL_STATICS.get(key)
    except TypeError:  # a static attribute that cannot be hashed: jit cannot cache the program either
        raise checks.ArgumentTypeError(unhashable_message(nnx.merge(graphdef, *one))) from None
    if hit is None:
        model = nnx.merge(graphdef, *one)
        view = nnx.view(model, deterministic=True, use_running_average=True, raise_if_not_found=False)
        eval_graphdef, _, _ = nnx.split(view, nnx.Param, ...)
        problem = ""
        try:
            contracts.check_block_model(model)
        except TypeError as e:
            problem = str(e)
        is_block_model = not problem  # a `blocks` attribute that breaks the contract: not a block model
        if not problem and nnx.state(model, models.ActiveBlocks):
            problem = "a depth-masked model (`max_depth`): the measures would see every block as active."
        hit = Statics(
            contracts.input_features(model) if is_block_model else getattr(model, "in_features", None),
            eval_graphdef,
            *block_layout(model, one[0], is_block_model),
            problem,
        )
        if len(_MODEL_STATICS) >= _MODEL_STATICS_SIZE:
            _MODEL_STATICS.pop(next(iter(_MODEL_STATICS)))
        _MODEL_STATICS[key] = hit
    return hit


def unhashable_message(model: nnx.Module) -> str:
    """Why a model's graphdef cannot be hashed: the first static attribute that cannot be."""
    where = "an attribute"
    for path, node in nnx.iter_graph(model):
        if not isinstance(node, nnx.Module):
            continue
        for name, value in vars(node).items():
            if name.startswith("_") or isinstance(value, nnx.Module | nnx.Variable | nnx.List | jax.Array):
                continue
            try:
                hash(value)
            except TypeError:
                dotted = ".".join(str(p) for p in (*path, name))
                where = f"`model.{dotted}` = {value!r:.60} ({type(value).__name__})"
                break
        else:
            continue
        break
    return (
        f"`model` has a static attribute that cannot be hashed: {where}. jax compiles one program per "
        "model structure and needs the structure hashable: store modules in an nnx.List, arrays in "
        "nnx.Variable/nnx.data, and other static values as tuples, not lists, dicts or sets."
    )


def block_layout(
    model: nnx.Module, params: Any, is_block_model: bool
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[str, ...]]:
    """(per block: index of its kernel among the params leaves (`contracts.kernel_path`) or -1;
    per params leaf: the block it belongs to, or L outside the blocks; per group: its name)."""
    paths = [path for path, _ in nnx.to_flat_state(params)]  # the order of jax.tree.leaves(params)
    index = {path: j for j, path in enumerate(paths)}
    blocks = list(model.blocks) if is_block_model else []
    leaf_group = [len(blocks)] * len(paths)
    kernel_index = []
    for i, block in enumerate(blocks):
        for path, _ in nnx.to_flat_state(nnx.state(block, nnx.Param)):
            if ("blocks", i, *path) in index:
                leaf_group[index[("blocks", i, *path)]] = i
        kernel = contracts.kernel_path(block)
        kernel_index.append(-1 if kernel is None else index.get(("blocks", i, *kernel), -1))
    others = []
    for path, group in zip(paths, leaf_group, strict=True):
        if group == len(blocks) and str(path[0]) not in others:
            others.append(str(path[0]))
    names = tuple(f"blocks[{i}]" for i in range(len(blocks))) + (
        " / ".join(others) if others else "non-block parameters",
    )
    return tuple(kernel_index), tuple(leaf_group), names


@functools.lru_cache(maxsize=32)
def eval_forward(eval_graphdef: Any) -> Callable:
    """jit(forward) for the shape check; its `eval_shape` is cached per shape by jit."""

    def forward(p, r, xb):
        return nnx.merge(eval_graphdef, p, r, copy=True)(xb)

    return jax.jit(forward)
