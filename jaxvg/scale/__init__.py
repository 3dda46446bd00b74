"""Scale: sweep grids and depth masks, many nets over devices, memory checks, several processes.

Modules: `grids` (grid, cell keys, shape groups, depth masks), `devices` (the one mesh function,
`map_nets`, padding and placement of stacked nets, data parallelism), `memory` (estimate and check
before allocating), `cache` (persistent compilation cache), `distributed` (several processes).
Every public name is re-exported here: `jaxvg.scale.map_nets`, `jaxvg.scale.check_fits`, ...
"""

from jaxvg.scale import cache as cache
from jaxvg.scale import devices as devices
from jaxvg.scale import distributed as distributed
from jaxvg.scale import grids as grids
from jaxvg.scale import memory as memory
from jaxvg.scale.cache import enable_compilation_cache as enable_compilation_cache
from jaxvg.scale.devices import SCOPES as SCOPES
from jaxvg.scale.devices import data_parallel_sharding as data_parallel_sharding
from jaxvg.scale.devices import device_mesh as device_mesh
from jaxvg.scale.devices import map_nets as map_nets
from jaxvg.scale.devices import pad_nets as pad_nets
from jaxvg.scale.devices import shard_batch as shard_batch
from jaxvg.scale.devices import shard_nets as shard_nets
from jaxvg.scale.distributed import Processes as Processes
from jaxvg.scale.distributed import global_array as global_array
from jaxvg.scale.distributed import initialize as initialize
from jaxvg.scale.grids import cell_key as cell_key
from jaxvg.scale.grids import grid as grid
from jaxvg.scale.grids import masked_forward as masked_forward
from jaxvg.scale.grids import pad_depth_mask as pad_depth_mask
from jaxvg.scale.grids import shape_groups as shape_groups
from jaxvg.scale.memory import MemoryEstimate as MemoryEstimate
from jaxvg.scale.memory import available_bytes as available_bytes
from jaxvg.scale.memory import check_fits as check_fits
from jaxvg.scale.memory import estimate_bytes as estimate_bytes
