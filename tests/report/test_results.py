"""jaxvg.report's results helpers: files (strict JSON, atomic writes, paths), provenance, tables,
and resumable sweep cells (checksums, schemas, config keys, the directory lock)."""

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

from jaxvg import report
from jaxvg.report import provenance


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
    out = report.to_jsonable(obj)
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
    assert report.to_jsonable(obj) == {"a": None, "b": [None, None, 1.0], "c": [[None, 2.0]], "d": None}
    # NaN comes back from np.asarray(..., dtype=float), as the module docstring says.
    back = np.asarray(report.to_jsonable(np.array([1.0, np.nan, np.inf])), dtype=float)
    np.testing.assert_array_equal(np.isnan(back), [False, True, True])


def test_to_jsonable_rejects_unknown_types_by_name():
    with pytest.raises(TypeError, match="object"):
        report.to_jsonable({"x": object()})
    with pytest.raises(TypeError, match="complex"):
        report.to_jsonable(np.array([1j]))


def test_write_read_json_round_trip(tmp_path):
    obj = {"x": np.linspace(0, 1, 5), "nested": {"t": (1, "a")}, "nan": np.nan}
    path = report.write_json(tmp_path / "deep" / "dir" / "m.json", obj)
    assert path == tmp_path / "deep" / "dir" / "m.json"
    back = report.read_json(path)
    assert back == {"x": [0.0, 0.25, 0.5, 0.75, 1.0], "nested": {"t": [1, "a"]}, "nan": None}
    assert "NaN" not in path.read_text()
    assert os.listdir(path.parent) == ["m.json"]  # no temporary file left behind


def test_write_json_is_atomic_on_failure(tmp_path):
    path = report.write_json(tmp_path / "m.json", {"old": 1})
    with pytest.raises(TypeError):
        report.write_json(path, {"new": object()})  # fails while converting: old file intact
    assert report.read_json(path) == {"old": 1}

    # Interrupt the write itself (after the temporary file exists): old file intact, no debris.
    real_replace = os.replace

    def failing_replace(src, dst):
        raise KeyboardInterrupt

    os.replace = failing_replace
    try:
        with pytest.raises(KeyboardInterrupt):
            report.write_json(path, {"new": 2})
    finally:
        os.replace = real_replace
    assert report.read_json(path) == {"old": 1}
    assert os.listdir(tmp_path) == ["m.json"]


def test_environment_has_versions_device_and_time():
    env = report.environment()
    for key in ("python", "jax", "jaxlib", "flax", "optax", "numpy", "jaxvg"):
        assert isinstance(env[key], str) and env[key], key
    assert env["jax"] == jax.__version__
    assert env["backend"] == jax.default_backend()
    assert env["device_count"] == jax.device_count()
    assert env["device_kinds"] == sorted({d.device_kind for d in jax.devices()})
    assert env["hostname"]
    assert env["xla_flags"] == os.environ.get("XLA_FLAGS", "")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", env["timestamp_utc"])
    assert env["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", env["git_commit"])
    json.dumps(env, allow_nan=False)


