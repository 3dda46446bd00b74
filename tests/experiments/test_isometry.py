"""experiments/isometry.py: Jacobian spectra at criticality (Pennington et al. 2017).

`quick` is the session's --quick run (tests/conftest.py): linear, relu and tanh (sigma_b2 = 1e-3),
Gaussian and orthogonal weights, width N = 64, depths L in {2, 8, 32}, S = 4 seeds, float64.

Heavy tails. At L = 32 (L/N = 1/2) the squared singular values of Gaussian nets and of orthogonal
relu nets are so heavy-tailed that the variance pooled over S = 4 nets is a poor statistic: over
10 independent groups of 4 seeds it ranged 5-117 for Gaussian tanh (theory 33) and 5-198 for
orthogonal relu (theory 32). Comparisons between such nets use the spread of the singular values
from the Lyapunov exponents (`spread_decades`), which is not heavy-tailed (1.9-2.2 decades for
Gaussian tanh, 2.7-3.2 for orthogonal relu, 0.12-0.16 for orthogonal tanh over the same groups),
and the variances only with margins that held in all 10 groups.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import polygamma

import jaxvg
from experiments import isometry
from jaxvg import report

QUICK = isometry.Config(quick=True)
N, S = QUICK.width, QUICK.seeds


@pytest.fixture
def quick(isometry_quick):
    return isometry_quick


def _row(res, activation, weights, depth):
    (row,) = [
        r for r in res["rows"] if (r["activation"], r["weights"], r["depth"]) == (activation, weights, depth)
    ]
    return row


@pytest.mark.slow  # the quick run: one compiled program per (activation, weights, depth)
def test_orthogonal_linear_net_is_an_exact_isometry(quick):
    for depth in QUICK.depths:
        r = _row(quick, "linear", "orthogonal", depth)
        assert r["max_abs_log10_sv"] < 1e-12  # every singular value is 1 to float64 rounding
        assert r["var_sq_sv"] < 1e-20 and r["var_sq_sv_theory"] == 0.0
        assert abs(r["typical_rate"]) < 1e-12


@pytest.mark.slow
def test_mean_squared_singular_value_matches_jacobian_moments(quick):
    """chi_1 = 1 at criticality, so the theory mean is 1. Monte Carlo tolerance (one input per
    net): per layer, the mean of phi'(z)^2 over N units has relative variance kappa / N, kappa =
    mu2/mu1^2 - 1 (relu: 1, linear: 0), and a Gaussian layer adds 2 m2(l) / (N^2 m1(l)^2) =
    2 (1 + l v) / N^2, v = kappa + s (s = 1 Gaussian, 0 orthogonal; theory variance = L v). So
    m1 = tr(J J^T)/N has relative variance about L kappa / N + 2 L (1 + L v) / N^2 per net; pooled
    over S nets, we allow 4 standard deviations."""
    for a in QUICK.activations:
        for w in QUICK.weights:
            s = 1.0 if w == "gaussian" else 0.0
            for depth in (2, 8):
                r = _row(quick, a, w, depth)
                # float32: the critical sigma_w2 is found to ~1e-7 relative, so chi_1^depth is 1 to
                # ~depth * 1e-7 (measured 1.3e-6 at depth 8 with the split-at-the-peak quadrature)
                assert r["mean_sq_sv_theory"] == pytest.approx(1.0, abs=5e-6)
                v = r["var_sq_sv_theory"] / depth
                kappa = v - s
                tol = 4 * math.sqrt((depth * kappa / N + 2 * depth * (1 + depth * v) / N**2) / S)
                assert abs(r["mean_sq_sv"] - 1.0) < tol, (a, w, depth, r["mean_sq_sv"], tol)


@pytest.mark.slow
def test_orthogonal_tanh_variance_matches_free_probability(quick):
    """Variance L (mu2/mu1^2 - 1) at q*: measured 0.356 vs 0.352 (L = 8), 1.415 vs 1.410 (L = 32).
    15 %: Monte Carlo over S * N = 256 eigenvalues plus O(L/N) finite-width corrections."""
    for depth in (8, 32):
        r = _row(quick, "tanh", "orthogonal", depth)
        assert r["var_sq_sv"] == pytest.approx(r["var_sq_sv_theory"], rel=0.15)
    # the theory's per-layer slope at sigma_b2 = 1e-3 is small: 0.044 per layer
    assert _row(quick, "tanh", "orthogonal", 32)["var_sq_sv_theory"] / 32 == pytest.approx(0.044, abs=0.002)


@pytest.mark.slow
def test_gaussian_variance_grows_faster_than_orthogonal(quick):
    for a in QUICK.activations:
        g = [_row(quick, a, "gaussian", d)["var_sq_sv"] for d in QUICK.depths]
        o = [_row(quick, a, "orthogonal", d)["var_sq_sv"] for d in QUICK.depths]
        assert g[-1] > g[0] and g[-1] > o[-1]
        # Gaussian linear at L = 8: theory 8 (measured 8.09); relu Gaussian: 2L = 16 (measured 21.4)
        assert _row(quick, a, "gaussian", 8)["var_sq_sv"] == pytest.approx(
            _row(quick, a, "gaussian", 8)["var_sq_sv_theory"], rel=0.5
        )
    tanh_g = [_row(quick, "tanh", "gaussian", d)["var_sq_sv"] for d in QUICK.depths]
    tanh_o = [_row(quick, "tanh", "orthogonal", d)["var_sq_sv"] for d in QUICK.depths]
    # growth 2 -> 32: Gaussian +3 to +115 over 10 groups of 4 seeds (heavy tails), orthogonal +1.0 to +1.3
    assert tanh_g[-1] - tanh_g[0] > 2 * (tanh_o[-1] - tanh_o[0]) > 0
    spread = {
        (a, w): _row(quick, a, w, 32)["spread_decades"] for a in ("tanh", "relu") for w in QUICK.weights
    }
    assert spread["tanh", "gaussian"] > 10 * spread["tanh", "orthogonal"]
    # relu spreads even with orthogonal weights (variance L): orthogonal relu >> orthogonal tanh
    assert spread["relu", "orthogonal"] > 10 * spread["tanh", "orthogonal"]
    assert _row(quick, "relu", "orthogonal", 32)["var_sq_sv"] > 3 * tanh_o[-1]


@pytest.mark.slow
def test_gaussian_linear_lyapunov_spectrum_is_ginibre(quick):
    """Products of Gaussian matrices: lambda_i = 1/2 [ln(2/N) + digamma((N-i+1)/2)] exactly. One
    layer contributes 1/2 ln(chi^2_k / N) (k = N - i + 1) with variance psi'(k/2)/4, so over L
    layers and S nets the std of the mean exponent is sqrt(psi'(k/2) / (4 L S)); 5 of those."""
    depth = max(QUICK.depths)
    lyap = np.asarray(quick["spectra"]["linear/gaussian"]["lyapunov"])[-1]  # (S, N)
    expected = isometry.ginibre_lyapunov(N)
    k = N - np.arange(N)
    tol = 5 * np.sqrt(polygamma(1, k / 2) / (4 * depth * S))
    np.testing.assert_array_less(np.abs(lyap.mean(axis=0) - expected), tol)
    # the orthogonal linear spectrum is exactly flat at 0
    assert np.abs(np.asarray(quick["spectra"]["linear/orthogonal"]["lyapunov"])).max() < 1e-12


@pytest.mark.slow
def test_typical_rate_matches_typical_log_rate_for_gaussian_weights(quick):
    for a in QUICK.activations:
        r = _row(quick, a, "gaussian", max(QUICK.depths))
        assert abs(r["typical_rate"] - r["typical_log_rate"]) < 4 * r["typical_rate_stderr"] + 2e-3, r
    # exact formula for Gaussian linear nets: 1/2 [ln(2/N) + digamma(N/2)] = -0.00785 at N = 64
    assert _row(quick, "linear", "gaussian", 2)["typical_log_rate"] == pytest.approx(-0.007853, abs=2e-6)


@pytest.mark.slow
def test_rerun_with_done_recomputes_nothing(quick, tmp_path):
    write = report.cell_writer(tmp_path)
    for key, cell in quick["cells"].items():
        write(key, cell)  # what cell_writer puts on disk: -inf becomes null
    stored = report.finished_cells(tmp_path)
    again = isometry.run(QUICK, on_cell=lambda k, c: pytest.fail("recomputed"), done=stored)
    assert again["computed"] == [] and quick["computed"] == ["isometry"]
    for r1, r2 in zip(quick["rows"], again["rows"], strict=True):
        for key in ("mean_sq_sv", "var_sq_sv", "typical_rate"):
            assert r1[key] == r2[key]


@pytest.mark.parametrize("weights", ["gaussian", "orthogonal"])
def test_measure_matches_brute_force_and_depths_nest(weights, x64):
    """`measure` on a net equals the brute-force float64 Jacobian J = dh_L/dh_0 (`jax.jacfwd`):
    singular values, column norms and the Lyapunov exponents' sum (sum_i lambda_i L = ln |det J|
    = sum_i ln sigma_i); and the depth-2 net is the first 2 blocks of the depth-4 net."""
    n, depth, seed = 8, 4, 3
    model = isometry.net("tanh", weights, n, depth, seed, 0.05)
    shallow = isometry.net("tanh", weights, n, 2, seed, 0.05)
    for a, b in zip(shallow.blocks, model.blocks[:2], strict=True):
        np.testing.assert_array_equal(a.linear.kernel[...], b.linear.kernel[...])
        np.testing.assert_array_equal(a.linear.bias[...], b.linear.bias[...])
    x = isometry.net_input(seed, n, 0.4)
    got = isometry.measure(model, x)
    jac = jax.jacfwd(lambda h: model(h[None])[0])(x)
    np.testing.assert_allclose(
        got["log_sv"], np.log(np.linalg.svd(np.asarray(jac), compute_uv=False)), atol=1e-9
    )
    np.testing.assert_allclose(got["log_growth"] * depth, np.log(np.linalg.norm(jac, axis=0)), atol=1e-12)
    assert got["lyapunov"].sum() * depth == pytest.approx(float(np.sum(got["log_sv"])), abs=1e-9)
    assert jnp.asarray(x).dtype == jnp.float64 and np.all(np.diff(got["lyapunov"]) <= 0)


def test_critical_points():
    assert isometry.critical_point("linear", 0.3) == (1.0, 0.0)
    assert isometry.critical_point("relu", 0.3) == (2.0, 0.0)
    sw, sb = isometry.critical_point("tanh", 1e-3)
    assert sb == 1e-3 and float(jaxvg.theory.chi_1("tanh", sw, sb)) == pytest.approx(1.0, abs=1e-5)


def test_config_validation():
    with pytest.raises(ValueError, match=r"`weights` must be one of .*got 'uniform'"):
        isometry.Config(weights=("uniform",))
    with pytest.raises(ValueError, match=r"`activation` must be one of"):
        isometry.Config(activations=("tahn",))
    with pytest.raises(ValueError, match=r"`depths` must be an integer >= 1, got 0"):
        isometry.Config(depths=(0, 2))
    assert isometry.Config(quick=True, width=16).width == 16


@pytest.mark.slow
def test_main_writes_results(quick, tmp_path, capsys):
    """main() writes every output; the cell stored beforehand (as an interrupted run would have
    left it) is reused, so nothing is recomputed here."""
    out = tmp_path / "iso"
    report.cell_writer(out)("isometry", quick["cells"]["isometry"])
    res = isometry.main(["--quick", "--out-dir", str(out)])
    for name in ("metrics.json", "isometry.csv", "isometry.png", "summary.md"):
        assert (out / name).is_file(), name
    assert len(res["rows"]) == len(QUICK.activations) * len(QUICK.weights) * len(QUICK.depths)
    metrics = report.read_json(out / "metrics.json")
    assert metrics["config"]["width"] == N and len(metrics["results"]["rows"]) == len(res["rows"])
    assert "tanh, orthogonal" in capsys.readouterr().out
    assert isometry.main(["--quick", "--out-dir", str(out)])["computed"] == []
