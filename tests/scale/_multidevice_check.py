"""Checks that need several devices, run by test_devices.py (next to this file) in a subprocess.

The 8 CPU devices exist only if XLA_FLAGS=--xla_force_host_platform_device_count=8 is set before
jax starts, so a pytest process with 1 device cannot run them itself. Run by hand:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/scale/_multidevice_check.py

It prints one JSON line, {check name: {"ok": bool, "detail": str, ...}}, and exits 1 when a check
failed (an import error included: it fails that check, it is never skipped); test_devices.py turns
each entry into one test. Workloads are small real ones: SGD steps of MLPs over a sigma_w2 grid.
"""

from __future__ import annotations

import functools
import json
import pathlib
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

PATH = pathlib.Path(__file__).resolve()
N_DEVICES = 8
# Equality checks run in float64 (x64 is switched on in main) at rtol 1e-6; float32 results are reported alongside. The references are the same vmap under
# jax.jit on one device. Sharding changes only which device computes which net, but each device
# compiles vmap(fn) for its own block of nets, a different shape from the unsharded vmap, and XLA
# may vectorise differently: float32 results differed by up to 4.9e-6 relative (sometimes not
# at all), float64 ones by 1e-15.
RTOL = 1e-6
IN, WIDTH, DEPTH, OUT, BATCH = 3, 8, 3, 1, 16


def _data(seed: int = 0, batch: int = BATCH):
    kx, kw = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (batch, IN))
    y = jnp.tanh(x @ jax.random.normal(kw, (IN, OUT)))
    return x, y


def sgd_mlp(sigma_w2, key, x, y, steps: int = 3, lr: float = 0.1):
    """One net: init W ~ N(0, sigma_w2/fan_in), zero biases created HERE (device-invariant under
    shard_map), `steps` SGD steps via jax.grad; returns final loss, params and first gradient."""
    sizes = [IN] + [WIDTH] * DEPTH + [OUT]
    keys = jax.random.split(key, len(sizes) - 1)
    ws = [
        jnp.sqrt(sigma_w2 / m) * jax.random.normal(k, (m, n))
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]
    bs = [jnp.zeros(n) for n in sizes[1:]]

    def loss(params):
        ws, bs = params
        h = x
        for w, b in zip(ws[:-1], bs[:-1], strict=True):
            h = jnp.tanh(h @ w + b[None, :])
        return jnp.mean((h @ ws[-1] + bs[-1][None, :] - y) ** 2)

    params = (ws, bs)
    first_grad = jax.grad(loss)(params)
    for _ in range(steps):
        grads = jax.grad(loss)(params)
        params = jax.tree.map(lambda p, g: p - lr * g, params, grads)
    return {"loss": loss(params), "params": params, "first_grad": first_grad}


def _close(a, b, rtol=RTOL) -> float:
    """Assert trees close at `rtol`; return the max relative error."""
    worst = 0.0
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        u, v = np.asarray(u), np.asarray(v)
        np.testing.assert_allclose(u, v, rtol=rtol)
        worst = max(worst, float(np.max(np.abs(u - v) / np.maximum(np.abs(v), 1e-30), initial=0.0)))
    return worst


def check_devices():
    assert jax.device_count() == N_DEVICES, jax.devices()
    return {"devices": jax.device_count()}


def check_sweep_sigma_grid():
    """12 nets (padded to 16 on 8 devices), an SGD step each, equal to the unsharded vmap."""
    from jaxvg import scale

    sigma_w2 = jnp.linspace(0.5, 3.0, 12)
    keys = jax.random.split(jax.random.key(1), 12)
    x, y = _data()
    fn = functools.partial(sgd_mlp, steps=1)
    out = scale.map_nets(fn, sigma_w2, keys, shared=(x, y))
    ref = jax.jit(jax.vmap(fn, in_axes=(0, 0, None, None)))(sigma_w2, keys, x, y)
    err = _close(out, ref)
    loss = out["loss"]
    assert loss.shape == (12,) and loss.dtype == jnp.float64
    assert len(loss.sharding.device_set) == N_DEVICES, loss.sharding
    # the bias gradients (of arrays created inside the shard) are nonzero and per net
    b0 = np.asarray(out["first_grad"][1][0])
    assert np.all(np.abs(b0).sum(axis=1) > 0) and not np.allclose(b0[0], b0[1])
    return {"max_rel_err": err, "nets": 12}


