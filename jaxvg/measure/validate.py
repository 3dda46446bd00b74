"""Checks that every measure runs before tracing: its inputs, its key, and the block contract.

A measurement that runs on bad input, or on a model that does not follow the block contract
(`jaxvg.nn.contracts`), returns numbers that look like results. These checks turn each such case
into an error that names the argument or the block, what is wrong and how to fix it:

- `check_x`, `check_finite`, `check_key`: `x` must be (batch, ...) with batch >= 1 and finite
  (one small reduction on the device per call), `y` finite, `key` a `jax.random.key`;
- `check_model`, `check_untied` (from `jaxvg.measure.structure`, re-exported here): the parts are
  modules, and no parameter is shared between blocks (a tied block would get per-use gradients);
- `check_forward`: once per model structure and input shape, the contract forward
  `head(blocks[L-1](...blocks[0](embed(x))))` is run block by block under `jax.eval_shape` (each
  block must take `h` alone and return one array with the batch first; an error names the block,
  its type and the contract point it breaks), and, unless switched off, compared with `model(x)`
  on the first `COMPARE_EXAMPLES` examples: a `__call__` that computes something else is refused.

Inside the compiled measurement, `all_finite` flags non-finite forward values and
`mark_nonfinite_forward` turns the fields they make meaningless into NaN and records where the
forward pass went non-finite (`GradientFlow.forward_nonfinite_block`).

Example:
  >>> import jax.numpy as jnp
  >>> import jaxvg
  >>> from flax import nnx
  >>> one_example = jnp.ones(3)  # no batch axis
  >>> try:
  ...     jaxvg.gradient_flow(jaxvg.MLP(3, 4, 2, 1, rngs=nnx.Rngs(0)), one_example, jnp.zeros(1))
  ... except ValueError as err:
  ...     print(str(err)[:72])
  `x` of shape (3,) is one example without a batch axis: the model takes (
"""

from __future__ import annotations

import math
import re
import weakref
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvg import checks
from jaxvg.measure import engine, structure
from jaxvg.measure.structure import check_model as check_model
from jaxvg.measure.structure import check_untied as check_untied
from jaxvg.measure.structure import shared_parameters as shared_parameters
from jaxvg.measure.structure import tied_message as tied_message
from jaxvg.nn import contracts

__all__ = [
    "COMPARE_EXAMPLES",
    "all_finite",
    "check_finite",
    "check_forward",
    "check_key",
    "check_mode",
    "check_model",
    "check_untied",
    "check_x",
    "contract_forward",
    "first_nonfinite",
    "mark_nonfinite_forward",
    "shared_parameters",
]

COMPARE_EXAMPLES = 8
"""How many examples of `x` (the first ones) `check_forward` runs through `model(x)` and the
contract forward to compare them."""

_HINT_ARGS = (
    "The measures call every block as block(h) with h alone (and embed(x), head(h)). Bind the "
    "other arguments (masks, positions, flags) in a wrapper module that stores them, e.g. "
    "`class WithMask(nnx.Module): def __init__(self, block, mask): self.block, self.mask = block, "
    "nnx.Variable(mask)` with `def __call__(self, h): return self.block(h, self.mask[...])`, and put "
    "the wrappers in `blocks`; or give the arguments default values. (A functools.partial is not an "
    "nnx.Module and cannot be a block.)"
)
_HINT_RNGS = (
    "A block that draws random numbers (dropout) must hold its RNG stream: construct it with "
    "`rngs=` (e.g. nnx.Dropout(rate, rngs=rngs)); the measures never pass `rngs` at call time. With "
    "train=True, `key` reseeds every RNG stream stored in the model (the result then depends on "
    "`key`, not on the model's RNG counters); train=False measures the deterministic evaluation "
    "view and needs no RNG."
)
_HINT_BATCH = "If `x` is one example, add a batch axis: x[None]."


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


@jax.jit
def _finite_flags(leaves: list) -> jax.Array:
    return jnp.stack([jnp.all(jnp.isfinite(v)) for v in leaves])


_KNOWN_FINITE: dict[int, weakref.ref] = {}
_KNOWN_FINITE_MAX = 64


def _known_finite(v: Any) -> bool:
    ref = _KNOWN_FINITE.get(id(v))
    return ref is not None and ref() is v


