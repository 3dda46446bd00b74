"""experiments.remedies: a row for every cure, the vanishing baseline, the verdict rule, resuming.

One quick run (the session fixture `remedies_quick`, tests/conftest.py) serves the slow tests; the
resume tests rerun it with the stored cells and count the calls to `jaxvg.fit` and
`jaxvg.gradient_flow`.
"""

import dataclasses
import math

import numpy as np
import pytest

import jaxvg
from experiments import remedies
from jaxvg import report
from jaxvg.train import data

CURES = [
    "baseline",
    "reinit",
    "lr_10x",
    "deeper",
    "wider_4x",
    "wider_16x",
    "deeper_wider",
    "batch_norm",
    "batch_norm_dropout",
    "relu_he",
    "tanh_critical_orthogonal",
    "residual",
    "layer_norm",
    "adam",
    "clipping",
]
VERDICTS = {"helps", "hurts", "mixed", "no effect"}


@pytest.fixture
def quick(remedies_quick):
    return remedies_quick


@pytest.fixture
def counted(monkeypatch):
    """Counts calls to jaxvg.fit and jaxvg.gradient_flow (as remedies calls them)."""
    calls = {"fit": 0, "gradient_flow": 0}
    fit, flow = jaxvg.fit, jaxvg.gradient_flow

    def counting_fit(*args, **kwargs):
        calls["fit"] += 1
        return fit(*args, **kwargs)

    def counting_flow(*args, **kwargs):
        calls["gradient_flow"] += 1
        return flow(*args, **kwargs)

    monkeypatch.setattr(remedies.jaxvg, "fit", counting_fit)
    monkeypatch.setattr(remedies.jaxvg, "gradient_flow", counting_flow)
    return calls


@pytest.mark.slow
def test_every_cure_has_a_row(quick):
    config, res, stored = quick
    assert [v.key for v in remedies.variants(config)] == CURES
    assert [r["key"] for r in res["rows"]] == CURES
    assert list(res["cells"]) == CURES and sorted(stored) == sorted(CURES)
    assert res["computed"] == CURES
    assert res["rows"][0]["verdict"] == "reference"
    assert {r["verdict"] for r in res["rows"][1:]} <= VERDICTS
    table = report.format_table(res["rows"], remedies.TABLE_COLUMNS)
    assert len(table.splitlines()) == 2 + len(CURES)  # header, rule, one line per cure


@pytest.mark.slow
def test_numbers_are_finite_and_shaped(quick):
    config, res, _ = quick
    for key, cell in res["cells"].items():
        depth = 2 * config.depth if key in ("deeper", "deeper_wider") else config.depth
        gain = np.asarray(cell["init/log10_gain"], dtype=float)
        assert gain.shape == (config.seeds, depth), key
        assert np.isfinite(gain).all(), key
        assert np.isfinite(np.asarray(cell["init/gap_decades"], dtype=float)).all(), key
        steps = np.asarray(cell["step"])
        assert steps[0] == 0 and steps[-1] == config.steps
        acc = np.asarray(cell["final_test_accuracy"], dtype=float)
        diverged = np.asarray(cell["diverged"], bool)
        assert np.isfinite(acc[~diverged]).all() and ((acc[~diverged] >= 0) & (acc[~diverged] <= 1)).all(), (
            key
        )
        reached = [t for t in cell["steps_to_target"] if t is not None]
        assert all(
            0 <= t <= config.steps and t % config.log_every in (0, config.steps % config.log_every)
            for t in reached
        ), key
    for row in res["rows"]:
        assert math.isfinite(row["init_gap_decades"]) and math.isfinite(row["init_gain_per_block"])
        assert row["steps_to_90"] == "never" or row["reached_90"] > 0
    # batch norm (and dropout) are measured in training mode, the others in evaluation mode
    modes = {k: c["setup"]["train_mode"] for k, c in res["cells"].items()}
    assert {k for k, m in modes.items() if m} == {"batch_norm", "batch_norm_dropout"}


