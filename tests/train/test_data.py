"""jaxvg.data: shapes, label conventions, determinism, splits, standardisation, errors, offline."""

import random
import socket

import numpy as np
import pytest

from jaxvg.nn import losses
from jaxvg.train import data

# Small options so the whole file runs in a few seconds; the defaults are checked once below.
SMALL = {
    "xor": {},
    "spirals": {"n_train": 64, "n_test": 32},
    "teacher": {"n_train": 64, "n_test": 32, "depth": 4, "width": 16, "in_features": 5, "out_features": 3},
    "digits": {},
    "mnist1d": {"num_samples": 200},
}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Fail on any socket connection or call of mnist1d's downloading `get_dataset`; run in an empty
    temporary working directory, which the test can check is still empty."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    import mnist1d.data

    monkeypatch.setattr(mnist1d.data, "get_dataset", refuse)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _assert_same(a, b):
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


@pytest.mark.parametrize("name", data.DATASETS)
def test_shapes_dtypes_and_label_conventions(name, offline):
    ds = data.load(name, seed=3, **SMALL[name])
    assert ds.name == name
    assert isinstance(ds, data.Dataset)
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 2
        assert x.shape[1] == ds.in_features and y.shape[0] == x.shape[0]
        assert np.isfinite(x).all() and np.isfinite(y).all()
        assert not x.flags.writeable and not y.flags.writeable
    assert ds.loss in losses.LOSSES
    if ds.loss == "cross_entropy":
        for y in (ds.y_train, ds.y_test):
            assert y.dtype == np.int32 and y.ndim == 1
            assert y.min() >= 0 and y.max() < ds.num_classes
        assert ds.out_features == ds.num_classes
        # every class present in training data
        assert set(np.unique(ds.y_train)) == set(range(ds.num_classes))
    else:
        assert ds.y_train.dtype == np.float32 and ds.y_train.ndim == 2
        assert ds.out_features == ds.y_train.shape[1]
    expected = {
        "xor": ((4, 2), (4, 2), 2, 1),
        "spirals": ((64, 2), (32, 2), 2, 2),
        "teacher": ((64, 5), (32, 5), None, 3),
        "digits": ((1438, 64), (359, 64), 10, 10),
        "mnist1d": ((160, 40), (40, 40), 10, 10),
    }[name]
    assert (ds.x_train.shape, ds.x_test.shape, ds.num_classes, ds.out_features) == expected
    assert list(offline.iterdir()) == []  # nothing written to the working directory


@pytest.mark.parametrize("name", data.DATASETS)
def test_deterministic_in_seed(name):
    a = data.load(name, seed=7, **SMALL[name])
    b = data.load(name, seed=7, **SMALL[name])
    _assert_same(a, b)
    if name == "xor":
        return  # four fixed points
    c = data.load(name, seed=8, **SMALL[name])
    assert not np.array_equal(a.x_train, c.x_train) or not np.array_equal(a.y_train, c.y_train)
    assert not np.array_equal(a.x_test, c.x_test)


def test_xor_is_the_source_example():
    ds = data.load("xor")
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([[0], [1], [1], [0]], np.float32)
    for got, want in ((ds.x_train, x), (ds.y_train, y), (ds.x_test, x), (ds.y_test, y)):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == np.float32
    assert (ds.loss, ds.num_classes, ds.in_features, ds.out_features) == ("mse", 2, 2, 1)


def test_default_sizes():
    assert data.load("spirals").x_train.shape == (1000, 2)
    teacher = data.load("teacher")
    assert teacher.x_train.shape == (1000, 10) and teacher.y_train.shape == (1000, 1)
    assert teacher.num_classes is None and teacher.loss == "mse"


