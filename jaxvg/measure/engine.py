"""The block engine: a block model split once into a static program and its arrays, run block by block.

Every measure in `jaxvg.measure` works on models that follow `jaxvg.nn.contracts.BlockModel`:
h_0 = embed(x), h_l = blocks[l-1](h_{l-1}) for l = 1..L, output = head(h_L). `split_blocks` splits
such a model (usually its evaluation or training view, `mode_view`) into

- a `BlockProgram`: static and hashable (graph definitions, the layout of the blocks in `Run`s, each
  block's kernel path), passed to `jax.jit` as a static argument, so that models of the same
  structure and shapes share one compiled program;
- `BlockArrays`: the embed's and head's (params, rest) states and, per run, the block's (params,
  rest), stacked along a new leading axis for a scanned run.

Runs: a maximal run of at least `SCAN_MIN_RUN` consecutive blocks with the same graph definition and
parameter shapes and dtypes is scanned (`lax.scan` over its stacked states: compile time nearly
independent of its length); every other block is unrolled (faster at run time, compile time linear in
depth). `map_blocks` runs a function over all blocks, in order or in reverse, whatever the layout.

The host-side checks that the public measures share (`check_x`, `output_shape`), the evaluation or
training view (`mode_view`, `has_active_dropout`) and the RNG handling (`as_key`, `reseed`) live here
too. Everything the engine reads of a model's structure it reads through `jaxvg.nn.contracts`.

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> import jaxvg
  >>> from jaxvg.measure import engine
  >>> program, arrays = engine.split_blocks(jaxvg.MLP(4, 8, 3, 1, rngs=nnx.Rngs(0)))
  >>> program.depth, [(run.start, run.n, run.scan) for run in program.runs]
  (3, [(0, 1, False), (1, 1, False), (2, 1, False)])
  >>> engine.forward(program, arrays, jnp.ones((2, 4))).shape
  (2, 1)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvg.nn import contracts

__all__ = [
    "SCAN_MIN_RUN",
    "BlockArrays",
    "BlockProgram",
    "Run",
    "Segment",
    "apply",
    "apply_or_identity",
    "as_key",
    "block_pieces",
    "check_x",
    "concat",
    "forward",
    "has_active_dropout",
    "map_blocks",
    "mode_view",
    "output_shape",
    "reseed",
    "run_blocks",
    "segments",
    "unstack",
    "split_blocks",
    "split_blocks_from_split",
    "working_dtype",
]

SCAN_MIN_RUN = 128
"""Runs of at least this many identical consecutive blocks are scanned, shorter ones unrolled: below
it the unrolled loop's faster run time wins, above it the scan's shorter compile time. `split_blocks`
reads it at call time."""

Piece = tuple[Any, Any, Any]  # (graphdef, params, rest) of one block, or of a scanned run's block


class Run(NamedTuple):
    """Static layout of a run of blocks: one unrolled block (n = 1, scan False) or n >= `SCAN_MIN_RUN`
    identical blocks under `lax.scan` (scan True); `start` is the 0-based index of its first block."""

    start: int
    n: int
    scan: bool
    graphdef: Any


class Segment(NamedTuple):
    """A `Run` with its arrays: the block's params and rest states (stacked with a leading axis of
    length n when scanned)."""

    start: int
    n: int
    scan: bool
    graphdef: Any
    params: Any
    rest: Any


class BlockProgram(NamedTuple):
    """Static (hashable) description of a split block model: a `jax.jit` static argument.

    Attributes:
      depth: L, the number of blocks.
      runs: the blocks' layout, input side first.
      embed: the embed's graphdef, or None (identity).
      head: the head's graphdef, or None (identity).
      kernel_paths: per block, `contracts.kernel_path(block)` (None: no kernel column).
    """

    depth: int
    runs: tuple[Run, ...]
    embed: Any
    head: Any
    kernel_paths: tuple[tuple[str, ...] | None, ...]


class BlockArrays(NamedTuple):
    """The arrays of a split block model (a pytree): embed and head (params, rest) or None, and one
    (params, rest) per run, stacked for scanned runs."""

    embed: Any
    head: Any
    segments: list[tuple[Any, Any]]


# --------------------------------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------------------------------


def split_blocks(model: contracts.BlockModel, min_run: int | None = None) -> tuple[BlockProgram, BlockArrays]:
    """Split a block model into its static `BlockProgram` and its `BlockArrays`.

    Consecutive blocks with the same graphdef and the same parameter structure, shapes and dtypes
    form a run; a run of at least `min_run` (default `SCAN_MIN_RUN`) blocks is stacked for `lax.scan`,
    others are unrolled. Called eagerly by the public measures (stacking many arrays inside `jax.jit`
    compiles slowly) and inside the trace by the `*_from_split` kernels. The model is not mutated.

    Args:
      model: a model that follows `contracts.BlockModel`, in the mode to measure (see `mode_view`).
      min_run: the shortest run that is scanned.
    Returns:
      (program, arrays).
    Raises:
      TypeError: a block's `kernel_path` does not name an `nnx.Param` (see `contracts.kernel_path`).
    """
    min_run = SCAN_MIN_RUN if min_run is None else min_run
    blocks = list(model.blocks)
    pieces = [nnx.split(b, nnx.Param, ...) for b in blocks]

    def signature(piece):
        gd, p, r = piece
        leaves = jax.tree.leaves((p, r))
        return (gd, jax.tree.structure((p, r)), tuple((v.shape, v.dtype) for v in leaves))

    sigs = [signature(p) for p in pieces]
    runs, arrays, i = [], [], 0
    while i < len(pieces):
        j = i + 1
        while j < len(pieces) and sigs[j] == sigs[i]:
            j += 1
        if j - i >= min_run:
            stack = lambda *a: jnp.stack(a)  # noqa: E731
            params = jax.tree.map(stack, *[pieces[k][1] for k in range(i, j)])
            rest = jax.tree.map(stack, *[pieces[k][2] for k in range(i, j)])
            runs.append(Run(i, j - i, True, pieces[i][0]))
            arrays.append((params, rest))
        else:
            for k in range(i, j):
                runs.append(Run(k, 1, False, pieces[k][0]))
                arrays.append((pieces[k][1], pieces[k][2]))
        i = j

    def end(module):
        if module is None:
            return None, None
        gd, p, r = nnx.split(module, nnx.Param, ...)
        return gd, (p, r)

    embed_gd, embed = end(contracts.embed_of(model))
    head_gd, head = end(contracts.head_of(model))
    kernel_paths = tuple(contracts.kernel_path(b) for b in blocks)
    program = BlockProgram(len(blocks), tuple(runs), embed_gd, head_gd, kernel_paths)
    return program, BlockArrays(embed, head, arrays)


def split_blocks_from_split(graphdef: Any, state: Any) -> tuple[BlockProgram, BlockArrays]:
    """`split_blocks` of `nnx.merge(graphdef, *state, copy=True)`; `state` is one `nnx.State` or a
    tuple of them (as `nnx.split(model, nnx.Param, ...)` returns). Traceable."""
    states = tuple(state) if isinstance(state, tuple | list) else (state,)
    return split_blocks(nnx.merge(graphdef, *states, copy=True))


def segments(program: BlockProgram, arrays: BlockArrays) -> list[Segment]:
    """The program's runs joined with their arrays, input side first."""
    return [Segment(*run, *a) for run, a in zip(program.runs, arrays.segments, strict=True)]


