"""Provenance: what produced a result (versions, device, host, time, git commit) and its config.

Every experiment writes `metrics.json` with the config, the seeds, the environment and the results
(`write_metrics`). `config_key` names a config by a hash of its fields, so that stored cells of
two different configs never collide. Provenance is read-only: git is asked with
GIT_OPTIONAL_LOCKS=0, so recording it never takes `.git/index.lock` nor rewrites the index of the
user's checkout.

Example:
  >>> import dataclasses
  >>> from jaxvg import report
  >>> @dataclasses.dataclass(frozen=True)
  ... class Config:
  ...     depth: int = 10
  ...     out_dir: str = "results/demo"
  >>> report.config_key(Config()) == report.config_key(Config(out_dir="elsewhere"))
  True
  >>> report.config_key(Config()) == report.config_key(Config(depth=20))
  False
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import pathlib
import platform
import re
import socket
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jaxvg.report import files

__all__ = ["CONFIG_IGNORE", "config_dict", "config_key", "environment", "write_metrics"]

CONFIG_IGNORE = ("out_dir",)  # config fields that do not change what is computed
_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "jaxvg")
_REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def environment(*, repo: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Where and with what a result was produced: versions, device, host, time and git commit.

    Never raises for a missing piece: an uninstalled package reads `None`, and so does the git
    commit when git is absent or the directory is not a git checkout. Git is only read (`git
    rev-parse`, then `git status` with GIT_OPTIONAL_LOCKS=0, which compares contents in memory and
    neither takes `.git/index.lock` nor rewrites the index), so a concurrent git command in the
    same checkout is never disturbed. (Not `git diff`: it may rewrite the index even then.)

    Args:
      repo: the checkout whose commit to record (any directory inside it); default the checkout
        jaxvg itself is imported from, when it is one (a pip-installed jaxvg records None).
    Returns:
      A JSON-ready dict with keys `python`, `jax`, `jaxlib`, `flax`, `optax`, `numpy`, `jaxvg`
      (version strings or None), `platform` (OS string), `backend` (e.g. "cpu", "gpu", "tpu"),
      `device_kinds` (sorted distinct `device.device_kind` strings), `device_count`, `hostname`,
      `timestamp_utc` (ISO 8601, seconds, "+00:00"), `xla_flags` (the XLA_FLAGS environment
      variable, "" when unset: compiler settings change float32 rounding, and with it the outcome of
      a long training run, e.g. which seeds of experiments.through_time solve a task), `git_commit`
      (40 hex digits or None) and `git_dirty` (True when tracked files differ from the commit; None
      without git).
    Raises:
      ValueError: if `repo` is "".

    Example:
      >>> from jaxvg import report
      >>> env = report.environment()
      >>> env["backend"] in {"cpu", "gpu", "tpu"} and env["device_count"] >= 1
      True
    """
    env: dict[str, Any] = {"python": platform.python_version()}
    for name in _PACKAGES:
        env[name] = _version(name)
    env["platform"] = platform.platform()
    try:
        import jax

        devices = jax.devices()
        env["backend"] = jax.default_backend()
        env["device_kinds"] = sorted({d.device_kind for d in devices})
        env["device_count"] = len(devices)
    except Exception:  # pragma: no cover - a broken jax install still lets results be written
        env.update(backend=None, device_kinds=[], device_count=0)
    env["hostname"] = socket.gethostname()
    env["timestamp_utc"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    env["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    if repo is None:  # only a checkout that holds jaxvg itself, never a repository around site-packages
        root = _REPO_ROOT if (_REPO_ROOT / ".git").exists() else None
    else:
        root = files.as_path(repo, "repo")
    env["git_commit"], env["git_dirty"] = _git_state(root) if root is not None else (None, None)
    return env


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        pass
    try:  # a source checkout that is not pip-installed still has __version__
        module = __import__(name)
        return str(getattr(module, "__version__", None) or "") or None
    except Exception:
        return None


def _git_state(root: pathlib.Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout at `root`, or (None, None) without git or a checkout.

    Read-only: with GIT_OPTIONAL_LOCKS=0 `git status` refreshes the index in memory only, never
    writing it (which would take `.git/index.lock`).
    """
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"}

    def git(*args: str) -> subprocess.CompletedProcess[str] | None:
        try:
            return subprocess.run(
                ["git", "-C", str(root), *args],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError):
            return None

    head = git("rev-parse", "--verify", "HEAD")
    commit = head.stdout.strip() if head is not None and head.returncode == 0 else None
    if commit is None or not re.fullmatch(r"[0-9a-f]{40}", commit):
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    if status is None or status.returncode != 0:
        return commit, None
    return commit, bool(status.stdout.strip())


def config_dict(config: Any) -> dict[str, Any]:
    """The fields of an experiment config as a plain dict (a dataclass instance or a mapping).

    Raises:
      TypeError: if `config` is neither a dataclass instance nor a mapping.
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"`config` must be a dataclass instance or a mapping, got {type(config).__name__}.")


def config_key(config: Any, *, ignore: Iterable[str] = CONFIG_IGNORE) -> str:
    """A short stable name of a config: the first 16 hex digits of the SHA-256 of its fields.

    The fields (all but those in `ignore`) are converted with `to_jsonable` and written as
    canonical JSON (sorted keys, no spaces), so equal configs give equal keys in every run and on
    every machine, and any change to a field that is hashed gives another key. `ignore` the fields
    that do not change what is computed (where the output goes, how much is printed).

    Args:
      config: a dataclass instance or a mapping of field name to value.
      ignore: field names left out of the hash (absent names are fine).
    Returns:
      16 lowercase hex digits.
    Raises:
      TypeError: if `config` is not a dataclass instance or mapping, or a hashed field cannot be
        converted to JSON (the message names the field: add it to `ignore` or make it plain).
      ValueError: if `ignore` is a string (write `ignore=("out_dir",)`).
    """
    if isinstance(ignore, str):
        raise ValueError(f"`ignore` must be a collection of field names, e.g. ('out_dir',), got {ignore!r}.")
    skip = set(ignore)
    fields = {}
    for name, value in config_dict(config).items():
        if str(name) in skip:
            continue
        try:
            fields[str(name)] = files.to_jsonable(value)
        except TypeError as e:
            raise TypeError(
                f"config field `{name}` cannot be hashed into a config key: {e} Add it to `ignore` if it "
                "does not change the results, or make it a plain value."
            ) from None
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_metrics(
    out_dir: str | os.PathLike[str],
    config: Any,
    results: Mapping[str, Any],
    *,
    seeds: Sequence[int] | int | None = None,
) -> pathlib.Path:
    """Write `out_dir/metrics.json` = {"config", "seeds", "environment", "results"}, atomically.

    Args:
      out_dir: the experiment's output directory (created if missing).
      config: the experiment's dataclass config (stored as `dataclasses.asdict`), or a mapping.
      results: the experiment's results (anything `to_jsonable` converts).
      seeds: the seeds used (a list, a count, or None).

    Returns:
      The path of the written `metrics.json`.

    Raises:
      TypeError: if `config` is neither a dataclass instance nor a mapping.
      ValueError: if `out_dir` is "".
    """
    path = files.as_path(out_dir, "out_dir") / "metrics.json"
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    payload = {
        "config": config_dict(config),
        "seeds": seeds,
        "environment": environment(),
        "results": results,
    }
    return files.write_json(path, payload)
