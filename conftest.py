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

The suite compiles some 2000 small programs, and on CPU most of their compile time is LLVM's
optimiser: the tests run XLA's CPU backend at LLVM optimisation level 0
(`--xla_backend_optimization_level=0`, unless XLA_FLAGS already sets a level). That changes how fast
the compiled code runs, not what it computes: XLA's CPU fast-math is off by default, so LLVM may not
reassociate floating-point arithmetic at any level (the whole suite passes at both levels). Measured on 2 shared cores, cold cache: tests/train/test_trainer.py
with tests/nn/test_models.py 91 -> 66 CPU-seconds, the remedies quick run 95 -> 36 s.
"""

import os
import pathlib

os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(pathlib.Path(__file__).resolve().parent / ".jax_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
