"""Root conftest: doctests in jaxvg/ run with the same settings as tests/."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
