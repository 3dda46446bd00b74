"""Bad inputs of every public entry point of nn, train, the experiment CLIs and the report writers
(issue 10): one table per entry point; each case names the exception type AND a message regex, and
the message must name the argument (in backticks; on the command line, the flag).

The same tables feed `tests/probe_bad_inputs.py`, which classifies every outcome as clear / unclear
/ internal error / silently accepted and prints the counts (`classify`, `all_tables`).

Types probed, per argument as they apply: a string for a number, a bool for an int, None, NaN,
+-inf, negative, zero, huge (beyond memory or int32), wrong shape, wrong dtype, empty.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import re
import typing
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxvg
from jaxvg import train
from jaxvg.nn import losses, models
from jaxvg.report import cells, cli, experiment, files, plotting, provenance, tables
from jaxvg.train import TrainConfig, Trainer, data

NAN, INF = math.nan, math.inf
TE, VE = TypeError, ValueError


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input: `call()` must raise `error` with a message matching `match` that names the
    argument (`names`, default `arg` in backticks)."""

    entry: str
    arg: str
    value: Any
    call: Callable[[], Any] = dataclasses.field(repr=False)
    error: type[BaseException]
    match: str
    names: str | None = None

    @property
    def id(self) -> str:
        return f"{self.entry}-{self.arg}={_short(self.value)}"


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, np.ndarray) else f"array{value.shape}{value.dtype}"
    text = re.sub(r" at 0x[0-9a-f]+", "", text)  # ids must not hold addresses: xdist workers compare them
    return re.sub(r"\s+", "", text)[:40]


# --------------------------------------------------------------------------- MLP

_MLP_BASE = {"in_features": 3, "width": 4, "depth": 2, "out_features": 1}


def _mlp(**kw):
    args = _MLP_BASE | kw
    if "rngs" not in args:
        args["rngs"] = nnx.Rngs(0)
    return models.MLP(**args)


def _int_rows(name: str, *, optional: bool = False) -> list[tuple]:
    rows = [
        (name, "3", TE, rf"`{name}` must be an integer >= 1, got '3' \(str\)"),
        (name, True, TE, rf"`{name}` must be an integer >= 1, got True \(bool\)"),
        (name, 2.0, TE, rf"`{name}` must be an integer >= 1, got 2.0 \(float\)"),
        (name, NAN, TE, rf"`{name}` must be an integer >= 1, got nan"),
        (name, 0, VE, rf"`{name}` must be an integer >= 1, got 0"),
        (name, -1, VE, rf"`{name}` must be .*got -1"),
        (name, np.array([2]), TE, rf"`{name}` must be an integer >= 1, got array"),
    ]
    if not optional:
        rows.append((name, None, TE, rf"`{name}` must be an integer >= 1, got None"))
    return rows


def _bool_rows(name: str) -> list[tuple]:
    return [
        (name, "no", TE, rf"`{name}` must be True or False, got 'no' \(str\)"),
        (name, "False", TE, rf"`{name}` must be True or False, got 'False'"),
        (name, 1, TE, rf"`{name}` must be True or False, got 1 \(int\)"),
        (name, None, TE, rf"`{name}` must be True or False, got None"),
    ]


def _finite_rows(key: str, bound: str, values: tuple) -> list[tuple]:
    """Rows for a number that must be finite and `bound` ("> 0", ">= 0"), one per bad value: a
    string is a TypeError, any other value a ValueError. `key` may carry a "dataset:" prefix."""
    name = key.split(":")[-1]
    return [
        (key, v, TE if isinstance(v, str) else VE, rf"`{name}` must be a finite number {bound}, got {v!r}")
        for v in values
    ]


def _sigma_rows(name: str, *, zero_ok: bool) -> list[tuple]:
    rows = [
        (name, "1.0", TE, rf"`{name}` must be a finite number .*got '1.0' \(str\)"),
        (name, True, TE, rf"`{name}` must be a finite number .*got True \(bool\)"),
        (name, None, TE, rf"`{name}` must be a finite number .*got None"),
        (name, NAN, VE, rf"`{name}` must be a finite number .*got nan"),
        (name, INF, VE, rf"`{name}` must be a finite number .*got inf"),
        (name, -1.0, VE, rf"`{name}` must be a finite number .*got -1.0"),
        (name, 1e300, VE, rf"`{name}`=1e\+300 makes the float32 initial weights .*overflow to \+-inf"),
        (name, np.array([1.0, 2.0]), TE, rf"`{name}` must be a finite number"),
    ]
    if not zero_ok:
        rows.append((name, 0.0, VE, rf"`{name}` must be a finite number > 0, got 0.0"))
    if name == "sigma_w2":
        rows.append((name, 1e-300, VE, r"`sigma_w2`=1e-300 .*flush to zero"))
    return rows


