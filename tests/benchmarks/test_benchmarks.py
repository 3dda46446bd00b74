"""benchmarks: the suites run (`python -m benchmarks.run --quick`), write JSON with the promised keys,
and their three (four) loops compute the same training run. Speed is never asserted: wall-clock
numbers on a shared CI machine are not a test.

Tolerances. The loops of one suite train the same float32 network from the same initial weights
on the same batch with the same Adam update, in differently ordered XLA programs (scan, vmap, per
step); 20 steps of tiny nets then agree to a few float32 ulps per step, ~1e-6 relative. rtol 1e-4
leaves room for the reassociation and still catches a wrong learning rate, a skipped step (one Adam
step moves the quick loss by about 1e-2 relative) or different initial weights.
"""

import json

import numpy as np
import pytest

from benchmarks import analysis as bench_analysis
from benchmarks import common, loops
from benchmarks import measure_cost as bench_measure_cost
from benchmarks import run as bench_run
from benchmarks import seeds as bench_seeds
from benchmarks import training as bench_training
from jaxvg.report import cli

RTOL = 1e-4


@pytest.fixture
def quick_run(benchmarks_quick):
    """The session's `python -m benchmarks.run --quick` (all suites; tests/conftest.py)."""
    return benchmarks_quick


def _targets(res):
    """(target, op) of a suite's ratios that have a target."""
    return [(r["target"], r["op"]) for r in res["ratios"] if r["target"] is not None]


def _assert_same_losses_and_targets(res, losses, targets):
    """Every method of a suite ended at the same loss (the same nets, trained the same way) and the
    suite's ratios carry exactly `targets`, as (target, op)."""
    np.testing.assert_allclose(losses, losses[0], rtol=RTOL)
    assert _targets(res) == targets


def _read(out_dir, name):
    return json.loads((out_dir / f"{name}.json").read_text())


@pytest.mark.slow
def test_run_quick_writes_every_suite_and_the_combined_table(quick_run, capsys):
    out, out_dir = quick_run
    assert bench_run.failed(out) == [], {k: v["error"] for k, v in out["suites"].items()}
    combined = _read(out_dir, "run")
    assert set(combined) >= {"config", "environment", "suites", "ratios", "rows"}
    assert list(combined["suites"]) == list(bench_run.SUITES)
    for name, entry in combined["suites"].items():
        assert entry["error"] is None
        assert (out_dir / f"{name}.json").exists()
        assert entry["seconds"] > 0
    env = combined["environment"]
    assert {"device_kind", "jax", "flax", "backend", "cpu_count"} <= set(env)
    # every ratio record carries its target, pass/miss when it has one, its spread over the run's
    # rounds (the median lies within it) and the quick flag
    # (a compile time is one first call: no spread)
    for r in combined["ratios"]:
        assert set(r) >= {"suite", "name", "value", "target", "op", "pass", "spread", "quick"}
        assert (r["target"] is None) == (r["pass"] is None)
        assert r["quick"] is True
        if r["spread"] is None:
            assert r["suite"] == "measure_cost" and " compile seconds, " in r["name"], r
            continue
        lo, hi = r["spread"]
        assert lo <= r["value"] * (1 + 1e-12) and r["value"] <= hi * (1 + 1e-12), r
    rows = {(r["suite"], r["ratio"]): r for r in combined["rows"]}
    # a --quick run's tiny shapes say nothing about the targets: "smoke", never pass/miss
    fit_row = rows[("training", "fit chunks / plain scan (time per step)")]
    assert fit_row["target"] == "<= 1.1" and fit_row["result"] == "smoke"
    seeds_row = rows[("seeds", "nnx.jit per step / vmapped fit (3 seeds)")]
    assert seeds_row["target"] == ">= 10" and seeds_row["result"] == "smoke"
    # the time-flow cost row is measured in the same run (quick shapes here)
    flow_row = rows[("time_flow", "time_flow / value_and_grad (tanh RNN, T=100, hidden 32, batch 16)")]
    assert flow_row["target"] == "<= 1.2" and flow_row["result"] == "smoke"
    # the public-call costs (measure_cost), at its quick shapes, with the targets of the full run
    mc = {name: row for (suite, name), row in rows.items() if suite == "measure_cost"}
    assert (
        mc["gradient_flow public call / value_and_grad (depth 200, width 16, batch 16)"]["target"] == "<= 1.3"
    )
    assert (
        mc["gradient_flow public call / value_and_grad (depth 8, width 32, batch 16)"]["target"] == "<= 1.1"
    )
    assert mc["exact jacobian_norms public call / N x one VJP chain (depth 4, width 16, batch 4, N = 16)"][
        "target"] == "<= 1"  # fmt: skip
    assert (
        mc["hutchinson k=8 public call / forward+backward (depth 4, width 16, batch 4)"]["target"] == "<= 2"
    )
    compile_rows = [mc[n] for n in mc if n.startswith("gradient_flow compile seconds, first call (")]
    assert [(r["target"], r["result"], r["spread"]) for r in compile_rows] == [("<= 10", "smoke", "")] * 2
    assert mc["jacobian_spectrum seconds per call (depth 4, width 16, one example)"]["target"] == ""
    assert {r["result"] for r in combined["rows"]} <= {"smoke", ""}
    assert all(r["spread"] for r in combined["rows"] if r not in compile_rows)
    # each ratio once: no name twice in the combined table
    names = [r["ratio"] for r in combined["rows"]]
    assert len(names) == len(set(names))
    # the record's pass is still the value read against the target (not merely one of two words)
    for r in combined["ratios"]:
        if r["target"] is not None:
            assert r["pass"] == (
                r["value"] <= r["target"] if r["op"] == "<=" else r["value"] >= r["target"]
            ), r
    table = bench_run.table(out)
    assert table.startswith("| suite") and "<= 1.1" in table and ">= 10" in table
    assert "| spread" in table and "smoke" in table and "miss" not in table


