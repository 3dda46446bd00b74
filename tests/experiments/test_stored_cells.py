"""Every experiment's stored cells (issue 10): a cell file that is valid JSON with a valid checksum
but lacks a field, holds `[0.137]` where a float belongs or `[]` where one value per seed belongs is
recomputed with a `CellWarning` naming the file, never used; the real cells of each quick run match
the experiment's `CELL_SCHEMA`; every `main` passes its schema; every `run` checks its config.

The cells' numbers come from the session's quick runs (tests/conftest.py): the compute kernel of
each experiment is replaced by one that returns the real cell and records what it is asked for, so
these tests cost no training.
"""

import copy
import re

import numpy as np
import pytest

from experiments import isometry, phase_diagram, remedies, vanishing, xor
from jaxvg import report
from jaxvg.report import cells as cell_store
from jaxvg.report import experiment

MODULES = {
    "xor": xor,
    "vanishing": vanishing,
    "remedies": remedies,
    "phase_diagram": phase_diagram,
    "isometry": isometry,
}


def _real_cells(name, request):
    """{key: cell (with its setup)} of the experiment's quick run."""
    if name == "xor":
        res = request.getfixturevalue("xor_quick")
        return {"shallow": res["shallow"], "deep": res["deep"]}
    if name == "remedies":
        return request.getfixturevalue("remedies_quick")[2]
    return request.getfixturevalue(f"{name}_quick")["cells"]


def _without_setup(cell):
    return {k: copy.deepcopy(v) for k, v in cell.items() if k != "setup"}


def _fake_kernel(name, cells, calls, monkeypatch):
    """Replace the experiment's compute kernel by one returning the real cells; `calls` collects the
    keys it computes."""
    module = MODULES[name]
    if name == "xor":

        def fake(config, depth):
            key = "shallow" if depth == 1 else "deep"
            calls.append(key)
            return _without_setup(cells[key])

        monkeypatch.setattr(module, "train_cell", fake)
    elif name == "vanishing":

        def fake(config, activation):
            calls.append(activation)
            return _without_setup(cells[activation])

        monkeypatch.setattr(module, "_measure_cell", fake)
    elif name == "remedies":

        def fake(config, v, ds):
            calls.append(v.key)
            return _without_setup(cells[v.key])

        monkeypatch.setattr(module, "_run_variant", fake)
    elif name == "isometry":

        def fake(config, crit, log=None):
            calls.append("isometry")
            return _without_setup(cells["isometry"])

        monkeypatch.setattr(module, "_measure_all", fake)
    else:  # phase_diagram trains groups of (depth, sigma_w2) cells, config.seeds nets each

        def fake(config, ds, group, max_depth, seed_keys):
            calls.extend(dict.fromkeys(phase_diagram.cell_key(d, s) for d, s in group))
            fields = ("train_accuracy", "test_accuracy", "train_loss", "test_loss", "initial_batch_loss",
                      "final_batch_loss", "diverged", "diverged_step")  # fmt: skip
            out = {}
            for field in fields:
                values = [v for d, s in group for v in cells[phase_diagram.cell_key(d, s)][field]]
                out[field] = np.asarray([np.nan if v is None else v for v in values])
            return out

        monkeypatch.setattr(module, "_train_group", fake)


def _drop(field):
    return lambda cell: cell.pop(field)


def _set(field, value):
    return lambda cell: cell.update({field: value})


def _first_entry(field, value):
    def corrupt(cell):
        cell[field] = copy.deepcopy(cell[field])
        node = cell[field]
        while isinstance(node[0], list) and isinstance(node[0][0], list):
            node = node[0]
        node[0][0] = value

    return corrupt


def _missing(name, key, field):
    return (name, key, _drop(field), rf"lacks the field '{field}'")


def _not_float(name, key, field, tail=""):
    return (name, key, _set(field, [0.137]), rf"cell\['{field}'\] must be float, got list{tail}")


def _too_short(name, key, field, n, tail=""):
    return (name, key, _set(field, []), rf"cell\['{field}'\] must be a list of length {n}{tail}")


def _bad_entry(name, key, field, depth):
    """[0.137] as the first entry of a nested per-seed list `depth` levels down."""
    where = r"\[0\]" * depth
    return (name, key, _first_entry(field, [0.137]), rf"cell\['{field}'\]{where} must be float \| None")


