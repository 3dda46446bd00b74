"""Scale: sweeps (grids, cells, depth masks), devices, memory, multi-process."""

from jaxvg.scale import distributed as distributed
from jaxvg.scale import sweeps as sweeps

# TODO(merge): temporary re-exports for experiments/ and benchmarks/; the split of sweeps.py into
# grid/devices/memory re-exports these names here itself.
from jaxvg.scale.sweeps import cell_key as cell_key
from jaxvg.scale.sweeps import map_nets as map_nets
from jaxvg.scale.sweeps import pad_depth_mask as pad_depth_mask
