"""Scale: sweeps (grids, cells, depth masks), devices, memory, multi-process."""

from jaxvg.scale import distributed as distributed
from jaxvg.scale import sweeps as sweeps
