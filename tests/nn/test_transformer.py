"""`jaxvg.nn.transformer`: a float64 reference written here from the equations (not from the
module's code), each variant's defining property, the causal mask, and named errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxvg
from jaxvg.nn import contracts, transformer

EPS = transformer.LAYER_NORM_EPSILON


# ----------------------------------------------------------------------------- float64 reference


def _params(model):
    """Every weight as a plain float64 array, read by attribute access."""

    def lin(m):
        return {"w": m.kernel[...], "b": m.bias[...]}

    def ln(m):
        return None if m is None else {"g": m.scale[...], "b": m.bias[...]}

    blocks = []
    for b in model.blocks:
        a = b.attention
        blocks.append(
            {
                "q": lin(a.query),
                "k": lin(a.key),
                "v": lin(a.value),
                "o": lin(a.out),
                "f1": lin(b.ffn.linear),
                "f2": lin(b.ffn.out),
                "ln1": ln(b.norm_attention),
                "ln2": ln(b.norm_ffn),
                "alpha": None if b.alpha is None else b.alpha[...],
            }
        )
    emb = model.embed
    token = {"table": emb.token.embedding[...]} if emb.vocab_size is not None else lin(emb.token)
    head = None if model.head is None else {"lin": lin(model.head.linear), "ln": ln(model.head.norm)}
    return {"token": token, "blocks": blocks, "head": head}


def _ref_ln(p, x):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + EPS) * p["g"] + p["b"]


def _ref_attention(p, h, heads, causal):
    b, s, d = h.shape
    e = d // heads
    out = []
    for i in range(heads):  # one head at a time, no einsum
        cols = slice(i * e, (i + 1) * e)
        q = h @ p["q"]["w"][:, cols] + p["q"]["b"][cols]
        k = h @ p["k"]["w"][:, cols] + p["k"]["b"][cols]
        v = h @ p["v"]["w"][:, cols] + p["v"]["b"][cols]
        scores = q @ jnp.swapaxes(k, 1, 2) / math.sqrt(e)  # (b, s, s)
        if causal:
            scores = scores - 1e300 * (1 - jnp.tril(jnp.ones((s, s))))
        w = jnp.exp(scores - scores.max(-1, keepdims=True))
        out.append((w / w.sum(-1, keepdims=True)) @ v)
    return jnp.concatenate(out, -1) @ p["o"]["w"] + p["o"]["b"]


def _ref_ffn(p, h):
    z = h @ p["f1"]["w"] + p["f1"]["b"]
    return (0.5 * z * (1 + jax.scipy.special.erf(z / math.sqrt(2)))) @ p["f2"]["w"] + p["f2"]["b"]


def _ref_block(p, h, *, norm, scale, alpha_res, heads, causal):
    a = scale if p["alpha"] is None else p["alpha"]
    for f, ln in (
        (lambda u: _ref_attention(p, u, heads, causal), p["ln1"]),
        (lambda u: _ref_ffn(p, u), p["ln2"]),
    ):
        if norm == "pre":
            h = h + a * f(_ref_ln(ln, h))
        elif norm == "post":
            h = _ref_ln(ln, alpha_res * h + a * f(h))
        else:
            h = h + a * f(h)
    return h


def _ref_embed(p, x, d):
    s = x.shape[1]
    h = p["table"][x] if "table" in p else x @ p["w"] + p["b"]
    t = np.arange(s)[:, None]
    i = np.arange(d)[None, :]
    angle = t / 10000.0 ** (2 * (i // 2) / d)
    return h + np.where(i % 2 == 0, np.sin(angle), np.cos(angle))


def _ref_head(p, h):
    if p["ln"] is not None:
        h = _ref_ln(p["ln"], h)
    return h @ p["lin"]["w"] + p["lin"]["b"]


def _ref_ce(logits, y):
    logp = logits - jax.scipy.special.logsumexp(logits, axis=-1, keepdims=True)
    return -jnp.mean(jnp.take_along_axis(logp, y[..., None], -1))


CASES = {
    "pre_causal_tokens": ({"norm": "pre"}, "tokens"),
    "post_deepnorm_bidirectional": (
        {"norm": "post", "residual_scale": "deepnorm", "causal": False},
        "tokens",
    ),
    "rezero_real_inputs": ({"norm": "none", "residual_scale": "rezero"}, "real"),
    "none_scaled_branches": ({"norm": "none", "residual_scale": 0.5}, "tokens"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_output_and_gradient_flow_match_float64_reference(x64, case):
    with jax.numpy_rank_promotion("allow"):  # the reference broadcasts (d,) against (batch, seq, d)
        _compare_with_reference(*CASES[case])


def _compare_with_reference(kw, inputs):
    V, d, L, H = 7, 8, 3, 2
    model = jaxvg.Transformer(
        V if inputs == "tokens" else (3,), d, L, H, V, param_dtype=jnp.float64, rngs=nnx.Rngs(1), **kw
    )
    for i, b in enumerate(model.blocks):  # ReZero's alpha = 0 would hide the branches
        if b.alpha is not None:
            b.alpha[...] = jnp.asarray(0.3 + 0.2 * i, jnp.float64)
    if inputs == "tokens":
        x = jax.random.randint(jax.random.key(2), (3, 5), 0, V)
    else:
        x = jax.random.normal(jax.random.key(2), (3, 5, 3), jnp.float64)
    y = jax.random.randint(jax.random.key(3), (3, 5), 0, V)
    p = _params(model)
    alpha_res = (2 * L) ** 0.25 if kw.get("residual_scale") == "deepnorm" else 1.0
    scale = kw["residual_scale"] if isinstance(kw.get("residual_scale"), float) else 1.0
    opts = {
        "norm": kw["norm"],
        "scale": scale,
        "alpha_res": alpha_res,
        "heads": H,
        "causal": kw.get("causal", True),
    }

    def from_layer(k, h, blocks):
        for bp in blocks[k:]:
            h = _ref_block(bp, h, **opts)
        return _ref_ce(_ref_head(p["head"], h), y)

    hs = [_ref_embed(p["token"], x, d)]
    for bp in p["blocks"]:
        hs.append(_ref_block(bp, hs[-1], **opts))
    np.testing.assert_allclose(
        np.asarray(model(x)), np.asarray(_ref_head(p["head"], hs[-1])), rtol=1e-12, atol=1e-12
    )

    flow = jaxvg.gradient_flow(model, x, y, loss="cross_entropy")
    act = [
        math.log10(float(jnp.linalg.norm(jax.grad(from_layer, 1)(k, hs[k], p["blocks"]))))
        for k in range(L + 1)
    ]
    blk = jax.grad(lambda bl: from_layer(0, hs[0], bl))(p["blocks"])
    par = [0.5 * math.log10(sum(float(jnp.sum(g**2)) for g in jax.tree.leaves(b))) for b in blk]
    ker = [math.log10(float(jnp.linalg.norm(b["f2"]["w"]))) for b in blk]
    np.testing.assert_allclose(np.asarray(flow.log10_act_grad), act, atol=1e-12)
    np.testing.assert_allclose(np.asarray(flow.log10_param_grad), par, atol=1e-12)
    np.testing.assert_allclose(np.asarray(flow.log10_kernel_grad), ker, atol=1e-12)
    assert float(flow.loss) == pytest.approx(float(from_layer(0, hs[0], p["blocks"])), rel=1e-12)
    # the FFN's activation derivative at its first Linear's output, the block's preactivation
    assert np.all(np.isfinite(np.asarray(flow.log10_dphi)))


# ----------------------------------------------------------------------------- variants at init


@pytest.mark.parametrize(
    "kw",
    [
        {"norm": "none", "residual_scale": "rezero"},
        {"norm": "pre", "zero_init_branches": True},
        {"norm": "none", "zero_init_branches": True},
    ],
    ids=["rezero", "zero_init_pre", "zero_init_none"],
)
def test_blocks_are_the_identity_at_init(kw):
    model = jaxvg.Transformer(9, 16, 3, 4, 9, rngs=nnx.Rngs(0), **kw)
    h = model.embed(jax.random.randint(jax.random.key(0), (2, 6), 0, 9))
    for block in model.blocks:
        np.testing.assert_array_equal(np.asarray(block(h)), np.asarray(h))  # exactly: every branch is 0 * f


def test_deepnorm_constants_and_initial_gains():
    N = 6
    alpha, beta = transformer.deepnorm_constants(N)
    assert alpha == pytest.approx(12**0.25) and beta == pytest.approx(48**-0.25)
    d = 64
    model = jaxvg.Transformer(5, d, N, 4, 5, norm="post", residual_scale="deepnorm", rngs=nnx.Rngs(0))
    block = model.blocks[0]
    assert block.residual_alpha == pytest.approx(alpha)

    def std_ratio(lin, gain):  # std / (gain * xavier std); d x 4d = 16384 entries: ~0.6% sampling error
        w = np.asarray(lin.kernel[...])
        return w.std() / (gain * math.sqrt(2.0 / sum(w.shape)))

    for lin in (block.ffn.linear, block.ffn.out, block.attention.value, block.attention.out):
        assert std_ratio(lin, beta) == pytest.approx(1.0, abs=0.05)
    for lin in (block.attention.query, block.attention.key):
        assert std_ratio(lin, 1.0) == pytest.approx(1.0, abs=0.05)


def test_scanned_blocks_equal_the_unrolled_stack(x64):
    """scan_blocks=True: the same nets (one init), the same output and parameter gradient, in float64."""
    x = jax.random.randint(jax.random.key(1), (2, 5), 0, 7)
    for kw in ({"norm": "post", "residual_scale": "deepnorm"}, {"norm": "none", "residual_scale": "rezero"}):
        models = [
            jaxvg.Transformer(7, 8, 3, 2, 7, scan_blocks=s, param_dtype=jnp.float64, rngs=nnx.Rngs(3), **kw)
            for s in (False, True)
        ]
        loss = lambda m: jnp.sum(jnp.sin(m(x)))  # noqa: E731
        (a, ga), (b, gb) = (nnx.jit(nnx.value_and_grad(loss))(m) for m in models)
        np.testing.assert_allclose(b, a, rtol=1e-12)
        for u, v in zip(jax.tree.leaves(ga), jax.tree.leaves(gb), strict=True):
            np.testing.assert_allclose(v, u, rtol=1e-10, atol=1e-13)


def test_causal_mask_output_at_t_ignores_later_tokens():
    x = jax.random.normal(jax.random.key(0), (1, 6, 3))
    for causal in (True, False):
        model = jaxvg.Transformer((3,), 8, 2, 2, 4, causal=causal, rngs=nnx.Rngs(0))
        jac = np.abs(np.asarray(jax.jacrev(lambda u, m=model: m(u)[0])(x)))  # (6, 4, 1, 6, 3)
        later = np.array([[t2 > t for t2 in range(6)] for t in range(6)])  # [t, t']
        per_pair = jac.sum(axis=(1, 2, 4))  # (t, t')
        if causal:
            assert np.all(per_pair[later] == 0.0) and np.all(per_pair[~later] > 0)
        else:
            assert np.all(per_pair > 0)


def test_block_contract_and_measure_hooks():
    model = jaxvg.Transformer(7, 8, 2, 2, 7, positional="learned", rngs=nnx.Rngs(0))
    assert isinstance(model, contracts.BlockModel)
    block = model.blocks[0]
    assert contracts.kernel_path(block) == ("ffn", "out", "kernel")
    z_of, dphi = contracts.preactivation_fn(block)
    h = model.embed(jnp.array([[1, 2, 3]]))
    assert z_of(h).shape == (1, 3, 32) and dphi is jaxvg.nn.activations.get("gelu").dfn
    x = jnp.array([[1, 2, 3, 4]])
    out = model.head(model.blocks[1](model.blocks[0](model.embed(x))))
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(out))
    assert jaxvg.Transformer(7, 8, 2, 2, None, rngs=nnx.Rngs(0)).head is None


# ----------------------------------------------------------------------------- named errors


@pytest.mark.parametrize(
    "args, kw, match",
    [
        ((7, 10, 2, 3, 7), {}, r"`d_model`=10 must be divisible by `heads`=3"),
        ((7, 8, 2, 2, 7), {"norm": "layer"}, r"`norm` must be one of .* got 'layer'"),
        (
            (7, 8, 2, 2, 7),
            {"residual_scale": "deepnorm"},
            r"`residual_scale='deepnorm'` needs `norm=\"post\"`",
        ),
        ((7, 8, 2, 2, 7), {"norm": "post", "residual_scale": "rezero"}, r"needs `norm=\"none\"`"),
        ((7, 8, 2, 2, 7), {"residual_scale": "fixup"}, r"`residual_scale` must be one of"),
        (
            (7, 8, 2, 2, 7),
            {"residual_scale": -0.5},
            r"`residual_scale` must be a finite number > 0, got -0.5",
        ),
        ((7, 8, 2, 2, 7), {"residual_scale": True}, r"`residual_scale` must be None"),
        (((3, 4), 8, 2, 2, 7), {}, r"`vocab_or_in` as a tuple must be \(in_features,\)"),
        ((7.0, 8, 2, 2, 7), {}, r"`vocab_or_in` must be an int vocabulary size"),
        ((7, 8, 0, 2, 7), {}, r"`depth` must be an integer >= 1, got 0"),
        ((7, 8, 2, 2, 7), {"activation": "sigmod"}, r"`activation` must be one of"),
        ((7, 8, 2, 2, 7), {"positional": "rotary"}, r"`positional` must be one of"),
        ((7, 8, 2, 2, 7), {"causal": "yes"}, r"`causal` must be True or False"),
        ((7, 8, 2, 2, 7), {"scan_blocks": 1}, r"`scan_blocks` must be True or False"),
        ((7, 8, 2, 2, 7), {"param_dtype": jnp.float64}, r"64-bit mode"),
    ],
)
def test_bad_arguments_are_named(args, kw, match):
    with pytest.raises(ValueError, match=match):
        jaxvg.Transformer(*args, rngs=nnx.Rngs(0), **kw)


def test_parameter_count_and_memory_check():
    model = jaxvg.Transformer(7, 8, 2, 2, 5, norm="pre", positional="learned", max_len=6, rngs=nnx.Rngs(0))
    n = sum(v.size for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert transformer.parameter_count(7, 8, 2, 5, max_len=6) == n + 2  # counts ReZero's scalar per block
    with pytest.raises(
        ValueError, match=r"Transformer\(`d_model`=1000000, `depth`=1000.*pass a smaller `d_model`"
    ):
        jaxvg.Transformer(7, 1_000_000, 1000, 2, 5, rngs=nnx.Rngs(0))


def test_bad_inputs_are_named():
    model = jaxvg.Transformer(7, 8, 1, 2, 7, max_len=4, rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match=r"integer token ids of shape \(batch, seq\).*vocab_or_in=\(in_features,\)"
    ):
        model(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"5 tokens per sequence, more than the model's `max_len`=4"):
        model(jnp.zeros((2, 5), jnp.int32))
    real = jaxvg.Transformer((3,), 8, 1, 2, 7, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"shape \(batch, seq, 3\)"):
        real(jnp.ones((2, 3, 4)))
