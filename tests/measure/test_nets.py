"""Many nets at once: chunks sized from the memory budget give the unchunked results, a chunked run's
peak memory (RSS of a subprocess) stays under the budget plus a stated margin, and the gradient-flow
kernel never holds all L parameter gradients (XLA's memory analysis)."""

import json
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxvg
from jaxvg import measure
from jaxvg.measure import nets

from .references import data


def _stacked(n, d_in, width, depth, d_out, batch, seed=0):
    models = [jaxvg.MLP(d_in, width, depth, d_out, rngs=nnx.Rngs(seed + s)) for s in range(n)]
    gd, _ = nnx.split(models[0])
    state = jax.tree.map(lambda *a: jnp.stack(a), *[nnx.split(m)[1] for m in models])
    xs = jax.random.normal(jax.random.key(seed), (n, batch, d_in))
    ys = jax.random.normal(jax.random.key(seed + 1), (n, batch, d_out))
    return gd, state, xs, ys


def test_map_nets_chunks_by_budget_and_equals_vmap():
    w = jax.random.normal(jax.random.key(0), (7, 16, 16))
    x = jax.random.normal(jax.random.key(1), (7, 32, 16))

    def fn(w, x):
        return jnp.tanh(x @ w).sum(0)

    want = jax.vmap(fn)(w, x)
    per_net = nets.per_net_bytes(fn, w[0], x[0])
    assert per_net >= (16 * 16 + 32 * 16) * 4  # at least its inputs
    for budget, chunk in [(10**9, 7), (3 * per_net, 3), (1, 1)]:
        got = nets.map_nets(fn, w, x, max_memory=budget)
        assert nets.last_chunk() == chunk
        # float32 sums of 32 tanh values: a chunk of 3 and one of 7 may be vectorised differently
        # (1.4e-6 apart at LLVM -O0, the suite's; within rtol 1e-6 at -O2)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
        got = jax.jit(lambda w, x, budget=budget: nets.map_nets(fn, w, x, max_memory=budget))(
            w, x
        )  # in a trace
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match=r"same leading nets axis"):
        nets.map_nets(fn, w, x[:3])
    with pytest.raises(ValueError, match=r"`max_memory` must be an integer >= 1, got 0"):
        nets.map_nets(fn, w, x, max_memory=0)
    assert nets.memory_budget() > 0 and nets.memory_budget(123) == 123


def test_stacked_gradient_flow_from_split_equals_vmap_in_chunks():
    gd, state, xs, ys = _stacked(5, 3, 16, 4, 2, 8)
    vmapped = jax.jit(jax.vmap(lambda s, x, y: measure.gradient_flow_from_split(gd, s, x, y, loss="mse")))
    want = vmapped(state, xs, ys)
    got = measure.gradient_flow_from_split(gd, state, xs, ys, loss="mse", stacked=True, max_memory=1)
    assert nets.last_chunk() == 1 and got.log10_act_grad.shape == (5, 5)
    chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-6)
    got = measure.gradient_flow_from_split(
        gd, state, xs, ys, loss="mse", stacked=True
    )  # auto budget: one chunk
    assert nets.last_chunk() == 5
    chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-6)
    # dropout keys: one shared key, or one per net
    gd_d, state_d, _, _ = _stacked(3, 3, 16, 4, 2, 8)
    keys = jax.random.split(jax.random.key(0), 3)
    per_net = measure.gradient_flow_from_split(
        gd_d, state_d, xs[:3], ys[:3], loss="mse", key=keys, stacked=True
    )
    shared = measure.gradient_flow_from_split(
        gd_d, state_d, xs[:3], ys[:3], loss="mse", key=keys[0], stacked=True
    )
    one = measure.gradient_flow_from_split(
        gd_d, jax.tree.map(lambda v: v[1], state_d), xs[1], ys[1], loss="mse", key=keys[1]
    )
    chex.assert_trees_all_close(jax.tree.map(lambda v: v[1], per_net), one, rtol=1e-6, atol=1e-6)
    assert shared.log10_act_grad.shape == (3, 5)


