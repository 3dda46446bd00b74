"""Every command line of the experiments and benchmarks: its --help, every preset parsed (alone and
with --quick), and every preset run end to end at tiny sizes (an unrun preset is a broken one):
the accelerator preset of `benchmarks.run` as a real smoke run (it once crashed in the parser), and
one dry run per preset of every other command line (`DRY_RUNS`)."""

import dataclasses
import importlib
import json
import pathlib
import re

import numpy as np
import pytest

from jaxvg import report
from jaxvg.report import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXPERIMENTS = ["experiments.xor", "experiments.vanishing", "experiments.remedies", "experiments.phase_diagram",
               "experiments.isometry", "experiments.through_time",
               "experiments.transformers"]  # fmt: skip
BENCHMARKS = ["benchmarks.training", "benchmarks.seeds", "benchmarks.analysis", "benchmarks.run",
              "benchmarks.measure_cost", "benchmarks.time_flow"]  # fmt: skip
CLIS = EXPERIMENTS + BENCHMARKS
# files that do not ship with jaxvg, and the tracker: docstrings and --help must not point at them
UNSHIPPED = re.compile(r"STYLE\.md|DESIGN\.md|SOURCE\.md|seed\.txt|\bthe issue\b|\bissue \d", re.IGNORECASE)


def _presets(module) -> list[str]:
    presets = getattr(module.Config, "PRESETS", None)
    if presets is None and module.__name__ == "benchmarks.run":
        return list(module.PRESETS)  # run's --preset is a field, passed on to the suites
    return list(presets or ())


PRESET_CASES = [(name, p) for name in CLIS for p in _presets(importlib.import_module(name))]


def test_every_command_line_module_is_covered():
    found = {
        f"{p.parent.name}.{p.stem}" for d in ("experiments", "benchmarks") for p in (ROOT / d).glob("*.py")
    }
    assert found - {
        "experiments.__init__",
        "experiments.transformers_train",  # part 3 of experiments.transformers, no command line
        "benchmarks.__init__",
        "benchmarks.common",
        "benchmarks.loops",
        "benchmarks.torch_reference",
    } == set(CLIS)


def test_every_cli_has_a_preset():
    assert {name for name, _ in PRESET_CASES} == set(CLIS) - {"benchmarks.seeds"}


@pytest.mark.parametrize("name, preset", PRESET_CASES)
def test_every_preset_builds_alone_and_with_quick(name, preset):
    module = importlib.import_module(name)
    config = cli.parse(module.Config, ["--preset", preset])
    overrides = getattr(module.Config, "PRESETS", {}).get(preset, {"preset": preset})
    for field, value in overrides.items():
        got = getattr(config, field)
        assert got == (tuple(value) if isinstance(value, list) else value), (field, got)
    quick = cli.parse(module.Config, ["--preset", preset, "--quick"])
    assert quick.quick is True
    for field, value in getattr(module.Config, "QUICK", {}).items():
        assert getattr(quick, field) == value, field  # quick sizes win over the preset's
    if name == "benchmarks.run":
        assert module.suite_argv("training", quick)[:3] == ["--quick", "--preset", preset]


@pytest.mark.slow  # one benchmark subprocess
def test_run_accelerator_preset_smoke_run(tmp_path, capsys):
    """`python -m benchmarks.run --preset accelerator` crashed at once in the parser. With --quick
    the training suite runs its accelerator preset at quick sizes: the whole path, in seconds."""
    from benchmarks import run

    out = run.main(["--preset", "accelerator", "--quick", "--suites", "training", "--out-dir", str(tmp_path)])
    assert run.failed(out) == [] and out["config"]["preset"] == "accelerator"
    training = json.loads((tmp_path / "training.json").read_text())
    assert training["config"]["quick"] is True and training["config"]["width"] == 16
    # every field of training's accelerator preset is a size that --quick replaces: this run is also
    # `python -m benchmarks.training --preset accelerator --quick`
    from benchmarks import training as bench_training

    assert _without_out_dir(training["config"]) == _jsonable(
        cli.parse(bench_training.Config, ["--preset", "accelerator", "--quick"])
    )
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"wrote {tmp_path / 'run.json'}"


