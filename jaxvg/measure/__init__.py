"""Exact per-layer measurement in log space: gradient flow, Jacobian norms and spectra, taps.

Modules, one concern each:

- `engine`: the block engine (a block model split into a static `BlockProgram` and its arrays;
  scanned runs of identical blocks or of identical groups of blocks, unrolled blocks; the host-side
  the `scan` check; it re-exports `host` and `layout`);
- `host`: the host-side checks every measure runs before tracing (`x`, `precision`), the evaluation
  or training view, the RNG handling;
- `layout`: which blocks form scanned runs of repeated groups;
- `plan`: what a model's structure determines (view, split, layout, stacking plan, output shape,
  compiled kernels), cached per structure, so a repeated call does O(1) Python work per block;
- `probe`: `Probe`, a handle that reads a model's arrays without even flattening it;
- `nets`: many nets (a leading seeds/cells axis) in chunks that fit the device's memory;
- `lognorm`: underflow- and overflow-safe norms and renormalisation in log space (one pass where
  that is exact), and the `renorm` VJP node;
- `flow`: `GradientFlow`, `gradient_flow`, `gradient_flow_from_split`; `dphi`: the per-block
  activation-derivative statistics it reports (log10 RMS of φ′, dead units);
- `jacobians`: `JacobianNorms`, `JacobianSpectrum`, `jacobian_norms(_from_split)`, `jacobian_spectrum`;
- `taps`: `tap`, `tapped_gradients`, `TapGradient` for models that are not block-structured
  (`tap_layers`: one entry per layer for taps inside a scan over layers);
- `validate`: the checks every measure runs before tracing (finite inputs with a batch axis, the
  key, tied blocks, the block contract block by block, `model(x)` against the contract forward);
- `signal`: `SignalFlow`, `signal_propagation(_from_split)`: the forward signal per layer (second
  moment, cosine similarity, branch ratio, effective rank);
- `structure`: the model's parts are modules, no block shares parameters (`check_model`,
  `check_untied`; run and re-exported by `validate`);
- `table`: `flow_table`;
- `through_time`: `TimeFlow`, `time_flow`, `time_flow_from_split` for recurrent models
  (`jaxvg.nn.contracts.RecurrentModel`); `time_jacobians`: `time_jacobian_norms`, `time_jacobian_spectrum`.

Every measurement takes `precision=` (default "highest") for its own matmuls: exact float32 even
where the platform's default float32 matmul is TF32 (GPU) or a bfloat16 pass (TPU).

The public functions and result types are re-exported here.
"""

from jaxvg.measure import dphi as dphi
from jaxvg.measure import engine as engine
from jaxvg.measure import flow as flow
from jaxvg.measure import host as host
from jaxvg.measure import jacobians as jacobians
from jaxvg.measure import layout as layout
from jaxvg.measure import lognorm as lognorm
from jaxvg.measure import nets as nets
from jaxvg.measure import plan as plan
from jaxvg.measure import probe as probe
from jaxvg.measure import signal as signal
from jaxvg.measure import structure as structure
from jaxvg.measure import table as table
from jaxvg.measure import tap_layers as tap_layers
from jaxvg.measure import taps as taps
from jaxvg.measure import through_time as through_time
from jaxvg.measure import time_jacobians as time_jacobians
from jaxvg.measure import validate as validate
from jaxvg.measure.flow import GradientFlow as GradientFlow
from jaxvg.measure.flow import gradient_flow as gradient_flow
from jaxvg.measure.flow import gradient_flow_from_split as gradient_flow_from_split
from jaxvg.measure.jacobians import JacobianNorms as JacobianNorms
from jaxvg.measure.jacobians import JacobianSpectrum as JacobianSpectrum
from jaxvg.measure.jacobians import jacobian_norms as jacobian_norms
from jaxvg.measure.jacobians import jacobian_norms_from_split as jacobian_norms_from_split
from jaxvg.measure.jacobians import jacobian_spectrum as jacobian_spectrum
from jaxvg.measure.probe import Probe as Probe
from jaxvg.measure.signal import SignalFlow as SignalFlow
from jaxvg.measure.signal import signal_propagation as signal_propagation
from jaxvg.measure.signal import signal_propagation_from_split as signal_propagation_from_split
from jaxvg.measure.table import flow_table as flow_table
from jaxvg.measure.taps import TapGradient as TapGradient
from jaxvg.measure.taps import tap as tap
from jaxvg.measure.taps import tapped_gradients as tapped_gradients
from jaxvg.measure.through_time import TimeFlow as TimeFlow
from jaxvg.measure.through_time import time_flow as time_flow
from jaxvg.measure.through_time import time_flow_from_split as time_flow_from_split
from jaxvg.measure.time_jacobians import time_jacobian_norms as time_jacobian_norms
from jaxvg.measure.time_jacobians import time_jacobian_spectrum as time_jacobian_spectrum

__all__ = [
    "GradientFlow",
    "JacobianNorms",
    "JacobianSpectrum",
    "Probe",
    "SignalFlow",
    "TapGradient",
    "TimeFlow",
    "engine",
    "flow_table",
    "gradient_flow",
    "gradient_flow_from_split",
    "host",
    "jacobian_norms",
    "jacobian_norms_from_split",
    "jacobian_spectrum",
    "jacobians",
    "layout",
    "lognorm",
    "nets",
    "plan",
    "probe",
    "signal",
    "signal_propagation",
    "signal_propagation_from_split",
    "structure",
    "table",
    "tap",
    "tap_layers",
    "tapped_gradients",
    "taps",
    "through_time",
    "time_jacobians",
    "time_flow",
    "time_flow_from_split",
    "time_jacobian_norms",
    "time_jacobian_spectrum",
    "validate",
]
