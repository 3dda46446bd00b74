"""docs/your_model.md, "Measuring a model you did not write" (issue 12 §4): its code is what runs, and
the measures agree with float64 brute force through the *original* models, not through the wrappers:

- a Gemma-like decoder (docs/examples/gemma_like.py): rotary positions and an attention mask bound
  into the blocks, tied embedding/unembedding, the hooks that fill every `flow_table` column, taps,
  tied blocks refused and measured through the untied copy;
- an MLP-Mixer whose blocks already take one array (only `embed` and `head` are wrapped);
- a scan-over-layers MLP with batch norm and dropout (docs/examples/scan_mlp.py): its stacked layers
  unstacked into blocks, and taps inside the scan with one entry per layer.
"""

import contextlib
import io
import math
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxvg
from docs.examples import gemma_like, scan_mlp

from .references import TOL64, token_loss

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "your_model.md").read_text()
F64 = jnp.float64


def _log10_norm(a):
    return math.log10(float(jnp.linalg.norm(jnp.ravel(a))))


def _tree_log10_norm(tree):
    return 0.5 * math.log10(sum(float(jnp.sum(v**2)) for v in jax.tree.leaves(tree)))


def _act_grads(stages, loss, h0):
    """log10 ||d loss(stages[-1](...stages[l](h_l)))/d h_l||_F for l = 0..L by plain `jax.grad` of
    the remaining network from h_l (no chaining, no renormalisation), and the h_l."""
    hs = [h0]
    for f in stages:
        hs.append(f(hs[-1]))

    @jax.jit
    def grads(hs):
        return [jax.grad(lambda h, i=i: loss(_run(stages[i:], h)))(hs[i]) for i in range(len(stages) + 1)]

    return np.array([_log10_norm(g) for g in grads(hs)]), hs


def _run(stages, h):
    for f in stages:
        h = f(h)
    return h


def _jacrev_norms(stages, hs):
    """log10 ||dh_L/dh_l||_F per example (batch, L+1), from the diagonal blocks of `jax.jacrev` of
    the whole batch (the examples do not interact)."""

    @jax.jit
    def jacobians(hs):
        return [jax.jacrev(lambda h, i=i: _run(stages[i:], h))(hs[i]) for i in range(len(stages) + 1)]

    batch = hs[0].shape[0]
    rows = []
    for jac, h in zip(jacobians(hs), hs, strict=True):
        jac = np.asarray(jac).reshape(batch, -1, batch, h[0].size)
        rows.append([_log10_norm(jac[b, :, b]) for b in range(batch)])
    return np.array(rows).T


# ------------------------------------------------------------------------------------------------
# The page: its code blocks are the example files, and running them prints what it shows
# ------------------------------------------------------------------------------------------------


def test_page_blocks_are_the_example_files_verbatim_and_readme_links_the_page():
    blocks = re.findall(r"```python\n(.*?)```", PAGE, re.S)
    from_files = 0
    for block in blocks:
        first, _, body = block.partition("\n")
        m = re.fullmatch(r"# (docs/examples/\w+\.py)", first)
        if m:
            assert body.strip() in (ROOT / m.group(1)).read_text(), f"{m.group(1)} differs from the page"
            from_files += 1
    assert from_files == 4  # the two models, the Gemma wrapper and the unstacking recipe
    assert "](docs/your_model.md)" in (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([\w./-]+)\)", PAGE):
        assert (ROOT / "docs" / target).exists(), target


def _numbers_and_words(text):
    """The numbers of `text` and the text between them (whitespace-normalised)."""
    parts = re.split(r"(-?\d+\.\d*|-?\d+)", text)
    return [float(p) for p in parts[1::2]], [" ".join(p.split()) for p in parts[0::2]]