@pytest.mark.slow
def test_training_json_and_its_loops_agree(quick_run):
    _, out_dir = quick_run
    res = _read(out_dir, "training")
    assert set(res) >= {"suite", "config", "environment", "shapes", "ceiling", "methods", "ratios", "rows"}
    assert res["config"]["quick"] is True and res["config"]["width"] == bench_training.Config.QUICK["width"]
    assert {"jax", "flax", "device_kind"} <= set(res["environment"])
    assert set(res["methods"]) == {"fit_chunks", "fit", "plain_scan", "nnx_jit"}
    assert res["fit_fixed_overhead_seconds"] is not None
    sizes = res["shapes"]["layer_sizes"]
    assert res["shapes"]["flop_per_step"] == loops.matmul_flops(sizes, res["shapes"]["batch"])["step"]
    for name, m in res["methods"].items():
        assert m["compile_seconds"] >= 0 and len(m["seconds_all"]) == res["config"]["repeat"], name
        # FLOP/s is the counted FLOPs per step times steps per second, and the ceiling its denominator
        np.testing.assert_allclose(
            m["flop_per_second"], res["shapes"]["flop_per_step"] * m["steps_per_second"]
        )
        np.testing.assert_allclose(
            m["fraction_of_ceiling"], m["flop_per_second"] / res["ceiling"]["flop_per_second"]
        )
    assert res["ceiling"]["flop"] == 2 * res["config"]["matmul_size"] ** 3
    # the same 20 Adam steps three ways (nnx_steps=None in --quick: as many steps as the others)
    losses = [res["methods"][k]["final_loss"] for k in ("fit", "fit_chunks", "plain_scan", "nnx_jit")]
    _assert_same_losses_and_targets(res, losses, [(1.1, "<=")])


@pytest.mark.slow
def test_seeds_json_and_its_methods_agree(quick_run):
    _, out_dir = quick_run
    res = _read(out_dir, "seeds")
    assert set(res) >= {"suite", "config", "environment", "shapes", "methods", "ratios", "rows"}
    assert res["shapes"]["seeds"] == bench_seeds.Config.QUICK["seeds"]
    assert set(res["methods"]) == {"vmapped_fit", "loop_of_fits", "nnx_jit", "vmapped_plain_scan"}
    # seed s is the same net in every method (fit's seeds path: nnx.Rngs(key(s)) == nnx.Rngs(s))
    losses = [m["mean_final_loss"] for m in res["methods"].values()]
    _assert_same_losses_and_targets(res, losses, [(10.0, ">=")])


