"""docs.readme_numbers: the README's cheap numbers are what the code computes, every number the
README states is listed with its source, and every source field exists in what the commands write."""

import copy
import dataclasses
import json
import math
import re

import pytest

from docs import readme_numbers as rn
from jaxvg.report import files

README = rn.README.read_text()
CHEAP = [n for n in rn.NUMBERS if n.cheap]
EXPENSIVE = [n for n in rn.NUMBERS if not n.cheap]


@pytest.mark.parametrize("number", rn.NUMBERS, ids=lambda n: n.what)
def test_every_listed_number_is_in_the_readme_once(number):
    assert rn.readme_text(number, README)


@pytest.mark.parametrize("number", CHEAP, ids=lambda n: n.what)
def test_cheap_numbers_match_the_readme(number):
    text = rn.readme_text(number, README)
    value = number.compute()
    assert rn.matches(value, text), f"README says {text!r} for {number.what}; the code gives {value!r}"


def test_zero_gradient_blocks_of_the_readme_example():
    # the README's Net: float32 nnx.grad is exactly zero in 145 blocks (kernel and bias), some entry
    # zero in 149; gradient_flow reads all 200
    assert rn.zero_gradient_blocks() == {"all": 145, "any": 149}
    flow = rn.readme_example()["flow"]
    assert bool((abs(flow.log10_act_grad) < 200).all())


def test_every_number_with_a_decimal_point_in_the_gallery_is_listed():
    # the gallery's numbers (in prose) must each come from a Number, so none goes stale unseen
    gallery = README[README.index("### Gallery") : README.index("## Performance")]
    gallery = gallery.split("\n", 1)[1]  # not the heading's versions (jax 0.10.2, flax 0.12.8)
    listed = {rn.readme_text(n, README).replace("−", "-").lstrip("+") for n in rn.NUMBERS}
    skip = {"0.05"}  # a setting (σ_b² = 0.05), not a result
    for m in re.finditer(r"[−+]?\d+\.\d+", gallery):
        number = m.group(0).replace("−", "-").lstrip("+")
        assert number in listed or number in skip, (
            f"README gallery number {m.group(0)} has no source in docs.readme_numbers"
        )


def test_matches_reads_the_readme_rounding():
    assert rn.matches(-0.62877, "−0.629") and not rn.matches(-0.6276, "−0.629")
    assert rn.matches(0.0057, "+0.006") and rn.matches(145, "145") and rn.matches(128.12, "128")
    assert rn.matches("12-13", "12-13") and rn.matches("1e-15", "1e-15") and not rn.matches("1e-14", "1e-15")
    assert rn.matches("hurts", "hurts") and not rn.matches("helps", "hurts")


def test_lookup_follows_keys_and_row_selectors():
    data = {
        "rows": [{"k": "a", "d": 2, "v": 1.0}, {"k": "a", "d": 8, "v": 2.0}, {"k": "b", "d": 8, "v": 3.0}]
    }
    assert rn.lookup(data, ("rows", {"k": "a", "d": rn.MAX}, "v")) == 2.0
    assert rn.lookup(data, ("rows", {"k": "b*"}, "v")) == 3.0
    with pytest.raises(LookupError, match="2 rows match"):
        rn.lookup(data, ("rows", {"k": "a"}, "v"))
    with pytest.raises(LookupError, match="no 'w'"):
        rn.lookup(data, ("rows", 0, "w"))


