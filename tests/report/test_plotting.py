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


# --------------------------------------------------------------------------- the experiments' figures
# (jaxvg.report.figures), on small made-up results: what issue-level problems must not come back


def _drawn(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    return fig


def test_remedies_legends_sit_below_the_accuracy_panels_and_name_every_cure():
    from jaxvg.report import figures

    steps = list(range(0, 1001, 100))
    cells = {
        key: {"label": key, "group": group, "init/log10_gain": [[-0.8, -0.8, -0.8]], "step": steps,
              "train/accuracy": [[0.1] * len(steps)]}
        for key, group in (("baseline", "article"), ("deeper", "article"), ("deeper_wider", "article"),
                           ("relu_he", "literature"))
    }  # fmt: skip
    fig = _drawn(figures.remedies({"cells": cells, "rows": [{"key": "deeper", "verdict": "hurts"}]}))
    gain_axes, acc_axes = fig.axes[:2], fig.axes[2:]
    for ax in acc_axes:
        legend = ax.get_legend()
        assert legend.get_window_extent().y1 <= ax.get_window_extent().y0  # below, hiding no curve
    labels = [t.get_text() for t in acc_axes[0].get_legend().get_texts()]
    assert labels[:3] == ["baseline", "deeper: hurts", "deeper_wider"] and "90% target" in labels
    # the two cures that coincide at chance are drawn in different line styles
    styles = [line.get_linestyle() for line in acc_axes[0].get_lines()[1:3]]
    assert styles[0] != styles[1]
    assert all("legend below" in ax.get_title() for ax in gain_axes)


def test_phase_diagram_depth_axis_starts_at_zero_and_the_legend_is_outside():
    from jaxvg.report import figures

    res = {"sigma_w2": [1.0, 1.75, 4.0], "depths": [3, 12, 36], "chance": 0.1,
           "train_accuracy": np.full((3, 3), 0.5), "test_accuracy": np.full((3, 3), 0.5),
           "theory": {"critical_sigma_w2": 1.76, "six_xi_c": [21.8, 2557.0, 41.9]}}  # fmt: skip
    fig = _drawn(figures.phase_diagram(res))
    ax = fig.axes[0]
    assert ax.get_ylim()[0] >= 0 and list(ax.get_yticks()) == [3, 12, 36]
    assert ax.get_legend() is None and len(fig.legends) == 1  # one legend, below the maps
    assert fig.legends[0].get_window_extent().y1 <= ax.get_window_extent().y0


def test_xor_block_axis_has_integer_ticks():
    from jaxvg.report import figures

    cell = {"step": [0, 10], "loss_curves": [[0.3, 0.2]], "depth": 20, "solved": 0,
            "log10_kernel_grad_init": [list(np.linspace(-13, 0, 20))],
            "log10_kernel_grad_end": [list(np.linspace(-14, -8, 20))]}  # fmt: skip
    fig = _drawn(figures.xor_curves({"shallow": {**cell, "depth": 1, "solved": 1}, "deep": cell}))
    ticks = [t for t in fig.axes[1].get_xticks() if 1 <= t <= 20]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_isometry_floor_is_labelled_and_the_lyapunov_axis_fits_the_data():
    from jaxvg.report import figures

    rows = [
        {"activation": a, "weights": w, "depth": d, "var_sq_sv": v, "var_sq_sv_theory": t}
        for a in ("linear", "relu")
        for w, v, t in (("gaussian", 1.9, 2.0), ("orthogonal", 1e-30, 0.0))
        for d in (2, 4)
    ]
    lyap = np.concatenate([np.linspace(0.0, -1.0, 4), np.full(4, -160.0)])  # relu: zero directions
    spectra = {f"{a}/{w}": {"log10_sv": np.zeros((2, 8)), "lyapunov": np.tile(lyap, (2, 1, 1))}
               for a in ("linear", "relu") for w in ("gaussian", "orthogonal")}  # fmt: skip
    fig = _drawn(figures.isometry({"rows": rows, "spectra": spectra, "depths": [2, 4], "width": 8}))
    moments, lyapunov = fig.axes[2], fig.axes[7]
    notes = " ".join(t.get_text() for t in moments.texts)
    assert "theory 0" in notes and "1e-30" in notes  # the true values of what sits on the floor
    bottom, top = lyapunov.get_ylim()
    assert -4.5 < bottom < -3.9 and 0.0 < top < 0.5  # no empty range up to +8
    assert "4 of 8 (down to -160)" in " ".join(t.get_text() for t in lyapunov.texts)