def check_naive_shard_map_pitfall():
    """The pitfall map_nets avoids: shard_map(check_vma=True) sums the gradients of arrays created
    inside the shard over devices. Reported here; tests/scale/test_devices.py asserts it."""
    from jax.sharding import PartitionSpec as P

    from jaxvg import scale

    x, _ = _data()

    def fn(w):  # gradient with respect to a zero bias created inside
        b0 = jnp.zeros(w.shape[1], w.dtype)
        return jax.grad(lambda b: jnp.sum(jnp.tanh(x.astype(w.dtype) @ w + b[None, :]) ** 2))(b0)

    ws = jax.random.normal(jax.random.key(0), (16, IN, 2))
    naive = jax.jit(
        jax.shard_map(jax.vmap(fn), mesh=scale.device_mesh(), in_specs=P("nets"), out_specs=P("nets"))
    )
    ref = jax.jit(jax.vmap(fn))(ws)
    ours = _close(scale.map_nets(fn, ws), ref)
    with jax.enable_x64(False):  # float32, reported
        ws32 = ws.astype(jnp.float32)
        ours32 = _close(scale.map_nets(fn, ws32), jax.jit(jax.vmap(fn))(ws32), rtol=1e-4)
    return {
        "naive_abs_err": float(np.max(np.abs(naive(ws) - ref))),
        "map_nets_rel_err": ours,
        "map_nets_rel_err_float32": ours32,
    }


def check_pytrees_keys_and_sizes():
    """Dict params, typed PRNG keys, nets = 1 and 9 (padded to 8 and 16)."""
    from jaxvg import scale

    def fn(params, key):
        noise = jax.random.normal(key, params["w"].shape)
        g = jax.grad(lambda p: jnp.sum(jnp.sin(p["w"] * p["s"] + noise) ** 2))(params)
        return {"g": g, "z": jnp.zeros(2) + params["s"]}

    errs = []
    for n in (1, 9):
        params = {"w": jnp.arange(n * 6.0).reshape(n, 2, 3) / 7, "s": jnp.linspace(0.5, 1.5, n)}
        keys = jax.random.split(jax.random.key(n), n)
        out = scale.map_nets(fn, params, keys)
        errs.append(_close(out, jax.jit(jax.vmap(fn))(params, keys)))
        assert out["z"].shape == (n, 2)
    return {"max_rel_err": max(errs)}


def check_padding_copies_first():
    """Padded nets are copies of net 0: a function that fails on NaN/zero never sees them."""
    from jaxvg import scale

    seen = []

    def fn(a):
        jax.debug.callback(lambda v: seen.append(np.asarray(v)), a)
        return 1.0 / a

    a = jnp.arange(1.0, 4.0)  # 3 nets -> 8 (5 copies of net 0)
    out = scale.map_nets(fn, a)
    jax.effects_barrier()
    values = np.concatenate([np.atleast_1d(v) for v in seen])
    assert sorted(values.tolist()) == sorted([1.0] * 6 + [2.0, 3.0]), values
    np.testing.assert_array_equal(np.asarray(out), 1.0 / np.arange(1.0, 4.0))
    return {"values_seen": sorted(values.tolist())}


