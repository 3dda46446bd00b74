"""Gradients at marked points of any NNX model: `tap` marks a value, `tapped_gradients` measures.

For models that do not follow the block contract (`jaxvg.nn.contracts.BlockModel`): a loop over a
stacked parameter, a model with branches, any `__call__`. `tap(self, name, value)` in the forward
pass is a no-op outside a capture; `tapped_gradients(fn, model, *args)` runs `fn` under
`nnx.capture(..., nnx.Perturbation)` and returns, for every tap, the log10 Frobenius norm of
d(fn)/d(value) and whether that gradient underflowed, in one backward pass.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct

from jaxvg.measure import engine, lognorm, plan, tap_layers, validate

__all__ = ["TapGradient", "tap", "tapped_gradients"]


@struct.dataclass
class TapGradient:
    """Gradient at one tap.

    Attributes:
      log10_grad_norm: () log10 of the Frobenius norm of d(fn)/d(tapped value) (-inf when zero).
      underflowed: () bool, True when every entry is zero or subnormal (below the dtype's `tiny`).
    """

    log10_grad_norm: jax.Array
    underflowed: jax.Array


def tap(module: nnx.Module, name: str, value: Any) -> Any:
    """Mark `value` inside `module.__call__` so that `tapped_gradients` reports d(fn)/d(value).

    Returns `value` unchanged (plus a zero perturbation under `nnx.capture`, via `Module.perturb`);
    outside a capture it is a no-op and emits no warning, so it can stay in the normal forward path.
    Use the returned value downstream. Calling `tap` twice with the same name in the same module adds
    the two gradients.

    Args:
      module: the module whose `__call__` is running (usually `self`).
      name: tap name, unique within the module.
      value: the array (or pytree) to tap.
    Returns:
      `value` (under capture: value + perturbation, numerically equal).
    Raises:
      TypeError: `module` is not an NNX module, or `name` not a string.

    Example:
      In a module's `__call__`, `h = tap(self, "h", h)` (see `tapped_gradients`). Outside a capture
      it returns `value` itself:

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxvg import measure
      >>> measure.tap(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), "h", jnp.ones(2)).tolist()
      [1.0, 1.0]
    """
    if not isinstance(module, nnx.Module):
        raise TypeError(f"`module` must be an nnx.Module (usually `self`), got {type(module).__name__}.")
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str, got {name!r}.")
    if "__captures__" not in vars(module):
        return value
    tap_layers.record(name, value)  # per-layer entries of taps inside a scan over layers
    return module.perturb(name, value)


_KERNELS: collections.OrderedDict[Any, Callable] = collections.OrderedDict()


def _tapped_kernel(structure: Any, rebuild: Callable[[list], Any], fn: Callable, precision: str) -> Callable:
    """The compiled tapped-gradient kernel of one model structure (see `plan.flatten`), `fn` and
    `precision`, cached (`rebuild` is determined by `structure`)."""
    key = (structure, fn, precision)
    try:
        kernel = _KERNELS.get(key)
    except TypeError:  # unhashable static attributes: compile per call
        return _make_kernel(rebuild, fn, precision)
    if kernel is None:
        kernel = _KERNELS.setdefault(key, _make_kernel(rebuild, fn, precision))
        while len(_KERNELS) > 64:
            _KERNELS.popitem(last=False)
    return kernel


def _make_kernel(rebuild: Callable[[list], Any], fn: Callable, precision: str) -> Callable:
    def kernel(leaves, args):
        with jax.default_matmul_precision(precision):

            def run(perts):
                m = rebuild(leaves)  # built inside the trace: capture may mutate it
                init = perts if perts else None
                out, _ = nnx.capture(fn, nnx.Perturbation, init=init)(m, *args)
                return out

            def first_pass():
                return nnx.capture(fn, nnx.Perturbation)(rebuild(leaves), *args)

            with tap_layers.recording() as recorded:
                _, shapes = jax.eval_shape(first_pass)
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            out, grads = jax.value_and_grad(run)(zeros)
        flat = nnx.to_flat_state(grads)
        result = {}
        for path, var in flat:
            g = var[...] if isinstance(var, nnx.Variable) else var
            leaves_g = jax.tree.leaves(g)
            tiny = min(jnp.finfo(v.dtype).tiny for v in leaves_g)
            k = tap_layers.scan_axes(str(path[-1]), leaves_g[0].shape, recorded)  # scanned layers
            norms, under = lognorm.log10_norm(leaves_g, k), lognorm.max_abs(leaves_g, k) < tiny
            for idx, name in tap_layers.entries(path, leaves_g[0].shape[:k]):
                result[name] = TapGradient(log10_grad_norm=norms[idx], underflowed=under[idx])
        return out, result

    return jax.jit(kernel)


def tapped_gradients(
    fn: Callable[..., jax.Array], model: nnx.Module, *args: Any, precision: Any = "highest"
) -> dict[str, TapGradient]:
    """Log10 gradient norms of a scalar `fn(model, *args)` at every `tap`, in one backward pass.

    For models that are not block-structured: call `tap(self, name, value)` in their `__call__`.
    `fn` runs under `nnx.capture(..., nnx.Perturbation)` on a copy of the model merged inside the
    trace; a first abstract pass (`jax.eval_shape`) gives the perturbation shapes, then one
    `jax.value_and_grad` with respect to the zero perturbations gives d(fn)/d(tap) for all taps. This
    is the plain float gradient (no renormalisation): `underflowed` says when it is zero or subnormal,
    instead of a silent -inf. The compiled program is cached per model structure and shapes, `fn`
    and `precision`: a second call flattens the model once and dispatches it.

    Args:
      fn: `fn(model, *args) -> scalar`, e.g. a loss. Pass the same function object to reuse the
        compiled program.
      model: any NNX module with taps (not mutated).
      *args: further arguments of `fn` (arrays).
      precision: matmul precision of `fn`'s matmuls inside the measurement (default "highest"; see
        `gradient_flow`); keyword only.
    Returns:
      dict from tap path ("module/path/name", e.g. "layers/3/h") to `TapGradient`
      (`log10_grad_norm` in decades, `underflowed` bool). A tap inside a block that `nnx.scan`
      (or `nnx.vmap`) runs over stacked layers gets one entry per layer, the layer index after the
      stacked module's path ("layers/0/h", "layers/1/h", ...; `jaxvg.measure.tap_layers`).
    Raises:
      TypeError: `fn` not callable or `model` not an NNX module.
      ValueError: the model has no taps; a NaN/Inf in a floating array of `args`; an invalid
        `precision`.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxvg import measure
      >>> class Net(nnx.Module):
      ...     def __call__(self, x):
      ...         h = measure.tap(self, "h", 3 * x)
      ...         return jnp.sum(h**2)
      >>> g = measure.tapped_gradients(lambda m, x: m(x), Net(), jnp.ones(2))
      >>> round(float(g["h"].log10_grad_norm), 4), bool(g["h"].underflowed)  # ||2 h|| = 6 sqrt(2)
      (0.9287, False)
    """
    if not callable(fn):
        raise TypeError(f"`fn` must be callable as fn(model, *args) -> scalar, got {fn!r}.")
    if not isinstance(model, nnx.Module):
        raise TypeError(f"`model` must be an nnx.Module, got {type(model).__name__}.")
    precision = engine.check_precision(precision)
    for i, a in enumerate(args):
        validate.check_finite(f"args[{i}]", a)
    _, structure, leaves, rebuild = plan.flatten(model)
    _, result = _tapped_kernel(structure, rebuild, fn, precision)(leaves, args)
    result = tap_layers.in_order(result)
    if not result:
        raise ValueError(
            f"`model` ({type(model).__name__}) has no taps: call `jaxvg.measure.tap(self, name, value)` "
            "in its __call__ (or a submodule's)."
        )
    return result
