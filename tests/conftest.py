"""Shared fixtures (the compilation cache and rank promotion are set in the root conftest.py)."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
    """Float64 for the duration of one test (brute-force references)."""
    with jax.enable_x64(True):
        yield
