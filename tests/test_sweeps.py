"""Tests for jaxvg.sweeps: grids, depth masks, nets over devices, data parallelism, memory, cache.

The pytest process has one CPU device. Everything that needs several devices runs once in a
subprocess started with XLA_FLAGS=--xla_force_host_platform_device_count=8
(tests/_multidevice_check.py); each of its checks is one test here.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxvg
from jaxvg.scale import sweeps

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run_python(code_or_path, *, env_extra=None, timeout=300):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT), **(env_extra or {})}
    args = (
        [sys.executable, str(code_or_path)]
        if isinstance(code_or_path, pathlib.Path)
        else [sys.executable, "-c", code_or_path]
    )
    proc = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"subprocess failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


# ---------------------------------------------------------------------------------------------
# 8 devices (subprocess)
# ---------------------------------------------------------------------------------------------

MULTIDEVICE_CHECKS = [
    "devices",
    "sweep_sigma_grid",
    "naive_shard_map_pitfall",
    "pytrees_keys_and_sizes",
    "padding_copies_first",
    "depth_sweep_sharded",
    "data_parallel_gradient",
    "shard_batch_indivisible",
    "fit_stacked_integration",
]


@pytest.fixture(scope="module")
def multidevice_results():
    flags = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    out = _run_python(ROOT / "tests" / "_multidevice_check.py", env_extra={"XLA_FLAGS": flags})
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULTS "))
    return json.loads(line[len("RESULTS ") :])


@pytest.mark.slow
@pytest.mark.parametrize("name", MULTIDEVICE_CHECKS)
def test_on_8_devices(multidevice_results, name):
    """Sharded == unsharded (float64, rtol 1e-6), gradients of in-shard arrays included; padding;
    depth sweep; data-parallel gradient. Details in tests/_multidevice_check.py."""
    result = multidevice_results[name]
    assert result["ok"], result.get("detail")
    if "skipped" in result:
        pytest.skip(result["skipped"])


@pytest.mark.slow
def test_naive_shard_map_shows_the_pitfall_that_map_nets_avoids(multidevice_results):
    """With shard_map's default check_vma=True the gradient of a zero bias created inside the shard
    is summed over devices (wrong by O(1)); map_nets matches the unsharded vmap."""
    result = multidevice_results["naive_shard_map_pitfall"]
    assert result["ok"], result.get("detail")
    assert result["map_nets_rel_err"] <= 1e-6
    if result["naive_abs_err"] < 1e-3:
        pytest.skip(f"this jax no longer sums invariant-array gradients: {result['naive_abs_err']}")


def test_multidevice_check_list_is_complete():
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import _multidevice_check
    finally:
        sys.path.remove(str(ROOT / "tests"))
    assert list(_multidevice_check.CHECKS) == MULTIDEVICE_CHECKS


# ---------------------------------------------------------------------------------------------
# grid, cell_key, shape_groups
# ---------------------------------------------------------------------------------------------


def test_grid_is_the_cartesian_product_last_axis_fastest():
    cells = sweeps.grid(depth=[2, 4], sigma_w2=[1.0, 1.5, 2.0], activation=["tanh"])
    assert len(cells) == 6
    assert cells[0] == {"depth": 2, "sigma_w2": 1.0, "activation": "tanh"}
    assert cells[1] == {"depth": 2, "sigma_w2": 1.5, "activation": "tanh"}
    assert cells[-1] == {"depth": 4, "sigma_w2": 2.0, "activation": "tanh"}
    assert all(list(c) == ["depth", "sigma_w2", "activation"] for c in cells)
    assert sweeps.grid(depth=[2, 4], sigma_w2=[1.0, 1.5, 2.0], activation=["tanh"]) == cells


def test_grid_converts_numpy_scalars():
    cells = sweeps.grid(sigma_w2=np.linspace(1.0, 2.0, 3), seed=np.arange(2))
    assert type(cells[0]["sigma_w2"]) is float and type(cells[0]["seed"]) is int
    assert json.dumps(cells)  # plain JSON


@pytest.mark.parametrize(
    ("axes", "match"),
    [
        ({}, "at least one axis"),
        ({"activation": "tanh"}, r"`activation` must be a list of values, got 'tanh'"),
        ({"depth": 3}, r"`depth` must be a list of values, got 3"),
        ({"seed": []}, r"`seed` must have at least one value"),
        ({"seed": [0, 0]}, r"`seed` must not repeat a value"),
    ],
)
def test_grid_errors(axes, match):
    with pytest.raises(ValueError, match=match):
        sweeps.grid(**axes)


def test_cell_key_is_sorted_stable_and_round_trips_floats():
    a = sweeps.cell_key({"width": 64, "sigma_w2": 0.1, "activation": "tanh"})
    b = sweeps.cell_key({"activation": "tanh", "sigma_w2": np.float64(0.1), "width": np.int64(64)})
    assert a == b == "activation=tanh,sigma_w2=0.1,width=64"
    assert sweeps.cell_key({"sigma_w2": 1 / 3}) == f"sigma_w2={1 / 3!r}"
    assert float(sweeps.cell_key({"s": 1 / 3}).split("=")[1]) == 1 / 3
    keys = [sweeps.cell_key(c) for c in sweeps.grid(a=[1, 2], b=[0.5, 1.0], c=["x", None])]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("cell", [{}, {"a,b": 1}, {"act": "x=y"}, {"path": "a/b"}])
def test_cell_key_errors(cell):
    with pytest.raises(ValueError, match="`cell`"):
        sweeps.cell_key(cell)


def test_shape_groups_by_shape_axes_keeps_order():
    cells = sweeps.grid(width=[8, 16], activation=["tanh", "relu"], sigma_w2=[1.0, 2.0], seed=[0, 1])
    groups = sweeps.shape_groups(cells, by=("width", "activation"))
    assert list(groups) == [(8, "tanh"), (8, "relu"), (16, "tanh"), (16, "relu")]
    assert all(len(g) == 4 for g in groups.values())
    assert [(c["sigma_w2"], c["seed"]) for c in groups[(16, "relu")]] == [
        (1.0, 0),
        (1.0, 1),
        (2.0, 0),
        (2.0, 1),
    ]
    # default by=("depth", "width", "activation"); missing axes count as None
    assert list(sweeps.shape_groups(cells)) == [
        (None, 8, "tanh"),
        (None, 8, "relu"),
        (None, 16, "tanh"),
        (None, 16, "relu"),
    ]


@pytest.mark.parametrize("by", ["width", ()])
def test_shape_groups_errors(by):
    with pytest.raises(ValueError, match="`by` must be a non-empty sequence"):
        sweeps.shape_groups([{"width": 8}], by=by)


# ---------------------------------------------------------------------------------------------
# depth padding
# ---------------------------------------------------------------------------------------------


def test_pad_depth_mask_values():
    mask = sweeps.pad_depth_mask([3, 1, 6], 6)
    assert mask.dtype == jnp.bool_ and mask.shape == (3, 6)
    np.testing.assert_array_equal(mask.sum(axis=1), [3, 1, 6])
    np.testing.assert_array_equal(mask[0], [True, True, True, False, False, False])
    assert sweeps.pad_depth_mask([2, 4]).shape == (2, 4)


@pytest.mark.parametrize(
    ("depths", "max_depth", "match"),
    [
        ([], 4, "`depths` must list"),
        ([0, 2], 4, "`depths` must be an integer >= 1"),
        ([5], 4, r"`depths` must all be <= max_depth=4"),
        ([2], 0, "`max_depth` must be an integer >= 1"),
    ],
)
def test_pad_depth_mask_errors(depths, max_depth, match):
    with pytest.raises(ValueError, match=match):
        sweeps.pad_depth_mask(depths, max_depth)


def _split_mlp(depth, seed, **kw):
    model = jaxvg.MLP(4, 8, depth, 2, activation="tanh", rngs=nnx.Rngs(seed), **kw)
    return nnx.split(model, nnx.Param, ...)


def test_depth3_net_padded_to_depth6_gives_exactly_the_depth3_outputs_and_gradients():
    graphdef, params, rest = _split_mlp(6, 0)
    x = jax.random.normal(jax.random.key(1), (5, 4))
    y = jax.random.normal(jax.random.key(2), (5, 2))
    mask = sweeps.pad_depth_mask([3], 6)[0]

    def masked(params):
        model = nnx.merge(graphdef, params, rest, copy=True)
        out = model.head(sweeps.masked_forward(model.blocks, x, mask))
        return jnp.mean((out - y) ** 2), out

    def depth3(params):  # the same parameters, the first 3 blocks and the head, no masks
        model = nnx.merge(graphdef, params, rest, copy=True)
        h = x
        for block in list(model.blocks)[:3]:
            h = block(h)
        out = model.head(h)
        return jnp.mean((out - y) ** 2), out

    for transform in (jax.jit,):  # eager gives the same (checked once); jit is what sweeps run
        (loss_m, out_m), grad_m = transform(jax.value_and_grad(masked, has_aux=True))(params)
        (loss_3, out_3), grad_3 = transform(jax.value_and_grad(depth3, has_aux=True))(params)
        np.testing.assert_array_equal(out_m, out_3)  # exact: where() passes h through untouched
        np.testing.assert_array_equal(loss_m, loss_3)
        jax.tree.map(np.testing.assert_array_equal, grad_m, grad_3)  # exact: the cotangent adds 0.0
        for block in (3, 4, 5):
            for leaf in jax.tree.leaves(grad_m["blocks"][block]):
                assert not np.any(np.asarray(leaf)), "masked blocks get exactly zero gradient"
        assert np.all(np.abs(np.asarray(grad_m["blocks"][2]["linear"]["kernel"])) > 0)


def test_depth_sweep_as_one_vmapped_program_matches_each_net(x64):
    """Depths 1..4 in one vmapped program over stacked depth-4 parameters equal each net run
    plainly through its first d blocks (float64, rtol 1e-12: vmapped and single programs are
    different XLA programs)."""
    depths = [1, 2, 3, 4]
    splits = [_split_mlp(4, seed, param_dtype=jnp.float64) for seed in range(4)]
    graphdef, rest = splits[0][0], splits[0][2]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *[s[1] for s in splits])
    masks = sweeps.pad_depth_mask(depths, 4)
    x = jax.random.normal(jax.random.key(1), (5, 4), jnp.float64)
    y = jax.random.normal(jax.random.key(2), (5, 2), jnp.float64)

    def masked(params, mask):
        model = nnx.merge(graphdef, params, rest, copy=True)
        return jnp.mean((model.head(sweeps.masked_forward(model.blocks, x, mask)) - y) ** 2)

    def plain(params, depth):
        model = nnx.merge(graphdef, params, rest, copy=True)
        h = x
        for block in list(model.blocks)[:depth]:
            h = block(h)
        return jnp.mean((model.head(h) - y) ** 2)

    losses, grads = jax.jit(jax.vmap(jax.value_and_grad(masked)))(stacked, masks)
    plain_grad = jax.jit(jax.value_and_grad(plain), static_argnums=1)
    for i, d in enumerate(depths):
        want_loss, want_grad = plain_grad(splits[i][1], d)
        np.testing.assert_allclose(losses[i], want_loss, rtol=1e-12)
        jax.tree.map(
            lambda g, w, i=i: np.testing.assert_allclose(g[i], w, rtol=1e-12, atol=0), grads, want_grad
        )
        for j in range(d, 4):  # blocks past depth d: exactly zero, as in the plain net
            assert not np.any(np.asarray(grads["blocks"][j]["linear"]["kernel"][i]))


def test_masked_forward_mask_shape_error():
    with pytest.raises(ValueError, match=r"`mask` must have shape \(2,\)"):
        sweeps.masked_forward([jnp.tanh, jnp.tanh], jnp.zeros(3), jnp.ones(3, bool))


# ---------------------------------------------------------------------------------------------
# map_nets on one device (the 8-device behaviour is tested above)
# ---------------------------------------------------------------------------------------------


def _sgd(params, sigma, x):
    def loss(p):
        return jnp.mean(jnp.tanh(x @ (sigma * p["w"]) + p["b"][None, :]) ** 2)

    b = jnp.zeros(params["w"].shape[1])  # created inside: its gradient must stay per net
    g, gb = jax.grad(lambda p, b: loss({**p, "b": b}), argnums=(0, 1))(params, b)
    return {"w": params["w"] - 0.1 * g["w"], "grad_b": gb, "loss": loss({**params, "b": b})}


def test_map_nets_equals_vmap_on_one_device():
    params = {"w": jax.random.normal(jax.random.key(0), (5, 3, 4))}
    sigma = jnp.linspace(0.5, 2.0, 5)
    x = jax.random.normal(jax.random.key(1), (6, 3))
    got = sweeps.map_nets(_sgd, params, sigma, shared=(x,))
    want = jax.jit(jax.vmap(_sgd, in_axes=(0, 0, None)))(params, sigma, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want)
    assert got["loss"].shape == (5,) and got["grad_b"].shape == (5, 4)


def test_map_nets_compiles_once_for_equal_shapes():
    traces = []

    def fn(a):
        traces.append(1)
        return a * 2.0

    for start in (0.0, 1.0, 2.0):
        np.testing.assert_array_equal(
            sweeps.map_nets(fn, jnp.arange(start, start + 3)), 2 * jnp.arange(start, start + 3)
        )
    assert len(traces) == 1


def test_map_nets_errors():
    with pytest.raises(ValueError, match="`stacked_args` must hold at least one"):
        sweeps.map_nets(jnp.sin)
    with pytest.raises(ValueError, match=r"same leading size >= 1 \(nets\), got sizes \[2, 3\]"):
        sweeps.map_nets(lambda a, b: a + b, jnp.ones(2), jnp.ones(3))
    with pytest.raises(ValueError, match=r"`stacked_args\[0\]\['s'\]` must have a leading nets axis"):
        sweeps.map_nets(lambda p: p["w"], {"w": jnp.ones(2), "s": jnp.float32(1.0)})
    with pytest.raises(ValueError, match="`axis_name` must be an axis of `mesh`"):
        sweeps.map_nets(jnp.sin, jnp.ones(2), mesh=sweeps.local_mesh("batch"))
    with pytest.raises(ValueError, match="`shared` must be a tuple"):
        sweeps.map_nets(jnp.add, jnp.ones(2), shared=[jnp.ones(2)])


def test_pad_nets_copies_net_0_including_keys():
    tree = {"w": jnp.arange(6.0).reshape(3, 2), "key": jax.random.split(jax.random.key(0), 3)}
    padded, n = sweeps.pad_nets(tree, 4)
    assert n == 3 and padded["w"].shape == (4, 2) and padded["key"].shape == (4,)
    np.testing.assert_array_equal(padded["w"][3], tree["w"][0])
    np.testing.assert_array_equal(jax.random.key_data(padded["key"][3]), jax.random.key_data(tree["key"][0]))
    same, n = sweeps.pad_nets(tree, 3)
    assert n == 3 and same["w"].shape == (3, 2)
    with pytest.raises(ValueError, match="`multiple` must be an integer >= 1"):
        sweeps.pad_nets(tree, 0)
    with pytest.raises(ValueError, match=r"`stacked` must all have the same leading size"):
        sweeps.pad_nets({"a": jnp.ones(2), "b": jnp.ones(3)}, 2)


def test_shard_nets_places_on_the_nets_axis():
    out = sweeps.shard_nets({"w": jnp.ones((3, 2))})
    assert out["w"].sharding.spec == jax.sharding.PartitionSpec("nets")


def test_local_mesh_is_auto():
    mesh = sweeps.local_mesh()
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
    assert mesh.devices.size == jax.local_device_count()


def test_shard_batch_errors():
    with pytest.raises(ValueError, match=r"`batch\['t'\]` must have a leading batch size"):
        sweeps.shard_batch({"x": jnp.ones((4, 2)), "t": jnp.float32(3.0)})
    with pytest.raises(ValueError, match="`axis_name` must be an axis"):
        sweeps.data_parallel_sharding(sweeps.local_mesh("nets"))


# ---------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------


def test_estimate_bytes_by_hand():
    # 2 nets, in 3 -> width 4 (depth 2) -> out 1, batch 5, float32, adam (2 slots)
    est = sweeps.estimate_bytes(2, 4, 2, 5, in_features=3, out_features=1)
    params = 3 * 4 + 4 + (4 * 4 + 4) + 4 * 1 + 1  # 41 per net
    assert est.params_bytes == est.gradients_bytes == 2 * params * 4
    assert est.optimizer_bytes == 2 * 2 * params * 4
    assert est.activations_bytes == 2 * 5 * (3 + 2 * 2 * 4 + 1) * 4
    assert est.total == 2 * (4 * params + 5 * 20) * 4
    assert sweeps.estimate_bytes(3, 4, 2, 5, in_features=3, out_features=1, n_devices=2).total == est.total


def test_estimate_bytes_scales_as_nets_width2_depth():
    def params_part(**kw):
        base = {"n_nets": 10, "width": 256, "depth": 20, "batch": 1}
        e = sweeps.estimate_bytes(**{**base, **kw}, in_features=1, out_features=1, optimizer_slots=0)
        return e.params_bytes

    ref = params_part()
    assert params_part(n_nets=20) == 2 * ref
    assert params_part(width=512) / ref == pytest.approx(4.0, rel=0.01)
    assert params_part(depth=40) / ref == pytest.approx(2.0, rel=0.06)
    assert (
        sweeps.estimate_bytes(1, 8, 2, 4, in_features=2, out_features=1, dtype=jnp.bfloat16).total * 2
        == sweeps.estimate_bytes(1, 8, 2, 4, in_features=2, out_features=1).total
    )


@pytest.mark.parametrize(("n", "width", "depth", "batch"), [(4, 128, 6, 16), (16, 16, 6, 512)])
def test_estimate_bytes_is_within_2x_of_xla_memory_analysis(n, width, depth, batch):
    """Against XLA's own accounting for a vmapped adam step with donated params/optimizer state
    (parameter-dominated and activation-dominated cases)."""
    sizes = [8] + [width] * depth + [2]
    tx = optax.adam(1e-3)

    def init(key):
        ks = jax.random.split(key, len(sizes) - 1)
        return [
            (jax.random.normal(k, (m, o)) / m**0.5, jnp.zeros(o))
            for k, m, o in zip(ks, sizes[:-1], sizes[1:], strict=True)
        ]

    def step(p, s, x, y):
        def loss(p):
            h = x
            for w, b in p[:-1]:
                h = jnp.tanh(h @ w + b[None, :])
            return jnp.mean((h @ p[-1][0] + p[-1][1][None, :] - y) ** 2)

        updates, s = tx.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, updates), s

    params = jax.eval_shape(jax.vmap(init), jax.random.split(jax.random.key(0), n))
    state = jax.eval_shape(jax.vmap(tx.init), params)
    x, y = jax.ShapeDtypeStruct((n, batch, 8), jnp.float32), jax.ShapeDtypeStruct((n, batch, 2), jnp.float32)
    ma = jax.jit(jax.vmap(step), donate_argnums=(0, 1)).lower(params, state, x, y).compile().memory_analysis()
    xla = ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes + ma.temp_size_in_bytes
    est = sweeps.estimate_bytes(n, width, depth, batch, in_features=8, out_features=2, optimizer_slots=2)
    assert 0.5 <= est.total / xla <= 2.0, (est, ma)


def test_check_fits_passes_small_and_fails_large_with_a_clear_message():
    sweeps.check_fits(sweeps.estimate_bytes(8, 32, 4, 16, in_features=4, out_features=1))
    sweeps.check_fits(1024)
    big = sweeps.estimate_bytes(100_000, 4096, 100, 1024, in_features=784, out_features=10)
    with pytest.raises(ValueError) as err:
        sweeps.check_fits(big)
    msg = str(err.value)
    for part in [
        "100000 nets of width 4096, depth 100, batch 1024",
        "GiB per device",
        "host MemAvailable",
        "nets x width^2 x depth",
        "run at most 0 nets per program",
    ]:
        assert part in msg, msg
    with pytest.raises(ValueError, match="sweep needs about .* GiB"):
        sweeps.check_fits(10**18)


class _FakeGPU:
    platform = "gpu"

    def memory_stats(self):
        return {"bytes_limit": 16 * 2**30, "bytes_in_use": 6 * 2**30}


def test_check_fits_uses_memory_stats_on_accelerators():
    assert sweeps.available_bytes(_FakeGPU()) == (10 * 2**30, "GPU memory_stats")
    est = sweeps.estimate_bytes(1000, 512, 10, 64, in_features=10, out_features=10)  # about 38 GiB
    with pytest.raises(
        ValueError, match=r"\(0.8 x 10.00 GiB free, GPU memory_stats\).* run at most 2\d\d nets"
    ):
        sweeps.check_fits(est, device=_FakeGPU())
    sweeps.check_fits(
        sweeps.estimate_bytes(100, 512, 10, 64, in_features=10, out_features=10), device=_FakeGPU()
    )


def test_available_bytes_on_cpu_is_host_memory():
    free, source = sweeps.available_bytes()
    assert source.startswith("host") and free > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"estimate": -1}, "`estimate` must be"),
        ({"estimate": 1.5}, "`estimate` must be"),
        ({"estimate": 1, "fraction": 0.0}, "`fraction` must lie in"),
        ({"estimate": 1, "fraction": 1.5}, "`fraction`"),
    ],
)
def test_check_fits_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sweeps.check_fits(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"width": 0}, "`width` must be an integer >= 1"),
        ({"optimizer_slots": -1}, "`optimizer_slots`"),
        ({"dtype": jnp.int32}, "`dtype` must be a floating dtype"),
    ],
)
def test_estimate_bytes_errors(kwargs, match):
    args = {"n_nets": 1, "width": 4, "depth": 2, "batch": 3, "in_features": 2, "out_features": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        sweeps.estimate_bytes(**args)


# ---------------------------------------------------------------------------------------------
# persistent compilation cache (subprocesses: it is process-global configuration)
# ---------------------------------------------------------------------------------------------


def test_compilation_cache_is_written_then_hit(tmp_path):
    script = textwrap.dedent(f"""
        import jax, jax.numpy as jnp
        from jaxvg.scale import sweeps
        hits = []
        jax.monitoring.register_event_listener(lambda e, **kw: hits.append(e) if e.endswith("cache_hits") else None)
        sweeps.enable_compilation_cache({str(tmp_path / "cache")!r})
        jax.jit(lambda x: jnp.tanh(x) @ x.T)(jnp.ones((3, 3))).block_until_ready()
        print("HITS", len(hits))
    """)
    assert "HITS 0\n" in _run_python(script)
    written = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert written  # every program, however small (min compile time 0)
    hits = int(_run_python(script).split("HITS ")[1])
    assert hits >= 1 and sorted(p.name for p in (tmp_path / "cache").iterdir()) == written


def test_enable_compilation_cache_errors():
    with pytest.raises(ValueError, match="`min_compile_time_secs` must be a finite number >= 0"):
        sweeps.enable_compilation_cache("unused", min_compile_time_secs=-1.0)
