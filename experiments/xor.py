"""XOR, a popular account's worked example done right: a shallow sigmoid net solves it, a deep one stalls.

A popular account of vanishing gradients trains, as its worked example, a single sigmoid unit p =
sigmoid(x . theta) (two weights starting at zero, no bias, no hidden layer) on the four XOR points,
looping over the examples, learning rate 0.01, 1000 epochs, MSE loss. It cannot work: (1) XOR is not
linearly separable, so no single unit, with or without a bias, gets more than 3 of the 4 points
right; (2) its "gradient" `X.T @ (2 * (y[i] - y_pred))` has the wrong sign for descent (the MSE
gradient is -2 X^T((y - p) * p(1 - p)) / m), (3) leaves out the sigmoid derivative
(`sigmoid_derivative` is defined, and written for the sigmoid's output, but never used) and (4)
compares the one label y[i] with all four predictions at every step. Run as written, theta runs off
to (68.5, 68.5): outputs (0.5, 1, 1, 1), MSE 0.3125, 3 of 4 points right. This experiment keeps the
data (x = [[0,0],[0,1], [1,0],[1,1]], y = [0,1,1,0]) and the loss (MSE on the network's output; a
point counts as correct when |output - y| < 0.5), adds a hidden layer and takes exact gradients with
`jax.grad`:

(a) shallow: `MLP(2, 8, depth=1, 1, activation="sigmoid", init="lecun_normal")` (one hidden layer of 8
    sigmoid units, a linear head), full-batch gradient descent, learning rate 0.3, 2000 steps, 8 seeds
    trained together in one vmapped program (`jaxvg.fit(..., seeds=range(8))`).
(b) deep: the same, but 20 hidden layers, same optimizer, learning rate and steps. Its backward
    signal shrinks by about 0.68 decades per sigmoid layer (sigma'(z) <= 1/4 and LeCun weights), so
    the first block's kernel gradient starts about 13 decades below the last block's: the first
    layers never move, the output is 0.5 for all four inputs, and the loss sits at 0.25 (the MSE of
    predicting 0.5 everywhere).

Run:    python -m experiments.xor            (defaults)
        python -m experiments.xor --quick    (1000 steps; what the tests run)
        python -m experiments.xor --depth 50 --width 16 --init glorot_normal --optimizer adam --learning-rate 0.01
        python -m experiments.xor --preset full   (64 seeds, 5000 steps)
Writes: results/xor/{metrics.json,curves.csv,layers.csv,xor.png,summary.md,cells/}; prints a table.

Expected outcome (measured on a 2-core CPU, jax 0.10.2, flax 0.12.8, with the defaults):
- shallow: 8 of 8 seeds reach 100% accuracy, final MSE 4e-13 to 2e-12 (with `--quick`, 1000 steps:
  8 of 8, median 1e-9). With 64 seeds (`--preset full`, 5000 steps; also 1000 and 2000 steps) 64
  of 64 solve it; at lr 0.5 some seeds stall (59 of 64 at 1000 steps), and at lr 1.0 full-batch GD
  on this MSE diverges.
- deep (20 hidden layers): 0 of 8 seeds solve it, every final loss 0.2500 (0 of 64 with
  `--preset full`). At init the last-minus-first block kernel-gradient gap is 12.2 to 13.4 decades
  (mean 12.96; over 64 seeds 11.8 to 13.9 [mean 12.87]; at least 5 is the claim tested); per block
  the mean log10 norm climbs from -13.5 (block 1) to -0.5 (block 20). At the end every block's gradient is below 1e-8 (gap 5.8 to 8.0 decades): the head
  has fitted the mean, and no gradient reaches the first layers that could do better.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from flax import nnx

import jaxvg
from jaxvg import checks
from jaxvg.nn import activations, initializers
from jaxvg.report import experiment, figures, tables
from jaxvg.report.experiment import Done, Log, OnCell
from jaxvg.train import data

NAME = "xor"


@dataclasses.dataclass(frozen=True)
class Config:
    depth: int = 20  # hidden layers of the deep net (the shallow net has 1)
    width: int = 8  # units per hidden layer, both nets
    activation: str = "sigmoid"  # hidden-layer activation (registry name)
    init: str = "lecun_normal"  # kernel scheme (jaxvg.nn.initializers.SCHEMES)
    loss: str = "mse"  # the source's loss; binary_cross_entropy also works
    optimizer: str = "gd"  # full-batch gradient descent, as the source intends
    learning_rate: float = 0.3  # peak learning rate
    steps: int = 2000  # optimizer steps, both nets
    seeds: int = 8  # nets per depth, seeds 0..seeds-1, trained together (vmap)
    log_every: int = 20  # steps between logged points (one compiled chunk)
    out_dir: str = "results/xor"  # where main() writes
    quick: bool = False  # 1000 steps (tests/CI); fields you set yourself are kept

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"full": {"seeds": 64, "steps": 5000, "log_every": 50}}
    QUICK: ClassVar[dict[str, Any]] = {"steps": 1000, "log_every": 50}

    def __post_init__(self):
        experiment.apply_quick(self)
        for name in ("depth", "width", "steps", "seeds", "log_every"):
            checks.positive_int(name, getattr(self, name))
        activations.get(self.activation)
        checks.choice("init", self.init, initializers.SCHEMES)
        checks.choice("loss", self.loss, ("mse", "binary_cross_entropy"))
        checks.choice("optimizer", self.optimizer, jaxvg.train.OPTIMIZERS)
        checks.positive("learning_rate", self.learning_rate)


def accuracy(loss: str, outputs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Share of points right, per leading index: |output - y| < 0.5 for mse, logit sign for BCE.

    outputs: (..., 4, 1); y: (4, 1) 0/1. Returns (...,) in [0, 1].
    """
    if loss == "mse":
        right = np.abs(outputs - y) < 0.5
    else:
        right = (outputs > 0) == (y > 0.5)
    return right.mean(axis=(-2, -1))


