"""Every number in README.md, and where it comes from.

Run:    python -m docs.readme_numbers                  (from the repository root; about 20 s)
        python -m docs.readme_numbers --check          (exit status 1 if a number differs)
        python -m docs.readme_numbers --results /tmp/r (read the experiments' outputs from there)

For each number the README states this prints the README's text, where the number comes from and,
where it can, the number itself:

- the cheap ones (the README's own example, mean-field theory: seconds) are recomputed here;
- the others come from an experiment or benchmark run (minutes): the command, the file it writes and
  the field in it. When that file exists (after you ran the command), the value found there is
  printed and compared with the README too.

A number matches when the README's text is the value rounded to the digits the README prints
(-0.6288 matches "−0.629"). `tests/test_readme_numbers.py` checks the cheap ones against the README
on every test run, that every README text below is still in the README, and (slow) that every
field named here exists in the experiments' and benchmarks' `--quick` outputs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import pathlib
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

MAX = "max"  # in a row selector: the row with the largest value of that key (e.g. the deepest net)


@dataclasses.dataclass(frozen=True)
class Number:
    """One number of the README.

    Attributes:
      what: what it is, in a few words.
      readme: a regular expression that matches the README's text once (its spaces match any
        whitespace, line breaks included); group 1 is the number as the README prints it ("−0.629",
        "145", "12-13", "975").
      compute: cheap numbers: computes the value here (a float, or a str compared as text).
      command: expensive numbers: the command whose output holds it.
      file: the JSON file that command writes, relative to the results directory.
      field: the path to the value in that file: keys, list indices, or row selectors ({key: value}
        picks the one row of a list whose entries equal these; value MAX: the row with the largest).
      convert: turns the value found at `field` into the number compared (default: as is).
      spread: a regular expression whose group 1 is the README's range ("1.05-1.24") of the values
        earlier runs gave, where it states one (the Performance table's "runs so far"): a value that
        differs from the README's own run but lies in that range reads "spread", not a difference.
    """

    what: str
    readme: str
    compute: Callable[[], Any] | None = None
    command: str | None = None
    file: str | None = None
    field: tuple[Any, ...] = ()
    convert: Callable[[Any], Any] | None = None
    spread: str | None = None

    @property
    def cheap(self) -> bool:
        return self.compute is not None


# --------------------------------------------------------------------------- the cheap numbers


def readme_example() -> dict[str, Any]:
    """The namespace of the README's first Python example (`Net`, `model`, `x`, `y`, `flow`), run
    with its printing swallowed."""
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace: dict[str, Any] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, str(README), "exec"), namespace)
    return namespace


_ZERO_BLOCKS: dict[str, int] = {}


def zero_gradient_blocks() -> dict[str, int]:
    """Blocks of the README's `Net` whose plain float32 gradient (`nnx.grad` of the MSE of its
    example) is exactly zero: "all" (kernel and bias entirely zero) and "any" (some entry zero)."""
    if not _ZERO_BLOCKS:
        import jax
        import jax.numpy as jnp
        import numpy as np
        from flax import nnx

        ns = readme_example()
        model, x, y = ns["model"], ns["x"], ns["y"]
        grads = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        blocks = [
            [np.asarray(leaf) for leaf in jax.tree.leaves(grads["blocks"][i])]
            for i in range(len(model.blocks))
        ]
        _ZERO_BLOCKS["all"] = sum(all((a == 0).all() for a in b) for b in blocks)
        _ZERO_BLOCKS["any"] = sum(any((a == 0).any() for a in b) for b in blocks)
    return _ZERO_BLOCKS


def _example_decades() -> float:
    return float(readme_example()["flow"].vanishing_decades)


def _mean_field_per_layer(activation: str, sigma_w2: float) -> float:
    """`experiments.vanishing`'s mean-field number: decades per layer over depth 50, inputs q0 = 1."""
    from jaxvg import theory

    return float(theory.gradient_profile(activation, sigma_w2, 0.0, depth=50, q0=1.0)[0]) / 50


def _relu_derivative_product_decades() -> float:
    """Decades that the product of RMS relu derivatives predicts over 50 He-init layers:
    -50 * 1/2 log10 E[relu'(z)^2] with E[relu'^2] = chi_1 / sigma_w2 = 1/2."""
    from jaxvg import theory

    return -50 * 0.5 * math.log10(float(theory.chi_1("relu", 2.0, 0.0)) / 2.0)


def _critical_tanh(sigma_b2: float) -> float:
    from jaxvg import theory

    return float(theory.critical_sigma_w2("tanh", sigma_b2))


def _isometry_tanh_variance() -> float:
    """Free-probability variance of the squared singular values, orthogonal critical tanh, depth 128
    (`experiments.isometry` defaults: sigma_b2 = 1e-3)."""
    import jax

    from jaxvg import theory

    with jax.enable_x64(True):
        sw = float(theory.critical_sigma_w2("tanh", 1e-3))
        return float(theory.jacobian_moments("tanh", sw, 1e-3, depth=128, weights="orthogonal")[1])


# --------------------------------------------------------------------------- the list


def _steps(text: str) -> str:
    """ "975 ± 170" -> "975" (the mean of the steps to 90%, as the README quotes it)."""
    return str(text).split(" ")[0]


def _range(values: Sequence[float]) -> str:
    """Per-seed values -> "lo-hi" in whole numbers, as the README quotes a range ("12-13")."""
    return f"{math.floor(min(values))}-{math.floor(max(values))}"


def _tanh_below_max(rows: Sequence[dict[str, Any]]) -> float:
    """Orthogonal tanh: the largest |measured / theory - 1| of the variance of sigma^2, in %, over
    the depths below the largest."""
    mine = [r for r in rows if (r["activation"], r["weights"]) == ("tanh", "orthogonal")]
    deepest = max(r["depth"] for r in mine)
    return 100 * max(abs(1 - r["var_ratio"]) for r in mine if r["depth"] < deepest)


def _neg(value: float) -> float:
    """A loss in decades as the README words it ("loses 0.085"): minus the signed change."""
    return -value


def _adding_cells(cells: dict[str, Any], net: str) -> list[dict[str, Any]]:
    """`experiments.through_time`'s adding-problem cells of `net` with clipping on, by T."""
    mine = [c for k, c in cells.items() if k.startswith("adding/") and k.endswith("/clip=on/" + net)]
    return sorted(mine, key=lambda c: c["T"])