@pytest.mark.parametrize("depth,scan,bound", [(24, "auto", 0.25), (160, "auto", 1.25)])
def test_the_kernel_holds_one_block_of_parameter_gradients_at_a_time(depth, scan, bound):
    """XLA's memory analysis of `gradient_flow_from_split` at width 256, batch 8: the temporaries
    stay far below the parameters' size when unrolled, and below 1.25x when scanned (the scanned run
    is stacked inside the trace: one copy of its parameters). Holding every block's gradient, as the
    first version did, took 2.1x the parameters at depth 160."""
    model = jaxvg.MLP(256, 256, depth, 10, rngs=nnx.Rngs(0))
    gd, state = nnx.split(model)
    x, y = jnp.ones((8, 256)), jnp.zeros((8, 10))
    kernel = jax.jit(lambda s, x, y: measure.gradient_flow_from_split(gd, s, x, y, loss="mse", scan=scan))
    stats = kernel.lower(state, x, y).compile().memory_analysis()
    params = sum(v.size * v.dtype.itemsize for v in jax.tree.leaves(state))
    assert stats.temp_size_in_bytes < bound * params, (stats.temp_size_in_bytes, params)


_RSS_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    import jaxvg
    from jaxvg import measure
    from jaxvg.measure import nets

    n, width, depth, batch, max_memory, out = sys.argv[1:]
    n, width, depth, batch = int(n), int(width), int(depth), int(batch)
    max_memory = None if max_memory == "none" else int(max_memory)
    models = [jaxvg.MLP(width, width, depth, 4, rngs=nnx.Rngs(s)) for s in range(n)]
    gd, _ = nnx.split(models[0])
    state = jax.tree.map(lambda *a: jnp.stack(a), *[nnx.split(m)[1] for m in models])
    del models
    xs = jax.random.normal(jax.random.key(0), (n, batch, width))
    ys = jax.random.normal(jax.random.key(1), (n, batch, 4))
    jax.block_until_ready((state, xs, ys))

    def status(field):  # bytes, from /proc/self/status (VmRSS: now, VmHWM: peak since the reset)
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field + ":"))

    try:  # reset the peak to the current RSS (Linux >= 4.0), so the setup's own peak does not count
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before, peak = status("VmRSS"), lambda: status("VmHWM")
    except OSError:  # no reset: the lifetime peak (ru_maxrss) may hide the call's growth
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    flow = measure.gradient_flow_from_split(gd, state, xs, ys, loss="mse", stacked=True,
                                            max_memory=max_memory if max_memory else 10**12)
    act = np.asarray(flow.log10_act_grad)
    after = peak()
    np.save(out, act)
    print(json.dumps({"before": before, "after": after, "chunk": nets.last_chunk()}))
    """
)


def _rss_run(run_python, tmp_path, name, max_memory, shape):
    out = tmp_path / f"{name}.npy"
    (stdout,) = run_python(["-c", _RSS_SCRIPT, *shape, max_memory, out], timeout=600)
    info = json.loads(stdout.strip().splitlines()[-1])
    return info, np.load(out)


@pytest.mark.slow
def test_chunked_run_fits_max_memory_and_equals_the_unchunked_run(tmp_path, run_python):
    """40 nets of depth 4, width 64, batch 6144: measured all at once (one jitted vmap), the
    process's resident memory grows by ~550 MB (XLA's analysis: ~12 MB of buffers per net, plus
    compilation; ~770 MB when the unchunked vmap ran op by op). With
    max_memory = 96 MB (chunks of 8 nets), the peak resident memory during the call (VmHWM after
    resetting it) exceeds the resident memory before it by at most max_memory + 200 MB: the margin
    covers XLA's compilation inside the call (~150 MB measured here, with chunks of one net as of
    eight) and allocator slack. The chunked results equal the unchunked ones (float32 rounding: 1e-5
    decades)."""
    shape = (40, 64, 4, 6144)
    max_memory = 96 * 2**20
    margin = 200 * 2**20
    chunked, got = _rss_run(run_python, tmp_path, "chunked", max_memory, shape)
    whole, want = _rss_run(run_python, tmp_path, "whole", "none", shape)
    assert whole["chunk"] == 40 and 1 <= chunked["chunk"] < 40
    grown = chunked["after"] - chunked["before"]
    grown_whole = whole["after"] - whole["before"]
    assert grown_whole > max_memory + margin, (grown_whole, grown)  # the unchunked run would not fit
    assert grown <= max_memory + margin, (grown / 2**20, chunked)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_max_memory_is_validated():
    gd, state, xs, ys = _stacked(2, 3, 8, 2, 2, 4)
    with pytest.raises(ValueError, match=r"`max_memory` must be an integer >= 1, got -5"):
        measure.gradient_flow_from_split(gd, state, xs, ys, loss="mse", stacked=True, max_memory=-5)
    x, y = data(0, 4, 3, 2, jnp.float32)
    one = measure.gradient_flow_from_split(gd, jax.tree.map(lambda v: v[0], state), x, y, loss="mse")
    assert one.log10_act_grad.shape == (3,)