@pytest.mark.parametrize("name", CLIS)
def test_help_is_one_paragraph_then_the_flags_then_the_long_text(name):
    module = importlib.import_module(name)
    text = cli.make_parser(module.Config).format_help()
    doc = module.__doc__.strip()
    first = " ".join(doc.split("\n\n")[0].split())
    usage, description, rest = text.split("\n\n", 2)
    assert usage.startswith("usage:") and " ".join(description.split()) == first
    options, epilog = rest.split("\n\n", 1) if "\n\n" in rest else (rest, "")
    assert options.startswith("options:") and "--out-dir" in options
    second = doc.split("\n\n")[1].strip().splitlines()[0]
    assert second in text and text.index(second) > text.index("--out-dir")
    assert not UNSHIPPED.search(text)


@pytest.mark.parametrize(
    "path",
    sorted(
        str(p.relative_to(ROOT))
        for p in [
            *ROOT.glob("experiments/*.py"),
            *ROOT.glob("benchmarks/*.py"),
            ROOT / "jaxvg/report/cli.py",
            ROOT / "jaxvg/report/experiment.py",
        ]  # fmt: skip
    ),
)
def test_no_pointers_to_files_that_do_not_ship(path):
    text = (ROOT / path).read_text()
    assert not UNSHIPPED.search(text), UNSHIPPED.search(text).group(0)
    assert "tests/test_" not in text  # test files move; say "what the tests run"


# --------------------------------------------------------------------------- every preset, run


def _jsonable(config) -> dict:
    return _without_out_dir(report.files.to_jsonable(dataclasses.asdict(config)))


def _without_out_dir(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "out_dir"}


def _kept(module, preset: str, argv: list[str]) -> set[str]:
    """The preset's fields that reach the config of `argv`: neither a flag of argv nor (with --quick)
    replaced by a quick size."""
    flags = {a[2:].replace("-", "_") for a in argv if a.startswith("--")}
    quick = set(module.Config.QUICK) if "--quick" in argv else set()
    return set(module.Config.PRESETS[preset]) - flags - quick


# Runs the session computes anyway (tests/conftest.py): {fixture: (the config it ran, given the
# module and the fixture's value; {key: cell} to store in the output directory beforehand)}. A dry
# run whose config equals one of them reuses its cells, so main() computes nothing and only writes.
def _quick(module, value):
    return cli.parse(module.Config, ["--quick"])


REUSED = {
    "xor_quick": (_quick, lambda res: {"shallow": res["shallow"], "deep": res["deep"]}),
    "vanishing_quick": (_quick, lambda res: res["cells"]),
    "isometry_quick": (_quick, lambda res: res["cells"]),
    "remedies_quick": (_quick, lambda res: res[2]),
    "through_time_quick": (_quick, lambda res: res["cells"]),
    "transformers_cpu": (lambda module, value: value[0], lambda value: value[2]),
}


@dataclasses.dataclass(frozen=True)
class DryRun:
    """`module.main([*argv, "--out-dir", tmp])`: `kept` the preset fields that reach its config
    (the others are sizes that --quick or a flag shrinks); `reuses` the session fixture whose run has
    exactly this config (None: computed here); `files` what it writes."""

    argv: list[str]
    kept: dict
    files: tuple[str, ...]
    reuses: str | None = None


