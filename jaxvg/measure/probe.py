"""`Probe`: a measurement handle on one model, its structure read once, its arrays at every call.

The plain functions (`gradient_flow`, `jacobian_norms`, `jacobian_spectrum`,
`signal_propagation`) check at every call,
by object identity, that the model's structure is the one they cached (well under 1 us per module,
never stale; `jaxvg.measure.plan`). A `Probe` skips even that: built once, it keeps the model's
`nnx.Variable` objects in order and reads their current values at each call, the way
`nnx.jit_partial` does. Training the
model in place (`optimizer.update(model, grads)`, `nnx.update`, `variable[...] = ...`) is seen;
changing its structure afterwards (replacing a block or a Variable object, adding blocks) is not:
build a new probe then. Both share the per-structure cache of `jaxvg.measure.plan`.

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> import jaxvg
  >>> from jaxvg import measure
  >>> model = jaxvg.MLP(4, 8, 3, 1, rngs=nnx.Rngs(0))
  >>> probe = measure.Probe(model)
  >>> x, y = jnp.ones((5, 4)), jnp.zeros((5, 1))
  >>> before = probe.gradient_flow(x, y).log10_act_grad
  >>> model.blocks[0].linear.kernel[...] = 2 * model.blocks[0].linear.kernel[...]  # in place
  >>> bool((probe.gradient_flow(x, y).log10_act_grad != before).any())
  True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

from jaxvg.measure import engine, flow, jacobians, plan, signal, validate
from jaxvg.nn import contracts

__all__ = ["Probe"]


class Probe:
    """Measure one model repeatedly with O(1) Python work per call (see the module docstring).

    Args:
      model: a block model (`contracts.BlockModel`); never mutated.
      scan: "auto", True or False (see `jaxvg.measure.gradient_flow`), fixed for the probe.
    Raises:
      TypeError: `model` does not follow the block contract.
      ValueError: an invalid `scan`.
    """

    def __init__(self, model: contracts.BlockModel, *, scan: Any = "auto"):
        validate.check_model(model)
        self._tied = validate.tied_message(model)  # gradient_flow refuses tied blocks
        self._threshold = engine.check_scan(scan)
        self.model = model
        self._bound = plan.Bound(model)
        self._plans: dict[bool, plan.Plan] = {}
        self._plan(False, self._leaves())

    def _leaves(self) -> list:
        if self._bound.readable or self._bound.first_leaves is not None:
            return self._bound.leaves()
        return plan.flatten(self.model)[2]  # modules that are not pytrees: flatten per call

    def _plan(self, train: bool, leaves: list) -> plan.Plan:
        p = self._plans.get(train)
        if p is None:
            p = self._plans[train] = self._bound.plan(train, self._threshold, leaves)
        return p

    def gradient_flow(
        self,
        x: jax.Array,
        y: Any = None,
        *,
        loss: flow.LossArg = "mse",
        train: bool = False,
        key: jax.Array | None = None,
        precision: Any = "highest",
    ) -> flow.GradientFlow:
        """`jaxvg.measure.gradient_flow(model, x, y, ...)` of the probe's model (same arguments)."""
        if not isinstance(train, bool):
            raise TypeError(f"`train` must be a bool, got {train!r}.")
        if self._tied is not None:
            raise ValueError(self._tied)
        leaves = self._leaves()
        return flow.planned_flow(
            self._plan(train, leaves), leaves, x, y, loss=loss, train=train, key=key, precision=precision
        )

    def jacobian_norms(
        self,
        x: jax.Array,
        *,
        method: str = "exact",
        num_probes: int = 16,
        key: jax.Array | None = None,
        precision: Any = "highest",
    ) -> jacobians.JacobianNorms:
        """`jaxvg.measure.jacobian_norms(model, x, ...)` of the probe's model (same arguments)."""
        leaves = self._leaves()
        return jacobians.planned_norms(
            self._plan(False, leaves), leaves, x, method=method, num_probes=num_probes, key=key,
            precision=precision,
        )  # fmt: skip

    def jacobian_spectrum(
        self, x: jax.Array, *, layers: Sequence[int] = (0,), precision: Any = "highest"
    ) -> jacobians.JacobianSpectrum:
        """`jaxvg.measure.jacobian_spectrum(model, x, ...)` of the probe's model (same arguments)."""
        leaves = self._leaves()
        return jacobians.planned_spectrum(
            self._plan(False, leaves), leaves, x, layers=layers, precision=precision
        )

    def signal_propagation(
        self,
        x: jax.Array,
        *,
        train: bool = False,
        key: jax.Array | None = None,
        precision: Any = "highest",
        rank: bool = True,
    ) -> signal.SignalFlow:
        """`jaxvg.measure.signal_propagation(model, x, ...)` of the probe's model (same arguments)."""
        validate.check_mode(train, key, False)
        leaves = self._leaves()
        return signal.planned_signal(
            self._plan(train, leaves), leaves, x, train=train, key=key, precision=precision, rank=rank
        )
