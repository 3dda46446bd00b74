"""Stacks of networks: N modules of one architecture as one state with a leading nets axis.

`nnx.split(model, nnx.Param, ...)` gives (graphdef, params, rest); a stack keeps one `graphdef` and
stacks every leaf of `params` and `rest` along a new leading axis of size N, the form that
`fit_stacked` trains under `jax.vmap`. Nets of a stack may differ in any array (initial weights, a
sigma_w2 grid, batch statistics, RNG state, the active depth of `MLP(..., max_depth=...)`), not in
static structure: two modules stack when their graphdefs are equal.

Data order: net i's minibatches derive from a PRNG key, `data_key(seed)` = fold_in(key(seed),
0x5EEDDA7A) for an int seed, so that seed s of a vmapped `fit(..., seeds=[...])` draws the same
batches as a lone `fit(..., key=s)`.

Example:
  >>> from flax import nnx
  >>> import jaxvg
  >>> from jaxvg.train import stacking
  >>> nets = [jaxvg.MLP(2, 4, 3, 1, init="gaussian", sigma_w2=s, rngs=nnx.Rngs(0)) for s in (1.0, 2.0)]
  >>> graphdef, params, rest = stacking.stack_models(nets)
  >>> params["blocks"][0]["linear"]["kernel"].shape
  (2, 2, 4)
  >>> len(stacking.unstack_models(graphdef, params, rest))
  2
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["check_seeds", "data_key", "data_keys", "init_stacked", "is_key", "stack_models", "unstack_models"]

DATA_SALT = 0x5EEDDA7A  # data-order key = fold_in(key(seed), DATA_SALT); never an init fold_in count


def stack_models(models: Sequence[nnx.Module]) -> tuple[nnx.GraphDef, Any, Any]:
    """Split modules of one architecture and stack their states along a new leading nets axis.

    Returns:
      (graphdef, params, rest) for `fit_stacked`: the shared graphdef, the stacked `nnx.Param`
      state and the stacked remaining state; every leaf has shape (N, *leaf shape).
    Raises:
      ValueError: an empty list, or modules whose graphdefs (architecture, static attributes,
        shapes) differ.
    """
    if len(models) == 0:
        raise ValueError("`models` must hold at least one module, got an empty sequence.")
    splits = [nnx.split(m, nnx.Param, ...) for m in models]
    graphdef = splits[0][0]
    for i, (g, _, _) in enumerate(splits):
        if g != graphdef:
            raise ValueError(
                f"`models[{i}]` has a different graphdef from `models[0]`: stack only one architecture "
                "(same layer sizes and the same static attributes)."
            )
    shapes = [jax.tree.map(jnp.shape, s[1:]) for s in splits]
    for i, s in enumerate(shapes):
        if s != shapes[0]:
            raise ValueError(f"`models[{i}]` has parameter shapes that differ from `models[0]`.")
    params = jax.tree.map(lambda *a: jnp.stack(a), *[s[1] for s in splits])
    rest = jax.tree.map(lambda *a: jnp.stack(a), *[s[2] for s in splits])
    return graphdef, params, rest


def unstack_models(graphdef: nnx.GraphDef, params: Any, rest: Any) -> list[nnx.Module]:
    """The inverse of `stack_models`: one module per entry of the leading nets axis (bitwise)."""
    leaves, treedef = jax.tree.flatten((params, rest))
    n = leaves[0].shape[0] if leaves else 1
    # Per leaf one host copy and one batched device_put of its n numpy slices, instead of n eager
    # device indexing ops per leaf (704 dispatches for 32 seeds of a 10-block MLP).
    per_leaf = [_unstack_leaf(a, n) for a in leaves]
    return [nnx.merge(graphdef, *jax.tree.unflatten(treedef, [s[i] for s in per_leaf])) for i in range(n)]


def _unstack_leaf(a: Any, n: int) -> list[Any]:
    """The n entries of `a` along its leading axis, bitwise equal to a[0], ..., a[n - 1]."""
    if not isinstance(a, jax.Array) or is_key(a) or len(a.sharding.device_set) != 1:
        return [a[i] for i in range(n)]
    host = np.asarray(jax.device_get(a))
    return jax.device_put([host[i] for i in range(n)], a.sharding if a.committed else None)


def init_stacked(
    factory: Callable[[nnx.Rngs], nnx.Module], seeds: Sequence[int] | jax.Array
) -> tuple[nnx.GraphDef, Any, Any]:
    """Call `factory(nnx.Rngs(key(seed)))` for every seed under one `jax.vmap` (one trace).

    Args:
      factory: `rngs -> module`; every module it builds must have the same graphdef.
      seeds: N ints in [0, 2**32), or (N,) PRNG keys.
    Returns:
      (graphdef, params, rest) with a leading nets axis N, as `stack_models` of the N modules
      `factory(nnx.Rngs(seed))` (equal to float rounding of the initializers under vmap).
    """
    box = {}

    def init(key):
        g, p, r = nnx.split(factory(nnx.Rngs(key)), nnx.Param, ...)
        box["graphdef"] = g
        return p, r

    keys = seeds if is_key(seeds) else jax.vmap(jax.random.key)(jnp.asarray(seeds, dtype=jnp.uint32))
    params, rest = jax.vmap(init)(keys)
    return box["graphdef"], params, rest


def data_key(seed: int | jax.Array) -> jax.Array:
    """The minibatch-order key of one net: fold_in(key(seed), 0x5EEDDA7A), or fold_in(seed, ...)
    when `seed` is already a PRNG key.

    Raises:
      ValueError: `seed` is neither an int in [0, 2**32) nor one PRNG key.
    """
    if is_key(seed):
        if seed.shape != ():
            raise ValueError(f"`key` must be one PRNG key (shape ()), got shape {seed.shape}.")
        base = seed
    elif isinstance(seed, jax.Array):  # traced uint32 seeds (data_keys' vmap)
        base = jax.random.key(seed)
    else:
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
            raise ValueError(f"`key` must be an int in [0, 2**32) or a jax.random.key, got {seed!r}.")
        base = jax.random.key(seed)
    return jax.random.fold_in(base, DATA_SALT)


def data_keys(seeds: Sequence[int]) -> jax.Array:
    """(N,) minibatch-order keys, `data_key(s)` for each seed s, in one vmapped call."""
    return jax.vmap(data_key)(jnp.asarray(check_seeds(seeds), dtype=jnp.uint32))


def check_seeds(seeds: Any) -> list[int]:
    """`seeds` as a list of distinct ints in [0, 2**32); ValueError otherwise."""
    if isinstance(seeds, int | np.integer) or not isinstance(seeds, Sequence | np.ndarray):
        raise ValueError(f"`seeds` must be a non-empty sequence of distinct ints >= 0, got {seeds!r}.")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("`seeds` must be a non-empty sequence of distinct ints >= 0, got [].")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int | np.integer) or not 0 <= s < 2**32:
            raise ValueError(f"`seeds` must hold ints in [0, 2**32), got {s!r} in {seeds!r}.")
    if len(set(int(s) for s in seeds)) != len(seeds):
        raise ValueError(f"`seeds` must be distinct, got {seeds!r}.")
    return [int(s) for s in seeds]


def is_key(a: Any) -> bool:
    """Whether `a` is an array of typed PRNG keys (`jax.random.key`)."""
    return hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jax.dtypes.prng_key)
