"""jaxvg.results: strict JSON, atomic writes, CSV, Markdown tables, resumable sweep cells."""

import csv
import dataclasses
import json
import math
import os
import pathlib
import re
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from jaxvg.report import results


@struct.dataclass
class _Report:  # a flax.struct result, like analysis.GradientFlow
    log10_gain: jax.Array
    loss: jax.Array


@dataclasses.dataclass(frozen=True)
class _Config:
    depth: int = 3
    activations: tuple[str, ...] = ("tanh", "relu")
    out_dir: str = "unused"


# --------------------------------------------------------------------------- JSON


def test_to_jsonable_converts_every_supported_type():
    obj = {
        "np": np.array([[1.0, 2.5]], dtype=np.float32),
        "jax": jnp.arange(3),
        "scalar": np.float64(0.5),
        "int": np.int64(7),
        "bool": np.bool_(True),
        "tuple": (1, (2, 3)),
        "set": {3, 1},
        "path": pathlib.Path("a/b.json"),
        "struct": _Report(log10_gain=jnp.array([-0.5, jnp.nan]), loss=jnp.float32(1.25)),
        "config": _Config(),
        3: "int key",
        "key": jax.random.key(0),
        "bf16": jnp.array([1.5], dtype=jnp.bfloat16),
    }
    out = results.to_jsonable(obj)
    assert out["np"] == [[1.0, 2.5]]
    assert out["jax"] == [0, 1, 2]
    assert out["scalar"] == 0.5 and type(out["scalar"]) is float
    assert out["int"] == 7 and type(out["int"]) is int
    assert out["bool"] is True
    assert out["tuple"] == [1, [2, 3]]
    assert out["set"] == [1, 3]
    assert out["path"] == "a/b.json"
    assert out["struct"] == {"log10_gain": [-0.5, None], "loss": 1.25}
    assert out["config"] == {"depth": 3, "activations": ["tanh", "relu"], "out_dir": "unused"}
    assert out["3"] == "int key"
    assert len(out["key"]) == 2 and all(isinstance(v, int) for v in out["key"])
    assert out["bf16"] == [1.5]
    json.dumps(out, allow_nan=False)  # strict JSON: raises on NaN/Inf


def test_nonfinite_values_become_null_everywhere():
    obj = {
        "a": math.nan,
        "b": [math.inf, -math.inf, 1.0],
        "c": np.array([[np.nan, 2.0]]),
        "d": np.float32("nan"),
    }
    assert results.to_jsonable(obj) == {"a": None, "b": [None, None, 1.0], "c": [[None, 2.0]], "d": None}
    # NaN comes back from np.asarray(..., dtype=float), as the module docstring says.
    back = np.asarray(results.to_jsonable(np.array([1.0, np.nan, np.inf])), dtype=float)
    np.testing.assert_array_equal(np.isnan(back), [False, True, True])


def test_to_jsonable_rejects_unknown_types_by_name():
    with pytest.raises(TypeError, match="object"):
        results.to_jsonable({"x": object()})
    with pytest.raises(TypeError, match="complex"):
        results.to_jsonable(np.array([1j]))


def test_write_read_json_round_trip(tmp_path):
    obj = {"x": np.linspace(0, 1, 5), "nested": {"t": (1, "a")}, "nan": np.nan}
    path = results.write_json(tmp_path / "deep" / "dir" / "m.json", obj)
    assert path == tmp_path / "deep" / "dir" / "m.json"
    back = results.read_json(path)
    assert back == {"x": [0.0, 0.25, 0.5, 0.75, 1.0], "nested": {"t": [1, "a"]}, "nan": None}
    assert "NaN" not in path.read_text()
    assert os.listdir(path.parent) == ["m.json"]  # no temporary file left behind


def test_write_json_is_atomic_on_failure(tmp_path):
    path = results.write_json(tmp_path / "m.json", {"old": 1})
    with pytest.raises(TypeError):
        results.write_json(path, {"new": object()})  # fails while converting: old file intact
    assert results.read_json(path) == {"old": 1}

    # Interrupt the write itself (after the temporary file exists): old file intact, no debris.
    real_replace = os.replace

    def failing_replace(src, dst):
        raise KeyboardInterrupt

    os.replace = failing_replace
    try:
        with pytest.raises(KeyboardInterrupt):
            results.write_json(path, {"new": 2})
    finally:
        os.replace = real_replace
    assert results.read_json(path) == {"old": 1}
    assert os.listdir(tmp_path) == ["m.json"]


