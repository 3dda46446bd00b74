"""experiments.vanishing: measured per-layer decay against mean-field theory and the popular story.

Tolerances. At width N = 256 with a batch of B = 32 and depth 50, one block's log10 gain fluctuates
around its mean-field value by about (1/ln 10)·sqrt(1/(N·B))/2 ≈ 1e-3 decades in the batch
direction, plus O(1/N) ≈ 2e-3 decades/layer from the weights that every example shares (the seed
spread of the per-layer mean measured here: 0.0015 decades/layer for sigmoid and tanh, 0.0065 for
relu, whose half-dead layers halve the effective width). 0.01 decades/layer is 3-6 of those spreads
for sigmoid and tanh; relu is checked over the whole depth (< 1 decade, the issue's criterion).
"""

import dataclasses
import math

import numpy as np
import pytest
from flax import nnx

import jaxvg
from experiments import vanishing
from jaxvg import report, scale, theory
from jaxvg.measure import nets
from jaxvg.report import cli

TINY = dict(depth=3, width=8, batch=4, seeds=2)  # compiles in about a second


@pytest.fixture
def quick(vanishing_quick):
    return vanishing_quick  # the session's quick run (tests/conftest.py)


@pytest.mark.slow
def test_quick_sigmoid_and_tanh_follow_the_mean_field(quick):
    s = quick["summary"]
    assert set(s) == {"sigmoid", "tanh", "relu"}
    for act in ("sigmoid", "tanh"):
        assert s[act]["measured"] == pytest.approx(s[act]["mean_field"], abs=0.01), act
    # sigmoid with LeCun init: about 0.63 decades per layer, MORE than the 1/4-per-layer story.
    assert -0.65 < s["sigmoid"]["measured"] < -0.61
    assert s["sigmoid"]["story_max_dphi"] == pytest.approx(math.log10(0.25), abs=1e-6)
    assert s["sigmoid"]["measured"] < s["sigmoid"]["story_max_dphi"] - 0.01
    # with sigma_w2 = 1 the weights add nothing on average: the derivative product is the whole loss
    assert s["sigmoid"]["dphi_product"] == pytest.approx(s["sigmoid"]["measured"], abs=0.01)
    assert s["sigmoid"]["lost_decades"] > 30
    # tanh with sigma_w2 = 1, sigma_b2 = 0: small but nonzero loss, although max tanh' = 1
    assert -0.03 < s["tanh"]["measured"] < -0.01
    assert s["tanh"]["story_max_dphi"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
def test_quick_relu_he_keeps_its_gradient_but_not_the_derivative_story(quick):
    r = quick["summary"]["relu"]
    assert (r["init"], r["sigma_w2"]) == ("he_normal", 2.0)
    assert r["predicted_lost"] == pytest.approx(0.0, abs=1e-5)  # chi = sigma_w2 / 2 = 1 exactly
    assert abs(r["lost_decades"]) < 1.0  # the criterion: < 1 decade over 50 layers
    # RMS relu' = 1/sqrt(2): the derivative product predicts -0.15 decades/layer that never happen
    assert r["dphi_product"] == pytest.approx(0.5 * math.log10(0.5), abs=0.003)
    assert r["dphi_lost"] == pytest.approx(7.5, abs=0.2)


@pytest.mark.slow
def test_quick_profiles_and_rows(quick):
    rows = quick["layer_rows"]
    assert len(rows) == 3 * 51
    for act in ("sigmoid", "tanh", "relu"):
        mine = [r for r in rows if r["activation"] == act]
        assert [r["layer"] for r in mine] == list(range(51))
        assert mine[-1]["measured"] == 0.0 and mine[-1]["mean_field"] == 0.0
        cell = quick["cells"][act]
        assert np.asarray(cell["log10_act_grad"]).shape == (2, 51)  # quick: 2 seeds
        assert np.asarray(cell["log10_gain"]).shape == (2, 50)
        assert np.isfinite(np.asarray(cell["log10_act_grad"], dtype=float)).all()
    sigmoid = [r for r in rows if r["activation"] == "sigmoid"]
    assert sigmoid[0]["measured"] == pytest.approx(-quick["summary"]["sigmoid"]["lost_decades"])
    # the mean-field curve tracks the measured one at every layer, not just on average
    diff = [abs(r["measured"] - r["mean_field"]) for r in sigmoid]
    assert max(diff) < 0.25  # decades, after up to 31 decades of decay


@pytest.mark.slow
def test_tanh_at_its_fixed_point_matches_chi_1():
    """The issue's check: tanh, width 1024, sigma_w2 = 1.5, sigma_b2 = 0.05, input at q*: the mean
    per-layer log10 gain is within 0.01 decades of (1/2) log10 chi_1 (-0.0138 decades/layer; measured -0.0144)."""
    config = vanishing.Config(
        quick=True, activations=("tanh",), width=1024, init="gaussian", sigma_w2=1.5, sigma_b2=0.05, q0=None
    )
    s = vanishing.run(config)["summary"]["tanh"]
    half_log10_chi_1 = 0.5 * math.log10(float(theory.chi_1("tanh", 1.5, 0.05)))
    q_star = float(theory.q_star("tanh", 1.5, 0.05))
    assert s["q0"] == pytest.approx((q_star - 0.05) / 1.5)  # sigma_w2 q0 + sigma_b2 = q*
    assert s["mean_field"] == pytest.approx(half_log10_chi_1, abs=1e-6)  # q stays at q*
    assert s["measured"] == pytest.approx(half_log10_chi_1, abs=0.01)


@pytest.mark.slow  # over 20 s on 2 cores, cold cache
def test_resume_skips_finished_cells_and_redoes_changed_ones(tmp_path):
    config = vanishing.Config(activations=("tanh", "relu"), out_dir=str(tmp_path), **TINY)
    first = vanishing.run(config, on_cell=report.cell_writer(tmp_path), done=report.finished_cells(tmp_path))
    assert first["computed"] == ["tanh", "relu"]
    assert set(report.finished_cells(tmp_path)) == {"tanh", "relu"}

    again = vanishing.run(config, on_cell=report.cell_writer(tmp_path), done=report.finished_cells(tmp_path))
    assert again["computed"] == []
    assert again["summary"] == first["summary"]

    # a stored cell is reused only for the same setup: a different depth recomputes
    deeper = dataclasses.replace(config, depth=4, activations=("tanh",))
    third = vanishing.run(deeper, done=report.finished_cells(tmp_path))
    assert third["computed"] == ["tanh"]
    assert len(third["layer_rows"]) == 5


def test_tiny_run_numbers_are_consistent():
    res = vanishing.run(vanishing.Config(activations=("sigmoid",), **TINY))
    cell, s = res["cells"]["sigmoid"], res["summary"]["sigmoid"]
    act = np.asarray(cell["log10_act_grad"])
    gain = np.asarray(cell["log10_gain"])
    np.testing.assert_allclose(act[:, :-1] - act[:, 1:], gain, atol=1e-5)  # gains chain to the profile
    assert s["measured"] == pytest.approx(gain.mean(), abs=1e-5)
    profile = theory.gradient_profile("sigmoid", 1.0, 0.0, depth=3, q0=1.0)
    np.testing.assert_allclose(cell["predicted_profile"], profile, rtol=1e-6)
    curves = res["profiles"]["sigmoid"]
    assert curves["measured_seeds"].shape == (2, 4)
    np.testing.assert_allclose(curves["measured"], (act - act[:, -1:]).mean(axis=0), atol=1e-6)
    dphi = np.asarray(cell["log10_dphi"])
    assert curves["dphi_product"][0] == pytest.approx(dphi.sum(axis=1).mean(), abs=1e-6)
    assert curves["dphi_product"][0] == pytest.approx(-s["dphi_lost"], abs=1e-6)
    assert curves["dphi_product"][-1] == 0.0 and curves["dphi_product"][0] < curves["dphi_product"][2] < 0
    np.testing.assert_allclose(curves["story"], np.array([3, 2, 1, 0]) * np.log10(0.25), atol=1e-6)
    rows = res["layer_rows"]
    assert [r["layer"] for r in rows] == [0, 1, 2, 3] and math.isnan(rows[0]["log10_gain"])
    assert rows[1]["log10_dphi"] == pytest.approx(dphi[:, 0].mean(), abs=1e-6)


def test_vmapped_seeds_equal_separate_gradient_flow_calls():
    config = vanishing.Config(activations=("relu",), **TINY)
    cell = vanishing.run(config)["cells"]["relu"]
    for seed in range(config.seeds):
        model = jaxvg.MLP(
            8, 8, 3, vanishing.OUT_FEATURES, activation="relu", init="he_normal", rngs=nnx.Rngs(seed)
        )
        x, y = vanishing._batch(seed, config.batch, config.width, 1.0)
        np.testing.assert_allclose(np.sum(x**2, axis=1) / 8, 1.0, rtol=1e-5)  # q0 exactly, per example
        flow = jaxvg.gradient_flow(model, x, y, loss="mse")
        np.testing.assert_allclose(cell["log10_act_grad"][seed], flow.log10_act_grad, atol=1e-5)
        np.testing.assert_allclose(cell["log10_dphi"][seed], flow.log10_dphi, atol=1e-5)


def test_a_small_max_memory_measures_the_seeds_in_chunks_with_equal_results():
    """max_memory of 10 kB: one tiny net's measurement needs ~4 kB (XLA's analysis of the
    compiled one-net program: arguments, outputs, temporaries), so 5 seeds run in chunks of 2; the
    results equal the unchunked run's to float32 rounding (1e-5 decades)."""
    config = vanishing.Config(activations=("tanh",), **{**TINY, "seeds": 5})
    whole = vanishing.run(config)["cells"]["tanh"]
    assert nets.last_chunk() == 5
    chunked = vanishing.run(dataclasses.replace(config, max_memory=10_000))["cells"]["tanh"]
    assert 1 <= nets.last_chunk() < 5
    for field in ("log10_act_grad", "log10_gain", "log10_dphi", "dead_fraction", "loss"):
        np.testing.assert_allclose(chunked[field], whole[field], rtol=0, atol=1e-5, err_msg=field)


def test_seeds_that_cannot_fit_the_device_are_refused_before_stacking(monkeypatch):
    monkeypatch.setattr(scale.memory, "available_bytes", lambda device=None: (100, "test"))
    config = vanishing.Config(activations=("tanh",), **TINY)
    with pytest.raises(ValueError, match=r"sweep needs about .* GiB per device"):
        vanishing.run(config)


def test_init_auto_and_effective_sigma_w2():
    config = vanishing.Config()
    assert [vanishing.init_for(config, a) for a in ("sigmoid", "tanh", "relu")] == [
        "lecun_normal", "lecun_normal", "he_normal",
    ]  # fmt: skip
    assert vanishing.effective_sigma_w2(config, "relu") == 2.0
    small = vanishing.Config(init="small_uniform")
    assert vanishing.effective_sigma_w2(small, "sigmoid") == pytest.approx(1 / 3)
    gauss = vanishing.Config(init="gaussian", sigma_w2=1.7)
    assert vanishing.effective_sigma_w2(gauss, "relu") == 1.7
    assert vanishing.max_derivative("sigmoid") == pytest.approx(0.25, rel=1e-6)


def test_quick_replaces_only_defaults():
    assert (vanishing.Config(quick=True).seeds, vanishing.Config(quick=True).batch) == (2, 32)
    assert vanishing.Config(quick=True, seeds=5).seeds == 5
    assert vanishing.Config(quick=True).depth == 50 and vanishing.Config(quick=True).width == 256


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"activations": ("sigmod",)}, "`activations` must be one of .*got 'sigmod'"),
        ({"activations": ()}, "`activations` must be a non-empty tuple"),
        ({"activations": ("tanh", "tanh")}, "must not repeat"),
        ({"depth": 0}, "`depth` must be an integer >= 1"),
        ({"max_memory": 0}, "`max_memory` must be an integer >= 1, got 0"),
        ({"q0": -1.0}, "`q0` must be a finite number > 0"),
        ({"init": "xavier"}, "`init` must be one of"),
        ({"sigma_w2": 2.0}, "apply only to the schemes"),  # init auto fixes its own variance
    ],
)
def test_bad_config_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        vanishing.Config(**kwargs)