MLP_ROWS = [
    *[row for n in ("in_features", "width", "depth") for row in _int_rows(n)],
    *_int_rows("out_features", optional=True),
    ("width", 10**6, VE, r"`width`=1000000.* needs about .*more than the .* available"),
    ("depth", 10**7, VE, r"`depth`=10000000 asks for 10000000 blocks; an MLP has at most 100000"),
    ("activation", "sigmod", VE, r"`activation` must be one of \[.*\] or a callable, got 'sigmod'"),
    ("activation", "", VE, r"`activation` must be one of .*got ''"),
    ("activation", None, TE, r"`activation` must be a name in .* or a callable, got NoneType"),
    ("activation", 3, TE, r"`activation` must be a name in .* or a callable, got int"),
    ("init", "xavier_normal", VE, r"`init` must be one of \[.*\], got 'xavier_normal'"),
    ("init", None, TE, r"`init` must be one of \[.*\], got None \(NoneType\)"),
    ("init", 3, TE, r"`init` must be one of .*got 3 \(int\)"),
    *_sigma_rows("sigma_w2", zero_ok=False),
    *_sigma_rows("sigma_b2", zero_ok=True),
    *[row for n in ("use_bias", "residual", "scan_blocks") for row in _bool_rows(n)],
    ("norm", "group", VE, r"`norm` must be one of \[None, 'batch', 'layer'\], got 'group'"),
    ("norm", True, VE, r"`norm` must be one of .*got True"),
    ("norm", 0, VE, r"`norm` must be one of .*got 0"),
    ("norm", ["batch"], VE, r"`norm` must be one of .*got \['batch'\]"),
    ("dropout", "0.1", TE, r"`dropout` must lie in \[0.0, 1.0\), got '0.1' \(str\)"),
    ("dropout", True, TE, r"`dropout` must lie in .*got True"),
    ("dropout", None, TE, r"`dropout` must lie in .*got None"),
    ("dropout", NAN, VE, r"`dropout` must lie in \[0.0, 1.0\), got nan"),
    ("dropout", INF, VE, r"`dropout` must lie in .*got inf"),
    ("dropout", -0.1, VE, r"`dropout` must lie in .*got -0.1"),
    ("dropout", 1.0, VE, r"`dropout` must lie in \[0.0, 1.0\), got 1.0"),
    ("param_dtype", "banana", TE, r"`param_dtype` must be a floating dtype, one of \[.*\].*got 'banana'"),
    ("param_dtype", None, TE, r"`param_dtype` must be a floating dtype.*got None"),
    ("param_dtype", 3, TE, r"`param_dtype` must be a floating dtype.*got 3 \(int\)"),
    ("param_dtype", "int32", VE, r"`param_dtype` must be a floating dtype.*got 'int32'"),
    ("param_dtype", jnp.complex64, VE, r"`param_dtype` must be a floating dtype.*complex64"),
    ("param_dtype", "float64", VE, r"`param_dtype=float64` needs 64-bit mode"),
    ("max_depth", 1, VE, r"`max_depth` must be None or >= `depth` = 2, got 1"),
    ("max_depth", 0, VE, r"`max_depth` must be an integer >= 1, got 0"),
    ("max_depth", "5", TE, r"`max_depth` must be an integer >= 1, got '5'"),
    ("max_depth", 10**7, VE, r"`max_depth`=10000000 asks for 10000000 blocks"),
    ("rngs", 0, TE, r"`rngs` must be an nnx.Rngs, got int"),
    ("rngs", None, TE, r"`rngs` must be an nnx.Rngs, got NoneType"),
]


def _mlp_call(arg, value):
    extra = {"init": "gaussian"} if arg in ("sigma_w2", "sigma_b2") else {}
    return lambda: _mlp(**extra, **{arg: value})


# --------------------------------------------------------------------------- fit, fit_stacked, TrainConfig

X4 = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
Y4 = np.array([[0], [1], [1], [0]], np.float32)
FIT = {"loss": "mse", "optimizer": "sgd", "learning_rate": 0.1, "steps": 4, "progress": False}


def _net(rngs=None, **kw):
    return jaxvg.MLP(2, 4, 2, 1, rngs=rngs or nnx.Rngs(0), **kw)


def _with(array, index, value):
    out = np.array(array, copy=True)
    out[index] = value
    return out


CONFIG_ROWS = [
    ("optimizer", "adagrad", VE, r"`optimizer` must be one of \[.*'adam'.*\], got 'adagrad'"),
    ("optimizer", None, TE, r"`optimizer` must be one of .*got None"),
    ("optimizer", "", VE, r"`optimizer` must be one of .*got ''"),
    ("learning_rate", "0.1", TE, r"`learning_rate` must be a finite number > 0 .*got '0.1' \(str\)"),
    ("learning_rate", True, TE, r"`learning_rate` must be a finite number > 0 .*got True \(bool\)"),
    ("learning_rate", None, TE, r"`learning_rate` must be a finite number > 0 .*got None"),
    ("learning_rate", NAN, VE, r"`learning_rate` must be a finite number > 0, got nan"),
    ("learning_rate", INF, VE, r"`learning_rate` must be a finite number > 0, got inf"),
    ("learning_rate", 0.0, VE, r"`learning_rate` must be a finite number > 0, got 0.0"),
    ("learning_rate", -1, VE, r"`learning_rate` must be a finite number > 0, got -1"),
    ("learning_rate", [], VE, r"`learning_rate` must be a finite number > 0 or a 1-D sequence"),
    ("learning_rate", [[0.1]], VE, r"`learning_rate` must be a finite number > 0 or a 1-D sequence"),
    ("learning_rate", [0.1, NAN], VE, r"`learning_rate` must be a finite number > 0 or a 1-D sequence"),
    ("learning_rate", ["a"], TE, r"`learning_rate` must be a finite number > 0 or a 1-D sequence"),
    *_int_rows("steps"),
    (
        "steps",
        2**31,
        VE,
        r"`steps` must be an integer in \[1, 1073741824\] \(2\*\*30: .*int32\), got 2147483648",
    ),
    ("batch_size", 0, VE, r"`batch_size` must be an integer >= 1, got 0"),
    ("batch_size", "2", TE, r"`batch_size` must be an integer >= 1, got '2'"),
    ("batch_size", 2.0, TE, r"`batch_size` must be an integer >= 1, got 2.0"),
    ("schedule", "exponential", VE, r"`schedule` must be one of .*got 'exponential'"),
    ("schedule", None, TE, r"`schedule` must be one of .*got None"),
    ("warmup_steps", -1, VE, r"`warmup_steps` must be an integer >= 0, got -1"),
    ("warmup_steps", 4, VE, r"`warmup_steps` must be < `steps` = 4, got 4"),
    ("warmup_steps", "1", TE, r"`warmup_steps` must be an integer >= 0, got '1'"),
    *_finite_rows("clip_norm", "> 0", (0.0, -1.0, NAN, INF, "1")),
    ("log_every", 0, VE, r"`log_every` must be an integer >= 1, got 0"),
    ("log_every", 1.5, TE, r"`log_every` must be an integer >= 1, got 1.5"),
    ("log_every", "2", TE, r"`log_every` must be an integer >= 1, got '2'"),
    ("monitor_every", 0, VE, r"`monitor_every` must be an integer >= 1, got 0"),
    ("monitor_every", -2, VE, r"`monitor_every` must be an integer >= 1, got -2"),
    ("monitor_every", "2", TE, r"`monitor_every` must be an integer >= 1, got '2'"),
    ("monitor_precision", "tf32", VE, r"`monitor_precision` must be one of \[.*'highest'.*\] .*got 'tf32'"),
    ("monitor_precision", None, TE, r"`monitor_precision` must be one of .*got None"),
    ("monitor_precision", 3, TE, r"`monitor_precision` must be one of .*got 3"),
    ("on_nonfinite", "ignore", VE, r"`on_nonfinite` must be one of \['raise', 'record'\], got 'ignore'"),
    ("on_nonfinite", None, TE, r"`on_nonfinite` must be one of .*got None"),
    *_bool_rows("progress"),
    ("loss", "hinge", VE, r"`loss` must be one of \[.*'mse'.*\], got 'hinge'"),
    ("loss", 3, TE, r"`loss` must be one of .* or a callable .*got 3 \(int\)"),
]


