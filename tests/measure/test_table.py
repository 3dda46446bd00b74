"""`jaxvg.measure.flow_table` on hand-made `GradientFlow`s (no model, nothing compiled)."""

import numpy as np
import pytest

from jaxvg import measure


def _flow(lead=()):
    ones = np.ones(lead)
    return measure.GradientFlow(
        log10_act_grad=np.array([-3.0, -2.0, -1.0]) * ones[..., None],
        log10_param_grad=np.array([-2.5, -1.5]) * ones[..., None],
        log10_kernel_grad=np.array([-2.6, np.nan]) * ones[..., None],
        log10_gain=np.array([-1.0, -1.0]) * ones[..., None],
        log10_dphi=np.array([-0.25, -np.inf]) * ones[..., None],
        dead_fraction=np.array([0.0, 1.0]) * ones[..., None],
        loss=np.asarray(0.5) * ones,
    )


def test_flow_table_one_line_per_layer_in_decades():
    lines = measure.flow_table(_flow()).splitlines()
    assert lines[0].split() == ["l", "log10|dL/dh_l|", "log10", "gain", "log10|dL/dW|", "log10|dL/dK|"] + [
        "log10", "rms", "phi'", "dead", "frac"
    ]  # fmt: skip
    assert lines[1].split() == ["0", "-3.000"]  # h_0: no block
    assert lines[2].split() == ["1", "-2.000", "-1.000", "-2.500", "-2.600", "-0.250", "0.000"]
    assert lines[3].split() == ["2", "-1.000", "-1.000", "-1.500", "nan", "-inf", "1.000"]
    assert lines[4].split() == ["loss", "0.500", "vanishing_decades", "2.000"]


def test_flow_table_mean_and_std_over_leading_axes():
    flow = _flow((2, 3))
    flow = flow.replace(log10_act_grad=flow.log10_act_grad + np.array([0.0, 1.0])[:, None, None])
    lines = measure.flow_table(flow).splitlines()
    assert len(lines) == 1 + 3 + 1
    assert lines[1].split() == ["0", "-2.500±0.500"]
    assert "nan" in lines[3].split() and lines[4].endswith("vanishing_decades 2.000±0.000")


def test_flow_table_needs_a_gradient_flow():
    with pytest.raises(TypeError, match=r"`flow` must be a GradientFlow, got dict"):
        measure.flow_table({"log10_act_grad": np.zeros(3)})
