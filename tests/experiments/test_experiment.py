"""jaxvg.report.experiment: the one --quick mechanism, the reuse-a-stored-cell loop, the one main()."""

import dataclasses
import math
import pathlib
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


# --------------------------------------------------------------------------- reliability of main


_TOY_SCHEMA = experiment.cell_schema(
    {"loss": float, "curve": list[float | None], "setup": {"width": int}},
    shapes=lambda cell: {"curve": (cell["setup"]["width"],)},
)


def _schema_run(config, *, on_cell=None, done=None, log=None, fail_at=None, calls=None):
    cells = experiment.Cells(done, on_cell, log, schema=_TOY_SCHEMA)
    for seed in range(config.seeds):
        if seed == fail_at:
            raise KeyboardInterrupt("interrupted in the middle of the sweep")

        def compute(seed=seed):
            if calls is not None:
                calls.append(seed)
            return {"loss": 0.5 / (1 + seed), "curve": [float(seed)] * config.width}

        cells.get(f"seed={seed}", {"width": config.width}, compute)
    return {"cells": cells.cells, "computed": cells.computed}


def _schema_report(config, res):
    rows = [{"seed": k, "loss": c["loss"]} for k, c in res["cells"].items()]
    return experiment.Outputs(results=res, summary="# toy\n", csv={"toy.csv": rows}, seeds=config.seeds)


def _main(argv, **run_kwargs):
    def run(config, **kwargs):
        return _schema_run(config, **kwargs, **run_kwargs)

    return experiment.main(Toy, run, _schema_report, argv, schema=_TOY_SCHEMA)


@pytest.mark.parametrize(
    "corrupt, reason",
    [
        (lambda c: c.pop("loss"), r"lacks the field 'loss'"),
        (lambda c: c.update(loss=[0.137]), r"cell\['loss'\] must be float, got list \[0.137\]"),
        (
            lambda c: c.update(curve=[]),
            r"cell\['curve'\] must be a list of length 4 .*got a list of length 0",
        ),
        (lambda c: c.update(curve=[0.1, "a", 0.2, 0.3]), r"cell\['curve'\]\[1\] must be float \| None"),
        (lambda c: c.update(setup={"width": "4"}), r"cell\['setup'\]\['width'\] must be int"),
    ],
)
def test_main_recomputes_a_stored_cell_that_breaks_the_schema_and_names_its_file(
    tmp_path, capsys, corrupt, reason
):
    out = tmp_path / "toy"
    argv = ["--quick", "--out-dir", str(out)]
    _main(argv)
    config = cli.parse(Toy, argv)
    stored = report.finished_cells(out, config=config, schema=_TOY_SCHEMA)
    bad = dict(stored["seed=1"])
    corrupt(bad)
    report.cell_writer(out, config=config)("seed=1", bad)  # a valid checksum: only the schema can catch it
    calls = []
    with pytest.warns(report.CellWarning, match=rf"stored cell .*seed=1\.json is not reused: .*{reason}"):
        res = _main(argv, calls=calls)
    assert calls == [1] and res["computed"] == ["seed=1"]  # recomputed, not used
    assert res["cells"]["seed=1"]["loss"] == 0.25 and res["cells"]["seed=1"]["curve"] == [1.0] * 4
    assert report.read_json(out / "metrics.json")["results"]["cells"]["seed=1"]["loss"] == 0.25
    # the file now holds the recomputed cell: a third run reuses everything, without a warning
    assert _main(argv, calls=calls)["computed"] == [] and calls == [1]


def test_cells_skip_a_done_cell_that_breaks_the_schema_with_a_warning_naming_its_key():
    done = {"seed=0": {"loss": 0.5, "curve": [0.0] * 4, "setup": {"width": 4}}}
    done["seed=1"] = {"loss": [0.137], "curve": [1.0] * 4, "setup": {"width": 4}}
    with pytest.warns(report.CellWarning, match=r"stored cell 'seed=1' \(given in `done`\) is not reused"):
        res = _schema_run(Toy(quick=True), done=done)
    assert res["computed"] == ["seed=1"] and res["cells"]["seed=1"]["loss"] == 0.25


