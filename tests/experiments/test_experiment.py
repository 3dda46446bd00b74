"""jaxvg.report.experiment: the one --quick mechanism, the reuse-a-stored-cell loop, the one main()."""

import dataclasses
import math
from typing import Any, ClassVar

import pytest

from experiments import remedies, vanishing
from jaxvg import report
from jaxvg.report import cli, experiment


@dataclasses.dataclass(frozen=True)
class Toy:
    seeds: int = 8  # nets
    width: int = 16  # units
    depth: int = 4  # blocks
    out_dir: str = "results/toy"  # where main() writes
    quick: bool = False  # tiny sizes

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"full": {"seeds": 32, "width": 64}}
    QUICK: ClassVar[dict[str, Any]] = {"seeds": 2, "width": 4}

    def __post_init__(self):
        experiment.apply_quick(self)
        if self.width < 1:
            raise ValueError(f"`width` must be >= 1, got {self.width}.")


def test_quick_keeps_every_flag_the_user_set_even_at_its_default():
    assert cli.parse(vanishing.Config, ["--quick", "--seeds", "8"]).seeds == 8  # 8 is the default
    assert cli.parse(vanishing.Config, ["--quick"]).seeds == 2
    assert cli.parse(vanishing.Config, ["--seeds", "8", "--quick"]).batch == 32  # the unset one is quick
    toy = cli.parse(Toy, ["--quick", "--width", "16"])
    assert (toy.seeds, toy.width, toy.depth, toy.quick) == (2, 16, 4, True)


def test_quick_in_python_keeps_fields_that_differ_from_their_default():
    assert (Toy(quick=True).seeds, Toy(quick=True).width, Toy(quick=True).depth) == (2, 4, 4)
    assert Toy(quick=True, seeds=5).seeds == 5
    assert Toy(quick=False).seeds == 8
    assert cli.given_fields(Toy()) is None  # only while cli.parse builds a config


def test_quick_replaces_preset_values_but_not_flags():
    # a preset is not the user's choice of a field: --preset full --quick is the full preset, quick
    assert cli.parse(Toy, ["--preset", "full"]).seeds == 32
    assert cli.parse(Toy, ["--preset", "full", "--quick"]).seeds == 2
    both = cli.parse(Toy, ["--preset", "full", "--quick", "--width", "64"])
    assert (both.seeds, both.width) == (2, 64)
    full = cli.parse(remedies.Config, ["--preset", "full", "--quick"])
    assert (full.depth, full.width, full.steps, full.seeds) == (3, 8, 200, 2)


def test_quick_help_lists_the_quick_values(capsys):
    with pytest.raises(SystemExit):
        cli.parse(Toy, ["--help"])
    assert "sets seeds=2, width=4" in " ".join(capsys.readouterr().out.split())


def test_quick_with_an_unknown_field_is_a_programming_error():
    @dataclasses.dataclass(frozen=True)
    class Bad:
        quick: bool = False  # q
        QUICK: ClassVar[dict[str, Any]] = {"sedes": 2}

        def __post_init__(self):
            experiment.apply_quick(self)

    with pytest.raises(TypeError, match=r"Bad.QUICK sets unknown fields \['sedes'\]"):
        Bad(quick=True)
    with pytest.raises(TypeError, match=r"Bad.QUICK sets unknown fields \['sedes'\]"):
        cli.parse(Bad, [])


# --------------------------------------------------------------------------- Cells


def test_cells_compute_store_and_reuse_by_setup():
    written, computed = {}, []

    def compute(value):
        computed.append(value)
        return {"value": value, "curve": [1.0, math.nan]}

    cells = experiment.Cells({}, written.__setitem__)
    cell = cells.get("a", {"n": 1, "shape": (2, 3)}, lambda: compute(1))
    assert cell == {"value": 1, "curve": [1.0, None], "setup": {"n": 1, "shape": [2, 3]}}  # JSON-ready
    assert written == {"a": cell} and cells.computed == ["a"]

    logs = []
    again = experiment.Cells(written, pytest.fail, logs.append)
    assert again.get("a", {"n": 1, "shape": (2, 3)}, lambda: pytest.fail("recomputed")) == cell
    assert again.computed == [] and logs == []
    stale = experiment.Cells(written, None, logs.append)
    assert (
        stale.get("a", {"n": 2, "shape": (2, 3)}, lambda: compute(2), describe=lambda c: "two")["value"] == 2
    )
    assert stale.computed == ["a"] and computed == [1, 2]
    assert len(logs) == 1 and logs[0].startswith("a: ") and logs[0].endswith(" s  two")
    assert not experiment.Cells({"a": "not a cell"}).reuse("a", {})


# --------------------------------------------------------------------------- main


def _toy_run(config, *, on_cell=None, done=None, log=None):
    cells = experiment.Cells(done, on_cell, log)
    for seed in range(config.seeds):
        cells.get(f"seed={seed}", {"width": config.width}, lambda seed=seed: {"loss": 0.5 / (1 + seed)})
    return {"cells": cells.cells, "computed": cells.computed}


def _toy_report(config, res):
    rows = [{"seed": k, "loss": c["loss"]} for k, c in res["cells"].items()]
    return experiment.Outputs(
        results=res,
        summary="# toy\n\n" + report.format_table(rows),
        csv={"toy.csv": rows},
        seeds=config.seeds,
    )


def test_main_writes_prints_the_table_then_the_path_and_resumes(tmp_path, capsys):
    argv = ["--quick", "--out-dir", str(tmp_path / "toy")]
    res = experiment.main(Toy, _toy_run, _toy_report, argv)
    assert res["computed"] == ["seed=0", "seed=1"]
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "# toy" and "| seed " in lines[2]
    assert lines[-1] == f"wrote {tmp_path / 'toy'}/: metrics.json, toy.csv, summary.md"
    metrics = report.read_json(tmp_path / "toy" / "metrics.json")
    assert metrics["config"]["seeds"] == 2 and metrics["seeds"] == 2
    assert set(report.finished_cells(tmp_path / "toy")) == {"seed=0", "seed=1"}
    assert experiment.main(Toy, _toy_run, _toy_report, argv)["computed"] == []


def test_main_checks_the_output_directory_before_computing(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")

    def must_not_run(*args, **kwargs):
        pytest.fail("computed before checking the output directory")

    with pytest.raises(OSError, match="output directory .* cannot be written"):
        experiment.main(Toy, must_not_run, _toy_report, ["--out-dir", str(blocker / "toy")])
