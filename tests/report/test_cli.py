"""jaxvg.cli: dataclass config -> argparse, every flag type, presets, validation errors."""

import dataclasses
from typing import Any, ClassVar, Literal

import pytest

from jaxvg import checks
from jaxvg.report import cli


@dataclasses.dataclass(frozen=True)
class Config:
    depth: int = 50  # hidden layers (100% of them)
    activations: tuple[str, ...] = ("sigmoid", "tanh")  # nets to compare
    # weight variance,
    # times 1/fan_in
    sigma_w2: float = 1.0
    widths: tuple[int, ...] = (8, 16)  # one shape group each
    rates: tuple[float, ...] = (0.1,)  # learning rates
    q0: float | None = None  # input second moment; none: use q*
    seed_list: tuple[int, ...] | None = None  # explicit seeds
    loss: Literal["mse", "cross_entropy"] = "mse"  # loss name
    use_bias: bool = True  # biases in every layer
    quick: bool = False  # tiny sizes for tests
    out_dir: str = dataclasses.field(default="results/toy", metadata={"help": "output directory"})
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {"depth": 200, "widths": [256, 1024], "quick": False},
        "bad": {"depth": -1},
    }

    def __post_init__(self):
        checks.positive_int("depth", self.depth)
        checks.positive("sigma_w2", self.sigma_w2)
        for a in self.activations:
            checks.choice("activations", a, ("sigmoid", "tanh", "relu"))


def test_defaults():
    assert cli.parse(Config, []) == Config()


def test_every_flag_type():
    config = cli.parse(
        Config,
        [
            "--depth", "7",
            "--activations", "relu", "tanh",
            "--sigma-w2", "1.5",
            "--widths", "4",
            "--rates", "0.5", "1e-3",
            "--q0", "0.25",
            "--seed-list", "3", "4",
            "--loss", "cross_entropy",
            "--no-use-bias",
            "--quick",
            "--out-dir", "/tmp/x",
        ],
    )  # fmt: skip
    assert config == Config(
        depth=7,
        activations=("relu", "tanh"),
        sigma_w2=1.5,
        widths=(4,),
        rates=(0.5, 1e-3),
        q0=0.25,
        seed_list=(3, 4),
        loss="cross_entropy",
        use_bias=False,
        quick=True,
        out_dir="/tmp/x",
    )
    assert isinstance(config.widths, tuple) and isinstance(config.rates[1], float)
    assert cli.parse(Config, ["--use-bias"]).use_bias is True


def test_underscore_spelling_and_none():
    config = cli.parse(Config, ["--sigma_w2", "2", "--out_dir", "o", "--q0", "none", "--seed_list", "none"])
    assert (config.sigma_w2, config.out_dir, config.q0, config.seed_list) == (2.0, "o", None, None)
    assert cli.parse(Config, ["--no-use_bias"]).use_bias is False


