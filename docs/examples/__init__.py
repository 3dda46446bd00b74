"""Example models of the documentation (docs/your_model.md shows their code verbatim; tested in
tests/measure/test_your_model.py)."""