def _solved_counts(net: str, *, of: bool) -> Callable[[dict[str, Any]], str]:
    """Adding problem, clipping on: seeds that solved it at each T ("4, 2, 1, 0"; with `of`:
    "4, 2, 1, 0 of 4", the seeds per cell)."""

    def convert(cells: dict[str, Any]) -> str:
        mine = _adding_cells(cells, net)
        text = ", ".join(str(round(c["success"] * len(c["test_mse"]))) for c in mine)
        return f"{text} of {len(mine[0]['test_mse'])}" if of else text

    return convert


def _solved_up_to(net: str) -> Callable[[dict[str, Any]], int]:
    """Adding problem, clipping on: the largest T up to which every T is solved on every seed (0:
    none)."""

    def convert(cells: dict[str, Any]) -> int:
        longest = 0
        for c in _adding_cells(cells, net):
            if c["success"] < 1.0:
                break
            longest = c["T"]
        return longest

    return convert


def _irnn_diverged(rows: Sequence[dict[str, Any]]) -> int:
    """Adding problem: IRNN runs that diverged with clipping on, over every T."""
    return sum(r["diverged"] for r in rows if r["net"] == "irnn" and r["clip"] == "on")


def _minutes(seconds: float) -> float:
    return seconds / 60


def _min_s(seconds: float) -> str:
    """1003.4 -> "16 min 43 s"."""
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60} s"


def _qk_minus_value(norm: str, scale: str, sign: float = 1.0) -> Callable[[Sequence[dict[str, Any]]], float]:
    """`experiments.transformers` part 2: the mean of the query and key kernels' log10 gradient
    minus the value kernels' (decades; times `sign`: -1 gives the deficit as a positive number)."""

    def convert(rows: Sequence[dict[str, Any]]) -> float:
        (r,) = [r for r in rows if (r["norm"], r["scale"]) == (norm, scale)]
        return sign * (r["query_minus_value"] + r["key_minus_value"]) / 2

    return convert


def _last_log10_q(values: Sequence[Sequence[float]]) -> float:
    """log10 q_L, the seed mean at the last layer of a rank cell's `log10_q` (seeds, L + 1)."""
    return sum(v[-1] for v in values) / len(values)


def _whole(steps: float) -> str:
    """Mean steps to the target as the README prints them: "322"; "-" when no seed got there (NaN,
    null in a JSON file)."""
    return str(round(steps)) if steps is not None and math.isfinite(steps) else "-"


def _train(key: str, depth: int, what: str) -> Callable[[Sequence[dict[str, Any]]], Any]:
    """`experiments.transformers` part 3: of the `train_rows` row (variant `key`, `depth`), `what`:
    "reached" ("2/4"), "failed" ("4/4": seeds that did not), "steps" (mean steps to the target of the seeds that got there, whole) or
    "accuracy" (final train accuracy, seed mean)."""

    def convert(rows: Sequence[dict[str, Any]]) -> Any:
        (r,) = [r for r in rows if (r["key"], r["depth"]) == (key, depth)]
        if what == "steps":
            return _whole(r["steps_to_target"])
        if what == "failed":
            got, total = (int(n) for n in r["reached"].split("/"))
            return f"{total - got}/{total}"
        return r["reached"] if what == "reached" else r["final_accuracy"]

    return convert


def _train_cell(r: dict[str, Any]) -> str:
    """A cell of the README's training table: "2/4, 320, 0.87" (seeds that reached the target,
    their mean steps to it, final accuracy) or "0/4, 0.15" (none reached it)."""
    if r["reached"].startswith("0/"):
        return f"{r['reached']}, {r['final_accuracy']:.2f}"
    return f"{r['reached']}, {_whole(r['steps_to_target'])}, {r['final_accuracy']:.2f}"


def _train_table_row(key: str) -> Callable[[Sequence[dict[str, Any]]], str]:
    """A row of the README's training table: the cells of variant `key` by depth, " | "-joined."""

    def convert(rows: Sequence[dict[str, Any]]) -> str:
        return " | ".join(_train_cell(r) for r in sorted(rows, key=lambda r: r["depth"]) if r["key"] == key)

    return convert


def _train_reached_or_accuracy(key: str) -> Callable[[Sequence[dict[str, Any]]], str]:
    """Variant `key` by depth as the lr 1e-3 sentence words it: "1/4, 0/4 (0.40), 0/4 (0.19)"
    (seeds that reached the target; the final accuracy where none did)."""

    def convert(rows: Sequence[dict[str, Any]]) -> str:
        mine = sorted((r for r in rows if r["key"] == key), key=lambda r: r["depth"])
        return ", ".join(
            r["reached"] + (f" ({r['final_accuracy']:.2f})" if r["reached"].startswith("0/") else "")
            for r in mine
        )

    return convert


def _train_steps(key: str, *, reached: bool) -> Callable[[Sequence[dict[str, Any]]], str]:
    """Variant `key` by depth: mean steps to the target, "175, 155, 140" (with `reached`: "4/4 at
    225, 260, 290", the seeds that got there when every depth has the same count)."""

    def convert(rows: Sequence[dict[str, Any]]) -> str:
        mine = sorted((r for r in rows if r["key"] == key), key=lambda r: r["depth"])
        steps = ", ".join(_whole(r["steps_to_target"]) for r in mine)
        if not reached:
            return steps
        counts = {r["reached"] for r in mine}
        return f"{counts.pop()} at {steps}" if len(counts) == 1 else ", ".join(r["reached"] for r in mine)

    return convert


_VAN = ("python -m experiments.vanishing", "vanishing/metrics.json")
_XOR = ("python -m experiments.xor", "xor/metrics.json")
_REM = ("python -m experiments.remedies", "remedies/metrics.json")
_PHA = ("python -m experiments.phase_diagram", "phase_diagram/metrics.json")
_ISO = ("python -m experiments.isometry", "isometry/metrics.json")
_BEN = ("python -m benchmarks.run", "benchmarks/run.json")
_TT = ("python -m experiments.through_time", "through_time/metrics.json")
_TFM = ("python -m experiments.transformers", "transformers/metrics.json")
_TFM_CPU = (
    "python -m experiments.transformers --preset cpu --out-dir results/transformers-cpu",
    "transformers-cpu/metrics.json",
)
_TFM_LR = (
    "python -m experiments.transformers --preset cpu --learning-rate 1e-3 --out-dir results/transformers-cpu-lr1e-3",
    "transformers-cpu-lr1e-3/metrics.json",
)


