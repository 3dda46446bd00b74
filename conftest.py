"""Root conftest, loaded before any test or doctest in jaxvg/ and tests/.

Rank promotion raises (equinox, diffrax, neural-tangents and nanodo all do this).
JAX's persistent compilation cache is on for the suite (set before jax starts): a warm cache cut the
CPU time of tests/test_models.py 2.6x and of the sweep tests 3.3x; a cold one (a fresh CI clone) costs
nothing measurable. Set JAX_COMPILATION_CACHE_DIR yourself to move it. Every program is cached
(threshold 0): the CLI tests run the experiments and benchmarks in subprocesses, which recompile
the same small programs; a clean-clone run with the cache off had done 12 % of the tests after 16
minutes, one caching only programs that took >= 0.5 s to compile (and scheduling with --dist
loadgroup) 8 %, against about 85 % after 18 minutes with every program cached. jaxlib 0.10.2
aborted a worker twice while serialising one test's executable for the cache; that test
(`test_small_net_learns_spirals`) switches cache writes off.
"""

import os
import pathlib

os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(pathlib.Path(__file__).resolve().parent / ".jax_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