EXPERIMENT_FILES = ("metrics.json", "summary.md")
DRY_RUNS = {
    # full: 64 seeds, 5000 steps; every field a size. With the quick run's 8 seeds it is that run.
    ("experiments.xor", "full"): DryRun(
        ["--preset", "full", "--quick", "--seeds", "8"], {}, (*EXPERIMENT_FILES, "xor.png"), "xor_quick"
    ),
    # full: depth 200, width 1024, 32 seeds, batch 256; every field a size
    ("experiments.vanishing", "full"): DryRun(
        ["--preset", "full", "--quick", "--depth", "50", "--width", "256"],
        {},
        (*EXPERIMENT_FILES, "vanishing.png"),
        "vanishing_quick",
    ),
    # full: every field a size that --quick replaces
    ("experiments.remedies", "full"): DryRun(
        ["--preset", "full", "--quick"], {}, (*EXPERIMENT_FILES, "remedies.png"), "remedies_quick"
    ),
    # full: 8 seeds besides the sizes --quick replaces
    ("experiments.isometry", "full"): DryRun(
        ["--preset", "full", "--quick", "--seeds", "4"],
        {},
        (*EXPERIMENT_FILES, "isometry.png"),
        "isometry_quick",
    ),
    # full: MNIST-1D instead of digits (not a size: computed here, on a 1 x 1 grid) and batch 128
    ("experiments.phase_diagram", "full"): DryRun(
        [
            "--preset",
            "full",
            "--quick",
            "--sigma-w2",
            "1.75",
            "--depths",
            "2",
            "--width",
            "8",
            "--steps",
            "5",
        ],
        {"dataset": "mnist1d", "batch_size": 128},
        (*EXPERIMENT_FILES, "phase_diagram.png", "phase_diagram.csv"),
    ),
    # full: lr 1e-3 and hidden 128 besides the sizes --quick replaces. The learning rate is set back
    # to the quick run's here, to reuse that run (a fresh tiny run of one net: 39 s of CPU, cold)
    ("experiments.through_time", "full"): DryRun(
        ["--preset", "full", "--quick", "--hidden", "32", "--learning-rate", "3e-3"],
        {},
        (*EXPERIMENT_FILES, "through_time.png"),
        "through_time_quick",
    ),
    # cpu: run by the session fixture `transformers_cpu` (tests/conftest.py) at d_model 16, all
    # three parts and the five trained variants, with the preset's lr, warmup, logging and batch
    ("experiments.transformers", "cpu"): DryRun(
        [
            "--preset",
            "cpu",
            "--d-model",
            "16",
            "--heads",
            "2",
            "--seq-len",
            "6",
            "--vocab",
            "6",
            "--init-depths",
            "2",
            "8",
            "--init-seeds",
            "2",
            "--init-batch",
            "8",
            "--rank-depth",
            "8",
            "--train-depths",
            "2",
            "--n-train",
            "256",
            "--steps",
            "100",
        ],
        {"learning_rate": 3e-3, "warmup_steps": 50, "log_every": 20, "batch_size": 32},
        (*EXPERIMENT_FILES, "transformers.png", "training.csv"),
        "transformers_cpu",
    ),  # fmt: skip
    # full: every field a size; with the cpu dry run's seeds, steps, warmup and logging it is that run
    ("experiments.transformers", "full"): DryRun(
        [
            "--preset",
            "full",
            "--quick",
            "--seeds",
            "4",
            "--steps",
            "100",
            "--warmup-steps",
            "50",
            "--log-every",
            "20",
        ],
        {},
        (*EXPERIMENT_FILES, "transformers.png"),
        "transformers_cpu",
    ),
    # accelerator: every field a size that --quick replaces; tinier still (never run elsewhere)
    ("benchmarks.measure_cost", "accelerator"): DryRun(
        [
            "--preset",
            "accelerator",
            "--quick",
            "--flow-shapes",
            "2x8x4",
            "--jacobian-shape",
            "2x8x2",
            "--spectrum-shape",
            "2x8",
            "--compile-deep",
            "2x8x4",
            "--compile-periodic",
            "1x8x4",
            "--repeat",
            "2",
            "--blocks",
            "1",
        ],
        {},
        ("measure_cost.json",),
    ),  # fmt: skip
}
# presets run by other tests: benchmarks.run's in `test_run_accelerator_preset_smoke_run` (training's
# with it), analysis's in tests/benchmarks; time_flow's accelerator preset at --quick is the
# time_flow suite of the session's `benchmarks.run --quick` (`test_time_flow_accelerator_preset`)
RUN_ELSEWHERE = {
    ("benchmarks.run", "accelerator"),
    ("benchmarks.training", "accelerator"),
    ("benchmarks.analysis", "accelerator"),
    ("benchmarks.time_flow", "accelerator"),
}


def test_every_preset_has_a_dry_run():
    assert set(DRY_RUNS) | RUN_ELSEWHERE == set(PRESET_CASES)
    assert not set(DRY_RUNS) & RUN_ELSEWHERE


