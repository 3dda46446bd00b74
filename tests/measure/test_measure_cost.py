"""`benchmarks/measure_cost.py`: every preset's config is constructed (dry runs; the accelerator
sizes are not run on CPU), and the quick preset's flow row runs end to end."""

import json

import pytest

from benchmarks import measure_cost


@pytest.mark.parametrize("preset", sorted(measure_cost.PRESETS))
def test_every_preset_builds_its_config(preset, capsys):
    out = measure_cost.main(["--preset", preset, "--dry-run"])
    config = measure_cost.config_for(preset)
    assert out["config"]["name"] == config.name == preset
    printed = json.loads(capsys.readouterr().out)
    assert [tuple(s) for s in printed["flow_shapes"]] == list(config.flow_shapes)
    if preset == "accelerator":
        assert config.flow_shapes == ((50, 1024, 1024), (200, 512, 512), (1000, 256, 256), (50, 4096, 4096))


def test_unknown_preset():
    with pytest.raises(
        ValueError, match=r"`preset` must be one of \['accelerator', 'cpu', 'quick'\], got 'gpu'"
    ):
        measure_cost.config_for("gpu")


def test_quick_flow_row_and_table():
    config = measure_cost.config_for("quick")
    row = measure_cost.bench_flow(4, 8, 4, config)
    assert row["ratio_gradient_flow"] > 0 and row["ratio_probe"] > 0
    assert len(row["ratio_gradient_flow_spread"]) == 2
    text = measure_cost.table({"environment": measure_cost.environment(), "flow": [row]})
    assert "gradient_flow 4x8x4" in text