def test_environment_without_git(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    env = report.environment()
    assert env["git_commit"] is None and env["git_dirty"] is None


def test_write_metrics_layout(tmp_path):
    flow = _Report(log10_gain=jnp.array([-0.25, -0.5]), loss=jnp.float32(0.5))
    path = report.write_metrics(tmp_path / "out", _Config(), {"tanh": flow}, seeds=[0, 1])
    assert path == tmp_path / "out" / "metrics.json"
    data = report.read_json(path)
    assert list(data) == ["config", "seeds", "environment", "results"]
    assert data["config"] == {"depth": 3, "activations": ["tanh", "relu"], "out_dir": "unused"}
    assert data["seeds"] == [0, 1]
    assert data["environment"]["jax"] == jax.__version__
    assert data["results"] == {"tanh": {"log10_gain": [-0.25, -0.5], "loss": 0.5}}
    with pytest.raises(TypeError, match="`config`"):
        report.write_metrics(tmp_path, 3, {})


# --------------------------------------------------------------------------- CSV and tables


def test_write_csv_union_of_keys_in_first_seen_order(tmp_path):
    rows = [
        {"activation": "tanh", "layer": 1, "gain": -0.1},
        {"activation": "relu", "gain": np.float32(np.nan), "extra": [1, 2]},
        {"layer": np.int64(3), "activation": "sig", "flag": True, "none": None},
    ]
    path = report.write_csv(tmp_path / "r.csv", rows)
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
    text = report.format_table(rows)
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
    assert report.format_table(rows, ["b", "a"], floatfmt=".2f") == (
        "| b    |    a |\n| :--- | ---: |\n| x    | 1.23 |\n| yy   | 2.00 |"
    )
    assert report.format_table([]) == ""
    assert report.format_table([], columns=["a"]) == "| a    |\n| :--- |"


def test_write_summary(tmp_path):
    path = report.write_summary(tmp_path / "o", "# Title\n\nbody")
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
        out[key] = report.to_jsonable(cell)
        if on_cell is not None:
            on_cell(key, cell)
    return out


def test_cell_writer_resume_after_interruption(tmp_path):
    keys = ["sigmoid/w=256", "tanh/w=256", "boom", "relu/w=256"]
    calls: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        _toy_run(
            keys, on_cell=report.cell_writer(tmp_path), done=report.finished_cells(tmp_path), calls=calls
        )
    assert calls == ["sigmoid/w=256", "tanh/w=256", "boom"]
    done = report.finished_cells(tmp_path)
    assert done == {
        "sigmoid/w=256": {"value": 13.0, "array": [0, 1]},
        "tanh/w=256": {"value": 10.0, "array": [0, 1]},
    }

    calls.clear()
    keys[2] = "fixed"
    out = _toy_run(keys, on_cell=report.cell_writer(tmp_path), done=done, calls=calls)
    assert calls == ["fixed", "relu/w=256"]  # finished cells are skipped
    assert out["sigmoid/w=256"] == {"value": 13.0, "array": [0, 1]}
    assert set(report.finished_cells(tmp_path)) == set(keys)


def test_cell_writer_accepts_a_config_with_out_dir(tmp_path):
    config = _Config(out_dir=str(tmp_path / "exp"))
    report.cell_writer(config)("k", {"x": 1})
    assert report.finished_cells(config) == {"k": {"x": 1}}
    assert (tmp_path / "exp" / "cells" / "k.json").exists()


def test_cell_keys_are_sanitised_and_unique(tmp_path):
    write = report.cell_writer(tmp_path)
    keys = ["a/b", "a_b", "../escape", "x y:z*", "é", ".", "a" * 300]
    for i, key in enumerate(keys):
        write(key, {"i": i})
    names = os.listdir(tmp_path / "cells")
    assert len(names) == len(keys)
    assert all(re.fullmatch(r"[A-Za-z0-9._=+-]+\.json", n) and not n.startswith(".") for n in names)
    assert all(len(n) < 130 for n in names)
    assert report.finished_cells(tmp_path) == {key: {"i": i} for i, key in enumerate(keys)}
    assert not (tmp_path.parent / "escape.json").exists()
    with pytest.raises(ValueError, match="`key` must be a non-empty string"):
        write("", {})


def test_finished_cells_skips_partial_and_corrupt_files(tmp_path):
    assert report.finished_cells(tmp_path / "missing") == {}
    report.cell_writer(tmp_path)("good", {"v": 1.5})
    cells = tmp_path / "cells"
    (cells / "truncated.json").write_text('{"key": "truncated", "cell": {"v": ')
    (cells / ".good.json.abc123.tmp").write_text('{"key": "tmp", "cell": 1}')
    (cells / "notacell.json").write_text("[1, 2, 3]")
    (cells / "binary.json").write_bytes(b"\xff\xfe\x00")
    (cells / "empty.json").write_text("")
    with pytest.warns(report.CellWarning) as caught:
        assert report.finished_cells(tmp_path) == {"good": {"v": 1.5}}
    warned = sorted(str(w.message).split()[2] for w in caught)  # "stored cell PATH is not reused"
    assert warned == sorted(
        str(cells / n) for n in ("truncated.json", "notacell.json", "binary.json", "empty.json")
    )


def test_run_resumable_stores_cells_and_reuses_them(tmp_path):
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
    first = report.run_resumable(run, cfg)
    messages = []
    second = report.run_resumable(run, cfg, log=messages.append)
    assert calls == ["a", "b"]  # the rerun computed nothing
    assert first == second == {"a": {"value": 1}, "b": {"value": 2}}
    assert messages == ["done"]


# --------------------------------------------------------------------------- paths


def _empty_path_calls(tmp_path):
    config = _Config(out_dir="")
    return {
        "write_json": (lambda: report.write_json("", {}), "path"),
        "read_json": (lambda: report.read_json(""), "path"),
        "write_csv": (lambda: report.write_csv("", [{"a": 1}]), "path"),
        "write_summary": (lambda: report.write_summary("", "text"), "out_dir"),
        "write_metrics": (lambda: report.write_metrics("", _Config(), {}), "out_dir"),
        "check_writable": (lambda: report.check_writable(""), "out_dir"),
        "open_atomic": (lambda: report.open_atomic("").__enter__(), "path"),
        "cell_writer": (lambda: report.cell_writer(""), "out_dir"),
        "cell_writer(config)": (lambda: report.cell_writer(config), "out_dir"),
        "finished_cells": (lambda: report.finished_cells(""), "out_dir"),
        "run_resumable": (lambda: report.run_resumable(_never_called, config), "out_dir"),
        "out_dir_lock": (lambda: report.out_dir_lock("").__enter__(), "out_dir"),
        "environment(repo)": (lambda: report.environment(repo=""), "repo"),
    }


def _never_called(*args, **kwargs):
    raise AssertionError("nothing may be computed for a bad out_dir")


@pytest.mark.parametrize("name", list(_empty_path_calls(pathlib.Path())))
def test_an_empty_path_is_refused_by_name_and_nothing_is_written(name, tmp_path, monkeypatch):
    """ "" would mean the working directory (and f"{out}/x.csv" the root): a ValueError that names
    the argument, and no file appears in the working directory."""
    monkeypatch.chdir(tmp_path)
    call, arg = _empty_path_calls(tmp_path)[name]
    with pytest.raises(ValueError, match=rf"`{arg}` must be a non-empty path, got ''"):
        call()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("bad", [b"results", 3, None])
def test_paths_must_be_str_or_pathlike(bad):
    with pytest.raises(TypeError, match="`path` must be a str or os.PathLike path"):
        report.write_json(bad, {})


def test_helpers_take_str_and_pathlike(tmp_path):
    for out in (str(tmp_path / "s"), tmp_path / "p"):
        assert report.write_json(os.path.join(out, "m.json") if isinstance(out, str) else out / "m.json", 1)
        assert report.write_summary(out, "x") == pathlib.Path(out) / "summary.md"
        assert report.write_csv(pathlib.Path(out) / "r.csv", [{"a": 1}]).read_text() == "a\n1\n"
        report.cell_writer(out)("k", 1)
        assert report.finished_cells(out) == {"k": 1}


def test_check_writable_creates_the_directory_and_leaves_nothing(tmp_path):
    out = report.check_writable(tmp_path / "a" / "b")
    assert out == tmp_path / "a" / "b" and out.is_dir() and os.listdir(out) == []


def test_check_writable_names_the_path_when_it_cannot_write(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    for bad in (blocker, blocker / "sub"):
        with pytest.raises(OSError, match=re.escape(f"output directory {str(bad)!r} cannot be written")):
            report.check_writable(bad)
    if os.geteuid() != 0:  # root writes anywhere: the mode test means something only for others
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(PermissionError, match=re.escape(str(locked))):
            report.check_writable(locked)


def test_run_resumable_checks_the_directory_before_computing(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    with pytest.raises(OSError, match="cannot be written"):
        report.run_resumable(_never_called, _Config(out_dir=str(blocker / "out")))
    with pytest.raises(TypeError, match="`config` must have an `out_dir` field"):
        report.run_resumable(_never_called, {"out_dir": str(tmp_path)})


# --------------------------------------------------------------------------- provenance, read-only


def _git(repo, *args):
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
    ).stdout.strip()


def _git_repo(path, name="tracked.txt"):
    """A fresh repository at `path` with one committed file; returns its commit."""
    path.mkdir()
    _git(path, "init", "-q")
    (path / name).write_text("a\n")
    _git(path, "add", name)
    _git(path, "commit", "-q", "-m", "first")
    return _git(path, "rev-parse", "HEAD")


def _index_state(repo):
    stat = (repo / ".git" / "index").stat()
    return stat.st_mtime_ns, stat.st_ino, (repo / ".git" / "index").read_bytes()


def test_environment_reads_git_without_touching_the_index(tmp_path):
    """`git status` rewrites .git/index (under .git/index.lock) when file times changed; provenance
    must not: after touching a tracked file, environment(repo=...) leaves the index as it was."""
    repo = tmp_path / "repo"
    head = _git_repo(repo)

    def touch():  # same content, a new modification time: the index's stat data is stale
        t = (repo / "tracked.txt").stat().st_mtime_ns + 2_000_000_000
        os.utime(repo / "tracked.txt", ns=(t, t))

    touch()
    before = _index_state(repo)
    env = report.environment(repo=repo)
    assert (env["git_commit"], env["git_dirty"]) == (head, False)
    assert _index_state(repo) == before and not (repo / ".git" / "index.lock").exists()

    (repo / "tracked.txt").write_text("b\n")
    assert report.environment(repo=repo / ".")["git_dirty"] is True
    assert _index_state(repo) == before

    # control: the plain `git status` the old code ran does rewrite it, so the test can fail
    (repo / "tracked.txt").write_text("a\n")
    touch()
    subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], check=True, capture_output=True)
    assert _index_state(repo)[:2] != before[:2]


