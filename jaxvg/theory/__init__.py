"""Mean-field theory of signal and gradient propagation in wide random networks.

A fully connected net with weights W_ij ~ N(0, sigma_w2 / fan_in) and biases b_i ~ N(0, sigma_b2)
(the "gaussian" scheme of `jaxvg.nn.initializers`) has, at infinite width, Gaussian
pre-activations whose variance q_l and pairwise correlation c_l follow deterministic maps
(Poole et al. 2016):

    q_{l+1} = sigma_w2 * E[phi(sqrt(q_l) z)^2] + sigma_b2,                     z ~ N(0, 1)
    c_{l+1} = (sigma_w2 * E[phi(u1) phi(u2)] + sigma_b2) / q_{l+1},     (u1, u2) ~ N(0, q_l [[1, c_l], [c_l, 1]])

and the backward signal is multiplied, per layer, by chi(q) = sigma_w2 * E[phi'(sqrt(q) z)^2] in
squared norm (Schoenholz et al. 2017). At the fixed point q* the factor chi_1 = chi(q*) separates the
ordered phase (chi_1 < 1: vanishing gradients, correlations -> 1) from the chaotic one (chi_1 > 1:
exploding gradients). Pennington et al. (2017, 2018) add the spectrum of the input-output Jacobian,
whose mean squared singular value is chi_1^L and whose spread depends on the weight ensemble.

Modules: `maps` (q_map, q_star, c_map, c_star, chi_1 and the fixed-point solvers), `depth`
(depth_scales, gradient_depth_scale, critical_sigma_w2, gradient_profile, signal_profile), `spectra`
(typical_log_rate, jacobian_moments), `recurrent` (through time: linear recurrences, Pascanu 2013's
conditions, the vanilla-RNN mean field); beneath them `expectations` (the Gaussian expectations of
one activation, closed form or quadrature), `inputs` (argument checks) and the package-level
`jaxvg.quadrature`.

Every function but `critical_sigma_w2` takes `(activation, sigma_w2, sigma_b2, ...)` first, with
the activation a registry name, an `Activation` or a callable (`jaxvg.nn.activations.get`), and
its other arguments by keyword. All are jittable and vmappable over `sigma_w2`, `sigma_b2` (and
`q`, `c`, `q0`), and broadcast over array arguments. Inputs are checked before tracing (a TypeError
for a non-real value, a ValueError for a non-finite or out-of-range one, naming the argument);
traced values are checked for their dtype only.

Gaussian expectations use the closed forms in `activation.closed_forms` where they exist (relu,
leaky_relu, linear, erf, hard_tanh), else `jaxvg.quadrature`: Gauss-Legendre panels graded towards
the peak of phi'(sqrt(q) z), whose width is ~1/sqrt(q), so the results stay accurate as q grows:
measured relative error <= 2e-14 (1D) and <= 1e-10 (2D) for q from 1e-6 to 1e14 with x64 enabled,
float32 rounding (~1e-6) without.

Units: q, q0 and q* are second moments of pre-activations (squared activation-input units);
correlations and chi's are dimensionless; depth scales are in layers; `gradient_profile` is in
decades (log10); `typical_log_rate` is a natural log per layer.

References:
  Poole et al., Exponential expressivity in deep neural networks through transient chaos, 2016,
    https://arxiv.org/abs/1606.05340
  Schoenholz et al., Deep Information Propagation, 2017, https://arxiv.org/abs/1611.01232
  Pennington, Schoenholz & Ganguli, Resurrecting the sigmoid in deep learning through dynamical
    isometry: theory and practice, 2017, https://arxiv.org/abs/1711.04735
  Pennington, Schoenholz & Ganguli, The emergence of spectral universality in deep networks, 2018,
    https://arxiv.org/abs/1802.09979
  Cho & Saul, Kernel methods for deep learning, 2009 (the arc-cosine kernel of relu).
  Williams, Computing with infinite networks, 1997 (the arcsine kernel of erf).

Example:
  >>> from jaxvg import theory
  >>> round(float(theory.chi_1("relu", 2.0, 0.0)), 6)   # He initialisation is critical
  1.0
  >>> round(float(theory.critical_sigma_w2("tanh", 0.0)), 4)
  1.0
"""

from jaxvg.theory import recurrent as recurrent
from jaxvg.theory.depth import critical_sigma_w2 as critical_sigma_w2
from jaxvg.theory.depth import depth_scales as depth_scales
from jaxvg.theory.depth import gradient_depth_scale as gradient_depth_scale
from jaxvg.theory.depth import gradient_profile as gradient_profile
from jaxvg.theory.depth import signal_profile as signal_profile
from jaxvg.theory.inputs import MAX_DEPTH as MAX_DEPTH
from jaxvg.theory.inputs import MAX_WIDTH as MAX_WIDTH
from jaxvg.theory.maps import c_map as c_map
from jaxvg.theory.maps import c_star as c_star
from jaxvg.theory.maps import chi_1 as chi_1
from jaxvg.theory.maps import q_map as q_map
from jaxvg.theory.maps import q_star as q_star
from jaxvg.theory.spectra import WEIGHTS as WEIGHTS
from jaxvg.theory.spectra import jacobian_moments as jacobian_moments
from jaxvg.theory.spectra import typical_log_rate as typical_log_rate