def _config_call(arg, value):
    return lambda: TrainConfig(**(FIT | {arg: value}))


FIT_ROWS = [
    ("model", None, TE, r"`model` must be an nnx.Module when `seeds` is None, got NoneType"),
    ("model", "mlp", TE, r"`model` must be an nnx.Module .*got str"),
    ("model", _net, TE, r"`model` must be an nnx.Module .*got function .*pass seeds="),
    ("data", None, TE, r"`data` must be a jaxvg.train.data.Dataset or a tuple \(x, y\), got NoneType"),
    ("data", "xor", TE, r"`data` must be a .*got str"),
    ("data", X4, TE, r"`data` must be a .*got ndarray"),
    ("data", (X4,), VE, r"`data` as a tuple must be \(x, y\), got a tuple of length 1"),
    ("data", (X4, Y4, X4), VE, r"`data` as a tuple must be \(x, y\), got a tuple of length 3"),
    ("data", (X4[:, :1], Y4), VE, r"`data` inputs have shape \(4, 1\) .*in_features is 2"),
    (
        "data",
        (X4[:0], Y4[:0]),
        VE,
        r"`data` inputs must have shape \(n, features\) with n >= 1, got \(0, 2\)",
    ),
    ("data", (X4[0], Y4), VE, r"`data` inputs must have shape \(n, features\)"),
    ("data", (X4, Y4[:3]), VE, r"`data` labels must have 4 rows like the inputs, got shape \(3, 1\)"),
    (
        "data",
        (X4, Y4[:, 0]),
        VE,
        r"`data\[1\] \(y\)` for loss='mse' must have the outputs' shape \(4, 1\), got \(4,\)",
    ),
    ("data", (_with(X4, (1, 0), NAN), Y4), VE, r"`data\[0\] \(x\)` must be finite, got 1 NaN/Inf entries"),
    ("data", (X4, _with(Y4, (2, 0), INF)), VE, r"`data\[1\] \(y\)` must be finite"),
    (
        "data",
        (X4.astype(str), Y4),
        TE,
        r"`data\[0\] \(x\)` must be an array of real numbers, got ndarray of dtype <U",
    ),
    (
        "data",
        (X4.astype(np.complex64), Y4),
        TE,
        r"`data\[0\] \(x\)` must be an array of real numbers.*complex64",
    ),
    ("data", ([[0, None]], [[1.0]]), TE, r"`data\[0\] \(x\)` must be an array of real numbers.*object"),
    ("loss", None, VE, r"`loss` must be one of \[.*\] or a callable, got None"),
    ("seeds", [], VE, r"`seeds` must be a non-empty sequence of distinct ints >= 0, got \[\]"),
    ("seeds", [1, 1], VE, r"`seeds` must be distinct, got \[1, 1\]"),
    ("seeds", [-1], VE, r"`seeds` must hold ints in \[0, 2\*\*32\), got -1"),
    ("seeds", ["a"], VE, r"`seeds` must hold ints .*got 'a'"),
    ("seeds", [True], VE, r"`seeds` must hold ints .*got True"),
    ("seeds", 3, VE, r"`seeds` must be a non-empty sequence .*got 3"),
    ("key", "abc", VE, r"`key` must be an int in \[0, 2\*\*32\) or a jax.random.key, got 'abc'"),
    ("key", -1, VE, r"`key` must be an int .*got -1"),
    ("key", 2**40, VE, r"`key` must be an int .*got 1099511627776"),
    ("key", 1.5, VE, r"`key` must be an int .*got 1.5"),
    (
        "key",
        jax.random.split(jax.random.key(0)),
        VE,
        r"`key` must be one PRNG key \(shape \(\)\), got shape \(2,\)",
    ),
    ("config", "cfg", TE, r"`config` must be a TrainConfig or None, got str"),
]


def _fit_call(arg, value):
    def call():
        kwargs = dict(FIT)
        model, dataset = _net(), (X4, Y4)
        if arg == "model":
            model = value
        elif arg == "data":
            dataset = value
        elif arg == "seeds":
            model = _net
            kwargs["seeds"] = value
        elif arg == "loss":
            kwargs["loss"] = value
        else:
            kwargs[arg] = value
        return train.fit(model, dataset, **kwargs)

    return call


