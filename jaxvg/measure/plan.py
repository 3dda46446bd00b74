"""A model's structure, read once: its block layout, where each of its arrays goes, its compiled kernels.

The public measures are called again and again on the same model, or on a model of the same
structure (after a training step, or `nnx.merge` of a new state). Everything that depends only on
the structure is computed once per structure and cached here, keyed by the model's pytree structure
(`jax.tree.flatten(model)`: modules, static attributes, Variable types and metadata) and the
shapes and dtypes of its arrays, plus the mode (train or eval) and the scan threshold:

- the evaluation or training view (`engine.mode_view`) and the per-block split, done once in an
  abstract trace (`jax.make_jaxpr`): the trace records which of the model's arrays each block
  state takes, so a call only indexes the flat list of arrays;
- the `engine.BlockProgram` (the layout of scanned and unrolled runs) and the treedef of its
  `engine.BlockArrays`;
- the stacking plan of scanned runs: `engine.chunk_layout` cuts a long scanned stretch into runs
  of at most `engine.SCAN_CHUNK_ARRAYS` arrays, each stacked by one small compiled program (one
  dispatch per run) whose outputs the kernel scans over as they are. XLA's compile time grows
  faster than linearly with the number of arguments of a program (CPU: 5.6 s for 1000, 17 s for
  2000), so a depth-1000 model is never one program of 2000 arguments, and nothing is
  concatenated inside the kernel;
- the output shape per input shape, and the compiled kernels per option set (loss, precision, ...).

Per call: one `jax.tree.flatten` of the model (or none, through `jaxvg.measure.Probe`), a cache
lookup, list indexing, the stacking of scanned runs, and one dispatch of the compiled kernel.
Models that are not pytrees (NNX modules declared with `pytree=False`) take the graph path: one
`nnx.split` per call, then the same cache.

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> import jaxvg
  >>> from jaxvg.measure import plan
  >>> model = jaxvg.MLP(4, 8, 3, 1, rngs=nnx.Rngs(0))
  >>> p, leaves = plan.lookup(model, train=False, scan="auto")
  >>> p is plan.lookup(jaxvg.MLP(4, 8, 3, 1, rngs=nnx.Rngs(1)), train=False, scan="auto")[0]
  True
"""

from __future__ import annotations

import collections
import functools
import operator
import weakref
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvg.measure import engine
from jaxvg.nn import contracts

__all__ = ["Bound", "Plan", "bind", "cache_clear", "cache_info", "flatten", "lookup"]

_MAX_PLANS = 64


class _Src:
    """A slot of `BlockArrays` during the planning trace: its source arrays (one, or one per repeat
    of a scanned run)."""

    __slots__ = ("arrays", "stacked")

    def __init__(self, arrays: tuple, stacked: bool):
        self.arrays = arrays
        self.stacked = stacked


@jax.jit
def _stack_lists(lists: list[list[jax.Array]]) -> list[jax.Array]:
    return [jnp.stack(a) for a in lists]


class Plan:
    """What a model's structure determines, for one mode and scan threshold (see the module docstring).

    Attributes:
      program: the `engine.BlockProgram`.
      has_active_dropout: whether the measured view has active dropout (train mode).
      input_features: `contracts.input_features` of the model.
    """

    def __init__(
        self, program, treedef, slots, direct, stacked_runs, has_active_dropout, input_features, rebuild
    ):
        self.program: engine.BlockProgram = program
        self.has_active_dropout: bool = has_active_dropout
        self.input_features: int | None = input_features
        self.rebuild: Callable[[list], Any] = rebuild  # leaves -> model (traceable)
        self._treedef = treedef  # of engine.BlockArrays
        self._slots = slots  # per flat slot: ("d", index into direct) or ("s", run, slot)
        self._direct: list[int] = direct  # per direct slot, the index of its array in the leaves
        # per scanned run: the leaf index lists, one per stacked slot (one index per repeat)
        self._stacked_runs: list[list[list[int]]] = stacked_runs
        # few scanned arrays in all: the kernel stacks them itself (read at build: part of the key)
        self._stack_inside = sum(len(s) for run in stacked_runs for s in run) <= engine.SCAN_CHUNK_ARRAYS
        self._kernels: dict[Any, Callable] = {}
        self._out_shapes: dict[Any, tuple[int, ...]] = {}

    # -- per call ---------------------------------------------------------------------------------

    def inputs(self, leaves: list) -> tuple[list, list]:
        """The kernel's array arguments from the model's flat arrays: (direct, stacked), `stacked`
        per scanned run its per-slot arrays, stacked by one compiled program per run, or, when
        all scanned runs together hold at most `engine.SCAN_CHUNK_ARRAYS` arrays, per-slot lists
        (stacked inside the kernel: no extra dispatch)."""
        direct = [leaves[i] for i in self._direct]
        lists = [[[leaves[i] for i in s] for s in slots] for slots in self._stacked_runs]
        if self._stack_inside:
            return direct, lists
        return direct, [_stack_lists(run) for run in lists]

    def assemble(self, direct: list, stacked: list) -> engine.BlockArrays:
        """Inside a kernel: the `engine.BlockArrays` from `inputs`."""
        full = [[jnp.stack(a) if isinstance(a, list) else a for a in run] for run in stacked]
        flat = [direct[i] if kind == "d" else full[i][j] for kind, i, j in self._slots]
        return jax.tree.unflatten(self._treedef, flat)

    def kernel(self, options: Any, make: Callable[[Plan], Callable]) -> Callable:
        """The compiled kernel for `options` (hashable), made once by `make(self)`."""
        fn = self._kernels.get(options)
        if fn is None:
            fn = self._kernels.setdefault(options, make(self))
        return fn

    def output_shape(self, leaves: list, x: jax.Array) -> tuple[int, ...]:
        """The model's output shape on `x`, by abstract evaluation once per input shape.

        Raises:
          ValueError: `x` does not fit the model (the message names `x` and the underlying error).
        """
        key = (x.shape, x.dtype)
        shape = self._out_shapes.get(key)
        if shape is None:
            try:  # abstract all the way: not even the stacking programs run
                out = jax.eval_shape(
                    lambda lv, x: engine.forward(self.program, self.assemble(*self.inputs(lv)), x), leaves, x
                )
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"`x` of shape {x.shape} does not fit the model: {type(err).__name__}: {err}"
                ) from err
            shape = self._out_shapes.setdefault(key, tuple(out.shape))
        return shape