def test_q_star_zero_is_refused_before_computing():
    config = vanishing.Config(activations=("tanh",), q0=None, **TINY)  # tanh, sigma_b2 = 0: q* = 0
    with pytest.raises(ValueError, match="`q0`=None asks for inputs at the fixed point q"):
        vanishing.run(config)


def test_cli_flags(capsys):
    config = cli.parse(vanishing.Config, ["--activations", "tanh", "gelu", "--q0", "none", "--quick"])
    assert (config.activations, config.q0, config.seeds) == (("tanh", "gelu"), None, 2)
    full = cli.parse(vanishing.Config, ["--preset", "full", "--seeds", "4"])
    assert (full.depth, full.width, full.seeds) == (200, 1024, 4)
    with pytest.raises(SystemExit):
        cli.parse(vanishing.Config, ["--init", "he_normal", "--sigma-w2", "2"])
    assert "argument --sigma-w2:" in capsys.readouterr().err


def test_main_writes_every_output_and_resumes(tmp_path, capsys):
    argv = [
        "--activations",
        "sigmoid",
        "relu",
        "--depth",
        "3",
        "--width",
        "8",
        "--batch",
        "4",
        "--seeds",
        "2",
    ]
    argv += ["--out-dir", str(tmp_path)]
    res = vanishing.main(argv)
    out = capsys.readouterr().out
    assert "| activation |" in out and "sigmoid" in out and "relu" in out
    names = {p.name for p in tmp_path.iterdir()}
    assert {"metrics.json", "vanishing.csv", "vanishing.png", "summary.md", "cells"} <= names
    metrics = report.read_json(tmp_path / "metrics.json")
    assert metrics["config"]["activations"] == ["sigmoid", "relu"] and metrics["seeds"] == [0, 1]
    assert metrics["environment"]["jax"] and metrics["environment"]["device_count"] >= 1
    assert metrics["results"]["summary"]["sigmoid"]["measured"] == pytest.approx(
        res["summary"]["sigmoid"]["measured"]
    )
    with open(tmp_path / "vanishing.csv") as f:
        assert len(f.read().strip().split("\n")) == 1 + 2 * 4  # header + (L+1) rows per activation
    assert (tmp_path / "vanishing.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert vanishing.main(argv)["computed"] == []  # rerun: both cells come from disk


# ------------------------------------------------------------------------------------------------
# The forward panel: q_l and c_l measured (signal_propagation) against theory.signal_profile
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_forward_panel_follows_the_mean_field(quick):
    s, curves = quick["summary"], quick["profiles"]
    # sigmoid with LeCun init is ordered: every input looks the same after a few layers
    assert s["sigmoid"]["phase"] == "ordered"
    assert s["sigmoid"]["c_last"] > 0.99 and s["sigmoid"]["c_last_mean_field"] > 0.99
    assert s["sigmoid"]["c_max_error"] < 0.02 and s["sigmoid"]["log10_q_max_error"] < 0.05
    # relu with He init and tanh with LeCun init are critical (chi_1 = 1)
    assert s["relu"]["phase"] == s["tanh"]["phase"] == "critical"
    assert s["relu"]["c_max_error"] < 0.1  # c -> 1 slowly, as the relu c map says
    # tanh: q_l -> 0 like 1/l, followed to 0.1 decades; c has no restoring force at criticality
    # (the c map is neutral as q -> 0) and drifts below the mean field at width 256 (finite width)
    assert s["tanh"]["log10_q_max_error"] < 0.1
    for act in ("sigmoid", "tanh", "relu"):
        c = curves[act]
        assert c["c_seeds"].shape == (2, 51) and c["c"].shape == c["c_mean_field"].shape == (51,)
        assert c["c"][0] == pytest.approx(0.5, abs=0.1)  # the batch's input cosine, c0 = 0.5
        assert c["c_mean_field"][0] == pytest.approx(c["c"][0], abs=1e-6)  # theory starts there
        assert c["log10_q"][0] == pytest.approx(0.0, abs=1e-5)  # q0 = 1 exactly


def test_forward_panel_shows_the_chaotic_phase():
    # tanh, sigma_w2 = 4, sigma_b2 = 0.05: chaotic; the cosine falls to the fixed point c* < 1
    config = vanishing.Config(
        activations=("tanh",),
        init="gaussian",
        sigma_w2=4.0,
        sigma_b2=0.05,
        depth=12,
        width=256,
        batch=16,
        seeds=2,
    )
    res = vanishing.run(config)
    s, c = res["summary"]["tanh"], res["profiles"]["tanh"]
    assert s["phase"] == "chaotic"
    assert 0.15 < s["c_last_mean_field"] < 0.35  # 0.21 at depth 12, on its way to c* = 0.146
    assert s["c_last"] == pytest.approx(s["c_last_mean_field"], abs=0.05)
    # width 256, 2 seeds of 16 examples: the largest deviation over the layers measured 0.065
    assert s["c_max_error"] < 0.1 and s["log10_q_max_error"] < 0.05
    assert c["c"][0] > 0.4 and c["c"][-1] < 0.4
    rows = res["layer_rows"]
    assert rows[-1]["c"] == pytest.approx(s["c_last"]) and rows[0]["log10_q"] == pytest.approx(0.0, abs=1e-5)


def test_a_cell_from_before_the_forward_panel_is_recomputed():
    config = vanishing.Config(activations=("tanh",), **TINY)
    cell = vanishing.run(config)["cells"]["tanh"]
    new = ("c0", "log10_q", "cosine", "predicted_log10_q", "predicted_c")
    old = {k: v for k, v in cell.items() if k not in new}
    old["setup"] = {k: v for k, v in cell["setup"].items() if k != "c0"}  # the old setup had no c0
    assert vanishing.run(config, done={"tanh": old})["computed"] == ["tanh"]
    # the current setup but without the new fields: refused by the schema, recomputed
    with pytest.warns(report.CellWarning, match="lacks the field"):
        res = vanishing.run(config, done={"tanh": {**old, "setup": cell["setup"]}})
    assert res["computed"] == ["tanh"] and "cosine" in res["cells"]["tanh"]
