"""Helpers shared by the theory tests: activations routed through quadrature, a Monte Carlo MLP,
and the rows of the bad-input tables (one table per public function, built in each test module)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from jaxvg.nn import activations


def erf_by_quadrature(x):
    """erf as a plain callable: `activations.get` wraps it without closed forms -> quadrature."""
    return jax.scipy.special.erf(x)


def relu_by_quadrature(x):
    return jnp.maximum(x, 0.0)


def line_moment(g, k: int, limit: float = 60.0) -> float:
    """integral of u^k g(u) du over the real line (g negligible beyond |u| = limit), by scipy."""
    parts = (
        integrate.quad(lambda u: u**k * g(u), a, b, epsabs=0, epsrel=1e-13, limit=200)[0]
        for a, b in [(-limit, 0), (0, limit)]
    )
    return float(sum(parts))


def mlp_stats(act, sw, sb, q0, *, width, depth, batch, seed=0, input_is_image=False):
    """Per-layer mean squared pre-activation and exact log10 ||dL/dh_l|| (l = 0..L) of a Gaussian
    MLP (h_l = phi(h_{l-1} W_l + b_l), h_0 = x with E x^2 = q0, or x = phi(z0) with E z0^2 = q0
    when `input_is_image`, so that z_1 is already at q0 when q0 = q*), for a random cotangent."""
    phi = activations.get(act)
    kx, kw, kb, kg = jax.random.split(jax.random.key(seed), 4)
    x = jax.random.normal(kx, (batch, width)) * jnp.sqrt(q0)
    x = phi(x) if input_is_image else x
    ws = jax.random.normal(kw, (depth, width, width)) * jnp.sqrt(sw / width)
    bs = jax.random.normal(kb, (depth, 1, width)) * jnp.sqrt(sb)
    hs, zs = [x], []
    for w, b in zip(ws, bs, strict=True):
        zs.append(hs[-1] @ w + b)
        hs.append(phi(zs[-1]))
    delta = jax.random.normal(kg, hs[-1].shape)
    log10_norms = [jnp.log10(jnp.linalg.norm(delta, axis=-1))]
    for w, z in zip(ws[::-1], zs[::-1], strict=True):
        delta = (delta * phi.dfn(z)) @ w.T
        log10_norms.append(jnp.log10(jnp.linalg.norm(delta, axis=-1)))
    q_l = jnp.stack([jnp.mean(z**2) for z in zs])
    return q_l, jnp.stack(log10_norms[::-1], axis=-1)  # (L,), (batch, L+1)


# --- bad inputs: rows (argument, value, error, match) --------------------------------------------

DEFAULTS = {"activation": "tanh", "sigma_w2": 1.5, "sigma_b2": 0.05}
SIGMAS = ("activation", "sigma_w2", "sigma_b2")


def real_rows(name: str, what: str) -> list[tuple]:
    """Non-real, None and non-finite values of a real argument whose valid range reads `what`."""
    return [
        (name, None, TypeError, rf"`{name}` must be {what}: a real number .*got None \(NoneType\)"),
        (name, "1.0", TypeError, rf"`{name}` must be {what}.*got '1.0' \(str\)"),
        (name, True, TypeError, rf"`{name}` .*got True \(bool\)"),
        (name, 1 + 2j, TypeError, rf"`{name}` .*\(complex\)"),
        (name, [1.0, None], TypeError, rf"`{name}` .*dtype object"),
        (name, np.array([True]), TypeError, rf"`{name}` .*dtype bool"),
        (name, float("nan"), ValueError, rf"`{name}` must be {what}, got nan\."),
        (name, float("inf"), ValueError, rf"`{name}` must be {what}, got inf\."),
        (name, [0.5, float("nan")], ValueError, rf"`{name}` must be {what}, got nan \(entry \(1,\)\)"),
    ]


VARIANCE = r"a finite number >= 0 \(a variance\)"
SECOND_MOMENT = r"a finite number > 0 \(a second moment\)"


def variance_rows(name: str, negative: float = -1.0) -> list[tuple]:
    return [*real_rows(name, VARIANCE), (name, negative, ValueError, rf"`{name}` must be .* got {negative}")]


def second_moment_rows(name: str) -> list[tuple]:
    return [
        *real_rows(name, SECOND_MOMENT),
        (name, 0.0, ValueError, rf"`{name}` must be .*> 0.* got 0.0"),
        (name, -2.0, ValueError, rf"`{name}` must be .* got -2.0"),
    ]


def size_rows(name: str, maximum: int) -> list[tuple]:
    """Sizes and depths: ints (not bools) in [1, maximum]."""
    return [
        (name, 0, ValueError, rf"`{name}` must be an integer >= 1"),
        (name, -3, ValueError, rf"`{name}` must be an integer >= 1 and <= {maximum}, got -3"),
        (
            name,
            maximum + 1,
            ValueError,
            rf"`{name}` must be an integer >= 1 and <= {maximum}, got {maximum + 1}",
        ),
        (name, 2.0, TypeError, rf"`{name}` must be an integer in \[1, {maximum}\], got 2.0 \(float\)"),
        (name, True, TypeError, rf"`{name}` must be an integer .*got True \(bool\)"),
        (name, "3", TypeError, rf"`{name}` must be an integer .*got '3' \(str\)"),
        (name, None, TypeError, rf"`{name}` must be an integer .*got None"),
    ]


ACTIVATION_ROWS = [
    ("activation", "tanhh", ValueError, r"`activation` must be one of \[.*\] or a callable, got 'tanhh'"),
    ("activation", None, TypeError, r"`activation` must be a name in .* or a callable, got NoneType"),
    ("activation", 3, TypeError, r"`activation` must be a name in .* or a callable, got int"),
]
SIGMA_ROWS = [*ACTIVATION_ROWS, *variance_rows("sigma_w2"), *variance_rows("sigma_b2", -0.1)]


def bad_input_params(tables: dict) -> list:
    """pytest params (function name, positional names, keywords, argument, value, error, match)."""
    return [
        pytest.param(fn, positional, keywords, *row, id=f"{fn.__name__}-{row[0]}-{i}")
        for fn, positional, keywords, rows in tables.values()
        for i, row in enumerate(rows)
    ]


def call_with(fn, positional, keywords, arg, value):
    """Call `fn` with good defaults for `positional` and `keywords`, `arg` replaced by `value`."""
    args = {name: DEFAULTS[name] for name in positional} | dict(keywords) | {arg: value}
    values = [args.pop(name) for name in positional]
    return fn(*values, **args)


def check_bad_input(fn, positional, keywords, arg, value, error, match):
    with pytest.raises(error, match=match):
        call_with(fn, positional, keywords, arg, value)