def _from(
    source: tuple[str, str], *field: Any, convert: Callable[[Any], Any] | None = None
) -> dict[str, Any]:
    return {"command": source[0], "file": source[1], "field": field, "convert": convert}


def _row(readme_label: str) -> str:
    """The start of the Performance table's row whose label starts with `readme_label`, up to the
    end of its label column."""
    return r"\| " + re.escape(readme_label).replace("\\ ", " ") + r"[^|]*\|"


def _runs_so_far(readme_label: str) -> str:
    """The "runs so far" range ("lo-hi") in the last column of that row."""
    return _row(readme_label) + r"[^|]*\|[^|]*\|[^|]*\|\s*([\d.]+-[\d.]+)"


def _bench(readme_label: str, name: str) -> Number:
    """A Performance row: the README's value of the row whose label starts with `readme_label`, the
    value of the run's ratio whose name starts with `name`; its runs-so-far range is the spread."""
    return Number(
        f"benchmark: {name}",
        _row(readme_label) + r"\s*([\d.]+)\s*\|",
        **_from(_BEN, "ratios", {"name": name + "*"}, "value"),
        spread=_runs_so_far(readme_label),
    )


def _bench_range(readme_label: str, name: str) -> Number:
    """A Performance row over several shapes: the README's "lo-hi" of the row whose label starts with
    `readme_label`, the min-max (2 decimals) of the run's ratios whose names start with `name`."""

    def convert(ratios: Sequence[dict[str, Any]]) -> str:
        values = [r["value"] for r in ratios if r["name"].startswith(name)]
        if not values:  # e.g. the jax-vs-torch rows of a run without torch (the bench extra)
            raise LookupError(f"no ratio named {name}* in this run")
        return f"{min(values):.2f}-{max(values):.2f}"

    return Number(
        f"benchmark: {name} (range over shapes)",
        _row(readme_label) + r"\s*([\d.]+-[\d.]+)\s*\|",
        **_from(_BEN, "ratios", convert=convert),
        spread=_runs_so_far(readme_label),
    )