def test_help_text_comes_from_comments_and_metadata(capsys):
    assert cli.field_help(Config) == {
        "depth": "hidden layers (100% of them)",
        "activations": "nets to compare",
        "sigma_w2": "weight variance, times 1/fan_in",
        "widths": "one shape group each",
        "rates": "learning rates",
        "q0": "input second moment; none: use q*",
        "seed_list": "explicit seeds",
        "loss": "loss name",
        "use_bias": "biases in every layer",
        "quick": "tiny sizes for tests",
        "out_dir": "output directory",
    }
    with pytest.raises(SystemExit) as exc:
        cli.parse(Config, ["--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--depth INT hidden layers (100% of them) (default: 50)" in text
    assert "--activations STR [STR ...] nets to compare (default: sigmoid tanh)" in text
    assert "--sigma-w2 FLOAT weight variance, times 1/fan_in (default: 1.0)" in text
    assert "--use-bias, --no-use-bias biases in every layer (default: True)" in text
    assert "--preset {full,bad}" in text
    assert "--sigma_w2" not in text  # the underscore spelling works but is not listed twice


def test_help_falls_back_to_metadata_without_source():
    ns: dict[str, Any] = {}
    exec(
        "import dataclasses\n"
        "@dataclasses.dataclass(frozen=True)\n"
        "class C:\n"
        "    a: int = 1  # invisible: no source file\n"
        "    b: str = dataclasses.field(default='x', metadata={'help': 'from metadata'})\n",
        ns,
    )
    assert cli.field_help(ns["C"]) == {"b": "from metadata"}
    assert cli.parse(ns["C"], ["--a", "2"]) == ns["C"](a=2)


def test_preset_and_precedence():
    full = cli.parse(Config, ["--preset", "full"])
    assert (full.depth, full.widths, full.quick) == (200, (256, 1024), False)
    # explicit flags win over the preset, wherever they appear
    mixed = cli.parse(Config, ["--depth", "3", "--preset", "full", "--quick"])
    assert (mixed.depth, mixed.widths, mixed.quick) == (3, (256, 1024), True)
    assert cli.parse(Config, ["--preset", "full", "--widths", "8"]).widths == (8,)


def test_class_without_presets_has_no_preset_flag(capsys):
    @dataclasses.dataclass(frozen=True)
    class Small:
        n: int = 1  # count

    assert cli.parse(Small, ["--n", "4"]) == Small(n=4)
    with pytest.raises(SystemExit):
        cli.parse(Small, ["--preset", "full"])
    assert "unrecognized arguments: --preset" in capsys.readouterr().err


def test_required_field(capsys):
    @dataclasses.dataclass(frozen=True)
    class Req:
        need_me: int  # no default

    assert cli.parse(Req, ["--need_me", "3"]) == Req(need_me=3)
    with pytest.raises(SystemExit) as exc:
        cli.parse(Req, [])
    assert exc.value.code == 2
    assert "required: --need-me" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--depth", "0"], "argument --depth: `depth` must be an integer >= 1, got 0."),
        (["--sigma-w2", "-1"], "argument --sigma-w2: `sigma_w2` must be a finite number > 0, got -1.0."),
        (["--activations", "relu", "sigmod"], "argument --activations: `activations` must be one of"),
        (["--preset", "bad"], "argument --depth (set by --preset bad): `depth` must be an integer >= 1"),
        (["--depth", "two"], "argument --depth: invalid int value: 'two'"),
        (["--rates", "fast"], "argument --rates: invalid float value: 'fast'"),
        (["--loss", "l1"], "argument --loss: invalid choice: 'l1'"),
        (["--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
        (["--widths"], "argument --widths: expected at least one argument"),
        (["--depht", "3"], "unrecognized arguments: --depht"),
    ],
)
def test_bad_values_are_argparse_errors_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parse(Config, argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_programming_errors_are_type_errors():
    with pytest.raises(TypeError, match="`config_cls` must be a dataclass"):
        cli.parse(dict, [])

    @dataclasses.dataclass(frozen=True)
    class Weird:
        x: complex = 1j  # no flag mapping

    with pytest.raises(TypeError, match="Field `x`"):
        cli.parse(Weird, [])

    @dataclasses.dataclass(frozen=True)
    class BadPreset:
        n: int = 1
        PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"p": {"m": 2}}

    with pytest.raises(TypeError, match=r"PRESETS\['p'\] sets unknown fields \['m'\]"):
        cli.parse(BadPreset, [])


def test_a_field_named_preset_is_a_plain_flag_when_there_are_no_presets():
    """benchmarks.run's `preset` field (passed on to the suites) once collided with --preset."""

    @dataclasses.dataclass(frozen=True)
    class Run:
        preset: str | None = None  # passed on to the suites
        out_dir: str = "x"  # where

    assert cli.parse(Run, ["--preset", "accelerator"]).preset == "accelerator"
    assert cli.parse(Run, []).preset is None


def test_presets_and_a_field_named_preset_is_a_programming_error():
    @dataclasses.dataclass(frozen=True)
    class Both:
        preset: str = "a"  # clashes
        PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"p": {"preset": "b"}}

    with pytest.raises(TypeError, match="both `PRESETS` and a field named `preset`"):
        cli.parse(Both, [])


def test_given_fields_names_the_explicit_flags_while_parse_builds_the_config():
    seen = []

    @dataclasses.dataclass(frozen=True)
    class Probe:
        a: int = 1  # a
        b: int = 2  # b
        PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"p": {"b": 5}}

        def __post_init__(self):
            seen.append(cli.given_fields(self))

    cli.parse(Probe, ["--a", "1", "--preset", "p"])
    Probe()
    assert seen == [frozenset({"a"}), None]  # preset values are not explicit flags
