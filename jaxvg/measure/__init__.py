"""Exact per-layer measurement in log space: gradient flow, Jacobian norms and spectra, taps."""

from jaxvg.measure import analysis as analysis
from jaxvg.measure.analysis import GradientFlow as GradientFlow
from jaxvg.measure.analysis import JacobianNorms as JacobianNorms
from jaxvg.measure.analysis import JacobianSpectrum as JacobianSpectrum
from jaxvg.measure.analysis import TapGradient as TapGradient
from jaxvg.measure.analysis import flow_table as flow_table
from jaxvg.measure.analysis import gradient_flow as gradient_flow
from jaxvg.measure.analysis import gradient_flow_from_split as gradient_flow_from_split
from jaxvg.measure.analysis import jacobian_norms as jacobian_norms
from jaxvg.measure.analysis import jacobian_norms_from_split as jacobian_norms_from_split
from jaxvg.measure.analysis import jacobian_spectrum as jacobian_spectrum
from jaxvg.measure.analysis import tap as tap
from jaxvg.measure.analysis import tapped_gradients as tapped_gradients