def test_spirals_balanced_and_noise_free_radius():
    ds = data.load("spirals", n_train=101, n_test=10, noise=0.0, turns=2.0)
    counts = np.bincount(ds.y_train, minlength=2)
    assert abs(counts[0] - counts[1]) <= 1
    r = np.linalg.norm(ds.x_train, axis=1)
    assert r.min() >= 0.1 - 1e-6 and r.max() <= 1.0 + 1e-6  # r = 0.1 + 0.9 t, t in [0, 1)
    # noise-free: the angle is 2 pi turns t + pi c with t = (r - 0.1) / 0.9; check it exactly
    t = (r.astype(np.float64) - 0.1) / 0.9
    angle = 2 * np.pi * 2.0 * t + np.pi * ds.y_train
    np.testing.assert_allclose(ds.x_train, np.stack([r * np.cos(angle), r * np.sin(angle)], 1), atol=2e-5)


def test_teacher_targets_standardised_and_noise_ratio():
    clean = data.load("teacher", seed=1, n_train=400, n_test=50, out_features=2)
    np.testing.assert_allclose(clean.y_train.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(clean.y_train.std(0), 1.0, rtol=1e-5)
    noisy = data.load("teacher", seed=1, n_train=400, n_test=50, out_features=2, noise=0.5)
    np.testing.assert_array_equal(noisy.x_train, clean.x_train)  # same teacher and inputs
    resid = noisy.y_train - clean.y_train
    # 800 N(0, 0.25) samples: the sample std has relative standard error 1/sqrt(2*800) = 2.5%; allow 4 SE
    assert resid.std() == pytest.approx(0.5, rel=0.1)


def test_teacher_is_a_deep_function_of_x():
    # Different activations give different targets from the same inputs and weights.
    a = data.load("teacher", seed=2, n_train=32, n_test=8, activation="tanh")
    b = data.load("teacher", seed=2, n_train=32, n_test=8, activation="relu")
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.allclose(a.y_train, b.y_train)


@pytest.mark.parametrize("test_fraction", [0.2, 0.33])
def test_digits_stratified_and_standardised(test_fraction):
    from sklearn.datasets import load_digits

    ds = data.load("digits", seed=4, test_fraction=test_fraction)
    counts = np.bincount(load_digits().target, minlength=10)
    test_counts = np.bincount(ds.y_test, minlength=10)
    train_counts = np.bincount(ds.y_train, minlength=10)
    np.testing.assert_array_equal(test_counts + train_counts, counts)
    # each class's test share equals test_fraction to within one example (rounding per class)
    assert np.all(np.abs(test_counts - test_fraction * counts) <= 1)
    assert np.all(np.abs(train_counts - (1 - test_fraction) * counts) <= 1)
    # standardised with training statistics: mean 0, std 1, except the documented constant pixels
    mean, std = ds.x_train.astype(np.float64).mean(0), ds.x_train.astype(np.float64).std(0)
    np.testing.assert_allclose(mean, 0.0, atol=1e-5)
    constant = std < 1e-6
    assert 1 <= constant.sum() <= 4  # the always-blank corner pixels
    np.testing.assert_array_equal(ds.x_train[:, constant], 0.0)
    np.testing.assert_allclose(std[~constant], 1.0, rtol=1e-4)
    # test statistics are close but not forced to 0/1 (they use the training mean/std)
    assert np.abs(ds.x_test.mean(0)).max() > 1e-3


def test_mnist1d_is_the_package_generator():
    # Our split with the package's default train share equals the package's own make_dataset output.
    from mnist1d.data import get_dataset_args, make_dataset

    state = np.random.get_state()
    py_state = random.getstate()
    ds = data.load("mnist1d", seed=42, num_samples=300)
    # the global generators that mnist1d reseeds are restored
    assert np.array_equal(np.random.get_state()[1], state[1]) and random.getstate() == py_state
    args = get_dataset_args()
    args.num_samples = 300
    ref = make_dataset(args)  # seed 42, train_split 0.8
    np.random.set_state(state)
    random.setstate(py_state)
    np.testing.assert_array_equal(ds.x_train, ref["x"].astype(np.float32))
    np.testing.assert_array_equal(ds.x_test, ref["x_test"].astype(np.float32))
    np.testing.assert_array_equal(ds.y_train, ref["y"])
    np.testing.assert_array_equal(ds.y_test, ref["y_test"])
    np.testing.assert_array_equal(np.bincount(np.concatenate([ds.y_train, ds.y_test])), 30)


def test_mnist1d_writes_nothing_and_stays_offline(offline):
    ds = data.load("mnist1d", seed=0, num_samples=100, test_fraction=0.3)
    assert ds.x_train.shape == (70, 40) and ds.x_test.shape == (30, 40)
    assert list(offline.iterdir()) == []


@pytest.mark.parametrize(
    "name, options, match",
    [
        ("spirals", {"n_train": 0}, r"`n_train` must be an integer >= 1, got 0"),
        ("spirals", {"n_test": -3}, r"`n_test` must be an integer >= 1, got -3"),
        ("spirals", {"noise": -0.1}, r"`noise` must be a finite number >= 0, got -0.1"),
        ("spirals", {"turns": 0.0}, r"`turns` must be a finite number > 0, got 0.0"),
        ("spirals", {"n_train": 2.5}, r"`n_train` must be an integer >= 1, got 2.5"),
        ("teacher", {"depth": 0}, r"`depth` must be an integer >= 1, got 0"),
        ("teacher", {"width": 0}, r"`width` must be an integer >= 1, got 0"),
        ("teacher", {"in_features": -1}, r"`in_features` must be an integer >= 1, got -1"),
        ("teacher", {"out_features": 0}, r"`out_features` must be an integer >= 1, got 0"),
        ("teacher", {"noise": float("nan")}, r"`noise` must be a finite number >= 0, got nan"),
        ("teacher", {"activation": "sigmod"}, r"`activation` must be one of .* got 'sigmod'"),
        ("digits", {"test_fraction": 0.0}, r"`test_fraction` must lie in \(0, 1\), got 0.0"),
        ("digits", {"test_fraction": 1.0}, r"`test_fraction` must lie in \(0, 1\), got 1.0"),
        ("digits", {"test_fraction": 0.001}, r"`test_fraction`=0.001 leaves an empty test set"),
        ("mnist1d", {"num_samples": 105}, r"`num_samples` must be a positive multiple of 10 .* got 105"),
        ("mnist1d", {"num_samples": 0}, r"`num_samples` must be an integer >= 1, got 0"),
        ("mnist1d", {"test_fraction": 1.5}, r"`test_fraction` must lie in \(0, 1\), got 1.5"),
        ("mnist1d", {"num_samples": 10, "test_fraction": 0.01}, r"leaves an empty split"),
    ],
)
def test_bad_option_values(name, options, match):
    with pytest.raises(ValueError, match=match):
        data.load(name, **options)


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match=r"`name` must be one of \[.*'digits'.*'xor'\], got 'mnist'"):
        data.load("mnist")