def _fit_extra() -> list[Case]:
    config = TrainConfig(**FIT)
    return [
        Case(
            "fit",
            "monitor_every",
            2,
            lambda: train.fit(
                jaxvg.MLP(2, 4, 2, 1, max_depth=3, rngs=nnx.Rngs(0)), (X4, Y4), monitor_every=2, **FIT
            ),
            VE,
            r"`monitor_every` needs a model the measures can read: a depth-masked model",
        ),  # fmt: skip
        Case(
            "fit",
            "batch_size",
            5,
            lambda: train.fit(_net(), (X4, Y4), **(FIT | {"batch_size": 5})),
            VE,
            r"`batch_size` must be in \[1, 4\] \(the training set size\) or None, got 5",
        ),  # fmt: skip
        Case(
            "fit",
            "batch_size",
            2,
            lambda: train.fit(_net(), (X4, Y4), **(FIT | {"optimizer": "gd", "batch_size": 2})),
            VE,
            r"`batch_size` must be None \(or 4\) for optimizer='gd'",
        ),  # fmt: skip
        Case(
            "fit",
            "lr",
            0.1,
            lambda: train.fit(_net(), (X4, Y4), lr=0.1, **FIT),
            TE,
            r"fit\(\) got unexpected keyword argument\(s\) \['lr'\]",
            names=r"'lr'",
        ),  # fmt: skip
        Case(
            "fit",
            "steps",
            "missing",
            lambda: train.fit(_net(), (X4, Y4), optimizer="sgd", learning_rate=0.1),
            TE,
            r"fit\(\) needs the training field\(s\) `steps`",
        ),  # fmt: skip
        Case(
            "fit",
            "steps",
            "conflict",
            lambda: train.fit(_net(), (X4, Y4), config, steps=5),
            VE,
            r"`steps=5` conflicts with `config.steps=4`",
            names=r"`steps=5`",
        ),  # fmt: skip
    ]


def _stack():
    return train.stack_models([_net(nnx.Rngs(s)) for s in (0, 1)])


FIT_STACKED_ROWS = [
    ("graphdef", None, TE, r"`graphdef` must be an nnx.GraphDef .*got NoneType"),
    ("params", {}, VE, r"`params` is empty: the model has no nnx.Param to train"),
    ("params", {"a": "x"}, TE, r"`params` must be a state of arrays .*leaf of type str"),
    ("params", "unstacked", VE, r"`params` and `rest` must carry one common leading nets axis"),
    ("keys", None, TE, r"`keys` must be 2 PRNG keys"),
    ("keys", [0, 1], VE, r"`keys` must be 2 PRNG keys .*got shape \(2,\) and dtype int"),
    ("keys", "one key", VE, r"`keys` must be 2 PRNG keys .*got shape \(1,\)"),
    ("names", ["a"], VE, r"`names` must name each of the 2 nets, got 1 names"),
    ("names", "ab", TE, r"`names` must be None or a sequence of 2 strings, got 'ab'"),
    (
        "learning_rate",
        (0.1, 0.2, 0.3),
        VE,
        r"`learning_rate` must be a finite number > 0 or 2 of them, got \(0.1, 0.2, 0.3\)",
    ),
    ("data", {"x": X4}, TE, r"`data` must be a jaxvg.train.data.Dataset or a tuple \(x, y\), got dict"),
]


def _fit_stacked_call(arg, value):
    def call():
        graphdef, params, rest = _stack()
        kwargs = {"keys": train.data_keys([0, 1]), **FIT}
        dataset = (X4, Y4)
        if arg == "graphdef":
            graphdef = value
        elif arg == "params":
            if value == "unstacked":
                params = jax.tree.map(lambda a: a[0], params)
            else:
                params = value
        elif arg == "keys":
            kwargs["keys"] = train.data_keys([0]) if value == "one key" else value
        elif arg == "data":
            dataset = value
        else:
            kwargs[arg] = value
        return train.fit_stacked(graphdef, params, rest, dataset, **kwargs)

    return call


TRAINER_ROWS = [
    ("config", None, TE, r"`config` must be a TrainConfig, got NoneType"),
    ("config", dict(FIT), TE, r"`config` must be a TrainConfig, got dict"),
    ("learning_rate", "fast", TE, r"`learning_rate` must be a finite number > 0 .*got 'fast'"),
    ("learning_rate", -0.1, VE, r"`learning_rate` must be a finite number > 0, got -0.1"),
    ("keys", jnp.zeros(2), VE, r"`keys` must be 2 PRNG keys .*dtype float32"),
]


def _trainer_call(arg, value):
    def call():
        graphdef, params, rest = _stack()
        if arg == "config":
            return Trainer(graphdef, params, rest, (X4, Y4), value)
        trainer = Trainer(graphdef, params, rest, (X4, Y4), TrainConfig(**FIT))
        state = trainer.init_state(params, rest)
        if arg == "keys":
            return trainer.run(state, value)
        return trainer.run(state, train.data_keys([0, 1]), learning_rate=value)

    return call


EVALUATE_ROWS = [
    ("loss", "hinge", VE, r"`loss` must be one of .*got 'hinge'"),
    ("loss", None, VE, r"`loss` must be one of .* or a callable, got None"),
    ("data", None, TE, r"`data` must be a .*got NoneType"),
]


def _evaluate_call(arg, value):
    def call():
        graphdef, params, rest = _stack()
        kwargs = {"loss": "mse", "data": (X4, Y4)} | {arg: value}
        return train.evaluate_stacked(graphdef, params, rest, kwargs.pop("data"), **kwargs)

    return call


# --------------------------------------------------------------------------- data.load, Dataset