@pytest.mark.slow
def test_measure_cost_suite_json(quick_run):
    out, out_dir = quick_run
    res = _read(out_dir, "measure_cost")
    assert res["suite"] == "measure_cost" and res["config"]["quick"] is True
    assert {"device_kind", "jax", "flax", "backend", "device"} <= set(res["environment"])
    # run.json carries the records measure_cost.json holds, which are its results read again
    assert out["suites"]["measure_cost"]["ratios"] == res["ratios"] == bench_measure_cost.ratios(res)
    shapes = [(r["depth"], r["width"], r["batch"]) for r in res["flow"]]
    assert shapes == [(8, 32, 16), (200, 16, 16)]  # Config.QUICK's flow_shapes
    by_name = {r["name"]: r for r in res["ratios"]}
    for row in res["flow"]:
        dims_text = f"depth {row['depth']}, width {row['width']}, batch {row['batch']}"
        rec = by_name[f"gradient_flow public call / value_and_grad ({dims_text})"]
        assert rec["value"] == row["ratio_gradient_flow"] > 0
        assert rec["spread"] == row["ratio_gradient_flow_round_range"]
        assert by_name[f"Probe.gradient_flow / value_and_grad ({dims_text})"]["target"] is None
    for name, c in res["compile"].items():
        rec = [r for r in res["ratios"] if r["value"] == c["first_call_s"] and "compile" in r["name"]]
        assert len(rec) == 1 and rec[0]["target"] == 10.0, name
    assert res["compile"]["deep_mlp"]["blocks"] == 130 and res["compile"]["periodic_2"]["blocks"] == 4
    assert len(res["ratios"]) == 2 * 2 + 2 + 1 + 2


@pytest.mark.slow
def test_analysis_suite_json(quick_run):
    out, out_dir = quick_run
    assert out["suites"]["analysis"]["error"] is None, out["suites"]["analysis"]["error"]
    res = _read(out_dir, "analysis")
    assert {"jax", "flax", "device_kind"} <= set(res["environment"])
    ratios = out["suites"]["analysis"]["ratios"]  # the list analysis.json carries
    assert ratios == res["ratios"] == bench_analysis.ratios(res)
    labels = [r["name"].split(" (")[0] for r in ratios]
    # one gradient_flow ratio per quick (depth, width); torch is not installed in the test environment
    n_flow = len(bench_analysis.Config.QUICK["depths"]) * len(bench_analysis.Config.QUICK["widths"])
    # the two with a public-call counterpart in measure_cost say they time the jitted kernel
    kernel = [r["name"] for r in ratios if r["name"].endswith(", jitted kernel)")]
    assert [k.split(" (")[0] for k in kernel] == ["gradient_flow / value_and_grad"] * n_flow + [
        "hutchinson k=8 / forward+backward"
    ]
    expected = ["gradient_flow / value_and_grad"] * n_flow + [
        "exact jacobian_norms / N plain VJPs",
        "exact jacobian_norms / naive jacrev loop",
        "hutchinson k=8 / forward+backward",
    ]
    if res["torch"] is None:
        assert labels == expected
    else:
        assert set(labels) >= set(expected) | {"gradient_flow jax / torch eager"}
    assert all(r["suite"] == "analysis" for r in ratios)


def test_matmul_flops_counts_forward_and_twice_that_backward():
    # sizes 3 -> 4 -> 5, batch 2: forward 2*2*(3*4 + 4*5) = 128, backward 256, step 384
    assert loops.matmul_flops([3, 4, 5], 2) == {"forward": 128, "backward": 256, "step": 384}