@pytest.mark.slow  # the reused ones only write; phase_diagram and measure_cost compute
@pytest.mark.parametrize("name, preset", sorted(DRY_RUNS))
def test_every_preset_runs_end_to_end(name, preset, request, tmp_path, capsys):
    module = importlib.import_module(name)
    dry = DRY_RUNS[name, preset]
    config = cli.parse(module.Config, dry.argv)
    assert set(dry.kept) == _kept(module, preset, dry.argv)
    for field, value in dry.kept.items():
        assert module.Config.PRESETS[preset][field] == value, field
    if dry.reuses is not None:
        ran, cells = REUSED[dry.reuses]
        value = request.getfixturevalue(dry.reuses)
        # the session's run is this preset's run, field for field (`quick` itself changes nothing
        # once the sizes are set: transformers full at --quick is the cpu run, which has no --quick)
        same = {k: v for k, v in _jsonable(ran(module, value)).items() if k != "quick"}
        assert {k: v for k, v in _jsonable(config).items() if k != "quick"} == same
        write = report.cell_writer(tmp_path)
        for key, cell in cells(value).items():
            write(key, cell)
    res = module.main([*dry.argv, "--out-dir", str(tmp_path)])
    for file_name in dry.files:
        assert (tmp_path / file_name).stat().st_size > 0, file_name
    written = report.read_json(tmp_path / dry.files[-1 if name.startswith("benchmarks") else 0])
    assert _without_out_dir(written["config"]) == _jsonable(config)
    for field, value in dry.kept.items():
        assert written["config"][field] == value, field
    if name.startswith("experiments"):
        assert res["computed"] == [] if dry.reuses else res["computed"]
        assert (tmp_path / "summary.md").read_text().splitlines()[0] in capsys.readouterr().out
    else:
        assert {"compile", "flow", "jacobians", "spectrum"} <= set(res)


@pytest.mark.slow  # uses the session's `benchmarks.run --quick`
def test_time_flow_accelerator_preset(benchmarks_quick):
    """Every field of time_flow's accelerator preset is a size that --quick replaces: the time_flow
    suite of `benchmarks.run --quick` ran `python -m benchmarks.time_flow --preset accelerator --quick`."""
    from benchmarks import time_flow

    out, out_dir = benchmarks_quick
    assert out["suites"]["time_flow"]["error"] is None
    written = json.loads((out_dir / "time_flow.json").read_text())
    assert _kept(time_flow, "accelerator", ["--preset", "accelerator", "--quick"]) == set()
    assert _without_out_dir(written["config"]) == _jsonable(
        cli.parse(time_flow.Config, ["--preset", "accelerator", "--quick"])
    )


@pytest.mark.slow  # uses the session's transformers cpu run
def test_transformers_cpu_preset_trains_every_variant_with_warmup(transformers_cpu):
    """`--preset cpu` through part 3: all five variants trained at its depth, and the warmup cell
    trained on a schedule (50 warmup steps) that the plain post-LN cell did not."""
    from experiments import transformers, transformers_train

    config, res, stored, out_dir = transformers_cpu
    assert (config.learning_rate, config.warmup_steps, config.log_every) == (3e-3, 50, 20)
    keys = {f"train/{v[0]}/L={d}" for v in transformers_train.VARIANTS for d in config.train_depths}
    assert len(keys) == 5 and keys <= set(stored) and keys <= set(res["computed"])
    assert {r["key"] for r in res["train_rows"]} == {v[0] for v in transformers_train.VARIANTS}
    post, warm = (stored[f"train/{k}/L=2"] for k in ("post", "post_warmup"))
    assert post["setup"]["warmup_steps"] == warm["setup"]["warmup_steps"] == 50
    # the same initial loss, computed by two compiled programs (the schedules differ): equal to float32
    # rounding, not bit for bit (XLA may fuse the two differently)
    assert post["step"][0] == 0
    np.testing.assert_allclose(
        [r[0] for r in post["train/loss"]], [r[0] for r in warm["train/loss"]], rtol=1e-6
    )
    assert all(p[1] != w[1] for p, w in zip(post["train/loss"], warm["train/loss"], strict=True))
    metrics = report.read_json(out_dir / "metrics.json")
    assert metrics["config"]["learning_rate"] == 3e-3 and metrics["config"]["warmup_steps"] == 50
    assert len(transformers.Config.PRESETS["cpu"]["train_depths"]) == 3  # the dry run trains at one
