"""JAX's persistent compilation cache, switched on for every program, however small."""

from __future__ import annotations

import os

import jax

from jaxvg import checks

__all__ = ["enable_compilation_cache"]


def enable_compilation_cache(
    path: str | os.PathLike[str] = ".jax_cache",
    *,
    min_compile_time_secs: float = 0.0,
    min_entry_size_bytes: int = 0,
) -> str:
    """Turn on JAX's persistent compilation cache in `path` for every program, however small.

    Sets `jax_compilation_cache_dir`, `jax_persistent_cache_min_compile_time_secs` (JAX's default,
    1 s, would skip most of jaxvg's small programs) and `jax_persistent_cache_min_entry_size_bytes`.
    A later process with the same jax version, device and program loads the executable instead of
    compiling it. Call it at startup, before the first `jit` compiles (programs compiled before
    are not written). The same works without code: set the environment variables
    JAX_COMPILATION_CACHE_DIR=path and JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0.

    The cache is trusted code: do not point it at a directory others can write.

    Args:
      path: cache directory (created if missing).
      min_compile_time_secs: only programs that took at least this long to compile are cached.
      min_entry_size_bytes: only executables at least this large are cached.
    Returns:
      The absolute cache path.
    Raises:
      ValueError: if `path` is empty ("" would mean the working directory) or a minimum is
        negative.
    """
    if not isinstance(path, str | os.PathLike) or not os.fspath(path):
        raise ValueError(f"`path` must be a non-empty directory path, got {path!r}.")
    checks.nonnegative("min_compile_time_secs", min_compile_time_secs)
    checks.nonnegative_int("min_entry_size_bytes", min_entry_size_bytes)
    path = os.path.abspath(os.fspath(path))
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", int(min_entry_size_bytes))
