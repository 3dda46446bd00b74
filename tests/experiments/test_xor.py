"""experiments.xor: a one-hidden-layer sigmoid net solves XOR by full-batch GD; a 20-layer one stalls.

`quick` is the session's quick run (tests/conftest.py).
"""

import numpy as np
import pytest

from experiments import xor


@pytest.fixture
def quick(xor_quick):
    return xor_quick


def test_shallow_net_solves_xor(quick):
    shallow = quick["shallow"]
    assert shallow["depth"] == 1 and len(shallow["seeds"]) == 8
    assert shallow["solved"] >= 7  # measured: 8 of 8 (64 of 64 in a 64-seed run)
    assert np.median(shallow["final_loss"]) < 1e-2  # measured: about 1e-9
    assert not any(shallow["diverged"])


def test_deep_net_stalls_with_a_huge_layer_gap(quick):
    deep = quick["deep"]
    assert deep["depth"] == 20
    assert deep["solved"] <= 1  # measured: 0 of 8
    np.testing.assert_allclose(deep["final_loss"], 0.25, atol=0.02)  # the MSE of predicting 0.5
    gap = np.asarray(deep["gap_decades_init"])
    assert gap.shape == (8,)
    assert gap.min() >= 5.0  # measured: 12.2 to 13.7 decades
    init = np.asarray(deep["log10_kernel_grad_init"])
    assert init.shape == (8, 20) and np.isfinite(init).all()
    # the gradient norm grows towards the output at every block, on average over seeds
    assert (np.diff(init.mean(axis=0)) > 0).all()


def test_rows_and_reuse_of_finished_cells(quick):
    assert [r["net"] for r in quick["rows"]] == ["shallow", "deep"]
    assert len(quick["layer_rows"]) == 1 + 20
    seen = []
    again = xor.run(xor.Config(quick=True), on_cell=lambda k, c: seen.append(k), done=quick)
    assert seen == []  # both cells reused, nothing retrained
    assert again["shallow"]["final_loss"] == quick["shallow"]["final_loss"]


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("depth", 0, "`depth`"),
        ("optimizer", "sdg", "`optimizer`"),
        ("learning_rate", -1.0, "`learning_rate`"),
        ("loss", "cross_entropy", "`loss`"),
        ("activation", "sigmod", "`activation`"),
    ],
)
def test_config_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        xor.Config(**{field: value})


def test_main_writes_results(quick, tmp_path, capsys):
    """main() writes metrics.json, the CSVs, the PNG and summary.md; the cells stored beforehand
    (as an interrupted run would have left them) are reused, so nothing is retrained here."""
    from jaxvg import report

    write = report.cell_writer(tmp_path)
    for key in ("shallow", "deep"):
        write(key, quick[key])
    xor.main(["--quick", "--out-dir", str(tmp_path)])
    for name in ("metrics.json", "curves.csv", "layers.csv", "summary.md", "xor.png"):
        assert (tmp_path / name).is_file(), name
    metrics = report.read_json(tmp_path / "metrics.json")
    assert metrics["seeds"] == list(range(8)) and metrics["results"]["shallow"]["solved"] >= 7
    assert "8/8" in capsys.readouterr().out or quick["shallow"]["solved"] == 7
