"""The block engine: a block model split into a static program and its arrays, run block by block.

Every measure in `jaxvg.measure` works on models that follow `jaxvg.nn.contracts.BlockModel`:
h_0 = embed(x), h_l = blocks[l-1](h_{l-1}) for l = 1..L, output = head(h_L). `split_blocks` splits
such a model (usually its evaluation or training view, `mode_view`) into

- a `BlockProgram`: static and hashable (graph definitions, the layout of the blocks in `Run`s, each
  block's kernel path), closed over by the compiled kernels, so that models of the same structure
  and shapes share one compiled program;
- `BlockArrays`: the embed's and head's (params, rest) states and, per run, the (params, rest) of
  each block of its period, stacked along a new leading axis (the repeats) for a scanned run.

Runs: a maximal stretch of blocks made of `repeats` identical groups of `period` consecutive blocks
(period 1: identical blocks; period 2: e.g. alternating local and global attention; at most
`SCAN_MAX_PERIOD`) is scanned (`lax.scan` over the repeats, the body applying the period's blocks in
turn: compile time nearly independent of the length) when it covers at least `SCAN_MIN_RUN` blocks
(`scan="auto"`), at least two repeats (`scan=True`) or never (`scan=False`); every other block is
unrolled (faster at run time on accelerators, compile time linear in depth). Blocks are "identical"
when their graph definitions and parameter shapes and dtypes agree. `map_blocks` runs a function
over all blocks, in order or in reverse, whatever the layout.

The layout algorithm (`layout`, `SCAN_MAX_PERIOD`) lives in `jaxvg.measure.layout`, the host-side
checks that the public measures share (`check_x`, `check_precision`), the evaluation or training
view (`mode_view`, `has_active_dropout`) and the RNG handling (`as_key`, `reseed`) in
`jaxvg.measure.host`; all are re-exported here, next to `check_scan` and `output_shape`. Everything
the engine reads of a model's structure it reads through `jaxvg.nn.contracts`.

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
from flax import nnx

from jaxvg.measure.host import PRECISIONS as PRECISIONS
from jaxvg.measure.host import as_key as as_key
from jaxvg.measure.host import check_precision as check_precision
from jaxvg.measure.host import check_x as check_x
from jaxvg.measure.host import check_x_features as check_x_features
from jaxvg.measure.host import has_active_dropout as has_active_dropout
from jaxvg.measure.host import mode_view as mode_view
from jaxvg.measure.host import reseed as reseed
from jaxvg.measure.layout import SCAN_MAX_PERIOD as SCAN_MAX_PERIOD
from jaxvg.measure.layout import layout as layout
from jaxvg.nn import contracts

__all__ = [
    "PRECISIONS",
    "SCAN_CHOICES",
    "SCAN_CHUNK_ARRAYS",
    "SCAN_MAX_PERIOD",
    "SCAN_MIN_RUN",
    "BlockArrays",
    "BlockProgram",
    "Run",
    "Segment",
    "apply",
    "apply_or_identity",
    "as_key",
    "block_pieces",
    "by_position",
    "chunk_layout",
    "check_precision",
    "check_scan",
    "check_x",
    "check_x_features",
    "concat",
    "forward",
    "has_active_dropout",
    "layout",
    "map_blocks",
    "mode_view",
    "output_shape",
    "per_block",
    "reseed",
    "run_blocks",
    "segments",
    "split_blocks",
    "split_blocks_from_split",
    "split_pieces",
    "stack_program",
    "unstack",
    "working_dtype",
]

SCAN_MIN_RUN = 128
"""With `scan="auto"`, runs covering at least this many blocks are scanned, shorter ones unrolled:
below it the unrolled loop's faster run time wins, above it the scan's shorter compile time. Read
at call time (part of the cache key of the compiled programs)."""

SCAN_CHUNK_ARRAYS = 256
"""A scanned stretch of blocks is cut into runs of at most this many arrays each (see
`chunk_layout`): the most that one stacking program of `jaxvg.measure.plan` takes (XLA's compile
time grows faster than linearly with a program's arguments). Read at call time (part of the cache
key of the compiled programs)."""

SCAN_CHOICES = ("auto", True, False)

Piece = tuple[Any, Any, Any]  # (graphdef, params, rest) of one block (stacked in a scanned run)


class _Period:
    """The period arithmetic shared by `Run` and `Segment` (a mixin of theirs, no state)."""

    __slots__ = ()
    pattern: tuple[Any, ...]
    n: int

    @property
    def graphdef(self) -> Any:
        """The graphdef of the run's first block (of every block when the period is 1)."""
        return self.pattern[0]

    @property
    def period(self) -> int:
        return len(self.pattern)

    @property
    def repeats(self) -> int:
        return self.n // len(self.pattern)


