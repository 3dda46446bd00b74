"""The training history: per-chunk logs assembled on the host into numpy arrays, and the divergence error.

Keys (flat, slash-separated; every per-net entry has a leading nets axis N, dropped by `squeeze`):
  "step" (T,): the logged steps t = 0, log_every, 2 log_every, ..., and `steps` (the end).
  "train/loss", "train/accuracy", "test/loss", "test/accuracy" (N, T): loss and accuracy of the
    parameters after t updates on the whole training / test set, in evaluation mode. Accuracy is NaN
    for "mse" and callable losses; the "test/" keys are absent without a test set.
  "train/batch_loss" (N, steps): the training-mode loss of step t's minibatch, the loss whose
    gradient step t applies.
  "log10_kernel_grad" (N, T, L): log10 ||d loss / d kernel of block i||_F on the batch of step t,
    training mode (at t = steps: the gradient the next step would take), in decades.
  "diverged" (N,) bool, "diverged_step" (N,) int: the step at which the loss, a gradient or the
    updated parameters first went non-finite; -1 if never. Float entries from that step on are NaN.
  "monitor" (a `jaxvg.measure.GradientFlow` with leading (N, M)) and "monitor_step" (M,), with
    `monitor_every`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

__all__ = ["assemble", "nonfinite_error", "squeeze", "truncate"]

_PER_STEP = ("train/batch_loss",)  # per-step keys, (N, steps); the other log keys are per logged point
_NOT_LOGGED = ("step", "diverged", "diverged_step", "monitor", "monitor_step")


def _nan_after(arr: np.ndarray, t: np.ndarray, div: np.ndarray, div_step: np.ndarray) -> np.ndarray:
    """`arr` (N, len(t), ...) with NaN where net i diverged at or before step t (float arrays only)."""
    if arr.dtype.kind != "f":
        return arr
    after = div[:, None] & (t[None, :] >= div_step[:, None])
    return np.where(after.reshape(after.shape + (1,) * (arr.ndim - 2)), np.nan, arr).astype(arr.dtype)


def assemble(
    logs: Sequence[dict],
    log_steps: Sequence[int],
    monitor_rows: Sequence[Any] | None,
    monitor_steps: Sequence[int],
    div: np.ndarray,
    div_step: np.ndarray,
    steps: int,
) -> dict[str, Any]:
    """The history from the host copies of each chunk's log (see the module docstring).

    Args:
      logs: one dict per chunk, arrays with a leading nets axis N.
      log_steps: the step each chunk logged at.
      monitor_rows: `GradientFlow`s (N, ...) in order of `monitor_steps`; None without a monitor.
      div, div_step: (N,) divergence flags and steps (-1 if never).
      steps: the run's number of steps.
    """
    history: dict[str, Any] = {"step": np.asarray(log_steps, dtype=np.int64)}
    for name in logs[0]:
        if name in _PER_STEP:
            arr = np.concatenate([np.asarray(log[name]) for log in logs], axis=1)[:, :steps]
            history[name] = _nan_after(arr, np.arange(arr.shape[1]), div, div_step).astype(np.float32)
        else:
            arr = np.stack([np.asarray(log[name]) for log in logs], axis=1)  # (N, T, ...)
            history[name] = _nan_after(arr, history["step"], div, div_step).astype(np.float32)
    history["diverged"] = div.astype(bool)
    history["diverged_step"] = div_step.astype(np.int64)
    if monitor_rows is not None:
        m_steps = np.asarray(monitor_steps, dtype=np.int64)

        def stack(*rows):
            arr = np.stack([np.asarray(r) for r in rows], axis=1)
            return _nan_after(arr, m_steps, div, div_step)

        history["monitor"] = jax.tree.map(stack, *monitor_rows) if monitor_rows else None
        history["monitor_step"] = m_steps
    return history


def truncate(history: dict[str, Any], t0: int) -> dict[str, Any]:
    """The history restricted to steps < t0 (what `err.history` holds in raise mode)."""
    keep = history["step"] < t0
    out = dict(history)
    out["step"] = history["step"][keep]
    for name, value in history.items():
        if name in _PER_STEP:
            out[name] = value[:, :t0]
        elif name not in _NOT_LOGGED:
            out[name] = value[:, keep]
    if history.get("monitor_step") is not None:
        mkeep = history["monitor_step"] < t0
        out["monitor_step"] = history["monitor_step"][mkeep]
        if history["monitor"] is not None:
            out["monitor"] = jax.tree.map(lambda a: a[:, mkeep], history["monitor"])
    return out


def squeeze(history: dict[str, Any]) -> dict[str, Any]:
    """The history of a one-net stack without its nets axis."""
    out = {}
    for name, value in history.items():
        if name in ("step", "monitor_step"):
            out[name] = value
        elif name == "monitor":
            out[name] = None if value is None else jax.tree.map(lambda a: a[0], value)
        else:
            out[name] = value[0]
    return out


def nonfinite_error(
    history: dict[str, Any], bad_groups: np.ndarray, group_names: Sequence[str], names: Sequence[str]
) -> FloatingPointError:
    """The `FloatingPointError` of raise mode, for the net that diverged first.

    It names the step, the net and the first parameter group (input side first) whose gradient
    went non-finite; `err.history` holds the logged steps before it, and `err.step`, `err.seed`
    (the net's name) and `err.block` the details.
    """
    div, div_step = history["diverged"], history["diverged_step"]
    i = int(np.argmin(np.where(div, div_step, np.iinfo(np.int64).max)))
    t0 = int(div_step[i])
    block, what = _describe_bad_groups(group_names, bad_groups[i])
    err = FloatingPointError(
        f"non-finite loss or gradient at step {t0} ({names[i]}): {what}. The logged steps before {t0} "
        "are in err.history. Lower `learning_rate`, set `clip_norm`, or pass on_nonfinite='record' to "
        "freeze diverging nets and go on."
    )
    err.history = truncate(history, t0)
    err.step = t0
    err.seed = names[i]
    err.block = block
    return err


def _describe_bad_groups(group_names: Sequence[str], bad_groups: np.ndarray) -> tuple[str | None, str]:
    """(name of the first group with a non-finite gradient, input side first; a phrase for the error)."""
    idx = np.flatnonzero(bad_groups)
    if idx.size == 0:
        return None, "every gradient was finite (the loss or the parameter update overflowed)"
    first = group_names[idx[0]]
    if idx[0] < len(group_names) - 1:
        return (
            first,
            f"first non-finite gradient in {first} ({idx.size} of {len(bad_groups)} parameter groups)",
        )
    return first, f"first non-finite gradient in {first} (no block's gradient was non-finite)"
