"""Memory of a sweep, from shapes alone, checked against the device before anything is allocated.

A sweep of N nets of width W and depth L holds about N·L·W² parameters, times (2 + optimizer
slots) for parameters, gradients and optimizer state, plus N·B·L·W activations kept for the
backward pass. `estimate_bytes` computes it from shapes and `check_fits` raises a ValueError before
anything is allocated when it exceeds the device's free memory (on CPU, the host's available
memory; `available_bytes`).

Example:
  >>> from jaxvg import scale
  >>> est = scale.estimate_bytes(64, 128, 10, 32, in_features=8, out_features=1)
  >>> est.total == est.params_bytes + est.gradients_bytes + est.optimizer_bytes + est.activations_bytes
  True
  >>> scale.check_fits(est)   # about 0.16 GiB: fits, returns None
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxvg import checks

__all__ = ["MemoryEstimate", "available_bytes", "check_fits", "estimate_bytes"]


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a sweep of stacked MLPs needs on one device, by kind, and the shapes it was made from.

    Attributes:
      n_nets, width, depth, batch, in_features, out_features, dtype, optimizer_slots: the request.
      n_devices: devices the nets axis is split over (the estimate is per device).
      params_bytes: parameters of the nets on one device.
      gradients_bytes: one gradient per parameter.
      optimizer_bytes: optimizer_slots copies of the parameters (sgd 0, momentum 1, adam 2).
      activations_bytes: what the backward pass keeps: per net and block, the block input and
        the pre-activation, (batch, width) each, plus input and output.
    """

    n_nets: int
    width: int
    depth: int
    batch: int
    in_features: int
    out_features: int
    dtype: str
    optimizer_slots: int
    n_devices: int
    params_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int

    @property
    def total(self) -> int:
        """Total bytes per device."""
        return self.params_bytes + self.gradients_bytes + self.optimizer_bytes + self.activations_bytes

    @property
    def per_net(self) -> float:
        """Bytes one net adds on a device."""
        return self.total / math.ceil(self.n_nets / self.n_devices)


def estimate_bytes(
    n_nets: int,
    width: int,
    depth: int,
    batch: int,
    *,
    in_features: int,
    out_features: int,
    dtype: Any = jnp.float32,
    optimizer_slots: int = 2,
    n_devices: int = 1,
) -> MemoryEstimate:
    """Memory for training `n_nets` stacked MLPs together, per device, from shapes alone.

    Per net, P = in·W + W + (L−1)(W² + W) + W·out + out parameters (kernels and biases of L blocks
    and the head); parameters, gradients and `optimizer_slots` optimizer copies take
    (2 + slots)·P·itemsize bytes; the backward pass keeps about B·(in + 2·L·W + out) activations.
    So memory scales as nets × width² × depth (parameters) plus nets × batch × width × depth
    (activations): doubling the width quarters the nets that fit. The nets axis is split over
    `n_devices` (padded up, as `map_nets` does). It is an estimate from shapes, on the safe side:
    against XLA's own memory analysis of a compiled, vmapped adam step with donated parameters
    and optimizer state it came out 1.1-1.6x larger, always within 2x; `check_fits`'
    `fraction` leaves a further margin.

    Args:
      n_nets: nets in the sweep group (seeds × grid cells), >= 1.
      width: units per block W. depth: blocks L. batch: examples per step B (per net).
      in_features, out_features: input and output dimensions.
      dtype: parameter and activation dtype (float32: 4 bytes, bfloat16: 2, float64: 8).
      optimizer_slots: optimizer arrays per parameter: sgd 0, sgd+momentum 1, adam/adamw 2.
      n_devices: devices the nets are sharded over.
    Returns:
      A `MemoryEstimate`; `.total` is the bytes per device.
    Raises:
      ValueError: a size is not a positive integer, `optimizer_slots` is negative, or `dtype` is
        not a floating dtype.

    Example:
      >>> est = estimate_bytes(1000, 256, 10, 128, in_features=10, out_features=10)
      >>> round(est.total / 2**30, 2)   # GiB; 0.6e9 params x 4 arrays (adam) x 4 bytes = 8.9 GiB, + activations
      11.35
    """
    for name, value in [
        ("n_nets", n_nets),
        ("width", width),
        ("depth", depth),
        ("batch", batch),
        ("in_features", in_features),
        ("out_features", out_features),
        ("n_devices", n_devices),
    ]:
        checks.positive_int(name, value)
    checks.nonnegative_int("optimizer_slots", optimizer_slots)
    dt = jnp.dtype(dtype)
    if not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"`dtype` must be a floating dtype, got {dtype!r}.")
    item = dt.itemsize
    local_nets = math.ceil(n_nets / n_devices)
    params = (
        in_features * width
        + width
        + (depth - 1) * (width * width + width)
        + width * out_features
        + out_features
    )
    acts = batch * (in_features + 2 * depth * width + out_features)
    return MemoryEstimate(
        n_nets=n_nets,
        width=width,
        depth=depth,
        batch=batch,
        in_features=in_features,
        out_features=out_features,
        dtype=dt.name,
        optimizer_slots=optimizer_slots,
        n_devices=n_devices,
        params_bytes=local_nets * params * item,
        gradients_bytes=local_nets * params * item,
        optimizer_bytes=local_nets * optimizer_slots * params * item,
        activations_bytes=local_nets * acts * item,
    )


