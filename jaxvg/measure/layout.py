"""The layout of a block sequence: which blocks form scanned runs of repeated groups.

`layout` reads one signature per block (equal: identical blocks) and returns the runs, greedily
from the input side; `jaxvg.measure.engine` stacks the blocks by it (and re-exports both names).

Example:
  >>> from jaxvg.measure import layout
  >>> layout.layout([0, 0, 0, 1], min_run=3)
  [(0, 1, 3), (3, 1, 0)]
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["SCAN_MAX_PERIOD", "layout"]

SCAN_MAX_PERIOD = 8
"""The longest period (blocks per repeated group) that a scanned run may have."""


def layout(
    ids: Sequence[int], min_run: int | None, max_period: int | None = None
) -> list[tuple[int, int, int]]:
    """The runs of a block sequence from its block signatures (equal ids: identical blocks).

    Greedy from the input side: at block i, the period k <= max_period whose repeats r (full groups
    of k blocks, each equal to the first) cover the most blocks (ties: the shortest k) makes a
    scanned run when it covers at least `min_run` blocks with r >= 2; otherwise block i is unrolled.

    Args:
      ids: one hashable per block.
      min_run: the shortest scanned run in blocks; None: nothing is scanned.
      max_period: the longest period (default `SCAN_MAX_PERIOD`).
    Returns:
      [(start, period, repeats)], repeats 0 for an unrolled block (period 1).

    Example:
      >>> layout([0, 1, 2, 1, 2, 1, 2, 3], min_run=4)
      [(0, 1, 0), (1, 2, 3), (7, 1, 0)]
    """
    n = len(ids)
    kmax = SCAN_MAX_PERIOD if max_period is None else max_period
    if min_run is None or n < 2:
        return [(i, 1, 0) for i in range(n)]
    # match[k][i]: length of the stretch from i on where ids[t] == ids[t + k]
    match = {}
    for k in range(1, min(kmax, n // 2) + 1):
        m = [0] * (n + 1)
        for t in range(n - k - 1, -1, -1):
            m[t] = m[t + 1] + 1 if ids[t] == ids[t + k] else 0
        match[k] = m
    out, i = [], 0
    while i < n:
        best_k, best_r = 1, 1
        for k, m in match.items():
            r = (m[i] + k) // k if i + k <= n else 1
            r = min(r, (n - i) // k)
            if r >= 2 and r * k > best_k * best_r:
                best_k, best_r = k, r
        if best_r >= 2 and best_k * best_r >= max(min_run, 2):
            out.append((i, best_k, best_r))
            i += best_k * best_r
        else:
            out.append((i, 1, 0))
            i += 1
    return out