NUMBERS: tuple[Number, ...] = (
    # ---------------------------------------------------------------- On your own model (cheap)
    Number("blocks of the README's Net whose float32 jax.grad is all zero",
           r"exactly zero, kernel and bias, in (\d+) of its 200 blocks",
           compute=lambda: zero_gradient_blocks()["all"]),
    Number("blocks of the README's Net whose float32 jax.grad has a zero entry",
           r"\((\d+) have some zero\s+entry\)", compute=lambda: zero_gradient_blocks()["any"]),
    Number("decades the README's Net loses (flow.vanishing_decades)",
           r"# (\d+) decades lost between h_L and h_0", compute=_example_decades),
    # ---------------------------------------------------------------- gallery: vanishing
    Number("sigmoid, measured decades per layer", r"a sigmoid net \(LeCun init\) loses (−[\d.]+) ±",
           **_from(_VAN, "results", "summary", "sigmoid", "measured")),
    Number("sigmoid, its std over seeds", r"loses −[\d.]+ ± ([\d.]+) decades per",
           **_from(_VAN, "results", "summary", "sigmoid", "seed_std")),
    Number("sigmoid, mean-field decades per layer", r"mean-field theory predicts (−[\d.]+)",
           compute=lambda: _mean_field_per_layer("sigmoid", 1.0)),
    Number("sigmoid, RMS σ′ product per layer", r"the RMS-σ′ product (−[\d.]+)",
           **_from(_VAN, "results", "summary", "sigmoid", "dphi_product")),
    Number("the σ′ ≤ 1/4 story per layer, log10(1/4)", r"story's (−[\d.]+)", compute=lambda: math.log10(0.25)),
    Number("tanh, measured decades per layer", r"tanh loses (−[\d.]+)/layer",
           **_from(_VAN, "results", "summary", "tanh", "measured")),
    Number("tanh, mean-field decades per layer", r"tanh loses −[\d.]+/layer \(theory (−[\d.]+)\)",
           compute=lambda: _mean_field_per_layer("tanh", 1.0)),
    Number("relu (He), measured decades per layer", r"\((\+[\d.]+)/layer measured",
           **_from(_VAN, "results", "summary", "relu", "measured")),
    Number("relu (He), decades the derivative product predicts over 50 layers",
           r"would predict ([\d.]+) decades", compute=_relu_derivative_product_decades),
    # ---------------------------------------------------------------- xor (experiments table)
    Number("xor: shallow seeds that solve it", r"solves XOR on (\d+)/8 seeds",
           **_from(_XOR, "results", "shallow", "solved")),
    Number("xor: deep net's median final loss", r"stalls at loss ([\d.]+)",
           **_from(_XOR, "results", "rows", {"net": "deep"}, "median final loss")),
    Number("xor: deep net's gap at init, range over seeds (decades)", r"with a (\d+-\d+) decade gradient gap",
           **_from(_XOR, "results", "deep", "gap_decades_init", convert=_range)),
    # ---------------------------------------------------------------- gallery: remedies
    Number("remedies: 10x learning rate, steps to 90%", r"learning rate \((\d+) vs \d+ steps to 90%",
           **_from(_REM, "results", "rows", {"key": "lr_10x"}, "steps_to_90", convert=_steps)),
    Number("remedies: baseline, steps to 90%", r"learning rate \(\d+ vs (\d+) steps to 90%",
           **_from(_REM, "results", "rows", {"key": "baseline"}, "steps_to_90", convert=_steps)),
    Number("remedies: twice as deep, gap at init (decades)", r"never trains \(gap ([\d.]+) decades at init\)",
           **_from(_REM, "results", "rows", {"key": "deeper"}, "init_gap_decades")),
    Number("remedies: 4x wider, steps to 90%", r"4× wider is slower \((\d+) vs",
           **_from(_REM, "results", "rows", {"key": "wider_4x"}, "steps_to_90", convert=_steps)),
    Number("remedies: 4x wider, verdict", r"4× wider is slower \(\d+ vs \d+ steps; verdict \"(\w+)\"\)",
           **_from(_REM, "results", "rows", {"key": "wider_4x"}, "verdict")),
    Number("remedies: per-block gain at init, 16x wider", r"per-layer gain \((−[\d.]+) decades per block at widths 32 and 512",
           **_from(_REM, "results", "rows", {"key": "wider_16x"}, "init_gain_per_block")),
    Number("remedies: per-block gain at init, baseline (width 32)", r"per-layer gain \((−[\d.]+) decades per block at widths 32 and 512",
           **_from(_REM, "results", "rows", {"key": "baseline"}, "init_gain_per_block")),
    Number("remedies: per-block gain at init, 4x wider", r"widths 32 and 512, (−[\d.]+) at 128\)",
           **_from(_REM, "results", "rows", {"key": "wider_4x"}, "init_gain_per_block")),
    Number("remedies: relu + He, steps to 90%", r"residual connections reach 90% in (\d+)\s+steps",
           **_from(_REM, "results", "rows", {"key": "relu_he"}, "steps_to_90", convert=_steps)),
    Number("remedies: the default run's wall time on an idle CPU (minutes)",
           r"after a run \(([\d.]+) minutes on an idle 2-core CPU",
           **_from(_REM, "results", "seconds", convert=_minutes)),
    # ---------------------------------------------------------------- gallery: phase_diagram
    Number("phase_diagram: mean train accuracy inside depth < 6 xi_c", r"average ([\d.]+) train accuracy",
           **_from(_PHA, "results", "summary", "mean_accuracy_inside_6xi_c")),
    Number("phase_diagram: mean train accuracy outside", r"cells outside ([\d.]+);",
           **_from(_PHA, "results", "summary", "mean_accuracy_outside_6xi_c")),
    Number("phase_diagram: % of cells where trainable agrees with depth < 6 xi_c",
           r"agrees with depth < 6ξ_c on (\d+)% of the", **_from(_PHA, "results", "summary",
           "agreement_with_6xi_c", convert=lambda v: 100 * v)),  # fmt: skip
    Number("phase_diagram: critical sigma_w2 of tanh at sigma_b2 = 0.05", r"critical σ_w² = ([\d.]+)",
           compute=lambda: _critical_tanh(0.05)),
    # ---------------------------------------------------------------- gallery: isometry
    Number("isometry: orthogonal linear, max |log10 singular value| at depth 128",
           r"every singular value is 1 to within (\de-\d+) decades",
           **_from(_ISO, "results", "rows", {"activation": "linear", "weights": "orthogonal", "depth": MAX},
                   "max_abs_log10_sv", convert=lambda v: f"{v:.0e}")),
    Number("isometry: orthogonal tanh, sigma_1 / sigma_{N/4} at depth 128 (decades)",
           r"σ₁/σ_N/4 spans ([\d.]+) decades",
           **_from(_ISO, "results", "rows", {"activation": "tanh", "weights": "orthogonal", "depth": MAX},
                   "spread_decades")),
    Number("isometry: Gaussian linear, sigma_1 / sigma_{N/4} at depth 128 (decades)", r"Gaussian weights: ([\d.]+) for linear",
           **_from(_ISO, "results", "rows", {"activation": "linear", "weights": "gaussian", "depth": MAX},
                   "spread_decades")),
    Number("isometry: Gaussian relu, sigma_1 / sigma_{N/4} at depth 128 (decades)", r"to ([\d.]+) for relu\)",
           **_from(_ISO, "results", "rows", {"activation": "relu", "weights": "gaussian", "depth": MAX},
                   "spread_decades")),
    Number("isometry: orthogonal tanh, variance of sigma^2 vs theory below the largest depth (max % off)",
           r"follows free probability to (\d+)% up to", **_from(_ISO, "results", "rows", convert=_tanh_below_max)),
    Number("isometry: orthogonal tanh, variance of sigma^2 below theory at depth 128 (%)", r"then falls (\d+)% below it",
           **_from(_ISO, "results", "rows", {"activation": "tanh", "weights": "orthogonal", "depth": MAX},
                   "var_ratio", convert=lambda r: 100 * (1 - r))),
    Number("isometry: orthogonal tanh, max |log10 singular value| at depth 128",
           r"max \|log10 σ\| = ([\d.]+)",
           **_from(_ISO, "results", "rows", {"activation": "tanh", "weights": "orthogonal", "depth": MAX},
                   "max_abs_log10_sv")),
    Number("isometry: orthogonal tanh, variance of sigma^2 at depth 128, measured", r"\(([\d.]+) measured vs",
           **_from(_ISO, "results", "rows", {"activation": "tanh", "weights": "orthogonal", "depth": MAX},
                   "var_sq_sv")),
    Number("isometry: orthogonal tanh, variance of sigma^2 at depth 128, free probability",
           r"measured vs ([\d.]+) predicted", compute=_isometry_tanh_variance),
    # ---------------------------------------------------------------- Performance
    _bench("training | `fit` chunks / hand-written", "fit chunks / plain scan"),
    _bench("training | per-step `nnx.jit` + `nnx.Optimizer` loop", "nnx.jit per step / fit chunks"),
    _bench("training | `fit` FLOP/s", "fit FLOP/s / matmul ceiling"),
    _bench("seeds    | per-step `nnx.jit` loop", "nnx.jit per step / vmapped fit"),
    _bench("seeds    | Python loop", "loop of fits / vmapped fit"),
    _bench("analysis | `gradient_flow` / `value_and_grad` (depth 20, width 128",
           "gradient_flow / value_and_grad (depth 20, width 128"),
    _bench("analysis | `gradient_flow` / `value_and_grad` (depth 20, width 512",
           "gradient_flow / value_and_grad (depth 20, width 512"),
    _bench("analysis | `gradient_flow` / `value_and_grad` (depth 100, width 128",
           "gradient_flow / value_and_grad (depth 100, width 128"),
    _bench("analysis | `gradient_flow` / `value_and_grad` (depth 100, width 512",
           "gradient_flow / value_and_grad (depth 100, width 512"),
    _bench("analysis | exact `jacobian_norms` / N vmapped", "exact jacobian_norms / N plain VJPs"),
    _bench("analysis | exact `jacobian_norms` / naive", "exact jacobian_norms / naive jacrev loop"),
    _bench("analysis | Hutchinson k=8", "hutchinson k=8 / forward+backward"),
    _bench("analysis | Hutchinson jax / torch", "hutchinson jax / torch eager"),
    _bench_range("analysis | `gradient_flow` jax / torch eager", "gradient_flow jax / torch eager"),
    _bench_range("analysis | `gradient_flow` jax / torch.compile", "gradient_flow jax / torch.compile"),
    _bench("measure_cost | public `gradient_flow` call / `value_and_grad` (depth 50",
           "gradient_flow public call / value_and_grad (depth 50"),
    _bench("measure_cost | public `gradient_flow` call / `value_and_grad` (depth 200, width 16",
           "gradient_flow public call / value_and_grad (depth 200, width 16,"),
    _bench("measure_cost | public `gradient_flow` call / `value_and_grad` (depth 200, width 128",
           "gradient_flow public call / value_and_grad (depth 200, width 128,"),
    _bench("measure_cost | `Probe.gradient_flow`", "Probe.gradient_flow / value_and_grad (depth 50"),
    _bench("measure_cost | exact `jacobian_norms` public call", "exact jacobian_norms public call"),
    _bench("measure_cost | Hutchinson k=8 public call", "hutchinson k=8 public call"),
    _bench("measure_cost | `jacobian_spectrum` seconds", "jacobian_spectrum seconds per call"),
    _bench("measure_cost | `gradient_flow` compile seconds, depth-1000",
           "gradient_flow compile seconds, first call (depth-1000"),
    _bench("measure_cost | `gradient_flow` compile seconds, 128 blocks",
           "gradient_flow compile seconds, first call (128 blocks"),
    _bench("time_flow | `time_flow` / `value_and_grad` (tanh", "time_flow / value_and_grad (tanh"),
    _bench("time_flow | `time_flow` / `value_and_grad` (LSTM", "time_flow / value_and_grad (lstm"),
    # ---------------------------------------------------------------- Through time
    Number("through_time: tanh RNN at init, decades lost per step (seed mean)",
           r"tanh RNN \(hidden 128\) loses ([\d.]+)\s+decades of",
           **_from(_TT, "results", "init_rows", {"net": "tanh_gaussian"}, "measured", convert=_neg)),
    Number("through_time: tanh RNN at init, mean field's decades per step", r"per step \(mean field ([\d.]+);",
           **_from(_TT, "results", "init_rows", {"net": "tanh_gaussian"}, "theory", convert=_neg)),
    Number("through_time: tanh RNN at init, decades lost over T (seed 0)", r"0\.\d+\), (\d+) decades over T =",
           **_from(_TT, "results", "init_rows", {"net": "tanh_gaussian"}, "decades_lost")),
    Number("through_time: tanh RNN at init, lag from which the plain float32 gradient is 0",
           r"reads exactly 0 from lag (\d+) on",
           **_from(_TT, "results", "init_rows", {"net": "tanh_gaussian"}, "float32_zero_at_lag")),
    Number("through_time: IRNN at init, |decades per step|", r"the IRNN\s+\(([\d.]+) decades per step\)",
           **_from(_TT, "results", "init_rows", {"net": "irnn"}, "measured", convert=abs)),
    Number("through_time: LRU at init, decades lost per step", r"and the LRU \(([\d.]+); exact theory",
           **_from(_TT, "results", "init_rows", {"net": "lru"}, "measured", convert=_neg)),
    Number("through_time: LRU at init, exact linear theory's decades per step", r"exact theory from λ ([\d.]+)\)",
           **_from(_TT, "results", "init_rows", {"net": "lru"}, "theory", convert=_neg)),
    Number("through_time: GRU, adding problem solved on every seed up to T", r"the GRU solves every T up to (\d+)",
           **_from(_TT, "results", "cells", convert=_solved_up_to("gru"))),
    Number("through_time: LRU, adding problem solved on every seed up to T", r"every\s+seed, the LRU up to (\d+) \(then",
           **_from(_TT, "results", "cells", convert=_solved_up_to("lru"))),
    Number("through_time: LSTM, adding problem seeds solved per T (of seeds)", r"the LSTM (\d+, \d+, \d+, \d+ of \d+) seeds",
           **_from(_TT, "results", "cells", convert=_solved_counts("lstm", of=True))),
    Number("through_time: IRNN, adding problem seeds solved per T", r"and the IRNN (\d+, \d+, \d+, \d+)\s+\(",
           **_from(_TT, "results", "cells", convert=_solved_counts("irnn", of=False))),
    Number("through_time: IRNN, adding problem runs diverged with clipping", r"\((\d+) runs diverging despite clipping\)",
           **_from(_TT, "results", "adding_rows", convert=_irnn_diverged)),
    Number("through_time: the default run's wall time (minutes)", r"The default run took (\d+) minutes of",
           **_from(_TT, "results", "seconds", convert=_minutes)),
    # ---------------------------------------------------------------- Transformers, default (d_model 64)
    Number("transformers: pre-LN exponent of the last layer's W2 gradient in L", r"falls as\s+L\^(−[\d.]+) \(paper",
           **_from(_TFM, "results", "exponents", "pre", "slope")),
    Number("transformers: post-LN exponent of the last layer's W2 gradient in L", r"\(fitted L\^([+−][\d.]+);",
           **_from(_TFM, "results", "exponents", "post", "slope")),
    Number("transformers: post-LN W2 gradient, last minus first of the deepest stack (decades)",
           r"gradient rises by ([\d.]+) decades from",
           **_from(_TFM, "results", "exponents", "post", "last_minus_first")),
    Number("transformers: pre-LN W2 gradient, first minus last of the deepest stack (decades)",
           r"it falls by ([\d.]+) decades\s+toward the output",
           **_from(_TFM, "results", "exponents", "pre", "last_minus_first", convert=_neg)),
    Number("transformers: no norm, unscaled: c_L", r"with no\s+norm \(c_L = ([\d.]+), effective rank",
           **_from(_TFM, "results", "rank_rows", {"norm": "none", "scale": "1"}, "c_L")),
    Number("transformers: no norm, unscaled: effective rank at L", r"effective rank ([\d.]+); the stream",
           **_from(_TFM, "results", "rank_rows", {"norm": "none", "scale": "1"}, "rank_L")),
    Number("transformers: no norm, unscaled: log10 q_L", r"log10 q_L = ([\d.]+)\)",
           **_from(_TFM, "results", "cells", "rank/none/a=1", "log10_q", convert=_last_log10_q)),
    Number("transformers: post-LN, unscaled: c_L", r"and with post-LN\s+\(c_L = ([\d.]+)\)",
           **_from(_TFM, "results", "rank_rows", {"norm": "post", "scale": "1"}, "c_L")),
    Number("transformers: pre-LN, unscaled: c_L", r"nearly so with pre-LN \(c_L = ([\d.]+)\)",
           **_from(_TFM, "results", "rank_rows", {"norm": "pre", "scale": "1"}, "c_L")),
    Number("transformers: c_0 (no norm, unscaled)", r"from c_0 = ([\d.]+)\. Branches",
           **_from(_TFM, "results", "rank_rows", {"norm": "none", "scale": "1"}, "c_0")),
    Number("transformers: no norm, 1/sqrt(L) branches: c_L", r"keep them apart \(c_L = ([\d.]+), [\d.]+, [\d.]+\)",
           **_from(_TFM, "results", "rank_rows", {"norm": "none", "scale": "1/sqrt(L)"}, "c_L")),
    Number("transformers: post-LN, 1/sqrt(L) branches: c_L", r"keep them apart \(c_L = [\d.]+, ([\d.]+), [\d.]+\)",
           **_from(_TFM, "results", "rank_rows", {"norm": "post", "scale": "1/sqrt(L)"}, "c_L")),
    Number("transformers: pre-LN, 1/sqrt(L) branches: c_L", r"keep them apart \(c_L = [\d.]+, [\d.]+, ([\d.]+)\)",
           **_from(_TFM, "results", "rank_rows", {"norm": "pre", "scale": "1/sqrt(L)"}, "c_L")),
    Number("transformers: post-LN, unscaled: query/key gradient deficit to values (decades)",
           r"key kernels\s+get ([\d.]+) decades less gradient",
           **_from(_TFM, "results", "rank_rows", convert=_qk_minus_value("post", "1", -1.0))),
    Number("transformers: post-LN, 1/sqrt(L) branches: query/key gradient deficit (decades)",
           r"gradient\), ([\d.]+) with 1/√L branches",
           **_from(_TFM, "results", "rank_rows", convert=_qk_minus_value("post", "1/sqrt(L)", -1.0))),
    Number("transformers: no norm, unscaled: query/key gradient excess over values (decades)",
           r"they get (\d+) decades \*more\*",
           **_from(_TFM, "results", "rank_rows", convert=_qk_minus_value("none", "1"))),
    # ---------------------------------------------------------------- Transformers, --preset cpu
    Number("transformers --preset cpu: wall time", r"warmup cell; (\d+ min \d+ s) wall",
           **_from(_TFM_CPU, "results", "seconds", convert=_min_s)),
    *(
        Number(f"transformers --preset cpu: training table, {label}",
               r"\| " + re.escape(label).replace("\\ ", " ") + r" \| ([^|\n]+ \| [^|\n]+ \| [^|\n]+) \|",
               **_from(_TFM_CPU, "results", "train_rows", convert=_train_table_row(key)))
        for key, label in (("post", "post-LN"), ("post_warmup", "post-LN + warmup"), ("pre", "pre-LN"),
                           ("deepnorm", "DeepNorm"), ("rezero", "ReZero"))
    ),
    Number("transformers --preset cpu: post-LN + warmup at L = 6, seeds that reached the target",
           r"warmup helps it at L = 6 \((\d+/\d+) against",
           **_from(_TFM_CPU, "results", "train_rows", convert=_train("post_warmup", 6, "reached"))),
    Number("transformers --preset cpu: post-LN at L = 6, seeds that reached the target",
           r"at L = 6 \(\d+/\d+ against (\d+/\d+)\)",
           **_from(_TFM_CPU, "results", "train_rows", convert=_train("post", 6, "reached"))),
    Number("transformers --preset cpu: post-LN + warmup at L = 12, final accuracy",
           r"a\s+little at L = 12 \(([\d.]+) against",
           **_from(_TFM_CPU, "results", "train_rows", convert=_train("post_warmup", 12, "accuracy"))),
    Number("transformers --preset cpu: post-LN at L = 12, final accuracy", r"at L = 12 \([\d.]+ against ([\d.]+)\)",
           **_from(_TFM_CPU, "results", "train_rows", convert=_train("post", 12, "accuracy"))),
    Number("transformers --preset cpu: post-LN, seeds failing at L = 24 (with and without warmup)",
           r"where both fail (\d+/\d+)\)",
           **_from(_TFM_CPU, "results", "train_rows", convert=_train("post", 24, "failed"))),
    Number("transformers --preset cpu: verdict \"post-LN needs warmup\"", r"where both fail \d+/\d+\) reads \"(\w+)\"",
           **_from(_TFM_CPU, "results", "verdicts", {"claim": "post-LN needs warmup*"}, "agrees")),
    Number("transformers --preset cpu: DeepNorm steps to target at L = 24", r"L = 6 \((\d+) against \d+, \d+ against \d+\)",
           **_from(_TFM_CPU, "results", "train_rows", convert=_train("deepnorm", 24, "steps"))),
    Number("transformers --preset cpu: DeepNorm steps to target at L = 6", r"L = 6 \(\d+ against (\d+), \d+ against \d+\)",
           **_from(_TFM_CPU, "results", "train_rows", convert=_train("deepnorm", 6, "steps"))),
    Number("transformers --preset cpu: ReZero steps to target at L = 24", r"L = 6 \(\d+ against \d+, (\d+) against \d+\)",
           **_from(_TFM_CPU, "results", "train_rows", convert=_train("rezero", 24, "steps"))),
    Number("transformers --preset cpu: ReZero steps to target at L = 6", r"L = 6 \(\d+ against \d+, \d+ against (\d+)\)",
           **_from(_TFM_CPU, "results", "train_rows", convert=_train("rezero", 6, "steps"))),
    Number("transformers --preset cpu: pre-LN steps to target at L = 24", r"pre-LN more \((\d+) against",
           **_from(_TFM_CPU, "results", "train_rows", convert=_train("pre", 24, "steps"))),
    Number("transformers --preset cpu: pre-LN steps to target at L = 6", r"pre-LN more \(\d+ against (\d+)\)",
           **_from(_TFM_CPU, "results", "train_rows", convert=_train("pre", 6, "steps"))),
    Number("transformers --preset cpu: pre-LN exponent (d_model 32)", r"pre-LN's exponent (−[\d.]+), post-LN's",
           **_from(_TFM_CPU, "results", "exponents", "pre", "slope")),
    Number("transformers --preset cpu: post-LN exponent (d_model 32)", r"post-LN's (−[\d.]+) \(both within",
           **_from(_TFM_CPU, "results", "exponents", "post", "slope")),
    Number("transformers --preset cpu: post-LN W2 gradient, last minus first (decades)",
           r"gradient rises only ([\d.]+) decades over",
           **_from(_TFM_CPU, "results", "exponents", "post", "last_minus_first")),
    Number("transformers --preset cpu: verdict \"post-LN gradient grows toward the last layer\"",
           r"\(verdict \"(\w+)\" at the",
           **_from(_TFM_CPU, "results", "verdicts", {"claim": "post-LN: gradient grows toward*"}, "agrees")),
    Number("transformers --preset cpu: pre-LN W2 gradient, first minus last (decades)", r"pre-LN's falls ([\d.]+);",
           **_from(_TFM_CPU, "results", "exponents", "pre", "last_minus_first", convert=_neg)),
    *(
        Number(f"transformers --preset cpu: {norm}, {'unscaled' if scale == '1' else '1/sqrt(L) branches'}: c_L",
               pattern, **_from(_TFM_CPU, "results", "rank_rows", {"norm": norm, "scale": scale}, "c_L"))
        for norm, scale, pattern in (
            ("none", "1", r"c_L = ([\d.]+), [\d.]+, [\d.]+ \(none, post, pre\)"),
            ("post", "1", r"c_L = [\d.]+, ([\d.]+), [\d.]+ \(none, post, pre\)"),
            ("pre", "1", r"c_L = [\d.]+, [\d.]+, ([\d.]+) \(none, post, pre\)"),
            ("none", "1/sqrt(L)", r"unscaled, ([\d.]+), [\d.]+, [\d.]+ with 1/√L"),
            ("post", "1/sqrt(L)", r"unscaled, [\d.]+, ([\d.]+), [\d.]+ with 1/√L"),
            ("pre", "1/sqrt(L)", r"unscaled, [\d.]+, [\d.]+, ([\d.]+) with 1/√L"),
        )
    ),
    Number("transformers --preset cpu: post-LN, unscaled: query/key deficit (decades)",
           r"query/key deficit ([\d.]+) decades",
           **_from(_TFM_CPU, "results", "rank_rows", convert=_qk_minus_value("post", "1", -1.0))),
    Number("transformers --preset cpu: post-LN, 1/sqrt(L) branches: query/key deficit (decades)",
           r"deficit [\d.]+ decades \(([\d.]+) scaled\)",
           **_from(_TFM_CPU, "results", "rank_rows", convert=_qk_minus_value("post", "1/sqrt(L)", -1.0))),
    # ---------------------------------------------------------------- Transformers, --preset cpu at lr 1e-3
    Number("transformers --preset cpu --learning-rate 1e-3: wall time (minutes)",
           r"the\s+whole run (\d+) minutes on idle cores",
           **_from(_TFM_LR, "results", "seconds", convert=_minutes)),
    Number("transformers --preset cpu --learning-rate 1e-3: post-LN by depth",
           r"\): post-LN (\d+/\d+(?: \([\d.]+\))?, \d+/\d+(?: \([\d.]+\))?, \d+/\d+(?: \([\d.]+\))?), with warmup",
           **_from(_TFM_LR, "results", "train_rows", convert=_train_reached_or_accuracy("post"))),
    Number("transformers --preset cpu --learning-rate 1e-3: post-LN + warmup by depth",
           r", with warmup (\d+/\d+(?: \([\d.]+\))?, \d+/\d+(?: \([\d.]+\))?, \d+/\d+(?: \([\d.]+\))?); pre-LN",
           **_from(_TFM_LR, "results", "train_rows", convert=_train_reached_or_accuracy("post_warmup"))),
    Number("transformers --preset cpu --learning-rate 1e-3: pre-LN steps to target by depth",
           r"; pre-LN (\d+/\d+ at \d+, \d+, \d+) steps; DeepNorm",
           **_from(_TFM_LR, "results", "train_rows", convert=_train_steps("pre", reached=True))),
    Number("transformers --preset cpu --learning-rate 1e-3: DeepNorm steps to target by depth",
           r"steps; DeepNorm (\d+, \d+, \d+);",
           **_from(_TFM_LR, "results", "train_rows", convert=_train_steps("deepnorm", reached=False))),
    Number("transformers --preset cpu --learning-rate 1e-3: ReZero steps to target by depth",
           r"ReZero (\d+, \d+, \d+); none diverged",
           **_from(_TFM_LR, "results", "train_rows", convert=_train_steps("rezero", reached=False))),
)  # fmt: skip

