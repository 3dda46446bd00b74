"""Tests for jaxvg.scale.memory: the estimate against hand counts and XLA, and check_fits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest

from jaxvg import scale


def test_estimate_bytes_by_hand():
    # 2 nets, in 3 -> width 4 (depth 2) -> out 1, batch 5, float32, adam (2 slots)
    est = scale.estimate_bytes(2, 4, 2, 5, in_features=3, out_features=1)
    params = 3 * 4 + 4 + (4 * 4 + 4) + 4 * 1 + 1  # 41 per net
    assert est.params_bytes == est.gradients_bytes == 2 * params * 4
    assert est.optimizer_bytes == 2 * 2 * params * 4
    assert est.activations_bytes == 2 * 5 * (3 + 2 * 2 * 4 + 1) * 4
    assert est.total == 2 * (4 * params + 5 * 20) * 4
    assert scale.estimate_bytes(3, 4, 2, 5, in_features=3, out_features=1, n_devices=2).total == est.total


def test_estimate_bytes_scales_as_nets_width2_depth():
    def params_part(**kw):
        base = {"n_nets": 10, "width": 256, "depth": 20, "batch": 1}
        e = scale.estimate_bytes(**{**base, **kw}, in_features=1, out_features=1, optimizer_slots=0)
        return e.params_bytes

    ref = params_part()
    assert params_part(n_nets=20) == 2 * ref
    assert params_part(width=512) / ref == pytest.approx(4.0, rel=0.01)
    assert params_part(depth=40) / ref == pytest.approx(2.0, rel=0.06)
    assert (
        scale.estimate_bytes(1, 8, 2, 4, in_features=2, out_features=1, dtype=jnp.bfloat16).total * 2
        == scale.estimate_bytes(1, 8, 2, 4, in_features=2, out_features=1).total
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
    est = scale.estimate_bytes(n, width, depth, batch, in_features=8, out_features=2, optimizer_slots=2)
    assert 0.5 <= est.total / xla <= 2.0, (est, ma)


def test_check_fits_passes_small_and_fails_large_with_a_clear_message():
    scale.check_fits(scale.estimate_bytes(8, 32, 4, 16, in_features=4, out_features=1))
    scale.check_fits(1024)
    big = scale.estimate_bytes(100_000, 4096, 100, 1024, in_features=784, out_features=10)
    with pytest.raises(ValueError) as err:
        scale.check_fits(big)
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
        scale.check_fits(10**18)


class _FakeGPU:
    platform = "gpu"

    def memory_stats(self):
        return {"bytes_limit": 16 * 2**30, "bytes_in_use": 6 * 2**30}


def test_check_fits_uses_memory_stats_on_accelerators():
    assert scale.available_bytes(_FakeGPU()) == (10 * 2**30, "GPU memory_stats")
    est = scale.estimate_bytes(1000, 512, 10, 64, in_features=10, out_features=10)  # about 38 GiB
    with pytest.raises(
        ValueError, match=r"\(0.8 x 10.00 GiB free, GPU memory_stats\).* run at most 2\d\d nets"
    ):
        scale.check_fits(est, device=_FakeGPU())
    scale.check_fits(
        scale.estimate_bytes(100, 512, 10, 64, in_features=10, out_features=10), device=_FakeGPU()
    )


def test_available_bytes_on_cpu_is_host_memory():
    free, source = scale.available_bytes()
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
        scale.check_fits(**kwargs)


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
        scale.estimate_bytes(**args)
