"""jaxvg benchmarks: `python -m benchmarks.NAME` (timings of jitted code, compile reported apart,
medians over repeats, ratios measured in one run, JSON out)."""
