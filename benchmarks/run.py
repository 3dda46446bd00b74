"""Every benchmark suite, one subprocess each, and one table of the measured ratios against their targets.

Suites (each also runs alone as `python -m benchmarks.NAME`):
  training  jaxvg's `fit` vs a plain-JAX `lax.scan` loop vs the per-step `nnx.jit` loop; steps/s and
            FLOP/s against a matmul ceiling measured in the same run.
  seeds     32 seeds x 200 steps of a width-64, depth-10 MLP: one vmapped program vs a Python loop of
            runs vs the per-step `nnx.jit` loop.
  analysis  gradient flow vs plain forward+backward; exact vs Hutchinson vs naive `jacrev` Jacobian
            norms; PyTorch eager and torch.compile when torch imports (benchmarks/analysis.py).
  measure_cost  the public calls against plain autodiff: `gradient_flow` (second call) / a jitted
            `value_and_grad` at 50x256x256 and the scanned 200x128x128 (target <= 1.10) and the
            host-bound 200x16x16 (<= 1.3) (depth x width x batch), `Probe.gradient_flow`, exact
            `jacobian_norms` / N one-cotangent VJP chains (<= 1), Hutchinson k=8 / forward+backward
            (<= 2), `jacobian_spectrum` seconds per call, and the compile time of `gradient_flow`
            for a depth-1000 MLP and 128 blocks of a period-2 pattern (<= 10 s each). analysis
            times the jitted kernels (and PyTorch) at depth 20/100 x width 128/512; measure_cost
            the public calls at its shapes.
  time_flow the exact gradient flow through time (`time_flow`, public call) vs a jitted
            `value_and_grad` of the same scanned RNN, T = 1000, hidden 256, batch 64.

Each suite runs as `python -m benchmarks.NAME` in its own process (analysis, measure_cost and
time_flow pin XLA to one thread, the others use every core; on an accelerator each gets the whole device memory), prints its own
table and writes OUT_DIR/NAME.json; this script then writes OUT_DIR/run.json (after every suite, so
a run cut short keeps what it finished) and prints one Markdown table: every ratio with its target
and pass/miss, and its spread: the min-max of the per-round ratios over the run's interleaved
rounds (ratios of loops timed apart, jax vs torch and the naive jacrev loop: interquartile, see
`common.unpaired_spread`; the spectrum's seconds: the min-max of its calls; a compile time is one
first call, without a spread). That is the spread within one run; between runs on a shared machine the
medians move more (see the README's Performance section). With `--quick` the result column says
"smoke" instead of pass/miss: tiny shapes exercise the code, and their ratios say nothing about the
targets. This process never starts jax itself. A suite that fails is reported (its error in
run.json and the table) and the others still run; the exit status is then 1.

Timing caveat: on a shared machine (the 2-core CPU of the development container is shared by other
processes) absolute times are noisy; every ratio is measured within one suite's process (training
and seeds: medians of per-round ratios over interleaved rounds), which is what the targets are
stated for.

Run:    python -m benchmarks.run                         (CPU sizes)
        python -m benchmarks.run --quick --out-dir /tmp/b  (tiny shapes: a smoke run, what the tests run)
        python -m benchmarks.run --preset accelerator    (accelerator sizes; see benchmarks/gpu.sh)
        python -m benchmarks.run --suites training seeds
Writes: OUT_DIR/{training,seeds,analysis,measure_cost,time_flow,run}.json (default OUT_DIR: results/benchmarks).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import common
from jaxvg import report
from jaxvg.report import cli

SUITES = ("training", "seeds", "analysis", "measure_cost", "time_flow")
PRESETS = ("accelerator",)  # the values of `--preset`, passed on to the suites that have it


@dataclasses.dataclass(frozen=True)
class Config:
    suites: tuple[str, ...] = (
        SUITES  # suites to run, in this order (training, seeds, analysis, measure_cost, time_flow)
    )
    quick: bool = False  # every suite's --quick: tiny shapes, a smoke run (numbers mean nothing)
    preset: str | None = None  # "accelerator": each suite's accelerator sizes (where it has them)
    out_dir: str = "results/benchmarks"  # where NAME.json and run.json go

    def __post_init__(self):
        if isinstance(self.suites, str):
            raise ValueError(
                f"`suites` must be a sequence of names from {list(SUITES)}, got {self.suites!r}."
            )
        unknown = [s for s in self.suites if s not in SUITES]
        if unknown or not self.suites:
            raise ValueError(f"`suites` must be a non-empty subset of {list(SUITES)}, got {self.suites!r}.")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"`preset` must be None or one of {list(PRESETS)}, got {self.preset!r}.")


# Suites with an accelerator preset of their own (`--preset accelerator`); the others run their
# default sizes under `--preset accelerator`.
PRESET_SUITES = {"accelerator": ("training", "analysis", "measure_cost", "time_flow")}


def suite_argv(name: str, config: Config) -> list[str]:
    """The command-line flags of `python -m benchmarks.NAME` for this run."""
    argv = ["--quick"] if config.quick else []
    if config.preset is not None and name in PRESET_SUITES[config.preset]:
        argv += ["--preset", config.preset]
    return [*argv, "--out-dir", config.out_dir]


def run_suite(name: str, config: Config) -> dict[str, Any]:
    """Run `python -m benchmarks.NAME` in a subprocess and return the JSON it wrote (with its
    "ratios" records).

    A subprocess per suite, because the suites must not share one process: benchmarks.analysis
    pins XLA to one thread (XLA_FLAGS, read once when jax starts) to compare with one-thread
    PyTorch, while training and seeds use every core; and on an accelerator one process per suite
    gives each the whole device memory. The suite prints its own table.
    """
    argv = [sys.executable, "-m", f"benchmarks.{name}", *suite_argv(name, config)]
    subprocess.run(argv, check=True, cwd=_ROOT, env={**os.environ, "PYTHONPATH": _pythonpath()})
    return report.read_json(os.path.join(config.out_dir, f"{name}.json"))


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pythonpath() -> str:
    """The repository root first, so `benchmarks` and `jaxvg` import from this checkout."""
    rest = os.environ.get("PYTHONPATH", "")
    return _ROOT + (os.pathsep + rest if rest else "")


def combined_rows(suites: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per ratio of every suite (value, target, pass/miss), and one per failed suite."""
    rows: list[dict[str, Any]] = []
    for name, entry in suites.items():
        if entry.get("error"):
            rows.append({"suite": name, "ratio": "(suite failed)", "value": None, "spread": "", "target": "",
                         "result": "error: " + entry["error"].strip().splitlines()[-1][:80]})  # fmt: skip
            continue
        rows.extend(common.ratio_rows(entry["ratios"]))
    return rows