# --------------------------------------------------------------------------------------------------
# Building and the cache
# --------------------------------------------------------------------------------------------------


def _aval(v: Any) -> Any:
    try:
        return (v.shape, v.dtype)
    except AttributeError:
        return (type(v),)


def flatten(model: nnx.Module) -> tuple[str, Any, list, Callable[[list], Any]]:
    """(path, structure, leaves, rebuild): the model's arrays and how to rebuild it from them inside
    a trace. The "tree" path flattens the model as a pytree; models that are not pytrees (or hold
    leaves that are not arrays) take the "graph" path through `nnx.split`."""
    leaves, treedef = jax.tree.flatten(model)
    if all(isinstance(v, jax.Array) for v in leaves):
        return "tree", treedef, leaves, functools.partial(jax.tree.unflatten, treedef)
    graphdef, state = nnx.split(model)
    leaves, state_def = jax.tree.flatten(state)

    def rebuild(leaves):
        return nnx.merge(graphdef, jax.tree.unflatten(state_def, leaves), copy=True)

    return "graph", (graphdef, state_def), leaves, rebuild


def build(
    rebuild: Callable[[list], Any],
    leaves: list,
    *,
    train: bool,
    min_run: int | None,
    max_period: int | None = None,
) -> Plan:
    """Plan a model from its flat arrays and `rebuild` (see `flatten`), by one abstract trace."""
    info: dict[str, Any] = {}

    def trace(leaves):
        model = rebuild(leaves)
        view = engine.mode_view(model, train)
        pieces, embed, head, kernel_paths = engine.split_pieces(view)
        program, lay = engine.stack_program(pieces, embed, head, kernel_paths, min_run, max_period)

        def direct(tree):
            return jax.tree.map(lambda v: _Src((v,), False), tree)

        segs = []
        for start, k, r in lay:
            if r:
                group = [[pieces[start + i * k + j] for i in range(r)] for j in range(k)]
                stack = functools.partial(jax.tree.map, lambda *vs: _Src(vs, True))
                segs.append((tuple(stack(*[pc[1] for pc in g]) for g in group),
                             tuple(stack(*[pc[2] for pc in g]) for g in group)))  # fmt: skip
            else:
                segs.append(((direct(pieces[start][1]),), (direct(pieces[start][2]),)))
        ends = [None if e is None else (direct(e[1]), direct(e[2])) for e in (embed, head)]
        proto = engine.BlockArrays(ends[0], ends[1], segs)
        srcs, treedef = jax.tree.flatten(proto, is_leaf=lambda v: isinstance(v, _Src))
        info.update(program=program, treedef=treedef, srcs=srcs, lay=lay,
                    dropout=engine.has_active_dropout(view), d_in=contracts.input_features(model))  # fmt: skip
        return [a for s in srcs for a in s.arrays]

    closed = jax.make_jaxpr(trace)(leaves)
    position = {v: i for i, v in enumerate(closed.jaxpr.invars)}
    srcs, lay = info["srcs"], info["lay"]
    proto = jax.tree.unflatten(info["treedef"], list(range(len(srcs))))
    seg_of: list[int | None] = [None] * len(srcs)  # the segment of each slot (None: embed, head)
    for s, seg in enumerate(proto.segments):
        for i in jax.tree.leaves(seg):
            seg_of[i] = s
    run_of_seg = {s: n for n, s in enumerate(s for s, (_, _, r) in enumerate(lay) if r)}
    slots, direct_idx, run_slots = [], [], [[] for _ in run_of_seg]
    outs = iter(closed.jaxpr.outvars)
    for src, seg in zip(srcs, seg_of, strict=True):
        idx = []
        for _ in src.arrays:
            v = next(outs)
            if v not in position:  # an array made by the view or the split, not one of the model's
                raise RuntimeError(
                    f"jaxvg.measure.plan: a block state is not one of the model's arrays ({v})."
                )
            idx.append(position[v])
        if src.stacked:
            run = run_of_seg[seg]
            slots.append(("s", run, len(run_slots[run])))
            run_slots[run].append(idx)
        else:
            slots.append(("d", len(direct_idx), 0))
            direct_idx.append(idx[0])
    return Plan(info["program"], info["treedef"], slots, direct_idx, run_slots, info["dropout"], info["d_in"],
                rebuild)  # fmt: skip


