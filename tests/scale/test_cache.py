"""Tests for jaxvg.scale.cache (in subprocesses: the cache is process-global configuration)."""

from __future__ import annotations

import textwrap

import pytest

from jaxvg import scale


def test_compilation_cache_is_written_then_hit(tmp_path, run_python):
    """A fresh process writes every program (however small) to the cache; a second one loads it."""
    script = textwrap.dedent(f"""
        import jax, jax.numpy as jnp
        from jaxvg import scale
        hits = []
        jax.monitoring.register_event_listener(lambda e, **kw: hits.append(e) if e.endswith("cache_hits") else None)
        scale.enable_compilation_cache({str(tmp_path / "cache")!r})
        jax.jit(lambda x: jnp.tanh(x) @ x.T)(jnp.ones((3, 3))).block_until_ready()
        print("HITS", len(hits))
    """)
    env = {"JAX_COMPILATION_CACHE_DIR": None, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": None}
    (first,) = run_python(script, env=env)
    assert "HITS 0\n" in first
    written = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert written  # every program, however small (min compile time 0)
    (second,) = run_python(script, env=env)
    hits = int(second.split("HITS ")[1])
    assert hits >= 1 and sorted(p.name for p in (tmp_path / "cache").iterdir()) == written


def test_enable_compilation_cache_errors():
    with pytest.raises(ValueError, match="`min_compile_time_secs` must be a finite number >= 0"):
        scale.enable_compilation_cache("unused", min_compile_time_secs=-1.0)
    with pytest.raises(ValueError, match="`path` must be a non-empty directory path, got ''"):
        scale.enable_compilation_cache("")