def _remember_finite(v: Any) -> None:
    """Record the (immutable) jax array `v` as checked finite, while it lives; the oldest of
    `_KNOWN_FINITE_MAX` records goes first."""
    i = id(v)
    try:
        ref = weakref.ref(v, lambda _, i=i: _KNOWN_FINITE.pop(i, None))
    except TypeError:
        return
    while len(_KNOWN_FINITE) >= _KNOWN_FINITE_MAX:
        _KNOWN_FINITE.pop(next(iter(_KNOWN_FINITE)), None)
    _KNOWN_FINITE[i] = ref


def check_finite(name: str, value: Any) -> None:
    """Raise a ValueError naming `name` when a floating array in `value` (an array or a pytree of
    them) holds a NaN or an infinity. Host arrays are checked on the host, every call (numpy arrays
    are mutable); device arrays by one small compiled reduction (one device round trip), once per
    array: a jax array is immutable, so the one passed again (the same object, e.g. a fixed probe
    batch measured at every training step) is not checked again. Traced values are not checked.

    Raises:
      ValueError: with the number of bad entries and the first one's index.
    """
    leaves = [
        v for v in jax.tree.leaves(value)
        if hasattr(v, "dtype") and hasattr(v, "shape") and jnp.issubdtype(v.dtype, jnp.inexact)
    ]  # fmt: skip
    if not leaves or any(isinstance(v, jax.core.Tracer) for v in leaves):
        return
    host = [v for v in leaves if isinstance(v, np.ndarray | np.generic)]
    device = [v for v in leaves if not isinstance(v, np.ndarray | np.generic) and not _known_finite(v)]
    ok = all(bool(np.isfinite(v).all()) for v in host)
    if ok and device:
        ok = bool(np.all(_finite_flags(device)))
        if ok:
            for v in device:
                _remember_finite(v)
    if ok:
        return
    for v in leaves:
        checks.finite_array(name, np.asarray(v))  # raises for the first bad leaf, with its index


def check_x(d_in: int | None, x: Any, *, name: str = "x") -> jax.Array:
    """`x` as a jax array of shape (batch, ...) with batch >= 1, finite, with `d_in` features in its
    last axis where the model states its input size (`contracts.input_features`).

    Raises:
      ValueError: no batch axis (a 1-D `x` of the model's `d_in` features: "add a batch axis:
        x[None]"), an empty batch, the wrong number of features, or a NaN/Inf entry.
    """
    raw = x
    x = engine.check_x_features(d_in, x)
    if d_in is not None and x.ndim == 1:
        raise ValueError(
            f"`{name}` of shape {x.shape} is one example without a batch axis: the model takes "
            f"(batch, {d_in}); add a batch axis: {name}[None] (every measure is over a batch, and "
            "dead_fraction and the norms depend on it)."
        )
    if x.shape[0] == 0:
        raise ValueError(
            f"`{name}` must hold at least one example (batch >= 1 along its first axis), got shape {x.shape}."
        )
    check_finite(name, raw if isinstance(raw, np.ndarray) else x)  # host arrays on the host
    return x


def check_key(key: Any) -> Any:
    """`key` itself when it is None, a typed `jax.random.key` or a raw uint32 PRNGKey (`(..., 2)`).

    Raises:
      TypeError: anything else (a string, a Python int seed, a float array), naming `key` and the fix.
    """
    if key is None:
        return None
    dtype = getattr(key, "dtype", None)
    if isinstance(key, jax.Array | np.ndarray) and dtype is not None:
        if jnp.issubdtype(dtype, jax.dtypes.prng_key):
            return key
        if dtype == np.uint32 and key.shape[-1:] == (2,):
            return key
    hint = (
        f"; for the seed {key!r} pass key=jax.random.key({key!r})"
        if isinstance(key, int | np.integer)
        else ""
    )
    raise TypeError(
        f"`key` must be a jax.random.key (e.g. key=jax.random.key(0)) or a raw uint32[2] "
        f"jax.random.PRNGKey, got {key!r} ({type(key).__name__}){hint}."
    )


def check_mode(train: Any, key: Any, has_active_dropout: bool) -> None:
    """Check the measure's mode: `train` a bool, and a `key` when `train=True` meets active dropout.

    Raises:
      TypeError: `train` is not a bool.
      ValueError: `train=True`, `has_active_dropout` and `key` is None (the message says what to pass).
    """
    if not isinstance(train, bool):
        raise TypeError(f"`train` must be a bool, got {train!r}.")
    if train and key is None and has_active_dropout:
        raise ValueError(
            "`key` is required with `train=True` on a model with dropout, got key=None; pass e.g. "
            "key=jax.random.key(0) (or use train=False)."
        )


