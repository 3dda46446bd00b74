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
    """

    what: str
    readme: str
    compute: Callable[[], Any] | None = None
    command: str | None = None
    file: str | None = None
    field: tuple[Any, ...] = ()
    convert: Callable[[Any], Any] | None = None

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


_VAN = ("python -m experiments.vanishing", "vanishing/metrics.json")
_XOR = ("python -m experiments.xor", "xor/metrics.json")
_REM = ("python -m experiments.remedies", "remedies/metrics.json")
_PHA = ("python -m experiments.phase_diagram", "phase_diagram/metrics.json")
_ISO = ("python -m experiments.isometry", "isometry/metrics.json")
_BEN = ("python -m benchmarks.run", "benchmarks/run.json")


def _from(
    source: tuple[str, str], *field: Any, convert: Callable[[Any], Any] | None = None
) -> dict[str, Any]:
    return {"command": source[0], "file": source[1], "field": field, "convert": convert}


def _bench(readme_label: str, name: str) -> Number:
    """A Performance row: the README's value of the row whose label starts with `readme_label`, the
    value of the run's ratio whose name starts with `name`."""
    return Number(
        f"benchmark: {name}",
        r"\| " + re.escape(readme_label).replace("\\ ", " ") + r"[^|]*\|\s*([\d.]+)\s*\|",
        **_from(_BEN, "ratios", {"name": name + "*"}, "value"),
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
    _bench("time_flow | `time_flow` / `value_and_grad` (tanh", "time_flow / value_and_grad (tanh"),
    _bench("time_flow | `time_flow` / `value_and_grad` (LSTM", "time_flow / value_and_grad (lstm"),
)  # fmt: skip

# numbers that no file holds: what to run to see them
TIMINGS = (
    ("the main job: 1.5 minutes", "time python -m experiments.vanishing"),
    (
        "the whole test suite: 18 minutes, cold",
        "time python -m pytest -n 2  (after rm -rf .jax_cache)",
    ),
    ("how many tests (2583; 83 slow)", "python -m pytest --collect-only -q [-m slow]"),
    (
        "jax / torch eager, 4 shapes: 0.44-0.69",
        "python -m benchmarks.run: the 4 'gradient_flow jax / torch eager' rows",
    ),
)


# --------------------------------------------------------------------------- reading and comparing


def readme_text(number: Number, readme: str | None = None) -> str:
    """The number as the README prints it (group 1 of `number.readme`).

    Raises:
      LookupError: the pattern does not match the README exactly once.
    """
    text = README.read_text() if readme is None else readme
    pattern = re.sub(" +", lambda _: r"\s+", number.readme)  # a space matches a line break too
    found = re.findall(pattern, text)
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
    digits = len(t.split(".")[1]) if "." in t else 0
    return round(value, digits) == round(float(t), digits)


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
    except LookupError as e:
        return None, f"{path}: {e}"
    return (number.convert(value) if number.convert else value), str(path)


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
            bad += not ok
            status, shown = (
                ("ok" if ok else "DIFFERS"),
                (f"{value:.6g}" if isinstance(value, float) else str(value)),
            )
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