# numbers that no file holds: what to run to see them
TIMINGS = (
    ("the main job: 30 seconds, cold", "time python -m experiments.vanishing  (after rm -rf .jax_cache)"),
    (
        "the whole test suite: 8-12 minutes, cold (490-581 s of pytest in eight of thirteen fresh clones on 2026-12-03, 620-713 s in the other five; 622-723 s before the rerun socket was set TCP_NODELAY, 929 s before the legacy CPU emitters)",
        "time python -m pytest -n 2  (after rm -rf .jax_cache)",
    ),
    (
        "the fast subset: 2686 tests and one skip in 5-7 minutes, cold (309 s for the 2630 of 2026-12-03's morning, 386 s for the 2686 of its night)",
        'time python -m pytest -m "not slow" -n 2  (after rm -rf .jax_cache)',
    ),
    ("how many tests (2787; 101 slow)", "python -m pytest --collect-only -q [-m slow]"),
    (
        "tanh RNN at hidden 1024, decades per step over steps 10..90: 0.2022 (Gaussian) and 0.2030 (orthogonal) measured vs 0.2019 mean field",
        "python -m pytest tests/theory/test_recurrent.py -k hidden_1024 (the test's numbers, checked to 0.003)",
    ),
    (
        "transformers --preset cpu: 12.8 CPU-minutes, load 3-5",
        "time python -m experiments.transformers --preset cpu --out-dir results/transformers-cpu",
    ),
    (
        "transformers --quick: 75 s wall (104 CPU-seconds) on 2 idle cores, 1 min 45 s at load 5 "
        "(3 min 3 s before), 83 s of it compiling 15 programs",
        "time python -m experiments.transformers --quick --out-dir /tmp/tq",
    ),
    (
        "Transformer output and gradient_flow vs a float64 reference: to 1e-12",
        "python -m pytest tests/nn/test_transformer.py -k float64_reference (its tolerance)",
    ),
)


