"""Input-output Jacobians of a block model: per-example norms, singular values, Lyapunov exponents.

J_{L<-l} = dh_L/dh_l = J_L ... J_{l+1}, with J_j = dh_j/dh_{j-1} the Jacobian of block j, for
l = 0..L (J_{L<-L} = I). Products of many J_j underflow or overflow in float32; as in
`gradient_flow`, every chain here is renormalised after each block and its log scale accumulated, so
the results are exact to working precision at any depth. Fields are in decades (log10).

- `jacobian_norms`: ||J_{L<-l}||_F per example for every l, exactly (all dim h_L basis cotangents)
  or by Hutchinson's estimator with a standard error.
- `jacobian_spectrum`: for one example, the singular values of J_{L<-l} and the Lyapunov exponents
  of the block chain (QR method).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxvg import checks
from jaxvg.measure import engine, host, lognorm, plan, validate
from jaxvg.nn import contracts

__all__ = [
    "METHODS",
    "JacobianNorms",
    "JacobianSpectrum",
    "hutchinson_stderr",
    "jacobian_norms",
    "jacobian_norms_from_split",
    "jacobian_spectrum",
    "probe_cotangents",
]

METHODS = ("exact", "hutchinson")


@struct.dataclass
class JacobianNorms:
    """Per-example norms of the input-output Jacobians J_{L<-l} = dh_L/dh_l, l = 0..L.

    Attributes:
      log10_fro: (batch, L+1) log10 ||J_{L<-l}||_F per example (column L: log10 sqrt(dim h_L)).
      log10_msv: (batch, L+1) log10(||J||_F^2 / dim h_L), the mean eigenvalue of J J^T.
      log10_fro_stderr: (batch, L+1) standard error of `log10_fro` in decades (zeros for "exact").
    """

    log10_fro: jax.Array
    log10_msv: jax.Array
    log10_fro_stderr: jax.Array


@struct.dataclass
class JacobianSpectrum:
    """Singular values and Lyapunov exponents of the Jacobians of one example.

    Attributes:
      log10_sv: tuple, one array per requested layer l of the min(dim h_L, dim h_l) singular values of
        J_{L<-l} in decades, descending; NaN below max(dim h_L, dim h_l) * eps * sigma_1.
      log10_lyapunov: (k,) Lyapunov exponents for l = layers[0], decades per block, descending.
    """

    log10_sv: tuple[jax.Array, ...]
    log10_lyapunov: jax.Array


# --------------------------------------------------------------------------------------------------
# Norms
# --------------------------------------------------------------------------------------------------


def probe_cotangents(
    method: str, num_probes: int, key: jax.Array | None, shape: tuple[int, ...], dtype: Any
) -> jax.Array:
    """The starting cotangents of a Jacobian-norm chain at h of `shape` (batch, *trailing).

    "exact": the dim h basis vectors, shape (dim h, batch, *trailing) (the same for every example);
    "hutchinson": `num_probes` Rademacher probes drawn from `key`, shape (num_probes, batch,
    *trailing). ||J||_F^2 is the sum (exact) or the mean (Hutchinson) of ||J^T c_k||^2 over axis 0.
    """
    batch, trailing = shape[0], tuple(shape[1:])
    if method == "hutchinson":
        return rademacher(key, (num_probes, batch) + trailing, dtype)
    dim = int(np.prod(trailing, dtype=np.int64))
    eye = jnp.eye(dim, dtype=dtype).reshape((dim, 1) + trailing)
    return jnp.broadcast_to(eye, (dim, batch) + trailing)


def rademacher(key: jax.Array, shape: tuple[int, ...], dtype: Any) -> jax.Array:
    """Independent ±1 entries of `shape`, each sign one bit of `jax.random.bits` (32 signs per
    uint32 word): the distribution of `jax.random.rademacher` from 1/32 of its random words, whose
    generation (threefry) dominates the cost of a probe draw."""
    n = math.prod(shape)
    words = jax.random.bits(key, (-(-n // 32),), jnp.uint32)
    bits = (words[:, None] >> jnp.arange(32, dtype=jnp.uint32)[None]) & 1
    return (2 * bits.reshape(-1)[:n].astype(dtype) - 1).reshape(shape)


def hutchinson_stderr(q: jax.Array, mean: Any, *, axis: int) -> jax.Array:
    """Delta-method standard error, in decades, of log10 sqrt(mean_k q_k) from K probe values q_k
    along `axis` whose mean is `mean` (broadcastable to q with `axis` kept): 0.5 * se(mean) / mean
    / ln 10 with se(mean) = sqrt(var_k(q) / K). `axis` is removed from the result."""
    k = q.shape[axis]
    var = jnp.sum(jnp.square(q - mean), axis=axis, keepdims=True) / max(k - 1, 1)
    return jnp.squeeze(0.5 * jnp.sqrt(var / k) / mean / lognorm.LN10, axis=axis)


def _norms_core(
    program: engine.BlockProgram,
    arrays: engine.BlockArrays,
    x,
    key,
    *,
    method: str,
    num_probes: int,
    precision: str | None = "highest",
) -> JacobianNorms:
    with host.precision_scope(precision):
        return _norms_kernel(program, arrays, x, key, method=method, num_probes=num_probes)


def _unit_probes(cts: jax.Array, hutch: bool) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """`lognorm.normalise_probes(cts, hutch)` of the starting cotangents, in closed form: every entry
    of a Rademacher probe is ±1 and every basis vector has one 1, so each example's probes have
    squared norm n = K * dim h (Hutchinson) or dim h (exact), and each probe's share is 1/K. No
    reduction over the probes, so XLA draws them once, fused into the first VJP's input (it had
    drawn the random bits three times: a depth-20 width-128 batch-32 k=8 public call went from 1.94
    to 1.79 of a value_and_grad on one CPU thread)."""
    k, batch, dim = cts.shape[0], cts.shape[1], math.prod(cts.shape[2:])
    dt = jnp.promote_types(cts.dtype, jnp.float32)
    total = jnp.full((batch,), k * dim if hutch else dim, dt)  # the sums of squares, exact
    u = (cts.astype(dt) * jax.lax.rsqrt(total).reshape((1, batch) + (1,) * (cts.ndim - 2))).astype(cts.dtype)
    q = jnp.full((k, batch), dim, dt) / total[None] if hutch else None
    return u, 0.5 * jnp.log(total), q


def _norms_kernel(program, arrays, x, key, *, method, num_probes) -> JacobianNorms:
    # jax.vjp returns a Partial pytree of residuals: the backward pass reuses this forward pass (a
    # scan stacks the residuals) instead of recomputing it.
    hL, vjps = engine.run_blocks(
        program, arrays, x, lambda piece, h: jax.vjp(lambda hh: engine.apply(*piece, hh), h)
    )
    batch, trailing = hL.shape[0], hL.shape[1:]
    dim = int(np.prod(trailing, dtype=np.int64))
    dtype = hL.dtype
    hutch = method == "hutchinson"
    key = jax.random.key(0) if hutch and key is None else key
    cts = probe_cotangents(method, num_probes, key, (batch, *trailing), dtype)
    k = cts.shape[0]

    def report(log_scale, q):
        """(log10 F, stderr) from the accumulated log scales (..., batch) and, for Hutchinson, the
        per-probe shares q (..., probes, batch); vectorised over all layers after the loop."""
        if not hutch:
            return log_scale / lognorm.LN10, jnp.zeros_like(log_scale)
        # F^2 ~ mean_k a_k with a_k = exp(2 S) q_k and sum_k q_k = 1, so F^2 = exp(2 S) / K.
        se = hutchinson_stderr(q, 1.0 / k, axis=-2)
        return (log_scale - 0.5 * math.log(k)) / lognorm.LN10, se

    u, S, q = _unit_probes(cts, hutch)

    def body(carry, piece, vjp):
        del piece
        c, S = carry
        c, dS, q = lognorm.normalise_probes(jax.vmap(lambda ct: vjp(ct)[0])(c), hutch)
        S = S + dS.astype(S.dtype)
        return (c, S), (S, q)

    _, ys = engine.map_blocks(engine.segments(program, arrays), body, (u, S), vjps, reverse=True)
    S_all, q_all = engine.concat(ys)  # (L, batch), (L, probes, batch): entry i for h_i
    S_all = jnp.concatenate([S_all, S[None]], axis=0)
    q_all = None if q is None else jnp.concatenate([q_all, q[None]], axis=0)
    fro, se = report(S_all, q_all)
    log10_fro = fro.T
    return JacobianNorms(
        log10_fro=log10_fro,
        log10_msv=2 * log10_fro - math.log10(dim),
        log10_fro_stderr=se.T,
    )


def jacobian_norms_from_split(
    graphdef: Any,
    state: Any,
    x: jax.Array,
    *,
    method: str = "exact",
    num_probes: int = 16,
    key: jax.Array | None = None,
    precision: Any = "highest",
    scan: Any = "auto",
) -> JacobianNorms:
    """Pure kernel behind `jacobian_norms` (jittable; vmappable, e.g. over `key`), the graphdef
    already in evaluation mode; `state` one State or a tuple of them. Arguments and result as
    `jacobian_norms` (no host checks; `precision` None keeps the caller's matmul precision)."""
    precision = None if precision is None else engine.check_precision(precision)
    program, arrays = engine.split_blocks_from_split(graphdef, state, scan=scan)
    return _norms_core(program, arrays, x, key, method=method, num_probes=num_probes, precision=precision)


def _norms_kernel_for(plan_: plan.Plan, *, method: str, num_probes: int, precision: str) -> Callable:
    def kernel(direct, stacked, x, key):
        arrays = plan_.assemble(direct, stacked)
        return _norms_core(
            plan_.program, arrays, x, key, method=method, num_probes=num_probes, precision=precision
        )

    return jax.jit(kernel)


def planned_norms(
    plan_: plan.Plan,
    leaves: list,
    x: Any,
    *,
    method: str,
    num_probes: int,
    key: Any,
    precision: Any,
    check_forward: bool = True,
) -> JacobianNorms:
    """`jacobian_norms` of the model that `leaves` and `plan_` (evaluation mode) describe."""
    checks.choice("method", method, METHODS)
    checks.positive_int("num_probes", num_probes)
    key = validate.check_key(key)
    precision = engine.check_precision(precision)
    x = validate.check_x(plan_.input_features, x)
    validate.check_forward(plan_, leaves, x, compare=check_forward, precision=precision)
    plan_.output_shape(leaves, x)
    if method == "hutchinson":
        key = jax.random.key(0) if key is None else engine.as_key(key)
    else:
        key, num_probes = None, 1
    fn = plan_.kernel(
        ("norms", method, num_probes, precision),
        functools.partial(_norms_kernel_for, method=method, num_probes=num_probes, precision=precision),
    )
    direct, stacked = plan_.inputs(leaves)
    return fn(direct, stacked, x, key)


def jacobian_norms(
    model: contracts.BlockModel,
    x: jax.Array,
    *,
    method: str = "exact",
    num_probes: int = 16,
    key: jax.Array | None = None,
    precision: Any = "highest",
    scan: Any = "auto",
    check_forward: bool = True,
) -> JacobianNorms:
    """Per-example Frobenius norms of J_{L<-l} = dh_L/dh_l for every l, exact or by Hutchinson.

    "exact": the dim h_L basis vectors e_i of h_L are pushed back through the block VJPs together
    (vmapped), ||J||_F^2 = sum_i ||J^T e_i||^2. "hutchinson": K Rademacher probes u (E uu^T = I),
    ||J||_F^2 ~ (1/K) sum_k ||J^T u_k||^2, one backward pass for all layers; standard error by the
    delta method, se(log10 F) = se(mean a) / (2 ln10 mean a) with a_k = ||J^T u_k||^2. Each example's
    probes are renormalised together after every block (one scale per example, its log accumulated;
    one pass over the probes when the plain sums of squares are exact), so nothing underflows at any
    depth. Evaluation mode. log10_msv = log10(||J||_F^2 / dim h_L), the mean eigenvalue of J J^T,
    what chi_1^(L-l) predicts. Loop, caching and `Probe` as in `gradient_flow`.

    Args:
      model: block model (`contracts.BlockModel`); not mutated.
      x: inputs (batch, ...).
      method: "exact" or "hutchinson".
      num_probes: Hutchinson probes K (ignored for "exact").
      key: `jax.random.key` for the probes; default `jax.random.key(0)`.
      precision: matmul precision of the measurement (default "highest"; see `gradient_flow`).
      scan: "auto", True or False (see `gradient_flow`).
      check_forward: compare `model(x)` with the contract forward once per structure (see
        `gradient_flow`).
    Returns:
      `JacobianNorms`, each field (batch, L+1) in decades. Any rank of h_l (a CNN's
      (batch, height, width, channels) into a dense block's (batch, width)).
    Raises:
      TypeError: `model` without `blocks`, or a part of it that is not an NNX module; `key` that
        is not a `jax.random.key` (checked for every method).
      ValueError: unknown `method`, `num_probes` < 1, `x` without a batch axis, empty, non-finite
        or that does not fit the model, a block that breaks the contract, `model(x)` that differs from
        the contract forward, an invalid `precision` or `scan`.
    References:
      Hutchinson, A stochastic estimator of the trace of the influence matrix for Laplacian smoothing
      splines, 1989; Pennington et al., The emergence of spectral universality in deep networks, 2018,
      https://arxiv.org/abs/1802.09979

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxvg
      >>> from jaxvg import measure
      >>> model = jaxvg.MLP(4, 8, 3, None, rngs=nnx.Rngs(0))
      >>> norms = measure.jacobian_norms(model, jnp.ones((2, 4)))
      >>> norms.log10_fro.shape, round(float(norms.log10_fro[0, -1]), 4)  # ||I_8||_F = sqrt(8)
      ((2, 4), 0.4515)
    """
    checks.choice("method", method, METHODS)
    checks.positive_int("num_probes", num_probes)
    plan_, leaves = plan.lookup(model, train=False, scan=scan, checks=(validate.check_model,))
    return planned_norms(
        plan_, leaves, x, method=method, num_probes=num_probes, key=key, precision=precision,
        check_forward=check_forward,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Spectrum
# --------------------------------------------------------------------------------------------------


def _block_vjp(piece: engine.Piece, h: jax.Array, cts: jax.Array) -> jax.Array:
    """VJPs of one block at h, vmapped over a leading probe axis of `cts`."""
    _, vjp = jax.vjp(lambda hh: engine.apply(*piece, hh), h)
    return jax.vmap(lambda c: vjp(c)[0])(cts)


def _spectrum_core(
    program: engine.BlockProgram,
    arrays: engine.BlockArrays,
    x,
    *,
    layers: tuple[int, ...],
    precision: str | None = "highest",
) -> JacobianSpectrum:
    with host.precision_scope(precision):
        return _spectrum_kernel(program, arrays, x, layers=layers)


def _spectrum_kernel(program, arrays, x, *, layers) -> JacobianSpectrum:
    segs = engine.segments(program, arrays)
    depth = program.depth
    hL, inputs = engine.run_blocks(program, arrays, x[None], lambda piece, h: (engine.apply(*piece, h), h))
    inputs = engine.per_block(segs, inputs)  # h_0..h_{L-1}
    pieces = engine.block_pieces(segs)
    dims = [int(np.prod(h.shape[1:], dtype=np.int64)) for h in inputs] + [int(np.prod(hL.shape[1:]))]
    dtype = hL.dtype
    eps = float(jnp.finfo(dtype).eps)
    n_out = dims[-1]

    # Singular values: push the basis of h_L back with one common scale per block.
    c = jnp.eye(n_out, dtype=dtype).reshape((n_out, 1) + hL.shape[1:])
    S = jnp.zeros((), dtype)
    mats = {}
    for l in range(depth - 1, min(layers) - 1, -1):  # noqa: E741
        c, dS = lognorm.normalise(_block_vjp(pieces[l], inputs[l], c))
        S = S + dS
        if l in layers:
            mats[l] = (c.reshape(n_out, dims[l]), S)
    log10_sv = []
    for l in layers:  # noqa: E741
        m, S_l = mats[l]
        s = jnp.linalg.svd(m, compute_uv=False)
        tol = max(m.shape) * eps * s[0]
        log10_sv.append(jnp.where(s > tol, jnp.log10(jnp.where(s > 0, s, 1)) + S_l / lognorm.LN10, jnp.nan))

    # Lyapunov exponents from l0 = layers[0]: Q_j R_j = J_j Q_{j-1}, Q_l = I.
    l0 = layers[0]
    k = min(dims[l0:])
    q = jnp.eye(dims[l0], dtype=dtype).reshape((dims[l0], 1) + inputs[l0].shape[1:])
    total = jnp.zeros((k,), dtype)
    for l in range(l0, depth):  # noqa: E741
        piece, h = pieces[l], inputs[l]
        t = jax.vmap(
            lambda tt, h=h, piece=piece: jax.jvp(lambda hh: engine.apply(*piece, hh), (h,), (tt,))[1]
        )(q)
        a = t.reshape(t.shape[0], -1).T  # (dim h_{l+1}, columns)
        qm, r = jnp.linalg.qr(a)
        total = total + jnp.log(jnp.abs(jnp.diagonal(r)[:k]))
        q = qm.T.reshape((qm.shape[1],) + t.shape[1:])
    lyap = jnp.sort(total / (depth - l0) / lognorm.LN10)[::-1]
    return JacobianSpectrum(log10_sv=tuple(log10_sv), log10_lyapunov=lyap)


def _spectrum_kernel_for(plan_: plan.Plan, *, layers: tuple[int, ...], precision: str) -> Callable:
    def kernel(direct, stacked, x):
        return _spectrum_core(
            plan_.program, plan_.assemble(direct, stacked), x, layers=layers, precision=precision
        )

    return jax.jit(kernel)


def planned_spectrum(
    plan_: plan.Plan, leaves: list, x: Any, *, layers: Any, precision: Any, check_forward: bool = True
) -> JacobianSpectrum:
    """`jacobian_spectrum` of the model that `leaves` and `plan_` (evaluation mode) describe."""
    layers = _check_layers(layers, plan_.program.depth)
    x = _check_example(plan_.input_features, x)
    validate.check_finite("x", x)
    precision = engine.check_precision(precision)
    validate.check_forward(plan_, leaves, x[None], compare=check_forward, precision=precision)
    plan_.output_shape(leaves, x[None])  # x must be one example: the model takes x[None]
    fn = plan_.kernel(
        ("spectrum", layers, precision),
        functools.partial(_spectrum_kernel_for, layers=layers, precision=precision),
    )
    direct, stacked = plan_.inputs(leaves)
    return fn(direct, stacked, x)


def _check_layers(layers: Any, depth: int) -> tuple[int, ...]:
    if isinstance(layers, int | np.integer) and not isinstance(layers, bool):
        layers = (layers,)
    try:
        layers = tuple(layers)
    except TypeError:
        raise TypeError(f"`layers` must be a sequence of ints in [0, {depth}), got {layers!r}.") from None
    if not layers:
        raise ValueError(f"`layers` must name at least one layer in [0, {depth}), got {layers!r}.")
    for l in layers:  # noqa: E741
        if isinstance(l, bool) or not isinstance(l, int | np.integer) or not 0 <= l < depth:
            raise ValueError(f"`layers` must hold ints in [0, {depth}) (L = {depth} blocks), got {layers!r}.")
    return tuple(int(l) for l in layers)  # noqa: E741


def _check_example(d_in: int | None, x: Any) -> jax.Array:
    """`x` as ONE example (no batch axis) with the model's input size `d_in`, where it is known."""
    x = jnp.asarray(x)
    if d_in is not None:
        if x.ndim != 1:
            raise ValueError(
                f"`x` must be ONE example of shape ({d_in},) (no batch axis), got shape {x.shape}; "
                "call jacobian_spectrum per example (or jacobian_norms for a batch)."
            )
        if x.shape[0] != d_in:
            raise ValueError(f"`x` must have {d_in} features, got shape {x.shape}.")
    return x


def jacobian_spectrum(
    model: contracts.BlockModel,
    x: jax.Array,
    *,
    layers: Sequence[int] = (0,),
    precision: Any = "highest",
    scan: Any = "auto",
    check_forward: bool = True,
) -> JacobianSpectrum:
    """Singular values of J_{L<-l} = dh_L/dh_l and Lyapunov exponents, for one example.

    Singular values: the dim h_L basis of h_L is pushed back through the block VJPs (vmapped), with one
    common renormalisation after every block (its log accumulated), giving exp(-S) J_{L<-l} exactly;
    its SVD gives the singular values exact relative to the largest. Values below
    max(dim h_L, dim h_l) * eps * sigma_1 (working precision) are NaN: use float64 or the Lyapunov
    spectrum for the tail.

    Lyapunov exponents (QR method), for l = layers[0]: Q_l = I; for j = l+1..L,
    Q_j R^(j) = J_j Q_{j-1} (reduced QR of the basis pushed forward by JVPs);
    lambda_i = (1/(L-l)) sum_j log10 |R^(j)_ii|, i < k = min_{j>=l} dim h_j, sorted descending:
    signed per-block rates in decades, the typical finite-width rate. The block loop is unrolled
    (one SVD/QR per block): meant for moderate depth.

    Args:
      model: block model (`contracts.BlockModel`; its evaluation view is used); not mutated.
      x: ONE example, without the batch axis (the model's input shape minus the batch).
      layers: the layers l (0 <= l < L) whose J_{L<-l} spectrum to return.
      precision: matmul precision of the measurement (default "highest"; see `gradient_flow`).
      scan: "auto", True or False: how the forward pass loops (see `gradient_flow`); the
        per-block SVD/QR chain is unrolled whatever it is.
      check_forward: compare `model(x[None])` with the contract forward once per structure (see
        `gradient_flow`).
    Returns:
      `JacobianSpectrum` with `log10_sv` (one array of min(dim h_L, dim h_l) values per layer,
      descending, decades) and `log10_lyapunov` (k,) decades per block.
    Raises:
      TypeError: `model` without `blocks`, or a part of it that is not an NNX module.
      ValueError: `x` with a batch axis, the wrong feature size or a NaN/Inf; a block that breaks the
        contract; `model(x[None])` that differs from the contract forward; `layers` out of range;
        an invalid `precision` or `scan`.
    References:
      Pennington, Schoenholz, Ganguli, The emergence of spectral universality in deep networks, 2018,
      https://arxiv.org/abs/1802.09979 ; Benettin et al., Lyapunov characteristic exponents for smooth
      dynamical systems, Meccanica 15, 1980 (the QR method).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxvg
      >>> from jaxvg import measure
      >>> model = jaxvg.MLP(6, 6, 4, None, activation="linear", init="orthogonal", use_bias=False,
      ...                   rngs=nnx.Rngs(0))
      >>> spec = measure.jacobian_spectrum(model, jnp.ones(6), layers=(0, 2))
      >>> [round(float(abs(v).max()), 4) for v in spec.log10_sv]  # orthogonal: every sv is 1
      [0.0, 0.0]
    """
    plan_, leaves = plan.lookup(model, train=False, scan=scan, checks=(validate.check_model,))
    return planned_spectrum(plan_, leaves, x, layers=layers, precision=precision, check_forward=check_forward)
