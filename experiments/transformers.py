"""Vanishing gradients and rank collapse in Transformers: where the LayerNorm sits, and what cures depth.

Three parts on `jaxvg.Transformer` encoders (bidirectional attention, GELU FFN of 4 d_model, Glorot
normal weights, sinusoidal positions), one cell per (part, variant, depth), each written as it finishes:

1. Xiong et al. 2020 at initialisation: `jaxvg.gradient_flow` per block (log10 ||dL/dW|| over all of
   a block's parameters, and the last block's FFN output kernel W^2) for post-LN and pre-LN at `init_depths`, on
   random token sequences with the reversal targets of part 3 (cross-entropy). Fitted: the slope of
   the last block's FFN output kernel W^2 gradient against log10 L (the paper: pre-LN ~ L^(-1/2) sqrt(ln d),
   slope -1/2; post-LN independent of L, slope 0) and, at the deepest L, last-minus-first block
   gradient in decades (the paper: post-LN grows toward the output, pre-LN flat).
2. Rank collapse (Noci et al. 2022): the mean cosine c_l between the tokens of a sequence and the
   effective rank, l = 0..L (`jaxvg.signal_propagation`), for norm in {none, post, pre} with the
   branches unscaled and scaled by 1/sqrt(L), at depth `rank_depth`; and the gradient norms of the
   query, key and value kernels per block (plain `jax.grad`, norms in log space).
3. Trainability on sequence reversal (y_t = x_{T-1-t}; tokens uniform in [0, vocab), generated in
   code): post-LN with and without linear LR warmup, pre-LN, DeepNorm (Wang et al. 2022) and ReZero
   (Bachlechner et al. 2020) at `train_depths`, Adam, `seeds` nets per cell in one vmapped `jaxvg.fit`
   (a seed whose loss goes non-finite is frozen and counted as diverged); steps to `target_accuracy`
   token accuracy on the training set.

Reproduces: Xiong et al. 2020 (arXiv:2002.04745), Theorem 1 and Fig. 3; Noci et al. 2022
(arXiv:2206.03126), rank collapse and vanishing query/key gradients; Wang et al. 2022
(arXiv:2203.00555); Bachlechner et al. 2020 (arXiv:2003.04887); Liu et al. 2020 (arXiv:2004.08249)
on warmup.

Run:    python -m experiments.transformers               (CPU default: d_model 64, init depths 6-48,
                                                          training at depths 6 and 12; parts 1 and 2
                                                          took 11 minutes on 2 loaded cores, part 3 is
                                                          not timed)
        python -m experiments.transformers --quick       (d_model 16, depths 2 and 8 at init, training at
                                                          depths 1 and 2 for 300 steps; what the tests run)
        python -m experiments.transformers --preset full (d_model 128, training at depths 6-48, 8 seeds,
                                                          5000 steps; for accelerators)
Writes: results/transformers/{metrics.json, transformers.csv, transformers.png, summary.md, cells/};
prints the verdict table.

Expected outcome. Parts 1 and 2 at the default sizes (d_model 64, 4 seeds; 2-core CPU): pre-LN's
last-layer ||dL/dW^2|| falls as L^-0.66 over L = 6..48 (paper: L^-1/2), post-LN's as L^+0.18
(paper: independent of L); post-LN's W^2 gradient rises 0.33 decades from the first to the last of
48 layers (as in the paper), pre-LN's falls 0.66 (the paper: about flat). At depth 48 with unscaled
branches the tokens collapse (c_L = 1.000 without a norm, where the stream also explodes, log10
q_L = 20; 1.000 post-LN; 0.94 pre-LN; c_0 = 0.30), 1/sqrt(L) branches keep c_L at 0.40-0.54, and
the collapsed post-LN stack gives its query/key kernels 5.6 decades less gradient than its value
kernels (0.59 with 1/sqrt(L) branches). The quick run (d_model 16, L = 2 and 8) shows the same
directions with smaller numbers (pre-LN's exponent -0.21, post-LN's +0.60 from two depths); in its
training cells every variant reaches the target on 4/4 seeds at L = 2 and none diverges, so they
cannot separate the cures: that takes the default or `--preset full`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxvg
from jaxvg import checks, train
from jaxvg.measure import lognorm
from jaxvg.nn import losses
from jaxvg.report import experiment, tables
from jaxvg.report.experiment import Done, Log, OnCell

NAME = "transformers"
NORMS = ("none", "post", "pre")  # part 2
SCALES = ("1", "1/sqrt(L)")  # part 2: the branch scale a in h + a f(h)
# part 3: (key, label, Transformer keywords, warmup?)
VARIANTS = (
    ("post", "post-LN", {"norm": "post"}, False),
    ("post_warmup", "post-LN + warmup", {"norm": "post"}, True),
    ("pre", "pre-LN", {"norm": "pre"}, False),
    ("deepnorm", "DeepNorm", {"norm": "post", "residual_scale": "deepnorm"}, False),
    ("rezero", "ReZero", {"norm": "none", "residual_scale": "rezero"}, False),
)
SLOPE_TOLERANCE = 0.2  # decades per decade of L: a fitted exponent "agrees" within this of the paper's


@dataclasses.dataclass(frozen=True)
class Config:
    d_model: int = 64  # width of the token representations
    heads: int = 4  # attention heads (d_model % heads == 0)
    seq_len: int = 12  # tokens per sequence
    vocab: int = 12  # token vocabulary (inputs and reversal targets)
    init_depths: tuple[int, ...] = (6, 12, 24, 48)  # part 1: depths measured at init
    init_seeds: int = 4  # part 1 and 2: nets per cell at init
    init_batch: int = 32  # part 1 and 2: sequences in the measured batch
    rank_depth: int = 48  # part 2: depth of the rank-collapse nets
    train_depths: tuple[int, ...] = (6, 12)  # part 3: depths trained
    n_train: int = 2048  # part 3: training sequences
    steps: int = 2000  # part 3: Adam steps per cell
    batch_size: int = 64  # part 3: sequences per step
    learning_rate: float = 1e-3  # part 3: Adam step size (peak, after warmup)
    warmup_steps: int = 200  # part 3: linear warmup of the "+ warmup" cell
    log_every: int = 50  # part 3: steps between logged accuracies (the resolution of steps-to-target)
    seeds: int = 4  # part 3: nets per cell, trained together under vmap
    target_accuracy: float = 0.95  # part 3: token accuracy on the training set counted as learned
    data_seed: int = 0  # seed of the generated sequences
    out_dir: str = "results/transformers"  # where main() writes
    quick: bool = False  # tiny sizes for tests/CI; fields you set yourself are kept

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {
            "d_model": 128,
            "heads": 8,
            "seq_len": 24,
            "vocab": 24,
            "init_depths": (6, 12, 24, 48, 96),
            "init_seeds": 8,
            "rank_depth": 96,
            "train_depths": (6, 12, 24, 48),
            "n_train": 8192,
            "steps": 5000,
            "warmup_steps": 500,
            "log_every": 100,
            "seeds": 8,
        },
    }
    QUICK: ClassVar[dict[str, Any]] = {
        "d_model": 16,
        "heads": 2,
        "seq_len": 6,
        "vocab": 6,
        "init_depths": (2, 8),
        "init_seeds": 2,
        "init_batch": 8,
        "rank_depth": 8,
        "train_depths": (1, 2),
        "n_train": 256,
        "steps": 300,
        "batch_size": 32,
        "learning_rate": 3e-3,
        "warmup_steps": 20,
        "log_every": 25,
    }

    def __post_init__(self):
        experiment.apply_quick(self)
        experiment.check_common(self)
        for name in (
            "d_model",
            "heads",
            "seq_len",
            "vocab",
            "init_seeds",
            "init_batch",
            "rank_depth",
            "n_train",
            "batch_size",
            "log_every",
            "seeds",
        ):
            checks.positive_int(name, getattr(self, name))
        for name in ("init_depths", "train_depths"):
            object.__setattr__(
                self, name, experiment.check_tuple(name, getattr(self, name), checks.positive_int)
            )
        if self.d_model % self.heads:
            raise ValueError(f"`d_model`={self.d_model} must be divisible by `heads`={self.heads}.")
        if self.vocab < 2:
            raise ValueError(
                f"`vocab` must be >= 2 (a reversal of one token is trivial), got {self.vocab!r}."
            )
        if self.batch_size > self.n_train:
            raise ValueError(f"`batch_size` must be <= `n_train`={self.n_train}, got {self.batch_size!r}.")
        train.config.check_steps(self.steps)
        checks.nonnegative_int("warmup_steps", self.warmup_steps)
        checks.nonnegative_int("data_seed", self.data_seed)
        checks.positive("learning_rate", self.learning_rate)
        checks.in_range("target_accuracy", self.target_accuracy, 0.0, 1.0, high_inclusive=True)


def _shapes(cell: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    s, kind, L = len(cell["seeds"]), cell["kind"], cell["setup"]["depth"]
    if kind == "init":
        want = {"log10_param_grad": (s, L), "log10_kernel_grad": (s, L), "log10_act_grad": (s, L + 1)}
    elif kind == "rank":
        want = {"c": (s, L + 1), "effective_rank": (s, L + 1), "log10_q": (s, L + 1)}
        want |= {f"log10_{w}_grad": (s, L) for w in ("query", "key", "value")}
    else:
        logged = -(-cell["setup"]["steps"] // cell["setup"]["log_every"]) + 1
        want = {"step": (logged,), "train/accuracy": (s, logged), "train/loss": (s, logged)}
        want |= {"diverged": (s,), "steps_to_target": (s,)}
    missing = sorted(set(want) - set(cell))
    if missing:
        raise ValueError(f"a {kind!r} cell lacks {missing}")
    return want


# Every cell: `kind` ("init", "rank" or "train"), `label`, `seeds`, `setup` (with `depth`); the
# per-kind arrays are checked by shape (S seeds, L blocks, T logged points).
CELL_SCHEMA = experiment.cell_schema(
    {"kind": str, "label": str, "seeds": list[int], "seconds": float, "setup": {"depth": int}}, shapes=_shapes
)


# --------------------------------------------------------------------------- data and models


def reversal_data(n: int, seq_len: int, vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequence reversal: x (n, seq_len) int32 tokens uniform in [0, vocab), y = x reversed along
    the sequence (y_t = x_{T-1-t}), int32."""
    x = np.random.default_rng(seed).integers(0, vocab, (n, seq_len)).astype(np.int32)
    return x, np.ascontiguousarray(x[:, ::-1])