class _RunFields(NamedTuple):
    start: int
    n: int
    scan: bool
    pattern: tuple[Any, ...]


class Run(_Period, _RunFields):
    """Static layout of a run of blocks: one unrolled block (n = 1, scan False) or `repeats`
    identical groups of `period` blocks under `lax.scan` (scan True).

    Attributes:
      start: 0-based index of its first block.
      n: number of blocks (period * repeats).
      scan: whether it is scanned.
      pattern: the graphdefs of the period's blocks (one for an unrolled block).
    """

    __slots__ = ()


class _SegmentFields(NamedTuple):
    start: int
    n: int
    scan: bool
    pattern: tuple[Any, ...]
    params: tuple[Any, ...]
    rest: tuple[Any, ...]


class Segment(_Period, _SegmentFields):
    """A `Run` with its arrays: per block of the period, its params and rest states (stacked with a
    leading axis of length `repeats` when scanned), as tuples of length `period`."""

    __slots__ = ()


class BlockProgram(NamedTuple):
    """Static (hashable) description of a split block model.

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
    """The arrays of a split block model (a pytree): embed and head (params, rest) or None, and per
    run a (params, rest) pair of tuples over the period's blocks (stacked for scanned runs)."""

    embed: Any
    head: Any
    segments: list[tuple[tuple[Any, ...], tuple[Any, ...]]]


# --------------------------------------------------------------------------------------------------
# Layout and splitting
# --------------------------------------------------------------------------------------------------


def check_scan(scan: Any, min_run: int | None = None) -> int | None:
    """The shortest run (in blocks) that `scan` scans: SCAN_MIN_RUN (or `min_run`) for "auto", 2
    for True, None (never) for False.

    Raises:
      ValueError: `scan` is not one of "auto", True, False (the message names them).
    """
    if scan is True:
        return 2
    if scan is False:
        return None
    if isinstance(scan, str) and scan == "auto":
        return SCAN_MIN_RUN if min_run is None else min_run
    raise ValueError(f"`scan` must be one of ['auto', True, False], got {scan!r}.")


def _signature(piece: Piece) -> Any:
    gd, p, r = piece
    leaves = jax.tree.leaves((p, r))
    return (gd, jax.tree.structure((p, r)), tuple((jnp.shape(v), jnp.result_type(v)) for v in leaves))


def split_pieces(model: contracts.BlockModel) -> tuple[list[Piece], Piece | None, Piece | None, tuple]:
    """Per block `nnx.split(block, nnx.Param, ...)`, and the embed's and head's (None when absent),
    and the blocks' kernel paths. The model is not mutated."""
    blocks = list(model.blocks)
    pieces = [nnx.split(b, nnx.Param, ...) for b in blocks]

    def end(module):
        return None if module is None else nnx.split(module, nnx.Param, ...)

    kernel_paths = tuple(contracts.kernel_path(b) for b in blocks)
    return pieces, end(contracts.embed_of(model)), end(contracts.head_of(model)), kernel_paths


