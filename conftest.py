"""Root conftest, loaded before any test or doctest in jaxvg/ and tests/.

Rank promotion raises (equinox, diffrax, neural-tangents and nanodo all do this).
JAX's persistent compilation cache is on for the suite (set before jax starts), for programs that
took at least 0.5 s to compile: the CLI tests run every experiment and benchmark in subprocesses,
which would otherwise compile the same programs again and again (a clean-clone run without the
cache had done 12% of the tests after 16 minutes, one with it 8% after 9; not measured further). Caching every program (threshold 0) serialised
thousands of small executables, and jaxlib 0.10.2 once aborted a pytest worker while serialising one
(`executable.serialize()` in `put_executable_and_time`, during a `fit`): the threshold keeps the
cache to the few hundred programs that are worth it. Set JAX_COMPILATION_CACHE_DIR to move it.
"""

import os
import pathlib

os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(pathlib.Path(__file__).resolve().parent / ".jax_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