# --------------------------------------------------------------------------------------------------
# Running blocks
# --------------------------------------------------------------------------------------------------


def apply(graphdef: Any, params: Any, rest: Any, *args: Any) -> Any:
    """Call the module `nnx.merge(graphdef, params, rest, copy=True)` on `args` (pure)."""
    return nnx.merge(graphdef, params, rest, copy=True)(*args)


def apply_or_identity(graphdef: Any, states: tuple[Any, Any] | None, h: Any) -> Any:
    """`apply(graphdef, *states, h)` for an embed or head, `h` itself when `graphdef` is None."""
    return h if graphdef is None else apply(graphdef, *states, h)


def map_blocks(
    segs: list[Segment],
    fn: Callable[[Any, Piece, Any], tuple[Any, Any]],
    carry: Any,
    xs: list[Any] | None = None,
    *,
    params: list[Any] | None = None,
    reverse: bool = False,
) -> tuple[Any, list[Any]]:
    """Run `fn(carry, (graphdef, params, rest), x) -> (carry, y)` over all blocks, in order or reversed.

    A scanned segment runs under `lax.scan`, an unrolled one calls `fn` once.

    Args:
      segs: from `segments`.
      fn: the block step; traced once per segment.
      carry: the initial carry.
      xs: None, or one entry per segment, each with a leading axis of the segment's length.
      params: None, or per segment parameters that replace the segments' own (same layout; e.g. the
        argument of a gradient).
      reverse: run from the last block to the first.
    Returns:
      (final carry, ys): ys has one entry per segment, the outputs stacked with a leading axis of the
      segment's length (see `concat`).
    """
    ys = [None] * len(segs)
    order = range(len(segs) - 1, -1, -1) if reverse else range(len(segs))
    for s in order:
        seg = segs[s]
        p = seg.params if params is None else params[s]
        x = None if xs is None else xs[s]
        if seg.scan:

            def body(c, a, gd=seg.graphdef):
                pp, rr, xx = a
                return fn(c, (gd, pp, rr), xx)

            carry, y = jax.lax.scan(body, carry, (p, seg.rest, x), reverse=reverse)
        else:
            x0 = None if x is None else jax.tree.map(lambda v: v[0], x)
            carry, y = fn(carry, (seg.graphdef, p, seg.rest), x0)
            y = jax.tree.map(lambda v: v[None], y)
        ys[s] = y
    return carry, ys


