"""One entry per layer for taps inside a scan over layers (used by `tapped_gradients`).

A tap inside a block that `nnx.scan` runs over stacked layers (or that `nnx.vmap` maps) is captured
once, with the transform's axis in front: its perturbation, and so its gradient, has shape
(layers, *value.shape), and a single norm over it would mix all layers. While `tapped_gradients`
traces its first pass (`recording`), `tap` records the shape of every tapped value (`record`);
`scan_axes` then compares each perturbation's shape with the recorded shapes of its name, and
`entries` names every entry of the extra leading axes as a tap of its own: "layers/h" of 12 scanned
layers becomes "layers/0/h", ..., "layers/11/h" (the index after the stacked module's path, as an
`nnx.List` of blocks would be named).

Example:
  >>> from jaxvg.measure import tap_layers
  >>> with tap_layers.recording() as shapes:
  ...     tap_layers.record("h", __import__("jax.numpy").numpy.ones((2, 3)))
  >>> tap_layers.scan_axes("h", (4, 2, 3), shapes), [k for _, k in tap_layers.entries(("layers", "h"), (2,))]
  (1, ['layers/0/h', 'layers/1/h'])
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["entries", "in_order", "record", "recording", "scan_axes"]

_SHAPES: contextvars.ContextVar[dict[str, set[tuple[int, ...]]] | None] = contextvars.ContextVar(
    "jaxvg_tap_shapes", default=None
)


@contextlib.contextmanager
def recording() -> Iterator[dict[str, set[tuple[int, ...]]]]:
    """Within the block, `record` collects tap name -> shapes of the tapped values (first leaf)."""
    shapes: dict[str, set[tuple[int, ...]]] = {}
    token = _SHAPES.set(shapes)
    try:
        yield shapes
    finally:
        _SHAPES.reset(token)


def record(name: str, value: Any) -> None:
    """Note the shape of one tapped value (its first leaf) when a `recording` is active."""
    shapes = _SHAPES.get()
    if shapes is None:
        return
    leaves = jax.tree.leaves(value)
    if leaves:
        shapes.setdefault(name, set()).add(tuple(jnp.shape(leaves[0])))


def scan_axes(name: str, shape: tuple[int, ...], recorded: dict[str, set[tuple[int, ...]]]) -> int:
    """How many leading axes of a perturbation of shape `shape` were added by a scan or vmap over
    layers: 0 when `shape` is a recorded value shape of `name` (or none is recorded), else the fewest
    leading axes whose removal leaves a recorded shape."""
    shape = tuple(shape)
    candidates = recorded.get(name, set())
    if not candidates or shape in candidates:
        return 0
    extra = [
        len(shape) - len(c) for c in candidates if len(c) < len(shape) and shape[len(shape) - len(c) :] == c
    ]
    return min(extra) if extra else 0


def entries(path: tuple, lead: tuple[int, ...]) -> list[tuple[tuple[int, ...], str]]:
    """(index into the leading axes `lead`, tap name) for every layer of a tap at `path` (the nnx
    path, its last element the tap's name); one entry ((), "a/b/name") when `lead` is empty."""
    parts = [str(p) for p in path]
    if not lead:
        return [((), "/".join(parts))]
    return [(idx, "/".join(parts[:-1] + [str(i) for i in idx] + parts[-1:])) for idx in np.ndindex(*lead)]


def in_order(result: dict[str, Any]) -> dict[str, Any]:
    """`result` with its keys in natural order ("layers/2/h" before "layers/10/h"): a compiled
    function returns dicts sorted as strings."""

    def key(name: str) -> list:
        return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name)]

    return {k: result[k] for k in sorted(result, key=key)}