@pytest.mark.parametrize("name", data.DATASETS)
def test_unknown_option_lists_valid_ones(name):
    valid = sorted(data._DEFAULTS[name])
    with pytest.raises(ValueError, match=rf"unknown option\(s\) \['bogus'\] for dataset '{name}'") as err:
        data.load(name, bogus=1)
    assert f"valid options are {valid}" in str(err.value)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match=r"`seed` must be an integer >= 0"):
        data.load("spirals", seed=seed, n_train=4, n_test=4)


def test_dataset_validates_its_arrays():
    x = np.zeros((3, 2), np.float32)
    y = np.zeros(3, np.int32)
    with pytest.raises(ValueError, match=r"`x_train` must be finite"):
        data.Dataset("mine", np.full((3, 2), np.nan), y, x, y, num_classes=2, loss="cross_entropy")
    with pytest.raises(ValueError, match=r"`y_test` must have shape \(3,\) or \(3, k\)"):
        data.Dataset("mine", x, y, x, y[:2], num_classes=2, loss="cross_entropy")
    with pytest.raises(ValueError, match=r"`loss` must be one of"):
        data.Dataset("mine", x, y, x, y, num_classes=2, loss="hinge")
    ds = data.Dataset("mine", x.astype(np.float64), y, x, y, num_classes=2, loss="cross_entropy")
    assert ds.x_train.dtype == np.float32 and "mine" in repr(ds)
    with pytest.raises(AttributeError):
        ds.name = "other"  # frozen