def chunk_layout(lay: list[tuple[int, int, int]], arrays: list[int]) -> list[tuple[int, int, int]]:
    """`lay` (from `layout`) with every scanned stretch cut into consecutive runs of at most
    `SCAN_CHUNK_ARRAYS` arrays each (`arrays[i]`: block i's array count; at least two repeats per
    run, whatever their arrays), as near equal in repeats as may be; a piece of one repeat is
    unrolled. A run's stacked arrays then come from one stacking
    program (`jaxvg.measure.plan`) and go into its `lax.scan` as they are: one long stack would be
    concatenated from such pieces inside the kernel at every call, a copy of every scanned array
    (and XLA's CPU scans over shorter stacks run faster too)."""
    out = []
    for start, k, r in lay:
        if not r:
            out.append((start, k, r))
            continue
        per_repeat = max(1, sum(arrays[start : start + k]))
        n = -(-r // max(2, SCAN_CHUNK_ARRAYS // per_repeat))
        base, extra = divmod(r, n)
        for c in range(n):
            rc = base + (c < extra)
            out += [(start + j, 1, 0) for j in range(k)] if rc == 1 else [(start, k, rc)]
            start += k * rc
    return out


def stack_program(
    pieces: list[Piece],
    embed: Piece | None,
    head: Piece | None,
    kernel_paths: tuple,
    min_run: int | None,
    max_period: int | None = None,
) -> tuple[BlockProgram, list[tuple[int, int, int]]]:
    """The `BlockProgram` of split pieces (see `layout`) and the layout it was made from."""
    interned: dict[Any, int] = {}
    signatures = [_signature(p) for p in pieces]
    ids = [interned.setdefault(sig, len(interned)) for sig in signatures]
    arrays = [len(sig[2]) for sig in signatures]  # per block
    lay = chunk_layout(layout(ids, min_run, max_period), arrays)
    runs = []
    for start, k, r in lay:
        if r:
            runs.append(Run(start, k * r, True, tuple(pieces[start + j][0] for j in range(k))))
        else:
            runs.append(Run(start, 1, False, (pieces[start][0],)))
    program = BlockProgram(
        len(pieces), tuple(runs), None if embed is None else embed[0], None if head is None else head[0],
        kernel_paths,
    )  # fmt: skip
    return program, lay


def _stack(*trees: Any) -> Any:
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def split_blocks(
    model: contracts.BlockModel,
    min_run: int | None = None,
    *,
    scan: Any = "auto",
    max_period: int | None = None,
) -> tuple[BlockProgram, BlockArrays]:
    """Split a block model into its static `BlockProgram` and its `BlockArrays`.

    Runs (see `layout`) of identical groups of blocks are stacked for `lax.scan`: with `scan="auto"`
    those covering at least `min_run` (default `SCAN_MIN_RUN`, read at call time) blocks, with
    `scan=True` every run of two or more repeats, with `scan=False` none. Traceable (the stacking
    is `jnp.stack`: inside `jax.jit` with many blocks, prefer `jaxvg.measure.plan`, which stacks in
    a few small compiled programs). The model is not mutated.

    Args:
      model: a model that follows `contracts.BlockModel`, in the mode to measure (see `mode_view`).
      min_run: the shortest run that "auto" scans.
      scan: "auto", True or False.
      max_period: the longest period of a scanned run (default `SCAN_MAX_PERIOD`).
    Returns:
      (program, arrays).
    Raises:
      TypeError: a block's `kernel_path` does not name an `nnx.Param` (see `contracts.kernel_path`).
      ValueError: an invalid `scan`.
    """
    threshold = check_scan(scan, min_run)
    pieces, embed, head, kernel_paths = split_pieces(model)
    program, lay = stack_program(pieces, embed, head, kernel_paths, threshold, max_period)
    segs = []
    for start, k, r in lay:
        if r:
            group = [[pieces[start + i * k + j] for i in range(r)] for j in range(k)]
            params = tuple(_stack(*[pc[1] for pc in g]) for g in group)
            rest = tuple(_stack(*[pc[2] for pc in g]) for g in group)
            segs.append((params, rest))
        else:
            segs.append(((pieces[start][1],), (pieces[start][2],)))

    def states(piece):
        return None if piece is None else (piece[1], piece[2])

    return program, BlockArrays(states(embed), states(head), segs)


def split_blocks_from_split(
    graphdef: Any, state: Any, *, scan: Any = "auto", max_period: int | None = None
) -> tuple[BlockProgram, BlockArrays]:
    """`split_blocks` of `nnx.merge(graphdef, *state, copy=True)`; `state` is one `nnx.State` or a
    tuple of them (as `nnx.split(model, nnx.Param, ...)` returns). Traceable."""
    states = tuple(state) if isinstance(state, tuple | list) else (state,)
    return split_blocks(nnx.merge(graphdef, *states, copy=True), scan=scan, max_period=max_period)


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
    scan_policy: Callable[..., bool] | None = None,
) -> tuple[Any, list[Any]]:
    """Run `fn(carry, (graphdef, params, rest), x) -> (carry, y)` over all blocks, in order or reversed.

    A scanned segment runs under `lax.scan` over its repeats, its body calling `fn` once per block of
    the period; an unrolled one calls `fn` once. Per-block inputs and outputs are given per segment
    as a tuple over the period's positions of pytrees with a leading axis of the segment's repeats
    (1 when unrolled): the blocks of one position share a structure, those of different positions
    need not (their `fn` outputs may differ, e.g. VJP closures of different block types). Convert
    with `by_position` (from one per-block axis), `concat` (to one) and `per_block` (to a list).

    Args:
      segs: from `segments`.
      fn: the block step; traced once per position of a scanned period and once per unrolled block.
      carry: the initial carry.
      xs: None, or per segment its per-block inputs (the format of the returned ys).
      params: None, or per segment a tuple of parameters that replaces the segment's own (same
        layout; e.g. the argument of a gradient).
      reverse: run from the last block to the first.
      scan_policy: None, or a `jax.checkpoint` policy for `fn` in scanned segments: what a scan
        differentiated afterwards keeps of each step for the backward pass (the rest is recomputed
        there; unrolled blocks are left to XLA).
    Returns:
      (final carry, ys): per segment, the outputs in the format described above.
    """
    ys = [None] * len(segs)
    order = range(len(segs) - 1, -1, -1) if reverse else range(len(segs))
    scanned_fn = fn if scan_policy is None else jax.checkpoint(fn, policy=scan_policy)
    for s in order:
        seg = segs[s]
        ps = seg.params if params is None else params[s]
        x = None if xs is None else xs[s]
        if seg.scan:
            positions = range(seg.period - 1, -1, -1) if reverse else range(seg.period)

            def body(c, a, seg=seg, positions=positions):
                pp, rr, xx = a
                out = [None] * seg.period
                for j in positions:
                    c, out[j] = scanned_fn(c, (seg.pattern[j], pp[j], rr[j]), None if xx is None else xx[j])
                return c, tuple(out)

            carry, y = jax.lax.scan(body, carry, (ps, seg.rest, x), reverse=reverse)
        else:
            x0 = None if x is None else jax.tree.map(lambda v: v[0], x[0])
            carry, y = fn(carry, (seg.graphdef, ps[0], seg.rest[0]), x0)
            y = (jax.tree.map(lambda v: v[None], y),)
        ys[s] = y
    return carry, ys


