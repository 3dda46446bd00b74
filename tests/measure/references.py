"""Brute-force references for the measures, and the test models they run on.

Explicit Jacobians and products with no renormalisation (fine where nothing underflows), in one
jitted program each (eager `jax.jacfwd` would dominate the test time). They read the models with
plain attribute access, independently of `jaxvg.nn.contracts`.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxvg
from jaxvg.nn import losses

TOL64 = 1e-10  # decades: float64 against float64 brute force (rounding ~1e-15 per op)
TOL32 = 1e-4  # decades: float32 against a float64 reference (eps32 ~ 1e-7 times a few hundred ops).
# Holds on CPU (float32 matmuls are exact there) and on GPU/TPU with precision="highest", the measures'
# default; not with TF32 or bfloat16 matmuls (6.5e-5 decades at 50 x 512 with TF32 on an H200).


def view(model, train=False):
    return nnx.view(model, deterministic=not train, use_running_average=not train, raise_if_not_found=False)


def pure(module):
    if module is None:
        return lambda h: h
    gd, state = nnx.split(module)
    return lambda h: nnx.merge(gd, state, copy=True)(h)


def _kernel_path(block):
    """Where the block's kernel is: its own `kernel_path`, else `linear.kernel` of an nnx.Linear."""
    if hasattr(block, "kernel_path"):
        return tuple(block.kernel_path)
    return ("linear", "kernel") if isinstance(getattr(block, "linear", None), nnx.Linear) else None


def brute_force_flow(model, x, y, loss="mse", train=False):
    """log10 quantities of GradientFlow by explicit products of full jacfwd block Jacobians."""
    model_view = view(model, train)
    lossfn = losses.get(loss)
    kernel_paths = [_kernel_path(b) for b in model_view.blocks]
    has_z = [hasattr(b, "preactivation") for b in model_view.blocks]
    gd, params, rest = nnx.split(model_view, nnx.Param, ...)

    @jax.jit
    def compute(params, rest, x, y):
        m = nnx.merge(gd, params, rest, copy=True)
        embed, head = pure(getattr(m, "embed", None)), pure(getattr(m, "head", None))
        blocks = [pure(b) for b in m.blocks]
        hs = [embed(x)]
        for f in blocks:
            hs.append(f(hs[-1]))
        delta = jax.grad(lambda h: lossfn(head(h), y))(hs[-1]).reshape(-1)
        deltas = [delta]
        for f, h in zip(blocks[::-1], hs[-2::-1], strict=True):
            jac = jax.jacfwd(f)(h).reshape(delta.size, h.size)  # full J_l, batch included (couplings too)
            delta = jac.T @ delta
            deltas.append(delta)
        act = jnp.stack([jnp.linalg.norm(d) for d in deltas[::-1]])

        def full_loss(p):
            return lossfn(nnx.merge(gd, p, rest, copy=True)(x), y)

        loss_value, grads = jax.value_and_grad(full_loss)(params)
        param, kernel, dphi, dead = [], [], [], []
        for i, block in enumerate(m.blocks):
            g = grads["blocks"][i]
            param.append(jnp.sqrt(sum(jnp.sum(v**2) for v in jax.tree.leaves(g))))
            if kernel_paths[i] is None:
                kernel.append(jnp.nan)
            else:
                k = g
                for name in kernel_paths[i]:
                    k = k[name]
                kernel.append(jnp.linalg.norm(k[...]))
            if has_z[i]:
                z = nnx.merge(*nnx.split(block), copy=True).preactivation(hs[i])
                d = jax.vmap(jax.grad(block.activation.fn))(z.reshape(-1)).reshape(z.shape)
                dphi.append(jnp.sqrt(jnp.mean(d**2)))
                dead.append(jnp.mean(jnp.all(d == 0, axis=0)))
            else:
                dphi.append(jnp.nan)
                dead.append(jnp.nan)
        return act, jnp.stack(param), jnp.stack(kernel), jnp.stack(dphi), jnp.stack(dead), loss_value

    act, param, kernel, dphi, dead, loss_value = (
        np.asarray(v, np.float64) for v in compute(params, rest, x, y)
    )
    log10_act = np.log10(act)
    return dict(
        log10_act_grad=log10_act,
        log10_gain=log10_act[:-1] - log10_act[1:],
        log10_param_grad=np.log10(param),
        log10_kernel_grad=np.log10(kernel),
        log10_dphi=np.log10(dphi),
        dead_fraction=dead,
        loss=float(loss_value),
    )


def assert_flow_close(flow, ref, tol):
    for name, want in ref.items():
        got = np.asarray(getattr(flow, name), dtype=np.float64)
        np.testing.assert_allclose(
            got, want, rtol=0, atol=tol if name != "loss" else tol * abs(want) * 3, err_msg=name
        )