# --------------------------------------------------------------------------------------------------
# The contract forward, block by block
# --------------------------------------------------------------------------------------------------


def _struct(h: Any) -> Any:
    return (tuple(h.shape), jnp.dtype(h.dtype)) if isinstance(h, jax.Array) else type(h)


def _call(where: str, module: nnx.Module, h: Any, x: jax.Array, first: bool) -> Any:
    """`module(h)`, any failure re-raised as a ValueError that names `where`, the module's type and
    the contract point (with the fix for missing call arguments and call-time RNG)."""
    kind = type(module).__name__
    try:
        return module(h)
    except Exception as err:  # noqa: BLE001 -- re-raised with the block named, the cause chained
        message = str(err).split("\n--------------------\n")[0]  # without jax's traceback note
        text = f"{type(err).__name__}: {' '.join(message.split()).rstrip('.')}"
        arg = "x" if where == "embed" else "h"
        call = {"embed": "embed(x)", "head": "head(h)"}.get(where, "block(h)")
        head = f"`model.{where}` ({kind}) fails when called as {call} on {arg} of shape {tuple(h.shape)} {h.dtype}"
        if isinstance(err, TypeError) and re.search(r"missing \d+ required .*argument", str(err)):
            raise ValueError(f"{head}: {text}. {_HINT_ARGS}") from err
        if "rngs" in str(err):
            raise ValueError(f"{head}: {text}. {_HINT_RNGS}") from err
        if first:
            raise ValueError(f"`x` of shape {x.shape} does not fit the model: {head}: {text}") from err
        raise ValueError(f"{head}: {text}") from err


def _check_h(where: str, module: nnx.Module, h: Any, x: jax.Array) -> None:
    kind = type(module).__name__
    if not isinstance(h, jax.Array):
        raise ValueError(
            f"`model.{where}` ({kind}) returned {structure.describe(h)}, not one array: the block contract needs "
            "each of `embed` and the blocks to return one array h (batch first). If it returns extras "
            "(e.g. (h, aux)), wrap it in a module whose __call__ returns h alone, e.g. "
            "`return self.block(h)[0]`."
        )
    if h.ndim == 0 or h.shape[0] != x.shape[0]:
        raise ValueError(
            f"`model.{where}` ({kind}) returned shape {tuple(h.shape)}, whose first axis is not the batch "
            f"({x.shape[0]}, the first axis of `x` of shape {x.shape}): every h_l must keep the batch as "
            f"its first axis (block contract). {_HINT_BATCH}"
        )


def _walk(program: engine.BlockProgram, arrays: engine.BlockArrays, x: jax.Array) -> Any:
    """The contract forward, one stage at a time, each checked (traceable; see `contract_forward`)."""
    h, first = x, True
    if program.embed is not None:
        embed = nnx.merge(program.embed, *arrays.embed, copy=True)
        h = _call("embed", embed, h, x, first)
        _check_h("embed", embed, h, x)
        first = False
    for seg in engine.segments(program, arrays):
        h_in = h
        for j in range(seg.period):
            params, rest = seg.params[j], seg.rest[j]
            if seg.scan:  # the run's first repeat stands for all: identical blocks, the same carry
                params, rest = jax.tree.map(lambda v: v[0], (params, rest))
            block = nnx.merge(seg.pattern[j], params, rest, copy=True)
            where = f"blocks[{seg.start + j}]"
            h = _call(where, block, h, x, first)
            _check_h(where, block, h, x)
            first = False
        if seg.scan and _struct(h) != _struct(h_in):
            raise ValueError(
                f"`model.blocks[{seg.start}:{seg.start + seg.n}]` are {seg.repeats} identical groups of "
                f"{seg.period} block(s), measured under lax.scan, but one group changes h from "
                f"{_struct(h_in)} to {_struct(h)}: a scanned run must keep h's shape and dtype. Pass "
                "scan=False (every block unrolled)."
            )
    if program.head is not None:
        head = nnx.merge(program.head, *arrays.head, copy=True)
        h = _call("head", head, h, x, first)
    return h


