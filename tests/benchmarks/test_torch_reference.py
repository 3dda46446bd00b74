"""benchmarks.torch_reference: PyTorch eager and torch.compile compute the per-layer gradient norms
that jaxvg's `gradient_flow` reports, on the same weights; benchmarks.analysis skips the compiled
column above `torch_compile_max_depth` and says so. Skipped where torch is not installed (CI).

Tolerance: a depth-5 float32 tanh net whose norms are all O(1e-2..1); both frameworks sum the same
float32 products in different orders, so the log10 norms agree to ~1e-7 decades (measured 1.2e-7
on CPU); 1e-5 decades still catches a transposed kernel, a missing bias or a wrong loss scale (each
moves some norm by more than 1e-2 decades).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
from flax import nnx  # noqa: E402

import jaxvg  # noqa: E402
from benchmarks import analysis as bench_analysis  # noqa: E402
from benchmarks import torch_reference  # noqa: E402

ATOL = 1e-5  # decades


@pytest.fixture(scope="module")
def net():
    depth, width, batch, out = 5, 8, 4, 3
    model = jaxvg.MLP(width, width, depth, out, activation="tanh", rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (batch, width))
    y = jax.random.normal(jax.random.key(2), (batch, out))
    return model, x, y, jaxvg.gradient_flow(model, x, y)


def _numpy(pair):
    return [t.detach().cpu().numpy() for t in pair]


def test_settings_turn_tf32_off_and_name_the_device():
    torch_reference.load(threads=None)
    got = torch_reference.settings(torch)
    assert got["cuda_matmul_allow_tf32"] is False and got["cudnn_allow_tf32"] is False
    assert got["float32_matmul_precision"] == "highest"
    assert got["device"] == (
        "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    )


def test_eager_norms_match_gradient_flow(net):
    model, x, y, flow = net
    act, par = _numpy(torch_reference.eager_flow(torch, model, x, y)())
    assert act.shape == (6,) and par.shape == (5,)
    np.testing.assert_allclose(act, np.asarray(flow.log10_act_grad), rtol=0, atol=ATOL)
    np.testing.assert_allclose(par, np.asarray(flow.log10_param_grad), rtol=0, atol=ATOL)


def test_compiled_norms_match_gradient_flow(net, monkeypatch):
    """The zero probes eps_l give dloss/dh_l through the compiled graph (one inductor compile; in
    this process, without inductor's pool of compile workers: 3.4 s instead of 5-6 s here, with
    inductor's on-disk cache warm)."""
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config, "compile_threads", 1)
    model, x, y, flow = net
    fn = torch_reference.compiled_flow(torch, model, x, y)
    for _ in range(2):  # the first call compiles, the second runs the compiled code
        act, par = _numpy(fn())
        np.testing.assert_allclose(act, np.asarray(flow.log10_act_grad), rtol=0, atol=ATOL)
        np.testing.assert_allclose(par, np.asarray(flow.log10_param_grad), rtol=0, atol=ATOL)


def test_analysis_skips_torch_compile_above_the_max_depth_and_says_why():
    row = {"depth": 4, "width": 8, "batch": 4, "gradient_flow_s": 2e-3, "gradient_flow_s_all": [2e-3] * 5}
    logged = []
    bench_analysis._torch_flow(torch, bench_analysis.Config(torch_compile_max_depth=3), row, logged.append)
    assert row["torch_compile_skipped"].startswith("skipped: depth 4 > torch_compile_max_depth 3")
    assert logged and "torch_compile_max_depth 3" in logged[0]
    assert "torch_compile_gradient_flow_s" not in row and "ratio_jax_over_torch_compile" not in row
    assert row["ratio_jax_over_torch"] == pytest.approx(2e-3 / row["torch_gradient_flow_s"])
    off = dict(row)
    bench_analysis._torch_flow(torch, bench_analysis.Config(torch_compile=False), off, logged.append)
    assert off["torch_compile_skipped"] == "off (torch_compile=False)"