def test_an_interrupted_run_keeps_its_finished_cells(tmp_path, capsys):
    out = tmp_path / "toy"
    argv = ["--seeds", "4", "--out-dir", str(out)]
    calls = []
    with pytest.raises(KeyboardInterrupt):
        _main(argv, fail_at=2, calls=calls)
    assert calls == [0, 1]
    assert set(report.finished_cells(out, config=cli.parse(Toy, argv))) == {"seed=0", "seed=1"}
    assert not (out / "metrics.json").exists()  # nothing half-written
    assert _main(argv, calls=calls)["computed"] == ["seed=2", "seed=3"] and calls == [0, 1, 2, 3]


def test_two_configs_in_one_directory_never_mix_their_cells(tmp_path, capsys):
    out = str(tmp_path / "toy")
    narrow, wide = ["--quick", "--out-dir", out], ["--quick", "--width", "6", "--out-dir", out]
    assert _main(narrow)["computed"] == ["seed=0", "seed=1"]
    assert _main(wide)["computed"] == ["seed=0", "seed=1"]  # same keys, another config: not reused
    assert report.read_json(tmp_path / "toy" / "metrics.json")["config"]["width"] == 6
    res = _main(narrow)  # its own cells are still there, untouched by the wide run
    assert res["computed"] == [] and res["cells"]["seed=0"]["curve"] == [0.0] * 4
    assert len(list((tmp_path / "toy" / "cells").glob("config-*"))) == 2


def test_main_writes_every_output_atomically(tmp_path, capsys, monkeypatch):
    import os

    replaced = []
    real_replace = os.replace

    def replace(src, dst):
        replaced.append(pathlib.Path(dst).name)
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    _main(["--quick", "--out-dir", str(tmp_path / "toy")])
    written = {p.name for p in (tmp_path / "toy").iterdir() if p.is_file() and not p.name.startswith(".")}
    assert written == {"metrics.json", "toy.csv", "summary.md"}
    assert written <= set(replaced)  # each written to a temporary file, then os.replace'd
    assert {"seed=0.json", "seed=1.json"} <= set(replaced)


def test_cell_schema_reports_what_is_wrong():
    validate = experiment.cell_schema({"x": list[list[float]], "n": int}, shapes=lambda c: {"x": (c["n"], 2)})
    validate({"x": [[1.0, 2.0]], "n": 1})
    for cell, match in [
        ({"x": [[1.0, 2.0]]}, r"lacks the field 'n'"),
        ({"x": [[1.0]], "n": 1}, r"cell\['x'\]\[0\] must be a list of length 2"),
        (
            {"x": [], "n": 1},
            r"cell\['x'\] must be a list of length 1 \(shape \(1, 2\)\), got a list of length 0",
        ),
        ({"x": [[1.0, 2.0]], "n": True}, r"cell\['n'\] must be int, got bool"),
        ([1.0], r"cell must be an object"),
    ]:
        with pytest.raises(ValueError, match=match):
            validate(cell)
    with pytest.raises(TypeError, match=r"`fields` must be a mapping"):
        experiment.cell_schema([("x", int)])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"done": [("a", 1)]}, TypeError, r"`done` must be None or a mapping"),
        ({"on_cell": "print"}, TypeError, r"`on_cell` must be None or a callable"),
        ({"log": 3}, TypeError, r"`log` must be None or a callable"),
    ],
)
def test_cells_check_their_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        experiment.Cells(**kwargs)


def test_config_helpers_name_the_field():
    with pytest.raises(
        TypeError, match=r"`depths` must be a non-empty tuple, e.g. depths=\(4,\), got 4 \(int\)"
    ):
        experiment.check_tuple("depths", 4, lambda n, v: v)
    with pytest.raises(TypeError, match=r"`depths` must be a non-empty tuple.*got '4' \(str\)"):
        experiment.check_tuple("depths", "4", lambda n, v: v)
    with pytest.raises(ValueError, match=r"`depths` must be a non-empty tuple, got \(\)"):
        experiment.check_tuple("depths", (), lambda n, v: v)
    assert experiment.check_tuple("depths", [3, 1], lambda n, v: v) == (3, 1)
    with pytest.raises(TypeError, match=r"`config` must be a .*Toy, got dict: build one with Toy\(...\)"):
        experiment.check_config({"seeds": 2}, Toy)