def contract_forward(plan_: Any, leaves: list, x: jax.Array) -> Any:
    """The shape of head(blocks[L-1](...blocks[0](embed(x)))) for the model of `plan_` (a
    `jaxvg.measure.plan.Plan`) and `leaves`, by one abstract pass (`jax.eval_shape`) that checks the
    contract at every stage.

    Raises:
      ValueError: the first stage that fails or breaks the contract (`model.blocks[i]` and its
        type): a call that fails (missing call arguments and call-time RNG get their fixes), an output
        that is not one array, an output without the batch as its first axis, a scanned run that
        changes h's shape.
    """
    return jax.eval_shape(lambda lv, x: _walk(plan_.program, plan_.assemble(*plan_.inputs(lv)), x), leaves, x)


# --------------------------------------------------------------------------------------------------
# The contract forward against model(x)
# --------------------------------------------------------------------------------------------------


def _compare(plan_: Any, leaves: list, x: jax.Array, precision: Any = "highest") -> None:
    model = engine.mode_view(plan_.rebuild(leaves), False)
    if not callable(model):
        return  # no __call__ of its own: the contract forward is the model
    xs = x[:COMPARE_EXAMPLES]
    n = xs.shape[0]
    with jax.default_matmul_precision(precision):
        try:
            want = model(xs)
        except Exception as err:  # noqa: BLE001
            raise ValueError(
                f"`model(x[:{n}])` raised {type(err).__name__}: {err}. The measures check once per model "
                "structure that model(x) equals the block-contract forward head(blocks[L-1](...blocks[0]"
                "(embed(x)))); make model(x) callable with `x` alone, or pass check_forward=False."
            ) from err
        h = xs
        for part in (contracts.embed_of(model), *model.blocks, contracts.head_of(model)):
            h = h if part is None else part(h)
    problem = _difference(want, h)
    if problem is not None:
        raise ValueError(
            f"`model(x)` differs from the block-contract forward head(blocks[L-1](...blocks[0](embed(x)))) "
            f"on the first {n} examples of `x`: {problem}. The measures differentiate the contract forward, "
            "so they would measure another function than the one the model computes. Typical causes: "
            "__call__ applies something outside `embed`, `blocks` and `head` (an activation or a scale "
            "before the head, a final norm, a skip connection around several blocks), or skips, repeats "
            "or reorders blocks. Move that computation into `embed`, a block or `head` (a head module "
            "can apply it), or pass check_forward=False if the difference is intended."
        )


def _difference(want: Any, got: Any) -> str | None:
    """Why two forward outputs differ beyond float rounding (sqrt(eps) of the output's scale), or None."""
    if jax.tree.structure(want) != jax.tree.structure(got):
        return f"model(x) returns {jax.tree.structure(want)}, the contract forward {jax.tree.structure(got)}"
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return f"output shapes {a.shape} (model(x)) and {b.shape} (contract forward)"
        if not np.issubdtype(a.dtype, np.inexact):
            if not np.array_equal(a, b):
                return "integer outputs differ"
            continue
        eps = float(np.finfo(np.result_type(a.dtype, np.float32)).eps)
        a64, b64 = a.astype(np.complex128 if np.iscomplexobj(a) else np.float64), b.astype(np.float64)
        fa, fb = np.isfinite(a64), np.isfinite(b64)
        if not np.array_equal(fa, fb) or not np.array_equal(a64[~fa], b64[~fb], equal_nan=True):
            return "their non-finite entries differ"
        if not fa.any():
            continue
        scale = max(
            float(np.max(np.abs(a64[fa]))), float(np.max(np.abs(b64[fb]))), float(np.finfo(np.float64).tiny)
        )
        err = float(np.max(np.abs(a64[fa] - b64[fb])))
        tol = math.sqrt(eps)
        if err > tol * scale:
            return (
                f"max |difference| {err:.3g} = {err / scale:.3g} of the output's scale {scale:.3g} "
                f"(float rounding allows {tol:.1g})"
            )
    return None


_CHECKED: weakref.WeakKeyDictionary[Any, set] = weakref.WeakKeyDictionary()