def concat(ys: list[Any]) -> Any:
    """Concatenate the per-segment outputs of `map_blocks` into one per-block axis (length L)."""
    return jax.tree.map(lambda *a: jnp.concatenate(a, axis=0), *ys)


def unstack(tree: Any, n: int) -> list[Any]:
    """The n entries along the leading axis of every leaf of `tree`."""
    return [jax.tree.map(lambda v, i=i: v[i], tree) for i in range(n)]


def block_pieces(segs: list[Segment]) -> list[Piece]:
    """(graphdef, params, rest) of every block, input side first (scanned runs unstacked)."""
    pieces = []
    for seg in segs:
        if seg.scan:
            pieces += [(seg.graphdef, *pr) for pr in unstack((seg.params, seg.rest), seg.n)]
        else:
            pieces.append((seg.graphdef, seg.params, seg.rest))
    return pieces


def run_blocks(
    program: BlockProgram, arrays: BlockArrays, x: Any, step: Callable[[Piece, Any], tuple[Any, Any]]
) -> tuple[Any, list[Any]]:
    """Forward pass from h_0 = embed(x) through the blocks, `step(piece, h_{l-1}) -> (h_l, y)` per
    block. Returns (h_L, ys) with ys per segment as in `map_blocks`; the head is not applied."""
    h0 = apply_or_identity(program.embed, arrays.embed, x)
    return map_blocks(segments(program, arrays), lambda h, piece, _: step(piece, h), h0)


def forward(program: BlockProgram, arrays: BlockArrays, x: Any) -> Any:
    """The model's output, head(h_L)."""
    h, _ = run_blocks(program, arrays, x, lambda piece, h: (apply(*piece, h), None))
    return apply_or_identity(program.head, arrays.head, h)


def working_dtype(*trees: Any) -> jnp.dtype:
    """The promoted floating dtype of the leaves of `trees`, at least float32."""
    dts = [v.dtype for v in jax.tree.leaves(trees) if jnp.issubdtype(v.dtype, jnp.floating)]
    return functools.reduce(jnp.promote_types, dts, jnp.dtype(jnp.float32))