@pytest.mark.slow
def test_page_code_runs_and_prints_what_the_page_shows():
    namespace: dict = {"__name__": "your_model_page"}
    printed = None
    shown = 0
    for kind, body in re.findall(r"```(python|text)\n(.*?)```", PAGE, re.S):
        if kind == "python":
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                exec(compile(body, "docs/your_model.md", "exec"), namespace)
            printed = buf.getvalue()
            continue
        got_numbers, got_words = _numbers_and_words(printed)
        want_numbers, want_words = _numbers_and_words(body)
        assert got_words == want_words, (printed, body)
        # printed to 3 decimals; float32 rounding on another platform may move the last digit
        np.testing.assert_allclose(got_numbers, want_numbers, rtol=0, atol=2e-3, err_msg=body)
        shown += 1
    assert shown == 6
    ns = namespace
    for field in ("log10_kernel_grad", "log10_dphi", "dead_fraction"):  # the hooks fill the columns
        assert np.isfinite(np.asarray(getattr(ns["per_use"], field))).all(), field
    assert "—" not in jaxvg.flow_table(ns["per_use"])
    np.testing.assert_allclose(ns["tied_norms"].log10_fro, jaxvg.jacobian_norms(ns["untied"], ns["tokens"]).log10_fro,
                               rtol=0, atol=1e-5)  # fmt: skip
    assert not np.array_equal(ns["train_flow"].log10_act_grad, ns["flow"].log10_act_grad)


# ------------------------------------------------------------------------------------------------
# The Gemma-like decoder in float64: wrapper against the original model
# ------------------------------------------------------------------------------------------------


def _gemma_batch(batch=10, seq=5, vocab=11):
    """Tokens, labels, left padding (per-example positions and masks) and more than 8 examples, so
    that the forward check (first 8 examples) needs `Layer.context`'s slicing."""
    tokens = jax.random.randint(jax.random.key(1), (batch, seq), 0, vocab)
    labels = jax.random.randint(jax.random.key(2), (batch, seq), 0, vocab)
    pad = jnp.arange(batch) % 3  # 0, 1 or 2 padding tokens on the left
    input_mask = jnp.arange(seq)[None, :] >= pad[:, None]
    positions = jnp.maximum(jnp.cumsum(input_mask, axis=1) - 1, 0)
    mask = gemma_like.causal_mask(input_mask) | jnp.eye(seq, dtype=bool)[None]  # padding attends to itself
    return tokens, labels, positions, mask


def _gemma_reference(model, tokens, labels, positions, mask):
    """Per-layer numbers of gradient_flow through the original TinyGemma's own modules."""
    stages = [lambda h, layer=layer: layer(h, positions, mask) for layer in model.layers]
    act, hs = _act_grads(stages, lambda h: token_loss(model.embedder.decode(model.final_norm(h)), labels),
                         model.embedder.encode(tokens))  # fmt: skip

    def loss(m):
        return token_loss(m(tokens, positions, mask), labels)

    grads = nnx.grad(loss)(model)
    param = [_tree_log10_norm(grads["layers"][i]) for i in range(len(model.layers))]
    kernel = [
        _log10_norm(grads["layers"][i]["mlp"]["gate_proj"]["kernel"][...]) for i in range(len(model.layers))
    ]
    dphi, dead = [], []
    for layer, h in zip(model.layers, hs, strict=False):
        x = h + layer.attn(layer.pre_attention_norm(h), positions, mask)
        z = layer.mlp.gate_proj(layer.pre_ffw_norm(x))
        d = jax.vmap(jax.grad(jax.nn.gelu))(z.reshape(-1)).reshape(z.shape)
        dphi.append(0.5 * math.log10(float(jnp.mean(d**2))))
        dead.append(float(jnp.mean(jnp.all(d == 0, axis=0))))
    return act, hs, np.array(param), np.array(kernel), np.array(dphi), np.array(dead), float(loss(model))