@pytest.mark.slow
def test_baseline_vanishes_and_literature_cures_do_not(quick):
    _, res, _ = quick
    row = {r["key"]: r for r in res["rows"]}
    # Small-uniform init: sigma_w2 = 1/3; sigmoid' ~ 1/4 at the small pre-activations it gives, so
    # each block passes back sqrt(sigma_w2 E[phi'^2]) = sqrt(1/48): -0.84 decades. Width 8 and 2 seeds
    # fluctuate by ~0.1 decades per block; 0.2 is the tolerance.
    assert row["baseline"]["init_gain_per_block"] == pytest.approx(0.5 * math.log10(1 / 48), abs=0.2)
    for cure in ("relu_he", "residual", "tanh_critical_orthogonal"):
        assert row["baseline"]["init_gap_decades"] > row[cure]["init_gap_decades"] + 0.5, cure
        assert row[cure]["init_gain_per_block"] > -0.4, cure
    # twice as deep doubles the number of -0.84-decade blocks: a gap at least 1.5 decades larger
    assert row["deeper"]["init_gap_decades"] > row["baseline"]["init_gap_decades"] + 1.5
    # width leaves the per-block rate alone (mean-field: chi_1 does not depend on width)
    for cure in ("wider_4x", "wider_16x"):
        assert row[cure]["init_gain_per_block"] == pytest.approx(
            row["baseline"]["init_gain_per_block"], abs=0.1
        )
    # the same graph and init as the baseline: identical gradient flow at init
    for cure in ("lr_10x", "adam", "clipping"):
        assert row[cure]["init_gap_decades"] == row["baseline"]["init_gap_decades"]


@pytest.mark.slow
def test_rerun_with_all_cells_done_recomputes_nothing(quick, counted):
    config, res, stored = quick
    again = remedies.run(config, done=stored)
    assert counted == {"fit": 0, "gradient_flow": 0}
    assert again["computed"] == []
    # NaN-aware: a NaN unpickled from another worker is another object, and == on the rows needs the same
    np.testing.assert_equal(again["rows"], res["rows"])


@pytest.mark.slow
def test_rerun_computes_only_missing_or_stale_cells(quick, counted, tmp_path):
    config, res, stored = quick
    # through the files main() uses: cell_writer / finished_cells
    write = report.cell_writer(tmp_path)
    for key, cell in stored.items():
        if key != "reinit":
            write(key, cell)
    done = report.finished_cells(tmp_path)
    done["clipping"]["setup"]["steps"] += 1  # a cell stored by another config is stale
    again = remedies.run(config, done=done, on_cell=write)
    assert again["computed"] == ["reinit", "clipping"]
    assert counted["fit"] == 2 and counted["gradient_flow"] == 2 * config.seeds
    for key in ("reinit", "clipping"):
        np.testing.assert_allclose(
            np.asarray(again["cells"][key]["train/loss"], float),
            np.asarray(res["cells"][key]["train/loss"], float),
            rtol=1e-5,
        )
    assert sorted(report.finished_cells(tmp_path)) == sorted(CURES)


def _cell(steps_to_target, test_acc, diverged=None):
    n = len(test_acc)
    return {
        "steps_to_target": steps_to_target,
        "final_test_accuracy": test_acc,
        "diverged": diverged or [False] * n,
    }


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        (_cell([None] * 4, [0.10, 0.10, 0.11, 0.10]), "no effect"),
        (_cell([500, 600, 500, 700], [0.10, 0.10, 0.11, 0.10]), "helps"),  # reaches 90%, baseline never
        (_cell([None] * 4, [0.50, 0.60, 0.55, 0.52]), "helps"),  # accuracy up by far more than 2 std
        (_cell([None] * 4, [0.05, 0.06, 0.05, 0.05]), "hurts"),  # accuracy down
        (_cell([None] * 4, [0.10, 0.10, None, 0.10], [False, False, True, False]), "hurts"),  # diverged
        (_cell([None] * 4, [0.10, 0.40, 0.10, 0.10]), "no effect"),  # within 2 std of the cure's spread
    ],
)
def test_verdict_rule_against_a_never_training_baseline(cell, expected):
    config = remedies.Config(steps=1000, log_every=100)
    baseline = _cell([None] * 4, [0.10, 0.11, 0.10, 0.10])
    assert remedies.verdict(cell, baseline, config) == expected


