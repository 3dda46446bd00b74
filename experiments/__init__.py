"""Experiments: `python -m experiments.NAME` from the repository root (not part of the jaxvg wheel)."""
