"""`experiments.through_time --quick`: real numbers from the run that the CLI makes."""

import math

import numpy as np
import pytest

from experiments import through_time as tt


@pytest.fixture
def quick(through_time_quick):
    return tt.Config(quick=True), through_time_quick


@pytest.mark.slow
def test_quick_run_measures_predicts_and_cures(quick):
    """At T = 50 (300 steps) every LSTM, GRU and LRU run ends below every run of the Gaussian tanh RNN, which stays
    at the 1/6 baseline. Checked with 6 seeds (test MSE per seed): tanh 0.149-0.184; IRNN 0.011-0.124,
    LSTM 0.0096-0.107, GRU 0.005-0.011, LRU 0.0015-0.0038 (the IRNN: see below). At init (T = 200, hidden 32) the tanh RNN
    loses 0.093 decades per step against the mean field's 0.102, the IRNN and LRU almost nothing.
    At T = 20 the Gaussian tanh RNN does learn, far below the baseline it cannot leave at T = 50, but
    after 300 steps how far moves with float32 rounding: test MSE 0.042 and 0.051 on the two seeds
    with XLA's default CPU code generation, 0.032 and 0.128 with the suite's (legacy loop emitters at
    LLVM -O0, the root conftest.py), so the mean and the best seed are asserted. The GRU and LRU solve
    both lengths."""
    config, res = quick
    init = {r["net"]: r for r in res["init_rows"]}
    assert init["tanh_gaussian"]["theory_source"] == "mean field"
    assert init["tanh_gaussian"]["measured"] == pytest.approx(init["tanh_gaussian"]["theory"], abs=0.03)
    assert init["tanh_gaussian"]["measured"] < -0.05
    assert abs(init["irnn"]["measured"]) < 0.01 and abs(init["lru"]["measured"]) < 0.02
    assert init["lru"]["measured"] == pytest.approx(
        init["lru"]["theory"], abs=2e-3
    )  # exact linear, uniform weights
    T = max(config.lengths)
    mse = {
        net: np.asarray(res["cells"][f"adding/T={T:05d}/clip=on/{net}"]["test_mse"], float)
        for net in config.nets
    }
    assert mse["tanh_gaussian"].min() > 0.1  # the 1/6 baseline
    for net in ("lstm", "gru", "lru"):
        assert mse[net].max() < mse["tanh_gaussian"].min(), net
    # the IRNN learns too (6 seeds: 0.011-0.124), but after 300 steps its result moves with float32
    # rounding (seeds 0 and 1 ended at 0.086 and 0.168 in a 2-seed program, 0.032 and 0.073 in a 6-seed
    # one): only its mean is asserted
    assert mse["irnn"].mean() < mse["tanh_gaussian"].min()
    assert mse["gru"].max() < 0.05 and mse["lru"].max() < 0.01
    short = {
        net: np.asarray(res["cells"][f"adding/T={min(config.lengths):05d}/clip=on/{net}"]["test_mse"], float)
        for net in config.nets
    }
    assert min(config.lengths) == 20
    assert short["tanh_gaussian"].mean() < 0.1 < mse["tanh_gaussian"].min()  # the length is what defeats it
    assert short["tanh_gaussian"].min() < 0.05
    assert short["gru"].max() < config.success_mse and short["lru"].max() < config.success_mse
    assert len(res["order_rows"]) == len(config.nets)
    verdict = {r["net"]: r["verdict"] for r in res["verdict_rows"]}
    assert verdict["lru"].startswith("fixes vanishing") and verdict["tanh_gaussian"].startswith("baseline")
    assert "clipping" in res["verdict_rows"][-1]["cure"]
    after = res["cells"][f"adding/T={T:05d}/clip=on/lru"]
    assert len(after["state_grad_trained"]) == T + 1 and len(after["lag_contrib_init"]) == T


@pytest.mark.slow
def test_quick_run_is_resumable_and_writes_its_outputs(quick, tmp_path):
    config, res = quick
    cells = res["cells"]
    again = tt.run(config, done=cells)
    assert again["computed"] == []
    # NaN-aware: `==` on the rows holds only when both NaNs are the same object, which fails when
    # the shared quick run was computed by another xdist worker and unpickled here
    np.testing.assert_equal(again["verdict_rows"], res["verdict_rows"])
    fig = tt.figure(res, config)
    assert len(fig.axes) == 4
    text = tt.summary_text(config, res)
    assert "## 4. Verdict" in text and "Hochreiter" in text
    assert all(math.isfinite(r["measured"]) for r in res["init_rows"])
    assert np.isfinite([r["success"] for r in res["adding_rows"]]).all()


def test_config_names_bad_values():
    with pytest.raises(ValueError, match=r"`nets` must be one of"):
        tt.Config(nets=("tanh",))
    with pytest.raises(ValueError, match=r"`clip_off_lengths` must be a subset"):
        tt.Config(lengths=(50,), clip_off_lengths=(100,))
    with pytest.raises(ValueError, match=r"`order_lengths` must hold ints >= 10"):
        tt.Config(order_lengths=(5,))
    with pytest.raises(ValueError, match=r"`steps` must be an integer >= 1"):
        tt.Config(steps=0)
    q = tt.Config(quick=True, seeds=3)
    assert q.seeds == 3 and q.lengths == (20, 50)


def test_plain_float32_gradient_underflows_where_time_flow_does_not():
    """The marked underflow step: a Gaussian tanh RNN at T = 1000 loses ~0.1 decades per step, so the
    plain float32 gradient of autodiff reads exactly 0 at some lag, where time_flow is finite."""
    from flax import nnx

    import jaxvg
    from jaxvg.train import tasks

    T = 1000
    task = tasks.adding(T, n_train=1, n_test=4, seed=0)
    model = tt.factory("tanh_gaussian", 2, 32, 1)(nnx.Rngs(0))
    exact = np.asarray(jaxvg.time_flow(model, task.x_test, task.y_test).log10_state_grad, np.float64)
    plain = tt.plain_state_grads(model, task.x_test, task.y_test)
    marks = tt._underflow(exact, plain)
    assert np.isfinite(exact).all() and exact[0] < -60
    assert marks["underflow_lag"] is not None and marks["inexact_lag"] <= marks["underflow_lag"]
    lag = marks["inexact_lag"]
    np.testing.assert_allclose(plain[T - lag + 1 :], exact[T - lag + 1 :], atol=0.01)