def test_converters_word_results_as_the_readme_does():
    rows = [
        {"key": "post", "depth": 12, "reached": "0/4", "steps_to_target": math.nan, "final_accuracy": 0.151},
        {"key": "post", "depth": 6, "reached": "2/4", "steps_to_target": 322.5, "final_accuracy": 0.8712},
        {"key": "pre", "depth": 6, "reached": "4/4", "steps_to_target": 140.0, "final_accuracy": 1.0},
        {"key": "pre", "depth": 12, "reached": "4/4", "steps_to_target": 180.0, "final_accuracy": 0.998},
    ]
    assert rn._train_table_row("post")(rows) == "2/4, 322, 0.87 | 0/4, 0.15"
    assert rn._train_table_row("pre")(rows) == "4/4, 140, 1.00 | 4/4, 180, 1.00"
    assert rn._train_reached_or_accuracy("post")(rows) == "2/4, 0/4 (0.15)"
    assert rn._train_steps("pre", reached=True)(rows) == "4/4 at 140, 180"
    assert rn._train_steps("post", reached=True)(rows) == "2/4, 0/4"  # counts differ: no "at"
    assert rn._train_steps("post", reached=False)(rows) == "322, -"
    assert rn._train("post", 12, "failed")(rows) == "4/4" and rn._train("post", 6, "steps")(rows) == "322"
    cells = {
        "adding/T=00100/clip=on/lstm": {"T": 100, "success": 0.5, "test_mse": [0.0] * 4},
        "adding/T=00050/clip=on/lstm": {"T": 50, "success": 1.0, "test_mse": [0.0] * 4},
        "adding/T=00100/clip=off/lstm": {"T": 100, "success": 0.0, "test_mse": [0.0] * 4},
        "adding/T=00050/clip=on/gru": {"T": 50, "success": 0.25, "test_mse": [0.0] * 4},
    }
    assert rn._solved_counts("lstm", of=True)(cells) == "4, 2 of 4"
    assert rn._solved_counts("gru", of=False)(cells) == "1"
    assert rn._solved_up_to("lstm")(cells) == 50 and rn._solved_up_to("gru")(cells) == 0
    assert rn._min_s(763.4) == "12 min 43 s" and rn._min_s(59.6) == "1 min 0 s"
    rank = [{"norm": "post", "scale": "1", "query_minus_value": -5.0, "key_minus_value": -6.2}]
    assert rn._qk_minus_value("post", "1", -1.0)(rank) == pytest.approx(5.6)


def test_main_prints_every_number_and_its_source(capsys, tmp_path):
    assert rn.main(["--results", str(tmp_path)]) == 0  # nothing run there: expensive ones "not run"
    lines = capsys.readouterr().out.splitlines()
    out = "\n".join(lines)
    assert sum(line.startswith("not run ") for line in lines) == len(EXPENSIVE)
    assert sum(line.startswith("ok ") for line in lines) == len(CHEAP)
    assert "DIFFERS" not in out and "MISSING" not in out
    assert (
        "python -m experiments.remedies -> remedies/metrics.json: results.rows[key=lr_10x].steps_to_90" in out
    )
    # a results file with a different number: reported, and --check fails
    (tmp_path / "xor").mkdir()
    (tmp_path / "xor" / "metrics.json").write_text(json.dumps({"results": {"shallow": {"solved": 7}}}))
    assert rn.main(["--results", str(tmp_path), "--check"]) == 1
    assert "DIFFERS  xor: shallow seeds that solve it: README '8'" in capsys.readouterr().out


def test_a_benchmark_value_inside_the_readmes_runs_so_far_reads_spread(capsys, tmp_path):
    """A rerun's ratio that differs from the README's run but lies in its "runs so far" range
    (ends widened by half their last digit) is not a difference; outside it, it is."""
    assert rn.within(1.244, "1.05-1.24") and not rn.within(1.246, "1.05-1.24")
    assert rn.within("0.70-1.10", "0.38-1.10") and not rn.within("0.30-1.10", "0.38-1.10")
    assert rn.within(9.14, "9.1-17.7") and not rn.within(9.0, "9.1-17.7")
    (label, name) = ("training | `fit` chunks / hand-written", "fit chunks / plain scan")
    number = rn._bench(label, name)
    assert rn.spread_of(number, rn.README.read_text()) == rn.readme_text(
        dataclasses.replace(number, readme=number.spread)
    )
    (tmp_path / "benchmarks").mkdir()
    low, high = (float(v) for v in rn.spread_of(number, rn.README.read_text()).split("-"))
    for value, status in (((low + high) / 2 + 1e-3, "spread"), (high + 0.5, "DIFFERS")):
        ratios = [{"name": name + " (width 64)", "value": value}]
        (tmp_path / "benchmarks" / "run.json").write_text(json.dumps({"ratios": ratios}))
        assert rn.main(["--results", str(tmp_path), "--check"]) == (status == "DIFFERS")
        assert f"{status:8} benchmark: {name}: README" in capsys.readouterr().out