def test_ratio_verdicts():
    assert common.ratio("s", "r", 1.05, target=1.1, op="<=")["pass"] is True
    assert common.ratio("s", "r", 1.2, target=1.1, op="<=")["pass"] is False
    assert common.ratio("s", "r", 12.0, target=10.0, op=">=")["pass"] is True
    assert common.ratio("s", "r", 3.0)["pass"] is None
    with pytest.raises(ValueError, match=r"`op` must be one of"):
        common.ratio("s", "r", 1.0, target=1.0, op="<")
    rows = common.ratio_rows([common.ratio("s", "r", 1.2, target=1.1, op="<="), common.ratio("s", "q", 3.0)])
    assert [(r["target"], r["result"], r["spread"]) for r in rows] == [("<= 1.1", "miss", ""), ("", "", "")]
    # a --quick record: "smoke" whatever the value; no target, no verdict
    quick = [
        common.ratio("s", "r", 1.2, target=1.1, op="<=", quick=True),
        common.ratio("s", "q", 3.0, quick=True),
    ]
    assert [r["result"] for r in common.ratio_rows(quick)] == ["smoke", ""]


def test_ratio_of_rounds_is_the_median_with_the_min_max_spread():
    # per step: (4/100)/(1/300) = 12, (6/100)/(1/300) = 18, (5/100)/(1/300) = 15
    rec = common.ratio_of_rounds("s", "r", [4.0, 6.0, 5.0], [1.0, 1.0, 1.0], 100, 300, target=10.0, op=">=")
    assert rec["value"] == pytest.approx(15.0) and rec["spread"] == pytest.approx([12.0, 18.0])
    assert rec["pass"] is True and common.ratio_rows([rec])[0]["spread"] == "12-18"
    # separately timed: interquartile ratios, around the ratio of the medians
    lo, hi = common.unpaired_spread([1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 1.0, 1.0, 1.0, 1.0])
    assert lo <= 3.0 <= hi and lo == pytest.approx(1.5) and hi == pytest.approx(4.5)


def test_interleaved_rounds_rotate_the_order_and_pair_ratios():
    calls = []
    runs = {k: (lambda k=k: calls.append(k) or {"a": 1.0, "b": 2.0, "c": 4.0}[k]) for k in "abc"}
    times = common.interleaved_seconds(runs, 3)
    assert calls == list("abcbcacab")
    assert times == {"a": [1.0] * 3, "b": [2.0] * 3, "c": [4.0] * 3}
    # per-step ratio: (4 s / 100 steps) / (1 s / 300 steps) = 12
    assert common.paired_ratio(times["c"], times["a"], 100, 300) == pytest.approx(12.0)


def test_interleaved_jitted_reports_compile_and_median_seconds():
    out = common.interleaved_jitted({"double": (lambda x: 2 * x, (np.ones(3),))}, 3)
    assert set(out["double"]) == {"compile_s", "seconds", "seconds_all"}
    assert out["double"]["compile_s"] >= out["double"]["seconds"] > 0
    assert len(out["double"]["seconds_all"]) == 3 and min(out["double"]["seconds_all"]) > 0


def test_run_config_rejects_unknown_suites_and_presets():
    with pytest.raises(ValueError, match=r"`suites` must be a non-empty subset of .*'speed'"):
        bench_run.Config(suites=("speed",))
    with pytest.raises(ValueError, match=r"`preset` must be None or one of \['accelerator'\], got 'tpu'"):
        bench_run.Config(preset="tpu")
    with pytest.raises(SystemExit):
        bench_run.main(["--suites", "speed"])


def test_suite_flags_carry_quick_preset_and_out_dir():
    cfg = bench_run.Config(quick=True, preset="accelerator", out_dir="/x")
    assert bench_run.suite_argv("training", cfg) == ["--quick", "--preset", "accelerator", "--out-dir", "/x"]
    assert bench_run.suite_argv("seeds", cfg) == ["--quick", "--out-dir", "/x"]  # no accelerator preset
    assert bench_run.suite_argv("analysis", cfg) == ["--quick", "--preset", "accelerator", "--out-dir", "/x"]
    assert bench_run.suite_argv("measure_cost", cfg) == [
        "--quick",
        "--preset",
        "accelerator",
        "--out-dir",
        "/x",
    ]
    assert bench_run.suite_argv("measure_cost", bench_run.Config(out_dir="/y")) == ["--out-dir", "/y"]
    # the preset the flag selects exists and changes the training sizes
    assert bench_training.Config.PRESETS["accelerator"]["width"] > bench_training.Config().width
    assert bench_run.PRESET_SUITES["accelerator"] == ("training", "analysis", "measure_cost", "time_flow")
    # and measure_cost's accelerator shapes differ from its CPU ones (which keep the three CPU shapes)
    assert bench_measure_cost.Config().flow_shapes == ("50x256x256", "200x16x16", "200x128x128")
    assert cli.parse(bench_measure_cost.Config, ["--preset", "accelerator"]).flow_shapes[0] == "50x1024x1024"