def check_forward(
    plan_: Any, leaves: list, x: jax.Array, *, compare: bool = True, precision: Any = "highest"
) -> None:
    """The block-contract checks of `contract_forward` and, with `compare`, the comparison of the
    contract forward with `model(x)` (evaluation view, `x[:COMPARE_EXAMPLES]`, eager, at the
    measure's matmul `precision`; equal within sqrt(eps) of the output's largest entry, the same non-finite
    entries), once per `plan_` (model structure and mode) and shape and dtype of `x`.

    Args:
      plan_: the model's `jaxvg.measure.plan.Plan`.
      leaves: the model's arrays (`plan.lookup`).
      x: the checked input batch.
      compare: also compare with `model(x)` (the measures' `check_forward`).
    Raises:
      ValueError: see `contract_forward`; `model(x)` that differs from the contract forward or that
        cannot be called with `x` alone (the message says why and how to fix or opt out).
    """
    key = (tuple(x.shape), jnp.dtype(x.dtype))
    try:
        done = _CHECKED.setdefault(plan_, set())
    except TypeError:
        done = set()
    if (key, compare) in done or (key, True) in done:
        return
    if (key, False) not in done:
        contract_forward(plan_, leaves, x)
        done.add((key, False))
    if compare:
        _compare(plan_, leaves, x, precision)
        done.add((key, True))


# --------------------------------------------------------------------------------------------------
# Inside the kernel: where the forward pass went non-finite
# --------------------------------------------------------------------------------------------------


def all_finite(h: Any) -> jax.Array:
    """() bool: every floating entry of `h` (an array or a pytree) is finite (traceable).

    As isfinite(Σ v·0) per leaf: v·0 is 0 for a finite entry and NaN for ±inf or NaN (XLA does not
    fold a float multiply by zero), so the sum is NaN exactly when an entry is not finite, and the
    check is one vectorised add-reduction. `jnp.all(jnp.isfinite(v))`, a reduction over booleans,
    took about 10 % of a depth-50 width-256 `gradient_flow` on CPU (one check per block)."""
    flags = [
        jnp.isfinite(jnp.sum(v * 0))
        for v in jax.tree.leaves(h)
        if jnp.issubdtype(jnp.result_type(v), jnp.inexact)
    ]
    return jnp.all(jnp.stack(flags)) if flags else jnp.ones((), bool)


def first_nonfinite(embed_ok: jax.Array, block_ok: jax.Array, out_ok: jax.Array | bool = True) -> jax.Array:
    """() int32: the first forward stage whose output has a NaN or an infinity, numbered as the
    blocks (0-based): i for block i (0 also when the embed's output h_0 is non-finite), L for the
    head (`out_ok` False with h_L finite), -1 when every stage is finite (traceable).

    Args:
      embed_ok: () bool, h_0 finite.   block_ok: (L,) bool, h_1..h_L finite.   out_ok: () bool.
    """
    depth = block_ok.shape[0]
    bad = ~block_ok
    first = jnp.where(jnp.any(bad), jnp.argmax(bad), jnp.where(out_ok, -1, depth))
    return jnp.where(embed_ok, first, 0).astype(jnp.int32)


def mark_nonfinite_forward(flow: Any, embed_ok: jax.Array, block_ok: jax.Array, out_ok: jax.Array) -> Any:
    """`flow` (a `GradientFlow` of one model, inside the kernel) with `forward_nonfinite_block` set and
    the fields that a non-finite forward pass makes meaningless set to NaN.

    `forward_nonfinite_block` = the first stage whose output has a NaN or an infinity, numbered as
    the blocks (0-based): i for block i (0 also when the embed's output h_0 is non-finite), L for
    the head (h_L finite, the output not), -1 when the forward pass is finite. When it is >= 0, every
    gradient field (`log10_act_grad`, `log10_param_grad`, `log10_kernel_grad`, `log10_gain`) is NaN:
    the backward pass starts from non-finite values, and a -inf there would claim an exactly zero
    gradient; `log10_dphi` and `dead_fraction` are NaN from that block on (earlier blocks ran on
    finite values and keep theirs). `loss` is kept as computed.

    Args:
      flow: the `GradientFlow` as computed.
      embed_ok: () bool, h_0 finite.   block_ok: (L,) bool, h_1..h_L finite.   out_ok: () bool.
    """
    depth = block_ok.shape[0]
    first = first_nonfinite(embed_ok, block_ok, out_ok)
    broken = first >= 0
    after = broken & (jnp.arange(depth) >= first)

    def nan_if(cond, a):
        return jnp.where(cond, jnp.nan, a)

    return flow.replace(
        log10_act_grad=nan_if(broken, flow.log10_act_grad),
        log10_param_grad=nan_if(broken, flow.log10_param_grad),
        log10_kernel_grad=nan_if(broken, flow.log10_kernel_grad),
        log10_gain=nan_if(broken, flow.log10_gain),
        log10_dphi=nan_if(after, flow.log10_dphi),
        dead_fraction=nan_if(after, flow.dead_fraction),
        forward_nonfinite_block=first,
    )