def _model(config: Config, depth: int, rngs: nnx.Rngs, **kw: Any) -> jaxvg.Transformer:
    return jaxvg.Transformer(
        config.vocab,
        config.d_model,
        depth,
        config.heads,
        config.vocab,
        causal=False,
        max_len=config.seq_len,
        rngs=rngs,
        **kw,
    )


def _setup(config: Config, depth: int, **extra: Any) -> dict[str, Any]:
    keys = ("d_model", "heads", "seq_len", "vocab", "data_seed")
    return {"depth": depth, **{k: getattr(config, k) for k in keys}, **extra}


def _measured_batch(config: Config) -> tuple[jax.Array, jax.Array]:
    x, y = reversal_data(config.init_batch, config.seq_len, config.vocab, config.data_seed + 1)
    return jnp.asarray(x), jnp.asarray(y)


# --------------------------------------------------------------------------- part 1: Xiong et al.


def _init_cell(config: Config, norm: str, depth: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    x, y = _measured_batch(config)
    flows = [
        jax.device_get(
            jaxvg.gradient_flow(_model(config, depth, nnx.Rngs(s), norm=norm), x, y, loss="cross_entropy")
        )
        for s in range(config.init_seeds)
    ]
    fields = ("log10_param_grad", "log10_kernel_grad", "log10_act_grad")
    return _init_like("init", f"{norm}-LN, L={depth}", config, flows, fields, t0)


def _init_like(kind: str, label: str, config: Config, results: list, fields: tuple, t0: float, **extra):
    """A cell of the measurements at init: each field stacked over the seeds' results, (S, ...)."""
    stacked = {f: np.stack([np.asarray(getattr(r, f), np.float64) for r in results]) for f in fields}
    seeds = list(range(config.init_seeds))
    return {
        "kind": kind,
        "label": label,
        "seeds": seeds,
        **stacked,
        **extra,
        "seconds": time.perf_counter() - t0,
    }


def fitted_exponents(cells: Mapping[str, Mapping[str, Any]], config: Config) -> dict[str, dict[str, float]]:
    """Per norm ("post", "pre"): `slope`, the least-squares slope of the seed-mean log10 ||dL/dW||
    of the last block's FFN output kernel W^2 against log10 L over `init_depths` (Xiong et al.: -1/2 for pre-LN,
    0 for post-LN; NaN with one depth), and `last_minus_first`, the seed-mean log10 ||dL/dW^2|| of
    the last block's FFN output kernel minus the first block's at the deepest L, in decades (Xiong et
    al.'s Fig. 3 plots this kernel's gradient per layer)."""
    out = {}
    for norm in ("post", "pre"):
        depths = [d for d in config.init_depths if f"init/{norm}/L={d}" in cells]
        last = [np.nanmean(_floats(cells[f"init/{norm}/L={d}"]["log10_kernel_grad"])[:, -1]) for d in depths]
        slope = np.polyfit(np.log10(depths), last, 1)[0] if len(set(depths)) > 1 else math.nan
        gap = math.nan
        if depths:
            g = np.nanmean(_floats(cells[f"init/{norm}/L={max(depths)}"]["log10_kernel_grad"]), axis=0)
            gap = float(g[-1] - g[0])
        out[norm] = {"slope": float(slope), "last_minus_first": gap}
    return out


# --------------------------------------------------------------------------- part 2: rank collapse


@functools.partial(jax.jit, static_argnums=0)
def _attention_grads(graphdef: Any, params: Any, rest: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    """(3, L) log10 ||dL/dW|| of the query, key and value kernels of every block (log space: exact
    where the plain sum of squares would underflow)."""
    grads = jax.grad(lambda p: losses.get("cross_entropy")(nnx.merge(graphdef, p, rest)(x), y))(params)
    model = nnx.merge(graphdef, grads, rest)
    return jnp.stack(
        [
            jnp.stack([lognorm.log10_norm(getattr(b.attention, w).kernel[...]) for b in model.blocks])
            for w in ("query", "key", "value")
        ]
    )


def _rank_cell(config: Config, norm: str, scale: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    x, y = _measured_batch(config)
    L = config.rank_depth
    kw = {"norm": norm, "residual_scale": None if scale == "1" else 1.0 / math.sqrt(L)}
    sig, grads = [], []
    for s in range(config.init_seeds):
        model = _model(config, L, nnx.Rngs(s), **kw)
        sig.append(jax.device_get(jaxvg.signal_propagation(model, x)))
        grads.append(np.asarray(_attention_grads(*nnx.split(model, nnx.Param, ...), x, y), np.float64))
    g = np.stack(grads)  # (S, 3, L)
    extra = {"log10_query_grad": g[:, 0], "log10_key_grad": g[:, 1], "log10_value_grad": g[:, 2]}
    fields = ("c", "effective_rank", "log10_q")
    return _init_like("rank", f"norm={norm}, a={scale}", config, sig, fields, t0, **extra)


# --------------------------------------------------------------------------- part 3: training


def _train_cell(config: Config, variant: tuple, depth: int, data: tuple) -> dict[str, Any]:
    from experiments.remedies import steps_to_target

    t0 = time.perf_counter()
    key, label, kw, warmup = variant
    fit = jaxvg.fit(
        lambda rngs: _model(config, depth, rngs, **kw),
        data,
        loss="cross_entropy",
        optimizer="adam",
        learning_rate=config.learning_rate,
        steps=config.steps,
        batch_size=config.batch_size,
        warmup_steps=config.warmup_steps if warmup else 0,
        log_every=config.log_every,
        seeds=list(range(config.seeds)),
        on_nonfinite="record",
        progress=False,
    )
    h = fit.history
    acc = np.asarray(h["train/accuracy"], np.float64)
    return {
        "kind": "train",
        "label": f"{label}, L={depth}",
        "seeds": list(range(config.seeds)),
        "step": np.asarray(h["step"]),
        "train/accuracy": acc,
        "train/loss": np.asarray(h["train/loss"]),
        "diverged": np.asarray(h["diverged"]),
        "steps_to_target": steps_to_target(np.asarray(h["step"]), acc, config.target_accuracy),
        "seconds": time.perf_counter() - t0,
    }


# --------------------------------------------------------------------------- run


def run(config: Config, *, on_cell: OnCell = None, done: Done = None, log: Log = None) -> dict[str, Any]:
    """All three parts, no file I/O.

    Args:
      config: the experiment `Config`.
      on_cell: called as `on_cell(key, cell)` after each newly computed cell: keys
        "init/{norm}/L={depth}", "rank/{norm}/a={scale}", "train/{variant}/L={depth}".
      done: {key: cell} stored by an earlier run; a cell whose setup matches is reused.
      log: optional progress printer.
    Returns:
      Dict with `cells`, `exponents` (`fitted_exponents`), `rank_rows`, `train_rows`, `verdicts`
      (the table), `computed`, `config`, `seconds`.
    """
    experiment.check_config(config, Config)
    start = time.perf_counter()
    store = experiment.Cells(done, on_cell, log, schema=CELL_SCHEMA)
    for norm in ("post", "pre"):
        for depth in config.init_depths:
            setup = _setup(config, depth, norm=norm, seeds=config.init_seeds, batch=config.init_batch)
            store.get(f"init/{norm}/L={depth}", setup, functools.partial(_init_cell, config, norm, depth))
    for norm in NORMS:
        for scale in SCALES:
            setup = _setup(
                config,
                config.rank_depth,
                norm=norm,
                scale=scale,
                seeds=config.init_seeds,
                batch=config.init_batch,
            )
            store.get(f"rank/{norm}/a={scale}", setup, functools.partial(_rank_cell, config, norm, scale))
    data = reversal_data(config.n_train, config.seq_len, config.vocab, config.data_seed)
    train_keys = (
        "n_train",
        "steps",
        "batch_size",
        "learning_rate",
        "warmup_steps",
        "log_every",
        "seeds",
        "target_accuracy",
    )
    for variant in VARIANTS:
        for depth in config.train_depths:
            setup = _setup(config, depth, variant=variant[0], **{k: getattr(config, k) for k in train_keys})
            store.get(
                f"train/{variant[0]}/L={depth}",
                setup,
                functools.partial(_train_cell, config, variant, depth, data),
            )
    cells = store.cells
    exponents = fitted_exponents(cells, config)
    rank = rank_rows(cells)
    trained = train_rows(cells, config)
    return {
        "cells": cells,
        "exponents": exponents,
        "rank_rows": rank,
        "train_rows": trained,
        "verdicts": verdict_rows(exponents, rank, trained, config),
        "computed": store.computed,
        "config": dataclasses.asdict(config),
        "seconds": time.perf_counter() - start,
    }


def _floats(values: Any) -> np.ndarray:
    return np.asarray(np.nan if values is None else values, dtype=np.float64)


def rank_rows(cells: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (norm, scale): c_0 and c_L (seed means), effective rank at L, and the mean over
    blocks of log10 ||dL/dW_Q||, ||dL/dW_K|| minus log10 ||dL/dW_V|| (decades; negative: the
    query/key kernels get less gradient than the values)."""
    out = []
    for norm in NORMS:
        for scale in SCALES:
            c = cells.get(f"rank/{norm}/a={scale}")
            if c is None:
                continue
            cos, v = _floats(c["c"]), _floats(c["log10_value_grad"])
            out.append(
                {
                    "norm": norm,
                    "scale": scale,
                    "c_0": float(np.nanmean(cos[:, 0])),
                    "c_L": float(np.nanmean(cos[:, -1])),
                    "rank_L": float(np.nanmean(_floats(c["effective_rank"])[:, -1])),
                    "query_minus_value": float(np.nanmean(_floats(c["log10_query_grad"]) - v)),
                    "key_minus_value": float(np.nanmean(_floats(c["log10_key_grad"]) - v)),
                }
            )
    return out


def train_rows(cells: Mapping[str, Mapping[str, Any]], config: Config) -> list[dict[str, Any]]:
    """One row per (variant, depth): steps to the target (mean over the seeds that got there),
    how many seeds got there, diverged seeds, final train accuracy (mean over seeds)."""
    out = []
    for key, label, _, _ in VARIANTS:
        for depth in config.train_depths:
            c = cells.get(f"train/{key}/L={depth}")
            if c is None:
                continue
            reached = [t for t in c["steps_to_target"] if t is not None]
            out.append(
                {
                    "variant": label,
                    "key": key,
                    "depth": depth,
                    "steps_to_target": float(np.mean(reached)) if reached else math.nan,
                    "reached": f"{len(reached)}/{len(c['seeds'])}",
                    "diverged": int(np.sum(np.asarray(c["diverged"], bool))),
                    "final_accuracy": float(np.nanmean(_floats(c["train/accuracy"])[:, -1])),
                }
            )
    return out


def verdict_rows(exponents, rank, trained, config: Config) -> list[dict[str, Any]]:
    """The claims against what was measured: one row each, `agrees` "yes", "no" or "n/a"."""
    yes = lambda ok: "n/a" if ok is None else ("yes" if ok else "no")  # noqa: E731
    pre, post = exponents["pre"], exponents["post"]
    ok_slope = lambda s, want: None if not math.isfinite(s) else abs(s - want) <= SLOPE_TOLERANCE  # noqa: E731
    by = {(r["norm"], r["scale"]): r for r in rank}
    rows = [
        {
            "claim": "pre-LN: last-layer gradient ~ L^(-1/2) (Xiong 2020)",
            "paper": -0.5,
            "measured": pre["slope"],
            "agrees": yes(ok_slope(pre["slope"], -0.5)),
        },
        {
            "claim": "post-LN: last-layer gradient independent of L (Xiong 2020)",
            "paper": 0.0,
            "measured": post["slope"],
            "agrees": yes(ok_slope(post["slope"], 0.0)),
        },
        {
            "claim": "post-LN: gradient grows toward the last layer (decades, last - first)",
            "paper": "> 0",
            "measured": post["last_minus_first"],
            "agrees": yes(post["last_minus_first"] > 0.1),
        },
        {
            "claim": "pre-LN: gradient about flat over the layers (decades, last - first)",
            "paper": "~ 0",
            "measured": pre["last_minus_first"],
            "agrees": yes(abs(pre["last_minus_first"]) < 0.2),
        },
    ]
    if ("none", "1") in by and ("none", "1/sqrt(L)") in by:
        a, b = by[("none", "1")], by[("none", "1/sqrt(L)")]
        rows.append(
            {
                "claim": "no norm, unscaled: tokens collapse, c_L -> 1 (Noci 2022)",
                "paper": "-> 1",
                "measured": a["c_L"],
                "agrees": yes(a["c_L"] > 0.9),
            }
        )
        rows.append(
            {
                "claim": "1/sqrt(L) branch scaling keeps the tokens apart (c_L)",
                "paper": "< unscaled",
                "measured": b["c_L"],
                "agrees": yes(b["c_L"] < a["c_L"] - 0.05),
            }
        )
    if ("post", "1") in by and ("post", "1/sqrt(L)") in by:
        qk = {
            s: (by[("post", s)]["query_minus_value"] + by[("post", s)]["key_minus_value"]) / 2 for s in SCALES
        }
        rows.append(
            {
                "claim": "post-LN, unscaled (collapsed): Q/K get less gradient than V (decades)",
                "paper": "< 0",
                "measured": qk["1"],
                "agrees": yes(qk["1"] < 0),
            }
        )
        rows.append(
            {
                "claim": "post-LN, 1/sqrt(L) branches: smaller Q/K deficit (decades)",
                "paper": "> unscaled",
                "measured": qk["1/sqrt(L)"],
                "agrees": yes(qk["1/sqrt(L)"] > qk["1"]),
            }
        )
    deepest = max(config.train_depths)
    t = {(r["key"], r["depth"]): r for r in trained}

    def fails(key):  # seeds that did not reach the target or diverged, at the deepest L
        r = t.get((key, deepest))
        return None if r is None else int(r["reached"].split("/")[1]) - int(r["reached"].split("/")[0])

    if fails("post") is not None and fails("post_warmup") is not None:
        rows.append(
            {
                "claim": f"post-LN needs warmup (L={deepest}: failed seeds without - with)",
                "paper": "> 0",
                "measured": fails("post") - fails("post_warmup"),
                "agrees": yes(fails("post") > fails("post_warmup")),
            }
        )
    for key in ("pre", "deepnorm", "rezero"):
        if fails(key) is not None:
            rows.append(
                {
                    "claim": f"{dict((v[0], v[1]) for v in VARIANTS)[key]} trains without warmup "
                    f"(L={deepest}: failed seeds)",
                    "paper": 0,
                    "measured": fails(key),
                    "agrees": yes(fails(key) == 0),
                }
            )
    return rows


# --------------------------------------------------------------------------- report


def figure(res: Mapping[str, Any], config: Config):
    """Three panels: per-block gradient at init (part 1), token cosine c_l (part 2), and train
    accuracy against the step at the deepest trained L (part 3)."""
    from matplotlib.figure import Figure

    cells = res["cells"]
    fig = Figure(figsize=(16, 4.8), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(1, 3)
    for norm, ls in (("post", "-"), ("pre", "--")):
        for i, depth in enumerate(config.init_depths):
            c = cells.get(f"init/{norm}/L={depth}")
            if c is not None:
                g = np.nanmean(_floats(c["log10_kernel_grad"]), axis=0)
                ax1.plot(np.arange(1, depth + 1) / depth, g, ls, color=f"C{i}", label=f"{norm}-LN L={depth}")
    ax1.set(
        xlabel="block l / L",
        ylabel="log10 ||dL/dW^2_l|| (FFN output kernel)",
        title="gradient at init (Xiong 2020)",
    )
    ax1.legend(fontsize=7)
    for i, norm in enumerate(NORMS):
        for scale, ls in zip(SCALES, ("-", "--"), strict=True):
            c = cells.get(f"rank/{norm}/a={scale}")
            if c is not None:
                ax2.plot(np.nanmean(_floats(c["c"]), axis=0), ls, color=f"C{i}", label=f"{norm}, a={scale}")
    ax2.set(
        xlabel="layer l",
        ylabel="mean token cosine c_l",
        title=f"rank collapse, L={config.rank_depth} (Noci 2022)",
    )
    ax2.legend(fontsize=7)
    deepest = max(config.train_depths)
    for i, (key, label, _, _) in enumerate(VARIANTS):
        c = cells.get(f"train/{key}/L={deepest}")
        if c is not None:
            ax3.plot(c["step"], np.nanmean(_floats(c["train/accuracy"]), axis=0), color=f"C{i}", label=label)
    ax3.axhline(config.target_accuracy, color="k", ls=":", lw=0.8)
    ax3.set(xlabel="step", ylabel="train token accuracy (seed mean)", title=f"sequence reversal, L={deepest}")
    ax3.legend(fontsize=7)
    return fig


def summary_text(config: Config, res: Mapping[str, Any]) -> str:
    """Markdown: setup, the verdict table, then the part 2 and part 3 tables."""
    verdicts = tables.format_table(res["verdicts"], ("claim", "paper", "measured", "agrees"), floatfmt=".3g")
    lines = [
        "# transformers: vanishing gradients and rank collapse vs LayerNorm placement",
        "",
        f"Encoders d_model={config.d_model}, {config.heads} heads, GELU FFN 4x, bidirectional; sequences of "
        f"{config.seq_len} tokens over {config.vocab}. Init: {config.init_seeds} seeds, batch {config.init_batch}, "
        f"depths {list(config.init_depths)} (part 1), {config.rank_depth} (part 2). Training: reversal, Adam lr "
        f"{config.learning_rate:g}, {config.steps} steps, batch {config.batch_size}, warmup {config.warmup_steps} "
        f"steps in the warmup cell, {config.seeds} seeds, target {config.target_accuracy:g} train token accuracy.",
        "",
        f"Fitted exponents (slope of log10 ||dL/dW|| of the last block's FFN output kernel W^2 against log10 L; agrees "
        f"within {SLOPE_TOLERANCE}):",
        "",
        verdicts,
        "",
        "## Rank collapse (part 2)",
        "",
        tables.format_table(res["rank_rows"], None, floatfmt=".3g"),
        "",
        "## Trainability (part 3)",
        "",
        tables.format_table(res["train_rows"], None, floatfmt=".4g"),
        "",
        f"This call: {res.get('seconds', math.nan):.0f} s, {len(res.get('computed', []))} cells computed.",
    ]
    return "\n".join(lines)


def report(config: Config, res: dict[str, Any]) -> experiment.Outputs:
    """metrics.json, transformers.csv (the verdicts), rank.csv, training.csv, summary.md, transformers.png."""
    return experiment.Outputs(
        results={k: v for k, v in res.items() if k != "config"},
        summary=summary_text(config, res),
        csv={f"{NAME}.csv": res["verdicts"], "rank.csv": res["rank_rows"], "training.csv": res["train_rows"]},
        seeds=sorted({s for c in res["cells"].values() for s in c["seeds"]}),
        figure=lambda: figure(res, config),
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse flags, run, and write results/transformers/ (metrics.json, CSVs, PNG, summary.md)."""
    return experiment.main(Config, run, report, argv, schema=CELL_SCHEMA)


if __name__ == "__main__":
    main()