def _setup(config: Config, depth: int) -> dict[str, Any]:
    """What a cell's numbers depend on: the config but its output directory, with `depth`."""
    fields = dataclasses.asdict(config)
    for name in ("depth", "out_dir", "quick"):
        fields.pop(name)
    return {**fields, "depth": depth}


def train_cell(config: Config, depth: int) -> dict[str, Any]:
    """Train `config.seeds` nets of `depth` hidden layers on XOR in one vmapped program.

    Returns a JSON-friendly dict: per-seed final accuracy and loss, loss curves (seeds, T), the
    per-block log10 kernel-gradient norms at init and at the end (seeds, depth), and the
    last-minus-first block gap in decades (seeds,) at init and at the end.
    """
    ds = data.load("xor")
    seeds = list(range(config.seeds))

    def factory(rngs: nnx.Rngs) -> jaxvg.MLP:
        return jaxvg.MLP(2, config.width, depth, 1, activation=config.activation, init=config.init, rngs=rngs)

    start = time.perf_counter()
    fit = jaxvg.fit(
        factory,
        ds,
        loss=config.loss,
        optimizer=config.optimizer,
        learning_rate=config.learning_rate,
        steps=config.steps,
        log_every=config.log_every,
        seeds=seeds,
        on_nonfinite="record",
        progress=False,
    )
    seconds = time.perf_counter() - start
    outputs = np.stack([np.asarray(m(ds.x_train)) for m in fit.models])  # (seeds, 4, 1)
    acc = accuracy(config.loss, outputs, ds.y_train)
    h = fit.history
    kernel = h["log10_kernel_grad"]  # (seeds, T, depth)
    return {
        "depth": depth,
        "seeds": seeds,
        "final_accuracy": acc.tolist(),
        "solved": int((acc == 1.0).sum()),
        "final_loss": h["train/loss"][:, -1].tolist(),
        "diverged": h["diverged"].tolist(),
        "step": h["step"].tolist(),
        "loss_curves": h["train/loss"].tolist(),
        "log10_kernel_grad_init": kernel[:, 0].tolist(),
        "log10_kernel_grad_end": kernel[:, -1].tolist(),
        "gap_decades_init": (kernel[:, 0, -1] - kernel[:, 0, 0]).tolist(),
        "gap_decades_end": (kernel[:, -1, -1] - kernel[:, -1, 0]).tolist(),
        "outputs": outputs[..., 0].tolist(),
        "seconds": seconds,
    }


