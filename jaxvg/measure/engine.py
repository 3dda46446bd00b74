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

The host-side checks that the public measures share (`check_x`, `check_precision`, `check_scan`,
`output_shape`), the evaluation or training view (`mode_view`, `has_active_dropout`) and the RNG
handling (`as_key`, `reseed`) live here too. Everything the engine reads of a model's structure it
reads through `jaxvg.nn.contracts`.

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
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvg import checks
from jaxvg.nn import contracts

__all__ = [
    "PRECISIONS",
    "SCAN_CHOICES",
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

SCAN_MAX_PERIOD = 8
"""The longest period (blocks per repeated group) that a scanned run may have."""

SCAN_CHOICES = ("auto", True, False)

PRECISIONS = ("default", "high", "highest")
"""Canonical matmul precisions (`jax.lax.Precision` names, lower case); `check_precision` also
accepts jax's aliases ("float32", "tensorfloat32", "bfloat16", "bfloat16_3x", "fastest") and
`jax.lax.Precision` members."""

_PRECISION_ALIASES = {
    "default": "default",
    "fastest": "default",
    "bfloat16": "default",
    "high": "high",
    "tensorfloat32": "high",
    "bfloat16_3x": "high",
    "highest": "highest",
    "float32": "highest",
}

Piece = tuple[Any, Any, Any]  # (graphdef, params, rest) of one block (stacked in a scanned run)


class Run(NamedTuple):
    """Static layout of a run of blocks: one unrolled block (n = 1, scan False) or `repeats`
    identical groups of `period` blocks under `lax.scan` (scan True).

    Attributes:
      start: 0-based index of its first block.
      n: number of blocks (period * repeats).
      scan: whether it is scanned.
      pattern: the graphdefs of the period's blocks (one for an unrolled block).
    """

    start: int
    n: int
    scan: bool
    pattern: tuple[Any, ...]

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


class Segment(NamedTuple):
    """A `Run` with its arrays: per block of the period, its params and rest states (stacked with a
    leading axis of length `repeats` when scanned), as tuples of length `period`."""

    start: int
    n: int
    scan: bool
    pattern: tuple[Any, ...]
    params: tuple[Any, ...]
    rest: tuple[Any, ...]

    @property
    def graphdef(self) -> Any:
        return self.pattern[0]

    @property
    def period(self) -> int:
        return len(self.pattern)

    @property
    def repeats(self) -> int:
        return self.n // len(self.pattern)


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


def check_precision(precision: Any, name: str = "precision") -> str:
    """`precision` as a canonical name in `PRECISIONS` ("default", "high", "highest"), from a jax
    name or a `jax.lax.Precision`; `name` is the argument the error message names.

    Raises:
      ValueError: an unknown name; `jaxvg.checks.ArgumentTypeError` (a TypeError and a ValueError)
        for a value that is neither a string nor a `jax.lax.Precision`. The message names the
        argument, the value and the choices.
    """
    if isinstance(precision, jax.lax.Precision):
        return precision.name.lower()
    if isinstance(precision, str) and precision.lower() in _PRECISION_ALIASES:
        return _PRECISION_ALIASES[precision.lower()]
    error = ValueError if isinstance(precision, str) else checks.ArgumentTypeError
    raise error(
        f"`{name}` must be one of {sorted(_PRECISION_ALIASES)} or a jax.lax.Precision, got {precision!r}."
    )


def layout(
    ids: Sequence[int], min_run: int | None, max_period: int | None = None
) -> list[tuple[int, int, int]]:
    """The runs of a block sequence from its block signatures (equal ids: identical blocks).

    Greedy from the input side: at block i, the period k <= max_period whose repeats r (full groups
    of k blocks, each equal to the first) cover the most blocks (ties: the shortest k) makes a
    scanned run when it covers at least `min_run` blocks with r >= 2; otherwise block i is unrolled.

    Args:
      ids: one hashable per block.
      min_run: the shortest scanned run in blocks; None: nothing is scanned.
      max_period: the longest period (default `SCAN_MAX_PERIOD`).
    Returns:
      [(start, period, repeats)], repeats 0 for an unrolled block (period 1).

    Example:
      >>> layout([0, 1, 2, 1, 2, 1, 2, 3], min_run=4)
      [(0, 1, 0), (1, 2, 3), (7, 1, 0)]
    """
    n = len(ids)
    kmax = SCAN_MAX_PERIOD if max_period is None else max_period
    if min_run is None or n < 2:
        return [(i, 1, 0) for i in range(n)]
    # match[k][i]: length of the stretch from i on where ids[t] == ids[t + k]
    match = {}
    for k in range(1, min(kmax, n // 2) + 1):
        m = [0] * (n + 1)
        for t in range(n - k - 1, -1, -1):
            m[t] = m[t + 1] + 1 if ids[t] == ids[t + k] else 0
        match[k] = m
    out, i = [], 0
    while i < n:
        best_k, best_r = 1, 1
        for k, m in match.items():
            r = (m[i] + k) // k if i + k <= n else 1
            r = min(r, (n - i) // k)
            if r >= 2 and r * k > best_k * best_r:
                best_k, best_r = k, r
        if best_r >= 2 and best_k * best_r >= max(min_run, 2):
            out.append((i, best_k, best_r))
            i += best_k * best_r
        else:
            out.append((i, 1, 0))
            i += 1
    return out


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
    ids = [interned.setdefault(_signature(p), len(interned)) for p in pieces]
    lay = layout(ids, min_run, max_period)
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
    Returns:
      (final carry, ys): per segment, the outputs in the format described above.
    """
    ys = [None] * len(segs)
    order = range(len(segs) - 1, -1, -1) if reverse else range(len(segs))
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
                    c, out[j] = fn(c, (seg.pattern[j], pp[j], rr[j]), None if xx is None else xx[j])
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
    return check_x_features(contracts.input_features(model), x)


def check_x_features(d_in: int | None, x: Any) -> jax.Array:
    """`check_x` given the model's input size `d_in` (None: unknown)."""
    if not hasattr(x, "shape"):  # array-likes go to jnp.asarray as they are; lists etc. via numpy
        x = np.asarray(x)
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"`x` must have a leading batch axis, got shape {x.shape}.")
    if d_in is not None and x.shape[-1] != d_in:
        raise ValueError(
            f"`x` must have {d_in} features in its last axis (the model's input size), got shape {x.shape}."
        )
    return x