# --------------------------------------------------------------------------- reading and comparing


def _found(pattern: str, readme: str) -> list[str]:
    """Group 1 of every match of `pattern` in `readme`; a space in `pattern` matches any whitespace,
    a line break too."""
    return re.findall(re.sub(" +", lambda _: r"\s+", pattern), readme)


def _decimals(text: str) -> int:
    """Digits after the decimal point of a number as printed ("1.24": 2, "17": 0)."""
    return len(text.split(".")[1]) if "." in text else 0


def readme_text(number: Number, readme: str | None = None) -> str:
    """The number as the README prints it (group 1 of `number.readme`).

    Raises:
      LookupError: the pattern does not match the README exactly once.
    """
    found = _found(number.readme, README.read_text() if readme is None else readme)
    if len(found) != 1:
        raise LookupError(
            f"README.md must state {number.what!r} once (pattern {number.readme!r}), found {len(found)} matches."
        )
    return found[0]


def lookup(data: Any, field: Sequence[Any]) -> Any:
    """The value at `field` in `data` (keys, indices and row selectors; see `Number`).

    Raises:
      LookupError: a key, index or row that is not there.
    """
    node = data
    for i, step in enumerate(field):
        where = "/".join(map(str, field[:i])) or "the top"
        if isinstance(step, dict):
            rows = list(node) if isinstance(node, list) else []
            for key, want in step.items():
                if want == MAX:
                    rows = [r for r in rows if r.get(key) == max(r.get(key) for r in rows)] if rows else []
                elif isinstance(want, str) and want.endswith("*"):
                    rows = [r for r in rows if str(r.get(key, "")).startswith(want[:-1])]
                else:
                    rows = [r for r in rows if r.get(key) == want]
            if len(rows) != 1:
                raise LookupError(f"{len(rows)} rows match {step} at {where} (one expected)")
            node = rows[0]
        else:
            try:
                node = node[step]
            except (KeyError, IndexError, TypeError):
                raise LookupError(f"no {step!r} at {where}") from None
    return node


