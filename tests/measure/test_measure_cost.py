"""`benchmarks/measure_cost.py`: the config (presets and --quick through the shared command line;
every preset is dry-run in tests/experiments/test_every_cli.py), and the quick preset's flow row
runs end to end."""

import pytest

from benchmarks import measure_cost
from jaxvg.report import cli


def test_presets_and_quick_sizes():
    accel = cli.parse(measure_cost.Config, ["--preset", "accelerator"])
    assert accel.flow_shapes == ("50x1024x1024", "200x512x512", "1000x256x256", "50x4096x4096")
    assert accel.shape("jacobian_shape") == (20, 512, 64) and accel.shape("spectrum_shape") == (50, 512)
    quick = cli.parse(measure_cost.Config, ["--quick", "--only", "flow"])
    assert quick.flow_shapes == ("8x32x16", "200x16x16") and quick.only == ("flow",)
    assert measure_cost.Config().shape("compile_deep") == (1000, 64, 32)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"flow_shapes": ("50x256",)},
            r"`flow_shapes` must be 3 positive integers joined by 'x' .*got '50x256'",
        ),
        ({"jacobian_shape": "20x0x3"}, r"`jacobian_shape` must be 3 positive integers .*got '20x0x3'"),
        ({"spectrum_shape": 20}, r"`spectrum_shape` must be 2 positive integers .*got 20"),
        ({"only": ("speed",)}, r"`only` must be one of .*got 'speed'"),
        ({"precision": "tf32"}, r"`precision` must be one of .*got 'tf32'"),
        ({"repeat": 1}, r"`repeat` must be >= `blocks` = 3, got 1"),
    ],
)
def test_bad_config_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        measure_cost.Config(**kwargs)


def test_quick_flow_row_and_table():
    config = measure_cost.Config(quick=True)
    row = measure_cost.bench_flow(4, 8, 4, config)
    assert row["ratio_gradient_flow"] > 0 and row["ratio_probe"] > 0
    assert len(row["ratio_gradient_flow_spread"]) == 2
    text = measure_cost.table({"environment": measure_cost.environment(), "flow": [row]})
    assert "gradient_flow 4x8x4" in text