LOAD_ROWS = [
    (
        "name",
        "mnist",
        VE,
        r"`name` must be one of \['digits', 'mnist1d', 'spirals', 'teacher', 'xor'\], got 'mnist'",
    ),
    ("name", None, TE, r"`name` must be one of .*got None"),
    ("name", 3, TE, r"`name` must be one of .*got 3"),
    ("seed", -1, VE, r"`seed` must be an integer >= 0, got -1"),
    ("seed", "0", TE, r"`seed` must be an integer >= 0, got '0'"),
    ("seed", 1.5, TE, r"`seed` must be an integer >= 0, got 1.5"),
    ("seed", True, TE, r"`seed` must be an integer >= 0, got True"),
    ("seed", None, TE, r"`seed` must be an integer >= 0, got None"),
    *[("spirals:" + r[0], *r[1:]) for r in _int_rows("n_train")],
    ("spirals:n_train", 10**10, VE, r"load\('spirals', `n_train`=10000000000, .*needs about .*more than the"),
    ("spirals:n_test", 0, VE, r"`n_test` must be an integer >= 1, got 0"),
    *_finite_rows("spirals:noise", ">= 0", (-1.0, NAN, INF, "0.1")),
    *_finite_rows("spirals:turns", "> 0", (0.0, NAN)),
    ("spirals:n", 5, VE, r"unknown option\(s\) \['n'\] for dataset 'spirals'; valid options are", "'n'"),
    ("teacher:in_features", 0, VE, r"`in_features` must be an integer >= 1, got 0"),
    ("teacher:depth", -1, VE, r"`depth` must be an integer >= 1, got -1"),
    ("teacher:width", 10**9, VE, r"load\('teacher', .*`width`=1000000000\) .*needs about"),
    ("teacher:activation", "relu6", VE, r"`activation` must be one of .*got 'relu6'"),
    ("teacher:activation", None, TE, r"`activation` must be a name in .* or a callable, got NoneType"),
    ("teacher:out_features", 0, VE, r"`out_features` must be an integer >= 1, got 0"),
    ("teacher:noise", NAN, VE, r"`noise` must be a finite number >= 0, got nan"),
    ("digits:test_fraction", 0.0, VE, r"`test_fraction` must lie in \(0, 1\), got 0.0"),
    ("digits:test_fraction", 1.0, VE, r"`test_fraction` must lie in \(0, 1\), got 1.0"),
    ("digits:test_fraction", NAN, VE, r"`test_fraction` must lie in \(0, 1\), got nan"),
    ("digits:test_fraction", "0.2", VE, r"`test_fraction` must lie in \(0, 1\), got '0.2'"),
    ("digits:test_fraction", True, VE, r"`test_fraction` must lie in \(0, 1\), got True"),
    ("digits:test_fraction", 1e-6, VE, r"`test_fraction`=1e-06 leaves an empty test set"),
    (
        "mnist1d:num_samples",
        15,
        VE,
        r"`num_samples` must be a positive multiple of 10 \(ten classes\), got 15",
    ),
    ("mnist1d:num_samples", 0, VE, r"`num_samples` must be an integer >= 1, got 0"),
    ("mnist1d:num_samples", "5000", TE, r"`num_samples` must be an integer >= 1, got '5000'"),
    ("mnist1d:num_samples", 10**10, VE, r"load\('mnist1d', `num_samples`=10000000000\) .*needs about"),
    (
        "mnist1d:test_fraction",
        1e-6,
        VE,
        r"`test_fraction`=1e-06 with `num_samples`=5000 leaves an empty split",
    ),
]


def _load_call(arg, value):
    if ":" not in arg:
        return lambda: data.load(**({"name": "spirals", "n_train": 8, "n_test": 4} | {arg: value}))
    name, option = arg.split(":")
    return lambda: data.load(name, **{option: value})


_DS = dict(name="toy", x_train=X4, y_train=Y4, x_test=X4, y_test=Y4, num_classes=2, loss="mse")
DATASET_ROWS = [
    ("x_train", _with(X4, (0, 0), NAN), VE, r"`x_train` must be finite"),
    ("x_train", X4[0], VE, r"`x_train` must have shape \(n, d\), got shape \(2,\)"),
    ("x_train", X4.astype(str), TE, r"`x_train` must be an array of real numbers"),
    ("y_train", Y4[:3], VE, r"`y_train` must have shape \(4,\) or \(4, k\)"),
    ("x_test", X4[:, :1], VE, r"`x_test` of shape \(4, 1\) must have the features of `x_train` \(4, 2\)"),
    ("y_test", Y4[:, 0], VE, r"`y_test` of shape \(4,\) must have the label shape of `y_train` \(4, 1\)"),
    ("loss", "hinge", VE, r"`loss` must be one of .*got 'hinge'"),
    ("num_classes", 0, VE, r"`num_classes` must be an integer >= 1, got 0"),
]


def _dataset_call(arg, value):
    return lambda: data.Dataset(**(_DS | {arg: value}))


# --------------------------------------------------------------------------- losses

