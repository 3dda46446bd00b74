"""Trainability of deep tanh nets over sigma_w2 x depth, against the 6 xi_c depth scale.

Reproduces: Schoenholz, Gilmer, Ganguli & Sohl-Dickstein, Deep Information Propagation, ICLR 2017
(arXiv:1611.01232), Fig. 5/6: accuracy after k SGD steps of tanh MLPs (sigma_b2 = 0.05) over a
grid of weight variances and depths, with the mean-field curve depth = 6 xi_c (xi_c: the depth
scale over which correlations between inputs converge, `jaxvg.theory.depth_scales`) drawn on the
heat map. Networks deeper than about 6 xi_c do not train; xi_c diverges at the order-to-chaos
transition sigma_w2 = `theory.critical_sigma_w2` (1.76 for sigma_b2 = 0.05), so the trainable
region is a tongue around criticality that reaches the greatest depths there.

How it runs: every net of the grid (sigma_w2 x depth x seed) is a `jaxvg.MLP` padded to the largest
depth, its extra blocks masked to the identity (`MLP(..., max_depth=...)`), so the nets stack
(`train.stack_models`) and the whole grid is ONE compiled program (`train.fit_stacked`), its nets
axis sharded over local devices (`jaxvg.scale.shard_nets`). The
grid runs in chunks of one depth row (all sigma_w2 x seeds), each written as it finishes
(`on_cell`) and skipped when rerun. Why pad: on a 2-core CPU compiling the training program takes
several times longer than running a whole depth row, so one program for all depths beats one program per depth even though padded blocks are
computed and discarded (`--no-pad-depths` gives one exact-depth program per row instead, for
accelerators where compute, not compile, dominates). Initial weights use common random numbers: a
net's standard-normal draws depend only on (seed, layer) and sigma_w2 scales them, so neighbouring
cells differ by sigma_w2 and depth alone. A net whose loss or parameters go non-finite is frozen at
its last finite parameters and recorded as diverged.

Run:    python -m experiments.phase_diagram              (default grid)
        python -m experiments.phase_diagram --quick      (4 x 3 grid, width 32, 150 steps; what the tests run)
        python -m experiments.phase_diagram --preset full (Schoenholz's depths to 300; accelerators)
Writes: results/phase_diagram/{metrics.json,phase_diagram.csv,phase_diagram.png,summary.md,cells/}

Expected outcome: accuracy is high only inside the curve depth < 6 xi_c; near sigma_w2 ~ 1.76
the trainable region reaches the deepest nets of the grid, while deep nets in the ordered phase
(sigma_w2 ~ 1) and deep chaotic nets (sigma_w2 >= 3) stay near chance (10 %).

Measured (defaults: digits, width 64, 300 SGD steps of lr 0.02, batch 64, 2 seeds; jax 0.10.2 on a
2-core CPU, 2 minutes idle, 9 under a load of 7, with the training loop of jaxvg.train), train accuracy:

| depth  |     1 |  1.25 |   1.5 |  1.75 |     2 |  2.25 |   2.5 |     3 |   3.5 |     4 |
|:-------|------:|------:|------:|------:|------:|------:|------:|------:|------:|------:|
| 4      |  0.94 |  0.95 |  0.96 |  0.96 |  0.96 |  0.96 |  0.96 |  0.96 |  0.96 |  0.96 |
| 8      |  0.95 |  0.97 |  0.97 |  0.98 |  0.98 |  0.98 |  0.99 |  0.99 |  0.99 |  0.99 |
| 16     |  0.91 |  0.98 |  0.99 |  0.99 |  0.99 |  0.99 |  0.99 |  0.99 |  0.99 |  0.99 |
| 24     |  0.78 |  0.99 |  0.99 |  1.00 |  1.00 |  0.99 |  0.99 |  0.98 |  0.93 |  0.84 |
| 32     |  0.32 |  0.96 |  0.99 |  0.99 |  0.99 |  0.97 |  0.94 |  0.93 |  0.76 |  0.59 |
| 48     |  0.10 |  0.54 |  0.92 |  0.96 |  0.93 |  0.89 |  0.79 |  0.53 |  0.26 |  0.18 |
| 64     |  0.10 |  0.19 |  0.51 |  0.53 |  0.45 |  0.33 |  0.25 |  0.19 |  0.18 |  0.13 |
| 6 xi_c |  21.8 |  40.8 |  94.8 |  2557 |   151 |  90.7 |  70.8 |  54.3 |  46.6 |  41.9 |

Mean accuracy 0.90 inside depth < 6 xi_c, 0.27 outside; "trainable" (accuracy half-way from chance
to the best) agrees with depth < 6 xi_c in 90 % of the 70 cells (7 depths x 10 sigma_w2). The ordered
edge follows 6 xi_c closely (sigma_w2 = 1: 0.91 at depth 16, 0.32 at 32, 6 xi_c = 22). At every
depth >= 24 the best column is sigma_w2 = 1.75 (tied at 24 and 32), next to critical 1.761; there,
depth 64 reaches only 0.53 in 300 steps: near criticality the limit is training time, not signal
propagation (Schoenholz et al. train longer). No cell diverged at lr 0.02 (an lr of 1e37 makes every
net diverge; tested). The training loop before jaxvg.train (same defaults) gave cells up to 0.21
apart from these (sigma_w2 = 1, depth 24: 0.57), 0.89 inside and 0.26 outside, the same 90 %
agreement; `results/phase_diagram/summary.md` holds a run's own numbers.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvg import checks, scale, theory, train
from jaxvg.nn import MLP, activations
from jaxvg.report import experiment, figures, tables
from jaxvg.report.experiment import Done, Log, OnCell
from jaxvg.train import data

NAME = "phase_diagram"


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "digits"  # "digits" (8x8 scikit-learn digits) or "mnist1d"
    activation: str = "tanh"  # registry name
    sigma_b2: float = 0.05  # bias variance (Schoenholz et al. use 0.05)
    sigma_w2: tuple[float, ...] = (
        1.0,
        1.25,
        1.5,
        1.75,
        2.0,
        2.25,
        2.5,
        3.0,
        3.5,
        4.0,
    )  # weight variances x 1/fan_in
    depths: tuple[int, ...] = (4, 8, 16, 24, 32, 48, 64)  # hidden tanh layers
    width: int = 64  # units per hidden layer
    steps: int = 300  # SGD steps (k in "accuracy after k steps")
    batch_size: int = 64  # examples per SGD step, drawn with replacement
    learning_rate: float = 0.02  # SGD step size
    pad_depths: bool = True  # pad all nets to the largest depth: one compiled program for the grid
    seeds: int = 2  # nets per cell (init and batch order), trained together under vmap
    data_seed: int = 0  # seed of the dataset split
    out_dir: str = "results/phase_diagram"  # where main() writes
    quick: bool = False  # tiny grid for tests/CI; fields you set yourself are kept

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {
            "dataset": "mnist1d",
            "sigma_w2": tuple(float(s) for s in np.round(np.linspace(1.0, 4.0, 25), 3)),
            "depths": (10, 20, 40, 60, 80, 100, 130, 160, 200, 250, 300),
            "width": 128,
            "steps": 1000,
            "batch_size": 128,
            "seeds": 4,
        }
    }
    QUICK: ClassVar[dict[str, Any]] = {
        "sigma_w2": (1.0, 1.75, 2.5, 4.0),
        "depths": (3, 12, 36),
        "width": 32,
        "steps": 150,
        "learning_rate": 0.05,
        "seeds": 1,
    }

    def __post_init__(self):
        experiment.apply_quick(self)
        experiment.check_common(self)
        checks.choice("dataset", self.dataset, ("digits", "mnist1d"))
        activations.get(self.activation)
        checks.nonnegative("sigma_b2", self.sigma_b2)
        sigma_w2 = experiment.check_tuple("sigma_w2", self.sigma_w2, checks.positive)
        depths = experiment.check_tuple("depths", self.depths, checks.positive_int)
        for name in ("width", "batch_size", "seeds"):
            checks.positive_int(name, getattr(self, name))
        train.config.check_steps(self.steps)
        checks.positive("learning_rate", self.learning_rate)
        checks.nonnegative_int("data_seed", self.data_seed)
        checks.boolean("pad_depths", self.pad_depths)
        object.__setattr__(self, "sigma_w2", sigma_w2)
        object.__setattr__(self, "depths", tuple(sorted(set(depths))))


# --------------------------------------------------------------------------- the training kernel


def _train_group(
    config: Config,
    ds: data.Dataset,
    group: Sequence[tuple[int, float]],
    max_depth: int | None,
    seed_keys: jax.Array,
) -> dict[str, np.ndarray]:
    """Train the nets of `group` ((depth, sigma_w2) cells, `config.seeds` nets each) as ONE stack.

    Every net is a `jaxvg.MLP` of `depth` tanh blocks, W ~ N(0, sigma_w2/fan_in), b ~ N(0, sigma_b2)
    (head included), built with `max_depth` blocks of which the first `depth` run (None: exactly
    `depth` blocks) and its hidden blocks under one `lax.scan` (an unrolled loop of 64-300 blocks
    would compile for minutes on a CPU). Seed s initialises from `nnx.Rngs(seed_keys[s])`: block l's
    standard-normal draws depend on (seed, l) only (the head's also on the depth) and sigma_w2
    scales them. The stack trains by minibatch SGD (batches drawn without replacement, a fresh
    permutation per epoch) with `fit_stacked` (on_nonfinite="record": a net whose loss, gradient or
    parameters go non-finite is frozen at its last finite parameters), its axis sharded over the
    local devices.

    Returns:
      Per net (cells x seeds, in that order), numpy arrays: train/test accuracy and loss of the final
      (or frozen) parameters, the batch loss at step 0 and averaged over the last 10 % of steps
      (NaN for a diverged net), `diverged` and `diverged_step` (-1 if never).
    """
    nets = [
        MLP(
            ds.in_features,
            config.width,
            depth,
            ds.num_classes,
            activation=config.activation,
            init="gaussian",
            sigma_w2=s,
            sigma_b2=config.sigma_b2,
            max_depth=max_depth,
            scan_blocks=True,
            rngs=nnx.Rngs(key),
        )
        for depth, s in group
        for key in seed_keys
    ]
    graphdef, params, rest = train.stack_models(nets)
    keys = jax.vmap(train.data_key)(jnp.tile(seed_keys, len(group)))
    (params, rest, keys), n = scale.pad_nets((params, rest, keys), jax.local_device_count())
    params, rest, keys = scale.shard_nets((params, rest, keys))
    fitted = train.fit_stacked(
        graphdef,
        params,
        rest,
        ds,
        keys=keys,
        loss="cross_entropy",
        optimizer="sgd",
        learning_rate=config.learning_rate,
        steps=config.steps,
        batch_size=config.batch_size,
        log_every=config.steps,
        on_nonfinite="record",
        progress=False,
    )
    final = train.evaluate_stacked(graphdef, fitted.params, fitted.rest, ds)
    h = fitted.history
    batch_loss = h["train/batch_loss"]
    out = {
        "train_accuracy": final["train/accuracy"],
        "test_accuracy": final["test/accuracy"],
        "train_loss": final["train/loss"],
        "test_loss": final["test/loss"],
        "initial_batch_loss": batch_loss[:, 0],
        "final_batch_loss": batch_loss[:, -max(1, config.steps // 10) :].mean(axis=1),
        "diverged": h["diverged"],
        "diverged_step": h["diverged_step"],
    }
    return {k: np.asarray(v)[:n] for k, v in out.items()}


# --------------------------------------------------------------------------- run

_PER_SEED = (
    "train_accuracy",
    "test_accuracy",
    "train_loss",
    "test_loss",
    "initial_batch_loss",
    "final_batch_loss",
    "diverged",
    "diverged_step",
)
# What a stored (depth, sigma_w2) cell holds: per-seed lists of `setup["seeds"]` values (NaN = None).
CELL_SCHEMA = experiment.cell_schema(
    {
        "depth": int,
        "sigma_w2": float,
        **{name: list[float | None] for name in _PER_SEED[:6]},
        "diverged": list[bool],
        "diverged_step": list[int],
        "setup": {"seeds": int},
    },
    shapes=lambda cell: {name: (cell["setup"]["seeds"],) for name in _PER_SEED},
)


def cell_key(depth: int, sigma_w2: float) -> str:
    """The key of one (depth, sigma_w2) cell, e.g. "depth=16,sigma_w2=1.75" (`jaxvg.scale.cell_key`)."""
    return scale.cell_key({"depth": int(depth), "sigma_w2": float(sigma_w2)})


def _setup(config: Config) -> dict[str, Any]:
    """What a cell's result depends on besides (depth, sigma_w2): a stored cell is reused only if
    its setup matches."""
    keys = (
        "dataset",
        "activation",
        "sigma_b2",
        "width",
        "steps",
        "batch_size",
        "learning_rate",
        "seeds",
        "data_seed",
    )
    return {k: getattr(config, k) for k in keys}


def _nan(v: Any) -> float:
    return math.nan if v is None else float(v)


def run(config: Config, *, on_cell: OnCell = None, done: Done = None, log: Log = None) -> dict[str, Any]:
    """Train the sigma_w2 x depth grid and return the phase diagram, with no file I/O.

    Args:
      config: the experiment `Config`.
      on_cell: called as `on_cell(key, cell)` for every newly computed cell (see `cell_key`);
        `cell` is a JSON-ready dict with per-seed lists.
      done: {key: cell} of cells already computed (as `jaxvg.report.cell_store.finished_cells` returns);
        cells whose stored setup matches this config are reused, not recomputed.
      log: optional progress printer (main passes `print`).

    Returns:
      Dict with `sigma_w2` (S,), `depths` (D,), `train_accuracy`, `test_accuracy`,
      `diverged_fraction` (D, S) means over seeds, `theory` (critical_sigma_w2, xi_c (S,),
      six_xi_c (S,)), `rows` (one dict per cell, for CSV and tables), `cells` {key: cell},
      `computed` (keys computed in this call), `summary` (headline numbers) and `seconds`.
    """
    experiment.check_config(config, Config)
    start = time.perf_counter()
    ds = data.load(config.dataset, seed=config.data_seed)
    setup = _setup(config)
    sig = np.asarray(config.sigma_w2)
    max_depth = max(config.depths)
    seed_keys = jax.random.split(jax.random.key(20170), config.seeds)  # seed s -> seed_keys[s]

    store = experiment.Cells(done, on_cell, schema=CELL_SCHEMA)
    todo = [(d, s) for d in config.depths for s in config.sigma_w2 if not store.reuse(cell_key(d, s), setup)]

    # Groups of cells trained as one call. pad_depths: fixed-size chunks of the flattened grid, all
    # padded to the largest depth (one compiled program). Otherwise one group per depth, each its
    # own program with no padding.
    if config.pad_depths:
        size = len(config.sigma_w2)
        groups = [todo[i : i + size] for i in range(0, len(todo), size)]
    else:
        groups = [[c for c in todo if c[0] == d] for d in config.depths]
        groups = [g for g in groups if g]
    for group in groups:
        t0 = time.perf_counter()
        n_real = len(group)
        if config.pad_depths and n_real < len(config.sigma_w2):  # same shape for every chunk
            group = group + [group[-1]] * (len(config.sigma_w2) - n_real)
        out = _train_group(config, ds, group, max_depth if config.pad_depths else None, seed_keys)
        shape = (len(group), config.seeds)
        out = {k: v.reshape(shape) for k, v in out.items()}
        for i, (depth, s) in enumerate(group[:n_real]):
            cell = {"depth": depth, "sigma_w2": s, **{name: values[i] for name, values in out.items()}}
            store.add(cell_key(depth, s), setup, cell)
        if log is not None:
            acc = out["train_accuracy"][:n_real].mean(axis=1)
            log(
                f"{n_real} cells (depths {sorted({d for d, _ in group[:n_real]})}) in "
                f"{time.perf_counter() - t0:.1f} s; train accuracy " + " ".join(f"{a:.2f}" for a in acc)
            )

    # assemble grids (rows: depths, columns: sigma_w2)
    shape = (len(config.depths), len(sig))
    train_acc, test_acc, div_frac = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    rows = []
    for i, depth in enumerate(config.depths):
        for j, s in enumerate(config.sigma_w2):
            cell = store.cells[cell_key(depth, s)]
            tr = np.array([_nan(v) for v in cell["train_accuracy"]])
            te = np.array([_nan(v) for v in cell["test_accuracy"]])
            dv = np.array([bool(v) for v in cell["diverged"]])
            train_acc[i, j], test_acc[i, j], div_frac[i, j] = np.mean(tr), np.mean(te), np.mean(dv)
            rows.append(
                {
                    "depth": depth,
                    "sigma_w2": s,
                    "train_accuracy": float(np.mean(tr)),
                    "train_accuracy_std": float(np.std(tr)),
                    "test_accuracy": float(np.mean(te)),
                    "final_batch_loss": float(np.nanmean([_nan(v) for v in cell["final_batch_loss"]]))
                    if not dv.all()
                    else math.nan,
                    "diverged": int(dv.sum()),
                }
            )

    xi_q, xi_c = theory.depth_scales(config.activation, sig, config.sigma_b2)
    curve_sig = np.linspace(min(sig), max(sig), 301)
    curve_xi_c = np.asarray(theory.depth_scales(config.activation, curve_sig, config.sigma_b2)[1], np.float64)
    xi_c = np.asarray(xi_c, dtype=np.float64)
    critical = float(theory.critical_sigma_w2(config.activation, config.sigma_b2))
    for row in rows:
        j = config.sigma_w2.index(row["sigma_w2"])
        row["six_xi_c"] = float(6 * xi_c[j])
        row["inside_6xi_c"] = bool(row["depth"] < 6 * xi_c[j])

    summary = _summarise(config, train_acc, xi_c, critical, ds.num_classes)
    return {
        "sigma_w2": sig.tolist(),
        "depths": list(config.depths),
        "train_accuracy": train_acc,
        "test_accuracy": test_acc,
        "diverged_fraction": div_frac,
        "theory": {
            "critical_sigma_w2": critical,
            "xi_c": xi_c,
            "xi_q": np.asarray(xi_q, np.float64),
            "six_xi_c": 6 * xi_c,
            "curve_sigma_w2": curve_sig,
            "curve_six_xi_c": 6 * curve_xi_c,
        },
        "rows": rows,
        "cells": {
            cell_key(d, s): store.cells[cell_key(d, s)] for d in config.depths for s in config.sigma_w2
        },
        "computed": store.computed,
        "summary": summary,
        "chance": 1.0 / ds.num_classes,
        "seconds": time.perf_counter() - start,
    }


def report(config: Config, res: dict[str, Any]) -> experiment.Outputs:
    """What main writes: metrics.json, phase_diagram.csv (one row per cell), summary.md with the
    accuracy grid, and phase_diagram.png."""
    table = tables.format_table(accuracy_table(res), floatfmt=".2f")
    return experiment.Outputs(
        results={k: v for k, v in res.items() if k not in ("cells", "rows")},
        summary=_summary_text(config, res, table),
        csv={f"{NAME}.csv": res["rows"]},
        figure=lambda: figures.phase_diagram(res),
    )


def _summarise(config: Config, acc: np.ndarray, xi_c: np.ndarray, critical: float, num_classes: int) -> dict:
    """Headline numbers: mean train accuracy inside vs outside depth < 6 xi_c, and the deepest
    depth reaching half-way between chance and the best accuracy, per sigma_w2."""
    depths = np.asarray(config.depths, float)[:, None]
    inside = depths < 6 * xi_c[None, :]
    chance = 1.0 / num_classes
    threshold = chance + 0.5 * (np.nanmax(acc) - chance)
    trainable = acc >= threshold
    deepest = [
        max((d for d, ok in zip(config.depths, trainable[:, j], strict=True) if ok), default=0)
        for j in range(acc.shape[1])
    ]
    j_crit = int(np.argmin(np.abs(np.asarray(config.sigma_w2) - critical)))
    agree = float(np.mean(inside == trainable))
    return {
        "threshold_accuracy": float(threshold),
        "mean_accuracy_inside_6xi_c": float(np.nanmean(acc[inside])) if inside.any() else math.nan,
        "mean_accuracy_outside_6xi_c": float(np.nanmean(acc[~inside])) if (~inside).any() else math.nan,
        "agreement_with_6xi_c": agree,
        "deepest_trainable_depth": deepest,
        "sigma_w2_nearest_critical": config.sigma_w2[j_crit],
        "critical_sigma_w2": critical,
    }


# --------------------------------------------------------------------------- main


def _summary_text(config: Config, res: dict[str, Any], table: str) -> str:
    s = res["summary"]
    lines = [
        "# phase_diagram",
        "",
        f"Trainability of {config.activation} MLPs on {config.dataset} (width {config.width}, sigma_b2 = "
        f"{config.sigma_b2}) after {config.steps} SGD steps (lr {config.learning_rate}, batch "
        f"{config.batch_size}), mean over {config.seeds} seed(s). Chance = {res['chance']:.2f}. "
        f"Critical sigma_w2 = {s['critical_sigma_w2']:.4f}. Reproduces Schoenholz et al. 2017 "
        "(arXiv:1611.01232), Fig. 5/6.",
        "",
        f"- mean train accuracy inside depth < 6 xi_c: {s['mean_accuracy_inside_6xi_c']:.3f}; outside: "
        f"{s['mean_accuracy_outside_6xi_c']:.3f}",
        f"- cells trainable (train acc >= {s['threshold_accuracy']:.3f}, half-way from chance to the best) agree "
        f"with depth < 6 xi_c in {100 * s['agreement_with_6xi_c']:.0f} % of the grid",
        "- deepest trainable depth per sigma_w2: "
        + ", ".join(
            f"{sw:g}: {d}" for sw, d in zip(res["sigma_w2"], s["deepest_trainable_depth"], strict=True)
        ),
        f"- cells diverged (any seed): {sum(1 for r in res['rows'] if r['diverged'])}",
        f"- wall time {res['seconds']:.0f} s",
        "",
        "Train accuracy (rows: depth; columns: sigma_w2; last row: 6 xi_c):",
        "",
        table,
        "",
    ]
    return "\n".join(lines)


def accuracy_table(res: dict[str, Any], field: str = "train_accuracy") -> list[dict[str, Any]]:
    """Rows of the depth x sigma_w2 grid of `field`, with a final row of 6 xi_c."""
    out = []
    for i, d in enumerate(res["depths"]):
        row: dict[str, Any] = {"depth": str(d)}
        for j, s in enumerate(res["sigma_w2"]):
            row[f"{s:g}"] = float(res[field][i, j])
        out.append(row)
    row = {"depth": "6 xi_c"}
    for j, s in enumerate(res["sigma_w2"]):
        row[f"{s:g}"] = float(res["theory"]["six_xi_c"][j])
    out.append(row)
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse flags, run, and write results/phase_diagram/ (metrics.json, CSV, PNG, summary.md)."""
    return experiment.main(Config, run, report, argv, schema=CELL_SCHEMA)


if __name__ == "__main__":
    main()
