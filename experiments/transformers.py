"""Vanishing gradients and rank collapse in Transformers: where the LayerNorm sits, and what cures depth.

Three parts on `jaxvg.Transformer` encoders (bidirectional attention, GELU FFN of 4 d_model, Glorot
normal weights, sinusoidal positions), one cell per (part, variant, depth), each written as it finishes:

1. Xiong et al. 2020 at init: `jaxvg.gradient_flow` per block for post-LN and pre-LN at `init_depths`
   (random tokens, reversal targets, cross-entropy). Fitted: the slope of the last block's FFN output
   kernel W^2 gradient against log10 L (paper: pre-LN -1/2, post-LN 0) and, at the deepest L, its
   last-minus-first block difference in decades (paper: post-LN grows toward the output, pre-LN flat).
2. Rank collapse (Noci et al. 2022): token cosine c_l and effective rank, l = 0..L
   (`jaxvg.signal_propagation`), norm in {none, post, pre}, branches unscaled or scaled by 1/sqrt(L),
   at `rank_depth`; and the query, key and value kernel gradients per block (log space).
3. Trainability on sequence reversal (`experiments.transformers_train`): post-LN with and without
   linear LR warmup, pre-LN, DeepNorm and ReZero at `train_depths`, Adam, `seeds` nets per cell in one
   vmapped program (a non-finite seed is frozen, counted as diverged); steps to `target_accuracy`.

Reproduces: Xiong et al. 2020 (arXiv:2002.04745), Theorem 1 and Fig. 3; Noci et al. 2022
(arXiv:2206.03126), rank collapse and vanishing query/key gradients; Wang et al. 2022
(arXiv:2203.00555); Bachlechner et al. 2020 (arXiv:2003.04887); Liu et al. 2020 (arXiv:2004.08249)
on warmup.

Run:    python -m experiments.transformers --preset cpu  (d_model 32, training at depths 6, 12, 24
                                                          for 400 steps: 13 minutes on 2 loaded cores)
        python -m experiments.transformers --quick       (d_model 16, init depths 2 and 8, training at
                                                          depth 2; what the tests run)
        python -m experiments.transformers               (d_model 64; training not timed on a CPU)
        python -m experiments.transformers --preset full (d_model 128, training at depths 6-48, 8 seeds,
                                                          5000 steps; for accelerators)
Writes: results/transformers/{metrics.json, transformers.csv, transformers.png, summary.md, cells/};
prints the verdict table.

Expected outcome, `--preset cpu` (d_model 32, 4 seeds; 2-core CPU): pre-LN's last-layer ||dL/dW^2||
falls as L^-0.33 over L = 6..48 (paper: L^-1/2), post-LN's as L^-0.13 (paper: flat); at L = 48 the
tokens collapse with unscaled branches (c_L = 1.000 no norm and post-LN, 0.93 pre-LN; c_0 = 0.36),
not with 1/sqrt(L) ones (0.47-0.60), and collapsed post-LN gives query/key kernels 5.3 decades less
gradient than values (0.60 scaled). Training at lr 3e-3: post-LN reaches 95% on 2/4 seeds at L = 6
and stalls near chance at L = 12 and 24; warmup rescues L = 6 (4/4) only; pre-LN, DeepNorm and
ReZero train on 4/4 seeds at every depth; no seed diverges. The quick run cannot separate the cures
(every variant trains at its L = 2); the default (d_model 64) gives pre-LN L^-0.66, post-LN L^+0.18.
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
from experiments import transformers_train as training
from experiments.transformers_train import VARIANTS, reversal_data, train_rows
from jaxvg import checks, train
from jaxvg.measure import lognorm
from jaxvg.nn import losses
from jaxvg.report import experiment, tables
from jaxvg.report.experiment import Done, Log, OnCell

NAME = "transformers"
NORMS = ("none", "post", "pre")  # part 2
SCALES = ("1", "1/sqrt(L)")  # part 2: the branch scale a in h + a f(h)
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
        # part 3 at CPU size (d_model 32, depths 6-24, 400 steps): 13 minutes on 2 loaded cores
        "cpu": {
            "d_model": 32,
            "heads": 4,
            "seq_len": 8,
            "vocab": 8,
            "train_depths": (6, 12, 24),
            "n_train": 512,
            "steps": 400,
            "batch_size": 32,
            "learning_rate": 3e-3,
            "warmup_steps": 50,
            "log_every": 20,
        },
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
        "d_model": 16, "heads": 2, "seq_len": 6, "vocab": 6, "init_depths": (2, 8), "init_seeds": 2, "init_batch": 8,
        "rank_depth": 8, "train_depths": (2,), "n_train": 256, "steps": 300, "batch_size": 32,
        "learning_rate": 3e-3, "warmup_steps": 20, "log_every": 25,
    }  # fmt: skip

    def __post_init__(self):
        experiment.apply_quick(self)
        experiment.check_common(self)
        for name in ("d_model", "heads", "seq_len", "vocab", "init_seeds", "init_batch", "rank_depth",
                     "n_train", "batch_size", "log_every", "seeds"):  # fmt: skip
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


# --------------------------------------------------------------------------- setup


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
            jaxvg.gradient_flow(
                training.encoder(config, depth, nnx.Rngs(s), norm=norm), x, y, loss="cross_entropy"
            )
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
        model = training.encoder(config, L, nnx.Rngs(s), **kw)
        sig.append(jax.device_get(jaxvg.signal_propagation(model, x)))
        grads.append(np.asarray(_attention_grads(*nnx.split(model, nnx.Param, ...), x, y), np.float64))
    g = np.stack(grads)  # (S, 3, L)
    extra = {"log10_query_grad": g[:, 0], "log10_key_grad": g[:, 1], "log10_value_grad": g[:, 2]}
    fields = ("c", "effective_rank", "log10_q")
    return _init_like("rank", f"norm={norm}, a={scale}", config, sig, fields, t0, **extra)


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
    for variant in VARIANTS:
        for depth in config.train_depths:
            setup = _setup(
                config, depth, variant=variant[0], **{k: getattr(config, k) for k in training.TRAIN_KEYS}
            )
            store.get(
                f"train/{variant[0]}/L={depth}",
                setup,
                functools.partial(training.train_cell, config, variant, depth, data),
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


def verdict_rows(exponents, rank, trained, config: Config) -> list[dict[str, Any]]:
    """The claims against what was measured: one row each, `agrees` "yes", "no" or "n/a"."""
    pre, post = exponents["pre"], exponents["post"]
    by = {(r["norm"], r["scale"]): r for r in rank}

    def row(claim, paper, measured, ok):
        return {"claim": claim, "paper": paper, "measured": measured, "agrees": "yes" if ok else "no"}

    def slope_row(claim, paper, slope):
        if not math.isfinite(slope):
            return {"claim": claim, "paper": paper, "measured": slope, "agrees": "n/a"}
        return row(claim, paper, slope, abs(slope - paper) <= SLOPE_TOLERANCE)

    rows = [
        slope_row("pre-LN: last-layer gradient ~ L^(-1/2) (Xiong 2020)", -0.5, pre["slope"]),
        slope_row("post-LN: last-layer gradient independent of L (Xiong 2020)", 0.0, post["slope"]),
        row(
            "post-LN: gradient grows toward the last layer (decades, last - first)",
            "> 0",
            post["last_minus_first"],
            post["last_minus_first"] > 0.1,
        ),
        row(
            "pre-LN: gradient about flat over the layers (decades, last - first)",
            "~ 0",
            pre["last_minus_first"],
            abs(pre["last_minus_first"]) < 0.2,
        ),
    ]
    if ("none", "1") in by and ("none", "1/sqrt(L)") in by:
        a, b = by[("none", "1")]["c_L"], by[("none", "1/sqrt(L)")]["c_L"]
        rows.append(row("no norm, unscaled: tokens collapse, c_L -> 1 (Noci 2022)", "-> 1", a, a > 0.9))
        rows.append(
            row("1/sqrt(L) branch scaling keeps the tokens apart (c_L)", "< unscaled", b, b < a - 0.05)
        )
    if ("post", "1") in by and ("post", "1/sqrt(L)") in by:
        qk = {
            s: (by[("post", s)]["query_minus_value"] + by[("post", s)]["key_minus_value"]) / 2 for s in SCALES
        }
        claim = "post-LN, unscaled (collapsed): Q/K get less gradient than V (decades)"
        rows.append(row(claim, "< 0", qk["1"], qk["1"] < 0))
        claim = "post-LN, 1/sqrt(L) branches: smaller Q/K deficit (decades)"
        rows.append(row(claim, "> unscaled", qk["1/sqrt(L)"], qk["1/sqrt(L)"] > qk["1"]))
    rows += training.train_verdicts(trained, config)
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
    training.plot_training(ax3, cells, config)
    return fig


def summary_text(config: Config, res: Mapping[str, Any]) -> str:
    """Markdown: setup, the verdict table, then the part 2 and part 3 tables."""
    verdicts = tables.format_table(res["verdicts"], ("claim", "paper", "measured", "agrees"), floatfmt=".3g")
    lines = [
        "# transformers: vanishing gradients and rank collapse vs LayerNorm placement",
        "",
        f"Encoders d_model={config.d_model}, {config.heads} heads, GELU FFN 4x, bidirectional; sequences of "
        f"{config.seq_len} tokens over {config.vocab}. Init: {config.init_seeds} seeds, batch {config.init_batch}, "
        f"depths {list(config.init_depths)} (part 1), {config.rank_depth} (part 2). {training.describe(config)}",
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
