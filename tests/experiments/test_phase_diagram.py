"""experiments/phase_diagram.py: trainability over sigma_w2 x depth (Schoenholz et al. 2017).

Every test runs the --quick grid (tanh on digits, width 32, 150 SGD steps, one seed, sigma_w2 in
{1, 1.75, 2.5, 4}, depths {3, 12, 36}); one compiled program serves them all (the learning rate is
a traced argument), so only the first run compiles.
"""

import math

import numpy as np
import pytest

from experiments import phase_diagram
from jaxvg import report

QUICK = phase_diagram.Config(quick=True)


@pytest.fixture
def quick(phase_diagram_quick):
    return phase_diagram_quick  # the session's quick run (tests/conftest.py)


@pytest.mark.slow  # shares one compile (~15 s of CPU) with the other quick runs
def test_quick_grid_shapes_and_theory(quick):
    n_d, n_s = len(QUICK.depths), len(QUICK.sigma_w2)
    assert quick["train_accuracy"].shape == (n_d, n_s)
    assert len(quick["cells"]) == n_d * n_s == len(quick["computed"])
    # sigma_b2 = 0.05: chi_1 = 1 at sigma_w2 = 1.7609 (Schoenholz et al. Fig. 1 reads ~1.76)
    assert quick["theory"]["critical_sigma_w2"] == pytest.approx(1.761, abs=2e-3)
    # xi_c peaks at the grid point nearest criticality (it diverges there)
    assert int(np.argmax(quick["theory"]["xi_c"])) == QUICK.sigma_w2.index(1.75)
    assert np.all(np.isfinite(quick["train_accuracy"]))
    assert quick["diverged_fraction"].max() == 0.0


@pytest.mark.slow  # shares one compile (~15 s of CPU) with the other quick runs
def test_near_critical_shallow_trains_deep_ordered_does_not(quick):
    acc = quick["train_accuracy"]
    i_shallow, i_deep = 0, len(QUICK.depths) - 1  # depths 3 and 36
    j_crit, j_ordered = QUICK.sigma_w2.index(1.75), QUICK.sigma_w2.index(1.0)
    # measured 0.94 vs 0.21 (chance 0.10); 6 xi_c = 22 layers at sigma_w2 = 1 < 36
    assert acc[i_shallow, j_crit] > 0.8
    assert acc[i_deep, j_ordered] < 0.4
    assert acc[i_shallow, j_crit] - acc[i_deep, j_ordered] > 0.5
    # at depth 36 the near-critical net is the best of the row (measured 0.56 vs <= 0.30)
    assert int(np.argmax(acc[i_deep])) == j_crit


@pytest.mark.slow  # shares one compile (~15 s of CPU) with the other quick runs
def test_accuracy_inside_6xi_c_exceeds_outside(quick):
    s = quick["summary"]
    # measured: 0.76 inside depth < 6 xi_c vs 0.21 outside
    assert s["mean_accuracy_inside_6xi_c"] - s["mean_accuracy_outside_6xi_c"] > 0.3
    assert s["agreement_with_6xi_c"] >= 0.66


@pytest.mark.slow  # shares one compile (~15 s of CPU) with the other quick runs
def test_rerun_with_done_recomputes_nothing(quick):
    calls = []
    again = phase_diagram.run(QUICK, on_cell=lambda k, c: calls.append(k), done=quick["cells"])
    assert calls == [] and again["computed"] == []
    np.testing.assert_array_equal(again["train_accuracy"], quick["train_accuracy"])


@pytest.mark.slow  # shares one compile (~15 s of CPU) with the other quick runs
def test_interrupted_run_resumes_from_disk(quick, tmp_path):
    """Interrupt after the first depth row is written, then resume from the files on disk."""
    write = report.cell_writer(tmp_path)
    n_s = len(QUICK.sigma_w2)

    class Interrupt(Exception):
        pass

    def on_cell(key, cell):
        write(key, cell)
        if len(report.finished_cells(tmp_path)) == n_s:
            raise Interrupt

    with pytest.raises(Interrupt):
        phase_diagram.run(QUICK, on_cell=on_cell)
    done = report.finished_cells(tmp_path)
    assert len(done) == n_s
    resumed = phase_diagram.run(QUICK, on_cell=write, done=done)
    assert set(resumed["computed"]) == set(quick["cells"]) - set(done)
    # the same nets (seeds derive from the cell, not from the run): equal to float32 rounding
    np.testing.assert_allclose(resumed["train_accuracy"], quick["train_accuracy"], atol=1e-6)


@pytest.mark.slow  # shares one compile (~15 s of CPU) with the other quick runs
def test_stale_cells_from_another_setup_are_recomputed(quick):
    other = phase_diagram.Config(quick=True, learning_rate=0.01)
    res = phase_diagram.run(other, done=quick["cells"])
    assert len(res["computed"]) == len(quick["cells"])


@pytest.mark.slow  # shares one compile (~15 s of CPU) with the other quick runs
def test_overflowing_nets_are_recorded_as_diverged():
    # lr 1e37: the first update pushes weights to ~1e37, the next logits overflow to inf
    res = phase_diagram.run(phase_diagram.Config(quick=True, learning_rate=1e37))
    assert res["diverged_fraction"].min() == 1.0
    cell = next(iter(res["cells"].values()))
    assert cell["diverged"] == [True] and cell["diverged_step"][0] >= 1
    assert all(math.isnan(r["final_batch_loss"]) for r in res["rows"])


def test_config_validation():
    with pytest.raises(ValueError, match=r"`sigma_w2` must be a finite number > 0, got -1.0"):
        phase_diagram.Config(sigma_w2=(1.0, -1.0))
    with pytest.raises(ValueError, match=r"`dataset` must be one of"):
        phase_diagram.Config(dataset="cifar")
    with pytest.raises(ValueError, match=r"`depths` must be an integer >= 1, got 0"):
        phase_diagram.Config(depths=(0, 4))
    assert phase_diagram.Config(quick=True, steps=7).steps == 7  # explicit fields win over quick


@pytest.mark.slow
def test_main_writes_results_and_resumes(quick, tmp_path, capsys):
    out = str(tmp_path / "pd")
    res = phase_diagram.main(["--quick", "--out-dir", out])
    for name in ("metrics.json", "phase_diagram.csv", "phase_diagram.png", "summary.md"):
        assert (tmp_path / "pd" / name).is_file(), name
    metrics = report.read_json(tmp_path / "pd" / "metrics.json")
    assert metrics["config"]["quick"] is True and metrics["seeds"] == [0]
    assert np.asarray(metrics["results"]["train_accuracy"], float).shape == res["train_accuracy"].shape
    assert len(report.finished_cells(out)) == len(QUICK.depths) * len(QUICK.sigma_w2)
    assert "6 xi_c" in capsys.readouterr().out
    again = phase_diagram.main(["--quick", "--out-dir", out])  # everything on disk: nothing trained
    assert again["computed"] == []
