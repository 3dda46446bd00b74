"""Mean-field theory (Poole 2016, Schoenholz 2017, Pennington 2017/2018): maps, fixed points, depth scales,
spectra; through time (`recurrent`: linear recurrences, Pascanu 2013, RNN and LSTM mean field)."""

from jaxvg.theory.maps import WEIGHTS as WEIGHTS
from jaxvg.theory.maps import c_map as c_map
from jaxvg.theory.maps import c_star as c_star
from jaxvg.theory.maps import chi_1 as chi_1
from jaxvg.theory.maps import critical_sigma_w2 as critical_sigma_w2
from jaxvg.theory.maps import depth_scales as depth_scales
from jaxvg.theory.maps import gradient_depth_scale as gradient_depth_scale
from jaxvg.theory.maps import gradient_profile as gradient_profile
from jaxvg.theory.maps import jacobian_moments as jacobian_moments
from jaxvg.theory.maps import q_map as q_map
from jaxvg.theory.maps import q_star as q_star
from jaxvg.theory.maps import typical_log_rate as typical_log_rate
from jaxvg.theory import recurrent as recurrent