def test_run_lists_measure_cost_as_a_suite():
    assert bench_run.SUITES == ("training", "seeds", "analysis", "measure_cost", "time_flow")
    assert bench_run.Config(suites=("measure_cost",)).suites == ("measure_cost",)
    assert cli.parse(bench_run.Config, ["--suites", "measure_cost", "time_flow"]).suites == (
        "measure_cost", "time_flow")  # fmt: skip


def test_measure_cost_records_carry_the_stated_targets():
    """The records read from a hand-made result: each target where one is stated, pass/miss read
    against it, names with the shapes."""
    flow = {"ratio_gradient_flow": 1.2, "ratio_gradient_flow_round_range": [1.1, 1.3], "ratio_probe": 0.9,
            "ratio_probe_round_range": [0.8, 1.0]}  # fmt: skip
    res = {
        "config": {"quick": False},
        "flow": [{"depth": 50, "width": 256, "batch": 256, **flow}, {"depth": 200, "width": 16, "batch": 16, **flow}],
        "jacobians": {"depth": 20, "width": 128, "batch": 32, "ratio_exact_over_n_vjp_chains": 0.5,
                      "ratio_exact_over_n_vjp_chains_round_range": [0.4, 0.6],
                      "ratio_hutchinson_k8_over_forward_backward": 2.5,
                      "ratio_hutchinson_k8_over_forward_backward_round_range": [2.0, 3.0]},
        "spectrum": {"depth": 20, "width": 128, "seconds": 0.02, "spread": [0.01, 0.03]},
        "compile": {"deep_mlp": {"blocks": 1000, "width": 64, "batch": 32, "first_call_s": 12.0},
                    "periodic_2": {"blocks": 128, "width": 64, "batch": 32, "first_call_s": 4.0}},
    }  # fmt: skip
    got = {r["name"]: (r["target"], r["pass"]) for r in bench_measure_cost.ratios(res)}
    assert got == {
        "gradient_flow public call / value_and_grad (depth 50, width 256, batch 256)": (1.1, False),
        "Probe.gradient_flow / value_and_grad (depth 50, width 256, batch 256)": (None, None),
        "gradient_flow public call / value_and_grad (depth 200, width 16, batch 16)": (1.3, True),
        "Probe.gradient_flow / value_and_grad (depth 200, width 16, batch 16)": (None, None),
        "exact jacobian_norms public call / N x one VJP chain (depth 20, width 128, batch 32, N = 128)": (1.0, True),
        "hutchinson k=8 public call / forward+backward (depth 20, width 128, batch 32)": (2.0, False),
        "jacobian_spectrum seconds per call (depth 20, width 128, one example)": (None, None),
        "gradient_flow compile seconds, first call (depth-1000 MLP, width 64, batch 32)": (10.0, False),
        "gradient_flow compile seconds, first call (128 blocks, period-2 tanh/relu pattern, width 64, batch 32)": (
            10.0, True),
    }  # fmt: skip
    rows = common.ratio_rows(bench_measure_cost.ratios(res))
    assert [r["spread"] for r in rows] == [
        "1.1-1.3",
        "0.8-1",
        "1.1-1.3",
        "0.8-1",
        "0.4-0.6",
        "2-3",
        "0.01-0.03",
        "",
        "",
    ]


