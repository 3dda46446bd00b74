"""Tests for jaxvg.scale.devices: nets over devices, padding, placement, data parallelism.

The tests here hold on any number of devices (run the suite with
XLA_FLAGS=--xla_force_host_platform_device_count=8 too). What needs several devices whatever the
pytest process has runs once in a subprocess with 8 CPU devices (_multidevice_check.py next to
this file); each of its checks is one test here.
"""

from __future__ import annotations

import json
import os

import _multidevice_check
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvg import scale

# ---------------------------------------------------------------------------------------------
# 8 devices (subprocess)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def multidevice_results(run_python):
    """{check name: result} from one run of _multidevice_check.py on 8 CPU devices. The script
    exits 1 when a check failed; its results line is still there, and each test reports its own."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8".strip()
    (out,) = run_python(_multidevice_check.PATH, env={"XLA_FLAGS": flags}, returncodes=(0, 1))
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULTS ")]
    assert len(lines) == 1, out
    return json.loads(lines[0][len("RESULTS ") :])


@pytest.mark.slow
def test_every_multidevice_check_ran(multidevice_results):
    assert list(multidevice_results) == list(_multidevice_check.CHECKS)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(_multidevice_check.CHECKS))
def test_on_8_devices(multidevice_results, name):
    """Sharded == unsharded (float64, rtol 1e-6), gradients of in-shard arrays included; padding;
    depth sweep; data-parallel gradient; global arrays. Details in _multidevice_check.py."""
    result = multidevice_results[name]
    assert result["ok"], result.get("detail")


@pytest.mark.slow
def test_naive_shard_map_shows_the_pitfall_that_map_nets_avoids(multidevice_results):
    """With shard_map's default check_vma=True the gradient of a zero bias created inside the shard
    is summed over devices (wrong by O(1)); map_nets matches the unsharded vmap."""
    result = multidevice_results["naive_shard_map_pitfall"]
    assert result["ok"], result.get("detail")
    assert result["map_nets_rel_err"] <= 1e-6
    # shard_map's check_vma transposes an invariant value into a psum by design: the naive gradient is
    # off by O(1) (with jax 0.10.2). Should a jax change that, this fails: map_nets' explanation of the
    # pitfall (and this test) must then change with it.
    assert result["naive_abs_err"] >= 1e-3, result["naive_abs_err"]


# ---------------------------------------------------------------------------------------------
# map_nets, padding and placement on this process's devices
# ---------------------------------------------------------------------------------------------


def _sgd(params, sigma, x):
    def loss(p):
        return jnp.mean(jnp.tanh(x @ (sigma * p["w"]) + p["b"][None, :]) ** 2)

    b = jnp.zeros(params["w"].shape[1])  # created inside: its gradient must stay per net
    g, gb = jax.grad(lambda p, b: loss({**p, "b": b}), argnums=(0, 1))(params, b)
    return {"w": params["w"] - 0.1 * g["w"], "grad_b": gb, "loss": loss({**params, "b": b})}


def test_map_nets_equals_vmap(x64):
    """Float64, rtol 1e-6: on several devices each one compiles vmap(fn) for its own block of nets
    and float32 may round differently (up to ~1e-5 relative); float64 holds on any device count."""
    params = {"w": jax.random.normal(jax.random.key(0), (5, 3, 4))}
    sigma = jnp.linspace(0.5, 2.0, 5)
    x = jax.random.normal(jax.random.key(1), (6, 3))
    got = scale.map_nets(_sgd, params, sigma, shared=(x,))
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
            scale.map_nets(fn, jnp.arange(start, start + 3)), 2 * jnp.arange(start, start + 3)
        )
    assert len(traces) == 1


def test_map_nets_errors():
    with pytest.raises(ValueError, match="`stacked_args` must hold at least one"):
        scale.map_nets(jnp.sin)
    with pytest.raises(ValueError, match=r"same leading size >= 1 \(nets\), got sizes \[2, 3\]"):
        scale.map_nets(lambda a, b: a + b, jnp.ones(2), jnp.ones(3))
    with pytest.raises(ValueError, match=r"`stacked_args\[0\]\['s'\]` must have a leading nets axis"):
        scale.map_nets(lambda p: p["w"], {"w": jnp.ones(2), "s": jnp.float32(1.0)})
    with pytest.raises(ValueError, match="`axis_name` must be an axis of `mesh`"):
        scale.map_nets(jnp.sin, jnp.ones(2), mesh=scale.device_mesh("batch"))
    with pytest.raises(ValueError, match="`shared` must be a tuple"):
        scale.map_nets(jnp.add, jnp.ones(2), shared=[jnp.ones(2)])


def test_pad_nets_copies_net_0_including_keys():
    tree = {"w": jnp.arange(6.0).reshape(3, 2), "key": jax.random.split(jax.random.key(0), 3)}
    padded, n = scale.pad_nets(tree, 4)
    assert n == 3 and padded["w"].shape == (4, 2) and padded["key"].shape == (4,)
    np.testing.assert_array_equal(padded["w"][3], tree["w"][0])
    np.testing.assert_array_equal(jax.random.key_data(padded["key"][3]), jax.random.key_data(tree["key"][0]))
    same, n = scale.pad_nets(tree, 3)
    assert n == 3 and same["w"].shape == (3, 2)
    with pytest.raises(ValueError, match="`multiple` must be an integer >= 1"):
        scale.pad_nets(tree, 0)
    with pytest.raises(ValueError, match=r"`stacked` must all have the same leading size"):
        scale.pad_nets({"a": jnp.ones(2), "b": jnp.ones(3)}, 2)


def test_shard_nets_places_on_the_nets_axis():
    """3 nets padded to a multiple of the local devices (1 or 8), then split over all of them."""
    n_dev = jax.local_device_count()
    padded, n = scale.pad_nets({"w": jnp.ones((3, 2))}, n_dev)
    out = scale.shard_nets(padded)
    assert out["w"].sharding.spec == jax.sharding.PartitionSpec("nets")
    assert n == 3 and out["w"].shape[0] % n_dev == 0 and len(out["w"].sharding.device_set) == n_dev
    if n_dev > 1:  # only several devices can refuse a size
        with pytest.raises(ValueError, match=rf"divisible by the {n_dev} devices"):
            scale.shard_nets({"w": jnp.ones((n_dev + 1, 2))})


def test_device_mesh_is_auto_and_scoped():
    mesh = scale.device_mesh()
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
    assert mesh.devices.size == jax.local_device_count()
    assert mesh.axis_names == ("nets",)
    glob = scale.device_mesh("batch", scope="global")
    assert glob.axis_names == ("batch",) and glob.devices.size == jax.device_count()
    assert glob.axis_types == (jax.sharding.AxisType.Auto,)
    assert list(glob.devices.flat) == jax.devices()  # one process: the same devices as "local"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scope": "world"}, r"`scope` must be one of \['global', 'local'\], got 'world'"),
        ({"axis_name": ""}, "`axis_name` must be a non-empty string"),
        ({"axis_name": 3}, "`axis_name` must be a non-empty string"),
    ],
)
def test_device_mesh_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        scale.device_mesh(**kwargs)


def test_shard_batch_errors():
    with pytest.raises(ValueError, match=r"`batch\['t'\]` must have a leading batch size"):
        scale.shard_batch({"x": jnp.ones((4, 2)), "t": jnp.float32(3.0)})
    with pytest.raises(ValueError, match="`axis_name` must be an axis"):
        scale.data_parallel_sharding(scale.device_mesh("nets"))
