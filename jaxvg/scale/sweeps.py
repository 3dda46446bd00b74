"""Sweeps that scale: many nets in one compiled program, sharded over devices.

A sweep is a grid of cells (seeds, sigma_w2, sigma_b2, learning rates, depths, widths, activations).
Cells whose arrays have the same shapes share one compiled program: jaxvg stacks their parameters
along a leading *nets* axis, `jax.vmap`s a per-net function over it inside a device, and shards that
axis over every local device (`map_nets`). Depths join one program by padding every net to the
largest depth with blocks masked to the identity (`pad_depth_mask`, `masked_forward`); widths and
activations form separate shape groups (`shape_groups`), one program each.

A program that is already `jax.jit(jax.vmap(...))` (jaxvg's `training.fit_stacked`) spreads over
the devices unchanged when its stacked inputs are placed with `shard_nets` (after `pad_nets`).

Large batches use data parallelism instead: `shard_batch` places a batch split along its first axis,
and a `jax.jit` train step over it gets its gradient reduction (an all-reduce) from XLA.

Memory: a sweep of N nets of width W and depth L holds about N·L·W² parameters, times
(2 + optimizer slots) for parameters, gradients and optimizer state, plus N·B·L·W activations kept
for the backward pass. `estimate_bytes` computes it from shapes and `check_fits` raises a
ValueError before anything is allocated when it exceeds the device (or, on CPU, host) memory.

Compile once, run many times: `enable_compilation_cache` turns on JAX's persistent on-disk cache
for every program, however small.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxvg.scale import sweeps
  >>> cells = sweeps.grid(width=[8, 16], sigma_w2=[1.0, 2.0])
  >>> [sweeps.cell_key(c) for c in cells]
  ['sigma_w2=1.0,width=8', 'sigma_w2=2.0,width=8', 'sigma_w2=1.0,width=16', 'sigma_w2=2.0,width=16']
  >>> {k: len(v) for k, v in sweeps.shape_groups(cells, by=("width",)).items()}
  {(8,): 2, (16,): 2}
  >>> sigma_w2 = jnp.array([c["sigma_w2"] for c in cells])
  >>> sweeps.map_nets(lambda s: s * jnp.ones(3), sigma_w2).shape   # 4 nets, whatever the devices
  (4, 3)
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxvg import checks

__all__ = [
    "MemoryEstimate",
    "available_bytes",
    "cell_key",
    "check_fits",
    "data_parallel_sharding",
    "enable_compilation_cache",
    "estimate_bytes",
    "grid",
    "local_mesh",
    "map_nets",
    "masked_forward",
    "pad_depth_mask",
    "pad_nets",
    "shape_groups",
    "shard_batch",
    "shard_nets",
]


# ----------------------------------------------------------------------------------------------
# Grids and shape groups
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Depth padding
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Many nets over devices
# ----------------------------------------------------------------------------------------------


def local_mesh(axis_name: str = "nets") -> Mesh:
    """A 1-D mesh over all local devices, axis type Auto.

    `jax.make_mesh` makes Explicit axes by default (sharding then becomes part of every array's
    type); jaxvg asks for Auto so that plain `jax.jit` code works on the mesh unchanged.

    Args:
      axis_name: the mesh axis name.
    Returns:
      `jax.sharding.Mesh` of shape (jax.local_device_count(),).

    Example:
      >>> local_mesh().axis_names
      ('nets',)
    """
    devices = jax.local_devices()
    return jax.make_mesh((len(devices),), (axis_name,), axis_types=(AxisType.Auto,), devices=devices)


def map_nets(
    fn: Callable[..., Any],
    *stacked_args: Any,
    shared: tuple[Any, ...] = (),
    mesh: Mesh | None = None,
    axis_name: str = "nets",
) -> Any:
    """`jax.vmap(fn)` over a leading nets axis, with that axis sharded over devices.

    Computes `out[i] = fn(*[a[i] for a in stacked_args], *shared)` for every net i, like
    `jax.vmap(fn)(*stacked_args)`, as one compiled program: each device runs `vmap(fn)` on its own
    block of nets (`jax.shard_map` over the mesh axis `axis_name`), with no communication between
    devices. Results equal the unsharded `jax.jit(jax.vmap(fn))`: tested at rtol 1e-6 in float64
    on 8 devices, gradients included (measured 0 to 3e-13). In float32 each device's program is
    compiled for its own block of nets, a different shape, and XLA may round differently: measured
    0 to 8.6e-6 relative.

    Padding: the nets axis is padded to a multiple of the mesh size with copies of net 0 (never
    NaN or zeros, so no padded net can raise a non-finite alarm or take another code path), and
    the padded nets are sliced off the results. They cost compute: 9 nets on 8 devices run as 16.

    Why `shard_map` and not `jit` with `NamedSharding` in/out shardings: both gave the same numbers
    in tests, but `shard_map` guarantees that every device runs exactly `vmap(fn)` on its local
    nets, whatever `fn` contains (QR, sorts, scatters, data-dependent while loops), where the
    automatic partitioner is free to insert collectives. `check_vma=False` because `fn` is a
    per-net function with no collectives: with the default `check_vma=True`, arrays that `fn`
    creates itself (zero biases, a `jnp.zeros` carry) are device-invariant and the transpose of
    their implicit broadcast is a `psum`, so gradients with respect to them came out summed over
    the devices (measured: wrong by 12.2 on 8 devices; tests/_multidevice_check.py checks it).

    Compilation is cached per (fn, mesh, axis_name) and argument shapes: pass the same `fn`
    object each time (build it once with `functools.partial`, not a fresh lambda per call).

    Args:
      fn: pure per-net function; takes one slice of each stacked argument, then the shared
        arguments, and returns a pytree of arrays.
      *stacked_args: pytrees whose leaves all have the same leading size (the number of nets,
        >= 1): stacked parameters, optimizer states, PRNG key arrays, sigma grids, masks.
      shared: pytrees passed whole to every net (data, a monitor batch); replicated on devices.
      mesh: a mesh with axis `axis_name` (other axes are ignored, i.e. replicated over); default
        `local_mesh(axis_name)`, all local devices. For several hosts pass a global mesh
        (`jaxvg.scale.distributed.global_mesh`), global arrays (`jaxvg.scale.distributed.global_array`) and
        a number of nets divisible by the global device count (tested with 2 processes; padding
        of global arrays is not).
      axis_name: name of the mesh axis that carries the nets.
    Returns:
      `jax.vmap(fn)(*stacked_args)`'s pytree: every leaf with leading size nets, sharded over the
      mesh axis.
    Raises:
      ValueError: if there are no stacked arguments, a leaf has no leading axis, leading sizes
        differ, or the mesh has no axis `axis_name`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> def loss_grad(w, x):
      ...     return jax.grad(lambda w: jnp.sum(jnp.tanh(x @ w) ** 2))(w)
      >>> ws = jnp.stack([jnp.eye(2), 2 * jnp.eye(2), 3 * jnp.eye(2)])   # 3 nets
      >>> map_nets(loss_grad, ws, shared=(jnp.ones((4, 2)),)).shape
      (3, 2, 2)
    """
    if not stacked_args:
        raise ValueError("`stacked_args` must hold at least one array with a leading nets axis, got none.")
    if not isinstance(shared, tuple):
        raise ValueError(f"`shared` must be a tuple of pytrees, got {type(shared).__name__}.")
    mesh = local_mesh(axis_name) if mesh is None else mesh
    if axis_name not in mesh.axis_names:
        raise ValueError(f"`axis_name` must be an axis of `mesh` {mesh.axis_names}, got {axis_name!r}.")
    n = _leading_size(stacked_args)
    stacked_args, _ = pad_nets(stacked_args, mesh.shape[axis_name])
    pad = (-n) % mesh.shape[axis_name]
    out = _sharded_vmap(fn, mesh, axis_name, len(stacked_args), len(shared))(*stacked_args, *shared)
    if pad:
        out = jax.tree.map(lambda a: a[:n], out)
    return out


def _leading_size(stacked_args: tuple[Any, ...], name: str = "stacked_args") -> int:
    sizes = set()
    for i, arg in enumerate(stacked_args):
        for path, leaf in jax.tree_util.tree_leaves_with_path(arg):
            shape = jnp.shape(leaf)
            if not shape:
                raise ValueError(
                    f"`{name}[{i}]{jax.tree_util.keystr(path)}` must have a leading nets axis, got a "
                    f"scalar {leaf!r}; pass scalars shared by every net through `shared`."
                )
            sizes.add(shape[0])
    if not sizes:
        raise ValueError(f"`{name}` must contain at least one array, got only empty pytrees.")
    if len(sizes) > 1 or 0 in sizes:
        raise ValueError(
            f"`{name}` must all have the same leading size >= 1 (nets), got sizes {sorted(sizes)}."
        )
    return sizes.pop()


def pad_nets(stacked: Any, multiple: int) -> tuple[Any, int]:
    """Pad the leading nets axis of every leaf to a multiple of `multiple` with copies of net 0.

    Copies, never NaN or zeros: a padded net trains like net 0, so it cannot trip a non-finite
    check or take another code path. Slice the results back with `a[:n]`.

    Args:
      stacked: pytree whose leaves share a leading size n >= 1 (PRNG key arrays included).
      multiple: e.g. the number of devices, `jax.local_device_count()`.
    Returns:
      (padded pytree, n).
    Raises:
      ValueError: if `multiple` is not a positive int, or leaves lack a common leading axis.

    Example:
      >>> padded, n = pad_nets({"s": jnp.array([1.0, 2.0, 3.0])}, 4)
      >>> padded["s"], n
      (Array([1., 2., 3., 1.], dtype=float32), 3)
    """
    checks.positive_int("multiple", multiple)
    n = _leading_size((stacked,), "stacked")
    pad = (-n) % multiple
    if pad:
        stacked = jax.tree.map(lambda a: _pad_with_first(a, pad), stacked)
    return stacked, n


def shard_nets(stacked: Any, mesh: Mesh | None = None, axis_name: str = "nets") -> Any:
    """Place stacked nets on the devices, the leading nets axis split over the mesh axis.

    The way to spread a program that is already `jax.jit(jax.vmap(...))` over devices without
    changing it: jit follows its inputs' shardings, and XLA's partitioner splits the vmapped
    nets axis. With jaxvg's training, `training.fit_stacked(graphdef, *shard_nets((params, rest)),
    data, keys=shard_nets(keys), ...)` trains the nets on all devices; the compiled training
    program had no cross-device communication (XLA dump checked) and matched the one-device run
    (tests/_multidevice_check.py). Use `map_nets` for a per-net function of your own: it also pads
    and guarantees a communication-free program.

    Args:
      stacked: pytree whose leaves share a leading size divisible by the mesh axis size (pad
        with `pad_nets` first).
      mesh: default `local_mesh(axis_name)`.
      axis_name: mesh axis for the nets.
    Returns:
      The pytree of `jax.Array`s sharded as `PartitionSpec(axis_name)`.
    Raises:
      ValueError: if the leading size is not divisible by the devices on `axis_name` (the
        message says to use `pad_nets`), or the mesh lacks `axis_name`.

    Example:
      >>> shard_nets(jnp.ones((4, 2))).sharding.spec
      P('nets',)
    """
    mesh = local_mesh(axis_name) if mesh is None else mesh
    if axis_name not in mesh.axis_names:
        raise ValueError(f"`axis_name` must be an axis of `mesh` {mesh.axis_names}, got {axis_name!r}.")
    n = _leading_size((stacked,), "stacked")
    n_dev = mesh.shape[axis_name]
    if n % n_dev:
        raise ValueError(
            f"`stacked` must have a leading nets size divisible by the {n_dev} devices, got {n}; "
            f"pad it first: `stacked, n = sweeps.pad_nets(stacked, {n_dev})`, and slice results with [:n]."
        )
    return jax.device_put(stacked, NamedSharding(mesh, P(axis_name)))


def _pad_with_first(a: jax.Array, pad: int) -> jax.Array:
    a = jnp.asarray(a)
    first = jnp.broadcast_to(a[:1], (pad, *a.shape[1:]))
    return jnp.concatenate([a, first], axis=0)


@functools.lru_cache(maxsize=256)
def _sharded_vmap(
    fn: Hashable, mesh: Mesh, axis_name: str, n_stacked: int, n_shared: int
) -> Callable[..., Any]:
    in_specs = (P(axis_name),) * n_stacked + (P(),) * n_shared
    body = jax.shard_map(
        jax.vmap(fn, in_axes=(0,) * n_stacked + (None,) * n_shared),
        mesh=mesh,
        in_specs=in_specs,
        out_specs=P(axis_name),
        check_vma=False,
    )
    return jax.jit(body)


# ----------------------------------------------------------------------------------------------
# Data parallelism
# ----------------------------------------------------------------------------------------------


def data_parallel_sharding(mesh: Mesh | None = None, axis_name: str = "batch") -> NamedSharding:
    """Sharding that splits an array's first (batch) axis over the mesh axis `axis_name`.

    Place a batch with it (`shard_batch`) and keep parameters replicated; a `jax.jit` train step
    then computes each device's share of the per-example work, and XLA inserts the all-reduce
    that sums the gradient. Same numbers as one device to float rounding (the sum is taken in a
    different order).

    Args:
      mesh: mesh with axis `axis_name`; default a 1-D mesh of all local devices.
      axis_name: the mesh axis for the batch.
    Returns:
      `NamedSharding(mesh, PartitionSpec(axis_name))`.
    Raises:
      ValueError: if the mesh has no axis `axis_name`.

    Example:
      >>> data_parallel_sharding().spec
      P('batch',)
    """
    mesh = local_mesh(axis_name) if mesh is None else mesh
    if axis_name not in mesh.axis_names:
        raise ValueError(f"`axis_name` must be an axis of `mesh` {mesh.axis_names}, got {axis_name!r}.")
    return NamedSharding(mesh, P(axis_name))


def shard_batch(batch: Any, mesh: Mesh | None = None, axis_name: str = "batch") -> Any:
    """Place every leaf of `batch` on the devices, split along its first axis.

    Args:
      batch: pytree of arrays with a common leading batch size divisible by the number of
        devices on `axis_name` (a batch is never padded: padding would change a mean loss).
      mesh: default all local devices.
      axis_name: mesh axis to split over.
    Returns:
      The same pytree of `jax.Array`s with `data_parallel_sharding(mesh, axis_name)`.
    Raises:
      ValueError: if a leaf is a scalar or the batch size is not divisible by the device count.

    Example:
      >>> x = shard_batch(jnp.ones((8, 3)))
      >>> x.shape, x.sharding.spec
      ((8, 3), P('batch',))
    """
    sharding = data_parallel_sharding(mesh, axis_name)
    n_dev = sharding.mesh.shape[axis_name]
    for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
        shape = jnp.shape(leaf)
        if not shape or shape[0] % n_dev:
            raise ValueError(
                f"`batch{jax.tree_util.keystr(path)}` must have a leading batch size divisible by the "
                f"{n_dev} devices, got shape {shape}; choose a batch size that is a multiple of {n_dev}."
            )
    return jax.device_put(batch, sharding)


# ----------------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------------


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
    and optimizer state it came out 1.1-1.6x larger (tests hold it within 2x); `check_fits`'
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
    device = jax.local_devices()[0] if device is None else device
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        free = int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        return free, f"{device.platform.upper()} memory_stats"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "host MemAvailable (/proc/meminfo)"
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "host available pages (os.sysconf)"


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


# ----------------------------------------------------------------------------------------------
# Persistent compilation cache
# ----------------------------------------------------------------------------------------------


def enable_compilation_cache(
    path: str | os.PathLike[str] = ".jax_cache",
    *,
    min_compile_time_secs: float = 0.0,
    min_entry_size_bytes: int = 0,
) -> str:
    """Turn on JAX's persistent compilation cache in `path` for every program, however small.

    Sets `jax_compilation_cache_dir`, `jax_persistent_cache_min_compile_time_secs` (JAX's default,
    1 s, would skip most of jaxvg's small programs) and `jax_persistent_cache_min_entry_size_bytes`.
    A later process with the same jax version, device and program loads the executable instead of
    compiling it. Call it at startup, before the first `jit` compiles (programs compiled before
    are not written). The same works without code: set the environment variables
    JAX_COMPILATION_CACHE_DIR=path and JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0.

    The cache is trusted code: do not point it at a directory others can write.

    Args:
      path: cache directory (created if missing).
      min_compile_time_secs: only programs that took at least this long to compile are cached.
      min_entry_size_bytes: only executables at least this large are cached.
    Returns:
      The absolute cache path.
    Raises:
      ValueError: if a minimum is negative.
    """
    checks.nonnegative("min_compile_time_secs", min_compile_time_secs)
    checks.nonnegative_int("min_entry_size_bytes", min_entry_size_bytes)
    path = os.path.abspath(os.fspath(path))
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", int(min_entry_size_bytes))
    return path