def test_environment_outside_a_checkout_and_the_default_checkout(tmp_path, monkeypatch):
    assert report.environment(repo=tmp_path)["git_commit"] is None
    # a jaxvg installed inside some other repository (a venv in a project) records no commit
    repo = tmp_path / "project"
    _git_repo(repo)
    (repo / "site-packages").mkdir()
    monkeypatch.setattr(provenance, "_REPO_ROOT", repo / "site-packages")
    env = report.environment()
    assert env["git_commit"] is None and env["git_dirty"] is None


def test_config_key_is_stable_and_ignores_only_what_it_is_told():
    base = report.config_key(_Config())
    assert re.fullmatch(r"[0-9a-f]{16}", base)
    assert report.config_key(_Config(out_dir="elsewhere")) == base
    assert report.config_key({"depth": 3, "activations": ["tanh", "relu"]}) == base  # mapping == dataclass
    assert report.config_key(_Config(depth=4)) != base
    assert report.config_key(_Config(activations=("tanh",))) != base
    assert report.config_key(_Config(depth=4), ignore=("out_dir", "depth")) == report.config_key(
        _Config(), ignore=("out_dir", "depth")
    )
    with pytest.raises(TypeError, match="config field `fn` cannot be hashed"):
        report.config_key({"fn": object()})
    with pytest.raises(ValueError, match="`ignore` must be a collection of field names"):
        report.config_key(_Config(), ignore="out_dir")
    with pytest.raises(TypeError, match="`config` must be a dataclass instance or a mapping"):
        report.config_key(3)