@pytest.mark.slow  # over 20 s on 2 cores, cold cache
def test_gemma_wrapper_measures_the_original_model_float64(x64):
    model = gemma_like.TinyGemma(
        vocab=11, d=8, heads=2, hidden=12, layers=3, param_dtype=F64, rngs=nnx.Rngs(0)
    )
    tokens, labels, positions, mask = _gemma_batch()
    measured = gemma_like.Measured(model, positions, mask)
    contract = measured.head(
        measured.blocks[2](measured.blocks[1](measured.blocks[0](measured.embed(tokens))))
    )
    original = model(tokens, positions, mask)
    assert original.dtype == F64
    np.testing.assert_allclose(contract, original, rtol=0, atol=1e-12)

    flow = jaxvg.gradient_flow(measured, tokens, labels, loss="cross_entropy")
    act, hs, param, kernel, dphi, dead, loss = _gemma_reference(model, tokens, labels, positions, mask)
    np.testing.assert_allclose(flow.log10_act_grad, act, rtol=0, atol=TOL64)
    np.testing.assert_allclose(flow.log10_gain, act[:-1] - act[1:], rtol=0, atol=TOL64)
    np.testing.assert_allclose(flow.log10_param_grad, param, rtol=0, atol=TOL64)
    np.testing.assert_allclose(flow.log10_kernel_grad, kernel, rtol=0, atol=TOL64)
    np.testing.assert_allclose(flow.log10_dphi, dphi, rtol=0, atol=TOL64)
    np.testing.assert_allclose(flow.dead_fraction, dead, rtol=0, atol=0)
    np.testing.assert_allclose(flow.loss, loss, rtol=1e-12)
    table = jaxvg.flow_table(flow)
    assert "—" not in table and len(table.splitlines()) == 1 + 4 + 1  # header, h_0..h_3, summary: no footnote

    stages = [lambda h, layer=layer: layer(h, positions, mask) for layer in model.layers]
    want = _jacrev_norms(stages, hs)
    exact = jaxvg.jacobian_norms(measured, tokens)
    np.testing.assert_allclose(exact.log10_fro, want, rtol=0, atol=TOL64)
    hutch = jaxvg.jacobian_norms(measured, tokens, method="hutchinson", num_probes=64, key=jax.random.key(3))
    err = np.abs(np.asarray(hutch.log10_fro) - want)
    assert np.all(err <= 5 * np.asarray(hutch.log10_fro_stderr) + 1e-12), (err, hutch.log10_fro_stderr)

    taps = jaxvg.tapped_gradients(_loss_through_blocks, measured, tokens, labels)
    assert list(taps) == ["blocks/0/h", "blocks/1/h", "blocks/2/h", "embed/h"]
    got = [float(taps[k].log10_grad_norm) for k in ("embed/h", "blocks/0/h", "blocks/1/h", "blocks/2/h")]
    np.testing.assert_allclose(got, act, rtol=0, atol=TOL64)


def test_unwrapped_layers_and_a_wrong_wrapper_are_refused_with_the_reason():
    model = gemma_like.TinyGemma(vocab=11, d=8, heads=2, hidden=12, layers=2, rngs=nnx.Rngs(2))
    tokens, labels, positions, mask = _gemma_batch(batch=2, seq=3)
    raw = gemma_like.Measured(model, positions, mask)
    raw.blocks = nnx.List(list(model.layers))  # the layers as they are: they need positions and mask
    with pytest.raises(
        ValueError, match=r"`model.blocks\[0\]` \(DecoderLayer\) fails .* Bind the other arguments"
    ):
        jaxvg.gradient_flow(raw, tokens, labels, loss="cross_entropy")
    swapped = gemma_like.Measured(model, positions, mask)
    swapped.blocks = nnx.List(list(swapped.blocks)[::-1])  # __call__ still runs the original order
    with pytest.raises(ValueError, match="differs from the block-contract forward"):
        jaxvg.gradient_flow(swapped, tokens, labels, loss="cross_entropy")


def _loss_through_blocks(m, tokens, labels):
    h = m.embed(tokens)
    for block in m.blocks:
        h = block(h)
    return jaxvg.nn.losses.cross_entropy(m.head(h), labels)