_Z = jnp.zeros
LOSS_ROWS = [
    ("loss", None, TE, r"`loss` must be one of \[.*\] or a callable .*got None \(NoneType\)", lambda v: losses.get(v)),
    ("loss", 3, TE, r"`loss` must be one of .*got 3 \(int\)", lambda v: losses.get(v)),
    ("loss", "MSE", VE, r"`loss` must be one of .*got 'MSE'", lambda v: losses.get(v)),
    ("loss", "", VE, r"`loss` must be one of .*got ''", lambda v: losses.get(v)),
    ("targets", _Z((4,)), VE, r"`targets` for loss='mse' must have the outputs' shape \(4, 1\)", lambda v: losses.mse(_Z((4, 1)), v)),
    ("targets", "y", TE, r"`targets` must be an array, got 'y'", lambda v: losses.mse(_Z((4, 1)), v)),
    ("labels", _Z((4, 1), int), VE, r"`labels` for loss='cross_entropy' must be integer class labels of shape \(4,\)", lambda v: losses.cross_entropy(_Z((4, 3)), v)),
    ("labels", _Z((4,)), TE, r"`labels` for loss='cross_entropy' must have an integer dtype, got float32", lambda v: losses.cross_entropy(_Z((4, 3)), v)),
    ("labels", _Z((4, 1)), VE, r"`labels` for loss='binary_cross_entropy' must have the outputs' shape \(4,\)", lambda v: losses.binary_cross_entropy(_Z((4,)), v)),
    ("loss", "hinge", VE, r"`loss` must be one of .*got 'hinge'", lambda v: losses.accuracy(v, _Z((4, 2)), _Z((4,), int))),
    ("y", np.array([[0.0], [NAN]]), VE, r"`y` must be finite", lambda v: losses.check_targets("mse", v, (2, 1))),
    ("y", "abc", TE, r"`y` must be an array of real numbers", lambda v: losses.check_targets("mse", v, (2, 1))),
    ("y", np.array([0, 3]), VE, r"`y` for loss='cross_entropy' must hold integer labels in \[0, 3\)", lambda v: losses.check_targets("cross_entropy", v, (2, 3))),
    ("y", np.array([0, 0.5]), VE, r"`y` for loss='cross_entropy' must hold integer labels", lambda v: losses.check_targets("cross_entropy", v, (2, 3))),
    ("y", np.array([0, 2]), VE, r"`y` for loss='binary_cross_entropy' must hold 0/1 labels", lambda v: losses.check_targets("binary_cross_entropy", v, (2,))),
    ("loss", "hinge", VE, r"`loss` must be one of .*got 'hinge'", lambda v: losses.check_targets(v, np.zeros(2), (2,))),
]  # fmt: skip


# --------------------------------------------------------------------------- cli.parse


def _config_classes() -> dict[str, type]:
    """Every experiment's and benchmark's Config."""
    import importlib

    out = {}
    for module in ("experiments.isometry", "experiments.phase_diagram", "experiments.remedies",
                   "experiments.vanishing", "experiments.xor", "benchmarks.analysis", "benchmarks.run",
                   "benchmarks.seeds", "benchmarks.training"):  # fmt: skip
        out[module] = importlib.import_module(module).Config
    return out


def _scalar_type(annotation: Any) -> tuple[Any, bool, bool]:
    """(scalar type, is a tuple, is optional) of a config field annotation."""
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, __import__("types").UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional, annotation = True, args[0]
        origin = typing.get_origin(annotation)
    if origin is tuple:
        return typing.get_args(annotation)[0], True, optional
    return annotation, False, optional


def _cli_values(tp: Any, is_tuple: bool) -> list[tuple[str, list[str], str]]:
    """(label, the flag's value words, what the message must say) of the bad values of a flag type."""
    rows = []
    if tp is int:
        rows += [("abc", ["abc"], r"invalid int value: 'abc'"), ("1.5", ["1.5"], r"invalid int value: '1.5'"),
                 ("empty", [""], r"invalid int value: ''"), ("-1", ["-1"], r"must be an integer >= ")]  # fmt: skip
    elif tp is float:
        rows += [("abc", ["abc"], r"invalid float value: 'abc'"), ("nan", ["nan"], r"expected a finite number, got 'nan'"),
                 ("inf", ["inf"], r"expected a finite number, got 'inf'"), ("=-inf", ["=-inf"], r"expected a finite number"),
                 # argparse takes a separate "-inf" for an option: "expected one argument" (it names the flag)
                 ("-inf", ["-inf"], r"expected (one|at least one) argument"),
                 ("empty", [""], r"invalid float value: ''"), ("-1", ["-1"], r"must be a finite number|must lie in")]  # fmt: skip
    elif tp is str:
        rows += [("empty", [""], r"expected a non-empty string, got ''")]
    if is_tuple:
        rows += [("none given", [], r"expected at least one argument")]
    return rows


def _cli_cases() -> list[Case]:
    cases = []
    for module, config_cls in _config_classes().items():
        hints = typing.get_type_hints(config_cls)
        for f in dataclasses.fields(config_cls):
            flag = "--" + f.name.replace("_", "-")
            tp, is_tuple, optional = _scalar_type(hints[f.name])
            if tp is bool and not is_tuple:
                cases.append(Case(f"cli:{module}", flag, "=maybe", (lambda c=config_cls, fl=flag: cli.parse(c, [f"{fl}=maybe"])),
                                  SystemExit, rf"argument {flag}/--no-{flag[2:]}: ignored explicit argument 'maybe'",
                                  names=re.escape(flag)))  # fmt: skip
                continue
            for label, words, match in _cli_values(tp, is_tuple):
                if label == "-1" and f.name in ("preset",):
                    continue
                argv = [flag + words[0]] if words and words[0].startswith("=") else [flag, *words]
                cases.append(Case(f"cli:{module}", flag, label, (lambda c=config_cls, a=argv: cli.parse(c, a)),
                                  SystemExit, match, names=rf"argument {re.escape(flag)}\b"))  # fmt: skip
    cases.append(Case("cli.parse", "argv", "'--quick'", lambda: cli.parse(_config_classes()["experiments.xor"], "--quick"),
                      TE, r"`argv` must be None or a list of strings .*split it, e.g. \['--quick'\]"))  # fmt: skip
    cases.append(Case("cli.parse", "config_cls", "dict", lambda: cli.parse(dict, []),
                      TE, r"`config_cls` must be a dataclass class, got <class 'dict'>"))  # fmt: skip
    return cases


# --------------------------------------------------------------------------- experiment configs and run


