"""Sweep grids: cells, their keys, shape groups, and depth masks that join depths in one program.

A sweep is a grid of cells (seeds, sigma_w2, sigma_b2, learning rates, depths, widths, activations).
Cells whose arrays have the same shapes share one compiled program (`shape_groups`): their
parameters are stacked along a leading *nets* axis and a per-net function is vmapped over it
(`jaxvg.scale.map_nets`). Depths join one program by padding every net to the largest depth with
blocks masked to the identity (`pad_depth_mask`, `masked_forward`); widths and activations form
separate shape groups, one program each. `cell_key` names a cell the same way in every run, which
is what lets a rerun skip the cells already stored.

Example:
  >>> from jaxvg import scale
  >>> cells = scale.grid(width=[8, 16], sigma_w2=[1.0, 2.0])
  >>> [scale.cell_key(c) for c in cells]
  ['sigma_w2=1.0,width=8', 'sigma_w2=2.0,width=8', 'sigma_w2=1.0,width=16', 'sigma_w2=2.0,width=16']
  >>> {k: len(v) for k, v in scale.shape_groups(cells, by=("width",)).items()}
  {(8,): 2, (16,): 2}
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxvg import checks

__all__ = ["cell_key", "grid", "masked_forward", "pad_depth_mask", "shape_groups"]


def grid(**axes: Iterable[Any]) -> list[dict[str, Any]]:
    """Cartesian product of sweep axes, as a list of cells (dicts).

    Cells come in `itertools.product` order over the axes as given: the last axis varies fastest.
    Every cell has the same keys, in the order of `axes`, so a grid is reproducible from its
    arguments and `cell_key` names each cell the same way in every run.

    Args:
      **axes: axis name -> non-empty iterable of values (numbers, strings, None; numpy scalars
        are converted to Python scalars so keys and JSON stay plain).
    Returns:
      A list of prod(len(values)) dicts, one per cell.
    Raises:
      ValueError: if no axis is given, an axis is a string (a common slip for `["tanh"]`) or
        not iterable, or an axis has no values or repeats a value.

    Example:
      >>> grid(activation=["tanh", "relu"], seed=[0, 1])
      [{'activation': 'tanh', 'seed': 0}, {'activation': 'tanh', 'seed': 1}, {'activation': 'relu', 'seed': 0}, {'activation': 'relu', 'seed': 1}]
    """
    if not axes:
        raise ValueError("`grid` needs at least one axis, e.g. grid(sigma_w2=[1.0, 2.0]), got none.")
    values = {}
    for name, vals in axes.items():
        if isinstance(vals, str | bytes) or not isinstance(vals, Iterable):
            raise ValueError(
                f"`{name}` must be a list of values, got {vals!r}; write {name}=[{vals!r}] for one value."
            )
        vals = [_plain(v) for v in vals]
        if not vals:
            raise ValueError(f"`{name}` must have at least one value, got {vals!r}.")
        if len(set(map(repr, vals))) != len(vals):
            raise ValueError(f"`{name}` must not repeat a value, got {vals!r}.")
        values[name] = vals
    names = list(values)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values.values())]


def cell_key(cell: Mapping[str, Any]) -> str:
    """A stable, file-name-safe string naming one cell: `"k1=v1,k2=v2"` with the keys sorted.

    Floats are written with `repr` (the shortest string that round-trips, so 0.1 is "0.1"), other
    values with `str`; numpy scalars count as Python scalars. The same cell gives the same key in
    every run and whatever its dict order, which is what lets a rerun skip finished cells.

    Args:
      cell: mapping from axis name to value.
    Returns:
      The key string.
    Raises:
      ValueError: if `cell` is empty, or a key or value contains one of the separators
        `,` `=` `/` (they would make keys ambiguous or unusable as file names).

    Example:
      >>> cell_key({"width": 64, "sigma_w2": 1.5, "activation": "tanh"})
      'activation=tanh,sigma_w2=1.5,width=64'
    """
    if not cell:
        raise ValueError(f"`cell` must have at least one key, got {cell!r}.")
    parts = []
    for k in sorted(cell):
        v = _plain(cell[k])
        text = repr(v) if isinstance(v, float) else str(v)
        for s in (str(k), text):
            if any(sep in s for sep in ",=/"):
                raise ValueError(
                    f"`cell` keys and values must not contain ',', '=' or '/', got {k!r}: {cell[k]!r}."
                )
        parts.append(f"{k}={text}")
    return ",".join(parts)


def shape_groups(
    cells: Iterable[Mapping[str, Any]], by: Sequence[str] = ("depth", "width", "activation")
) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """Group cells that can share one compiled program.

    Cells that agree on every axis in `by` (the axes that change array shapes or the traced
    function) go in one group; the other axes (seeds, sigma_w2, sigma_b2, learning rate) become a
    stacked nets axis inside the group. A cell without one of the `by` axes counts as None there
    (a sweep that fixes depth in its config has no "depth" key). Drop "depth" from `by` when the
    depths are padded with `pad_depth_mask`, so that all depths share a program.

    Args:
      cells: the cells, e.g. from `grid`.
      by: the axis names that define a group.
    Returns:
      Dict from the tuple of `by` values (in `by` order) to the list of its cells, groups in order
      of first appearance and cells in their original order.
    Raises:
      ValueError: if `by` is a string (write `by=("width",)`) or empty.

    Example:
      >>> cells = grid(width=[8, 16], seed=[0, 1])
      >>> list(shape_groups(cells, by=("width",)))
      [(8,), (16,)]
    """
    if isinstance(by, str) or not by:
        raise ValueError(f"`by` must be a non-empty sequence of axis names, e.g. ('width',), got {by!r}.")
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for cell in cells:
        key = tuple(_plain(cell.get(name)) for name in by)
        groups.setdefault(key, []).append(dict(cell))
    return groups


def _plain(value: Any) -> Any:
    """numpy scalar -> Python scalar; anything else unchanged."""
    return value.item() if isinstance(value, np.generic) else value


def pad_depth_mask(depths: Sequence[int], max_depth: int | None = None) -> jax.Array:
    """Block masks that let nets of different depths run as one program of depth `max_depth`.

    mask[i, l] = (l < depths[i]): net i uses its first depths[i] blocks and passes h through the
    others unchanged (`masked_forward`). Every net is built with `max_depth` blocks (same shapes,
    so they stack along a nets axis); the extra blocks' parameters are ignored by the forward pass
    and get exactly zero gradient.

    Args:
      depths: depth of each net, each an int in [1, max_depth].
      max_depth: blocks in the padded program; default max(depths).
    Returns:
      Bool array, shape (nets, max_depth); vmap over its first axis with the stacked parameters.
    Raises:
      ValueError: if `depths` is empty or an entry is not an int in [1, max_depth].

    Example:
      >>> pad_depth_mask([1, 3], 4).astype(int)
      Array([[1, 0, 0, 0],
             [1, 1, 1, 0]], dtype=int32)
    """
    depths = list(depths)
    if not depths:
        raise ValueError(f"`depths` must list at least one depth, got {depths!r}.")
    for d in depths:
        checks.positive_int("depths", d)
    if max_depth is None:
        max_depth = max(depths)
    checks.positive_int("max_depth", max_depth)
    if max(depths) > max_depth:
        raise ValueError(f"`depths` must all be <= max_depth={max_depth}, got {depths!r}.")
    return jnp.asarray(np.arange(max_depth)[None, :] < np.asarray(depths)[:, None])


def masked_forward(
    blocks: Sequence[Callable[[jax.Array], jax.Array]], h: jax.Array, mask: jax.Array
) -> jax.Array:
    """Apply blocks in order, block l only where mask[l] is True (identity elsewhere).

    h_l = where(mask[l], block_l(h_{l-1}), h_{l-1}). With `mask = pad_depth_mask(depths, L)[i]` a
    net built with L blocks computes exactly (bitwise) what its first depths[i] blocks compute, and
    `jax.grad` gives the same gradients, with exact zeros for the masked blocks' parameters. Use it
    in place of the block loop of a forward pass, e.g. for a jaxvg `MLP`::

        out = model.head(masked_forward(model.blocks, x, mask))

    and vmap over (stacked parameters, masks). A block whose output shape differs from its input
    shape (block 1 of an MLP with in_features != width) cannot be the identity and always runs,
    whatever its mask entry; `pad_depth_mask` sets block 1 on anyway (every depth is >= 1).

    Caveat (the `jnp.where` gradient rule): a masked block's output must be finite. Its cotangent
    is zero, but 0 x inf = NaN would still reach the parameters; initialise padded blocks like the
    others (finite weights) and this cannot happen for the usual activations.

    Args:
      blocks: callables h -> h, e.g. an `nnx.List` of blocks; shapes must be preserved by every
        block that can be masked.
      h: input of the first block, shape (batch, ...).
      mask: bool, shape (len(blocks),).
    Returns:
      The output of the last block, shape of `h` after the first block.
    Raises:
      ValueError: if `mask` has not shape (len(blocks),).

    Example:
      >>> blocks = [lambda h: h + 1.0] * 3
      >>> masked_forward(blocks, jnp.zeros(2), jnp.array([True, True, False]))
      Array([2., 2.], dtype=float32)
    """
    if jnp.shape(mask) != (len(blocks),):
        raise ValueError(
            f"`mask` must have shape ({len(blocks)},), one entry per block, got {jnp.shape(mask)}."
        )
    for layer, block in enumerate(blocks):
        out = block(h)
        # a block that changes the shape cannot be skipped: it always runs (see the docstring)
        h = jnp.where(mask[layer], out, h) if jnp.shape(out) == jnp.shape(h) else out
    return h
