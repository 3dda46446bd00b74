"""Which cures of vanishing gradients work? The popular account's list against the literature's.

Tests the cures that a popular account of vanishing gradients proposes and the cures the
literature shows to work, on a task where a deep sigmoid net trained
the pre-2010 way demonstrably suffers from vanishing gradients: scikit-learn's 8x8 digits (1438
train / 359 test, 10 classes), a sigmoid MLP with the "commonly used heuristic" init
U(-1/sqrt(fan_in), 1/sqrt(fan_in)) of Glorot & Bengio (2010, eq. 1) trained by minibatch SGD on
the cross-entropy. With this init sigma_w2 = 1/3 and E[sigmoid'^2] <= 1/16, so each layer passes
back about sqrt(chi_1) ~ 0.15 of the gradient (-0.8 decades per layer) and the network sits on a
plateau at chance accuracy for thousands of steps before it starts to learn.

Every variant changes one thing of the baseline (`variants` lists them):

  the popular account                      | the literature
  -----------------------------------------+---------------------------------------------------------
  re-initialise, same scheme, new seeds    | relu with He init (He et al. 2015)
  10x learning rate                        | tanh at criticality, orthogonal weights (Saxe et al. 2014,
  twice as deep                            |   Pennington et al. 2017): sigma_w2 = 1, sigma_b2 = 0
  4x and 16x wider                         | residual connections (He et al. 2016)
  twice as deep and 4x wider               | layer norm (Ba et al. 2016)
  batch norm                               | Adam (Kingma & Ba 2014), lr 1e-3
  batch norm + dropout                     | gradient clipping (Pascanu et al. 2013), global norm 1

For each, all seeds train together in one vmapped `jaxvg.fit` (minibatch SGD unless the
cure is the optimizer; a seed that goes non-finite is frozen and recorded as diverged, not fatal),
and the table reports:
- the per-block log10 gain at init (`jaxvg.gradient_flow` on the first 256 training
  examples, mean over seeds; batch-norm and dropout variants in training mode, `train=True`, the
  network that training sees) and its mean over blocks;
- the init gap = log10 ||dL/dW_L|| - log10 ||dL/dW_1|| in decades (last minus first block's kernel
  gradient; positive: the first layer's gradient is smaller), mean over seeds;
- steps to 90% train accuracy (first logged step at which the whole training set is classified
  90% right; "never" within the budget);
- final test accuracy, mean and std (ddof=1) over seeds; the number of diverged seeds;
- a verdict against the baseline. Let t be the steps to 90% per seed, a seed that never gets
  there counted as steps + log_every (censored at the budget), and a the final test accuracy.
  With tol_t = 2 max(std t_baseline, std t, log_every) and tol_a = 2 max(std a_baseline, std a,
  0.01) (std over seeds, ddof=1; the floors are the logging resolution and 1 pp of accuracy, about
  3.6 of the 359 test digits), the cure "helps" if mean t < baseline mean t - tol_t or
  mean a > baseline mean a + tol_a; it "hurts" if the mirror-image condition holds or any seed
  diverged; "mixed" if both; "no effect" otherwise. The claim (that the change
  cures vanishing gradients / helps training) holds when the verdict is "helps".

Reproduces: Glorot & Bengio 2010 (the failure of deep sigmoid nets under small-uniform init) and
the cures of He et al. 2015 (arXiv:1502.01852), Saxe et al. 2014 (arXiv:1312.6120), Pennington et
al. 2017 (arXiv:1711.04735), He et al. 2016 (arXiv:1512.03385), Ba et al. 2016
(arXiv:1607.06450), Ioffe & Szegedy 2015 (arXiv:1502.03167), Kingma & Ba 2014
(arXiv:1412.6980), Pascanu et al. 2013 (arXiv:1211.5063).

Run:    python -m experiments.remedies                 (defaults below; the 16x-wide net takes most of
                                                        the time on a CPU)
        python -m experiments.remedies --quick         (depth 3, width 8, 200 steps, 2 seeds; nearly all
                                                        compilation; what the tests run)
        python -m experiments.remedies --preset full   (depth 6, width 64, 20000 steps, 16 seeds; for
                                                        accelerators)
Writes: results/remedies/{metrics.json,results.csv,remedies.png,summary.md,cells/}; prints the
table. Each variant is a cell, written as it finishes; a rerun skips the cells already on disk
whose setup matches the config.

Expected outcome, measured with the defaults (depth 4, width 32, SGD lr 0.5, batch 64, 8000 steps,
4 seeds; jax 0.10.2 CPU). The baseline loses 0.85 decades per block at init (mean-field:
1/2 log10(sigma_w2 E[sigmoid'^2]) = 1/2 log10(1/48) = -0.84), its init gap is 1.9 decades, it sits
at chance (10%) for about 2300 steps, and reaches 90% train accuracy at 4600 +- 300 steps, test
accuracy 0.911 +- 0.022. Steps to 90% (mean +- std), test accuracy, verdict:

  re-initialise              5075 +- 430   0.896   no effect  (gain per block unchanged, -0.85)
  10x learning rate           975 +- 170   0.943   helps      (gain unchanged: a bigger step, not a cure
                                                               of the decay; it works at depth 4)
  twice as deep (8)               never    0.102   hurts      (gap 5.3 decades; stuck at chance)
  4x wider (128)             5400 +- 290   0.921   hurts      (gain per block unchanged, -0.85, as
  16x wider (512)            3175 +- 300   0.942   helps       mean-field says: width is not the cure)
  deeper and wider (8 x 128)      never    0.102   hurts
  batch norm                  300 +- 0     0.968   helps      (train-mode gain -0.14 per block)
  batch norm + dropout 0.1    300 +- 0     0.969   helps
  relu + He init              100 +- 0     0.957   helps      (gain +0.01 per block)
  tanh critical, orthogonal   100 +- 0     0.958   helps      (gain -0.08 per block)
  residual connections        100 +- 0     0.960   helps      (gain -0.22 per block, ~0 past block 1)
  layer norm                  375 +- 100   0.937   helps      (gain -0.46 per block)
  Adam (lr 1e-3)             2025 +- 540   0.924   helps      (gain unchanged; per-parameter step sizes)
  gradient clipping (norm 1) 4575 +- 300   0.907   no effect  (it bounds large gradients; it cannot
                                                               enlarge vanishing ones)

So of the popular account's cures, re-initialising with the same scheme does nothing, depth makes
it worse (the decay compounds per layer), width changes nothing about the per-layer decay (the
16x net trains faster, the 4x net slower), a larger learning rate helps at this depth, and batch
norm (with or without dropout) is the one structural cure on its list. The literature's cures all
remove the decay at init (relu/He, critical orthogonal tanh, residual) or reduce it (layer norm)
and train 12-46x faster, except Adam (faster, without changing the gradient flow) and clipping,
which targets exploding gradients and does nothing here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import jax
import numpy as np
from flax import nnx

import jaxvg
from jaxvg import checks, theory
from jaxvg.report import experiment, figures, files, tables
from jaxvg.report.experiment import Done, Log, OnCell
from jaxvg.train import data

NAME = "remedies"
TARGET_ACCURACY = 0.9  # "steps to 90% train accuracy"
ACCURACY_FLOOR = 0.01  # verdict: the smallest accuracy std used (1 pp, ~3.6 of 359 test digits)
MONITOR_BATCH = 256  # gradient flow at init on the first 256 training examples

ARTICLE = "article"  # the popular account's cures
LITERATURE = "literature"  # the cures the literature shows to work


@dataclasses.dataclass(frozen=True)
class Config:
    depth: int = 4  # hidden sigmoid layers of the baseline
    width: int = 32  # units per hidden layer of the baseline
    learning_rate: float = 0.5  # SGD step size of the baseline (and of every SGD variant but 10x)
    adam_learning_rate: float = 1e-3  # Adam's step size (Kingma & Ba's default)
    steps: int = 8000  # optimizer steps per variant
    batch_size: int = 64  # examples per SGD step (without replacement, a fresh permutation each epoch)
    log_every: int = 100  # steps between logged accuracies (the resolution of "steps to 90%")
    seeds: int = 4  # nets per variant, trained together under vmap (seeds 0..seeds-1)
    reinit_seed: int = 1000  # the "re-initialise" cure's seeds are reinit_seed, reinit_seed+1, ...
    dropout: float = 0.1  # dropout rate of the batch-norm + dropout variant
    clip_norm: float = 1.0  # global gradient norm of the clipping variant
    data_seed: int = 0  # seed of the digits train/test split
    out_dir: str = "results/remedies"  # where main() writes
    quick: bool = False  # tiny sizes for tests/CI; fields you set yourself are kept

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {"depth": 6, "width": 64, "steps": 20000, "seeds": 16, "log_every": 100},
    }
    QUICK: ClassVar[dict[str, Any]] = {"depth": 3, "width": 8, "steps": 200, "log_every": 50, "seeds": 2}

    def __post_init__(self):
        experiment.apply_quick(self)
        for name in ("depth", "width", "steps", "batch_size", "log_every", "seeds"):
            checks.positive_int(name, getattr(self, name))
        checks.nonnegative_int("reinit_seed", self.reinit_seed)
        checks.nonnegative_int("data_seed", self.data_seed)
        checks.positive("learning_rate", self.learning_rate)
        checks.positive("adam_learning_rate", self.adam_learning_rate)
        checks.in_range("dropout", self.dropout, 0.0, 1.0)
        checks.positive("clip_norm", self.clip_norm)
        if self.reinit_seed < self.seeds:
            raise ValueError(
                f"`reinit_seed` must be >= `seeds` ({self.seeds}) so that the re-initialised nets are new, "
                f"got {self.reinit_seed!r}."
            )


@dataclasses.dataclass(frozen=True)
class Variant:
    """One cure: the baseline with some model/optimizer settings changed.

    Attributes:
      key: the cell key (stable; used in file names and `done`).
      label: what the table calls it.
      group: ARTICLE (the popular account's cures, and the baseline) or LITERATURE.
      source: where the claim comes from (a section of the popular account, or a paper).
      model: keyword arguments of `jaxvg.MLP` besides in/out features and rngs.
      optimizer, learning_rate, clip_norm: `jaxvg.fit` arguments.
      seeds: the seeds trained together.
      train_mode: measure the gradient flow at init in training mode (batch norm, dropout).
    """

    key: str
    label: str
    group: str
    source: str
    model: dict[str, Any]
    optimizer: str
    learning_rate: float
    clip_norm: float | None
    seeds: tuple[int, ...]
    train_mode: bool


def variants(config: Config) -> list[Variant]:
    """The baseline and every cure, in table order (the baseline first).

    Args:
      config: the experiment `Config`.
    Returns:
      A list of `Variant`s: baseline, reinit, lr_10x, deeper, wider_4x, wider_16x, deeper_wider,
      batch_norm, batch_norm_dropout (the popular account), then relu_he, tanh_critical_orthogonal,
      residual, layer_norm, adam, clipping (the literature).
    """
    d, w = config.depth, config.width
    seeds = tuple(range(config.seeds))
    base = {"width": w, "depth": d, "activation": "sigmoid", "init": "small_uniform"}

    def v(
        key,
        label,
        group,
        source,
        *,
        model=None,
        optimizer="sgd",
        lr=None,
        clip=None,
        seeds=seeds,
        train=False,
    ):
        return Variant(
            key,
            label,
            group,
            source,
            {**base, **(model or {})},
            optimizer,
            float(config.learning_rate if lr is None else lr),
            clip,
            tuple(seeds),
            train,
        )

    # tanh at criticality: chi_1 = sigma_w2 E[tanh'(h)^2] = 1 at q* = 0 needs sigma_w2 = 1 (sigma_b2 = 0).
    critical = _critical_sigma_w2("tanh", 0.0)
    return [
        v("baseline", "baseline: sigmoid, small-uniform init, SGD", ARTICLE, "Glorot & Bengio 2010"),
        v(
            "reinit",
            "re-initialise (same scheme, new seeds)",
            ARTICLE,
            "article 1.3.1",
            seeds=range(config.reinit_seed, config.reinit_seed + config.seeds),
        ),
        v("lr_10x", "10x learning rate", ARTICLE, "article 1.3.2", lr=10 * config.learning_rate),
        v(
            "deeper",
            f"twice as deep ({2 * d} layers)",
            ARTICLE,
            "article 1.3.3, 1.4.1",
            model={"depth": 2 * d},
        ),
        v("wider_4x", f"4x wider ({4 * w} units)", ARTICLE, "article 1.4.2", model={"width": 4 * w}),
        v("wider_16x", f"16x wider ({16 * w} units)", ARTICLE, "article 1.4.2", model={"width": 16 * w}),
        v(
            "deeper_wider",
            f"deeper and wider ({2 * d} x {4 * w})",
            ARTICLE,
            "article 1.4.3",
            model={"depth": 2 * d, "width": 4 * w},
        ),
        v("batch_norm", "batch norm", ARTICLE, "article 1.4.4", model={"norm": "batch"}, train=True),
        v(
            "batch_norm_dropout",
            f"batch norm + dropout {config.dropout:g}",
            ARTICLE,
            "article 1.4.5",
            model={"norm": "batch", "dropout": config.dropout},
            train=True,
        ),
        v(
            "relu_he",
            "relu + He init",
            LITERATURE,
            "He et al. 2015",
            model={"activation": "relu", "init": "he_normal"},
        ),
        v(
            "tanh_critical_orthogonal",
            f"tanh, orthogonal, sigma_w2={critical:g} (critical)",
            LITERATURE,
            "Saxe 2014; Pennington 2017",
            model={"activation": "tanh", "init": "orthogonal", "sigma_w2": critical, "sigma_b2": 0.0},
        ),
        v("residual", "residual connections", LITERATURE, "He et al. 2016", model={"residual": True}),
        v("layer_norm", "layer norm", LITERATURE, "Ba et al. 2016", model={"norm": "layer"}),
        v(
            "adam",
            f"Adam (lr {config.adam_learning_rate:g})",
            LITERATURE,
            "Kingma & Ba 2014",
            optimizer="adam",
            lr=config.adam_learning_rate,
        ),
        v(
            "clipping",
            f"gradient clipping (norm {config.clip_norm:g})",
            LITERATURE,
            "Pascanu et al. 2013",
            clip=config.clip_norm,
        ),
    ]


@functools.lru_cache(maxsize=8)
def _critical_sigma_w2(activation: str, sigma_b2: float) -> float:
    """`theory.critical_sigma_w2`, rounded to 6 digits (1.0 for tanh at sigma_b2 = 0: chi_1 =
    sigma_w2 tanh'(0)^2 at q* = 0)."""
    return round(float(theory.critical_sigma_w2(activation, sigma_b2)), 6)


def _factory(
    spec: Mapping[str, Any], in_features: int, out_features: int
) -> Callable[[nnx.Rngs], nnx.Module]:
    def make(rngs: nnx.Rngs) -> nnx.Module:
        return jaxvg.MLP(
            in_features,
            spec["width"],
            spec["depth"],
            out_features,
            **{k: v for k, v in spec.items() if k not in ("width", "depth")},
            rngs=rngs,
        )

    return make


def _setup(config: Config, v: Variant) -> dict[str, Any]:
    """What a cell's numbers depend on; a stored cell is reused only if its setup is equal."""
    return files.to_jsonable(
        {
            "model": v.model,
            "optimizer": v.optimizer,
            "learning_rate": v.learning_rate,
            "clip_norm": v.clip_norm,
            "seeds": v.seeds,
            "train_mode": v.train_mode,
            "steps": config.steps,
            "batch_size": config.batch_size,
            "log_every": config.log_every,
            "data_seed": config.data_seed,
            "dataset": "digits",
        }
    )


def _init_flow(v: Variant, factory: Callable, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Gradient flow at init of every seed's net (the same init as `fit`: nnx.Rngs(key(seed)))."""
    rows = []
    for s in v.seeds:
        model = factory(nnx.Rngs(jax.random.key(s)))
        flow = jaxvg.gradient_flow(
            model,
            x,
            y,
            loss="cross_entropy",
            train=v.train_mode,
            key=jax.random.key(s) if v.train_mode else None,
        )
        rows.append(jax.device_get(flow))
    stack = lambda name: np.stack([np.asarray(getattr(f, name), np.float64) for f in rows])  # noqa: E731
    kg = stack("log10_kernel_grad")
    act = stack("log10_act_grad")
    return {
        "log10_gain": stack("log10_gain"),  # (S, L)
        "log10_kernel_grad": kg,  # (S, L)
        "log10_dphi": stack("log10_dphi"),  # (S, L)
        "gap_decades": kg[:, -1] - kg[:, 0],  # (S,)
        "vanishing_decades": act[:, -1] - act[:, 0],  # (S,)
    }


def steps_to_target(
    step: np.ndarray, accuracy: np.ndarray, target: float = TARGET_ACCURACY
) -> list[int | None]:
    """First logged step at which accuracy >= target, per seed; None if never.

    Args:
      step: (T,) logged steps.
      accuracy: (S, T) accuracies in [0, 1] (NaN after divergence counts as not reached).
      target: the accuracy to reach.
    Returns:
      A list of S ints (steps) or None.
    """
    acc = np.nan_to_num(np.asarray(accuracy, np.float64), nan=-1.0)
    out: list[int | None] = []
    for row in acc:
        hit = np.flatnonzero(row >= target)
        out.append(int(step[hit[0]]) if hit.size else None)
    return out


def _run_variant(config: Config, v: Variant, ds: data.Dataset) -> dict[str, Any]:
    """Gradient flow at init and training of one variant's seeds: its cell (JSON-ready)."""
    t0 = time.perf_counter()
    factory = _factory(v.model, ds.x_train.shape[1], ds.num_classes)
    m = min(MONITOR_BATCH, ds.x_train.shape[0])
    flow = _init_flow(v, factory, ds.x_train[:m], ds.y_train[:m])
    fit = jaxvg.fit(
        factory,
        ds,
        loss="cross_entropy",
        optimizer=v.optimizer,
        learning_rate=v.learning_rate,
        steps=config.steps,
        batch_size=config.batch_size,
        clip_norm=v.clip_norm,
        log_every=config.log_every,
        seeds=list(v.seeds),
        on_nonfinite="record",
        progress=False,
    )
    h = fit.history
    kg_train = np.asarray(h["log10_kernel_grad"], np.float64)  # (S, T, L)
    cell = {
        "key": v.key,
        "label": v.label,
        "group": v.group,
        "source": v.source,
        "seeds": list(v.seeds),
        **{f"init/{k}": val for k, val in flow.items()},
        "step": np.asarray(h["step"]),
        "train/accuracy": h["train/accuracy"],
        "train/loss": h["train/loss"],
        "test/accuracy": h["test/accuracy"],
        "test/loss": h["test/loss"],
        "train/gap_decades": kg_train[..., -1] - kg_train[..., 0],  # (S, T), on the step's minibatch
        "steps_to_target": steps_to_target(np.asarray(h["step"]), h["train/accuracy"]),
        "final_test_accuracy": np.asarray(h["test/accuracy"])[:, -1],
        "final_train_accuracy": np.asarray(h["train/accuracy"])[:, -1],
        "diverged": np.asarray(h["diverged"]),
        "diverged_step": np.asarray(h["diverged_step"]),
        "seconds": time.perf_counter() - t0,
    }
    return files.to_jsonable(cell)  # the same form as a cell read back from disk


def _describe(cell: Mapping[str, Any]) -> str:
    """The progress line of a computed cell."""
    gap = np.mean(_floats(cell["init/gap_decades"]))
    return (
        f"gap {gap:+.2f} dec  test acc {np.nanmean(_floats(cell['final_test_accuracy'])):.3f}  "
        f"to 90%: {cell['steps_to_target']}"
    )


def _floats(values: Any) -> np.ndarray:
    """JSON lists (None = NaN) or arrays -> float64 array."""
    return np.asarray(np.nan if values is None else values, dtype=np.float64)


def _std(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(np.std(a, ddof=1)) if a.size > 1 else 0.0


def _censored_steps(cell: Mapping[str, Any], budget: float) -> np.ndarray:
    return np.asarray([budget if t is None else float(t) for t in cell["steps_to_target"]])


def verdict(cell: Mapping[str, Any], baseline: Mapping[str, Any], config: Config) -> str:
    """The verdict on one cure against the baseline: "helps", "hurts", "mixed" or "no effect".

    The rule is in the module docstring.

    Args:
      cell, baseline: cells as `run` stores them.
      config: the experiment `Config` (steps and log_every set the censoring and the step floor).
    """
    budget = float(config.steps + config.log_every)
    t, t0 = _censored_steps(cell, budget), _censored_steps(baseline, budget)
    a, a0 = _floats(cell["final_test_accuracy"]), _floats(baseline["final_test_accuracy"])
    tol_t = 2 * max(_std(t0), _std(t), float(config.log_every))
    tol_a = 2 * max(_std(a0), _std(a), ACCURACY_FLOOR)
    a_mean = float(np.nanmean(a)) if np.isfinite(a).any() else -math.inf
    a0_mean = float(np.nanmean(a0)) if np.isfinite(a0).any() else -math.inf
    diverged = bool(np.any(np.asarray(cell["diverged"], bool)))
    helps = t.mean() < t0.mean() - tol_t or a_mean > a0_mean + tol_a
    hurts = t.mean() > t0.mean() + tol_t or a_mean < a0_mean - tol_a or diverged
    if helps and hurts:
        return "mixed"
    return "helps" if helps else "hurts" if hurts else "no effect"


def _steps_text(steps: list[int | None]) -> str:
    reached = [t for t in steps if t is not None]
    if not reached:
        return "never"
    text = f"{np.mean(reached):.0f}" + (f" ± {np.std(reached, ddof=1):.0f}" if len(reached) > 1 else "")
    return text if len(reached) == len(steps) else f"{text} ({len(reached)}/{len(steps)})"


def rows(cells: Mapping[str, Mapping[str, Any]], config: Config) -> list[dict[str, Any]]:
    """One table row per variant, in `variants` order (cells missing from `cells` are skipped)."""
    order = [v.key for v in variants(config)]
    baseline = cells.get("baseline")
    out = []
    for key in order:
        if key not in cells:
            continue
        c = cells[key]
        gain = _floats(c["init/log10_gain"])  # (S, L)
        acc = _floats(c["final_test_accuracy"])
        held = "-"
        if key == "baseline" or baseline is None:
            v = "reference" if key == "baseline" else "n/a"
        else:
            v = verdict(c, baseline, config)
            held = {"helps": "yes", "mixed": "partly"}.get(v, "no")
        out.append(
            {
                "cure": c["label"],
                "key": key,
                "group": c["group"],
                "source": c["source"],
                "init_gap_decades": float(np.nanmean(_floats(c["init/gap_decades"]))),
                "init_gain_per_block": float(np.nanmean(gain)),
                "first_block_gain": float(np.nanmean(gain[:, 0])),
                "vanishing_decades": float(np.nanmean(_floats(c["init/vanishing_decades"]))),
                "steps_to_90": _steps_text(c["steps_to_target"]),
                "reached_90": sum(t is not None for t in c["steps_to_target"]),
                "seeds": len(c["seeds"]),
                "test_acc": float(np.nanmean(acc)) if np.isfinite(acc).any() else math.nan,
                "test_acc_std": _std(acc),
                "diverged": int(np.sum(np.asarray(c["diverged"], bool))),
                "verdict": v,
                "claim_held": held,
            }
        )
    return out


TABLE_COLUMNS = (
    "cure",
    "source",
    "init_gap_decades",
    "init_gain_per_block",
    "steps_to_90",
    "test_acc",
    "test_acc_std",
    "diverged",
    "verdict",
)


def run(config: Config, *, on_cell: OnCell = None, done: Done = None, log: Log = None) -> dict[str, Any]:
    """Train the baseline and every cure, measure their gradient flow at init, no file I/O.

    Args:
      config: the experiment `Config`.
      on_cell: called as `on_cell(key, cell)` after each newly computed variant (`Variant.key`);
        `cell` is a JSON-ready dict (per-seed lists, NaN as None).
      done: {key: cell} of cells already computed (as `jaxvg.report.cell_store.finished_cells` returns);
        a cell whose stored `setup` equals this config's is reused, not recomputed.
      log: optional progress printer (main prints to stderr).

    Returns:
      Dict with `cells` {key: cell} in table order, `rows` (one per variant, see `rows`),
      `computed` (the keys computed in this call), `config` and `seconds`.
    """
    start = time.perf_counter()
    ds = data.load("digits", seed=config.data_seed)
    store = experiment.Cells(done, on_cell, log)
    for v in variants(config):
        store.get(
            v.key, _setup(config, v), functools.partial(_run_variant, config, v, ds), describe=_describe
        )
    return {
        "cells": store.cells,
        "rows": rows(store.cells, config),
        "computed": store.computed,
        "config": dataclasses.asdict(config),
        "seconds": time.perf_counter() - start,
    }


def report(config: Config, res: dict[str, Any]) -> experiment.Outputs:
    """What main writes: metrics.json, results.csv (one row per variant), summary.md, remedies.png."""
    return experiment.Outputs(
        results={k: v for k, v in res.items() if k != "config"},
        summary=summary_text(config, res),
        csv={"results.csv": res["rows"]},
        seeds=sorted({s for c in res["cells"].values() for s in c["seeds"]}),
        figure=lambda: figures.remedies(res),
    )


def summary_text(config: Config, res: Mapping[str, Any]) -> str:
    """The Markdown summary: setup, the table, the verdict rule."""
    table = tables.format_table(res["rows"], TABLE_COLUMNS, floatfmt=".3g")
    base = res["cells"].get("baseline", {})
    lines = [
        "# remedies: which cures of vanishing gradients work",
        "",
        f"Digits (1438 train / 359 test). Baseline: sigmoid MLP, {config.depth} hidden layers x {config.width} "
        f"units, small-uniform init U(+-1/sqrt(fan_in)), SGD lr {config.learning_rate:g}, batch "
        f"{config.batch_size}, {config.steps} steps, seeds {base.get('seeds', list(range(config.seeds)))}. "
        "Gain and gap at init from `gradient_flow` on 256 training examples (batch norm / dropout "
        "in training mode); gap = log10|dL/dW_last| - log10|dL/dW_first| (decades); steps to 90% "
        f"train accuracy logged every {config.log_every} steps (mean ± std over the seeds that got there); "
        "test accuracy after the last step (mean, std over seeds).",
        "",
        table,
        "",
        f'Verdict against the baseline: "helps" if mean steps-to-90% (never counted as '
        f"{config.steps + config.log_every}) drops by more than 2 max(std_baseline, std_cure, {config.log_every}), "
        f'or mean test accuracy rises by more than 2 max(std_baseline, std_cure, {ACCURACY_FLOOR}); "hurts" '
        'for the opposite or any diverged seed; "mixed" if both; else "no effect". The claim held '
        'when the verdict is "helps".',
        "",
        f"Compute time of the cells (summed as each was computed): "
        f"{sum(float(c.get('seconds') or 0.0) for c in res['cells'].values()):.0f} s; this call: "
        f"{res.get('seconds', math.nan):.0f} s, {len(res.get('computed', []))} cells computed, the rest reused.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse flags, run, and write results/remedies/ (metrics.json, results.csv, PNG, summary.md)."""
    return experiment.main(Config, run, report, argv)


if __name__ == "__main__":
    main()
