"""Every command line of the experiments and benchmarks: its --help, and every preset as a dry run
(parse and build the config, alone and with --quick), plus the accelerator preset of
`benchmarks.run` as a real smoke run (it once crashed in the parser)."""

import importlib
import json
import pathlib
import re

import pytest

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