# --------------------------------------------------------------------------------------------------
# Host-side views and checks (before tracing)
# --------------------------------------------------------------------------------------------------


def mode_view(model: nnx.Module, train: bool) -> nnx.Module:
    """The model's evaluation view (`deterministic=True`, `use_running_average=True`) or, with
    `train=True`, its training view; the model itself is not changed."""
    return nnx.view(model, deterministic=not train, use_running_average=not train, raise_if_not_found=False)


def has_active_dropout(model: nnx.Module) -> bool:
    """Whether some `nnx.Dropout` of `model` has a rate > 0 and is not deterministic."""
    for _, m in nnx.iter_modules(model):
        if isinstance(m, nnx.Dropout) and m.rate > 0 and not m.deterministic:
            return True
    return False


def as_key(key: Any) -> jax.Array:
    """A typed `jax.random.key` from a typed key or a raw uint32[2] PRNGKey; TypeError otherwise."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if key.dtype == jnp.uint32 and key.shape[-1:] == (2,):
        return jax.random.wrap_key_data(key)
    raise TypeError(f"`key` must be a jax.random.key (or a raw uint32[2] PRNGKey), got {key!r}.")


def reseed(tree: Any, key: jax.Array) -> Any:
    """Replace every `nnx.RngKey` in `tree` by keys derived from `key` (fold_in by position; a stacked
    key array gets one key per entry) and every `nnx.RngCount` by 0: RNG use (dropout) then depends on
    `key`, not on the model's counters."""
    counter = iter(range(1, 1 << 30))

    def f(v):
        if isinstance(v, nnx.RngKey):
            k = jax.random.fold_in(key, next(counter))
            old = v[...]
            return v.replace(jax.random.split(k, old.shape) if old.ndim else k)
        if isinstance(v, nnx.RngCount):
            return v.replace(jnp.zeros_like(v[...]))
        return v

    return jax.tree.map(f, tree, is_leaf=lambda v: isinstance(v, nnx.Variable))


@functools.lru_cache(maxsize=256)
def _output_struct(program: BlockProgram, treedef, leaf_structs: tuple, x_struct: tuple):
    leaves = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in leaf_structs]
    arrays = jax.tree.unflatten(treedef, leaves)
    return jax.eval_shape(lambda a, x: forward(program, a, x), arrays, jax.ShapeDtypeStruct(*x_struct))


def output_shape(program: BlockProgram, arrays: BlockArrays, x: jax.Array) -> tuple[int, ...]:
    """The model's output shape on `x` (abstract evaluation, cached per structure and shapes).

    Raises:
      ValueError: `x` does not fit the model (the message names `x` and the underlying error).
    """
    leaves, treedef = jax.tree.flatten(arrays)
    leaf_structs = tuple((tuple(v.shape), v.dtype) for v in leaves)
    try:
        out = _output_struct(program, treedef, leaf_structs, (tuple(x.shape), x.dtype))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"`x` of shape {x.shape} does not fit the model: {type(err).__name__}: {err}"
        ) from err
    return tuple(out.shape)


def check_x(model: contracts.BlockModel, x: Any) -> jax.Array:
    """`x` as a jax array with a leading batch axis and, where the model states its input size
    (`contracts.input_features`), that many features in its last axis.

    Raises:
      ValueError: no batch axis, or the wrong number of features.
    """
    if not hasattr(x, "shape"):  # array-likes go to jnp.asarray as they are; lists etc. via numpy
        x = np.asarray(x)
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"`x` must have a leading batch axis, got shape {x.shape}.")
    d_in = contracts.input_features(model)
    if d_in is not None and x.shape[-1] != d_in:
        raise ValueError(
            f"`x` must have {d_in} features in its last axis (the model's input size), got shape {x.shape}."
        )
    return x