class _SharedLayers(gemma_like.Measured):
    def __init__(self, model, positions, mask, depth=3):
        super().__init__(model, positions, mask)
        self.blocks = nnx.List([self.blocks[0]] * depth)

    def __call__(self, tokens):
        h = self.embed(tokens)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


@pytest.mark.slow  # over 20 s on 2 cores, cold cache
def test_tied_blocks_are_refused_and_their_untied_copy_has_the_tied_models_act_grads(x64):
    model = gemma_like.TinyGemma(
        vocab=11, d=8, heads=2, hidden=12, layers=1, param_dtype=F64, rngs=nnx.Rngs(1)
    )
    tokens, labels, positions, mask = _gemma_batch(batch=3, seq=4)
    shared = _SharedLayers(model, positions, mask)
    with pytest.raises(
        ValueError, match=r"`model.blocks\[0\]` and `model.blocks\[1\]` hold the same module object"
    ):
        jaxvg.gradient_flow(shared, tokens, labels, loss="cross_entropy")
    untied = nnx.clone(shared)
    untied.blocks = nnx.List([nnx.clone(b) for b in untied.blocks])
    flow = jaxvg.gradient_flow(untied, tokens, labels, loss="cross_entropy")
    layer = model.layers[0]
    act, _ = _act_grads([lambda h: layer(h, positions, mask)] * 3,
                        lambda h: token_loss(model.embedder.decode(model.final_norm(h)), labels),
                        model.embedder.encode(tokens))  # fmt: skip
    np.testing.assert_allclose(flow.log10_act_grad, act, rtol=0, atol=TOL64)
    np.testing.assert_allclose(
        jaxvg.jacobian_norms(shared, tokens).log10_fro,
        jaxvg.jacobian_norms(untied, tokens).log10_fro,
        rtol=0,
        atol=TOL64,
    )


# ------------------------------------------------------------------------------------------------
# An MLP-Mixer: the blocks take one array already; embed and head are wrapped
# ------------------------------------------------------------------------------------------------


class MlpBlock(nnx.Module):
    def __init__(self, d, hidden, *, rngs):
        self.fc1 = nnx.Linear(d, hidden, param_dtype=F64, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, d, param_dtype=F64, rngs=rngs)

    def __call__(self, x):
        return self.fc2(jax.nn.gelu(self.fc1(x)))


class MixerBlock(nnx.Module):
    def __init__(self, tokens, channels, *, rngs):
        self.norm1 = nnx.LayerNorm(channels, param_dtype=F64, rngs=rngs)
        self.token_mixing = MlpBlock(tokens, 2 * tokens, rngs=rngs)
        self.norm2 = nnx.LayerNorm(channels, param_dtype=F64, rngs=rngs)
        self.channel_mixing = MlpBlock(channels, 2 * channels, rngs=rngs)

    def __call__(self, x):  # (batch, tokens, channels)
        x = x + jnp.swapaxes(self.token_mixing(jnp.swapaxes(self.norm1(x), 1, 2)), 1, 2)
        return x + self.channel_mixing(self.norm2(x))