def run(config: Config, *, on_cell: OnCell = None, done: Done = None, log: Log = None) -> dict[str, Any]:
    """Train the shallow (1 hidden layer) and the deep (`config.depth`) nets; no file I/O.

    Args:
      config: the experiment's configuration.
      on_cell: called as `on_cell(key, cell)` when the "shallow" or "deep" cell finishes.
      done: finished cells {key: cell} (from `cell_store.finished_cells`); a stored cell is reused when
        its setup equals this run's.
      log: optional progress printer.

    Returns:
      {"shallow": cell, "deep": cell, "rows": table rows, "layer_rows", "curve_rows", "computed"};
      a cell is the dict `train_cell` returns, with its "setup".
    """
    store = experiment.Cells(done, on_cell, log)
    for key, depth in (("shallow", 1), ("deep", config.depth)):
        store.get(key, _setup(config, depth), functools.partial(train_cell, config, depth))
    cells = store.cells
    rows = []
    for key, cell in cells.items():
        gap_init = np.asarray(cell["gap_decades_init"], dtype=float)
        gap_end = np.asarray(cell["gap_decades_end"], dtype=float)
        rows.append(
            {
                "net": key,
                "hidden layers": cell["depth"],
                "solved (100%)": f"{cell['solved']}/{len(cell['seeds'])}",
                "median final loss": float(np.nanmedian(np.asarray(cell["final_loss"], dtype=float))),
                "gap at init (decades)": float(np.mean(gap_init)),
                "min gap at init": float(np.min(gap_init)),
                "gap at end (decades)": float(np.nanmean(gap_end)),
                "seconds": float(cell["seconds"]),
            }
        )
    layer_rows = []
    for key, cell in cells.items():
        init = np.asarray(cell["log10_kernel_grad_init"], dtype=float)
        end = np.asarray(cell["log10_kernel_grad_end"], dtype=float)
        for i in range(init.shape[1]):
            layer_rows.append(
                {
                    "net": key,
                    "block": i + 1,
                    "log10_kernel_grad_init_mean": float(np.mean(init[:, i])),
                    "log10_kernel_grad_init_std": float(np.std(init[:, i])),
                    "log10_kernel_grad_end_mean": float(np.nanmean(end[:, i])),
                    "log10_kernel_grad_end_std": float(np.nanstd(end[:, i])),
                }
            )
    curve_rows = []
    for key, cell in cells.items():
        for s, curve in zip(cell["seeds"], cell["loss_curves"], strict=True):
            for step, value in zip(cell["step"], curve, strict=True):
                curve_rows.append({"net": key, "seed": s, "step": step, "train_loss": value})
    return {
        **cells,
        "rows": rows,
        "layer_rows": layer_rows,
        "curve_rows": curve_rows,
        "computed": store.computed,
    }


def report(config: Config, res: dict[str, Any]) -> experiment.Outputs:
    """What main writes: metrics.json, curves.csv, layers.csv, summary.md and xor.png."""
    return experiment.Outputs(
        results={k: res[k] for k in ("shallow", "deep", "rows")},
        summary=summary_text(config, res),
        csv={"curves.csv": res["curve_rows"], "layers.csv": res["layer_rows"]},
        figure=lambda: figures.xor_curves(res),
    )


def summary_text(config: Config, res: Mapping[str, Any]) -> str:
    """Markdown summary: the table, and what it shows."""
    sh, dp = res["shallow"], res["deep"]
    gap = np.asarray(dp["gap_decades_init"], dtype=float)
    lines = [
        f"# XOR: shallow vs deep {config.activation} nets, {config.optimizer} lr {config.learning_rate:g}, "
        f"{config.steps} steps, {config.seeds} seeds",
        "",
        tables.format_table(res["rows"]),
        "",
        f"- shallow (1 hidden layer of {config.width}): {sh['solved']} of {len(sh['seeds'])} seeds reach 100% accuracy.",
        f"- deep ({dp['depth']} hidden layers): {dp['solved']} of {len(dp['seeds'])} solve it; median final loss "
        f"{np.nanmedian(np.asarray(dp['final_loss'], dtype=float)):.4f}. The first block's kernel gradient is "
        f"{gap.mean():.2f} decades (min {gap.min():.2f}) below the last block's at init.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse flags, run, and write results/xor/ (metrics.json, curves.csv, layers.csv, xor.png,
    summary.md)."""
    return experiment.main(Config, run, report, argv)


if __name__ == "__main__":
    main()
