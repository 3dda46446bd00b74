"""jaxvg.plotting: figures are returned (not shown), log-scale, one line per flow, no pyplot state."""

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from flax import nnx
from matplotlib.figure import Figure

import jaxvg
from jaxvg.measure import analysis
from jaxvg.report import plotting

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def flows():
    x, y = jnp.ones((4, 3)), jnp.zeros((4, 1))
    sig = analysis.gradient_flow(jaxvg.MLP(3, 8, 5, 1, activation="sigmoid", rngs=nnx.Rngs(0)), x, y)
    tanh = analysis.gradient_flow(jaxvg.MLP(3, 8, 5, 1, activation="tanh", rngs=nnx.Rngs(0)), x, y)
    return sig, tanh


def test_gradient_flow_figure_has_one_log_axes_and_a_line_per_flow(flows, tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    fig = plotting.gradient_flow(*flows, labels=["sigmoid", "tanh"])
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["sigmoid", "tanh"]
    lines = ax.get_lines()
    assert len(lines) == 2
    np.testing.assert_allclose(np.log10(lines[0].get_ydata()), flows[0].log10_act_grad, rtol=1e-6)
    fig.savefig(tmp_path / "flow.png")
    assert (tmp_path / "flow.png").stat().st_size > 1000
    assert plt.get_fignums() == before  # nothing registered with pyplot


def test_seeds_axis_gives_a_band_and_extreme_depth_falls_back_to_decades(flows):
    stacked = jax.tree.map(lambda *a: jnp.stack(a), flows[0], flows[1])
    fig = plotting.gradient_flow(stacked)
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 1 and len(ax.collections) == 1  # mean line + min-max band
    deep = flows[0].replace(log10_act_grad=flows[0].log10_act_grad - 400.0)
    ax = plotting.gradient_flow(deep).axes[0]
    assert ax.get_yscale() == "linear" and "decades" in ax.get_ylabel()


def test_bad_arguments(flows):
    with pytest.raises(ValueError, match="`labels` must have one entry per flow"):
        plotting.gradient_flow(*flows, labels=["only one"])
    with pytest.raises(ValueError, match="at least one"):
        plotting.gradient_flow()
    with pytest.raises(TypeError, match=r"`flows\[0\]` must be a GradientFlow"):
        plotting.gradient_flow(np.zeros(3))
