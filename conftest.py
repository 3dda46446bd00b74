"""Root conftest, loaded before any test or doctest in jaxvg/ and tests/.

Rank promotion raises (equinox, diffrax, neural-tangents and nanodo all do this).
JAX's persistent compilation cache is off unless you ask for it (`JAXVG_TEST_CACHE=DIR`): in a fresh
clone (CI) it starts cold, and every compiled program is then serialised and written for the rare
program the other worker compiles too;
and jaxlib 0.10.2 aborted the whole pytest worker once while serialising a CPU executable
(`executable.serialize()` in `put_executable_and_time`, during a `fit`). A warm cache cut the CPU
time of the model tests 2.6x on a developer's machine.
"""

import os

if os.environ.get("JAXVG_TEST_CACHE"):
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ["JAXVG_TEST_CACHE"])
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
