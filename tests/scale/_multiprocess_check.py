"""One process of the two-process test in test_distributed.py (next to this file).

    python tests/scale/_multiprocess_check.py PROCESS_ID NUM_PROCESSES PORT OUT.npz [LOCAL_DEVICES]

Each process gets LOCAL_DEVICES (default 2) CPU devices (XLA_FLAGS, set before jax starts), joins
the others through `jaxvg.scale.initialize("127.0.0.1:PORT", ...)` (Gloo collectives over loopback
TCP) and computes, on the global mesh of all processes' devices, from its own block of the data: a
sharded sum, a data-parallel MLP gradient, and a `jaxvg.scale.map_nets` sweep. It writes the global
results to OUT.npz. `compute` also runs in one process (the reference).
"""

from __future__ import annotations

import os
import pathlib
import sys

if __name__ == "__main__":  # before jax starts: this process's CPU devices
    os.environ["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count={sys.argv[5] if len(sys.argv) > 5 else 2}"
    )
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # the repository root: jaxvg

import jax
import jax.numpy as jnp
import numpy as np

PATH = pathlib.Path(__file__).resolve()
N_NETS, BATCH, IN, WIDTH, OUT = 8, 16, 3, 8, 1


def full_data():
    """The whole problem, identical in every process (numpy, float64)."""
    rng = np.random.default_rng(0)
    return {
        "values": np.arange(32.0) / 7,
        "x": rng.normal(size=(BATCH, IN)),
        "y": rng.normal(size=(BATCH, OUT)),
        "params": [
            rng.normal(size=(IN, WIDTH)) / np.sqrt(IN),
            rng.normal(size=(WIDTH, OUT)) / np.sqrt(WIDTH),
        ],
        "sigma_w2": np.linspace(0.5, 2.5, N_NETS),
        "seeds": np.arange(N_NETS, dtype=np.int32),
    }


def loss(params, x, y):
    h = jnp.tanh(x @ params[0])
    return jnp.mean((h @ params[1] - y) ** 2)


def net(sigma_w2, seed, x, y):
    """One net of the sweep: init from its seed and sigma_w2, one SGD step, with a zero bias made
    here (the device-invariant-array case)."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    w1 = jnp.sqrt(sigma_w2 / IN) * jax.random.normal(k1, (IN, WIDTH), x.dtype)
    w2 = jax.random.normal(k2, (WIDTH, OUT), x.dtype) / np.sqrt(WIDTH)
    b = jnp.zeros(WIDTH, x.dtype)

    def f(p):
        return jnp.mean((jnp.tanh(x @ p[0] + p[2][None, :]) @ p[1] - y) ** 2)

    value, grads = jax.value_and_grad(f)((w1, w2, b))
    return {"loss": value, "grad_b": grads[2], "w1": w1 - 0.1 * grads[0]}


def compute() -> dict[str, np.ndarray]:
    """Everything on the global mesh; each process supplies its own block of rows."""
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxvg import scale

    data = full_data()
    p, n_proc = jax.process_index(), jax.process_count()

    def mine(a):  # this process's block of rows
        rows = len(a) // n_proc
        return a[p * rows : (p + 1) * rows]

    out = {}
    mesh = scale.device_mesh("batch", scope="global")
    values = scale.global_array(mine(data["values"]), mesh, "batch")
    out["sum"] = np.asarray(jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))(values))

    x, y = scale.global_array((mine(data["x"]), mine(data["y"])), mesh, "batch")
    step = jax.jit(jax.value_and_grad(loss), out_shardings=NamedSharding(mesh, P()))
    value, grads = step(data["params"], x, y)  # numpy params: replicated on every device
    out["dp_loss"] = np.asarray(value)
    out["dp_grad0"], out["dp_grad1"] = (np.asarray(g) for g in grads)

    mesh = scale.device_mesh("nets", scope="global")
    sigma_w2, seeds = scale.global_array((mine(data["sigma_w2"]), mine(data["seeds"])), mesh, "nets")
    sweep = scale.map_nets(net, sigma_w2, seeds, shared=(data["x"], data["y"]), mesh=mesh)
    sweep = multihost_utils.process_allgather(sweep, tiled=True)
    out.update({f"sweep_{k}": np.asarray(v) for k, v in sweep.items()})
    return out


def main() -> None:
    process_id, num_processes, port, out_path = (
        int(sys.argv[1]),
        int(sys.argv[2]),
        int(sys.argv[3]),
        sys.argv[4],
    )
    local_devices = int(sys.argv[5]) if len(sys.argv) > 5 else 2
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_rank_promotion", "raise")
    from jaxvg import scale

    info = scale.initialize(f"127.0.0.1:{port}", num_processes, process_id, initialization_timeout=60)
    assert (info.process_index, info.process_count) == (process_id, num_processes), info
    assert (info.local_device_count, info.device_count) == (local_devices, local_devices * num_processes), (
        info
    )
    result = compute()
    np.savez(out_path, **result, device_count=info.device_count)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