def brute_force_jacobian_norms(model, x):
    """log10 ||dh_L/dh_l||_F per example and layer, (batch, L+1), from full jacfwd Jacobians."""
    gd, state = nnx.split(view(model))

    @jax.jit
    def compute(state, x):
        m = nnx.merge(gd, state, copy=True)
        embed = pure(getattr(m, "embed", None))
        blocks = [pure(b) for b in m.blocks]

        def tail(h, layer):
            for g in blocks[layer:]:
                h = g(h)
            return h

        hs = [embed(x)]
        for f in blocks:
            hs.append(f(hs[-1]))
        rows = []
        for b in range(x.shape[0]):
            row = [
                jnp.linalg.norm(jax.jacfwd(tail)(hs[layer][b : b + 1], layer).reshape(-1))
                for layer in range(len(blocks) + 1)
            ]
            rows.append(jnp.stack(row))
        return jnp.stack(rows)

    return np.log10(np.asarray(compute(state, x), np.float64))


def cast(model, dtype):
    """A copy of `model` with every floating array cast to `dtype` (same values up to rounding)."""
    gd, state = nnx.split(model)
    state = jax.tree.map(lambda v: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, state)
    return nnx.merge(gd, state)


def data(key, batch, d_in, d_out, dtype):
    kx, ky = jax.random.split(jax.random.key(key))
    return jax.random.normal(kx, (batch, d_in), dtype), jax.random.normal(ky, (batch, d_out), dtype)


# ------------------------------------------------------------------------------------------------
# A transformer-style user model: embed -> residual attention and MLP blocks -> head
# ------------------------------------------------------------------------------------------------


class BlockNet(nnx.Module):
    """A user model written to the block contract: head(blocks[L-1](...blocks[0](embed(x))))."""

    def __call__(self, x):
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


class AttentionBlock(nnx.Module):
    """Pre-norm single-head causal self-attention, all in the parameters' dtype (flax's
    MultiHeadAttention rounds part of its backward pass to float32, which float64 checks would see)."""

    def __init__(self, d, *, dtype, rngs):
        self.norm = nnx.LayerNorm(d, param_dtype=dtype, rngs=rngs)
        self.q, self.k, self.v, self.o = (nnx.Linear(d, d, param_dtype=dtype, rngs=rngs) for _ in range(4))

    def __call__(self, h):
        u = self.norm(h)
        q, k, v = self.q(u), self.k(u), self.v(u)
        logits = jnp.einsum("bsd,btd->bst", q, k) / math.sqrt(h.shape[-1])
        seq = h.shape[1]
        logits = jnp.where(jnp.tril(jnp.ones((seq, seq), bool))[None], logits, -1e9)
        return h + self.o(jnp.einsum("bst,btd->bsd", jax.nn.softmax(logits, axis=-1), v))


class FeedForwardBlock(nnx.Module):
    def __init__(self, d, *, dtype, rngs):
        self.norm = nnx.LayerNorm(d, param_dtype=dtype, rngs=rngs)
        self.linear = nnx.Linear(d, 2 * d, param_dtype=dtype, rngs=rngs)
        self.out = nnx.Linear(2 * d, d, param_dtype=dtype, rngs=rngs)
        self.activation = jaxvg.nn.activations.get("gelu")

    def preactivation(self, h):
        return self.linear(self.norm(h))

    def __call__(self, h):
        return h + self.out(self.activation(self.preactivation(h)))


class TinyTransformer(BlockNet):
    def __init__(self, vocab=7, d=8, layers=2, *, dtype=jnp.float32, rngs):
        self.embed = nnx.Embed(vocab, d, param_dtype=dtype, rngs=rngs)
        blocks = []
        for _ in range(layers):
            blocks += [AttentionBlock(d, dtype=dtype, rngs=rngs), FeedForwardBlock(d, dtype=dtype, rngs=rngs)]
        self.blocks = nnx.List(blocks)
        self.head = nnx.Linear(d, vocab, param_dtype=dtype, rngs=rngs)


def token_loss(logits, labels):
    return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, labels[..., None], -1)[..., 0])


def assert_spectra_close(got, want, *, blocks, rel=1e-11, atol=1e-12):
    """Two `JacobianSpectrum`s of one model agree wherever rounding determines them.

    A rank-deficient Jacobian (layer norm's mean direction, a dead relu unit) has singular values
    that are rounding noise, of size eps * its largest or exactly 0, whose log10 differs from one
    program to another (two fusions, scanned against unrolled). So: each layer's singular values
    agree to `rel` times its largest; the log10 of those above that floor to `atol` decades; and the
    Lyapunov exponents (decades per block over `blocks` blocks) to `atol` where they lie less than
    -log10(rel) decades in all below the top one, and are both below that floor otherwise.
    """
    for g, w in zip(got.log10_sv, want.log10_sv, strict=True):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))  # (fewer singular values than slots)
        g, w = g[~np.isnan(w)], w[~np.isnan(w)]
        floor = rel * 10.0 ** w.max()
        np.testing.assert_allclose(10.0**g, 10.0**w, rtol=0, atol=floor)
        kept = 10.0**w > floor
        np.testing.assert_allclose(g[kept], w[kept], rtol=0, atol=atol)
    g, w = (np.asarray(s.log10_lyapunov, np.float64) for s in (got, want))
    noise = (w - w[0]) * blocks < np.log10(rel)
    np.testing.assert_array_equal((g - g[0]) * blocks < np.log10(rel), noise)
    np.testing.assert_allclose(g[~noise], w[~noise], rtol=0, atol=atol)