def matches(value: Any, text: str) -> bool:
    """Whether `value` printed the README's way is `text`: a decimal number in `text` (a Unicode
    minus or a plus sign allowed) matches the value rounded to its digits; anything else ("12-13",
    "1e-15", "hurts") must equal `str(value)`."""
    t = text.replace("−", "-").replace("+", "")
    if not re.fullmatch(r"-?\d+(\.\d+)?", t):
        return str(value) == text
    try:
        value = float(value)
    except (TypeError, ValueError):
        return False
    digits = _decimals(t)
    return round(value, digits) == round(float(t), digits)


def spread_of(number: Number, readme: str) -> str | None:
    """The README's range ("lo-hi") of earlier runs for `number` (None: it states none, e.g. a row
    measured in one run so far)."""
    found = [] if number.spread is None else _found(number.spread, readme)
    return found[0] if len(found) == 1 else None


def within(value: Any, spread: str) -> bool:
    """Whether a value (a number, or "lo-hi" over shapes) lies in the README's range `spread`
    ("1.05-1.24"), each end widened by half a unit of its last printed digit (1.244 is in
    1.05-1.24, 1.246 is not)."""
    lo_text, hi_text = spread.split("-")
    lo = float(lo_text) - 0.5 * 10.0 ** -_decimals(lo_text)
    hi = float(hi_text) + 0.5 * 10.0 ** -_decimals(hi_text)
    try:
        values = [float(v) for v in (value.split("-") if isinstance(value, str) else [value])]
    except ValueError:
        return False
    return all(lo <= v <= hi for v in values)


