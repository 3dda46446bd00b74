"""`jaxvg.measure.flow_table` on hand-made `GradientFlow`s (no model, nothing compiled)."""

import jax
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
    assert lines[3].split() == ["2", "-1.000", "-1.000", "-1.500", "—", "-inf", "1.000"]  # no kernel: "—"
    assert lines[4].split() == ["loss", "0.500", "vanishing_decades", "2.000"]
    assert lines[5].startswith("— in log10|dL/dK|: the block names no kernel") and "kernel_path" in lines[5]
    assert len(lines) == 6


def test_flow_table_mean_and_std_over_leading_axes():
    flow = _flow((2, 3))
    flow = flow.replace(log10_act_grad=flow.log10_act_grad + np.array([0.0, 1.0])[:, None, None])
    # two leading axes (e.g. seeds and monitor times) are not averaged together silently
    with pytest.raises(ValueError, match=r"`flow` has 2 leading axes \(shape \(2, 3\).*index=\(s, t\).*"
                                         r"jax.tree.map\(lambda a: a\[s, t\], flow\)"):  # fmt: skip
        measure.flow_table(flow)
    flat = jax.tree.map(lambda a: a.reshape((6,) + a.shape[2:]), flow)  # an explicit choice: all six
    lines = measure.flow_table(flat).splitlines()
    assert len(lines) == 1 + 3 + 1 + 1  # header, layers, summary, one footnote
    assert lines[1].split() == ["0", "-2.500±0.500"]
    assert "—" in lines[3].split() and lines[4].endswith("vanishing_decades 2.000±0.000")
    assert lines[4].startswith("mean ± std over the 6 entries of the leading axis")


def test_flow_table_needs_a_gradient_flow():
    with pytest.raises(TypeError, match=r"`flow` must be a GradientFlow, got dict"):
        measure.flow_table({"log10_act_grad": np.zeros(3)})


def test_flow_table_index_picks_leading_entries():
    flow = _flow((2, 3))
    flow = flow.replace(log10_act_grad=flow.log10_act_grad + np.arange(6.0).reshape(2, 3, 1))
    one = measure.flow_table(flow, index=(1, 2)).splitlines()
    assert one[1].split() == ["0", "2.000"]  # -3 + 5: seed 1, time 2
    assert one == measure.flow_table(jax.tree.map(lambda a: a[1, 2], flow)).splitlines()
    at_t = measure.flow_table(flow, index=(slice(None), 0)).splitlines()  # all seeds at time 0
    assert at_t[1].split() == ["0", "-1.500±1.500"] and at_t[4].startswith("mean ± std over the 2 entries")
    assert measure.flow_table(flow, index=1).splitlines()[1].split() == ["0", "1.000±0.816"]
    for bad in ((0, 0, 0), 2.0, (5, 0)):
        with pytest.raises(ValueError, match=r"`index`"):
            measure.flow_table(flow, index=bad)


def test_flow_table_dashes_for_missing_hooks_with_footnotes():
    flow = _flow().replace(
        log10_param_grad=np.array([np.nan, -1.5]),  # block 1: no parameters
        log10_kernel_grad=np.array([np.nan, np.nan]),
        log10_dphi=np.array([np.nan, -0.3]),  # block 1: no activation hook
        dead_fraction=np.array([np.nan, 0.0]),
    )
    lines = measure.flow_table(flow).splitlines()
    assert lines[2].split() == ["1", "-2.000", "-1.000", "—", "—", "—", "—"]
    assert lines[3].split() == ["2", "-1.000", "-1.000", "-1.500", "—", "-0.300", "0.000"]
    notes = lines[5:]
    assert [n.split(":")[0] for n in notes] == [
        "— in log10|dL/dW|",
        "— in log10|dL/dK|",
        "— in log10 rms phi' and dead frac",
    ]
    assert "`activation`" in notes[2] and "`preactivation(h)`" in notes[2] and "contracts" in notes[2]
    assert "nan" not in " ".join(lines[:5]).split()


def test_flow_table_of_an_overflowed_forward_pass_says_nan_and_where():
    flow = _flow().replace(
        log10_act_grad=np.full(3, np.nan),
        log10_param_grad=np.full(2, np.nan),
        log10_kernel_grad=np.full(2, np.nan),
        log10_gain=np.full(2, np.nan),
        log10_dphi=np.array([-0.2, np.nan]),
        dead_fraction=np.array([0.0, np.nan]),
        forward_nonfinite_block=np.asarray(1),
    )
    lines = measure.flow_table(flow).splitlines()
    assert lines[3].split() == ["2", "nan", "nan", "nan", "nan", "nan", "nan"]  # undefined, not "no hook"
    assert lines[-1].startswith(
        "nan: the forward pass went non-finite (overflow): forward_nonfinite_block = 1"
    )


def test_flow_table_of_a_real_model_without_hooks():
    from flax import nnx

    import jaxvg.measure

    class Seq(nnx.Module):
        def __init__(self, rngs):
            self.blocks = nnx.List([nnx.Sequential(nnx.Linear(2, 3, rngs=rngs), jax.nn.tanh)])
            self.head = nnx.Linear(3, 1, rngs=rngs)

        def __call__(self, x):
            return self.head(self.blocks[0](x))

    x = np.ones((4, 2), np.float32)
    flow = jaxvg.measure.gradient_flow(Seq(nnx.Rngs(0)), x, np.zeros((4, 1), np.float32))
    lines = measure.flow_table(flow).splitlines()
    assert lines[2].split()[-3:] == ["—", "—", "—"] and len(lines) == 1 + 2 + 1 + 2
