"""jaxvg.report.plotting: figures are returned (not shown), log-scale, one line per flow, no pyplot
state; `save` writes atomically."""

import os

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from flax import nnx
from matplotlib.figure import Figure

import jaxvg
from jaxvg.report import plotting

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def flows():
    x, y = jnp.ones((4, 3)), jnp.zeros((4, 1))
    sig = jaxvg.gradient_flow(jaxvg.MLP(3, 8, 5, 1, activation="sigmoid", rngs=nnx.Rngs(0)), x, y)
    tanh = jaxvg.gradient_flow(jaxvg.MLP(3, 8, 5, 1, activation="tanh", rngs=nnx.Rngs(0)), x, y)
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


def test_save_is_atomic_follows_the_suffix_and_refuses_an_empty_path(flows, tmp_path, monkeypatch):
    fig = plotting.gradient_flow(flows[0])
    png = plotting.save(fig, tmp_path / "deep" / "flow.png")
    assert png == tmp_path / "deep" / "flow.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plotting.save(fig, str(tmp_path / "flow.svg")).read_text().lstrip().startswith("<?xml")
    before = png.read_bytes()

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        plotting.save(plotting.gradient_flow(flows[1]), png)
    monkeypatch.undo()
    assert png.read_bytes() == before and os.listdir(png.parent) == ["flow.png"]  # old file, no debris
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="`path` must be a non-empty path"):
        plotting.save(fig, "")