def by_position(segs: list[Segment], tree: Any) -> list[Any]:
    """Per-block values with one leading axis of length L (block order) in the per-segment,
    per-position format of `map_blocks`."""
    out = []
    for seg in segs:
        part = jax.tree.map(lambda v, seg=seg: v[seg.start : seg.start + seg.n], tree)
        out.append(tuple(jax.tree.map(lambda v, j=j, k=seg.period: v[j::k], part) for j in range(seg.period)))
    return out


def concat(ys: list[Any]) -> Any:
    """The per-segment outputs of `map_blocks` along one per-block axis (length L, block order);
    the positions of a period must give outputs of one structure."""

    def segment(y):
        if len(y) == 1:
            return y[0]
        return jax.tree.map(lambda *a: jnp.stack(a, axis=1).reshape((-1,) + a[0].shape[1:]), *y)

    return jax.tree.map(lambda *a: jnp.concatenate(a, axis=0), *[segment(y) for y in ys])


def per_block(segs: list[Segment], ys: list[Any]) -> list[Any]:
    """The per-segment outputs of `map_blocks` as a list of L per-block values (block order)."""
    out = []
    for seg, y in zip(segs, ys, strict=True):
        columns = [unstack(y[j], seg.repeats if seg.scan else 1) for j in range(seg.period)]
        for i in range(seg.repeats if seg.scan else 1):
            out += [columns[j][i] for j in range(seg.period)]
    return out


def unstack(tree: Any, n: int) -> list[Any]:
    """The n entries along the leading axis of every leaf of `tree`."""
    return [jax.tree.map(lambda v, i=i: v[i], tree) for i in range(n)]


def block_pieces(segs: list[Segment]) -> list[Piece]:
    """(graphdef, params, rest) of every block, input side first (scanned runs unstacked)."""
    pieces = []
    for seg in segs:
        if seg.scan:
            per_pos = [unstack((seg.params[j], seg.rest[j]), seg.repeats) for j in range(seg.period)]
            for i in range(seg.repeats):
                pieces += [(seg.pattern[j], *per_pos[j][i]) for j in range(seg.period)]
        else:
            pieces.append((seg.graphdef, seg.params[0], seg.rest[0]))
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