def test_a_benchmark_run_without_torch_reads_not_run_for_the_torch_rows(capsys, tmp_path):
    """`benchmarks.run` without the bench extra writes no jax-vs-torch ratios: their README rows
    (single values and ranges over shapes) read "not run", the others are still compared."""
    (tmp_path / "benchmarks").mkdir()
    readme = rn.readme_text(rn._bench("training | `fit` chunks / hand-written", "fit chunks / plain scan"))
    ratios = [{"name": "fit chunks / plain scan (width 64)", "value": float(readme)}]
    (tmp_path / "benchmarks" / "run.json").write_text(json.dumps({"ratios": ratios}))
    assert rn.main(["--results", str(tmp_path), "--check"]) == 0
    out = capsys.readouterr().out
    assert f"ok       benchmark: fit chunks / plain scan: README '{readme}'" in out
    assert "no ratio named gradient_flow jax / torch eager* in this run" in out
    assert "not run  benchmark: gradient_flow jax / torch.compile (range over shapes)" in out


def _metrics(module, config, res):
    """What `python -m experiments.NAME` writes as metrics.json's "results" (and the top level)."""
    return {"results": files.to_jsonable(module.report(config, res).results)}


def _at_depths(metrics, depths):
    """A copy of transformers' quick metrics whose training rows are those of the quick run's one
    depth repeated at `depths`: the presets' rows, to look fields up in (no run trains them)."""
    out = copy.deepcopy(metrics)
    rows = out["results"]["train_rows"]
    out["results"]["train_rows"] = [dict(r, depth=d) for d in depths for r in rows]
    return out


@pytest.mark.slow
def test_every_source_field_exists_in_the_quick_outputs(
    vanishing_quick,
    xor_quick,
    remedies_quick,
    phase_diagram_quick,
    isometry_quick,
    benchmarks_quick,
    through_time_quick,
    transformers_cpu,
):
    from experiments import isometry, phase_diagram, remedies, through_time, transformers, vanishing, xor

    config, res, _ = remedies_quick
    bench = files.as_path(benchmarks_quick[1])
    tfm_config, tfm_res, _, _ = transformers_cpu
    tfm = _metrics(transformers, tfm_config, tfm_res)
    cpu_depths = transformers.Config(**transformers.Config.PRESETS["cpu"]).train_depths
    stored = {k: through_time_quick[k] for k in (*through_time.METRICS_KEYS, "seconds")}
    outputs = {
        "vanishing/metrics.json": _metrics(vanishing, vanishing.Config(quick=True), vanishing_quick),
        "xor/metrics.json": _metrics(xor, xor.Config(quick=True), xor_quick),
        "remedies/metrics.json": _metrics(remedies, config, res),
        "phase_diagram/metrics.json": _metrics(
            phase_diagram, phase_diagram.Config(quick=True), phase_diagram_quick
        ),
        "isometry/metrics.json": _metrics(isometry, isometry.Config(quick=True), isometry_quick),
        "benchmarks/run.json": json.loads((bench / "run.json").read_text()),
        "through_time/metrics.json": {"results": files.to_jsonable(stored)},
        "transformers/metrics.json": tfm,
        "transformers-cpu/metrics.json": _at_depths(tfm, cpu_depths),
        "transformers-cpu-lr1e-3/metrics.json": _at_depths(tfm, cpu_depths),
    }
    assert set(outputs) >= {n.file for n in EXPENSIVE}
    torch = outputs["benchmarks/run.json"]["suites"]["analysis"]["ratios"]
    has_torch = any("torch" in r["name"] for r in torch)
    for n in EXPENSIVE:
        if "torch" in n.what and not has_torch:
            continue  # the jax/torch rows need the bench extra
        if n.file == "benchmarks/run.json":  # --quick runs other shapes: the ratio's name up to them
            ratios = outputs[n.file]["ratios"]
            if len(n.field) > 1:
                name = n.field[1]["name"]
            else:  # a range over shapes (`_bench_range`): its ratio name is in `what`
                name = n.what.removeprefix("benchmark: ").removesuffix(" (range over shapes)")
            label = name.rstrip("*").split(" (")[0]
            if "torch.compile" in label and not any("torch.compile" in r["name"] for r in ratios):
                continue  # --quick leaves torch.compile out
            assert any(r["name"].startswith(label) for r in ratios), n.what
            continue
        value = rn.lookup(outputs[n.file], n.field)
        if value is None and isinstance(n.field[-1], str):  # there but empty at quick sizes (e.g.
            parent = rn.lookup(outputs[n.file], n.field[:-1])  # no float32 underflow at T = 50)
            assert isinstance(parent, dict) and n.field[-1] in parent, n.what
            continue
        if n.convert is not None:
            value = n.convert(value)
        assert value is not None, n.what
