"""Tests of `jaxvg.train` (a package, so its basenames cannot clash)."""
