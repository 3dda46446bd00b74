"""Tests of `jaxvg.nn` (a package, so its basenames cannot clash)."""