_PLANS: collections.OrderedDict[Any, Plan] = collections.OrderedDict()


class Bound:
    """One model object's flat arrays, readable without flattening it again (see `lookup`).

    Built by one `flatten`; keeps the model's `nnx.Variable` objects (and any arrays held directly)
    in flattening order, and a snapshot of every module's attributes (object identities) for
    `valid`. Reading the arrays then costs one attribute read per Variable.
    """

    def __init__(self, model: nnx.Module):
        path, structure, leaves, rebuild = flatten(model)
        self.rebuild = rebuild
        self.first_leaves: list | None = leaves
        self.avals = tuple(map(_aval, leaves))
        try:  # jax's own abstract values: a faster comparison per call than (shape, dtype) pairs
            self._jax_avals: tuple | None = tuple([v.aval for v in leaves])
        except AttributeError:
            self._jax_avals = None
        self.key = (path, structure, self.avals)
        self._plans: dict[Any, Plan] = {}
        sources = jax.tree.leaves(model, is_leaf=_is_variable) if path == "tree" else None
        ok = sources is not None and len(sources) == len(leaves)
        ok = ok and all(
            (s.get_raw_value() if _is_variable(s) else s) is a for s, a in zip(sources, leaves, strict=True)
        )
        self._sources = sources if ok else None
        self._getters = (
            [s.get_raw_value if _is_variable(s) else (lambda s=s: s) for s in sources] if ok else None
        )
        snapshot = _snapshot(model) if ok else None
        # (a module's attribute dict, its values then): `valid` compares the dict's values now
        self._snapshot = None if snapshot is None else [(vars(o), vals) for o, vals in snapshot]
        self._root_vars = tuple(vars(model).values()) if ok else None
        self.passed: set[Callable] = set()  # the checks of `lookup` this structure passed

    def same_avals(self, leaves: list) -> bool:
        """Whether `leaves` (the model's arrays now) have the shapes and dtypes of the snapshot."""
        try:
            if tuple([v.aval for v in leaves]) == self._jax_avals:
                return True
        except AttributeError:  # a leaf that is not a jax array
            pass
        return tuple(map(_aval, leaves)) == self.avals

    @property
    def readable(self) -> bool:
        """Whether the arrays can be read without flattening (and the snapshot validated)."""
        return self._getters is not None

    def valid(self, model: nnx.Module) -> bool:
        """Whether `model`'s structure is still the one snapshotted: every module holds the same
        attribute objects (a Variable's value may have changed; the Variable object may not)."""
        if self._snapshot is None or not _same(vars(model).values(), self._root_vars):
            return False
        for attrs, snap in self._snapshot:
            if len(attrs) != len(snap) or not all(map(operator.is_, attrs.values(), snap)):
                return False
        return True

    def leaves(self) -> list:
        """The model's arrays now, in flattening order (the first call's own flatten, then reads;
        only the first call when not `readable`)."""
        if self.first_leaves is not None:
            leaves, self.first_leaves = self.first_leaves, None
            return leaves
        if self._getters is None:
            raise RuntimeError("jaxvg.measure.plan.Bound: arrays not readable; flatten the model instead.")
        return [get() for get in self._getters]

    def plan(self, train: bool, threshold: int | None, leaves: list) -> Plan:
        """The `Plan` of this structure for a mode and scan threshold (global cache; built on a
        miss from `leaves`, the model's current arrays)."""
        plan = self._plans.get((train, threshold))
        if plan is None:
            key = (*self.key, bool(train), threshold, engine.SCAN_MAX_PERIOD, engine.SCAN_CHUNK_ARRAYS)
            try:
                plan = _PLANS.get(key)
            except TypeError:  # unhashable static attributes: plan once per Bound
                key = None
            if plan is None:
                plan = build(self.rebuild, leaves, train=train, min_run=threshold)
                if key is not None:
                    plan = _PLANS.setdefault(key, plan)
                    while len(_PLANS) > _MAX_PLANS:
                        _PLANS.popitem(last=False)
            self._plans[(train, threshold)] = plan
        return plan