_PD0, _PD1 = phase_diagram.cell_key(3, 1.0), phase_diagram.cell_key(36, 1.75)
CORRUPTIONS = [
    _missing("xor", "deep", "solved"),
    _not_float("xor", "shallow", "seconds", r" \[0.137\]"),
    _too_short("xor", "deep", "final_loss", 8, r" .*got a list of length 0"),
    _missing("vanishing", "tanh", "log10_act_grad"),
    _not_float("vanishing", "relu", "log10_max_dphi"),
    _too_short("vanishing", "sigmoid", "loss", 2),
    _bad_entry("vanishing", "tanh", "log10_gain", 2),
    _missing("remedies", "baseline", "final_test_accuracy"),
    _not_float("remedies", "adam", "seconds"),
    _too_short("remedies", "relu_he", "steps_to_target", 2),
    _missing("phase_diagram", _PD0, "train_accuracy"),
    _not_float("phase_diagram", _PD0, "sigma_w2"),
    (
        "phase_diagram",
        _PD1,
        _set("train_accuracy", [[0.137]]),
        r"cell\['train_accuracy'\]\[0\] must be float \| None",
    ),
    _too_short("phase_diagram", _PD1, "final_batch_loss", 1),
    _missing("isometry", "isometry", "log_sv"),
    _too_short("isometry", "isometry", "lyapunov", 24),
    _bad_entry("isometry", "isometry", "log_sv", 3),
]


@pytest.mark.slow  # uses the session's quick runs of every experiment
@pytest.mark.parametrize("name", list(MODULES))
def test_the_real_cells_of_the_quick_run_match_the_schema(name, request):
    cells = _real_cells(name, request)
    assert cells
    for cell in cells.values():
        MODULES[name].CELL_SCHEMA(cell)  # raises ValueError when not


@pytest.mark.slow  # uses the session's quick runs of every experiment
@pytest.mark.parametrize(
    "name, key, corrupt, reason", CORRUPTIONS, ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CORRUPTIONS)]
)
def test_a_stored_cell_that_breaks_the_schema_is_recomputed_not_used(
    name, key, corrupt, reason, request, tmp_path, monkeypatch
):
    module = MODULES[name]
    cells = _real_cells(name, request)
    config = module.Config(quick=True, out_dir=str(tmp_path / name))
    write = report.cell_writer(config.out_dir, config=config)
    for k, cell in cells.items():
        cell = copy.deepcopy(cell)
        if k == key:
            corrupt(cell)
        write(k, cell)  # with a valid checksum: only the schema can tell
    calls = []
    _fake_kernel(name, cells, calls, monkeypatch)
    file_name = re.escape(cell_store.cell_filename(key))
    with pytest.warns(report.CellWarning, match=rf"stored cell .*{file_name} is not reused: .*{reason}"):
        res = cell_store.run_resumable(module.run, config, schema=module.CELL_SCHEMA)
    assert calls == [key]  # recomputed; every other cell reused
    assert res["computed"] == [key]
    got = res["cells"][key] if "cells" in res else res[key]
    assert _without_setup(got) == _without_setup(report.files.to_jsonable(cells[key]))
    # the rewritten file is valid: nothing is recomputed the next time
    assert cell_store.run_resumable(module.run, config, schema=module.CELL_SCHEMA)["computed"] == []


@pytest.mark.parametrize("name", list(MODULES))
def test_main_passes_the_schema_and_run_checks_its_config(name, monkeypatch):
    module = MODULES[name]
    seen = {}
    monkeypatch.setattr(experiment, "main", lambda *args, **kwargs: seen.update(kwargs))
    module.main(["--quick"])
    assert seen["schema"] is module.CELL_SCHEMA
    with pytest.raises(TypeError, match=rf"`config` must be a experiments.{name}.Config, got dict"):
        module.run({"quick": True})


@pytest.mark.slow  # uses the session's quick run of xor
def test_an_interrupted_experiment_keeps_its_finished_cells_and_resumes(
    request, tmp_path, monkeypatch, capsys
):
    cells = _real_cells("xor", request)
    calls = []

    def interrupted(config, depth):
        if depth != 1:
            raise KeyboardInterrupt("interrupted while training the deep nets")
        calls.append("shallow")
        return _without_setup(cells["shallow"])

    monkeypatch.setattr(xor, "train_cell", interrupted)
    argv = ["--quick", "--out-dir", str(tmp_path / "xor")]
    with pytest.raises(KeyboardInterrupt):
        xor.main(argv)
    config = report.cli.parse(xor.Config, argv)
    assert set(report.finished_cells(config.out_dir, config=config, schema=xor.CELL_SCHEMA)) == {"shallow"}
    assert not (tmp_path / "xor" / "metrics.json").exists()
    _fake_kernel("xor", cells, calls, monkeypatch)
    res = xor.main(argv)
    assert calls == ["shallow", "deep"] and res["computed"] == ["deep"]
    assert (
        report.read_json(tmp_path / "xor" / "metrics.json")["results"]["deep"]["solved"]
        == cells["deep"]["solved"]
    )
