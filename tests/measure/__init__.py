"""Tests of `jaxvg.measure`, one file per module (a package, so its basenames cannot clash)."""