# --------------------------------------------------------------------------- stored cells: checks


@dataclasses.dataclass(frozen=True)
class _Sweep:
    """A config whose `run` stores one cell per key, counting what it computes."""

    out_dir: str
    steps: int = 10


def _sweep_run(calls, keys=("a", "b")):
    def run(config, *, on_cell, done):
        out = {}
        for key in keys:
            if key in done:
                out[key] = done[key]
                continue
            calls.append(key)
            out[key] = {"accuracy": 0.5 + config.steps / 100, "curve": [1.0, 0.5], "steps": config.steps}
            on_cell(key, out[key])
        return out

    return run


_SCHEMA = {"accuracy": float, "curve": list[float | None], "steps": int}


def _stored_path(out_dir, config, key):
    return pathlib.Path(out_dir) / "cells" / f"config-{report.config_key(config)}" / report.cell_filename(key)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda cell: cell.pop("accuracy"), "lacks the field 'accuracy'"),
        (lambda cell: cell.update(accuracy=[0.137]), r"cell\['accuracy'\] must be float, got list"),
        (lambda cell: cell.update(accuracy=[]), r"cell\['accuracy'\] must be float, got list"),
        (lambda cell: cell.update(accuracy=True), r"cell\['accuracy'\] must be float, got bool"),
        (lambda cell: cell.update(curve=[1.0, "x"]), r"cell\['curve'\]\[1\] must be float \| None"),
        (lambda cell: cell.update(steps=10.5), r"cell\['steps'\] must be int, got float"),
    ],
)
def test_a_stored_cell_that_breaks_its_schema_is_recomputed_with_a_warning(tmp_path, edit, reason):
    """Valid JSON, valid checksum (written by a buggy run, not corrupted), but not what the
    experiment needs: recomputed, never used as is and never a crash."""
    config, calls = _Sweep(str(tmp_path)), []
    report.run_resumable(_sweep_run(calls), config, schema=_SCHEMA)
    assert calls == ["a", "b"]
    path = _stored_path(tmp_path, config, "a")
    good = report.read_json(path)["cell"]
    bad = json.loads(json.dumps(good))
    edit(bad)
    report.cell_writer(tmp_path, config=config)("a", bad)  # stored with a valid checksum

    calls.clear()
    with pytest.warns(
        report.CellWarning, match=rf"stored cell {re.escape(str(path))} is not reused: .*{reason}"
    ):
        out = report.run_resumable(_sweep_run(calls), config, schema=_SCHEMA)
    assert calls == ["a"] and out["a"] == good
    assert report.read_json(path)["cell"] == good  # rewritten by the recomputation
    calls.clear()
    report.run_resumable(_sweep_run(calls), config, schema=_SCHEMA)  # no warning: all valid now
    assert calls == []


