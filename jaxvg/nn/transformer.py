"""A Transformer encoder/decoder stack that follows jaxvg's block-model contract.

`Transformer(vocab_or_in, d_model, depth, heads, out, ...)` is `embed` -> `blocks` -> `head`:

- `embed`: tokens -> h_0 of shape (batch, seq, d_model). `vocab_or_in` an int V: the inputs are
  integer token ids (batch, seq) in [0, V) looked up in an `nnx.Embed` (entries N(0, 1)); a 1-tuple
  `(in_features,)`: the inputs are real vectors (batch, seq, in_features) mapped by a `Linear`
  (Glorot normal). Either way a positional embedding is added: "sinusoidal" (Vaswani et al. 2017,
  no parameters) or "learned" ((max_len, d_model) entries N(0, 0.02^2)).
- `blocks`: `depth` `TransformerBlock`s, each an attention sublayer then an FFN sublayer.
- `head`: `Head`, the per-token `Linear` to `out` features (preceded by a final `LayerNorm` when
  norm="pre", as in Xiong et al. 2020); `out=None`: no head, the output is h_L.

`model(x)` is exactly `head(blocks[L-1](...blocks[0](embed(x))))`.

One sublayer f (attention or FFN) acting on h, by `norm` and `residual_scale` (a = the branch scale,
1 when `residual_scale` is None, the float itself when it is a float):

| norm / residual_scale | sublayer output                                                  |
|-----------------------|------------------------------------------------------------------|
| "pre"                 | h + a f(LN(h))                                                   |
| "post"                | LN(h + a f(h))                                                   |
| "none"                | h + a f(h)                                                       |
| "post", "deepnorm"    | LN(alpha h + f(h)), alpha = (2N)^(1/4); FFN, value and output    |
|                       | projections initialised with gain beta = (8N)^(-1/4) (N = depth) |
| "none", "rezero"      | h + alpha_l f(h), alpha_l a learned scalar per block, init 0     |

Attention is written out (einsum, softmax in the parameter dtype, causal mask by `jnp.where` with
the dtype's most negative finite number, so no -inf meets arithmetic): the model is exact in float64.
All kernels are Glorot (Xavier) normal, untruncated, biases zero, as in the papers below;
`zero_init_branches=True` zeroes the attention output projection and the FFN's second Linear of
every block (Fixup/T-Fixup-style: every pre-LN or no-norm block is the identity at init).

Measure hooks: each block exposes `activation` (the FFN's) and `preactivation(h)` (the FFN's first
Linear output, the activation's argument, computed from the block input h through the attention
sublayer), so `gradient_flow`'s `log10_dphi` and `dead_fraction` columns are the FFN's; and
`kernel_path = ("ffn", "out", "kernel")`, the FFN's second kernel W^2, so `log10_kernel_grad` is
the gradient whose scale Xiong et al. 2020 (Theorem 1) derive: O(d sqrt(ln d)) for post-LN at the
last layer, O(d sqrt(ln d / L)) for pre-LN. The branch scale a is a `BranchScale` variable (not a
parameter), so nets that differ only in a share one compiled program.

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> import jaxvg
  >>> model = jaxvg.Transformer(11, 16, 3, 2, 11, norm="pre", rngs=nnx.Rngs(0))
  >>> model(jnp.zeros((4, 7), jnp.int32)).shape
  (4, 7, 11)
  >>> real = jaxvg.Transformer((3,), 16, 2, 4, None, causal=False, rngs=nnx.Rngs(0))
  >>> real(jnp.ones((4, 7, 3))).shape
  (4, 7, 16)

References:
  Vaswani et al., Attention is all you need, 2017, https://arxiv.org/abs/1706.03762
  Xiong et al., On layer normalization in the Transformer architecture, 2020,
  https://arxiv.org/abs/2002.04745
  Wang et al., DeepNet: scaling Transformers to 1,000 layers, 2022, https://arxiv.org/abs/2203.00555
  Bachlechner et al., ReZero is all you need: fast convergence at large depth, 2020,
  https://arxiv.org/abs/2003.04887
  Zhang, Dauphin & Ma, Fixup initialization, 2019, https://arxiv.org/abs/1901.09321
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvg import checks
from jaxvg.nn import activations, initializers, models
from jaxvg.nn.models import check_param_dtype

NORMS = ("pre", "post", "none")
RESIDUAL_SCALES = (None, "deepnorm", "rezero")  # or a float > 0
POSITIONAL = ("sinusoidal", "learned")
LAYER_NORM_EPSILON = 1e-6  # nnx.LayerNorm's default


def deepnorm_constants(depth: int) -> tuple[float, float]:
    """DeepNorm's (alpha, beta) for an encoder of `depth` layers: alpha = (2N)^(1/4) scales the
    residual inside the post-LN, beta = (8N)^(-1/4) is the init gain of the FFN, value and output
    projections (Wang et al. 2022, Table 1, encoder-only; N = depth).

    Example:
      >>> deepnorm_constants(2)
      (1.4142135623730951, 0.5)

    References:
      Wang et al., DeepNet: scaling Transformers to 1,000 layers, 2022, https://arxiv.org/abs/2203.00555
    """
    depth = checks.positive_int("depth", depth)
    return (2.0 * depth) ** 0.25, (8.0 * depth) ** -0.25


def glorot_normal(gain: float = 1.0):
    """Initializer N(0, gain^2 * 2 / (fan_in + fan_out)), untruncated (torch's xavier_normal_(gain)):
    the registry's "glorot_normal" scheme (`jaxvg.nn.initializers.kernel_init`) times `gain`."""
    base = initializers.kernel_init("glorot_normal")

    def init(key, shape, dtype=jnp.float32):
        return gain * base(key, shape, dtype)

    return init


def sinusoidal_positions(seq: int, d_model: int, dtype: Any = jnp.float32) -> jax.Array:
    """Vaswani et al.'s (seq, d_model) table: PE[t, 2i] = sin(t / 10000^(2i/d)), PE[t, 2i+1] = cos(...)."""
    t = jnp.arange(seq, dtype=dtype)[:, None]
    i = jnp.arange(d_model)
    freq = jnp.exp(-(2 * (i // 2)).astype(dtype) / d_model * math.log(10000.0))
    angle = t * freq[None, :]
    return jnp.where(i % 2 == 0, jnp.sin(angle), jnp.cos(angle)).astype(dtype)


def _linear(m: int, n: int, gain: float, zero: bool, param_dtype, rngs: nnx.Rngs) -> nnx.Linear:
    kernel_init = nnx.initializers.zeros if zero else glorot_normal(gain)
    return nnx.Linear(
        m, n, kernel_init=kernel_init, bias_init=nnx.initializers.zeros, param_dtype=param_dtype, rngs=rngs
    )


def _layer_norm(d: int, param_dtype) -> nnx.LayerNorm:
    # scale/offset start at ones/zeros: a throwaway key keeps every later kernel the same whatever `norm` is
    return nnx.LayerNorm(d, epsilon=LAYER_NORM_EPSILON, param_dtype=param_dtype, rngs=nnx.Rngs(0))


class BranchScale(nnx.Variable):
    """The fixed branch scale a of a block (a scalar in the parameter dtype; not trained)."""


class Embed(nnx.Module):
    """Token (or real-vector) embedding plus positional embedding: x -> h_0 (batch, seq, d_model).

    Attributes:
      token: `nnx.Embed` (vocabulary inputs, int ids (batch, seq)) or `nnx.Linear` (real inputs
        (batch, seq, in_features)).
      position: "sinusoidal" (static) or an `nnx.Param` (max_len, d_model) for "learned".
      max_len: the longest sequence accepted.
    """

    def __init__(self, vocab_or_in, d_model, *, positional, max_len, param_dtype, rngs):
        if isinstance(vocab_or_in, tuple):
            self.vocab_size = None
            self.token = _linear(vocab_or_in[0], d_model, 1.0, False, param_dtype, rngs)
        else:
            self.vocab_size = vocab_or_in
            self.token = nnx.Embed(
                vocab_or_in,
                d_model,
                embedding_init=nnx.initializers.normal(1.0),
                param_dtype=param_dtype,
                rngs=rngs,
            )
        self.max_len = max_len
        self.positional = positional
        if positional == "learned":
            self.position = nnx.Param(
                0.02 * jax.random.normal(rngs.params(), (max_len, d_model), param_dtype)
            )
        else:
            self.position = None

    def __call__(self, x: jax.Array) -> jax.Array:
        """(batch, seq) int ids or (batch, seq, in_features) reals -> (batch, seq, d_model)."""
        x = jnp.asarray(x)
        if self.vocab_size is not None:
            if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.integer):
                raise ValueError(
                    f"`x` must be integer token ids of shape (batch, seq) for a vocabulary Transformer, got "
                    f"shape {x.shape} dtype {x.dtype}; pass vocab_or_in=(in_features,) for real-valued inputs."
                )
            h = self.token(x)
        else:
            if x.ndim != 3 or x.shape[-1] != self.token.in_features:
                raise ValueError(
                    f"`x` must have shape (batch, seq, {self.token.in_features}) for a Transformer with "
                    f"vocab_or_in=({self.token.in_features},), got shape {x.shape}."
                )
            h = self.token(x)
        seq = x.shape[1]
        if seq > self.max_len:
            raise ValueError(
                f"`x` has {seq} tokens per sequence, more than the model's `max_len`={self.max_len}."
            )
        if self.position is None:
            return h + sinusoidal_positions(seq, h.shape[-1], h.dtype)[None]
        return h + self.position[...][None, :seq]


class Attention(nnx.Module):
    """Multi-head scaled dot-product self-attention over (batch, seq, d_model).

    out = concat_h softmax(Q_h K_hᵀ / sqrt(d_head) + mask) V_h  @ W_o + b_o, Q = h W_q + b_q, etc.
    Causal: position t attends to positions <= t (masked logits set to the dtype's most negative
    finite number before the softmax, so their weight is exactly 0 and no NaN can arise).
    """

    def __init__(self, d_model, heads, *, causal, value_gain, zero_out, param_dtype, rngs):
        self.heads = heads
        self.causal = causal
        self.query = _linear(d_model, d_model, 1.0, False, param_dtype, rngs)
        self.key = _linear(d_model, d_model, 1.0, False, param_dtype, rngs)
        self.value = _linear(d_model, d_model, value_gain, False, param_dtype, rngs)
        self.out = _linear(d_model, d_model, value_gain, zero_out, param_dtype, rngs)

    def __call__(self, h: jax.Array) -> jax.Array:
        b, s, d = h.shape
        split = lambda a: a.reshape(b, s, self.heads, d // self.heads)  # noqa: E731
        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        logits = jnp.einsum("bqhe,bkhe->bhqk", q, k) / jnp.sqrt(jnp.asarray(d // self.heads, q.dtype))
        if self.causal:
            allowed = jnp.tril(jnp.ones((s, s), bool))
            logits = jnp.where(allowed, logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits, axis=-1)
        return self.out(jnp.einsum("bhqk,bkhe->bqhe", weights, v).reshape(b, s, d))


class FFN(nnx.Module):
    """Position-wise feed-forward net: out(activation(linear(h))), d_model -> ffn_mult d_model -> d_model."""

    def __init__(self, d_model, hidden, activation, *, gain, zero_out, param_dtype, rngs):
        self.linear = _linear(d_model, hidden, gain, False, param_dtype, rngs)
        self.activation = activation
        self.out = _linear(hidden, d_model, gain, zero_out, param_dtype, rngs)

    def __call__(self, h: jax.Array) -> jax.Array:
        return self.out(self.activation(self.linear(h)))


class TransformerBlock(nnx.Module):
    """One Transformer layer: h -> sublayer(FFN, sublayer(attention, h)), the sublayer rule by
    `norm` and the residual scaling (see the module docstring).

    Attributes:
      attention: `Attention`.   ffn: `FFN` (its `out` kernel is the block's kernel for the measures).
      norm_attention, norm_ffn: `nnx.LayerNorm` (norm "pre"/"post") or None.
      alpha: ReZero's learned scalar `nnx.Param` (shape ()), or None.
      norm: "pre" | "post" | "none" (static).   branch_scale: a, a `BranchScale` scalar.
      residual_alpha: the weight of h inside a post-LN (DeepNorm's alpha; 1 otherwise).
      activation: the FFN's registry activation.   kernel_path: ("ffn", "out", "kernel").
    """

    kernel_path = ("ffn", "out", "kernel")

    def __init__(
        self,
        d_model,
        heads,
        *,
        norm,
        branch_scale,
        residual_alpha,
        rezero,
        gain,
        zero_out,
        causal,
        hidden,
        activation,
        param_dtype,
        rngs,
    ):
        self.norm = norm
        self.branch_scale = BranchScale(jnp.asarray(branch_scale, param_dtype))
        self.residual_alpha = residual_alpha
        self.attention = Attention(
            d_model,
            heads,
            causal=causal,
            value_gain=gain,
            zero_out=zero_out,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.ffn = FFN(
            d_model, hidden, activation, gain=gain, zero_out=zero_out, param_dtype=param_dtype, rngs=rngs
        )
        self.activation = activation
        with_norm = norm in ("pre", "post")
        self.norm_attention = _layer_norm(d_model, param_dtype) if with_norm else None
        self.norm_ffn = _layer_norm(d_model, param_dtype) if with_norm else None
        self.alpha = nnx.Param(jnp.zeros((), param_dtype)) if rezero else None

    def _sublayer(self, f, norm_layer, h: jax.Array) -> jax.Array:
        scale = self.branch_scale[...] if self.alpha is None else self.alpha[...]
        if self.norm == "pre":
            return h + scale * f(norm_layer(h))
        if self.norm == "post":
            return norm_layer(self.residual_alpha * h + scale * f(h))
        return h + scale * f(h)

    def _after_attention(self, h: jax.Array) -> jax.Array:
        return self._sublayer(self.attention, self.norm_attention, h)

    def preactivation(self, h: jax.Array) -> jax.Array:
        """z = ffn.linear(input of the FFN branch), the FFN activation's argument, from the block
        input h (batch, seq, d_model); shape (batch, seq, ffn_mult d_model)."""
        h1 = self._after_attention(h)
        return self.ffn.linear(self.norm_ffn(h1) if self.norm == "pre" else h1)

    def __call__(self, h: jax.Array) -> jax.Array:
        return self._sublayer(self.ffn, self.norm_ffn, self._after_attention(h))


class Head(nnx.Module):
    """Per-token readout: Linear(norm(h)) with the final LayerNorm of pre-LN stacks, else Linear(h)."""

    def __init__(self, d_model, out, *, final_norm, param_dtype, rngs):
        self.norm = _layer_norm(d_model, param_dtype) if final_norm else None
        self.linear = _linear(d_model, out, 1.0, False, param_dtype, rngs)

    def __call__(self, h: jax.Array) -> jax.Array:
        return self.linear(h if self.norm is None else self.norm(h))


def parameter_count(
    vocab_or_in, d_model: int, depth: int, out: int | None, *, ffn_mult: int = 4, max_len: int = 512
) -> int:
    """Parameter entries of a `Transformer`, an upper bound (it counts the learned positional table,
    both LayerNorms of every block, ReZero's scalar and the final LayerNorm, whichever the model has):
    embedding + depth x (4 d^2 + 2 ffn_mult d^2 + biases + norms) + head.

    Example:
      >>> parameter_count(10, 8, 2, 10, max_len=16)
      2060
    """
    d, h = d_model, ffn_mult * d_model
    n_in = vocab_or_in[0] + 1 if isinstance(vocab_or_in, tuple) else vocab_or_in
    block = 4 * (d * d + d) + (d * h + h) + (h * d + d) + 4 * d + 1
    head = 0 if out is None else 2 * d + d * out + out
    return n_in * d + max_len * d + depth * block + head


def _check_vocab_or_in(value: Any) -> int | tuple[int]:
    if isinstance(value, tuple):
        if len(value) != 1:
            raise ValueError(
                f"`vocab_or_in` as a tuple must be (in_features,), one positive int, got {value!r}."
            )
        return (checks.positive_int("vocab_or_in[0] (in_features)", value[0]),)
    if isinstance(value, bool) or not isinstance(value, int):
        raise checks.ArgumentTypeError(
            f"`vocab_or_in` must be an int vocabulary size (token-id inputs) or a tuple (in_features,) "
            f"(real-valued inputs), got {value!r} ({type(value).__name__})."
        )
    return checks.positive_int("vocab_or_in", value)


def _check_residual_scale(residual_scale: Any, norm: str) -> Any:
    if isinstance(residual_scale, str) or residual_scale is None:
        checks.choice("residual_scale", residual_scale, RESIDUAL_SCALES)
        need = {"deepnorm": "post", "rezero": "none"}.get(residual_scale)
        if need is not None and norm != need:
            raise ValueError(
                f'`residual_scale={residual_scale!r}` needs `norm="{need}"`, got norm={norm!r} '
                f"({'DeepNorm is a post-LN scheme' if need == 'post' else 'ReZero replaces the norm'})."
            )
        return residual_scale
    if isinstance(residual_scale, bool) or not isinstance(residual_scale, int | float):
        raise checks.ArgumentTypeError(
            f'`residual_scale` must be None, "deepnorm", "rezero" or a float > 0, got {residual_scale!r} '
            f"({type(residual_scale).__name__})."
        )
    return checks.positive("residual_scale", residual_scale)


class Transformer(nnx.Module):
    """A stack of `depth` Transformer layers under the block-model contract (module docstring).

    Args:
      vocab_or_in: int V (inputs: token ids (batch, seq), int, in [0, V)) or a 1-tuple
        (in_features,) (inputs: real vectors (batch, seq, in_features)).
      d_model: width of h_l (batch, seq, d_model); divisible by `heads`.
      depth: number of blocks L >= 1.
      heads: attention heads; d_model % heads == 0.
      out: per-token output features of the head (logits over `out` classes), or None (no head).
      norm: "pre", "post" or "none" (where the LayerNorm sits; see the module docstring).
      residual_scale: None, "deepnorm" (needs norm="post"), "rezero" (needs norm="none") or a float
        a > 0 that scales every branch.
      zero_init_branches: zero-initialise every attention output projection and FFN second Linear.
      causal: causal (decoder) attention mask; False: every token sees every token.
      ffn_mult: FFN hidden width / d_model.
      activation: FFN activation, a `jaxvg.nn.activations` registry name or callable.
      positional: "sinusoidal" or "learned".
      max_len: longest sequence accepted (the learned table's rows).
      scan_blocks: run the blocks under one `lax.scan` over their stacked parameters (the same
        function to float rounding; compile time flat in depth, for training deep stacks).
      param_dtype: parameter dtype; float64 needs `jax_enable_x64`.
      rngs: `nnx.Rngs` (the "params" stream draws every weight).
    Raises:
      ValueError: an argument outside its valid range or choices, named in the message with the
        value and the choices (d_model not divisible by heads; deepnorm without post-LN; rezero
        with a norm).
      TypeError: (`jaxvg.checks.ArgumentTypeError`) an argument of the wrong type.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> m = Transformer(5, 8, 2, 2, 5, norm="none", residual_scale="rezero", rngs=nnx.Rngs(0))
      >>> x = jnp.array([[1, 2, 3]])
      >>> bool(jnp.allclose(m.blocks[0](m.embed(x)), m.embed(x)))  # ReZero: identity at init
      True
    """

    def __init__(
        self,
        vocab_or_in: int | tuple[int],
        d_model: int,
        depth: int,
        heads: int,
        out: int | None,
        *,
        norm: str = "pre",
        residual_scale: str | float | None = None,
        zero_init_branches: bool = False,
        causal: bool = True,
        ffn_mult: int = 4,
        activation: str | Any = "gelu",
        positional: str = "sinusoidal",
        max_len: int = 512,
        scan_blocks: bool = False,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        vocab_or_in = _check_vocab_or_in(vocab_or_in)
        d_model = checks.positive_int("d_model", d_model)
        depth = checks.positive_int("depth", depth)
        heads = checks.positive_int("heads", heads)
        if d_model % heads:
            raise ValueError(
                f"`d_model`={d_model} must be divisible by `heads`={heads} (each head gets d_model // heads "
                f"features); choose heads among {[h for h in range(1, d_model + 1) if d_model % h == 0]}."
            )
        if out is not None:
            out = checks.positive_int("out", out)
        checks.choice("norm", norm, NORMS)
        residual_scale = _check_residual_scale(residual_scale, norm)
        zero_init_branches = checks.boolean("zero_init_branches", zero_init_branches)
        causal = checks.boolean("causal", causal)
        self.scan_blocks = checks.boolean("scan_blocks", scan_blocks)
        ffn_mult = checks.positive_int("ffn_mult", ffn_mult)
        act = activations.get(activation)
        checks.choice("positional", positional, POSITIONAL)
        max_len = checks.positive_int("max_len", max_len)
        param_dtype = check_param_dtype(param_dtype)
        count = parameter_count(vocab_or_in, d_model, depth, out, ffn_mult=ffn_mult, max_len=max_len)
        checks.check_memory(
            count * param_dtype.itemsize,
            f"Transformer(`d_model`={d_model}, `depth`={depth}, `ffn_mult`={ffn_mult}, vocab_or_in={vocab_or_in}) "
            f"with {param_dtype.name} parameters ({count:.3g} entries)",
            "pass a smaller `d_model` or `depth` (parameters grow as (4 + 2 ffn_mult) d_model^2 x depth)",
        )
        if not isinstance(rngs, nnx.Rngs):
            raise checks.ArgumentTypeError(f"`rngs` must be an nnx.Rngs, got {type(rngs).__name__}.")

        alpha, gain = deepnorm_constants(depth) if residual_scale == "deepnorm" else (1.0, 1.0)
        scale = residual_scale if isinstance(residual_scale, float) else 1.0
        self.d_model, self.depth, self.heads = d_model, depth, heads
        self.norm = norm  # the branch scale lives in the blocks (data, so scaled nets share a graphdef)
        self.embed = Embed(
            vocab_or_in, d_model, positional=positional, max_len=max_len, param_dtype=param_dtype, rngs=rngs
        )
        self.blocks = nnx.List(
            [
                TransformerBlock(
                    d_model,
                    heads,
                    norm=norm,
                    branch_scale=scale,
                    residual_alpha=alpha,
                    rezero=residual_scale == "rezero",
                    gain=gain,
                    zero_out=zero_init_branches,
                    causal=causal,
                    hidden=ffn_mult * d_model,
                    activation=act,
                    param_dtype=param_dtype,
                    rngs=rngs,
                )
                for _ in range(depth)
            ]
        )
        self.head = (
            None
            if out is None
            else Head(d_model, out, final_norm=norm == "pre", param_dtype=param_dtype, rngs=rngs)
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (batch, seq) int ids or (batch, seq, in_features) -> (batch, seq, out) (or d_model
        without a head)."""
        h = self.embed(x)
        if self.scan_blocks:
            h = models.scan_blocks(list(self.blocks), h)
        else:
            for block in self.blocks:
                h = block(h)
        return h if self.head is None else self.head(h)