def _experiment_config_cases() -> list[Case]:
    """The Python API of every experiment `Config` (what `run` takes), by field type."""
    cases = []
    for module, config_cls in _config_classes().items():
        if not module.startswith("experiments."):
            continue
        hints = typing.get_type_hints(config_cls)
        for f in dataclasses.fields(config_cls):
            tp, is_tuple, optional = _scalar_type(hints[f.name])
            rows: list[tuple[Any, type, str]] = []
            if is_tuple:
                rows += [((), VE, rf"`{f.name}` must be a non-empty tuple, got \(\)"),
                         (f.default[0] if f.default else 1, TE, rf"`{f.name}` must be a non-empty tuple, e.g.")]  # fmt: skip
            elif tp is bool:
                rows += [
                    ("no", TE, rf"`{f.name}` must be True or False, got 'no'"),
                    (1, TE, rf"`{f.name}` must be True or False"),
                ]
            elif tp is int:
                rows += [("3", TE, rf"`{f.name}` must be an integer"), (True, TE, rf"`{f.name}` must be an integer"),
                         (-1, VE, rf"`{f.name}` must be an integer >= ")]  # fmt: skip
                if not optional:
                    rows.append((None, TE, rf"`{f.name}` must be an integer"))
            elif tp is float:
                rows += [("1.0", TE, rf"`{f.name}` must be a finite number|`{f.name}` must lie in"),
                         (NAN, VE, rf"`{f.name}` must be a finite number|`{f.name}` must lie in"),
                         (INF, VE, rf"`{f.name}` must be a finite number|`{f.name}` must lie in"),
                         (-1.0, VE, rf"`{f.name}` must be a finite number|`{f.name}` must lie in")]  # fmt: skip
            elif tp is str:
                rows += [("", VE, rf"`{f.name}` must (be|not)"), (None, TE, rf"`{f.name}` must ")]
            for value, error, match in rows:
                cases.append(Case(f"Config:{module}", f.name, value, (lambda c=config_cls, n=f.name, v=value: c(**{n: v})), error, match))  # fmt: skip
        run = __import__(module, fromlist=["run"]).run
        cases.append(Case(f"run:{module}", "config", "dict", (lambda r=run: r({"quick": True})), TE, r"`config` must be a experiments\..*Config, got dict"))  # fmt: skip
        cases.append(Case(f"run:{module}", "done", "list", (lambda r=run, c=config_cls: r(c(quick=True), done=[1])), TE, r"`done` must be None or a mapping"))  # fmt: skip
        cases.append(Case(f"run:{module}", "on_cell", "str", (lambda r=run, c=config_cls: r(c(quick=True), on_cell="x")), TE, r"`on_cell` must be None or a callable"))  # fmt: skip
    return cases


def _experiment_main_cases(tmp: Callable[[], str]) -> list[Case]:
    from experiments import xor

    def into_a_file():
        path = f"{tmp()}/a_file"
        open(path, "w").close()
        return xor.main(["--quick", "--out-dir", f"{path}/out"])

    return [
        Case("experiment.main", "argv", "'--quick'", lambda: xor.main("--quick"), TE, r"`argv` must be None or a list of strings"),
        Case("experiment.main", "--out-dir", "empty", lambda: xor.main(["--quick", "--out-dir", ""]), SystemExit,
             r"argument --out-dir: expected a non-empty string", names=r"--out-dir"),
        Case("experiment.main", "out_dir", "a file", into_a_file, OSError, r"output directory .* cannot be written .*choose another `out_dir`"),
    ]  # fmt: skip


# --------------------------------------------------------------------------- report writers


def _report_cases(tmp: Callable[[], str]) -> list[Case]:
    return [
        Case("files.write_json", "path", "''", lambda: files.write_json("", {}), VE, r"`path` must be a non-empty path"),
        Case("files.write_json", "path", None, lambda: files.write_json(None, {}), TE, r"`path` must be"),
        Case("files.write_json", "obj", "object()", lambda: files.write_json(f"{tmp()}/a.json", {"a": object()}), TE, r"object"),
        Case("files.write_summary", "out_dir", "''", lambda: files.write_summary("", "text"), VE, r"`out_dir` must be a non-empty path"),
        Case("files.write_summary", "text", None, lambda: files.write_summary(tmp(), None), TE, r"`text`"),
        Case("files.check_writable", "out_dir", "''", lambda: files.check_writable(""), VE, r"`out_dir` must be a non-empty path"),
        Case("files.check_writable", "out_dir", 3, lambda: files.check_writable(3), TE, r"`out_dir` must be"),
        Case("tables.write_csv", "path", "''", lambda: tables.write_csv("", [{"a": 1}]), VE, r"`path` must be a non-empty path"),
        Case("tables.write_csv", "rows", None, lambda: tables.write_csv(f"{tmp()}/a.csv", None), TE, r"`rows`"),
        Case("tables.write_csv", "rows", "[1, 2]", lambda: tables.write_csv(f"{tmp()}/a.csv", [1, 2]), TE, r"`rows`"),
        Case("tables.format_table", "rows", None, lambda: tables.format_table(None), TE, r"`rows`"),
        Case("provenance.write_metrics", "out_dir", "''", lambda: provenance.write_metrics("", {}, {}), VE, r"`out_dir` must be a non-empty path"),
        Case("provenance.config_key", "config", "object()", lambda: provenance.config_key(object()), TE, r"`config`"),
        Case("cells.cell_writer", "out_dir", "''", lambda: cells.cell_writer(""), VE, r"`out_dir` must be a non-empty path"),
        Case("cells.cell_writer", "key", "''", lambda: cells.cell_writer(tmp())("", {}), VE, r"`key` must be a non-empty string, got ''"),
        Case("cells.cell_writer", "key", 3, lambda: cells.cell_writer(tmp())(3, {}), VE, r"`key` must be a non-empty string, got 3"),
        Case("cells.finished_cells", "schema", 3, lambda: cells.finished_cells(tmp(), schema=3), TE, r"`schema` must be a mapping"),
        Case("cells.out_dir_lock", "out_dir", "''", lambda: cells.out_dir_lock("").__enter__(), VE, r"`out_dir` must be a non-empty path"),
        Case("plotting.save", "path", "''", lambda: plotting.save(__import__("matplotlib.figure").figure.Figure(), ""), VE, r"`path` must be a non-empty path"),
    ]  # fmt: skip


