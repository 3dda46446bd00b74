"""Root conftest, loaded before any test or doctest in jaxvg/ and tests/.

Rank promotion raises (equinox, diffrax, neural-tangents and nanodo all do this).
JAX's persistent compilation cache is on for the suite (set before jax starts): a warm cache cut the
CPU time of tests/test_models.py 2.6x and of the sweep tests 3.3x; a cold one (a fresh CI clone) costs
nothing measurable. Set JAX_COMPILATION_CACHE_DIR yourself to move it. Every program is cached
(threshold 0): the CLI tests run the experiments and benchmarks in subprocesses, which recompile
the same small programs; clean-clone runs with the cache off, or only for programs that took
>= 0.5 s to compile, had done 8-12 % of the tests after 16 minutes, against about 85 % after 18
with it. jaxlib 0.10.2 once aborted a worker while serialising one executable (in
`put_executable_and_time`, during `test_small_net_learns_spirals`); it did not reproduce alone.
"""

import os
import pathlib

os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(pathlib.Path(__file__).resolve().parent / ".jax_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