def check_depth_sweep_sharded():
    """Depths 1, 3, 6 (x4 seeds) padded to 6, masked blocks, sharded: equal to each net unpadded
    (a plain single net: a different XLA program, float32 differed by 6.7e-6 relative)."""
    from jaxvg import scale

    depths = [1, 3, 6] * 4
    max_depth = 6
    mask = scale.pad_depth_mask(depths, max_depth)
    keys = jax.random.split(jax.random.key(2), len(depths))
    x, y = jax.tree.map(lambda a: a.astype(jnp.float64), _data(3))

    def init(key):
        ks = jax.random.split(key, max_depth + 1)
        sizes = [IN] + [WIDTH] * max_depth
        ws = [
            jax.random.normal(k, (m, n), jnp.float64) / np.sqrt(m)
            for k, m, n in zip(ks[:-1], sizes[:-1], sizes[1:], strict=True)
        ]
        return ws, jax.random.normal(ks[-1], (WIDTH, OUT), jnp.float64) / np.sqrt(WIDTH)

    def loss(params, mask, x, y):
        ws, head = params
        blocks = [functools.partial(lambda h, w: jnp.tanh(h @ w), w=w) for w in ws]
        return jnp.mean((scale.masked_forward(blocks, x, mask) @ head - y) ** 2)

    def fn(key, mask, x, y):
        return jax.value_and_grad(loss)(init(key), mask, x, y)

    out = scale.map_nets(fn, keys, mask, shared=(x, y))

    @jax.jit
    def plain(params, x, y):  # a plain net of depth len(ws), no masks (one compile per depth)
        ws, head = params
        h = x
        for w in ws:
            h = jnp.tanh(h @ w)
        return jnp.mean((h @ head - y) ** 2)

    ref_grad = jax.jit(jax.value_and_grad(plain))
    errs = []
    for i, d in enumerate(depths):
        ws, head = init(keys[i])
        val, (gw, ghead) = ref_grad((ws[:d], head), x, y)
        errs.append(_close((out[0][i], [g[i] for g in out[1][0][:d]], out[1][1][i]), (val, gw, ghead)))
        for g in out[1][0][d:]:
            assert not np.any(np.asarray(g[i])), "masked blocks must get exactly zero gradient"
    return {"max_rel_err": max(errs)}


def check_data_parallel_gradient():
    """Batch of 64 split over 8 devices: the jitted gradient equals the 1-device gradient (float64,
    rtol 1e-6; float32 reported and held to rtol 1e-4, since the batch sum is taken in another
    order: 8 partial sums, then an all-reduce that XLA inserted)."""
    from jaxvg import scale

    def loss(params, x, y):
        ws, bs = params
        h = x
        for w, b in zip(ws[:-1], bs[:-1], strict=True):
            h = jnp.tanh(h @ w + b[None, :])
        return jnp.mean((h @ ws[-1] + bs[-1][None, :] - y) ** 2)

    step = jax.jit(jax.value_and_grad(loss))
    cpu0 = jax.devices()[0]
    result = {}
    for dtype, rtol in (("float64", RTOL), ("float32", 1e-4)):
        with jax.enable_x64(dtype == "float64"):  # float32: 8 partial sums + all-reduce, other order
            cast = functools.partial(jnp.asarray, dtype=dtype)
            x, y = jax.tree.map(cast, _data(4, batch=64))
            params = jax.tree.map(cast, sgd_mlp(1.5, jax.random.key(5), x, y, steps=0)["params"])
            xs, ys = scale.shard_batch((x, y))
            assert len(xs.sharding.device_set) == N_DEVICES
            compiled = step.lower(params, xs, ys).compile()
            assert "all-reduce" in compiled.as_text(), "XLA should reduce the gradient across devices"
            got = compiled(params, xs, ys)
            ref = step(jax.device_put(params, cpu0), jax.device_put(x, cpu0), jax.device_put(y, cpu0))
            assert got[1][0][0].dtype == dtype
            result[f"max_rel_err_{dtype}"] = _close(got, ref, rtol=rtol)
    return result


def check_shard_batch_indivisible():
    """12 rows cannot split over 8 devices: ValueErrors that say so and how to fix it."""
    from jaxvg import scale

    messages = {}
    for name, fn, want in [
        ("shard_batch", scale.shard_batch, "divisible by the 8 devices"),
        ("shard_nets", scale.shard_nets, "jaxvg.scale.pad_nets(stacked, 8)"),
    ]:
        try:
            fn(jnp.ones((12, 2)))
        except ValueError as e:
            assert want in str(e), e
            messages[name] = str(e)
        else:
            raise AssertionError(f"{name} accepted 12 rows on 8 devices")
    return messages