def _outputs_cases() -> list[Case]:
    """`experiment.Outputs` (what an experiment's `report` hands `main` to write) and `cell_schema`."""

    def outputs(**kw):
        return lambda: experiment.Outputs(**({"results": {}, "summary": "# s"} | kw))

    return [
        Case("experiment.Outputs", "results", None, outputs(results=None), TE, r"`results` must be a mapping, got NoneType"),
        Case("experiment.Outputs", "summary", None, outputs(summary=None), TE, r"`summary` must be a str \(Markdown\), got NoneType"),
        Case("experiment.Outputs", "csv", "[]", outputs(csv=[]), TE, r"`csv` must be a mapping file name -> rows, got list"),
        Case("experiment.Outputs", "csv", "../a.csv", outputs(csv={"../a.csv": []}), VE, r"`csv` keys must be plain file names"),
        Case("experiment.Outputs", "csv", "''", outputs(csv={"": []}), VE, r"`csv` keys must be plain file names"),
        Case("experiment.Outputs", "csv", "rows=None", outputs(csv={"a.csv": None}), TE, r"`csv\['a.csv'\]` must be a sequence of rows"),
        Case("experiment.Outputs", "csv", "rows=[1]", outputs(csv={"a.csv": [1]}), TE, r"`csv\['a.csv'\]` must hold mappings"),
        Case("experiment.Outputs", "seeds", "1.5", outputs(seeds=1.5), TE, r"`seeds` must be None, a count or a list"),
        Case("experiment.Outputs", "figure", "'fig'", outputs(figure="fig"), TE, r"`figure` must be None or a callable"),
        Case("experiment.Outputs", "name", "'a/b'", outputs(name="a/b"), VE, r"`name` must be None or a plain file name"),
        Case("experiment.cell_schema", "fields", "list", lambda: experiment.cell_schema([("a", int)]), TE, r"`fields` must be a mapping"),
    ]  # fmt: skip


# --------------------------------------------------------------------------- all tables


def all_tables(tmp: Callable[[], str]) -> dict[str, list[Case]]:
    """{entry point: cases} of the entry points of nn, train, the CLIs and the experiment
    scaffolding and the report writers; `tmp()` gives a fresh temporary directory."""

    def from_rows(entry, rows, make):
        return [Case(entry, r[0], r[1], make(r[0], r[1]), *r[2:]) for r in rows]

    out = {
        "MLP": from_rows("MLP", MLP_ROWS, _mlp_call),
        "TrainConfig": from_rows("TrainConfig", CONFIG_ROWS, _config_call),
        "fit": from_rows("fit", CONFIG_ROWS + FIT_ROWS, _fit_call) + _fit_extra(),
        "fit_stacked": from_rows("fit_stacked", FIT_STACKED_ROWS, _fit_stacked_call),
        "Trainer": from_rows("Trainer", TRAINER_ROWS, _trainer_call),
        "evaluate_stacked": from_rows("evaluate_stacked", EVALUATE_ROWS, _evaluate_call),
        "data.load": [
            Case("data.load", r[0].split(":")[-1], r[1], _load_call(r[0], r[1]), *r[2:]) for r in LOAD_ROWS
        ],
        "data.Dataset": from_rows("data.Dataset", DATASET_ROWS, _dataset_call),
        "losses": [Case("losses", r[0], r[1], (lambda f=r[4], v=r[1]: f(v)), r[2], r[3]) for r in LOSS_ROWS],
        "cli.parse": _cli_cases(),
        "experiment configs": _experiment_config_cases(),
        "experiment.main": _experiment_main_cases(tmp),
        "experiment.Outputs": _outputs_cases(),
        "report writers (files/tables/cells)": _report_cases(tmp),
    }
    return out


def other_tables(tmp: Callable[[], str]) -> dict[str, list[Case]]:
    """Tables asserted elsewhere and only counted here: none (theory's are added by the probe)."""
    del tmp
    return {}


# --------------------------------------------------------------------------- classification

OUTCOMES = ("clear", "unclear", "internal error", "silently accepted")


def classify(case: Case) -> tuple[str, str]:
    """(outcome, what happened): "clear" when `case.call()` raises `case.error` with a message that
    matches `case.match` and names the argument; "unclear" for another ValueError/TypeError/exit
    (wrong type, or a message that does not match or name it); "internal error" for any other
    exception (AttributeError, IndexError, OverflowError, a jax error...); "silently accepted"
    when nothing is raised."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            case.call()
    except (KeyboardInterrupt, pytest.fail.Exception):
        raise
    except BaseException as e:  # noqa: BLE001 - classified below
        if isinstance(e, SystemExit):  # argparse: the usage, then "prog: error: ..."
            message = " ".join(line for line in stderr.getvalue().splitlines() if ": error: " in line)
        else:
            message = str(e)
        names = re.search(case.names or rf"`{re.escape(case.arg)}", message)
        what = f"{type(e).__name__}: {message.strip()[:300]}"
        if isinstance(e, case.error) and names and re.search(case.match, message, re.S):
            return "clear", what
        if isinstance(e, ValueError | TypeError | SystemExit | OSError | FloatingPointError):
            return "unclear", what
        return "internal error", what
    return "silently accepted", "no exception"


_TMP = {"factory": None}


def _tmp() -> str:
    return str(_TMP["factory"].mktemp("bad"))


def _all_cases() -> list[Case]:
    return [case for cases in all_tables(_tmp).values() for case in cases]


@pytest.fixture(autouse=True)
def _tmp_factory(tmp_path_factory):
    _TMP["factory"] = tmp_path_factory
    yield


@pytest.mark.parametrize("case", _all_cases(), ids=lambda c: c.id)
def test_bad_input_gives_a_clear_error_before_any_work(case):
    outcome, what = classify(case)
    assert outcome == "clear", (
        f"{case.id}: {outcome}: {what}\n  expected {case.error.__name__} matching {case.match!r}"
    )