def run(config: Config, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the suites in order, one subprocess each; write run.json after every suite.

    Returns:
      The run.json dict: "config", "environment" (the first suite's: device kind, versions),
      "suites" (per suite: "json" path, "seconds", "ratios", "error" or None), "ratios" (all
      suites' records) and "rows" (the combined table).
    """
    log = log or (lambda m: None)
    out: dict[str, Any] = {
        "config": dataclasses.asdict(config),
        "environment": None,
        "suites": {},
        "ratios": [],
        "rows": [],
    }
    for name in config.suites:
        log(f"[run] suite {name}: python -m benchmarks.{name} {' '.join(suite_argv(name, config))}")
        t0 = time.perf_counter()
        entry: dict[str, Any]
        try:
            result = run_suite(name, config)
            entry = {"json": os.path.join(config.out_dir, f"{name}.json"), "ratios": result["ratios"],
                     "error": None}  # fmt: skip
            if out["environment"] is None and isinstance(result.get("environment"), dict):
                out["environment"] = result["environment"]
        except Exception as e:  # a failed suite is reported, and the others still run
            entry = {"json": None, "ratios": [], "error": f"{type(e).__name__}: {e}"}
            log(f"[run] suite {name} failed: {entry['error']}")
        entry["seconds"] = time.perf_counter() - t0
        out["suites"][name] = entry
        out["ratios"] = [r for e in out["suites"].values() for r in e["ratios"]]
        out["rows"] = combined_rows(out["suites"])
        report.write_json(os.path.join(config.out_dir, "run.json"), out)
    return out


def table(out: dict[str, Any]) -> str:
    """The combined Markdown table: every ratio with its spread, target and pass/miss (smoke)."""
    return report.format_table(
        out["rows"], ["suite", "ratio", "value", "spread", "target", "result"], floatfmt=".3g"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse flags, run the suites, print each suite's table and the combined one (as a script: exit
    status 1 when a suite failed)."""
    config = cli.parse(Config, argv)
    report.check_writable(config.out_dir)
    out = run(config, log=lambda m: print(m, file=sys.stderr, flush=True))
    env = out["environment"] or {}
    print(
        f"\n## benchmarks.run: {env.get('device_kind')} ({env.get('backend')}, {env.get('device_count')} "
        f"device(s), {env.get('cpu_affinity')} CPU threads), jax {env.get('jax')}, flax {env.get('flax')}, "
        f"{env.get('timestamp_utc')}\n"
    )
    print(table(out))
    print(
        "\nvalue: median of the per-round ratios; spread: their min-max within this run"
        + ("; smoke: a --quick run (tiny shapes), not compared with the targets" if config.quick else "")
    )
    print(f"\nwrote {os.path.join(config.out_dir, 'run.json')}")
    return out


def failed(out: dict[str, Any]) -> list[str]:
    """Names of the suites that raised."""
    return [name for name, entry in out["suites"].items() if entry["error"]]


if __name__ == "__main__":
    sys.exit(1 if failed(main()) else 0)
