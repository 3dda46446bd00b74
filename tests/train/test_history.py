"""jaxvg.train.history: assembling the per-chunk logs, NaN after divergence, truncation, the error."""

import re

import numpy as np
import pytest

from jaxvg.train import history


def _logs():
    """Two nets, 5 steps in chunks of 2: logged at 0, 2, 4 and the end point 5."""
    logs = []
    for start in (0, 2, 4, 5):
        logs.append(
            {
                "train/loss": np.array([1.0, 2.0]) - start / 10,
                "log10_kernel_grad": np.full((2, 3), -float(start)),
                "train/batch_loss": np.stack([np.arange(start, start + 2)] * 2).astype(np.float32),
            }
        )
    return logs


def test_assemble_marks_what_follows_a_divergence():
    div, div_step = np.array([False, True]), np.array([-1, 3])
    h = history.assemble(_logs(), [0, 2, 4, 5], None, [], div, div_step, steps=5)
    np.testing.assert_array_equal(h["step"], [0, 2, 4, 5])
    np.testing.assert_allclose(h["train/loss"][0], [1.0, 0.8, 0.6, 0.5])
    np.testing.assert_allclose(h["train/loss"][1], [2.0, 1.8, np.nan, np.nan])
    assert h["log10_kernel_grad"].shape == (2, 4, 3) and np.isnan(h["log10_kernel_grad"][1, 2:]).all()
    # per-step batch losses: chunks concatenated, cut at `steps`, NaN from the diverged step on
    np.testing.assert_array_equal(h["train/batch_loss"][0], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(h["train/batch_loss"][1], [0, 1, 2, np.nan, np.nan])
    assert "monitor" not in h and h["diverged_step"].tolist() == [-1, 3]
    cut = history.truncate(h, 3)
    np.testing.assert_array_equal(cut["step"], [0, 2])
    assert cut["train/loss"].shape == (2, 2) and cut["train/batch_loss"].shape == (2, 3)
    first_net = [{k: v[:1] for k, v in log.items()} for log in _logs()]
    one = history.squeeze(history.assemble(first_net, [0, 2, 4, 5], [], [], div[:1], div_step[:1], 5))
    assert one["train/loss"].shape == (4,) and one["train/batch_loss"].shape == (5,)
    assert one["monitor"] is None and one["monitor_step"].size == 0 and one["diverged"].shape == ()


@pytest.mark.parametrize(
    "bad_groups, block, phrase",
    [
        (
            [False, True, True, False],
            "blocks[1]",
            r"first non-finite gradient in blocks\[1\] \(2 of 4 parameter groups\)",
        ),
        ([False, False, False, True], "head", r"first non-finite gradient in head \(no block's gradient"),
        ([False] * 4, None, r"every gradient was finite"),
    ],
)
def test_nonfinite_error_names_step_net_and_block(bad_groups, block, phrase):
    div, div_step = np.array([True, True]), np.array([4, 3])
    h = history.assemble(_logs(), [0, 2, 4, 5], None, [], div, div_step, steps=5)
    groups = np.array([[False] * 4, bad_groups])
    err = history.nonfinite_error(h, groups, ("blocks[0]", "blocks[1]", "blocks[2]", "head"), ["a", "b"])
    assert isinstance(err, FloatingPointError)
    assert err.step == 3 and err.seed == "b" and err.block == block
    assert str(err).startswith("non-finite loss or gradient at step 3 (b): ")
    assert re.search(phrase, str(err))
    np.testing.assert_array_equal(err.history["step"], [0, 2])