def _is_variable(v: Any) -> bool:
    return isinstance(v, nnx.Variable)


def _same(cur: Any, snap: tuple) -> bool:
    return len(cur) == len(snap) and all(map(operator.is_, cur, snap))


def _snapshot(model: nnx.Module) -> list[tuple[Any, tuple]] | None:
    """(node, its attribute values) for every nnx node below `model` (not the root itself: the
    cache must not keep it alive); None when some attribute is a mutable container (list, dict,
    set) that identity checks cannot watch."""
    out: list[tuple[Any, tuple]] = []
    seen: set[int] = set()

    def walk(values) -> bool:
        for v in values:
            if _is_variable(v) or isinstance(v, jax.Array):
                continue
            if isinstance(v, nnx.Pytree):
                if id(v) in seen:
                    continue
                seen.add(id(v))
                vals = tuple(vars(v).values())
                out.append((v, vals))
                if not walk(vals):
                    return False
            elif isinstance(v, tuple):
                if not walk(v):
                    return False
            elif isinstance(v, list | dict | set):
                return False
        return True

    return out if walk(tuple(vars(model).values())) else None


_BOUND: weakref.WeakKeyDictionary[Any, Bound] = weakref.WeakKeyDictionary()


def _cached_bound(model: nnx.Module) -> Bound | None:
    """The cached `Bound` of `model` while it is `valid`, else None."""
    try:
        bound = _BOUND.get(model)
    except TypeError:  # not weak-referenceable or unhashable
        return None
    return bound if bound is not None and bound.valid(model) else None


def _new_bound(model: nnx.Module) -> Bound:
    """A new `Bound` of `model` (one flatten), cached when its arrays are readable."""
    bound = Bound(model)
    if bound.readable:
        try:
            _BOUND[model] = bound
        except TypeError:  # not weak-referenceable or unhashable
            pass
    return bound


def bind(model: nnx.Module) -> Bound:
    """The `Bound` of `model`: the cached one while `Bound.valid`, else a new one (one flatten)."""
    return _cached_bound(model) or _new_bound(model)


def lookup(
    model: nnx.Module,
    *,
    train: bool,
    scan: Any,
    min_run: int | None = None,
    checks: tuple[Callable[[Any], None], ...] = (),
) -> tuple[Plan, list]:
    """The cached `Plan` of `model` (built on a miss) and the model's flat arrays for this call.

    A second call on the same model object reads its arrays from its `Bound` after checking, by
    object identity, that no module's attributes changed (well under 1 us per module); a new object of
    the same structure (e.g. `nnx.merge` after a pure training loop) costs one `jax.tree.flatten`
    and finds the same `Plan`. Arrays whose shapes or dtypes changed in place re-plan.

    Args:
      model: a block model (checked by the caller, or by `checks`).
      train: plan the training view (True) or the evaluation view.
      scan: "auto", True or False (see `engine.check_scan`; "auto" reads `engine.SCAN_MIN_RUN` now).
      min_run: overrides `engine.SCAN_MIN_RUN` for "auto".
      checks: functions of the model that raise for a model the caller refuses (e.g.
        `validate.check_model`), run before the model is flattened; a check depends on the
        structure only, so a model whose cached `Bound` is still valid and passed it skips it.
    Returns:
      (plan, leaves).
    """
    bound = _cached_bound(model)
    for check in checks:
        if bound is None or check not in bound.passed:
            check(model)
    threshold = engine.check_scan(scan, min_run)
    if bound is None:
        bound = _new_bound(model)
    leaves = bound.leaves()
    if bound.readable and not bound.same_avals(leaves):  # a Variable changed shape or dtype
        bound = _new_bound(model)
        leaves = bound.leaves()
    bound.passed.update(checks)
    return bound.plan(train, threshold, leaves), leaves


def cache_info() -> dict[str, int]:
    """Number of cached plans and of compiled kernels over them."""
    return {"plans": len(_PLANS), "kernels": sum(len(p._kernels) for p in list(_PLANS.values()))}


def cache_clear() -> None:
    """Forget every plan and its compiled kernels."""
    _PLANS.clear()
    _BOUND.clear()
