"""Tests of `jaxvg.theory` (a package, so its basenames cannot clash)."""
