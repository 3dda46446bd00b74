"""experiments.transformers: one reduced run of the cpu preset (session fixture) checked on real numbers, resuming
from its stored cells, the figure, and named config errors."""

import math

import numpy as np
import pytest

import jaxvg
from experiments import transformers


@pytest.fixture
def quick(transformers_cpu):
    """The session's `--preset cpu` run at quick sizes (tests/conftest.py): init depths 2 and 8, rank
    depth 8, training at depth 2 for 100 steps, lr 3e-3, warmup 50 steps."""
    config, res, stored, _ = transformers_cpu
    return config, res, stored


@pytest.mark.slow  # the fixture: 67 s on 2 idle cores, most of it compiling 10 measurement and 5 training programs
def test_quick_run_numbers(quick):
    config, res, stored = quick
    cells = res["cells"]
    assert set(stored) == set(cells) and len(cells) == 4 + 6 + 5
    # Xiong et al. 2020: at L = 8 pre-LN's last-layer FFN W^2 gradient is below post-LN's (measured:
    # -0.52 vs +0.18 decades, seed means), and it falls with depth faster than post-LN's
    last = {
        n: np.mean(np.asarray(cells[f"init/{n}/L=8"]["log10_kernel_grad"], float)[:, -1])
        for n in ("pre", "post")
    }
    assert last["pre"] < last["post"] - 0.3
    ex = res["exponents"]
    assert ex["pre"]["slope"] < ex["post"]["slope"] and math.isfinite(ex["pre"]["last_minus_first"])
    # Noci et al. 2022: no norm, unscaled branches, 8 layers: the tokens of a sequence collapse
    # (c_L = 0.98 measured, from c_0 = 0.35); 1/sqrt(L) branches keep them apart (0.54)
    rank = {(r["norm"], r["scale"]): r for r in res["rank_rows"]}
    collapsed, scaled = rank[("none", "1")], rank[("none", "1/sqrt(L)")]
    assert collapsed["c_L"] > 0.9 and collapsed["c_0"] < 0.5
    assert scaled["c_L"] < collapsed["c_L"] - 0.2 and scaled["rank_L"] > collapsed["rank_L"]
    c = np.mean(np.asarray(cells["rank/none/a=1"]["c"], float), axis=0)
    assert c[-1] > c[len(c) // 2] > c[0]  # c_l rises with depth
    # post-LN, unscaled: collapsed too (c_L = 0.99), and the query/key kernels get about 1.2 decades
    # less gradient than the value kernels; 0.5 decades less with 1/sqrt(L) branches
    post, post_scaled = rank[("post", "1")], rank[("post", "1/sqrt(L)")]
    assert post["c_L"] > 0.9 and post["query_minus_value"] < -0.5 and post["key_minus_value"] < -0.5
    assert post_scaled["query_minus_value"] > post["query_minus_value"] + 0.3
    # training: every cell ran its seeds; accuracies are accuracies; nothing diverged at L = 2
    assert len(res["train_rows"]) == 5
    for row in res["train_rows"]:
        assert 0.0 <= row["final_accuracy"] <= 1.0 and row["diverged"] == 0
    assert {r["agrees"] for r in res["verdicts"]} <= {"yes", "no", "n/a"}


@pytest.mark.slow
def test_rerun_reuses_every_cell(quick, monkeypatch):
    config, res, stored = quick
    calls = []
    for name in ("fit", "gradient_flow", "signal_propagation"):
        monkeypatch.setattr(jaxvg, name, lambda *a, _n=name, **k: calls.append(_n))
    monkeypatch.setattr(jaxvg.train, "Trainer", lambda *a, **k: calls.append("Trainer"))
    again = transformers.run(config, done=stored)
    assert calls == [] and again["computed"] == []
    assert again["verdicts"] == res["verdicts"]


@pytest.mark.slow
def test_figure_and_summary(quick):
    config, res, _ = quick
    assert len(transformers.figure(res, config).axes) == 3
    text = transformers.summary_text(config, res)
    assert "pre-LN: last-layer gradient ~ L^(-1/2)" in text and "## Trainability" in text


def test_reversal_data():
    x, y = transformers.reversal_data(5, 4, 3, seed=0)
    assert x.shape == y.shape == (5, 4) and x.dtype == np.int32
    np.testing.assert_array_equal(y, x[:, ::-1])
    assert x.min() >= 0 and x.max() < 3


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"d_model": 10, "heads": 4}, r"`d_model`=10 must be divisible by `heads`=4"),
        ({"init_depths": 4}, r"`init_depths` must be a non-empty tuple"),
        ({"train_depths": (0,)}, r"`train_depths` must be an integer >= 1, got 0"),
        ({"target_accuracy": 1.5}, r"`target_accuracy` must lie in \[0.0, 1.0\]"),
        ({"batch_size": 99, "n_train": 10}, r"`batch_size` must be <= `n_train`=10"),
    ],
)
def test_bad_config_is_named(kw, match):
    with pytest.raises(ValueError, match=match):
        transformers.Config(**kw)


@pytest.mark.slow
def test_schema_rejects_a_broken_stored_cell(quick):
    from jaxvg.report import cells as cell_store
    from jaxvg.report import experiment

    _, _, stored = quick
    for key, field, value in (("rank/post/a=1", "c", None), ("init/pre/L=8", "log10_kernel_grad", [[0.1]])):
        cell = {k: v for k, v in stored[key].items() if k != field}
        if value is not None:
            cell[field] = value
        store = experiment.Cells({key: cell}, schema=transformers.CELL_SCHEMA)
        with pytest.warns(cell_store.CellWarning, match=key):
            assert not store.reuse(key, stored[key]["setup"])
        assert experiment.Cells(stored, schema=transformers.CELL_SCHEMA).reuse(key, stored[key]["setup"])