def test_a_callable_schema(tmp_path):
    report.cell_writer(tmp_path)("a", {"n": 2})
    report.cell_writer(tmp_path)("b", {"n": -1})

    def positive(cell):
        if cell["n"] <= 0:
            raise ValueError(f"n must be positive, got {cell['n']}")

    with pytest.warns(report.CellWarning, match="ValueError: n must be positive, got -1"):
        assert report.finished_cells(tmp_path, schema=positive) == {"a": {"n": 2}}
    with pytest.warns(report.CellWarning, match="the validator returned False"):
        assert report.finished_cells(tmp_path, schema=lambda c: c["n"] > 0) == {"a": {"n": 2}}
    with pytest.raises(TypeError, match="`schema` must be a mapping"):
        report.finished_cells(tmp_path, schema=3)
    with pytest.raises(TypeError, match=r"`schema` entry for cell\['n'\] must be a type"):
        report.finished_cells(tmp_path, schema={"n": "int"})


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (lambda r: r["cell"].update(accuracy=0.99), "checksum mismatch"),  # edited by hand
        (lambda r: r.update(key="b"), "checksum mismatch"),  # another cell's key
        (lambda r: r.pop("sha256"), "no checksum"),  # the format of an older jaxvg
    ],
)
def test_a_corrupted_cell_is_recomputed_with_a_warning(tmp_path, corrupt, reason):
    config, calls = _Sweep(str(tmp_path)), []
    report.run_resumable(_sweep_run(calls, keys=("a",)), config)
    path = _stored_path(tmp_path, config, "a")
    record = report.read_json(path)
    assert set(record) == {"key", "config_key", "config", "cell", "sha256"}
    assert record["config"] == {"out_dir": str(tmp_path), "steps": 10}
    corrupt(record)
    path.write_text(json.dumps(record))  # still valid JSON with every field

    calls.clear()
    with pytest.warns(report.CellWarning, match=rf"{re.escape(str(path))} is not reused: {reason}"):
        out = report.run_resumable(_sweep_run(calls, keys=("a",)), config)
    assert calls == ["a"] and out["a"]["accuracy"] == 0.6


