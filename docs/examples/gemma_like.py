"""A tiny decoder-only transformer written the way public JAX models are (Gemma-like: RMSNorm,
rotary positions, a gated MLP, tied embedding and unembedding, `__call__(tokens, positions, mask)`),
and the wrapper that puts it under jaxvg's block contract.

docs/your_model.md shows this code verbatim (tests/measure/test_your_model.py checks that the page's
blocks are slices of this file and runs them).
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

import jaxvg

# --- the model, as its authors wrote it ---------------------------------------------------------


def rope(x, positions, base=10_000):
    """Rotary position embedding of x (batch, seq, heads, head_dim) at int positions (batch, seq)."""
    half = x.shape[-1] // 2
    freq = base ** (-jnp.arange(half, dtype=x.dtype) / half)
    angle = positions[:, :, None, None].astype(x.dtype) * freq[None, None, None, :]
    x1, x2, cos, sin = x[..., :half], x[..., half:], jnp.cos(angle), jnp.sin(angle)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


class Embedder(nnx.Module):
    def __init__(self, vocab, d, *, param_dtype, rngs):
        self.table = nnx.Param(jax.random.normal(rngs.params(), (vocab, d), param_dtype) / math.sqrt(d))

    def encode(self, tokens):  # (batch, seq) int -> (batch, seq, d)
        return self.table[...][tokens] * math.sqrt(self.table[...].shape[1])

    def decode(self, x):  # (batch, seq, d) -> logits (batch, seq, vocab), through the same table
        return jnp.einsum("bsd,vd->bsv", x, self.table[...])


class Attention(nnx.Module):
    def __init__(self, d, heads, *, param_dtype, rngs):
        self.heads = heads
        self.qkv = nnx.Linear(d, 3 * d, use_bias=False, param_dtype=param_dtype, rngs=rngs)
        self.out = nnx.Linear(d, d, use_bias=False, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x, positions, mask):  # mask (batch, seq, seq): query i may attend to key j
        b, s, d = x.shape
        q, k, v = jnp.split(self.qkv(x).reshape(b, s, 3 * self.heads, d // self.heads), 3, axis=2)
        q, k = rope(q, positions), rope(k, positions)
        logits = jnp.einsum("bshk,bthk->bhst", q, k) / math.sqrt(d // self.heads)
        probs = jax.nn.softmax(jnp.where(mask[:, None], logits, -1e30), axis=-1)
        return self.out(jnp.einsum("bhst,bthk->bshk", probs, v).reshape(b, s, d))


class GatedMLP(nnx.Module):
    def __init__(self, d, hidden, *, param_dtype, rngs):
        self.gate_proj = nnx.Linear(d, hidden, use_bias=False, param_dtype=param_dtype, rngs=rngs)
        self.up_proj = nnx.Linear(d, hidden, use_bias=False, param_dtype=param_dtype, rngs=rngs)
        self.down_proj = nnx.Linear(hidden, d, use_bias=False, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x):
        return self.down_proj(jax.nn.gelu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nnx.Module):
    def __init__(self, d, heads, hidden, *, param_dtype, rngs):
        self.pre_attention_norm = nnx.RMSNorm(d, param_dtype=param_dtype, rngs=rngs)
        self.attn = Attention(d, heads, param_dtype=param_dtype, rngs=rngs)
        self.pre_ffw_norm = nnx.RMSNorm(d, param_dtype=param_dtype, rngs=rngs)
        self.mlp = GatedMLP(d, hidden, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x, positions, mask):
        x = x + self.attn(self.pre_attention_norm(x), positions, mask)
        return x + self.mlp(self.pre_ffw_norm(x))


class TinyGemma(nnx.Module):
    def __init__(self, vocab=32, d=16, heads=2, hidden=32, layers=3, *, param_dtype=jnp.float32, rngs):
        self.embedder = Embedder(vocab, d, param_dtype=param_dtype, rngs=rngs)
        self.layers = nnx.List(
            [DecoderLayer(d, heads, hidden, param_dtype=param_dtype, rngs=rngs) for _ in range(layers)]
        )
        self.final_norm = nnx.RMSNorm(d, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, tokens, positions, mask):  # -> logits (batch, seq, vocab)
        x = self.embedder.encode(tokens)
        for layer in self.layers:
            x = layer(x, positions, mask)
        return self.embedder.decode(self.final_norm(x))


def causal_mask(input_mask):
    """(batch, seq, seq) attention mask from (batch, seq) booleans, True for real tokens."""
    seq = input_mask.shape[1]
    return input_mask[:, None, :] & jnp.tril(jnp.ones((seq, seq), bool))[None]


# --- the wrapper: the same modules under the block contract -------------------------------------


class Encode(nnx.Module):  # embed: tokens -> h_0
    def __init__(self, embedder):
        self.embedder = embedder

    def __call__(self, tokens):
        return jaxvg.tap(self, "h", self.embedder.encode(tokens))  # tap: a no-op outside tapped_gradients


class Decode(nnx.Module):  # head: h_L -> logits, through the embed's table (tied: allowed)
    def __init__(self, final_norm, embedder):
        self.final_norm, self.embedder = final_norm, embedder

    def __call__(self, h):
        return self.embedder.decode(self.final_norm(h))


class Layer(nnx.Module):  # block: h -> layer(h, positions, mask), the context bound for one batch
    def __init__(self, layer, positions, mask):
        self.layer = layer
        self.positions, self.mask = nnx.Variable(positions), nnx.Variable(mask)
        self.kernel_path = ("layer", "mlp", "gate_proj", "kernel")  # fills |dL/dK|
        self.activation = jax.nn.gelu  # with preactivation: fills rms phi' and dead frac

    def context(self, h):  # the first h.shape[0] examples' (jaxvg compares on x[:8])
        return self.positions[...][: h.shape[0]], self.mask[...][: h.shape[0]]

    def preactivation(self, h):  # the argument of gelu: the MLP's gate
        x = h + self.layer.attn(self.layer.pre_attention_norm(h), *self.context(h))
        return self.layer.mlp.gate_proj(self.layer.pre_ffw_norm(x))

    def __call__(self, h):
        return jaxvg.tap(self, "h", self.layer(h, *self.context(h)))


class Measured(nnx.Module):  # measured(tokens) == model(tokens, positions, mask), one batch's context
    def __init__(self, model, positions, mask):
        self.model = model
        self.embed = Encode(model.embedder)
        self.blocks = nnx.List([Layer(layer, positions, mask) for layer in model.layers])
        self.head = Decode(model.final_norm, model.embedder)

    def __call__(self, tokens):  # the original forward: jaxvg checks the contract against it
        return self.model(tokens, *self.blocks[0].context(tokens))
