"""Part 3 of `experiments.transformers`: trainability of deep encoders on sequence reversal.

The data (`reversal_data`), the encoder every part builds (`encoder`), the training cell
(`train_cell`: one variant at one depth, `seeds` nets in one vmapped program), its table
(`train_rows`), its claims (`train_verdicts`) and its figure panel (`plot_training`). The
configuration is `experiments.transformers.Config`; run the experiment with
`python -m experiments.transformers`.

Training runs the blocks under one `lax.scan` (`Transformer(..., scan_blocks=True)`, the same
function as the unrolled stack to float rounding), so a cell's compiled program does not grow with
depth; the trained parameters are never unpacked (only the history is kept).

References:
  Xiong et al. 2020 (arXiv:2002.04745) and Liu et al. 2020 (arXiv:2004.08249) on post-LN and
  warmup; Wang et al. 2022 (arXiv:2203.00555), DeepNorm; Bachlechner et al. 2020
  (arXiv:2003.04887), ReZero.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from flax import nnx

import jaxvg
from jaxvg import train

if TYPE_CHECKING:
    from experiments.transformers import Config

# (key, label, Transformer keywords, warmup?)
VARIANTS = (
    ("post", "post-LN", {"norm": "post"}, False),
    ("post_warmup", "post-LN + warmup", {"norm": "post"}, True),
    ("pre", "pre-LN", {"norm": "pre"}, False),
    ("deepnorm", "DeepNorm", {"norm": "post", "residual_scale": "deepnorm"}, False),
    ("rezero", "ReZero", {"norm": "none", "residual_scale": "rezero"}, False),
)
LABELS = {key: label for key, label, _, _ in VARIANTS}
# the Config fields a training cell depends on, besides the model's sizes
TRAIN_KEYS = (
    "n_train",
    "steps",
    "batch_size",
    "learning_rate",
    "warmup_steps",
    "log_every",
    "seeds",
    "target_accuracy",
)


def reversal_data(n: int, seq_len: int, vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequence reversal: x (n, seq_len) int32 tokens uniform in [0, vocab), y = x reversed along
    the sequence (y_t = x_{T-1-t}), int32."""
    x = np.random.default_rng(seed).integers(0, vocab, (n, seq_len)).astype(np.int32)
    return x, np.ascontiguousarray(x[:, ::-1])


def encoder(config: Config, depth: int, rngs: nnx.Rngs, **kw: Any) -> jaxvg.Transformer:
    """The experiment's bidirectional `jaxvg.Transformer` of `depth` blocks: vocabulary in and out,
    sizes from `config`; `kw` (norm, residual_scale, scan_blocks) passed on."""
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


def train_cell(config: Config, variant: tuple, depth: int, data: tuple) -> dict[str, Any]:
    """Train `config.seeds` nets of one variant (an entry of `VARIANTS`) at one depth on `data`,
    all in one vmapped program (a seed whose loss goes non-finite is frozen and counted as
    diverged). Returns the cell: logged `step` (T,), `train/accuracy` and `train/loss` (S, T),
    `diverged` (S,), `steps_to_target` (S, int or None)."""
    from experiments.remedies import steps_to_target

    t0 = time.perf_counter()
    key, label, kw, warmup = variant
    seeds = list(range(config.seeds))
    settings = train.TrainConfig(
        loss="cross_entropy",
        optimizer="adam",
        learning_rate=config.learning_rate,
        steps=config.steps,
        batch_size=config.batch_size,
        warmup_steps=config.warmup_steps if warmup else 0,
        log_every=config.log_every,
        on_nonfinite="record",
        progress=False,
    )
    graphdef, params, rest = train.init_stacked(
        lambda rngs: encoder(config, depth, rngs, scan_blocks=True, **kw), seeds
    )
    trainer = train.Trainer(graphdef, params, rest, data, settings, names=[f"seed {s}" for s in seeds])
    run = trainer.run(trainer.init_state(params, rest), train.data_keys(seeds))
    h = trainer.finish(run, unpack=False).history
    acc = np.asarray(h["train/accuracy"], np.float64)
    return {
        "kind": "train",
        "label": f"{label}, L={depth}",
        "seeds": seeds,
        "step": np.asarray(h["step"]),
        "train/accuracy": acc,
        "train/loss": np.asarray(h["train/loss"]),
        "diverged": np.asarray(h["diverged"]),
        "steps_to_target": steps_to_target(np.asarray(h["step"]), acc, config.target_accuracy),
        "seconds": time.perf_counter() - t0,
    }


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
                    "steps_to_target": float(np.mean(reached)) if reached else float("nan"),
                    "reached": f"{len(reached)}/{len(c['seeds'])}",
                    "diverged": int(np.sum(np.asarray(c["diverged"], bool))),
                    "final_accuracy": float(np.nanmean(np.asarray(c["train/accuracy"], np.float64)[:, -1])),
                }
            )
    return out


def train_verdicts(trained: list[dict[str, Any]], config: Config) -> list[dict[str, Any]]:
    """The part 3 claims at the deepest trained L, one row each: post-LN fails more seeds without
    warmup than with it; pre-LN, DeepNorm and ReZero fail none without warmup ("failed": did not
    reach the target, diverged or not). `agrees` "yes" or "no"; no row for a missing cell."""
    deepest = max(config.train_depths)
    t = {(r["key"], r["depth"]): r for r in trained}

    def fails(key):
        r = t.get((key, deepest))
        if r is None:
            return None
        got, total = (int(n) for n in r["reached"].split("/"))
        return total - got

    rows = []
    if fails("post") is not None and fails("post_warmup") is not None:
        rows.append(
            {
                "claim": f"post-LN needs warmup (L={deepest}: failed seeds without - with)",
                "paper": "> 0",
                "measured": fails("post") - fails("post_warmup"),
                "agrees": "yes" if fails("post") > fails("post_warmup") else "no",
            }
        )
    for key in ("pre", "deepnorm", "rezero"):
        if fails(key) is not None:
            rows.append(
                {
                    "claim": f"{LABELS[key]} trains without warmup (L={deepest}: failed seeds)",
                    "paper": 0,
                    "measured": fails(key),
                    "agrees": "yes" if fails(key) == 0 else "no",
                }
            )
    return rows


def describe(config: Config) -> str:
    """One sentence of the summary: the training setup."""
    return (
        f"Training: reversal, Adam lr {config.learning_rate:g}, {config.steps} steps, batch {config.batch_size}, "
        f"warmup {config.warmup_steps} steps in the warmup cell, {config.seeds} seeds, target "
        f"{config.target_accuracy:g} train token accuracy."
    )


def plot_training(ax: Any, cells: Mapping[str, Mapping[str, Any]], config: Config) -> None:
    """Seed-mean train accuracy against the step at the deepest trained L, one line per variant
    (dotted: each seed), and the target."""
    deepest = max(config.train_depths)
    for i, (key, label, _, _) in enumerate(VARIANTS):
        c = cells.get(f"train/{key}/L={deepest}")
        if c is None:
            continue
        acc = np.asarray(c["train/accuracy"], np.float64)
        ax.plot(c["step"], np.nanmean(acc, axis=0), color=f"C{i}", label=label)
        ax.plot(c["step"], acc.T, ":", color=f"C{i}", lw=0.6)
    ax.axhline(config.target_accuracy, color="k", ls=":", lw=0.8)
    ax.set(
        xlabel="step",
        ylabel="train token accuracy (seed mean; dotted: seeds)",
        title=f"sequence reversal, L={deepest}, Adam lr {config.learning_rate:g}",
    )
    ax.legend(fontsize=7)