def test_verdict_rule_faster_but_worse_is_mixed():
    config = remedies.Config(steps=1000, log_every=100)
    baseline = _cell([800, 800, 900, 800], [0.95, 0.95, 0.96, 0.95])
    assert (
        remedies.verdict(_cell([200, 200, 300, 200], [0.80, 0.80, 0.81, 0.80]), baseline, config) == "mixed"
    )
    assert (
        remedies.verdict(_cell([700, 900, 800, 800], [0.95, 0.96, 0.95, 0.95]), baseline, config)
        == "no effect"
    )
    assert (
        remedies.verdict(_cell([None, 900, None, None], [0.95, 0.96, 0.95, 0.95]), baseline, config)
        == "hurts"
    )


def test_steps_to_target():
    step = np.array([0, 50, 100, 150])
    acc = np.array([[0.1, 0.5, 0.91, 0.95], [0.1, 0.2, 0.3, 0.4], [0.1, 0.95, np.nan, np.nan]])
    assert remedies.steps_to_target(step, acc) == [100, None, 50]


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="`depth`"):
        remedies.Config(depth=0)
    with pytest.raises(ValueError, match="`reinit_seed`"):
        remedies.Config(seeds=4, reinit_seed=2)
    with pytest.raises(ValueError, match="`dropout`"):
        remedies.Config(dropout=1.0)
    quick = remedies.Config(quick=True, depth=5)
    assert quick.depth == 5 and quick.width == 8  # explicit fields win over the quick sizes


@pytest.mark.slow
def test_main_writes_every_output_from_stored_cells(quick, counted, tmp_path, capsys):
    _, res, stored = quick
    write = report.cell_writer(tmp_path)
    for key, cell in stored.items():
        write(key, cell)
    remedies.main(["--quick", "--out-dir", str(tmp_path)])
    assert counted == {"fit": 0, "gradient_flow": 0}
    for name in ("metrics.json", "results.csv", "remedies.png", "summary.md"):
        assert (tmp_path / name).stat().st_size > 0, name
    summary = (tmp_path / "summary.md").read_text()
    for row in res["rows"]:
        assert row["cure"] in summary
    assert "| cure " in capsys.readouterr().out  # the terminal table
    metrics = report.read_json(tmp_path / "metrics.json")
    assert [r["key"] for r in metrics["results"]["rows"]] == CURES


def test_a_diverging_cure_is_recorded_not_fatal():
    config = remedies.Config(quick=True)  # the quick run's sizes: its compiled programs are reused
    # A learning rate near float32's largest value: the first update takes the weights to ~1e38,
    # the next forward pass overflows, and fit (on_nonfinite="record") freezes those seeds.
    lr_10x = remedies.variants(config)[2]
    blowup = dataclasses.replace(lr_10x, key="blowup", learning_rate=3e38)
    cell = remedies._run_variant(config, blowup, data.load("digits", seed=config.data_seed))
    assert all(cell["diverged"]) and all(s >= 0 for s in cell["diverged_step"])
    assert cell["final_test_accuracy"] == [None] * config.seeds  # NaN after divergence, JSON null
    assert np.isfinite(np.asarray(cell["init/gap_decades"], float)).all()  # init is unaffected
    baseline = _cell([None] * config.seeds, [0.1] * config.seeds)
    assert remedies.verdict(cell, baseline, config) == "hurts"