def check_global_array_and_meshes():
    """One process, 8 devices: the global mesh is the local one; global_array splits 16 rows over
    the 8 devices and refuses 12 with a message that names the device count."""
    from jaxvg import scale

    local, glob = scale.device_mesh(), scale.device_mesh(scope="global")
    assert list(local.devices.flat) == list(glob.devices.flat) == jax.devices()
    rows = np.arange(32.0).reshape(16, 2)
    out = scale.global_array({"w": rows})["w"]
    np.testing.assert_array_equal(np.asarray(out), rows)
    assert len(out.sharding.device_set) == N_DEVICES and out.sharding.spec == jax.sharding.PartitionSpec(
        "nets"
    )
    try:
        scale.global_array({"w": rows[:12]})
    except ValueError as e:
        assert "divisible by this process's 8 devices" in str(e), e
        message = str(e)
    else:
        raise AssertionError("global_array accepted 12 rows on 8 devices")
    return {"message": message}


def check_fit_stacked_integration():
    """6 MLPs (float64) padded to 8 with pad_nets, placed with shard_nets, trained by the unchanged
    fit_stacked: equal to the one-device fit_stacked of the 6 nets (rtol 1e-6), results sharded."""
    from flax import nnx

    import jaxvg
    from jaxvg import scale, train

    n = 6
    models = [
        jaxvg.MLP(2, 8, 3, 1, activation="tanh", param_dtype=jnp.float64, rngs=nnx.Rngs(i)) for i in range(n)
    ]
    graphdef, params, rest = train.stack_models(models)
    keys = jax.vmap(jax.random.key)(jnp.arange(n))
    lr = np.linspace(0.05, 0.2, n)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 2))
    y = np.tanh(x[:, :1] * x[:, 1:])
    kw = dict(loss="mse", optimizer="sgd", steps=10, batch_size=8, log_every=5, progress=False)
    ref = train.fit_stacked(graphdef, params, rest, (x, y), keys=keys, learning_rate=lr, **kw)

    (p8, r8, k8, lr8), _ = scale.pad_nets((params, rest, keys, lr), N_DEVICES)
    p8, r8, k8 = scale.shard_nets((p8, r8, k8))
    got = train.fit_stacked(graphdef, p8, r8, (x, y), keys=k8, learning_rate=np.asarray(lr8), **kw)
    leaf = jax.tree.leaves(got.params)[0]
    assert len(leaf.sharding.device_set) == N_DEVICES, leaf.sharding
    err = _close(jax.tree.map(lambda a: a[:n], got.params), ref.params)
    err = max(err, _close(got.history["train/loss"][:n], ref.history["train/loss"]))
    return {"max_rel_err": err, "nets": n}


CHECKS = {
    "devices": check_devices,
    "sweep_sigma_grid": check_sweep_sigma_grid,
    "naive_shard_map_pitfall": check_naive_shard_map_pitfall,
    "pytrees_keys_and_sizes": check_pytrees_keys_and_sizes,
    "padding_copies_first": check_padding_copies_first,
    "depth_sweep_sharded": check_depth_sweep_sharded,
    "data_parallel_gradient": check_data_parallel_gradient,
    "shard_batch_indivisible": check_shard_batch_indivisible,
    "global_array_and_meshes": check_global_array_and_meshes,
    "fit_stacked_integration": check_fit_stacked_integration,
}


def main() -> int:
    sys.path.insert(0, str(PATH.parents[2]))  # the repository root: the jaxvg under test
    jax.config.update("jax_numpy_rank_promotion", "raise")
    jax.config.update("jax_enable_x64", True)  # float64 by default; float32 where stated
    results = {}
    for name, check in CHECKS.items():
        start, cpu = time.perf_counter(), time.process_time()
        try:
            results[name] = {"ok": True, **check()}
        except Exception:
            results[name] = {"ok": False, "detail": traceback.format_exc()}
        results[name]["seconds"] = round(time.perf_counter() - start, 2)
        results[name]["cpu_seconds"] = round(time.process_time() - cpu, 2)
    print("RESULTS " + json.dumps(results), flush=True)
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
