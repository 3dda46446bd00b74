"""jaxvg.nn.losses: each loss against a hand computation, accuracy, the registry and the target checks."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxvg.nn import losses


def test_mse_is_the_mean_over_all_elements():
    out = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    y = jnp.array([[0.0, 2.0], [1.0, 1.0]])
    assert float(losses.mse(out, y)) == pytest.approx((1 + 0 + 4 + 9) / 4)
    assert float(losses.get("mse")(out, out)) == 0.0


def test_cross_entropy_by_hand():
    # softmax([0, ln 3]) = [1/4, 3/4]; labels 1 and 0: losses ln(4/3) and ln 4
    logits = jnp.array([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    labels = jnp.array([1, 0])
    want = (math.log(4 / 3) + math.log(4)) / 2
    assert float(losses.cross_entropy(logits, labels)) == pytest.approx(want, rel=1e-6)


def test_cross_entropy_over_a_sequence_is_the_mean_over_tokens():
    """Logits (batch, seq, vocab) with labels (batch, seq): the mean over all batch x seq tokens."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=(2, 3))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -np.mean(np.take_along_axis(logp, labels[..., None], axis=-1))
    np.testing.assert_allclose(
        losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels)), want, rtol=1e-6
    )
    losses.check_targets("cross_entropy", labels, logits.shape)  # the shapes fit
    acc = losses.accuracy("cross_entropy", jnp.asarray(logits), jnp.asarray(labels))
    assert float(acc) == pytest.approx(np.mean(logits.argmax(-1) == labels))


def test_binary_cross_entropy_by_hand():
    logits = jnp.array([[0.0], [2.0], [-1.0]])
    labels = jnp.array([[1], [1], [0]])  # int labels are cast to the logits' dtype
    want = (math.log(2) + math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 3
    assert float(losses.binary_cross_entropy(logits, labels)) == pytest.approx(want, rel=1e-6)


def test_accuracy():
    logits = jnp.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert float(losses.accuracy("cross_entropy", logits, jnp.array([0, 1, 1]))) == pytest.approx(2 / 3)
    bce = jnp.array([[0.5], [-0.5], [2.0], [-3.0]])
    assert (
        float(losses.accuracy("binary_cross_entropy", bce, jnp.array([[1.0], [1.0], [1.0], [0.0]]))) == 0.75
    )
    assert np.isnan(losses.accuracy("mse", logits, logits))


def test_registry():
    assert set(losses.LOSSES) == {"mse", "cross_entropy", "binary_cross_entropy"}
    assert losses.get("cross_entropy") is losses.cross_entropy

    def mine(out, y):
        return jnp.sum(out - y)

    assert losses.get(mine) is mine
    with pytest.raises(
        ValueError,
        match=r"`loss` must be one of \['binary_cross_entropy', 'cross_entropy', 'mse'\], got 'l2'",
    ):
        losses.get("l2")


@pytest.mark.parametrize(
    "loss, targets, shape, match",
    [
        (
            "mse",
            np.zeros((4,)),
            (4, 1),
            r"`y` for loss='mse' must have the outputs' shape \(4, 1\), got \(4,\).*y\[:, None\]",
        ),
        ("cross_entropy", np.zeros((4, 1)), (4, 3), r"must be integer labels of shape \(4,\), got \(4, 1\)"),
        (
            "cross_entropy",
            np.array([0, 1, 2, 3]),
            (4, 3),
            r"integer labels in \[0, 3\), got values in \[(np\.int64\()?0\)?, (np\.int64\()?3\)?\]",
        ),
        ("cross_entropy", np.array([0, 1.5, 2, 0]), (4, 3), r"integer labels in \[0, 3\)"),
        (
            "cross_entropy",
            np.array([[0, 1], [2, 5]]),
            (2, 2, 4),
            r"integer labels in \[0, 4\), got values in \[(np\.int64\()?0\)?, (np\.int64\()?5\)?\]",
        ),
        (
            "binary_cross_entropy",
            np.zeros((4,)),
            (4, 1),
            r"must have the outputs' shape \(4, 1\), got \(4,\)",
        ),
        ("binary_cross_entropy", np.array([[0.0], [0.5]]), (2, 1), r"must hold 0/1 labels"),
        ("mse", np.array([[np.nan]]), (1, 1), r"`y` must be finite, got 1 NaN/Inf"),
        ("l1", np.zeros((2,)), (2,), r"`loss` must be one of"),
    ],
)
def test_check_targets_errors(loss, targets, shape, match):
    with pytest.raises(ValueError, match=match):
        losses.check_targets(loss, targets, shape)


def test_check_targets_accepts_fitting_targets_and_skips_callables():
    losses.check_targets("mse", np.zeros((3, 2)), (3, 2))
    losses.check_targets("cross_entropy", np.array([0, 2, 1]), (3, 3))
    losses.check_targets("binary_cross_entropy", np.array([[0], [1]]), (2, 1))
    losses.check_targets(lambda out, y: 0.0, np.array([np.nan]), (7,))  # callables are not checked
    with pytest.raises(ValueError, match=r"`data.y_test` for loss='mse'"):
        losses.check_targets("mse", np.zeros((2,)), (2, 1), name="data.y_test")