# --------------------------------------------------------------------------- stored cells: configs


def test_two_configs_in_one_directory_never_share_or_overwrite_cells(tmp_path):
    """Cells are keyed by the config: a run with another config computes its own cells beside the
    first run's, and each config then reuses only its own."""
    short, long = _Sweep(str(tmp_path), steps=10), _Sweep(str(tmp_path), steps=40)
    calls = []
    first = report.run_resumable(_sweep_run(calls), short)
    second = report.run_resumable(_sweep_run(calls), long)
    assert calls == ["a", "b", "a", "b"]  # the long run did not take the short run's cells
    assert first["a"]["steps"] == 10 and second["a"]["steps"] == 40
    assert len(list((tmp_path / "cells").glob("config-*/*.json"))) == 4

    calls.clear()
    assert report.run_resumable(_sweep_run(calls), short) == first
    assert report.run_resumable(_sweep_run(calls), long) == second
    assert calls == []
    assert report.finished_cells(tmp_path, config=short) == first
    with pytest.raises(ValueError, match=r"share key 'a'; pass `config=`"):
        report.finished_cells(tmp_path)


def test_unkeyed_cells_are_offered_to_every_config_and_keyed_ones_win(tmp_path):
    config = _Sweep(str(tmp_path))
    report.cell_writer(tmp_path)("a", {"from": "unkeyed"})
    report.cell_writer(tmp_path)("b", {"from": "unkeyed"})
    report.cell_writer(tmp_path, config=config)("a", {"from": "keyed"})
    assert report.finished_cells(tmp_path, config=config) == {
        "a": {"from": "keyed"},
        "b": {"from": "unkeyed"},
    }
    assert report.finished_cells(tmp_path) == {"a": {"from": "keyed"}, "b": {"from": "unkeyed"}}
    other = dataclasses.replace(config, steps=1)
    assert report.finished_cells(tmp_path, config=other) == {
        "a": {"from": "unkeyed"},
        "b": {"from": "unkeyed"},
    }


def test_a_cell_moved_into_another_configs_directory_is_not_reused(tmp_path):
    a, b = _Sweep(str(tmp_path), steps=1), _Sweep(str(tmp_path), steps=2)
    report.cell_writer(tmp_path, config=a)("k", 1)
    src = _stored_path(tmp_path, a, "k")
    dst = _stored_path(tmp_path, b, "k")
    dst.parent.mkdir(parents=True)
    src.rename(dst)
    with pytest.warns(report.CellWarning, match="belongs to config"):
        assert report.finished_cells(tmp_path, config=b) == {}


def test_out_dir_lock_refuses_a_second_run_and_is_released(tmp_path):
    with report.out_dir_lock(tmp_path / "out") as out:
        assert out == tmp_path / "out"
        with pytest.raises(RuntimeError, match=rf"another run \(process {os.getpid()}\) is writing to"):
            with report.out_dir_lock(_Config(out_dir=str(out))):
                pass
    with report.out_dir_lock(tmp_path / "out"):  # released on exit
        pass