def value_of(number: Number, results: pathlib.Path) -> tuple[Any, str]:
    """(value, where it came from): computed (cheap), read from `results/number.file`, or (None,
    why not)."""
    if number.cheap:
        return number.compute(), "computed here"
    path = results / number.file
    if not path.exists():
        return None, f"{path} does not exist: run `{number.command}`"
    try:
        value = lookup(json.loads(path.read_text()), number.field)
        return (number.convert(value) if number.convert else value), str(path)
    except LookupError as e:
        return None, f"{path}: {e}"


def field_text(number: Number) -> str:
    parts = []
    for step in number.field:
        if isinstance(step, dict):
            parts.append("[" + ", ".join(f"{k}={v}" for k, v in step.items()) + "]")
        else:
            parts.append(("." if parts else "") + str(step))
    return "".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Print every README number with its source (and value where available); return the exit
    status: 1 with `--check` when a number differs or a README text is missing."""
    parser = argparse.ArgumentParser(
        prog="python -m docs.readme_numbers", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--results", default=str(ROOT / "results"), help="where the experiments wrote (default: results/)"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit status 1 when a number differs from the README"
    )
    args = parser.parse_args(argv)
    results = pathlib.Path(args.results)
    readme = README.read_text()
    bad = 0
    for n in NUMBERS:
        try:
            text = readme_text(n, readme)
        except LookupError as e:
            print(f"MISSING  {n.what}: {e}")
            bad += 1
            continue
        value, origin = value_of(n, results)
        if value is None:
            status, shown = "not run", ""
        else:
            ok = matches(value, text)
            spread = None if ok else spread_of(n, readme)
            in_spread = spread is not None and within(value, spread)
            bad += not (ok or in_spread)
            status = "ok" if ok else ("spread" if in_spread else "DIFFERS")
            shown = f"{value:.6g}" if isinstance(value, float) else str(value)
            if spread is not None:
                shown += f" (the README's runs so far: {spread})"
        source = "" if n.cheap else f"  [{n.command} -> {n.file}: {field_text(n)}]"
        print(
            f"{status:8} {n.what}: README {text!r}"
            + (f", {origin}: {shown}" if shown else f"; {origin}")
            + source
        )
    print("\nNot in any file (timings; rerun to see them):")
    for what, command in TIMINGS:
        print(f"  {what}: {command}")
    print(
        f"\n{len(NUMBERS)} numbers, {sum(n.cheap for n in NUMBERS)} computed here; {bad} differ or are missing."
    )
    return 1 if (args.check and bad) else 0


if __name__ == "__main__":
    sys.exit(main())
