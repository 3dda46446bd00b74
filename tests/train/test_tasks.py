"""`jaxvg.train.tasks`: the adding problem and the temporal-order task, deterministic and as specified."""

import numpy as np
import pytest

from jaxvg.train import tasks


def test_adding_problem_is_as_specified():
    task = tasks.adding(40, n_train=500, n_test=100, seed=3)
    x, y = task.x_train, task.y_train
    assert x.shape == (500, 40, 2) and y.shape == (500, 1) and x.dtype == np.float32
    markers = x[..., 1]
    assert np.all(markers.sum(axis=1) == 2)
    first, second = np.argwhere(markers == 1)[:, 1].reshape(500, 2).T
    assert np.all(first < 20) and np.all(second >= 20)
    np.testing.assert_allclose(y[:, 0], (x[..., 0] * markers).sum(axis=1), rtol=1e-6)
    assert task.loss == "mse" and task.length == 40 and task.in_features == 2
    assert not task.x_train.flags.writeable


def test_adding_baseline_is_one_sixth():
    y = tasks.adding(10, n_train=100_000, n_test=1, seed=0).y_train
    assert float(np.mean((y - 1.0) ** 2)) == pytest.approx(tasks.ADDING_BASELINE_MSE, abs=3e-3)


def test_temporal_order_is_as_specified():
    T = 100
    task = tasks.temporal_order(T, n_train=400, n_test=50, seed=1)
    x, y = task.x_train, task.y_train
    assert x.shape == (400, T, 6) and y.shape == (400,) and y.dtype == np.int32
    np.testing.assert_array_equal(x.sum(axis=-1), 1.0)  # one-hot
    symbols = x.argmax(axis=-1)
    for row, label in zip(symbols, y, strict=True):
        where = np.flatnonzero(row < 2)
        assert len(where) == 2
        assert T // 10 <= where[0] < 2 * T // 10 and 4 * T // 10 <= where[1] < 5 * T // 10
        assert label == 2 * row[where[0]] + row[where[1]]
    assert set(np.unique(y)) == {0, 1, 2, 3}
    assert task.loss == "cross_entropy" and task.num_classes == 4


def test_deterministic_in_the_seed():
    a, b, c = (tasks.adding(30, n_train=20, n_test=5, seed=s) for s in (7, 7, 8))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)
    assert not np.array_equal(a.x_train[:5], a.x_test)
    o1, o2 = (tasks.temporal_order(20, n_train=20, n_test=5, seed=0) for _ in range(2))
    np.testing.assert_array_equal(o1.x_train, o2.x_train)


def test_named_errors():
    with pytest.raises(ValueError, match=r"`length` must be >= 2"):
        tasks.adding(1)
    with pytest.raises(ValueError, match=r"`length` must be >= 10"):
        tasks.temporal_order(9)
    with pytest.raises(ValueError, match=r"`n_train` must be an integer >= 1"):
        tasks.adding(10, n_train=0)
    with pytest.raises(ValueError, match=r"`seed` must be an int in \[0, 2\*\*32\)"):
        tasks.adding(10, seed=-1)
    with pytest.raises(ValueError, match=r"`x_train` must have shape \(n, 5, features\)"):
        tasks.SequenceTask("t", np.zeros((2, 4, 1)), np.zeros((2, 1)), np.zeros((1, 5, 1)), np.zeros((1, 1)),
                           "mse", None, 5)  # fmt: skip
    with pytest.raises(ValueError, match=r"`x_test` must be finite"):
        tasks.SequenceTask("t", np.zeros((2, 5, 1)), np.zeros((2, 1)), np.full((1, 5, 1), np.nan), np.zeros((1, 1)),
                           "mse", None, 5)  # fmt: skip