def available_bytes(device: jax.Device | None = None) -> tuple[int, str]:
    """Memory free for new arrays on `device`, and where the number comes from.

    Accelerators report `memory_stats()` (bytes_limit − bytes_in_use). CPU devices report None:
    their arrays live in host memory, so the host's available memory is used (MemAvailable from
    /proc/meminfo, else os.sysconf's available physical pages).

    Args:
      device: default `jax.local_devices()[0]`.
    Returns:
      (bytes, source), source a short description such as "GPU memory_stats" or "host MemAvailable".
    """
    return checks.available_memory(device=device)


def check_fits(
    estimate: MemoryEstimate | int, device: jax.Device | None = None, fraction: float = 0.8
) -> None:
    """Raise a ValueError, before anything is allocated, if `estimate` exceeds fraction × free memory.

    Args:
      estimate: a `MemoryEstimate` (from `estimate_bytes`) or a byte count, per device.
      device: the device to compare with; default `jax.local_devices()[0]`; on CPU the host's
        available memory (see `available_bytes`).
      fraction: share of the free memory the sweep may use, in (0, 1].
    Returns:
      None when it fits.
    Raises:
      ValueError: if it does not fit; the message gives the request, the estimate, the free
        memory and how to shrink (fewer nets per group, smaller batch or width, fewer optimizer
        slots, a smaller dtype, more devices). Also for a bad `fraction` or `estimate`.

    Example:
      >>> check_fits(estimate_bytes(8, 32, 4, 16, in_features=4, out_features=1))   # fits
    """
    checks.in_range("fraction", fraction, 0.0, 1.0, high_inclusive=True)
    if fraction == 0.0:
        raise ValueError(f"`fraction` must lie in (0, 1], got {fraction!r}.")
    if isinstance(estimate, MemoryEstimate):
        total = estimate.total
    elif isinstance(estimate, int | np.integer) and not isinstance(estimate, bool) and estimate >= 0:
        total = int(estimate)
    else:
        raise ValueError(f"`estimate` must be a MemoryEstimate or a byte count >= 0, got {estimate!r}.")
    free, source = available_bytes(device)
    budget = fraction * free
    if total <= budget:
        return
    gib = 2.0**30
    msg = (
        f"sweep needs about {total / gib:.2f} GiB per device but only {budget / gib:.2f} GiB may be "
        f"used ({fraction:g} x {free / gib:.2f} GiB free, {source})."
    )
    if isinstance(estimate, MemoryEstimate):
        e = estimate
        fit = max(int(budget // e.per_net) * e.n_devices, 0)
        msg += (
            f" Asked: {e.n_nets} nets of width {e.width}, depth {e.depth}, batch {e.batch} "
            f"({e.in_features} -> {e.out_features}), {e.dtype}, {e.optimizer_slots} optimizer slots, on "
            f"{e.n_devices} device(s): parameters {e.params_bytes / gib:.2f} GiB, gradients "
            f"{e.gradients_bytes / gib:.2f} GiB, optimizer {e.optimizer_bytes / gib:.2f} GiB, activations "
            f"{e.activations_bytes / gib:.2f} GiB. Memory grows as nets x width^2 x depth (+ nets x batch x "
            f"width x depth): run at most {fit} nets per program (split the group), or shrink the width, "
            f"depth or batch, use sgd (0 slots) or bfloat16, or shard over more devices."
        )
    else:
        msg += " Shrink the sweep: fewer nets per program, smaller width, depth or batch, or more devices."
    raise ValueError(msg)