class MlpMixer(nnx.Module):
    """As the MLP-Mixer paper's reference code lays it out: stem, mixer blocks, norm, pool, head."""

    def __init__(self, *, image=4, patch=2, channels=4, depth=3, classes=3, rngs):
        self.stem = nnx.Conv(1, channels, (patch, patch), strides=(patch, patch), padding="VALID",
                             param_dtype=F64, rngs=rngs)  # fmt: skip
        tokens = (image // patch) ** 2
        self.mixer_blocks = nnx.List([MixerBlock(tokens, channels, rngs=rngs) for _ in range(depth)])
        self.pre_head_layer_norm = nnx.LayerNorm(channels, param_dtype=F64, rngs=rngs)
        self.head = nnx.Linear(channels, classes, param_dtype=F64, rngs=rngs)

    def __call__(self, images):
        x = self.stem(images)
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        for block in self.mixer_blocks:
            x = block(x)
        return self.head(jnp.mean(self.pre_head_layer_norm(x), axis=1))


class Patches(nnx.Module):
    def __init__(self, stem):
        self.stem = stem

    def __call__(self, images):
        x = self.stem(images)
        return x.reshape(x.shape[0], -1, x.shape[-1])


class PoolHead(nnx.Module):
    def __init__(self, norm, head):
        self.norm, self.head = norm, head

    def __call__(self, h):
        return self.head(jnp.mean(self.norm(h), axis=1))


class MixerAsBlocks(nnx.Module):
    def __init__(self, model):
        self.model = model
        self.embed = Patches(model.stem)
        self.blocks = model.mixer_blocks
        self.head = PoolHead(model.pre_head_layer_norm, model.head)

    def __call__(self, images):
        return self.model(images)


def test_mlp_mixer_float64(x64):
    model = MlpMixer(rngs=nnx.Rngs(0))
    images = jax.random.normal(jax.random.key(0), (3, 4, 4, 1), F64)
    y = jax.random.normal(jax.random.key(1), (3, 3), F64)
    wrapped = MixerAsBlocks(model)
    h = wrapped.embed(images)
    for block in wrapped.blocks:
        h = block(h)
    np.testing.assert_allclose(wrapped.head(h), model(images), rtol=0, atol=1e-12)

    def mse(h):
        return jnp.mean((model.head(jnp.mean(model.pre_head_layer_norm(h), axis=1)) - y) ** 2)

    stem = model.stem(images)
    act, hs = _act_grads(list(model.mixer_blocks), mse, stem.reshape(3, -1, 4))
    flow = jaxvg.gradient_flow(wrapped, images, y)
    np.testing.assert_allclose(flow.log10_act_grad, act, rtol=0, atol=TOL64)
    exact = jaxvg.jacobian_norms(wrapped, images)
    want = _jacrev_norms(list(model.mixer_blocks), hs)
    np.testing.assert_allclose(exact.log10_fro, want, rtol=0, atol=TOL64)


# ------------------------------------------------------------------------------------------------
# Scan over layers with batch norm and dropout: unstacked blocks, and taps inside the scan
# ------------------------------------------------------------------------------------------------

DEPTH, WIDTH = 5, 6


def _scan_model(dropout=0.2, block=scan_mlp.Block, dtype=F64):
    model = scan_mlp.ScanMLP(
        d=WIDTH, depth=DEPTH, dropout=dropout, param_dtype=dtype, block=block, rngs=nnx.Rngs(0)
    )
    # running statistics away from (0, 1), so that the eval view is not ~identity, in the parameters'
    # dtype (nnx.BatchNorm keeps them in float32 whatever its param_dtype)
    bn = model.layers.bn
    bn.mean = nnx.BatchStat(0.3 * jax.random.normal(jax.random.key(7), bn.mean[...].shape, dtype))
    bn.var = nnx.BatchStat(jnp.exp(jax.random.normal(jax.random.key(8), bn.var[...].shape, dtype)))
    return model


def _scan_stages(model, train):
    """The layers as pure float64 functions of the stacked arrays (BatchNorm by hand)."""
    lin, bn = model.layers.linear, model.layers.bn
    k, b, scale, bias = lin.kernel[...], lin.bias[...], bn.scale[...], bn.bias[...]
    mean, var = bn.mean[...], bn.var[...]

    def layer(i):
        def f(h):
            z = h @ k[i] + b[i][None]
            mu, v = (jnp.mean(z, 0), jnp.var(z, 0)) if train else (mean[i], var[i])
            return jax.nn.gelu(
                (z - mu[None]) / jnp.sqrt(v[None] + bn.epsilon) * scale[i][None] + bias[i][None]
            )

        return f

    return [layer(i) for i in range(DEPTH)]


def _mse(y):
    return lambda h: jnp.mean((h - y) ** 2)


def test_scanned_layers_as_blocks_float64(x64):
    model = _scan_model()
    x = jax.random.normal(jax.random.key(0), (4, WIDTH), F64)
    y = jax.random.normal(jax.random.key(1), (4, WIDTH), F64)
    blocks = scan_mlp.LayersAsBlocks(model)
    assert len(blocks.blocks) == DEPTH
    evaluation = nnx.view(model, deterministic=True, use_running_average=True)
    act, hs = _act_grads(_scan_stages(model, train=False), _mse(y), x)
    np.testing.assert_allclose(hs[-1], evaluation(x), rtol=0, atol=1e-12)  # the hand-written reference
    flow = jaxvg.gradient_flow(blocks, x, y)
    np.testing.assert_allclose(flow.log10_act_grad, act, rtol=0, atol=TOL64)
    exact = jaxvg.jacobian_norms(blocks, x)
    stages = _scan_stages(model, train=False)
    np.testing.assert_allclose(exact.log10_fro, _jacrev_norms(stages, hs), rtol=0, atol=TOL64)
    table = jaxvg.flow_table(flow)
    assert np.isfinite(np.asarray(flow.log10_kernel_grad)).all()  # Block has an nnx.Linear at `linear`
    assert table.count("—") == 2 * DEPTH + 1 and "does not expose its activation" in table

    # train view: batch statistics (examples coupled), dropout off (rate 0) so that it is exact
    model0 = _scan_model(dropout=0.0)
    train_flow = jaxvg.gradient_flow(scan_mlp.LayersAsBlocks(model0), x, y, train=True, key=jax.random.key(2))
    act_train, _ = _act_grads(_scan_stages(model0, train=True), _mse(y), x)
    np.testing.assert_allclose(train_flow.log10_act_grad, act_train, rtol=0, atol=TOL64)
    assert np.abs(act_train - act).max() > 0.01


def test_scanned_dropout_needs_a_key_and_depends_only_on_it():
    model = _scan_model(dtype=jnp.float32)
    x = jax.random.normal(jax.random.key(0), (4, WIDTH))
    y = jax.random.normal(jax.random.key(1), (4, WIDTH))
    blocks = scan_mlp.LayersAsBlocks(model)
    with pytest.raises(ValueError, match="key"):
        jaxvg.gradient_flow(blocks, x, y, train=True)
    a, b, c = (jaxvg.gradient_flow(blocks, x, y, train=True, key=jax.random.key(k)) for k in (5, 5, 6))
    np.testing.assert_array_equal(a.log10_act_grad, b.log10_act_grad)
    assert not np.array_equal(a.log10_act_grad, c.log10_act_grad)
    counts = nnx.state(model, nnx.RngCount)
    jaxvg.gradient_flow(blocks, x, y, train=True, key=jax.random.key(5))
    assert jax.tree.all(jax.tree.map(jnp.array_equal, counts, nnx.state(model, nnx.RngCount)))  # not mutated


class _TappedBlock(scan_mlp.Block):
    def __call__(self, x):
        return jaxvg.tap(self, "h", super().__call__(x))


def _eval_mse(m, x, y):
    return jnp.mean((nnx.view(m, deterministic=True, use_running_average=True)(x) - y) ** 2)


def test_taps_inside_the_scan_match_the_unstacked_blocks_float64(x64):
    x = jax.random.normal(jax.random.key(0), (4, WIDTH), F64)
    y = jax.random.normal(jax.random.key(1), (4, WIDTH), F64)
    taps = jaxvg.tapped_gradients(_eval_mse, _scan_model(block=_TappedBlock), x, y)
    assert list(taps) == [f"layers/{i}/h" for i in range(DEPTH)]
    flow = jaxvg.gradient_flow(scan_mlp.LayersAsBlocks(_scan_model()), x, y)
    got = [float(t.log10_grad_norm) for t in taps.values()]
    np.testing.assert_allclose(got, flow.log10_act_grad[1:], rtol=0, atol=TOL64)
