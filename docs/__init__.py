"""The documentation's scripts (`python -m docs.readme_numbers`); run from the repository root."""