def test_analysis_ratios_are_read_against_their_targets():
    res = {
        "flow": [{"depth": 20, "width": 128, "batch": 256, "ratio_flow_over_value_and_grad": 1.05,
                  "ratio_jax_over_torch": 0.9, "ratio_jax_over_torch_compile": 1.08}],
        "jacobians": {"depth": 20, "width": 128, "batch": 32, "ratio_exact_over_plain_vjps": 1.3,
                      "ratio_hutchinson_over_forward_backward": 2.5},
    }  # fmt: skip
    records = bench_analysis.ratios(res)
    assert all(r["spread"] is None and r["quick"] is False for r in records)  # none given here
    got = {(r["name"].split(" (")[0], r["pass"]) for r in records}
    assert got == {
        ("gradient_flow / value_and_grad", True),
        ("gradient_flow jax / torch eager", False),
        ("gradient_flow jax / torch.compile", True),
        ("exact jacobian_norms / N plain VJPs", None),
        ("hutchinson k=8 / forward+backward", False),
    }


def test_analysis_flow_shapes_replace_the_depth_width_product():
    cfg = bench_analysis.Config(depths=(4,), widths=(16, 32), batch=8)
    assert cfg.shapes() == [(4, 16, 8), (4, 32, 8)]
    cfg = bench_analysis.Config(flow_shapes=["50x1024x1024", "200x512x512"], batch=8)
    assert cfg.flow_shapes == ("50x1024x1024", "200x512x512")
    assert cfg.shapes() == [(50, 1024, 1024), (200, 512, 512)]  # the batch is each shape's own
    with pytest.raises(ValueError, match=r"`flow_shapes` must be 3 positive integers .* got '50x1024'"):
        bench_analysis.Config(flow_shapes=("50x1024",))
    with pytest.raises(TypeError, match=r"`flow_shapes` must be a tuple of 'DEPTHxWIDTHxBATCH' strings"):
        bench_analysis.Config(flow_shapes="50x1024x1024")
    with pytest.raises(ValueError, match=r"`torch_compile_max_depth` must be"):
        bench_analysis.Config(torch_compile_max_depth=0)


def test_analysis_accelerator_preset_has_the_accelerator_shapes():
    cfg = cli.parse(bench_analysis.Config, ["--preset", "accelerator"])
    assert cfg.shapes() == [(50, 1024, 1024), (200, 512, 512), (1000, 256, 256), (50, 4096, 4096)]
    assert (cfg.jacobian_depth, cfg.jacobian_width, cfg.jacobian_batch) == (20, 512, 64)
    assert cfg.torch_compile is True and cfg.torch_compile_max_depth == 200  # depth 1000: skipped
    # --quick: the quick sizes win over the preset's, torch.compile off unless asked for
    quick = cli.parse(bench_analysis.Config, ["--preset", "accelerator", "--quick"])
    assert quick.shapes() == [(4, 16, 8), (8, 16, 8)] and quick.torch_compile is False
    assert cli.parse(bench_analysis.Config, ["--quick", "--torch-compile"]).torch_compile is True


def test_analysis_accelerator_preset_quick_run_in_process(tmp_path, capsys):
    """`python -m benchmarks.analysis --preset accelerator --quick`, in this process: the whole path
    (at quick sizes; PyTorch eager too where torch imports, torch.compile off at quick sizes)."""
    res = bench_analysis.main(
        ["--preset", "accelerator", "--quick", "--depths", "4", "--out-dir", str(tmp_path)]
    )
    assert res["config"]["quick"] is True and res["config"]["jacobian_width"] == 16
    assert [(r["depth"], r["width"], r["batch"]) for r in res["flow"]] == [(4, 16, 8)]
    assert res["precision"]["jax"].startswith("highest")
    saved = json.loads((tmp_path / "analysis.json").read_text())
    assert saved["ratios"] == res["ratios"] and saved["config"]["flow_shapes"] == []
    for r in res["ratios"]:
        assert r["quick"] is True and r["value"] > 0
    if res["torch"] is not None:
        assert res["flow"][0]["torch_compile_skipped"] == "off (torch_compile=False)"
        assert res["precision"]["torch"]["cuda_matmul_allow_tf32"] is False
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"wrote {tmp_path / 'analysis.json'}"
