"""jaxvg.train.config: TrainConfig validation and normalisation, and `resolve` (config or keywords)."""

import dataclasses

import numpy as np
import pytest

from jaxvg.train import config as config_lib
from jaxvg.train.config import TrainConfig

BASE = dict(loss="mse", optimizer="sgd", learning_rate=0.1, steps=10)


def test_defaults_and_normalisation():
    c = TrainConfig(**BASE)
    assert (c.batch_size, c.schedule, c.warmup_steps, c.clip_norm, c.log_every) == (
        None,
        "constant",
        0,
        None,
        None,
    )
    assert (c.monitor_every, c.on_nonfinite, c.progress) == (None, "raise", True)
    assert c.chunk_steps == 1  # about 100 log points, at least one step
    assert TrainConfig(**dict(BASE, steps=1000)).chunk_steps == 10
    assert TrainConfig(**dict(BASE, log_every=50)).chunk_steps == 10  # at most `steps`
    # numpy scalars and arrays become plain floats and ints; per-net rates a tuple
    c = TrainConfig(**dict(BASE, steps=np.int64(7), learning_rate=np.float32(0.5), clip_norm=2))
    assert type(c.steps) is int and type(c.learning_rate) is float and c.clip_norm == 2.0
    assert TrainConfig(**dict(BASE, learning_rate=np.array([0.1, 0.2]))).learning_rate == (0.1, 0.2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.steps = 3
    assert dataclasses.replace(c, steps=20).steps == 20


def test_fields_are_keyword_only():
    with pytest.raises(TypeError):
        TrainConfig("mse", "sgd", 0.1, 10)  # type: ignore[misc]


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(on_nonfinite="ignore"), r"`on_nonfinite` must be one of \['raise', 'record'\], got 'ignore'"),
        (dict(learning_rate=float("inf")), r"`learning_rate` must be a finite number > 0, got inf"),
        (dict(learning_rate=[0.1, -0.1]), r"`learning_rate` must be .* or a 1-D sequence of them"),
        (dict(learning_rate=[[0.1]]), r"`learning_rate` must be .* or a 1-D sequence of them"),
        (dict(learning_rate=[]), r"`learning_rate` must be .* or a 1-D sequence of them"),
        (dict(steps=True), r"`steps` must be an integer >= 1, got True"),
        (dict(warmup_steps=-1), r"`warmup_steps` must be an integer >= 0, got -1"),
        (dict(warmup_steps=10), r"`warmup_steps` must be < `steps` = 10, got 10"),
        (dict(monitor_every=1.5), r"`monitor_every` must be an integer >= 1, got 1.5"),
        (dict(progress="yes"), r"`progress` must be True or False, got 'yes'"),
    ],
)
def test_bad_fields(overrides, match):
    """More field errors; tests/train/test_fit.py checks the others through `fit`, before tracing."""
    with pytest.raises(ValueError, match=match):
        TrainConfig(**dict(BASE, **overrides))


def test_required_fields():
    with pytest.raises(TypeError, match=r"missing .*'steps'"):
        TrainConfig(loss="mse", optimizer="sgd", learning_rate=0.1)


def test_resolve():
    c = TrainConfig(**BASE)
    assert config_lib.resolve(None, BASE) == c
    assert config_lib.resolve(c, {}) is c
    assert config_lib.resolve(c, {"steps": 10, "learning_rate": 0.1}) is c  # equal values: fine
    with pytest.raises(ValueError, match=r"`learning_rate=0.2` conflicts with `config.learning_rate=0.1`"):
        config_lib.resolve(c, {"learning_rate": 0.2})
    with pytest.raises(ValueError, match=r"`steps` must be an integer >= 1"):
        config_lib.resolve(c, {"steps": 0})  # an invalid keyword is named as such, not as a conflict
    with pytest.raises(TypeError, match=r"fit_stacked\(\) got unexpected keyword argument\(s\) \['lr'\]"):
        config_lib.resolve(None, {"lr": 0.1}, where="fit_stacked")