def test_environment_has_versions_device_and_time():
    env = results.environment()
    for key in ("python", "jax", "jaxlib", "flax", "optax", "numpy", "jaxvg"):
        assert isinstance(env[key], str) and env[key], key
    assert env["jax"] == jax.__version__
    assert env["backend"] == jax.default_backend()
    assert env["device_count"] == jax.device_count()
    assert env["device_kinds"] == sorted({d.device_kind for d in jax.devices()})
    assert env["hostname"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", env["timestamp_utc"])
    assert env["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", env["git_commit"])
    json.dumps(env, allow_nan=False)


def test_environment_without_git(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    env = results.environment()
    assert env["git_commit"] is None and env["git_dirty"] is None


def test_write_metrics_layout(tmp_path):
    report = _Report(log10_gain=jnp.array([-0.25, -0.5]), loss=jnp.float32(0.5))
    path = results.write_metrics(tmp_path / "out", _Config(), {"tanh": report}, seeds=[0, 1])
    assert path == tmp_path / "out" / "metrics.json"
    data = results.read_json(path)
    assert list(data) == ["config", "seeds", "environment", "results"]
    assert data["config"] == {"depth": 3, "activations": ["tanh", "relu"], "out_dir": "unused"}
    assert data["seeds"] == [0, 1]
    assert data["environment"]["jax"] == jax.__version__
    assert data["results"] == {"tanh": {"log10_gain": [-0.25, -0.5], "loss": 0.5}}
    with pytest.raises(TypeError, match="`config`"):
        results.write_metrics(tmp_path, 3, {})


# --------------------------------------------------------------------------- CSV and tables


def test_write_csv_union_of_keys_in_first_seen_order(tmp_path):
    rows = [
        {"activation": "tanh", "layer": 1, "gain": -0.1},
        {"activation": "relu", "gain": np.float32(np.nan), "extra": [1, 2]},
        {"layer": np.int64(3), "activation": "sig", "flag": True, "none": None},
    ]
    path = results.write_csv(tmp_path / "r.csv", rows)
    with open(path, newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["activation", "layer", "gain", "extra", "flag", "none"]
    assert table[1] == ["tanh", "1", "-0.1", "", "", ""]
    assert table[2] == ["relu", "", "nan", "[1, 2]", "", ""]
    assert table[3] == ["sig", "3", "", "", "True", ""]
    # numpy reads the numbers back exactly
    assert float(table[1][2]) == -0.1 and math.isnan(float(table[2][2]))


def test_format_table_is_aligned_markdown():
    rows = [
        {"activation": "sigmoid", "decades/layer": -0.6254321, "layers": 50},
        {"activation": "relu", "decades/layer": np.float32(-0.001), "layers": 50, "note": "a|b"},
        {"activation": "tanh", "decades/layer": np.nan, "layers": None},
    ]
    text = results.format_table(rows)
    lines = text.split("\n")
    assert lines[0] == "| activation | decades/layer | layers | note |"
    assert lines[1] == "| :--------- | ------------: | -----: | :--- |"
    assert lines[2] == "| sigmoid    |       -0.6254 |     50 |      |"
    assert lines[3] == "| relu       |        -0.001 |     50 | a\\|b |"
    assert lines[4] == "| tanh       |           nan |        |      |"
    assert len({len(line) for line in lines}) == 1  # aligned
    # Markdown: every row has as many unescaped pipes as the header.
    assert len({len(re.findall(r"(?<!\\)\|", line)) for line in lines}) == 1


def test_format_table_columns_and_floatfmt():
    rows = [{"a": 1.23456, "b": "x"}, {"a": 2.0, "b": "yy"}]
    assert results.format_table(rows, ["b", "a"], floatfmt=".2f") == (
        "| b    |    a |\n| :--- | ---: |\n| x    | 1.23 |\n| yy   | 2.00 |"
    )
    assert results.format_table([]) == ""
    assert results.format_table([], columns=["a"]) == "| a    |\n| :--- |"


def test_write_summary(tmp_path):
    path = results.write_summary(tmp_path / "o", "# Title\n\nbody")
    assert path == tmp_path / "o" / "summary.md"
    assert path.read_text() == "# Title\n\nbody\n"


# --------------------------------------------------------------------------- resumable sweeps


def _toy_run(keys, *, on_cell=None, done=None, calls=None):
    """A sweep written the way experiments write one: compute missing cells, reuse done ones."""
    done = done or {}
    out = {}
    for key in keys:
        if key in done:
            out[key] = done[key]
            continue
        if calls is not None:
            calls.append(key)
        if key == "boom":
            raise KeyboardInterrupt  # the run is interrupted here
        cell = {"value": np.float32(len(key)), "array": np.arange(2)}
        out[key] = results.to_jsonable(cell)
        if on_cell is not None:
            on_cell(key, cell)
    return out


def test_cell_writer_resume_after_interruption(tmp_path):
    keys = ["sigmoid/w=256", "tanh/w=256", "boom", "relu/w=256"]
    calls: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        _toy_run(
            keys, on_cell=results.cell_writer(tmp_path), done=results.finished_cells(tmp_path), calls=calls
        )
    assert calls == ["sigmoid/w=256", "tanh/w=256", "boom"]
    done = results.finished_cells(tmp_path)
    assert done == {
        "sigmoid/w=256": {"value": 13.0, "array": [0, 1]},
        "tanh/w=256": {"value": 10.0, "array": [0, 1]},
    }

    calls.clear()
    keys[2] = "fixed"
    out = _toy_run(keys, on_cell=results.cell_writer(tmp_path), done=done, calls=calls)
    assert calls == ["fixed", "relu/w=256"]  # finished cells are skipped
    assert out["sigmoid/w=256"] == {"value": 13.0, "array": [0, 1]}
    assert set(results.finished_cells(tmp_path)) == set(keys)


def test_cell_writer_accepts_a_config_with_out_dir(tmp_path):
    config = _Config(out_dir=str(tmp_path / "exp"))
    results.cell_writer(config)("k", {"x": 1})
    assert results.finished_cells(config) == {"k": {"x": 1}}
    assert (tmp_path / "exp" / "cells" / "k.json").exists()


def test_cell_keys_are_sanitised_and_unique(tmp_path):
    write = results.cell_writer(tmp_path)
    keys = ["a/b", "a_b", "../escape", "x y:z*", "é", ".", "a" * 300]
    for i, key in enumerate(keys):
        write(key, {"i": i})
    names = os.listdir(tmp_path / "cells")
    assert len(names) == len(keys)
    assert all(re.fullmatch(r"[A-Za-z0-9._=+-]+\.json", n) and not n.startswith(".") for n in names)
    assert all(len(n) < 130 for n in names)
    assert results.finished_cells(tmp_path) == {key: {"i": i} for i, key in enumerate(keys)}
    assert not (tmp_path.parent / "escape.json").exists()
    with pytest.raises(ValueError, match="`key` must be a non-empty string"):
        write("", {})


def test_finished_cells_skips_partial_and_corrupt_files(tmp_path):
    assert results.finished_cells(tmp_path / "missing") == {}
    results.cell_writer(tmp_path)("good", {"v": 1.5})
    cells = tmp_path / "cells"
    (cells / "truncated.json").write_text('{"key": "truncated", "cell": {"v": ')
    (cells / ".good.json.abc123.tmp").write_text('{"key": "tmp", "cell": 1}')
    (cells / "notacell.json").write_text("[1, 2, 3]")
    (cells / "binary.json").write_bytes(b"\xff\xfe\x00")
    (cells / "empty.json").write_text("")
    assert results.finished_cells(tmp_path) == {"good": {"v": 1.5}}


def test_run_resumable_stores_cells_and_reuses_them(tmp_path):
    import dataclasses

    from jaxvg.report import results

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        out_dir: str

    calls = []

    def run(config, *, on_cell=None, done=(), log=None):
        out = {}
        for key in ("a", "b"):
            if key in done:
                out[key] = done[key]
                continue
            calls.append(key)
            out[key] = {"value": len(calls)}
            on_cell(key, out[key])
        if log is not None:
            log("done")
        return out

    cfg = Cfg(str(tmp_path))
    first = results.run_resumable(run, cfg)
    messages = []
    second = results.run_resumable(run, cfg, log=messages.append)
    assert calls == ["a", "b"]  # the rerun computed nothing
    assert first == second == {"a": {"value": 1}, "b": {"value": 2}}
    assert messages == ["done"]
